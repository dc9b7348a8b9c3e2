"""What the scheduler's collaborators share: the ports, the DAG versions runs are pinned
to, skydag's own events, and the one loop every write goes through.

Every write is conditional on the version it was decided from. A lost race is normal
(concurrent invocations, redelivered events): the store's ``ConflictError`` carries the
item as it is now, and the decision is made again from it (``settle``). Nothing is ever
decided from an image that may be stale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, TypeVar

from skydag.engine.commands import decide_stop
from skydag.engine.models import DagRecord, DagRun, FinishGroup, TaskInstance
from skydag.engine.reactions import is_outcome, record_has_work, task_event_due
from skydag.engine.scheduler import finish_counts
from skydag.engine.states import TaskState
from skydag.engine.tallies import finish_group
from skydag.engine.transitions import Decision, Transition
from skydag.limits import FINISH_GROUP, FINISH_TALLY_AT
from skydag.ports import Clock, EventSink, Listened, Timers
from skydag.ports.store import Arming, ConflictError, Store, TaskInstanceStore
from skydag.spec.models import DagSpec, TaskMode
from skydag.targets.base import TargetRegistry

MAX_RACE_RETRIES = 8

Item = TypeVar("Item")
Result = TypeVar("Result")


class DagNotFound(LookupError):
    pass


class DagPaused(RuntimeError):
    pass


class CommandRefused(ValueError):
    """An operator command that cannot apply as asked (an unknown task, a cancelled run,
    a DAG without a schedule): nothing changed, and the message says why."""


class TooManyLostRaces(ConflictError[Any]):
    """Every re-decision lost its race again: the caller's event source retries later."""


def settle(item: Item, attempt: Callable[[Item], Result], what: str) -> Result:
    """Run ``attempt`` on ``item``; when its conditional write loses a race, run it again
    on the item as the store now has it. The only retry loop of the scheduler."""
    for _ in range(MAX_RACE_RETRIES):
        try:
            return attempt(item)
        except ConflictError as conflict:
            if conflict.current is None:
                raise
            item = conflict.current
    raise TooManyLostRaces(f"{what}: gave up after {MAX_RACE_RETRIES} lost races", item)


def read_backstop(
    tasks: TaskInstanceStore,
    image: TaskInstance,
    wanted: Sequence[str],
    finish_group: FinishGroup | None,
) -> tuple[DagRun | None, dict[str, TaskInstance]]:
    """The run and the ``wanted`` instances, as the stream record of a finish told before
    reads them (the scheduler tells a job's end at once: the record is the backstop). The
    instances are read eventually consistently, at half the read units; the run is not (a
    run read from before it started would decide nothing). An instance read stale is
    bounded by what it must hold: the finished task is taken as the image when the read is
    older, and a downstream task not showing the finish's report is told it by a
    conditional write, which finds it held and reads the task again. An instance the read
    missed (written a moment ago) comes back as its fresh instance (a task never written
    reads so), older than any write: the same two rules hold."""
    run, read = tasks.get_with_run(
        image.dag_id, image.run_id, wanted, finish_group, instances_consistent=False
    )
    found = read.get(image.instance_id)
    if found is None or found.version < image.version:
        read[image.instance_id] = image
    return run, read


@dataclass(frozen=True, slots=True)
class Applied:
    """What deciding on a task did: the decision, and the task as written (None when
    nothing was written: no transition, or no free task slot for a dispatch)."""

    decision: Decision
    seen: TaskInstance  # the task as the decision saw it (the current item)
    task: TaskInstance | None = None
    no_slot: bool = False
    # The write was marked ``unheard``: no stream record follows it (engine/reactions.py).
    unheard: bool = False


@dataclass(frozen=True, slots=True)
class Prefetched:
    """Downstream tasks read ahead (with the run): the ids asked, and those found."""

    asked: frozenset[str]
    found: Mapping[str, TaskInstance]


# Starts a queued try's job (``Dispatcher.dispatch``), given the ``→ queued`` record.
class Dispatch(Protocol):
    """Start a queued try's job (``Dispatcher.dispatch``); ``owner``: the caller made the
    ``→ queued`` write and owns its claim; ``run``: the run as the caller read it;
    ``later``: where the job's ``running`` write goes, for the caller to make."""

    def __call__(
        self,
        image: TaskInstance,
        *,
        owner: bool = False,
        run: DagRun | None = None,
        later: list[Callable[[], object]] | None = None,
    ) -> None: ...


# Whether a transition may be written now (a dispatch first takes a task slot).
Gate = Callable[[TaskInstance, Transition], bool]


@dataclass(slots=True)
class Scheduler:
    """The ports every collaborator uses (tests swap ``targets`` and ``timers``)."""

    repos: Store
    targets: TargetRegistry
    clock: Clock
    events: EventSink
    timers: Timers
    # Told to jobs (SKYDAG_TASK_STATE_TABLE) so `skydag state` finds their state.
    state_table: str | None = None
    # The DAG version each DAG's runs last used here (``likely_spec``).
    last_versions: dict[str, int] = field(default_factory=dict)
    # The outcomes (finished states, up_for_retry) written ``unheard``, by state: no
    # stream record follows them, so the handler that wrote them counts them
    # (``take_unheard_outcomes``; the stream processor counts the others: TaskOutcomes).
    unheard_outcomes: Counter[str] = field(default_factory=Counter)
    # A run of a DAG of more tasks counts its finishes in finish tallies of this many
    # (``finish_group``). The reliability simulator makes both small, so that its runs
    # count in tallies under faults.
    finish_tally_at: ClassVar[int] = FINISH_TALLY_AT
    finish_group_size: ClassVar[int] = FINISH_GROUP

    def finish_group(self, spec: DagSpec, task_id: str) -> FinishGroup | None:
        """Where a run of ``spec`` counts the task's finish (engine/tallies.py)."""
        return finish_group(spec, task_id, at=self.finish_tally_at, size=self.finish_group_size)

    def counts_in_groups(self, spec: DagSpec) -> bool:
        """Whether a run of ``spec`` counts its finishes in group tallies (a big run)."""
        return len(spec.tasks) > self.finish_tally_at

    def finish_counts(self, spec: DagSpec, run: DagRun, ti: TaskInstance) -> bool:
        """Whether ``ti``'s finish is counted on ``run`` as read (``finish_counts``)."""
        holds = ti.instance_id in run.active or ti.instance_id in run.throttled
        grouped = self.counts_in_groups(spec)
        return finish_counts(spec, run, ti.task_id, grouped=grouped, holds_slot=holds)

    def spec(self, run: DagRun) -> DagSpec:
        """The DAG version the run is pinned to."""
        self.last_versions[run.dag_id] = run.dag_version
        return self.repos.dags.load_spec(run.dag_id, run.dag_version)

    def spec_of_task(self, ti: TaskInstance) -> DagSpec:
        if ti.dag_version:
            self.last_versions[ti.dag_id] = ti.dag_version
        return self.repos.dags.load_spec(ti.dag_id, ti.dag_version)

    def likely_spec(self, dag_id: str) -> DagSpec | None:
        """The DAG version a run of ``dag_id`` most likely has, before anything of it is
        read: the one its runs last used in this process, if still cached (a warm
        Lambda's guess, to read ahead what a task's end needs: never a read of its own,
        never trusted: what is read says the version)."""
        version = self.last_versions.get(dag_id)
        return None if version is None else self.repos.dags.cached_spec(dag_id, version)

    def current_spec(self, record: DagRecord) -> DagSpec:
        assert record.current_version is not None
        self.last_versions[record.dag_id] = record.current_version
        return self.repos.dags.load_spec(record.dag_id, record.current_version)

    def decide_and_apply(
        self,
        ti: TaskInstance,
        decide: Callable[[TaskInstance], Decision],
        *,
        gate: Gate | None = None,
        tells_finish: bool = False,
        listened: Listened | None = None,
    ) -> Applied:
        """Decide on the task and write the transition conditionally; decide again on
        the current item when the write loses a race. ``tells_finish``: a finish written
        here is told downstream and counted by the caller; ``listened``: who takes task
        events, as read before (both for ``unheard_if_idle``)."""

        def attempt(current: TaskInstance) -> Applied:
            decision = decide(current)
            transition = decision.transition
            if transition is None:
                return Applied(decision, current)
            if gate is not None and not gate(current, transition):
                return Applied(decision, current, no_slot=True)
            transition = self.unheard_if_idle(
                current, transition, tells_finish=tells_finish, listened=listened
            )
            written = self.repos.tasks.apply(current, transition)
            if transition.unheard and is_outcome(written.state):
                self.unheard_outcomes[written.state.value] += 1
            return Applied(decision, current, written, unheard=transition.unheard)

        return settle(ti, attempt, f"task {'/'.join(ti.key)}")

    def stop_unfinished(self, run: DagRun, reason: str) -> None:
        """Stop every unfinished task of a cancelled run. Their jobs are cancelled from
        the changes this writes (``superseded_job``), so nothing here can lose them."""
        for ti in self.repos.tasks.list_for_run(run.dag_id, run.run_id):
            self.decide_and_apply(
                ti, lambda current: decide_stop(current, reason, self.clock.now())
            )

    def take_unheard_outcomes(self) -> dict[str, int]:
        """The outcomes written ``unheard`` since the last call, by state."""
        taken = dict(self.unheard_outcomes)
        self.unheard_outcomes.clear()
        return taken

    def emit_run_event(self, run: DagRun) -> None:
        self.events.put(
            "DagRun State Change",
            {
                "dag": run.dag_id,
                "run_id": run.run_id,
                "state": run.state.value,
                "reason": run.reason,
            },
        )

    def emit_task_event(self, ti: TaskInstance) -> None:
        self.events.put(TASK_EVENT, _task_event_detail(ti))

    def read_listeners(self) -> Listened:
        """Who takes skydag's events, as known now (the bus's rules, listed now when the
        list is old): for ``unheard_if_idle`` to judge a write after a target's call on,
        with no call of its own in between (a failure there would start the job again)."""
        return self.events.listeners_now()

    def unheard_if_idle(
        self,
        ti: TaskInstance,
        transition: Transition,
        *,
        tells_finish: bool = False,
        listened: Listened | None = None,
    ) -> Transition:
        """``transition``, marked ``unheard`` when its write's stream record would have
        nothing to do (engine/reactions.py; ``tells_finish``: the writer tells a finish
        itself) and no rule on the bus takes the task's event it would put: the stream
        then drops the record, and no invocation reads it. ``listened``: who takes the
        events, as read before (``read_listeners``), else the event sink is asked."""
        new = transition.apply(ti)
        if new.state is TaskState.RUNNING and not new.dag_version:
            return transition  # (an item from before tasks named their DAG version)
        service = (
            new.state is TaskState.RUNNING
            and self.spec_of_task(new).tasks[new.task_id].mode is TaskMode.SERVICE
        )
        if record_has_work(ti, new, service=service, finish_told=tells_finish):
            return transition
        listens = listened if listened is not None else self.events.listens
        if task_event_due(ti, new) and listens(TASK_EVENT, _task_event_detail(new)):
            return transition
        return replace(transition, unheard=True)


TASK_EVENT = "Task Instance State Change"


def _task_event_detail(ti: TaskInstance) -> dict[str, Any]:
    return {
        "dag": ti.dag_id,
        "run_id": ti.run_id,
        "task": ti.task_id,
        "state": ti.state.value,
        "try_number": ti.try_number,
    }


@dataclass(slots=True)
class HandOver:
    """A finished task's max_active_tasks slot, offered to the first downstream task its
    finish queues (``TaskSlots.gate``): the slot's release, the child's reservation and,
    on a run that counts its finishes on its item (``index``), the finish's count go in one
    run write instead of two (``RunRepository.hand_over_task_slot``)."""

    finished: TaskInstance
    index: int | None  # None: a big run's finish is counted in its tally, not here
    arming: Arming | None = None  # what the count writes for the tries it covers
    tried: bool = False  # offered once: a refused write is not tried again
    run: DagRun | None = None  # the run as the hand-over wrote it, once made


class Cover:
    """The tries one invocation queues are covered by their run's due entry
    (``TaskInstance.covered``, ``service/covering.py``). ``arm``, when the invocation's
    count will not stamp the run, stamps it before the first of them is written: a finish
    that queues nothing writes nothing."""

    def __init__(self, arm: Callable[[], object] | None = None) -> None:
        self._arm = arm

    def before_queueing(self, transition: Transition) -> None:
        """Called before a covered transition is written."""
        if transition.dst is not TaskState.QUEUED or self._arm is None:
            return
        arm, self._arm = self._arm, None
        arm()


class Evaluate(Protocol):
    """Decide a task that is not running (``TaskProgress.evaluate``)."""

    def __call__(
        self,
        spec: DagSpec,
        run: DagRun,
        ti: TaskInstance,
        *,
        owned: bool = False,
        covered: Cover | None = None,
        throttled: set[str] | None = None,
        handover: HandOver | None = None,
    ) -> TaskInstance | None: ...
