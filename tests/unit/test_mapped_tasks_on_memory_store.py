"""for_each on the in-memory store: a mapped task expands into instances, runs them at
most max_parallel at once, counts each finish once, and ends as one task for its
downstream and its run; retries, clears and marks per instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from test_service_on_memory_store import Harness, ScriptedService

from skydag.engine.models import JobStatus, TaskInstance
from skydag.engine.states import RunState, TaskState
from skydag.service.core import CommandRefused
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent

T = TaskState


@dataclass
class MappedScript(ScriptedService):
    """Jobs return their Lambda payload as output; ``fail_items`` fail on those tries."""

    fail_items: set[tuple[int, int]] = field(default_factory=set)  # (map index, try)
    peak: int = 0

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        result = super().dispatch(request)
        self.peak = max(
            self.peak, len([j for j in self.running() if self.jobs[j].map_index is not None])
        )
        return result

    def outcome(self, job_id: str) -> JobEvent:
        request = self.jobs[job_id]
        failed = (request.map_index, request.try_number) in self.fail_items
        self.ended.add(job_id)
        output = request.target.get("payload")
        status = JobStatus.FAILED if failed else JobStatus.SUCCEEDED
        return self.event(job_id, status, output=output)


class MappedHarness(Harness):
    def __init__(self) -> None:
        super().__init__()
        self.remote = MappedScript()
        self.service.targets = self.remote

    def settle_one_job_at_a_time(self) -> None:
        """Like settle, but ends one job per round: the running set stays observable."""
        for _ in range(100_000):
            if self.deliver_changes():
                continue
            running = self.remote.running()
            if not running:
                return
            self.service.on_job_event(self.remote.outcome(running[0]))
        raise AssertionError("the scheduler never settled")

    def tasks(self, dag: str, run_id: str = "r1") -> dict[str, TaskInstance]:
        return {ti.instance_id: ti for ti in self.store.tasks.list_for_run(dag, run_id)}

    def instances(self, task: str, run_id: str = "r1") -> list[TaskInstance]:
        return self.store.tasks.list_instances("mapped", run_id, task)


def lam(payload: Any) -> dict[str, Any]:
    return {"lambda": {"function_name": "f", "payload": payload}}


def mapped_dag(items: Any, **score: Any) -> dict[str, Any]:
    return {
        "dag": "mapped",
        "max_active_tasks": 8,
        "params": {"shards": items},
        "tasks": {
            "list": lam({"shards": "{{ params.shards }}"}),
            "score": {
                "depends_on": ["list"],
                "for_each": "{{ params.shards }}",
                **lam({"item": "{{ item }}", "index": "{{ task.map_index }}"}),
                **score,
            },
            "join": {
                "depends_on": ["score"],
                **lam(
                    {
                        "n": "{{ outputs.score | length }}",
                        "items": "{{ outputs.score | map(attribute='item') | join(',') }}",
                    }
                ),
            },
        },
    }


@pytest.fixture
def env() -> MappedHarness:
    return MappedHarness()


def test_a_mapped_task_runs_each_item_once_at_most_max_parallel_at_once(
    env: MappedHarness,
) -> None:
    shards = [f"s-{i:02d}" for i in range(20)]
    env.load(mapped_dag(shards, max_parallel=3))
    env.service.trigger("mapped", run_id="r1")

    env.settle_one_job_at_a_time()

    run = env.run("mapped")
    assert run.state is RunState.SUCCESS
    assert 2 in run.finished_idx  # the leaf's count (the others' as their slots' releases)
    score = env.tasks("mapped")["score"]
    assert (score.state, score.map_count, score.map_done, score.map_failed) == (
        T.SUCCESS,
        20,
        20,
        0,
    )
    instances = env.instances("score")
    assert [ti.map_index for ti in instances] == list(range(20))
    assert [ti.item for ti in instances] == shards
    assert {(ti.state, ti.try_number) for ti in instances} == {(T.SUCCESS, 1)}
    assert env.remote.peak == 3
    # Each item ran exactly once, and the join saw every output in item order.
    items = sorted(
        r.target["payload"]["item"] for r in env.remote.jobs.values() if r.map_index is not None
    )
    assert items == shards
    join = env.tasks("mapped")["join"]
    assert join.output == {"n": "20", "items": ",".join(shards)}
    assert (run.active, run.throttled) == (frozenset(), frozenset())


def test_max_parallel_defaults_to_max_active_tasks_which_also_caps_instances(
    env: MappedHarness,
) -> None:
    env.load(mapped_dag(list(range(30))))
    env.service.trigger("mapped", run_id="r1")
    env.settle_one_job_at_a_time()
    assert env.run("mapped").state is RunState.SUCCESS
    assert env.remote.peak == 8


def test_redelivered_changes_count_nothing_twice(env: MappedHarness) -> None:
    env.load(mapped_dag(list(range(6)), max_parallel=2))
    env.service.trigger("mapped", run_id="r1")
    for _ in range(10_000):
        changes = env.store.take_changes()
        for change in changes:
            # Every record is delivered twice, the second after the first's effects.
            for _copy in range(2):
                if change.kind == "run":
                    env.service.on_run_changed(change.old, change.new)
                else:
                    env.service.on_task_changed(change.old, change.new)
        if changes:
            continue
        running = env.remote.running()
        if not running:
            break
        event = env.remote.outcome(running[0])
        env.service.on_job_event(event)
        env.service.on_job_event(event)
    score = env.tasks("mapped")["score"]
    assert (score.state, score.map_done) == (T.SUCCESS, 6)
    assert len([r for r in env.remote.jobs.values() if r.map_index is not None]) == 6
    assert env.run("mapped").state is RunState.SUCCESS


def test_an_instance_retries_on_its_own_and_a_failed_one_fails_the_task(
    env: MappedHarness,
) -> None:
    env.load(mapped_dag(list(range(5)), max_parallel=2, retries=1, retry_delay="1m"))
    env.remote.fail_items = {(1, 1), (3, 1), (3, 2)}
    env.service.trigger("mapped", run_id="r1")
    env.settle_one_job_at_a_time()
    # 1 fails, then 3 (released by 1's finish, after 1's retry) fails twice.
    for _ in range(2):
        env.later(timedelta(minutes=2))
        env.settle_one_job_at_a_time()

    by_index = {ti.map_index: ti for ti in env.instances("score")}
    assert (by_index[1].state, by_index[1].try_number) == (T.SUCCESS, 2)
    assert (by_index[3].state, by_index[3].try_number) == (T.FAILED, 2)
    score = env.tasks("mapped")["score"]
    assert (score.state, score.map_done, score.map_failed) == (T.FAILED, 5, 1)
    assert score.reason == "1 of 5 instances failed"
    assert env.tasks("mapped")["join"].state is T.UPSTREAM_FAILED
    assert env.run("mapped").state is RunState.FAILED

    # Clearing the failed instance reruns it alone; the mapped task and the run reopen.
    env.remote.fail_items = set()
    assert env.service.clear("mapped", "r1", "score", map_index=3) == ["score:0003"]
    env.settle_one_job_at_a_time()
    by_index = {ti.map_index: ti for ti in env.instances("score")}
    assert (by_index[3].state, by_index[3].try_number) == (T.SUCCESS, 3)
    assert by_index[0].try_number == 1  # the others did not rerun
    score = env.tasks("mapped")["score"]
    assert (score.state, score.map_done, score.map_failed) == (T.SUCCESS, 5, 0)
    # Its downstream was not cleared: the join stays upstream_failed, the run failed.
    assert env.tasks("mapped")["join"].state is T.UPSTREAM_FAILED
    run = env.run("mapped")
    assert (run.state, run.finished_count) == (RunState.FAILED, 3)


def test_clear_with_downstream_reruns_the_join_and_mark_one_instance(env: MappedHarness) -> None:
    env.load(mapped_dag(list(range(4)), max_parallel=4))
    env.remote.fail_items = {(2, 1)}
    env.service.trigger("mapped", run_id="r1")
    env.settle_one_job_at_a_time()
    assert env.run("mapped").state is RunState.FAILED

    marked = env.service.mark("mapped", "r1", "score", T.SUCCESS, map_index=2)
    assert (marked.map_index, marked.state) == (2, T.SUCCESS)
    env.settle_one_job_at_a_time()
    score = env.tasks("mapped")["score"]
    assert (score.state, score.map_done, score.map_failed) == (T.SUCCESS, 4, 0)
    assert len(env.remote.jobs) == 1 + 4  # the mark ran nothing

    # The whole task cleared with its downstream: a new expansion, every item again.
    env.remote.fail_items = set()
    env.service.clear("mapped", "r1", "score", downstream=True)
    env.settle_one_job_at_a_time()
    score = env.tasks("mapped")["score"]
    assert (score.state, score.try_number, score.map_done) == (T.SUCCESS, 2, 4)
    assert {ti.expansion for ti in env.instances("score")} == {2}
    assert env.tasks("mapped")["join"].state is T.SUCCESS
    assert env.run("mapped").state is RunState.SUCCESS


@pytest.mark.parametrize(
    ("items", "state", "reason"),
    [
        ([], T.SKIPPED, "for_each is an empty list"),
        ("a-string", T.FAILED, "for_each rendered a string, not a list: a-string"),
        ({"a": 1}, T.FAILED, "for_each rendered an object, not a list"),
        (list(range(10_001)), T.FAILED, "for_each rendered 10001 items; the limit is 10000"),
    ],
)
def test_a_for_each_that_is_no_list_fails_and_an_empty_one_skips(
    env: MappedHarness, items: Any, state: TaskState, reason: str
) -> None:
    env.load(mapped_dag(items))
    env.service.trigger("mapped", run_id="r1")
    env.settle()
    score = env.tasks("mapped")["score"]
    assert score.state is state
    assert (score.reason or "").startswith(reason)
    assert (score.try_number, env.instances("score")) == (0, [])
    assert env.run("mapped").state is (RunState.SUCCESS if state is T.SKIPPED else RunState.FAILED)


def test_a_map_index_of_an_unmapped_task_or_out_of_range_is_refused(env: MappedHarness) -> None:
    env.load(mapped_dag(list(range(2))))
    env.service.trigger("mapped", run_id="r1")
    env.settle()
    with pytest.raises(CommandRefused, match="has no for_each"):
        env.service.clear("mapped", "r1", "list", map_index=0)
    with pytest.raises(CommandRefused, match="has no instance 5"):
        env.service.clear("mapped", "r1", "score", map_index=5)


@pytest.mark.parametrize(
    ("when", "state", "count"), [("true", T.SUCCESS, 4), ("false", T.SKIPPED, 0)]
)
def test_a_when_condition_decides_the_whole_mapped_task_before_it_expands(
    env: MappedHarness, when: str, state: TaskState, count: int
) -> None:
    env.load(mapped_dag(["a", "b", "c", "d"], when=f"{{{{ {when} }}}}"))
    env.service.trigger("mapped", run_id="r1")
    env.settle()
    score = env.tasks("mapped")["score"]
    assert score.state is state
    assert len(env.instances("score")) == count
    assert env.run("mapped").state is RunState.SUCCESS
