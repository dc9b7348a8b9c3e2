"""Tasks moving on: a pending task decided under its trigger rule, a dispatch taking a
max_active_tasks slot, a finish reported to the downstream tasks and counted on the run."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from skydag.engine.mapping import dispatches_now, is_mapped
from skydag.engine.models import DagRun, FinishGroup, TaskInstance, UpstreamReport
from skydag.engine.scheduler import (
    REPORT_CHUNK,
    counts_as_failed_leaf,
    covered_dispatch,
    decide_next,
    downstream_chunk,
    finish_counted,
    needs_condition,
    owned_dispatch,
    told_after_a_read,
)
from skydag.engine.slots import passes_slotted
from skydag.engine.states import FINISHED_TASK_STATES, RunState, TaskState
from skydag.engine.transitions import Decision
from skydag.ports.store import WITH_TRY_LIMIT, NotFound, TryRead
from skydag.service.core import Cover, Dispatch, HandOver, Prefetched, Scheduler, read_backstop
from skydag.service.covering import RunArming
from skydag.service.jobs import Jobs
from skydag.service.joins import WideJoins
from skydag.service.mapping import MappedTasks
from skydag.service.runs import RunLifecycle
from skydag.service.slots import TaskSlots
from skydag.service.telling import DownstreamTell
from skydag.spec.models import DagSpec, TaskMode


class TaskProgress:
    # Downstream tasks told per invocation (``tell_downstream``). The reliability
    # simulator makes it small, so that its fan-outs are told in chunks under faults.
    report_chunk = REPORT_CHUNK

    def __init__(self, scheduler: Scheduler, runs: RunLifecycle, jobs: Jobs) -> None:
        self.scheduler = scheduler
        self.runs = runs
        self.jobs = jobs
        self.mapping = MappedTasks(scheduler, jobs, self)
        self.joins = WideJoins(scheduler, self.evaluate)
        self.slots = TaskSlots(scheduler, self.evaluate)
        self.telling = DownstreamTell(scheduler, self.evaluate, self.slots, self.joins)
        self.arming = RunArming(scheduler)

    def evaluate(
        self,
        spec: DagSpec,
        run: DagRun,
        ti: TaskInstance,
        *,
        owned: bool = False,
        covered: Cover | None = None,
        throttled: set[str] | None = None,
        handover: HandOver | None = None,
    ) -> TaskInstance | None:
        """Move a task that is not running on (trigger rule, due retry, kept signal);
        ``owned``: a try it queues is the caller's to dispatch (``owned_dispatch``);
        ``covered``: a try it queues is covered by the run's entry (``covered_dispatch``);
        ``throttled``: collects the tasks that joined the run's throttled set meanwhile;
        ``handover``: a finished upstream's slot it may take (``TaskSlots.gate``)."""
        if run.state is not RunState.RUNNING:
            return None
        if ti.map_index is not None or is_mapped(spec, ti.task_id):
            return self.mapping.evaluate(spec, run, ti, self.slots.gate(spec, run, throttled))
        gate = self.slots.gate(spec, run, throttled, handover, covered)
        clock = self.scheduler.clock
        # Rendered once, before the decide loop: a lost race re-decides with the same
        # condition (its inputs, the finished upstreams' outputs, do not change).
        condition = self.jobs.render_condition(spec, run, ti) if needs_condition(spec, ti) else None

        def decide(current: TaskInstance) -> Decision:
            decision = decide_next(spec, current, clock.now(), condition)
            decision = covered_dispatch(decision) if covered is not None else decision
            return owned_dispatch(decision) if owned else decision

        applied = self.scheduler.decide_and_apply(ti, decide, gate=gate)
        return applied.task

    def propagate(
        self,
        image: TaskInstance,
        dispatch: Dispatch | None = None,
        *,
        told_before: bool = False,
        written: bool = False,
        ahead: TryRead | None = None,
        alone: bool = False,
    ) -> None:
        """A task finished: tell its downstream tasks, then its run (``dispatch``: see
        ``report_downstream``; ``told_before``: likely told already, see there;
        ``ahead``: the run and downstream tasks read with the try, see ``read_ahead``;
        ``alone``: no stream record follows the finish's write, see ``_propagate_read``).

        The change may be a redelivery of an old one (the task was cleared and runs
        again): only the task's current finish counts, so the task is read again, unless
        ``image`` is the finish the caller has just written itself (``written``). A clear
        landing between that read (or write) and the count below can still leave one
        stale count; the run's end is therefore checked against its task instances
        (``complete_if_done``).
        """
        if image.map_index is not None:
            self.mapping.on_instance_finished(image)
            return
        repos = self.scheduler.repos
        # The run, the task (unless just written) and its first downstream chunk in one
        # read: the DAG version the task carries names them, so none waits for another.
        # A big run's count is in the finish tally of the task's group: read along when
        # the finish was likely counted before, so that it is found counted without a
        # write (a first count need not look: adding to a set is idempotent).
        first: list[str] = []
        group: FinishGroup | None = None
        if image.dag_version:  # (an image from before the version was copied: no hint)
            spec = self.scheduler.spec_of_task(image)
            first = self.told_first(spec, image, told_before=told_before)
            group = self.scheduler.finish_group(spec, image.task_id)
        # Read with the try before its finish was written (the scheduler's way): unless
        # the version was guessed wrong (the tasks wanted were not asked), no read here.
        if (
            written
            and not told_before
            and ahead is not None
            and ahead.run is not None
            and ahead.asked.issuperset(first)
        ):
            self._propagate_read(
                image, dispatch, ahead.run, ahead.asked, ahead.downstream, read_before=alone
            )
            return
        wanted = first if written else [image.instance_id, *first]
        finish_group = group if told_before else None
        if told_before and not written:  # the record of a finish told: the backstop
            run, read = read_backstop(repos.tasks, image, wanted, finish_group)
        else:
            run, read = repos.tasks.get_with_run(image.dag_id, image.run_id, wanted, finish_group)
        ti = image if written else read.get(image.instance_id)
        if ti is None or ti.state != image.state or ti.try_number != image.try_number:
            return
        if run is None:
            raise NotFound(f"run {image.dag_id}/{image.run_id} not found")
        self._propagate_read(ti, dispatch, run, frozenset(first), read, told_before=told_before)

    def _propagate_read(
        self,
        ti: TaskInstance,
        dispatch: Dispatch | None,
        run: DagRun,
        asked: frozenset[str],
        read: Mapping[str, TaskInstance],
        *,
        told_before: bool = False,
        read_before: bool = False,
    ) -> None:
        """``propagate`` once the run and the first downstream tasks (``asked``) are read.
        ``read_before``: ``run`` was read before the finish's write, and no stream record
        follows that write: a finish it says is not counted is judged again on the run
        read after the write, as the record would (a leaf counted meanwhile may make it
        the run's last: docs/guarantees.md "A run's end, with only its leaves counted"),
        unless its telling ``started`` a downstream task (left it unfinished by a write
        of its own): that task's finish comes later, and is judged then."""
        repos = self.scheduler.repos
        spec = self.scheduler.spec(run)
        prefetched = Prefetched(asked, read)
        # (As the run's pinned version places it: the image's version is the same one.)
        group = self.scheduler.finish_group(spec, ti.task_id)
        index = spec.task_index(ti.task_id)
        failed_leaf = counts_as_failed_leaf(spec, ti.task_id, ti.state)
        counted = finish_counted(run, ti, index, failed_leaf=failed_leaf)
        counts = not counted and self.scheduler.finish_counts(spec, run, ti)
        cover = self.arming.cover(run, ti, group, counted=counted, counts=counts)
        handover = self.slots.offer(spec, run, ti, group, self.arming.now())
        started: set[str] = set()
        told = self.tell_downstream(
            spec,
            run,
            ti,
            dispatch,
            told_before=told_before,
            prefetched=prefetched,
            handover=handover,
            cover=cover,
            started=started,
        )
        if not told:
            return  # a wide fan-out: the next chunk's delivery goes on, the last counts it
        if handover is not None and handover.run is not None:
            run = handover.run  # the slot went to a downstream task, the finish counted
        counts = self.scheduler.finish_counts(spec, run, ti)
        if (
            read_before
            and not counts
            and not started
            and not finish_counted(run, ti, index, failed_leaf=failed_leaf)
        ):
            run = repos.runs.get(ti.dag_id, ti.run_id)
            counts = self.scheduler.finish_counts(spec, run, ti)
        if counts and not finish_counted(run, ti, index, failed_leaf=failed_leaf):
            holds = ti.instance_id in run.active or ti.instance_id in run.throttled
            # Every count arms: one made again after a crash, for the tries covered before.
            arming = self.arming.now() if group is None else None
            recorded = repos.runs.record_finished(
                ti, index, failed_leaf=failed_leaf, group=group, release=holds, arming=arming
            )
            run = recorded or run
        if ti.instance_id in run.active and repos.runs.release_orphaned_slot(ti):
            # Still held after the count: its next try's, which that try never took.
            run = repos.runs.get(ti.dag_id, ti.run_id)
        self.slots.fill_free(spec, run)
        self.runs.complete_if_done(spec, run)

    def tells_whole(self, spec: DagSpec, task_id: str) -> bool:
        """Whether a finish of ``task_id`` is told to all its downstream tasks at once."""
        return len(spec.downstream(task_id)) <= self.report_chunk

    def told_first(self, spec: DagSpec, ti: TaskInstance, *, told_before: bool) -> list[str]:
        """The downstream tasks read with the run when ``ti``'s finish is told: those of
        its next chunk that are read anyway. All when the finish was likely told before,
        else those told after a read (``told_after_a_read``: a wide join is told by a
        conditional write, unread: reading it would charge its whole item, which grows
        with its width)."""
        children = spec.downstream(ti.task_id)
        chunk = downstream_chunk(ti, len(children), self.report_chunk)
        return [children[i] for i in chunk if told_before or told_after_a_read(spec, children[i])]

    def read_ahead(self, dag_id: str, task_id: str) -> list[str]:
        """The downstream tasks a finish of ``task_id`` will read with its run
        (``told_first``), guessed before the task is read (``Scheduler.likely_spec``):
        read with the try whose end a service reports (``TaskReports``), they and the run
        spare ``propagate`` a round trip on the way to the next dispatch."""
        spec = self.scheduler.likely_spec(dag_id)
        if spec is None or task_id not in spec.tasks:
            return []
        first = self.told_first(spec, TaskInstance(dag_id, "", task_id), told_before=False)
        # More than one read holds with the try, its output and its run: none (``propagate``
        # reads them with the run then; reading part of them here would read them twice).
        return first if len(first) <= WITH_TRY_LIMIT else []

    def tell_downstream(
        self,
        spec: DagSpec,
        run: DagRun,
        ti: TaskInstance,
        dispatch: Dispatch | None = None,
        *,
        told_before: bool = False,
        prefetched: Prefetched | None = None,
        handover: HandOver | None = None,
        cover: Cover | None = None,
        started: set[str] | None = None,
    ) -> bool:
        """Tell the downstream tasks this task's state, a bounded chunk per invocation;
        True once the last chunk is told (then the caller goes on). ``prefetched``: the
        downstream tasks as read with the run (used for the first chunk only);
        ``handover``: this task's slot, for the first task its finish queues; ``cover``:
        the tries this invocation queues are covered (``service/covering.py``);
        ``started``: collects the tasks a write of this telling left unfinished.

        A wider fan-out records how many were told on the task's item (no version bump);
        that write's stream record tells the next chunk, so no invocation does work that
        grows with the fan-out, and a crash midway repeats one chunk (reports are
        idempotent). The usual task, with fewer downstream tasks than a chunk, writes no
        count at all."""
        children = spec.downstream(ti.task_id)
        tasks = self.scheduler.repos.tasks
        while True:
            chunk = downstream_chunk(ti, len(children), self.report_chunk)
            told = [children[i] for i in chunk]
            if cover is not None and chunk.stop < len(children):
                self.arming.arm_chunk(ti)
            self.report_downstream(
                spec,
                run,
                ti,
                told,
                dispatch,
                told_before=told_before,
                prefetched=prefetched,
                handover=handover,
                covered=cover,
                started=started,
            )
            prefetched = None
            if chunk.stop >= len(children):
                return True
            if tasks.advance_report_cursor(ti, chunk.start, chunk.stop):
                return False
            current = tasks.find(*ti.key)
            if current is None or (current.state, current.try_number) != (ti.state, ti.try_number):
                return False  # moved on: its own change tells the downstream tasks again
            if current.reported_version == current.version and current.reported > chunk.start:
                return False  # another delivery told this chunk: its record goes on
            ti = current  # the same finish at a new version (e.g. its upstream's tombstone)

    def report_downstream(
        self,
        spec: DagSpec,
        run: DagRun,
        ti: TaskInstance,
        children: list[str],
        dispatch: Dispatch | None = None,
        *,
        told_before: bool = False,
        prefetched: Prefetched | None = None,
        handover: HandOver | None = None,
        covered: Cover | None = None,
        started: set[str] | None = None,
    ) -> None:
        """Tell these downstream tasks this task's state, and evaluate the ones it changed.

        With ``dispatch`` (the stream processor's), a task this queues is dispatched at
        once, holding the claim of its ``→ queued`` write: one Lambda hop from a job's end
        to the next job's start instead of two. That change's own stream record comes
        later on the same shard (one batch at a time), finds the job and calls nothing;
        if this invocation dies first, that record dispatches the try as before. The run
        goes with it as read here (a round trip saved per dispatch): a cancel landing
        since is as safe as one landing during the call (the job's ``running`` write
        loses, or its stop cancels the job); a task that joined the throttled set while
        it was evaluated has the dispatcher read the run again, to leave the set.
        Of several tasks queued here, each job starts before the next task is told, and
        the jobs' ``running`` writes wait until all have started: the k-th job of a
        fan-out starts k + 2 round trips after the job's end, not 2k + 1. The job ids are
        written as soon as the loop ends, or fails (until then each try's claim keeps
        every other dispatcher away, as during the call itself).

        ``told_before``: the finish was most likely told already (the scheduler tells a
        job's end at once; its stream record comes after), so the downstream tasks are
        read first (one BatchGetItem) and only those not holding this report are written:
        a read instead of a refused conditional write, which costs a write unit. Each task
        is told by ``tell``. ``prefetched``: these tasks as read with the run, if they
        were: each is then told from what it held (as ``told_before``), and one the read
        did not find is left alone (a report would be refused)."""
        report = UpstreamReport(ti.state, ti.version, slotted=passes_slotted(spec, ti))
        tasks = self.scheduler.repos.tasks
        asked = prefetched.asked if prefetched is not None else frozenset()
        found = prefetched.found if prefetched is not None else {}
        read = {c: found[c] for c in children if c in found}
        known = asked.intersection(children)  # read: absent from ``read`` means missing
        if told_before:
            unread = [c for c in children if c not in asked]
            if unread:
                read.update((c.task_id, c) for c in tasks.get_many(ti.dag_id, ti.run_id, unread))
            known = frozenset(children)
        running_writes: list[Callable[[], object]] = []
        later = running_writes if len(children) > 1 else None
        try:
            for child in children:
                if child in known and child not in read:
                    continue  # no such task instance (a report would be refused)
                throttled: set[str] = set()
                decided = self.telling.tell(
                    spec,
                    run,
                    (ti.dag_id, ti.run_id, child),
                    (ti.task_id, report),
                    read.get(child),
                    told_before=told_before,
                    owned=dispatch is not None,
                    covered=covered,
                    throttled=throttled,
                    handover=handover,
                )
                if started is not None and decided and decided.state not in FINISHED_TASK_STATES:
                    started.add(child)
                if dispatch is not None and dispatches_now(spec, decided):
                    assert decided is not None
                    dispatch(decided, owner=True, run=None if throttled else run, later=later)
        finally:
            for write in running_writes:
                write()

    def go_on_telling(self, ti: TaskInstance, dispatch: Dispatch | None = None) -> None:
        """The next chunk of a wide fan-out, from the stream record of the count's write."""
        if ti.state in FINISHED_TASK_STATES:
            self.propagate(ti, dispatch)
        elif ti.state is TaskState.RUNNING:
            self.announce_service_up(ti, dispatch)

    def announce_service_up(self, ti: TaskInstance, dispatch: Dispatch | None = None) -> None:
        """A service task runs: its downstream tasks may start (they depend on it being up)."""
        repos = self.scheduler.repos
        spec = self.scheduler.spec_of_task(ti)
        if spec.tasks[ti.task_id].mode is not TaskMode.SERVICE:
            return
        current = repos.tasks.find(*ti.key)
        if current is None or current.state is not TaskState.RUNNING:
            return
        self.tell_downstream(spec, repos.runs.get(ti.dag_id, ti.run_id), current, dispatch)
