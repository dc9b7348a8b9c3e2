"""The local cloud's plumbing: built from ``skydag.wiring``, delivering as AWS does, with
working fault-injection hooks (duplicates, drops, delays, crashes after an AWS call)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from skydag import wiring
from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions, Timing
from skydag.localcloud.hooks import Delivery, FaultPlan
from skydag.store.models import bind_models
from skydag.store.repositories import Repositories

CHAIN = b"""
dag: chain
tasks:
  first: {noop: {}}
  second: {depends_on: [first], noop: {}}
  third: {depends_on: [second], noop: {}}
"""


class PlumbingOnly(LocalCloud):
    """No service players: these tests need only noop tasks."""

    def _make_players(self) -> list[Any]:
        return []


def start(cloud: LocalCloud, dag: bytes = CHAIN) -> Repositories:
    settings = cloud.settings
    cloud.client("s3").put_object(Bucket=settings.dag_bucket, Key="dags/chain.yaml", Body=dag)
    bind_models(settings)
    repos = Repositories()

    def loaded() -> bool:
        head = repos.dags.find("chain")
        return head is not None and head.current_version is not None

    assert cloud.run_until(loaded, timeout=15)
    return repos


def trigger(cloud: LocalCloud, run_id: str) -> None:
    cloud.put_signal(
        {
            "Source": wiring.COMMAND_SOURCE,
            "DetailType": "Trigger DAG",
            "Detail": json.dumps({"dag": "chain", "run_id": run_id}),
        }
    )


def finished(repos: Repositories, run_id: str) -> bool:
    run = repos.runs.find("chain", run_id)
    return run is not None and run.state.value in ("success", "failed", "cancelled")


@pytest.fixture
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def cloud(log: io.StringIO) -> Iterator[LocalCloud]:
    with PlumbingOnly(LocalCloudOptions(log=log)) as running:
        yield running


def test_the_local_rules_are_the_stacks_rules(cloud: LocalCloud) -> None:
    """The same objects the CDK app deploys (skydag.wiring), not equal copies."""
    for rule in (*wiring.skydag_bus_rules(), *wiring.job_event_rules(), wiring.RECONCILE_RULE):
        assert cloud.rule_specs[rule.id] is rule
    dag_files = cloud.rule_specs["DagFilesRule"]
    assert dag_files == wiring.dag_files_rule(cloud.settings.dag_bucket, cloud.settings.dag_prefix)
    assert cloud.queue_source.batch_size == wiring.SCHEDULER_EVENT_SOURCE.batch_size
    assert cloud.stream_source.batch_size == wiring.STREAM_EVENT_SOURCE.batch_size
    assert cloud.stream_source.retry_attempts == wiring.STREAM_EVENT_SOURCE.retry_attempts
    attributes = cloud.client("sqs").get_queue_attributes(
        QueueUrl=cloud.queue_urls[wiring.SCHEDULER_QUEUE.id], AttributeNames=["All"]
    )["Attributes"]
    assert wiring.SCHEDULER_QUEUE.visibility_timeout is not None
    assert int(attributes["VisibilityTimeout"]) == int(
        wiring.SCHEDULER_QUEUE.visibility_timeout.total_seconds()
    )
    redrive = json.loads(attributes["RedrivePolicy"])
    assert wiring.SCHEDULER_QUEUE.redrive is not None
    assert int(redrive["maxReceiveCount"]) == wiring.SCHEDULER_QUEUE.redrive.max_receive_count
    assert redrive["deadLetterTargetArn"].endswith("skydag-scheduler-dlq")


def test_a_run_goes_through_the_production_handlers(cloud: LocalCloud, log: io.StringIO) -> None:
    repos = start(cloud)
    trigger(cloud, "r1")
    assert cloud.run_until(lambda: finished(repos, "r1"), timeout=20)
    assert repos.runs.get("chain", "r1").state.value == "success"
    assert cloud.invoker.invocations["DagLoader"] == 1
    assert cloud.invoker.invocations["Scheduler"] >= 1
    assert cloud.invoker.invocations["StreamProcessor"] >= 1
    text = log.getvalue()
    assert "skydag.command 'Trigger DAG' dag=chain run_id=r1: handled" in text
    assert "task chain/r1/third: queued -> success" in text


def test_records_nothing_reacts_to_are_filtered_out(cloud: LocalCloud) -> None:
    """The streams' filters (``wiring.STREAM_EVENT_SOURCE.filters``), as Lambda applies
    them: the records of the finishes counted on the run (running -> running) are read
    from the streams but never delivered, nor a task's written pending again, nor a write
    marked ``unheard`` (engine/reactions.py: here, with no rule taking task events, each
    task's queueing, start and finish by the scheduler that handled its upstream's or its
    own job's end); the run's start and end, and every other change of a task's state,
    are."""
    source = cloud.stream_source
    tables = cloud.settings.tables
    (runs_arn,) = [arn for arn in source.filters if f":table/{tables.runs}/stream/" in arn]
    (tasks_arn,) = [
        arn for arn in source.filters if f":table/{tables.task_instances}/stream/" in arn
    ]
    seen: dict[str, list[tuple[str | None, str]]] = {runs_arn: [], tasks_arn: []}
    delivered: dict[str, list[tuple[str | None, str]]] = {runs_arn: [], tasks_arn: []}

    unheard: list[tuple[str | None, str]] = []

    def states(record: Mapping[str, Any]) -> tuple[str | None, str]:
        data = record["dynamodb"]
        old = (data.get("OldImage") or {}).get("state", {}).get("S")
        return old, data["NewImage"]["state"]["S"]

    observe, handler = source.observe, source.handler

    def observing(record: dict[str, Any]) -> None:
        if record["dynamodb"].get("NewImage"):
            seen[record["eventSourceARN"]].append(states(record))
            if "unheard" in record["dynamodb"]["NewImage"]:
                unheard.append(states(record))
        if observe is not None:
            observe(record)

    def handling(event: dict[str, Any], context: Any) -> Any:
        for record in event["Records"]:
            delivered[record["eventSourceARN"]].append(states(record))
        return handler(event, context)

    source.observe, source.handler = observing, handling
    repos = start(cloud)
    trigger(cloud, "r1")
    assert cloud.run_until(lambda: finished(repos, "r1"), timeout=20)
    assert cloud.run_until(lambda: not cloud.busy(), timeout=20)

    assert repos.runs.get("chain", "r1").state.value == "success"
    assert ("running", "running") in seen[runs_arn]  # the finishes counted
    assert delivered[runs_arn] == [("queued", "running"), ("running", "success")]
    # A task's first write inserts it (it was never written: pending), here its queueing.
    inserted = [(None, "queued")] * len(repos.tasks.list_for_run("chain", "r1"))
    assert [change for change in seen[tasks_arn] if change[0] is None] == inserted
    quiet = [c for c in seen[tasks_arn] if c[1] == "pending" and c[0] in (None, "pending")]
    # The second and third tasks are queued by the invocation that starts their jobs
    # (it told their upstream's finish: unheard); the first by the run's start. Each job
    # here ends in its dispatch's own answer, a finish told from its record.
    assert unheard == [(None, "queued")] * 2
    assert quiet == []
    assert delivered[tasks_arn] == [(None, "queued"), *[("queued", "success")] * 3]
    assert sorted(delivered[tasks_arn] + unheard, key=str) == sorted(seen[tasks_arn], key=str)


def test_duplicated_rule_deliveries_and_stream_records_change_nothing(log: io.StringIO) -> None:
    def twice(delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
        if delivery.channel.startswith(("rule:", "stream:")):
            return [(0.0, delivery), (0.3, delivery)]
        return [(0.0, delivery)]

    with PlumbingOnly(LocalCloudOptions(log=log, tap=twice)) as cloud:
        repos = start(cloud)
        trigger(cloud, "dup")
        assert cloud.run_until(lambda: finished(repos, "dup"), timeout=20)
        cloud.run_until(lambda: not cloud.busy(), timeout=10)
        tasks = repos.tasks.list_for_run("chain", "dup")
        assert repos.runs.get("chain", "dup").state.value == "success"
        assert {ti.task_id: ti.try_number for ti in tasks} == {"first": 1, "second": 1, "third": 1}
        assert len(repos.runs.list_for_dag("chain")) == 1


def test_a_dropped_command_is_lost_and_a_delayed_one_arrives_later(log: io.StringIO) -> None:
    seen: list[str] = []

    def lose_first_delay_second(delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
        if delivery.channel == "rule:CommandsRule":
            seen.append(delivery.channel)
            return [] if len(seen) == 1 else [(1.0, delivery)]
        return [(0.0, delivery)]

    with PlumbingOnly(LocalCloudOptions(log=log, tap=lose_first_delay_second)) as cloud:
        repos = start(cloud)
        trigger(cloud, "lost")
        trigger(cloud, "late")
        assert cloud.run_until(lambda: finished(repos, "late"), timeout=20)
        assert repos.runs.find("chain", "lost") is None


def test_a_crash_after_a_write_is_redelivered_and_the_run_still_succeeds(
    log: io.StringIO,
) -> None:
    """The stream processor dies right after its first UpdateItem; the stream delivers
    the batch again and the run ends once, as if nothing happened."""
    crashed: list[str] = []

    def crash_once(function: str, event: Any) -> FaultPlan | None:
        if function == "StreamProcessor" and not crashed:
            crashed.append(function)
            return FaultPlan(1, "dynamodb", "UpdateItem")
        return None

    with PlumbingOnly(LocalCloudOptions(log=log, faults=crash_once)) as cloud:
        repos = start(cloud)
        trigger(cloud, "crash")
        assert cloud.run_until(lambda: finished(repos, "crash"), timeout=30)
        assert crashed
        assert repos.runs.get("chain", "crash").state.value == "success"


def test_a_batch_that_keeps_crashing_goes_to_the_stream_dead_letter_queue(
    log: io.StringIO,
) -> None:
    def always(function: str, event: Any) -> FaultPlan | None:
        return FaultPlan(1) if function == "StreamProcessor" else None

    with PlumbingOnly(LocalCloudOptions(log=log, faults=always)) as cloud:
        start(cloud)
        trigger(cloud, "poison")

        def dead_lettered() -> bool:
            return "StreamDlq" in log.getvalue()

        assert cloud.run_until(dead_lettered, timeout=60)
        messages = cloud.client("sqs").receive_message(
            QueueUrl=cloud.queue_urls[wiring.STREAM_DLQ.id], MaxNumberOfMessages=10
        )["Messages"]
    info = json.loads(messages[0]["Body"])
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["DDBStreamBatchInfo"]["batchSize"] >= 1


def test_a_scheduler_message_that_keeps_failing_moves_to_its_dead_letter_queue(
    log: io.StringIO,
) -> None:
    def always(function: str, event: Any) -> FaultPlan | None:
        return FaultPlan(1) if function == "Scheduler" else None

    options = LocalCloudOptions(
        log=log,
        faults=always,
        timing=Timing(
            visibility_timeout=timedelta(seconds=2), batching_window=timedelta(seconds=0.2)
        ),
    )
    with PlumbingOnly(options) as cloud:
        start(cloud)
        trigger(cloud, "never")
        dlq = cloud.queue_urls[wiring.SCHEDULER_DLQ.id]
        received: list[dict[str, Any]] = []

        def moved() -> bool:
            received.extend(cloud.client("sqs").receive_message(QueueUrl=dlq).get("Messages", []))
            return bool(received)

        assert cloud.run_until(moved, timeout=30)
    assert json.loads(received[0]["Body"])["detail-type"] == "Trigger DAG"
    # Moved after the queue's receive count, each receive one failed invocation, except
    # that a message whose visibility runs out while it waits in a batching window is
    # received again without an invocation (as Lambda's poller does): on a loaded
    # machine, one of the receives may be such.
    invocations = cloud.invoker.invocations["Scheduler"]
    redrive = wiring.SCHEDULER_QUEUE.redrive
    assert redrive is not None
    assert redrive.max_receive_count - 1 <= invocations <= redrive.max_receive_count


def test_a_timer_fires_on_time_and_is_deleted(cloud: LocalCloud) -> None:
    from datetime import UTC, datetime

    from skydag.adapters.schedules import EventBridgeSchedules

    repos = start(cloud)
    trigger(cloud, "base")
    assert cloud.run_until(lambda: finished(repos, "base"), timeout=20)
    timers = EventBridgeSchedules(cloud.settings)
    timers.set_timer(
        "t1",
        datetime.now(UTC) + timedelta(seconds=1),
        {"dag": "chain", "run_id": "base", "task": "first"},
    )
    scheduler = cloud.client("scheduler")
    group = cloud.settings.schedule_group

    def gone() -> bool:
        return not scheduler.list_schedules(GroupName=group)["Schedules"]

    assert cloud.run_until(gone, timeout=10)
