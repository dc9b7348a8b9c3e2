"""Repositories: the only code that reads and writes skydag's tables.

Every state write is conditional on the expected state and version; the allowed source
states come from the transition table, so the table is enforced by DynamoDB itself.
A lost race raises ConflictError carrying the item as it is now.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition, size
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

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
    split_instance_key,
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
    AWS_SOURCES_KEY,
    EMIT_SOURCES_KEY,
    WITH_RUN_LIMIT,
    WITH_TRY_LIMIT,
    Arming,
    Store,
    Subscription,
    TryRead,
    due_at,
    finish_scope,
    indexed_due,
    instance_scope,
    keeps_due_place,
    output_key,
    output_scope,
    tally_scope,
    task_scope,
)
from skydag.sources import AWS_SOURCE_PREFIX
from skydag.spec.emit_sources import conflicts as emit_source_conflicts
from skydag.spec.models import DagSpec
from skydag.store.common import TI_JSON_FIELDS as _TI_JSON_FIELDS
from skydag.store.common import TI_PLAIN_FIELDS as _TI_PLAIN_FIELDS
from skydag.store.common import (
    check_signal_index,
    from_iso,
    put_last_writer_wins,
    run_key,
    signal_sources,
    subscriptions_by_source,
)
from skydag.store.common import dumps as _dumps
from skydag.store.common import iso as _iso
from skydag.store.common import loads as _loads
from skydag.store.common import queued_key as _queued_key
from skydag.store.errors import ConflictError, NotFound, StoreError, is_condition_failure
from skydag.store.models import (
    DUE_SHARDS,
    AwsSourcesModel,
    DagModel,
    DagVersionModel,
    EmitSourcesModel,
    FinishTallyModel,
    RunModel,
    SignalSubscriptionModel,
    TallyModel,
    TaskInstanceModel,
    TaskStateModel,
)
from skydag.store.spec_objects import SpecCache, SpecObjectError, SpecPointer, spec_objects
from skydag.taskstate import check_key, check_ttl

TaskConflict = ConflictError[TaskInstance]
RunConflict = ConflictError[DagRun]
DagConflict = ConflictError[DagRecord]


# --- task instances ------------------------------------------------------------------------


def _due_place(ti: TaskInstance) -> tuple[str, str] | None:
    """The record's place in the due index (shard, time), None when it has none. The shard
    spreads the index over a few partitions (the reconciler queries them all); it is a
    hash of the instance's key, so it never changes and only the time can move the entry."""
    due = indexed_due(ti)
    if due is None:
        return None
    return _due_shard(f"{ti.dag_id}/{ti.run_id}/{ti.instance_id}"), _iso(due)


def _due_shard(key: str) -> str:
    """A due index's partition for an item: a hash of its key, so it never changes."""
    return f"due#{zlib.crc32(key.encode()) % DUE_SHARDS}"


def _run_due_place(dag_id: str, run_id: str, at: datetime) -> tuple[str, str]:
    """A run's place in its table's due index (shard, time), as ``_due_place``'s."""
    return _due_shard(f"{dag_id}/{run_id}"), _iso(at)


def _earliest_due(
    index: Any,
    due_attribute: Any,
    now: datetime,
    limit: int,
    key_of: Callable[[Any], tuple[str, str]],
    *,
    select: Callable[[tuple[str, str], str], bool] | None = None,
) -> list[tuple[str, str]]:
    """The item keys of a sharded due index's earliest ``limit`` entries due by ``now``
    that ``select`` (key, place) keeps, if given (a query per shard, paged past the
    entries it leaves: keys only, about 100 bytes each; the index lags behind its table:
    the caller reads the items)."""
    bound = _iso(now)
    entries: list[tuple[str, tuple[str, str]]] = []
    for shard in range(DUE_SHARDS):
        kept = 0
        query = index.query(f"due#{shard}", due_attribute <= bound, page_size=limit)
        for entry in query:
            key, place = key_of(entry), entry.due_at or ""
            if select is not None and not select(key, place):
                continue
            entries.append((place, key))
            kept += 1
            if kept >= limit:
                break
    return [key for _, key in sorted(entries)[:limit]]


def _arming_actions(ti: TaskInstance, arming: Arming | None) -> list[Action]:
    """A count's arming of its run (``Arming``): the due entry unless armed already (then
    it stays where it is, and costs no index write), and the count's time."""
    if arming is None:
        return []
    shard, at = _run_due_place(ti.dag_id, ti.run_id, arming.look_at)
    return [
        RunModel.due_shard.set(RunModel.due_shard | shard),
        RunModel.due_at.set(RunModel.due_at | at),
        RunModel.counted_at.set(_iso(arming.counted_at)),
    ]


# BatchGetItem takes at most 100 keys; keys it leaves unprocessed (throttling) are asked
# for again after a pause that doubles, this many times at most.
BATCH_GET_LIMIT = 100
BATCH_GET_ATTEMPTS = 8
BATCH_GET_FIRST_PAUSE = 0.05  # seconds
_sleep = time.sleep  # tests replace it


def _read_items(
    keys: Sequence[tuple[str, str]], *, consistent: bool = True
) -> dict[tuple[str, str], TaskInstanceModel]:
    """Task instance items by (run_key, task_id): BatchGetItem in pages of 100
    (``_batch_get_tables``). A key with no item is left out."""
    table = TaskInstanceModel.Meta.table_name
    assert table is not None
    found: dict[tuple[str, str], TaskInstanceModel] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), BATCH_GET_LIMIT):
        page = [
            {"run_key": {"S": key}, "task_id": {"S": task_id}}
            for key, task_id in unique[start : start + BATCH_GET_LIMIT]
        ]
        eventually = () if consistent else (table,)
        for raw in _batch_get_tables({table: page}, "task instances", eventually)[table]:
            item = TaskInstanceModel.from_raw_data(raw)
            found[(item.run_key, item.task_id)] = item
    return found


def _read_run_and_items(
    dag_id: str,
    run_id: str,
    task_ids: Sequence[str],
    finish_group: int | None = None,
    output: tuple[str, int] | None = None,
    *,
    instances_consistent: bool = True,
) -> tuple[RunModel | None, dict[str, TaskInstanceModel], FinishTallyModel | None, Any]:
    """The run's item, these task-instance items, a finish tally and what a try's job
    published (``output``: its instance and try), in one BatchGetItem (the instances
    eventually consistently unless ``instances_consistent``, the rest consistently)."""
    runs, tasks = RunModel.Meta.table_name, TaskInstanceModel.Meta.table_name
    state = FinishTallyModel.Meta.table_name
    assert runs is not None
    assert tasks is not None
    assert state is not None
    key = run_key(dag_id, run_id)
    keys = {runs: [{"dag_id": {"S": dag_id}, "run_id": {"S": run_id}}]}
    if task_ids:
        unique = dict.fromkeys(task_ids)
        keys[tasks] = [{"run_key": {"S": key}, "task_id": {"S": t}} for t in unique]
    finish, published = finish_scope(dag_id, run_id), None
    if finish_group is not None:
        keys[state] = [{"scope": {"S": finish}, "key": {"S": str(finish_group)}}]
    if output is not None:
        published = output_scope(dag_id, run_id, output[0])
        wanted = {"scope": {"S": published}, "key": {"S": output_key(output[1])}}
        keys.setdefault(state, []).append(wanted)
    eventually = () if instances_consistent else (tasks,)
    found = _batch_get_tables(keys, f"run {dag_id}/{run_id} and its task instances", eventually)
    run = next((RunModel.from_raw_data(raw) for raw in found.get(runs, [])), None)
    items = (TaskInstanceModel.from_raw_data(raw) for raw in found.get(tasks, []))
    states = found.get(state, [])
    tally = next(
        (FinishTallyModel.from_raw_data(r) for r in states if r["scope"]["S"] == finish), None
    )
    value = next(
        (TaskStateModel.from_raw_data(r) for r in states if r["scope"]["S"] == published), None
    )
    return (
        run,
        {item.task_id: item for item in items},
        tally,
        None if value is None else _loads(value.value),
    )


def _with_finish_tally(run: RunModel, tally: FinishTallyModel | None, group: FinishGroup) -> DagRun:
    """A big run as ``finish_counted`` judges a finish of one group: its tally's indexes,
    unless the tally holds the whole group and the run item does not count it done yet
    (a count cut short between the two writes: counting again finishes it)."""
    read = _run_from_model(run)
    if tally is None:
        return read
    done = frozenset(int(i) for i in tally.done or ())
    counted = run.finished_groups is not None and str(group.number) in run.finished_groups.as_dict()
    if len(done) >= group.size and not counted:
        return read
    failed = frozenset(int(i) for i in tally.failed or ())
    return replace(read, finished_idx=done, failed_leaf_idx=failed)


def _batch_get_tables(
    keys: Mapping[str, list[dict[str, Any]]], what: str, eventually: Collection[str] = ()
) -> dict[str, list[dict[str, Any]]]:
    """Raw items of several tables (by table name) in one BatchGetItem, strongly
    consistent but for the tables named in ``eventually`` (half the read units), at most
    100 keys in all; keys it leaves unprocessed (throttling) are asked for again after a pause that
    doubles, ``BATCH_GET_ATTEMPTS`` times at most, then StoreError (nothing is dropped).
    PynamoDB's batch read is one table's: the models' client takes them all."""
    pending: dict[str, Any] = {
        table: {"Keys": table_keys, "ConsistentRead": table not in eventually}
        for table, table_keys in keys.items()
    }
    client = TaskInstanceModel._get_connection().connection.client
    found: dict[str, list[dict[str, Any]]] = {table: [] for table in keys}
    pause = BATCH_GET_FIRST_PAUSE
    for attempt in range(BATCH_GET_ATTEMPTS):
        if attempt:
            _sleep(pause)
            pause *= 2
        response = client.batch_get_item(RequestItems=pending)
        for table, raws in response.get("Responses", {}).items():
            found.setdefault(table, []).extend(raws)
        pending = response.get("UnprocessedKeys") or {}
        if not pending:
            return found
    raise StoreError(
        f"{what}: keys still unprocessed after {BATCH_GET_ATTEMPTS} BatchGetItem attempts "
        "(throttled)"
    )


# An upstream report is stored as one number, version * 16 + state code, not as a map:
# a task with hundreds of upstreams stays small, and "older" is a plain comparison.
# The codes are part of the stored format: append new states, never reorder. The last
# code is no state: it marks a clear's tombstone, which sorts above every report of its
# version and below every report of a later one.
_STATE_ORDER: tuple[TaskState, ...] = (
    TaskState.PENDING,
    TaskState.WAITING,
    TaskState.QUEUED,
    TaskState.RUNNING,
    TaskState.SUCCESS,
    TaskState.FAILED,
    TaskState.UP_FOR_RETRY,
    TaskState.STOPPED,
    TaskState.UPSTREAM_FAILED,
    TaskState.SKIPPED,
)
_STATE_CODES = 16
_TOMBSTONE_CODE = _STATE_CODES - 1
_CODE_OF = {state: code for code, state in enumerate(_STATE_ORDER)}


def _encode_report(report: UpstreamReport) -> int:
    code = _TOMBSTONE_CODE if report.cleared else _CODE_OF[report.state]
    return report.version * _STATE_CODES + code


def _decode_report(value: Any) -> UpstreamReport:
    version, code = divmod(int(value), _STATE_CODES)
    if code == _TOMBSTONE_CODE:
        return UpstreamReport.tombstone(version)
    return UpstreamReport(_STATE_ORDER[code], version)


# A wide join's summary of a tally group, as one string whose order is the version's: a
# zero-padded version, then the count of each finished state by its report code.
_TALLY_VERSION_DIGITS = 12


def _tally_version_bound(version: int) -> str:
    """Every stored summary of an older version sorts below this; none of ``version``."""
    return f"{version:0{_TALLY_VERSION_DIGITS}d}"


def _encode_tally(tally: Tally) -> str:
    counts = ",".join(
        f"{_CODE_OF[state]}:{count}"
        for state, count in sorted(tally.counts.items(), key=lambda entry: _CODE_OF[entry[0]])
        if count
    )
    return f"{_tally_version_bound(tally.version)}|{counts}"


def _decode_tally(value: Any) -> Tally:
    version, _, counts = str(value).partition("|")
    decoded: dict[TaskState, int] = {}
    for entry in filter(None, counts.split(",")):
        code, _, count = entry.partition(":")
        decoded[_STATE_ORDER[int(code)]] = int(count)
    return Tally(int(version), decoded)


def _report_bound(report: UpstreamReport) -> int:
    """Every held report this one replaces sorts below this: those of older versions, and
    for a clear's tombstone the reports of its own version too."""
    return _encode_report(report) if report.cleared else report.version * _STATE_CODES


def _tally_members(item: TallyModel | None) -> TallyMembers:
    if item is None:
        return TallyMembers()
    raw = item.members.as_dict() if item.members is not None else {}
    members = {int(position): _decode_report(value) for position, value in raw.items()}
    return TallyMembers(int(item.version or 0), members)


# A try record's fields under one-letter keys (absent when None): fifty tries of history
# then cost a few kilobytes, which every write of the item pays for.
_TRY_KEYS = {
    "try_number": "n",
    "state": "s",
    "started_at": "b",
    "ended_at": "e",
    "exit_code": "x",
    "job_id": "j",
    "reason": "r",
}
_TRY_TIMES = frozenset({"started_at", "ended_at"})


def encode_tries(tries: Sequence[TryRecord]) -> str | None:
    """The stored form of a try history: a JSON list of small objects; None when empty."""
    if not tries:
        return None
    encoded: list[dict[str, Any]] = []
    for record in tries:
        entry: dict[str, Any] = {}
        for name, key in _TRY_KEYS.items():
            value = getattr(record, name)
            if value is None:
                continue
            if name in _TRY_TIMES:
                value = _iso(value)
            elif name == "state":
                value = value.value
            entry[key] = value
        encoded.append(entry)
    return _dumps(encoded)


def decode_tries(text: str | None) -> tuple[TryRecord, ...]:
    records: list[TryRecord] = []
    for entry in _loads(text) or []:
        fields = {name: entry.get(key) for name, key in _TRY_KEYS.items()}
        for name in _TRY_TIMES:
            if fields[name] is not None:
                fields[name] = datetime.fromisoformat(fields[name])
        fields["state"] = TaskState(fields["state"])
        records.append(TryRecord(**fields))
    return tuple(records)


_MAP_FIELDS = frozenset({"expansion", "released", "map_done", "map_failed"})
# Instances a mapped task's expansion writes per transaction (DynamoDB allows 100).
INSTANCE_BATCH = 100


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _ti_from_model(item: TaskInstanceModel) -> TaskInstance:
    upstream_raw = item.upstream.as_dict() if item.upstream is not None else {}
    task_id, map_index = split_instance_key(item.task_id)
    return TaskInstance(
        dag_id=item.dag_id,
        run_id=item.run_id,
        task_id=task_id,
        map_index=map_index,
        expansion=int(item.expansion or 0),
        item=_loads(item.item),
        released=bool(item.released),
        counted=_optional_int(item.counted),
        map_count=_optional_int(item.map_count),
        map_done=int(item.map_done or 0),
        map_failed=int(item.map_failed or 0),
        reported_version=_optional_int(item.reported_version),
        reported=int(item.reported or 0),
        dag_version=int(item.dag_version or 0),
        state=TaskState(item.state),
        try_number=int(item.try_number),
        version=int(item.version),
        upstream={k: _decode_report(v) for k, v in upstream_raw.items()},
        tallies={
            int(group): _decode_tally(value)
            for group, value in (item.tallies.as_dict() if item.tallies is not None else {}).items()
        },
        dispatch_token=item.dispatch_token or item.try_token,
        job_id=item.job_id or item.try_job,
        found_by_key=bool(item.found_by_key),
        exit_code=None if item.exit_code is None else int(item.exit_code),
        reason=item.reason,
        queued_at=item.queued_at,
        started_at=item.started_at,
        ended_at=item.ended_at,
        next_attempt_at=item.next_attempt_at,
        timeout_at=item.timeout_at,
        check_at=item.check_at,
        claim_owned=bool(item.claim_owned),
        covered=bool(item.covered),
        slotted=bool(item.slotted),
        signal=_loads(item.signal),
        output=_loads(item.output),
        restarts=int(item.restarts or 0),
        superseded_job=_loads(item.superseded_job),
        applied=tuple(_loads(item.applied) or ()),
        tries=decode_tries(item.tries),
    )


# The lookup fields of a try found by key, under attributes no index reads.
_UNINDEXED_ATTRIBUTES = {"dispatch_token": "try_token", "job_id": "try_job"}


def _attribute_of(name: str, ti: TaskInstance) -> str:
    """Where the field ``name`` of ``ti`` is stored."""
    return _UNINDEXED_ATTRIBUTES.get(name, name) if ti.found_by_key else name


def _ti_to_model(ti: TaskInstance) -> TaskInstanceModel:
    item = TaskInstanceModel(
        run_key(ti.dag_id, ti.run_id),
        ti.instance_id,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        dag_version=ti.dag_version,
        state=ti.state.value,
        try_number=ti.try_number,
        version=ti.version,
        upstream={k: _encode_report(v) for k, v in ti.upstream.items()},
        tallies={str(g): _encode_tally(t) for g, t in ti.tallies.items()} if ti.tallies else None,
        tries=encode_tries(ti.tries),
    )
    # Every field, so that the item is the record whatever state it is written in.
    for name in _TI_PLAIN_FIELDS - {"try_number"}:
        value = getattr(ti, name)
        # A task that is not mapped carries none of the for_each fields.
        setattr(item, _attribute_of(name, ti), None if name in _MAP_FIELDS and not value else value)
    for name in _TI_JSON_FIELDS:
        value = getattr(ti, name)
        setattr(item, name, None if value is None else _dumps(value))
    place = _due_place(ti)
    if place is not None:
        item.due_shard, item.due_at = place
    return item


# What an instance holds before its first write (its fresh record's fields that its
# writes need not set): a task never written has no item and reads as its fresh instance.
def _insert_actions(ti: TaskInstance, written: Collection[str]) -> list[Action]:
    """The fresh instance's fields a write sets where the item has none (``written``: the
    attributes the write sets itself): a first write inserts the whole record; on an item
    that exists they change nothing."""
    model = TaskInstanceModel
    fresh: dict[str, Any] = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "dag_version": ti.dag_version,
        "state": TaskState.PENDING.value,
        "try_number": 0,
        "version": 0,
    }
    return [
        getattr(model, name).set(getattr(model, name) | value)
        for name, value in fresh.items()
        if name not in written
    ]


def _or_unwritten(condition: Condition) -> Condition:
    """``condition`` on the item, or no item yet (a fresh instance's first write)."""
    either: Condition = TaskInstanceModel.run_key.does_not_exist() | condition
    return either


class TaskInstanceRepository:
    def __init__(self, spec_tasks: Callable[[str, int], Collection[str]] | None = None) -> None:
        # The task ids of a DAG version (the DAG repository's cache): a task of a run that
        # was never written reads as its fresh instance.
        self._spec_tasks = spec_tasks

    def _fresh(
        self, dag_id: str, run_id: str, missing: Iterable[str], dag_version: int | None = None
    ) -> dict[str, TaskInstance]:
        """The fresh instances (pending, version 0) of those ``missing`` ids that are
        tasks of the run: a task never written has no item. ``dag_version``: the run's,
        when it was read along (else the run is read; none for a missing run)."""
        wanted = list(dict.fromkeys(missing))
        if not wanted or self._spec_tasks is None:
            return {}
        if dag_version is None:
            try:
                dag_version = int(RunModel.get(dag_id, run_id, consistent_read=True).dag_version)
            except DoesNotExist:
                return {}
        try:
            tasks = self._spec_tasks(dag_id, dag_version)
        except NotFound:
            return {}
        return {
            task_id: TaskInstance(dag_id, run_id, task_id, dag_version=dag_version)
            for task_id in wanted
            if task_id in tasks
        }

    def _insertable(self, ti: TaskInstance) -> bool:
        """Whether a write of ``ti`` may insert it: its fresh instance (version 0) of a task
        of its DAG version (from the DAG repository's cache, no read once warm)."""
        if ti.version != 0 or not ti.dag_version or ti.map_index is not None:
            return False
        if self._spec_tasks is None:
            return False
        try:
            return ti.task_id in self._spec_tasks(ti.dag_id, ti.dag_version)
        except NotFound:
            return False

    def put_new(self, tis: Iterable[TaskInstance]) -> None:
        """Write fresh pending instances (a run still queued, so nothing can have moved)."""
        with TaskInstanceModel.batch_write() as batch:
            for ti in tis:
                batch.save(_ti_to_model(ti))

    def get(self, dag_id: str, run_id: str, task_id: str) -> TaskInstance:
        try:
            item = TaskInstanceModel.get(run_key(dag_id, run_id), task_id, consistent_read=True)
        except DoesNotExist as error:
            fresh = self._fresh(dag_id, run_id, [task_id]).get(task_id)
            if fresh is None:
                raise NotFound(f"task instance {dag_id}/{run_id}/{task_id} not found") from error
            return fresh
        return _ti_from_model(item)

    def find(self, dag_id: str, run_id: str, task_id: str) -> TaskInstance | None:
        try:
            return self.get(dag_id, run_id, task_id)
        except NotFound:
            return None

    def get_many(self, dag_id: str, run_id: str, task_ids: Sequence[str]) -> list[TaskInstance]:
        """The neighbourhood of a task, in BatchGetItem pages of 100."""
        key = run_key(dag_id, run_id)
        found = {
            t: _ti_from_model(item)
            for (_, t), item in _read_items([(key, t) for t in task_ids]).items()
        }
        found.update(self._fresh(dag_id, run_id, [t for t in task_ids if t not in found]))
        return [found[t] for t in task_ids if t in found]

    def get_with_run(
        self,
        dag_id: str,
        run_id: str,
        task_ids: Sequence[str],
        finish_group: FinishGroup | None = None,
        *,
        instances_consistent: bool = True,
    ) -> tuple[DagRun | None, dict[str, TaskInstance]]:
        """One BatchGetItem across the runs, task-instance and task-state tables (more
        instances than fit with the run: the run, then the instances in pages)."""
        number = None if finish_group is None else finish_group.number
        if len(task_ids) > WITH_RUN_LIMIT:
            found_run, _, tally, _ = _read_run_and_items(dag_id, run_id, [], number)
            key = run_key(dag_id, run_id)
            found = _read_items([(key, t) for t in task_ids], consistent=instances_consistent)
            tasks = {item.task_id: _ti_from_model(item) for item in found.values()}
        else:
            found_run, items, tally, _ = _read_run_and_items(
                dag_id, run_id, task_ids, number, instances_consistent=instances_consistent
            )
            tasks = {item.task_id: _ti_from_model(item) for item in items.values()}
        if found_run is None:
            return None, tasks
        missing = [t for t in task_ids if t not in tasks]
        tasks.update(self._fresh(dag_id, run_id, missing, int(found_run.dag_version)))
        if finish_group is None:
            return _run_from_model(found_run), tasks
        return _with_finish_tally(found_run, tally, finish_group), tasks

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
        asked = list(dict.fromkeys(downstream))
        if len(asked) > WITH_TRY_LIMIT:
            raise ValueError(f"{len(asked)} downstream tasks: at most {WITH_TRY_LIMIT} in one read")
        found_run, items, _, published = _read_run_and_items(
            dag_id,
            run_id,
            [instance_id, *asked],
            output=(instance_id, try_number),
            instances_consistent=instances_consistent,
        )
        tasks = {task_id: _ti_from_model(item) for task_id, item in items.items()}
        if found_run is not None:
            missing = [t for t in [instance_id, *asked] if t not in tasks]
            tasks.update(self._fresh(dag_id, run_id, missing, int(found_run.dag_version)))
        return TryRead(
            tasks.pop(instance_id, None),
            published,
            None if found_run is None else _run_from_model(found_run),
            frozenset(asked),
            tasks,
        )

    def get_with_output(
        self, dag_id: str, run_id: str, instance_id: str, try_number: int
    ) -> tuple[TaskInstance | None, Any]:
        """One consistent BatchGetItem across the task-instance and task-state tables."""
        tasks, state = TaskInstanceModel.Meta.table_name, TaskStateModel.Meta.table_name
        assert tasks is not None
        assert state is not None
        scope = output_scope(dag_id, run_id, instance_id)
        keys = {
            tasks: [{"run_key": {"S": run_key(dag_id, run_id)}, "task_id": {"S": instance_id}}],
            state: [{"scope": {"S": scope}, "key": {"S": output_key(try_number)}}],
        }
        found = _batch_get_tables(keys, f"task instance {dag_id}/{run_id}/{instance_id}")
        ti = next((_ti_from_model(TaskInstanceModel.from_raw_data(r)) for r in found[tasks]), None)
        if ti is None:
            ti = self._fresh(dag_id, run_id, [instance_id]).get(instance_id)
        published = next((TaskStateModel.from_raw_data(r) for r in found[state]), None)
        return ti, None if published is None else _loads(published.value)

    def list_for_run(self, dag_id: str, run_id: str) -> list[TaskInstance]:
        """The written instances (one consistent Query) and the fresh ones of the tasks
        never written, in the sort key's order."""
        query = TaskInstanceModel.query(run_key(dag_id, run_id), consistent_read=True)
        found = {item.task_id: _ti_from_model(item) for item in query}
        if self._spec_tasks is None:
            return [found[key] for key in sorted(found)]
        try:
            version = int(RunModel.get(dag_id, run_id, consistent_read=True).dag_version)
            tasks = self._spec_tasks(dag_id, version)
        except (DoesNotExist, NotFound):
            return [found[key] for key in sorted(found)]
        found.update(self._fresh(dag_id, run_id, [t for t in tasks if t not in found], version))
        return [found[key] for key in sorted(found)]

    def apply(
        self,
        ti: TaskInstance,
        transition: Transition,
        *,
        upstream: tuple[str, UpstreamReport] | None = None,
    ) -> TaskInstance:
        """Apply one transition, conditional on state (from the table) and version."""
        assert transition.task_id == ti.task_id
        changes = transition.changes_for(ti)
        new = transition.apply(ti)
        actions: list[Action] = [
            TaskInstanceModel.state.set(new.state.value),
            TaskInstanceModel.version.set(new.version),
        ]
        for name, value in changes.items():
            actions.extend(self._field_actions(name, value, new))
        if upstream is not None:
            task_id, report = upstream
            assert ti.upstream.get(task_id) == report, "ti holds the report it writes"
            # The whole map, as read with the report added (the write is conditional on
            # that version): an item with no map yet (never written, or never told) too.
            reports = {k: _encode_report(v) for k, v in ti.upstream.items()}
            actions.append(TaskInstanceModel.upstream.set(reports))
        sources = task_sources(transition.dst, transition.cause)
        condition = (
            TaskInstanceModel.state.is_in(*(s.value for s in sources))
            & (TaskInstanceModel.state == transition.src.value)
            & (TaskInstanceModel.version == transition.expected_version)
        )
        if self._insertable(ti):
            written = {"state", "version", "upstream", *(_attribute_of(n, new) for n in changes)}
            actions.extend(_insert_actions(ti, written))
            condition = _or_unwritten(condition)
        due = indexed_due(new)
        if due is not None and keeps_due_place(ti, new):
            # The entry stays unless its stored place is later than the new time.
            try:
                self._update(
                    ti,
                    actions,
                    condition & (TaskInstanceModel.due_at <= _iso(due)),
                    unheard=transition.unheard,
                )
                return new
            except ConflictError as conflict:
                current = conflict.current
                if current is None or (current.state, current.version) != (ti.state, ti.version):
                    raise
        self._update(ti, [*actions, *self._due_actions(new)], condition, unheard=transition.unheard)
        return new

    def report_upstream(
        self,
        downstream: TaskInstance | tuple[str, str, str],
        upstream_task: str,
        report: UpstreamReport,
        *,
        dag_version: int = 0,
    ) -> TaskInstance | None:
        """Tell a downstream task its upstream's state; stale (older) reports are refused.

        Returns the downstream as it is now when it holds this report (written now, or by
        an earlier delivery of it that may have died before the downstream was evaluated),
        None when it holds a newer report or a clear's tombstone (this one is stale).
        """
        dag_id, run_id, task_id = (
            downstream.key if isinstance(downstream, TaskInstance) else downstream
        )
        if isinstance(downstream, TaskInstance):
            dag_version = downstream.dag_version
        fresh = TaskInstance(dag_id, run_id, task_id, dag_version=dag_version)
        # Encoded reports order by version: anything below version * 16 is older.
        bound = report.version * _STATE_CODES
        encoded = _encode_report(report)
        unwritten = isinstance(downstream, TaskInstance) and downstream.version == 0
        item = self._hold_report(
            fresh, upstream_task, encoded, bound, slotted=report.slotted, unwritten=unwritten
        )
        if item is None:
            current = self.find(dag_id, run_id, task_id)
            held = current is not None and current.upstream.get(upstream_task) == report
            return current if held else None
        return _ti_from_model(item)

    def hold_slotted(
        self, key: tuple[str, str, str], *, dag_version: int = 0
    ) -> TaskInstance | None:
        dag_id, run_id, task_id = key
        fresh = TaskInstance(dag_id, run_id, task_id, dag_version=dag_version)
        item = TaskInstanceModel(run_key(dag_id, run_id), fresh.instance_id)
        actions = [
            TaskInstanceModel.slotted.set(True),
            TaskInstanceModel.version.add(1),
            *_insert_actions(fresh, {"version", "slotted"}),
            _heard(),
        ]
        # A task never written is inserted so (as a report would), unless its DAG version
        # is unknown: then only a written task is changed.
        condition = None if dag_version else TaskInstanceModel.run_key.exists()
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as error:
            if is_condition_failure(error):
                return None
            raise
        return _ti_from_model(item)

    def retire_upstream(
        self, upstream: TaskInstance, downstream_tasks: Iterable[str]
    ) -> dict[str, TaskInstance]:
        """Leave a clear's tombstone on each downstream task: ``upstream`` is no longer
        done, and its reports of its current version or older are refused from now on (a
        finish read before the clear and reported after it is stale). Written before the
        upstream is reset, so no report of the cleared try can slip in between.

        Returns the downstream tasks as they are now, by id, leaving out those that hold a
        newer report (or this tombstone) already: nothing to retire there.
        """
        tombstone = _encode_report(UpstreamReport.tombstone(upstream.version))
        retired: dict[str, TaskInstance] = {}
        for task_id in downstream_tasks:
            # A task never written is inserted with it: a late report of the cleared try
            # must find the tombstone there too.
            fresh = TaskInstance(
                upstream.dag_id, upstream.run_id, task_id, dag_version=upstream.dag_version
            )
            item = self._hold_report(fresh, upstream.task_id, tombstone, tombstone)
            if item is not None:
                retired[task_id] = _ti_from_model(item)
        return retired

    def _hold_report(
        self,
        fresh: TaskInstance,
        upstream_task: str,
        encoded: int,
        bound: int,
        *,
        slotted: bool = False,
        unwritten: bool = False,
    ) -> TaskInstanceModel | None:
        """Hold ``encoded`` as the task's report of ``upstream_task`` (version + 1) unless
        it holds one at ``bound`` or above (None then). A task never written is inserted
        with it (its fresh fields, the report its only one, at version 1), unless its DAG
        version is unknown (0): then only a written task is told. ``slotted``: the report
        makes the task ``slotted`` too (engine/slots.py). ``unwritten``: the task was read
        unwritten, so the insert is tried first (writing into a map that is not there is
        refused, a write unit spent)."""
        item = TaskInstanceModel(run_key(fresh.dag_id, fresh.run_id), fresh.instance_id)
        entry = TaskInstanceModel.upstream[upstream_task]
        condition = entry.does_not_exist() | (entry < bound)
        if not fresh.dag_version:
            condition = TaskInstanceModel.run_key.exists() & condition
        slot = [TaskInstanceModel.slotted.set(True)] if slotted else []
        insert = unwritten and bool(fresh.dag_version)
        for _ in range(3):
            if insert:
                # No map of reports to write into: the task was never written (or told).
                try:
                    item.update(
                        actions=[
                            TaskInstanceModel.upstream.set({upstream_task: encoded}),
                            TaskInstanceModel.version.add(1),
                            *slot,
                            *_insert_actions(fresh, {"version", "upstream"}),
                            _heard(),
                        ],
                        condition=TaskInstanceModel.upstream.does_not_exist(),
                    )
                    return item
                except UpdateError as error:
                    if not is_condition_failure(error):
                        raise
                # Another write made the map meanwhile: write into it.
            try:
                item.update(
                    actions=[entry.set(encoded), TaskInstanceModel.version.add(1), *slot, _heard()],
                    condition=condition,
                )
                return item
            except UpdateError as error:
                if is_condition_failure(error):
                    return None
                if error.cause_response_code != "ValidationException" or not fresh.dag_version:
                    raise
            insert = True
        raise StoreError(f"task {'/'.join(fresh.key)}: no map of reports to write into")

    def tell_tally(
        self, join: tuple[str, str, str], group: int, position: int, report: UpstreamReport
    ) -> TallyWrite | None:
        scope, key = tally_scope(*join), str(group)
        entry = TallyModel.members[str(position)]
        encoded, stored = _encode_report(report), _decode_report(_encode_report(report))
        actions = [entry.set(encoded), TallyModel.version.add(1)]
        condition = entry.does_not_exist() | (entry < _report_bound(report))
        connection = TallyModel._get_connection()
        for _ in range(2):
            try:
                # The item before the write: with this report, it is the item after it.
                old = connection.update_item(
                    scope, key, actions=actions, condition=condition, return_values="ALL_OLD"
                )
            except UpdateError as error:
                if is_condition_failure(error):
                    current = self.get_tally(join, group)
                    if current.members.get(position) != stored:
                        return None  # it holds a later report, or a clear's tombstone
                    return TallyWrite(current, current, written=False)
                if error.cause_response_code != "ValidationException":
                    raise
                # No item yet (the update has no members map to write into): create it.
                first = TallyModel(scope, key, members={str(position): encoded}, version=1)
                try:
                    first.save(condition=TallyModel.scope.does_not_exist())
                except PutError as put_error:
                    if not is_condition_failure(put_error):
                        raise
                    continue  # another report created it meanwhile: write into it
                return TallyWrite(TallyMembers(), TallyMembers(1, {position: stored}))
            attributes = old.get("Attributes")
            before = _tally_members(
                TallyModel.from_raw_data(attributes) if attributes is not None else None
            )
            after = TallyMembers(before.version + 1, {**before.members, position: stored})
            return TallyWrite(before, after)
        raise StoreError(f"tally {scope}/{key}: neither written nor created")

    def get_tally(
        self, join: tuple[str, str, str], group: int, *, consistent: bool = True
    ) -> TallyMembers:
        try:
            item = TallyModel.get(tally_scope(*join), str(group), consistent_read=consistent)
        except DoesNotExist:
            return TallyMembers()
        return _tally_members(item)

    def record_tally(
        self, join: tuple[str, str, str], group: int, tally: Tally, *, dag_version: int = 0
    ) -> TaskInstance | None:
        dag_id, run_id, task_id = join
        item = TaskInstanceModel(run_key(dag_id, run_id), task_id)
        entry = TaskInstanceModel.tallies[str(group)]
        actions = [entry.set(_encode_tally(tally)), TaskInstanceModel.version.add(1), _heard()]
        condition = entry.does_not_exist() | (entry < _tally_version_bound(tally.version))
        fresh = TaskInstance(dag_id, run_id, task_id, dag_version=dag_version)
        # A join never written is inserted, unless its DAG version is unknown (0).
        exists = TaskInstanceModel.run_key.exists()
        if not dag_version:
            condition = exists & condition
        for _ in range(2):
            try:
                item.update(actions=actions, condition=condition)
                return _ti_from_model(item)
            except UpdateError as error:
                if is_condition_failure(error):
                    return self.find(*join)  # it holds a later summary (or is missing)
                if error.cause_response_code != "ValidationException":
                    raise
            # The join's first summary: its map first (no version bump: nothing to judge),
            # inserting the join if it was never written.
            try:
                item.update(
                    actions=[
                        TaskInstanceModel.tallies.set({}),
                        *_insert_actions(fresh, {"tallies"}),
                        _heard(),
                    ],
                    condition=TaskInstanceModel.tallies.does_not_exist()
                    if dag_version
                    else exists & TaskInstanceModel.tallies.does_not_exist(),
                )
            except UpdateError as error:
                if not is_condition_failure(error):
                    raise
        raise StoreError(f"task {'/'.join(join)}: no tally map to write into")

    def due(
        self, now: datetime, limit: int = 100, skip: Collection[tuple[str, str, str]] = ()
    ) -> list[TaskInstance]:
        """Task instances whose retry or deadline has come: a sparse-index query, no scan.

        The index holds keys only and lags behind the table: the earliest ``limit``
        entries a pass at ``now`` looks at (``looks_at_entry``, judged from the entry;
        none of ``skip``) are read (consistently) and each is judged as it is now; one
        that left the index or moved past ``now`` since (or is gone) is left out."""
        bound = _iso(now)
        skipped = {(run_key(dag_id, run_id), instance) for dag_id, run_id, instance in skip}

        def looked_at(key: tuple[str, str], place: str) -> bool:
            if key in skipped:
                return False
            try:
                return looks_at_entry(from_iso(place), now)
            except ValueError:  # a place this version did not write: read it, as before
                return True

        keys = _earliest_due(
            TaskInstanceModel.due_index,
            TaskInstanceModel.due_at,
            now,
            limit,
            lambda entry: (entry.run_key, entry.task_id),
            select=looked_at,
        )
        items = _read_items(keys)
        found = [
            _ti_from_model(items[key])
            for key in keys
            if key in items and items[key].due_at is not None and items[key].due_at <= bound
        ]
        found.sort(key=lambda ti: due_at(ti) or now)
        return found

    def find_by_token(self, token: str) -> TaskInstance | None:
        """The task instance whose current try has this dispatch token (a GSI query)."""
        return self._find_by_index(TaskInstanceModel.token_index, token)

    def find_by_job_id(self, job_id: str) -> TaskInstance | None:
        return self._find_by_index(TaskInstanceModel.job_index, job_id)

    def _find_by_index(self, index: Any, value: str) -> TaskInstance | None:
        for key in index.query(value, limit=2):
            # The index is eventually consistent: confirm on the item itself.
            try:
                item = TaskInstanceModel.get(key.run_key, key.task_id, consistent_read=True)
            except DoesNotExist:
                continue
            if value in (item.dispatch_token, item.job_id):
                return _ti_from_model(item)
        return None

    def postpone_due(self, ti: TaskInstance, until: datetime) -> bool:
        """Move only the task's place in the due index (the reconciler's backoff for an
        item it could not handle), unless the task changed meanwhile: its next write puts
        it back where its fields say. No version bump: nothing about the task changed."""
        condition = (
            TaskInstanceModel.due_at.exists()
            & (TaskInstanceModel.state == ti.state.value)
            & (TaskInstanceModel.version == ti.version)
        )
        try:
            TaskInstanceModel._get_connection().update_item(
                run_key(ti.dag_id, ti.run_id),
                ti.instance_id,
                actions=[TaskInstanceModel.due_at.set(_iso(until)), _heard()],
                condition=condition,
            )
        except UpdateError as error:
            if not is_condition_failure(error):
                raise
            return False
        return True

    def advance_report_cursor(self, ti: TaskInstance, told: int, now_told: int) -> bool:
        """Record that ``now_told`` downstream tasks were told of ``ti``'s current state,
        unless the task moved on (state or version) or another delivery recorded more
        than ``told`` of this version. No version bump: the task itself did not change;
        the write's stream record tells the next chunk."""
        model = TaskInstanceModel
        unchanged = (model.state == ti.state.value) & (model.version == ti.version)
        not_ahead = (
            model.reported_version.does_not_exist()
            | (model.reported_version != ti.version)
            | (model.reported <= told)
        )
        try:
            model._get_connection().update_item(
                run_key(ti.dag_id, ti.run_id),
                ti.instance_id,
                actions=[
                    model.reported_version.set(ti.version),
                    model.reported.set(now_told),
                    _heard(),
                ],
                condition=unchanged & not_ahead,
            )
        except UpdateError as error:
            if not is_condition_failure(error):
                raise
            return False
        return True

    def check_later(self, ti: TaskInstance, at: datetime) -> TaskInstance:
        """Move the reconciler's next look at a job (no state change)."""
        return self._touch(ti, check_at=at)

    def note_signal(self, ti: TaskInstance, signal: Mapping[str, Any]) -> TaskInstance:
        """Keep a start signal on a waiting task that found no free task slot."""
        return self._touch(ti, signal=dict(signal))

    def uncover(self, ti: TaskInstance) -> TaskInstance:
        return self._touch(ti, covered=False)

    # --- for_each (engine/mapping.py) -----------------------------------------------------

    def list_instances(self, dag_id: str, run_id: str, task_id: str) -> list[TaskInstance]:
        """Every instance record of a mapped task, in item order (one paged query)."""
        return [
            _ti_from_model(item)
            for item in TaskInstanceModel.query(
                run_key(dag_id, run_id),
                TaskInstanceModel.task_id.startswith(map_key_prefix(task_id)),
                consistent_read=True,
            )
        ]

    def create_instances(self, tis: Sequence[TaskInstance]) -> int:
        """Write each instance unless one of its expansion (or a later one) exists: a
        redelivered expansion never resets an instance that has moved on. Transactions
        of ``INSTANCE_BATCH``; a batch that meets an existing instance is written one by
        one. Returns how many were written."""
        written = 0
        for start in range(0, len(tis), INSTANCE_BATCH):
            batch = tis[start : start + INSTANCE_BATCH]
            try:
                with TransactWrite(connection=_transaction_connection()) as transaction:
                    for ti in batch:
                        transaction.save(_ti_to_model(ti), condition=_instance_is_older(ti))
                written += len(batch)
                continue
            except TransactWriteError as error:
                if not _cancelled_by_conditions(error):
                    raise
            for ti in batch:
                try:
                    _ti_to_model(ti).save(condition=_instance_is_older(ti))
                    written += 1
                except PutError as error:
                    if not is_condition_failure(error):
                        raise
        return written

    def release_instance(self, dag_id: str, run_id: str, key: str) -> TaskInstance | None:
        """Let a pending instance run (max_parallel); returns it as it is now when it is
        released (now or before), None when missing."""
        condition = (TaskInstanceModel.state == TaskState.PENDING.value) & (
            TaskInstanceModel.released.does_not_exist() | (TaskInstanceModel.released == False)  # noqa: E712
        )
        item = TaskInstanceModel(run_key(dag_id, run_id), key)
        try:
            item.update(
                actions=[
                    TaskInstanceModel.released.set(True),
                    TaskInstanceModel.version.add(1),
                    _heard(),
                ],
                condition=TaskInstanceModel.run_key.exists() & condition,
            )
        except UpdateError as error:
            if not is_condition_failure(error):
                raise
            current = self.find(dag_id, run_id, key)
            return current if current is not None and current.released else None
        return _ti_from_model(item)

    def count_instance(self, ti: TaskInstance, *, failed: bool) -> bool:
        """Count the instance's finish on its mapped task, once: in one transaction, the
        instance (still at ``ti``'s state and version, this version not counted yet) is
        marked counted and the mapped task (of the instance's expansion) adds to its
        counters. False when it was counted already or either item moved on."""
        assert ti.map_index is not None
        additions: list[Action] = [TaskInstanceModel.map_done.add(1), _heard()]
        if failed:
            additions.append(TaskInstanceModel.map_failed.add(1))
        try:
            with TransactWrite(connection=_transaction_connection()) as transaction:
                transaction.update(
                    TaskInstanceModel(run_key(ti.dag_id, ti.run_id), ti.instance_id),
                    actions=[TaskInstanceModel.counted.set(ti.version), _heard()],
                    condition=(TaskInstanceModel.state == ti.state.value)
                    & (TaskInstanceModel.version == ti.version)
                    & (
                        TaskInstanceModel.counted.does_not_exist()
                        | (TaskInstanceModel.counted != ti.version)
                    ),
                )
                transaction.update(
                    TaskInstanceModel(run_key(ti.dag_id, ti.run_id), ti.task_id),
                    actions=additions,
                    condition=TaskInstanceModel.try_number == ti.expansion,
                )
        except TransactWriteError as error:
            if not _cancelled_by_conditions(error):
                raise
            return False
        return True

    def apply_uncounted(self, ti: TaskInstance, transition: Transition) -> TaskInstance:
        """``apply`` for an instance leaving a finish (a clear): a finish counted on the
        mapped task is taken off its counters in the same transaction."""
        transition = replace(transition, changes={**transition.changes, "counted": None})
        if ti.map_index is None or ti.counted != ti.version:
            return self.apply(ti, transition)
        changes = transition.changes_for(ti)
        new = transition.apply(ti)
        actions: list[Action] = [
            TaskInstanceModel.state.set(new.state.value),
            TaskInstanceModel.version.set(new.version),
            *(a for name, value in changes.items() for a in self._field_actions(name, value, new)),
            *self._due_actions(new),
            _heard(),
        ]
        sources = task_sources(transition.dst, transition.cause)
        condition = (
            TaskInstanceModel.state.is_in(*(s.value for s in sources))
            & (TaskInstanceModel.state == transition.src.value)
            & (TaskInstanceModel.version == transition.expected_version)
        )
        subtractions: list[Action] = [TaskInstanceModel.map_done.add(-1), _heard()]
        if ti.state in FAILED_TASK_STATES:
            subtractions.append(TaskInstanceModel.map_failed.add(-1))
        try:
            with TransactWrite(connection=_transaction_connection()) as transaction:
                transaction.update(
                    TaskInstanceModel(run_key(ti.dag_id, ti.run_id), ti.instance_id),
                    actions=actions,
                    condition=condition,
                )
                transaction.update(
                    TaskInstanceModel(run_key(ti.dag_id, ti.run_id), ti.task_id),
                    actions=subtractions,
                    condition=TaskInstanceModel.try_number == ti.expansion,
                )
        except TransactWriteError as error:
            if not _cancelled_by_conditions(error):
                raise
            raise self._conflict(ti) from error
        return new

    def _touch(self, ti: TaskInstance, **changes: Any) -> TaskInstance:
        """Change fields but not the state; conditional on state and version like any write."""
        new = replace(ti, version=ti.version + 1, **changes)
        actions: list[Action] = [
            *(a for name, value in changes.items() for a in self._field_actions(name, value, new)),
            TaskInstanceModel.version.set(new.version),
            *self._due_actions(new),
        ]
        condition = (TaskInstanceModel.state == ti.state.value) & (
            TaskInstanceModel.version == ti.version
        )
        if self._insertable(ti):
            written = {"version", *(_attribute_of(name, new) for name in changes)}
            actions.extend(_insert_actions(ti, written))
            condition = _or_unwritten(condition)
        self._update(ti, actions, condition)
        return new

    def _field_actions(self, name: str, value: Any, new: TaskInstance) -> list[Action]:
        """Set (or remove, for None) the field ``name`` of the task as it becomes, ``new``.
        A lookup field (token, job id) leaves the attribute of the other kind of try, in
        case the try before was found the other way."""
        if name == "tries":
            value = encode_tries(value)
        elif name not in _TI_PLAIN_FIELDS | _TI_JSON_FIELDS:
            raise ValueError(f"task instance has no writable field '{name}'")
        attribute = getattr(TaskInstanceModel, _attribute_of(name, new))
        actions: list[Action] = []
        if name in _UNINDEXED_ATTRIBUTES:
            other = _UNINDEXED_ATTRIBUTES[name] if attribute.attr_name == name else name
            actions.append(getattr(TaskInstanceModel, other).remove())
        if value is None:
            actions.append(attribute.remove())
        else:
            actions.append(attribute.set(_dumps(value) if name in _TI_JSON_FIELDS else value))
        return actions

    def _due_actions(self, new: TaskInstance) -> list[Action]:
        place = _due_place(new)
        if place is None:
            return [TaskInstanceModel.due_shard.remove(), TaskInstanceModel.due_at.remove()]
        shard, at = place
        return [TaskInstanceModel.due_shard.set(shard), TaskInstanceModel.due_at.set(at)]

    def _update(
        self,
        ti: TaskInstance,
        actions: list[Action],
        condition: Condition,
        *,
        unheard: bool = False,
    ) -> None:
        connection = TaskInstanceModel._get_connection()
        mark = TaskInstanceModel.unheard.set(True) if unheard else _heard()
        actions = [*actions, mark]
        try:
            # NONE: the caller already knows the new record; no need to ship it back.
            connection.update_item(
                run_key(ti.dag_id, ti.run_id), ti.instance_id, actions=actions, condition=condition
            )
        except UpdateError as error:
            if not is_condition_failure(error):
                raise
            raise self._conflict(ti) from error

    def _conflict(self, ti: TaskInstance) -> ConflictError[TaskInstance]:
        current = self.find(ti.dag_id, ti.run_id, ti.instance_id)
        state = current.state.value if current else "missing"
        version = current.version if current else None
        return TaskConflict(
            f"task {ti.dag_id}/{ti.run_id}/{ti.instance_id}: expected {ti.state.value} "
            f"v{ti.version}, found {state} v{version}",
            current,
        )


def _heard() -> Action:
    """Every write of a task instance but one marked ``unheard`` (``Transition.unheard``)
    removes the mark: only that write's own stream record is dropped by the filter."""
    return TaskInstanceModel.unheard.remove()


def _instance_is_older(ti: TaskInstance) -> Condition:
    """An instance record may be (re)written by an expansion newer than its own."""
    older: Condition = TaskInstanceModel.run_key.does_not_exist() | (
        TaskInstanceModel.expansion < ti.expansion
    )
    return older


def _transaction_connection() -> Connection:
    meta = TaskInstanceModel.Meta
    return Connection(region=meta.region, host=getattr(meta, "host", None))


def _cancelled_by_conditions(error: TransactWriteError) -> bool:
    """Whether a transaction was cancelled only because a condition did not hold."""
    reasons = error.cancellation_reasons or []
    codes = {reason.code for reason in reasons if reason is not None}
    return bool(codes) and codes <= {"ConditionalCheckFailed", "None"}


# --- runs ----------------------------------------------------------------------------------


def _group_counts(number: int, done: int, failed: int) -> list[Action]:
    """A done group's counts on a big run's item (a group without failed leaves has none)."""
    key = str(number)
    return [
        RunModel.finished_groups[key].set(done),
        RunModel.failed_groups[key].set(failed) if failed else RunModel.failed_groups[key].remove(),
    ]


def _group_total(groups: Any) -> int:
    return sum(int(n) for n in (groups.as_dict() if groups is not None else {}).values())


def _run_from_model(item: RunModel) -> DagRun:
    return DagRun(
        dag_id=item.dag_id,
        run_id=item.run_id,
        dag_version=int(item.dag_version),
        run_type=RunType(item.run_type),
        state=RunState(item.state),
        version=int(item.version),
        conf=_loads(item.conf) or {},
        logical_date=item.logical_date,
        data_interval_start=item.data_interval_start,
        data_interval_end=item.data_interval_end,
        trigger=_loads(item.trigger),
        created_at=item.created_at,
        started_at=item.started_at,
        ended_at=item.ended_at,
        counted_at=datetime.fromisoformat(item.counted_at) if item.counted_at else None,
        counts_all=bool(item.counts_all),
        finished_count=len(item.finished_idx or ()) + _group_total(item.finished_groups),
        failed_leaves=len(item.failed_leaf_idx or ()) + _group_total(item.failed_groups),
        finished_idx=frozenset(int(i) for i in item.finished_idx or ()),
        failed_leaf_idx=frozenset(int(i) for i in item.failed_leaf_idx or ()),
        active=frozenset((item.active.as_dict() if item.active is not None else {}).keys()),
        throttled=frozenset(item.throttled or ()),
        reason=item.reason,
        tasks_created=bool(item.tasks_created),
        backfill_limit=None if item.backfill_limit is None else int(item.backfill_limit),
    )


class RunRepository:
    def create(self, run: DagRun) -> bool:
        """Create the run; False when a run with this id exists (a duplicate trigger)."""
        item = RunModel(
            run.dag_id,
            run.run_id,
            dag_version=run.dag_version,
            run_type=run.run_type.value,
            state=run.state.value,
            version=run.version,
            conf=_dumps(dict(run.conf)),
            logical_date=run.logical_date,
            data_interval_start=run.data_interval_start,
            data_interval_end=run.data_interval_end,
            trigger=None if run.trigger is None else _dumps(dict(run.trigger)),
            created_at=run.created_at,
            backfill_limit=run.backfill_limit,
            active={},
            # In the queued index once its tasks are written (``mark_tasks_created``): a
            # run that starts at once never enters it (its entry's put and delete spared).
            queued_key=(
                _queued_key(run) if run.state is RunState.QUEUED and run.tasks_created else None
            ),
            tasks_created=run.tasks_created,
        )
        try:
            item.save(condition=RunModel.run_id.does_not_exist())
        except PutError as error:
            if not is_condition_failure(error):
                raise
            return False
        return True

    def get(self, dag_id: str, run_id: str) -> DagRun:
        try:
            item = RunModel.get(dag_id, run_id, consistent_read=True)
        except DoesNotExist as error:
            raise NotFound(f"run {dag_id}/{run_id} not found") from error
        return _run_from_model(item)

    def find(self, dag_id: str, run_id: str) -> DagRun | None:
        try:
            return self.get(dag_id, run_id)
        except NotFound:
            return None

    def list_for_dag(self, dag_id: str, limit: int | None = None) -> list[DagRun]:
        return [
            _run_from_model(i)
            for i in RunModel.query(dag_id, scan_index_forward=False, limit=limit)
        ]

    def list_between(self, dag_id: str, start: datetime, end: datetime) -> list[DagRun]:
        """One Query of the DAG's runs, filtered on the logical date (a backfill's look at
        its range: the read costs the DAG's run history, never other DAGs')."""
        condition = RunModel.logical_date.between(start, end)
        return sorted(
            (_run_from_model(i) for i in RunModel.query(dag_id, filter_condition=condition)),
            key=lambda run: run.run_id,
        )

    def transition(
        self, run: DagRun, dst: RunState, cause: Cause, *, disarm: bool = False, **changes: Any
    ) -> DagRun:
        sources = run_sources(dst, cause)
        if run.state not in sources:
            raise ValueError(f"run {run.run_id}: {run.state.value} -> {dst.value} not allowed")
        actions: list[Action] = [
            RunModel.state.set(dst.value),
            RunModel.version.set(run.version + 1),
        ]
        if disarm:
            actions += [RunModel.due_shard.remove(), RunModel.due_at.remove()]
        for name, value in changes.items():
            attribute = getattr(RunModel, name)
            actions.append(attribute.remove() if value is None else attribute.set(value))
        if dst is RunState.QUEUED:
            actions.append(RunModel.queued_key.set(_queued_key(run)))
        else:
            actions.append(RunModel.queued_key.remove())
        condition = RunModel.state.is_in(*(s.value for s in sources)) & (
            RunModel.version == run.version
        )
        self._update(run, actions, condition)
        return replace(run, state=dst, version=run.version + 1, **changes)

    def mark_tasks_created(self, run: DagRun) -> None:
        """Its tasks are written: a run still queued enters the queued index with it (a
        run that has started had them written before)."""
        actions: list[Action] = [
            RunModel.tasks_created.set(True),
            RunModel.queued_key.set(_queued_key(run)),
        ]
        self._write(
            run.dag_id,
            run.run_id,
            actions,
            RunModel.state == RunState.QUEUED.value,
            quiet=True,
        )

    def tasks_created(self, run: DagRun) -> bool:
        item = RunModel.get(
            run.dag_id, run.run_id, consistent_read=True, attributes_to_get=["tasks_created"]
        )
        return bool(item.tasks_created)

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
        """Free the task's slot and count its finish on the run (idempotent: set union);
        a big run's in its finish tally (``group``), and on the run item only once the
        group is done, or when ``release`` (the task may hold a slot or be throttled).

        Returns the run as it is after the write (a small item: no extra read); a big
        run's with the group's tally (``DagRun.finished_idx``); None when the run item
        was not written."""
        actions: list[Action] = [
            RunModel.version.add(1),
            RunModel.throttled.delete({ti.instance_id}),  # if it never got to its dispatch
        ]
        done: set[int] = set()
        failed: set[int] = set()
        if group is None:
            actions.append(RunModel.finished_idx.add({index}))
            if failed_leaf:
                actions.append(RunModel.failed_leaf_idx.add({index}))
            actions += _arming_actions(ti, arming)
        else:
            done, failed = self._count_in_tally(ti, index, failed_leaf=failed_leaf, group=group)
            complete = len(done) >= group.size
            if not complete and not release:
                return None
            if complete:
                actions += _group_counts(group.number, len(done), len(failed))
        attributes = self._write_finish(ti, actions)
        run = _run_from_model(RunModel.from_raw_data(attributes or {}))
        if group is None:
            return run
        return replace(run, finished_idx=frozenset(done), failed_leaf_idx=frozenset(failed))

    def _count_in_tally(
        self, ti: TaskInstance, index: int, *, failed_leaf: bool, group: FinishGroup
    ) -> tuple[set[int], set[int]]:
        """Add the finish to its group's tally; the group's finished and failed-leaf
        indexes after it."""
        actions: list[Action] = [FinishTallyModel.done.add({index})]
        if failed_leaf:
            actions.append(FinishTallyModel.failed.add({index}))
        response = FinishTallyModel._get_connection().update_item(
            finish_scope(ti.dag_id, ti.run_id),
            str(group.number),
            actions=actions,
            return_values="ALL_NEW",
        )
        tally = FinishTallyModel.from_raw_data(response["Attributes"])
        return {int(i) for i in tally.done or ()}, {int(i) for i in tally.failed or ()}

    def _write_finish(self, ti: TaskInstance, actions: list[Action]) -> dict[str, Any] | None:
        """The finish's run write, freeing the task's slot when it is this try's."""
        slot = RunModel.active[ti.instance_id]
        exists = RunModel.run_id.exists()
        for _ in range(2):
            try:
                # One write in the usual case: the slot, if any, is this try's.
                attributes = self._write(
                    ti.dag_id,
                    ti.run_id,
                    [*actions, slot.remove()],
                    exists & (slot.does_not_exist() | (slot == ti.try_number)),
                    return_values="ALL_NEW",
                    quiet=True,
                )
                if attributes is None:
                    # The slot belongs to another try: count the finish, leave the slot.
                    attributes = self._write(
                        ti.dag_id, ti.run_id, actions, exists, return_values="ALL_NEW"
                    )
                return attributes
            except UpdateError as error:
                if error.cause_response_code != "ValidationException":
                    raise
            self._add_group_maps(ti.dag_id, ti.run_id)
        raise StoreError(f"run {ti.dag_id}/{ti.run_id}: no group counts to write into")

    def _add_group_maps(self, dag_id: str, run_id: str) -> None:
        """A big run's first group counts: their maps first (no version bump)."""
        for attribute in (RunModel.finished_groups, RunModel.failed_groups):
            self._write(
                dag_id,
                run_id,
                [attribute.set({})],
                RunModel.run_id.exists() & attribute.does_not_exist(),
                quiet=True,
            )

    def forget_finished(self, run: DagRun, index: int, group: FinishGroup | None = None) -> None:
        """Uncount a task that is being cleared: a big run's group first (so it is never
        counted done without the task), then its tally."""
        if group is None:
            self._write(
                run.dag_id,
                run.run_id,
                [
                    RunModel.finished_idx.delete({index}),
                    RunModel.failed_leaf_idx.delete({index}),
                    RunModel.version.add(1),
                ],
            )
            return
        self._write_finish_groups(
            run,
            [
                RunModel.finished_groups[str(group.number)].remove(),
                RunModel.failed_groups[str(group.number)].remove(),
                RunModel.version.add(1),
            ],
        )
        FinishTallyModel._get_connection().update_item(
            finish_scope(run.dag_id, run.run_id),
            str(group.number),
            actions=[
                FinishTallyModel.done.delete({index}),
                FinishTallyModel.failed.delete({index}),
            ],
        )

    def count_all_finishes(self, run: DagRun, indices: Collection[int]) -> None:
        actions: list[Action] = [RunModel.counts_all.set(True), RunModel.version.add(1)]
        if indices:
            actions.append(RunModel.finished_idx.add(set(indices)))
        self._write(run.dag_id, run.run_id, actions, RunModel.run_id.exists())

    def _write_finish_groups(self, run: DagRun, actions: list[Action]) -> None:
        for _ in range(2):
            try:
                self._write(run.dag_id, run.run_id, actions)
                return
            except UpdateError as error:
                if error.cause_response_code != "ValidationException":
                    raise
            self._add_group_maps(run.dag_id, run.run_id)
        raise StoreError(f"run {run.dag_id}/{run.run_id}: no group counts to write into")

    def reserve_task_slot(
        self, run: DagRun, ti: TaskInstance, try_number: int, max_active: int
    ) -> bool:
        """Take a max_active_tasks slot for one try (idempotent for the same task)."""
        entry = RunModel.active[ti.instance_id]
        condition = (RunModel.state == RunState.RUNNING.value) & (
            (size(RunModel.active) < max_active) | entry.exists()
        )
        actions = [entry.set(try_number)]
        return self._write(run.dag_id, run.run_id, actions, condition, quiet=True) is not None

    def hand_over_task_slot(
        self,
        finished: TaskInstance,
        child: TaskInstance,
        try_number: int,
        *,
        index: int | None,
        arming: Arming | None = None,
    ) -> DagRun | None:
        slot = RunModel.active[finished.instance_id]
        actions: list[Action] = [
            slot.remove(),
            RunModel.active[child.instance_id].set(try_number),
            RunModel.throttled.delete({finished.instance_id}),
            RunModel.version.add(1),
        ]
        if index is not None:
            actions.append(RunModel.finished_idx.add({index}))
            actions += _arming_actions(finished, arming)
        condition = (RunModel.state == RunState.RUNNING.value) & (slot == finished.try_number)
        attributes = self._write(
            finished.dag_id,
            finished.run_id,
            actions,
            condition,
            return_values="ALL_NEW",
            quiet=True,
        )
        return None if attributes is None else _run_from_model(RunModel.from_raw_data(attributes))

    def release_orphaned_slot(self, ti: TaskInstance) -> bool:
        slot = RunModel.active[ti.instance_id]
        try:
            with TransactWrite(connection=_transaction_connection()) as transaction:
                transaction.condition_check(
                    TaskInstanceModel,
                    run_key(ti.dag_id, ti.run_id),
                    ti.instance_id,
                    condition=(TaskInstanceModel.state == ti.state.value)
                    & (TaskInstanceModel.try_number == ti.try_number),
                )
                transaction.update(
                    RunModel(ti.dag_id, ti.run_id),
                    actions=[slot.remove()],
                    condition=slot == ti.try_number + 1,
                )
        except TransactWriteError as error:
            if _cancelled_by_conditions(error):
                return False
            raise
        return True

    def drop_throttled(self, run: DagRun, task_id: str) -> None:
        self._write(run.dag_id, run.run_id, [RunModel.throttled.delete({task_id})])

    def release_task_slot(self, ti: TaskInstance) -> bool:
        """Free the slot held by this try; a stale try's release frees nothing."""
        entry = RunModel.active[ti.instance_id]
        return (
            self._write(ti.dag_id, ti.run_id, [entry.remove()], entry == ti.try_number, quiet=True)
            is not None
        )

    def add_throttled(self, run: DagRun, task_id: str) -> None:
        self._write(run.dag_id, run.run_id, [RunModel.throttled.add({task_id})])

    def queued_runs(self, dag_id: str, limit: int) -> list[tuple[str, str]]:
        """Runs waiting for a max_active_runs slot, oldest first (sparse index)."""
        return [
            (item.dag_id, item.run_id) for item in RunModel.queued_index.query(dag_id, limit=limit)
        ]

    def due(self, now: datetime, limit: int = 100) -> list[DagRun]:
        """Armed runs whose entry's time has come (a sparse-index query per shard), read
        consistently; one disarmed since is left out."""
        bound = _iso(now)
        keys = _earliest_due(
            RunModel.due_index,
            RunModel.due_at,
            now,
            limit,
            lambda entry: (entry.dag_id, entry.run_id),
        )
        if not keys:
            return []
        found = [
            item
            for item in RunModel.batch_get(keys, consistent_read=True)
            if item.due_at is not None and item.due_at <= bound
        ]
        found.sort(key=lambda item: item.due_at or "")
        return [_run_from_model(item) for item in found]

    def arm(self, ti: TaskInstance, arming: Arming) -> None:
        self._write(
            ti.dag_id,
            ti.run_id,
            _arming_actions(ti, arming),
            RunModel.run_id.exists(),
            quiet=True,
        )

    def disarm(self, run: DagRun, quiet_since: datetime) -> bool:
        """Take the run's entry out of the due index, unless the run was written since
        ``run`` was read or a finish was counted after ``quiet_since`` (either may have
        covered a try the caller did not see)."""
        quiet = RunModel.counted_at.does_not_exist() | (RunModel.counted_at <= _iso(quiet_since))
        condition = RunModel.due_at.exists() & (RunModel.version == run.version) & quiet
        actions: list[Action] = [RunModel.due_shard.remove(), RunModel.due_at.remove()]
        return self._write(run.dag_id, run.run_id, actions, condition, quiet=True) is not None

    def _write(
        self,
        dag_id: str,
        run_id: str,
        actions: list[Action],
        condition: Condition | None = None,
        *,
        return_values: str = "NONE",
        quiet: bool = False,
    ) -> dict[str, Any] | None:
        """One UpdateItem that never ships the whole item back (runs can be large).

        Returns the requested attributes ({} for NONE); with ``quiet`` a failed
        condition returns None instead of raising.
        """
        connection = RunModel._get_connection()
        try:
            response = connection.update_item(
                dag_id, run_id, actions=actions, condition=condition, return_values=return_values
            )
        except UpdateError as error:
            if quiet and is_condition_failure(error):
                return None
            raise
        attributes: dict[str, Any] = response.get("Attributes", {})
        return attributes

    def _update(self, run: DagRun, actions: list[Action], condition: Condition) -> None:
        try:
            self._write(run.dag_id, run.run_id, actions, condition)
        except UpdateError as error:
            if not is_condition_failure(error):
                raise
            current = self.find(run.dag_id, run.run_id)
            raise RunConflict(
                f"run {run.dag_id}/{run.run_id}: expected {run.state.value} v{run.version}, "
                f"found {current.state.value if current else 'missing'} "
                f"v{current.version if current else None}",
                current,
            ) from error


# --- DAGs ----------------------------------------------------------------------------------


def _dag_from_model(item: DagModel) -> DagRecord:
    return DagRecord(
        dag_id=item.dag_id,
        current_version=None if item.current_version is None else int(item.current_version),
        paused=bool(item.paused),
        source=item.source,
        import_error=item.import_error,
        version=int(item.version),
        active_runs=frozenset(item.active_runs or ()),
        last_scheduled_end=item.last_scheduled_end,
        active_backfills=frozenset(item.active_backfills or ()),
    )


def _spec_pointer(item: DagVersionModel) -> SpecPointer | None:
    if item.spec_key is None or item.spec_size is None or item.spec_sha256 is None:
        return None
    return SpecPointer(item.spec_key, int(item.spec_size), item.spec_sha256)


class DagRepository:
    def __init__(self) -> None:
        # Versions are immutable: a warm Lambda (or the dev loop) reads each one once.
        # Per repository, not per process: a new environment (tests, moto) starts empty.
        self._specs: SpecCache[tuple[str, int], DagSpec] = SpecCache()

    def get(self, dag_id: str) -> DagRecord:
        try:
            return _dag_from_model(DagModel.get(dag_id, consistent_read=True))
        except DoesNotExist as error:
            raise NotFound(f"DAG '{dag_id}' not found") from error

    def find(self, dag_id: str) -> DagRecord | None:
        try:
            return self.get(dag_id)
        except NotFound:
            return None

    def save_version(
        self, spec: DagSpec, *, source: str | None, sha256: str | None, now: datetime
    ) -> int:
        """Store a new immutable version and make it current; returns its number.

        Versions are numbered by a conditional write on the head, so two loaders racing
        on the same DAG get different numbers and the later upload becomes current.
        """
        check_signal_index(spec)
        spec_json = spec.model_dump_json(by_alias=True, exclude_none=True)
        for _ in range(10):
            head_item = self._find_item(spec.dag)
            head = _dag_from_model(head_item) if head_item is not None else None
            latest = head_item.latest_version if head_item is not None else None
            number = int(latest or (head.current_version if head else 0) or 0) + 1
            # The object first: a crash before the item leaves an object nobody points at.
            pointer = spec_objects().put(spec.dag, number, spec_json)
            try:
                DagVersionModel(
                    spec.dag,
                    number,
                    spec_key=pointer.key,
                    spec_size=pointer.size,
                    spec_sha256=pointer.sha256,
                    source=source,
                    sha256=sha256,
                    created_at=now,
                ).save(condition=DagVersionModel.version.does_not_exist())
            except PutError as error:
                if not is_condition_failure(error):
                    raise
                continue
            item = DagModel(spec.dag)
            condition = (
                DagModel.dag_id.does_not_exist()
                if head is None
                else DagModel.version == head.version
            )
            try:
                item.update(
                    actions=[
                        DagModel.current_version.set(number),
                        DagModel.source.set(source) if source else DagModel.source.remove(),
                        DagModel.import_error.remove(),
                        DagModel.version.add(1),
                        DagModel.updated_at.set(now),
                        DagModel.latest_version.set(number),
                        _set_or_remove_set(DagModel.signal_sources, signal_sources(spec)),
                    ],
                    condition=condition,
                )
            except UpdateError as error:
                if not is_condition_failure(error):
                    raise
                continue
            previous = set(head_item.signal_sources or ()) if head_item is not None else set()
            self._index_signals(spec.dag, number, spec, previous)
            return number
        raise DagConflict(f"DAG '{spec.dag}': too many concurrent uploads", self.find(spec.dag))

    def hold_emit_sources(self, dag_id: str, prefixes: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Make ``prefixes`` the emit source prefixes ``dag_id`` holds (none: release its
        own), unless another DAG holds one of them or one inside or around it: then nothing
        changes and ``{prefix: (held prefix, its DAG)}`` says which."""
        for _ in range(10):
            try:
                item = EmitSourcesModel.get(EMIT_SOURCES_KEY, consistent_read=True)
            except DoesNotExist:
                item = None
            held: dict[str, str] = _loads(item.holders) if item is not None else {}
            clashes = emit_source_conflicts(dag_id, prefixes, held)
            if clashes:
                return clashes
            holders = {p: d for p, d in held.items() if d != dag_id}
            holders.update(dict.fromkeys(prefixes, dag_id))
            if holders == held:
                return {}
            version = int(item.version) if item is not None else 0
            condition = (
                EmitSourcesModel.version == version
                if item is not None
                else EmitSourcesModel.dag_id.does_not_exist()
            )
            try:
                EmitSourcesModel(
                    EMIT_SOURCES_KEY, holders=_dumps(holders), version=version + 1
                ).save(condition=condition)
                return {}
            except PutError as error:
                if not is_condition_failure(error):
                    raise
        raise ConflictError[Any]("emit sources: too many concurrent loaders", None)

    def retire(self, dag_id: str, *, now: datetime) -> DagRecord | None:
        """The DAG's file was deleted: no current version, no subscriptions, no new runs.
        Runs already going finish on their pinned version; a new upload revives the DAG."""
        item = self._find_item(dag_id)
        if item is None:
            return None
        previous = set(item.signal_sources or ())
        item.update(
            actions=[
                DagModel.current_version.remove(),
                DagModel.signal_sources.remove(),
                DagModel.version.add(1),
                DagModel.updated_at.set(now),
            ]
        )
        self._index_signals(dag_id, int(item.latest_version or 0) + 1, None, previous)
        return _dag_from_model(item)

    def subscriptions(self, source: str) -> list[Subscription]:
        """Every subscription that may match an event of ``source``: two items read."""
        keys = [f"sub:{source}", f"sub:{ANY_SOURCE}"]
        found: list[Subscription] = []
        for item in SignalSubscriptionModel.batch_get(keys, consistent_read=True):
            entries = item.dags.as_dict() if item.dags is not None else {}
            for dag_id, entry in sorted(entries.items()):
                for task_id, kind, pattern in json.loads(entry["subs"]):
                    found.append(Subscription(dag_id, int(entry["v"]), task_id, kind, pattern))
        # BatchGetItem answers in any order: keep the handling of a signal deterministic.
        found.sort(key=lambda sub: (sub.dag_id, sub.task_id or "", sub.kind))
        return found

    def aws_subscriptions(self) -> list[Subscription]:
        """The registry of AWS sources, then their subscription items: 1 + N/100 reads."""
        try:
            registry = AwsSourcesModel.get(AWS_SOURCES_KEY, consistent_read=True)
        except DoesNotExist:
            return []
        keys = [f"sub:{source}" for source in sorted(registry.sources or ())]
        found = [
            Subscription(dag_id, int(entry["v"]), task_id, kind, pattern)
            for item in SignalSubscriptionModel.batch_get(keys, consistent_read=True)
            for dag_id, entry in (item.dags.as_dict() if item.dags is not None else {}).items()
            for task_id, kind, pattern in json.loads(entry["subs"])
        ]
        found.sort(key=lambda sub: (sub.dag_id, sub.task_id or "", sub.kind, _dumps(sub.pattern)))
        return found

    def _find_item(self, dag_id: str) -> DagModel | None:
        try:
            return DagModel.get(dag_id, consistent_read=True)
        except DoesNotExist:
            return None

    def _index_signals(
        self, dag_id: str, number: int, spec: DagSpec | None, previous: set[str]
    ) -> None:
        """Write this version's subscriptions under each source; drop sources it left.

        Each entry carries its version and is only replaced by a newer one, so two
        uploads racing here leave the newer version's subscriptions in place."""
        grouped = subscriptions_by_source(spec)
        aws_sources = {s for s in grouped if s.startswith(AWS_SOURCE_PREFIX)}
        if aws_sources:
            # Registered before the subscriptions are written: whoever reads the registry
            # after reading a subscription finds its source there.
            AwsSourcesModel(AWS_SOURCES_KEY).update(
                actions=[AwsSourcesModel.sources.add(aws_sources)]
            )
        for source in sorted(set(grouped) | previous):
            subs = grouped.get(source)
            value = {"v": number, "subs": _dumps(subs)} if subs else None
            _write_subscription(f"sub:{source}", dag_id, number, value)

    def load_spec(self, dag_id: str, version: int) -> DagSpec:
        """A pinned DAG version, read once per repository (its item, then its object)."""
        return self._specs.get_or_load((dag_id, version), lambda: _read_spec(dag_id, version))

    def cached_spec(self, dag_id: str, version: int) -> DagSpec | None:
        return self._specs.get((dag_id, version))

    def set_paused(self, dag_id: str, paused: bool) -> None:
        try:
            DagModel(dag_id).update(
                actions=[DagModel.paused.set(paused), DagModel.version.add(1)],
                condition=DagModel.dag_id.exists(),
            )
        except UpdateError as error:
            if not is_condition_failure(error):
                raise
            raise NotFound(f"DAG '{dag_id}' not found") from error

    def reserve_run_slot(
        self, dag_id: str, run_id: str, max_active_runs: int, backfill_limit: int | None = None
    ) -> bool:
        item = DagModel(dag_id)
        not_paused = DagModel.paused.does_not_exist() | (DagModel.paused == False)  # noqa: E712
        condition = not_paused & (
            DagModel.active_runs.does_not_exist()
            | (size(DagModel.active_runs) < max_active_runs)
            | DagModel.active_runs.contains(run_id)
        )
        actions: list[Action] = [DagModel.active_runs.add({run_id})]
        if backfill_limit is not None:
            condition &= (
                DagModel.active_backfills.does_not_exist()
                | (size(DagModel.active_backfills) < backfill_limit)
                | DagModel.active_backfills.contains(run_id)
            )
            actions.append(DagModel.active_backfills.add({run_id}))
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as error:
            if not is_condition_failure(error):
                raise
            return False
        return True

    def release_run_slot(self, run: DagRun) -> bool:
        ended = (
            RunModel.ended_at.does_not_exist()
            if run.ended_at is None
            else RunModel.ended_at == run.ended_at
        )
        try:
            # The check and the release in one transaction: a clear that reopens the run
            # between a read of its end and this write must not lose the run its slot.
            with TransactWrite(connection=_transaction_connection()) as transaction:
                transaction.condition_check(
                    RunModel,
                    run.dag_id,
                    run.run_id,
                    condition=(RunModel.state == run.state.value) & ended,
                )
                transaction.update(
                    DagModel(run.dag_id),
                    actions=[
                        DagModel.active_runs.delete({run.run_id}),
                        DagModel.active_backfills.delete({run.run_id}),
                    ],
                )
        except TransactWriteError as error:
            if not _cancelled_by_conditions(error):
                raise
            return False
        return True

    def advance_schedule(self, dag_id: str, expected: datetime | None, new_end: datetime) -> bool:
        """Move the schedule's high-water mark forward, once (conditional on the old one)."""
        item = DagModel(dag_id)
        condition = (
            DagModel.last_scheduled_end.does_not_exist()
            if expected is None
            else DagModel.last_scheduled_end == expected
        )
        try:
            item.update(actions=[DagModel.last_scheduled_end.set(new_end)], condition=condition)
        except UpdateError as error:
            if not is_condition_failure(error):
                raise
            return False
        return True


def _read_spec(dag_id: str, version: int) -> tuple[DagSpec, int]:
    """A version's spec and the bytes of its JSON (what the cache counts)."""
    try:
        item = DagVersionModel.get(dag_id, version)
    except DoesNotExist as error:
        raise NotFound(f"DAG '{dag_id}' version {version} not found") from error
    pointer = _spec_pointer(item)
    if pointer is not None:
        spec_json = spec_objects().get(pointer)
    elif item.spec is not None:
        spec_json = item.spec  # an item written before specs moved to S3
    else:
        raise SpecObjectError(f"DAG '{dag_id}' version {version}: the item holds no spec")
    return DagSpec.model_validate_json(spec_json), len(spec_json)


def _write_subscription(key: str, dag_id: str, number: int, value: dict[str, Any] | None) -> None:
    """Set (or remove, when ``value`` is None) one DAG's entry under one source, unless a
    newer version of that DAG already wrote there."""
    entry = SignalSubscriptionModel.dags[dag_id]
    item = SignalSubscriptionModel(key)
    if value is None:
        try:
            item.update(actions=[entry.remove()], condition=entry["v"] < number)
        except UpdateError as error:
            # Nothing to remove (no item, no entry) or a newer version owns the entry.
            if not (is_condition_failure(error) or _is_validation_error(error)):
                raise
        return
    try:
        SignalSubscriptionModel(key, dags={dag_id: value}).save(
            condition=SignalSubscriptionModel.dag_id.does_not_exist()
        )
        return
    except PutError as error:
        if not is_condition_failure(error):
            raise
    try:
        item.update(
            actions=[entry.set(value)], condition=entry.does_not_exist() | (entry["v"] < number)
        )
    except UpdateError as error:
        if not is_condition_failure(error):
            raise


def _is_validation_error(error: Exception) -> bool:
    cause = getattr(error, "cause_response_code", None)
    return cause == "ValidationException"


def _set_or_remove_set(attribute: Any, values: set[str]) -> Action:
    action: Action = attribute.set(values) if values else attribute.remove()
    return action


# --- task state ----------------------------------------------------------------------------


class TaskStateRepository:
    def __init__(self, default_ttl: timedelta = timedelta(days=90)) -> None:
        self.default_ttl = default_ttl

    def get(self, scope: str, key: str) -> tuple[Any, int] | None:
        """The value and its version, or None."""
        try:
            item = TaskStateModel.get(scope, key, consistent_read=True)
        except DoesNotExist:
            return None
        return _loads(item.value), int(item.version)

    def get_all(self, scope: str) -> dict[str, Any]:
        return {item.key: _loads(item.value) for item in TaskStateModel.query(scope)}

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
        """Write a value. With ``expected_version`` only if nobody wrote since
        (compare-and-set, 0 = must not exist); without, last writer wins but versions
        still never repeat (a concurrent write makes this one retry)."""
        check_key(key)  # the same rule as jobs' skydag.taskstate
        if ttl:  # none or zero: the default
            check_ttl(ttl)
        if expected_version is None:
            return put_last_writer_wins(self, scope, key, value, now=now, ttl=ttl)
        new_version = expected_version + 1
        condition = (
            TaskStateModel.key.does_not_exist()
            if expected_version == 0
            else TaskStateModel.version == expected_version
        )
        item = TaskStateModel(
            scope,
            key,
            value=_dumps(value),
            version=new_version,
            updated_at=now,
            expires_at=now + (ttl or self.default_ttl),
        )
        try:
            item.save(condition=condition)
        except PutError as error:
            if not is_condition_failure(error):
                raise
            raise ConflictError[Any](
                f"task state {scope}/{key}: version {expected_version} is stale",
                self.get(scope, key),
            ) from error
        return new_version

    def delete_scope(self, scope: str) -> int:
        count = 0
        with TaskStateModel.batch_write() as batch:
            for item in TaskStateModel.query(scope):
                batch.delete(item)
                count += 1
        return count


class Repositories:
    """The adapters one service instance uses."""

    def __init__(self, task_state_ttl: timedelta = timedelta(days=90)) -> None:
        self.dags = DagRepository()
        self.runs = RunRepository()
        self.tasks = TaskInstanceRepository(
            lambda dag_id, version: self.dags.load_spec(dag_id, version).tasks
        )
        self.state = TaskStateRepository(task_state_ttl)


# --- stream images -------------------------------------------------------------------------


def task_instance_from_image(image: dict[str, Any]) -> TaskInstance:
    """A DynamoDB Streams image (DynamoDB JSON) of a task instance, as an engine record."""
    return _ti_from_model(TaskInstanceModel.from_raw_data(image))


def run_from_image(image: dict[str, Any]) -> DagRun:
    return _run_from_model(RunModel.from_raw_data(image))


def _keeps_the_store_ports(repositories: Repositories) -> Store:
    """Type-checked only: the DynamoDB repositories satisfy ``skydag.ports.store.Store``."""
    return repositories


# The contract's helpers and types (skydag.ports.store) are re-exported: they lived here.
__all__ = [
    "ANY_SOURCE",
    "DagConflict",
    "DagRepository",
    "Repositories",
    "RunConflict",
    "RunRepository",
    "Subscription",
    "TaskConflict",
    "TaskInstanceRepository",
    "TaskStateRepository",
    "decode_tries",
    "due_at",
    "encode_tries",
    "instance_scope",
    "run_from_image",
    "run_key",
    "signal_sources",
    "task_instance_from_image",
    "task_scope",
]
