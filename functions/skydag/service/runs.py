"""A run's life: created (by a trigger, a schedule, a backfill, a signal), started when a
max_active_runs slot is free, ended once every task finished, reopened by a clear."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from skydag.engine.backfill import BackfillPlan, Reprocess, check_backfill_id, plan_backfill
from skydag.engine.models import DagRun, RunType
from skydag.engine.scheduler import make_run_id, new_run, run_end, run_outcome
from skydag.engine.states import FINISHED_TASK_STATES, Cause, RunState, can_transition_run
from skydag.limits import LimitError, check_run_id
from skydag.ports.store import ConflictError, RunStore
from skydag.service.core import CommandRefused, DagNotFound, DagPaused, Scheduler, settle
from skydag.spec.models import DagSpec
from skydag.spec.schedule import (
    DataInterval,
    backfill_intervals,
    due_intervals,
    parse_schedule,
)

log = logging.getLogger("skydag.scheduler")


@dataclass(frozen=True, slots=True)
class TriggerResult:
    run: DagRun
    created: bool  # False when the trigger was a duplicate of an existing run


@dataclass(frozen=True, slots=True)
class BackfillResult:
    runs: list[DagRun]  # the runs of the dates created (a redelivery: the same runs)
    skipped: tuple[DataInterval, ...]


def backfill_plan(
    spec: DagSpec,
    runs: RunStore,
    start: datetime,
    end: datetime,
    *,
    reprocess: Reprocess,
    backfill_id: str,
) -> BackfillPlan:
    """The scheduler's backfill decision on the runs as they are now; ``skydag backfill
    --dry-run`` prints the very same. ValueError (a ScheduleError for the range) says why
    a request can never be planned."""
    if spec.schedule is None:
        raise ValueError(f"DAG '{spec.dag}' has no schedule to backfill")
    if reprocess is not Reprocess.NONE:
        check_backfill_id(backfill_id, "backfill_id")
    schedule = parse_schedule(spec.schedule, spec.timezone, spec.start_date)
    intervals = backfill_intervals(schedule, start=start, end=end, start_date=spec.start_date)
    existing = runs.list_between(spec.dag, start, end) if intervals else []
    return plan_backfill(intervals, existing, reprocess, backfill_id)


class RunLifecycle:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    # --- creation ------------------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        *,
        run_type: RunType = RunType.MANUAL,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        event: Mapping[str, Any] | None = None,
        logical_date: datetime | None = None,
        data_interval: tuple[datetime, datetime] | None = None,
        backfill_limit: int | None = None,
    ) -> TriggerResult:
        """Create a run pinned to the DAG's current version; a duplicate returns the first.

        Its task instances are not written: a task never written reads as its fresh
        instance, pending (the store's, ``TaskInstanceStore``), and its first write
        inserts it. The run is written queued, then started where a slot allows
        (``try_start``, the start recording ``tasks_created``); a trigger cut short leaves
        a queued run that its redelivery starts."""
        repos = self.scheduler.repos
        record = repos.dags.find(dag_id)
        if record is None or record.current_version is None:
            raise DagNotFound(f"DAG '{dag_id}' is not loaded")
        if record.paused and run_type in (RunType.SCHEDULED, RunType.SIGNAL):
            raise DagPaused(f"DAG '{dag_id}' is paused")
        spec = repos.dags.load_spec(dag_id, record.current_version)
        now = self.scheduler.clock.now()
        event_id = str(event["id"]) if event and "id" in event else None
        if run_id is None:
            run_id = make_run_id(run_type, at=logical_date or now, event_id=event_id)
        else:
            try:
                check_run_id(run_id, "run_id")
            except LimitError as error:  # DynamoDB refuses keys over 1 KB: no retry helps
                raise CommandRefused(str(error)) from error
        planned = new_run(
            spec,
            record.current_version,
            run_id=run_id,
            run_type=run_type,
            now=now,
            conf=conf,
            logical_date=logical_date,
            data_interval=data_interval,
            trigger=event,
            backfill_limit=backfill_limit,
        )
        created = repos.runs.create(planned.run)
        run = planned.run if created else repos.runs.get(dag_id, run_id)
        if run.state is RunState.QUEUED and not run.tasks_created:
            # Also on a duplicate: a crash may have left the first attempt half done.
            run = self.try_start(run, spec, tasks_written=True)
        elif run.state is RunState.QUEUED:
            run = self.try_start(run, spec)
        if created:
            self.scheduler.emit_run_event(run)
        return TriggerResult(run, created)

    def schedule_tick(self, dag_id: str, now: datetime | None = None) -> list[DagRun]:
        """Create the runs a schedule owes by ``now`` (one, or every missed one with catchup).

        A tick may come late, twice or not at all: the runs owed are computed from the
        DAG's high-water mark, run ids are the intervals' starts (a duplicate is the same
        run), and the mark only moves forward by a conditional write.
        """
        repos = self.scheduler.repos
        now = now or self.scheduler.clock.now()
        record = repos.dags.find(dag_id)
        if record is None or record.current_version is None or record.paused:
            return []
        spec = self.scheduler.current_spec(record)
        if spec.schedule is None or spec.start_date is None:
            return []
        schedule = parse_schedule(spec.schedule, spec.timezone, spec.start_date)
        intervals = due_intervals(
            schedule,
            start_date=spec.start_date,
            end_date=spec.end_date,
            last_end=record.last_scheduled_end,
            now=now,
            catchup=spec.catchup,
        )
        runs = self._run_per_interval(dag_id, RunType.SCHEDULED, intervals)
        if intervals:
            repos.dags.advance_schedule(dag_id, record.last_scheduled_end, intervals[-1].end)
        return runs

    def backfill(
        self,
        dag_id: str,
        start: datetime,
        end: datetime,
        *,
        reprocess: Reprocess = Reprocess.NONE,
        backfill_id: str = "",
        max_active_runs: int | None = None,
    ) -> BackfillResult:
        """A run for each logical date in [start, end] that ``plan_backfill`` creates
        (judged on the runs as they are now, so a redelivery creates nothing more); beyond
        max_active_runs (and the backfill's own ``max_active_runs``) they wait queued and
        start, oldest first, as slots free."""
        plan = self.plan_backfill(dag_id, start, end, reprocess=reprocess, backfill_id=backfill_id)
        runs = [
            self.trigger(
                dag_id,
                run_type=RunType.BACKFILL,
                run_id=planned.run_id,
                logical_date=planned.interval.start,
                data_interval=(planned.interval.start, planned.interval.end),
                backfill_limit=max_active_runs,
            ).run
            for planned in plan.create
        ]
        return BackfillResult(runs, plan.skip)

    def plan_backfill(
        self,
        dag_id: str,
        start: datetime,
        end: datetime,
        *,
        reprocess: Reprocess = Reprocess.NONE,
        backfill_id: str = "",
    ) -> BackfillPlan:
        """What a backfill of [start, end] would create and skip now (reads only)."""
        record = self.scheduler.repos.dags.find(dag_id)
        if record is None or record.current_version is None:
            raise DagNotFound(f"DAG '{dag_id}' is not loaded")
        spec = self.scheduler.current_spec(record)
        try:
            return backfill_plan(
                spec,
                self.scheduler.repos.runs,
                start,
                end,
                reprocess=reprocess,
                backfill_id=backfill_id,
            )
        except ValueError as error:  # the same request never becomes valid: refused
            raise CommandRefused(str(error)) from error

    def _run_per_interval(
        self, dag_id: str, run_type: RunType, intervals: Sequence[DataInterval]
    ) -> list[DagRun]:
        """One run per interval, its id the interval's start (a duplicate is that run)."""
        return [
            self.trigger(
                dag_id,
                run_type=run_type,
                logical_date=interval.start,
                data_interval=(interval.start, interval.end),
            ).run
            for interval in intervals
        ]

    # --- slots -----------------------------------------------------------------------------

    def try_start(self, run: DagRun, spec: DagSpec, *, tasks_written: bool = False) -> DagRun:
        """Take a max_active_runs slot and start the run, or leave it queued.

        ``tasks_written``: a new run whose task instances were just written, not yet
        recorded (``tasks_created``). Its start records them in the same write, so a run
        that starts at once never enters the queued index (an entry's put and delete and a
        write spared a run); one that must wait is marked, which puts it there. Until one
        of those writes the run is found by its trigger's redelivery alone, as between its
        creation and its tasks: a start cut short after taking the slot is redelivered,
        still holds the slot and starts."""
        if run.state is not RunState.QUEUED or not (run.tasks_created or tasks_written):
            return run
        repos = self.scheduler.repos
        if not repos.dags.reserve_run_slot(
            run.dag_id, run.run_id, spec.max_active_runs, run.backfill_limit
        ):
            if tasks_written:
                repos.runs.mark_tasks_created(run)
                return replace(run, tasks_created=True)
            return run
        recorded = {"tasks_created": True} if tasks_written else {}
        try:
            return repos.runs.transition(
                run,
                RunState.RUNNING,
                Cause.DISPATCH,
                started_at=self.scheduler.clock.now(),
                reason=None,  # a reopened run waited with one
                **recorded,
            )
        except ConflictError as conflict:
            current: DagRun | None = conflict.current
            return current if current is not None else run

    def start_queued_runs(self, dag_id: str) -> None:
        """Start the DAG's queued runs, oldest first, while slots are free, and any queued
        run that already holds a slot (a start that died between taking the slot and
        starting the run). Idempotent, judged on the slots as they are now: any change
        may call it.

        A deleted (retired) DAG's queued runs still start, under the max_active_runs of
        the version they are pinned to: deleting a DAG lets the runs it accepted finish
        (``dags delete --cancel-runs`` cancels them instead)."""
        repos = self.scheduler.repos
        record = repos.dags.find(dag_id)
        if record is None or record.paused:
            return
        room: int | None = None
        if record.current_version is not None:
            room = self.scheduler.current_spec(record).max_active_runs - len(record.active_runs)
        backfills = len(record.active_backfills)
        for _, run_id in repos.runs.queued_runs(dag_id, limit=100):
            holds_slot = run_id in record.active_runs
            if room is not None and room <= 0 and not holds_slot:
                continue  # only a run holding a slot may still start
            run = repos.runs.get(dag_id, run_id)
            if not run.tasks_created:
                continue  # a trigger still under way: its redelivery starts it
            if room is None:  # retired: the limit of the version the runs are pinned to
                room = self.scheduler.spec(run).max_active_runs - len(record.active_runs)
                if room <= 0 and not holds_slot:
                    continue
            limited = run.backfill_limit is not None and not holds_slot
            if limited and backfills >= (run.backfill_limit or 0):
                continue  # its backfill's limit is reached; later runs may still start
            started = self.try_start(run, self.scheduler.spec(run))
            if not holds_slot:
                room = room - 1 if started.state is not RunState.QUEUED else 0
                backfills += 1 if limited else 0

    def reopen(self, spec: DagSpec, run: DagRun) -> DagRun:
        """A cleared task reopens its finished run: queued first, then started like any
        queued run if a max_active_runs slot is free (Airflow's clear also requeues).

        In that order because the finished run may still hold its slot, and a late
        reaction to its end frees the slot of a run that is still that end. Taking the
        slot first and reopening after left a window where the end's release freed the
        slot the run was about to run in, and a queued run started beside it (F12). Once
        the run is queued, no end's release matches it."""
        # Its counting starts anew (``finish_counts``): a finish whose record came after
        # the end was not counted, so the leaves' check counts what it finds finished.
        # And its arming: the end disarmed it, so a stamp from before the end must not
        # spare a finish's arm (``RunArming.cover``: its covered tries would have no entry).
        queued = self.scheduler.repos.runs.transition(
            run,
            RunState.QUEUED,
            Cause.CLEAR,
            ended_at=None,
            reason="waiting for a run slot",
            counts_all=False,
            counted_at=None,
        )
        return self.try_start(queued, spec)

    # --- the end ---------------------------------------------------------------------------

    def complete_if_done(self, spec: DagSpec, run: DagRun) -> None:
        """End the run once its counts say every task finished (``run_outcome``), checked
        once on the task instances: a run counting on its item counts its leaves and the
        late finishes only (``finish_counts``), and a redelivered finish that raced a clear
        may have counted a task that runs again (it is uncounted and the run goes on)."""
        verified = False
        grouped = self.scheduler.counts_in_groups(spec)

        def attempt(current: DagRun) -> None:
            nonlocal verified
            outcome = run_outcome(spec, current, grouped=grouped)
            if outcome is None or current.state is not RunState.RUNNING:
                return
            if not verified:
                verified = True
                if self._unfinished(spec, current, grouped=grouped):
                    return
            cause, reason = run_end(outcome, current.failed_leaves)
            # Every task finished: no covered try is left for the reconciler to look at,
            # so the end takes the run's due entry out (its look and write spared).
            self.scheduler.repos.runs.transition(
                current,
                outcome,
                cause,
                disarm=True,
                ended_at=self.scheduler.clock.now(),
                reason=reason,
            )

        settle(run, attempt, f"run {run.dag_id}/{run.run_id}")

    def _unfinished(self, spec: DagSpec, run: DagRun, *, grouped: bool) -> bool:
        """Whether a task of the run has not finished; one counted is uncounted."""
        repos = self.scheduler.repos
        unfinished = [
            ti
            for ti in repos.tasks.list_for_run(run.dag_id, run.run_id)
            # Instances of mapped tasks are counted on their mapped task, not on the run.
            if ti.state not in FINISHED_TASK_STATES and ti.map_index is None
        ]
        if unfinished and not grouped and not run.counts_all:
            # Its leaves are counted, not every finish: from now on each counts itself, and
            # those made already are counted here, so the full count ends the run (one read
            # of its tasks, not one a late finish).
            unfinished_ids = {ti.task_id for ti in unfinished}
            repos.runs.count_all_finishes(
                run, [spec.task_index(t) for t in spec.tasks if t not in unfinished_ids]
            )
        counted = [
            ti for ti in unfinished if grouped or spec.task_index(ti.task_id) in run.finished_idx
        ]
        for ti in counted:
            log.warning(
                "run %s/%s: %s counted finished but is %s; uncounted",
                run.dag_id,
                run.run_id,
                ti.task_id,
                ti.state.value,
            )
            group = self.scheduler.finish_group(spec, ti.task_id)
            repos.runs.forget_finished(run, spec.task_index(ti.task_id), group)
        return bool(unfinished)

    def cancel(self, run: DagRun, reason: str) -> DagRun:
        """End an unfinished run cancelled (its tasks are stopped by the caller)."""

        def attempt(current: DagRun) -> DagRun:
            if not can_transition_run(current.state, RunState.CANCELLED, Cause.STOP):
                return current
            return self.scheduler.repos.runs.transition(
                current,
                RunState.CANCELLED,
                Cause.STOP,
                ended_at=self.scheduler.clock.now(),
                reason=reason,
            )

        return settle(run, attempt, f"run {run.dag_id}/{run.run_id}")
