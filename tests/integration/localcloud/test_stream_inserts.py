"""The local cloud streams one record for an item an UpdateItem creates, as DynamoDB does
(moto streams the bare key first): a task's first write inserts its item."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from skydag.dev.embedded import embedded_aws
from skydag.localcloud.stream_inserts import one_insert_per_created_item

TABLE = "t"


def streamed_table() -> Any:
    """A client, and a table of one key whose stream carries both images."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return client


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with embedded_aws():
        yield streamed_table()


def records(client: Any) -> list[tuple[str, Any, Any]]:
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    arn = client.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return [
        (r["eventName"], r["dynamodb"].get("OldImage"), r["dynamodb"].get("NewImage"))
        for r in streams.get_records(ShardIterator=iterator)["Records"]
    ]


def update(client: Any, pk: str, state: str) -> None:
    client.update_item(
        TableName=TABLE,
        Key={"pk": {"S": pk}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": state}},
    )


def test_an_update_that_creates_an_item_streams_one_insert_of_the_whole_item(
    dynamodb: Any,
) -> None:
    update(dynamodb, "a", "queued")  # creates it
    update(dynamodb, "a", "running")
    whole = {"pk": {"S": "a"}, "state": {"S": "queued"}}
    assert records(dynamodb) == [
        ("INSERT", None, whole),
        ("MODIFY", whole, {"pk": {"S": "a"}, "state": {"S": "running"}}),
    ]


def test_the_patch_nests_without_dropping_more() -> None:
    """A block inside another (a moto server started by code that patched already) keeps
    the one patch: the whole item's insert still comes through."""
    with one_insert_per_created_item(), embedded_aws():
        client = streamed_table()
        update(client, "b", "queued")
        assert records(client) == [("INSERT", None, {"pk": {"S": "b"}, "state": {"S": "queued"}})]
