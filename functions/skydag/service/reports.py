"""What jobs say about their tries: service state-change events, what a dispatch or a
Describe call returned, and failures to dispatch. Each is judged against the task as it
is now (``decide_report``): duplicates and stale reports change nothing.

A service's event that ends a try goes on at once (``go_on``: the finish is told to the
downstream tasks, and the tasks it queues are dispatched) instead of waiting for the
finish's stream record: one Lambda hop from a job's end to the next job's start. That
record would only repeat the work, so the finish's write is marked ``unheard`` when it
has nothing else to do (engine/reactions.py) and the stream drops it; the event itself
is the backstop: an invocation that dies after the write fails, Lambda invokes it again
(twice, then its dead-letter queue, whose redrive does the same), and an event whose try
has ended already is told again as the record would tell it (idempotent: reports refuse
what they hold; a queued try is dispatched once, under its claim). A finish that leaves
a record (a deadline's timer to remove, a rule taking task events) is told by it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from skydag.engine.models import JobReport, JobStatus, TaskInstance
from skydag.engine.rules import decide_report, may_end_try
from skydag.engine.scheduler import dispatch_token
from skydag.engine.states import FINISHED_TASK_STATES
from skydag.engine.transitions import Decision, Outcome
from skydag.ports import Listened
from skydag.ports.store import TryRead, output_key, output_scope
from skydag.service.core import Scheduler
from skydag.service.jobs import Jobs
from skydag.spec.models import DagSpec
from skydag.targets.base import JobEvent, JobRef


class GoOn(Protocol):
    """What follows a finish at once (the scheduler service's: tell downstream, dispatch),
    given what was read with the try (its run and downstream tasks), if that was.
    ``alone``: the finish's write was marked ``unheard`` (no stream record follows it);
    ``again``: the finish was recorded before this event came (its redelivery, or another
    report's), and is told again as its record would tell it."""

    def __call__(
        self, ti: TaskInstance, ahead: TryRead | None, *, alone: bool = False, again: bool = False
    ) -> None: ...


# The downstream tasks to read with a try whose end is reported, by (dag, task): those
# ``GoOn`` will go on with (``TaskProgress.read_ahead``).
ReadAhead = Callable[[str, str], list[str]]
# Whether ``go_on`` tells a finish of the task to all its downstream tasks in one
# invocation (``TaskProgress.tells_whole``): a wider fan-out is told a chunk at a time, and
# its finish's stream record tells the chunks beside the invocation that told the first.
TellsWhole = Callable[[DagSpec, str], bool]
# No published output was read with the try (as opposed to None: read, nothing there).
_UNREAD = object()


class TaskReports:
    def __init__(
        self,
        scheduler: Scheduler,
        jobs: Jobs,
        go_on: GoOn | None = None,
        read_ahead: ReadAhead | None = None,
        tells_whole: TellsWhole | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.jobs = jobs
        self.go_on = go_on
        self.read_ahead = read_ahead
        self.tells_whole = tells_whole

    def on_job_report(self, report: JobReport) -> Decision:
        """Apply what a job says about one of its tries."""
        tasks = self.scheduler.repos.tasks
        ti = tasks.find(report.dag_id, report.run_id, report.instance_id)
        if ti is None:
            return Decision.reject(
                f"no task instance {report.dag_id}/{report.run_id}/{report.instance_id}"
            )
        return self.apply(ti, report)

    def on_job_event(self, event: JobEvent) -> Decision:
        """A service's state-change event, translated: find its try and apply it."""
        ti, published, ahead = self._current_try_and_output(event)
        if ti is None:
            return Decision.reject(
                f"{event.kind} job {event.job_id or event.token}: no current try of any task "
                "(an event of a replaced try, or not skydag's job)"
            )
        if event.job_id and ti.job_id and event.job_id != ti.job_id:
            return Decision.reject(
                f"{event.kind} job {event.job_id} is not the job of {'/'.join(ti.key)} "
                f"try {ti.try_number} ({ti.job_id})"
            )
        report = JobReport(
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            ti.try_number,
            event.status,
            job_id=event.job_id,
            exit_code=event.exit_code,
            reason=event.reason,
            output=event.output,
            at=event.at or self.scheduler.clock.now(),
            map_index=ti.map_index,
        )
        read_with_try = published is not _UNREAD and event.try_number == ti.try_number
        if read_with_try:
            report = replace(report, published_output=published)
        # Only here, on a service's event: a dispatch that fails for good reports through
        # ``fail`` while a finish is being told, and must not tell its own finish in turn
        # (a chain of failing dispatches would nest one call per task).
        return self.apply(ti, report, go_on=self.go_on, output_read=read_with_try, ahead=ahead)

    def current_try(self, event: JobEvent) -> TaskInstance | None:
        """The task instance whose current try the event is about, or None."""
        return self._current_try_and_output(event)[0]

    def _current_try_and_output(
        self, event: JobEvent
    ) -> tuple[TaskInstance | None, Any, TryRead | None]:
        """The task instance whose current try the event is about (or None), what the
        try's job published when it was read along (``_UNREAD`` when not), and what was
        read with them.

        An event that names its task instance is read by key (no index); one that can end
        the try and names it too has the try's published output, its run and the
        downstream tasks its finish goes on with (``read_ahead``) read in the same round
        trip, the task instances eventually consistently (half their read units: the try's
        last write, its job's start, is well past when the job ends). A version too old to
        name the event's try is read again consistently before the event is turned away;
        one that names it is judged by the conditional write, refused if the item moved
        on and decided again on the item as it is. Otherwise the token (or else the job
        id) is looked up in the indexes."""
        tasks = self.scheduler.repos.tasks
        if event.task_key is not None:
            published: Any = _UNREAD
            ahead: TryRead | None = None
            if event.try_number is not None and event.status is not JobStatus.RUNNING:
                dag_id, _run_id, instance_id = event.task_key
                downstream = self.read_ahead(dag_id, instance_id) if self.read_ahead else []
                ahead = tasks.get_try_with_run(
                    *event.task_key, event.try_number, downstream, instances_consistent=False
                )
                ti, published = ahead.task, ahead.published
                if not _names_its_try(ti, event):
                    ti = tasks.find(*event.task_key)
                    ahead = replace(ahead, task=ti)
            else:
                ti = tasks.find(*event.task_key)
            if ti is None or not _names_its_try(ti, event):
                return None, _UNREAD, None  # another try's event (an older one, or a restart's)
            return ti, published, ahead
        ti = tasks.find_by_token(event.token) if event.token else None
        if ti is None and event.job_id:
            ti = tasks.find_by_job_id(event.job_id)
        return ti, _UNREAD, None

    def apply(
        self,
        ti: TaskInstance,
        report: JobReport,
        go_on: GoOn | None = None,
        *,
        output_read: bool = False,
        ahead: TryRead | None = None,
        listened: Listened | None = None,
    ) -> Decision:
        """``output_read``: ``report.published_output`` was read with the try (None there
        means nothing was published), so it is not read again; ``ahead``: what was read
        with the try, for ``go_on``; ``listened``: who takes task events, as read before
        a target's call this report follows (``Scheduler.read_listeners``)."""
        if not output_read and report.published_output is None and may_end_try(ti, report):
            report = replace(report, published_output=self.published_output(report))
        spec = self.scheduler.spec_of_task(ti)
        policy = spec.effective_policy(ti.task_id)
        clock = self.scheduler.clock
        whole = self.tells_whole is None or self.tells_whole(spec, ti.task_id)
        applied = self.scheduler.decide_and_apply(
            ti,
            lambda current: decide_report(current, report, policy, clock.now()),
            tells_finish=go_on is not None and whole,
            listened=listened,
        )
        decision = applied.decision
        finished = applied.task
        if go_on is not None and finished is not None and finished.state in FINISHED_TASK_STATES:
            go_on(finished, ahead, alone=applied.unheard)
        elif go_on is not None and finished is None and _ended_already(applied.seen, report):
            # The event came again (Lambda retries an invocation that failed, maybe after
            # the finish's write and before its telling, whose write may have left no
            # stream record: ``alone``), or the try ended otherwise first: told again.
            go_on(applied.seen, None, again=True)
        if decision.outcome is Outcome.CANCEL_JOB:
            # A job runs for a try that is over (stopped or marked while it started).
            token = dispatch_token(ti, report.try_number)
            job = JobRef(
                ti.dag_id,
                ti.run_id,
                ti.task_id,
                report.try_number,
                report.job_id,
                token,
                map_index=ti.map_index,
            )
            self.jobs.cancel(spec, job, decision.reason)
        return decision

    def published_output(self, report: JobReport) -> Any:
        """What the reported try's job published (``skydag output set``), or None. Read
        by the try's own number: what another try published is under another key."""
        found = self.scheduler.repos.state.get(
            output_scope(report.dag_id, report.run_id, report.instance_id),
            output_key(report.try_number),
        )
        return None if found is None else found[0]

    def fail(self, ti: TaskInstance, reason: str) -> Decision:
        """The try could not be dispatched and never will be: it failed (a retry may
        follow, as for any failure)."""
        report = JobReport(
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            ti.try_number,
            JobStatus.FAILED,
            reason=reason,
            at=self.scheduler.clock.now(),
            map_index=ti.map_index,
        )
        return self.on_job_report(report)


def _ended_already(ti: TaskInstance, report: JobReport) -> bool:
    """Whether the try ``report`` would end has ended already (its end is recorded)."""
    return (
        report.status is not JobStatus.RUNNING
        and report.try_number == ti.try_number
        and ti.state in FINISHED_TASK_STATES
    )


def _names_its_try(ti: TaskInstance | None, event: JobEvent) -> bool:
    """Whether ``ti`` holds the try the event is about: its dispatch token, or else its
    job id."""
    if ti is None:
        return False
    if event.token is not None:
        return ti.dispatch_token == event.token
    return event.job_id is not None and ti.job_id == event.job_id
