"""Tries covered by their run's due entry (``TaskInstance.covered``), through the real
service on the DynamoDB store.

A finish that queues its downstream tasks writes no due index entry for them: the run's
entry stands for them, armed (once) by the finish's count when it is counted, else by a
write of its own made before they are queued, at most once per ``ARM_REFRESH``; the
reconciler, when that entry's time comes, gives each try still queued or running an
entry of its own and disarms the run. These tests show a covered try is never lost: not
to a crash while it is dispatched, a lost event, or a count landing while the reconciler
looks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import Crash, FakeService, SettableClock, embedded_with, settle

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import JobStatus, TaskInstance
from skydag.engine.rules import (
    ARM_REFRESH,
    DISPATCH_CHECK_AFTER,
    RUN_CHECK_AFTER,
    RUN_QUIET,
    RUNNING_CHECK_EVERY,
)
from skydag.engine.states import RunState, TaskState
from skydag.ports.store import Arming, indexed_due
from skydag.service.core import Scheduler
from skydag.settings import Settings
from skydag.spec.models import DagSpec

T = TaskState
BATCH = {"batch": {"job_queue": "q", "job_definition": "step:1"}}
DAG: dict[str, Any] = {
    "dag": "chain",
    "tasks": {
        "a": BATCH,
        "b": {"depends_on": ["a"], **BATCH},
        "c": {"depends_on": ["b"], **BATCH},
    },
}
FAR = timedelta(days=1)


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def jobs() -> FakeService:
    return FakeService()


@pytest.fixture
def env(
    aws: Settings, tmp_path: Path, clock: SettableClock, jobs: FakeService
) -> Iterator[EmbeddedSkydag]:
    with embedded_with(aws, tmp_path, clock, jobs, [DAG]) as embedded:
        yield embedded


def task(env: EmbeddedSkydag, run_id: str, task_id: str) -> TaskInstance:
    return env.repos.tasks.get("chain", run_id, task_id)


def own_entries(env: EmbeddedSkydag, run_id: str) -> list[str]:
    """The run's tasks with an entry of their own in the due index, whenever it is due
    (``due`` returns only what a pass at its time reads)."""
    tasks = env.repos.tasks.list_for_run("chain", run_id)
    return [ti.task_id for ti in tasks if indexed_due(ti) is not None]


def uncovered_at_first_look(env: EmbeddedSkydag, clock: SettableClock) -> int:
    """The run's look when its time comes leaves its running tries covered (before their
    first look, their claims' expiry); the look then uncovers them: how many."""
    clock.advance(RUN_CHECK_AFTER)
    assert env.service.reconcile().uncovered == 0
    clock.advance(DISPATCH_CHECK_AFTER - RUN_CHECK_AFTER)
    return env.service.reconcile().uncovered


def start(env: EmbeddedSkydag) -> str:
    run_id = env.service.trigger("chain").run.run_id
    settle(env)
    return run_id


def test_a_try_its_upstreams_finish_queues_is_covered_until_the_reconciler_looks(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    run_id = start(env)
    a = task(env, run_id, "a")
    assert (a.state, a.covered) == (T.RUNNING, False)  # queued by the run's start
    assert own_entries(env, run_id) == ["a"]

    env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED))
    settle(env)
    b = task(env, run_id, "b")
    assert (b.state, b.covered, b.job_id) == (T.RUNNING, True, "job-2")
    # Neither has an entry of its own now: the run's, armed by a's count, stands for b.
    assert own_entries(env, run_id) == []
    assert [r.run_id for r in env.repos.runs.due(clock.now() + RUN_CHECK_AFTER)] == [run_id]
    assert env.service.reconcile().uncovered == 0  # not its time yet

    clock.advance(RUN_CHECK_AFTER)
    disarms: list[str] = []
    disarm = env.repos.runs.disarm

    def counting_disarm(run: Any, quiet_since: Any) -> bool:
        disarms.append(run.run_id)
        return disarm(run, quiet_since=quiet_since)

    env.repos.runs.disarm = counting_disarm  # type: ignore[method-assign]
    # b runs, before its first look (its claim's expiry): its entry would be read no
    # sooner, so the run's stands for it until then, and the run stays armed.
    assert env.service.reconcile().uncovered == 0
    assert task(env, run_id, "b") == b
    clock.advance(DISPATCH_CHECK_AFTER - RUN_CHECK_AFTER)
    assert env.service.reconcile().uncovered == 1
    uncovered = task(env, run_id, "b")
    assert (uncovered.covered, uncovered.version) == (False, b.version + 1)
    # Still armed: a's count is younger than an invocation may live (one covering a try
    # after the look could still be under way); disarmed once it is not. The look saw
    # the recent count: it tried no write that would be refused (and billed).
    assert [r.run_id for r in env.repos.runs.due(clock.now())] == [run_id]
    assert disarms == []
    clock.advance(RUN_QUIET)
    assert env.service.reconcile().uncovered == 0
    assert env.repos.runs.due(clock.now() + FAR) == []
    assert disarms == [run_id]
    assert b.check_at is not None
    assert env.repos.tasks.due(b.check_at) == [uncovered]

    # b's end event is lost: its own entry has the reconciler ask the service.
    jobs.outcome["job-2"] = JobStatus.SUCCEEDED
    clock.advance(RUNNING_CHECK_EVERY)
    assert env.service.reconcile().repaired == 1
    settle(env)
    assert task(env, run_id, "c").state is T.RUNNING
    assert list(jobs.jobs) == ["job-1", "job-2", "job-3"]  # one job a try


def test_a_crash_dispatching_a_covered_try_leaves_it_to_the_runs_entry(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """The invocation telling a's finish dies dispatching b. a is no leaf: its finish is
    not counted (finish_counts), so the invocation armed the run before queueing b, and
    the run's entry stands for b. The finish's stream record tells again, counts
    nothing and arms nothing more; at b's first look its dispatch is re-attached."""
    run_id = start(env)
    jobs.crash = "before_call"
    with pytest.raises(Crash):
        env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED))
    b = task(env, run_id, "b")
    assert (b.state, b.covered, b.job_id) == (T.QUEUED, True, None)
    assert [r.run_id for r in env.repos.runs.due(clock.now() + FAR)] == [run_id]

    settle(env)  # the stream records: a's finish told again (b's claim still runs)
    run = env.repos.runs.get("chain", run_id)
    assert (run.finished_count, run.counted_at) == (0, clock.now())
    assert task(env, run_id, "b").job_id is None
    clock.advance(RUN_CHECK_AFTER)
    assert env.service.reconcile().uncovered == 1
    clock.advance(DISPATCH_CHECK_AFTER - RUN_CHECK_AFTER)  # b's claim runs out
    assert env.service.reconcile().redispatched == 1
    settle(env)
    assert (task(env, run_id, "b").state, task(env, run_id, "b").job_id) == (T.RUNNING, "job-2")
    assert list(jobs.jobs) == ["job-1", "job-2"]


def test_a_finish_counted_while_the_reconciler_looks_keeps_the_run_armed(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler lists the run's tasks; then b's finish queues c, covered, and counts
    b on the run (which is armed: the entry stays). Disarming now would leave c with no
    entry: the run's version moved (and its last count is recent), so the disarm is
    refused and the next look finds c."""
    run_id = start(env)
    env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED))
    settle(env)
    clock.advance(RUN_CHECK_AFTER)
    tasks = env.repos.tasks
    listed = tasks.list_for_run

    def list_then_finish_b(dag_id: str, list_run: str) -> list[TaskInstance]:
        seen = listed(dag_id, list_run)
        monkeypatch.setattr(tasks, "list_for_run", listed)
        env.service.on_job_event(jobs.event("job-2", JobStatus.SUCCEEDED))
        return seen

    monkeypatch.setattr(tasks, "list_for_run", list_then_finish_b)
    assert env.service.reconcile().uncovered == 0  # b, as listed: it finished since
    c = task(env, run_id, "c")
    assert (c.state, c.covered) == (T.RUNNING, True)
    assert [r.run_id for r in env.repos.runs.due(clock.now())] == [run_id]  # still armed

    clock.advance(DISPATCH_CHECK_AFTER)  # c's first look
    assert env.service.reconcile().uncovered == 1
    assert task(env, run_id, "c").covered is False
    clock.advance(RUN_QUIET)
    env.service.reconcile()
    assert env.repos.runs.due(clock.now() + FAR) == []
    settle(env)
    assert env.repos.runs.get("chain", run_id).state is RunState.RUNNING
    assert list(jobs.jobs) == ["job-1", "job-2", "job-3"]


def test_a_finish_that_hands_its_slot_over_covers_the_try_it_queues(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """With max_active_tasks binding, a's slot goes to b in the write that counts a's
    finish (before b's → queued write): that write arms the run, and b is covered."""
    env.repos.dags.save_version(
        DagSpec.model_validate({**DAG, "max_active_tasks": 1}),
        source="test",
        sha256=None,
        now=clock.now(),
    )
    run_id = start(env)
    env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED))
    settle(env)
    b = task(env, run_id, "b")
    assert (b.state, b.covered) == (T.RUNNING, True)
    run = env.repos.runs.get("chain", run_id)
    assert (run.finished_count, run.active) == (1, frozenset({"b"}))
    assert own_entries(env, run_id) == []
    assert [r.run_id for r in env.repos.runs.due(clock.now() + RUN_CHECK_AFTER)] == [run_id]
    assert uncovered_at_first_look(env, clock) == 1


def test_a_finish_not_counted_arms_the_run_only_before_it_queues_a_covered_try(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """A join's first upstream to end queues nothing: no leaf's, its finish is not counted
    (finish_counts), and it writes nothing to the run at all. The second queues the join,
    covered: the run is stamped and armed just before that write."""
    join = {
        "dag": "chain",
        "tasks": {"a": BATCH, "b": BATCH, "c": {"depends_on": ["a", "b"], **BATCH}},
    }
    env.repos.dags.save_version(
        DagSpec.model_validate(join), source="test", sha256=None, now=clock.now()
    )
    run_id = start(env)
    started = env.repos.runs.get("chain", run_id)
    by_task = {request.task_id: job_id for job_id, request in jobs.jobs.items()}

    env.service.on_job_event(jobs.event(by_task["a"], JobStatus.SUCCEEDED))
    settle(env)
    assert env.repos.runs.get("chain", run_id) == started
    assert task(env, run_id, "c").state is T.PENDING

    clock.advance(timedelta(seconds=5))
    env.service.on_job_event(jobs.event(by_task["b"], JobStatus.SUCCEEDED))
    settle(env)
    c = task(env, run_id, "c")
    run = env.repos.runs.get("chain", run_id)
    assert (c.state, c.covered) == (T.RUNNING, True)
    assert (run.finished_count, run.counted_at) == (0, clock.now())
    assert [r.run_id for r in env.repos.runs.due(clock.now() + RUN_CHECK_AFTER)] == [run_id]


def test_each_chunk_of_a_wide_fan_out_covers_the_tries_it_queues(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """Told a chunk per invocation, a fan-out's count (were it counted: a is no leaf)
    comes with the last chunk: each earlier chunk arms the run itself before it queues
    its tries, so they are covered too."""
    fan = {
        "dag": "chain",
        "tasks": {"a": BATCH, **{t: {"depends_on": ["a"], **BATCH} for t in "bcd"}},
    }
    env.repos.dags.save_version(
        DagSpec.model_validate(fan), source="test", sha256=None, now=clock.now()
    )
    env.service.progress.report_chunk = 1
    run_id = start(env)
    env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED))
    armed = env.repos.runs.due(clock.now() + RUN_CHECK_AFTER)
    assert [r.run_id for r in armed] == [run_id]
    assert armed[0].finished_count == 0  # armed by the first chunk, not yet counted
    settle(env)  # the cursor's stream records tell the next chunks
    told = [task(env, run_id, t) for t in "bcd"]
    assert [(t.state, t.covered) for t in told] == [(T.RUNNING, True)] * 3
    assert env.repos.runs.get("chain", run_id).finished_count == 0  # a is no leaf
    assert own_entries(env, run_id) == []
    assert uncovered_at_first_look(env, clock) == 3
    assert list(jobs.jobs) == ["job-1", "job-2", "job-3", "job-4"]


def test_the_record_of_a_queued_write_whose_owner_holds_the_claim_reads_nothing(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invocation that told a's finish queued b and started its job under its own
    claim: b's → queued record stands down without reading b; once that claim has run
    out, a record (a late redelivery) reads b and finds its job."""
    run_id = start(env)
    queued: list[TaskInstance] = []
    env.task_listeners.append(
        lambda old, new: queued.append(new) if new.state is T.QUEUED else None
    )
    env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED))
    settle(env)
    [image] = [ti for ti in queued if ti.task_id == "b"]
    assert image.claim_owned
    reads: list[tuple[str, ...]] = []
    find = env.repos.tasks.find

    def counted_find(*key: str) -> TaskInstance | None:
        reads.append(key)
        return find(*key)

    monkeypatch.setattr(env.repos.tasks, "find", counted_find)
    env.service.dispatch(image)
    assert reads == []
    assert image.check_at is not None
    clock.advance(image.check_at - clock.now())
    env.service.dispatch(image)
    assert reads == [("chain", run_id, "b")]
    assert list(jobs.jobs) == ["job-1", "job-2"]


def test_a_big_run_is_armed_by_a_write_of_its_own_at_most_once_a_minute(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that counts its finishes in finish tallies has no count on its item to arm
    it: the first finish arms it by a write of its own, a finish within ARM_REFRESH of
    that stamp covers its tries without one."""
    monkeypatch.setattr(Scheduler, "finish_tally_at", 2)  # the chain of 3 counts in tallies
    run_id = start(env)
    writes = Counter[str]()
    arm = env.repos.runs.arm

    def counted_arm(ti: TaskInstance, arming: Arming) -> None:
        writes[ti.task_id] += 1
        arm(ti, arming)

    monkeypatch.setattr(env.repos.runs, "arm", counted_arm)
    env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED))
    settle(env)
    assert task(env, run_id, "b").covered
    assert writes == {"a": 1}
    armed = env.repos.runs.due(clock.now() + RUN_CHECK_AFTER)
    assert [r.run_id for r in armed] == [run_id]
    assert armed[0].counted_at == clock.now()

    clock.advance(ARM_REFRESH / 2)
    env.service.on_job_event(jobs.event("job-2", JobStatus.SUCCEEDED))
    settle(env)
    assert task(env, run_id, "c").covered
    assert writes == {"a": 1}  # stamped recently enough: no write
    assert own_entries(env, run_id) == []
    assert uncovered_at_first_look(env, clock) == 1


def test_a_pass_out_of_time_leaves_the_rest_of_an_armed_run_to_the_next(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    run_id = start(env)
    env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED))
    settle(env)
    clock.advance(RUN_CHECK_AFTER + RUN_QUIET)
    spent = time.monotonic() - 1
    assert env.service.reconcile(deadline=spent).uncovered == 0
    assert task(env, run_id, "b").covered
    assert [r.run_id for r in env.repos.runs.due(clock.now())] == [run_id]  # still armed
    assert env.service.reconcile(deadline=time.monotonic() + 60).uncovered == 1
    assert env.repos.runs.due(clock.now() + FAR) == []


def test_a_runs_end_disarms_it_so_the_reconciler_never_looks_at_it(
    env: EmbeddedSkydag, jobs: FakeService
) -> None:
    """Its tasks' counts armed the run while they ran; once every task finished, the end
    write takes the run's due entry out: no pass reads it, lists its tasks or writes a
    disarm (a look, a Query and a write per run before)."""
    run_id = start(env)
    for job in ("job-1", "job-2"):
        env.service.on_job_event(jobs.event(job, JobStatus.SUCCEEDED))
        settle(env)
    assert [r.run_id for r in env.repos.runs.due(env.clock.now() + FAR)] == [run_id]
    env.service.on_job_event(jobs.event("job-3", JobStatus.SUCCEEDED))
    settle(env)

    assert env.repos.runs.get("chain", run_id).state is RunState.SUCCESS
    assert env.repos.runs.due(env.clock.now() + FAR) == []
