"""The try history and the clock rule (engine/tries.py), through the engine's own
decisions: retries, restarts, clears, marks and stops leave a truthful history, and no
order or skew of reported times can make a try end before it started."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skydag.engine.commands import decide_restart, decide_stop
from skydag.engine.models import JobReport, JobStatus, TaskInstance, TryRecord
from skydag.engine.rules import decide_report, decide_timeout
from skydag.engine.scheduler import decide_retry
from skydag.engine.states import Cause, TaskState
from skydag.engine.transitions import Outcome, Transition
from skydag.engine.tries import (
    MAX_HISTORY_CHARS,
    MAX_TRIES_KEPT,
    all_tries,
    bounded_history,
    current_try,
    ordered_times,
    service_time,
)
from skydag.spec.models import DagSpec

T = TaskState
S = JobStatus
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = DagSpec.model_validate(
    {
        "dag": "d",
        "defaults": {"retries": 3, "retry_delay": "30s", "timeout": "1h"},
        "tasks": {"t": {"batch": {"job_queue": "q", "job_definition": "j"}}},
    }
)
POLICY = SPEC.effective_policy("t")


def pending() -> TaskInstance:
    return TaskInstance(dag_id="d", run_id="r", task_id="t")


def report(ti: TaskInstance, status: JobStatus, **fields: Any) -> JobReport:
    return JobReport("d", "r", "t", ti.try_number, status, **fields)


def apply(ti: TaskInstance, transition: Transition | None) -> TaskInstance:
    assert transition is not None
    return transition.apply(ti)


def dispatched(ti: TaskInstance, now: datetime = NOW) -> TaskInstance:
    """The next try queued (a retry when the task is up for retry)."""
    if ti.state is T.UP_FOR_RETRY:
        return apply(ti, decide_retry(SPEC, replace(ti, next_attempt_at=now), now).transition)
    from skydag.engine.scheduler import dispatch_transition

    return apply(ti, dispatch_transition(SPEC, ti, now))


def on_report(ti: TaskInstance, status: JobStatus, now: datetime, **fields: Any) -> TaskInstance:
    decision = decide_report(ti, report(ti, status, **fields), POLICY, now)
    assert decision.outcome is Outcome.ACCEPT, decision
    return apply(ti, decision.transition)


def move(ti: TaskInstance, dst: TaskState, cause: Cause, **changes: Any) -> TaskInstance:
    return Transition("t", ti.state, dst, cause, ti.version, changes).apply(ti)


def numbers(ti: TaskInstance) -> list[tuple[int, str]]:
    return [(record.try_number, record.state.value) for record in all_tries(ti)]


# --- the history -----------------------------------------------------------------------------


def test_a_retry_moves_the_failed_try_into_the_history() -> None:
    ti = dispatched(pending())
    assert numbers(ti) == [(1, "queued")]
    ti = on_report(ti, S.RUNNING, NOW + timedelta(seconds=1), job_id="job-1")
    ti = on_report(ti, S.FAILED, NOW + timedelta(seconds=9), exit_code=3, reason="boom")
    assert ti.state is T.UP_FOR_RETRY
    # The try failed (the retry is the task's next step), and is still the current try.
    assert numbers(ti) == [(1, "failed")]
    assert ti.tries == ()
    ti = dispatched(ti, NOW + timedelta(minutes=1))
    assert numbers(ti) == [(1, "failed"), (2, "queued")]
    assert ti.tries == (
        TryRecord(
            1,
            T.FAILED,
            NOW + timedelta(seconds=1),
            NOW + timedelta(seconds=9),
            3,
            "job-1",
            "boom",
        ),
    )
    # The current try's fields are the new try's.
    assert (ti.try_number, ti.job_id, ti.exit_code, ti.reason, ti.started_at) == (
        2,
        None,
        None,
        None,
        None,
    )


def test_a_restart_records_the_replaced_try_as_stopped_when_it_was_replaced() -> None:
    ti = dispatched(pending())
    ti = on_report(ti, S.RUNNING, NOW + timedelta(seconds=1), job_id="job-1")
    later = NOW + timedelta(hours=2)
    signal = {"id": "sig-2", "time": "2026-03-01T14:00:00Z"}
    ti = apply(ti, decide_restart(SPEC, ti, signal, later).transition)
    assert numbers(ti) == [(1, "stopped"), (2, "queued")]
    [first] = ti.tries
    assert (first.started_at, first.ended_at, first.job_id, first.exit_code) == (
        NOW + timedelta(seconds=1),
        later,
        "job-1",
        None,
    )
    assert first.reason == "restarted by signal sig-2"
    assert ti.superseded_job == {"job_id": "job-1", "token": first_token(), "try_number": 1}


def first_token() -> str:
    from skydag.engine.scheduler import dispatch_token

    return dispatch_token(pending(), 1)


def test_a_clear_moves_the_try_into_the_history_once() -> None:
    ti = dispatched(pending())
    ti = on_report(ti, S.SUCCEEDED, NOW + timedelta(seconds=5), exit_code=0, job_id="job-1")
    cleared = move(ti, T.PENDING, Cause.CLEAR, reason="cleared", ended_at=None)
    assert numbers(cleared) == [(1, "success")]
    assert current_try(cleared) is None
    assert (cleared.exit_code, cleared.job_id, cleared.started_at, cleared.reason) == (
        None,
        None,
        None,
        "cleared",
    )
    # Marked failed from pending (no try ran): the history alone holds the try.
    marked = move(cleared, T.FAILED, Cause.MARK, reason="marked failed", ended_at=NOW)
    assert numbers(marked) == [(1, "success")]
    again = move(marked, T.PENDING, Cause.CLEAR, reason="cleared")
    assert again.tries == cleared.tries
    rerun = dispatched(again, NOW + timedelta(minutes=5))
    assert numbers(rerun) == [(1, "success"), (2, "queued")]


def test_a_try_marked_failed_by_hand_has_no_exit_code() -> None:
    ti = dispatched(pending())
    ti = on_report(ti, S.RUNNING, NOW + timedelta(seconds=1), job_id="job-1")
    marked = move(ti, T.FAILED, Cause.MARK, reason="marked failed", ended_at=NOW, exit_code=None)
    [record] = all_tries(marked)
    assert (record.state, record.exit_code, record.reason) == (T.FAILED, None, "marked failed")
    # Its end is its start at the earliest (the scheduler's clock was behind the job's).
    assert record.ended_at == record.started_at == NOW + timedelta(seconds=1)


def test_marking_or_stopping_a_task_up_for_retry_keeps_the_failed_try() -> None:
    ti = dispatched(pending())
    ti = on_report(ti, S.FAILED, NOW + timedelta(seconds=2), exit_code=3, job_id="job-1")
    for moved in (
        move(ti, T.SUCCESS, Cause.MARK, reason="marked success", ended_at=NOW),
        apply(ti, decide_stop(ti, "cancelled", NOW + timedelta(minutes=1)).transition),
    ):
        assert numbers(moved) == [(1, "failed")]
        assert moved.tries[0].exit_code == 3
        assert (moved.exit_code, moved.started_at, moved.job_id) == (None, None, None)


def test_the_history_keeps_the_newest_tries() -> None:
    ti = pending()
    for n in range(MAX_TRIES_KEPT + 10):
        ti = dispatched(ti, NOW + timedelta(minutes=n))
        ti = on_report(ti, S.FAILED, NOW + timedelta(minutes=n, seconds=5), exit_code=1)
        ti = replace(ti, restarts=ti.try_number)  # never out of retries, for this test
    assert len(ti.tries) == MAX_TRIES_KEPT
    assert ti.tries[0].try_number == ti.try_number - MAX_TRIES_KEPT
    assert [r.try_number for r in all_tries(ti)][-1] == ti.try_number


def test_the_history_stays_small_whatever_its_reasons() -> None:
    long = TryRecord(1, T.FAILED, reason="x" * (MAX_HISTORY_CHARS // 3))
    records = [replace(long, try_number=n) for n in range(1, 6)]
    kept = bounded_history(records)
    assert [r.try_number for r in kept] == [4, 5]
    # The newest is kept even when alone it is over the bound.
    huge = replace(long, try_number=6, reason="y" * (MAX_HISTORY_CHARS * 2))
    assert bounded_history([*records, huge]) == (huge,)


# --- the clock rule ----------------------------------------------------------------------------


def test_service_times_are_kept_inside_what_the_scheduler_saw() -> None:
    assert service_time(None, NOW) == NOW
    assert service_time(NOW + timedelta(hours=1), NOW) == NOW
    assert service_time(NOW - timedelta(hours=1), NOW) == NOW - timedelta(hours=1)
    queued = NOW
    assert ordered_times(queued, NOW - timedelta(seconds=1), NOW - timedelta(seconds=2)) == (
        NOW,
        NOW,
    )
    assert ordered_times(None, NOW, NOW - timedelta(seconds=1)) == (NOW, NOW)
    assert ordered_times(queued, None, NOW - timedelta(seconds=1)) == (None, NOW)


def test_a_success_reported_before_the_try_was_queued_ends_when_it_was_queued() -> None:
    ti = dispatched(pending())
    ti = on_report(ti, S.SUCCEEDED, NOW + timedelta(seconds=3), at=NOW - timedelta(hours=3))
    assert ti.queued_at == ti.started_at == ti.ended_at == NOW


def test_a_timeout_by_a_scheduler_clock_behind_the_service_still_ends_after_the_start() -> None:
    ti = dispatched(pending())
    started = NOW + timedelta(minutes=30)
    ti = on_report(ti, S.RUNNING, started, at=started)
    # Another scheduler instance whose clock lags decides the timeout.
    ti = replace(ti, timeout_at=NOW)
    ti = apply(ti, decide_timeout(ti, POLICY, NOW + timedelta(minutes=1)).transition)
    assert ti.started_at == started
    assert ti.ended_at == started


_OFFSETS = st.one_of(st.none(), st.integers(-7200, 7200).map(lambda s: timedelta(seconds=s)))
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["running", "succeeded", "failed", "stopped", "timeout", "retry", "mark"]),
        _OFFSETS,  # the reported time, relative to the scheduler's receipt (None: none given)
        st.integers(-30, 600),  # how far the scheduler's clock moved (it may lag, too)
    ),
    max_size=25,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(steps=_STEPS)
def test_no_report_order_or_clock_skew_makes_a_try_end_before_it_starts(
    steps: list[tuple[str, timedelta | None, int]],
) -> None:
    ti = dispatched(pending())
    now = latest = NOW
    for kind, offset, moved in steps:
        now += timedelta(seconds=moved)
        latest = max(latest, now)
        at = None if offset is None else now + offset
        ti = _step(ti, kind, at, now)
        _assert_ordered(ti, latest)


def _step(ti: TaskInstance, kind: str, at: datetime | None, now: datetime) -> TaskInstance:
    transition: Transition | None
    if kind in ("running", "succeeded", "failed", "stopped"):
        decision = decide_report(ti, report(ti, JobStatus(kind), at=at), POLICY, now)
        transition = decision.transition
    elif kind == "timeout":
        transition = decide_timeout(replace(ti, timeout_at=now), POLICY, now).transition
    elif kind == "retry":
        due = replace(ti, next_attempt_at=now)
        transition = decide_retry(SPEC, due, now).transition
    elif ti.state in (T.QUEUED, T.RUNNING):
        transition = Transition(
            "t", ti.state, T.FAILED, Cause.MARK, ti.version, {"ended_at": now, "exit_code": None}
        )
    else:
        transition = None
    return ti if transition is None else transition.apply(ti)


def _assert_ordered(ti: TaskInstance, latest: datetime) -> None:
    def check(queued: datetime | None, started: datetime | None, ended: datetime | None) -> None:
        if queued and started:
            assert queued <= started
        if started and ended:
            assert started <= ended
        if queued and ended:
            assert queued <= ended

    check(ti.queued_at, ti.started_at, ti.ended_at)
    for record in ti.tries:
        check(None, record.started_at, record.ended_at)
    tries = all_tries(ti)
    assert [r.try_number for r in tries] == list(range(1, ti.try_number + 1))
    # No time is later than the scheduler has seen (a service clock ahead does not count).
    for record in tries:
        for moment in (record.started_at, record.ended_at):
            assert moment is None or moment <= latest
