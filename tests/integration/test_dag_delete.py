"""`dags delete` on the scheduler's side: the "Delete DAG" command retires a DAG (no more
runs from its signals, schedule or triggers), lets the runs it accepted finish or
cancels them, keeps their history, and refuses to retire a version uploaded after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.states import RunState, TaskState
from skydag.service.core import DagNotFound
from skydag.service.router import BadEvent
from skydag.settings import Settings
from skydag.spec.models import DagSpec


def gate(seconds: float) -> dict[str, Any]:
    """A scheduled DAG that signals also run, whose one task takes ``seconds``."""
    return {
        "dag": "gate",
        "schedule": "@hourly",
        "start_date": "2026-01-01T00:00:00Z",
        "max_active_runs": 1,
        "on": [{"source": ["acme.orders"], "detail-type": ["order.placed"]}],
        "tasks": {
            "work": {
                "batch": {"job_queue": "q", "job_definition": "work"},
                "local": {"command": ["python", "-c", f"import time; time.sleep({seconds})"]},
            }
        },
    }


GATE = gate(3)


@pytest.fixture
def env(aws: Settings, tmp_path: Path) -> Iterator[EmbeddedSkydag]:
    embedded = EmbeddedSkydag(aws, log_dir=tmp_path)
    yield embedded
    embedded.close()


def settle(env: EmbeddedSkydag) -> None:
    while env.pump():
        pass


def command(env: EmbeddedSkydag, detail_type: str, detail: dict[str, Any]) -> Any:
    return env.route(env.put_event(detail_type, detail, source="skydag.command"))


def signal(env: EmbeddedSkydag, detail_type: str) -> None:
    env.put_event(detail_type, {}, source="acme.orders")
    settle(env)


def states(env: EmbeddedSkydag) -> dict[str, RunState]:
    return {run.run_id: run.state for run in env.repos.runs.list_for_dag("gate")}


def test_a_deleted_dag_makes_no_runs_and_lets_its_runs_finish(
    env: EmbeddedSkydag, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(GATE)
    env.service.trigger("gate", run_id="in_flight")
    env.service.trigger("gate", run_id="waiting_turn")  # max_active_runs 1: queued
    settle(env)
    assert states(env) == {"in_flight": RunState.RUNNING, "waiting_turn": RunState.QUEUED}

    result = command(env, "Delete DAG", {"dag": "gate", "version": 1})
    assert not isinstance(result, BadEvent), result
    assert result.actions == ["retired (was version 1)"]
    assert env.repos.dags.get("gate").current_version is None
    signal(env, "order.placed")  # its on: no longer subscribes
    assert env.service.schedule_tick("gate") == []
    with pytest.raises(DagNotFound):
        env.service.trigger("gate")
    assert set(states(env)) == {"in_flight", "waiting_turn"}

    # The runs it accepted finish, the queued one too when the slot frees.
    assert env.run_until_finished("gate", "in_flight", timeout=30).state is RunState.SUCCESS
    assert env.run_until_finished("gate", "waiting_turn", timeout=30).state is RunState.SUCCESS

    # Delivered again: nothing more to do. Loaded again: the DAG is back.
    again = command(env, "Delete DAG", {"dag": "gate", "version": 1})
    assert again.actions == ["already retired"]
    assert dag_loader(GATE).dag == "gate"
    assert env.repos.dags.get("gate").current_version == 2
    signal(env, "order.placed")
    assert len(states(env)) == 3


def test_delete_with_cancel_runs_cancels_its_unfinished_runs(
    env: EmbeddedSkydag, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(gate(60))
    env.service.trigger("gate", run_id="in_flight")
    env.service.trigger("gate", run_id="waiting_turn")
    settle(env)
    result = command(env, "Delete DAG", {"dag": "gate", "version": 1, "cancel_runs": True})
    assert not isinstance(result, BadEvent), result
    settle(env)
    assert states(env) == {"in_flight": RunState.CANCELLED, "waiting_turn": RunState.CANCELLED}
    work = env.repos.tasks.get("gate", "in_flight", "work")
    assert work.state is TaskState.STOPPED
    assert env.repos.runs.get("gate", "in_flight").reason == "DAG gate deleted"


def test_a_delete_of_an_older_version_is_refused(
    env: EmbeddedSkydag, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(GATE)
    dag_loader({**GATE, "max_active_runs": 2})  # uploaded again after the CLI looked
    result = command(env, "Delete DAG", {"dag": "gate", "version": 1, "cancel_runs": True})
    assert isinstance(result, BadEvent)
    assert "is at version 2 now, not 1" in str(result)
    assert env.repos.dags.get("gate").current_version == 2
    unknown = command(env, "Delete DAG", {"dag": "nope"})
    assert isinstance(unknown, BadEvent)
    assert "DAG 'nope' not found" in str(unknown)
