"""What operators ask (the CLI's commands): clear, mark, cancel, pause.

A command may be delivered twice, late, or die halfway and be delivered again. Each task
it changes records the command's id in the same write (``engine/commands.py``), so a
copy applies nothing twice; and what follows the writes (reopening the run, deciding the
cleared tasks, stopping a cancelled run's tasks) is judged on the items as they are now,
so a redelivery finishes the work of a delivery cut short.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from skydag.engine.commands import already_applied, decide_clear, decide_mark
from skydag.engine.mapping import belongs, decide_reopen, is_mapped
from skydag.engine.models import DagRun, TaskInstance, instance_key
from skydag.engine.scheduler import counts_as_failed_leaf
from skydag.engine.states import FINISHED_RUN_STATES, FINISHED_TASK_STATES, RunState, TaskState
from skydag.engine.transitions import Outcome
from skydag.ports.store import ConflictError, instance_scope
from skydag.service.core import CommandRefused, DagNotFound, Scheduler
from skydag.service.progress import TaskProgress
from skydag.service.runs import RunLifecycle
from skydag.spec.models import DagSpec

log = logging.getLogger("skydag.scheduler")

# What a clear resets besides finished tasks: a task waiting for its retry.
CLEARABLE = FINISHED_TASK_STATES | {TaskState.UP_FOR_RETRY}
# What a mark resets downstream of a finished task: the outcomes its old state caused.
DECIDED_BY_UPSTREAM = frozenset({TaskState.SKIPPED, TaskState.UPSTREAM_FAILED})
MARKABLE = frozenset({TaskState.SUCCESS, TaskState.FAILED})


class OperatorCommands:
    def __init__(self, scheduler: Scheduler, runs: RunLifecycle, progress: TaskProgress) -> None:
        self.scheduler = scheduler
        self.runs = runs
        self.progress = progress

    def clear(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        *,
        downstream: bool = False,
        reset_state: bool = False,
        command_id: str | None = None,
        map_index: int | None = None,
    ) -> list[str]:
        """Reset finished tasks to pending (with their downstream when asked) and rerun them.

        Their checkpoints (task-instance state) are kept, so a rerun resumes, unless
        ``reset_state`` discards them. Watermarks (task scope) are never touched here.
        With ``map_index``, only that instance of a mapped task (for_each) reruns."""
        run, spec = self._target(dag_id, run_id, task_id)
        if map_index is not None:
            instance = self._instance(spec, run, task_id, map_index)
            done = self._clear_instance(
                spec, run, instance, command_id=command_id, reset_state=reset_state
            )
            return [instance.instance_id] if done else []
        wanted = [task_id, *(spec.descendants(task_id) if downstream else [])]
        cleared = self._reset(
            spec, run, task_id, wanted, CLEARABLE, command_id=command_id, reset_state=reset_state
        )
        self._rerun(spec, run, wanted)
        return cleared

    def mark(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: TaskState,
        *,
        command_id: str | None = None,
        map_index: int | None = None,
    ) -> TaskInstance:
        """Set a task's outcome by hand; its running job is cancelled (from the change).

        A finished task is reset first, with the downstream tasks its old outcome
        skipped or failed, so they are decided again once the new one is known. A mapped
        task's unfinished instances get the same outcome; with ``map_index`` only that
        instance is marked (its mapped task ends when all its instances have)."""
        if state not in MARKABLE:
            raise CommandRefused("a task can be marked success or failed")
        run, spec = self._target(dag_id, run_id, task_id)
        if map_index is not None:
            return self._mark_instance(spec, run, task_id, map_index, state, command_id=command_id)
        clock, tasks = self.scheduler.clock, self.scheduler.repos.tasks
        for _ in range(2):  # at most one reset
            applied = self.scheduler.decide_and_apply(
                tasks.get(dag_id, run_id, task_id),
                lambda current: decide_mark(current, state, clock.now(), command_id),
            )
            if applied.decision.outcome is not Outcome.REJECT:
                marked = applied.task or applied.seen
                if is_mapped(spec, task_id):
                    self._mark_unfinished_instances(marked, state, command_id)
                return marked
            wanted = [task_id, *spec.descendants(task_id)]
            self._reset(spec, run, task_id, wanted, DECIDED_BY_UPSTREAM, command_id=None)
            self._rerun(spec, run, wanted, evaluate=False)
        raise CommandRefused(f"task {dag_id}/{run_id}/{task_id} changed while being marked")

    def cancel_run(self, dag_id: str, run_id: str, reason: str = "cancelled") -> DagRun:
        """End the run cancelled and stop its unfinished tasks (their jobs are cancelled
        from the changes). A cancel delivered again finishes the stops of one cut short."""
        run = self.scheduler.repos.runs.get(dag_id, run_id)
        if run.state in FINISHED_RUN_STATES and run.state is not RunState.CANCELLED:
            return run
        if run.state is not RunState.CANCELLED:
            run = self.runs.cancel(run, reason)
        if run.state is RunState.CANCELLED:
            self.scheduler.stop_unfinished(run, run.reason or reason)
        return run

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause (no new scheduled or signalled runs; queued runs wait) or unpause (queued
        runs start, oldest first, up to max_active_runs). Running runs are not touched."""
        if self.scheduler.repos.dags.find(dag_id) is None:
            raise DagNotFound(f"DAG '{dag_id}' not found")
        self.scheduler.repos.dags.set_paused(dag_id, paused)
        # The DAG's EventBridge Scheduler schedule follows (a paused DAG's ticks would be
        # harmless, schedule_tick ignores them, but they cost invocations).
        self.scheduler.timers.set_dag_schedule_enabled(dag_id, not paused)
        if not paused:
            self.runs.start_queued_runs(dag_id)

    def delete_dag(
        self, dag_id: str, *, version: int | None = None, cancel_runs: bool = False
    ) -> list[str]:
        """Retire the DAG (no current version: its signals and schedule create no runs),
        as deleting its file does; with ``cancel_runs``, cancel its unfinished runs.
        Runs, task instances and versions stay (history); a new upload revives the DAG.

        ``version``: the version the caller saw current. A command delivered after the DAG
        was uploaded again (a newer version current) is refused, and cancels nothing: the
        DAG is live again. A redelivery once it is retired completes what a delivery cut
        short left (the schedule, the emit sources, the cancels)."""
        repos = self.scheduler.repos
        record = repos.dags.find(dag_id)
        if record is None or (record.current_version is None and record.version == 0):
            raise DagNotFound(f"DAG '{dag_id}' not found")
        current = record.current_version
        if current is not None and version is not None and current != version:
            raise CommandRefused(
                f"DAG '{dag_id}' is at version {current} now, not {version}: it was uploaded "
                "again since; delete it again to retire that version"
            )
        done: list[str] = []
        if current is not None:
            repos.dags.retire(dag_id, now=self.scheduler.clock.now())
            done.append(f"retired (was version {current})")
        # Also when already retired: a redelivery completes a delivery cut short.
        repos.dags.hold_emit_sources(dag_id, [])
        # Ticks of a retired DAG create nothing (schedule_tick), but cost invocations; the
        # loader deletes the schedule when the file goes, and puts it back on an upload.
        self.scheduler.timers.set_dag_schedule_enabled(dag_id, False)
        if cancel_runs:
            for run in repos.runs.list_for_dag(dag_id):
                if run.state not in FINISHED_RUN_STATES:
                    cancelled = self.cancel_run(dag_id, run.run_id, f"DAG {dag_id} deleted")
                    done.append(f"run {cancelled.run_id} {cancelled.state.value}")
        return done or ["already retired"]

    # --- for_each: one instance of a mapped task ------------------------------------------

    def _instance(self, spec: DagSpec, run: DagRun, task_id: str, map_index: int) -> TaskInstance:
        """The instance ``map_index`` of the mapped task's current expansion."""
        if not is_mapped(spec, task_id):
            raise CommandRefused(f"task '{task_id}' has no for_each: it has no map index")
        tasks = self.scheduler.repos.tasks
        mapped = tasks.get(run.dag_id, run.run_id, task_id)
        instance = tasks.find(run.dag_id, run.run_id, instance_key(task_id, map_index))
        if instance is None or not belongs(mapped, instance):
            raise CommandRefused(
                f"task '{task_id}' of run {run.run_id} has no instance {map_index} "
                f"({mapped.map_count or 0} instances)"
            )
        return instance

    def _clear_instance(
        self,
        spec: DagSpec,
        run: DagRun,
        ti: TaskInstance,
        *,
        command_id: str | None,
        reset_state: bool = False,
        evaluate: bool = True,
    ) -> bool:
        """Rerun one finished instance: its mapped task reopens first (running again,
        its finish taken back from its downstream tasks and its run), then the instance
        returns to pending with its finish taken off the mapped task's counters.
        Whether the instance is (now or by an earlier delivery) cleared."""
        repos = self.scheduler.repos
        cleared = already_applied(ti, command_id)
        if not cleared and ti.state in CLEARABLE:
            mapped = repos.tasks.get(ti.dag_id, ti.run_id, ti.task_id)
            self._reopen_mapped(spec, run, mapped, command_id)
            if reset_state:
                repos.state.delete_scope(instance_scope(ti.dag_id, ti.run_id, ti.instance_id))
            transition = decide_clear(ti, CLEARABLE, command_id).transition
            if transition is not None:
                try:
                    repos.tasks.apply_uncounted(ti, transition)
                    cleared = True
                except ConflictError:
                    log.info("instance %s changed while being cleared", "/".join(ti.key))
        # Judged on the items as they are now: a mapped task reopened for an instance
        # that did not clear after all ends again.
        self.progress.mapping.complete_if_done(ti.dag_id, ti.run_id, ti.task_id)
        self._rerun(spec, run, [ti.task_id, ti.instance_id], evaluate=evaluate)
        return cleared

    def _reopen_mapped(
        self, spec: DagSpec, run: DagRun, mapped: TaskInstance, command_id: str | None
    ) -> None:
        """A finished mapped task runs again (one of its instances is cleared): its
        downstream tasks refuse its old finish (tombstones), its run uncounts it."""
        repos = self.scheduler.repos
        transition = decide_reopen(mapped, command_id).transition
        if transition is None:
            return
        self.progress.joins.retire(spec, mapped)
        index = spec.task_index(mapped.task_id)
        group = self.scheduler.finish_group(spec, mapped.task_id)
        repos.runs.forget_finished(run, index, group)
        try:
            repos.tasks.apply(mapped, transition)
            return
        except ConflictError:
            pass
        current = repos.tasks.find(*mapped.key)
        if current is not None and current.state in FINISHED_TASK_STATES:
            failed_leaf = counts_as_failed_leaf(spec, current.task_id, current.state)
            repos.runs.record_finished(current, index, failed_leaf=failed_leaf, group=group)
            self.progress.tell_downstream(spec, run, current)

    def _mark_instance(
        self,
        spec: DagSpec,
        run: DagRun,
        task_id: str,
        map_index: int,
        state: TaskState,
        *,
        command_id: str | None,
    ) -> TaskInstance:
        clock = self.scheduler.clock
        for _ in range(2):  # at most one reset
            instance = self._instance(spec, run, task_id, map_index)
            applied = self.scheduler.decide_and_apply(
                instance, lambda current: decide_mark(current, state, clock.now(), command_id)
            )
            if applied.decision.outcome is not Outcome.REJECT:
                return applied.task or applied.seen
            self._clear_instance(spec, run, instance, command_id=None, evaluate=False)
        raise CommandRefused(
            f"task {run.dag_id}/{run.run_id}/{task_id}[{map_index}] changed while being marked"
        )

    def _mark_unfinished_instances(
        self, mapped: TaskInstance, state: TaskState, command_id: str | None
    ) -> None:
        """A mapped task marked by hand: its unfinished instances end the same way (their
        jobs are cancelled from the changes)."""
        clock = self.scheduler.clock
        for instance in self.progress.mapping.current_instances(mapped):
            if instance.state not in FINISHED_TASK_STATES:
                self.scheduler.decide_and_apply(
                    instance,
                    lambda current: decide_mark(current, state, clock.now(), command_id),
                )

    # --- internals -------------------------------------------------------------------------

    def _target(self, dag_id: str, run_id: str, task_id: str) -> tuple[DagRun, DagSpec]:
        run = self.scheduler.repos.runs.get(dag_id, run_id)
        spec = self.scheduler.spec(run)
        if task_id not in spec.tasks:
            raise CommandRefused(
                f"task '{task_id}' is not in DAG '{dag_id}' version {run.dag_version}"
            )
        if run.state is RunState.CANCELLED:
            raise CommandRefused(f"run {dag_id}/{run_id} was cancelled; trigger a new run")
        return run, spec

    def _reset(
        self,
        spec: DagSpec,
        run: DagRun,
        task_id: str,
        wanted: Sequence[str],
        downstream_states: frozenset[TaskState],
        *,
        command_id: str | None,
        reset_state: bool = False,
    ) -> list[str]:
        """Return tasks to pending (the named one from any finished state, the others
        from ``downstream_states``) and uncount them; the ids of the tasks this command
        cleared, now or in an earlier delivery."""
        repos = self.scheduler.repos
        cleared: list[str] = []
        # Tasks whose version a tombstone moved since they were read (topological order:
        # a parent's tombstones land before its child's own reset).
        retired: dict[str, TaskInstance] = {}
        for read in repos.tasks.get_many(run.dag_id, run.run_id, list(wanted)):
            ti = retired.get(read.task_id, read)
            if already_applied(ti, command_id):
                cleared.append(ti.task_id)
                continue
            allowed = (
                CLEARABLE if ti.task_id == task_id else downstream_states | {TaskState.UP_FOR_RETRY}
            )
            if ti.state not in allowed:
                continue
            if reset_state:
                # Before the reset: a delivery cut short in between deletes them again,
                # and the task cannot have run (nothing decides it until the reset).
                repos.state.delete_scope(instance_scope(ti.dag_id, ti.run_id, ti.task_id))
            if self._reset_one(spec, run, ti, retired, allowed=allowed, command_id=command_id):
                cleared.append(ti.task_id)
        return cleared

    def _reset_one(
        self,
        spec: DagSpec,
        run: DagRun,
        ti: TaskInstance,
        retired: dict[str, TaskInstance],
        *,
        allowed: frozenset[TaskState],
        command_id: str | None,
    ) -> bool:
        repos = self.scheduler.repos
        # Tombstones first: from now on the children refuse every report of this version,
        # so a finish read before the clear cannot reach them after it.
        retired.update(self.progress.joins.retire(spec, ti))
        transition = decide_clear(ti, allowed, command_id).transition
        if transition is None:
            return False
        finished = ti.state in FINISHED_TASK_STATES
        index = spec.task_index(ti.task_id)
        group = self.scheduler.finish_group(spec, ti.task_id)
        # Uncount first: a clear retried after a crash finds the task still finished, and
        # uncounting twice is harmless (set difference). If the clear then loses a race,
        # the task is counted again as it is now, so the run can still end.
        if finished:
            repos.runs.forget_finished(run, index, group)
        try:
            repos.tasks.apply(ti, transition)
            return True
        except ConflictError:
            pass
        current = repos.tasks.find(ti.dag_id, ti.run_id, ti.task_id)
        if current is not None and current.state in FINISHED_TASK_STATES:
            if finished:
                failed_leaf = counts_as_failed_leaf(spec, current.task_id, current.state)
                repos.runs.record_finished(current, index, failed_leaf=failed_leaf, group=group)
            # Its finish stands after all: the tombstones retired it, report it again.
            self.progress.tell_downstream(spec, run, current)
        return False

    def _rerun(
        self, spec: DagSpec, run: DagRun, wanted: Sequence[str], *, evaluate: bool = True
    ) -> None:
        """What follows the resets, judged on the items as they are now (so a delivery
        cut short is finished by the next): a finished run with an unfinished task
        reopens, and the pending tasks are decided."""
        repos = self.scheduler.repos
        tasks = repos.tasks.get_many(run.dag_id, run.run_id, list(wanted))
        run = repos.runs.get(run.dag_id, run.run_id)
        reopenable = run.state in FINISHED_RUN_STATES and run.state is not RunState.CANCELLED
        if reopenable and any(ti.state not in FINISHED_TASK_STATES for ti in tasks):
            run = self.runs.reopen(spec, run)
        elif run.state is RunState.QUEUED:
            # A reopen cut short between requeueing the run and starting it.
            run = self.runs.try_start(run, spec)
        if not evaluate:
            return
        for ti in tasks:
            if ti.state in (TaskState.PENDING, TaskState.UP_FOR_RETRY):
                self.progress.evaluate(spec, run, ti)
