"""Transition rules for what jobs report and what timers fire.

Each rule is a small class: the states it applies FROM, the state it leads TO, and a
one-line policy. Rules return a Decision rather than raise; an ordered policy list is
tried until one rule decides. The first rules are guards that make duplicate, stale and
late input harmless (design principle 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from skydag.engine.models import JobReport, JobStatus, TaskInstance
from skydag.engine.retries import has_tries_left, retry_delay
from skydag.engine.states import FINISHED_TASK_STATES, Cause, TaskState
from skydag.engine.transitions import Decision, Transition
from skydag.engine.tries import job_left_live, job_of_try, service_time
from skydag.spec.models import EffectivePolicy

T = TaskState

# A dispatch not confirmed by then is checked by the reconciler (and re-attached). It is
# also how long the claim of a dispatch lasts (``engine/scheduler.py dispatch_claim``), so
# it outlasts every invocation that may hold one: Lambda ends an invocation at its
# function's timeout (4 minutes at most, the reconciler's: ``wiring.FUNCTIONS``), so no
# call of an invocation whose claim ran out can still be under way beside the next one's.
DISPATCH_CHECK_AFTER = timedelta(minutes=5)
# The longest an invocation of an engine function lives (its timeout, as above).
LONGEST_INVOCATION = timedelta(minutes=4)
# A run armed by the count of a finish (``TaskInstance.covered``) is looked at by then:
# before the claims of the tries that finish queued run out, as the count comes at most
# one invocation's time after their ``→ queued`` writes. It is disarmed once its last
# count is older than an invocation lives (``ports/store.py Arming``).
RUN_CHECK_AFTER = DISPATCH_CHECK_AFTER - LONGEST_INVOCATION
# A big run (finish tallies) is stamped by a write of its own at most this often
# (service/covering.py); a run is disarmed once its stamp is older than RUN_QUIET: an
# invocation's life after a stamp it saw, plus a minute for a stamp's write that lands
# after a later one (its time is taken just before the call; retries may delay it).
ARM_REFRESH = timedelta(minutes=1)
RUN_QUIET = LONGEST_INVOCATION + ARM_REFRESH + timedelta(minutes=1)
# A running job whose events may have been lost is described at its entry's place in the
# due index, then RUNNING_CHECK_EVERY later, then after gaps that double, never more than
# RUNNING_CHECK_MAX apart (``looks_at_entry``).
RUNNING_CHECK_EVERY = timedelta(minutes=10)
RUNNING_CHECK_MAX = timedelta(hours=1)
# The reconciler's pass comes this often (``wiring.RECONCILE_EVERY``; a test pins them).
RECONCILE_EVERY = timedelta(minutes=5)
# A pass reads an entry when one of its looks fell within this window before it: two
# periods, so a pass that failed or came late loses no look (the next one makes it).
LOOK_WINDOW = 2 * RECONCILE_EVERY
# An item the reconciler failed to handle waits this long at least (one pass) and at most
# before it is looked at again, so that it never blocks the items behind it.
RECONCILE_BACKOFF_MIN = timedelta(minutes=5)
RECONCILE_BACKOFF_MAX = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ReportContext:
    ti: TaskInstance
    report: JobReport
    policy: EffectivePolicy
    now: datetime


class ReportRule:
    FROM: ClassVar[frozenset[TaskState]] = frozenset()
    TO: ClassVar[TaskState | None] = None
    STATUSES: ClassVar[frozenset[JobStatus]] = frozenset(JobStatus)

    def applies(self, ctx: ReportContext) -> bool:
        return ctx.ti.state in self.FROM and ctx.report.status in self.STATUSES

    def decide(self, ctx: ReportContext) -> Decision:
        raise NotImplementedError

    def _move(
        self, ctx: ReportContext, dst: TaskState, cause: Cause, **changes: object
    ) -> Transition:
        return Transition(ctx.ti.task_id, ctx.ti.state, dst, cause, ctx.ti.version, changes)


class IgnoreStaleTry(ReportRule):
    """A report about another try than the current one changes nothing."""

    FROM = frozenset(TaskState)

    def applies(self, ctx: ReportContext) -> bool:
        return ctx.report.try_number != ctx.ti.try_number

    def decide(self, ctx: ReportContext) -> Decision:
        return Decision.ignore(
            f"report for try {ctx.report.try_number}, task is at try {ctx.ti.try_number}"
        )


class CancelJobOfEndedTry(ReportRule):
    """A job that reports it runs for a try already over (stopped, marked, timed out or
    cleared while its dispatch was under way, so nobody knew its id to cancel it) is
    orphaned: cancel it. A job the try recorded ended by itself or was cancelled by id."""

    FROM = frozenset(TaskState)
    STATUSES = frozenset({JobStatus.RUNNING})

    def applies(self, ctx: ReportContext) -> bool:
        report, ti = ctx.report, ctx.ti
        if report.status not in self.STATUSES or report.job_id is None:
            return False
        if report.try_number > ti.try_number:
            return False
        if report.try_number == ti.try_number and ti.state in (T.QUEUED, T.RUNNING):
            return False
        return report.job_id != job_of_try(ti, report.try_number)

    def decide(self, ctx: ReportContext) -> Decision:
        return Decision.cancel_job(
            f"job {ctx.report.job_id} runs for try {ctx.report.try_number}, which is over "
            f"(task {ctx.ti.state.value} at try {ctx.ti.try_number})"
        )


class IgnoreFinishedTask(ReportRule):
    """A finished task changes only by an explicit clear; late reports are dropped."""

    FROM = FINISHED_TASK_STATES

    def decide(self, ctx: ReportContext) -> Decision:
        return Decision.ignore(f"task already {ctx.ti.state.value}")


class IgnoreReportWhileWaitingForRetry(ReportRule):
    """Once a try failed and a retry is scheduled, that try's later reports are history."""

    FROM = frozenset({T.UP_FOR_RETRY, T.PENDING, T.WAITING})

    def decide(self, ctx: ReportContext) -> Decision:
        return Decision.ignore(f"task is {ctx.ti.state.value}, not running")


class RecordJobStarted(ReportRule):
    """The job runs: queued -> running."""

    FROM = frozenset({T.QUEUED})
    TO = T.RUNNING
    STATUSES = frozenset({JobStatus.RUNNING})

    def decide(self, ctx: ReportContext) -> Decision:
        # Its first look: its claim's expiry (the try's place in the due index, which
        # stays there while the job runs: ``looks_at_entry``), or RUNNING_CHECK_EVERY after
        # it started if that is sooner (never, as deployed: 5 minutes after it was queued
        # against 10 after it started; compressed timings may have it the other way).
        first_look = ctx.now + RUNNING_CHECK_EVERY
        claim = ctx.ti.check_at
        changes: dict[str, object] = {
            "started_at": service_time(ctx.report.at, ctx.now),
            "check_at": first_look if claim is None else min(claim, first_look),
        }
        if ctx.report.job_id:
            changes["job_id"] = ctx.report.job_id
        return Decision.accept(self._move(ctx, T.RUNNING, Cause.STARTED, **changes), "job started")


class IgnoreDuplicateStart(ReportRule):
    """A second "running" report for a running try is a duplicate."""

    FROM = frozenset({T.RUNNING})
    STATUSES = frozenset({JobStatus.RUNNING})

    def decide(self, ctx: ReportContext) -> Decision:
        return Decision.ignore("already running")


class SucceedTask(ReportRule):
    """The job succeeded: the task succeeds, whether or not "running" was seen first."""

    FROM = frozenset({T.QUEUED, T.RUNNING})
    TO = T.SUCCESS
    STATUSES = frozenset({JobStatus.SUCCEEDED})

    def decide(self, ctx: ReportContext) -> Decision:
        return Decision.accept(
            self._move(ctx, T.SUCCESS, Cause.SUCCEEDED, **_finished_changes(ctx)), "job succeeded"
        )


class RetryFailedTask(ReportRule):
    """The job failed and tries remain: wait with exponential backoff, then try again."""

    FROM = frozenset({T.QUEUED, T.RUNNING})
    TO = T.UP_FOR_RETRY
    STATUSES = frozenset({JobStatus.FAILED})

    def applies(self, ctx: ReportContext) -> bool:
        return ReportRule.applies(self, ctx) and has_tries_left(ctx.policy, attempt(ctx.ti))

    def decide(self, ctx: ReportContext) -> Decision:
        delay = retry_delay(ctx.policy, attempt(ctx.ti))
        changes = _finished_changes(ctx) | {"next_attempt_at": ctx.now + delay}
        return Decision.accept(
            self._move(ctx, T.UP_FOR_RETRY, Cause.RETRY, **changes),
            f"try {ctx.ti.try_number} failed; retry in {delay.total_seconds():g}s",
        )


class FailTask(ReportRule):
    """The job failed and no tries remain: the task fails."""

    FROM = frozenset({T.QUEUED, T.RUNNING})
    TO = T.FAILED
    STATUSES = frozenset({JobStatus.FAILED, JobStatus.STOPPED})

    def decide(self, ctx: ReportContext) -> Decision:
        return Decision.accept(
            self._move(ctx, T.FAILED, Cause.FAILED, **_finished_changes(ctx)),
            f"try {ctx.ti.try_number} failed, no retries left",
        )


def attempt(ti: TaskInstance) -> int:
    """Which attempt the current try is, for retries: restarts by signal are not failures."""
    return ti.try_number - ti.restarts


def _finished_changes(ctx: ReportContext) -> dict[str, object]:
    # Clamped further by Transition.apply: never before the try started (engine/tries.py).
    at = service_time(ctx.report.at, ctx.now)
    changes: dict[str, object] = {
        "ended_at": at,
        "exit_code": ctx.report.exit_code,
        "reason": ctx.report.reason,
    }
    if ctx.ti.started_at is None:
        changes["started_at"] = at
    if ctx.report.job_id:
        changes["job_id"] = ctx.report.job_id
    output = try_output(ctx.report)
    if output is not None:
        changes["output"] = output
    return changes


def may_end_try(ti: TaskInstance, report: JobReport) -> bool:
    """Whether ``report`` can end ``ti``'s current try: only then is what the job
    published worth reading (a stale, duplicate or "running" report records no output)."""
    return (
        report.status is not JobStatus.RUNNING
        and report.try_number == ti.try_number
        and ti.state in (T.QUEUED, T.RUNNING)
    )


def try_output(report: JobReport) -> object:
    """The ended try's output: what the job published (``skydag output set``) wins over
    what its service returned (a Lambda response, a Step Functions output), since
    publishing is the job saying what its output is; None when there is neither, which
    leaves the task's output as it is."""
    if report.published_output is not None:
        return report.published_output
    return report.output


REPORT_POLICY: tuple[ReportRule, ...] = (
    CancelJobOfEndedTry(),
    IgnoreStaleTry(),
    IgnoreFinishedTask(),
    IgnoreReportWhileWaitingForRetry(),
    RecordJobStarted(),
    IgnoreDuplicateStart(),
    SucceedTask(),
    RetryFailedTask(),
    FailTask(),
)


def decide_report(
    ti: TaskInstance, report: JobReport, policy: EffectivePolicy, now: datetime
) -> Decision:
    """What a job's report does to its task instance; the first applicable rule decides."""
    ctx = ReportContext(ti, report, policy, now)
    for rule in REPORT_POLICY:
        if rule.applies(ctx):
            return rule.decide(ctx)
    return Decision.ignore(f"no rule for {report.status.value} while {ti.state.value}")


def decide_timeout(ti: TaskInstance, policy: EffectivePolicy, now: datetime) -> Decision:
    """A task past its deadline: retry when tries remain, otherwise fail."""
    if ti.timeout_at is None or ti.timeout_at > now:
        return Decision.ignore("not timed out")
    reason = f"timed out after {policy.timeout}" if policy.timeout else "timed out"
    if ti.state is T.WAITING:
        transition = Transition(
            ti.task_id,
            ti.state,
            T.FAILED,
            Cause.TIMED_OUT,
            ti.version,
            {"ended_at": now, "reason": reason},
        )
        return Decision.accept(transition, reason)
    if ti.state not in (T.QUEUED, T.RUNNING):
        return Decision.ignore(f"task is {ti.state.value}")
    # The job runs on past its deadline until cancelled: the change hands it over.
    changes: dict[str, object] = {"ended_at": now, "reason": reason, **job_left_live(ti)}
    if has_tries_left(policy, attempt(ti)):
        delay = retry_delay(policy, attempt(ti))
        changes["next_attempt_at"] = now + delay
        return Decision.accept(
            Transition(ti.task_id, ti.state, T.UP_FOR_RETRY, Cause.RETRY, ti.version, changes),
            reason,
        )
    return Decision.accept(
        Transition(ti.task_id, ti.state, T.FAILED, Cause.TIMED_OUT, ti.version, changes), reason
    )


def looks_at_entry(place: datetime, now: datetime) -> bool:
    """Whether a reconciler pass at ``now`` reads the item whose due entry is at ``place``
    (judged from the index alone): when one of the entry's looks (``entry_looks``) fell
    within LOOK_WINDOW before ``now``.

    An entry the reconciler acts on moves or leaves (a retry started, a claim taken, a
    repaired job's end), so it is met once. What stays is a job still running: it is left
    where it is, no write, and described again at its next look. Moving its entry at
    each look cost three write units and a stream record; a day-long job's safety net
    is now 26 looks (each made by two passes: a read and a describe each) and no write."""
    return now >= place and now - entry_looks(place, now)[0] < LOOK_WINDOW


def entry_looks(place: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The last look at the entry at ``place`` at or before ``now`` (``now >= place``)
    and the next one after it. Its looks: at ``place``, RUNNING_CHECK_EVERY later, then
    after gaps that double (20, 40 minutes), RUNNING_CHECK_MAX apart at most."""
    age = now - place
    look, gap = timedelta(0), RUNNING_CHECK_EVERY
    while look + gap <= age and gap < RUNNING_CHECK_MAX:
        look, gap = look + gap, min(gap * 2, RUNNING_CHECK_MAX)
    if look + gap <= age:  # hourly from here on
        look += (age - look) // gap * gap
    return place + look, place + look + gap


def reconcile_backoff(due: datetime | None, now: datetime) -> datetime:
    """When the reconciler looks again at an item it failed to handle: after as long as
    the item has been overdue (so the waits double), within the backoff bounds."""
    overdue = now - due if due is not None else RECONCILE_BACKOFF_MIN
    return now + min(max(overdue, RECONCILE_BACKOFF_MIN), RECONCILE_BACKOFF_MAX)
