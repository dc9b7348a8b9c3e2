"""What the CLI tests share: a skydag as the CLI sees it (bus, bucket, tables) with a tap on
the bus (every event put lands in an SQS queue the tests read), the CLI run in-process
through ``main``, and DAGs to load."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from skydag.cli import remote
from skydag.cli.main import main
from skydag.settings import Settings
from skydag.spec.loader import load_dag_bytes
from skydag.spec.models import DagSpec
from skydag.store.repositories import Repositories

REGION = "us-east-1"
# Every source the tests put: the tap's rule matches these.
TAPPED_SOURCES = ["skydag.command", "ml.trainer", "acme.orders"]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Skydag:
    """A skydag as the CLI sees it (bus, bucket, tables), plus what tests need to look in."""

    def __init__(self, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
        self.settings = settings
        self._capsys = capsys
        self.s3 = boto3.client("s3", region_name=REGION)
        self.events = boto3.client("events", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.s3.create_bucket(Bucket=settings.dag_bucket)
        self.events.create_event_bus(Name=settings.event_bus)
        self.tap_url = self.sqs.create_queue(QueueName="cli-tap")["QueueUrl"]
        tap_arn = self.sqs.get_queue_attributes(QueueUrl=self.tap_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.events.put_rule(
            Name="cli-tap",
            EventBusName=settings.event_bus,
            EventPattern=json.dumps({"source": TAPPED_SOURCES}),
        )
        self.events.put_targets(
            Rule="cli-tap",
            EventBusName=settings.event_bus,
            Targets=[{"Id": "tap", "Arn": tap_arn}],
        )

    @property
    def repos(self) -> Repositories:
        remote.bind_store(self.settings)  # a command may have bound the models elsewhere
        return Repositories()

    def run(self, *argv: str) -> Result:
        """``skydag ARGV...`` in this process; what it printed and its exit code."""
        self._capsys.readouterr()
        code = main(list(argv))
        out, err = self._capsys.readouterr()
        return Result(code, out, err)

    def bus_events(self) -> list[dict[str, Any]]:
        """The events put on the bus since the last call, oldest first."""
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

    def load_dag(self, text: str, *, source: str | None = None) -> DagSpec:
        """Make a DAG version current, as the DAG loader does for an uploaded file."""
        spec = load_dag_bytes(text.encode(), "test.yaml")
        self.repos.dags.save_version(
            spec,
            source=source or f"s3://{self.settings.dag_bucket}/dags/{spec.dag}.yaml",
            sha256=None,
            now=datetime.now(UTC),
        )
        return spec


class _NoSchedules:
    """The loader's EventBridge Scheduler port: schedules are not what these tests see."""

    def put_dag_schedule(self, spec: DagSpec, *, enabled: bool) -> None:
        return None

    def delete_dag_schedule(self, dag_id: str) -> None:
        return None


class Loader:
    """The DAG loader as the Lambda runs it, fed the bucket's objects (S3 events aside)."""

    def __init__(self, settings: Settings) -> None:
        from skydag.ports import MemoryEventSink, SystemClock
        from skydag.service.dag_loader import DagLoaderService
        from skydag.store.dag_files import DagFileRepository

        remote.bind_store(settings)
        self.settings = settings
        self.s3 = boto3.client("s3", region_name=REGION)
        self.files = DagFileRepository()
        self.service = DagLoaderService(
            Repositories(),
            self.files,
            _NoSchedules(),
            MemoryEventSink(),
            SystemClock(),
            prefix=settings.dag_prefix,
        )

    def put(self, key: str, text: str) -> None:
        """Upload a file and load it, as an upload and its S3 event would."""
        self.s3.put_object(Bucket=self.settings.dag_bucket, Key=key, Body=text.encode())
        self.load(key)

    def load(self, key: str) -> None:
        from skydag.service.dag_loader import DagObject

        data = self.s3.get_object(Bucket=self.settings.dag_bucket, Key=key)["Body"].read()
        self.service.file_written(DagObject(self.settings.dag_bucket, key), data)

    def delete(self, key: str) -> None:
        from skydag.service.dag_loader import DagObject

        self.s3.delete_object(Bucket=self.settings.dag_bucket, Key=key)
        self.service.file_deleted(DagObject(self.settings.dag_bucket, key))

    def load_everything(self) -> None:
        listing = self.s3.list_objects_v2(Bucket=self.settings.dag_bucket)
        for item in listing.get("Contents", []):
            self.load(item["Key"])


def clear_location_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the environment says where skydag is (so the stack is read)."""
    for name in (*remote.LOCATION_VARIABLES, remote.STACK_VARIABLE, "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


CHAIN = """
dag: chain
params: {size: 1}
tasks:
  extract: {noop: {}}
  load: {noop: {}, depends_on: [extract]}
"""

DAILY = """
dag: daily
schedule: "@daily"
start_date: 2026-11-01T00:00:00Z
tasks:
  only: {noop: {}}
"""
