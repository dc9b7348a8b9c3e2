"""The pure for_each decisions (engine/mapping.py) and the rendered list's checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from skydag.engine.mapping import (
    belongs,
    decide_expand,
    decide_instance_next,
    decide_mapped_finish,
    decide_reopen,
    new_instances,
    successor,
)
from skydag.engine.models import TaskInstance, instance_key, split_instance_key
from skydag.engine.states import Cause, TaskState
from skydag.engine.transitions import Outcome
from skydag.spec.mapping import ForEachProblem, items_of, mapping_references
from skydag.spec.models import DagSpec

T = TaskState
NOW = datetime(2026, 11, 22, tzinfo=UTC)
SPEC = DagSpec.model_validate(
    {
        "dag": "d",
        "max_active_tasks": 4,
        "tasks": {"m": {"for_each": [1, 2, 3, 4, 5], "max_parallel": 2, "noop": {}}},
    }
)


def mapped(**fields: object) -> TaskInstance:
    return replace(TaskInstance("d", "r", "m"), **fields)  # type: ignore[arg-type]


def test_instance_keys_sort_in_item_order_and_split_back() -> None:
    keys = [instance_key("m", i) for i in (0, 2, 10, 9999)]
    assert keys == sorted(keys) == ["m:0000", "m:0002", "m:0010", "m:9999"]
    assert split_instance_key("m:0010") == ("m", 10)
    assert split_instance_key("m") == ("m", None)


@pytest.mark.parametrize(
    ("items", "problem", "dst", "cause"),
    [
        ([1, 2], None, T.RUNNING, Cause.EXPAND),
        ([], None, T.SKIPPED, Cause.SKIPPED),
        (None, "for_each rendered a string, not a list: x", T.FAILED, Cause.FAILED),
    ],
)
def test_expansion_runs_skips_or_fails(
    items: list[int] | None, problem: str | None, dst: TaskState, cause: Cause
) -> None:
    decision = decide_expand(mapped(), items, problem, NOW)
    assert decision.transition is not None
    assert (decision.transition.dst, decision.transition.cause) == (dst, cause)
    if dst is T.RUNNING:
        assert decision.transition.changes["map_count"] == 2
        assert decision.transition.changes["try_number"] == 1


def test_an_expanded_task_is_not_expanded_again() -> None:
    assert decide_expand(mapped(state=T.RUNNING), [1], None, NOW).outcome is Outcome.IGNORE


def test_the_first_max_parallel_instances_are_released_and_each_releases_one_on() -> None:
    task = mapped(state=T.RUNNING, try_number=1, map_count=5)
    instances = new_instances(SPEC, task, [10, 20, 30, 40, 50])
    assert [i.released for i in instances] == [True, True, False, False, False]
    assert [successor(SPEC, task, i) for i in instances] == [2, 3, 4, None, None]
    assert all(belongs(task, i) for i in instances)
    assert not belongs(replace(task, try_number=2), instances[0])


def test_an_instance_runs_only_once_released() -> None:
    waiting = TaskInstance("d", "r", "m", map_index=3)
    assert decide_instance_next(SPEC, waiting, NOW).outcome is Outcome.IGNORE
    released = decide_instance_next(SPEC, replace(waiting, released=True), NOW)
    assert released.transition is not None
    assert released.transition.dst is T.QUEUED


def test_the_mapped_task_ends_when_every_instance_is_counted() -> None:
    running = mapped(state=T.RUNNING, try_number=1, map_count=3, map_done=2)
    assert decide_mapped_finish(running, NOW).outcome is Outcome.IGNORE
    done = decide_mapped_finish(replace(running, map_done=3), NOW).transition
    assert done is not None
    assert done.dst is T.SUCCESS
    failed = decide_mapped_finish(replace(running, map_done=3, map_failed=1), NOW).transition
    assert failed is not None
    assert (failed.dst, failed.changes["reason"]) == (T.FAILED, "1 of 3 instances failed")


def test_a_finished_mapped_task_reopens_once_per_command() -> None:
    finished = mapped(state=T.FAILED, try_number=1, map_count=3, map_done=3, map_failed=1)
    reopened = decide_reopen(finished, "cmd-1").transition
    assert reopened is not None
    assert (reopened.dst, reopened.cause) == (T.RUNNING, Cause.CLEAR)
    assert decide_reopen(replace(finished, applied=("cmd-1",)), "cmd-1").outcome is Outcome.IGNORE


@pytest.mark.parametrize(
    ("rendered", "items"),
    [([1, 2], [1, 2]), ('["a", "b"]', ["a", "b"]), ("['a', 'b']", ["a", "b"]), ("[]", [])],
)
def test_a_rendered_list_is_read(rendered: object, items: list[object]) -> None:
    assert items_of(rendered) == items


@pytest.mark.parametrize(
    ("rendered", "message"),
    [
        ("abc", "for_each rendered a string, not a list: abc"),
        ('{"a": 1}', "for_each rendered an object, not a list"),
        ("7", "for_each rendered a number, not a list"),
        (list(range(10_001)), "for_each rendered 10001 items; the limit is 10000"),
    ],
)
def test_a_rendered_value_that_is_no_list_is_refused(rendered: object, message: str) -> None:
    with pytest.raises(ForEachProblem, match="^" + message.replace("[", r"\[")):
        items_of(rendered)


def test_mapped_only_names_are_found_in_templates() -> None:
    assert mapping_references("{{ item }}-{{ task.map_index }}") == ["item", "task.map_index"]
    assert mapping_references("{{ task['map_index'] }}") == ["task.map_index"]
    assert mapping_references("{{ task.id }} {{ items }}") == []
    assert mapping_references("{% for item in x %}{% endfor %}") == []
