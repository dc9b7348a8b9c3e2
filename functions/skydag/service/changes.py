"""Reactions to changes of runs and task instances (DynamoDB Streams records).

A record may come twice, late, or after later changes of its item: each reaction reads
the item as it is now and acts only on what still holds. Side effects that must follow a
write (dispatching a queued try, cancelling the job of a try ended from outside, setting
its timers) hang on the change itself, so they happen however the write's caller ended:
the stream redelivers the record until its reaction succeeds.
"""

from __future__ import annotations

import logging
from typing import Any

from skydag.engine.mapping import is_expanding
from skydag.engine.models import DagRun, TaskInstance
from skydag.engine.reactions import task_event_due
from skydag.engine.scheduler import (
    RunChange,
    deadline_left_behind,
    run_change,
    run_change_holds,
    start_tasks,
    timer_for,
    told_more,
)
from skydag.engine.states import FINISHED_TASK_STATES, RunState, TaskState
from skydag.service.core import Scheduler
from skydag.service.dispatcher import Dispatcher
from skydag.service.jobs import Jobs
from skydag.service.progress import TaskProgress
from skydag.service.runs import RunLifecycle

log = logging.getLogger("skydag.scheduler")


class ChangeReactions:
    def __init__(
        self,
        scheduler: Scheduler,
        runs: RunLifecycle,
        progress: TaskProgress,
        dispatcher: Dispatcher,
        jobs: Jobs,
    ) -> None:
        self.scheduler = scheduler
        self.runs = runs
        self.progress = progress
        self.dispatcher = dispatcher
        self.jobs = jobs

    def on_run_changed(self, old: DagRun | None, new: DagRun) -> None:
        change = run_change(old, new)
        if change is RunChange.NONE:
            return
        repos = self.scheduler.repos
        # The image may be a redelivery of a change a later one undid: act on the run as
        # it is now (a stale end must not free the slot of a reopened run).
        run = repos.runs.find(new.dag_id, new.run_id)
        if run is None or not run_change_holds(change, new, run):
            log.info("run %s/%s: stale %s change", new.dag_id, new.run_id, change)
            if change is RunChange.FINISHED:
                # Its first delivery may have freed the slot and died before starting the
                # queued runs; starting them is judged on the slots as they are now.
                self.runs.start_queued_runs(new.dag_id)
            return
        if change is RunChange.STARTED:
            spec = self.scheduler.spec(run)
            # A reopened run had started before (a big run's count is per done group: it
            # may show none yet).
            if run.finished_count or (old is not None and old.started_at is not None):
                # A reopened run that waited for a slot: its cleared tasks, wherever they are.
                candidates = [
                    ti
                    for ti in repos.tasks.list_for_run(run.dag_id, run.run_id)
                    if ti.state in (TaskState.PENDING, TaskState.UP_FOR_RETRY)
                ]
            else:
                candidates = repos.tasks.get_many(run.dag_id, run.run_id, start_tasks(spec))
            for ti in candidates:
                self.progress.evaluate(spec, run, ti)
            return
        if not repos.dags.release_run_slot(run):
            # A clear reopened the run since it was read: it keeps its slot.
            log.info("run %s/%s: reopened, its slot stays", run.dag_id, run.run_id)
            self.runs.start_queued_runs(run.dag_id)
            return
        if run.state is RunState.CANCELLED:
            # Also when the cancel command died after ending the run.
            self.scheduler.stop_unfinished(run, run.reason or "run cancelled")
        self.runs.start_queued_runs(run.dag_id)
        self.scheduler.emit_run_event(run)

    def on_task_changed(self, old: TaskInstance | None, new: TaskInstance) -> None:
        became = old is None or old.state != new.state or old.try_number != new.try_number
        if not became:
            if told_more(old, new):
                self.progress.go_on_telling(new, self.dispatcher.dispatch)
            return
        if new.superseded_job and (old is None or old.superseded_job != new.superseded_job):
            # First: a restarted service's old job stops before its new one starts.
            self._cancel_superseded(new)
        if new.state is TaskState.QUEUED:
            self.dispatcher.dispatch(new)
        elif new.state in FINISHED_TASK_STATES:
            # A job's end was told at once by the scheduler that handled its event.
            told_before = new.job_id is not None
            self.progress.propagate(new, self.dispatcher.dispatch, told_before=told_before)
        elif new.state is TaskState.UP_FOR_RETRY:
            self.progress.slots.release(new)
        elif new.state is TaskState.RUNNING:
            if is_expanding(old, new):
                self.progress.mapping.on_expanded(new)
            self.progress.announce_service_up(new, self.dispatcher.dispatch)
        # After the dispatch, so a timer service that fails delays no job.
        self._keep_timers(old, new)
        if task_event_due(old, new):
            self.scheduler.emit_task_event(new)

    def _keep_timers(self, old: TaskInstance | None, new: TaskInstance) -> None:
        """A retry's time or a deadline kept on time, not at the reconciler's pace."""
        timer, ended = timer_for(new), deadline_left_behind(old, new)
        if timer is not None:
            detail: dict[str, Any] = {"dag": new.dag_id, "run_id": new.run_id, "task": new.task_id}
            if new.map_index is not None:
                detail["map_index"] = new.map_index
            self.scheduler.timers.set_timer(timer.name, timer.at, detail)
        if ended is not None:
            self.scheduler.timers.delete_timer(ended)

    def _cancel_superseded(self, ti: TaskInstance) -> None:
        """Cancel the job of the try this change ended from outside (a restart, stop,
        mark or timeout). Idempotent: a redelivered change cancels a stopped job again."""
        assert ti.superseded_job is not None
        spec = self.scheduler.spec_of_task(ti)
        job = self.jobs.job_ref(spec, ti, ti.superseded_job)
        reason = ti.reason or ("restarted by a signal" if ti.state is TaskState.QUEUED else "")
        self.jobs.cancel(spec, job, reason or "its try ended")
