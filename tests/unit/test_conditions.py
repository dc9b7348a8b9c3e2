"""``when:`` conditions: what a rendered condition means, and how it decides a task."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from skydag.engine.conditions import Condition, judge_condition
from skydag.engine.models import TaskInstance, UpstreamReport
from skydag.engine.scheduler import decide_pending, needs_condition
from skydag.engine.states import Cause, TaskState
from skydag.engine.transitions import Outcome
from skydag.spec.loader import load_dag_bytes

NOW = datetime(2026, 12, 6, tzinfo=UTC)
DAG = """
dag: branchy
tasks:
  check: {noop: {}}
  full:
    depends_on: [check]
    when: "{{ params.mode == 'full' }}"
    noop: {}
  literal_off:
    when: false
    noop: {}
"""


@pytest.mark.parametrize("text", ["true", "True", " yes ", "ON", "1"])
def test_true_words_hold(text: str) -> None:
    assert judge_condition(text) == Condition(True, text)


@pytest.mark.parametrize("text", ["false", "False", "no", "off", "0", "", "  ", "None", "null"])
def test_false_words_do_not_hold(text: str) -> None:
    condition = judge_condition(text)
    assert (condition.holds, condition.error) == (False, None)


@pytest.mark.parametrize("text", ["Flase", "2", "[]", "{'a': 1}", "x" * 500])
def test_other_text_is_an_error_not_a_truthy_string(text: str) -> None:
    condition = judge_condition(text)
    assert not condition.holds
    assert condition.error is not None
    assert "neither true nor false" in condition.error
    assert len(condition.reason) < 300  # one line, however long the rendering


def test_a_literal_boolean_needs_no_rendering() -> None:
    assert judge_condition(False).holds is False
    assert judge_condition(True).reason == "when: 'true' is true"


def _ready(task: str) -> TaskInstance:
    upstream = {"check": UpstreamReport(TaskState.SUCCESS, 3)} if task == "full" else {}
    return TaskInstance("branchy", "r1", task, upstream=upstream, version=4)


def test_a_false_condition_skips_the_ready_task() -> None:
    spec = load_dag_bytes(DAG.encode(), "branchy.yaml")
    decision = decide_pending(spec, _ready("full"), NOW, judge_condition("False"))
    assert decision.outcome is Outcome.ACCEPT
    assert decision.transition is not None
    assert decision.transition.dst is TaskState.SKIPPED
    assert decision.transition.cause is Cause.CONDITION
    assert decision.reason == "when: 'False' is false"


def test_a_true_condition_dispatches() -> None:
    spec = load_dag_bytes(DAG.encode(), "branchy.yaml")
    decision = decide_pending(spec, _ready("full"), NOW, judge_condition("True"))
    assert decision.transition is not None
    assert decision.transition.dst is TaskState.QUEUED


def test_a_condition_that_cannot_render_fails_the_task_with_its_reason() -> None:
    spec = load_dag_bytes(DAG.encode(), "branchy.yaml")
    failed = Condition.failed("when: undefined: 'dict object' has no attribute 'x'")
    decision = decide_pending(spec, _ready("full"), NOW, failed)
    assert decision.transition is not None
    assert (decision.transition.dst, decision.transition.cause) == (
        TaskState.FAILED,
        Cause.CONDITION,
    )
    assert "has no attribute 'x'" in decision.reason


def test_a_conditional_task_is_not_decided_without_its_condition() -> None:
    spec = load_dag_bytes(DAG.encode(), "branchy.yaml")
    assert decide_pending(spec, _ready("full"), NOW).outcome is Outcome.IGNORE


def test_the_condition_is_rendered_only_once_the_upstreams_allow_the_task() -> None:
    spec = load_dag_bytes(DAG.encode(), "branchy.yaml")
    waiting = TaskInstance("branchy", "r1", "full")
    assert not needs_condition(spec, waiting)
    assert needs_condition(spec, _ready("full"))
    assert needs_condition(spec, _ready("literal_off"))
    assert not needs_condition(spec, _ready("check"))
    # An upstream that failed decides the task first: upstream_failed, no condition.
    failed = TaskInstance(
        "branchy", "r1", "full", upstream={"check": UpstreamReport(TaskState.FAILED, 3)}
    )
    assert not needs_condition(spec, failed)
    assert decide_pending(spec, failed, NOW).transition.dst is TaskState.UPSTREAM_FAILED  # type: ignore[union-attr]
