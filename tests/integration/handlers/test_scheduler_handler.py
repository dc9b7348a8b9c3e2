"""The scheduler Lambda: SQS batches of EventBridge events, partial batch responses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from handler_support import EVENTS, Stack, load_event, metric_total, sqs_batch, sqs_message

from skydag.engine.models import RunType
from skydag.engine.states import RunState
from skydag.service.runs import RunLifecycle
from skydag.spec.models import DagSpec
from skydag.store.repositories import Repositories


def load_dag(spec: dict[str, Any]) -> None:
    Repositories().dags.save_version(
        DagSpec.model_validate(spec), source="test", sha256=None, now=datetime.now(UTC)
    )


def one_noop_task(dag: str, **keys: Any) -> dict[str, Any]:
    return {"dag": dag, **keys, "tasks": {"only": {"noop": None}}}


def trigger(dag: str, run_id: str) -> str:
    event = load_event("commands/trigger_dag.json")
    event["detail"] = {"dag": dag, "conf": {"full_refresh": True}, "run_id": run_id}
    return json.dumps(event)


def test_only_the_retryable_record_is_reported_as_failed(
    stack: Stack,
    handlers: SimpleNamespace,
    context: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    load_dag(one_noop_task("orders"))
    load_dag(one_noop_task("flaky"))
    real_trigger = RunLifecycle.trigger

    def throttled_for_flaky(self: RunLifecycle, dag_id: str, **kwargs: Any) -> Any:
        if dag_id == "flaky":  # DynamoDB throttled this write past botocore's retries
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "PutItem"
            )
        return real_trigger(self, dag_id, **kwargs)

    monkeypatch.setattr(RunLifecycle, "trigger", throttled_for_flaky)
    good = sqs_message(trigger("orders", "manual__good"))
    malformed = sqs_message('{"version": "0", "detail-type": "Trigger DAG", ')
    unknown_dag = sqs_message(trigger("no_such_dag", "manual__lost"))
    transient = sqs_message(trigger("flaky", "manual__later"))

    response = handlers.scheduler.lambda_handler(
        sqs_batch(good, malformed, unknown_dag, transient), context
    )

    assert response == {"batchItemFailures": [{"itemIdentifier": transient["messageId"]}]}
    run = Repositories().runs.get("orders", "manual__good")
    assert (run.run_type, dict(run.conf)) == (RunType.MANUAL, {"full_refresh": True})
    assert Repositories().runs.find("flaky", "manual__later") is None
    assert metric_total(capsys.readouterr().out, "BadEvents") == 2
    # What was dropped, and where, is in the log.
    dropped = [r.__dict__ for r in caplog.records if r.getMessage() == "dropped bad event"]
    assert {entry["what"] for entry in dropped} == {
        f"SQS message {malformed['messageId']}",
        f"SQS message {unknown_dag['messageId']}",
    }
    assert any("no_such_dag" in entry["error"] for entry in dropped)


def test_a_batch_where_everything_fails_is_reported_record_by_record(
    stack: Stack, handlers: SimpleNamespace, context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_dag(one_noop_task("flaky"))

    def throttled(self: RunLifecycle, dag_id: str, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "Query")

    monkeypatch.setattr(RunLifecycle, "trigger", throttled)
    first, second = sqs_message(trigger("flaky", "a")), sqs_message(trigger("flaky", "b"))

    response = handlers.scheduler.lambda_handler(sqs_batch(first, second), context)

    assert response == {
        "batchItemFailures": [
            {"itemIdentifier": first["messageId"]},
            {"itemIdentifier": second["messageId"]},
        ]
    }


@pytest.mark.parametrize(
    "body",
    [
        "[1, 2, 3]",
        json.dumps({"id": "x", "source": "skydag.command", "detail-type": "Trigger DAG"}),
        json.dumps(
            {
                "id": "x",
                "source": "skydag.command",
                "detail-type": "Trigger DAG",
                "detail": {"dag": "orders", "blob": "x" * (300 * 1024)},
            }
        ),
        json.dumps(
            {"id": "x", "source": "skydag.command", "detail-type": "Drop Tables", "detail": {}}
        ),
    ],
    ids=["not-an-object", "no-detail", "oversized", "unknown-command"],
)
def test_bad_events_are_dropped_not_retried(
    stack: Stack, handlers: SimpleNamespace, context: Any, body: str
) -> None:
    response = handlers.scheduler.lambda_handler(sqs_batch(sqs_message(body)), context)

    assert response == {"batchItemFailures": []}


def test_a_schedule_tick_creates_the_run_owed(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    load_dag(one_noop_task("hourly", schedule="@hourly", start_date=start.isoformat()))
    tick = load_event("scheduler/schedule_tick.json")
    tick["detail"] = {"dag": "hourly"}
    tick["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    response = handlers.scheduler.lambda_handler(sqs_batch(sqs_message(json.dumps(tick))), context)

    assert response == {"batchItemFailures": []}
    [run] = Repositories().runs.list_for_dag("hourly")
    assert run.run_type is RunType.SCHEDULED
    # The same tick again (SQS redelivery, a second EventBridge invocation): no new run.
    handlers.scheduler.lambda_handler(sqs_batch(sqs_message(json.dumps(tick))), context)
    assert len(Repositories().runs.list_for_dag("hourly")) == 1


def test_every_canonical_command_and_timer_is_handled(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    etl = (
        Path(__file__).resolve().parents[3] / "examples" / "dags" / "etl_daily.yaml"
    ).read_bytes()
    from skydag.spec.loader import load_dag_bytes

    Repositories().dags.save_version(
        load_dag_bytes(etl, "etl_daily.yaml"), source="test", sha256=None, now=datetime.now(UTC)
    )
    clear = load_event("commands/clear_task.json")
    run_id = clear["detail"]["run_id"]
    from skydag.handlers import _runtime

    _runtime.scheduler_service().trigger("etl_daily", run_type=RunType.SCHEDULED, run_id=run_id)
    names = [
        "trigger_dag",
        "backfill_dag",
        "clear_task",
        "mark_task",
        "cancel_run",
        "pause_dag",
        "unpause_dag",
    ]
    assert sorted(names) == sorted(p.stem for p in (EVENTS / "commands").glob("*.json"))
    bodies = [json.dumps(load_event(f"commands/{name}.json")) for name in names]
    bodies.append(json.dumps(load_event("scheduler/timer_fired.json")))

    response = handlers.scheduler.lambda_handler(
        sqs_batch(*(sqs_message(body) for body in bodies)), context
    )

    assert response == {"batchItemFailures": []}
    runs = {run.run_id: run for run in Repositories().runs.list_for_dag("etl_daily")}
    assert "manual__refresh-2026-11-21" in runs
    # Logical dates from Nov 1 00:00 to Nov 7 00:00 (Paris): the 02:00 of Nov 1 to Nov 6.
    assert sum(run.run_type is RunType.BACKFILL for run in runs.values()) == 6
    assert runs[run_id].state is RunState.CANCELLED
    assert Repositories().dags.get("etl_daily").paused is False


def test_the_canonical_sqs_wrapper_is_what_the_handler_takes(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    load_dag(one_noop_task("etl_daily"))

    response = handlers.scheduler.lambda_handler(load_event("sqs/trigger_dag.json"), context)

    assert response == {"batchItemFailures": []}
    assert Repositories().runs.find("etl_daily", "manual__refresh-2026-11-21") is not None


# --- job ends: the rules invoke the function with the event itself ---------------------------


def batch_succeeded(job_name: str) -> dict[str, Any]:
    event = load_event("aws/batch_job_succeeded.json")
    event["detail"]["jobName"] = job_name
    return event


def test_a_job_end_invoked_directly_is_handled_and_answers_nothing(
    stack: Stack, handlers: SimpleNamespace, context: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A skydag job name whose try the store does not know: handled (found nothing).
    event = batch_succeeded("skydag-orders-only-0123456789abcdef")

    assert handlers.scheduler.lambda_handler(event, context) is None
    assert not [r for r in caplog.records if r.getMessage() == "dropped bad event"]


@pytest.mark.parametrize(
    "event",
    [
        [1, 2, 3],
        {
            "id": "c1",
            "source": "skydag.command",
            "detail-type": "Trigger DAG",
            "detail": {"dag": "orders", "run_id": "manual__direct"},
        },
        {"id": "s1", "source": "acme.sales", "detail-type": "Orders Ready", "detail": {}},
        # A Batch event of a job that is not skydag's: its rule would not deliver it.
        {**load_event("aws/batch_job_succeeded.json"), "id": "b1"}
        | {"detail": {**load_event("aws/batch_job_succeeded.json")["detail"], "jobName": "etl"}},
    ],
    ids=["not-an-object", "a-command", "a-signal", "not-skydags-job"],
)
def test_what_no_invoking_rule_delivers_is_dropped_not_retried(
    stack: Stack,
    handlers: SimpleNamespace,
    context: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    event: Any,
) -> None:
    """A command or a signal comes through the queue and its policy: invoked directly
    (a rule pointed at the function by hand, a caller with lambda:InvokeFunction), it is
    refused with its reason, never acted on and never retried."""
    load_dag(one_noop_task("orders"))

    assert handlers.scheduler.lambda_handler(event, context) is None

    assert Repositories().runs.find("orders", "manual__direct") is None
    assert metric_total(capsys.readouterr().out, "BadEvents") == 1
    (dropped,) = [r.__dict__ for r in caplog.records if r.getMessage() == "dropped bad event"]
    if isinstance(event, dict):
        assert repr(event["id"]) in dropped["error"]
        assert "only those invoke the scheduler" in dropped["error"]
    else:
        assert "JSON list" in dropped["error"]


def test_a_job_end_that_may_succeed_later_is_raised_for_lambda_to_retry(
    stack: Stack, handlers: SimpleNamespace, context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skydag.service.reports import TaskReports

    def throttled(self: TaskReports, event: Any) -> Any:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "Query")

    monkeypatch.setattr(TaskReports, "on_job_event", throttled)

    with pytest.raises(ClientError, match="ThrottlingException"):
        handlers.scheduler.lambda_handler(batch_succeeded("skydag-orders-only-0123"), context)


def test_the_outcomes_a_job_end_wrote_unheard_are_counted_by_the_scheduler(
    stack: Stack,
    handlers: SimpleNamespace,
    context: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A finish whose write leaves no stream record (``unheard``) is not seen by the stream
    processor, which counts TaskOutcomes: the scheduler that wrote it counts it, once."""
    from skydag.engine.transitions import Decision
    from skydag.service.core import Scheduler
    from skydag.service.reports import TaskReports

    schedulers: list[Scheduler] = []

    def ends_a_try(self: TaskReports, event: Any) -> Decision:
        self.scheduler.unheard_outcomes["success"] += 1  # as decide_and_apply does
        schedulers.append(self.scheduler)
        return Decision.ignore("a finish told at once")

    monkeypatch.setattr(TaskReports, "on_job_event", ends_a_try)
    event = batch_succeeded("skydag-orders-only-0123")

    handlers.scheduler.lambda_handler(event, context)
    handlers.scheduler.lambda_handler(event, context)

    assert metric_total(capsys.readouterr().out, "TaskOutcomes", state="success") == 2
    assert [scheduler.take_unheard_outcomes() for scheduler in schedulers] == [{}, {}]
