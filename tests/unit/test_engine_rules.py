"""The engine's pure decisions: job reports, timeouts, readiness, dispatch, retries, run ends."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skydag.engine.models import (
    DagRun,
    JobReport,
    JobStatus,
    RunType,
    TaskInstance,
    TryRecord,
    UpstreamReport,
)
from skydag.engine.reactions import is_outcome, record_has_work, task_event_due
from skydag.engine.retries import retry_delay
from skydag.engine.rules import (
    LOOK_WINDOW,
    RECONCILE_BACKOFF_MAX,
    RECONCILE_BACKOFF_MIN,
    RECONCILE_EVERY,
    REPORT_POLICY,
    RUNNING_CHECK_EVERY,
    RUNNING_CHECK_MAX,
    decide_report,
    decide_timeout,
    looks_at_entry,
    reconcile_backoff,
)
from skydag.engine.scheduler import (
    DEADLINE_TIMER,
    DispatchClaim,
    RunChange,
    Timer,
    counts_as_failed_leaf,
    deadline_left_behind,
    decide_pending,
    decide_retry,
    dispatch_claim,
    dispatch_token,
    dispatch_transition,
    downstream_chunk,
    finish_counted,
    finish_counts,
    make_run_id,
    merged_params,
    new_run,
    owned_dispatch,
    run_change,
    run_change_holds,
    run_outcome,
    start_tasks,
    timer_for,
    told_more,
    why_not_dispatch,
)
from skydag.engine.slots import slots_bind
from skydag.engine.states import FINISHED_TASK_STATES, Cause, RunState, TaskState, can_transition
from skydag.engine.transitions import Decision, InvalidTransition, Outcome, Transition
from skydag.spec.models import DagSpec, EffectivePolicy

T = TaskState
S = JobStatus
C = Cause

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPORTED_AT = NOW - timedelta(seconds=5)
EARLIER = NOW - timedelta(hours=1)
HEX32 = re.compile(r"^[0-9a-f]{32}$")
JOB_FIELDS = (
    "job_id",
    "exit_code",
    "reason",
    "started_at",
    "ended_at",
    "next_attempt_at",
    "output",
)


def make_policy(
    retries: int = 2, timeout: timedelta | None = timedelta(hours=2)
) -> EffectivePolicy:
    return EffectivePolicy(
        retries=retries,
        retry_delay=timedelta(seconds=30),
        retry_backoff=2.0,
        max_retry_delay=timedelta(minutes=10),
        timeout=timeout,
    )


def make_ti(state: TaskState = T.PENDING, try_number: int = 1, **fields: Any) -> TaskInstance:
    if state is T.RUNNING:
        fields.setdefault("started_at", EARLIER)
    return TaskInstance(
        dag_id="d", run_id="r", task_id="t", state=state, try_number=try_number, version=7, **fields
    )


def make_report(status: JobStatus, try_number: int = 1, **fields: Any) -> JobReport:
    return JobReport(
        dag_id="d", run_id="r", task_id="t", try_number=try_number, status=status, **fields
    )


def accepted(decision: Decision) -> Transition:
    assert decision.outcome is Outcome.ACCEPT, decision
    assert decision.transition is not None
    return decision.transition


def assert_ignored(decision: Decision) -> None:
    assert decision.outcome is Outcome.IGNORE, decision
    assert decision.transition is None
    assert decision.reason


# --- decide_report: the whole (state, status) matrix ---------------------------------------

# (state, status) -> (dst, cause) when tries remain; every other combination is ignored.
REPORT_TABLE_TRIES_LEFT: dict[tuple[TaskState, JobStatus], tuple[TaskState, Cause]] = {
    (T.QUEUED, S.RUNNING): (T.RUNNING, C.STARTED),
    (T.QUEUED, S.SUCCEEDED): (T.SUCCESS, C.SUCCEEDED),
    (T.QUEUED, S.FAILED): (T.UP_FOR_RETRY, C.RETRY),
    (T.QUEUED, S.STOPPED): (T.FAILED, C.FAILED),
    (T.RUNNING, S.SUCCEEDED): (T.SUCCESS, C.SUCCEEDED),
    (T.RUNNING, S.FAILED): (T.UP_FOR_RETRY, C.RETRY),
    (T.RUNNING, S.STOPPED): (T.FAILED, C.FAILED),
}
REPORT_TABLE_NO_TRIES_LEFT = REPORT_TABLE_TRIES_LEFT | {
    (T.QUEUED, S.FAILED): (T.FAILED, C.FAILED),
    (T.RUNNING, S.FAILED): (T.FAILED, C.FAILED),
}
STATE_STATUS = list(itertools.product(TaskState, JobStatus))
# A job that says it runs for a try that is over (its task left queued and running).
STRAY_JOB = {(s, S.RUNNING) for s in TaskState if s not in (T.QUEUED, T.RUNNING)}


@pytest.mark.parametrize("tries_left", [True, False], ids=["tries-left", "last-try"])
@pytest.mark.parametrize(
    ("state", "status"), STATE_STATUS, ids=[f"{a.value}-{b.value}" for a, b in STATE_STATUS]
)
def test_report_matrix(state: TaskState, status: JobStatus, tries_left: bool) -> None:
    policy = make_policy(retries=2)
    ti = make_ti(state, try_number=2 if tries_left else 3)
    report = make_report(status, try_number=ti.try_number, job_id="job-1", exit_code=0)
    decision = decide_report(ti, report, policy, NOW)
    table = REPORT_TABLE_TRIES_LEFT if tries_left else REPORT_TABLE_NO_TRIES_LEFT
    expected = table.get((state, status))
    if (state, status) in STRAY_JOB:
        # This try is over and never knew job-1: the job is cancelled, the task unchanged.
        assert decision.outcome is Outcome.CANCEL_JOB, decision
        assert decision.transition is None
        return
    if expected is None:
        assert_ignored(decision)
        return
    transition = accepted(decision)
    assert (transition.src, transition.dst, transition.cause) == (state, *expected)
    assert transition.task_id == "t"
    assert transition.expected_version == 7
    after = transition.apply(ti)
    assert after.state is expected[0]
    assert after.version == 8
    assert after.try_number == ti.try_number


@pytest.mark.parametrize(
    ("state", "status"), STATE_STATUS, ids=[f"{a.value}-{b.value}" for a, b in STATE_STATUS]
)
@pytest.mark.parametrize("delta", [-1, 1], ids=["older-try", "newer-try"])
def test_report_for_another_try_is_ignored(state: TaskState, status: JobStatus, delta: int) -> None:
    ti = make_ti(state, try_number=2)
    decision = decide_report(ti, make_report(status, try_number=2 + delta), make_policy(), NOW)
    assert_ignored(decision)
    assert f"try {2 + delta}" in decision.reason


@pytest.mark.parametrize("state", sorted(FINISHED_TASK_STATES))
@pytest.mark.parametrize("status", list(JobStatus))
def test_finished_task_ignores_every_report(state: TaskState, status: JobStatus) -> None:
    decision = decide_report(make_ti(state), make_report(status), make_policy(retries=5), NOW)
    assert_ignored(decision)
    assert state.value in decision.reason


def test_job_started_records_start_and_job_id() -> None:
    ti = make_ti(T.QUEUED)
    report = make_report(S.RUNNING, job_id="job-1", at=REPORTED_AT)
    transition = accepted(decide_report(ti, report, make_policy(), NOW))
    # The reconciler describes a running job if no event came for a while (lost events).
    assert dict(transition.changes) == {
        "started_at": REPORTED_AT,
        "job_id": "job-1",
        "check_at": NOW + RUNNING_CHECK_EVERY,
    }
    after = transition.apply(ti)
    assert (after.state, after.started_at, after.job_id) == (T.RUNNING, REPORTED_AT, "job-1")


def test_job_started_without_time_or_id_uses_now_and_keeps_job_id() -> None:
    ti = make_ti(T.QUEUED, job_id="known")
    transition = accepted(decide_report(ti, make_report(S.RUNNING), make_policy(), NOW))
    assert dict(transition.changes) == {"started_at": NOW, "check_at": NOW + RUNNING_CHECK_EVERY}
    assert transition.apply(ti).job_id == "known"


def test_a_started_jobs_first_look_is_its_claims_expiry_or_sooner() -> None:
    """Its due entry stays at its claim's expiry while it runs (no index move at the
    start); a start later than the claim minus RUNNING_CHECK_EVERY looks sooner."""
    claim = NOW + timedelta(minutes=5)
    queued = make_ti(T.QUEUED, check_at=claim)
    started = accepted(decide_report(queued, make_report(S.RUNNING), make_policy(), NOW))
    assert started.changes["check_at"] == claim
    late = NOW + timedelta(minutes=30)  # its claim was moved on (a look found it queued)
    moved = make_ti(T.QUEUED, check_at=late + timedelta(hours=1))
    started = accepted(decide_report(moved, make_report(S.RUNNING), make_policy(), late))
    assert started.changes["check_at"] == late + RUNNING_CHECK_EVERY


def test_duplicate_running_report_is_ignored() -> None:
    decision = decide_report(make_ti(T.RUNNING), make_report(S.RUNNING), make_policy(), NOW)
    assert_ignored(decision)
    assert decision.reason == "already running"


@pytest.mark.parametrize("state", [T.QUEUED, T.RUNNING])
def test_success_records_the_outcome(state: TaskState) -> None:
    ti = make_ti(state)
    report = make_report(
        S.SUCCEEDED, job_id="job-9", exit_code=0, output={"rows": 3}, at=REPORTED_AT
    )
    transition = accepted(decide_report(ti, report, make_policy(), NOW))
    assert (transition.dst, transition.cause) == (T.SUCCESS, C.SUCCEEDED)
    expected: dict[str, Any] = {
        "ended_at": REPORTED_AT,
        "exit_code": 0,
        "reason": None,
        "job_id": "job-9",
        "output": {"rows": 3},
    }
    if state is T.QUEUED:
        # "running" was never seen: the start is taken from the report.
        expected["started_at"] = REPORTED_AT
    assert dict(transition.changes) == expected
    after = transition.apply(ti)
    assert after.started_at == (REPORTED_AT if state is T.QUEUED else EARLIER)
    assert (after.exit_code, after.job_id, after.output) == (0, "job-9", {"rows": 3})


def test_success_without_time_or_output_uses_now_and_keeps_output() -> None:
    ti = make_ti(T.RUNNING, output="earlier")
    transition = accepted(decide_report(ti, make_report(S.SUCCEEDED), make_policy(), NOW))
    assert dict(transition.changes) == {"ended_at": NOW, "exit_code": None, "reason": None}
    assert transition.apply(ti).output == "earlier"


@pytest.mark.parametrize("try_number", [1, 2])
@pytest.mark.parametrize("state", [T.QUEUED, T.RUNNING])
def test_failure_with_tries_left_schedules_a_retry(state: TaskState, try_number: int) -> None:
    policy = make_policy(retries=2)
    ti = make_ti(state, try_number=try_number)
    report = make_report(
        S.FAILED, try_number=try_number, exit_code=3, reason="boom", job_id="j", at=REPORTED_AT
    )
    decision = decide_report(ti, report, policy, NOW)
    transition = accepted(decision)
    assert (transition.dst, transition.cause) == (T.UP_FOR_RETRY, C.RETRY)
    delay = timedelta(seconds=30 * 2 ** (try_number - 1))
    assert delay == retry_delay(policy, try_number)
    # The backoff counts from when the decision is made, not from the report's time.
    assert transition.changes["next_attempt_at"] == NOW + delay
    assert transition.changes["ended_at"] == REPORTED_AT
    assert (transition.changes["exit_code"], transition.changes["reason"]) == (3, "boom")
    assert f"retry in {delay.total_seconds():g}s" in decision.reason


@pytest.mark.parametrize("state", [T.QUEUED, T.RUNNING])
def test_failure_on_last_try_fails(state: TaskState) -> None:
    ti = make_ti(state, try_number=3)
    report = make_report(S.FAILED, try_number=3, exit_code=1, reason="boom")
    transition = accepted(decide_report(ti, report, make_policy(retries=2), NOW))
    assert (transition.dst, transition.cause) == (T.FAILED, C.FAILED)
    assert "next_attempt_at" not in transition.changes
    assert (transition.changes["exit_code"], transition.changes["reason"]) == (1, "boom")


@pytest.mark.parametrize("retries", [0, 5])
@pytest.mark.parametrize("state", [T.QUEUED, T.RUNNING])
def test_stopped_job_fails_the_task_even_with_tries_left(state: TaskState, retries: int) -> None:
    ti = make_ti(state)
    report = make_report(S.STOPPED, reason="stopped by user")
    transition = accepted(decide_report(ti, report, make_policy(retries=retries), NOW))
    assert (transition.dst, transition.cause) == (T.FAILED, C.FAILED)
    assert transition.changes["reason"] == "stopped by user"
    assert "next_attempt_at" not in transition.changes


def test_report_policy_order_starts_with_the_guards() -> None:
    names = [type(rule).__name__ for rule in REPORT_POLICY]
    assert names[:4] == [
        "CancelJobOfEndedTry",
        "IgnoreStaleTry",
        "IgnoreFinishedTask",
        "IgnoreReportWhileWaitingForRetry",
    ]
    for rule in REPORT_POLICY:
        # Every rule that moves a task names only edges of the transition table.
        if rule.TO is not None:
            assert rule.FROM, type(rule).__name__
            for src in rule.FROM:
                assert can_transition(src, rule.TO, _cause_for(rule.TO)), (src, rule.TO)


def _cause_for(dst: TaskState) -> Cause:
    return {
        T.RUNNING: C.STARTED,
        T.SUCCESS: C.SUCCEEDED,
        T.UP_FOR_RETRY: C.RETRY,
        T.FAILED: C.FAILED,
    }[dst]


# --- decide_timeout ------------------------------------------------------------------------


@pytest.mark.parametrize("tries_left", [True, False], ids=["tries-left", "last-try"])
@pytest.mark.parametrize("state", list(TaskState))
def test_timeout_matrix(state: TaskState, tries_left: bool) -> None:
    policy = make_policy(retries=1)
    ti = make_ti(state, try_number=1 if tries_left else 2, timeout_at=NOW - timedelta(seconds=1))
    decision = decide_timeout(ti, policy, NOW)
    if state is T.WAITING:
        expected: tuple[TaskState, Cause] | None = (T.FAILED, C.TIMED_OUT)
    elif state in (T.QUEUED, T.RUNNING):
        expected = (T.UP_FOR_RETRY, C.RETRY) if tries_left else (T.FAILED, C.TIMED_OUT)
    else:
        expected = None
    if expected is None:
        assert_ignored(decision)
        assert state.value in decision.reason
        return
    transition = accepted(decision)
    assert (transition.src, transition.dst, transition.cause) == (state, *expected)
    assert transition.expected_version == 7
    assert transition.changes["ended_at"] == NOW
    assert transition.changes["reason"] == "timed out after 2:00:00"
    if expected[0] is T.UP_FOR_RETRY:
        assert transition.changes["next_attempt_at"] == NOW + retry_delay(policy, 1)
    else:
        assert "next_attempt_at" not in transition.changes


@pytest.mark.parametrize("state", [T.WAITING, T.QUEUED, T.RUNNING])
def test_timeout_not_yet_due_is_ignored(state: TaskState) -> None:
    ti = make_ti(state, timeout_at=NOW + timedelta(microseconds=1))
    decision = decide_timeout(ti, make_policy(), NOW)
    assert_ignored(decision)
    assert decision.reason == "not timed out"


@pytest.mark.parametrize("state", [T.WAITING, T.QUEUED, T.RUNNING])
def test_no_deadline_never_times_out(state: TaskState) -> None:
    assert_ignored(decide_timeout(make_ti(state), make_policy(), NOW))


def test_timeout_due_exactly_now_fires() -> None:
    ti = make_ti(T.RUNNING, try_number=3, timeout_at=NOW)
    transition = accepted(decide_timeout(ti, make_policy(retries=2), NOW))
    assert (transition.dst, transition.cause) == (T.FAILED, C.TIMED_OUT)


def test_timeout_reason_without_a_policy_timeout() -> None:
    ti = make_ti(T.RUNNING, try_number=1, timeout_at=NOW)
    decision = decide_timeout(ti, make_policy(retries=0, timeout=None), NOW)
    assert accepted(decision).changes["reason"] == "timed out"


# --- decide_pending and dispatch -----------------------------------------------------------

SPEC = DagSpec.model_validate(
    {
        "dag": "d",
        "params": {"threshold": 0.9, "nested": {"a": 1}, "keep": True},
        "defaults": {"retries": 2, "timeout": "1h"},
        "tasks": {
            "root": {"noop": {}},
            "t": {"noop": {}, "depends_on": ["root"]},
            "gated": {"noop": {}, "depends_on": ["root"], "start_on": {"source": ["x"]}},
            "untimed": {"noop": {}, "timeout": 0},
            "any": {"noop": {}, "depends_on": ["root", "t"], "trigger_rule": "one_success"},
        },
    }
)


def pending_ti(
    task_id: str, upstream: dict[str, TaskState] | None = None, **fields: Any
) -> TaskInstance:
    reports = {k: UpstreamReport(v, 1) for k, v in (upstream or {}).items()}
    return TaskInstance(
        dag_id="d", run_id="r", task_id=task_id, version=4, upstream=reports, **fields
    )


@pytest.mark.parametrize("state", [s for s in TaskState if s is not T.PENDING])
def test_decide_pending_ignores_other_states(state: TaskState) -> None:
    ti = pending_ti("t", {"root": T.SUCCESS}, state=state)
    decision = decide_pending(SPEC, ti, NOW)
    assert_ignored(decision)
    assert decision.reason == f"task is {state.value}"


@pytest.mark.parametrize("upstream", [None, T.RUNNING, T.UP_FOR_RETRY, T.QUEUED])
def test_decide_pending_waits(upstream: TaskState | None) -> None:
    ti = pending_ti("t", {} if upstream is None else {"root": upstream})
    decision = decide_pending(SPEC, ti, NOW)
    assert_ignored(decision)
    assert "under all_success: root" in decision.reason


@pytest.mark.parametrize(
    ("task_id", "upstream", "dst", "cause"),
    [
        ("t", {"root": T.SKIPPED}, T.SKIPPED, C.SKIPPED),
        ("t", {"root": T.FAILED}, T.UPSTREAM_FAILED, C.UPSTREAM_FAILED),
        ("t", {"root": T.STOPPED}, T.UPSTREAM_FAILED, C.UPSTREAM_FAILED),
        ("gated", {"root": T.UPSTREAM_FAILED}, T.UPSTREAM_FAILED, C.UPSTREAM_FAILED),
        ("gated", {"root": T.SKIPPED}, T.SKIPPED, C.SKIPPED),
        ("any", {"root": T.SKIPPED, "t": T.FAILED}, T.UPSTREAM_FAILED, C.UPSTREAM_FAILED),
    ],
)
def test_decide_pending_gives_up(
    task_id: str, upstream: dict[str, TaskState], dst: TaskState, cause: Cause
) -> None:
    decision = decide_pending(SPEC, pending_ti(task_id, upstream), NOW)
    transition = accepted(decision)
    assert (transition.task_id, transition.src, transition.dst, transition.cause) == (
        task_id,
        T.PENDING,
        dst,
        cause,
    )
    assert transition.expected_version == 4
    assert dict(transition.changes) == {"reason": decision.reason, "ended_at": NOW}


def test_decide_pending_start_on_waits_for_the_signal() -> None:
    ti = pending_ti("gated", {"root": T.SUCCESS})
    decision = decide_pending(SPEC, ti, NOW)
    transition = accepted(decision)
    assert (transition.dst, transition.cause) == (T.WAITING, C.WAIT_FOR_SIGNAL)
    assert dict(transition.changes) == {
        "reason": "waiting for a start_on signal",
        "timeout_at": None,
        "signal": None,  # a signal from before it waited does not count
    }
    after = transition.apply(ti)
    assert after.try_number == 0
    assert after.dispatch_token is None


def test_waiting_does_not_inherit_a_previous_tries_deadline() -> None:
    # A start_on task that ran once (try 1, deadline long past) and was then cleared.
    ti = pending_ti("gated", {"root": T.SUCCESS}, try_number=1, timeout_at=EARLIER)
    waiting = accepted(decide_pending(SPEC, ti, NOW)).apply(ti)
    assert waiting.state is T.WAITING
    assert waiting.timeout_at is None or waiting.timeout_at > NOW
    assert_ignored(decide_timeout(waiting, SPEC.effective_policy("gated"), NOW))


def stale_job_fields() -> dict[str, Any]:
    return {
        "job_id": "old-job",
        "exit_code": 1,
        "reason": "old reason",
        "started_at": EARLIER,
        "ended_at": EARLIER,
        "next_attempt_at": EARLIER,
        "output": {"old": True},
    }


@pytest.mark.parametrize(("task_id", "upstream"), [("root", {}), ("t", {"root": T.SUCCESS})])
def test_decide_pending_ready_dispatches(task_id: str, upstream: dict[str, TaskState]) -> None:
    ti = pending_ti(task_id, upstream, try_number=1, **stale_job_fields())
    decision = decide_pending(SPEC, ti, NOW)
    transition = accepted(decision)
    assert (transition.src, transition.dst, transition.cause) == (T.PENDING, T.QUEUED, C.DISPATCH)
    assert transition.expected_version == 4
    changes = transition.changes
    assert changes["try_number"] == 2
    assert HEX32.match(changes["dispatch_token"])
    assert changes["dispatch_token"] == dispatch_token(ti, 2)
    assert changes["queued_at"] == NOW
    assert changes["timeout_at"] == NOW + timedelta(hours=1)
    assert "signal" not in changes
    after = transition.apply(ti)
    assert after.state is T.QUEUED
    assert after.version == 5
    for name in JOB_FIELDS:
        assert getattr(after, name) is None, name


def test_dispatch_without_timeout_has_no_deadline() -> None:
    # "timeout: 0" overrides the DAG's 1h default and means no deadline.
    assert SPEC.effective_policy("untimed").timeout == timedelta(0)
    transition = accepted(decide_pending(SPEC, pending_ti("untimed"), NOW))
    assert transition.changes["timeout_at"] is None


def test_dispatch_token_is_deterministic_per_try() -> None:
    ti = pending_ti("t")
    token = dispatch_token(ti, 1)
    assert HEX32.match(token)
    # Same task and try: same token, whatever else changed (a crashed dispatcher retrying).
    moved = TaskInstance(dag_id="d", run_id="r", task_id="t", state=T.UP_FOR_RETRY, version=99)
    assert dispatch_token(moved, 1) == token
    others = {
        dispatch_token(ti, 2),
        dispatch_token(TaskInstance(dag_id="d", run_id="r", task_id="u"), 1),
        dispatch_token(TaskInstance(dag_id="d", run_id="r2", task_id="t"), 1),
        dispatch_token(TaskInstance(dag_id="e", run_id="r", task_id="t"), 1),
    }
    assert token not in others
    assert len(others) == 4


def test_dispatch_token_same_for_both_paths() -> None:
    a = accepted(decide_pending(SPEC, pending_ti("root"), NOW)).changes["dispatch_token"]
    b = dispatch_transition(SPEC, pending_ti("root"), NOW + timedelta(days=1)).changes[
        "dispatch_token"
    ]
    assert a == b


def test_dispatch_from_waiting_by_signal_carries_the_signal() -> None:
    ti = pending_ti("gated", {"root": T.SUCCESS}, state=T.WAITING)
    event = {"source": "x", "detail": {"n": 1}}
    transition = dispatch_transition(SPEC, ti, NOW, cause=C.SIGNAL, signal=event)
    assert (transition.src, transition.dst, transition.cause) == (T.WAITING, T.QUEUED, C.SIGNAL)
    assert transition.changes["signal"] == event
    assert transition.changes["try_number"] == 1


def test_restart_dispatches_a_new_try_from_running() -> None:
    ti = pending_ti("t", state=T.RUNNING, try_number=1, **stale_job_fields())
    transition = dispatch_transition(SPEC, ti, NOW, cause=C.RESTART)
    assert (transition.src, transition.dst, transition.cause) == (T.RUNNING, T.QUEUED, C.RESTART)
    after = transition.apply(ti)
    assert after.try_number == 2
    assert after.dispatch_token == dispatch_token(ti, 2) != dispatch_token(ti, 1)
    assert all(getattr(after, name) is None for name in JOB_FIELDS)


@pytest.mark.parametrize("state", sorted(FINISHED_TASK_STATES | {T.QUEUED}))
def test_dispatch_from_a_state_without_that_edge_is_refused(state: TaskState) -> None:
    with pytest.raises(InvalidTransition):
        dispatch_transition(SPEC, pending_ti("t", state=state), NOW)


# --- decide_retry --------------------------------------------------------------------------


@pytest.mark.parametrize("state", [s for s in TaskState if s is not T.UP_FOR_RETRY])
def test_decide_retry_ignores_other_states(state: TaskState) -> None:
    ti = pending_ti("t", state=state, try_number=1, next_attempt_at=EARLIER)
    assert_ignored(decide_retry(SPEC, ti, NOW))


def test_decide_retry_before_the_next_attempt_waits() -> None:
    at = NOW + timedelta(seconds=1)
    ti = pending_ti("t", state=T.UP_FOR_RETRY, try_number=1, next_attempt_at=at)
    decision = decide_retry(SPEC, ti, NOW)
    assert_ignored(decision)
    assert at.isoformat() in decision.reason


@pytest.mark.parametrize(
    "next_attempt_at", [NOW, NOW - timedelta(seconds=1), None], ids=["due-now", "overdue", "unset"]
)
def test_decide_retry_when_due_dispatches_the_next_try(next_attempt_at: datetime | None) -> None:
    ti = pending_ti(
        "t",
        state=T.UP_FOR_RETRY,
        try_number=1,
        **(stale_job_fields() | {"next_attempt_at": next_attempt_at}),
    )
    decision = decide_retry(SPEC, ti, NOW)
    transition = accepted(decision)
    assert (transition.src, transition.dst, transition.cause) == (
        T.UP_FOR_RETRY,
        T.QUEUED,
        C.DISPATCH,
    )
    assert decision.reason == "try 2"
    after = transition.apply(ti)
    assert (after.try_number, after.queued_at, after.timeout_at) == (
        2,
        NOW,
        NOW + timedelta(hours=1),
    )
    assert after.dispatch_token == dispatch_token(ti, 2)
    assert all(getattr(after, name) is None for name in JOB_FIELDS)


# --- run_outcome ---------------------------------------------------------------------------

# root -> mid -> leaf ; root -> cleanup (all_done, a leaf)
CHAIN = DagSpec.model_validate(
    {
        "dag": "chain",
        "tasks": {
            "root": {"noop": {}},
            "mid": {"noop": {}, "depends_on": ["root"]},
            "leaf": {"noop": {}, "depends_on": ["mid"]},
            "cleanup": {"noop": {}, "depends_on": ["root"], "trigger_rule": "all_done"},
        },
    }
)
ALL_OK = {"root": T.SUCCESS, "mid": T.SUCCESS, "leaf": T.SUCCESS, "cleanup": T.SUCCESS}


def counted_run(spec: DagSpec, finished: dict[str, TaskState]) -> DagRun:
    """A run whose counts hold these finishes, as the store keeps them."""
    failed = frozenset(
        spec.task_index(t) for t, s in finished.items() if counts_as_failed_leaf(spec, t, s)
    )
    return DagRun(
        "d",
        "r",
        1,
        RunType.MANUAL,
        finished_count=len(finished),
        failed_leaves=len(failed),
        finished_idx=frozenset(spec.task_index(t) for t in finished),
        failed_leaf_idx=failed,
    )


def outcome_of(
    spec: DagSpec, finished: dict[str, TaskState], *, grouped: bool = True
) -> RunState | None:
    """run_outcome from the run's counts of these finishes."""
    return run_outcome(spec, counted_run(spec, finished), grouped=grouped)


def test_chain_leaves() -> None:
    assert sorted(CHAIN.leaves()) == ["cleanup", "leaf"]
    assert CHAIN.leaf_indices() == {CHAIN.task_index("leaf"), CHAIN.task_index("cleanup")}


@pytest.mark.parametrize("missing", sorted(ALL_OK))
def test_run_outcome_none_until_every_task_finished(missing: str) -> None:
    finished = {k: v for k, v in ALL_OK.items() if k != missing}
    assert outcome_of(CHAIN, finished) is None


@pytest.mark.parametrize("missing", sorted(ALL_OK))
def test_a_run_counting_on_its_item_has_an_outcome_once_its_leaves_are_counted(
    missing: str,
) -> None:
    """Its other finishes are not all counted (finish_counts): the caller checks them."""
    finished = {k: v for k, v in ALL_OK.items() if k != missing}
    outcome = outcome_of(CHAIN, finished, grouped=False)
    assert outcome is (None if missing in CHAIN.leaf_set() else RunState.SUCCESS)
    assert outcome_of(CHAIN, {"leaf": T.SUCCESS, "cleanup": T.FAILED}, grouped=False) is (
        RunState.FAILED
    )


def test_a_finish_counts_on_a_run_counting_on_its_item_when_it_can_be_the_last() -> None:
    """A leaf's; any once every leaf's is counted; one holding a slot (its release)."""
    nothing = counted_run(CHAIN, {})
    leaves_in = counted_run(CHAIN, {"leaf": T.SUCCESS, "cleanup": T.SUCCESS})
    one_leaf = counted_run(CHAIN, {"leaf": T.SUCCESS, "root": T.SUCCESS})

    def counts(run: DagRun, task: str, *, grouped: bool = False, holds: bool = False) -> bool:
        return finish_counts(CHAIN, run, task, grouped=grouped, holds_slot=holds)

    assert counts(nothing, "leaf")
    assert counts(nothing, "cleanup")
    assert not counts(nothing, "root")
    assert not counts(nothing, "mid")
    assert not counts(one_leaf, "mid")
    assert counts(leaves_in, "mid")  # a late finish: its downstream tasks ended first
    assert counts(nothing, "mid", holds=True)
    assert counts(nothing, "mid", grouped=True)  # a big run counts every finish


def test_run_outcome_none_for_nothing_finished() -> None:
    assert outcome_of(CHAIN, {}) is None


def test_run_outcome_all_success() -> None:
    assert outcome_of(CHAIN, ALL_OK) is RunState.SUCCESS


@pytest.mark.parametrize(
    ("leaf_state", "outcome"),
    [
        (T.SUCCESS, RunState.SUCCESS),
        (T.SKIPPED, RunState.SUCCESS),
        (T.FAILED, RunState.FAILED),
        (T.UPSTREAM_FAILED, RunState.FAILED),
        (T.STOPPED, RunState.FAILED),
    ],
)
@pytest.mark.parametrize("leaf", ["leaf", "cleanup"])
def test_run_outcome_judged_by_leaves(leaf: str, leaf_state: TaskState, outcome: RunState) -> None:
    assert outcome_of(CHAIN, ALL_OK | {leaf: leaf_state}) is outcome


def test_failed_non_leaf_with_successful_all_done_leaf_is_success() -> None:
    spec = DagSpec.model_validate(
        {
            "dag": "teardown",
            "tasks": {
                "work": {"noop": {}},
                "report": {"noop": {}, "depends_on": ["work"], "trigger_rule": "all_done"},
            },
        }
    )
    assert outcome_of(spec, {"work": T.FAILED, "report": T.SUCCESS}) is RunState.SUCCESS
    assert outcome_of(spec, {"work": T.FAILED, "report": T.FAILED}) is RunState.FAILED


def test_failed_non_leaf_in_chain_is_judged_by_leaves() -> None:
    finished = ALL_OK | {"mid": T.FAILED, "leaf": T.UPSTREAM_FAILED}
    assert outcome_of(CHAIN, finished) is RunState.FAILED
    finished = ALL_OK | {"root": T.FAILED, "mid": T.UPSTREAM_FAILED, "leaf": T.UPSTREAM_FAILED}
    assert outcome_of(CHAIN, finished) is RunState.FAILED
    # Only the all_done leaf ran; the other leaf was skipped: success, as in Airflow.
    finished = {"root": T.FAILED, "mid": T.SKIPPED, "leaf": T.SKIPPED, "cleanup": T.SUCCESS}
    assert outcome_of(CHAIN, finished) is RunState.SUCCESS


# --- run ids, params, new runs -------------------------------------------------------------


@pytest.mark.parametrize("event_id", [None, ""])
def test_signal_run_id_needs_an_event_id(event_id: str | None) -> None:
    with pytest.raises(ValueError, match="event"):
        make_run_id(RunType.SIGNAL, at=NOW, event_id=event_id)


def test_signal_run_id_is_the_event_id() -> None:
    first = make_run_id(RunType.SIGNAL, at=NOW, event_id="evt-1")
    assert first == "signal__evt-1"
    # The same event delivered twice, later: the same run.
    assert make_run_id(RunType.SIGNAL, at=NOW + timedelta(minutes=5), event_id="evt-1") == first
    assert make_run_id(RunType.SIGNAL, at=NOW, event_id="evt-2") != first


@pytest.mark.parametrize("run_type", [RunType.MANUAL, RunType.SCHEDULED, RunType.BACKFILL])
def test_time_based_run_ids(run_type: RunType) -> None:
    run_id = make_run_id(run_type, at=NOW)
    assert run_id == f"{run_type.value}__2026-03-01T12:00:00.000000+00:00"
    assert make_run_id(run_type, at=NOW) == run_id
    assert make_run_id(run_type, at=NOW + timedelta(microseconds=1)) != run_id
    assert make_run_id(run_type, at=NOW, event_id="e1") == f"{run_type.value}__e1"


def test_run_ids_of_different_types_differ() -> None:
    ids = {make_run_id(t, at=NOW, event_id="same") for t in RunType}
    assert len(ids) == len(RunType)


def test_merged_params_conf_overrides_shallowly() -> None:
    made = new_run(
        SPEC,
        3,
        run_id="manual__x",
        run_type=RunType.MANUAL,
        now=NOW,
        conf={"threshold": 0.5, "nested": {"b": 2}, "extra": "yes"},
    )
    assert merged_params(SPEC, made.run) == {
        "threshold": 0.5,
        "nested": {"b": 2},
        "keep": True,
        "extra": "yes",
    }
    assert SPEC.params["threshold"] == 0.9, "the spec's params are not modified"


def test_merged_params_without_conf_are_the_params() -> None:
    made = new_run(SPEC, 1, run_id="r", run_type=RunType.MANUAL, now=NOW)
    assert merged_params(SPEC, made.run) == SPEC.params


def test_new_run_is_queued_with_a_pending_instance_per_task() -> None:
    conf: dict[str, Any] = {"k": "v"}
    trigger = {"id": "evt-1", "detail": {}}
    start, end = NOW - timedelta(days=1), NOW
    made = new_run(
        SPEC,
        5,
        run_id="signal__evt-1",
        run_type=RunType.SIGNAL,
        now=NOW,
        conf=conf,
        logical_date=start,
        data_interval=(start, end),
        trigger=trigger,
    )
    run = made.run
    assert (run.dag_id, run.run_id, run.dag_version, run.run_type) == (
        "d",
        "signal__evt-1",
        5,
        RunType.SIGNAL,
    )
    assert run.state is RunState.QUEUED
    assert run.version == 0
    assert (run.logical_date, run.data_interval_start, run.data_interval_end) == (start, start, end)
    assert run.created_at == NOW
    assert run.trigger == trigger
    conf["k"] = "changed"
    assert run.conf == {"k": "v"}, "the run keeps its own copy of conf"


def test_new_run_defaults() -> None:
    run = new_run(SPEC, 1, run_id="r", run_type=RunType.MANUAL, now=NOW).run
    assert run.logical_date == NOW
    assert (run.data_interval_start, run.data_interval_end, run.trigger) == (None, None, None)
    assert run.conf == {}


# --- exactly once: stray jobs, stale dispatches and run changes, timers, backoff ------------


@pytest.mark.parametrize(
    ("state", "try_number", "ti_fields"),
    [
        (T.STOPPED, 1, {}),  # stopped (run cancelled, stop_on) while being dispatched
        (T.FAILED, 1, {}),  # marked failed, or timed out on its last try
        (T.SUCCESS, 1, {}),  # marked success
        (T.UP_FOR_RETRY, 1, {}),  # timed out with tries left
        (T.PENDING, 1, {"tries": (TryRecord(1, T.STOPPED),)}),  # then cleared
        (T.RUNNING, 2, {"job_id": "job-2", "tries": (TryRecord(1, T.FAILED),)}),  # moved on
    ],
)
def test_a_job_running_for_a_try_that_is_over_is_cancelled(
    state: TaskState, try_number: int, ti_fields: dict[str, Any]
) -> None:
    """The try ended before its job was known (nobody could cancel it by id): the job's
    "running" report asks for its cancellation and changes nothing else."""
    ti = make_ti(state, try_number=try_number, **ti_fields)
    decision = decide_report(ti, make_report(S.RUNNING, job_id="job-1"), make_policy(), NOW)
    assert (decision.outcome, decision.transition) == (Outcome.CANCEL_JOB, None)
    assert "job-1" in decision.reason


@pytest.mark.parametrize(
    ("state", "try_number", "ti_fields", "report_fields"),
    [
        (T.SUCCESS, 1, {"job_id": "job-1"}, {"job_id": "job-1"}),  # its own late "running"
        (T.STOPPED, 1, {"job_id": "job-1"}, {"job_id": "job-1"}),  # cancelled by id already
        (T.STOPPED, 1, {}, {}),  # says nothing of a job
        (T.PENDING, 1, {"tries": (TryRecord(1, T.SUCCESS, job_id="job-1"),)}, {"job_id": "job-1"}),
        (T.RUNNING, 2, {"tries": (TryRecord(1, T.FAILED, job_id="job-1"),)}, {"job_id": "job-1"}),
        (T.QUEUED, 1, {}, {"job_id": "job-1"}),  # the try's job starting: recorded
        (T.RUNNING, 1, {"job_id": "job-1"}, {"job_id": "job-9"}),  # the current try's duplicate
        (T.STOPPED, 0, {}, {"job_id": "job-1"}),  # a try that never was
    ],
)
def test_a_job_the_try_knew_is_not_cancelled_again(
    state: TaskState,
    try_number: int,
    ti_fields: dict[str, Any],
    report_fields: dict[str, Any],
) -> None:
    ti = make_ti(state, try_number=try_number, **ti_fields)
    decision = decide_report(ti, make_report(S.RUNNING, **report_fields), make_policy(), NOW)
    assert decision.outcome is not Outcome.CANCEL_JOB, decision


QUEUED_TRY = make_ti(T.QUEUED, try_number=2, dispatch_token="tok-2")


@pytest.mark.parametrize(
    ("current", "why"),
    [
        (None, "gone"),
        (replace(QUEUED_TRY, try_number=3, dispatch_token="tok-3"), "not the current try"),
        (replace(QUEUED_TRY, dispatch_token="other"), "not the current try"),
        (replace(QUEUED_TRY, state=T.RUNNING, job_id="job-1"), "already running"),
        (replace(QUEUED_TRY, state=T.SUCCESS), "already success"),
        (replace(QUEUED_TRY, state=T.UP_FOR_RETRY), "already up_for_retry"),
        (replace(QUEUED_TRY, job_id="job-1"), "already has its job"),
    ],
)
def test_only_the_current_queued_try_without_a_job_is_dispatched(
    current: TaskInstance | None, why: str
) -> None:
    reason = why_not_dispatch(QUEUED_TRY, current)
    assert reason is not None
    assert why in reason
    assert why_not_dispatch(QUEUED_TRY, replace(QUEUED_TRY, version=9)) is None


def test_a_run_starts_its_roots_and_its_always_tasks() -> None:
    spec = DagSpec.model_validate(
        {
            "dag": "d",
            "tasks": {
                "a": {"noop": {}},
                "b": {"noop": {}, "depends_on": ["a"]},
                "cleanup": {"noop": {}, "depends_on": ["b"], "trigger_rule": "always"},
                "z": {"noop": {}},
            },
        }
    )
    assert start_tasks(spec) == ["a", "cleanup", "z"]


def make_run(state: RunState, version: int = 3, **fields: Any) -> DagRun:
    return DagRun("d", "r", 1, RunType.MANUAL, state=state, version=version, **fields)


R = RunState


@pytest.mark.parametrize(
    ("old", "new", "change"),
    [
        (None, R.RUNNING, RunChange.STARTED),
        (R.QUEUED, R.RUNNING, RunChange.STARTED),
        (R.SUCCESS, R.RUNNING, RunChange.NONE),  # reopened by a clear: clear evaluates
        (R.RUNNING, R.RUNNING, RunChange.NONE),  # a count
        (R.RUNNING, R.SUCCESS, RunChange.FINISHED),
        (R.QUEUED, R.CANCELLED, RunChange.FINISHED),
        (R.FAILED, R.FAILED, RunChange.NONE),
        (R.SUCCESS, R.QUEUED, RunChange.NONE),
    ],
)
def test_what_a_run_change_asks_for(old: RunState | None, new: RunState, change: RunChange) -> None:
    assert run_change(None if old is None else make_run(old), make_run(new)) is change


def test_a_run_change_holds_only_while_the_run_is_still_what_it_made() -> None:
    ended = make_run(R.SUCCESS, ended_at=NOW)
    assert run_change_holds(RunChange.FINISHED, ended, replace(ended, version=9))
    assert not run_change_holds(RunChange.FINISHED, ended, None)
    # Reopened by a clear (running again), or reopened and ended again later.
    assert not run_change_holds(RunChange.FINISHED, ended, make_run(R.RUNNING))
    again = make_run(R.SUCCESS, ended_at=NOW + timedelta(hours=1))
    assert not run_change_holds(RunChange.FINISHED, ended, again)
    started = make_run(R.RUNNING)
    assert run_change_holds(RunChange.STARTED, started, replace(started, version=7))
    assert not run_change_holds(RunChange.STARTED, started, make_run(R.CANCELLED))


def test_timers_for_retries_and_deadlines() -> None:
    retry = make_ti(T.UP_FOR_RETRY, dispatch_token="tok", next_attempt_at=NOW)
    assert timer_for(retry) == Timer("retry-tok", NOW)
    deadline = NOW + timedelta(hours=1)
    queued = make_ti(T.QUEUED, dispatch_token="tok", timeout_at=deadline)
    timer = timer_for(queued)
    assert timer is not None
    assert timer.at == deadline
    assert re.fullmatch(r"timeout-[0-9a-f]{32}", timer.name)
    # Same try and deadline, same timer (a redelivered change); another, another timer.
    assert timer_for(replace(queued, version=99)) == timer
    assert timer_for(replace(queued, timeout_at=deadline + timedelta(seconds=1))) != timer
    assert timer_for(replace(queued, try_number=2)) != timer
    for ti in (
        make_ti(T.QUEUED),  # no timeout
        make_ti(T.RUNNING, timeout_at=deadline),  # set when it was queued
        make_ti(T.WAITING),  # a start_on wait has no deadline
        make_ti(T.UP_FOR_RETRY, next_attempt_at=NOW),  # no token: never dispatched
        make_ti(T.SUCCESS, timeout_at=deadline),
    ):
        assert timer_for(ti) is None


def test_a_write_whose_record_has_nothing_to_do_is_known_when_it_is_made() -> None:
    """``record_has_work`` (engine/reactions.py): what ``on_task_changed`` would do with the
    write's record, known by its writer. Nothing for a try queued by the invocation that
    starts its job, for that job's start, and for a finish its writer tells; work for
    anything with a deadline, a superseded job, a service, an expansion, a retry's wait,
    a chunk of a wide fan-out, or a finish written by anyone else."""
    deadline = NOW + timedelta(hours=1)
    pending = make_ti(T.PENDING)
    owned = replace(pending, state=T.QUEUED, version=1, claim_owned=True, dispatch_token="t")
    running = replace(owned, state=T.RUNNING, version=2, job_id="j")
    done = replace(running, state=T.SUCCESS, version=3)
    idle = [(pending, owned), (None, owned), (owned, running), (running, done)]
    for old, new in idle:
        assert not record_has_work(old, new, service=False, finish_told=True), (old, new)
    assert record_has_work(running, done, service=False)  # the record tells it
    assert record_has_work(pending, replace(owned, claim_owned=False), service=False)
    assert record_has_work(owned, running, service=True)  # its downstream wait for it
    timed = [replace(ti, timeout_at=deadline) for ti in (owned, running, done)]
    assert record_has_work(pending, timed[0], service=False)  # its deadline's timer
    assert record_has_work(timed[1], timed[2], service=False, finish_told=True)
    restarted = replace(running, state=T.QUEUED, try_number=2, superseded_job='{"job": "j"}')
    assert record_has_work(running, restarted, service=False)
    retry = replace(running, state=T.UP_FOR_RETRY, next_attempt_at=NOW)
    assert record_has_work(running, retry, service=False, finish_told=True)
    told = replace(done, reported_version=3, reported=100)
    assert record_has_work(done, told, service=False)  # the next chunk
    assert not record_has_work(done, replace(done, version=4), service=False)
    mapped = replace(pending, map_count=3)
    assert record_has_work(mapped, replace(mapped, state=T.RUNNING), service=False)
    assert task_event_due(None, owned)
    assert task_event_due(owned, running)
    assert not task_event_due(None, pending)
    assert not task_event_due(done, told)
    assert [s for s in T if is_outcome(s)] == sorted(
        [*FINISHED_TASK_STATES, T.UP_FOR_RETRY], key=list(T).index
    )


def test_a_deadline_timer_is_removed_once_it_guards_nothing() -> None:
    deadline = NOW + timedelta(hours=1)
    queued = make_ti(T.QUEUED, timeout_at=deadline)
    set_timer = timer_for(queued)
    assert set_timer is not None
    running = replace(queued, state=T.RUNNING)
    assert deadline_left_behind(queued, running) is None  # the same try runs on
    for ended in (
        replace(running, state=T.SUCCESS),
        replace(running, state=T.UP_FOR_RETRY, next_attempt_at=NOW),  # timed out
        replace(running, state=T.STOPPED),
        # Restarted: a new try with its own deadline.
        replace(running, state=T.QUEUED, try_number=2, timeout_at=deadline + timedelta(1)),
    ):
        assert deadline_left_behind(running, ended) == set_timer.name
    assert deadline_left_behind(None, queued) is None
    assert deadline_left_behind(make_ti(T.RUNNING), make_ti(T.SUCCESS)) is None  # no timeout


def test_a_wait_for_a_signal_keeps_its_deadline_by_a_timer() -> None:
    """Before: a wait's deadline was the reconciler's (every 5 minutes on AWS)."""
    deadline = NOW + timedelta(minutes=20)
    waiting = make_ti(T.WAITING, timeout_at=deadline)
    timer = timer_for(waiting)
    assert timer is not None
    assert timer.at == deadline
    assert timer.name.startswith(DEADLINE_TIMER)
    # It ends with the wait: timed out, or its signal came (the try's own deadline next).
    assert deadline_left_behind(waiting, replace(waiting, state=T.FAILED)) == timer.name
    dispatched = replace(waiting, state=T.QUEUED, try_number=1, timeout_at=deadline + timedelta(1))
    assert deadline_left_behind(waiting, dispatched) == timer.name


@pytest.mark.parametrize(
    ("overdue", "wait"),
    [
        (timedelta(0), RECONCILE_BACKOFF_MIN),
        (timedelta(minutes=7), timedelta(minutes=7)),
        (timedelta(days=2), RECONCILE_BACKOFF_MAX),
    ],
)
def test_the_reconciler_backs_off_a_failing_item(overdue: timedelta, wait: timedelta) -> None:
    assert reconcile_backoff(NOW - overdue, NOW) == NOW + wait
    assert reconcile_backoff(None, NOW) == NOW + RECONCILE_BACKOFF_MIN


def _looks(place: datetime, until: datetime, every: timedelta) -> list[datetime]:
    """The passes, every ``every`` from ``place``, that read the entry at ``place``."""
    passes = [place + every * i for i in range((until - place) // every + 1)]
    return [moment for moment in passes if looks_at_entry(place, moment)]


def test_an_entry_is_read_when_it_falls_due_and_then_at_its_looks() -> None:
    """A running job's entry stays where it is: a pass reads it when a look (at its
    place, 10 minutes later, then gaps that double, hourly at most) fell within the last
    two reconcile periods, so each look is made by the pass after it even if one fails."""
    minutes = timedelta(minutes=1)
    read = _looks(NOW, NOW + timedelta(hours=4), RECONCILE_EVERY)
    assert [int((moment - NOW) / minutes) for moment in read] == [
        0, 5,  # its place
        10, 15,  # 10 minutes on
        30, 35,  # then 20
        70, 75,  # then 40
        130, 135,  # then hourly
        190, 195,
    ]  # fmt: skip
    assert not looks_at_entry(NOW, NOW - timedelta(seconds=1))  # not due yet
    assert LOOK_WINDOW == 2 * RECONCILE_EVERY


def test_a_week_long_job_is_read_at_its_looks_only() -> None:
    """Hourly looks at most: a week-long job's entry is read ~2 passes an hour (its look
    and the pass after), not 12, and written never (a look moved it, 3 write units)."""
    read = _looks(NOW, NOW + timedelta(days=7), RECONCILE_EVERY)
    hourly_looks = (timedelta(days=7) - timedelta(minutes=70)) // RUNNING_CHECK_MAX
    assert len(read) == 2 * (4 + hourly_looks)
    for moment in read:  # each of them within a window after a look
        assert looks_at_entry(NOW, moment)
    # Whatever the pace of the passes, every look is met by one of them.
    for every in (timedelta(minutes=1), timedelta(minutes=7), timedelta(minutes=9)):
        assert _looks(NOW, NOW + timedelta(days=1), every)
        looks = [NOW + RUNNING_CHECK_EVERY * k for k in (0, 1, 3, 7)]
        for look in looks:
            window_passes = [
                p for p in _looks(NOW, NOW + timedelta(days=1), every) if look <= p < look + every
            ]
            assert window_passes, (every, look)


def test_a_dispatch_claim_is_the_try_check_time() -> None:
    claim_end = NOW + timedelta(minutes=2)
    queued = make_ti(T.QUEUED, dispatch_token="tok", check_at=claim_end)
    assert dispatch_claim(queued, queued, NOW) is DispatchClaim.HELD
    # Someone else moved the claim on: stand down while it runs.
    claimed = replace(queued, version=queued.version + 1, check_at=claim_end + timedelta(1))
    assert dispatch_claim(queued, claimed, NOW) is DispatchClaim.TAKEN
    # Nobody's claim runs (the reconciler's case, or a change delivered late): claim it.
    assert dispatch_claim(queued, queued, claim_end) is DispatchClaim.EXPIRED
    assert dispatch_claim(queued, replace(queued, check_at=None), NOW) is DispatchClaim.EXPIRED


def test_an_owned_claim_is_its_writers_until_it_runs_out() -> None:
    claim_end = NOW + timedelta(minutes=2)
    owned = make_ti(T.QUEUED, dispatch_token="tok", check_at=claim_end, claim_owned=True)
    assert dispatch_claim(owned, owned, NOW, owner=True) is DispatchClaim.HELD
    assert dispatch_claim(owned, owned, NOW) is DispatchClaim.TAKEN  # its stream record
    assert dispatch_claim(owned, owned, claim_end) is DispatchClaim.EXPIRED  # the writer died


def test_an_owned_dispatch_marks_only_a_queued_write() -> None:
    ti = make_ti(T.PENDING)
    queue = Transition(ti.task_id, T.PENDING, T.QUEUED, Cause.DISPATCH, ti.version, {"x": 1})
    marked = owned_dispatch(Decision.accept(queue, "ready"))
    assert marked.transition is not None
    assert marked.transition.changes == {"x": 1, "claim_owned": True}
    skip = Transition(ti.task_id, T.PENDING, T.SKIPPED, Cause.SKIPPED, ti.version)
    assert owned_dispatch(Decision.accept(skip, "skipped")).transition == skip
    assert owned_dispatch(Decision.ignore("nothing")).transition is None


def test_a_fan_out_is_told_in_chunks_of_the_current_version() -> None:
    done = TaskInstance("d", "r", "t", state=T.SUCCESS, try_number=1, version=4)
    assert downstream_chunk(done, 250) == range(0, 100)
    assert downstream_chunk(done, 7, size=3) == range(0, 3)
    counted = replace(done, reported_version=4, reported=6)
    assert downstream_chunk(counted, 7, size=3) == range(6, 7)  # the last one
    assert downstream_chunk(counted, 5, size=3) == range(5, 5)  # nothing left
    # A count of another version is stale: the current finish starts from the first.
    assert downstream_chunk(replace(counted, version=5), 7, size=3) == range(0, 3)


def test_only_a_count_of_the_current_version_asks_for_the_next_chunk() -> None:
    done = TaskInstance("d", "r", "t", state=T.SUCCESS, try_number=1, version=4)
    counted = replace(done, reported_version=4, reported=100)
    assert told_more(done, counted)
    assert not told_more(None, counted)  # a creation is no chunk
    assert not told_more(counted, counted)  # the same count again: nothing moved
    assert not told_more(done, replace(done, version=5))  # another change
    assert not told_more(done, replace(counted, version=5))  # a stale count rides along


def test_a_finish_is_counted_when_the_run_holds_all_its_write_would() -> None:
    ti = TaskInstance("d", "r", "t", state=TaskState.SUCCESS, try_number=1)
    counted = DagRun("d", "r", 1, RunType.MANUAL, finished_idx=frozenset({3}))
    assert finish_counted(counted, ti, 3, failed_leaf=False)
    assert not finish_counted(counted, ti, 4, failed_leaf=False)
    assert not finish_counted(counted, ti, 3, failed_leaf=True)  # not yet as a failed leaf
    assert finish_counted(replace(counted, failed_leaf_idx=frozenset({3})), ti, 3, failed_leaf=True)
    assert not finish_counted(replace(counted, active=frozenset({"t"})), ti, 3, failed_leaf=False)
    assert not finish_counted(
        replace(counted, throttled=frozenset({"t"})), ti, 3, failed_leaf=False
    )


@pytest.mark.parametrize(
    ("tasks", "max_active_tasks", "binds"),
    [
        (3, 3, False),  # a task instance holds one slot whatever clears run again
        (4, 3, True),
        (1, 1, False),
    ],
)
def test_task_slots_bind_only_when_a_dag_has_more_tasks_than_slots(
    tasks: int, max_active_tasks: int, binds: bool
) -> None:
    spec = DagSpec.model_validate(
        {
            "dag": "d",
            "max_active_tasks": max_active_tasks,
            "tasks": {f"t{i}": {"noop": None} for i in range(tasks)},
        }
    )
    assert slots_bind(spec) is binds


def test_task_slots_bind_for_any_dag_with_for_each() -> None:
    """A mapped task is as many instances as its items, known only at its start."""
    spec = DagSpec.model_validate(
        {
            "dag": "d",
            "tasks": {
                "each": {"for_each": ["a", "b"], "batch": {"job_queue": "q", "job_definition": "j"}}
            },
        }
    )
    assert slots_bind(spec) is True


def test_a_report_is_stale_when_the_downstream_holds_that_version_or_a_later_one() -> None:
    from skydag.engine.scheduler import stale_report

    report = UpstreamReport(T.SUCCESS, 5)
    assert not stale_report(None, report)
    assert not stale_report(report, report)  # held: nothing to write, decide it again
    assert not stale_report(UpstreamReport(T.FAILED, 4), report)  # an older try's
    assert stale_report(UpstreamReport(T.FAILED, 6), report)
    assert stale_report(UpstreamReport.tombstone(5), report)  # cleared after it was read


def test_only_a_report_that_decides_its_task_alone_is_written_with_the_decision() -> None:
    from skydag.engine.scheduler import reports_in_one_write

    spec = DagSpec.model_validate(
        {
            "dag": "d",
            "tasks": {
                "a": {"noop": None},
                "b": {"noop": None},
                "chained": {"depends_on": ["a"], "noop": None},
                "joined": {"depends_on": ["a", "b"], "noop": None},
                "conditional": {"depends_on": ["a"], "when": "{{ true }}", "noop": None},
                "mapped": {"depends_on": ["a"], "for_each": [1, 2], "noop": None},
            },
        }
    )
    assert [t for t in spec.tasks if reports_in_one_write(spec, t)] == ["chained"]
