"""The scheduler service: applies the engine's decisions through the repositories.

It reacts to four kinds of input, each bounded by the neighbourhood of what changed:
run changes and task-instance changes (DynamoDB Streams), job reports (the services'
state-change events) and timers (retries and timeouts, from the sparse due index).
A lost race is normal: every write is conditional, and on conflict the service re-reads
and decides again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from skydag.engine.models import (
    DagRecord,
    DagRun,
    JobReport,
    JobStatus,
    RunType,
    TaskInstance,
    UpstreamReport,
)
from skydag.engine.rules import (
    DISPATCH_CHECK_AFTER,
    RUNNING_CHECK_EVERY,
    decide_report,
    decide_timeout,
    reconcile_backoff,
)
from skydag.engine.scheduler import (
    RunChange,
    clear_transition,
    counts_as_failed_leaf,
    deadline_left_behind,
    decide_next,
    decide_restart,
    decide_signal_start,
    decide_stop,
    dispatch_token,
    make_run_id,
    mark_transition,
    merged_params,
    new_run,
    run_change,
    run_change_holds,
    run_end,
    run_outcome,
    start_tasks,
    timer_for,
    why_not_dispatch,
)
from skydag.engine.states import (
    FINISHED_RUN_STATES,
    FINISHED_TASK_STATES,
    Cause,
    RunState,
    TaskState,
)
from skydag.engine.transitions import Decision, Outcome, Transition
from skydag.ports import Clock, EventSink, NoTimers, Timers
from skydag.signals.patterns import matches
from skydag.spec.models import DagSpec, TaskMode, TaskSpec
from skydag.spec.schedule import backfill_intervals, due_intervals, parse_schedule
from skydag.spec.templates import TemplateRenderError, render_value
from skydag.store.errors import ConflictError, NotFound
from skydag.store.repositories import Repositories, due_at, instance_scope, task_scope
from skydag.targets.base import (
    DispatchError,
    DispatchRequest,
    JobEvent,
    JobRef,
    TargetRegistry,
)

log = logging.getLogger("skydag.scheduler")

MAX_RACE_RETRIES = 8


class DagNotFound(LookupError):
    pass


class TooManyLostRaces(ConflictError[Any]):
    """Every re-decision lost its race again: the caller's event source retries later."""


class DagPaused(RuntimeError):
    pass


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

    @property
    def acted(self) -> int:
        return self.retries + self.timed_out + self.redispatched + self.repaired


@dataclass(frozen=True, slots=True)
class TriggerResult:
    run: DagRun
    created: bool  # False when the trigger was a duplicate of an existing run


class SchedulerService:
    def __init__(
        self,
        repos: Repositories,
        targets: TargetRegistry,
        clock: Clock,
        events: EventSink,
        *,
        state_table: str | None = None,
        timers: Timers | None = None,
    ) -> None:
        self.repos = repos
        self.targets = targets
        self.clock = clock
        self.events = events
        self.timers: Timers = timers or NoTimers()
        # Told to jobs (SKYDAG_TASK_STATE_TABLE) so `skydag state` finds their state.
        self.state_table = state_table

    # --- run creation ------------------------------------------------------------------

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
    ) -> TriggerResult:
        """Create a run pinned to the DAG's current version; a duplicate returns the first."""
        record = self.repos.dags.find(dag_id)
        if record is None or record.current_version is None:
            raise DagNotFound(f"DAG '{dag_id}' is not loaded")
        if record.paused and run_type in (RunType.SCHEDULED, RunType.SIGNAL):
            raise DagPaused(f"DAG '{dag_id}' is paused")
        spec = self.repos.dags.load_spec(dag_id, record.current_version)
        now = self.clock.now()
        event_id = str(event["id"]) if event and "id" in event else None
        if run_id is None:
            moment = logical_date or now
            run_id = make_run_id(run_type, at=moment, event_id=event_id)
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
        )
        created = self.repos.runs.create(planned.run)
        run = planned.run if created else self.repos.runs.get(dag_id, run_id)
        if run.state is RunState.QUEUED:
            # Also on a duplicate: a crash may have left the first attempt half done.
            if created or not self.repos.runs.tasks_created(run):
                self.repos.tasks.put_new(planned.task_instances)
                self.repos.runs.mark_tasks_created(run)
            run = self.try_start(run, spec)
        if created:
            self._emit_run_event(run)
        return TriggerResult(run, created)

    def schedule_tick(self, dag_id: str, now: datetime | None = None) -> list[DagRun]:
        """Create the runs a schedule owes by ``now`` (one, or every missed one with catchup).

        A tick may come late, twice or not at all: the runs owed are computed from the
        DAG's high-water mark, run ids are the intervals' starts (a duplicate is the same
        run), and the mark only moves forward by a conditional write.
        """
        now = now or self.clock.now()
        record = self.repos.dags.find(dag_id)
        if record is None or record.current_version is None or record.paused:
            return []
        spec = self.repos.dags.load_spec(dag_id, record.current_version)
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
        runs = [
            self.trigger(
                dag_id,
                run_type=RunType.SCHEDULED,
                logical_date=interval.start,
                data_interval=(interval.start, interval.end),
            ).run
            for interval in intervals
        ]
        if intervals:
            self.repos.dags.advance_schedule(dag_id, record.last_scheduled_end, intervals[-1].end)
        return runs

    def backfill(self, dag_id: str, start: datetime, end: datetime) -> list[DagRun]:
        """One run per interval whose logical date is in [start, end]; beyond
        max_active_runs they wait queued and start, oldest first, as slots free."""
        record = self.repos.dags.find(dag_id)
        if record is None or record.current_version is None:
            raise DagNotFound(f"DAG '{dag_id}' is not loaded")
        spec = self.repos.dags.load_spec(dag_id, record.current_version)
        if spec.schedule is None:
            raise ValueError(f"DAG '{dag_id}' has no schedule to backfill")
        schedule = parse_schedule(spec.schedule, spec.timezone, spec.start_date)
        return [
            self.trigger(
                dag_id,
                run_type=RunType.BACKFILL,
                logical_date=interval.start,
                data_interval=(interval.start, interval.end),
            ).run
            for interval in backfill_intervals(schedule, start=start, end=end)
        ]

    def try_start(self, run: DagRun, spec: DagSpec) -> DagRun:
        """Take a max_active_runs slot and start the run, or leave it queued."""
        if run.state is not RunState.QUEUED:
            return run
        if not self.repos.dags.reserve_run_slot(run.dag_id, run.run_id, spec.max_active_runs):
            return run
        try:
            return self.repos.runs.transition(
                run, RunState.RUNNING, Cause.DISPATCH, started_at=self.clock.now()
            )
        except ConflictError as conflict:
            current: DagRun | None = conflict.current
            return current if current is not None else run

    # --- reactions to changes (DynamoDB Streams) ---------------------------------------

    def on_run_changed(self, old: DagRun | None, new: DagRun) -> None:
        change = run_change(old, new)
        if change is RunChange.NONE:
            return
        # The image may be a redelivery of a change a later one undid: act on the run as
        # it is now (a stale end must not free the slot of a reopened run).
        run = self.repos.runs.find(new.dag_id, new.run_id)
        if run is None or not run_change_holds(change, new, run):
            log.info("run %s/%s: stale %s change, nothing to do", new.dag_id, new.run_id, change)
            return
        if change is RunChange.STARTED:
            spec = self._spec(run)
            if run.finished_count:
                # A reopened run that waited for a slot: its cleared tasks, wherever they are.
                candidates = [
                    ti
                    for ti in self.repos.tasks.list_for_run(run.dag_id, run.run_id)
                    if ti.state in (TaskState.PENDING, TaskState.UP_FOR_RETRY)
                ]
            else:
                candidates = self.repos.tasks.get_many(run.dag_id, run.run_id, start_tasks(spec))
            for ti in candidates:
                self._evaluate(spec, run, ti)
        else:
            self.repos.dags.release_run_slot(run.dag_id, run.run_id)
            self._start_queued_runs(run.dag_id)
            self._emit_run_event(run)

    def on_task_changed(self, old: TaskInstance | None, new: TaskInstance) -> None:
        became = old is None or old.state != new.state or old.try_number != new.try_number
        if not became:
            return
        if new.state is TaskState.QUEUED:
            self.dispatch(new)
        elif new.state in FINISHED_TASK_STATES:
            self._propagate(new)
        elif new.state is TaskState.UP_FOR_RETRY:
            self.repos.runs.release_task_slot(new)
            run = self.repos.runs.get(new.dag_id, new.run_id)
            self._fill_free_slots(self._spec(run), run)
        elif new.state is TaskState.RUNNING:
            self._announce_service_up(new)
        # A retry's time or a deadline kept on time, not at the reconciler's pace; after
        # the dispatch, so a timer service that fails delays no job.
        timer, ended = timer_for(new), deadline_left_behind(old, new)
        if timer is not None:
            detail = {"dag": new.dag_id, "run_id": new.run_id, "task": new.task_id}
            self.timers.set_timer(timer.name, timer.at, detail)
        if ended is not None:
            self.timers.delete_timer(ended)
        if old is not None and old.state != new.state:
            # Not on creation: a run's pending tasks are no news (and events cost money).
            self._emit_task_event(new)

    # --- dispatch ------------------------------------------------------------------------

    def dispatch(self, image: TaskInstance) -> None:
        """Start the try recorded in ``image`` (its intent is already stored), if it is
        still the current, queued try without a job; idempotent."""
        ti = self.repos.tasks.find(image.dag_id, image.run_id, image.task_id)
        skip = why_not_dispatch(image, ti)
        if skip is not None or ti is None:
            log.info("not dispatching %s: %s", image.key, skip)
            return
        run = self.repos.runs.get(ti.dag_id, ti.run_id)
        if run.state is not RunState.RUNNING:
            # Cancelled (or reopened and queued) after the intent was recorded: no job.
            log.info("not dispatching %s: run is %s", ti.key, run.state.value)
            return
        spec = self._spec(run)
        task = spec.tasks[ti.task_id]
        if ti.superseded_job:
            # A restart: stop the replaced job first (idempotent when redelivered).
            old = ti.superseded_job
            self._cancel_job(
                spec,
                JobRef(
                    ti.dag_id,
                    ti.run_id,
                    ti.task_id,
                    int(old.get("try_number") or 0),
                    old.get("job_id"),
                    old.get("token"),
                ),
                "restarted by a signal",
            )
        try:
            request = self._dispatch_request(spec, run, ti)
        except TemplateRenderError as error:
            self._report_failure(ti, f"template error: {error}")
            return
        try:
            result = self.targets.target_for(task.target_kind).dispatch(request)
        except DispatchError as error:
            if error.retryable:
                raise
            self._report_failure(ti, f"dispatch failed: {error.reason}")
            return
        if result.report is not None:
            self._apply_report(ti, result.report)
        elif result.job_id is not None:
            self._apply_report(
                ti,
                JobReport(
                    ti.dag_id,
                    ti.run_id,
                    ti.task_id,
                    ti.try_number,
                    JobStatus.RUNNING,
                    job_id=result.job_id,
                    at=self.clock.now(),
                ),
            )

    def dispatch_request_for(self, run: DagRun, ti: TaskInstance) -> DispatchRequest:
        """The try's dispatch as ``dispatch`` makes it (the local cloud's service players
        read its rendered ``local`` block from here)."""
        return self._dispatch_request(self._spec(run), run, ti)

    def spec_of_run(self, run: DagRun) -> DagSpec:
        """The DAG version the run is pinned to."""
        return self._spec(run)

    def _dispatch_request(self, spec: DagSpec, run: DagRun, ti: TaskInstance) -> DispatchRequest:
        task = spec.tasks[ti.task_id]
        context = self.template_context(spec, run, ti)
        target = render_value(task.target.model_dump(by_alias=True, mode="json"), context)
        local = render_value(task.local.model_dump(mode="json"), context) if task.local else None
        assert ti.dispatch_token is not None
        return DispatchRequest(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            token=ti.dispatch_token,
            kind=task.target_kind,
            target=target,
            local=local,
            timeout=spec.effective_policy(ti.task_id).timeout,
            environment=job_environment(ti, self.state_table),
            signal=ti.signal,
        )

    def template_context(self, spec: DagSpec, run: DagRun, ti: TaskInstance) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "dag": spec.dag,  # the contract: `dag` is the id
            "run": {
                "id": run.run_id,
                "type": run.run_type.value,
                "logical_date": iso(run.logical_date),
                "data_interval_start": iso(run.data_interval_start),
                "data_interval_end": iso(run.data_interval_end),
                "conf": dict(run.conf),
            },
            "params": merged_params(spec, run),
            "trigger": dict(run.trigger or {}),
            "signal": dict(ti.signal or {}),
            "task": {"id": ti.task_id, "try_number": ti.try_number},
            "state": self._task_state(spec, ti),
            "outputs": self._upstream_outputs(spec, ti),
        }

    def _upstream_outputs(self, spec: DagSpec, ti: TaskInstance) -> dict[str, Any]:
        """``outputs.<task>``: what upstream jobs returned (Step Functions output, Lambda
        response, a wait task's signal detail). Read only when a template mentions it."""
        task = spec.tasks[ti.task_id]
        if not task.depends_on or "outputs" not in _template_text(task):
            return {}
        upstream = self.repos.tasks.get_many(ti.dag_id, ti.run_id, task.depends_on)
        return {u.task_id: u.output for u in upstream if u.output is not None}

    def _task_state(self, spec: DagSpec, ti: TaskInstance) -> dict[str, Any]:
        """The task's stored state for templates: its watermarks (task scope) overlaid by
        this task instance's checkpoints. Read only when a template mentions ``state``."""
        task = spec.tasks[ti.task_id]
        blocks = task.target.model_dump_json() + (
            task.local.model_dump_json() if task.local else ""
        )
        if "state" not in blocks:
            return {}
        merged = self.repos.state.get_all(task_scope(ti.dag_id, ti.task_id))
        merged.update(self.repos.state.get_all(instance_scope(ti.dag_id, ti.run_id, ti.task_id)))
        return merged

    def _report_failure(self, ti: TaskInstance, reason: str) -> None:
        self.on_job_report(
            JobReport(
                ti.dag_id,
                ti.run_id,
                ti.task_id,
                ti.try_number,
                JobStatus.FAILED,
                reason=reason,
                at=self.clock.now(),
            )
        )

    # --- job reports -----------------------------------------------------------------------

    def on_job_report(self, report: JobReport) -> Decision:
        """Apply what a job says about one of its tries; duplicates and stale reports are no-ops."""
        ti = self.repos.tasks.find(report.dag_id, report.run_id, report.task_id)
        if ti is None:
            return Decision.reject(
                f"no task instance {report.dag_id}/{report.run_id}/{report.task_id}"
            )
        return self._apply_report(ti, report)

    def _apply_report(self, ti: TaskInstance, report: JobReport) -> Decision:
        spec = self.repos.dags.load_spec(ti.dag_id, ti.dag_version)
        policy = spec.effective_policy(ti.task_id)
        for _ in range(MAX_RACE_RETRIES):
            decision = decide_report(ti, report, policy, self.clock.now())
            if decision.outcome is Outcome.CANCEL_JOB:
                token = dispatch_token(ti, report.try_number)
                job = JobRef(*ti.key, report.try_number, report.job_id, token)
                self._cancel_job(spec, job, decision.reason)
            if decision.outcome is not Outcome.ACCEPT or decision.transition is None:
                return decision
            try:
                self._apply(spec, ti, decision.transition)
                return decision
            except ConflictError as conflict:
                if conflict.current is None:
                    raise
                ti = conflict.current
        raise TooManyLostRaces(f"task {ti.key}: gave up after {MAX_RACE_RETRIES} lost races", ti)

    # --- timers ------------------------------------------------------------------------------

    def on_timers(self, now: datetime | None = None, limit: int = 100) -> int:
        """Act on everything due by ``now``; returns how many tasks changed."""
        return self.reconcile(now, limit=limit).acted

    def reconcile(self, now: datetime | None = None, *, limit: int = 100) -> ReconcileResult:
        """The reconciler's pass over the sparse due index (never a scan): fire retries
        whose time has come, enforce timeouts (cancelling the remote job), re-attach
        dispatches a crash cut short, and ask the services about jobs whose events are
        overdue. Late or duplicate events afterwards change nothing."""
        now = now or self.clock.now()
        result = ReconcileResult()
        for ti in self.repos.tasks.due(now, limit):
            try:
                self._act_on_due(ti, now, result)
            except ConflictError:
                result.conflicts += 1  # someone else moved it: nothing left to do
            except Exception:
                # An item that always fails must stall neither this pass nor the next ones
                # (it would stay first in the index): counted, logged, looked at later.
                result.failed += 1
                until = reconcile_backoff(due_at(ti), now)
                where = "/".join(ti.key)
                log.exception("reconciling %s (%s) failed; again at %s", where, ti.state, until)
                self.repos.tasks.postpone_due(ti, until)
        return result

    def on_timer_fired(self, dag_id: str, run_id: str, task_id: str) -> bool:
        """A one-shot timer (retry time) fired: act on that task if it is due."""
        ti = self.repos.tasks.find(dag_id, run_id, task_id)
        if ti is None:
            return False
        result = ReconcileResult()
        self._act_on_due(ti, self.clock.now(), result)
        return result.acted > 0

    def _act_on_due(self, ti: TaskInstance, now: datetime, result: ReconcileResult) -> None:
        run = self.repos.runs.get(ti.dag_id, ti.run_id)
        spec = self._spec(run)
        if ti.state is TaskState.UP_FOR_RETRY:
            if ti.next_attempt_at is None or ti.next_attempt_at <= now:
                fired = self._evaluate(spec, run, ti) is not None
                result.retries += fired
            return
        if ti.state not in (TaskState.WAITING, TaskState.QUEUED, TaskState.RUNNING):
            return
        if ti.timeout_at is not None and ti.timeout_at <= now:
            decision = decide_timeout(ti, spec.effective_policy(ti.task_id), now)
            if decision.transition is not None and self._try_apply(spec, ti, decision.transition):
                result.timed_out += 1
                self._cancel_remote(spec, ti, decision.reason)
            return
        if ti.state is not TaskState.WAITING and ti.check_at is not None and ti.check_at <= now:
            self._check_job(spec, run, ti, now, result)

    def _check_job(
        self, spec: DagSpec, run: DagRun, ti: TaskInstance, now: datetime, result: ReconcileResult
    ) -> None:
        """No event came for this try in time: re-attach the dispatch or describe the job."""
        if run.state is not RunState.RUNNING:
            self.repos.tasks.check_later(ti, now + RUNNING_CHECK_EVERY)
            return
        if ti.state is TaskState.QUEUED and ti.job_id is None:
            # The intent is recorded but the job id is not: dispatch again. The target's
            # idempotency (token) finds the job if the first call reached the service.
            result.redispatched += 1
            self.dispatch(ti)
            current = self.repos.tasks.find(ti.dag_id, ti.run_id, ti.task_id)
            if current is not None and current.state is TaskState.QUEUED:
                self.repos.tasks.check_later(current, now + DISPATCH_CHECK_AFTER)
            return
        job = self._job_ref(spec, ti)
        target = self.targets.target_for(spec.tasks[ti.task_id].target_kind)
        try:
            report = target.describe(job)
        except DispatchError as error:
            log.warning("could not describe %s: %s", ti.key, error.reason)
            report = None
        result.described += 1
        # A finished job repairs a lost event; "running" for a queued try records the job.
        if report is not None and (
            report.status is not JobStatus.RUNNING or ti.state is TaskState.QUEUED
        ):
            decision = self._apply_report(ti, report)
            if decision.outcome is Outcome.ACCEPT:
                result.repaired += 1
                return
        self.repos.tasks.check_later(ti, now + RUNNING_CHECK_EVERY)

    # --- job events and signals ---------------------------------------------------------------

    def on_job_event(self, event: JobEvent) -> Decision:
        """A service's state-change event, translated: find its try and apply it."""
        ti = self.repos.tasks.find_by_token(event.token) if event.token else None
        if ti is None and event.job_id:
            ti = self.repos.tasks.find_by_job_id(event.job_id)
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
            at=event.at or self.clock.now(),
        )
        return self._apply_report(ti, report)

    def on_signal(self, event: Mapping[str, Any]) -> list[str]:
        """A user signal: create runs of DAGs whose ``on:`` matches, and start, restart or
        stop the tasks of active runs that subscribe to it. Returns what it did.

        Subscribers come from the index of current DAG versions (two reads, no scan);
        a task's own patterns are then read from its run's pinned version."""
        source = str(event.get("source", ""))
        actions: list[str] = []
        task_subscribers: set[tuple[str, str, str]] = set()
        for sub in self.repos.dags.subscriptions(source):
            if not matches(sub.pattern, event):
                continue
            if sub.task_id is None:
                actions.append(self._trigger_by_signal(sub.dag_id, event))
            else:
                task_subscribers.add((sub.dag_id, sub.task_id, sub.kind))
        for dag_id, task_id, kind in sorted(task_subscribers):
            actions.extend(self._signal_task(dag_id, task_id, kind, event))
        return actions

    def _trigger_by_signal(self, dag_id: str, event: Mapping[str, Any]) -> str:
        try:
            result = self.trigger(dag_id, run_type=RunType.SIGNAL, event=event)
        except DagPaused:
            return f"{dag_id}: paused, no run"
        except DagNotFound:
            return f"{dag_id}: not loaded, no run"
        verb = "created" if result.created else "already exists (duplicate event)"
        return f"{dag_id}: run {result.run.run_id} {verb}"

    def _signal_task(
        self, dag_id: str, task_id: str, kind: str, event: Mapping[str, Any]
    ) -> list[str]:
        record = self.repos.dags.find(dag_id)
        if record is None:
            return []
        actions: list[str] = []
        for run_id in sorted(record.active_runs):
            run = self.repos.runs.find(dag_id, run_id)
            if run is None or run.state is not RunState.RUNNING:
                continue
            spec = self._spec(run)
            task = spec.tasks.get(task_id)
            if task is None or not _task_listens(task, kind, event):
                continue
            ti = self.repos.tasks.find(dag_id, run_id, task_id)
            if ti is not None:
                actions.append(
                    f"{dag_id}/{run_id}/{task_id}: {self._apply_signal(spec, run, ti, kind, event)}"
                )
        return actions

    def _apply_signal(
        self, spec: DagSpec, run: DagRun, ti: TaskInstance, kind: str, event: Mapping[str, Any]
    ) -> str:
        for _ in range(MAX_RACE_RETRIES):
            now = self.clock.now()
            if kind in ("start_on", "wait"):
                decision = decide_signal_start(spec, ti, event, now)
            elif kind == "restart_on":
                decision = decide_restart(spec, ti, event, now)
            else:
                decision = decide_stop(ti, f"stopped by signal {event.get('id')}", now)
            if decision.transition is None:
                return f"ignored: {decision.reason}"
            try:
                if decision.transition.dst is TaskState.QUEUED:
                    applied = self._apply_with_slot(spec, run, ti, decision, raise_conflict=True)
                    if applied is None:
                        if kind == "restart_on":
                            return "ignored: no task slot"
                        # No slot: keep the signal; the task starts when a slot frees.
                        self.repos.tasks.note_signal(ti, event)
                        return "signal kept; waiting for a task slot"
                else:
                    self._apply(spec, ti, decision.transition)
                    self._cancel_remote(spec, ti, decision.reason)
                return decision.reason
            except ConflictError as conflict:
                if conflict.current is None:
                    raise
                ti = conflict.current
        raise TooManyLostRaces(f"task {ti.key}: gave up after {MAX_RACE_RETRIES} lost races", ti)

    def _announce_service_up(self, ti: TaskInstance) -> None:
        """A service task runs: its downstream tasks may start (they depend on it being up)."""
        spec = self.repos.dags.load_spec(ti.dag_id, ti.dag_version)
        if spec.tasks[ti.task_id].mode is not TaskMode.SERVICE:
            return
        current = self.repos.tasks.find(ti.dag_id, ti.run_id, ti.task_id)
        if current is None or current.state is not TaskState.RUNNING:
            return
        self._report_downstream(spec, self.repos.runs.get(ti.dag_id, ti.run_id), current)

    # --- commands ------------------------------------------------------------------------------

    def clear(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        *,
        downstream: bool = False,
        reset_state: bool = False,
    ) -> list[str]:
        """Reset finished tasks to pending (with their downstream when asked) and rerun them.

        Their checkpoints (task-instance state) are kept, so a rerun resumes, unless
        ``reset_state`` discards them. Watermarks (task scope) are never touched here."""
        run, spec, cleared = self._reset(dag_id, run_id, task_id, downstream=downstream)
        if reset_state:
            for cleared_id in cleared:
                self.repos.state.delete_scope(instance_scope(dag_id, run_id, cleared_id))
        for ti in self.repos.tasks.get_many(dag_id, run_id, cleared):
            self._evaluate(spec, run, ti)
        return cleared

    def mark(self, dag_id: str, run_id: str, task_id: str, state: TaskState) -> TaskInstance:
        """Set a task's outcome by hand; a running job is cancelled first."""
        if state not in (TaskState.SUCCESS, TaskState.FAILED):
            raise ValueError("a task can be marked success or failed")
        for _ in range(MAX_RACE_RETRIES):
            ti = self.repos.tasks.get(dag_id, run_id, task_id)
            if ti.state is state:
                return ti
            if ti.state in FINISHED_TASK_STATES:
                # Downstream tasks skipped or upstream_failed because of the old outcome
                # are decided again once the new one is known.
                self._reset(
                    dag_id,
                    run_id,
                    task_id,
                    downstream=True,
                    downstream_states=frozenset({TaskState.SKIPPED, TaskState.UPSTREAM_FAILED}),
                )
                continue
            transition = mark_transition(ti, state, self.clock.now())
            spec = self._spec(self.repos.runs.get(dag_id, run_id))
            if self._try_apply(spec, ti, transition):
                self._cancel_remote(spec, ti, f"marked {state.value}")
                return transition.apply(ti)
        raise TooManyLostRaces(f"task {dag_id}/{run_id}/{task_id}: could not mark", None)

    def _reset(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        *,
        downstream: bool,
        downstream_states: frozenset[TaskState] = FINISHED_TASK_STATES,
    ) -> tuple[DagRun, DagSpec, list[str]]:
        """Return finished tasks to pending, uncount them, and reopen a finished run."""
        run = self.repos.runs.get(dag_id, run_id)
        spec = self._spec(run)
        if task_id not in spec.tasks:
            raise KeyError(f"task '{task_id}' is not in DAG '{dag_id}' version {run.dag_version}")
        if run.state is RunState.CANCELLED:
            raise ValueError(f"run {dag_id}/{run_id} was cancelled; trigger a new run")
        wanted = [task_id, *(spec.descendants(task_id) if downstream else [])]
        cleared: list[str] = []
        # Tasks whose version a tombstone moved since they were read (topological order:
        # a parent's tombstones land before its child's own reset).
        retired: dict[str, TaskInstance] = {}
        for read in self.repos.tasks.get_many(dag_id, run_id, wanted):
            ti = retired.get(read.task_id, read)
            allowed = FINISHED_TASK_STATES if ti.task_id == task_id else downstream_states
            if ti.state in allowed | {TaskState.UP_FOR_RETRY} and self._reset_one(
                spec, run, ti, retired
            ):
                cleared.append(ti.task_id)
        run = self.repos.runs.get(dag_id, run_id)
        if run.state in (RunState.SUCCESS, RunState.FAILED) and cleared:
            run = self._reopen(spec, run)
        return run, spec, cleared

    def _reset_one(
        self, spec: DagSpec, run: DagRun, ti: TaskInstance, retired: dict[str, TaskInstance]
    ) -> bool:
        # Tombstones first: from now on the children refuse every report of this version,
        # so a finish read before the clear cannot reach them after it.
        retired.update(self.repos.tasks.retire_upstream(ti, spec.downstream(ti.task_id)))
        transition = clear_transition(ti)
        finished = ti.state in FINISHED_TASK_STATES
        index = spec.task_index(ti.task_id)
        # Uncount first: a clear retried after a crash finds the task still finished, and
        # uncounting twice is harmless (set difference). If the clear then loses a race,
        # the task is counted again as it is now, so the run can still end.
        if finished:
            self.repos.runs.forget_finished(run, index)
        if self._try_apply(spec, ti, transition):
            return True
        current = self.repos.tasks.find(ti.dag_id, ti.run_id, ti.task_id)
        if current is not None and current.state in FINISHED_TASK_STATES:
            if finished:
                failed_leaf = counts_as_failed_leaf(spec, current.task_id, current.state)
                self.repos.runs.record_finished(current, index, failed_leaf=failed_leaf)
            # Its finish stands after all: the tombstones retired it, report it again.
            self._report_downstream(spec, run, current)
        return False

    def _reopen(self, spec: DagSpec, run: DagRun) -> DagRun:
        """A cleared task reopens its finished run: running if a max_active_runs slot is
        free, otherwise queued until one is (like any new run)."""
        if self.repos.dags.reserve_run_slot(run.dag_id, run.run_id, spec.max_active_runs):
            return self.repos.runs.transition(
                run, RunState.RUNNING, Cause.CLEAR, ended_at=None, reason=None
            )
        return self.repos.runs.transition(
            run, RunState.QUEUED, Cause.CLEAR, ended_at=None, reason="waiting for a run slot"
        )

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause (no new scheduled or signalled runs; queued runs wait) or unpause (queued
        runs start, oldest first, up to max_active_runs). Running runs are not touched."""
        self.repos.dags.set_paused(dag_id, paused)
        # The DAG's EventBridge Scheduler schedule follows (a paused DAG's ticks would be
        # harmless, schedule_tick ignores them, but they cost invocations).
        self.timers.set_dag_schedule_enabled(dag_id, not paused)
        if not paused:
            self._start_queued_runs(dag_id)

    def cancel_run(self, dag_id: str, run_id: str, reason: str = "cancelled") -> DagRun:
        """Stop every unfinished task (cancelling remote jobs) and end the run cancelled."""
        run = self.repos.runs.get(dag_id, run_id)
        if run.state in FINISHED_RUN_STATES:
            return run
        spec = self._spec(run)
        run = self._transition_run(run, RunState.CANCELLED, Cause.STOP, reason)
        for ti in self.repos.tasks.list_for_run(dag_id, run_id):
            stop = decide_stop(ti, reason, self.clock.now()).transition
            if stop is not None and self._try_apply(spec, ti, stop):
                self._cancel_remote(spec, ti, reason)
        return run

    # --- internals -------------------------------------------------------------------------------

    def _spec_of(self, record: DagRecord) -> DagSpec:
        assert record.current_version is not None
        return self.repos.dags.load_spec(record.dag_id, record.current_version)

    def _spec(self, run: DagRun) -> DagSpec:
        return self.repos.dags.load_spec(run.dag_id, run.dag_version)

    def _evaluate(self, spec: DagSpec, run: DagRun, ti: TaskInstance) -> TaskInstance | None:
        """Move a pending task on under its trigger rule; lost races are re-decided."""
        for _ in range(MAX_RACE_RETRIES):
            if run.state is not RunState.RUNNING:
                return None
            decision = decide_next(spec, ti, self.clock.now())
            if decision.transition is None:
                return None
            try:
                return self._apply_with_slot(spec, run, ti, decision, raise_conflict=True)
            except ConflictError as conflict:
                if conflict.current is None:
                    raise
                ti = conflict.current
        raise TooManyLostRaces(f"task {ti.key}: gave up after {MAX_RACE_RETRIES} lost races", ti)

    def _apply_with_slot(
        self,
        spec: DagSpec,
        run: DagRun,
        ti: TaskInstance,
        decision: Decision,
        *,
        raise_conflict: bool = False,
    ) -> TaskInstance | None:
        """Apply a decision; a dispatch first takes a max_active_tasks slot or waits for one."""
        transition = decision.transition
        if transition is None:
            return None
        if transition.dst is TaskState.QUEUED and not self._reserve_slot(
            spec, run, ti, ti.try_number + 1
        ):
            return None
        try:
            return self._apply(spec, ti, transition)
        except ConflictError:
            if raise_conflict:
                raise
            return None

    def _apply(self, spec: DagSpec, ti: TaskInstance, transition: Transition) -> TaskInstance:
        return self.repos.tasks.apply(ti, transition)

    def _reserve_slot(self, spec: DagSpec, run: DagRun, ti: TaskInstance, try_number: int) -> bool:
        """Take a slot, or join the throttled set; a slot freed meanwhile is taken at once.

        The second attempt closes the race with a concurrent release: whoever frees a slot
        after we joined the set sees us in it and starts us.
        """
        runs, limit = self.repos.runs, spec.max_active_tasks
        if runs.reserve_task_slot(run, ti, try_number, limit):
            return True
        runs.add_throttled(run, ti.task_id)
        return runs.reserve_task_slot(run, ti, try_number, limit)

    def _try_apply(self, spec: DagSpec, ti: TaskInstance, transition: Transition) -> bool:
        try:
            self._apply(spec, ti, transition)
        except ConflictError:
            return False
        return True

    def _propagate(self, image: TaskInstance) -> None:
        """A task finished: tell its downstream tasks, then its run.

        The change may be a redelivery of an old one (the task was cleared and runs
        again): only the task's current finish counts. A clear landing between this
        re-read and the count below can still leave one stale count; the run's end is
        therefore checked against its task instances (``_complete_if_done``).
        """
        ti = self.repos.tasks.find(image.dag_id, image.run_id, image.task_id)
        if ti is None or ti.state != image.state or ti.try_number != image.try_number:
            return
        run = self.repos.runs.get(ti.dag_id, ti.run_id)
        spec = self._spec(run)
        self._report_downstream(spec, run, ti)
        run = self.repos.runs.record_finished(
            ti,
            spec.task_index(ti.task_id),
            failed_leaf=counts_as_failed_leaf(spec, ti.task_id, ti.state),
        )
        self._fill_free_slots(spec, run)
        self._complete_if_done(spec, run)

    def _report_downstream(self, spec: DagSpec, run: DagRun, ti: TaskInstance) -> None:
        """Tell each downstream task this task's state, and evaluate the ones it changed."""
        report = UpstreamReport(ti.state, ti.version)
        for child in spec.downstream(ti.task_id):
            updated = self.repos.tasks.report_upstream(
                (ti.dag_id, ti.run_id, child), ti.task_id, report
            )
            if updated is not None:
                self._evaluate(spec, run, updated)

    def _fill_free_slots(self, spec: DagSpec, run: DagRun) -> None:
        free = spec.max_active_tasks - len(run.active)
        if free <= 0 or not run.throttled or run.state is not RunState.RUNNING:
            return
        waiting = sorted(run.throttled)[:free]
        for ti in self.repos.tasks.get_many(run.dag_id, run.run_id, waiting):
            self._evaluate(spec, run, ti)

    def _complete_if_done(self, spec: DagSpec, run: DagRun) -> None:
        verified = False
        for _ in range(MAX_RACE_RETRIES):
            outcome = run_outcome(spec, run.finished_count, run.failed_leaves)
            if outcome is None or run.state is not RunState.RUNNING:
                return
            if not verified:
                # The counters say every task finished: check it on the task instances
                # (one query, once per run end). A redelivered finish that raced a clear
                # may have counted a task that runs again; uncount it and wait for it.
                verified = True
                if self._uncount_unfinished(spec, run):
                    return
            cause, reason = run_end(outcome, run.failed_leaves)
            try:
                self.repos.runs.transition(
                    run, outcome, cause, ended_at=self.clock.now(), reason=reason
                )
                return
            except ConflictError as conflict:
                if conflict.current is None:
                    raise
                run = conflict.current

    def _uncount_unfinished(self, spec: DagSpec, run: DagRun) -> bool:
        unfinished = [
            ti
            for ti in self.repos.tasks.list_for_run(run.dag_id, run.run_id)
            if ti.state not in FINISHED_TASK_STATES
        ]
        for ti in unfinished:
            log.warning(
                "run %s/%s: %s counted finished but is %s; uncounted",
                run.dag_id,
                run.run_id,
                ti.task_id,
                ti.state.value,
            )
            self.repos.runs.forget_finished(run, spec.task_index(ti.task_id))
        return bool(unfinished)

    def _transition_run(self, run: DagRun, dst: RunState, cause: Cause, reason: str) -> DagRun:
        for _ in range(MAX_RACE_RETRIES):
            try:
                return self.repos.runs.transition(
                    run, dst, cause, ended_at=self.clock.now(), reason=reason
                )
            except ConflictError as conflict:
                if conflict.current is None or conflict.current.state in FINISHED_RUN_STATES:
                    raise
                run = conflict.current
        raise TooManyLostRaces(
            f"run {run.run_id}: gave up after {MAX_RACE_RETRIES} lost races", run
        )

    def _start_queued_runs(self, dag_id: str) -> None:
        record = self.repos.dags.find(dag_id)
        if record is None or record.paused or record.current_version is None:
            return
        room = self._spec_of(record).max_active_runs - len(record.active_runs)
        if room <= 0:
            return
        for _, run_id in self.repos.runs.queued_runs(dag_id, limit=min(room, 100)):
            run = self.repos.runs.get(dag_id, run_id)
            started = self.try_start(run, self._spec(run))
            if started.state is RunState.QUEUED:
                break

    def _cancel_remote(self, spec: DagSpec, ti: TaskInstance, reason: str) -> None:
        if ti.state not in (TaskState.QUEUED, TaskState.RUNNING):
            return
        self._cancel_job(spec, self._job_ref(spec, ti), reason)

    def _job_ref(self, spec: DagSpec, ti: TaskInstance) -> JobRef:
        """The handle on a try's job; without a job id it carries the rendered target
        block, so the target can find the job by its token where it lives."""
        target = None
        if ti.job_id is None and ti.dispatch_token is not None:
            run = self.repos.runs.find(ti.dag_id, ti.run_id)
            if run is not None:
                with contextlib.suppress(TemplateRenderError):
                    target = self._dispatch_request(spec, run, ti).target
        return JobRef(
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            ti.try_number,
            ti.job_id,
            ti.dispatch_token,
            target,
        )

    def _cancel_job(self, spec: DagSpec, job: JobRef, reason: str) -> None:
        try:
            self.targets.target_for(spec.tasks[job.task_id].target_kind).cancel(job, reason)
        except DispatchError as error:
            log.warning(
                "could not cancel %s/%s/%s try %s: %s",
                job.dag_id,
                job.run_id,
                job.task_id,
                job.try_number,
                error.reason,
            )

    def _emit_run_event(self, run: DagRun) -> None:
        self.events.put(
            "DagRun State Change",
            {
                "dag": run.dag_id,
                "run_id": run.run_id,
                "state": run.state.value,
                "reason": run.reason,
            },
        )

    def _emit_task_event(self, ti: TaskInstance) -> None:
        self.events.put(
            "Task Instance State Change",
            {
                "dag": ti.dag_id,
                "run_id": ti.run_id,
                "task": ti.task_id,
                "state": ti.state.value,
                "try_number": ti.try_number,
            },
        )


def _task_listens(task: TaskSpec, kind: str, event: Mapping[str, Any]) -> bool:
    """Whether the task, as its run's pinned version has it, subscribes to this event."""
    patterns = task.wait.on if kind == "wait" and task.wait else getattr(task, kind, None)
    return any(matches(pattern, event) for pattern in patterns or [])


def _template_text(task: TaskSpec) -> str:
    """The task's templated blocks as text: a cheap test of which context they use."""
    return task.target.model_dump_json() + (task.local.model_dump_json() if task.local else "")


def job_environment(ti: TaskInstance, state_table: str | None) -> dict[str, str]:
    """What a job learns of its identity (and where its task state lives)."""
    env = {
        "SKYDAG_DAG": ti.dag_id,
        "SKYDAG_RUN": ti.run_id,
        "SKYDAG_TASK": ti.task_id,
        "SKYDAG_TRY": str(ti.try_number),
    }
    if state_table:
        env["SKYDAG_TASK_STATE_TABLE"] = state_table
    return env


__all__ = ["DagNotFound", "DagPaused", "NotFound", "SchedulerService", "TriggerResult"]
