"""The reconciler Lambda, and the environment check every handler makes at cold start."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from handler_support import FUNCTION_ENV, Stack, load_event, metric_total

from skydag.engine.states import TaskState
from skydag.handlers import _runtime
from skydag.handlers._runtime import HandlerConfigError, validate_environment
from skydag.spec.models import DagSpec
from skydag.store.repositories import Repositories

# A task that waits for a signal that never comes, for one second at most.
WAITER = {
    "dag": "waiter",
    "tasks": {"hold": {"wait": {"on": [{"source": ["never.sent"]}]}, "timeout": "1s"}},
}


def test_the_reconciler_times_out_what_is_overdue(
    stack: Stack, handlers: SimpleNamespace, context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    Repositories().dags.save_version(
        DagSpec.model_validate(WAITER), source="test", sha256=None, now=datetime.now(UTC)
    )
    _runtime.scheduler_service().trigger("waiter", run_id="manual__1")
    tables = stack.settings.tables
    for _ in range(5):  # deliver the stream until the task waits
        for table in (tables.runs, tables.task_instances):
            batch = stack.stream_batch(table)
            if batch["Records"]:
                handlers.stream_processor.lambda_handler(batch, context)
    assert Repositories().tasks.get("waiter", "manual__1", "hold").state is TaskState.WAITING
    time.sleep(1.1)
    capsys.readouterr()

    # As EventBridge Scheduler invokes it (the payload is not used).
    counts = handlers.reconciler.lambda_handler({}, context)

    assert counts["timed_out"] == 1
    assert set(counts) >= {
        "retries",
        "timed_out",
        "redispatched",
        "described",
        "repaired",
        "failed",
    }
    assert counts["failed"] == 0
    assert Repositories().tasks.get("waiter", "manual__1", "hold").state is TaskState.FAILED
    output = capsys.readouterr().out
    assert metric_total(output, "Reconciled", action="timed_out") == 1
    assert metric_total(output, "Reconciled", action="retries") == 0

    # Nothing more is due: a second pass changes nothing.
    again = handlers.reconciler.lambda_handler(load_event("scheduler/schedule_tick.json"), context)
    assert again["timed_out"] == 0


def test_a_missing_or_malformed_variable_is_named() -> None:
    environ = dict(FUNCTION_ENV)
    del environ["SKYDAG_RUNS_TABLE"]
    environ["SKYDAG_DAG_BUCKET"] = ""
    environ["SKYDAG_EVENT_BUS_ARN"] = "skydag"

    with pytest.raises(HandlerConfigError) as raised:
        validate_environment(environ)

    message = str(raised.value)
    assert "SKYDAG_RUNS_TABLE is not set" in message
    assert "SKYDAG_DAG_BUCKET is empty" in message
    assert "SKYDAG_EVENT_BUS_ARN must be an ARN (arn:aws:...), got 'skydag'" in message


def test_the_environment_becomes_the_settings() -> None:
    environ = {**FUNCTION_ENV, "AWS_REGION": "eu-west-1", "SKYDAG_RUNS_TABLE": "prod-runs"}
    environ.pop("SKYDAG_DAG_PREFIX")

    settings = validate_environment(environ)

    assert settings.region == "eu-west-1"
    assert settings.tables.runs == "prod-runs"
    assert settings.dag_prefix == "dags/"
    assert settings.scheduler_role_arn == FUNCTION_ENV["SKYDAG_SCHEDULER_ROLE_ARN"]
