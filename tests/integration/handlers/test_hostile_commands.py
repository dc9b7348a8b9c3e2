"""Hostile commands and events at the scheduler Lambda: each one is dropped (counted as a
BadEvent, never retried) with a one-line reason, and the good message beside it works.

Before: a 2,000-character run id, a backfill from year 1 to 9999 or before start_date, a
60,000-deep conf and "Pause DAG" for an unknown DAG were retried forever.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from handler_support import Stack, load_event, metric_total, sqs_batch, sqs_message

from skydag.spec.models import DagSpec
from skydag.store.repositories import Repositories

HOURLY = {
    "dag": "hourly",
    "schedule": "@hourly",
    "start_date": "2026-01-01T00:00:00Z",
    "tasks": {"only": {"noop": None}},
}


def load_dag(spec: dict[str, Any]) -> None:
    Repositories().dags.save_version(
        DagSpec.model_validate(spec), source="test", sha256=None, now=datetime.now(UTC)
    )


def command(detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
    event = load_event("commands/trigger_dag.json")
    event["detail-type"], event["detail"] = detail_type, detail
    return event


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


# Each hostile message, and a word its one-line reason must contain.
HOSTILE: dict[str, tuple[str, str]] = {
    "long run id": (
        json.dumps(command("Trigger DAG", {"dag": "hourly", "run_id": "r" * 2000})),
        "is not a valid run id",
    ),
    "run id with a slash": (
        json.dumps(command("Cancel Run", {"dag": "hourly", "run_id": "x/../../ESCAPE"})),
        "is not a valid run id",
    ),
    "long dag id": (json.dumps(command("Pause DAG", {"dag": "d" * 3000})), "not a valid id"),
    "unknown DAG paused": (
        json.dumps(command("Pause DAG", {"dag": "no_such_dag"})),
        "DAG 'no_such_dag' not found",
    ),
    "unknown DAG unpaused": (
        json.dumps(command("Unpause DAG", {"dag": "no_such_dag"})),
        "DAG 'no_such_dag' not found",
    ),
    "backfill year 1 to 9999": (
        json.dumps(
            command("Backfill DAG", {"dag": "hourly", "start": "0001-01-01", "end": "9999-12-31"})
        ),
        "more than 10000 intervals",
    ),
    "backfill before start_date": (
        json.dumps(
            command("Backfill DAG", {"dag": "hourly", "start": "2025-12-01", "end": "2025-12-31"})
        ),
        "dates before start_date are never run",
    ),
    "backfill too wide": (
        json.dumps(
            command("Backfill DAG", {"dag": "hourly", "start": "2026-01-01", "end": "2027-12-31"})
        ),
        "more than 10000 intervals",
    ),
    "conf 60,000 deep": (
        json.dumps(command("Trigger DAG", {"dag": "hourly", "conf": {}})).replace(
            '"conf": {}', f'"conf": {deep(60_000)}'
        ),
        "nested more than 32 levels deep",
    ),
    "conf 40 deep": (
        json.dumps(command("Trigger DAG", {"dag": "hourly", "conf": {}})).replace(
            '"conf": {}', f'"conf": {deep(40)}'
        ),
        "nested more than 32 levels deep",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_command_is_dropped_once_and_the_good_one_beside_it_runs(
    name: str,
    stack: Stack,
    handlers: SimpleNamespace,
    context: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    load_dag(HOURLY)
    body, reason = HOSTILE[name]
    hostile = sqs_message(body)
    good = sqs_message(json.dumps(command("Trigger DAG", {"dag": "hourly", "run_id": "ok"})))

    response = handlers.scheduler.lambda_handler(sqs_batch(hostile, good), context)

    assert response == {"batchItemFailures": []}  # nothing retried
    assert metric_total(capsys.readouterr().out, "BadEvents") == 1
    assert Repositories().runs.find("hourly", "ok") is not None
    [dropped] = [r.__dict__ for r in caplog.records if r.getMessage() == "dropped bad event"]
    assert reason in dropped["error"]
    assert "\n" not in dropped["error"]
    assert Repositories().dags.get("hourly").paused is False
