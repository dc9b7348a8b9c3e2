"""One downstream task told one upstream's report and decided: in one write where the
report alone decides it, through its tally items where it is a wide join, else the report
first and then the decision from what the task holds."""

from __future__ import annotations

from dataclasses import replace

from skydag.engine.models import DagRun, TaskInstance, UpstreamReport
from skydag.engine.scheduler import (
    covered_dispatch,
    decide_next,
    owned_dispatch,
    reports_in_one_write,
    stale_report,
    told_after_a_read,
    with_report,
)
from skydag.engine.states import RunState
from skydag.ports.store import ConflictError
from skydag.service.core import Cover, Evaluate, HandOver, Scheduler
from skydag.service.joins import WideJoins
from skydag.service.slots import TaskSlots
from skydag.spec.models import DagSpec


class DownstreamTell:
    def __init__(
        self, scheduler: Scheduler, evaluate: Evaluate, slots: TaskSlots, joins: WideJoins
    ) -> None:
        self.scheduler = scheduler
        self.evaluate = evaluate
        self.slots = slots
        self.joins = joins

    def tell(
        self,
        spec: DagSpec,
        run: DagRun,
        key: tuple[str, str, str],
        upstream: tuple[str, UpstreamReport],
        current: TaskInstance | None,
        *,
        told_before: bool = False,
        owned: bool,
        covered: Cover | None = None,
        throttled: set[str],
        handover: HandOver | None = None,
    ) -> TaskInstance | None:
        """Tell one downstream task an upstream's report and decide it; returns the task
        as its transition wrote it (None: no transition written). ``current``: the task
        as just read, if it was.

        Where the report alone decides the task (``reports_in_one_write``), the task is
        read and the report written with the transition it allows, conditional on the
        version read. Otherwise, or when that write loses a race, the report is written
        (refused when stale) and the task decided from what it holds then. A wide join
        is told through its tally items (``WideJoins.tell``), its try never ``covered``:
        a slotted report makes it ``slotted`` first (``engine/slots.py``; elsewhere the
        report's own write does)."""
        if self.joins.tallied(spec, key[2]):
            if upstream[1].slotted and (current is None or not current.slotted):
                tasks = self.scheduler.repos.tasks
                current = tasks.hold_slotted(key, dag_version=run.dag_version)
                if current is None:
                    return None
            return self.joins.tell(
                spec,
                run,
                key,
                upstream,
                current,
                told_before=told_before,
                owned=owned,
                throttled=throttled,
                handover=handover,
            )
        return self._tell_direct(
            spec,
            run,
            key,
            upstream,
            current,
            owned=owned,
            covered=covered,
            throttled=throttled,
            handover=handover,
        )

    def _tell_direct(
        self,
        spec: DagSpec,
        run: DagRun,
        key: tuple[str, str, str],
        upstream: tuple[str, UpstreamReport],
        current: TaskInstance | None,
        *,
        owned: bool,
        covered: Cover | None,
        throttled: set[str],
        handover: HandOver | None,
    ) -> TaskInstance | None:
        tasks = self.scheduler.repos.tasks
        upstream_task, report = upstream
        one_write = run.state is RunState.RUNNING and reports_in_one_write(spec, key[2])
        if current is None and one_write:
            current = tasks.find(*key)
            if current is None:
                return None
        # A small join read with the run: decided on the reports it held as read.
        one_write = one_write or (
            run.state is RunState.RUNNING
            and current is not None
            and told_after_a_read(spec, key[2])
        )
        if current is not None:
            held = current.upstream.get(upstream_task)
            if stale_report(held, report):
                return None
            if held == report:
                return self.evaluate(
                    spec,
                    run,
                    current,
                    owned=owned,
                    covered=covered,
                    throttled=throttled,
                    handover=handover,
                )
            if one_write:
                told, decided = self._report_and_decide(
                    spec,
                    run,
                    current,
                    upstream,
                    owned=owned,
                    covered=covered,
                    throttled=throttled,
                    handover=handover,
                )
                if told:
                    return decided
        # (As read: a task never written is inserted by the report, at once.)
        downstream = current if current is not None else key
        updated = tasks.report_upstream(
            downstream, upstream_task, report, dag_version=run.dag_version
        )
        if updated is None:
            return None
        return self.evaluate(
            spec,
            run,
            updated,
            owned=owned,
            covered=covered,
            throttled=throttled,
            handover=handover,
        )

    def _report_and_decide(
        self,
        spec: DagSpec,
        run: DagRun,
        current: TaskInstance,
        upstream: tuple[str, UpstreamReport],
        *,
        owned: bool,
        covered: Cover | None,
        throttled: set[str],
        handover: HandOver | None,
    ) -> tuple[bool, TaskInstance | None]:
        """The report and the transition it allows in one write: (told, the task as
        written). Not told when there is no transition to write (the report goes alone),
        or when the task changed since it was read."""
        tasks = self.scheduler.repos.tasks
        candidate = with_report(current, *upstream)
        decision = decide_next(spec, candidate, self.scheduler.clock.now())
        decision = covered_dispatch(decision) if covered is not None else decision
        transition = (owned_dispatch(decision) if owned else decision).transition
        if transition is None:
            return False, None
        if upstream[1].slotted and not candidate.slotted:
            # The report makes the task slotted (engine/slots.py): before its slot is judged.
            candidate = replace(candidate, slotted=True)
            transition = replace(transition, changes={**transition.changes, "slotted": True})
        if not self.slots.gate(spec, run, throttled, handover, covered)(candidate, transition):
            # In the throttled set, as evaluating it would leave it: only the report.
            tasks.report_upstream(current, *upstream)
            return True, None
        try:
            transition = self.scheduler.unheard_if_idle(candidate, transition)
            return True, tasks.apply(candidate, transition, upstream=upstream)
        except ConflictError:
            return False, None  # the usual way judges the task as it is now
