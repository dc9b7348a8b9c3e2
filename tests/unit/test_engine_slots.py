"""engine/slots.py: which tries take a max_active_tasks slot, from a DAG's shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from skydag.engine.commands import decide_clear, decide_mark
from skydag.engine.models import TaskInstance
from skydag.engine.slots import natural_width, passes_slotted, slot_pool, takes_slot, waits_for_all
from skydag.engine.states import FINISHED_TASK_STATES, TaskState
from skydag.spec.models import DagSpec, TriggerRule

JOB: dict[str, Any] = {"noop": None}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def dag(edges: dict[str, list[str]], **keys: Any) -> DagSpec:
    """Tasks with their upstream tasks; ``keys``: the DAG's own (max_active_tasks ...)."""
    tasks = {t: {"depends_on": ups, **JOB} if ups else dict(JOB) for t, ups in edges.items()}
    return DagSpec.model_validate({"dag": "d", "tasks": tasks, **keys})


def chain(n: int, **keys: Any) -> DagSpec:
    return dag({f"t{i}": [f"t{i - 1}"] if i else [] for i in range(n)}, **keys)


@pytest.mark.parametrize(
    ("edges", "width"),
    [
        ({"a": [], "b": ["a"], "c": ["b"]}, 1),  # a chain: one path
        ({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}, 2),  # a diamond
        ({"r": [], **{f"x{i}": ["r"] for i in range(5)}, "j": [f"x{i}" for i in range(5)]}, 5),
        ({"a": [], "b": [], "c": [], "d": []}, 4),  # no edges: every task its own path
        # Greedy along the order takes a → c and leaves b alone: an augmenting path
        # (b → c, a → d) joins both, two paths instead of three.
        ({"a": [], "b": [], "c": ["a", "b"], "d": ["a"]}, 2),
    ],
)
def test_the_natural_width_is_the_fewest_paths_covering_the_dag(
    edges: dict[str, list[str]], width: int
) -> None:
    assert natural_width(dag(edges)) == width


def test_a_shape_that_starts_a_task_before_its_upstreams_end_bounds_nothing() -> None:
    """``one_*`` with two upstreams or ``always`` with one start a task beside a running
    upstream; a service's downstream tasks start while it runs; a for_each is counted."""
    for rule in ("one_success", "one_failed", "one_done"):
        assert waits_for_all(TriggerRule(rule), 1)
        assert not waits_for_all(TriggerRule(rule), 2)
    assert not waits_for_all(TriggerRule.ALWAYS, 1)
    assert waits_for_all(TriggerRule.ALWAYS, 0)
    for rule in TriggerRule:
        if not rule.value.startswith("one_") and rule is not TriggerRule.ALWAYS:
            assert waits_for_all(rule, 3), rule

    two = {"a": JOB, "b": JOB}
    one_of_two = {"c": {"depends_on": ["a", "b"], "trigger_rule": "one_done", **JOB}}
    always = {"c": {"depends_on": ["a"], "trigger_rule": "always", **JOB}}
    one_of_one = {"c": {"depends_on": ["a"], "trigger_rule": "one_success", **JOB}}
    service = {"c": {"depends_on": ["a"], **JOB}, "a": {"mode": "service", **JOB}}
    mapped = {"c": {"depends_on": ["a"], "for_each": [1, 2], **JOB}}
    for tasks, width in [(one_of_two, None), (always, None), (one_of_one, 2)]:
        spec = DagSpec.model_validate({"dag": "d", "tasks": {**two, **tasks}})
        assert natural_width(spec) == width, tasks
    for tasks in (service, mapped):
        spec = DagSpec.model_validate({"dag": "d", "tasks": {**two, **tasks}})
        assert natural_width(spec) is None, tasks


def test_only_slotted_tries_take_a_slot_where_the_shape_leaves_slots_over() -> None:
    line = chain(50)  # 32 slots, one path: 31 slots over, for the slotted tries
    ti = TaskInstance("d", "r", "t3")
    slotted = TaskInstance("d", "r", "t3", slotted=True)
    assert (slot_pool(line), takes_slot(line, ti), takes_slot(line, slotted)) == (31, False, True)
    assert passes_slotted(line, slotted)
    assert not passes_slotted(line, ti)

    # No more tasks than slots: nothing ever waits for one, slotted or not.
    short = chain(5)
    assert not takes_slot(short, slotted)
    assert not passes_slotted(short, slotted)
    # As wide as its slots: no slot left over; every try takes one, and none passes it on.
    fan = dag({"r": [], **{f"x{i}": ["r"] for i in range(3)}}, max_active_tasks=3)
    assert (slot_pool(fan), takes_slot(fan, ti), passes_slotted(fan, slotted)) == (3, True, False)


def test_a_clear_or_a_mark_makes_the_task_slotted() -> None:
    finished = TaskInstance("d", "r", "a", state=TaskState.FAILED, try_number=1, version=4)
    cleared = decide_clear(finished, frozenset(FINISHED_TASK_STATES))
    assert cleared.transition is not None
    assert cleared.transition.changes["slotted"] is True
    pending = TaskInstance("d", "r", "a", version=2)
    marked = decide_mark(pending, TaskState.SUCCESS, NOW)
    assert marked.transition is not None
    assert marked.transition.changes["slotted"] is True


def test_a_ten_thousand_task_chain_is_one_path() -> None:
    assert natural_width(chain(10_000, max_active_tasks=2)) == 1
