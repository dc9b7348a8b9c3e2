"""The reconciler's pass over the sparse due index (never a scan), and one-shot timers:
retries whose time has come, deadlines, dispatches a crash cut short, and jobs whose
events are overdue. Late or duplicate events afterwards change nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from skydag.engine.models import DagRun, JobReport, JobStatus, TaskInstance
from skydag.engine.rules import (
    RUN_QUIET,
    RUNNING_CHECK_EVERY,
    decide_timeout,
    entry_looks,
    reconcile_backoff,
)
from skydag.engine.states import RunState, TaskState
from skydag.engine.transitions import Outcome
from skydag.ports.store import ConflictError, Store, due_at, is_covered
from skydag.service.core import Scheduler
from skydag.service.dispatcher import Dispatcher
from skydag.service.jobs import Jobs
from skydag.service.progress import TaskProgress
from skydag.service.reports import TaskReports
from skydag.spec.models import DagSpec
from skydag.targets.base import DescribesMany, DispatchError, JobRef

log = logging.getLogger("skydag.scheduler")

# Reports a pass got for its page's running jobs in one call per kind, by try.
Described = dict[tuple[str, str, str], JobReport | None]


@dataclass(slots=True)
class ReconcileResult:
    """What one reconciler pass did (logged and published as metrics)."""

    retries: int = 0
    timed_out: int = 0
    redispatched: int = 0
    described: int = 0
    repaired: int = 0
    conflicts: int = 0
    failed: int = 0  # items whose handling raised: logged, and skipped for a while
    moved: int = 0  # entries found before their time, moved to it
    uncovered: int = 0  # covered tries given an entry of their own (``look_at_armed_runs``)

    @property
    def acted(self) -> int:
        return self.retries + self.timed_out + self.redispatched + self.repaired


def look_at_armed_runs(
    repos: Store,
    now: datetime,
    result: ReconcileResult,
    *,
    limit: int,
    deadline: float | None = None,
) -> None:
    """Runs whose due entry a finish's count armed (``TaskInstance.covered``) and whose
    time has come: each try the entry stands for that is still queued or running gets an
    entry of its own, at its own time (the pass over the tasks' entries then acts on those
    due), and the run's entry is taken away; a running try is uncovered once its first
    look has come (``_uncover``), the run armed until then. Unless a finish was counted on
    the run since
    it was read, or less than an invocation's life before: a try covered by the counting
    invocation may not have been written when the tasks were listed, so the run stays
    armed and is looked at again next pass (a count arms a disarmed run again).
    With ``deadline`` (a ``time.monotonic()`` value) the pass stops uncovering once it is
    reached, leaving the rest armed for the next pass: a wide run's thousands of running
    tries are uncovered over several passes, each bounded."""
    for run in repos.runs.due(now, limit):
        settled = True
        for ti in repos.tasks.list_for_run(run.dag_id, run.run_id):
            if deadline is not None and time.monotonic() >= deadline:
                return
            settled = _uncover(repos, ti, now, result) and settled
        quiet_since = now - RUN_QUIET
        # (A count the read shows after ``quiet_since`` refuses the disarm: no write then,
        # as a refused write costs its item's write units too.)
        if settled and (run.counted_at is None or run.counted_at <= quiet_since):
            repos.runs.disarm(run, quiet_since=quiet_since)


def _uncover(repos: Store, ti: TaskInstance, now: datetime, result: ReconcileResult) -> bool:
    """Give ``ti`` an entry of its own if it is covered; False when it could not be
    settled (it kept changing), or is left covered for now: a job running before its
    first look (its ``check_at``, the claim's expiry) would get an entry to be read then
    and nothing sooner, so the run's entry stands for it until then (most jobs end within
    minutes: they never pay for an entry of their own, its stream record, its removal)."""
    current: TaskInstance | None = ti
    for _ in range(3):
        if current is None or not is_covered(current):
            return True
        first_look = current.check_at
        if current.state is TaskState.RUNNING and first_look is not None and first_look > now:
            return False
        try:
            repos.tasks.uncover(current)
            result.uncovered += 1
            return True
        except ConflictError as conflict:
            current = conflict.current
    return False


class Reconciler:
    def __init__(
        self,
        scheduler: Scheduler,
        progress: TaskProgress,
        dispatcher: Dispatcher,
        reports: TaskReports,
        jobs: Jobs,
    ) -> None:
        self.scheduler = scheduler
        self.progress = progress
        self.dispatcher = dispatcher
        self.reports = reports
        self.jobs = jobs

    def reconcile(
        self,
        now: datetime | None = None,
        *,
        limit: int = 100,
        deadline: float | None = None,
    ) -> ReconcileResult:
        """One pass over what is due by ``now``, ``limit`` index entries at a time: one
        page, or with ``deadline`` (a ``time.monotonic()`` value) page after page until
        nothing new is due or the time is up, so a backlog (a wide fan-out's long jobs
        found at their claims' expiry, a burst of retries) is worked through in one pass
        rather than a page every 5 minutes. An entry met twice in a pass is left for the
        next one (what stays at the head of the index cannot hold the pass)."""
        now = now or self.scheduler.clock.now()
        result = ReconcileResult()
        # First, so that a try uncovered here whose time has come is acted on below.
        look_at_armed_runs(self.scheduler.repos, now, result, limit=limit, deadline=deadline)
        tasks = self.scheduler.repos.tasks
        seen: set[tuple[str, str, str]] = set()
        while True:
            page = tasks.due(now, limit, skip=seen)
            described = self._describe_together(page, now)
            for ti in page:
                seen.add(ti.key)
                self._reconcile_one(ti, now, result, described)
            if not page or deadline is None or time.monotonic() >= deadline:
                return result

    def _describe_together(self, page: Sequence[TaskInstance], now: datetime) -> Described:
        """The running jobs this page's looks describe, asked of their services together
        where a service takes many jobs a call (``DescribesMany``: Batch, ECS): a call per
        100 jobs, not a call and a round trip per job, so a pass over thousands of long
        jobs stays short. What is left out (a kind described one by one, a call that
        failed, a try whose spec cannot be read) is described by its own look."""
        looks: dict[str, list[tuple[TaskInstance, JobRef]]] = {}
        targets: dict[str, object] = {}
        for ti in page:
            if not _describes_running_job(ti, now):
                continue
            try:
                spec = self.scheduler.spec_of_task(ti)
                kind = spec.tasks[ti.task_id].target_kind
                if kind not in targets:
                    targets[kind] = self.scheduler.targets.target_for(kind)
                job = self.jobs.job_ref(spec, ti)
            except Exception:  # its own look meets it, logs it and backs off
                log.debug("%s: left to its own look", "/".join(ti.key), exc_info=True)
                continue
            looks.setdefault(kind, []).append((ti, job))
        described: Described = {}
        for kind, kind_looks in looks.items():
            target = targets[kind]
            if len(kind_looks) < 2 or not isinstance(target, DescribesMany):
                continue
            try:
                reports = target.describe_many([job for _, job in kind_looks])
            except Exception as error:  # each look then asks alone, each isolated
                log.warning(
                    "describing %d %s jobs together failed (%s): each look asks alone",
                    len(kind_looks),
                    kind,
                    error,
                )
                continue
            for ti, job in kind_looks:
                if job.job_id in reports:
                    described[ti.key] = reports[job.job_id]
        return described

    def _reconcile_one(
        self, ti: TaskInstance, now: datetime, result: ReconcileResult, described: Described
    ) -> None:
        tasks = self.scheduler.repos.tasks
        due = due_at(ti)
        if due is not None and due > now and ti.state is not TaskState.RUNNING:
            # Found before its time, not a running job's (whose entry stays where it is):
            # a place a backoff or a write left early. Nothing is due: move it.
            result.moved += tasks.postpone_due(ti, due)
            return
        try:
            self.act_on_due(ti, now, result, described=described)
        except ConflictError:
            result.conflicts += 1  # someone else moved it: nothing left to do
        except Exception:
            # An item that always fails must stall neither this pass nor the next ones
            # (it would stay first in the index): counted, logged, looked at later.
            result.failed += 1
            until = reconcile_backoff(due_at(ti), now)
            where = "/".join(ti.key)
            log.exception("reconciling %s (%s) failed; again at %s", where, ti.state, until)
            tasks.postpone_due(ti, until)

    def on_timer_fired(self, dag_id: str, run_id: str, task_id: str) -> bool:
        """A one-shot timer (a retry's time, a deadline) fired: act on the task if due."""
        ti = self.scheduler.repos.tasks.find(dag_id, run_id, task_id)
        if ti is None:
            return False
        result = ReconcileResult()
        self.act_on_due(ti, self.scheduler.clock.now(), result, look=False)
        return result.acted > 0

    def act_on_due(
        self,
        ti: TaskInstance,
        now: datetime,
        result: ReconcileResult,
        *,
        look: bool = True,
        described: Described | None = None,
    ) -> None:
        """Act on what is due for ``ti`` by ``now``: a retry, a timeout, an unconfirmed
        dispatch, a job to describe. ``look``: the reconciler's look at the try's entry
        (``looks_at_entry``), which describes a running job whatever its ``check_at``
        says (its entry stays where it is while it runs); not a timer's. ``described``:
        jobs the pass described together (``_describe_together``)."""
        run: DagRun | None = None
        if look and ti.state is TaskState.RUNNING and ti.dag_version:
            # A running job's look, the pass's most frequent work, reads no run: the try
            # names its DAG version, and its report is judged against the try (a read unit
            # and a round trip a look).
            spec = self.scheduler.spec_of_task(ti)
        else:
            run = self.scheduler.repos.runs.get(ti.dag_id, ti.run_id)
            spec = self.scheduler.spec(run)
        if ti.state is TaskState.UP_FOR_RETRY:
            assert run is not None
            if ti.next_attempt_at is None or ti.next_attempt_at <= now:
                result.retries += self.progress.evaluate(spec, run, ti) is not None
            return
        if ti.state not in (TaskState.WAITING, TaskState.QUEUED, TaskState.RUNNING):
            return
        if ti.timeout_at is not None and ti.timeout_at <= now:
            # The job is cancelled from the change (``superseded_job``), not from here.
            policy = spec.effective_policy(ti.task_id)
            applied = self.scheduler.decide_and_apply(
                ti, lambda current: decide_timeout(current, policy, now)
            )
            result.timed_out += applied.task is not None
            return
        if ti.state is TaskState.WAITING or ti.check_at is None:
            return  # no job to ask about (a wait, a mapped task's own try)
        if (ti.state is TaskState.RUNNING and look) or ti.check_at <= now:
            self._check_job(spec, run, ti, now, result, described=described or {})

    def _check_job(
        self,
        spec: DagSpec,
        run: DagRun | None,
        ti: TaskInstance,
        now: datetime,
        result: ReconcileResult,
        *,
        described: Described,
    ) -> None:
        """No event came for this try in time: re-attach the dispatch or describe the job
        (``run``: as read, or None for a running job's look, which reads none)."""
        tasks = self.scheduler.repos.tasks
        if run is not None and run.state is not RunState.RUNNING:
            if ti.state is not TaskState.RUNNING:  # (a running try's entry stays put)
                tasks.check_later(ti, now + RUNNING_CHECK_EVERY)
            return
        if ti.state is TaskState.QUEUED and ti.job_id is None:
            # The intent is recorded but the job id is not: dispatch again, claiming the
            # try first (its next look is moved on in the same write). The target's
            # idempotency (token) finds the job if the first call reached the service.
            result.redispatched += 1
            self.dispatcher.dispatch(ti)
            return
        if ti.key in described:
            report = described[ti.key]
        else:
            target = self.scheduler.targets.target_for(spec.tasks[ti.task_id].target_kind)
            try:
                report = target.describe(self.jobs.job_ref(spec, ti))
            except DispatchError as error:
                log.warning("could not describe %s: %s", ti.key, error.reason)
                report = None
        result.described += 1
        # A finished job repairs a lost event; "running" for a queued try records the job.
        news = report is not None and (
            report.status is not JobStatus.RUNNING or ti.state is TaskState.QUEUED
        )
        if news and report is not None and self.reports.apply(ti, report).outcome is Outcome.ACCEPT:
            result.repaired += 1
            return
        if ti.state is not TaskState.RUNNING:
            tasks.check_later(ti, now + RUNNING_CHECK_EVERY)
            return
        # A job still running: its entry stays where it is (its ``check_at``), no write,
        # and the next look (``looks_at_entry``) describes it again; unless the try's
        # timeout comes first: then the try is looked at next at its timeout (a timer
        # enforces it on time; this is the pass's backstop, never later than a look).
        timeout, place = ti.timeout_at, ti.check_at
        if timeout is None or place is None or place >= timeout:
            return
        if now < timeout < entry_looks(place, now)[1]:
            tasks.check_later(ti, timeout)


def _describes_running_job(ti: TaskInstance, now: datetime) -> bool:
    """Whether a look at ``ti`` describes its job (``act_on_due``'s way to ``_check_job``
    for a running try): a recorded job, not timed out. (Describing one more is harmless:
    a report is applied only by the look that reaches ``_check_job``.)"""
    timed_out = ti.timeout_at is not None and ti.timeout_at <= now
    return (
        ti.state is TaskState.RUNNING
        and ti.dag_version is not None
        and ti.job_id is not None
        and ti.check_at is not None
        and not timed_out
    )
