"""The store's ports: what the scheduler service reads and writes, as typing Protocols.

Two implementations keep this contract, checked by the same tests
(tests/integration/test_repositories.py): the DynamoDB repositories
(``skydag.store.repositories.Repositories``) and an in-memory store
(``skydag.store.memory.MemoryStore``). Only engine records, DAG specs and plain types
cross it. The rules every implementation keeps:

- every task-instance and run write is conditional on the state and version the caller
  read (for state changes, the allowed source states come from the transition table:
  ``task_sources`` / ``run_sources``); a lost race raises ``ConflictError`` whose
  ``current`` is the item as it is now (None when it does not exist);
- reads of one item (``get``, ``find``, ``get_many``, ``list_for_run``) see every write
  that came before them; index reads (``due``, ``find_by_*``, ``queued_runs``,
  ``list_for_dag``, task state's ``get_all``) may lag behind in DynamoDB;
- counters (finished tasks, slots, throttled tasks) are sets, so a redelivered event
  counts once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from skydag.engine.models import (
    DagRecord,
    DagRun,
    FinishGroup,
    Tally,
    TallyMembers,
    TallyWrite,
    TaskInstance,
    UpstreamReport,
)
from skydag.engine.states import Cause, RunState, TaskState
from skydag.engine.transitions import Transition
from skydag.spec.models import DagSpec

ItemT = TypeVar("ItemT")

# --- errors --------------------------------------------------------------------------------


class StoreError(Exception):
    pass


class ConflictError(StoreError, Generic[ItemT]):
    """A conditional write lost: the item was not in the expected state or version."""

    def __init__(self, message: str, current: ItemT | None) -> None:
        super().__init__(message)
        self.current = current


class NotFound(StoreError):
    pass


# --- what the contract defines -------------------------------------------------------------


def due_at(ti: TaskInstance) -> datetime | None:
    """When the reconciler must look at this task: a retry's time, a deadline, or the
    time to ask the service about a job whose events may have been lost. A task is in the
    due index exactly when ``indexed_due`` is not None, at a place never later than this
    time: the place may be earlier (``keeps_due_place``; ``postpone_due`` moves it
    deliberately). A covered try (``is_covered``) is found through its run's entry."""
    if ti.state is TaskState.UP_FOR_RETRY:
        return ti.next_attempt_at
    if ti.state is TaskState.WAITING:
        return ti.timeout_at
    if ti.state in (TaskState.QUEUED, TaskState.RUNNING):
        times = [t for t in (ti.timeout_at, ti.check_at) if t is not None]
        return min(times) if times else None
    return None


@dataclass(frozen=True, slots=True)
class Arming:
    """What a finish's count writes on its run for the tries it covers
    (``TaskInstance.covered``): the run's due entry at ``look_at`` unless the run is armed
    already, and ``counted_at``, the count's time. A run is disarmed only once its last
    count is older than any invocation lives (``RunStore.disarm``): every try covered by
    an invocation that counts is written within that time of its count, before or after
    it, so it is seen by whoever looks at the run's tasks by then."""

    counted_at: datetime
    look_at: datetime


def is_covered(ti: TaskInstance) -> bool:
    """Whether the run's due entry stands for this task's (``TaskInstance.covered``): a
    covered try while it is queued or running. Any other state with a due time (a retry,
    a wait's deadline) has an entry of its own."""
    return ti.covered and ti.state in (TaskState.QUEUED, TaskState.RUNNING)


def indexed_due(ti: TaskInstance) -> datetime | None:
    """The time of the task's own entry in the due index: ``due_at``, or None when it has
    none (nothing due, or covered by its run's entry: ``is_covered``)."""
    return None if is_covered(ti) else due_at(ti)


def keeps_due_place(old: TaskInstance, new: TaskInstance) -> bool:
    """Whether the write of ``new`` over ``old`` leaves the task's place in the due index
    where it is: a dispatched try (queued -> running) whose next look is later than its
    claim's expiry. Moving an entry costs two index writes; most jobs end before the
    claim would have run out, and their finish takes the entry out (one write). A job
    still running then is found early: the reconciler sees nothing due and moves the
    entry to the task's time (``Reconciler.reconcile``). A stored place later than the
    new time (``postpone_due``'s) is moved as by any write, so a place is never late."""
    if old.state is not TaskState.QUEUED or new.state is not TaskState.RUNNING:
        return False
    before, after = indexed_due(old), indexed_due(new)
    return before is not None and after is not None and before <= after


def instance_scope(dag_id: str, run_id: str, task_id: str) -> str:
    """Checkpoints: one task instance, kept across its retries."""
    return f"ti#{dag_id}#{run_id}#{task_id}"


def task_scope(dag_id: str, task_id: str) -> str:
    """Watermarks: one task across all its runs."""
    return f"task#{dag_id}#{task_id}"


def output_scope(dag_id: str, run_id: str, task_id: str) -> str:
    """Outputs jobs published (``skydag output set``): one task instance, one key per try."""
    return f"out#{dag_id}#{run_id}#{task_id}"


def tally_scope(dag_id: str, run_id: str, task_id: str) -> str:
    """A wide join's tally items (engine/tallies.py), one key per group."""
    return f"tally#{dag_id}#{run_id}#{task_id}"


def finish_scope(dag_id: str, run_id: str) -> str:
    """A big run's finish tallies (engine/tallies.py ``finish_group``), one key per group."""
    return f"fin#{dag_id}#{run_id}"


def output_key(try_number: int) -> str:
    """The key of one try's published output: a try never reads another try's."""
    return f"try/{try_number}"


# Patterns that name no exact source are indexed under this one.
ANY_SOURCE = "*"
# ``get_with_run``'s instances in one round trip: with the run and a finish tally, a
# BatchGetItem's 100 keys.
WITH_RUN_LIMIT = 98
# ``get_try_with_run``'s downstream instances: with the try, its output and its run.
WITH_TRY_LIMIT = 97


@dataclass(frozen=True, slots=True)
class TryRead:
    """A try's instance read with what its end needs next, in one round trip
    (``get_try_with_run``): what its job published, its run and these downstream tasks."""

    task: TaskInstance | None
    published: Any
    run: DagRun | None
    asked: frozenset[str]  # the downstream task ids asked for
    downstream: Mapping[str, TaskInstance]  # those of them that exist


@dataclass(frozen=True, slots=True)
class Subscription:
    """One signal pattern of a DAG's current version: ``task_id`` None means ``on:``."""

    dag_id: str
    dag_version: int
    task_id: str | None
    kind: str  # on | start_on | restart_on | stop_on | wait
    pattern: dict[str, Any]


# --- the repositories ----------------------------------------------------------------------


class TaskInstanceStore(Protocol):
    """Task instances, keyed by (dag, run, task).

    A run's task instances are not written when the run is made: a task of the run that
    was never written reads as its fresh instance (pending, try 0, version 0, the run's
    DAG version) from every read, and its first write inserts it (a write expecting
    version 0 holds for no item too)."""

    def put_new(self, tis: Iterable[TaskInstance]) -> None:
        """Write instances as given, unconditionally (tests; a for_each's expansion)."""
        ...

    def get(self, dag_id: str, run_id: str, task_id: str) -> TaskInstance:
        """The instance; ``NotFound`` when there is none (not a task of the run)."""
        ...

    def find(self, dag_id: str, run_id: str, task_id: str) -> TaskInstance | None: ...

    def get_many(self, dag_id: str, run_id: str, task_ids: Sequence[str]) -> list[TaskInstance]:
        """The instances that exist, in the order asked."""
        ...

    def get_with_output(
        self, dag_id: str, run_id: str, instance_id: str, try_number: int
    ) -> tuple[TaskInstance | None, Any]:
        """The instance (None: missing) and what its job published for try ``try_number``
        (``output_scope``/``output_key`` in the task-state store; None: nothing), read at
        once and consistently (one round trip)."""
        ...

    def get_try_with_run(
        self,
        dag_id: str,
        run_id: str,
        instance_id: str,
        try_number: int,
        downstream: Sequence[str] = (),
        *,
        instances_consistent: bool = True,
    ) -> TryRead:
        """``get_with_output``, with the run and these downstream instances (at most
        ``WITH_TRY_LIMIT``: ValueError beyond) in the same round trip: what a finish goes
        on with. ``instances_consistent=False``: the task instances are read eventually
        consistently (half the read units; an older version, or a fresh instance for one
        written a moment ago, may come back); the run and the output always consistently."""
        ...

    def get_with_run(
        self,
        dag_id: str,
        run_id: str,
        task_ids: Sequence[str],
        finish_group: FinishGroup | None = None,
        *,
        instances_consistent: bool = True,
    ) -> tuple[DagRun | None, dict[str, TaskInstance]]:
        """The run (None: missing) and those of these instances that exist (by instance
        id), read at once (one round trip for at most ``WITH_RUN_LIMIT`` instances).
        ``finish_group``: a big run's finish tally read with it, the run's
        ``finished_idx`` and ``failed_leaf_idx`` then that group's, unless the tally holds
        the whole group and the run item does not count it done (a count cut short).
        ``instances_consistent=False``: the instances read eventually consistently, at
        half the read units (each may come at an earlier version, or be missed if written
        a moment ago); the run and its tally always as they are now."""
        ...

    def list_for_run(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        """Every instance of the run, by task id."""
        ...

    def apply(
        self,
        ti: TaskInstance,
        transition: Transition,
        *,
        upstream: tuple[str, UpstreamReport] | None = None,
    ) -> TaskInstance:
        """Write ``transition.changes_for(ti)``, the new state and version + 1, only if the
        item is at ``transition.src`` (one of ``task_sources(dst, cause)``) and
        ``transition.expected_version``; returns ``transition.apply(ti)``. A field the
        record cannot write raises ValueError before anything is written.

        ``upstream``: an upstream's report (task, report) written with it, which ``ti``
        (the item as read, plus that report) holds already: one write where a report and
        the transition it allows would be two (``TaskProgress.report_and_decide``)."""
        ...

    def report_upstream(
        self,
        downstream: TaskInstance | tuple[str, str, str],
        upstream_task: str,
        report: UpstreamReport,
        *,
        dag_version: int = 0,
    ) -> TaskInstance | None:
        """Record an upstream's state on a downstream (version + 1) unless it holds a
        report of that version or later (or a tombstone of it); a task never written is
        written then (``dag_version``: its run's, when ``downstream`` is a key). A slotted
        report makes the downstream ``slotted`` in the same write. Returns the downstream
        as it is now when it holds this very report, None otherwise."""
        ...

    def hold_slotted(
        self, key: tuple[str, str, str], *, dag_version: int = 0
    ) -> TaskInstance | None:
        """Make the task ``slotted`` (version + 1), before it is told the report of a
        slotted upstream through a wide join's tally; a task never written is written then
        (``dag_version``: its run's; unknown, 0: only a written task). Returns it as it is
        now, None when there is no such task."""
        ...

    def retire_upstream(
        self, upstream: TaskInstance, downstream_tasks: Iterable[str]
    ) -> dict[str, TaskInstance]:
        """Leave a tombstone of ``upstream.version`` on each downstream that holds no report
        of a later version (nor this tombstone), a task never written too; returns those,
        as they are now."""
        ...

    def tell_tally(
        self, join: tuple[str, str, str], group: int, position: int, report: UpstreamReport
    ) -> TallyWrite | None:
        """Record an upstream's report (or a clear's tombstone) at ``position`` of a wide
        join's tally item ``group`` (created on the first report; version + 1), under the
        rule ``report_upstream`` keeps. Returns the item before and after; when it held
        this report already, the item as it is (``written`` False); None when stale."""
        ...

    def get_tally(
        self, join: tuple[str, str, str], group: int, *, consistent: bool = True
    ) -> TallyMembers:
        """A wide join's tally item ``group`` as it is now (empty, version 0, if none);
        ``consistent=False``: as it may have been a moment ago, at half the read units."""
        ...

    def record_tally(
        self, join: tuple[str, str, str], group: int, tally: Tally, *, dag_version: int = 0
    ) -> TaskInstance | None:
        """Hold ``tally`` as the join's summary of ``group`` (version + 1) unless it holds
        one of that tally version or later; a join never written is written then
        (``dag_version``: its run's). Returns the join as it is now."""
        ...

    def due(
        self, now: datetime, limit: int = 100, skip: Collection[tuple[str, str, str]] = ()
    ) -> list[TaskInstance]:
        """Instances whose place in the due index is at or before ``now`` and that a pass
        at ``now`` looks at (``engine/rules.py looks_at_entry``), earliest first, but none
        whose key (``TaskInstance.key``) is in ``skip``."""
        ...

    def advance_report_cursor(self, ti: TaskInstance, told: int, now_told: int) -> bool:
        """Record that ``now_told`` downstream tasks were told of ``ti``'s current state
        and version (``reported``), unless the task moved on or another delivery recorded
        more than ``told``. No version bump. Whether it was recorded."""
        ...

    def find_by_token(self, token: str) -> TaskInstance | None:
        """The instance whose current try has this dispatch token, unless the try is
        ``found_by_key`` (its events name the instance: neither lookup indexes it)."""
        ...

    def find_by_job_id(self, job_id: str) -> TaskInstance | None:
        """As ``find_by_token``, by the job id the service gave the current try."""
        ...

    def postpone_due(self, ti: TaskInstance, until: datetime) -> bool:
        """Move only the instance's place in the due index (no version bump), if it is in
        the index and still at ``ti``'s state and version; the next write puts it back."""
        ...

    def check_later(self, ti: TaskInstance, at: datetime) -> TaskInstance:
        """Set ``check_at`` (no state change), conditional on state and version."""
        ...

    def note_signal(self, ti: TaskInstance, signal: Mapping[str, Any]) -> TaskInstance:
        """Keep a start signal on the instance, conditional on state and version."""
        ...

    def uncover(self, ti: TaskInstance) -> TaskInstance:
        """Give a covered try its own entry in the due index (``covered`` cleared, a
        version bump so that a writer holding the covered record re-reads), conditional
        on state and version."""
        ...

    # for_each: a mapped task's instances are keyed ``<task>:<index>`` (engine/models.py
    # ``instance_key``); ``get``/``find``/``get_many`` take such keys too.

    def list_instances(self, dag_id: str, run_id: str, task_id: str) -> list[TaskInstance]:
        """Every stored instance of a mapped task (any expansion), in item order."""
        ...

    def create_instances(self, tis: Sequence[TaskInstance]) -> int:
        """Write each instance unless a record of its key with the same or a later
        ``expansion`` exists (a redelivered expansion resets nothing); in bounded batches.
        Returns how many were written."""
        ...

    def release_instance(self, dag_id: str, run_id: str, key: str) -> TaskInstance | None:
        """Set ``released`` on a pending instance (version + 1). Returns the instance as it
        is now when it is released (by this call or before), None otherwise."""
        ...

    def count_instance(self, ti: TaskInstance, *, failed: bool) -> bool:
        """Atomically: mark ``ti``'s finish counted (``counted`` = its version; only if the
        instance is still at ``ti``'s state and version and that version is not counted)
        and add 1 to its mapped task's ``map_done`` (and ``map_failed`` when ``failed``),
        only if the mapped task's try number is the instance's expansion. True when
        counted now; False otherwise (nothing written)."""
        ...

    def apply_uncounted(self, ti: TaskInstance, transition: Transition) -> TaskInstance:
        """``apply`` that also removes ``counted``; when ``ti``'s current finish was
        counted, its mapped task's counters are taken back in the same atomic write."""
        ...


class RunStore(Protocol):
    """DAG runs, keyed by (dag, run)."""

    def create(self, run: DagRun) -> bool:
        """Create the run (no counters, slots, start, end or reason yet); False when a run
        with this id exists. A queued run enters the queued index (``queued_runs``) once
        its tasks are written: created so, or at ``mark_tasks_created``."""
        ...

    def get(self, dag_id: str, run_id: str) -> DagRun: ...

    def find(self, dag_id: str, run_id: str) -> DagRun | None: ...

    def list_for_dag(self, dag_id: str, limit: int | None = None) -> list[DagRun]:
        """The DAG's runs, by run id, last first."""
        ...

    def list_between(self, dag_id: str, start: datetime, end: datetime) -> list[DagRun]:
        """The DAG's runs whose logical date is in [start, end], by run id."""
        ...

    def transition(
        self, run: DagRun, dst: RunState, cause: Cause, *, disarm: bool = False, **changes: Any
    ) -> DagRun:
        """Move the run to ``dst`` with ``changes`` (None removes a field), only if it is at
        ``run.version`` in one of ``run_sources(dst, cause)``; ValueError when ``run.state``
        itself is not a source. ``disarm``: the run's due entry (``arm``) is taken out in
        the same write (its end, every task finished: no covered try is left to look at)."""
        ...

    def mark_tasks_created(self, run: DagRun) -> None:
        """Record that the run's task instances are written, and put a run still queued
        in the queued index (``run``'s logical date); nothing for a run that has started
        (it had them written first)."""
        ...

    def tasks_created(self, run: DagRun) -> bool: ...

    def record_finished(
        self,
        ti: TaskInstance,
        index: int,
        *,
        failed_leaf: bool,
        group: FinishGroup | None = None,
        release: bool = True,
        arming: Arming | None = None,
    ) -> DagRun | None:
        """Count the task's finish (a set: once), free the slot if this try holds it (or
        none does), take it out of the throttled set; returns the run after the write.
        With ``arming`` (a run that counts on its item) the same write arms the run's due
        entry unless it is armed already, and stamps the count (``Arming``).
        A big run's finish (``group``) is counted in its group's finish tally, and on the
        run item as the group's counts once the group is done; the run item is written
        then or when ``release`` (the task may hold a slot or be throttled), else None is
        returned. A big run comes back with the group's tally as ``get_with_run``'s."""
        ...

    def forget_finished(self, run: DagRun, index: int, group: FinishGroup | None = None) -> None:
        """Uncount a task being cleared (a big run's group is no longer done)."""
        ...

    def count_all_finishes(self, run: DagRun, indices: Collection[int]) -> None:
        """A run counting on its item, found with every leaf counted and a task unfinished:
        count these finished tasks (found by a read of its tasks) and set ``counts_all``,
        so that every later finish counts and the full count ends it (``finish_counts``)."""
        ...

    def reserve_task_slot(
        self, run: DagRun, ti: TaskInstance, try_number: int, max_active: int
    ) -> bool:
        """Take (or keep) a max_active_tasks slot for this try of the task, only while the
        run is running. A throttled task stays in the throttled set until its try is
        dispatched (``drop_throttled``) or finishes: if its invocation dies between the
        slot and the ``→ queued`` write, the next slot-filling finds it there."""
        ...

    def hand_over_task_slot(
        self,
        finished: TaskInstance,
        child: TaskInstance,
        try_number: int,
        *,
        index: int | None,
        arming: Arming | None = None,
    ) -> DagRun | None:
        """A finished task's max_active_tasks slot goes to a downstream task it lets start,
        in one write: the slot of ``finished``'s try is freed and this try of ``child``
        takes one (as ``reserve_task_slot``, which it replaces), ``finished`` leaves the
        throttled set, and with ``index`` (a run that counts its finishes on its item) the
        finish is counted (as ``record_finished`` for a task with downstream tasks, which is
        no leaf: that call then writes nothing), with ``arming`` as ``record_finished``'s.
        Only while the run is running and
        ``finished``'s try holds its slot; else nothing is written and None is returned
        (the caller reserves as usual). Returns the run after the write."""
        ...

    def release_orphaned_slot(self, ti: TaskInstance) -> bool:
        """Free the slot taken for the next try of a task that finished at this try
        without it: the slot was taken before the ``→ queued`` write, which lost a race to
        a change that finished the task (a mark, a skip), and nothing else would ever free
        it (a run with one slot would wait for ever). Only while the task is still in
        ``ti``'s state at ``ti``'s try, checked in the same transaction: a clear that has
        queued that next try keeps its slot. True when freed."""
        ...

    def drop_throttled(self, run: DagRun, task_id: str) -> None:
        """Take the task out of the throttled set (its try is being dispatched)."""
        ...

    def release_task_slot(self, ti: TaskInstance) -> bool:
        """Free the slot if this try holds it."""
        ...

    def add_throttled(self, run: DagRun, task_id: str) -> None: ...

    def queued_runs(self, dag_id: str, limit: int) -> list[tuple[str, str]]:
        """Queued runs as (dag, run), oldest logical date first."""
        ...

    def due(self, now: datetime, limit: int = 100) -> list[DagRun]:
        """Armed runs (``record_finished``'s ``arm_at``) whose time has come, earliest
        first, as they are now."""
        ...

    def arm(self, ti: TaskInstance, arming: Arming) -> None:
        """Arm ``ti``'s run as a count of its finish would, without counting it: for the
        tries a chunk of a wide fan-out covers, whose count comes with the last chunk,
        in another invocation. No version bump; nothing for a run that is gone."""
        ...

    def disarm(self, run: DagRun, quiet_since: datetime) -> bool:
        """Take the run's due entry away, only if the run is still at ``run.version``
        (every finish counted bumps it) and its last count was made by ``quiet_since``
        (``Arming``); True when taken."""
        ...


# The key of the item that says which DAG holds each declared emit source prefix (in the
# DAGs' table: no DAG id contains ':').
EMIT_SOURCES_KEY = "emit:sources"
# The item listing every ``aws.*`` source ever subscribed to (same table, same reason).
AWS_SOURCES_KEY = "aws:sources"


class DagStore(Protocol):
    """DAG heads, their immutable versions, run slots and the signal subscriptions."""

    def get(self, dag_id: str) -> DagRecord: ...

    def find(self, dag_id: str) -> DagRecord | None: ...

    def save_version(
        self, spec: DagSpec, *, source: str | None, sha256: str | None, now: datetime
    ) -> int:
        """Store the spec as the next version and make it current; returns its number.
        LimitError, before anything is written, when its signal subscriptions are too
        large to index (``skydag.limits.SIGNAL_INDEX_BYTES``)."""
        ...

    def retire(self, dag_id: str, *, now: datetime) -> DagRecord | None: ...

    def hold_emit_sources(self, dag_id: str, prefixes: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Make ``prefixes`` the ``emit_sources`` the DAG holds (none: release them),
        unless another DAG holds one, or one inside or around it: then nothing changes,
        and the result maps each such prefix to (the held prefix, its DAG)."""
        ...

    def subscriptions(self, source: str) -> list[Subscription]: ...

    def aws_subscriptions(self) -> list[Subscription]:
        """Every subscription of the current versions under an exact ``aws.*`` source: what
        the default bus must forward. Read from the index, so any loader computes the same
        answer whichever DAG it has just loaded."""
        ...

    def load_spec(self, dag_id: str, version: int) -> DagSpec: ...

    def cached_spec(self, dag_id: str, version: int) -> DagSpec | None:
        """The version if ``load_spec`` holds it already, else None: never a read."""
        ...

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause the DAG; NotFound when it has no head."""
        ...

    def reserve_run_slot(
        self, dag_id: str, run_id: str, max_active_runs: int, backfill_limit: int | None = None
    ) -> bool:
        """Take (or keep) a slot among ``max_active_runs`` for the run, unless the DAG is
        paused; with ``backfill_limit``, also one among the runs started under a limit
        (``active_backfills``), in the same write."""
        ...

    def release_run_slot(self, run: DagRun) -> bool:
        """Free the max_active_runs slot of ``run``, a finished run, while the run still
        is that finish (same state and end time), in one atomic step: a run reopened by a
        clear meanwhile keeps the slot it runs in. Whether the slot was freed."""
        ...

    def advance_schedule(self, dag_id: str, expected: datetime | None, new_end: datetime) -> bool:
        """Move the schedule's high-water mark from ``expected`` to ``new_end``, once."""
        ...


class TaskStateStore(Protocol):
    """Checkpoints and watermarks: JSON values by (scope, key), versioned from 1."""

    def get(self, scope: str, key: str) -> tuple[Any, int] | None: ...

    def get_all(self, scope: str) -> dict[str, Any]: ...

    def put(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        now: datetime,
        expected_version: int | None = None,
        ttl: timedelta | None = None,
    ) -> int:
        """Write a value, returns its version. ``expected_version`` makes it a
        compare-and-set (0: must not exist) raising ``ConflictError`` with the current
        (value, version); it expires ``ttl`` (or the store's default) after ``now``."""
        ...

    def delete_scope(self, scope: str) -> int: ...


class Store(Protocol):
    """The repositories one service instance uses."""

    @property
    def dags(self) -> DagStore: ...

    @property
    def runs(self) -> RunStore: ...

    @property
    def tasks(self) -> TaskInstanceStore: ...

    @property
    def state(self) -> TaskStateStore: ...


__all__ = [
    "ANY_SOURCE",
    "WITH_RUN_LIMIT",
    "ConflictError",
    "DagStore",
    "NotFound",
    "RunStore",
    "Store",
    "StoreError",
    "Subscription",
    "TaskInstanceStore",
    "TaskStateStore",
    "due_at",
    "instance_scope",
    "output_key",
    "output_scope",
    "task_scope",
]
