"""DAG size limits (skydag.limits): a DAG that could overflow a DynamoDB item that grows
with it is refused when it is validated, naming the task; the spec cache is bounded by
bytes."""

from __future__ import annotations

import pytest

from skydag.limits import (
    FINISH_GROUP,
    FINISH_TALLY_AT,
    RUN_TASK_SETS_BYTES,
    TALLY_GROUP,
    UPSTREAM_MAP_BYTES,
    dag_size_problems,
    run_task_sets_bytes,
    upstream_map_bytes,
)
from skydag.spec.loader import DagFileError, load_dag_bytes
from skydag.store.spec_objects import SpecCache, SpecObjectError, compress, decompress


def _fan(width: int, prefix: str) -> dict[str, list[str]]:
    middle = [f"{prefix}{i:05d}" for i in range(width)]
    return {"start": [], **{name: ["start"] for name in middle}, "end": middle}


def _order(upstream: dict[str, list[str]]) -> list[str]:
    return list(upstream)  # built upstreams first


def test_a_chain_is_narrow_and_a_fan_is_wide() -> None:
    chain = {f"t{i}": ([f"t{i - 1}"] if i else []) for i in range(1000)}
    fan = _fan(998, "t")

    chain_bytes = run_task_sets_bytes(chain, _order(chain), 32)
    fan_bytes = run_task_sets_bytes(fan, _order(fan), 32)

    # A chain has one task ready at a time; the fan's middle can all wait at once.
    assert chain_bytes < 4 * 1001 + 2 * 16
    assert fan_bytes > chain_bytes + 998 * 6


def test_a_10000_way_fan_in_with_short_ids_fits() -> None:
    fan = _fan(10_000, "t")
    assert upstream_map_bytes(fan["end"]) < UPSTREAM_MAP_BYTES
    assert dag_size_problems(fan, _order(fan), 32) == []


def test_a_wide_join_takes_a_summary_per_group_whatever_its_upstreams_ids() -> None:
    short = _fan(4000, "t")["end"]
    long = _fan(4000, "a_rather_long_task_name_for_a_partition_")["end"]

    assert upstream_map_bytes(long) == upstream_map_bytes(short) < 8 * 1024
    # Up to a group's width, an entry per upstream, its id included.
    assert upstream_map_bytes(long[:TALLY_GROUP]) > upstream_map_bytes(short[:TALLY_GROUP])


def test_a_fan_in_with_long_ids_is_refused_for_its_runs_item() -> None:
    fan = _fan(4000, "a_rather_long_task_name_for_a_partition_")

    problems = dag_size_problems(fan, _order(fan), 32)

    assert [task for task, _ in problems] == [None]
    assert f"over the {RUN_TASK_SETS_BYTES // 1024} KB limit" in problems[0][1]


def test_a_dag_whose_slots_cannot_bind_keeps_no_slot_sets_on_its_runs_item() -> None:
    """With no more tasks than max_active_tasks its runs take no slot: only the finish
    counts remain (two per group of FINISH_GROUP tasks, in finish tallies above
    FINISH_TALLY_AT tasks), so a 4,000-wide fan of long ids fits."""
    fan = _fan(4000, "a_rather_long_task_name_for_a_partition_")
    small = _fan(FINISH_TALLY_AT - 2, "t")

    bound = run_task_sets_bytes(fan, _order(fan), 4002, slots_bind=False)

    assert bound == 2 * -(-4002 // FINISH_GROUP) * 8
    # A smaller DAG's run holds every finished index (4 bytes), twice for its one leaf.
    assert run_task_sets_bytes(small, _order(small), 1000, slots_bind=False) == 4 * (
        FINISH_TALLY_AT + 1
    )
    assert dag_size_problems(fan, _order(fan), 4002, slots_bind=False) == []
    assert dag_size_problems(fan, _order(fan), 4002) != []  # were its slots to bind


def test_the_loader_reports_an_over_limit_dag_as_file_problems() -> None:
    names = [f"partition_with_a_long_descriptive_name_{i:05d}" for i in range(4200)]
    lines = ["dag: wide", "tasks:", "  start: {noop: {}}"]
    lines += [f"  {name}: {{noop: {{}}, depends_on: [start]}}" for name in names]
    lines += ["  end:", "    noop: {}", f"    depends_on: [{', '.join(names)}]"]

    with pytest.raises(DagFileError) as raised:
        load_dag_bytes("\n".join(lines).encode(), "wide.yaml")

    messages = [str(problem) for problem in raised.value.problems]
    assert any(
        m.startswith("wide.yaml: error: line 2: 4202 tasks need up to ~") and "KB limit" in m
        for m in messages
    ), messages
    assert all("\n" not in m for m in messages)
    # The same DAG with a slot for every task: its runs take none, and it loads.
    roomy = ["dag: wide", "max_active_tasks: 4202", *lines[1:]]
    assert len(load_dag_bytes("\n".join(roomy).encode(), "wide.yaml").tasks) == 4202


def test_the_spec_cache_is_bounded_by_bytes_least_recently_used_first() -> None:
    cache: SpecCache[str, str] = SpecCache(max_bytes=100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # now b is the least recently used
    cache.put("c", "C", 40)

    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    assert cache.bytes == 80
    cache.put("huge", "H", 101)  # larger than the whole cache: not kept, nothing evicted
    assert (cache.get("huge"), len(cache), cache.bytes) == (None, 2, 80)


def test_a_spec_object_that_expands_too_far_is_refused() -> None:
    data = compress("x" * 1000)
    assert decompress(data, "here") == "x" * 1000
    with pytest.raises(SpecObjectError, match="here: expands past 999 bytes"):
        decompress(data, "here", limit=999)
