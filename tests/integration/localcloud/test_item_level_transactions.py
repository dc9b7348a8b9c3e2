"""The local cloud's TransactWriteItems: DynamoDB's semantics, item-level backups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from skydag.dev.embedded import embedded_aws

TABLE = "t"


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with embedded_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "n": {"N": "1"}})
        yield client


def key(pk: str, sk: str = "1") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def items(client: Any) -> dict[str, str]:
    found = client.scan(TableName=TABLE)["Items"]
    return {item["pk"]["S"]: item.get("n", {}).get("N", "-") for item in found}


def stream_records(client: Any) -> int:
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    arn = client.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return len(streams.get_records(ShardIterator=iterator)["Records"])


def increment(pk: str, condition: str | None = None) -> dict[str, Any]:
    update: dict[str, Any] = {
        "TableName": TABLE,
        "Key": key(pk),
        "UpdateExpression": "ADD n :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
    }
    if condition:
        update["ConditionExpression"] = condition
    return {"Update": update}


def test_every_write_lands_when_every_condition_holds(dynamodb: Any) -> None:
    dynamodb.transact_write_items(
        TransactItems=[
            increment("a", "attribute_exists(pk)"),
            {"Put": {"TableName": TABLE, "Item": {**key("b"), "n": {"N": "7"}}}},
            {"Put": {"TableName": TABLE, "Item": {**key("c")}}},
            {
                "ConditionCheck": {
                    "TableName": TABLE,
                    "Key": key("b", "2"),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
    )
    assert items(dynamodb) == {"a": "2", "b": "7", "c": "-"}
    assert stream_records(dynamodb) == 4  # the first put, then one per write


def test_one_failed_condition_writes_nothing_and_names_each_reason(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={**key("c"), "n": {"N": "1"}})
    with pytest.raises(ClientError) as caught:
        dynamodb.transact_write_items(
            TransactItems=[
                increment("a"),
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": {**key("b")},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": key("c"),
                        "ConditionExpression": "n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        )
    error = caught.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    reasons = [reason["Code"] for reason in error["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed", "ConditionalCheckFailed"]
    assert error["CancellationReasons"][2]["Item"]["n"] == {"N": "1"}
    assert items(dynamodb) == {"a": "1", "c": "1"}
    assert stream_records(dynamodb) == 2


def test_conditions_are_judged_on_the_items_before_the_transaction(dynamodb: Any) -> None:
    # Two items, each write conditional on its own item's state before any write.
    dynamodb.put_item(TableName=TABLE, Item={**key("b"), "n": {"N": "1"}})
    dynamodb.transact_write_items(
        TransactItems=[increment("a", "n = :one"), increment("b", "n = :one")]
    )
    assert items(dynamodb) == {"a": "2", "b": "2"}


def test_a_write_that_fails_midway_undoes_the_writes_before_it(dynamodb: Any) -> None:
    bad_update = {
        "Update": {
            "TableName": TABLE,
            "Key": key("a"),
            # ADD of a number to a string attribute fails when applied, not before.
            "UpdateExpression": "ADD pk2 :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    dynamodb.put_item(TableName=TABLE, Item={**key("a"), "pk2": {"S": "text"}, "n": {"N": "1"}})
    before = stream_records(dynamodb)
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {**key("z"), "n": {"N": "9"}}}},
                bad_update,
            ]
        )
    assert items(dynamodb) == {"a": "1"}
    assert stream_records(dynamodb) == before


def test_two_operations_on_one_item_are_refused(dynamodb: Any) -> None:
    with pytest.raises(ClientError, match="ValidationException"):
        dynamodb.transact_write_items(TransactItems=[increment("a"), increment("a")])
    assert items(dynamodb) == {"a": "1"}
