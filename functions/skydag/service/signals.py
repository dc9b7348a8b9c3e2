"""User signals: create runs of the DAGs whose ``on:`` matches, and start, restart or stop
the tasks of active runs that subscribe to the event. Subscribers come from the index of
current DAG versions (two reads, no scan); a task's own patterns are then read from its
run's pinned version. Each signal counts once per task (``engine/commands.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skydag.engine.commands import SignalKind, decide_signal, task_listens
from skydag.engine.models import DagRun, RunType, TaskInstance
from skydag.engine.states import RunState
from skydag.service.core import DagNotFound, DagPaused, Scheduler
from skydag.service.progress import TaskProgress
from skydag.service.runs import RunLifecycle
from skydag.signals.patterns import matches
from skydag.spec.models import DagSpec


class SignalRouting:
    def __init__(self, scheduler: Scheduler, runs: RunLifecycle, progress: TaskProgress) -> None:
        self.scheduler = scheduler
        self.runs = runs
        self.progress = progress

    def on_signal(self, event: Mapping[str, Any]) -> list[str]:
        """Returns what the signal did, one line per run created or task it reached."""
        source = str(event.get("source", ""))
        actions: list[str] = []
        task_subscribers: set[tuple[str, str, SignalKind]] = set()
        for sub in self.scheduler.repos.dags.subscriptions(source):
            if not matches(sub.pattern, event):
                continue
            if sub.task_id is None:
                actions.append(self._trigger(sub.dag_id, event))
            else:
                task_subscribers.add((sub.dag_id, sub.task_id, SignalKind(sub.kind)))
        for dag_id, task_id, kind in sorted(task_subscribers):
            actions.extend(self._signal_task(dag_id, task_id, kind, event))
        return actions

    def _trigger(self, dag_id: str, event: Mapping[str, Any]) -> str:
        try:
            result = self.runs.trigger(dag_id, run_type=RunType.SIGNAL, event=event)
        except DagPaused:
            return f"{dag_id}: paused, no run"
        except DagNotFound:
            return f"{dag_id}: not loaded, no run"
        verb = "created" if result.created else "already exists (duplicate event)"
        return f"{dag_id}: run {result.run.run_id} {verb}"

    def _signal_task(
        self, dag_id: str, task_id: str, kind: SignalKind, event: Mapping[str, Any]
    ) -> list[str]:
        repos = self.scheduler.repos
        record = repos.dags.find(dag_id)
        if record is None:
            return []
        actions: list[str] = []
        for run_id in sorted(record.active_runs):
            run = repos.runs.find(dag_id, run_id)
            if run is None or run.state is not RunState.RUNNING:
                continue
            spec = self.scheduler.spec(run)
            task = spec.tasks.get(task_id)
            if task is None or not task_listens(task, kind, event):
                continue
            ti = repos.tasks.find(dag_id, run_id, task_id)
            if ti is not None:
                outcome = self._apply(spec, run, ti, kind, event)
                actions.append(f"{dag_id}/{run_id}/{task_id}: {outcome}")
        return actions

    def _apply(
        self,
        spec: DagSpec,
        run: DagRun,
        ti: TaskInstance,
        kind: SignalKind,
        event: Mapping[str, Any],
    ) -> str:
        clock = self.scheduler.clock
        applied = self.scheduler.decide_and_apply(
            ti,
            lambda current: decide_signal(kind, spec, current, event, clock.now()),
            gate=self.progress.slots.gate(spec, run),
        )
        if applied.no_slot:
            if kind is SignalKind.RESTART_ON:
                return "ignored: no task slot"
            # No slot: keep the signal; the task starts when a slot frees.
            self.scheduler.repos.tasks.note_signal(applied.seen, event)
            return "signal kept; waiting for a task slot"
        if applied.task is None:
            return f"ignored: {applied.decision.reason}"
        return applied.decision.reason
