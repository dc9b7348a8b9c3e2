"""Scheduled runs (cron, catchup, late and duplicate ticks) and backfill, against moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.backfill import Reprocess
from skydag.engine.models import RunType
from skydag.engine.states import RunState
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.spec.schedule import DataInterval


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


def logical_dates_of(intervals: Sequence[DataInterval]) -> list[str]:
    return [interval.start.strftime("%H:%M") for interval in intervals]


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
    runs = env.service.backfill("hourly", at(0), at(3)).runs
    assert logical_dates(runs) == ["00:00", "01:00", "02:00", "03:00"]
    assert {r.run_type for r in runs} == {RunType.BACKFILL}
    assert [r.state for r in runs].count(RunState.RUNNING) == 2
    again = env.service.backfill("hourly", at(0), at(3))
    assert again.runs == []  # every date has its run now: all skipped
    assert logical_dates_of(again.skipped) == ["00:00", "01:00", "02:00", "03:00"]
    assert len(env.repos.runs.list_for_dag("hourly")) == 4
    for run in runs:
        assert env.run_until_finished("hourly", run.run_id, timeout=30).state is RunState.SUCCESS


# Fails the run of 01:00 only (its exit code says which date it was).
FAILS_AT_ONE = (
    "import sys; sys.exit(3 if '{{ run.logical_date }}'.startswith('2026-01-01T01') else 0)"
)


def failing_at_one(**extra: Any) -> dict[str, Any]:
    return hourly(
        tasks={
            "work": {
                "batch": {"job_queue": "q", "job_definition": "work"},
                "local": {"command": ["python", "-c", FAILS_AT_ONE]},
            }
        },
        **extra,
    )


def finish_all(env: EmbeddedSkydag, runs: Sequence[Any]) -> dict[str, RunState]:
    return {
        run.logical_date.strftime("%H:%M"): env.run_until_finished(
            "hourly", run.run_id, timeout=60
        ).state
        for run in runs
    }


def test_backfill_reprocess_failed_reruns_only_the_failed_date_once(
    env: EmbeddedSkydag, clock: FixedClock, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(failing_at_one())
    clock.moment = at(12)
    first = env.service.backfill("hourly", at(0), at(2)).runs
    assert finish_all(env, first) == {
        "00:00": RunState.SUCCESS,
        "01:00": RunState.FAILED,
        "02:00": RunState.SUCCESS,
    }
    planned = env.service.runs.plan_backfill(
        "hourly", at(0), at(3), reprocess=Reprocess.FAILED, backfill_id="b2"
    )
    assert logical_dates_of([p.interval for p in planned.create]) == ["01:00", "03:00"]
    assert len(env.repos.runs.list_for_dag("hourly")) == 3  # planning changed nothing
    again = env.service.backfill(
        "hourly", at(0), at(2), reprocess=Reprocess.FAILED, backfill_id="b2"
    )
    assert [run.run_id for run in again.runs] == ["backfill__2026-01-01T01:00:00.000000+00:00__b2"]
    assert logical_dates_of(again.skipped) == ["00:00", "02:00"]
    assert {r.run_type for r in again.runs} == {RunType.BACKFILL}
    # The same command delivered again, after its rerun failed too: the same run, no new one.
    assert finish_all(env, again.runs) == {"01:00": RunState.FAILED}
    redelivered = env.service.backfill(
        "hourly", at(0), at(2), reprocess=Reprocess.FAILED, backfill_id="b2"
    )
    assert [run.run_id for run in redelivered.runs] == [again.runs[0].run_id]
    assert len(env.repos.runs.list_for_dag("hourly")) == 4


def test_backfill_reprocess_all_reruns_every_finished_date(
    env: EmbeddedSkydag, clock: FixedClock, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(hourly())
    clock.moment = at(12)
    finish_all(env, env.service.backfill("hourly", at(0), at(1)).runs)
    rerun = env.service.backfill("hourly", at(0), at(1), reprocess=Reprocess.ALL, backfill_id="x")
    assert [run.run_id.rsplit("__", 1)[1] for run in rerun.runs] == ["x", "x"]
    assert rerun.skipped == ()
    assert len(env.repos.runs.list_for_dag("hourly")) == 4


def test_backfill_max_active_runs_bounds_its_running_runs(
    env: EmbeddedSkydag, clock: FixedClock, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(hourly(max_active_runs=10))
    clock.moment = at(12)
    runs = env.service.backfill("hourly", at(0), at(4), max_active_runs=2).runs
    assert [run.state for run in runs].count(RunState.RUNNING) == 2
    assert all(run.backfill_limit == 2 for run in runs)
    # As they finish, the queued ones start two at a time, never more.
    most = 0
    while True:
        current = env.repos.runs.list_for_dag("hourly")
        most = max(most, sum(run.state is RunState.RUNNING for run in current))
        if all(run.state is RunState.SUCCESS for run in current):
            break
        assert env.pump(), [(run.run_id, run.state) for run in current]
    assert most == 2
    while env.pump():  # the last runs' ends free their slots
        pass
    assert env.repos.dags.get("hourly").active_backfills == frozenset()


def test_backfill_of_an_unscheduled_dag_is_refused(
    env: EmbeddedSkydag, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader({"dag": "adhoc", "tasks": {"a": {"noop": {}}}})
    with pytest.raises(ValueError, match="no schedule to backfill"):
        env.service.backfill("adhoc", at(0), at(3))
