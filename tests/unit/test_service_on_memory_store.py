"""The scheduler service on the in-memory store: no moto, no AWS call at all.

The store's change feed stands in for the tables' streams, a scripted remote service
for the targets; DAGs run end to end: a chain, a fan-out/fan-in with a failure, a retry
and a clear.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.client
import pytest

from skydag import wiring
from skydag.engine.models import (
    DagRun,
    FinishGroup,
    JobReport,
    JobStatus,
    TallyMembers,
    TaskInstance,
    UpstreamReport,
)
from skydag.engine.scheduler import SMALL_JOIN, readiness
from skydag.engine.states import RunState, TaskState
from skydag.ports import MemoryEventSink
from skydag.ports.store import TryRead
from skydag.service import progress
from skydag.service.core import Scheduler
from skydag.service.joins import WideJoins
from skydag.service.scheduler_service import SchedulerService
from skydag.signals.patterns import matches
from skydag.spec.models import DagSpec
from skydag.store.memory import MemoryStore, StoreChange
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef, Target

T = TaskState
START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
JOB: dict[str, Any] = {"noop": None}  # the kind does not matter: every kind is the script's
# A kind whose events name the task instance and try (as Batch's echo them): found by key.
ECHOING: dict[str, Any] = {"batch": {"job_queue": "q", "job_definition": "d"}}


@dataclass
class Clock:
    moment: datetime = START

    def now(self) -> datetime:
        return self.moment


@dataclass
class ScriptedService:
    """A remote service whose jobs run until the harness ends them: they fail when their
    (task, try) is in ``fail``, else succeed. Dispatch is idempotent by token."""

    fail: set[tuple[str, int]] = field(default_factory=set)
    jobs: dict[str, DispatchRequest] = field(default_factory=dict)
    by_token: dict[str, str] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    cancelled: list[str | None] = field(default_factory=list)

    def target_for(self, kind: str) -> Target:
        return self

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        job_id = self.by_token.setdefault(request.token, f"job-{len(self.jobs) + 1}")
        self.jobs[job_id] = request
        return DispatchResult(job_id=job_id)

    def describe(self, job: JobRef) -> JobReport | None:
        return None

    def cancel(self, job: JobRef, reason: str) -> None:
        self.cancelled.append(job.job_id)

    def running(self) -> list[str]:
        return [job_id for job_id in self.jobs if job_id not in self.ended]

    def outcome(self, job_id: str) -> JobEvent:
        request = self.jobs[job_id]
        failed = (request.task_id, request.try_number) in self.fail
        status = JobStatus.FAILED if failed else JobStatus.SUCCEEDED
        self.ended.add(job_id)
        return self.event(job_id, status, exit_code=int(failed))

    def event(self, job_id: str, status: JobStatus, **fields: Any) -> JobEvent:
        """The service's state-change event for one of its jobs (with the try's identity,
        as Batch's and ECS's events echo it)."""
        request = self.jobs[job_id]
        return JobEvent(
            "script",
            status,
            request.token,
            job_id=job_id,
            task_key=request.task_key_in_events,
            try_number=request.try_number_in_events,
            **fields,
        )


class Harness:
    def __init__(self, *, listened: bool = True) -> None:
        self.store = MemoryStore(record_changes=True)
        self.clock = Clock()
        self.remote = ScriptedService()
        # ``listened``: whether a rule takes skydag's task events (writes whose records
        # have nothing else to do are marked ``unheard`` only when none does).
        self.events = MemoryEventSink(listened=listened)
        self.service = SchedulerService(self.store, self.remote, self.clock, self.events)
        self.delivered: list[StoreChange] = []  # every change delivered so far
        # As the deployed event source mapping, when set: changes its filters leave out
        # are not delivered (``wiring.STREAM_EVENT_SOURCE.filters``).
        self.filtered = False
        self.filtered_out: list[StoreChange] = []

    def load(self, spec: dict[str, Any]) -> DagSpec:
        validated = DagSpec.model_validate(spec)
        self.store.dags.save_version(validated, source="test", sha256=None, now=self.clock.now())
        return validated

    def settle(self) -> None:
        """Deliver changes (as the streams would) and end running jobs until all is quiet."""
        for _ in range(1000):
            if self.deliver_changes():
                continue
            running = self.remote.running()
            if not running:
                return
            for job_id in running:
                self.service.on_job_event(self.remote.outcome(job_id))
        raise AssertionError("the scheduler never settled")

    def deliver_changes(self) -> bool:
        """Deliver the changes written so far (as the streams would); False when none."""
        changes = self.store.take_changes()
        if self.filtered:
            self.filtered_out.extend(c for c in changes if not streamed(c))
            changes = [c for c in changes if streamed(c)]
        self.delivered.extend(changes)
        for change in changes:
            if change.kind == "run":
                self.service.on_run_changed(change.old, change.new)
            else:
                self.service.on_task_changed(change.old, change.new)
        return bool(changes)

    def settle_changes(self) -> None:
        """Deliver changes until none is left; jobs keep running."""
        while self.deliver_changes():
            pass

    def later(self, delta: timedelta) -> None:
        """Time passes; the reconciler finds what fell due (retries) in the due index."""
        self.clock.moment += delta
        self.service.reconcile()
        self.settle()

    def run(self, dag: str, run_id: str = "r1") -> DagRun:
        return self.store.runs.get(dag, run_id)

    def tasks(self, dag: str, run_id: str = "r1") -> dict[str, TaskInstance]:
        return {ti.task_id: ti for ti in self.store.tasks.list_for_run(dag, run_id)}

    def states(self, dag: str, run_id: str = "r1") -> dict[str, tuple[TaskState, int]]:
        return {t: (ti.state, ti.try_number) for t, ti in self.tasks(dag, run_id).items()}


def streamed(change: StoreChange) -> bool:
    """Whether the stream processor's event source mapping delivers this change (its
    record's states against ``wiring.STREAM_EVENT_SOURCE.filters``)."""
    table = "runs" if change.kind == "run" else "task_instances"
    data: dict[str, Any] = {"NewImage": {"state": {"S": change.new.state.value}}}
    if change.unheard:
        data["NewImage"]["unheard"] = {"BOOL": True}
    if change.old is not None:
        data["OldImage"] = {"state": {"S": change.old.state.value}}
    record = {"eventName": "INSERT" if change.old is None else "MODIFY", "dynamodb": data}
    patterns = wiring.STREAM_EVENT_SOURCE.filters.get(table)
    return patterns is None or any(matches(pattern, record) for pattern in patterns)


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any AWS call (boto3, PynamoDB) fails the test: the store is in memory."""

    def refuse(self: Any, operation: str, params: Any) -> Any:
        raise AssertionError(f"an AWS call was made: {operation}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)


@pytest.fixture
def env() -> Harness:
    return Harness()


def test_a_chain_runs_to_success(env: Harness) -> None:
    env.load(
        {
            "dag": "chain",
            "tasks": {
                "a": JOB,
                "b": {"depends_on": ["a"], **JOB},
                "c": {"depends_on": ["b"], **JOB},
            },
        }
    )
    result = env.service.trigger("chain", run_id="r1")
    assert result.created
    assert result.run.state is RunState.RUNNING

    env.settle()

    run = env.run("chain")
    # Only the leaf's finish is counted on the run (finish_counts): one run write, not 3.
    assert (run.state, run.finished_idx, run.failed_leaves) == (RunState.SUCCESS, {2}, 0)
    assert env.states("chain") == {t: (T.SUCCESS, 1) for t in "abc"}
    started = [env.remote.jobs[j].task_id for j in sorted(env.remote.jobs)]
    assert started == ["a", "b", "c"]
    assert env.store.dags.get("chain").active_runs == frozenset()
    assert (
        "DagRun State Change",
        {"dag": "chain", "run_id": "r1", "state": "success", "reason": None},
    ) in env.events.events
    # A duplicate trigger is the same run, and starts nothing.
    assert env.service.trigger("chain", run_id="r1").created is False
    env.settle()
    assert len(env.remote.jobs) == 3


def fan(dag: str, dag_keys: dict[str, Any] | None = None, **policy: Any) -> dict[str, Any]:
    """a, then b, c and d at once, then e when all three succeeded."""
    return {
        "dag": dag,
        **(dag_keys or {}),
        "tasks": {
            "a": JOB,
            **{t: {"depends_on": ["a"], **JOB, **policy} for t in "bcd"},
            "e": {"depends_on": ["b", "c", "d"], **JOB},
        },
    }


def test_a_failed_try_is_retried_and_the_fan_in_waits_for_it(env: Harness) -> None:
    env.load(fan("fan", {"max_active_tasks": 2}, retries=1, retry_delay="5m"))
    env.remote.fail = {("c", 1)}
    env.service.trigger("fan", run_id="r1")

    env.settle()

    states = env.states("fan")
    assert states["c"] == (T.UP_FOR_RETRY, 1)
    assert states["e"] == (T.PENDING, 0)
    assert {states[t] for t in "abd"} == {(T.SUCCESS, 1)}
    assert env.run("fan").state is RunState.RUNNING
    assert env.store.tasks.due(env.clock.now()) == []  # the retry is not due yet

    env.later(timedelta(minutes=5))

    run = env.run("fan")
    assert (run.state, run.finished_count, run.active) == (RunState.SUCCESS, 5, frozenset())
    c = env.tasks("fan")["c"]
    assert (c.state, c.try_number) == (T.SUCCESS, 2)
    assert [(r.try_number, r.state) for r in c.tries] == [(1, T.FAILED)]
    assert env.states("fan")["e"] == (T.SUCCESS, 1)


def end_jobs_of(env: Harness, *tasks: str) -> None:
    """The running jobs of these tasks end (as the harness's script says), then the
    changes they make are delivered."""
    for job_id in env.remote.running():
        if env.remote.jobs[job_id].task_id in tasks:
            env.service.on_job_event(env.remote.outcome(job_id))
    env.settle_changes()


@pytest.mark.parametrize("width", [1, 30])
def test_a_finish_after_every_leaf_ends_the_run_and_the_run_reads_its_tasks_twice(
    env: Harness, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    """A one_success leaf ends before its other upstream tasks: their finishes come
    after every leaf's count (finish_counts). The first count that finds the leaves
    counted reads the run's tasks, counts those finished and has every later finish
    count; the full count ends the run, read once more: two reads, whatever the width."""
    middle = [f"m{i}" for i in range(width)]
    env.load(
        {
            "dag": "race",
            "tasks": {
                "start": JOB,
                **{m: {"depends_on": ["start"], **JOB} for m in middle},
                "first": {"depends_on": middle, "trigger_rule": "one_success", **JOB},
            },
        }
    )
    listed = []
    list_for_run = env.store.tasks.list_for_run

    def counted_listing(dag_id: str, run_id: str) -> list[TaskInstance]:
        listed.append(run_id)
        return list_for_run(dag_id, run_id)

    monkeypatch.setattr(env.store.tasks, "list_for_run", counted_listing)
    env.service.trigger("race", run_id="r1")
    env.settle_changes()
    end_jobs_of(env, "start")
    end_jobs_of(env, "m0")
    end_jobs_of(env, "first")

    run = env.run("race")
    if width == 1:  # nothing is late: the leaf's count ends the run
        assert (run.state, run.counts_all, listed) == (RunState.SUCCESS, False, ["r1"])
        return
    assert (run.state, run.counts_all, listed) == (RunState.RUNNING, True, ["r1"])
    assert env.store.tasks.get("race", "r1", "first").state is T.SUCCESS

    env.settle()

    run = env.run("race")
    spec = env.store.dags.load_spec("race", run.dag_version)
    assert (run.state, run.finished_count, listed) == (RunState.SUCCESS, width + 2, ["r1"] * 2)
    assert env.states("race") == {t: (T.SUCCESS, 1) for t in spec.tasks}

    # A clear reopens the run: its counting starts anew, from its leaves.
    env.service.clear("race", "r1", "m1")
    run = env.run("race")
    assert (run.state, run.counts_all, run.finished_count) == (RunState.RUNNING, False, width + 1)
    env.settle()
    assert env.run("race").state is RunState.SUCCESS
    assert env.states("race")["m1"] == (T.SUCCESS, 2)


def test_a_finish_whose_record_comes_after_the_runs_end_is_not_counted_until_a_clear(
    env: Harness,
) -> None:
    """A chain's jobs end before any stream record is delivered: the leaf's count ends the
    run; the records of the earlier finishes come after, and count nothing (finish_counts).
    A clear of the leaf reopens the run, whose counting starts anew (counts_all unset):
    its end comes from the leaf's count again."""
    env.load({"dag": "late", "tasks": {"a": JOB, "b": {"depends_on": ["a"], **JOB}}})
    env.service.trigger("late", run_id="r1")
    env.settle_changes()
    for _ in range(2):  # a's job, then the one a's end starts at once: b's
        (job_id,) = env.remote.running()
        env.service.on_job_event(env.remote.outcome(job_id))
    ended = env.run("late")
    assert (ended.state, ended.finished_idx) == (RunState.SUCCESS, {1})

    env.settle_changes()  # a's finish record among them
    assert env.run("late") == ended

    env.service.clear("late", "r1", "b")
    assert (env.run("late").state, env.run("late").counts_all) == (RunState.RUNNING, False)
    env.settle()
    run = env.run("late")
    assert (run.state, run.finished_idx, env.states("late")["b"]) == (
        RunState.SUCCESS,
        {1},
        (T.SUCCESS, 2),
    )


def test_a_failure_fails_the_fan_in_and_a_clear_reruns_it(env: Harness) -> None:
    env.load(fan("fan"))
    env.remote.fail = {("c", 1)}
    env.service.trigger("fan", run_id="r1")
    env.settle()

    run = env.run("fan")
    assert (run.state, run.failed_leaves) == (RunState.FAILED, 1)
    assert run.reason
    states = env.states("fan")
    assert (states["c"], states["e"]) == ((T.FAILED, 1), (T.UPSTREAM_FAILED, 0))

    cleared = env.service.clear("fan", "r1", "c", downstream=True)

    assert sorted(cleared) == ["c", "e"]
    assert env.run("fan").state is RunState.RUNNING  # reopened
    env.settle()
    run = env.run("fan")
    assert (run.state, run.failed_leaves) == (RunState.SUCCESS, 0)
    assert 4 in run.finished_idx  # the leaf's count (and those a slot's release made)
    assert env.states("fan") == {
        "a": (T.SUCCESS, 1),
        "b": (T.SUCCESS, 1),
        "c": (T.SUCCESS, 2),
        "d": (T.SUCCESS, 1),
        "e": (T.SUCCESS, 1),
    }
    # The clear left tombstones: e holds c's new finish, of a later version.
    e = env.tasks("fan")["e"]
    assert e.upstream["c"].state is T.SUCCESS
    assert not e.upstream["c"].cleared


def test_cancelling_a_run_stops_its_jobs(env: Harness) -> None:
    env.load(fan("fan"))
    env.service.trigger("fan", run_id="r1")
    env.settle_changes()  # no job ends: a's job runs
    assert env.states("fan")["a"] == (T.RUNNING, 1)

    run = env.service.cancel_run("fan", "r1")

    assert run.state is RunState.CANCELLED
    assert env.states("fan")["a"] == (T.STOPPED, 1)
    assert env.remote.cancelled == []  # cancelled from the stop's change, not after it
    env.settle()
    assert env.remote.cancelled == ["job-1"]
    assert env.run("fan").state is RunState.CANCELLED
    assert env.store.dags.get("fan").active_runs == frozenset()


def count_run_reads(env: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every run read of the store from now on, by run id."""
    reads: list[str] = []
    get = env.store.runs.get
    get_with_run = env.store.tasks.get_with_run

    def counted(dag_id: str, run_id: str) -> DagRun:
        reads.append(run_id)
        return get(dag_id, run_id)

    def counted_with_tasks(
        dag_id: str,
        run_id: str,
        task_ids: Sequence[str],
        finish_group: FinishGroup | None = None,
        *,
        instances_consistent: bool = True,
    ) -> tuple[DagRun | None, dict[str, TaskInstance]]:
        reads.append(f"{run_id} with {', '.join(task_ids)}")
        return get_with_run(
            dag_id, run_id, task_ids, finish_group, instances_consistent=instances_consistent
        )

    get_try_with_run = env.store.tasks.get_try_with_run

    def counted_with_try(
        dag_id: str, run_id: str, instance_id: str, try_number: int, *rest: Any, **options: Any
    ) -> TryRead:
        downstream: Sequence[str] = rest[0] if rest else ()
        reads.append(f"{instance_id} try {try_number}: {run_id} with {', '.join(downstream)}")
        return get_try_with_run(dag_id, run_id, instance_id, try_number, *rest, **options)

    monkeypatch.setattr(env.store.runs, "get", counted)
    monkeypatch.setattr(env.store.tasks, "get_with_run", counted_with_tasks)
    monkeypatch.setattr(env.store.tasks, "get_try_with_run", counted_with_try)
    return reads


def test_a_job_end_dispatches_the_next_task_reading_the_run_once(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a job's end to the next dispatch the run is read once, by the finish's
    propagation: the dispatch it makes at once takes that run along (a round trip a
    task). A dispatch from a change's record (not owned) still reads it."""
    env.load({"dag": "pair", "tasks": {"a": ECHOING, "b": {"depends_on": ["a"], **ECHOING}}})
    env.service.trigger("pair", run_id="r1")
    env.settle_changes()
    (job_a,) = env.remote.running()
    reads = count_run_reads(env, monkeypatch)

    env.service.on_job_event(env.remote.outcome(job_a))

    assert [env.remote.jobs[j].task_id for j in env.remote.running()] == ["b"]
    # With the try, the task its finish tells (one round trip); the dispatch of b read none.
    assert reads == ["a try 1: r1 with b"]
    env.settle()
    assert env.run("pair").state is RunState.SUCCESS


def test_a_wrong_guess_of_the_dag_version_reads_the_tasks_again(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tasks read with the try are guessed from the DAG version this process last
    used: a run pinned to an older version (whose a goes on to b, not c) reads its own
    downstream task again, and goes on as that version says."""
    env.load({"dag": "pair", "tasks": {"a": ECHOING, "b": {"depends_on": ["a"], **ECHOING}}})
    env.service.trigger("pair", run_id="r1")
    env.settle_changes()
    (job_a,) = env.remote.running()
    env.load({"dag": "pair", "tasks": {"a": ECHOING, "c": {"depends_on": ["a"], **ECHOING}}})
    env.service.trigger("pair", run_id="r2")
    env.settle_changes()  # r2 starts: the newer version is the one used last
    reads = count_run_reads(env, monkeypatch)

    env.service.on_job_event(env.remote.outcome(job_a))

    assert reads == ["a try 1: r1 with c", "r1 with b"]
    assert [env.remote.jobs[j].task_id for j in env.remote.running()] == ["a", "b"]
    env.settle()
    assert (env.run("pair").state, env.run("pair", "r2").state) == (RunState.SUCCESS,) * 2


def test_a_fan_out_wider_than_one_read_with_the_try_reads_its_tasks_once(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More downstream tasks than fit in the read with the try, its output and its run
    (``WITH_TRY_LIMIT``, made 2 here): none are read with the try, and the finish reads
    them all with the run, once (reading part of them ahead would read those twice)."""
    monkeypatch.setattr(progress, "WITH_TRY_LIMIT", 2)
    children = {f"b{i}": {"depends_on": ["a"], **ECHOING} for i in range(3)}
    env.load({"dag": "fan", "tasks": {"a": ECHOING, **children}})
    env.service.trigger("fan", run_id="r1")
    env.settle_changes()
    (job_a,) = env.remote.running()
    reads = count_run_reads(env, monkeypatch)

    env.service.on_job_event(env.remote.outcome(job_a))

    assert reads == ["a try 1: r1 with ", "r1 with b0, b1, b2"]
    assert sorted(env.remote.jobs[j].task_id for j in env.remote.running()) == ["b0", "b1", "b2"]


def test_a_finish_reads_ahead_the_tasks_it_tells_after_a_read_and_not_a_wide_join(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is read with the downstream tasks the finish tells after a read: one it
    alone decides, and a small join (its item is small), decided on the reports it holds
    as read; a wide join is told by a conditional write, unread, so its item (which grows
    with its width) is not charged to every report."""
    ups = [f"u{i}" for i in range(SMALL_JOIN)]
    env.load(
        {
            "dag": "join",
            "tasks": {
                "a": ECHOING,
                "b": ECHOING,
                **{u: ECHOING for u in ups},
                "c": {"depends_on": ["a", "b"], **ECHOING},
                "d": {"depends_on": ["a"], **ECHOING},
                "w": {"depends_on": ["a", *ups], **ECHOING},
            },
        }
    )
    env.service.trigger("join", run_id="r1")
    env.settle_changes()
    job_a = next(j for j in env.remote.running() if env.remote.jobs[j].task_id == "a")
    reads = count_run_reads(env, monkeypatch)

    env.service.on_job_event(env.remote.outcome(job_a))

    assert reads == ["a try 1: r1 with c, d"]
    env.settle()
    assert env.run("join").state is RunState.SUCCESS


def test_a_small_joins_last_report_and_its_dispatch_are_one_write(env: Harness) -> None:
    """a → b, c, d → e: e is read with the run by each finish telling it; the first two
    reports insert it and add to it, the last is written with e's ``→ queued``."""
    env.load(
        {
            "dag": "diamond",
            "tasks": {
                "a": JOB,
                **{t: {"depends_on": ["a"], **JOB} for t in "bcd"},
                "e": {"depends_on": ["b", "c", "d"], **JOB},
            },
        }
    )
    env.service.trigger("diamond", run_id="r1")
    env.settle_changes()
    env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))  # a
    env.settle_changes()
    env.store.take_changes()
    for job in env.remote.running():
        env.service.on_job_event(env.remote.outcome(job))
    writes = [(c.old, c.new) for c in env.store.take_changes() if c.kind == "task"]
    e_writes = [(old, new) for old, new in writes if new.task_id == "e"]
    assert [
        (old.state if old else None, new.state, len(new.upstream)) for old, new in e_writes
    ] == [
        (None, T.PENDING, 1),
        (T.PENDING, T.PENDING, 2),
        (T.PENDING, T.QUEUED, 3),
        (T.QUEUED, T.RUNNING, 3),  # its job started at once, by the last teller
    ]
    env.settle()
    assert env.run("diamond").state is RunState.SUCCESS


def test_a_task_throttled_while_it_was_evaluated_leaves_the_set_at_its_dispatch(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot freed between the first refusal and the second try (a concurrent finish):
    the task joins the throttled set, then takes the slot and is dispatched at once. The
    run its caller read says nothing of the set, so the dispatch reads the run again and
    the task leaves the set (else every finish would evaluate it again)."""
    env.load(
        {
            "dag": "slots",
            "max_active_tasks": 1,
            "tasks": {"a": JOB, "b": {"depends_on": ["a"], **JOB}},
        }
    )
    env.service.trigger("slots", run_id="r1")
    env.settle_changes()
    (job_a,) = env.remote.running()
    runs = env.store.runs
    reserve = runs.reserve_task_slot
    refused = [False]

    def refuse_once(run: DagRun, ti: TaskInstance, try_number: int, limit: int) -> bool:
        if ti.task_id == "b" and not refused[0]:
            refused[0] = True
            runs.release_task_slot(env.tasks("slots")["a"])  # a concurrent release
            return False  # refused before it
        return reserve(run, ti, try_number, limit)

    monkeypatch.setattr(runs, "reserve_task_slot", refuse_once)
    # Not a's own slot handed over: b goes the usual way, through the refusal.
    monkeypatch.setattr(runs, "hand_over_task_slot", lambda *args, **kwargs: None)

    env.service.on_job_event(env.remote.outcome(job_a))

    assert refused[0]
    assert [env.remote.jobs[j].task_id for j in env.remote.running()] == ["b"]
    assert "b" not in env.run("slots").throttled
    env.settle()
    run = env.run("slots")
    assert (run.state, run.throttled, run.active) == (RunState.SUCCESS, frozenset(), frozenset())


def test_a_single_upstream_child_is_told_and_queued_in_one_write(env: Harness) -> None:
    """Its upstream's report alone decides it: read, then the report and the dispatch
    written together (one write and one stream record, for a read). So is a small join's
    last report, decided on the reports it holds as read."""
    env.load(
        {
            "dag": "one_write",
            "tasks": {
                "a": JOB,
                "b": JOB,
                "single": {"depends_on": ["a"], **JOB},
                "double": {"depends_on": ["a", "b"], **JOB},
            },
        }
    )
    env.service.trigger("one_write", run_id="r1")
    env.settle_changes()
    jobs = {env.remote.jobs[j].task_id: j for j in env.remote.running()}
    env.service.on_job_event(env.remote.outcome(jobs["b"]))
    env.settle_changes()

    env.service.on_job_event(env.remote.outcome(jobs["a"]))
    changes = [c for c in env.store.take_changes() if c.kind == "task"]

    single = [c for c in changes if c.new.task_id == "single"]
    # Its first write (an insert: it was never written) queues it, the report with it.
    assert (single[0].old, single[0].new.state) == (None, T.QUEUED)
    assert single[0].new.upstream["a"].state is T.SUCCESS
    # A small join, read with the run, holds b's report: a's is written with its dispatch.
    double = [(c.old.state, c.new.state) for c in changes if c.new.task_id == "double"]
    assert double[:1] == [(T.PENDING, T.QUEUED)]
    assert sorted(env.remote.jobs[j].task_id for j in env.remote.running()) == [
        "double",
        "single",
    ]
    env.settle()
    assert env.run("one_write").state is RunState.SUCCESS


# --- wide joins: told through tally items (engine/tallies.py) -------------------------------


@pytest.fixture
def groups_of(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make joins wider than ``size`` upstreams tallied, ``size`` upstreams to a group."""

    def make(size: int) -> None:
        monkeypatch.setattr(WideJoins, "group", size)

    return make


def wide(dag: str, width: int, rule: str = "all_success") -> dict[str, Any]:
    """start, then u0..u<width - 1> at once, then join under ``rule``."""
    ups = [f"u{i}" for i in range(width)]
    return {
        "dag": dag,
        "tasks": {
            "start": JOB,
            **{u: {"depends_on": ["start"], **JOB} for u in ups},
            "join": {"depends_on": ups, "trigger_rule": rule, **JOB},
        },
    }


def join_changes(changes: Sequence[StoreChange]) -> list[tuple[TaskInstance, TaskInstance]]:
    """The join's writes (before, after); its first inserts it: before, its fresh record."""
    return [
        (c.old or replace(c.new, tallies={}, upstream={}), c.new)
        for c in changes
        if c.kind == "task" and c.new.task_id == "join"
    ]


def test_a_wide_join_holds_a_summary_per_group_written_only_when_the_group_moves(
    env: Harness, groups_of: Callable[[int], None]
) -> None:
    """Eight upstreams in two groups of four: the join holds no report per upstream, and
    its item is written twice per group (its first success, then the group done), not
    once per report; it runs once all eight succeeded."""
    groups_of(4)
    env.load(wide("wide", 8))
    env.service.trigger("wide", run_id="r1")
    env.settle_changes()
    env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))  # start
    env.settle_changes()
    ups = env.remote.running()
    assert len(ups) == 8
    env.delivered.clear()

    for job_id in ups:
        env.service.on_job_event(env.remote.outcome(job_id))
        env.deliver_changes()  # each finish's record tells the join again (told before)
    writes = [new for old, new in join_changes(env.delivered) if old.tallies != new.tallies]

    assert len(writes) == 4
    join = env.tasks("wide")["join"]
    assert join.upstream == {}
    assert {n: dict(t.counts) for n, t in join.tallies.items()} == {
        0: {T.SUCCESS: 4},
        1: {T.SUCCESS: 4},
    }
    assert join.state is T.RUNNING  # dispatched at once by the last report's invocation
    env.settle()
    assert env.run("wide").state is RunState.SUCCESS
    assert env.states("wide")["join"] == (T.SUCCESS, 1)


@pytest.mark.parametrize(
    ("rule", "failing", "expected"),
    [
        ("all_success", {"u3"}, T.UPSTREAM_FAILED),
        ("one_failed", {"u4"}, T.SUCCESS),
        ("one_failed", set(), T.SKIPPED),
        ("all_done", {"u0", "u4"}, T.SUCCESS),
        ("none_failed_min_one_success", set(), T.SUCCESS),
        ("all_failed", {"u0", "u1", "u2", "u3", "u4"}, T.SUCCESS),
    ],
)
def test_a_wide_join_decides_under_its_trigger_rule_from_its_groups(
    env: Harness, groups_of: Callable[[int], None], rule: str, failing: set[str], expected: T
) -> None:
    groups_of(2)
    env.load(wide("rules", 5, rule))
    env.remote.fail = {(u, 1) for u in failing}
    env.service.trigger("rules", run_id="r1")

    env.settle()

    assert env.states("rules")["join"][0] is expected
    assert env.tasks("rules")["join"].upstream == {}


def test_a_wide_join_waits_for_its_last_upstream(
    env: Harness, groups_of: Callable[[int], None]
) -> None:
    groups_of(2)
    env.load(wide("last", 5))
    env.service.trigger("last", run_id="r1")
    env.settle_changes()
    env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))
    env.settle_changes()
    ups = {env.remote.jobs[j].task_id: j for j in env.remote.running()}
    for task_id, job_id in ups.items():
        if task_id != "u2":
            env.service.on_job_event(env.remote.outcome(job_id))
    env.settle_changes()

    join = env.tasks("last")["join"]
    assert join.state is T.PENDING
    assert "waiting for 1 of 5 upstream tasks under all_success" in str(
        readiness(env.store.dags.load_spec("last", 1), join)
    )
    env.service.on_job_event(env.remote.outcome(ups["u2"]))
    env.settle()
    assert env.states("last")["join"] == (T.SUCCESS, 1)


@pytest.mark.parametrize("tally_read", ["current", "stale"])
def test_a_delivery_dying_between_the_tally_and_the_join_is_finished_by_the_next(
    env: Harness,
    groups_of: Callable[[int], None],
    monkeypatch: pytest.MonkeyPatch,
    tally_read: str,
) -> None:
    """The last report of a group is written to its tally, then the invocation dies
    before the join is told: the finish's stream record (told before) finds the report
    held and the join behind, and tells it. Its read of the tally is eventually
    consistent: a stale one (the report not shown yet) costs a refused write, whose
    consistent read finds the report held all the same."""
    groups_of(2)
    env.load(wide("crash", 4))
    env.service.trigger("crash", run_id="r1")
    env.settle_changes()
    env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))
    env.settle_changes()
    ups = {env.remote.jobs[j].task_id: j for j in env.remote.running()}
    for task_id in ("u0", "u1", "u2"):
        env.service.on_job_event(env.remote.outcome(ups[task_id]))
    env.settle_changes()
    record = env.store.tasks.record_tally

    def dies(*args: Any, **options: Any) -> TaskInstance | None:
        raise RuntimeError("the invocation timed out")

    monkeypatch.setattr(env.store.tasks, "record_tally", dies)
    with pytest.raises(RuntimeError):
        env.service.on_job_event(env.remote.outcome(ups["u3"]))
    monkeypatch.setattr(env.store.tasks, "record_tally", record)
    assert env.store.tasks.get_tally(("crash", "r1", "join"), 1).members[1].state is T.SUCCESS
    assert env.tasks("crash")["join"].state is T.PENDING
    asked: list[bool] = []
    get_tally = env.store.tasks.get_tally

    def read_tally(
        join: tuple[str, str, str], group: int, *, consistent: bool = True
    ) -> TallyMembers:
        asked.append(consistent)
        if tally_read == "stale" and not consistent:
            return TallyMembers()  # as it was before the group's first report
        return get_tally(join, group)

    monkeypatch.setattr(env.store.tasks, "get_tally", read_tally)

    env.settle()

    assert env.states("crash")["join"] == (T.SUCCESS, 1)
    assert env.run("crash").state is RunState.SUCCESS
    assert asked == [False]  # the record's read (the store reads again on its own)


def test_a_stale_finish_is_refused_by_the_tally_after_a_clear(
    env: Harness, groups_of: Callable[[int], None]
) -> None:
    """A failed upstream of a wide join is cleared: its tombstone in the tally takes its
    group back to not done, a late delivery of the old failure changes nothing, and the
    join runs once the new try succeeds."""
    groups_of(2)
    env.load(wide("clear", 4))
    env.remote.fail = {("u1", 1)}
    env.service.trigger("clear", run_id="r1")
    env.settle()
    assert env.states("clear")["join"] == (T.UPSTREAM_FAILED, 0)
    failed = env.tasks("clear")["u1"]

    cleared = env.service.clear("clear", "r1", "u1", downstream=True)

    assert sorted(cleared) == ["join", "u1"]
    tally = env.store.tasks.get_tally(("clear", "r1", "join"), 0)
    assert tally.members[1].cleared
    assert (
        env.service.scheduler.repos.tasks.tell_tally(
            ("clear", "r1", "join"), 0, 1, UpstreamReport(T.FAILED, failed.version)
        )
        is None
    )
    env.settle()
    assert env.states("clear")["u1"] == (T.SUCCESS, 2)
    assert env.states("clear")["join"] == (T.SUCCESS, 1)
    assert env.run("clear").state is RunState.SUCCESS


# --- big runs: finishes counted in finish tallies (engine/tallies.py finish_group) ----------


@pytest.fixture
def finish_groups_of(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make every run of more than two tasks count in finish tallies of ``size`` tasks."""

    def make(size: int) -> None:
        monkeypatch.setattr(Scheduler, "finish_tally_at", 2)
        monkeypatch.setattr(Scheduler, "finish_group_size", size)

    return make


def test_a_big_run_writes_its_item_once_per_done_group_and_ends(
    env: Harness, finish_groups_of: Callable[[int], None]
) -> None:
    finish_groups_of(2)
    env.load(
        {
            "dag": "chain",
            "tasks": {
                "a": JOB,
                **{t: {"depends_on": [p], **JOB} for p, t in zip("abcd", "bcde", strict=True)},
            },
        }
    )
    env.service.trigger("chain", run_id="r1")
    env.delivered.clear()

    env.settle()

    run = env.run("chain")
    assert (run.state, run.finished_count, run.failed_leaves) == (RunState.SUCCESS, 5, 0)
    counted = [
        c.new
        for c in env.delivered
        if c.kind == "run" and c.old is not None and c.old.finished_count != c.new.finished_count
    ]
    assert [r.finished_count for r in counted] == [2, 4, 5]  # groups {a, b}, {c, d}, {e}


def test_a_big_run_fails_by_its_leaves_and_a_clear_reruns_it(
    env: Harness, finish_groups_of: Callable[[int], None]
) -> None:
    finish_groups_of(2)
    env.load(fan("fan"))
    env.remote.fail = {("c", 1)}
    env.service.trigger("fan", run_id="r1")
    env.settle()
    run = env.run("fan")
    assert (run.state, run.failed_leaves, run.finished_count) == (RunState.FAILED, 1, 5)

    env.service.clear("fan", "r1", "c", downstream=True)

    assert env.run("fan").state is RunState.RUNNING
    env.settle()
    run = env.run("fan")
    assert (run.state, run.finished_count, run.failed_leaves) == (RunState.SUCCESS, 5, 0)
    assert env.states("fan")["e"] == (T.SUCCESS, 1)


def test_a_big_runs_count_cut_short_between_tally_and_run_is_finished_by_the_record(
    env: Harness, finish_groups_of: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Soak seed 14178: the invocation counting b's finish added it to the tally (the
    group {a, b} whole) and died before the run item got the group's counts. The finish's
    stream record (told before) read the tally, took the finish as counted and wrote
    nothing: the run never ended. It counts again now, and the run ends."""
    finish_groups_of(2)
    chain = {t: {"depends_on": [p], **JOB} for p, t in zip("abc", "bcd", strict=True)}
    env.load({"dag": "cut", "tasks": {"a": JOB, **chain}})
    env.service.trigger("cut", run_id="r1")
    env.settle_changes()
    env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))  # a
    env.settle_changes()
    record = env.store.runs.record_finished
    died: list[str] = []

    def dies_after_the_tally(ti: TaskInstance, index: int, **kwargs: Any) -> DagRun | None:
        recorded = record(ti, index, **kwargs)
        if ti.task_id == "b" and not died:
            died.append(ti.task_id)
            assert recorded is not None
            env.store.runs.forget_finished(recorded, 99, kwargs["group"])  # never written
            raise RuntimeError("the invocation timed out")
        return recorded

    monkeypatch.setattr(env.store.runs, "record_finished", dies_after_the_tally)
    with pytest.raises(RuntimeError):
        env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))  # b
    assert env.run("cut").finished_count == 0

    env.settle()

    assert died == ["b"]
    run = env.run("cut")
    assert (run.state, run.finished_count) == (RunState.SUCCESS, 4)


def test_a_big_run_reopened_behind_another_run_starts_its_cleared_tasks(
    env: Harness, finish_groups_of: Callable[[int], None]
) -> None:
    """A clear takes its group's count off the run (one group of three here: none left
    counted), and the run waits for its max_active_runs slot. When it starts, its cleared
    tasks are evaluated: it had started before, though its count says none finished."""
    finish_groups_of(3)
    chain = {t: {"depends_on": [p], **JOB} for p, t in zip("ab", "bc", strict=True)}
    env.load({"dag": "again", "max_active_runs": 1, "tasks": {"a": JOB, **chain}})
    env.service.trigger("again", run_id="r1")
    env.settle()
    env.service.trigger("again", run_id="r2")
    env.settle_changes()  # r2 runs: its first job is still running

    env.service.clear("again", "r1", "b", downstream=True)

    reopened = env.run("again", "r1")
    assert (reopened.state, reopened.finished_count) == (RunState.QUEUED, 0)
    env.settle()
    assert env.run("again", "r2").state is RunState.SUCCESS
    run = env.run("again", "r1")
    assert (run.state, run.finished_count) == (RunState.SUCCESS, 3)
    assert env.states("again", "r1") == {
        "a": (T.SUCCESS, 1),
        "b": (T.SUCCESS, 2),
        "c": (T.SUCCESS, 2),
    }


def test_a_finish_hands_its_slot_to_the_task_it_starts_in_one_run_write(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain whose slots bind (more tasks than max_active_tasks): each finish frees its
    slot, gives it to the next task and is counted in one run write, not a reservation
    and then a count. The leaf's finish is counted alone. Every run write is listed."""
    env.load(
        {
            "dag": "chain",
            "max_active_tasks": 1,
            "tasks": {
                "a": JOB,
                "b": {"depends_on": ["a"], **JOB},
                "c": {"depends_on": ["b"], **JOB},
            },
        }
    )
    env.service.trigger("chain", run_id="r1")
    env.settle_changes()
    writes = _run_writes(env, monkeypatch, "reserve_task_slot", "record_finished")

    for expected in ("b", "c"):
        (job,) = env.remote.running()
        env.service.on_job_event(env.remote.outcome(job))
        assert [env.remote.jobs[j].task_id for j in env.remote.running()] == [expected]
        assert env.run("chain").active == {expected}
        env.settle_changes()  # the finish's record: counted and told, nothing written
    (job,) = env.remote.running()
    env.service.on_job_event(env.remote.outcome(job))
    env.settle_changes()

    assert writes == ["hand_over_task_slot", "hand_over_task_slot", "record_finished"]
    run = env.run("chain")
    assert (run.state, run.finished_count, run.active) == (RunState.SUCCESS, 3, frozenset())


def test_a_slot_taken_for_a_task_an_operator_marks_meanwhile_goes_on_to_the_next(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot; root's finish gives it to a (the hand-over), and before a's ``→ queued``
    write an operator marks a success: the write loses, a finishes at try 0 holding the
    slot taken for try 1. Counting a's finish frees that slot (nothing else would), so c
    starts and the run ends instead of waiting for ever."""
    env.load(
        {
            "dag": "marked",
            "max_active_tasks": 1,
            "tasks": {
                "root": JOB,
                "a": {"depends_on": ["root"], **JOB},
                "c": {"depends_on": ["a"], **JOB},
            },
        }
    )
    env.service.trigger("marked", run_id="r1")
    env.settle_changes()
    (job,) = env.remote.running()
    apply = env.store.tasks.apply
    marked: list[str] = []

    def an_operator_first(ti: TaskInstance, transition: Any, **kwargs: Any) -> TaskInstance:
        if ti.task_id == "a" and transition.dst is T.QUEUED and not marked:
            marked.append(ti.task_id)
            env.service.mark("marked", "r1", "a", T.SUCCESS)
        return apply(ti, transition, **kwargs)

    monkeypatch.setattr(env.store.tasks, "apply", an_operator_first)
    env.service.on_job_event(env.remote.outcome(job))
    assert marked == ["a"]
    assert env.tasks("marked")["a"].state is T.SUCCESS
    env.settle()

    run = env.run("marked")
    assert (run.state, run.active, run.throttled) == (RunState.SUCCESS, frozenset(), frozenset())
    assert env.states("marked")["c"] == (T.SUCCESS, 1)


def _fan_of_three(env: Harness) -> None:
    env.load(
        {
            "dag": "fan",
            "tasks": {
                "a": JOB,
                **{name: {"depends_on": ["a"], **JOB} for name in ("b", "c", "d")},
            },
        }
    )
    env.service.trigger("fan", run_id="r1")
    env.settle_changes()


def _listed(env: Harness, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every job started and every ``running`` write, in order."""
    happened: list[tuple[str, str]] = []
    start, record = env.remote.dispatch, env.service.dispatcher.reports.apply

    def started(request: DispatchRequest) -> DispatchResult:
        result = start(request)
        happened.append(("start", request.task_id))
        return result

    def recorded(ti: TaskInstance, report: JobReport, **kwargs: Any) -> Any:
        if report.status is JobStatus.RUNNING:
            happened.append(("running", ti.task_id))
        return record(ti, report, **kwargs)

    monkeypatch.setattr(env.remote, "dispatch", started)
    monkeypatch.setattr(env.service.dispatcher.reports, "apply", recorded)
    return happened


def test_a_finish_starts_every_job_it_queues_before_writing_them_running(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The k-th task a finish queues has its job started k + 2 round trips after the
    job's end (the read, the finish, k told): the jobs' ``running`` writes come after the
    last job started, not each between two tasks."""
    _fan_of_three(env)
    happened = _listed(env, monkeypatch)
    (job,) = env.remote.running()

    env.service.on_job_event(env.remote.outcome(job))

    starts = [("start", t) for t in ("b", "c", "d")]
    assert happened == [*starts, *(("running", t) for t in ("b", "c", "d"))]
    assert {t: s for t, (s, _) in env.states("fan").items()} == {
        "a": T.SUCCESS,
        "b": T.RUNNING,
        "c": T.RUNNING,
        "d": T.RUNNING,
    }
    env.settle()
    assert env.run("fan").state is RunState.SUCCESS
    assert len(env.remote.jobs) == 4  # no job started twice


def test_the_jobs_started_before_a_failing_dispatch_are_written_running(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dispatch that fails midway (throttled: the event is retried) still leaves the
    jobs started before it recorded; the retry starts no job twice."""
    from skydag.targets.base import DispatchError

    _fan_of_three(env)
    happened = _listed(env, monkeypatch)
    start = env.remote.dispatch

    def throttled_for_c(request: DispatchRequest) -> DispatchResult:
        if request.task_id == "c":
            raise DispatchError("Rate exceeded", retryable=True)
        return start(request)

    monkeypatch.setattr(env.remote, "dispatch", throttled_for_c)
    (job,) = env.remote.running()
    event = env.remote.outcome(job)

    with pytest.raises(DispatchError):
        env.service.on_job_event(event)

    assert happened == [("start", "b"), ("running", "b")]
    assert env.tasks("fan")["b"].job_id is not None
    monkeypatch.setattr(env.remote, "dispatch", start)
    env.later(timedelta(minutes=6))  # the claims of the failed invocation ran out
    env.service.on_job_event(event)  # the event again
    env.settle()
    assert env.run("fan").state is RunState.SUCCESS
    assert sorted(r.task_id for r in env.remote.jobs.values()) == ["a", "b", "c", "d"]


def serve_eventually_consistent(
    env: Harness, monkeypatch: pytest.MonkeyPatch, stale: Mapping[str, TaskInstance] | None
) -> list[bool]:
    """``get_with_run`` as DynamoDB may answer when the instances are read eventually
    consistently: these instances at an earlier version (None: none of the writes yet,
    each instance fresh). Returns how each read asked for the instances (True: consistently)."""
    asked: list[bool] = []
    real = env.store.tasks.get_with_run

    def read(
        dag_id: str,
        run_id: str,
        task_ids: Sequence[str],
        finish_group: FinishGroup | None = None,
        *,
        instances_consistent: bool = True,
    ) -> tuple[DagRun | None, dict[str, TaskInstance]]:
        asked.append(instances_consistent)
        run, found = real(dag_id, run_id, task_ids, finish_group)
        if instances_consistent:
            return run, found
        if stale is None:  # none seen yet: each reads as a task never written
            return run, {
                key: TaskInstance(dag_id, run_id, key, dag_version=ti.dag_version)
                for key, ti in found.items()
            }
        return run, {**found, **{key: ti for key, ti in stale.items() if key in found}}

    monkeypatch.setattr(env.store.tasks, "get_with_run", read)
    return asked


def crash_after_writing_a_finish(env: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler dies right after it writes the next job's end (once): its record
    tells it."""
    propagate = env.service.progress.propagate
    crashed: list[str] = []

    def crashing(image: TaskInstance, *args: Any, **options: Any) -> None:
        if options.get("written") and not crashed:
            crashed.append(image.task_id)
            raise RuntimeError("crashed after writing the finish")
        propagate(image, *args, **options)

    monkeypatch.setattr(env.service.progress, "propagate", crashing)


@pytest.mark.parametrize("served", ["earlier", "missing"])
def test_a_finishs_record_reads_eventually_consistently_and_bears_a_stale_read(
    env: Harness, monkeypatch: pytest.MonkeyPatch, served: str
) -> None:
    """The record of a job's end (told at once by the scheduler, so the record is the
    backstop) reads its tasks eventually consistently, at half the read units.
    Where that read is older than the record (the task still running), the record's own
    image is taken; where it misses the items written a moment ago (each then reads as a
    task never written), so is the image, and the child is told by its conditional
    write. Either way the finish a crashed scheduler never told is told by its record,
    with no second read."""
    env.load({"dag": "pair", "tasks": {"a": JOB, "b": {"depends_on": ["a"], **JOB}}})
    env.service.trigger("pair", run_id="r1")
    env.settle_changes()
    (job_a,) = env.remote.running()
    running_a = env.store.tasks.get("pair", "r1", "a")
    crash_after_writing_a_finish(env, monkeypatch)
    with pytest.raises(RuntimeError, match="crashed"):
        env.service.on_job_event(env.remote.outcome(job_a))
    assert env.store.tasks.get("pair", "r1", "a").state is T.SUCCESS
    assert not env.remote.running()  # b waits for the record
    asked = serve_eventually_consistent(
        env, monkeypatch, {"a": running_a} if served == "earlier" else None
    )

    env.settle_changes()

    assert [env.remote.jobs[j].task_id for j in env.remote.running()] == ["b"]
    assert asked == [False]  # no read again: a stale instance is bounded as it is
    env.settle()
    assert env.run("pair").state is RunState.SUCCESS


@pytest.mark.parametrize("served", ["older", "before its job id", "missing"])
def test_a_jobs_end_reads_its_try_eventually_consistently_and_bears_a_stale_read(
    env: Harness, monkeypatch: pytest.MonkeyPatch, served: str
) -> None:
    """A job's end reads its try (with its output, its run and the next task) eventually
    consistently. An older version that still names the try (its job id) is judged by
    the conditional write, refused, and decided again on the item as it is; one too old
    to name it (queued, before its job id was written; a task never written, as a read
    that misses an item written a moment ago returns it) is read again consistently
    before the event is turned away. Either way the job's end is applied and the next
    job starts."""
    env.load({"dag": "pair", "tasks": {"a": ECHOING, "b": {"depends_on": ["a"], **ECHOING}}})
    env.service.trigger("pair", run_id="r1")
    env.settle_changes()
    (job_a,) = env.remote.running()
    running_a = env.store.tasks.get("pair", "r1", "a")
    stale = {
        "older": replace(running_a, version=running_a.version - 1),
        "before its job id": replace(running_a, state=T.QUEUED, job_id=None),
        "missing": TaskInstance("pair", "r1", "a", dag_version=1),
    }[served]
    asked: list[bool] = []
    real = env.store.tasks.get_try_with_run

    def read(*args: Any, instances_consistent: bool = True, **options: Any) -> TryRead:
        asked.append(instances_consistent)
        found = real(*args, **options)
        return found if instances_consistent else replace(found, task=stale)

    monkeypatch.setattr(env.store.tasks, "get_try_with_run", read)
    env.service.on_job_event(env.remote.outcome(job_a))

    assert asked == [False]
    assert env.store.tasks.get("pair", "r1", "a").state is T.SUCCESS
    assert [env.remote.jobs[j].task_id for j in env.remote.running()] == ["b"]
    env.settle()
    assert env.run("pair").state is RunState.SUCCESS


def _whole_story(env: Harness, groups_of: Callable[[int], None]) -> dict[str, Any]:
    """A fan with a retry and a failure cleared, and a wide join told through tallies:
    the final states, jobs and events."""
    groups_of(2)
    env.load(fan("fan", {"max_active_tasks": 2}, retries=1, retry_delay="5m"))
    env.load(wide("wide", 5))
    env.remote.fail = {("c", 1), ("c", 2), ("u1", 1)}
    env.service.trigger("fan", run_id="r1")
    env.service.trigger("wide", run_id="r1")
    env.settle()
    env.later(timedelta(minutes=5))
    env.service.clear("fan", "r1", "c", downstream=True)
    env.service.clear("wide", "r1", "u1", downstream=True)
    env.settle()
    return {
        "runs": {dag: env.run(dag).state for dag in ("fan", "wide")},
        "states": {dag: env.states(dag) for dag in ("fan", "wide")},
        "jobs": sorted((job.task_id, job.try_number) for job in env.remote.jobs.values()),
        "events": sorted(map(str, env.events.events)),
    }


def test_the_task_records_the_stream_filters_out_change_nothing(
    groups_of: Callable[[int], None],
) -> None:
    """The records the task stream's filters leave out (a task created pending, a pending
    task written pending again: a report, a tally) are ones nothing reacts to: a story of
    retries, failures, clears and a wide join ends the same with them delivered or not,
    and delivering each of them again, late, writes nothing, starts nothing, tells
    nothing."""
    delivered, filtered = Harness(), Harness()
    filtered.filtered = True
    story = _whole_story(filtered, groups_of)
    assert story == _whole_story(delivered, groups_of)
    assert story["runs"] == {"fan": RunState.SUCCESS, "wide": RunState.SUCCESS}
    assert ("c", 3) in story["jobs"]
    assert ("u1", 2) in story["jobs"]
    # (The runs stream's filters leave out run writes too: not the point here.)
    left_out = [c for c in filtered.filtered_out if c.kind == "task"]
    assert {(c.old is None, c.new.state) for c in left_out} == {
        (True, T.PENDING),
        (False, T.PENDING),
    }
    jobs, events = len(filtered.remote.jobs), len(filtered.events.events)
    for change in left_out:
        filtered.service.on_task_changed(change.old, change.new)
        assert filtered.store.take_changes() == []
    assert (len(filtered.remote.jobs), len(filtered.events.events)) == (jobs, events)


def test_writes_marked_unheard_leave_out_records_that_would_do_nothing(
    groups_of: Callable[[int], None],
) -> None:
    """With no rule taking task events, the scheduler marks ``unheard`` the writes whose
    records would have nothing to do (engine/reactions.py): a try queued by the
    invocation that starts its job, that job's start, and a finish its job's event told
    at once. The story of retries, failures, clears and a wide join ends the same
    without their records, and delivering each of them anyway, late, writes nothing,
    starts nothing."""
    delivered, unheard = Harness(), Harness(listened=False)
    unheard.filtered = True
    story = _whole_story(unheard, groups_of)
    expected = _whole_story(delivered, groups_of)
    assert {k: story[k] for k in ("runs", "states", "jobs")} == {
        k: expected[k] for k in ("runs", "states", "jobs")
    }
    left_out = [c for c in unheard.filtered_out if c.kind == "task" and c.unheard]
    kinds = {(c.old is None or c.old.state, c.new.state) for c in left_out}
    assert (T.RUNNING, T.SUCCESS) in kinds  # finishes told at once
    assert (T.QUEUED, T.RUNNING) in kinds  # jobs started
    assert any(c.new.state is T.QUEUED and c.new.claim_owned for c in left_out)
    assert not [c for c in delivered.delivered if c.unheard]  # a rule listens there
    assert not any(c.new.state is T.UP_FOR_RETRY for c in left_out)  # its slot, its timer
    jobs = len(unheard.remote.jobs)
    for change in left_out:
        unheard.service.on_task_changed(change.old, change.new)
        assert unheard.store.take_changes() == []
    assert len(unheard.remote.jobs) == jobs


def test_a_finish_told_in_chunks_keeps_its_record_which_tells_beside_the_scheduler() -> None:
    """A wider fan-out than one chunk (``REPORT_CHUNK``, 2 here) is told a chunk at a time:
    its finish's record is not marked ``unheard``, so it tells the chunks beside the
    invocation that told the first (the latency of a 1 -> 200 fan-out halves); a finish
    told whole is."""
    env = Harness(listened=False)
    env.filtered = True
    env.service.progress.report_chunk = 2
    env.load(fan("fan"))
    env.service.trigger("fan", run_id="r1")
    env.settle()
    assert env.run("fan").state is RunState.SUCCESS
    finishes = [
        c
        for c in [*env.delivered, *env.filtered_out]
        if c.kind == "task" and c.new.state is T.SUCCESS and c.old.state is not T.SUCCESS
    ]
    assert {c.new.task_id: c.unheard for c in finishes} == {
        "a": False,  # three downstream tasks: two chunks
        **dict.fromkeys("bcde", True),
    }


def test_a_finish_whose_telling_died_is_told_when_its_job_event_comes_again() -> None:
    """A job's end told at once leaves no stream record (``unheard``): when the invocation
    dies after the finish's write, Lambda's retry of the job's event finds the finish
    recorded and tells it as its record would have."""
    env = Harness(listened=False)
    env.filtered = True
    env.load(fan("fan"))
    env.service.trigger("fan", run_id="r1")
    env.settle_changes()
    (a_job,) = env.remote.running()
    event = env.remote.outcome(a_job)
    progress = env.service.progress
    tell = progress.tell_downstream

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("the invocation timed out")

    progress.tell_downstream = dies  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        env.service.on_job_event(event)
    progress.tell_downstream = tell  # type: ignore[method-assign]
    assert env.states("fan")["a"] == (T.SUCCESS, 1)
    env.settle_changes()
    assert env.states("fan")["b"][0] is T.PENDING  # no record told it
    assert [c.new.state for c in env.filtered_out if c.unheard] == [T.RUNNING, T.SUCCESS]
    assert env.service.scheduler.take_unheard_outcomes() == {"success": 1}  # counted once
    env.service.on_job_event(event)  # Lambda's retry
    assert env.states("fan")["b"][0] is T.RUNNING
    assert env.service.scheduler.take_unheard_outcomes() == {}
    env.settle()
    assert env.run("fan").state is RunState.SUCCESS


def test_a_reopened_run_is_armed_again_by_its_first_covering_finish(env: Harness) -> None:
    """A run's end disarms it; a clear reopens it. The first finish that covers tries
    after that (here ``a``'s, not counted: not a leaf, no slot to release) must arm it,
    whatever stamp the run kept from before its end: else its covered tries have no due
    entry at all, and a lost event of theirs is never found (found by seed 20610)."""
    env.load(fan("fan"))
    env.service.trigger("fan", run_id="r1")
    env.settle()
    assert env.run("fan").state is RunState.SUCCESS
    far = env.clock.now() + timedelta(days=1)
    assert env.store.runs.due(far) == []  # disarmed by its end
    env.service.clear("fan", "r1", "a", downstream=True)
    env.settle_changes()
    (a_job,) = env.remote.running()
    env.service.on_job_event(env.remote.outcome(a_job))
    live = [ti for ti in env.tasks("fan").values() if ti.state in (T.QUEUED, T.RUNNING)]
    assert {ti.task_id for ti in live if ti.covered} == {"b", "c", "d"}
    assert [run.run_id for run in env.store.runs.due(far)] == ["r1"]


def test_who_takes_task_events_is_asked_before_a_job_is_started_not_after() -> None:
    """Whether a job's ``running`` write may be marked ``unheard`` depends on who takes
    task events, which the event sink may learn by listing the bus's rules (a call):
    learnt before the target's call and judged on after it, asking nothing more, so that
    nothing but that write follows the call (a failure there dispatches again, and
    Lambda's asynchronous invoke has no idempotency token)."""
    env = Harness(listened=False)
    calls: list[str] = []
    listens, listeners_now, dispatch = (
        env.events.listens,
        env.events.listeners_now,
        env.remote.dispatch,
    )

    def asked(detail_type: str, detail: Mapping[str, Any]) -> bool:
        calls.append(f"listens {detail.get('state')}")
        return listens(detail_type, detail)

    def learnt() -> Any:
        calls.append("listeners_now")
        return listeners_now()

    def started(request: DispatchRequest) -> DispatchResult:
        calls.append("dispatch")
        return dispatch(request)

    env.events.listens = asked  # type: ignore[method-assign]
    env.events.listeners_now = learnt  # type: ignore[method-assign]
    env.remote.dispatch = started  # type: ignore[method-assign]
    env.load(fan("fan"))
    env.service.trigger("fan", run_id="r1")
    env.settle()
    assert env.run("fan").state is RunState.SUCCESS
    starts = [i for i, call in enumerate(calls) if call == "dispatch"]
    assert len(starts) == 5
    assert all(calls[i - 1] == "listeners_now" for i in starts)
    # Each job's ``running`` write was judged on what was learnt before its call.
    assert "listens running" not in calls
    assert all(env.tasks("fan")[t].job_id for t in "abcde")


def test_a_finish_told_at_once_judges_its_count_on_the_run_read_after_its_write() -> None:
    """A job's end reads its run with the try, before the finish's write; with no record
    of that write to count it from the run as it is after (``unheard``), the scheduler
    reads the run again when the earlier read says not to count it. Here the leaf ``c``
    ends between ``b``'s read and ``b``'s write: its count finds ``b`` unfinished and
    makes the run count every finish, so ``b``'s (not a leaf's) is the one that ends it."""
    env = Harness(listened=False)
    env.filtered = True
    batch = {"batch": {"job_queue": "q", "job_definition": "d"}}  # its events name the task
    env.load(
        {
            "dag": "late",
            "tasks": {
                "a": batch,
                "b": batch,
                "c": {"depends_on": ["a", "b"], "trigger_rule": "one_success", **batch},
            },
        }
    )
    env.service.trigger("late", run_id="r1")
    env.settle_changes()
    jobs = {env.remote.jobs[job].task_id: job for job in env.remote.running()}
    env.service.on_job_event(env.remote.outcome(jobs["a"]))
    env.settle_changes()
    (c_job,) = [job for job in env.remote.running() if env.remote.jobs[job].task_id == "c"]
    tasks = env.store.tasks
    read = tasks.get_try_with_run

    def c_ends_meanwhile(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        if args[2] == "b":
            env.service.on_job_event(env.remote.outcome(c_job))
        return found

    tasks.get_try_with_run = c_ends_meanwhile  # type: ignore[method-assign]
    env.service.on_job_event(env.remote.outcome(jobs["b"]))
    tasks.get_try_with_run = read  # type: ignore[method-assign]
    assert env.run("late").counts_all
    env.settle()
    assert env.run("late").state is RunState.SUCCESS
    finishes = [c for c in env.delivered if c.kind == "task" and c.new.state is T.SUCCESS]
    assert [c for c in finishes if c.old is None or c.old.state is not T.SUCCESS] == []


def test_a_trigger_writes_no_task_instance_and_each_task_is_inserted_by_its_first_write(
    env: Harness,
) -> None:
    """A run's task instances are not written when it is made (a write a task spared):
    each reads as its fresh instance until its first write, an insert (no old image)."""
    env.load(fan("fan"))
    env.service.trigger("fan", run_id="r1")
    changes = env.store.take_changes()
    assert [c.kind for c in changes] == ["run", "run"]  # created, started: no task written
    assert env.states("fan") == {t: (T.PENDING, 0) for t in "abcde"}
    for change in changes:
        env.service.on_run_changed(change.old, change.new)
    env.settle()
    assert env.run("fan").state is RunState.SUCCESS
    inserts = [c.new for c in env.delivered if c.kind == "task" and c.old is None]
    assert sorted(ti.task_id for ti in inserts) == list("abcde")
    assert all(ti.state is not T.PENDING or ti.upstream for ti in inserts)


# --- slots a DAG's shape never needs (engine/slots.py) -------------------------------------


def _chain_of_four(env: Harness) -> None:
    """a → b → c → d under two slots: one path, so its own rules never run two at once."""
    tasks = {t: {"depends_on": [p], **JOB} for p, t in zip("abc", "bcd", strict=True)}
    env.load({"dag": "line", "max_active_tasks": 2, "tasks": {"a": JOB, **tasks}})
    env.service.trigger("line", run_id="r1")
    env.settle_changes()


def _active(env: Harness, dag: str) -> set[str]:
    return {t for t, ti in env.tasks(dag).items() if ti.state in (T.QUEUED, T.RUNNING)}


def _slot_writes(env: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return _run_writes(env, monkeypatch, "reserve_task_slot", "release_task_slot")


def _run_writes(env: Harness, monkeypatch: pytest.MonkeyPatch, *names: str) -> list[str]:
    """Every call from now on of the slot hand-over and of these run writes, in order."""
    runs = env.store.runs
    writes: list[str] = []
    for name in ("hand_over_task_slot", *names):
        original = getattr(runs, name)

        def listed(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            writes.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(runs, name, listed)
    return writes


def test_a_chain_longer_than_its_slots_takes_none(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More tasks than max_active_tasks, but one path: its trigger rules never run two of
    them at once, so no try takes a slot (no run write to take, hand over or free one)."""
    writes = _slot_writes(env, monkeypatch)
    _chain_of_four(env)
    while env.remote.running():
        assert len(_active(env, "line")) == 1
        assert env.run("line").active == frozenset()
        env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))
        env.settle_changes()

    assert writes == []
    run = env.run("line")
    assert (run.state, run.active, run.throttled) == (RunState.SUCCESS, frozenset(), frozenset())


def test_tasks_an_operator_marks_or_clears_take_slots_and_the_limit_holds(
    env: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots, a chain: its own tries take none (one runs at a time), one slot is left
    for the others. Marking c while b runs starts d beside b: d is slotted (told by a
    marked finish) and takes that slot. Clearing a then makes a second run beside them:
    it waits, throttled, for d's slot instead of making three at once; the run ends."""
    writes = _slot_writes(env, monkeypatch)
    _chain_of_four(env)
    env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))  # a
    env.settle_changes()
    assert _active(env, "line") == {"b"}

    env.service.mark("line", "r1", "c", T.SUCCESS)
    env.settle_changes()
    tasks = env.tasks("line")
    assert (tasks["c"].slotted, tasks["d"].slotted, tasks["b"].slotted) == (True, True, False)
    assert _active(env, "line") == {"b", "d"}
    assert env.run("line").active == {"d"}

    env.service.clear("line", "r1", "a")
    env.settle_changes()
    assert _active(env, "line") == {"b", "d"}
    assert env.tasks("line")["a"].state is T.PENDING
    assert env.run("line").throttled == {"a"}

    d_job = next(j for j in env.remote.running() if env.remote.jobs[j].task_id == "d")
    env.service.on_job_event(env.remote.outcome(d_job))
    env.settle_changes()
    assert _active(env, "line") == {"a", "b"}
    assert env.run("line").active == {"a"}

    env.settle()
    run = env.run("line")
    assert (run.state, run.active, run.throttled) == (RunState.SUCCESS, frozenset(), frozenset())
    assert "reserve_task_slot" in writes
    # b ran once, as its own rules started it; a ran again; c never ran.
    assert env.states("line") == {
        "a": (T.SUCCESS, 2),
        "b": (T.SUCCESS, 1),
        "c": (T.SUCCESS, 0),
        "d": (T.SUCCESS, 1),
    }


def test_a_wide_join_told_by_a_marked_task_is_slotted_before_its_tally(
    env: Harness, groups_of: Callable[[int], None]
) -> None:
    """start → u0, u1, u2 → join → tail, four slots: three paths, one slot over. The join
    is told through tally items (groups of two): a report from a marked upstream makes
    it slotted first, so its try takes the slot over, and hands it to ``tail``."""
    groups_of(2)
    dag = wide("wj", 3)
    dag["max_active_tasks"] = 4
    dag["tasks"]["tail"] = {"depends_on": ["join"], **JOB}
    env.load(dag)
    env.service.trigger("wj", run_id="r1")
    env.settle_changes()

    env.service.mark("wj", "r1", "u1", T.SUCCESS)
    env.settle_changes()
    assert env.tasks("wj")["join"].slotted
    assert env.run("wj").active == frozenset()

    env.service.on_job_event(env.remote.outcome(env.remote.running()[0]))  # start
    env.settle_changes()
    assert _active(env, "wj") == {"u0", "u2"}
    assert env.run("wj").active == frozenset()
    for job in env.remote.running():
        env.service.on_job_event(env.remote.outcome(job))
    env.settle_changes()
    assert _active(env, "wj") == {"join"}
    assert env.run("wj").active == {"join"}
    env.settle()
    run = env.run("wj")
    assert (run.state, run.active) == (RunState.SUCCESS, frozenset())
    assert env.tasks("wj")["tail"].slotted


def test_a_finish_that_starts_the_next_task_is_not_judged_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run read again after an unheard finish (above) is for the run's last finish:
    one that starts a downstream task is not, as that task's finish comes after it and
    is judged then. In a chain only the leaf's finish reads the run after its write (it
    is counted: the run ends)."""
    env = Harness(listened=False)
    env.filtered = True
    batch = {"batch": {"job_queue": "q", "job_definition": "d"}}
    tasks = {t: {"depends_on": [p], **batch} for p, t in zip("ab", "bc", strict=True)}
    env.load({"dag": "line", "tasks": {"a": batch, **tasks}})
    env.service.trigger("line", run_id="r1")
    env.settle_changes()
    reads = count_run_reads(env, monkeypatch)
    for expected in ("b", "c"):
        (job,) = env.remote.running()
        reads.clear()
        env.service.on_job_event(env.remote.outcome(job))
        task = env.remote.jobs[job].task_id
        assert [env.remote.jobs[j].task_id for j in env.remote.running()] == [expected]
        assert reads == [f"{task} try 1: r1 with {expected}"]
        env.settle_changes()
    (job,) = env.remote.running()
    reads.clear()
    env.service.on_job_event(env.remote.outcome(job))
    assert reads == ["c try 1: r1 with "]  # the leaf: counted from the read with its try
    assert env.run("line").state is RunState.SUCCESS
