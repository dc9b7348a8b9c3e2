"""Mapped tasks (``for_each``) moving on: a ready mapped task expands (its for_each
rendered and judged by the engine), its instances are made from the change that expanded
it, each instance's finish is counted once on the mapped task and releases the next
instance (``max_parallel``), and the mapped task ends when every instance is counted.

Each step is judged on the items as they are now, so a redelivered change (the stream's
at-least-once delivery) repeats nothing: instances are created only where none of their
expansion exists, a finish is counted in one transaction with the instance's own mark,
and a release or an end that already happened is refused by its write's condition.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from skydag.engine.mapping import (
    belongs,
    counts_as_failed_instance,
    decide_expand,
    decide_expansion_failed,
    decide_instance_next,
    decide_mapped_finish,
    expansion_wanted,
    max_parallel,
    new_instances,
    successor,
)
from skydag.engine.models import DagRun, TaskInstance, instance_key
from skydag.engine.scheduler import decide_next, needs_condition
from skydag.engine.states import RunState, TaskState
from skydag.engine.transitions import Decision
from skydag.service.core import Gate, Scheduler
from skydag.service.jobs import Jobs
from skydag.spec.mapping import ForEachProblem, items_of
from skydag.spec.models import DagSpec
from skydag.spec.templates import TemplateRenderError, render_value

if TYPE_CHECKING:
    from skydag.service.progress import TaskProgress

log = logging.getLogger("skydag.scheduler")


class MappedTasks:
    def __init__(self, scheduler: Scheduler, jobs: Jobs, progress: TaskProgress) -> None:
        self.scheduler = scheduler
        self.jobs = jobs
        self.progress = progress

    def evaluate(
        self, spec: DagSpec, run: DagRun, ti: TaskInstance, gate: Gate
    ) -> TaskInstance | None:
        """Move a mapped task (expand it) or one of its instances (run it once released)."""
        now = self.scheduler.clock.now
        if ti.map_index is not None:
            return self.scheduler.decide_and_apply(
                ti, lambda current: decide_instance_next(spec, current, now()), gate=gate
            ).task

        # A mapped task's `when:` decides the whole task, before it expands.
        condition = self.jobs.render_condition(spec, run, ti) if needs_condition(spec, ti) else None

        def decide(current: TaskInstance) -> Decision:
            decision = decide_next(spec, current, now(), condition)
            if not expansion_wanted(decision):
                return decision
            items, problem = self.render_items(spec, run, current)
            return decide_expand(current, items, problem, now())

        return self.scheduler.decide_and_apply(ti, decide, gate=gate).task

    def render_items(
        self, spec: DagSpec, run: DagRun, mapped: TaskInstance
    ) -> tuple[list[Any] | None, str | None]:
        """The mapped task's items, or why its for_each gives none (a template error, no
        list, too many items): the reason it fails with."""
        for_each = spec.tasks[mapped.task_id].for_each
        context = self.jobs.template_context(spec, run, mapped)
        try:
            return items_of(render_value(for_each, context, "for_each")), None
        except TemplateRenderError as error:
            return None, f"template error: {error}"
        except ForEachProblem as problem:
            return None, str(problem)

    def on_expanded(self, image: TaskInstance) -> None:
        """The change that expanded a mapped task: make its instances (those of this
        expansion not made yet) and start the first ``max_parallel``."""
        repos = self.scheduler.repos
        mapped = repos.tasks.find(*image.key)
        if (
            mapped is None
            or mapped.state is not TaskState.RUNNING
            or mapped.try_number != image.try_number
            or mapped.map_count is None
        ):
            return
        run = repos.runs.get(mapped.dag_id, mapped.run_id)
        if run.state is not RunState.RUNNING:
            return
        spec = self.scheduler.spec(run)
        items, problem = self.render_items(spec, run, mapped)
        if items is None or len(items) != mapped.map_count:
            # Its upstream outputs changed between the decision and now (a clear).
            found = "no list" if items is None else f"{len(items)} items"
            self._fail(mapped, problem or f"for_each changed while expanding ({found})")
            return
        repos.tasks.create_instances(new_instances(spec, mapped, items))
        first = min(max_parallel(spec, mapped.task_id), mapped.map_count)
        heads = [instance_key(mapped.task_id, index) for index in range(first)]
        for instance in repos.tasks.get_many(run.dag_id, run.run_id, heads):
            if belongs(mapped, instance):
                self.progress.evaluate(spec, run, instance)

    def on_instance_finished(self, image: TaskInstance) -> None:
        """An instance finished: free its task slot, count it once on its mapped task,
        release the instance ``max_parallel`` places on, and end the mapped task when
        every instance is counted. A stale image (the instance moved on) does nothing."""
        repos = self.scheduler.repos
        ti = repos.tasks.find(*image.key)
        if (
            ti is None
            or ti.state != image.state
            or ti.try_number != image.try_number
            or ti.expansion != image.expansion
        ):
            return
        repos.runs.release_task_slot(ti)
        mapped = repos.tasks.find(ti.dag_id, ti.run_id, ti.task_id)
        if mapped is None or not belongs(mapped, ti):
            return
        repos.tasks.count_instance(ti, failed=counts_as_failed_instance(ti.state))
        run = repos.runs.get(ti.dag_id, ti.run_id)
        spec = self.scheduler.spec(run)
        after = successor(spec, mapped, ti)
        if after is not None and run.state is RunState.RUNNING:
            released = repos.tasks.release_instance(
                ti.dag_id, ti.run_id, instance_key(ti.task_id, after)
            )
            if released is not None and belongs(mapped, released):
                self.progress.evaluate(spec, run, released)
        self.complete_if_done(ti.dag_id, ti.run_id, ti.task_id)
        self.progress.slots.fill_free(spec, repos.runs.get(ti.dag_id, ti.run_id))

    def complete_if_done(self, dag_id: str, run_id: str, task_id: str) -> None:
        """End the mapped task once all its instances are counted (its own change then
        reports it downstream and counts it on the run, as any task's finish)."""
        mapped = self.scheduler.repos.tasks.find(dag_id, run_id, task_id)
        if mapped is None:
            return
        clock = self.scheduler.clock
        self.scheduler.decide_and_apply(
            mapped, lambda current: decide_mapped_finish(current, clock.now())
        )

    def current_instances(self, mapped: TaskInstance) -> list[TaskInstance]:
        """The instances of the mapped task's current expansion, in item order."""
        return [
            ti
            for ti in self.scheduler.repos.tasks.list_instances(
                mapped.dag_id, mapped.run_id, mapped.task_id
            )
            if belongs(mapped, ti)
        ]

    def _fail(self, mapped: TaskInstance, reason: str) -> None:
        clock = self.scheduler.clock
        log.warning("mapped task %s: %s", "/".join(mapped.key), reason)
        self.scheduler.decide_and_apply(
            mapped,
            lambda current: decide_expansion_failed(
                current, mapped.try_number, reason, clock.now()
            ),
        )
