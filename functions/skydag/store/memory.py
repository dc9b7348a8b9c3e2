"""The store in memory: the same contract as the DynamoDB repositories, in one process.

Every write the DynamoDB repositories make conditional is conditional here too, on the
same conditions (the transition table's source states, the versions, the slot and
report rules), evaluated and applied under one lock, so exactly one of several racing
writers wins and a loser's ``ConflictError`` carries the item as it is now. What comes
back from a read is what DynamoDB would give back: JSON values round-trip through JSON,
times come back in UTC, counters are sets. Reads are always consistent (DynamoDB's index
reads may lag; nothing may rely on that lag).

Besides the ports (``skydag.ports.store.Store``) it offers what the tables offer around
them: a change feed like the tables' streams (``take_changes``, with
``record_changes=True``) and the TTL sweeper of the task-state table
(``sweep_expired``). Known differences, by design: a write on a missing run that
DynamoDB would turn into a broken, key-only item changes nothing here, and errors that the
DynamoDB repositories let through as PynamoDB exceptions (``set_paused``,
``tasks_created`` and ``record_finished`` on a missing item) are ``NotFound`` here.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from skydag.engine.models import (
    DagRecord,
    DagRun,
    FinishGroup,
    RunType,
    Tally,
    TallyMembers,
    TallyWrite,
    TaskInstance,
    TryRecord,
    UpstreamReport,
    map_key_prefix,
)
from skydag.engine.rules import looks_at_entry
from skydag.engine.states import (
    FAILED_TASK_STATES,
    Cause,
    RunState,
    TaskState,
    run_sources,
    task_sources,
)
from skydag.engine.transitions import Transition
from skydag.ports.store import (
    ANY_SOURCE,
    WITH_TRY_LIMIT,
    Arming,
    ConflictError,
    NotFound,
    Store,
    Subscription,
    TryRead,
    due_at,
    indexed_due,
    keeps_due_place,
    output_key,
    output_scope,
)
from skydag.sources import AWS_SOURCE_PREFIX
from skydag.spec.emit_sources import conflicts as emit_source_conflicts
from skydag.spec.models import DagSpec
from skydag.store.common import (
    TI_JSON_FIELDS,
    TI_PLAIN_FIELDS,
    check_signal_index,
    dumps,
    from_iso,
    iso,
    loads,
    pattern_sources,
    put_last_writer_wins,
    queued_key,
    signal_sources,
)
from skydag.store.spec_objects import SpecCache
from skydag.taskstate import check_key, check_ttl

_TI_TIME_FIELDS = frozenset(
    {"queued_at", "started_at", "ended_at", "next_attempt_at", "timeout_at", "check_at"}
)
_TI_INT_FIELDS = frozenset(
    {"try_number", "exit_code", "restarts", "expansion", "counted", "map_count", "map_done"}
    | {"map_failed"}
)
_TI_WRITABLE = TI_PLAIN_FIELDS | TI_JSON_FIELDS | {"tries"}
# Run fields a transition may set (the rest have their own writes, or none).
_RUN_WRITABLE = frozenset(
    {
        "started_at",
        "ended_at",
        "reason",
        "created_at",
        "logical_date",
        "data_interval_start",
        "data_interval_end",
        "tasks_created",
        "counts_all",
        "counted_at",
    }
)
_RUN_TIME_FIELDS = _RUN_WRITABLE - {"reason", "tasks_created", "counts_all"}


def _utc(moment: datetime | None) -> datetime | None:
    """A time as it comes back from the table: aware, in UTC (naive counts as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _json(value: Any) -> Any:
    """A value as it comes back from a JSON attribute (None: the attribute is absent)."""
    return None if value is None else loads(dumps(value))


def _ti_field(name: str, value: Any) -> Any:
    if name == "tries":
        return _tries(value or ())  # an empty history is no attribute: it reads as ()
    if value is None:
        return None
    if name in TI_JSON_FIELDS:
        # ``applied`` is a JSON list in DynamoDB, read back as a tuple.
        return tuple(_json(value)) if name == "applied" else _json(value)
    if name in _TI_TIME_FIELDS:
        return _utc(value)
    if name in _TI_INT_FIELDS:
        return int(value)
    return value


def _tries(tries: Sequence[TryRecord]) -> tuple[TryRecord, ...]:
    return tuple(
        replace(
            record,
            try_number=int(record.try_number),
            state=TaskState(record.state),
            started_at=_utc(record.started_at),
            ended_at=_utc(record.ended_at),
            exit_code=None if record.exit_code is None else int(record.exit_code),
        )
        for record in tries
    )


def _report(report: UpstreamReport) -> UpstreamReport:
    """A report as stored: a clear's mark keeps only its version."""
    return UpstreamReport.tombstone(report.version) if report.cleared else report


def _replaces(report: UpstreamReport, held: UpstreamReport) -> bool:
    """Whether a downstream holding ``held`` takes ``report``: a report of a later version
    than the one held, or a clear's tombstone, which sorts above every report of its
    version and below later ones (as the DynamoDB store's encoded reports order)."""
    if report.cleared:
        return held.version < report.version or (
            held.version == report.version and not held.cleared
        )
    return held.version < report.version


def _stored_ti(ti: TaskInstance) -> TaskInstance:
    """A task instance as a full write (``put_new``) leaves it in the table."""
    changes = {name: _ti_field(name, getattr(ti, name)) for name in _TI_WRITABLE}
    return replace(
        ti,
        dag_version=int(ti.dag_version or 0),
        state=TaskState(ti.state),
        version=int(ti.version),
        upstream={task: _report(r) for task, r in ti.upstream.items()},
        **changes,
    )


def _fresh_ti(ti: TaskInstance) -> TaskInstance:
    """A copy for a reader: nothing it holds is shared with the store."""
    return replace(
        ti,
        upstream=dict(ti.upstream),
        tallies=dict(ti.tallies),
        signal=copy.deepcopy(ti.signal),
        output=copy.deepcopy(ti.output),
        superseded_job=copy.deepcopy(ti.superseded_job),
    )


def _check_ti_fields(changes: Mapping[str, Any]) -> None:
    for name in changes:
        if name not in _TI_WRITABLE:
            raise ValueError(f"task instance has no writable field '{name}'")


@dataclass(frozen=True, slots=True)
class StoreChange:
    """One write as the tables' streams report it: ``kind`` "run" or "task", the record
    before (None when created) and after."""

    kind: str
    old: Any
    new: Any
    # The write was marked ``unheard`` (``Transition.unheard``): the deployed stream's
    # filter drops its record.
    unheard: bool = False


@dataclass(slots=True)
class _TaskItem:
    ti: TaskInstance
    due: str | None  # the place in the due index (absent: not in it)
    # False: a task of its run never written, read as its fresh instance (DynamoDB has
    # no item for it until its first write, which is an insert).
    written: bool = True


@dataclass(slots=True)
class _RunItem:
    run: DagRun  # counters, slots and throttled tasks are kept in the sets below
    finished: set[int] = field(default_factory=set)
    failed_leaves: set[int] = field(default_factory=set)
    # A big run's: each done group's counts of tasks and failed leaves, and the finish
    # tallies (group -> finished indexes, failed-leaf indexes), which feed no stream.
    finished_groups: dict[int, int] = field(default_factory=dict)
    failed_groups: dict[int, int] = field(default_factory=dict)
    tallies: dict[int, tuple[set[int], set[int]]] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    throttled: set[str] = field(default_factory=set)
    tasks_created: bool = False
    queued_key: str | None = None
    due: str | None = None  # the run's place in the runs' due index (absent: not in it)
    counted_at: datetime | None = None  # the last count's time (ports/store.py Arming)
    counts_all: bool = False

    def record(self) -> DagRun:
        return replace(
            self.run,
            conf=copy.deepcopy(self.run.conf),
            trigger=copy.deepcopy(self.run.trigger),
            finished_count=len(self.finished) + sum(self.finished_groups.values()),
            failed_leaves=len(self.failed_leaves) + sum(self.failed_groups.values()),
            finished_idx=frozenset(self.finished),
            failed_leaf_idx=frozenset(self.failed_leaves),
            active=frozenset(self.active),
            throttled=frozenset(self.throttled),
            tasks_created=self.tasks_created,
            counted_at=self.counted_at,
            counts_all=self.counts_all,
        )

    def arm(self, arming: Arming | None) -> None:
        """As the DynamoDB store's count arms its run (``Arming``)."""
        if arming is not None:
            self.due = self.due or iso(arming.look_at)
            self.counted_at = arming.counted_at

    def with_tally(self, group: FinishGroup | None) -> DagRun:
        """The run as ``get_with_run`` reads it with a big run's finish tally (as the
        DynamoDB store's: not when the tally holds the whole group and the run item does
        not count it done yet)."""
        run = self.record()
        if group is None or group.number not in self.tallies:
            return run
        done, failed = self.tallies[group.number]
        if len(done) >= group.size and group.number not in self.finished_groups:
            return run
        return replace(run, finished_idx=frozenset(done), failed_leaf_idx=frozenset(failed))


@dataclass(slots=True)
class _DagItem:
    dag_id: str
    # None: the item has no version attribute (a head a slot write created: see
    # MemoryDagRepository.reserve_run_slot); it reads as 0, but a condition on it fails.
    version: int | None = None
    current_version: int | None = None
    latest_version: int | None = None
    paused: bool = False
    source: str | None = None
    import_error: str | None = None
    active_runs: set[str] = field(default_factory=set)
    active_backfills: set[str] = field(default_factory=set)
    last_scheduled_end: datetime | None = None
    signal_sources: set[str] = field(default_factory=set)
    updated_at: datetime | None = None

    def record(self) -> DagRecord:
        return DagRecord(
            dag_id=self.dag_id,
            current_version=self.current_version,
            paused=self.paused,
            source=self.source,
            import_error=self.import_error,
            version=self.version or 0,
            active_runs=frozenset(self.active_runs),
            last_scheduled_end=self.last_scheduled_end,
            active_backfills=frozenset(self.active_backfills),
        )


@dataclass(frozen=True, slots=True)
class _DagVersion:
    spec_json: str
    source: str | None
    sha256: str | None
    created_at: datetime


@dataclass(slots=True)
class _StateItem:
    value: str  # JSON
    version: int
    updated_at: datetime
    expires_at: int  # epoch seconds, as the table's TTL attribute


class _Tables:
    """What the four repositories share: one lock over all items, and the change feed."""

    def __init__(self, record_changes: bool) -> None:
        self.lock = threading.RLock()
        self.record_changes = record_changes
        self.changes: deque[StoreChange] = deque()
        # The runs, here so that a DAG's slot release can check its run atomically.
        self.runs: dict[tuple[str, str], _RunItem] = {}
        # The task state by scope, here so that a try is read with its published output.
        self.state_scopes: dict[str, dict[str, _StateItem]] = {}
        # The task instances by run, here so that a slot's release can check its task.
        self.task_items: dict[tuple[str, str], dict[str, _TaskItem]] = {}
        # The task ids of a DAG version (the DAG repository's), for the instances of a
        # run's tasks never written.
        self.spec_tasks: Callable[[str, int], Collection[str]] | None = None

    def changed(self, kind: str, old: Any, new: Any, *, unheard: bool = False) -> None:
        # Like a stream, only a write that changes the record is news.
        if self.record_changes and old != new:
            self.changes.append(StoreChange(kind, old, new, unheard))


# --- task instances ------------------------------------------------------------------------


class MemoryTaskInstanceRepository:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables
        self._lock = tables.lock
        self._runs: dict[tuple[str, str], dict[str, _TaskItem]] = tables.task_items
        # A wide join's tally items: (dag, run, join, group) -> the item.
        self._tallies: dict[tuple[str, str, str, int], TallyMembers] = {}

    def put_new(self, tis: Iterable[TaskInstance]) -> None:
        with self._lock:
            for ti in tis:
                stored = _stored_ti(ti)
                due = indexed_due(stored)
                items = self._runs.setdefault((ti.dag_id, ti.run_id), {})
                old = items.get(ti.instance_id)
                items[ti.instance_id] = _TaskItem(stored, None if due is None else iso(due))
                self._changed(old.ti if old and old.written else None, stored)

    def get(self, dag_id: str, run_id: str, task_id: str) -> TaskInstance:
        found = self.find(dag_id, run_id, task_id)
        if found is None:
            raise NotFound(f"task instance {dag_id}/{run_id}/{task_id} not found")
        return found

    def find(self, dag_id: str, run_id: str, task_id: str) -> TaskInstance | None:
        with self._lock:
            item = self._item(dag_id, run_id, task_id)
            return None if item is None else _fresh_ti(item.ti)

    def get_many(self, dag_id: str, run_id: str, task_ids: Sequence[str]) -> list[TaskInstance]:
        with self._lock:
            found = (self._item(dag_id, run_id, task_id) for task_id in task_ids)
            return [_fresh_ti(item.ti) for item in found if item is not None]

    def get_with_output(
        self, dag_id: str, run_id: str, instance_id: str, try_number: int
    ) -> tuple[TaskInstance | None, Any]:
        with self._lock:
            scope = self._tables.state_scopes.get(output_scope(dag_id, run_id, instance_id), {})
            published = scope.get(output_key(try_number))
            value = None if published is None else loads(published.value)
            return self.find(dag_id, run_id, instance_id), value

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
        # Always consistent here: the reliability tests serve DynamoDB's stale reads.
        if len(set(downstream)) > WITH_TRY_LIMIT:
            raise ValueError(f"{len(downstream)} downstream tasks: at most {WITH_TRY_LIMIT}")
        with self._lock:
            scope = self._tables.state_scopes.get(output_scope(dag_id, run_id, instance_id), {})
            published = scope.get(output_key(try_number))
            item = self._tables.runs.get((dag_id, run_id))
            return TryRead(
                self.find(dag_id, run_id, instance_id),
                None if published is None else loads(published.value),
                None if item is None else item.record(),
                frozenset(downstream),
                {ti.instance_id: ti for ti in self.get_many(dag_id, run_id, downstream)},
            )

    def get_with_run(
        self,
        dag_id: str,
        run_id: str,
        task_ids: Sequence[str],
        finish_group: FinishGroup | None = None,
        *,
        instances_consistent: bool = True,
    ) -> tuple[DagRun | None, dict[str, TaskInstance]]:
        # Always consistent here: the reliability tests serve DynamoDB's stale reads.
        with self._lock:
            run = self._tables.runs.get((dag_id, run_id))
            return None if run is None else run.with_tally(finish_group), {
                ti.instance_id: ti for ti in self.get_many(dag_id, run_id, task_ids)
            }

    def list_for_run(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        with self._lock:
            for task_id in self._run_tasks(dag_id, run_id):
                self._item(dag_id, run_id, task_id)
            items = self._runs.get((dag_id, run_id), {})
            return [_fresh_ti(items[t].ti) for t in sorted(items)]

    def apply(
        self,
        ti: TaskInstance,
        transition: Transition,
        *,
        upstream: tuple[str, UpstreamReport] | None = None,
    ) -> TaskInstance:
        assert transition.task_id == ti.task_id
        changes = transition.changes_for(ti)
        new = transition.apply(ti)
        _check_ti_fields(changes)
        sources = task_sources(transition.dst, transition.cause)
        with self._lock:
            item = self._item(*ti.key)
            if (
                item is None
                or item.ti.state not in sources
                or item.ti.state is not transition.src
                or item.ti.version != transition.expected_version
            ):
                raise self._conflict(ti, item)
            place = item.due
            if upstream is not None:
                task_id, report = upstream
                assert ti.upstream.get(task_id) == report, "ti holds the report it writes"
                changes = {**changes, "upstream": {**item.ti.upstream, task_id: report}}
            self._write(
                item,
                new,
                state=new.state,
                version=new.version,
                unheard=transition.unheard,
                **changes,
            )
            due = indexed_due(new)
            if due is not None and keeps_due_place(ti, new) and place and place <= iso(due):
                item.due = place  # as the DynamoDB write leaves the index entry
        return new

    def report_upstream(
        self,
        downstream: TaskInstance | tuple[str, str, str],
        upstream_task: str,
        report: UpstreamReport,
        *,
        dag_version: int = 0,
    ) -> TaskInstance | None:
        key = downstream.key if isinstance(downstream, TaskInstance) else downstream
        if isinstance(downstream, TaskInstance):
            dag_version = downstream.dag_version
        with self._lock:
            item = self._item(*key)
            if item is None or not (item.written or dag_version):
                return None  # (as DynamoDB: a task never written, its version unknown)
            held = item.ti.upstream.get(upstream_task)
            if held is None or _replaces(report, held):
                return self._set_upstream(item, upstream_task, _report(report), report.slotted)
            return _fresh_ti(item.ti) if held == report else None

    def hold_slotted(
        self, key: tuple[str, str, str], *, dag_version: int = 0
    ) -> TaskInstance | None:
        with self._lock:
            item = self._item(*key)
            if item is None or not (item.written or dag_version):
                return None
            old = item.ti
            self._store(item, replace(old, slotted=True, version=old.version + 1))
            return _fresh_ti(item.ti)

    def retire_upstream(
        self, upstream: TaskInstance, downstream_tasks: Iterable[str]
    ) -> dict[str, TaskInstance]:
        tombstone = UpstreamReport.tombstone(upstream.version)
        retired: dict[str, TaskInstance] = {}
        with self._lock:
            for task_id in downstream_tasks:
                item = self._item(upstream.dag_id, upstream.run_id, task_id)
                if item is None or not (item.written or upstream.dag_version):
                    continue
                held = item.ti.upstream.get(upstream.task_id)
                if held is None or _replaces(tombstone, held):
                    retired[task_id] = self._set_upstream(item, upstream.task_id, tombstone)
        return retired

    def tell_tally(
        self, join: tuple[str, str, str], group: int, position: int, report: UpstreamReport
    ) -> TallyWrite | None:
        stored = _report(report)
        with self._lock:
            before = self._tallies.get((*join, group), TallyMembers())
            held = before.members.get(position)
            if held == stored:
                return TallyWrite(before, before, written=False)
            if held is not None and not _replaces(stored, held):
                return None
            after = TallyMembers(before.version + 1, {**before.members, position: stored})
            self._tallies[(*join, group)] = after
            return TallyWrite(before, after)

    def get_tally(
        self, join: tuple[str, str, str], group: int, *, consistent: bool = True
    ) -> TallyMembers:
        with self._lock:
            return self._tallies.get((*join, group), TallyMembers())

    def record_tally(
        self, join: tuple[str, str, str], group: int, tally: Tally, *, dag_version: int = 0
    ) -> TaskInstance | None:
        with self._lock:
            item = self._item(*join)
            if item is None or not (item.written or dag_version):
                return None
            held = item.ti.tallies.get(group)
            if held is None or held.version < tally.version:
                old = item.ti
                tallies = {**old.tallies, group: tally}
                self._store(item, replace(old, tallies=tallies, version=old.version + 1))
            return _fresh_ti(item.ti)

    def due(
        self, now: datetime, limit: int = 100, skip: Collection[tuple[str, str, str]] = ()
    ) -> list[TaskInstance]:
        bound = iso(now)
        with self._lock:
            found = [
                item
                for items in self._runs.values()
                for item in items.values()
                if item.due is not None
                and item.due <= bound
                and item.ti.key not in skip
                and looks_at_entry(from_iso(item.due), now)
            ]
            found.sort(key=lambda item: (item.due or "", item.ti.key))
            tis = [_fresh_ti(item.ti) for item in found]
        tis.sort(key=lambda ti: due_at(ti) or now)
        return tis[:limit]

    # As the DynamoDB store: a try found by key is in neither lookup index.
    def find_by_token(self, token: str) -> TaskInstance | None:
        return self._find_by(lambda ti: not ti.found_by_key and ti.dispatch_token == token)

    def find_by_job_id(self, job_id: str) -> TaskInstance | None:
        return self._find_by(lambda ti: not ti.found_by_key and ti.job_id == job_id)

    def postpone_due(self, ti: TaskInstance, until: datetime) -> bool:
        with self._lock:
            item = self._item(*ti.key)
            if (
                item is None
                or item.due is None
                or item.ti.state is not ti.state
                or item.ti.version != ti.version
            ):
                return False
            item.due = iso(until)
            return True

    def advance_report_cursor(self, ti: TaskInstance, told: int, now_told: int) -> bool:
        with self._lock:
            item = self._item(*ti.key)
            if item is None or (item.ti.state, item.ti.version) != (ti.state, ti.version):
                return False
            if item.ti.reported_version == ti.version and item.ti.reported > told:
                return False
            self._store(item, replace(item.ti, reported_version=ti.version, reported=now_told))
            return True

    def check_later(self, ti: TaskInstance, at: datetime) -> TaskInstance:
        return self._touch(ti, check_at=at)

    def note_signal(self, ti: TaskInstance, signal: Mapping[str, Any]) -> TaskInstance:
        return self._touch(ti, signal=dict(signal))

    def uncover(self, ti: TaskInstance) -> TaskInstance:
        return self._touch(ti, covered=False)

    # --- for_each ------------------------------------------------------------------------

    def list_instances(self, dag_id: str, run_id: str, task_id: str) -> list[TaskInstance]:
        prefix = map_key_prefix(task_id)
        with self._lock:
            items = self._runs.get((dag_id, run_id), {})
            return [_fresh_ti(items[k].ti) for k in sorted(items) if k.startswith(prefix)]

    def create_instances(self, tis: Sequence[TaskInstance]) -> int:
        written = 0
        with self._lock:
            for ti in tis:
                existing = self._item(*ti.key)
                if existing is not None and existing.ti.expansion >= ti.expansion:
                    continue
                self.put_new([ti])
                written += 1
        return written

    def release_instance(self, dag_id: str, run_id: str, key: str) -> TaskInstance | None:
        with self._lock:
            item = self._item(dag_id, run_id, key)
            if item is None:
                return None
            if item.ti.state is TaskState.PENDING and not item.ti.released:
                new = replace(item.ti, released=True, version=item.ti.version + 1)
                self._write(item, new, released=True, version=new.version)
            return _fresh_ti(item.ti) if item.ti.released else None

    def count_instance(self, ti: TaskInstance, *, failed: bool) -> bool:
        assert ti.map_index is not None
        with self._lock:
            item = self._item(*ti.key)
            mapped = self._item(ti.dag_id, ti.run_id, ti.task_id)
            if (
                item is None
                or mapped is None
                or item.ti.state is not ti.state
                or item.ti.version != ti.version
                or item.ti.counted == ti.version
                or mapped.ti.try_number != ti.expansion
            ):
                return False
            self._write(item, replace(item.ti, counted=ti.version), counted=ti.version)
            self._add_counts(mapped, 1, failed)
        return True

    def apply_uncounted(self, ti: TaskInstance, transition: Transition) -> TaskInstance:
        transition = replace(transition, changes={**transition.changes, "counted": None})
        with self._lock:
            new = self.apply(ti, transition)
            mapped = self._item(ti.dag_id, ti.run_id, ti.task_id)
            counted = ti.map_index is not None and ti.counted == ti.version
            if counted and mapped is not None and mapped.ti.try_number == ti.expansion:
                self._add_counts(mapped, -1, ti.state in FAILED_TASK_STATES)
        return new

    def _add_counts(self, mapped: _TaskItem, step: int, failed: bool) -> None:
        done = mapped.ti.map_done + step
        failures = mapped.ti.map_failed + (step if failed else 0)
        new = replace(mapped.ti, map_done=done, map_failed=failures)
        self._write(mapped, new, map_done=done, map_failed=failures)

    # --- internals -----------------------------------------------------------------------

    def _item(self, dag_id: str, run_id: str, task_id: str) -> _TaskItem | None:
        """The task's item; a task of the run never written reads as its fresh instance
        (an unwritten item, kept so that its first write inserts it)."""
        items = self._runs.get((dag_id, run_id))
        found = None if items is None else items.get(task_id)
        if found is not None or task_id not in self._run_tasks(dag_id, run_id):
            return found
        run = self._tables.runs[(dag_id, run_id)].run
        fresh = TaskInstance(dag_id, run_id, task_id, dag_version=run.dag_version)
        found = _TaskItem(_stored_ti(fresh), None, written=False)
        self._runs.setdefault((dag_id, run_id), {})[task_id] = found
        return found

    def _run_tasks(self, dag_id: str, run_id: str) -> Collection[str]:
        """The task ids of the run's pinned DAG version (none for a missing run)."""
        item = self._tables.runs.get((dag_id, run_id))
        if item is None or self._tables.spec_tasks is None:
            return ()
        try:
            return self._tables.spec_tasks(dag_id, item.run.dag_version)
        except NotFound:
            return ()

    def _store(self, item: _TaskItem, new: TaskInstance, *, unheard: bool = False) -> None:
        """Hold ``new`` as the item (its first write inserts it: no old image)."""
        old = item.ti if item.written else None
        item.ti, item.written = new, True
        self._changed(old, new, unheard=unheard)

    def _touch(self, ti: TaskInstance, **changes: Any) -> TaskInstance:
        new = replace(ti, version=ti.version + 1, **changes)
        _check_ti_fields(changes)
        with self._lock:
            item = self._item(*ti.key)
            if item is None or item.ti.state is not ti.state or item.ti.version != ti.version:
                raise self._conflict(ti, item)
            self._write(item, new, version=new.version, **changes)
        return new

    def _write(
        self, item: _TaskItem, new: TaskInstance, *, unheard: bool = False, **fields: Any
    ) -> None:
        """Set these fields on the stored item; its due place follows ``new`` (the record
        the writer computed), as the DynamoDB write derives it."""
        old = item.ti
        stored = {
            name: value if name in ("state", "version") else _ti_field(name, value)
            for name, value in fields.items()
        }
        due = indexed_due(new)
        item.due = None if due is None else iso(due)
        self._store(item, replace(old, **stored), unheard=unheard)

    def _set_upstream(
        self, item: _TaskItem, upstream_task: str, report: UpstreamReport, slotted: bool = False
    ) -> TaskInstance:
        old = item.ti
        upstream = {**old.upstream, upstream_task: report}
        slotted = slotted or old.slotted
        self._store(item, replace(old, upstream=upstream, version=old.version + 1, slotted=slotted))
        return _fresh_ti(item.ti)

    def _find_by(self, matches: Callable[[TaskInstance], bool]) -> TaskInstance | None:
        with self._lock:
            for (_, _), items in sorted(self._runs.items()):
                for task_id in sorted(items):
                    if matches(items[task_id].ti):
                        return _fresh_ti(items[task_id].ti)
        return None

    def _conflict(self, ti: TaskInstance, item: _TaskItem | None) -> ConflictError[TaskInstance]:
        current = None if item is None else _fresh_ti(item.ti)
        state = current.state.value if current else "missing"
        version = current.version if current else None
        return ConflictError[TaskInstance](
            f"task {ti.dag_id}/{ti.run_id}/{ti.instance_id}: expected {ti.state.value} "
            f"v{ti.version}, found {state} v{version}",
            current,
        )

    def _changed(
        self, old: TaskInstance | None, new: TaskInstance, *, unheard: bool = False
    ) -> None:
        if self._tables.record_changes:
            self._tables.changed("task", old and _fresh_ti(old), _fresh_ti(new), unheard=unheard)


# --- runs ----------------------------------------------------------------------------------


class MemoryRunRepository:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables
        self._lock = tables.lock
        self._runs: dict[tuple[str, str], _RunItem] = tables.runs

    def create(self, run: DagRun) -> bool:
        stored = DagRun(
            dag_id=run.dag_id,
            run_id=run.run_id,
            dag_version=int(run.dag_version),
            run_type=RunType(run.run_type),
            state=RunState(run.state),
            version=int(run.version),
            conf=_json(dict(run.conf)) or {},
            logical_date=_utc(run.logical_date),
            data_interval_start=_utc(run.data_interval_start),
            data_interval_end=_utc(run.data_interval_end),
            trigger=None if run.trigger is None else _json(dict(run.trigger)),
            created_at=_utc(run.created_at),
            backfill_limit=None if run.backfill_limit is None else int(run.backfill_limit),
        )
        with self._lock:
            if (run.dag_id, run.run_id) in self._runs:
                return False
            item = _RunItem(stored)
            item.tasks_created = run.tasks_created
            if run.state is RunState.QUEUED and run.tasks_created:
                item.queued_key = queued_key(run)
            self._runs[(run.dag_id, run.run_id)] = item
            self._tables.changed("run", None, item.record())
        return True

    def get(self, dag_id: str, run_id: str) -> DagRun:
        found = self.find(dag_id, run_id)
        if found is None:
            raise NotFound(f"run {dag_id}/{run_id} not found")
        return found

    def find(self, dag_id: str, run_id: str) -> DagRun | None:
        with self._lock:
            item = self._runs.get((dag_id, run_id))
            return None if item is None else item.record()

    def list_for_dag(self, dag_id: str, limit: int | None = None) -> list[DagRun]:
        with self._lock:
            ids = sorted((r for d, r in self._runs if d == dag_id), reverse=True)
            return [self._runs[(dag_id, r)].record() for r in ids[:limit]]

    def list_between(self, dag_id: str, start: datetime, end: datetime) -> list[DagRun]:
        lower, upper = start.astimezone(UTC), end.astimezone(UTC)
        with self._lock:
            return [
                item.record()
                for (d, _), item in sorted(self._runs.items())
                if d == dag_id
                and item.run.logical_date is not None
                and lower <= item.run.logical_date <= upper
            ]

    def transition(
        self, run: DagRun, dst: RunState, cause: Cause, *, disarm: bool = False, **changes: Any
    ) -> DagRun:
        sources = run_sources(dst, cause)
        if run.state not in sources:
            raise ValueError(f"run {run.run_id}: {run.state.value} -> {dst.value} not allowed")
        for name in changes:
            if name not in _RUN_WRITABLE:
                raise ValueError(f"run has no writable field '{name}'")
        stored: dict[str, Any] = {
            name: _utc(value) if name in _RUN_TIME_FIELDS else value
            for name, value in changes.items()
        }
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is None or item.run.state not in sources or item.run.version != run.version:
                current = None if item is None else item.record()
                raise ConflictError[DagRun](
                    f"run {run.dag_id}/{run.run_id}: expected {run.state.value} v{run.version}, "
                    f"found {current.state.value if current else 'missing'} "
                    f"v{current.version if current else None}",
                    current,
                )

            def write() -> None:
                if "tasks_created" in stored:  # kept beside the run, as ``record`` reads it
                    item.tasks_created = bool(stored.pop("tasks_created"))
                if "counts_all" in stored:  # (the same)
                    item.counts_all = bool(stored.pop("counts_all"))
                if "counted_at" in stored:  # (the same)
                    item.counted_at = stored.pop("counted_at")
                item.run = replace(item.run, state=dst, version=run.version + 1, **stored)
                item.queued_key = queued_key(run) if dst is RunState.QUEUED else None
                if disarm:
                    item.due = None

            self._write(item, write)
        return replace(run, state=dst, version=run.version + 1, **changes)

    def mark_tasks_created(self, run: DagRun) -> None:
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is not None and item.run.state is RunState.QUEUED:
                item.tasks_created = True
                item.queued_key = queued_key(run)

    def tasks_created(self, run: DagRun) -> bool:
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is None:
                raise NotFound(f"run {run.dag_id}/{run.run_id} not found")
            return item.tasks_created

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
        with self._lock:
            item = self._runs.get((ti.dag_id, ti.run_id))
            if item is None:
                raise NotFound(f"run {ti.dag_id}/{ti.run_id} not found")
            complete = False
            if group is not None:
                done, failed = item.tallies.setdefault(group.number, (set(), set()))
                done.add(index)
                if failed_leaf:
                    failed.add(index)
                complete = len(done) >= group.size
                if not complete and not release:
                    return None

            def write() -> None:
                if group is None:
                    item.finished.add(index)
                    if failed_leaf:
                        item.failed_leaves.add(index)
                    item.arm(arming)
                elif complete:
                    done, failed = item.tallies[group.number]
                    item.finished_groups[group.number] = len(done)
                    item.failed_groups.pop(group.number, None)
                    if failed:
                        item.failed_groups[group.number] = len(failed)
                item.throttled.discard(ti.instance_id)
                item.run = replace(item.run, version=item.run.version + 1)
                # The slot, if any, is freed only when it is this try's.
                if item.active.get(ti.instance_id, ti.try_number) == ti.try_number:
                    item.active.pop(ti.instance_id, None)

            self._write(item, write)
            return item.with_tally(group)

    def count_all_finishes(self, run: DagRun, indices: Collection[int]) -> None:
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is None:
                raise NotFound(f"run {run.dag_id}/{run.run_id} not found")

            def write() -> None:
                item.finished.update(indices)
                item.counts_all = True
                item.run = replace(item.run, version=item.run.version + 1)

            self._write(item, write)

    def forget_finished(self, run: DagRun, index: int, group: FinishGroup | None = None) -> None:
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is None:
                return

            def write() -> None:
                if group is None:
                    item.finished.discard(index)
                    item.failed_leaves.discard(index)
                else:
                    item.finished_groups.pop(group.number, None)
                    item.failed_groups.pop(group.number, None)
                item.run = replace(item.run, version=item.run.version + 1)

            self._write(item, write)
            if group is not None and group.number in item.tallies:
                done, failed = item.tallies[group.number]
                done.discard(index)
                failed.discard(index)

    def reserve_task_slot(
        self, run: DagRun, ti: TaskInstance, try_number: int, max_active: int
    ) -> bool:
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is None or item.run.state is not RunState.RUNNING:
                return False
            if len(item.active) >= max_active and ti.instance_id not in item.active:
                return False

            self._write(item, lambda: item.active.__setitem__(ti.instance_id, try_number))
            return True

    def hand_over_task_slot(
        self,
        finished: TaskInstance,
        child: TaskInstance,
        try_number: int,
        *,
        index: int | None,
        arming: Arming | None = None,
    ) -> DagRun | None:
        with self._lock:
            item = self._runs.get((finished.dag_id, finished.run_id))
            if item is None or item.run.state is not RunState.RUNNING:
                return None
            if item.active.get(finished.instance_id) != finished.try_number:
                return None

            def write() -> None:
                item.active.pop(finished.instance_id)
                item.active[child.instance_id] = try_number
                item.throttled.discard(finished.instance_id)
                if index is not None:
                    item.finished.add(index)
                    item.arm(arming)
                item.run = replace(item.run, version=item.run.version + 1)

            self._write(item, write)
            return item.record()

    def release_orphaned_slot(self, ti: TaskInstance) -> bool:
        with self._lock:
            item = self._runs.get((ti.dag_id, ti.run_id))
            task = self._tables.task_items.get((ti.dag_id, ti.run_id), {}).get(ti.instance_id)
            if item is None or task is None:
                return False
            if (task.ti.state, task.ti.try_number) != (ti.state, ti.try_number):
                return False
            if item.active.get(ti.instance_id) != ti.try_number + 1:
                return False
            self._write(item, lambda: item.active.pop(ti.instance_id))
            return True

    def drop_throttled(self, run: DagRun, task_id: str) -> None:
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is not None:
                self._write(item, lambda: item.throttled.discard(task_id))

    def release_task_slot(self, ti: TaskInstance) -> bool:
        with self._lock:
            item = self._runs.get((ti.dag_id, ti.run_id))
            if item is None or item.active.get(ti.instance_id) != ti.try_number:
                return False
            self._write(item, lambda: item.active.pop(ti.instance_id))
            return True

    def add_throttled(self, run: DagRun, task_id: str) -> None:
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is not None:
                self._write(item, lambda: item.throttled.add(task_id))

    def queued_runs(self, dag_id: str, limit: int) -> list[tuple[str, str]]:
        with self._lock:
            queued = sorted(
                (item.queued_key, run_id)
                for (d, run_id), item in self._runs.items()
                if d == dag_id and item.queued_key is not None
            )
        return [(dag_id, run_id) for _, run_id in queued[:limit]]

    def due(self, now: datetime, limit: int = 100) -> list[DagRun]:
        bound = iso(now)
        with self._lock:
            found = sorted(
                (item.due, key)
                for key, item in self._runs.items()
                if item.due is not None and item.due <= bound
            )
            return [self._runs[key].record() for _, key in found[:limit]]

    def arm(self, ti: TaskInstance, arming: Arming) -> None:
        with self._lock:
            item = self._runs.get((ti.dag_id, ti.run_id))
            if item is not None:
                item.arm(arming)

    def disarm(self, run: DagRun, quiet_since: datetime) -> bool:
        with self._lock:
            item = self._runs.get((run.dag_id, run.run_id))
            if item is None or item.due is None or item.run.version != run.version:
                return False
            if item.counted_at is not None and item.counted_at > quiet_since:
                return False
            item.due = None
            return True

    def _write(self, item: _RunItem, write: Callable[[], object]) -> None:
        old = item.record() if self._tables.record_changes else None
        write()
        if self._tables.record_changes:
            self._tables.changed("run", old, item.record())


# --- DAGs ----------------------------------------------------------------------------------


class MemoryDagRepository:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables
        self._lock = tables.lock
        self._heads: dict[str, _DagItem] = {}
        self._versions: dict[tuple[str, int], _DagVersion] = {}
        self._specs: SpecCache[tuple[str, int], DagSpec] = SpecCache()
        self._emit_sources: dict[str, str] = {}  # prefix -> the DAG that holds it
        # "sub:<source>" -> dag -> {"v": version, "subs": JSON list of [task, kind, pattern]}
        self._subscriptions: dict[str, dict[str, dict[str, Any]]] = {}

    def get(self, dag_id: str) -> DagRecord:
        found = self.find(dag_id)
        if found is None:
            raise NotFound(f"DAG '{dag_id}' not found")
        return found

    def find(self, dag_id: str) -> DagRecord | None:
        with self._lock:
            head = self._heads.get(dag_id)
            return None if head is None else head.record()

    def save_version(
        self, spec: DagSpec, *, source: str | None, sha256: str | None, now: datetime
    ) -> int:
        check_signal_index(spec)
        spec_json = spec.model_dump_json(by_alias=True, exclude_none=True)
        with self._lock:
            # The same steps as the DynamoDB repository, which numbers versions by
            # conditional writes: here they cannot race, but an orphaned version item
            # (a loader that died between its two writes) blocks the number the same way.
            for _ in range(10):
                head = self._heads.get(spec.dag)
                latest = head.latest_version if head is not None else None
                number = int(latest or (head.current_version if head else 0) or 0) + 1
                if (spec.dag, number) in self._versions:
                    continue
                self._versions[(spec.dag, number)] = _DagVersion(
                    spec_json, source, sha256, _utc(now) or now
                )
                if head is not None and head.version is None:
                    continue  # the head's version condition fails on a missing version
                if head is None:
                    head = self._heads[spec.dag] = _DagItem(spec.dag)
                previous = set(head.signal_sources)
                head.current_version = number
                head.source = source or None
                head.import_error = None
                head.version = (head.version or 0) + 1
                head.updated_at = _utc(now)
                head.latest_version = number
                head.signal_sources = signal_sources(spec)
                self._index_signals(spec.dag, number, spec, previous)
                return number
            raise ConflictError[DagRecord](
                f"DAG '{spec.dag}': too many concurrent uploads", self.find(spec.dag)
            )

    def retire(self, dag_id: str, *, now: datetime) -> DagRecord | None:
        with self._lock:
            head = self._heads.get(dag_id)
            if head is None:
                return None
            previous = set(head.signal_sources)
            head.current_version = None
            head.signal_sources = set()
            head.version = (head.version or 0) + 1
            head.updated_at = _utc(now)
            self._index_signals(dag_id, int(head.latest_version or 0) + 1, None, previous)
            return head.record()

    def hold_emit_sources(self, dag_id: str, prefixes: Sequence[str]) -> dict[str, tuple[str, str]]:
        with self._lock:
            clashes = emit_source_conflicts(dag_id, prefixes, self._emit_sources)
            if clashes:
                return clashes
            held = {p: d for p, d in self._emit_sources.items() if d != dag_id}
            held.update(dict.fromkeys(prefixes, dag_id))
            self._emit_sources = held
            return {}

    def subscriptions(self, source: str) -> list[Subscription]:
        keys = dict.fromkeys([f"sub:{source}", f"sub:{ANY_SOURCE}"])
        found: list[Subscription] = []
        with self._lock:
            for key in keys:
                entries = self._subscriptions.get(key, {})
                for dag_id, entry in sorted(entries.items()):
                    for task_id, kind, pattern in loads(entry["subs"]):
                        found.append(Subscription(dag_id, int(entry["v"]), task_id, kind, pattern))
        found.sort(key=lambda sub: (sub.dag_id, sub.task_id or "", sub.kind))
        return found

    def aws_subscriptions(self) -> list[Subscription]:
        with self._lock:
            found = [
                Subscription(dag_id, int(entry["v"]), task_id, kind, pattern)
                for key, entries in self._subscriptions.items()
                if key.startswith(f"sub:{AWS_SOURCE_PREFIX}")
                for dag_id, entry in entries.items()
                for task_id, kind, pattern in loads(entry["subs"])
            ]
        found.sort(key=lambda sub: (sub.dag_id, sub.task_id or "", sub.kind, dumps(sub.pattern)))
        return found

    def cached_spec(self, dag_id: str, version: int) -> DagSpec | None:
        with self._lock:
            return self._specs.get((dag_id, version))

    def load_spec(self, dag_id: str, version: int) -> DagSpec:
        with self._lock:
            cached = self._specs.get((dag_id, version))
            if cached is not None:
                return cached
            stored = self._versions.get((dag_id, version))
            if stored is None:
                raise NotFound(f"DAG '{dag_id}' version {version} not found")
            spec = DagSpec.model_validate_json(stored.spec_json)
            self._specs.put((dag_id, version), spec, len(stored.spec_json))
            return spec

    def set_paused(self, dag_id: str, paused: bool) -> None:
        with self._lock:
            head = self._heads.get(dag_id)
            if head is None:
                raise NotFound(f"DAG '{dag_id}' not found")
            head.paused = paused
            head.version = (head.version or 0) + 1

    def reserve_run_slot(
        self, dag_id: str, run_id: str, max_active_runs: int, backfill_limit: int | None = None
    ) -> bool:
        def full(slots: set[str], limit: int) -> bool:
            # DynamoDB keeps no empty set: no runs at all is room, whatever the maximum.
            return bool(slots) and len(slots) >= limit and run_id not in slots

        with self._lock:
            head = self._heads.get(dag_id)
            if head is not None and (
                head.paused
                or full(head.active_runs, max_active_runs)
                or (backfill_limit is not None and full(head.active_backfills, backfill_limit))
            ):
                return False
            # Like DynamoDB's UpdateItem, a write on a missing DAG leaves a head behind.
            self._head(dag_id).active_runs.add(run_id)
            if backfill_limit is not None:
                self._head(dag_id).active_backfills.add(run_id)
            return True

    def release_run_slot(self, run: DagRun) -> bool:
        with self._lock:
            item = self._tables.runs.get((run.dag_id, run.run_id))
            if item is None or (item.run.state, item.run.ended_at) != (run.state, run.ended_at):
                return False
            self._head(run.dag_id).active_runs.discard(run.run_id)
            self._head(run.dag_id).active_backfills.discard(run.run_id)
            return True

    def advance_schedule(self, dag_id: str, expected: datetime | None, new_end: datetime) -> bool:
        with self._lock:
            head = self._heads.get(dag_id)
            current = head.last_scheduled_end if head is not None else None
            if current != _utc(expected):
                return False
            self._head(dag_id).last_scheduled_end = _utc(new_end)
            return True

    # --- internals -----------------------------------------------------------------------

    def _head(self, dag_id: str) -> _DagItem:
        """The head, or a key-only one as an unconditional UpdateItem creates."""
        head = self._heads.get(dag_id)
        if head is None:
            head = self._heads[dag_id] = _DagItem(dag_id)
        return head

    def _index_signals(
        self, dag_id: str, number: int, spec: DagSpec | None, previous: set[str]
    ) -> None:
        grouped: dict[str, list[list[Any]]] = {}
        for task_id, kind, pattern in spec.iter_signal_patterns() if spec else ():
            for source in pattern_sources(pattern):
                grouped.setdefault(source, []).append([task_id, kind, pattern])
        for source in sorted(set(grouped) | previous):
            subs = grouped.get(source)
            value = {"v": number, "subs": dumps(subs)} if subs else None
            self._write_subscription(f"sub:{source}", dag_id, number, value)

    def _write_subscription(
        self, key: str, dag_id: str, number: int, value: dict[str, Any] | None
    ) -> None:
        """Set (or remove) one DAG's entry under one source, unless a newer version of
        that DAG wrote there."""
        entries = self._subscriptions.get(key)
        held = entries.get(dag_id) if entries is not None else None
        if value is None:
            if entries is not None and held is not None and int(held["v"]) < number:
                del entries[dag_id]
            return
        if entries is None:
            self._subscriptions[key] = {dag_id: dict(value)}
        elif held is None or int(held["v"]) < number:
            entries[dag_id] = dict(value)


# --- task state ----------------------------------------------------------------------------


class MemoryTaskStateRepository:
    def __init__(self, tables: _Tables, default_ttl: timedelta = timedelta(days=90)) -> None:
        self._lock = tables.lock
        self.default_ttl = default_ttl
        self._scopes = tables.state_scopes

    def get(self, scope: str, key: str) -> tuple[Any, int] | None:
        with self._lock:
            item = self._scopes.get(scope, {}).get(key)
            return None if item is None else (loads(item.value), item.version)

    def get_all(self, scope: str) -> dict[str, Any]:
        with self._lock:
            items = self._scopes.get(scope, {})
            return {key: loads(items[key].value) for key in sorted(items)}

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
        check_key(key)  # the same rule as jobs' skydag.taskstate
        if ttl:  # none or zero: the default
            check_ttl(ttl)
        if expected_version is None:
            return put_last_writer_wins(self, scope, key, value, now=now, ttl=ttl)
        expires = now + (ttl or self.default_ttl)
        if expires.tzinfo is None:
            raise ValueError("datetime must be timezone-aware")  # as the TTL attribute says
        stored = _StateItem(dumps(value), expected_version + 1, _utc(now) or now, 0)
        stored.expires_at = int(expires.timestamp())
        with self._lock:
            items = self._scopes.setdefault(scope, {})
            held = items.get(key)
            if (held is None) != (expected_version == 0) or (
                held is not None and held.version != expected_version
            ):
                raise ConflictError[Any](
                    f"task state {scope}/{key}: version {expected_version} is stale",
                    self.get(scope, key),
                )
            items[key] = stored
        return stored.version

    def delete_scope(self, scope: str) -> int:
        with self._lock:
            return len(self._scopes.pop(scope, {}))

    # --- what the table shows besides the port -----------------------------------------

    def expires_at(self, scope: str, key: str) -> int | None:
        """The item's TTL attribute: epoch seconds after which DynamoDB may delete it."""
        with self._lock:
            item = self._scopes.get(scope, {}).get(key)
            return None if item is None else item.expires_at

    def sweep_expired(self, now: datetime) -> int:
        """Delete what DynamoDB's TTL sweeper may have deleted by ``now``."""
        moment = now.timestamp()
        removed = 0
        with self._lock:
            for items in self._scopes.values():
                for key in [k for k, item in items.items() if item.expires_at < moment]:
                    del items[key]
                    removed += 1
        return removed


class MemoryStore:
    """The in-memory store: the four repositories over one lock."""

    def __init__(
        self, task_state_ttl: timedelta = timedelta(days=90), *, record_changes: bool = False
    ) -> None:
        self._tables = _Tables(record_changes)
        self.dags = MemoryDagRepository(self._tables)
        self._tables.spec_tasks = lambda dag_id, version: self.dags.load_spec(dag_id, version).tasks
        self.runs = MemoryRunRepository(self._tables)
        self.tasks = MemoryTaskInstanceRepository(self._tables)
        self.state = MemoryTaskStateRepository(self._tables, task_state_ttl)

    def take_changes(self) -> list[StoreChange]:
        """The run and task-instance changes since the last call, in write order (what
        the tables' streams deliver; ``record_changes=True`` keeps them)."""
        with self._tables.lock:
            taken = list(self._tables.changes)
            self._tables.changes.clear()
        return taken

    def sweep_expired(self, now: datetime) -> int:
        return self.state.sweep_expired(now)


def _keeps_the_store_ports(store: MemoryStore) -> Store:
    """Type-checked only: the in-memory store satisfies ``skydag.ports.store.Store``."""
    return store


__all__ = ["MemoryStore", "StoreChange"]
