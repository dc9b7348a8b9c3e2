"""Helpers for the handler tests: the stack in moto, and events as their sources deliver
them (conftest.py holds the fixtures)."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from skydag.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
EVENTS = ROOT / "events"
ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
BUS = "skydag"
BUS_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{BUS}"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/skydag-scheduler"
GROUP = "skydag"
BUCKET = "skydag-dags"

# What the CDK stack gives every function (table names as Settings' defaults, which the
# `aws` fixture creates).
FUNCTION_ENV = {
    "SKYDAG_DAGS_TABLE": "skydag-dags",
    "SKYDAG_DAG_VERSIONS_TABLE": "skydag-dag-versions",
    "SKYDAG_RUNS_TABLE": "skydag-runs",
    "SKYDAG_TASK_INSTANCES_TABLE": "skydag-task-instances",
    "SKYDAG_TASK_STATE_TABLE": "skydag-task-state",
    "SKYDAG_DAG_BUCKET": BUCKET,
    "SKYDAG_DAG_PREFIX": "dags/",
    "SKYDAG_EVENT_BUS": BUS,
    "SKYDAG_EVENT_BUS_ARN": BUS_ARN,
    "SKYDAG_SCHEDULE_GROUP": GROUP,
    "SKYDAG_SCHEDULER_ROLE_ARN": ROLE_ARN,
    "POWERTOOLS_TRACE_DISABLED": "true",
}


@dataclass(frozen=True)
class LambdaContext:
    """What Powertools reads from Lambda's context object."""

    function_name: str = "skydag-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:skydag-test"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name: str = "/aws/lambda/skydag-test"
    log_stream_name: str = "2026/11/22/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class Stack:
    """The parts of the deployed stack the handlers touch, plus a tap on the bus."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.s3 = boto3.client("s3", region_name=REGION)
        self.events = boto3.client("events", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.scheduler = boto3.client("scheduler", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.streams = boto3.client(
            "dynamodbstreams",
            region_name=REGION,
            config=Config(account_id_endpoint_mode="disabled"),
        )
        self.s3.create_bucket(Bucket=BUCKET)
        self.events.create_event_bus(Name=BUS)
        self.scheduler.create_schedule_group(Name=GROUP)
        # Everything skydag puts on its bus lands in this queue, for the tests to read.
        self.tap_url = self.sqs.create_queue(QueueName="bus-tap")["QueueUrl"]
        tap_arn = self.sqs.get_queue_attributes(QueueUrl=self.tap_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.events.put_rule(
            Name="tap",
            EventBusName=BUS,
            EventPattern=json.dumps({"source": ["skydag", "skydag.scheduler"]}),
        )
        self.events.put_targets(
            Rule="tap", EventBusName=BUS, Targets=[{"Id": "tap", "Arn": tap_arn}]
        )
        self._stream_positions: dict[str, dict[str, str]] = {}

    # --- the bus ---------------------------------------------------------------------------

    def bus_events(self) -> list[dict[str, Any]]:
        """The events put on the bus since the last call."""
        found: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.tap_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.tap_url, ReceiptHandle=message["ReceiptHandle"]
                )

    # --- schedules -------------------------------------------------------------------------

    def schedule(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.scheduler.get_schedule(Name=name, GroupName=GROUP))
        except self.scheduler.exceptions.ResourceNotFoundException:
            return None

    # --- DynamoDB Streams, as Lambda's event source mapping reads them ----------------------

    def stream_batch(self, table: str) -> dict[str, Any]:
        """The stream records of ``table`` not read yet, as one Lambda event."""
        arn = self.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        positions = self._stream_positions.setdefault(arn, {})
        records: list[dict[str, Any]] = []
        shards = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            iterator = (
                positions.get(shard_id)
                or self.streams.get_shard_iterator(
                    StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            )
            response = self.streams.get_records(ShardIterator=iterator, Limit=1000)
            positions[shard_id] = response["NextShardIterator"]
            for record in response["Records"]:
                records.append(lambda_stream_record(record, arn))
        return {"Records": records}


def lambda_stream_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda delivers it: epoch seconds, and the stream's ARN."""
    delivered = copy.deepcopy(record)
    data = delivered["dynamodb"]
    created = data.get("ApproximateCreationDateTime")
    if created is not None and hasattr(created, "timestamp"):
        data["ApproximateCreationDateTime"] = int(created.timestamp())
    delivered["eventVersion"] = "1.1"
    delivered["eventSourceARN"] = stream_arn
    return delivered


# --- events as their sources deliver them ----------------------------------------------------


def load_event(relative: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / relative).read_text(encoding="utf-8"))
    return event


def s3_event(
    detail_type: str,
    key: str,
    *,
    sequencer: str,
    etag: str | None = None,
    bucket: str = BUCKET,
) -> dict[str, Any]:
    """The canonical S3 EventBridge event for ``key`` (unversioned bucket: no version-id)."""
    name = "object_created" if detail_type == "Object Created" else "object_deleted"
    event = load_event(f"s3/{name}.json")
    event["id"] = str(uuid.uuid4())
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["bucket"]["name"] = bucket
    obj = event["detail"]["object"]
    obj["key"] = key
    obj["sequencer"] = sequencer
    obj.pop("version-id", None)
    if etag is not None:
        obj["etag"] = etag
    return event


def sqs_message(body: str, message_id: str | None = None) -> dict[str, Any]:
    """An SQS record as the scheduler's event source mapping delivers it."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795335300123",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1795335300130",
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:skydag-scheduler",
        "awsRegion": REGION,
    }


def sqs_batch(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(messages)}


def emf_metrics(output: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, dimensions, value) of every metric in the EMF lines printed to stdout."""
    found: list[tuple[str, dict[str, str], float]] = []
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            dimensions = {
                name: str(blob[name]) for names in directive["Dimensions"] for name in names
            }
            for metric in directive["Metrics"]:
                values = blob[metric["Name"]]
                for value in values if isinstance(values, list) else [values]:
                    found.append((metric["Name"], dimensions, float(value)))
    return found


def metric_total(output: str, name: str, **dimensions: str) -> float:
    return sum(
        value
        for metric, dims, value in emf_metrics(output)
        if metric == name and all(dims.get(k) == v for k, v in dimensions.items())
    )
