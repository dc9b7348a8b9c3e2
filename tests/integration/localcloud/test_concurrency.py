"""Concurrent invocations in the local cloud (``LocalCloudOptions(concurrency=N)``): moto
applies each DynamoDB request atomically, invocations really overlap, and a race one of
them loses is decided again, as on AWS."""

from __future__ import annotations

import io
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from skydag import wiring
from skydag.dev.server import aws_environment, moto_server
from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions, Timing
from skydag.localcloud.concurrency import atomic_dynamodb
from skydag.store.models import bind_models
from skydag.store.repositories import Repositories

FAN = b"""
dag: fan
tasks:
  root: {noop: {}}
  b0: {depends_on: [root], noop: {}}
  b1: {depends_on: [root], noop: {}}
  b2: {depends_on: [root], noop: {}}
  b3: {depends_on: [root], noop: {}}
  join: {depends_on: [b0, b1, b2, b3], noop: {}}
"""
GATE = b"""
dag: gate
tasks:
  approve: {wait: {on: {source: [test.gate], detail-type: [go]}}}
  after: {depends_on: [approve], noop: {}}
"""
FAST = Timing(batching_window=timedelta(seconds=0.1))


class PlumbingOnly(LocalCloud):
    """No service players: noop and wait tasks only."""

    def _make_players(self) -> list[Any]:
        return []


def load(cloud: LocalCloud, dag_id: str, text: bytes) -> Repositories:
    settings = cloud.settings
    cloud.client("s3").put_object(Bucket=settings.dag_bucket, Key=f"dags/{dag_id}.yaml", Body=text)
    bind_models(settings)
    repos = Repositories()

    def loaded() -> bool:
        head = repos.dags.find(dag_id)
        return head is not None and head.current_version is not None

    assert cloud.run_until(loaded, timeout=20)
    return repos


def command(cloud: LocalCloud, detail_type: str, detail: dict[str, Any]) -> None:
    cloud.put_signal(
        {"Source": wiring.COMMAND_SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail)}
    )


@contextmanager
def fine_grained_threads() -> Iterator[None]:
    """Switch threads as often as possible: a race that can happen, happens."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


@contextmanager
def counting_conflicts() -> Iterator[list[str]]:
    """The ConflictErrors the store raises (each a lost race), by message."""
    from skydag.store.errors import ConflictError

    raised: list[str] = []
    original = ConflictError.__init__

    def init(self: Any, message: str, current: Any) -> None:
        raised.append(message)
        original(self, message, current)

    ConflictError.__init__ = init  # type: ignore[method-assign]
    try:
        yield raised
    finally:
        ConflictError.__init__ = original  # type: ignore[method-assign]


def test_moto_applies_concurrent_conditional_writes_of_one_item_atomically() -> None:
    """Six writers race on one item, each conditional on the version they all read: in
    every round exactly one wins. (moto's server answers each request on a thread and its
    DynamoDB backend takes no lock: without ``atomic_dynamodb`` two may win.)"""
    with moto_server() as url, aws_environment(url), atomic_dynamodb(), fine_grained_threads():
        config = Config(account_id_endpoint_mode="disabled", retries={"max_attempts": 1})

        def client() -> Any:
            return boto3.client(
                "dynamodb", endpoint_url=url, region_name="us-east-1", config=config
            )

        admin = client()
        admin.create_table(
            TableName="items",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        writers = [client() for _ in range(6)]
        for round_number in range(30):
            admin.put_item(TableName="items", Item={"pk": {"S": "k"}, "version": {"N": "0"}})
            winners: list[int] = []
            start = threading.Barrier(len(writers))

            def write(
                writer: Any,
                index: int,
                start: threading.Barrier = start,
                winners: list[int] = winners,
            ) -> None:
                start.wait(timeout=10)
                try:
                    writer.update_item(
                        TableName="items",
                        Key={"pk": {"S": "k"}},
                        UpdateExpression="SET version = :next, winner = :me",
                        ConditionExpression="version = :read",
                        ExpressionAttributeValues={
                            ":read": {"N": "0"},
                            ":next": {"N": "1"},
                            ":me": {"N": str(index)},
                        },
                    )
                    winners.append(index)
                except writer.exceptions.ConditionalCheckFailedException:
                    pass

            threads = [
                threading.Thread(target=write, args=(writer, index))
                for index, writer in enumerate(writers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert len(winners) == 1, f"round {round_number}: writers {winners} all won"
            item = admin.get_item(TableName="items", Key={"pk": {"S": "k"}})["Item"]
            assert item["winner"] == {"N": str(winners[0])}


def test_invocations_overlap_and_the_runs_end_as_one_at_a_time() -> None:
    """Fifteen runs triggered at once: two scheduler batches (ten messages at most each)
    run side by side, the stream shards and the scheduler too; every run still ends once,
    every task ran once."""
    log = io.StringIO()
    with PlumbingOnly(LocalCloudOptions(log=log, timing=FAST, concurrency=4)) as cloud:
        repos = load(cloud, "fan", FAN)
        runs = [f"r{number}" for number in range(15)]
        for run_id in runs:
            command(cloud, "Trigger DAG", {"dag": "fan", "run_id": run_id})

        def all_finished() -> bool:
            found = [repos.runs.find("fan", run_id) for run_id in runs]
            return all(run is not None and run.state.value == "success" for run in found)

        assert cloud.run_until(all_finished, timeout=90), log.getvalue()[-3000:]
        assert cloud.run_until(lambda: not cloud.busy(), timeout=20)
        for run_id in runs:
            tries = {ti.task_id: ti.try_number for ti in repos.tasks.list_for_run("fan", run_id)}
            assert tries == dict.fromkeys(("root", "b0", "b1", "b2", "b3", "join"), 1)
        assert len(repos.runs.list_for_dag("fan")) == len(runs)
        invoker = cloud.invoker
    assert invoker.max_in_flight_of["Scheduler"] >= 2, invoker.max_in_flight_of
    assert invoker.max_in_flight >= 3, invoker.max_in_flight_of
    assert invoker.in_flight() == 0
    assert "dead letter" not in log.getvalue()


def test_one_invocation_at_a_time_by_default() -> None:
    with PlumbingOnly(LocalCloudOptions(log=io.StringIO(), timing=FAST)) as cloud:
        repos = load(cloud, "fan", FAN)
        for run_id in ("a", "b"):
            command(cloud, "Trigger DAG", {"dag": "fan", "run_id": run_id})

        def both_finished() -> bool:
            return all(
                (run := repos.runs.find("fan", run_id)) is not None and run.state.value == "success"
                for run_id in ("a", "b")
            )

        assert cloud.run_until(both_finished, timeout=60)
        assert cloud.invoker.max_in_flight == 1


class Rendezvous:
    """The call watcher: holds the first two invocations that read ``task`` until both
    did, so that both decide from the same version and both write."""

    def __init__(self, table: str, task: str) -> None:
        self.table = table
        self.task = task
        self.armed = False
        self.arrived = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(2, timeout=20)

    def __call__(self, service: str, operation: str, body: Any) -> None:
        if not self.armed or (service, operation) != ("dynamodb", "GetItem"):
            return
        if not isinstance(body, dict) or body.get("TableName") != self.table:
            return
        if json.dumps(body.get("Key")).find(f'"{self.task}"') < 0:
            return
        with self._lock:
            if self.arrived >= 2:
                return
            self.arrived += 1
        self._barrier.wait()


def test_a_race_lost_between_two_concurrent_invocations_is_decided_again() -> None:
    """Two "Mark Task" commands for one waiting task, in two scheduler invocations that
    both read the task before either writes: one conditional write wins, the other loses
    (a ConflictError), reads the task again, finds it marked and leaves it. The task is
    marked once, both messages are handled, nothing is retried or dead-lettered."""
    log = io.StringIO()
    watcher = Rendezvous(table="", task="approve")
    options = LocalCloudOptions(log=log, timing=FAST, concurrency=2, watcher=watcher)
    with PlumbingOnly(options) as cloud, counting_conflicts() as conflicts:
        watcher.table = cloud.settings.tables.task_instances
        repos = load(cloud, "gate", GATE)
        command(cloud, "Trigger DAG", {"dag": "gate", "run_id": "g1"})

        def state(task: str) -> str | None:
            ti = repos.tasks.find("gate", "g1", task)
            return ti.state.value if ti is not None else None

        assert cloud.run_until(lambda: state("approve") == "waiting", timeout=30)
        assert cloud.run_until(lambda: not cloud.busy(), timeout=10)
        watcher.armed = True
        mark = {"dag": "gate", "run_id": "g1", "task": "approve", "state": "success"}
        command(cloud, "Mark Task", mark)
        assert cloud.run_until(lambda: watcher.arrived == 1, timeout=10)
        command(cloud, "Mark Task", mark)  # a second batch: the first is held
        assert cloud.run_until(lambda: state("after") == "success", timeout=30)
        assert cloud.run_until(lambda: not cloud.busy(), timeout=10)
        approve = repos.tasks.get("gate", "g1", "approve")
        max_schedulers = cloud.invoker.max_in_flight_of["Scheduler"]
    text = log.getvalue()
    assert watcher.arrived == 2
    assert max_schedulers == 2
    assert any("approve" in message for message in conflicts), conflicts
    assert (approve.state.value, approve.try_number) == ("success", 0)
    assert text.count("task gate/g1/approve: waiting -> success") == 1, text
    assert text.count("'Mark Task' dag=gate run_id=g1 task=approve: handled") == 2, text
    assert "SQS redelivers" not in text
    assert "dead letter" not in text


@pytest.mark.parametrize("concurrency", [0, -1])
def test_concurrency_is_at_least_one(concurrency: int) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        LocalCloud(LocalCloudOptions(concurrency=concurrency))
