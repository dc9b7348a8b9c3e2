"""The embedded environment: moto in-process, the stack's tables, and the real scheduler.

Changes reach the scheduler exactly as in production: through the tables' DynamoDB
Streams (read here by polling, in Lambda by an event-source mapping).
"""

from __future__ import annotations

import heapq
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config

from skydag.engine.models import DagRun, JobReport, TaskInstance
from skydag.engine.states import FINISHED_RUN_STATES
from skydag.ports import Clock, MemoryEventSink, SystemClock
from skydag.service.router import BadEvent, JobEventParser, RouteResult, route_event
from skydag.service.scheduler_service import SchedulerService
from skydag.settings import Settings
from skydag.store.models import bind_models, create_tables
from skydag.store.repositories import Repositories, run_from_image, task_instance_from_image
from skydag.targets.base import Target, TargetRegistry
from skydag.targets.builtin import TargetSet
from skydag.targets.local import LocalTarget

_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
}


@contextmanager
def embedded_aws() -> Iterator[None]:
    """moto in this process, with fake credentials so nothing can reach a real account."""
    from moto import mock_aws

    from skydag.localcloud.stream_inserts import one_insert_per_created_item
    from skydag.localcloud.transactions import item_level_transactions

    saved = {k: os.environ.get(k) for k in (*_FAKE_ENV, "AWS_ENDPOINT_URL", "AWS_PROFILE")}
    os.environ.update(_FAKE_ENV)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_PROFILE", None)
    try:
        with (
            mock_aws(config={"batch": {"use_docker": False}}),
            item_level_transactions(),
            one_insert_per_created_item(),
        ):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class PollingTarget(Target, Protocol):
    """A target whose outcomes are collected by polling (the local runner, test doubles)."""

    def target_for(self, kind: str) -> Target: ...

    def poll(self) -> list[JobReport]: ...

    def running(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # "run" or "task"
    old: Any
    new: Any


class StreamFeed:
    """Reads the runs and task-instances streams, shard by shard, from where it left off."""

    def __init__(self, settings: Settings) -> None:
        self._dynamodb = boto3.client(
            "dynamodb", region_name=settings.region, endpoint_url=settings.endpoint_url
        )
        self._streams = boto3.client(
            "dynamodbstreams",
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=Config(account_id_endpoint_mode="disabled"),
        )
        # (stream, shard) -> (kind, iterator); shard ids are only unique within a stream.
        self._iterators: dict[tuple[str, str], tuple[str, str]] = {}
        for kind, table in (
            ("run", settings.tables.runs),
            ("task", settings.tables.task_instances),
        ):
            arn = self._dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
            for shard in self._streams.describe_stream(StreamArn=arn)["StreamDescription"][
                "Shards"
            ]:
                iterator = self._streams.get_shard_iterator(
                    StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
                self._iterators[(arn, shard["ShardId"])] = (kind, iterator)

    def poll(self) -> list[Change]:
        changes: list[Change] = []
        for shard, (kind, iterator) in list(self._iterators.items()):
            response = self._streams.get_records(ShardIterator=iterator, Limit=1000)
            self._iterators[shard] = (kind, response["NextShardIterator"])
            for record in response["Records"]:
                changes.append(_to_change(kind, record["dynamodb"]))
        return changes


def _to_change(kind: str, data: dict[str, Any]) -> Change:
    convert: Callable[[dict[str, Any]], Any] = (
        run_from_image if kind == "run" else task_instance_from_image
    )
    old = convert(data["OldImage"]) if "OldImage" in data else None
    new = convert(data["NewImage"]) if "NewImage" in data else None
    return Change(kind, old, new)


class EmbeddedSkydag:
    """One scheduler wired to moto, the local target and the streams, driven by ``pump``."""

    def __init__(
        self,
        settings: Settings,
        *,
        log_dir: Path,
        clock: Clock | None = None,
        target: PollingTarget | None = None,
        targets: TargetRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        create_tables(settings)
        bind_models(settings)
        self.repos = Repositories()
        self.events = MemoryEventSink()
        self.local: PollingTarget = target or LocalTarget(self.clock, log_dir, emit=self._emitted)
        # A scripted target (tests) takes every kind; the local runner takes all but
        # `wait`, which finishes when dispatched (its signal came) as in production.
        registry: TargetRegistry = targets or (
            self.local
            if target is not None
            else TargetSet(self.clock, self.local, instant_kinds=frozenset({"wait"}))
        )
        # Events put on the skydag bus (emit tasks, tests): routed like in production.
        self.bus: list[dict[str, Any]] = []
        self.routed: list[tuple[Any, RouteResult | BadEvent]] = []
        # How the services' state-change events are read (None: the AWS targets' parsers).
        self.parse_job_event: JobEventParser | None = None
        self.service = SchedulerService(
            self.repos,
            registry,
            self.clock,
            self.events,
            state_table=settings.tables.task_state,
        )
        self.feed = StreamFeed(settings)
        self._due: list[datetime] = []  # a heap of retry and timeout times seen
        self.task_listeners: list[Callable[[TaskInstance | None, TaskInstance], None]] = []
        self.run_listeners: list[Callable[[DagRun | None, DagRun], None]] = []

    def pump(self) -> int:
        """Handle what is pending (changes, job reports, due timers); returns how much."""
        handled = 0
        for change in self.feed.poll():
            handled += 1
            if change.new is None:
                continue
            if change.kind == "run":
                self.service.on_run_changed(change.old, change.new)
                for run_listener in self.run_listeners:
                    run_listener(change.old, change.new)
            else:
                self._note_due(change.new)
                self.service.on_task_changed(change.old, change.new)
                for task_listener in self.task_listeners:
                    task_listener(change.old, change.new)
        for report in self.local.poll():
            handled += 1
            self.service.on_job_report(report)
        while self.bus:
            handled += 1
            self.route(self.bus.pop(0))
        now = self.clock.now()
        if self._due and now >= self._due[0]:
            while self._due and now >= self._due[0]:
                heapq.heappop(self._due)
            handled += self.service.on_timers(now)
        return handled

    def put_event(
        self, detail_type: str, detail: Mapping[str, Any], *, source: str = "dev", **extra: Any
    ) -> dict[str, Any]:
        """Put an event on the (embedded) skydag bus, as PutEvents would: it gets an id
        and a time, and is routed on the next pump."""
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": "123456789012",
            "time": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.settings.region,
            "resources": [],
            "detail": dict(detail),
            **extra,
        }
        self.bus.append(event)
        return event

    def route(self, event: Any) -> RouteResult | BadEvent:
        """Route one event now, as the scheduler Lambda would; a bad one is recorded."""
        outcome: RouteResult | BadEvent
        try:
            outcome = route_event(self.service, event, parse_job_event=self.parse_job_event)
        except BadEvent as error:
            outcome = error
        self.routed.append((event, outcome))
        return outcome

    def _emitted(self, target: Mapping[str, Any]) -> None:
        self.put_event(
            str(target.get("detail-type", "")),
            target.get("detail") or {},
            source=str(target.get("source") or "skydag.dev"),
        )

    def run_until_finished(
        self, dag_id: str, run_id: str, *, timeout: float = 3600.0, idle_sleep: float = 0.02
    ) -> DagRun:
        """Pump until the run ends; a run that can make no progress is reported, not waited on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pump():
                continue
            run = self.repos.runs.get(dag_id, run_id)
            if run.state in FINISHED_RUN_STATES:
                return run
            if not self.local.running() and not self._due and not self.bus:
                # Nothing runs, nothing is due and no change is pending: it is stuck.
                return run
            time.sleep(idle_sleep)
        return self.repos.runs.get(dag_id, run_id)

    def close(self) -> None:
        self.local.close()

    def _note_due(self, ti: TaskInstance) -> None:
        for due in (ti.next_attempt_at, ti.timeout_at):
            if due is not None:
                heapq.heappush(self._due, due)
