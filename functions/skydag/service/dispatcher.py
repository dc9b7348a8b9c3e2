"""Starting a try's job: only for the current, queued try whose job is not known yet
(``why_not_dispatch``), so a stale or repeated change calls no target; the target's
idempotency token is the second line of defence, not the first."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime

from skydag.engine.models import DagRun, JobReport, JobStatus, TaskInstance
from skydag.engine.rules import DISPATCH_CHECK_AFTER
from skydag.engine.scheduler import DispatchClaim, dispatch_claim, why_not_dispatch
from skydag.engine.states import RunState
from skydag.ports.store import ConflictError
from skydag.service.core import Scheduler
from skydag.service.jobs import Jobs
from skydag.service.reports import TaskReports
from skydag.spec.templates import TemplateRenderError
from skydag.targets.base import DispatchError

log = logging.getLogger("skydag.scheduler")


class Dispatcher:
    def __init__(self, scheduler: Scheduler, jobs: Jobs, reports: TaskReports) -> None:
        self.scheduler = scheduler
        self.jobs = jobs
        self.reports = reports

    def _running_run(self, ti: TaskInstance, run: DagRun | None) -> DagRun | None:
        """The try's run (``run``, or read), None when it is not running any more; a try
        that waited for its slot leaves the throttled set."""
        repos = self.scheduler.repos
        if run is None:
            run = repos.runs.get(ti.dag_id, ti.run_id)
        if ti.instance_id in run.throttled:
            # It waited for the slot it now holds (see RunRepository.reserve_task_slot).
            repos.runs.drop_throttled(run, ti.instance_id)
        if run.state is not RunState.RUNNING:
            # Cancelled (or reopened and queued) after the intent was recorded: no job.
            log.info("not dispatching %s: run is %s", ti.key, run.state.value)
            return None
        return run

    def _current(self, image: TaskInstance, *, owner: bool) -> TaskInstance | None:
        """The try to dispatch as it is now, None when it must not be (``why_not_dispatch``)."""
        if not owner and image.claim_owned and _claim_runs(image, self.scheduler.clock.now()):
            # The invocation that wrote it starts the job: whatever the item holds now
            # (the same claim, a later one, the try moved on), this caller stands down,
            # so it is not read (dispatch_claim; a dead owner's claim runs out first).
            log.debug("not dispatching %s: its owner's claim runs", image.key)
            return None
        ti = image if owner else self.scheduler.repos.tasks.find(*image.key)
        skip = why_not_dispatch(image, ti)
        if skip is not None or ti is None:
            # DEBUG: the usual end of a → queued change whose job the invocation that
            # queued it started already (TaskProgress.report_downstream).
            log.debug("not dispatching %s: %s", image.key, skip)
            return None
        return ti

    def dispatch(
        self,
        image: TaskInstance,
        *,
        owner: bool = False,
        run: DagRun | None = None,
        later: list[Callable[[], object]] | None = None,
    ) -> None:
        """Start the try recorded in ``image`` (its intent is already stored), if it is
        still the current, queued try without a job and the caller may claim it; idempotent.

        ``owner``: the caller made the ``→ queued`` write itself and ``image`` is what it
        wrote, so the item is not read again, and the target needs not look for a job of
        an earlier call (``DispatchRequest.first_call``): the claim keeps every other
        dispatcher away for longer than the invocation lives. A change landing after the
        write makes the job's ``running`` write lose, and the job is cancelled, as when
        it lands during the call. ``run``: the run as the owner read it before its
        write (see ``TaskProgress.report_downstream``), not read again. ``later``: the
        owner's list, where the job's ``running`` write is put for it to make once its
        other tasks' jobs have started too."""
        repos = self.scheduler.repos
        ti = self._current(image, owner=owner)
        if ti is None:
            return
        run = self._running_run(ti, run if owner else None)
        if run is None:
            return
        now = self.scheduler.clock.now()
        claim = dispatch_claim(image, ti, now, owner=owner)
        # Only under the claim of its own write (an expired one may have had a caller).
        first_call = owner and claim is DispatchClaim.HELD
        if claim is DispatchClaim.EXPIRED:
            try:
                ti = repos.tasks.check_later(ti, now + DISPATCH_CHECK_AFTER)
                claim = DispatchClaim.HELD
            except ConflictError:
                claim = DispatchClaim.TAKEN
        if claim is DispatchClaim.TAKEN:
            log.info("not dispatching %s: another dispatcher claimed it", ti.key)
            return
        spec = self.scheduler.spec(run)
        try:
            request = self.jobs.dispatch_request(spec, run, ti, first_call=first_call)
        except TemplateRenderError as error:
            self.reports.fail(ti, f"template error: {error}")
            return
        target = self.scheduler.targets.target_for(spec.tasks[ti.task_id].target_kind)
        # Whether the job's ``running`` write may be marked ``unheard`` asks the bus's
        # rules, which may need listing: read now and judged on later, so that nothing but
        # that write follows the call (a failure after the call dispatches again, and
        # Lambda's asynchronous invoke has no idempotency token).
        listened = self.scheduler.read_listeners()
        try:
            result = target.dispatch(request)
        except DispatchError as error:
            if error.retryable:
                raise
            self.reports.fail(ti, f"dispatch failed: {error.reason}")
            return
        if result.report is not None:
            self.reports.apply(ti, result.report, listened=listened)
        elif result.job_id is not None:
            running = JobReport(
                ti.dag_id,
                ti.run_id,
                ti.task_id,
                ti.try_number,
                JobStatus.RUNNING,
                job_id=result.job_id,
                at=self.scheduler.clock.now(),
                map_index=ti.map_index,
            )
            if later is not None:
                later.append(functools.partial(self.reports.apply, ti, running, listened=listened))
            else:
                self.reports.apply(ti, running, listened=listened)


def _claim_runs(image: TaskInstance, now: datetime) -> bool:
    return image.check_at is not None and image.check_at > now
