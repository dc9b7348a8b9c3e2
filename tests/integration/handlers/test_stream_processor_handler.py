"""The stream processor Lambda fed with real (moto) DynamoDB Streams records."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from handler_support import Stack, emf_metrics, metric_total

from skydag.engine.models import TaskInstance
from skydag.engine.states import RunState, TaskState
from skydag.handlers import _runtime
from skydag.spec.models import DagSpec
from skydag.store.repositories import Repositories

CHAIN = {
    "dag": "chain",
    "tasks": {"extract": {"noop": None}, "load": {"depends_on": ["extract"], "noop": None}},
}


def start_run(run_id: str = "manual__1") -> None:
    Repositories().dags.save_version(
        DagSpec.model_validate(CHAIN), source="test", sha256=None, now=datetime.now(UTC)
    )
    _runtime.scheduler_service().trigger("chain", run_id=run_id)


def deliver(stack: Stack, handlers: SimpleNamespace, context: Any, table: str) -> int:
    """One event-source-mapping delivery of what the table's stream has (Lambda never
    sends an empty batch); returns how many records it delivered."""
    batch = stack.stream_batch(table)
    if batch["Records"]:
        response = handlers.stream_processor.lambda_handler(batch, context)
        assert response == {"batchItemFailures": []}
    return len(batch["Records"])


def test_stream_changes_drive_a_run_to_success(
    stack: Stack, handlers: SimpleNamespace, context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = stack.settings.tables
    start_run()

    for _ in range(20):  # each round: the changes the previous round's reactions wrote
        delivered = sum(
            deliver(stack, handlers, context, table)
            for table in (tables.runs, tables.task_instances)
        )
        if not delivered:
            break

    run = Repositories().runs.get("chain", "manual__1")
    assert run.state is RunState.SUCCESS
    output = capsys.readouterr().out
    assert metric_total(output, "RunsStarted") == 1
    assert metric_total(output, "RunsFinished", state="success") == 1
    assert metric_total(output, "TaskOutcomes", state="success") == 2
    assert metric_total(output, "SchedulingDelay") >= 0
    delays = [value for name, _, value in emf_metrics(output) if name == "SchedulingDelay"]
    assert delays
    assert all(value.is_integer() for value in delays)  # whole milliseconds


def test_a_record_whose_processing_raises_is_reported_by_its_sequence_number(
    stack: Stack,
    handlers: SimpleNamespace,
    context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start_run()
    deliver(stack, handlers, context, stack.settings.tables.runs)  # its start queues extract
    service = _runtime.scheduler_service()
    real = service.on_task_changed

    def fails_for_the_queueing(old: TaskInstance | None, new: TaskInstance) -> None:
        if new.state is TaskState.QUEUED:
            raise RuntimeError("the dispatch target timed out")
        real(old, new)

    monkeypatch.setattr(service, "on_task_changed", fails_for_the_queueing)
    repos = Repositories()
    load = repos.tasks.get("chain", "manual__1", "load")
    repos.tasks.check_later(load, datetime.now(UTC))  # a second record, load's insert
    batch = stack.stream_batch(stack.settings.tables.task_instances)
    queueing = [
        record["dynamodb"]["SequenceNumber"]
        for record in batch["Records"]
        if record["dynamodb"]["NewImage"]["state"]["S"] == "queued"
    ]
    assert len(queueing) == 1
    assert len(batch["Records"]) > 1

    response = handlers.stream_processor.lambda_handler(batch, context)

    assert response == {"batchItemFailures": [{"itemIdentifier": queueing[0]}]}


def test_records_that_can_never_be_processed_are_dropped(
    stack: Stack, handlers: SimpleNamespace, context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    start_run()
    deliver(stack, handlers, context, stack.settings.tables.runs)  # its start queues extract
    batch = stack.stream_batch(stack.settings.tables.task_instances)
    foreign = copy.deepcopy(batch["Records"][0])
    foreign["eventSourceARN"] = foreign["eventSourceARN"].replace(
        "table/skydag-task-instances/", "table/someone-elses-table/"
    )
    garbled = copy.deepcopy(batch["Records"][0])
    garbled["dynamodb"]["NewImage"] = {"task_id": {"S": "extract"}}  # no run, no state
    removed = copy.deepcopy(batch["Records"][0])
    removed["eventName"] = "REMOVE"
    removed["dynamodb"].pop("NewImage")

    response = handlers.stream_processor.lambda_handler(
        {"Records": [foreign, garbled, removed]}, context
    )

    assert response == {"batchItemFailures": []}
    assert metric_total(capsys.readouterr().out, "BadEvents") == 2
