"""The ten trigger rules against an independent reference model, over every upstream mix.

The reference follows the two phases of Airflow's ``trigger_rule_dep.py``: first whether the
task must be given up (skipped / upstream_failed), then whether the rule is met (ready) or
not yet (wait). ``stopped`` is skydag's own state and counts as a failure everywhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from skydag.engine.states import TaskState
from skydag.engine.trigger_rules import Readiness, Verdict, evaluate
from skydag.spec.models import TriggerRule

T = TaskState
TR = TriggerRule
V = Verdict

# None stands for an upstream whose state this task has not been told (pending).
Upstream = TaskState | None

UPSTREAM_CHOICES: tuple[Upstream, ...] = (
    T.SUCCESS,
    T.FAILED,
    T.SKIPPED,
    T.UPSTREAM_FAILED,
    T.STOPPED,
    None,
    T.RUNNING,
    T.QUEUED,
    T.UP_FOR_RETRY,
)

_REF_SUCCESS = {T.SUCCESS}
_REF_FAILURE = {T.FAILED, T.UPSTREAM_FAILED, T.STOPPED}
_REF_SKIPPED = {T.SKIPPED}


def reference(rule: TriggerRule, upstreams: Sequence[Upstream]) -> Verdict:
    """Airflow's trigger-rule semantics, written independently of the engine."""
    if not upstreams or rule is TR.ALWAYS:
        return V.READY
    n = len(upstreams)
    success = sum(1 for s in upstreams if s in _REF_SUCCESS)
    failed = sum(1 for s in upstreams if s in _REF_FAILURE)
    skipped = sum(1 for s in upstreams if s in _REF_SKIPPED)
    upstream_done = success + failed + skipped == n
    # one_done counts only upstreams that ran (Airflow): upstream_failed never did.
    ran_and_failed = failed - sum(1 for s in upstreams if s is T.UPSTREAM_FAILED)

    # Phase 1: can the rule no longer be met? (Airflow's flag_upstream_failed branch)
    give_up: Verdict | None = None
    if rule is TR.ALL_SUCCESS:
        # A skip decides only when all are done, so finishing order never matters.
        give_up = V.UPSTREAM_FAILED if failed else V.SKIP if skipped and upstream_done else None
    elif rule is TR.ALL_FAILED:
        give_up = V.SKIP if success or skipped else None
    elif rule is TR.ONE_SUCCESS:
        # Airflow: all skipped -> skipped; otherwise done without a success -> upstream_failed.
        if upstream_done and not success:
            give_up = V.SKIP if skipped == n else V.UPSTREAM_FAILED
    elif rule is TR.ONE_FAILED:
        give_up = V.SKIP if upstream_done and not failed else None
    elif rule is TR.ONE_DONE:
        give_up = V.SKIP if upstream_done and not (success or ran_and_failed) else None
    elif rule is TR.NONE_FAILED:
        give_up = V.UPSTREAM_FAILED if failed else None
    elif rule is TR.NONE_FAILED_MIN_ONE_SUCCESS:
        give_up = V.UPSTREAM_FAILED if failed else V.SKIP if skipped == n else None
    elif rule is TR.NONE_SKIPPED:
        give_up = V.SKIP if skipped else None
    if give_up is not None:
        return give_up

    # Phase 2: is the rule met?
    met = {
        TR.ALL_SUCCESS: success == n,
        TR.ALL_FAILED: failed == n,
        TR.ALL_DONE: upstream_done,
        TR.ONE_SUCCESS: success > 0,
        TR.ONE_FAILED: failed > 0,
        TR.ONE_DONE: success + ran_and_failed > 0,
        TR.NONE_FAILED: success + skipped == n,
        TR.NONE_FAILED_MIN_ONE_SUCCESS: success + skipped == n,
        TR.NONE_SKIPPED: upstream_done and skipped == 0,
    }[rule]
    return V.READY if met else V.WAIT


MIXES: list[tuple[Upstream, ...]] = [
    mix for n in (1, 2, 3) for mix in itertools.combinations_with_replacement(UPSTREAM_CHOICES, n)
]


def _mix_id(mix: tuple[Upstream, ...]) -> str:
    return "+".join("missing" if s is None else s.value for s in mix)


def _evaluate(rule: TriggerRule, order: Sequence[Upstream]) -> tuple[list[str], Readiness]:
    ids = [f"u{i}" for i in range(1, len(order) + 1)]
    states = {task_id: s for task_id, s in zip(ids, order, strict=True) if s is not None}
    return ids, evaluate(rule, ids, states)


def test_mix_count() -> None:
    # 9 + C(10, 2) + C(11, 3) multisets
    assert len(MIXES) == 9 + 45 + 165


def _check(rule: TriggerRule, order: Sequence[Upstream], expected: Verdict) -> list[str]:
    """Every way ``evaluate`` disagrees with the reference for one order of upstreams."""
    ids, result = _evaluate(rule, order)
    where = f"{rule.value} over {_mix_id(tuple(order))}"
    problems: list[str] = []
    if result.verdict is not expected:
        problems.append(f"{where}: expected {expected.value}, got {result}")
    if result.rule is not rule or not result.reason:
        problems.append(f"{where}: bad rule/reason in {result!r}")
    if not str(result).startswith(f"{result.verdict.value}: "):
        problems.append(f"{where}: str() is {result}")
    unfinished = tuple(
        task_id
        for task_id, s in zip(ids, order, strict=True)
        if s not in _REF_SUCCESS | _REF_FAILURE | _REF_SKIPPED
    )
    if expected is V.WAIT:
        if result.waiting_for != unfinished:
            problems.append(f"{where}: waiting_for {result.waiting_for}, expected {unfinished}")
        if f"under {rule.value}" not in result.reason:
            problems.append(f"{where}: reason does not name the rule: {result.reason!r}")
        problems.extend(
            f"{where}: reason does not name {task_id}"
            for task_id in unfinished
            if task_id not in result.reason
        )
    elif result.waiting_for:
        problems.append(f"{where}: waiting_for {result.waiting_for} on a final verdict")
    return problems


@pytest.mark.parametrize("mix", MIXES, ids=[_mix_id(m) for m in MIXES])
def test_every_rule_matches_reference(mix: tuple[Upstream, ...]) -> None:
    """All ten rules over one multiset of upstream states, in every distinct order.

    Parametrised by multiset (219 cases) with the rules inside, so a failure lists every
    rule that disagrees and the 2,190 rule x multiset cases stay fast.
    """
    problems: list[str] = []
    for rule in TriggerRule:
        expected = reference(rule, mix)
        if expected is V.WAIT:
            assert any(s not in _REF_SUCCESS | _REF_FAILURE | _REF_SKIPPED for s in mix)
        for order in sorted(set(itertools.permutations(mix)), key=_mix_id):
            problems.extend(_check(rule, order, expected))
    assert problems == []


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_no_upstreams_is_ready(rule: TriggerRule) -> None:
    result = evaluate(rule, [], {})
    assert result == Readiness(V.READY, rule, "no upstream tasks")


@pytest.mark.parametrize("rule", list(TriggerRule))
@pytest.mark.parametrize("unfinished", [T.PENDING, T.WAITING])
def test_explicit_unfinished_state_is_like_missing(
    rule: TriggerRule, unfinished: TaskState
) -> None:
    for other in UPSTREAM_CHOICES:
        given = {"a": unfinished} | ({} if other is None else {"b": other})
        missing = {} if other is None else {"b": other}
        assert evaluate(rule, ["a", "b"], given) == evaluate(rule, ["a", "b"], missing)


def test_states_of_tasks_that_are_not_upstream_are_ignored() -> None:
    states = {"a": T.SUCCESS, "x": T.FAILED, "y": T.SKIPPED}
    assert evaluate(TR.ALL_SUCCESS, ["a"], states).verdict is V.READY
    assert evaluate(TR.ONE_FAILED, ["a"], states).verdict is V.SKIP


def test_waiting_reason_lists_ten_then_counts_the_rest() -> None:
    ids = [f"t{i:02d}" for i in range(12)]
    result = evaluate(TR.ALL_DONE, ids, {})
    assert result.verdict is V.WAIT
    assert result.waiting_for == tuple(ids)
    assert result.reason == (
        "waiting for 12 of 12 upstream tasks under all_done: " + ", ".join(ids[:10]) + " and 2 more"
    )


def test_waiting_reason_example() -> None:
    result = evaluate(TR.ALL_SUCCESS, ["a", "b", "c"], {"a": T.SUCCESS, "c": T.RUNNING})
    assert result == Readiness(
        V.WAIT,
        TR.ALL_SUCCESS,
        "waiting for 2 of 3 upstream tasks under all_success: b, c",
        ("b", "c"),
    )


@pytest.mark.parametrize(
    ("rule", "states", "verdict"),
    [
        # The rules that decide early, before every upstream is done (Airflow does too).
        (TR.ALL_SUCCESS, [T.FAILED, None], V.UPSTREAM_FAILED),
        (TR.ALL_SUCCESS, [T.STOPPED, None], V.UPSTREAM_FAILED),
        (TR.ALL_SUCCESS, [T.SKIPPED, None], V.WAIT),
        (TR.ALL_SUCCESS, [T.SKIPPED, T.SUCCESS], V.SKIP),
        (TR.ALL_SUCCESS, [T.SKIPPED, T.FAILED], V.UPSTREAM_FAILED),
        (TR.ALL_FAILED, [T.SUCCESS, None], V.SKIP),
        (TR.ONE_SUCCESS, [T.SUCCESS, None], V.READY),
        (TR.ONE_SUCCESS, [T.SKIPPED, T.SKIPPED], V.SKIP),
        (TR.ONE_SUCCESS, [T.SKIPPED, T.FAILED], V.UPSTREAM_FAILED),
        (TR.ONE_DONE, [T.UPSTREAM_FAILED, T.UPSTREAM_FAILED], V.SKIP),
        (TR.ONE_DONE, [T.UPSTREAM_FAILED, None], V.WAIT),
        (TR.ONE_FAILED, [T.UPSTREAM_FAILED, None], V.READY),
        (TR.ONE_FAILED, [T.SUCCESS, T.SKIPPED], V.SKIP),
        (TR.ONE_DONE, [T.FAILED, None], V.READY),
        (TR.ONE_DONE, [T.SKIPPED, T.SKIPPED], V.SKIP),
        (TR.NONE_FAILED, [T.SKIPPED, T.SUCCESS], V.READY),
        (TR.NONE_FAILED, [T.SKIPPED, T.SKIPPED], V.READY),
        (TR.NONE_FAILED_MIN_ONE_SUCCESS, [T.SKIPPED, T.SUCCESS], V.READY),
        (TR.NONE_FAILED_MIN_ONE_SUCCESS, [T.SKIPPED, T.SKIPPED], V.SKIP),
        (TR.NONE_FAILED_MIN_ONE_SUCCESS, [T.SKIPPED, None], V.WAIT),
        (TR.NONE_SKIPPED, [T.SKIPPED, None], V.SKIP),
        (TR.NONE_SKIPPED, [T.FAILED, T.SUCCESS], V.READY),
        (TR.ALL_DONE, [T.FAILED, T.SKIPPED], V.READY),
        (TR.ALWAYS, [None, T.RUNNING], V.READY),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_worked_examples(rule: TriggerRule, states: list[Upstream], verdict: Verdict) -> None:
    _ids, result = _evaluate(rule, states)
    assert result.verdict is verdict
    assert reference(rule, states) is verdict


FINAL_CHOICES = (T.SUCCESS, T.FAILED, T.SKIPPED, T.UPSTREAM_FAILED, T.STOPPED)


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_verdict_does_not_depend_on_finishing_order(rule: TriggerRule) -> None:
    """Upstreams finish one by one in every order; the first final verdict is always the same.

    The scheduler acts on the first verdict that is not ``wait`` and never revisits it, so
    an early decision that a later upstream could overturn would make the outcome depend
    on timing (seen as a flaky property test before ``all_success`` waited on skips).
    """
    problems: list[str] = []
    for n in (1, 2, 3):
        for finals in itertools.product(FINAL_CHOICES, repeat=n):
            ids = [f"u{i}" for i in range(n)]
            on_final_states = evaluate(rule, ids, dict(zip(ids, finals, strict=True))).verdict
            for order in itertools.permutations(range(n)):
                states: dict[str, TaskState] = {}
                first = V.WAIT
                for i in order:
                    states[ids[i]] = finals[i]
                    first = evaluate(rule, ids, states).verdict
                    if first is not V.WAIT:
                        break
                if first is not on_final_states:
                    problems.append(
                        f"{finals} finishing in order {order}: {first} != {on_final_states}"
                    )
    assert problems == []
