"""Scheduled runs (cron, catchup, late and duplicate ticks) and backfill, against moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import RunType
from skydag.engine.states import RunState
from skydag.settings import Settings
from skydag.spec.models import DagSpec


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(at(0))


@pytest.fixture
def env(aws: Settings, tmp_path: Path, clock: FixedClock) -> Iterator[EmbeddedSkydag]:
    embedded = EmbeddedSkydag(aws, log_dir=tmp_path, clock=clock)
    yield embedded
    embedded.close()


def hourly(**extra: Any) -> dict[str, Any]:
    return {
        "dag": "hourly",
        "schedule": "@hourly",
        "start_date": "2026-01-01T00:00:00Z",
        "tasks": {"work": {"noop": {}}},
        **extra,
    }


def logical_dates(runs: list[Any]) -> list[str]:
    return [r.logical_date.strftime("%H:%M") for r in runs]


def test_without_catchup_a_tick_creates_only_the_newest_interval(
    env: EmbeddedSkydag, clock: FixedClock, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(hourly())
    clock.moment = at(5, 30)
    runs = env.service.schedule_tick("hourly")
    assert logical_dates(runs) == ["04:00"]
    run = runs[0]
    assert run.run_type is RunType.SCHEDULED
    assert (run.data_interval_start, run.data_interval_end) == (at(4), at(5))
    assert run.run_id == "scheduled__2026-01-01T04:00:00.000000+00:00"
    # The same tick again (a duplicate delivery) owes nothing.
    assert env.service.schedule_tick("hourly") == []
    clock.moment = at(6, 10)
    assert logical_dates(env.service.schedule_tick("hourly")) == ["05:00"]


def test_catchup_creates_every_missed_interval_once_and_queues_beyond_max_active_runs(
    env: EmbeddedSkydag, clock: FixedClock, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(hourly(catchup=True, max_active_runs=1))
    clock.moment = at(3, 30)
    runs = env.service.schedule_tick("hourly")
    assert logical_dates(runs) == ["00:00", "01:00", "02:00"]
    assert [r.state for r in runs] == [RunState.RUNNING, RunState.QUEUED, RunState.QUEUED]
    assert env.service.schedule_tick("hourly") == []
    # The queued runs start one at a time, oldest first, as each one finishes.
    started: list[str] = []
    env.run_listeners.append(
        lambda old, new: (
            started.append(new.logical_date.strftime("%H:%M"))
            if new.state is RunState.RUNNING and (old is None or old.state is RunState.QUEUED)
            else None
        )
    )
    for run in runs:
        finished = env.run_until_finished("hourly", run.run_id, timeout=30)
        assert finished.state is RunState.SUCCESS
    assert started == ["00:00", "01:00", "02:00"]
    assert len(env.repos.runs.list_for_dag("hourly")) == 3


def test_paused_dag_gets_no_scheduled_runs(
    env: EmbeddedSkydag, clock: FixedClock, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(hourly())
    env.repos.dags.set_paused("hourly", True)
    clock.moment = at(5, 30)
    assert env.service.schedule_tick("hourly") == []


def test_end_date_stops_the_schedule(
    env: EmbeddedSkydag, clock: FixedClock, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(hourly(catchup=True, end_date="2026-01-01T02:00:00Z"))
    clock.moment = at(9)
    assert logical_dates(env.service.schedule_tick("hourly")) == ["00:00", "01:00"]


def test_backfill_creates_one_run_per_interval_and_is_idempotent(
    env: EmbeddedSkydag, clock: FixedClock, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(hourly(max_active_runs=2))
    clock.moment = at(12)
    runs = env.service.backfill("hourly", at(0), at(3))
    assert logical_dates(runs) == ["00:00", "01:00", "02:00", "03:00"]
    assert {r.run_type for r in runs} == {RunType.BACKFILL}
    assert [r.state for r in runs].count(RunState.RUNNING) == 2
    again = env.service.backfill("hourly", at(0), at(3))
    assert [r.run_id for r in again] == [r.run_id for r in runs]
    assert len(env.repos.runs.list_for_dag("hourly")) == 4
    for run in runs:
        assert env.run_until_finished("hourly", run.run_id, timeout=30).state is RunState.SUCCESS


def test_backfill_of_an_unscheduled_dag_is_refused(
    env: EmbeddedSkydag, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader({"dag": "adhoc", "tasks": {"a": {"noop": {}}}})
    with pytest.raises(ValueError, match="no schedule to backfill"):
        env.service.backfill("adhoc", at(0), at(3))
