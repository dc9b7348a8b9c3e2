"""The scheduler service: one object the handlers call, assembled from collaborators that
each do one job around the shared decide-write-redecide core (``service/core.py``):

- ``RunLifecycle`` (runs.py): triggers, schedules, backfills, run slots, a run's end;
- ``TaskProgress`` (progress.py): trigger rules, task slots, finishes reported downstream;
- ``Dispatcher`` (dispatcher.py) and ``Jobs`` (jobs.py): a try's job started, found, cancelled;
- ``TaskReports`` (reports.py): what jobs and services say about their tries;
- ``ChangeReactions`` (changes.py): DynamoDB Streams records of runs and task instances;
- ``Reconciler`` (reconciler.py): the due index and one-shot timers;
- ``SignalRouting`` (signals.py): user signals; ``OperatorCommands`` (commands.py).

The decisions are the engine's; the collaborators read, write conditionally and call the
targets.
"""

from __future__ import annotations

from datetime import datetime

from skydag.engine.models import DagRun, TaskInstance
from skydag.ports import Clock, EventSink, NoTimers, Timers
from skydag.ports.store import NotFound, Store, TryRead
from skydag.service.changes import ChangeReactions
from skydag.service.commands import OperatorCommands
from skydag.service.core import (
    CommandRefused,
    DagNotFound,
    DagPaused,
    Scheduler,
    TooManyLostRaces,
)
from skydag.service.dispatcher import Dispatcher
from skydag.service.jobs import Jobs, job_environment
from skydag.service.progress import TaskProgress
from skydag.service.reconciler import Reconciler, ReconcileResult
from skydag.service.reports import TaskReports
from skydag.service.runs import RunLifecycle, TriggerResult
from skydag.service.signals import SignalRouting
from skydag.spec.models import DagSpec
from skydag.targets.base import DispatchRequest, TargetRegistry


class SchedulerService:
    def __init__(
        self,
        repos: Store,
        targets: TargetRegistry,
        clock: Clock,
        events: EventSink,
        *,
        state_table: str | None = None,
        timers: Timers | None = None,
    ) -> None:
        self.scheduler = Scheduler(repos, targets, clock, events, timers or NoTimers(), state_table)
        self.jobs = Jobs(self.scheduler)
        self.runs = RunLifecycle(self.scheduler)
        self.progress = TaskProgress(self.scheduler, self.runs, self.jobs)
        self.reports = TaskReports(
            self.scheduler,
            self.jobs,
            go_on=self._finished,
            read_ahead=self.progress.read_ahead,
            tells_whole=self.progress.tells_whole,
        )
        self.dispatcher = Dispatcher(self.scheduler, self.jobs, self.reports)
        self.changes = ChangeReactions(
            self.scheduler, self.runs, self.progress, self.dispatcher, self.jobs
        )
        self.reconciler = Reconciler(
            self.scheduler, self.progress, self.dispatcher, self.reports, self.jobs
        )
        self.signals = SignalRouting(self.scheduler, self.runs, self.progress)
        self.commands = OperatorCommands(self.scheduler, self.runs, self.progress)
        # What the handlers, the router and the local cloud call, each from its owner.
        self.trigger = self.runs.trigger
        self.schedule_tick = self.runs.schedule_tick
        self.backfill = self.runs.backfill
        self.try_start = self.runs.try_start
        self.on_run_changed = self.changes.on_run_changed
        self.on_task_changed = self.changes.on_task_changed
        self.dispatch = self.dispatcher.dispatch
        self.template_context = self.jobs.template_context
        self.on_job_report = self.reports.on_job_report
        self.on_job_event = self.reports.on_job_event
        self.reconcile = self.reconciler.reconcile
        self.on_timer_fired = self.reconciler.on_timer_fired
        self.on_signal = self.signals.on_signal
        self.clear = self.commands.clear
        self.mark = self.commands.mark
        self.cancel_run = self.commands.cancel_run
        self.set_paused = self.commands.set_paused
        self.delete_dag = self.commands.delete_dag

    def _finished(
        self, ti: TaskInstance, ahead: TryRead | None, *, alone: bool = False, again: bool = False
    ) -> None:
        """A service's event ended a try: tell its downstream tasks and dispatch the ones
        that queue now, instead of the finish's stream record (``reports.py``). The
        dispatcher is looked up at the call: the local cloud wraps its ``dispatch``.
        ``ti`` is the finish as this invocation just wrote it: not read again; ``ahead``:
        its run and downstream tasks, read with the try; ``alone``: no stream record
        follows the finish's write; ``again``: the finish was recorded before (``ti`` as
        read), told again as its stream record tells it."""
        if again:
            self.progress.propagate(ti, self.dispatcher.dispatch, told_before=True)
            return
        self.progress.propagate(
            ti, self.dispatcher.dispatch, written=True, ahead=ahead, alone=alone
        )

    # --- the ports (tests swap targets and timers) ------------------------------------------

    @property
    def repos(self) -> Store:
        return self.scheduler.repos

    @property
    def clock(self) -> Clock:
        return self.scheduler.clock

    @property
    def events(self) -> EventSink:
        return self.scheduler.events

    @property
    def state_table(self) -> str | None:
        return self.scheduler.state_table

    @property
    def targets(self) -> TargetRegistry:
        return self.scheduler.targets

    @targets.setter
    def targets(self, targets: TargetRegistry) -> None:
        self.scheduler.targets = targets

    @property
    def timers(self) -> Timers:
        return self.scheduler.timers

    @timers.setter
    def timers(self, timers: Timers) -> None:
        self.scheduler.timers = timers

    def spec_of_run(self, run: DagRun) -> DagSpec:
        """The DAG version the run is pinned to."""
        return self.scheduler.spec(run)

    def dispatch_request_for(self, run: DagRun, ti: TaskInstance) -> DispatchRequest:
        """The try's dispatch as ``dispatch`` makes it (the local cloud's service players
        read its rendered ``local`` block from here)."""
        return self.jobs.dispatch_request(self.scheduler.spec(run), run, ti)

    def on_timers(self, now: datetime | None = None, limit: int = 100) -> int:
        """Act on everything due by ``now``; returns how many tasks changed."""
        return self.reconciler.reconcile(now, limit=limit).acted


__all__ = [
    "CommandRefused",
    "DagNotFound",
    "DagPaused",
    "NotFound",
    "ReconcileResult",
    "SchedulerService",
    "TooManyLostRaces",
    "TriggerResult",
    "job_environment",
]
