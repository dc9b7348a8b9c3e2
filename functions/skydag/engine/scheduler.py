"""The scheduler's pure decisions: readiness, dispatch intents, run creation and completion.

Every function here takes records and returns records or decisions; nothing does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from skydag.engine.conditions import Condition
from skydag.engine.models import DagRun, RunType, TaskInstance, UpstreamReport
from skydag.engine.rules import DISPATCH_CHECK_AFTER
from skydag.engine.states import (
    FAILED_TASK_STATES,
    FINISHED_RUN_STATES,
    Cause,
    RunState,
    TaskState,
)
from skydag.engine.tallies import trigger_state
from skydag.engine.transitions import Decision, Transition
from skydag.engine.trigger_rules import Readiness, Verdict, evaluate
from skydag.limits import check_run_id, derived_run_id
from skydag.spec.models import DagSpec, TaskMode, TriggerRule

T = TaskState


def upstream_states(spec: DagSpec, ti: TaskInstance) -> dict[str, TaskState]:
    """The upstream states a trigger rule sees (``trigger_state``: a running service
    counts as succeeded)."""
    return {
        task_id: trigger_state(spec, task_id, report.state)
        for task_id, report in ti.upstream.items()
    }


def readiness(spec: DagSpec, ti: TaskInstance) -> Readiness:
    """Why the task may or may not run, from the upstream states it has been told: a wide
    join's from its groups' tallies (engine/tallies.py), once it holds any."""
    task = spec.tasks[ti.task_id]
    tallies = [tally.counts for tally in ti.tallies.values()] if ti.tallies else None
    return evaluate(task.trigger_rule, task.depends_on, upstream_states(spec, ti), tallies)


def start_tasks(spec: DagSpec) -> list[str]:
    """The tasks a run evaluates when it starts: its roots, and the tasks whose trigger
    rule is ``always`` (they start at once, without waiting for their upstreams)."""
    return [
        task_id
        for task_id, task in spec.tasks.items()
        if not task.depends_on or task.trigger_rule is TriggerRule.ALWAYS
    ]


def decide_pending(
    spec: DagSpec, ti: TaskInstance, now: datetime, condition: Condition | None = None
) -> Decision:
    """A pending task's next step under its trigger rule, then its ``when:`` condition.

    Accepts with a transition to skipped, upstream_failed, waiting (start_on) or queued
    (the dispatch intent; the service first takes a max_active_tasks slot); ignores while
    upstreams are unfinished, with the rule's reason. A task with a condition is decided
    only with its rendered ``condition`` (``needs_condition`` says when to render it).
    """
    if ti.state is not T.PENDING:
        return Decision.ignore(f"task is {ti.state.value}")
    verdict = readiness(spec, ti)
    if verdict.verdict is Verdict.WAIT:
        return Decision.ignore(verdict.reason)
    if verdict.verdict is Verdict.SKIP:
        changes = {"reason": verdict.reason, "ended_at": now}
        return Decision.accept(
            Transition(ti.task_id, T.PENDING, T.SKIPPED, Cause.SKIPPED, ti.version, changes),
            verdict.reason,
        )
    if verdict.verdict is Verdict.UPSTREAM_FAILED:
        changes = {"reason": verdict.reason, "ended_at": now}
        return Decision.accept(
            Transition(
                ti.task_id, T.PENDING, T.UPSTREAM_FAILED, Cause.UPSTREAM_FAILED, ti.version, changes
            ),
            verdict.reason,
        )
    held_back = _held_back_by_condition(spec, ti, now, condition)
    return (
        held_back
        or _wait_for_signal(spec, ti, now)
        or Decision.accept(dispatch_transition(spec, ti, now), verdict.reason)
    )


def _held_back_by_condition(
    spec: DagSpec, ti: TaskInstance, now: datetime, condition: Condition | None
) -> Decision | None:
    """A ready task whose ``when:`` is false is skipped (its downstream trigger rules see
    a skip, as after Airflow's branching); one that could not be rendered fails."""
    if spec.tasks[ti.task_id].when is None:
        return None
    if condition is None:
        return Decision.ignore("its when: condition is not rendered yet")
    if condition.holds and condition.error is None:
        return None
    dst, reason = (T.FAILED if condition.error else T.SKIPPED), condition.reason
    changes = {"reason": reason, "ended_at": now}
    return Decision.accept(
        Transition(ti.task_id, T.PENDING, dst, Cause.CONDITION, ti.version, changes), reason
    )


def needs_condition(spec: DagSpec, ti: TaskInstance) -> bool:
    """Whether deciding ``ti`` now needs its ``when:`` rendered: it has one, and its
    upstreams let it run (a condition is rendered once, when it decides the task)."""
    if spec.tasks[ti.task_id].when is None or ti.state is not T.PENDING:
        return False
    return readiness(spec, ti).verdict is Verdict.READY


def _wait_for_signal(spec: DagSpec, ti: TaskInstance, now: datetime) -> Decision | None:
    """A ready task that must first receive a signal (``wait`` or ``start_on``) waits."""
    task = spec.tasks[ti.task_id]
    if task.wait is not None:
        # A wait task holds no compute; its timeout is how long it may wait.
        timeout = spec.effective_policy(ti.task_id).timeout
        deadline, reason = (now + timeout if timeout else None), "waiting for a signal"
    elif task.start_on:
        # start_on waits without a deadline: the task's timeout counts from dispatch.
        deadline, reason = None, "waiting for a start_on signal"
    else:
        return None
    # Only a signal that comes from now on counts (a previous try's must not linger).
    changes = {"reason": reason, "timeout_at": deadline, "signal": None}
    return Decision.accept(
        Transition(ti.task_id, T.PENDING, T.WAITING, Cause.WAIT_FOR_SIGNAL, ti.version, changes),
        f"upstreams satisfied; {reason}",
    )


def _signal_id(signal: Mapping[str, Any] | None) -> str | None:
    return str(signal["id"]) if signal and "id" in signal else None


def decide_signal_start(
    spec: DagSpec, ti: TaskInstance, signal: Mapping[str, Any], now: datetime
) -> Decision:
    """A start_on (or wait) signal arrived: a waiting task is dispatched with it."""
    if ti.state is not T.WAITING:
        return Decision.ignore(f"task is {ti.state.value}, not waiting for a signal")
    transition = dispatch_transition(spec, ti, now, cause=Cause.SIGNAL, signal=signal)
    return Decision.accept(transition, f"signal {_signal_id(signal)} arrived")


def dispatch_token(ti: TaskInstance, try_number: int) -> str:
    """Deterministic per try: a crashed dispatcher that retries presents the same token."""
    raw = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{try_number}"
    if ti.map_index is not None:
        # An instance of a mapped task: each expansion's instances are new tries.
        raw += f"/{ti.map_index}/{ti.expansion}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def dispatch_transition(
    spec: DagSpec,
    ti: TaskInstance,
    now: datetime,
    *,
    cause: Cause = Cause.DISPATCH,
    signal: Mapping[str, Any] | None = None,
) -> Transition:
    """Record the intent to start the next try before any call is made (principle 3)."""
    try_number = ti.try_number + 1
    policy = spec.effective_policy(ti.task_id)
    changes: dict[str, Any] = {
        "try_number": try_number,
        "dispatch_token": dispatch_token(ti, try_number),
        "found_by_key": spec.tasks[ti.task_id].events_name_the_task,
        "queued_at": now,
        "timeout_at": now + policy.timeout if policy.timeout else None,
        "job_id": None,
        "exit_code": None,
        "reason": None,
        "started_at": None,
        "ended_at": None,
        "next_attempt_at": None,
        "output": None,
        # Until the job is known to run, look again soon: a crash may have cut the dispatch.
        "check_at": now + DISPATCH_CHECK_AFTER,
        "claim_owned": False,
        "covered": False,
        "superseded_job": None,
    }
    if signal is not None:
        changes["signal"] = signal
    return Transition(ti.task_id, ti.state, T.QUEUED, cause, ti.version, changes)


def why_not_dispatch(image: TaskInstance, current: TaskInstance | None) -> str | None:
    """Why the try a change asks to dispatch must not be, judged on the task as it is
    now; None when it must. A target is called only for the current try, still queued,
    whose job is not known yet: a stale or repeated ``→ queued`` change calls nothing (the
    target's idempotency token is the second line of defence, not the first)."""
    if current is None:
        return "the task instance is gone"
    if current.try_number != image.try_number or current.dispatch_token != image.dispatch_token:
        return f"try {image.try_number} is not the current try ({current.try_number})"
    if current.state is not T.QUEUED:
        return f"try {current.try_number} is already {current.state.value}"
    if current.job_id is not None:
        return f"try {current.try_number} already has its job ({current.job_id})"
    return None


def owned_dispatch(decision: Decision) -> Decision:
    """The decision with its ``→ queued`` write marked as the claim of the invocation
    that writes it and starts the job itself (``TaskInstance.claim_owned``)."""
    transition = decision.transition
    if transition is None or transition.dst is not T.QUEUED:
        return decision
    changes = {**transition.changes, "claim_owned": True}
    return replace(decision, transition=replace(transition, changes=changes))


def covered_dispatch(decision: Decision) -> Decision:
    """The decision with its ``→ queued`` write marked covered (``TaskInstance.covered``):
    made by an invocation that counts the finish it tells on the run afterwards, and that
    count arms the run's due entry, which stands for the try's own. One index entry per
    run then, instead of one in and one out per task."""
    transition = decision.transition
    if transition is None or transition.dst is not T.QUEUED:
        return decision
    changes = {**transition.changes, "covered": True}
    return replace(decision, transition=replace(transition, changes=changes))


class DispatchClaim(StrEnum):
    """Who may call the target for a queued try (``dispatch_claim``)."""

    HELD = "held"  # the claim of the write the caller acts on still stands: go ahead
    TAKEN = "taken"  # another dispatcher claimed the try and its claim runs: stand down
    EXPIRED = "expired"  # nobody's claim runs: claim it (a conditional write), then go


def dispatch_claim(
    image: TaskInstance, current: TaskInstance, now: datetime, *, owner: bool = False
) -> DispatchClaim:
    """Whether whoever acts on ``image`` may call the target for the queued try
    (``owner``: the invocation that made the ``→ queued`` write).

    A claim is the try's ``check_at`` (``DISPATCH_CHECK_AFTER`` ahead): the ``→ queued``
    write is the claim of the change that made it, and a dispatcher that finds no running
    claim -- the reconciler re-attaching a dispatch a crash cut short, a change delivered
    after its claim ran out -- claims the try by a conditional write that moves
    ``check_at`` on. So two dispatchers never call the target for one try at once, short of
    a call that outlasts its claim (then the target's token is the second line: Lambda's
    asynchronous invoke has none)."""
    if current.check_at is None or current.check_at <= now:
        return DispatchClaim.EXPIRED
    if current.check_at == image.check_at:
        # A write whose invocation starts the job itself is that invocation's claim,
        # not its stream record's (the record may come while the call is under way).
        if image.claim_owned and not owner:
            return DispatchClaim.TAKEN
        return DispatchClaim.HELD
    return DispatchClaim.TAKEN


@dataclass(frozen=True, slots=True)
class Timer:
    """A one-shot wake-up for one task instance: "Timer Fired" at ``at`` (retry, deadline)."""

    name: str
    at: datetime


# Timer names start with what they wake up for: a retry is work still to come, a
# deadline only ends work that may never come (``dev run`` waits for the former only).
RETRY_TIMER = "retry-"
DEADLINE_TIMER = "timeout-"
# The states under a deadline: a try (``timeout`` counted from the dispatch), or a wait
# for a signal (``timeout`` counted from the start of the wait).
_UNDER_DEADLINE = frozenset({T.WAITING, T.QUEUED, T.RUNNING})


def timer_for(ti: TaskInstance) -> Timer | None:
    """The timer a task instance's new state needs, so that its time is kept to the
    minute and not to the reconciler's pace: the retry's time (up_for_retry), or the
    deadline of the wait or of the try (set when the task starts waiting or is queued).
    Names are deterministic, so a redelivered change sets the same timer; when it fires,
    the task is judged as it is then."""
    if ti.state is T.UP_FOR_RETRY:
        if ti.next_attempt_at is None or not ti.dispatch_token:
            return None
        return Timer(f"{RETRY_TIMER}{ti.dispatch_token}", ti.next_attempt_at)
    if ti.state in (T.WAITING, T.QUEUED):
        return _deadline_timer(ti)
    return None


def deadline_left_behind(old: TaskInstance | None, new: TaskInstance) -> str | None:
    """The name of the deadline timer a change leaves with nothing to guard (the try is
    over, or a new try has its own deadline): it is removed rather than left to fire for
    nothing, so that only live deadlines are pending."""
    if old is None or old.state not in _UNDER_DEADLINE:
        return None
    ended = _deadline_timer(old)
    if ended is None or (new.state in _UNDER_DEADLINE and _deadline_timer(new) == ended):
        return None
    return ended.name


def _deadline_timer(ti: TaskInstance) -> Timer | None:
    if ti.timeout_at is None:
        return None
    at = ti.timeout_at.isoformat()
    raw = f"{ti.dag_id}/{ti.run_id}/{ti.instance_id}/{ti.try_number}/{at}".encode()
    return Timer(f"{DEADLINE_TIMER}{hashlib.sha256(raw).hexdigest()[:32]}", ti.timeout_at)


def decide_retry(spec: DagSpec, ti: TaskInstance, now: datetime) -> Decision:
    """An up_for_retry task whose time has come is dispatched again."""
    if ti.state is not T.UP_FOR_RETRY:
        return Decision.ignore(f"task is {ti.state.value}")
    if ti.next_attempt_at is not None and ti.next_attempt_at > now:
        return Decision.ignore(f"next attempt at {ti.next_attempt_at.isoformat()}")
    return Decision.accept(dispatch_transition(spec, ti, now), f"try {ti.try_number + 1}")


def decide_next(
    spec: DagSpec, ti: TaskInstance, now: datetime, condition: Condition | None = None
) -> Decision:
    """The next step of a task that is not running: its trigger rule, its due retry, or
    the dispatch of a waiting task whose signal came while no task slot was free."""
    if ti.state is T.UP_FOR_RETRY:
        return decide_retry(spec, ti, now)
    if ti.state is T.WAITING:
        if ti.signal is None:
            return Decision.ignore("waiting for a signal")
        return decide_signal_start(spec, ti, ti.signal, now)
    return decide_pending(spec, ti, now, condition)


def reports_in_one_write(spec: DagSpec, task_id: str) -> bool:
    """Whether an upstream's report to ``task_id`` is written together with the transition
    it allows, after a read (``TaskProgress.tell``): one write unit and one stream record
    instead of two each, for a read unit. Only where the report alone decides the task: a
    single upstream, no ``when:`` to render first, not a for_each task."""
    task = spec.tasks[task_id]
    return len(spec.upstream(task_id)) == 1 and task.when is None and task.for_each is None


# A join of at most this many upstream tasks is read with the run its upstream's finish
# reads (eventually consistently, half a read unit while its item is small) and told in one
# write with the transition it allows: a read unit for each teller, where its first report
# would otherwise try a map that is not there yet (a write unit) and its last report and
# dispatch take two writes.
SMALL_JOIN = 8


def told_after_a_read(spec: DagSpec, task_id: str) -> bool:
    """Whether a downstream task is read before an upstream's report is told to it, with
    the run (``TaskProgress.told_first``): where its report is written with the transition
    it allows (``reports_in_one_write``), and a small join (``SMALL_JOIN``), decided on
    the reports it holds as read, the write conditional on the version read."""
    task = spec.tasks[task_id]
    if task.when is not None or task.for_each is not None:
        return False
    return len(spec.upstream(task_id)) <= SMALL_JOIN


def stale_report(held: UpstreamReport | None, report: UpstreamReport) -> bool:
    """Whether a downstream holding ``held`` refuses ``report``: it holds a report of that
    upstream's version or later, or the tombstone of a clear of it (as the store's
    conditional write judges, ``TaskStore.report_upstream``)."""
    return held is not None and held != report and held.version >= report.version


def with_report(ti: TaskInstance, upstream_task: str, report: UpstreamReport) -> TaskInstance:
    """The downstream as it will be once it holds ``report`` (its version unchanged: the
    write that records it is conditional on the version read)."""
    return replace(ti, upstream={**ti.upstream, upstream_task: report})


class RunChange(StrEnum):
    """What a change of a run asks of the scheduler."""

    NONE = "none"
    STARTED = "started"  # evaluate the tasks the run starts with
    FINISHED = "finished"  # free its max_active_runs slot, start the next queued run


def run_change(old: DagRun | None, new: DagRun) -> RunChange:
    """What a run's change (a stream record's two images) asks for, if anything."""
    if new.state is RunState.RUNNING and (old is None or old.state is RunState.QUEUED):
        return RunChange.STARTED
    if new.state in FINISHED_RUN_STATES and (old is None or old.state != new.state):
        return RunChange.FINISHED
    return RunChange.NONE


def run_change_holds(change: RunChange, new: DagRun, current: DagRun | None) -> bool:
    """Whether the run as it is now is still what the change made it. A redelivered
    image of a start or an end that a later change undid (a clear reopened the run, it was
    cancelled) asks for nothing: acting on it would, say, free the slot of a running run."""
    if current is None or current.state is not new.state:
        return False
    if change is RunChange.FINISHED:
        # A run reopened and finished again in the same state ended at another time.
        return current.ended_at == new.ended_at
    return change is RunChange.STARTED


def finish_counted(run: DagRun, ti: TaskInstance, index: int, *, failed_leaf: bool) -> bool:
    """Whether the run as read already holds everything counting this finish would write
    (``RunRepository.record_finished``: the task counted, as a failed leaf if it is one,
    out of the throttled set and holding no slot), so that the write would change
    nothing: a finish told twice (by the scheduler at once, then by its stream record)
    is counted by one write."""
    return (
        index in run.finished_idx
        and (not failed_leaf or index in run.failed_leaf_idx)
        and ti.instance_id not in run.throttled
        and ti.instance_id not in run.active
    )


def leaves_counted(spec: DagSpec, run: DagRun) -> bool:
    """Whether every leaf's finish is counted on a run that counts on its own item."""
    return spec.leaf_indices() <= run.finished_idx


def finish_counts(
    spec: DagSpec, run: DagRun, task_id: str, *, grouped: bool, holds_slot: bool
) -> bool:
    """Whether a finish is counted on its run (``RunRepository.record_finished``), the run
    as read by the invocation telling it.

    A big run (``grouped``) counts every finish, in its group's tally: its end is known
    from its done groups. A run counting on its own item counts only the finishes that
    can be its last, one run write a leaf instead of one a task: a leaf's, and every
    finish once all the leaves' are counted (a task still running then, whose downstream
    tasks finished before it: an ``always`` or ``one_success`` task, a mark). A finish
    holding a max_active_tasks slot is counted too: its count is the slot's release,
    the same write.

    Why the run still ends: the last of its writes that matter is a leaf's count, after
    which every task has finished; or a task's finish after every leaf's count (not a
    leaf's: its count comes after it). That finish's stream record comes after its write
    and reads the run consistently (``TaskProgress.propagate``): it sees every leaf
    counted, so it is counted. A count that finds every leaf counted checks the run's
    task instances before the run ends (``RunLifecycle.complete_if_done``).

    A run that has ended counts nothing more (a finish's record coming after the end:
    every task had finished, and a clear that reopens the run starts its counting anew,
    ``counts_all`` unset), but for a slot's release."""
    if grouped or holds_slot:
        return True
    if run.state in FINISHED_RUN_STATES:
        return False
    return run.counts_all or task_id in spec.leaf_set() or leaves_counted(spec, run)


def run_outcome(spec: DagSpec, run: DagRun, *, grouped: bool) -> RunState | None:
    """The run's end state once its counts say every task finished (Airflow: judged by
    the leaves): every finish counted for a big run (``grouped``) or one counting them
    all (``counts_all``), else every leaf's (``finish_counts``: the caller checks the
    others' on the task instances, and has the run count all if one is unfinished)."""
    if grouped or run.counts_all:
        if run.finished_count < len(spec.tasks):
            return None
    elif not leaves_counted(spec, run):
        return None
    return RunState.FAILED if run.failed_leaves > 0 else RunState.SUCCESS


def run_end(outcome: RunState, failed_leaves: int) -> tuple[Cause, str | None]:
    """The cause and reason of a run's end, once its outcome is known."""
    if outcome is RunState.SUCCESS:
        return Cause.SUCCEEDED, None
    return Cause.FAILED, f"{failed_leaves} leaf task(s) failed, upstream_failed or stopped"


def counts_as_failed_leaf(spec: DagSpec, task_id: str, state: TaskState) -> bool:
    """Whether a finished task makes its run fail (Airflow judges runs by their leaves).

    Stopping is how a service ends (stop_on, or its run cancelled): not a failure."""
    if state is T.STOPPED and spec.tasks[task_id].mode is TaskMode.SERVICE:
        return False
    return task_id in spec.leaf_set() and state in FAILED_TASK_STATES


# Downstream tasks told of a finish per invocation (about three DynamoDB round trips
# each): a 10,000-wide fan-out is told in bounded chunks, each surviving a crash.
REPORT_CHUNK = 100


def downstream_chunk(ti: TaskInstance, children: int, size: int = REPORT_CHUNK) -> range:
    """The downstream tasks (positions in the spec's list) that the next delivery of
    ``ti``'s finish tells: after those already told of its current version, up to
    ``size`` more. A count of another version is stale (the task moved since)."""
    told = ti.reported if ti.reported_version == ti.version else 0
    return range(min(told, children), min(told + size, children))


def told_more(old: TaskInstance | None, new: TaskInstance) -> bool:
    """Whether a change recorded another chunk of a wide fan-out told of the task's
    current version: the next chunk is due (``downstream_chunk``)."""
    return (
        old is not None
        and new.reported_version == new.version
        and (old.reported_version, old.reported) != (new.reported_version, new.reported)
    )


@dataclass(frozen=True, slots=True)
class NewRun:
    run: DagRun


def make_run_id(run_type: RunType, *, at: datetime, event_id: str | None = None) -> str:
    """Deterministic where the trigger is: one run per signal event id, per interval.

    An event id that would make an invalid run id (EventBridge's are UUIDs; a hand-made
    event's may be anything) is replaced by its digest (``skydag.limits.derived_run_id``)."""
    if run_type is RunType.SIGNAL:
        if not event_id:
            raise ValueError("a signal run needs the event's id")
        return derived_run_id("signal__", event_id)
    if event_id:
        return derived_run_id(f"{run_type.value}__", event_id)
    return check_run_id(f"{run_type.value}__{at.isoformat(timespec='microseconds')}")


def new_run(
    spec: DagSpec,
    dag_version: int,
    *,
    run_id: str,
    run_type: RunType,
    now: datetime,
    conf: Mapping[str, Any] | None = None,
    logical_date: datetime | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
    trigger: Mapping[str, Any] | None = None,
    backfill_limit: int | None = None,
) -> NewRun:
    """A queued run pinned to ``dag_version``. Its task instances need no write: a task
    never written reads as its fresh instance, pending, at version 0."""
    run = DagRun(
        dag_id=spec.dag,
        run_id=run_id,
        dag_version=dag_version,
        run_type=run_type,
        state=RunState.QUEUED,
        conf=dict(conf or {}),
        logical_date=logical_date or now,
        data_interval_start=data_interval[0] if data_interval else None,
        data_interval_end=data_interval[1] if data_interval else None,
        trigger=dict(trigger) if trigger else None,
        created_at=now,
        backfill_limit=backfill_limit,
    )
    return NewRun(run)


def merged_params(spec: DagSpec, run: DagRun) -> dict[str, Any]:
    """A run's conf overrides the DAG's params (shallowly, like Airflow)."""
    return {**spec.params, **run.conf}
