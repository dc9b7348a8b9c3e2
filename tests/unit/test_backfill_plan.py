"""The backfill decision: which dates of a range get a run, which are skipped, and the
run ids that keep a redelivered command from creating anything twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from skydag.engine.backfill import (
    Reprocess,
    backfill_run_id,
    check_backfill_id,
    derived_backfill_id,
    plan_backfill,
    should_create,
)
from skydag.engine.models import DagRun, RunType
from skydag.engine.states import RunState
from skydag.spec.schedule import DataInterval

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
INTERVALS = [DataInterval(T0 + i * DAY, T0 + (i + 1) * DAY) for i in range(4)]


def run(day: int, state: RunState, *, created: int = 0, run_id: str | None = None) -> DagRun:
    return DagRun(
        "d",
        run_id or f"scheduled__{day}__{created}",
        1,
        RunType.SCHEDULED,
        state=state,
        logical_date=T0 + day * DAY,
        created_at=T0 + timedelta(days=10, minutes=created),
    )


@pytest.mark.parametrize(
    ("states", "reprocess", "created"),
    [
        ((), Reprocess.NONE, True),
        ((), Reprocess.FAILED, True),
        ((), Reprocess.ALL, True),
        ((RunState.SUCCESS,), Reprocess.NONE, False),
        ((RunState.FAILED,), Reprocess.NONE, False),
        ((RunState.SUCCESS,), Reprocess.FAILED, False),
        ((RunState.FAILED,), Reprocess.FAILED, True),
        ((RunState.CANCELLED,), Reprocess.FAILED, False),
        ((RunState.SUCCESS,), Reprocess.ALL, True),
        ((RunState.CANCELLED,), Reprocess.ALL, True),
        # The last run decides: a failure already rerun with success is not rerun.
        ((RunState.FAILED, RunState.SUCCESS), Reprocess.FAILED, False),
        ((RunState.SUCCESS, RunState.FAILED), Reprocess.FAILED, True),
        # A date still being processed is never run twice at once.
        ((RunState.RUNNING,), Reprocess.ALL, False),
        ((RunState.FAILED, RunState.QUEUED), Reprocess.FAILED, False),
    ],
)
def test_should_create(states: tuple[RunState, ...], reprocess: Reprocess, created: bool) -> None:
    existing = [run(0, state, created=minute) for minute, state in enumerate(states)]
    assert should_create(existing, reprocess) is created


def test_plan_lists_every_date_once_oldest_first() -> None:
    existing = [run(1, RunState.FAILED), run(2, RunState.SUCCESS), run(9, RunState.FAILED)]
    plan = plan_backfill(INTERVALS, existing, Reprocess.FAILED, "b1")
    assert [p.interval.start for p in plan.create] == [T0, T0 + DAY, T0 + 3 * DAY]
    assert [i.start for i in plan.skip] == [T0 + 2 * DAY]
    assert {p.run_id.rsplit("__", 1)[1] for p in plan.create} == {"b1"}

    default = plan_backfill(INTERVALS, existing, Reprocess.NONE, "b1")
    assert [p.interval.start for p in default.create] == [T0, T0 + 3 * DAY]
    assert [p.run_id for p in default.create] == [
        "backfill__2026-03-01T00:00:00.000000+00:00",
        "backfill__2026-03-04T00:00:00.000000+00:00",
    ]


def test_a_redelivered_command_names_the_run_its_first_delivery_created() -> None:
    first = plan_backfill(INTERVALS[:1], [run(0, RunState.FAILED)], Reprocess.FAILED, "b1")
    [planned] = first.create
    # Its rerun failed too by the time the copy arrives: the copy plans that same run.
    rerun = run(0, RunState.FAILED, created=5, run_id=planned.run_id)
    copy = plan_backfill(INTERVALS[:1], [run(0, RunState.FAILED), rerun], Reprocess.FAILED, "b1")
    assert [p.run_id for p in copy.create] == [planned.run_id]
    # ... or it still runs: skipped.
    running = run(0, RunState.RUNNING, created=5, run_id=planned.run_id)
    assert plan_backfill(INTERVALS[:1], [running], Reprocess.ALL, "b1").create == ()


def test_run_ids() -> None:
    assert backfill_run_id(T0, Reprocess.NONE, "b1") == "backfill__2026-03-01T00:00:00.000000+00:00"
    assert backfill_run_id(T0, Reprocess.ALL, "b1").endswith("+00:00__b1")
    assert derived_backfill_id("event-1") == derived_backfill_id("event-1")
    assert check_backfill_id(derived_backfill_id("event-1"), "x")
    with pytest.raises(ValueError, match=r"--id 'Bad id!' is not a valid backfill id"):
        check_backfill_id("Bad id!", "--id")
