"""The store's contract: every write is conditional, indexes are sparse.

Each test runs against both stores (``skydag.ports.store.Store``): the DynamoDB
repositories on moto (id ``dynamodb``) and the in-memory store (id ``memory``). What only
one of them has (the table's raw items, call counts, TTL settings) is reached through the
``backend`` fixture or tested for DynamoDB alone at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

import boto3
import botocore.client
import pytest
from moto.dynamodb.models import DynamoDBBackend
from pynamodb.exceptions import DoesNotExist, UpdateError

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
    instance_key,
)
from skydag.engine.states import Cause, RunState, TaskState
from skydag.engine.transitions import InvalidTransition, Transition
from skydag.ports.store import (
    WITH_RUN_LIMIT,
    WITH_TRY_LIMIT,
    Arming,
    ConflictError,
    NotFound,
    Store,
    StoreError,
    TryRead,
    instance_scope,
    output_key,
    output_scope,
    task_scope,
)
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.store import repositories
from skydag.store.common import iso
from skydag.store.memory import MemoryStore
from skydag.store.models import (
    DUE_SHARDS,
    DagVersionModel,
    RunModel,
    TaskInstanceModel,
    TaskStateModel,
)
from skydag.store.repositories import (
    Repositories,
    _write_subscription,
    task_instance_from_image,
)

T = TaskState
DAG = "demo"
RUN = "r1"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

SPEC_V1: dict[str, Any] = {"dag": DAG, "tasks": {"a": {"noop": None}}}
SPEC_V2: dict[str, Any] = {
    "dag": DAG,
    "tasks": {"a": {"noop": None}, "b": {"depends_on": ["a"], "noop": None}},
}


# What a store's backend shows besides the ports; the stores' own errors for a write on
# a missing item (PynamoDB's in the DynamoDB repositories, NotFound in memory).
MISSING_ITEM_ERRORS = (NotFound, UpdateError, DoesNotExist)


class Backend(Protocol):
    store: Store

    def in_due_index(self, task_id: str) -> bool:
        """Whether the task instance (of DAG/RUN) has a place in the due index."""
        ...

    def expires_at(self, scope: str, key: str) -> int:
        """The task-state item's TTL attribute (epoch seconds)."""
        ...

    def due_index_lags(self, now: datetime) -> AbstractContextManager[None]:
        """Within it, the due index answers as it stood on entry, whatever is written
        meanwhile (DynamoDB's index is eventually consistent; the memory store has no
        index to lag behind)."""
        ...

    def delete_task(self, task_id: str) -> None:
        """Remove the task instance's item (as deleting its run or DAG does)."""
        ...

    def last_image(self, task_id: str) -> TaskInstance:
        """The task instance as the change feed (the table's stream) carries it now."""
        ...

    def heard(self, task_id: str) -> bool:
        """Whether the stream's filter would deliver the record of the task's last write
        (it was not marked ``unheard``)."""
        ...

    def write_subscription(
        self, key: str, dag_id: str, number: int, value: dict[str, Any] | None
    ) -> None:
        """One subscription write of a DAG version, as an upload makes it."""
        ...

    def orphan_version(self, spec: DagSpec, number: int) -> None:
        """A version item without its head update (a loader that died in between)."""
        ...


class DynamoBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = Repositories()
        self.client = boto3.client("dynamodb", region_name=settings.region)

    def in_due_index(self, task_id: str) -> bool:
        key = {"run_key": {"S": f"{DAG}#{RUN}"}, "task_id": {"S": task_id}}
        item = self.client.get_item(
            TableName=self.settings.tables.task_instances, Key=key, ConsistentRead=True
        )["Item"]
        assert ("due_at" in item) == ("due_shard" in item)
        return "due_at" in item

    def lookup_attributes(self, task_id: str) -> set[str]:
        """Which of the token and job id attributes (indexed or not) the item has."""
        key = {"run_key": {"S": f"{DAG}#{RUN}"}, "task_id": {"S": task_id}}
        item = self.client.get_item(
            TableName=self.settings.tables.task_instances, Key=key, ConsistentRead=True
        )["Item"]
        return set(item) & {"dispatch_token", "job_id", "try_token", "try_job"}

    @contextmanager
    def due_index_lags(self, now: datetime) -> Iterator[None]:
        index = TaskInstanceModel.due_index
        bound = iso(now)
        frozen = {
            f"due#{shard}": list(index.query(f"due#{shard}", TaskInstanceModel.due_at <= bound))
            for shard in range(DUE_SHARDS)
        }

        def query(shard: str, *_: Any, limit: int | None = None, **__: Any) -> Iterator[Any]:
            return iter(frozen[shard][:limit])

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(index, "query", query)
            yield

    def delete_task(self, task_id: str) -> None:
        TaskInstanceModel(f"{DAG}#{RUN}", task_id).delete()

    def expires_at(self, scope: str, key: str) -> int:
        item = self.client.get_item(
            TableName=self.settings.tables.task_state,
            Key={"scope": {"S": scope}, "key": {"S": key}},
            ConsistentRead=True,
        )["Item"]
        return int(item["expires_at"]["N"])  # epoch seconds, as DynamoDB's TTL wants

    def last_image(self, task_id: str) -> TaskInstance:
        raw = TaskInstanceModel.get(f"{DAG}#{RUN}", task_id).serialize()
        return task_instance_from_image(raw)

    def heard(self, task_id: str) -> bool:
        from skydag import wiring
        from skydag.signals.patterns import matches

        image = TaskInstanceModel.get(f"{DAG}#{RUN}", task_id).serialize()
        record = {"eventName": "MODIFY", "dynamodb": {"NewImage": image}}
        patterns = wiring.STREAM_EVENT_SOURCE.filters["task_instances"]
        return any(matches(pattern, record) for pattern in patterns)

    def write_subscription(
        self, key: str, dag_id: str, number: int, value: dict[str, Any] | None
    ) -> None:
        _write_subscription(key, dag_id, number, value)

    def orphan_version(self, spec: DagSpec, number: int) -> None:
        spec_json = spec.model_dump_json(by_alias=True, exclude_none=True)
        DagVersionModel(spec.dag, number, spec=spec_json, created_at=NOW).save()


class MemoryBackend:
    def __init__(self) -> None:
        self.memory = MemoryStore(record_changes=True)
        self.store: Store = self.memory

    def in_due_index(self, task_id: str) -> bool:
        item = self.memory.tasks._item(DAG, RUN, task_id)
        assert item is not None
        return item.due is not None

    def due_index_lags(self, now: datetime) -> AbstractContextManager[None]:
        return nullcontext()

    def delete_task(self, task_id: str) -> None:
        with self.memory.tasks._lock:
            del self.memory.tasks._runs[(DAG, RUN)][task_id]

    def expires_at(self, scope: str, key: str) -> int:
        expires = self.memory.state.expires_at(scope, key)
        assert expires is not None
        return expires

    def last_image(self, task_id: str) -> TaskInstance:
        images = [c.new for c in self.memory.take_changes() if c.new.key == (DAG, RUN, task_id)]
        image: TaskInstance = images[-1]
        return image

    def heard(self, task_id: str) -> bool:
        changes = [c for c in self.memory.take_changes() if c.new.key == (DAG, RUN, task_id)]
        return not changes[-1].unheard

    def write_subscription(
        self, key: str, dag_id: str, number: int, value: dict[str, Any] | None
    ) -> None:
        with self.memory.tasks._lock:
            self.memory.dags._write_subscription(key, dag_id, number, value)

    def orphan_version(self, spec: DagSpec, number: int) -> None:
        from skydag.store.memory import _DagVersion

        spec_json = spec.model_dump_json(by_alias=True, exclude_none=True)
        self.memory.dags._versions[(spec.dag, number)] = _DagVersion(spec_json, None, None, NOW)


@pytest.fixture(params=["dynamodb", "memory"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "dynamodb":
        return DynamoBackend(request.getfixturevalue("aws"))
    return MemoryBackend()


@pytest.fixture
def repos(backend: Backend) -> Store:
    """The store under test (overrides the conftest's DynamoDB-only ``repos``)."""
    return backend.store


# --- helpers -------------------------------------------------------------------------------


def put_task(repos: Store, task_id: str = "a", run_id: str = RUN) -> TaskInstance:
    repos.tasks.put_new([TaskInstance(DAG, run_id, task_id)])
    return repos.tasks.get(DAG, run_id, task_id)


def dispatch(ti: TaskInstance, *, timeout_at: datetime | None = None) -> Transition:
    changes = {
        "try_number": ti.try_number + 1,
        "queued_at": NOW,
        "timeout_at": timeout_at,
        "next_attempt_at": None,
    }
    return Transition(ti.task_id, ti.state, T.QUEUED, Cause.DISPATCH, ti.version, changes)


def move(ti: TaskInstance, dst: TaskState, cause: Cause, **changes: Any) -> Transition:
    return Transition(ti.task_id, ti.state, dst, cause, ti.version, changes)


def queued_task(repos: Store, task_id: str = "a") -> TaskInstance:
    ti = put_task(repos, task_id)
    return repos.tasks.apply(ti, dispatch(ti))


def make_run(
    repos: Store,
    run_id: str = RUN,
    *,
    start: bool = True,
    logical_date: datetime = NOW,
) -> DagRun:
    run = DagRun(DAG, run_id, 1, RunType.MANUAL, logical_date=logical_date, created_at=logical_date)
    assert repos.runs.create(run)
    if start:
        run = repos.runs.transition(run, RunState.RUNNING, Cause.DISPATCH, started_at=NOW)
    else:
        repos.runs.mark_tasks_created(run)  # waiting for a slot, in the queued index
        run = replace(run, tasks_created=True)
    return run


@pytest.fixture
def serialised_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serialise moto's UpdateItem: DynamoDB evaluates a condition and writes atomically,
    moto (plain Python, no lock) only does so per GIL slice. Without this a thread race
    could let two conditional writers win inside moto, which real DynamoDB never does."""
    lock = threading.Lock()
    original: Callable[..., Any] = DynamoDBBackend.update_item

    def update_item(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", update_item)


def race(workers: list[Callable[[], Any]]) -> list[Any]:
    """Run the workers at once (a barrier releases them together); results or exceptions."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(index: int, work: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as error:  # collected and asserted on by the caller
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


# --- task instances: conditional transitions -----------------------------------------------


def test_only_the_write_marked_unheard_leaves_its_record_out(
    repos: Store, backend: Backend
) -> None:
    """A write marked ``unheard`` (``Transition.unheard``) is left out by the stream's
    filter; every other write of the item, whatever it changes, is delivered again (the
    mark is the write's, not the item's)."""
    ti = put_task(repos)
    queued = repos.tasks.apply(ti, replace(dispatch(ti), unheard=True))
    assert not backend.heard("a")
    running = repos.tasks.apply(
        queued, replace(move(queued, T.RUNNING, Cause.STARTED, job_id="j"), unheard=True)
    )
    assert not backend.heard("a")
    checked = repos.tasks.check_later(running, NOW + timedelta(minutes=5))
    assert backend.heard("a")
    repos.tasks.apply(checked, replace(move(checked, T.SUCCESS, Cause.SUCCEEDED), unheard=True))
    assert not backend.heard("a")
    repos.tasks.report_upstream((DAG, RUN, "a"), "b", UpstreamReport(T.SUCCESS, 9))
    assert backend.heard("a")


def test_transition_with_the_right_version_is_applied(repos: Store) -> None:
    ti = put_task(repos)
    assert (ti.state, ti.version, ti.try_number) == (T.PENDING, 0, 0)

    new = repos.tasks.apply(ti, dispatch(ti, timeout_at=NOW + timedelta(minutes=5)))

    assert (new.state, new.version, new.try_number) == (T.QUEUED, 1, 1)
    stored = repos.tasks.get(DAG, RUN, "a")
    assert stored == new
    assert stored.queued_at == NOW
    assert stored.timeout_at == NOW + timedelta(minutes=5)


def test_changes_set_to_none_are_removed(repos: Store) -> None:
    ti = queued_task(repos)
    ti = repos.tasks.apply(ti, move(ti, T.RUNNING, Cause.STARTED, job_id="j-1", started_at=NOW))
    assert repos.tasks.get(DAG, RUN, "a").job_id == "j-1"

    ti = repos.tasks.apply(ti, move(ti, T.STOPPED, Cause.STOP, job_id=None, reason="stop"))

    stored = repos.tasks.get(DAG, RUN, "a")
    assert (stored.state, stored.job_id, stored.reason, stored.version) == (
        T.STOPPED,
        None,
        "stop",
        3,
    )


def test_stale_version_conflicts_and_carries_the_current_item(repos: Store) -> None:
    ti = put_task(repos)
    repos.tasks.apply(ti, dispatch(ti))

    with pytest.raises(ConflictError) as conflict:
        repos.tasks.apply(ti, dispatch(ti))  # the same copy, version 0, once more

    assert conflict.value.current == repos.tasks.get(DAG, RUN, "a")
    assert (conflict.value.current.state, conflict.value.current.version) == (T.QUEUED, 1)


def test_wrong_source_state_conflicts_even_with_the_right_version(repos: Store) -> None:
    ti = queued_task(repos)  # queued, version 1
    # A copy that believes the task is still pending at version 1.
    believed = TaskInstance(DAG, RUN, "a", state=T.PENDING, version=ti.version)

    with pytest.raises(ConflictError) as conflict:
        repos.tasks.apply(believed, move(believed, T.SKIPPED, Cause.SKIPPED))

    assert conflict.value.current == ti
    assert repos.tasks.get(DAG, RUN, "a") == ti


def test_missing_task_conflicts_with_no_current_item(repos: Store) -> None:
    ghost = TaskInstance(DAG, RUN, "ghost")
    with pytest.raises(ConflictError) as conflict:
        repos.tasks.apply(ghost, dispatch(ghost))
    assert conflict.value.current is None


@pytest.mark.parametrize(
    ("src", "dst", "cause"),
    [
        (T.SUCCESS, T.QUEUED, Cause.DISPATCH),
        (T.PENDING, T.RUNNING, Cause.STARTED),
        (T.FAILED, T.SUCCESS, Cause.SUCCEEDED),
        (T.PENDING, T.QUEUED, Cause.SIGNAL),  # the edge exists, not for this cause
    ],
)
def test_a_transition_outside_the_table_cannot_be_built(
    src: TaskState, dst: TaskState, cause: Cause
) -> None:
    with pytest.raises(InvalidTransition):
        Transition("a", src, dst, cause, 0)


def test_unknown_field_in_changes_is_refused(repos: Store) -> None:
    ti = put_task(repos)
    with pytest.raises(ValueError, match="no writable field"):
        repos.tasks.apply(ti, move(ti, T.SKIPPED, Cause.SKIPPED, run_id="elsewhere"))
    assert repos.tasks.get(DAG, RUN, "a") == ti


# --- task instances: the try history -------------------------------------------------------


def test_a_new_try_writes_the_history_in_its_own_conditional_write(
    backend: Backend, repos: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ti = queued_task(repos)
    ti = repos.tasks.apply(ti, move(ti, T.RUNNING, Cause.STARTED, job_id="j-1", started_at=NOW))
    ended = NOW + timedelta(seconds=7)
    ti = repos.tasks.apply(
        ti,
        move(
            ti,
            T.UP_FOR_RETRY,
            Cause.RETRY,
            ended_at=ended,
            exit_code=3,
            reason="exit 3",
            next_attempt_at=ended,
        ),
    )
    calls: list[str] = []
    if isinstance(backend, DynamoBackend):
        connection = TaskInstanceModel._get_connection()
        for name in ("update_item", "put_item", "get_item", "batch_get_item"):
            original = getattr(connection, name)

            def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
                calls.append(_name)
                return _original(*args, **kw)

            monkeypatch.setattr(connection, name, spy)
    retried = repos.tasks.apply(ti, dispatch(ti))
    if isinstance(backend, DynamoBackend):
        assert calls == ["update_item"]  # one conditional write: the new try and the history
    monkeypatch.undo()
    expected = (TryRecord(1, T.FAILED, NOW, ended, 3, "j-1", "exit 3"),)
    assert retried.tries == expected
    stored = repos.tasks.get(DAG, RUN, "a")
    assert stored == retried
    assert (stored.try_number, stored.job_id, stored.exit_code) == (2, None, None)


def test_a_lost_race_writes_no_history(repos: Store) -> None:
    ti = queued_task(repos)
    ti = repos.tasks.apply(ti, move(ti, T.UP_FOR_RETRY, Cause.RETRY, ended_at=NOW))
    repos.tasks.apply(ti, dispatch(ti))
    with pytest.raises(ConflictError) as lost:
        repos.tasks.apply(ti, dispatch(ti))  # a stale copy: the version moved on
    current = lost.value.current
    assert isinstance(current, TaskInstance)
    assert [r.try_number for r in current.tries] == [1]


def test_the_history_survives_stream_images_and_batch_writes(
    backend: Backend, repos: Store
) -> None:
    long_reason = "x" * 5000
    history = tuple(
        TryRecord(n, T.FAILED, NOW, NOW + timedelta(seconds=n), n, f"job-{n}", long_reason)
        for n in range(1, 4)
    )
    repos.tasks.put_new(
        [TaskInstance(DAG, RUN, "a", state=T.RUNNING, try_number=4, tries=history, job_id="j4")]
    )
    stored = repos.tasks.get(DAG, RUN, "a")
    assert stored.tries == history
    assert stored.job_id == "j4"
    assert backend.last_image("a").tries == history


# --- task instances: concurrent writers ----------------------------------------------------


def test_interleaved_stale_copies_one_wins_the_other_redecides(repos: Store) -> None:
    ti = queued_task(repos)
    first, second = ti, ti  # two schedulers read the same item

    won = repos.tasks.apply(first, move(first, T.RUNNING, Cause.STARTED, started_at=NOW))
    with pytest.raises(ConflictError) as conflict:
        repos.tasks.apply(second, move(second, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))

    current = conflict.value.current
    assert current == won
    # The loser decides again from the current item and succeeds.
    done = repos.tasks.apply(current, move(current, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))
    assert (done.state, done.version) == (T.SUCCESS, 3)
    assert repos.tasks.get(DAG, RUN, "a") == done


@pytest.mark.usefixtures("serialised_moto")
def test_concurrent_writers_exactly_one_wins(repos: Store) -> None:
    outcomes = [
        (T.RUNNING, Cause.STARTED),
        (T.SUCCESS, Cause.SUCCEEDED),
        (T.FAILED, Cause.FAILED),
        (T.UP_FOR_RETRY, Cause.RETRY),
        (T.STOPPED, Cause.STOP),
        (T.RUNNING, Cause.STARTED),
    ]
    for task_id in ("t1", "t2"):
        ti = queued_task(repos, task_id)

        def writer(dst: TaskState, cause: Cause, ti: TaskInstance = ti) -> Callable[[], Any]:
            return lambda: repos.tasks.apply(ti, move(ti, dst, cause))

        results = race([writer(dst, cause) for dst, cause in outcomes])

        winners = [r for r in results if isinstance(r, TaskInstance)]
        losers = [r for r in results if isinstance(r, ConflictError)]
        assert len(winners) == 1, results
        assert len(losers) == len(outcomes) - 1, results
        stored = repos.tasks.get(DAG, RUN, task_id)
        assert stored == winners[0]
        assert stored.version == ti.version + 1
        assert all(loser.current == stored for loser in losers)


# --- upstream reports ----------------------------------------------------------------------


def test_report_upstream_is_idempotent_and_refuses_stale_reports(repos: Store) -> None:
    child = put_task(repos, "b")

    updated = repos.tasks.report_upstream(child, "a", UpstreamReport(T.FAILED, 3))
    assert updated is not None
    assert updated.upstream == {"a": UpstreamReport(T.FAILED, 3)}
    assert updated.version == child.version + 1

    # The same report again (a redelivered stream record): nothing is written, and the
    # downstream comes back as it is (it holds the report: the redelivery evaluates it).
    assert repos.tasks.report_upstream(child.key, "a", UpstreamReport(T.FAILED, 3)) == updated
    # An older report (a lower version of the upstream) arriving late: refused.
    assert repos.tasks.report_upstream(child.key, "a", UpstreamReport(T.SUCCESS, 2)) is None
    assert repos.tasks.get(DAG, RUN, "b") == updated

    # A newer one (the upstream was cleared and ran again) replaces it.
    newer = repos.tasks.report_upstream(child.key, "a", UpstreamReport(T.SUCCESS, 7))
    assert newer is not None
    assert newer.upstream == {"a": UpstreamReport(T.SUCCESS, 7)}
    # Reports of different upstreams are independent.
    both = repos.tasks.report_upstream(child.key, "c", UpstreamReport(T.SKIPPED, 1))
    assert both is not None
    assert both.upstream == {"a": UpstreamReport(T.SUCCESS, 7), "c": UpstreamReport(T.SKIPPED, 1)}
    assert repos.tasks.get(DAG, RUN, "b") == both


def test_a_slotted_report_makes_its_task_slotted_in_the_same_write(repos: Store) -> None:
    """engine/slots.py: a report told by a slotted task makes its downstream task slotted
    with the report itself (one write, one version); an unslotted report leaves the flag
    as it is, and the flag stays for the task's later writes. A wide join is made slotted
    on its own (``hold_slotted``); with its DAG version unknown, only if written."""
    child = put_task(repos, "b")
    assert not child.slotted

    plain = repos.tasks.report_upstream(child, "a", UpstreamReport(T.SUCCESS, 3))
    assert plain is not None
    assert not plain.slotted
    told = repos.tasks.report_upstream(child.key, "c", UpstreamReport(T.SUCCESS, 5, slotted=True))
    assert told is not None
    assert (told.slotted, told.version) == (True, plain.version + 1)
    assert told.upstream["c"] == UpstreamReport(T.SUCCESS, 5)
    later = repos.tasks.report_upstream(child.key, "a", UpstreamReport(T.FAILED, 4))
    assert later is not None
    assert later.slotted
    queued = repos.tasks.apply(later, dispatch(later))
    assert queued.slotted
    assert repos.tasks.get(DAG, RUN, "b").slotted

    written = put_task(repos, "join")
    join = repos.tasks.hold_slotted(written.key, dag_version=written.dag_version)
    assert join is not None
    assert (join.state, join.slotted, join.version) == (T.PENDING, True, written.version + 1)
    assert repos.tasks.get(DAG, RUN, "join") == join
    again = repos.tasks.hold_slotted(join.key)
    assert again is not None
    assert again.version == join.version + 1
    # Its DAG version unknown: only a written task is changed.
    assert repos.tasks.hold_slotted((DAG, RUN, "never"), dag_version=0) is None


def test_a_report_to_a_task_read_unwritten_inserts_it_in_one_write(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task never written has no map of reports: writing into it is refused (a write
    unit spent) before the insert. A task read unwritten (version 0) is inserted at once;
    one told by key is tried the usual way first."""
    if not isinstance(backend, DynamoBackend):
        pytest.skip("a refused write is DynamoDB's")
    repos = backend.store
    make_run(repos)
    calls: list[str] = []
    make_api_call = botocore.client.BaseClient._make_api_call

    def counted(client: Any, operation: str, params: Any) -> Any:
        calls.append(operation)
        return make_api_call(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counted)
    fresh = TaskInstance(DAG, RUN, "join", dag_version=1)
    told = repos.tasks.report_upstream(fresh, "a", UpstreamReport(T.SUCCESS, 2))
    assert told is not None
    assert (told.version, told.upstream) == (1, {"a": UpstreamReport(T.SUCCESS, 2)})
    assert calls == ["UpdateItem"]

    calls.clear()
    again = repos.tasks.report_upstream(fresh, "b", UpstreamReport(T.FAILED, 3))  # read stale
    assert again is not None
    assert set(again.upstream) == {"a", "b"}
    assert calls == ["UpdateItem", "UpdateItem"]  # the insert refused, then into the map
    calls.clear()
    by_key = repos.tasks.report_upstream(
        (DAG, RUN, "other"), "a", UpstreamReport(T.SUCCESS, 2), dag_version=1
    )
    assert by_key is not None
    assert calls == ["UpdateItem", "UpdateItem"]  # into no map (refused), then the insert


def test_a_transition_written_with_an_upstream_report_records_both_at_once(
    repos: Store,
) -> None:
    """A report and the dispatch it allows, one conditional write (``apply(...,
    upstream=)``): the report is held, the state moved, the version bumped once; the
    same write on a task that changed since it was read (a clear's tombstone) writes
    nothing, and the report is not recorded either."""
    child = put_task(repos, "b")
    report = UpstreamReport(T.SUCCESS, 4)
    holding = replace(child, upstream={"a": report})

    queued = repos.tasks.apply(holding, dispatch(holding), upstream=("a", report))

    stored = repos.tasks.get(DAG, RUN, "b")
    assert stored == queued
    assert (stored.state, stored.version, stored.try_number) == (T.QUEUED, child.version + 1, 1)
    assert stored.upstream == {"a": report}

    other = put_task(repos, "c")
    cleared = repos.tasks.report_upstream(other, "a", UpstreamReport.tombstone(4))
    assert cleared is not None
    stale = replace(other, upstream={"a": report})  # as read before the tombstone
    with pytest.raises(ConflictError):
        repos.tasks.apply(stale, dispatch(stale), upstream=("a", report))
    assert repos.tasks.get(DAG, RUN, "c") == cleared


# --- wide joins' tallies (engine/tallies.py) ------------------------------------------------


def test_a_tally_takes_each_report_once_and_refuses_stale_ones(repos: Store) -> None:
    """The first report creates the group's item; the same report again is held (nothing
    written); an older one is refused; a clear's tombstone takes the reports of its own
    version and is replaced by a later report only."""
    join = (DAG, RUN, "join")
    assert repos.tasks.get_tally(join, 3) == TallyMembers()

    first = repos.tasks.tell_tally(join, 3, 0, UpstreamReport(T.SUCCESS, 4))
    assert first == TallyWrite(TallyMembers(), TallyMembers(1, {0: UpstreamReport(T.SUCCESS, 4)}))
    second = repos.tasks.tell_tally(join, 3, 5, UpstreamReport(T.FAILED, 2))
    assert second is not None
    assert second.before == first.after
    assert second.after == TallyMembers(
        2, {0: UpstreamReport(T.SUCCESS, 4), 5: UpstreamReport(T.FAILED, 2)}
    )
    again = repos.tasks.tell_tally(join, 3, 5, UpstreamReport(T.FAILED, 2))
    assert again == TallyWrite(second.after, second.after, written=False)
    assert repos.tasks.tell_tally(join, 3, 5, UpstreamReport(T.SUCCESS, 1)) is None

    cleared = repos.tasks.tell_tally(join, 3, 5, UpstreamReport.tombstone(2))
    assert cleared is not None
    assert cleared.after.members[5] == UpstreamReport.tombstone(2)
    assert repos.tasks.tell_tally(join, 3, 5, UpstreamReport(T.FAILED, 2)) is None
    rerun = repos.tasks.tell_tally(join, 3, 5, UpstreamReport(T.SUCCESS, 3))
    assert rerun is not None
    assert rerun.after.members[5] == UpstreamReport(T.SUCCESS, 3)
    assert repos.tasks.get_tally(join, 3) == rerun.after
    assert repos.tasks.get_tally(join, 2) == TallyMembers()  # groups are apart


def test_a_joins_summary_of_a_group_is_replaced_by_later_tallies_only(repos: Store) -> None:
    join = put_task(repos, "join")
    assert repos.tasks.record_tally((DAG, RUN, "nope"), 0, Tally(1, {T.SUCCESS: 1})) is None
    assert repos.tasks.find(DAG, RUN, "nope") is None

    told = repos.tasks.record_tally(join.key, 0, Tally(3, {T.SUCCESS: 2, T.FAILED: 1}))
    assert told is not None
    assert told.tallies == {0: Tally(3, {T.SUCCESS: 2, T.FAILED: 1})}
    assert told.version == join.version + 1
    # An older tally (a delivery that read the group before a later one): refused.
    assert repos.tasks.record_tally(join.key, 0, Tally(2, {T.SUCCESS: 1})) == told
    assert repos.tasks.record_tally(join.key, 0, Tally(3, {T.SUCCESS: 9})) == told
    later = repos.tasks.record_tally(join.key, 0, Tally(12, {T.SUCCESS: 64}))
    other = repos.tasks.record_tally(join.key, 7, Tally(1, {T.SKIPPED: 1}))
    assert later is not None
    assert other is not None
    assert other.tallies == {0: Tally(12, {T.SUCCESS: 64}), 7: Tally(1, {T.SKIPPED: 1})}
    assert other.version == join.version + 3
    assert repos.tasks.get(DAG, RUN, "join") == other


def test_report_upstream_to_a_missing_task_creates_nothing(repos: Store) -> None:
    report = UpstreamReport(T.SUCCESS, 1)
    assert repos.tasks.report_upstream((DAG, RUN, "nope"), "a", report) is None
    assert repos.tasks.find(DAG, RUN, "nope") is None


def test_a_clear_tombstone_refuses_the_cleared_version_and_takes_later_ones(
    repos: Store,
) -> None:
    child = put_task(repos, "b")
    reported = repos.tasks.report_upstream(child, "a", UpstreamReport(T.SUCCESS, 2))
    assert reported is not None
    reported = repos.tasks.report_upstream(reported, "c", UpstreamReport(T.SUCCESS, 2))
    assert reported is not None
    upstream = replace(put_task(repos, "a"), version=2)

    retired = repos.tasks.retire_upstream(upstream, ["b"])  # a is cleared at version 2

    assert list(retired) == ["b"]
    assert retired["b"].upstream == {
        "a": UpstreamReport.tombstone(2),
        "c": UpstreamReport(T.SUCCESS, 2),
    }
    assert retired["b"].version == reported.version + 1
    # The cleared try's finish, read before the clear and reported after it: refused.
    assert repos.tasks.report_upstream(child.key, "a", UpstreamReport(T.SUCCESS, 2)) is None
    # Retiring the same or an older version again changes nothing.
    assert repos.tasks.retire_upstream(upstream, ["b"]) == {}
    assert repos.tasks.retire_upstream(replace(upstream, version=1), ["b"]) == {}
    assert repos.tasks.get(DAG, RUN, "b") == retired["b"]
    # The rerun finishes at a later version: that is news.
    rerun = repos.tasks.report_upstream(child.key, "a", UpstreamReport(T.SUCCESS, 4))
    assert rerun is not None
    assert rerun.upstream["a"] == UpstreamReport(T.SUCCESS, 4)
    # A downstream never reported to gets a tombstone too; a missing one gets nothing.
    fresh = repos.tasks.retire_upstream(replace(upstream, task_id="d", version=0), ["b", "nope"])
    assert list(fresh) == ["b"]
    assert fresh["b"].upstream["d"] == UpstreamReport.tombstone(0)
    assert repos.tasks.find(DAG, RUN, "nope") is None


def test_get_many_and_list_for_run(repos: Store) -> None:
    repos.tasks.put_new(TaskInstance(DAG, RUN, f"t{i:03}") for i in range(120))
    repos.tasks.put_new([TaskInstance(DAG, "other", "t000")])

    wanted = [f"t{i:03}" for i in range(119, -1, -1)] + ["missing"]
    found = repos.tasks.get_many(DAG, RUN, wanted)

    assert [ti.task_id for ti in found] == wanted[:-1]  # in the order asked, over 100 keys
    assert len(repos.tasks.list_for_run(DAG, RUN)) == 120


# --- due index (retries and timeouts) ------------------------------------------------------


def test_retry_is_due_only_once_its_time_has_come(backend: Backend, repos: Store) -> None:
    ti = queued_task(repos, "a")
    at = NOW + timedelta(minutes=2)
    ti = repos.tasks.apply(ti, move(ti, T.UP_FOR_RETRY, Cause.RETRY, next_attempt_at=at))
    put_task(repos, "idle")  # pending: not in the index at all

    assert repos.tasks.due(at - timedelta(seconds=1)) == []
    assert [t.task_id for t in repos.tasks.due(at)] == ["a"]
    assert repos.tasks.due(at)[0] == ti
    # Read when a look of the entry falls within the window before the pass (its place,
    # 10 minutes on, then 30, 70, ...: ``looks_at_entry``), and never twice by one pass.
    assert [t.task_id for t in repos.tasks.due(at + timedelta(minutes=35))] == ["a"]
    assert repos.tasks.due(at + timedelta(hours=1)) == []
    assert repos.tasks.due(at, skip={ti.key}) == []
    if isinstance(backend, DynamoBackend):
        # A place in a form this version does not write is read at every pass, as before.
        item = TaskInstanceModel(f"{DAG}#{RUN}", "a")
        item.update(actions=[TaskInstanceModel.due_at.set("2026-01-01T12:02:00+00:00")])
        assert [t.task_id for t in repos.tasks.due(at + timedelta(hours=1))] == ["a"]

    ti = repos.tasks.get(DAG, RUN, "a")
    ti = repos.tasks.apply(ti, dispatch(ti))  # the retry is dispatched

    assert repos.tasks.due(at + timedelta(hours=1)) == []
    assert not backend.in_due_index("a")  # sparse: the item left the index


def test_deadlines_of_running_tasks_are_due(repos: Store) -> None:
    deadlines = {f"t{i}": NOW + timedelta(minutes=i) for i in range(1, 9)}
    for task_id, deadline in deadlines.items():
        ti = put_task(repos, task_id)
        ti = repos.tasks.apply(ti, dispatch(ti, timeout_at=deadline))
        if task_id in ("t1", "t2", "t3"):
            repos.tasks.apply(ti, move(ti, T.RUNNING, Cause.STARTED, started_at=NOW))
    done = repos.tasks.get(DAG, RUN, "t4")
    repos.tasks.apply(done, move(done, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))

    due = repos.tasks.due(NOW + timedelta(minutes=6))

    # Queued and running tasks past their deadline, oldest first, over all shards;
    # the finished one left the index.
    assert [t.task_id for t in due] == ["t1", "t2", "t3", "t5", "t6"]
    assert [t.task_id for t in repos.tasks.due(NOW + timedelta(minutes=9), limit=3)] == [
        "t1",
        "t2",
        "t3",
    ]


def test_a_fan_outs_count_moves_forward_only_on_the_task_as_it_was_read(repos: Store) -> None:
    ti = queued_task(repos, "a")
    assert repos.tasks.advance_report_cursor(ti, 0, 100) is True
    counted = repos.tasks.get(DAG, RUN, "a")
    assert (counted.reported_version, counted.reported) == (ti.version, 100)
    assert counted.version == ti.version  # the task itself did not change
    assert repos.tasks.advance_report_cursor(ti, 0, 100) is False  # another delivery's
    assert repos.tasks.advance_report_cursor(ti, 100, 200) is True
    # A count of the task as it was before a change is refused: its state moved on.
    moved = repos.tasks.apply(ti, move(ti, T.RUNNING, Cause.STARTED))
    assert repos.tasks.advance_report_cursor(ti, 200, 300) is False
    # The new version counts from scratch, whatever the old one reached.
    assert repos.tasks.advance_report_cursor(moved, 0, 100) is True
    assert repos.tasks.get(DAG, RUN, "a").reported == 100


def test_postponing_moves_only_the_place_in_the_due_index(repos: Store) -> None:
    ti = queued_task(repos, "a")
    ti = repos.tasks.apply(ti, move(ti, T.UP_FOR_RETRY, Cause.RETRY, next_attempt_at=NOW))
    later = NOW + timedelta(minutes=5)

    assert repos.tasks.postpone_due(ti, later) is True

    assert repos.tasks.due(later - timedelta(seconds=1)) == []
    assert repos.tasks.due(later) == [ti]  # the task itself did not change
    assert repos.tasks.get(DAG, RUN, "a") == ti
    # A task that changed meanwhile is not postponed: its own due time stands.
    stale = replace(ti, version=ti.version - 1)
    assert repos.tasks.postpone_due(stale, NOW + timedelta(hours=1)) is False
    # Its next write puts it back where its fields say.
    repos.tasks.check_later(ti, NOW)
    assert [t.task_id for t in repos.tasks.due(NOW)] == ["a"]


def test_a_dispatched_try_keeps_its_place_at_its_claims_expiry(repos: Store) -> None:
    """queued -> running with a later next look leaves the index entry where it is (two
    index writes saved); the task is then found early, and judged by its fields."""
    claim_expiry, next_look = NOW + timedelta(minutes=5), NOW + timedelta(minutes=10)
    ti = repos.tasks.check_later(queued_task(repos, "a"), claim_expiry)
    running = repos.tasks.apply(
        ti, move(ti, T.RUNNING, Cause.STARTED, job_id="j-1", check_at=next_look)
    )

    assert repos.tasks.due(claim_expiry - timedelta(seconds=1)) == []
    assert repos.tasks.due(claim_expiry) == [running]  # early: the task is as written
    # Moved to its own time (the reconciler does so), it is found then and not before.
    assert repos.tasks.postpone_due(running, next_look) is True
    assert repos.tasks.due(next_look - timedelta(seconds=1)) == []
    assert repos.tasks.due(next_look) == [running]
    # Its finish takes the entry out.
    repos.tasks.apply(running, move(running, T.SUCCESS, Cause.SUCCEEDED, check_at=None))
    assert repos.tasks.due(next_look + timedelta(hours=1)) == []


@pytest.mark.parametrize("where", ["sooner deadline", "postponed place"])
def test_a_dispatched_try_never_keeps_a_place_later_than_its_time(repos: Store, where: str) -> None:
    claim_expiry, next_look = NOW + timedelta(minutes=5), NOW + timedelta(minutes=10)
    ti = repos.tasks.check_later(queued_task(repos, "a"), claim_expiry)
    deadline = None
    if where == "sooner deadline":
        deadline = NOW + timedelta(minutes=1)  # the new time is before the place
    else:
        assert repos.tasks.postpone_due(ti, NOW + timedelta(hours=1))  # a failing item's
    running = repos.tasks.apply(
        ti,
        move(ti, T.RUNNING, Cause.STARTED, check_at=next_look, timeout_at=deadline),
    )

    on_time = deadline or next_look
    assert repos.tasks.due(on_time - timedelta(seconds=1)) == []
    assert repos.tasks.due(on_time) == [running]
    assert repos.tasks.get(DAG, RUN, "a") == running


def test_due_judges_each_index_entry_by_the_item_as_it_is_now(
    backend: Backend, repos: Store
) -> None:
    """The index lags behind the table: what changed since it was read is judged as it is
    now. Still due: read fresh; moved past ``now``, left the index, or gone: left out."""
    tasks = {}
    for task_id in ("same", "changed", "postponed", "started", "gone"):
        ti = queued_task(repos, task_id)
        tasks[task_id] = repos.tasks.check_later(ti, NOW)
    with backend.due_index_lags(NOW):
        changed = repos.tasks.note_signal(tasks["changed"], {"id": "e-1"})  # still due
        repos.tasks.postpone_due(tasks["postponed"], NOW + timedelta(minutes=5))
        started = tasks["started"]
        repos.tasks.apply(started, move(started, T.RUNNING, Cause.STARTED, check_at=None))
        backend.delete_task("gone")

        due = repos.tasks.due(NOW)

    assert sorted(t.task_id for t in due) == ["changed", "same"]
    assert [t for t in due if t.task_id == "changed"] == [changed]
    assert [t for t in due if t.task_id == "same"] == [tasks["same"]]


def test_due_finds_more_than_a_batch_read_in_one_pass(repos: Store) -> None:
    """Over 100 due entries: the items are read in BatchGetItem pages of 100."""
    for i in range(130):
        ti = queued_task(repos, f"t{i:03}")
        repos.tasks.check_later(ti, NOW - timedelta(seconds=i))

    due = repos.tasks.due(NOW, limit=120)

    # The 120 earliest, earliest first.
    assert [t.task_id for t in due] == [f"t{i:03}" for i in range(129, 9, -1)]


# --- runs ----------------------------------------------------------------------------------


def test_create_twice_returns_false_and_keeps_the_first(repos: Store) -> None:
    first = DagRun(DAG, RUN, 1, RunType.SIGNAL, conf={"x": 1}, created_at=NOW)
    assert repos.runs.create(first) is True

    duplicate = DagRun(DAG, RUN, 2, RunType.SIGNAL, conf={"x": 2}, created_at=NOW)
    assert repos.runs.create(duplicate) is False

    stored = repos.runs.get(DAG, RUN)
    assert (stored.dag_version, stored.conf, stored.state, stored.version) == (
        1,
        {"x": 1},
        RunState.QUEUED,
        0,
    )


def test_run_transitions_are_conditional(repos: Store) -> None:
    queued = make_run(repos, start=False)

    running = repos.runs.transition(queued, RunState.RUNNING, Cause.DISPATCH, started_at=NOW)
    assert (running.state, running.version, running.started_at) == (RunState.RUNNING, 1, NOW)

    # Stale copy: conflict with the run as it is now.
    with pytest.raises(ConflictError) as stale:
        repos.runs.transition(queued, RunState.CANCELLED, Cause.STOP)
    assert stale.value.current == running

    # Right version, wrong state (the copy thinks it is still queued).
    believed = DagRun(DAG, RUN, 1, RunType.MANUAL, state=RunState.QUEUED, version=1)
    with pytest.raises(ConflictError) as wrong_state:
        repos.runs.transition(believed, RunState.RUNNING, Cause.DISPATCH)
    assert wrong_state.value.current == running

    # Not in the table at all: refused before any write.
    with pytest.raises(ValueError, match="not allowed"):
        repos.runs.transition(queued, RunState.SUCCESS, Cause.SUCCEEDED)
    with pytest.raises(ValueError, match="not allowed"):
        repos.runs.transition(running, RunState.QUEUED, Cause.CLEAR)

    done = repos.runs.transition(running, RunState.SUCCESS, Cause.SUCCEEDED, ended_at=NOW)
    assert repos.runs.get(DAG, RUN) == done
    reopened = repos.runs.transition(done, RunState.QUEUED, Cause.CLEAR, ended_at=None)
    assert (reopened.state, reopened.ended_at) == (RunState.QUEUED, None)
    with pytest.raises(ValueError, match="not allowed"):  # a reopen is queued first (F12)
        repos.runs.transition(done, RunState.RUNNING, Cause.CLEAR)


def test_record_finished_counts_once_and_frees_the_slot(repos: Store) -> None:
    run = make_run(repos)
    ti = queued_task(repos, "a")
    assert repos.runs.reserve_task_slot(run, ti, ti.try_number, 1)
    assert repos.runs.get(DAG, RUN).active == {"a"}
    done = repos.tasks.apply(ti, move(ti, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))

    once = repos.runs.record_finished(done, 0, failed_leaf=False)
    # The same finish again (a redelivered stream record): not counted twice.
    twice = repos.runs.record_finished(done, 0, failed_leaf=False)

    for after in (once, twice, repos.runs.get(DAG, RUN)):
        assert (after.finished_count, after.failed_leaves, after.active) == (1, 0, frozenset())
        assert after.state is RunState.RUNNING
    # The freed slot can be taken by the next task.
    assert repos.runs.reserve_task_slot(run, TaskInstance(DAG, RUN, "b"), 1, 1)


def test_a_finish_hands_its_slot_to_a_downstream_task_in_one_write(repos: Store) -> None:
    """The finished try's slot is freed and the child's taken, the finish counted: one
    write, after which counting the finish writes nothing new. Only while the finished
    try holds its slot: a second hand-over (a redelivery) is refused and writes nothing."""
    run = make_run(repos)
    ti = queued_task(repos, "a")
    assert repos.runs.reserve_task_slot(run, ti, ti.try_number, 1)
    repos.runs.add_throttled(run, "a")  # (left there by a lost race)
    done = repos.tasks.apply(ti, move(ti, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))
    before = repos.runs.get(DAG, RUN)
    child = TaskInstance(DAG, RUN, "b")

    handed = repos.runs.hand_over_task_slot(done, child, 1, index=0)

    assert handed is not None
    assert handed == repos.runs.get(DAG, RUN)
    assert (handed.active, handed.throttled, handed.finished_idx) == (
        frozenset({"b"}),
        frozenset(),
        frozenset({0}),
    )
    assert handed.version == before.version + 1
    assert repos.runs.hand_over_task_slot(done, child, 1, index=0) is None
    assert repos.runs.get(DAG, RUN) == handed
    # The slot is b's try 1: b's finish frees it, as any reserved slot.
    b = queued_task(repos, "b")
    b_done = repos.tasks.apply(b, move(b, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))
    after = repos.runs.record_finished(b_done, 1, failed_leaf=False)
    assert after is not None
    assert (after.active, after.finished_count) == (frozenset(), 2)


def test_a_slot_is_handed_over_only_by_its_try_of_a_running_run(repos: Store) -> None:
    """Refused, writing nothing: a try whose slot is another try's (a restart took it),
    a run that is no longer running. A big run's hand-over (no index) counts nothing
    on the run item: its finishes are counted in their tallies."""
    run = make_run(repos)
    second = TaskInstance(DAG, RUN, "a", try_number=2, state=T.SUCCESS)
    assert repos.runs.reserve_task_slot(run, second, 2, 5)
    first = replace(second, try_number=1)
    assert repos.runs.hand_over_task_slot(first, TaskInstance(DAG, RUN, "b"), 1, index=0) is None
    assert repos.runs.get(DAG, RUN).active == {"a"}

    big = repos.runs.hand_over_task_slot(second, TaskInstance(DAG, RUN, "b"), 1, index=None)
    assert big is not None
    assert (big.active, big.finished_idx, big.finished_count) == (frozenset({"b"}), frozenset(), 0)

    other = make_run(repos, "ended")
    held = TaskInstance(DAG, "ended", "a", try_number=1, state=T.SUCCESS)
    assert repos.runs.reserve_task_slot(other, held, 1, 5)
    ended = repos.runs.transition(other, RunState.CANCELLED, Cause.STOP)
    child = TaskInstance(DAG, "ended", "b")
    assert repos.runs.hand_over_task_slot(held, child, 1, index=0) is None
    assert repos.runs.get(DAG, "ended") == replace(ended, active=frozenset({"a"}))


def test_cleared_finishes_are_uncounted_and_counted_again(repos: Store) -> None:
    make_run(repos)
    ti = queued_task(repos, "leaf")
    failed = repos.tasks.apply(ti, move(ti, T.FAILED, Cause.FAILED, ended_at=NOW))
    other = queued_task(repos, "other")
    other = repos.tasks.apply(other, move(other, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))

    repos.runs.record_finished(other, 1, failed_leaf=False)
    counted = repos.runs.record_finished(failed, 0, failed_leaf=True)
    assert (counted.finished_count, counted.failed_leaves) == (2, 1)

    repos.runs.forget_finished(counted, 0)
    repos.runs.forget_finished(counted, 0)  # a retried clear: uncounted once only
    uncounted = repos.runs.get(DAG, RUN)
    assert (uncounted.finished_count, uncounted.failed_leaves) == (1, 0)

    pending = repos.tasks.apply(failed, move(failed, T.PENDING, Cause.CLEAR))
    requeued = repos.tasks.apply(pending, dispatch(pending))
    succeeded = repos.tasks.apply(requeued, move(requeued, T.SUCCESS, Cause.SUCCEEDED))
    recounted = repos.runs.record_finished(succeeded, 0, failed_leaf=False)
    assert (recounted.finished_count, recounted.failed_leaves) == (2, 0)


def test_a_big_runs_finishes_are_counted_in_tallies_and_on_the_run_per_done_group(
    repos: Store,
) -> None:
    """Groups of three tasks: a finish goes to its group's tally; the run item is written
    only when a group is done (its counts) or when the task may hold a slot (``release``);
    the run read with a group's tally judges a finish of it counted; a clear takes the
    group's counts back."""
    make_run(repos)
    first, second = FinishGroup(0, 3), FinishGroup(1, 2)
    finished = []
    for task_id in ("t0", "t1", "t2", "t3"):
        ti = queued_task(repos, task_id)
        finished.append(repos.tasks.apply(ti, move(ti, T.SUCCESS, Cause.SUCCEEDED)))
    version = repos.runs.get(DAG, RUN).version

    assert (
        repos.runs.record_finished(finished[0], 0, failed_leaf=False, group=first, release=False)
        is None
    )
    assert (
        repos.runs.record_finished(finished[0], 0, failed_leaf=False, group=first, release=False)
        is None
    )
    assert repos.runs.get(DAG, RUN).version == version  # the run item was not written
    read, _ = repos.tasks.get_with_run(DAG, RUN, [], finish_group=first)
    assert read is not None
    assert (read.finished_idx, read.finished_count) == (frozenset({0}), 0)
    released = repos.runs.record_finished(finished[1], 1, failed_leaf=True, group=first)
    assert released is not None
    assert (released.finished_idx, released.failed_leaf_idx) == (frozenset({0, 1}), frozenset({1}))
    assert (released.finished_count, released.failed_leaves, released.version) == (
        0,
        0,
        version + 1,
    )

    done = repos.runs.record_finished(finished[2], 2, failed_leaf=False, group=first, release=False)
    assert done is not None
    assert (done.finished_count, done.failed_leaves) == (3, 1)
    other = repos.runs.record_finished(
        finished[3], 3, failed_leaf=False, group=second, release=False
    )
    assert other is None  # group 1 has another task
    plain = repos.runs.get(DAG, RUN)
    assert (plain.finished_count, plain.failed_leaves, plain.finished_idx) == (3, 1, frozenset())

    repos.runs.forget_finished(plain, 1, first)
    repos.runs.forget_finished(plain, 1, first)  # a retried clear
    cleared = repos.runs.get(DAG, RUN)
    assert (cleared.finished_count, cleared.failed_leaves) == (0, 0)
    read, _ = repos.tasks.get_with_run(DAG, RUN, ["t1"], finish_group=first)
    assert read is not None
    assert (read.finished_idx, read.failed_leaf_idx) == (frozenset({0, 2}), frozenset())
    again = repos.runs.record_finished(
        finished[1], 1, failed_leaf=False, group=first, release=False
    )
    assert again is not None
    assert (again.finished_count, again.failed_leaves) == (3, 0)


def test_a_big_runs_count_cut_short_after_its_tally_is_finished_by_the_next(
    repos: Store,
) -> None:
    """The tally holds the whole group but the run item does not count it done (the
    invocation died between the two writes): the run read with the tally does not show
    the group's finishes as counted, so the next delivery counts again and the run item
    gets the group's counts."""
    make_run(repos)
    group = FinishGroup(0, 2)
    finished = []
    for task_id in ("t0", "t1"):
        ti = queued_task(repos, task_id)
        finished.append(repos.tasks.apply(ti, move(ti, T.SUCCESS, Cause.SUCCEEDED)))
    repos.runs.record_finished(finished[0], 0, failed_leaf=False, group=group, release=False)
    counted = repos.runs.record_finished(finished[1], 1, failed_leaf=False, group=group)
    assert counted is not None
    assert counted.finished_count == 2
    # The run item loses the group's counts (as if its write never happened).
    repos.runs.forget_finished(counted, 7, group)

    read, _ = repos.tasks.get_with_run(DAG, RUN, [], finish_group=group)
    assert read is not None
    assert (read.finished_count, read.finished_idx) == (0, frozenset())
    again = repos.runs.record_finished(
        finished[1], 1, failed_leaf=False, group=group, release=False
    )
    assert again is not None
    assert again.finished_count == 2
    read, _ = repos.tasks.get_with_run(DAG, RUN, [], finish_group=group)
    assert read is not None
    assert read.finished_idx == frozenset({0, 1})


def test_a_run_counts_all_its_finishes_from_the_ones_found(repos: Store) -> None:
    """Its leaves counted and a task found unfinished (finish_counts): the finishes found
    are counted, idempotently, and the run says every later finish counts."""
    run = make_run(repos)
    assert not run.counts_all
    leaf = queued_task(repos, "leaf")
    leaf = repos.tasks.apply(leaf, move(leaf, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))
    counted = repos.runs.record_finished(leaf, 2, failed_leaf=False)
    assert counted is not None
    assert counted.finished_idx == {2}

    repos.runs.count_all_finishes(counted, [0, 2])
    repos.runs.count_all_finishes(counted, [0, 2])  # a retried delivery
    after = repos.runs.get(DAG, RUN)
    assert (after.counts_all, after.finished_idx, after.finished_count) == (True, {0, 2}, 2)
    assert after.version > counted.version
    with pytest.raises(MISSING_ITEM_ERRORS):
        repos.runs.count_all_finishes(replace(run, run_id="gone"), [0])
    assert repos.runs.find(DAG, "gone") is None


def test_record_finished_on_a_missing_run_creates_nothing(repos: Store) -> None:
    ti = queued_task(repos, "a")  # its run was never created
    done = repos.tasks.apply(ti, move(ti, T.SUCCESS, Cause.SUCCEEDED))

    with pytest.raises(MISSING_ITEM_ERRORS):
        repos.runs.record_finished(done, 0, failed_leaf=False)

    assert repos.runs.find(DAG, RUN) is None


def test_reserve_task_slot_respects_max_active_tasks(repos: Store) -> None:
    run = make_run(repos)
    a, b, c, d = (TaskInstance(DAG, RUN, t, try_number=1) for t in "abcd")

    assert [repos.runs.reserve_task_slot(run, t, 1, 3) for t in (a, b, c)] == [True] * 3
    assert repos.runs.reserve_task_slot(run, d, 1, 3) is False  # the N+1th
    assert repos.runs.reserve_task_slot(run, b, 1, 3) is True  # re-reserve: idempotent
    assert repos.runs.get(DAG, RUN).active == {"a", "b", "c"}

    repos.runs.add_throttled(run, "d")
    assert repos.runs.get(DAG, RUN).throttled == {"d"}
    assert repos.runs.release_task_slot(a) is True
    assert repos.runs.reserve_task_slot(run, d, 1, 3) is True
    after = repos.runs.get(DAG, RUN)
    assert after.active == {"b", "c", "d"}
    assert after.throttled == {"d"}  # until its dispatch: see the next test


def test_an_old_try_cannot_release_the_current_try_slot(repos: Store) -> None:
    run = make_run(repos)
    second_try = TaskInstance(DAG, RUN, "a", try_number=2)
    assert repos.runs.reserve_task_slot(run, second_try, 2, 1)

    first_try = TaskInstance(DAG, RUN, "a", try_number=1)
    assert repos.runs.release_task_slot(first_try) is False  # a late release of try 1
    assert repos.runs.get(DAG, RUN).active == {"a"}
    assert repos.runs.release_task_slot(second_try) is True
    assert repos.runs.get(DAG, RUN).active == frozenset()


def test_reserve_task_slot_refused_unless_the_run_is_running(repos: Store) -> None:
    a = TaskInstance(DAG, "queued", "a")
    queued = make_run(repos, "queued", start=False)
    assert repos.runs.reserve_task_slot(queued, a, 1, 10) is False

    running = make_run(repos, "done")
    ended = repos.runs.transition(running, RunState.CANCELLED, Cause.STOP)
    assert repos.runs.reserve_task_slot(ended, TaskInstance(DAG, "done", "a"), 1, 10) is False
    assert repos.runs.get(DAG, "done").active == frozenset()


@pytest.mark.usefixtures("serialised_moto")
def test_concurrent_slot_reservations_never_exceed_the_maximum(repos: Store) -> None:
    run = make_run(repos)

    def reserve(task_id: str) -> Callable[[], bool]:
        return lambda: repos.runs.reserve_task_slot(run, TaskInstance(DAG, RUN, task_id), 1, 2)

    results = race([reserve(f"t{i}") for i in range(8)])
    assert results.count(True) == 2, results
    assert results.count(False) == 6, results
    assert len(repos.runs.get(DAG, RUN).active) == 2


def test_reserve_run_slot_respects_max_active_runs_and_pause(
    repos: Store, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(SPEC_V1)

    assert repos.dags.reserve_run_slot(DAG, "r1", 2) is True
    assert repos.dags.reserve_run_slot(DAG, "r2", 2) is True
    assert repos.dags.reserve_run_slot(DAG, "r3", 2) is False
    assert repos.dags.reserve_run_slot(DAG, "r1", 2) is True  # idempotent
    assert repos.dags.get(DAG).active_runs == {"r1", "r2"}

    assert repos.dags.release_run_slot(ended_run(repos, DAG, "r1")) is True
    repos.dags.set_paused(DAG, True)
    assert repos.dags.reserve_run_slot(DAG, "r3", 2) is False  # room, but paused
    repos.dags.set_paused(DAG, False)
    assert repos.dags.reserve_run_slot(DAG, "r3", 2) is True
    assert repos.dags.get(DAG).active_runs == {"r2", "r3"}


def test_a_backfill_limit_bounds_the_runs_holding_one_in_the_same_write(
    repos: Store, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(SPEC_V1)
    assert repos.dags.reserve_run_slot(DAG, "manual", 10) is True  # no limit: not counted
    assert repos.dags.reserve_run_slot(DAG, "b1", 10, backfill_limit=2) is True
    assert repos.dags.reserve_run_slot(DAG, "b2", 10, backfill_limit=2) is True
    assert repos.dags.reserve_run_slot(DAG, "b3", 10, backfill_limit=2) is False
    assert repos.dags.reserve_run_slot(DAG, "b1", 10, backfill_limit=2) is True  # idempotent
    assert repos.dags.reserve_run_slot(DAG, "other", 10) is True  # the DAG's limit only
    head = repos.dags.get(DAG)
    assert head.active_runs == {"manual", "b1", "b2", "other"}
    assert head.active_backfills == {"b1", "b2"}

    repos.dags.release_run_slot(ended_run(repos, DAG, "b1"))
    assert repos.dags.get(DAG).active_backfills == {"b2"}
    assert repos.dags.reserve_run_slot(DAG, "b3", 10, backfill_limit=2) is True
    # The DAG's own max_active_runs still applies to a run under a backfill limit.
    assert repos.dags.reserve_run_slot(DAG, "b4", 4, backfill_limit=9) is False


def test_list_between_finds_the_runs_of_logical_dates_in_a_range(repos: Store) -> None:
    for run_id, hours in (("before", -1), ("first", 0), ("second", 1), ("last", 2), ("after", 3)):
        make_run(repos, run_id, start=False, logical_date=NOW + timedelta(hours=hours))
    found = repos.runs.list_between(DAG, NOW, NOW + timedelta(hours=2))
    assert [run.run_id for run in found] == ["first", "last", "second"]  # by run id
    assert found[0].logical_date == NOW
    assert repos.runs.list_between("other-dag", NOW, NOW + timedelta(hours=2)) == []


def test_a_runs_backfill_limit_is_stored(repos: Store) -> None:
    run = DagRun(DAG, "b", 1, RunType.BACKFILL, logical_date=NOW, backfill_limit=3)
    assert repos.runs.create(run)
    assert repos.runs.get(DAG, "b").backfill_limit == 3
    assert repos.runs.get(DAG, "b").run_type is RunType.BACKFILL
    make_run(repos, "plain")
    assert repos.runs.get(DAG, "plain").backfill_limit is None


def test_a_queued_run_enters_the_queued_index_once_its_tasks_are_written(repos: Store) -> None:
    """Created, it is not there; marked, it is (it may start now); a run that started in
    the write recording its tasks never was; a mark after the start changes nothing."""
    waiting = DagRun(DAG, "waiting", 1, RunType.MANUAL, logical_date=NOW, created_at=NOW)
    at_once = DagRun(DAG, "at-once", 1, RunType.MANUAL, logical_date=NOW, created_at=NOW)
    assert repos.runs.create(waiting)
    assert repos.runs.create(at_once)
    assert repos.runs.queued_runs(DAG, limit=10) == []

    repos.runs.mark_tasks_created(waiting)
    assert repos.runs.queued_runs(DAG, limit=10) == [(DAG, "waiting")]
    assert repos.runs.get(DAG, "waiting").tasks_created
    started = repos.runs.transition(
        at_once, RunState.RUNNING, Cause.DISPATCH, started_at=NOW, tasks_created=True
    )
    assert repos.runs.get(DAG, "at-once") == started
    assert started.tasks_created
    repos.runs.mark_tasks_created(at_once)  # a late duplicate trigger's
    assert repos.runs.queued_runs(DAG, limit=10) == [(DAG, "waiting")]
    assert repos.runs.get(DAG, "at-once") == started


def test_queued_runs_index_is_oldest_first_and_sparse(repos: Store) -> None:
    # Created out of order; the index orders them by logical date.
    for run_id, minutes in (("late", 30), ("early", 10), ("middle", 20)):
        make_run(repos, run_id, start=False, logical_date=NOW + timedelta(minutes=minutes))
    make_run(repos, "started", logical_date=NOW)  # running: never in the index

    assert repos.runs.queued_runs(DAG, limit=10) == [
        (DAG, "early"),
        (DAG, "middle"),
        (DAG, "late"),
    ]
    assert repos.runs.queued_runs(DAG, limit=1) == [(DAG, "early")]
    assert repos.runs.queued_runs("other-dag", limit=10) == []

    early = repos.runs.get(DAG, "early")
    repos.runs.transition(early, RunState.RUNNING, Cause.DISPATCH)
    middle = repos.runs.get(DAG, "middle")
    repos.runs.transition(middle, RunState.CANCELLED, Cause.STOP)

    assert repos.runs.queued_runs(DAG, limit=10) == [(DAG, "late")]


# --- DAG versions --------------------------------------------------------------------------


def test_save_version_numbers_versions_and_runs_stay_pinned(
    repos: Store, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    v1 = dag_loader(SPEC_V1)
    assert repos.dags.get(DAG).current_version == 1
    run = DagRun(DAG, RUN, repos.dags.get(DAG).current_version or 0, RunType.MANUAL)
    assert repos.runs.create(run)

    v2 = dag_loader(SPEC_V2)
    numbers = [repos.dags.save_version(v2, source=f"s{i}", sha256="x", now=NOW) for i in range(2)]

    assert numbers == [3, 4]
    head = repos.dags.get(DAG)
    assert (head.current_version, head.source, head.version) == (4, "s1", 4)
    pinned = repos.runs.get(DAG, RUN)
    assert pinned.dag_version == 1
    assert repos.dags.load_spec(DAG, pinned.dag_version) == v1
    assert list(repos.dags.load_spec(DAG, pinned.dag_version).tasks) == ["a"]
    assert list(repos.dags.load_spec(DAG, 2).tasks) == ["a", "b"]


def test_a_cached_spec_is_one_loaded_before_and_never_a_read(
    repos: Store, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    v1 = dag_loader(SPEC_V1)
    assert repos.dags.load_spec(DAG, 1) == v1
    assert repos.dags.cached_spec(DAG, 1) == v1
    assert repos.dags.cached_spec(DAG, 7) is None  # no such version: no read, no error
    assert repos.dags.cached_spec("other", 1) is None


def test_save_version_keeps_the_pause_flag(
    repos: Store, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(SPEC_V1)
    repos.dags.set_paused(DAG, True)
    dag_loader(SPEC_V2)
    assert repos.dags.get(DAG).paused is True


# --- task state ----------------------------------------------------------------------------


def test_task_state_put_get_and_versions(repos: Store) -> None:
    scope = instance_scope(DAG, RUN, "a")
    assert repos.state.get(scope, "offset") is None

    assert repos.state.put(scope, "offset", {"n": 1}, now=NOW) == 1
    assert repos.state.put(scope, "offset", {"n": 2}, now=NOW) == 2
    assert repos.state.put(scope, "rows", [1, 2, 3], now=NOW) == 1

    assert repos.state.get(scope, "offset") == ({"n": 2}, 2)
    assert repos.state.get_all(scope) == {"offset": {"n": 2}, "rows": [1, 2, 3]}


def test_task_state_compare_and_set(repos: Store) -> None:
    scope = task_scope(DAG, "a")
    assert repos.state.put(scope, "watermark", "2026-01-01", now=NOW, expected_version=0) == 1

    with pytest.raises(ConflictError) as created_twice:
        repos.state.put(scope, "watermark", "other", now=NOW, expected_version=0)
    assert created_twice.value.current == ("2026-01-01", 1)

    assert repos.state.put(scope, "watermark", "2026-01-02", now=NOW, expected_version=1) == 2
    with pytest.raises(ConflictError) as stale:
        repos.state.put(scope, "watermark", "2026-01-03", now=NOW, expected_version=1)
    assert stale.value.current == ("2026-01-02", 2)
    assert repos.state.get(scope, "watermark") == ("2026-01-02", 2)


def test_task_state_has_a_ttl(backend: Backend, repos: Store) -> None:
    scope = instance_scope(DAG, RUN, "a")
    repos.state.put(scope, "default", 1, now=NOW)
    repos.state.put(scope, "short", 1, now=NOW, ttl=timedelta(days=1))
    # A zero ttl is no ttl: the default applies.
    repos.state.put(scope, "zero", 1, now=NOW, ttl=timedelta(0))

    assert backend.expires_at(scope, "default") == int((NOW + timedelta(days=90)).timestamp())
    assert backend.expires_at(scope, "short") == int((NOW + timedelta(days=1)).timestamp())
    assert backend.expires_at(scope, "zero") == int((NOW + timedelta(days=90)).timestamp())
    # Every write starts the clock again.
    later = NOW + timedelta(hours=5, seconds=0.7)
    repos.state.put(scope, "short", 2, now=later, ttl=timedelta(days=1))
    assert backend.expires_at(scope, "short") == int((later + timedelta(days=1)).timestamp())


def test_the_task_state_table_expires_items_by_ttl(aws: Settings) -> None:
    """DynamoDB only: the table's TTL is on the attribute the repository writes."""
    client = boto3.client("dynamodb", region_name=aws.region)
    ttl = client.describe_time_to_live(TableName=aws.tables.task_state)
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }


def _throttling(first: int, served: int) -> tuple[list[int], Callable[..., Any]]:
    """A BatchGetItem that serves only ``served`` keys on its first ``first`` calls and
    leaves the others unprocessed (as DynamoDB does when throttled); also returns the key
    counts asked for, call by call."""
    real = TaskInstanceModel._get_connection().connection.client.batch_get_item
    table = TaskInstanceModel.Meta.table_name
    asked: list[int] = []

    def batch_get_item(RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        request = RequestItems[table]
        keys = request["Keys"]
        asked.append(len(keys))
        if len(asked) > first:
            return real(RequestItems=RequestItems)
        response: dict[str, Any] = (
            real(RequestItems={table: {**request, "Keys": keys[:served]}}) if served else {}
        )
        left = keys[served:]
        response["UnprocessedKeys"] = {table: {**request, "Keys": left}} if left else {}
        return response

    return asked, batch_get_item


def test_keys_a_batch_read_leaves_unprocessed_are_read_again_after_a_pause(
    aws: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB only: throttled BatchGetItem keys are asked for again, pausing longer each
    time; still unprocessed after the last attempt, the read fails (nothing is dropped)."""
    repos = Repositories()
    for task_id in ("a", "b", "c"):
        repos.tasks.check_later(queued_task(repos, task_id), NOW)
    pauses: list[float] = []
    monkeypatch.setattr(repositories, "_sleep", pauses.append)
    asked, throttled = _throttling(first=2, served=1)
    monkeypatch.setattr(
        TaskInstanceModel._get_connection().connection.client, "batch_get_item", throttled
    )

    assert [t.task_id for t in repos.tasks.due(NOW)] == ["a", "b", "c"]
    assert asked == [3, 2, 1]
    assert pauses == [0.05, 0.1]

    pauses.clear()
    asked, throttled = _throttling(first=100, served=0)
    monkeypatch.setattr(
        TaskInstanceModel._get_connection().connection.client, "batch_get_item", throttled
    )
    with pytest.raises(StoreError, match="unprocessed after 8 BatchGetItem attempts"):
        repos.tasks.get_many(DAG, RUN, ["a", "b", "c"])
    assert len(pauses) == 7


def test_a_run_is_read_with_its_task_instances_in_one_round_trip(repos: Store) -> None:
    """The run and the instances asked for that exist, at once; a missing run is None
    (the caller decides whether that matters); more instances than fit with the run are
    read in pages."""
    assert repos.tasks.get_with_run(DAG, RUN, ["a"]) == (None, {})
    run = make_run(repos)
    a, b = put_task(repos, "a"), put_task(repos, "b")
    assert repos.tasks.get_with_run(DAG, RUN, ["b", "nope", "a"]) == (run, {"a": a, "b": b})
    assert repos.tasks.get_with_run(DAG, RUN, []) == (run, {})
    many = [f"t{i:03}" for i in range(WITH_RUN_LIMIT + 1)]
    repos.tasks.put_new([TaskInstance(DAG, RUN, task_id) for task_id in many])
    found_run, found = repos.tasks.get_with_run(DAG, RUN, many)
    assert (found_run, sorted(found)) == (run, many)


def test_a_run_and_its_instances_may_be_read_eventually_consistently(
    aws: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB only: ``instances_consistent=False`` asks for the instances without
    ConsistentRead (half the read units), those beyond one read's too, and for the run
    with it; by default every table is read consistently."""
    repos = Repositories()
    run = make_run(repos)
    put_task(repos, "a")
    client = TaskInstanceModel._get_connection().connection.client
    asked: list[dict[str, bool]] = []
    batch_get_item = client.batch_get_item

    def noted(**request: Any) -> Any:
        items = request["RequestItems"]
        asked.append({table: wanted["ConsistentRead"] for table, wanted in items.items()})
        return batch_get_item(**request)

    monkeypatch.setattr(client, "batch_get_item", noted)
    read_run, found = repos.tasks.get_with_run(DAG, RUN, ["a"], instances_consistent=False)
    assert (read_run, sorted(found)) == (run, ["a"])
    runs, tasks = RunModel.Meta.table_name, TaskInstanceModel.Meta.table_name
    assert asked == [{runs: True, tasks: False}]
    many = [f"t{i:03}" for i in range(WITH_RUN_LIMIT + 1)]
    repos.tasks.put_new([TaskInstance(DAG, RUN, task_id) for task_id in many])
    asked.clear()
    _, found = repos.tasks.get_with_run(DAG, RUN, many, instances_consistent=False)
    assert sorted(found) == many
    assert asked == [{runs: True}, {tasks: False}]  # the run, then the instances (too many)
    asked.clear()
    repos.tasks.get_with_run(DAG, RUN, ["a"])
    assert set(asked[0].values()) == {True}
    # A try with what its job published, its run and what comes next: the same.
    asked.clear()
    read = repos.tasks.get_try_with_run(DAG, RUN, "a", 1, ["t000"], instances_consistent=False)
    assert (read.task, read.run, sorted(read.downstream)) == (
        repos.tasks.get(DAG, RUN, "a"),
        run,
        ["t000"],
    )
    state = TaskStateModel.Meta.table_name
    assert asked == [{runs: True, tasks: False, state: True}]
    asked.clear()
    repos.tasks.get_try_with_run(DAG, RUN, "a", 1)
    assert set(asked[0].values()) == {True}


def test_a_try_is_read_with_what_its_job_published(repos: Store) -> None:
    """The instance and its try's published output at once; another try's output is not
    this try's; a missing instance is None (with whatever was published under its name)."""
    a = put_task(repos, "a")
    assert repos.tasks.get_with_output(DAG, RUN, "a", 1) == (a, None)
    repos.state.put(output_scope(DAG, RUN, "a"), output_key(1), {"rows": 3}, now=NOW)
    assert repos.tasks.get_with_output(DAG, RUN, "a", 1) == (a, {"rows": 3})
    assert repos.tasks.get_with_output(DAG, RUN, "a", 2) == (a, None)
    assert repos.tasks.get_with_output(DAG, RUN, "nope", 1) == (None, None)


def test_a_try_is_read_with_its_run_and_downstream_tasks_at_once(repos: Store) -> None:
    """What a try's end goes on with, in one read: the instance, its try's published
    output (not another try's), the run and the downstream tasks asked for (those that
    exist; what was asked is told). A missing run or instance is None."""
    a, b = put_task(repos, "a"), put_task(repos, "b")
    assert repos.tasks.get_try_with_run(DAG, RUN, "a", 1, ["b"]) == TryRead(
        a, None, None, frozenset({"b"}), {"b": b}
    )
    run = make_run(repos)
    repos.state.put(output_scope(DAG, RUN, "a"), output_key(1), {"rows": 3}, now=NOW)
    repos.state.put(output_scope(DAG, RUN, "a"), output_key(2), {"rows": 4}, now=NOW)
    # A big run's finish tally shares the table: not taken for the output.
    repos.runs.record_finished(
        replace(a, state=T.SUCCESS), 0, failed_leaf=False, group=FinishGroup(0, 2), release=False
    )

    read = repos.tasks.get_try_with_run(DAG, RUN, "a", 1, ["b", "c", "b"])

    assert read == TryRead(a, {"rows": 3}, run, frozenset({"b", "c"}), {"b": b})
    assert repos.tasks.get_try_with_run(DAG, RUN, "nope", 2) == TryRead(
        None, None, run, frozenset(), {}
    )
    too_many = [f"t{i}" for i in range(WITH_TRY_LIMIT + 1)]
    with pytest.raises(ValueError, match="at most"):
        repos.tasks.get_try_with_run(DAG, RUN, "a", 1, too_many)


def test_a_run_read_with_its_tasks_asks_again_for_what_dynamodb_left_unprocessed(
    aws: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB only: keys of either table left unprocessed (throttling) are asked for
    again after a pause, and only they; nothing is dropped."""
    repos = Repositories()
    run = make_run(repos)
    a, b = put_task(repos, "a"), put_task(repos, "b")
    client = TaskInstanceModel._get_connection().connection.client
    real = client.batch_get_item
    asked: list[dict[str, int]] = []

    def leaves_all_but_one_key(RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        asked.append({table: len(request["Keys"]) for table, request in RequestItems.items()})
        if len(asked) > 1:
            return real(RequestItems=RequestItems)
        first_table, first = next(iter(RequestItems.items()))
        response: dict[str, Any] = real(
            RequestItems={first_table: {**first, "Keys": first["Keys"][:1]}}
        )
        left = {
            t: {**r, "Keys": r["Keys"][1:] if t == first_table else r["Keys"]}
            for t, r in RequestItems.items()
        }
        response["UnprocessedKeys"] = {t: r for t, r in left.items() if r["Keys"]}
        return response

    pauses: list[float] = []
    monkeypatch.setattr(repositories, "_sleep", pauses.append)
    monkeypatch.setattr(client, "batch_get_item", leaves_all_but_one_key)
    assert repos.tasks.get_with_run(DAG, RUN, ["a", "b"]) == (run, {"a": a, "b": b})
    assert asked == [
        {aws.tables.runs: 1, aws.tables.task_instances: 2},
        {aws.tables.task_instances: 2},
    ]
    assert pauses == [0.05]


def test_the_memory_store_sweeps_expired_task_state() -> None:
    """Memory only: what DynamoDB's TTL sweeper does, on demand."""
    store = MemoryStore(task_state_ttl=timedelta(days=2))
    scope = task_scope(DAG, "a")
    store.state.put(scope, "old", 1, now=NOW)
    store.state.put(scope, "new", 1, now=NOW + timedelta(days=1))
    assert store.sweep_expired(NOW + timedelta(days=2, seconds=1)) == 1
    assert store.state.get_all(scope) == {"new": 1}


def test_task_state_scopes_are_separate_and_deletable(repos: Store) -> None:
    instance = instance_scope(DAG, RUN, "a")
    task = task_scope(DAG, "a")
    other_run = instance_scope(DAG, "r2", "a")
    assert len({instance, task, other_run}) == 3

    for i in range(30):
        repos.state.put(instance, f"k{i}", i, now=NOW)
    repos.state.put(task, "k0", "watermark", now=NOW)
    repos.state.put(other_run, "k0", "other", now=NOW)

    assert repos.state.get(task, "k0") == ("watermark", 1)
    assert repos.state.get(instance, "k0") == (0, 1)

    assert repos.state.delete_scope(instance) == 30
    assert repos.state.get_all(instance) == {}
    assert repos.state.delete_scope(instance) == 0
    assert repos.state.get_all(task) == {"k0": "watermark"}
    assert repos.state.get_all(other_run) == {"k0": "other"}


# --- signal subscriptions --------------------------------------------------------------------


def _subscriber(version_tag: str, source: str) -> DagSpec:
    return DagSpec.model_validate(
        {
            "dag": "listener",
            "description": version_tag,
            "on": [{"source": [source]}],
            "tasks": {
                "t": {"noop": {}, "restart_on": [{"detail-type": ["config.changed"]}]},
            },
        }
    )


def test_subscriptions_follow_the_current_version(repos: Store) -> None:
    now = datetime.now(UTC)
    repos.dags.save_version(_subscriber("v1", "ml.a"), source=None, sha256=None, now=now)
    found = repos.dags.subscriptions("ml.a")
    # The `on` pattern under its source, the restart_on pattern (no source) under "*".
    assert [(s.dag_id, s.dag_version, s.task_id, s.kind) for s in found] == [
        ("listener", 1, None, "on"),
        ("listener", 1, "t", "restart_on"),
    ]
    repos.dags.save_version(_subscriber("v2", "ml.b"), source=None, sha256=None, now=now)
    assert [s.kind for s in repos.dags.subscriptions("ml.a")] == ["restart_on"]
    assert {(s.dag_version, s.kind) for s in repos.dags.subscriptions("ml.b")} == {
        (2, "on"),
        (2, "restart_on"),
    }
    repos.dags.retire("listener", now=now)
    assert repos.dags.subscriptions("ml.b") == []
    assert repos.dags.get("listener").current_version is None
    # A new upload revives it with the next version number, not 1 again.
    revived = repos.dags.save_version(_subscriber("v3", "ml.b"), source=None, sha256=None, now=now)
    assert revived == 3
    assert {s.dag_version for s in repos.dags.subscriptions("ml.b")} == {3}


def test_an_older_version_never_overwrites_newer_subscriptions(
    backend: Backend, repos: Store
) -> None:
    now = datetime.now(UTC)
    repos.dags.save_version(_subscriber("v1", "ml.a"), source=None, sha256=None, now=now)
    repos.dags.save_version(_subscriber("v2", "ml.a"), source=None, sha256=None, now=now)
    # A slow writer of version 1 arriving late (two uploads racing) changes nothing.
    backend.write_subscription("sub:ml.a", "listener", 1, {"v": 1, "subs": "[]"})
    backend.write_subscription("sub:ml.a", "listener", 1, None)
    assert {s.dag_version for s in repos.dags.subscriptions("ml.a")} == {2}


# --- contracts the service relies on that the tests above do not pin ----------------------


def test_missing_items_are_not_found(repos: Store) -> None:
    with pytest.raises(NotFound):
        repos.tasks.get(DAG, RUN, "nope")
    with pytest.raises(NotFound):
        repos.runs.get(DAG, RUN)
    with pytest.raises(NotFound):
        repos.dags.get(DAG)
    with pytest.raises(NotFound):
        repos.dags.load_spec(DAG, 1)
    assert repos.tasks.find(DAG, RUN, "nope") is None
    assert repos.runs.find(DAG, RUN) is None
    assert repos.dags.find(DAG) is None
    assert repos.dags.retire(DAG, now=NOW) is None
    assert repos.tasks.get_many(DAG, RUN, ["nope"]) == []
    assert repos.tasks.list_for_run(DAG, RUN) == []
    assert repos.runs.list_for_dag(DAG) == []
    with pytest.raises(NotFound):  # pausing an unknown DAG can never succeed: dropped
        repos.dags.set_paused(DAG, True)
    with pytest.raises(MISSING_ITEM_ERRORS):
        repos.runs.tasks_created(DagRun(DAG, RUN, 1, RunType.MANUAL))
    assert repos.dags.find(DAG) is None


def test_the_token_and_job_indexes_follow_the_current_try(repos: Store) -> None:
    ti = put_task(repos)
    first = repos.tasks.apply(ti, replace(dispatch(ti), changes={"dispatch_token": "tok-1"}))
    assert repos.tasks.find_by_token("tok-1") == first
    running = repos.tasks.apply(first, move(first, T.RUNNING, Cause.STARTED, job_id="job-1"))
    assert repos.tasks.find_by_job_id("job-1") == running
    assert repos.tasks.find_by_token("tok-1") == running
    # A retry: the new try has its own token, and no job yet.
    retry = repos.tasks.apply(running, move(running, T.UP_FOR_RETRY, Cause.RETRY))
    second = repos.tasks.apply(
        retry,
        move(retry, T.QUEUED, Cause.DISPATCH, try_number=2, dispatch_token="tok-2", job_id=None),
    )
    assert repos.tasks.find_by_token("tok-1") is None
    assert repos.tasks.find_by_job_id("job-1") is None
    assert repos.tasks.find_by_token("tok-2") == second
    assert repos.tasks.find_by_token("nope") is None


def test_a_try_found_by_key_is_in_neither_lookup_index(repos: Store, backend: Backend) -> None:
    """A try whose job events name its task instance (Batch, ECS) keeps its token and job
    id where no index reads them: no index write for either. It reads back the same; a
    later try found by token is indexed again, and the unindexed copies are gone."""
    ti = put_task(repos)
    changes = {"dispatch_token": "tok-1", "found_by_key": True}
    keyed = repos.tasks.apply(ti, replace(dispatch(ti), changes=changes))
    running = repos.tasks.apply(keyed, move(keyed, T.RUNNING, Cause.STARTED, job_id="job-1"))
    assert repos.tasks.get(DAG, RUN, "a") == running
    assert (running.dispatch_token, running.job_id, running.found_by_key) == (
        "tok-1",
        "job-1",
        True,
    )
    assert repos.tasks.find_by_token("tok-1") is None
    assert repos.tasks.find_by_job_id("job-1") is None
    if isinstance(backend, DynamoBackend):
        assert backend.lookup_attributes("a") == {"try_token", "try_job"}

    retry = repos.tasks.apply(running, move(running, T.UP_FOR_RETRY, Cause.RETRY))
    second = repos.tasks.apply(
        retry,
        move(
            retry,
            T.QUEUED,
            Cause.DISPATCH,
            try_number=2,
            dispatch_token="tok-2",
            found_by_key=False,
            job_id=None,
        ),
    )
    assert repos.tasks.find_by_token("tok-2") == second
    assert repos.tasks.get(DAG, RUN, "a") == second
    if isinstance(backend, DynamoBackend):
        assert backend.lookup_attributes("a") == {"dispatch_token"}


def test_check_later_and_note_signal_are_conditional_and_move_the_due_place(
    repos: Store,
) -> None:
    ti = queued_task(repos)
    assert repos.tasks.due(NOW + timedelta(days=1)) == []  # queued, nothing to check yet

    checked = repos.tasks.check_later(ti, NOW + timedelta(minutes=1))
    assert (checked.state, checked.version, checked.check_at) == (
        T.QUEUED,
        ti.version + 1,
        NOW + timedelta(minutes=1),
    )
    assert repos.tasks.get(DAG, RUN, "a") == checked
    assert repos.tasks.due(NOW + timedelta(minutes=1)) == [checked]
    with pytest.raises(ConflictError) as stale:
        repos.tasks.check_later(ti, NOW)  # the copy from before
    assert stale.value.current == checked

    waiting = put_task(repos, "w")
    waiting = repos.tasks.apply(
        waiting,
        move(waiting, T.WAITING, Cause.WAIT_FOR_SIGNAL, timeout_at=NOW + timedelta(hours=1)),
    )
    noted = repos.tasks.note_signal(waiting, {"id": "e-1", "detail": {"n": 1}})
    assert repos.tasks.get(DAG, RUN, "w") == noted
    assert noted.signal == {"id": "e-1", "detail": {"n": 1}}
    # (a's entry, at 1 minute, has no look within the window an hour on: ``looks_at_entry``)
    assert [t.task_id for t in repos.tasks.due(NOW + timedelta(hours=1))] == ["w"]
    with pytest.raises(ConflictError):
        repos.tasks.note_signal(waiting, {"id": "e-2"})
    missing = TaskInstance(DAG, RUN, "ghost")
    with pytest.raises(ConflictError) as gone:
        repos.tasks.check_later(missing, NOW)
    assert gone.value.current is None


def test_the_due_place_follows_each_state(repos: Store) -> None:
    """Retries by their time, waiting tasks by their deadline, queued and running ones by
    the earlier of deadline and check; finished and pending ones not at all."""
    soon, later = NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    a = queued_task(repos, "a")
    repos.tasks.apply(a, move(a, T.RUNNING, Cause.STARTED, timeout_at=later, check_at=soon))
    b = queued_task(repos, "b")
    repos.tasks.apply(b, move(b, T.UP_FOR_RETRY, Cause.RETRY, next_attempt_at=later))
    c = put_task(repos, "c")
    repos.tasks.apply(c, move(c, T.WAITING, Cause.WAIT_FOR_SIGNAL, timeout_at=soon))
    d = queued_task(repos, "d")
    d = repos.tasks.apply(d, move(d, T.RUNNING, Cause.STARTED, timeout_at=soon))
    repos.tasks.apply(d, move(d, T.SUCCESS, Cause.SUCCEEDED))
    put_task(repos, "e")

    assert sorted(t.task_id for t in repos.tasks.due(soon)) == ["a", "c"]
    due = repos.tasks.due(later)
    assert sorted(t.task_id for t in due) == ["a", "b", "c"]
    assert due[-1].task_id == "b"
    assert all(t == repos.tasks.get(DAG, RUN, t.task_id) for t in due)


def test_stored_values_come_back_as_json_and_times_in_utc(repos: Store) -> None:
    ti = queued_task(repos)
    plus_two = timezone(timedelta(hours=2))
    started = datetime(2026, 1, 1, 14, 0, 0, 123456, tzinfo=plus_two)
    running = repos.tasks.apply(
        ti,
        move(
            ti,
            T.RUNNING,
            Cause.STARTED,
            started_at=started,
            output={"rows": (1, 2), "at": NOW, "nested": {"b": None}},
        ),
    )
    stored = repos.tasks.get(DAG, RUN, "a")
    assert stored.started_at == started
    assert stored.started_at is not None
    assert stored.started_at.utcoffset() == timedelta(0)
    assert stored.output == {"rows": [1, 2], "at": str(NOW), "nested": {"b": None}}
    assert stored != running  # what the write returned still holds the tuple and the time
    # A reader's copy is its own: changing it changes nothing stored.
    stored.output["rows"].append(3)
    assert repos.tasks.get(DAG, RUN, "a").output["rows"] == [1, 2]

    run = DagRun(
        DAG, RUN, 1, RunType.MANUAL, conf={"k": (1,)}, trigger={"id": "e"}, created_at=started
    )
    assert repos.runs.create(run)
    created = repos.runs.get(DAG, RUN)
    assert (created.conf, created.trigger, created.created_at) == ({"k": [1]}, {"id": "e"}, started)


def test_put_new_writes_the_instances_as_given(repos: Store) -> None:
    upstream = {"x": UpstreamReport(T.SUCCESS, 3), "y": UpstreamReport.tombstone(2)}
    repos.tasks.put_new([TaskInstance(DAG, RUN, "a", dag_version=4, upstream=upstream)])
    stored = repos.tasks.get(DAG, RUN, "a")
    assert (stored.dag_version, stored.upstream) == (4, upstream)
    # Unconditional: the same key again replaces the item (a queued run's tasks only).
    repos.tasks.put_new([TaskInstance(DAG, RUN, "a", dag_version=5)])
    assert repos.tasks.get(DAG, RUN, "a") == TaskInstance(DAG, RUN, "a", dag_version=5)


def test_report_upstream_changes_only_the_report_and_the_version(repos: Store) -> None:
    child = queued_task(repos, "b")
    child = repos.tasks.apply(child, move(child, T.RUNNING, Cause.STARTED, timeout_at=NOW))
    updated = repos.tasks.report_upstream(child, "a", UpstreamReport(T.RUNNING, 4))
    assert updated == replace(
        child, upstream={"a": UpstreamReport(T.RUNNING, 4)}, version=child.version + 1
    )
    assert repos.tasks.due(NOW) == [updated]
    # Another state at the same version is not news, and not held: refused.
    assert repos.tasks.report_upstream(child, "a", UpstreamReport(T.SUCCESS, 4)) is None
    # A copy of the child from before the report is now stale for state writes.
    with pytest.raises(ConflictError):
        repos.tasks.apply(child, move(child, T.SUCCESS, Cause.SUCCEEDED))


def test_created_runs_start_with_nothing_counted(repos: Store) -> None:
    busy = DagRun(
        DAG,
        RUN,
        1,
        RunType.SCHEDULED,
        started_at=NOW,
        reason="x",
        finished_count=3,
        failed_leaves=1,
        active=frozenset({"a"}),
        throttled=frozenset({"b"}),
    )
    assert repos.runs.create(busy)
    assert repos.runs.get(DAG, RUN) == DagRun(DAG, RUN, 1, RunType.SCHEDULED)
    # A duplicate trigger changes nothing.
    assert repos.runs.create(replace(busy, dag_version=2)) is False
    assert repos.runs.get(DAG, RUN).dag_version == 1
    assert repos.runs.tasks_created(busy) is False
    repos.runs.mark_tasks_created(busy)
    assert repos.runs.tasks_created(busy) is True
    assert repos.runs.get(DAG, RUN).version == 0  # not a change of the run


def test_runs_of_a_dag_are_listed_last_id_first(repos: Store) -> None:
    for run_id in ("r2", "r1", "r3"):
        make_run(repos, run_id, start=False)
    repos.runs.create(DagRun("other", "r9", 1, RunType.MANUAL))
    assert [r.run_id for r in repos.runs.list_for_dag(DAG)] == ["r3", "r2", "r1"]
    assert [r.run_id for r in repos.runs.list_for_dag(DAG, limit=2)] == ["r3", "r2"]


def test_a_run_transition_on_a_missing_run_conflicts_with_nothing(repos: Store) -> None:
    ghost = DagRun(DAG, RUN, 1, RunType.MANUAL)
    with pytest.raises(ConflictError) as missing:
        repos.runs.transition(ghost, RunState.RUNNING, Cause.DISPATCH)
    assert missing.value.current is None
    assert repos.runs.find(DAG, RUN) is None


def test_a_reopened_run_that_waits_is_queued_again(repos: Store) -> None:
    run = make_run(repos, logical_date=NOW - timedelta(days=1))
    make_run(repos, "newer", start=False, logical_date=NOW)
    done = repos.runs.transition(run, RunState.FAILED, Cause.FAILED, ended_at=NOW, reason="x")
    assert repos.runs.queued_runs(DAG, limit=10) == [(DAG, "newer")]

    queued = repos.runs.transition(done, RunState.QUEUED, Cause.CLEAR, ended_at=None, reason="w")
    assert repos.runs.get(DAG, RUN) == queued
    assert (queued.ended_at, queued.reason, queued.started_at) == (None, "w", NOW)
    assert repos.runs.queued_runs(DAG, limit=10) == [(DAG, RUN), (DAG, "newer")]


def test_a_finish_counts_but_leaves_another_try_slot_alone(repos: Store) -> None:
    run = make_run(repos)
    ti = queued_task(repos, "a")  # try 1
    assert repos.runs.reserve_task_slot(run, ti, 2, 5)  # the slot is try 2's now
    failed = repos.tasks.apply(ti, move(ti, T.FAILED, Cause.FAILED))

    after = repos.runs.record_finished(failed, 3, failed_leaf=True)

    assert (after.finished_count, after.failed_leaves, after.active) == (1, 1, frozenset("a"))
    assert after == repos.runs.get(DAG, RUN)
    assert after.version == run.version + 1
    # The slot moves to a new try of the same task: the old try cannot free it.
    assert repos.runs.release_task_slot(failed) is False
    assert repos.runs.release_task_slot(replace(failed, try_number=2)) is True


def test_a_slot_its_next_try_never_took_is_freed_only_while_the_task_stays_finished(
    repos: Store,
) -> None:
    """A slot taken for try 1 of a task that was then marked (finished at try 0): freed,
    in a transaction with the task's state. Refused, writing nothing: the slot is the
    finished try's own or a later one's, or the task has moved on (a clear queued try 1)."""
    run = make_run(repos)
    a = put_task(repos, "a")
    assert repos.runs.reserve_task_slot(run, a, 1, 5)
    marked = repos.tasks.apply(a, move(a, T.SUCCESS, Cause.MARK))
    assert marked.try_number == 0
    assert repos.runs.release_orphaned_slot(replace(marked, state=T.FAILED)) is False
    assert repos.runs.get(DAG, RUN).active == {"a"}

    assert repos.runs.release_orphaned_slot(marked) is True
    assert repos.runs.get(DAG, RUN).active == frozenset()
    assert repos.runs.release_orphaned_slot(marked) is False  # (no slot)

    b = queued_task(repos, "b")  # try 1 holds its own slot
    assert repos.runs.reserve_task_slot(run, b, 1, 5)
    assert repos.runs.release_orphaned_slot(replace(b, try_number=0, state=T.QUEUED)) is False
    assert repos.runs.release_orphaned_slot(b) is False  # its own try's: not orphaned
    assert repos.runs.get(DAG, RUN).active == {"b"}


def test_throttled_tasks_leave_the_set_when_dispatched_or_finished(repos: Store) -> None:
    """A task keeps its place among the throttled after it takes a slot, until its try is
    dispatched: if it dies in between, the next slot-filling still finds it."""
    run = make_run(repos)
    a, b = TaskInstance(DAG, RUN, "a"), TaskInstance(DAG, RUN, "b")
    assert repos.runs.reserve_task_slot(run, a, 1, 1)
    repos.runs.add_throttled(run, "b")
    repos.runs.add_throttled(run, "b")  # a set: once
    assert repos.runs.reserve_task_slot(run, b, 1, 1) is False
    assert repos.runs.get(DAG, RUN).throttled == {"b"}
    assert repos.runs.release_task_slot(replace(a, try_number=1))
    assert repos.runs.reserve_task_slot(run, b, 1, 1)
    assert repos.runs.get(DAG, RUN).throttled == {"b"}
    repos.runs.drop_throttled(run, "b")
    assert repos.runs.get(DAG, RUN).throttled == frozenset()
    repos.runs.add_throttled(run, "a")
    repos.runs.record_finished(replace(a, try_number=1), 0, failed_leaf=False)
    assert repos.runs.get(DAG, RUN).throttled == frozenset()  # a finish leaves it too


def test_run_slots_are_released_and_schedules_advance_once(
    repos: Store, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    dag_loader(SPEC_V1)
    assert repos.dags.reserve_run_slot(DAG, "r1", 1)
    ended = ended_run(repos, DAG, "r1")
    assert repos.dags.release_run_slot(ended) is True
    assert repos.dags.release_run_slot(ended) is True  # idempotent
    assert repos.dags.get(DAG).active_runs == frozenset()


def test_a_run_reopened_since_its_end_was_read_keeps_its_slot(
    repos: Store, dag_loader: Callable[[dict[str, Any]], DagSpec]
) -> None:
    """The release of a finished run's slot checks the run in the same atomic write: a
    clear that reopened it meanwhile (it runs again, in that slot) wins, and the slot is
    not handed to a queued run (two runs at once under max_active_runs: 1)."""
    dag_loader(SPEC_V1)
    assert repos.dags.reserve_run_slot(DAG, "r1", 1)
    ended = ended_run(repos, DAG, "r1")
    repos.runs.transition(ended, RunState.QUEUED, Cause.CLEAR, ended_at=None)
    assert repos.dags.release_run_slot(ended) is False
    assert repos.dags.get(DAG).active_runs == {"r1"}
    assert repos.dags.reserve_run_slot(DAG, "r2", 1) is False
    # A run that is not there frees nothing either.
    assert repos.dags.release_run_slot(replace(ended, run_id="never")) is False

    first, second = NOW, NOW + timedelta(days=1)
    assert repos.dags.advance_schedule(DAG, None, first) is True
    assert repos.dags.advance_schedule(DAG, None, second) is False  # a duplicate tick
    assert repos.dags.advance_schedule(DAG, first, second) is True
    assert repos.dags.advance_schedule(DAG, first, second) is False
    assert repos.dags.get(DAG).last_scheduled_end == second


def test_slot_and_schedule_writes_on_a_missing_dag_leave_a_head_behind(repos: Store) -> None:
    """What DynamoDB's UpdateItem does (it creates what it updates); pinned so the two
    stores agree. The head has no version: the service treats it as not loaded."""
    assert repos.dags.reserve_run_slot("g1", "r1", 1) is True
    assert repos.dags.get("g1") == DagRecord("g1", active_runs=frozenset({"r1"}))
    assert repos.dags.advance_schedule("g3", None, NOW) is True
    assert repos.dags.get("g3") == DagRecord("g3", last_scheduled_end=NOW)


def test_a_dag_head_follows_its_uploads(repos: Store) -> None:
    spec = DagSpec.model_validate(SPEC_V1)
    assert repos.dags.save_version(spec, source="s3://b/demo.yaml", sha256="x", now=NOW) == 1
    head = repos.dags.get(DAG)
    assert (head.current_version, head.source, head.version, head.paused) == (
        1,
        "s3://b/demo.yaml",
        1,
        False,
    )
    assert repos.dags.save_version(spec, source=None, sha256=None, now=NOW) == 2
    assert repos.dags.get(DAG).source is None
    retired = repos.dags.retire(DAG, now=NOW)
    assert retired == repos.dags.get(DAG)
    assert retired is not None
    assert (retired.current_version, retired.version) == (None, 3)
    assert repos.dags.load_spec(DAG, 2) == repos.dags.load_spec(DAG, 1)  # versions stay
    with pytest.raises(NotFound):
        repos.dags.load_spec(DAG, 3)


def test_subscriptions_of_any_source_and_their_order(repos: Store) -> None:
    spec = DagSpec.model_validate(
        {
            "dag": "zeta",
            "on": [{"detail-type": ["go"]}, {"source": ["b.src", "a.src"]}],
            "tasks": {
                "t2": {"noop": {}, "stop_on": [{"source": ["a.src"]}]},
                "t1": {"noop": {}, "start_on": [{"source": ["a.src"]}]},
            },
        }
    )
    repos.dags.save_version(spec, source=None, sha256=None, now=NOW)
    repos.dags.save_version(_subscriber("v1", "a.src"), source=None, sha256=None, now=NOW)

    found = repos.dags.subscriptions("a.src")
    assert [(s.dag_id, s.task_id, s.kind) for s in found] == [
        ("listener", None, "on"),
        ("listener", "t", "restart_on"),
        ("zeta", None, "on"),
        ("zeta", None, "on"),
        ("zeta", "t1", "start_on"),
        ("zeta", "t2", "stop_on"),
    ]
    zeta_on = {str(s.pattern) for s in found if s.dag_id == "zeta" and s.kind == "on"}
    assert zeta_on == {str({"detail-type": ["go"]}), str({"source": ["b.src", "a.src"]})}
    # Asking for the catch-all source reads it once.
    assert [(s.dag_id, s.kind) for s in repos.dags.subscriptions("*")] == [
        ("listener", "restart_on"),
        ("zeta", "on"),
    ]
    assert [(s.dag_id, s.kind) for s in repos.dags.subscriptions("c.src")] == [
        ("listener", "restart_on"),
        ("zeta", "on"),
    ]


def test_task_state_writes_without_a_version_still_count_versions(repos: Store) -> None:
    scope = task_scope(DAG, "a")
    assert repos.state.get_all(scope) == {}
    assert repos.state.delete_scope(scope) == 0
    assert repos.state.put(scope, "k", {"b": 1, "a": (1, 2)}, now=NOW) == 1
    assert repos.state.put(scope, "k", "again", now=NOW) == 2
    assert repos.state.put(scope, "k", "cas", now=NOW, expected_version=2) == 3
    assert repos.state.get(scope, "k") == ("cas", 3)
    repos.state.put(scope, "j", {"b": 1, "a": (1, 2)}, now=NOW)
    assert repos.state.get(scope, "j") == ({"a": [1, 2], "b": 1}, 1)
    with pytest.raises(ConflictError) as missing:
        repos.state.put(scope, "new", 1, now=NOW, expected_version=3)
    assert missing.value.current is None


@pytest.mark.xfail(
    strict=True, raises=ConflictError, reason="known bug: an orphaned version blocks uploads"
)
def test_an_upload_that_died_between_its_writes_does_not_block_the_next(
    backend: Backend, repos: Store
) -> None:
    spec = DagSpec.model_validate(SPEC_V1)
    assert repos.dags.save_version(spec, source=None, sha256=None, now=NOW) == 1
    # A loader stored version 2 and died before it moved the head.
    backend.orphan_version(DagSpec.model_validate(SPEC_V2), 2)

    number = repos.dags.save_version(spec, source=None, sha256=None, now=NOW)

    assert number == 3
    assert repos.dags.get(DAG).current_version == 3


@pytest.mark.xfail(
    strict=True,
    raises=ConflictError,
    reason="known bug: a head left by a slot write blocks uploads",
)
def test_a_dag_whose_head_a_slot_write_left_can_be_loaded(repos: Store) -> None:
    repos.dags.reserve_run_slot(DAG, "r1", 1)  # e.g. a late run start of a DAG never loaded
    spec = DagSpec.model_validate(SPEC_V1)
    assert repos.dags.save_version(spec, source=None, sha256=None, now=NOW) == 1


def test_an_emit_source_prefix_is_held_by_one_dag(repos: Store) -> None:
    assert repos.dags.hold_emit_sources("orders", ["com.acme"]) == {}
    assert repos.dags.hold_emit_sources("orders", ["com.acme"]) == {}  # again: no change
    assert repos.dags.hold_emit_sources("billing", ["com.acme.billing", "com.other"]) == {
        "com.acme.billing": ("com.acme", "orders")
    }
    assert repos.dags.hold_emit_sources("billing", ["com.other"]) == {}
    # Released (a new version without it, or the DAG retired): another DAG may take it.
    assert repos.dags.hold_emit_sources("orders", []) == {}
    assert repos.dags.hold_emit_sources("billing", ["com.acme", "com.other"]) == {}
    assert repos.dags.hold_emit_sources("orders", ["com.acme.orders"]) == {
        "com.acme.orders": ("com.acme", "billing")
    }


# --- for_each: a mapped task's instances ----------------------------------------------------


def expanded(repos: Store, count: int, expansion: int = 1) -> TaskInstance:
    """A running mapped task ``m`` (try ``expansion``) with ``count`` pending instances."""
    mapped = put_task(repos, "m")
    for _ in range(expansion):
        mapped = repos.tasks.apply(
            mapped,
            move(
                mapped,
                T.RUNNING,
                Cause.EXPAND,
                try_number=mapped.try_number + 1,
                map_count=count,
                map_done=0,
                map_failed=0,
            ),
        )
        if mapped.try_number < expansion:
            mapped = repos.tasks.apply(mapped, move(mapped, T.SUCCESS, Cause.SUCCEEDED))
            mapped = repos.tasks.apply(mapped, move(mapped, T.PENDING, Cause.CLEAR))
    instances = [
        TaskInstance(DAG, RUN, "m", map_index=i, expansion=expansion, item={"n": i}, released=i < 2)
        for i in range(count)
    ]
    assert repos.tasks.create_instances(instances) == count
    return mapped


def finished_instance(repos: Store, index: int, state: TaskState = T.SUCCESS) -> TaskInstance:
    ti = repos.tasks.get(DAG, RUN, instance_key("m", index))
    ti = repos.tasks.apply(ti, dispatch(ti))
    cause = Cause.SUCCEEDED if state is T.SUCCESS else Cause.FAILED
    return repos.tasks.apply(ti, move(ti, state, cause, output={"i": index}))


def test_instances_are_keyed_beside_their_task_and_listed_in_item_order(repos: Store) -> None:
    expanded(repos, 12)
    put_task(repos, "m-other")  # a task whose id starts alike is no instance

    instances = repos.tasks.list_instances(DAG, RUN, "m")

    assert [ti.map_index for ti in instances] == list(range(12))
    assert [ti.instance_id for ti in instances][:2] == ["m:0000", "m:0001"]
    assert {ti.task_id for ti in instances} == {"m"}
    assert instances[3].item == {"n": 3}
    assert [ti.released for ti in instances[:3]] == [True, True, False]
    assert repos.tasks.get(DAG, RUN, "m:0011").key == (DAG, RUN, "m:0011")
    assert repos.tasks.get(DAG, RUN, "m").map_count == 12


def test_creating_instances_again_resets_none_but_a_newer_expansion_replaces_them(
    repos: Store,
) -> None:
    expanded(repos, 3)
    moved = finished_instance(repos, 0)
    again = [TaskInstance(DAG, RUN, "m", map_index=i, expansion=1) for i in range(4)]

    assert repos.tasks.create_instances(again) == 1  # only the missing fourth
    assert repos.tasks.get(DAG, RUN, "m:0000") == moved

    newer = [TaskInstance(DAG, RUN, "m", map_index=i, expansion=2, item=i) for i in range(2)]
    assert repos.tasks.create_instances(newer) == 2
    fresh = repos.tasks.get(DAG, RUN, "m:0000")
    assert (fresh.state, fresh.expansion, fresh.item, fresh.try_number) == (T.PENDING, 2, 0, 0)


def test_release_is_once_and_only_for_a_pending_instance(repos: Store) -> None:
    expanded(repos, 3)

    released = repos.tasks.release_instance(DAG, RUN, "m:0002")
    assert released is not None
    assert released.released
    assert repos.tasks.release_instance(DAG, RUN, "m:0002") == released  # no second write
    assert repos.tasks.release_instance(DAG, RUN, "m:0009") is None


def test_each_finish_is_counted_once_on_its_mapped_task(repos: Store) -> None:
    expanded(repos, 3)
    ok = finished_instance(repos, 0)
    failed = finished_instance(repos, 1, T.FAILED)

    assert repos.tasks.count_instance(ok, failed=False)
    assert not repos.tasks.count_instance(ok, failed=False)  # a redelivery
    assert repos.tasks.count_instance(failed, failed=True)
    stale = repos.tasks.get(DAG, RUN, "m:0002")
    assert not repos.tasks.count_instance(replace(stale, state=T.SUCCESS), failed=False)

    mapped = repos.tasks.get(DAG, RUN, "m")
    assert (mapped.map_done, mapped.map_failed) == (2, 1)
    assert repos.tasks.get(DAG, RUN, "m:0000").counted == ok.version


def test_an_instance_of_an_older_expansion_is_not_counted(repos: Store) -> None:
    expanded(repos, 2, expansion=2)
    old = TaskInstance(DAG, RUN, "m", map_index=5, expansion=1)
    repos.tasks.put_new([old])
    old = repos.tasks.get(DAG, RUN, "m:0005")

    assert not repos.tasks.count_instance(old, failed=False)
    assert repos.tasks.get(DAG, RUN, "m").map_done == 0


def test_clearing_a_counted_instance_takes_its_finish_back(repos: Store) -> None:
    expanded(repos, 2)
    failed = finished_instance(repos, 0, T.FAILED)
    assert repos.tasks.count_instance(failed, failed=True)
    counted = repos.tasks.get(DAG, RUN, "m:0000")

    cleared = repos.tasks.apply_uncounted(counted, move(counted, T.PENDING, Cause.CLEAR))

    assert (cleared.state, cleared.counted) == (T.PENDING, None)
    assert repos.tasks.get(DAG, RUN, "m:0000").counted is None
    mapped = repos.tasks.get(DAG, RUN, "m")
    assert (mapped.map_done, mapped.map_failed) == (0, 0)
    # A stale copy of the clear conflicts and takes nothing back twice.
    with pytest.raises(ConflictError):
        repos.tasks.apply_uncounted(counted, move(counted, T.PENDING, Cause.CLEAR))
    assert repos.tasks.get(DAG, RUN, "m").map_done == 0


def ended_run(repos: Store, dag_id: str, run_id: str) -> DagRun:
    """A run as the scheduler reads it once it ended (its slot is then released)."""
    repos.runs.create(DagRun(dag_id, run_id, 1, RunType.MANUAL, state=RunState.SUCCESS))
    return repos.runs.get(dag_id, run_id)


# --- covered tries and armed runs (TaskInstance.covered) -----------------------------------


def test_a_covered_try_has_no_entry_of_its_own_until_it_is_uncovered(repos: Store) -> None:
    """Queued and running, a covered try is in no due index entry: its run's stands for
    it. Uncovered, it has its own at its time; a retry's time is always its own."""
    claim, check = NOW + timedelta(minutes=5), NOW + timedelta(minutes=10)
    a = put_task(repos, "a")
    covered = replace(
        dispatch(a), changes={**dispatch(a).changes, "check_at": claim, "covered": True}
    )
    queued = repos.tasks.apply(a, covered)
    assert queued.covered
    assert repos.tasks.get(DAG, RUN, "a").covered
    assert repos.tasks.due(NOW + timedelta(days=1)) == []
    running = repos.tasks.apply(queued, move(queued, T.RUNNING, Cause.STARTED, check_at=check))
    assert running.covered
    assert repos.tasks.due(NOW + timedelta(days=1)) == []

    with pytest.raises(ConflictError) as stale:
        repos.tasks.uncover(queued)  # the copy from before
    assert stale.value.current == running
    uncovered = repos.tasks.uncover(running)
    assert (uncovered.covered, uncovered.version) == (False, running.version + 1)
    assert repos.tasks.get(DAG, RUN, "a") == uncovered
    assert repos.tasks.due(check - timedelta(seconds=1)) == []
    assert repos.tasks.due(check) == [uncovered]

    b = put_task(repos, "b")
    queued_b = repos.tasks.apply(
        b, replace(dispatch(b), changes={**dispatch(b).changes, "covered": True})
    )
    retry_at = NOW + timedelta(minutes=1)
    waiting = repos.tasks.apply(
        queued_b, move(queued_b, T.UP_FOR_RETRY, Cause.RETRY, next_attempt_at=retry_at)
    )
    assert waiting.covered  # the flag stays, but a retry is not covered
    assert [t.task_id for t in repos.tasks.due(retry_at)] == ["b"]


def test_a_finish_count_arms_the_run_once_and_a_disarm_waits_for_quiet(repos: Store) -> None:
    """The first count arms the run; later ones leave its entry where it is but stamp
    their time. A disarm is refused for a run written since it was read, or counted after
    ``quiet_since``; a count after a disarm arms the run again."""
    make_run(repos)
    first, second = NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    done = []
    for task_id in ("a", "b", "c"):
        ti = queued_task(repos, task_id)
        done.append(repos.tasks.apply(ti, move(ti, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW)))
    assert repos.runs.due(NOW + timedelta(days=1)) == []

    repos.runs.record_finished(done[0], 0, failed_leaf=False, arming=Arming(NOW, first))
    armed = repos.runs.due(first)
    assert [r.run_id for r in armed] == [RUN]
    assert repos.runs.due(NOW) == []
    later = NOW + timedelta(seconds=30)
    repos.runs.record_finished(done[1], 1, failed_leaf=False, arming=Arming(later, second))
    assert [r.run_id for r in repos.runs.due(first)] == [RUN]  # where the first put it

    assert not repos.runs.disarm(armed[0], quiet_since=second)  # read before the count
    current = repos.runs.due(first)[0]
    assert current.finished_count == 2
    assert not repos.runs.disarm(current, quiet_since=NOW)  # counted after NOW
    assert repos.runs.disarm(current, quiet_since=later)
    assert repos.runs.due(NOW + timedelta(days=1)) == []
    assert not repos.runs.disarm(current, quiet_since=second)  # not armed any more

    repos.runs.record_finished(done[2], 2, failed_leaf=False, arming=Arming(second, second))
    assert repos.runs.due(first) == []
    assert [r.run_id for r in repos.runs.due(second)] == [RUN]


def test_a_runs_end_can_take_its_due_entry_out_in_the_same_write(repos: Store) -> None:
    """Its end, every task finished: no covered try is left to look at, so the end write
    disarms the run (``disarm``), whatever its last count's time; another transition
    leaves the entry where it is."""
    run = make_run(repos)
    ti = queued_task(repos, "a")
    done = repos.tasks.apply(ti, move(ti, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))
    counted = repos.runs.record_finished(done, 0, failed_leaf=False, arming=Arming(NOW, NOW))
    assert counted is not None
    running = repos.runs.get(DAG, RUN)
    assert running.state is RunState.RUNNING
    assert [r.run_id for r in repos.runs.due(NOW)] == [RUN]
    ended = repos.runs.transition(
        running, RunState.SUCCESS, Cause.SUCCEEDED, disarm=True, ended_at=NOW
    )
    assert repos.runs.due(NOW + timedelta(days=1)) == []
    assert repos.runs.get(DAG, RUN) == ended
    assert run.version < ended.version
    assert ended.counted_at == NOW  # kept by the end
    # A clear's reopening forgets it (the run was disarmed: a stamp from before the end
    # must not spare the first finish after it its arm).
    reopened = repos.runs.transition(ended, RunState.QUEUED, Cause.CLEAR, counted_at=None)
    assert repos.runs.get(DAG, RUN) == reopened
    assert reopened.counted_at is None


def test_a_slots_hand_over_counts_and_arms_in_one_write(repos: Store) -> None:
    run = make_run(repos)
    a = queued_task(repos, "a")
    assert repos.runs.reserve_task_slot(run, a, a.try_number, 1)
    done = repos.tasks.apply(a, move(a, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))
    b = put_task(repos, "b")
    handed = repos.runs.hand_over_task_slot(done, b, 1, index=0, arming=Arming(NOW, NOW))
    assert handed is not None
    assert (handed.finished_count, handed.active) == (1, frozenset({"b"}))
    assert [r.run_id for r in repos.runs.due(NOW)] == [RUN]


def test_a_big_runs_count_in_its_tally_arms_nothing(repos: Store) -> None:
    make_run(repos)
    ti = queued_task(repos, "a")
    done = repos.tasks.apply(ti, move(ti, T.SUCCESS, Cause.SUCCEEDED, ended_at=NOW))
    group = FinishGroup(0, 2)
    repos.runs.record_finished(done, 0, failed_leaf=False, group=group, arming=Arming(NOW, NOW))
    assert repos.runs.due(NOW + timedelta(days=1)) == []


def test_arming_without_a_count_stamps_the_run_and_bumps_no_version(repos: Store) -> None:
    run = make_run(repos)
    ti = TaskInstance(DAG, RUN, "a")
    repos.runs.arm(ti, Arming(NOW, NOW + timedelta(minutes=1)))
    [armed] = repos.runs.due(NOW + timedelta(minutes=1))
    assert (armed.version, armed.finished_count) == (run.version, 0)
    assert not repos.runs.disarm(armed, quiet_since=NOW - timedelta(seconds=1))
    assert repos.runs.disarm(armed, quiet_since=NOW)
    repos.runs.arm(TaskInstance(DAG, "gone", "a"), Arming(NOW, NOW))  # no such run
    assert repos.runs.find(DAG, "gone") is None
    assert repos.runs.due(NOW + timedelta(days=1)) == []


# --- a task never written --------------------------------------------------------------------

SPEC_FOUR: dict[str, Any] = {
    "dag": DAG,
    "tasks": {
        "a": {"noop": None},
        "b": {"depends_on": ["a"], "noop": None},
        "c": {"depends_on": ["a"], "noop": None},
        "d": {"depends_on": ["b", "c"], "noop": None},
    },
}


def _run_of_four(repos: Store) -> DagRun:
    """A started run of ``SPEC_FOUR`` (version 1) whose tasks were never written."""
    spec = DagSpec.model_validate(SPEC_FOUR)
    assert repos.dags.save_version(spec, source=None, sha256=None, now=NOW) == 1
    return make_run(repos)


def test_a_task_never_written_reads_as_its_fresh_instance_from_every_read(repos: Store) -> None:
    """A run's task instances are not written when it is made: each read gives a task of
    the run its fresh instance (pending, try 0, version 0, the run's DAG version); an id
    that is no task of the run is not found, nor is any task of a missing run."""
    run = _run_of_four(repos)
    fresh = {t: TaskInstance(DAG, RUN, t, dag_version=1) for t in "abcd"}
    assert repos.tasks.get(DAG, RUN, "b") == fresh["b"]
    assert repos.tasks.find(DAG, RUN, "nope") is None
    with pytest.raises(NotFound):
        repos.tasks.get(DAG, RUN, "nope")
    assert repos.tasks.find(DAG, "no-run", "a") is None
    assert repos.tasks.get_many(DAG, RUN, ["d", "nope", "a"]) == [fresh["d"], fresh["a"]]
    assert repos.tasks.get_with_run(DAG, RUN, ["c", "nope"]) == (run, {"c": fresh["c"]})
    read = repos.tasks.get_try_with_run(DAG, RUN, "a", 1, ["b"])
    assert (read.task, read.run, read.downstream) == (fresh["a"], run, {"b": fresh["b"]})
    assert repos.tasks.get_with_output(DAG, RUN, "d", 1) == (fresh["d"], None)
    assert repos.tasks.list_for_run(DAG, RUN) == [fresh[t] for t in "abcd"]
    assert repos.tasks.list_for_run(DAG, "no-run") == []


def test_a_task_never_written_is_inserted_by_its_first_write_whatever_it_is(
    repos: Store,
) -> None:
    """A transition expecting version 0 holds for no item and inserts the whole record; a
    report, a clear's tombstone and a join's tally summary insert their task too; a second
    writer that read the fresh instance loses (its version 0 is gone)."""
    _run_of_four(repos)
    a = repos.tasks.get(DAG, RUN, "a")
    queued = repos.tasks.apply(a, dispatch(a))
    assert repos.tasks.get(DAG, RUN, "a") == queued
    assert (queued.state, queued.try_number, queued.version) == (T.QUEUED, 1, 1)
    with pytest.raises(ConflictError):
        repos.tasks.apply(a, dispatch(a))  # read fresh, written since
    report = UpstreamReport(T.SUCCESS, 3)
    told = repos.tasks.report_upstream((DAG, RUN, "b"), "a", report, dag_version=1)
    assert told is not None
    assert (told.state, told.version, told.dag_version, told.upstream) == (
        T.PENDING,
        1,
        1,
        {"a": report},
    )
    assert repos.tasks.get(DAG, RUN, "b") == told
    retired = repos.tasks.retire_upstream(queued, ["c"])
    assert retired["c"].upstream == {"a": UpstreamReport.tombstone(queued.version)}
    assert repos.tasks.report_upstream((DAG, RUN, "c"), "a", UpstreamReport(T.SUCCESS, 1)) is None
    tally = Tally(1, {T.SUCCESS: 2})
    join = repos.tasks.record_tally((DAG, RUN, "d"), 0, tally, dag_version=1)
    assert join is not None
    assert (join.state, join.dag_version, join.tallies) == (T.PENDING, 1, {0: tally})
    assert repos.tasks.get(DAG, RUN, "d") == join
