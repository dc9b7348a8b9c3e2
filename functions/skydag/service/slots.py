"""max_active_tasks: a dispatch takes a slot of its run or waits in the run's throttled
set, and a freed slot starts the tasks waiting for one."""

from __future__ import annotations

from skydag.engine.models import DagRun, FinishGroup, TaskInstance
from skydag.engine.slots import slot_pool, slots_bind, takes_slot
from skydag.engine.states import RunState, TaskState
from skydag.engine.transitions import Transition
from skydag.ports.store import Arming
from skydag.service.core import Cover, Evaluate, Gate, HandOver, Scheduler
from skydag.spec.models import DagSpec


class TaskSlots:
    def __init__(self, scheduler: Scheduler, evaluate: Evaluate) -> None:
        self.scheduler = scheduler
        self.evaluate = evaluate

    def offer(
        self,
        spec: DagSpec,
        run: DagRun,
        finished: TaskInstance,
        group: FinishGroup | None,
        arming: Arming | None = None,
    ) -> HandOver | None:
        """The finished task's slot to hand over to a downstream task its finish queues:
        when its slots bind, it has downstream tasks and, as the run was read, it still
        holds its slot (else the hand-over's conditional write would be refused, at the
        cost of a write unit). ``group``: a big run's finish tally (its count stays there)."""
        if not slots_bind(spec) or finished.instance_id not in run.active:
            return None
        if not spec.downstream(finished.task_id):
            return None
        index = None if group is not None else spec.task_index(finished.task_id)
        return HandOver(finished, index, arming)

    def gate(
        self,
        spec: DagSpec,
        run: DagRun,
        throttled: set[str] | None = None,
        handover: HandOver | None = None,
        cover: Cover | None = None,
    ) -> Gate:
        """A dispatch first takes a max_active_tasks slot, or joins the throttled set
        (noted in ``throttled``: ``run`` as read does not say so). The first to come takes
        the ``handover``'s slot if it is offered, freeing it and taking it in one write.

        The second attempt closes the race with a concurrent release: whoever frees a slot
        after we joined the set sees us in it and starts us. A try that takes no slot
        (``engine/slots.py takes_slot``: its DAG's slots cannot run out, or its shape alone
        keeps it within them) passes. ``cover``: what a covered try's ``→ queued`` write
        needs first (``Cover.before_queueing``), once it may be written."""
        runs, limit = self.scheduler.repos.runs, slot_pool(spec)

        def gate(ti: TaskInstance, transition: Transition) -> bool:
            if not take(ti, transition):
                return False
            if cover is not None:
                cover.before_queueing(transition)
            return True

        def take(ti: TaskInstance, transition: Transition) -> bool:
            if transition.dst is not TaskState.QUEUED or not takes_slot(spec, ti):
                return True
            try_number = ti.try_number + 1
            if handover is not None and not handover.tried:
                handover.tried = True
                handover.run = runs.hand_over_task_slot(
                    handover.finished,
                    ti,
                    try_number,
                    index=handover.index,
                    arming=handover.arming,
                )
                if handover.run is not None:
                    return True
            if runs.reserve_task_slot(run, ti, try_number, limit):
                return True
            runs.add_throttled(run, ti.instance_id)
            if throttled is not None:
                throttled.add(ti.instance_id)
            return runs.reserve_task_slot(run, ti, try_number, limit)

        return gate

    def release(self, ti: TaskInstance) -> None:
        """A try went up for retry: its slot goes to a task waiting for one."""
        repos = self.scheduler.repos
        if not takes_slot(self.scheduler.spec_of_task(ti), ti):
            return  # it holds none (a refused conditional write would cost a write unit)
        repos.runs.release_task_slot(ti)
        run = repos.runs.get(ti.dag_id, ti.run_id)
        self.fill_free(self.scheduler.spec(run), run)

    def fill_free(self, spec: DagSpec, run: DagRun) -> None:
        """Start throttled tasks in the free slots, and first any throttled task that holds
        a slot already: its invocation died between taking the slot and queueing it (the
        record that would have evaluated it again may be another chunk's)."""
        if not run.throttled or run.state is not RunState.RUNNING:
            return
        free = slot_pool(spec) - len(run.active)
        holding = sorted(run.throttled & run.active)
        waiting = holding + sorted(run.throttled - run.active)[: max(free, 0)]
        if not waiting:
            return
        for ti in self.scheduler.repos.tasks.get_many(run.dag_id, run.run_id, waiting):
            self.evaluate(spec, run, ti)
