"""The transition tables, pinned edge by edge, and the properties the design promises of them."""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Sequence

import pytest

from skydag.engine.states import (
    ACTIVE_TASK_STATES,
    FAILED_TASK_STATES,
    FINISHED_RUN_STATES,
    FINISHED_TASK_STATES,
    RUN_TRANSITIONS,
    TASK_TRANSITIONS,
    UNFINISHED_RUN_STATES,
    UNFINISHED_TASK_STATES,
    Cause,
    RunState,
    TaskState,
    can_transition,
    can_transition_run,
    mermaid_diagram,
    run_sources,
    task_sources,
)
from skydag.engine.transitions import InvalidTransition, Transition

T = TaskState
R = RunState
C = Cause

# Written out by hand from the design ("Task-instance states") and docs/states.md; a change
# to the table must be made here too, on purpose.
EXPECTED_TASK_EDGES: dict[tuple[TaskState, TaskState], frozenset[Cause]] = {
    # pending: the trigger rule decides, a person marks, a cancelled run stops it
    (T.PENDING, T.WAITING): frozenset({C.WAIT_FOR_SIGNAL}),
    (T.PENDING, T.QUEUED): frozenset({C.DISPATCH}),
    (T.PENDING, T.SKIPPED): frozenset({C.SKIPPED, C.CONDITION}),
    (T.PENDING, T.UPSTREAM_FAILED): frozenset({C.UPSTREAM_FAILED}),
    (T.PENDING, T.STOPPED): frozenset({C.STOP}),
    (T.PENDING, T.SUCCESS): frozenset({C.MARK}),
    (T.PENDING, T.FAILED): frozenset({C.MARK, C.FAILED, C.CONDITION}),
    # pending -> running: a mapped task (for_each) expands into its instances; failed
    # above: its for_each rendered no usable list
    (T.PENDING, T.RUNNING): frozenset({C.EXPAND}),
    # waiting for a start_on signal
    (T.WAITING, T.QUEUED): frozenset({C.SIGNAL}),
    (T.WAITING, T.FAILED): frozenset({C.TIMED_OUT, C.MARK}),
    (T.WAITING, T.STOPPED): frozenset({C.STOP}),
    (T.WAITING, T.SUCCESS): frozenset({C.MARK}),
    # queued: the dispatch intent is recorded; reports may arrive in any order
    (T.QUEUED, T.RUNNING): frozenset({C.STARTED}),
    (T.QUEUED, T.SUCCESS): frozenset({C.SUCCEEDED, C.MARK}),
    (T.QUEUED, T.FAILED): frozenset({C.FAILED, C.TIMED_OUT, C.MARK}),
    (T.QUEUED, T.UP_FOR_RETRY): frozenset({C.RETRY}),
    (T.QUEUED, T.STOPPED): frozenset({C.STOP}),
    # running
    (T.RUNNING, T.SUCCESS): frozenset({C.SUCCEEDED, C.MARK}),
    (T.RUNNING, T.FAILED): frozenset({C.FAILED, C.TIMED_OUT, C.MARK}),
    (T.RUNNING, T.UP_FOR_RETRY): frozenset({C.RETRY}),
    (T.RUNNING, T.QUEUED): frozenset({C.RESTART}),
    (T.RUNNING, T.STOPPED): frozenset({C.STOP}),
    # up_for_retry: not finished, but may be cleared like a finished state
    (T.UP_FOR_RETRY, T.QUEUED): frozenset({C.DISPATCH}),
    (T.UP_FOR_RETRY, T.STOPPED): frozenset({C.STOP}),
    (T.UP_FOR_RETRY, T.SUCCESS): frozenset({C.MARK}),
    (T.UP_FOR_RETRY, T.FAILED): frozenset({C.MARK}),
    (T.UP_FOR_RETRY, T.PENDING): frozenset({C.CLEAR}),
    # finished: only an explicit clear leads out
    (T.SUCCESS, T.PENDING): frozenset({C.CLEAR}),
    (T.FAILED, T.PENDING): frozenset({C.CLEAR}),
    (T.STOPPED, T.PENDING): frozenset({C.CLEAR}),
    (T.UPSTREAM_FAILED, T.PENDING): frozenset({C.CLEAR}),
    (T.SKIPPED, T.PENDING): frozenset({C.CLEAR}),
    # a finished mapped task reopens when one of its instances is cleared
    (T.SUCCESS, T.RUNNING): frozenset({C.CLEAR}),
    (T.FAILED, T.RUNNING): frozenset({C.CLEAR}),
}

EXPECTED_RUN_EDGES: dict[tuple[RunState, RunState], frozenset[Cause]] = {
    (R.QUEUED, R.RUNNING): frozenset({C.DISPATCH}),
    (R.QUEUED, R.CANCELLED): frozenset({C.STOP}),
    (R.RUNNING, R.SUCCESS): frozenset({C.SUCCEEDED}),
    (R.RUNNING, R.FAILED): frozenset({C.FAILED}),
    (R.RUNNING, R.CANCELLED): frozenset({C.STOP}),
    # Reopened: queued, then started like a new run (never straight back to running, so
    # a late reaction to the old end cannot free the slot it reopens in).
    (R.SUCCESS, R.QUEUED): frozenset({C.CLEAR}),
    (R.FAILED, R.QUEUED): frozenset({C.CLEAR}),
}

TASK_PAIRS = list(itertools.product(TaskState, TaskState))
RUN_PAIRS = list(itertools.product(RunState, RunState))


def _pair_id(pair: tuple[TaskState, TaskState] | tuple[RunState, RunState]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def _reachable(start: str, edges: Sequence[tuple[str, str]]) -> set[str]:
    seen = {start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for src, dst in edges:
            if src == node and dst not in seen:
                seen.add(dst)
                queue.append(dst)
    return seen


# --- the state sets ------------------------------------------------------------------------


def test_state_sets() -> None:
    assert len(TaskState) == 10
    assert len(TASK_PAIRS) == 100
    assert {T.SUCCESS, T.FAILED, T.STOPPED, T.UPSTREAM_FAILED, T.SKIPPED} == FINISHED_TASK_STATES
    assert set(TaskState) - FINISHED_TASK_STATES == UNFINISHED_TASK_STATES
    assert {T.QUEUED, T.RUNNING} == ACTIVE_TASK_STATES
    assert {T.FAILED, T.UPSTREAM_FAILED, T.STOPPED} == FAILED_TASK_STATES
    assert {R.SUCCESS, R.FAILED, R.CANCELLED} == FINISHED_RUN_STATES
    assert {R.QUEUED, R.RUNNING} == UNFINISHED_RUN_STATES


# --- the task table, pair by pair ----------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), TASK_PAIRS, ids=[_pair_id(p) for p in TASK_PAIRS])
def test_task_pair(src: TaskState, dst: TaskState) -> None:
    expected = EXPECTED_TASK_EDGES.get((src, dst), frozenset())
    assert can_transition(src, dst) is bool(expected)
    assert TASK_TRANSITIONS.get((src, dst), frozenset()) == expected
    for cause in Cause:
        assert can_transition(src, dst, cause) is (cause in expected), cause
        if cause in expected:
            transition = Transition("t", src, dst, cause, 3)
            assert (transition.src, transition.dst, transition.cause) == (src, dst, cause)
        else:
            with pytest.raises(InvalidTransition, match=rf"{src.value} -> {dst.value}"):
                Transition("t", src, dst, cause, 3)


def test_task_table_has_no_other_keys() -> None:
    assert set(TASK_TRANSITIONS) == set(EXPECTED_TASK_EDGES)
    assert all(TASK_TRANSITIONS.values()), "an edge without causes can never be taken"


@pytest.mark.parametrize("dst", list(TaskState))
def test_task_sources_agree_with_table(dst: TaskState) -> None:
    for cause in Cause:
        expected = {
            s for (s, d), causes in EXPECTED_TASK_EDGES.items() if d == dst and cause in causes
        }
        assert task_sources(dst, cause) == expected, cause


def test_task_sources_examples() -> None:
    assert task_sources(T.PENDING, C.CLEAR) == FINISHED_TASK_STATES | {T.UP_FOR_RETRY}
    assert task_sources(T.STOPPED, C.STOP) == UNFINISHED_TASK_STATES
    assert task_sources(T.QUEUED, C.DISPATCH) == {T.PENDING, T.UP_FOR_RETRY}
    assert task_sources(T.SUCCESS, C.SUCCEEDED) == {T.QUEUED, T.RUNNING}
    assert task_sources(T.RUNNING, C.SUCCEEDED) == frozenset()


# --- properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", sorted(FINISHED_TASK_STATES))
def test_finished_task_state_leaves_only_by_clear(state: TaskState) -> None:
    exits = {
        (dst, cause) for dst in TaskState for cause in Cause if can_transition(state, dst, cause)
    }
    # A finished mapped task also reopens (running) when one instance is cleared.
    reopen = {(T.RUNNING, C.CLEAR)} if state in (T.SUCCESS, T.FAILED) else set()
    assert exits == {(T.PENDING, C.CLEAR), *reopen}


def test_clear_leads_only_to_pending_or_reopens_a_mapped_task() -> None:
    for (src, dst), causes in TASK_TRANSITIONS.items():
        if C.CLEAR in causes:
            assert dst is T.PENDING or (dst is T.RUNNING and src in (T.SUCCESS, T.FAILED))
    for (_run_src, run_dst), causes in RUN_TRANSITIONS.items():
        if C.CLEAR in causes:
            assert run_dst in (R.RUNNING, R.QUEUED)


def test_unfinished_states_cannot_be_cleared_except_up_for_retry() -> None:
    for state in UNFINISHED_TASK_STATES:
        assert can_transition(state, T.PENDING, C.CLEAR) is (state is T.UP_FOR_RETRY)


def test_every_unfinished_state_can_be_stopped() -> None:
    for state in TaskState:
        assert can_transition(state, T.STOPPED, C.STOP) is (state in UNFINISHED_TASK_STATES)


def test_every_task_state_reachable_from_pending() -> None:
    assert _reachable(T.PENDING, list(TASK_TRANSITIONS)) == set(TaskState)


def test_every_task_state_reachable_without_people() -> None:
    automatic = [edge for edge, causes in TASK_TRANSITIONS.items() if causes - {C.MARK, C.CLEAR}]
    assert _reachable(T.PENDING, automatic) == set(TaskState)


def test_no_self_loops() -> None:
    assert not any(src == dst for src, dst in TASK_TRANSITIONS)
    assert not any(src == dst for src, dst in RUN_TRANSITIONS)


# --- the run table -------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), RUN_PAIRS, ids=[_pair_id(p) for p in RUN_PAIRS])
def test_run_pair(src: RunState, dst: RunState) -> None:
    expected = EXPECTED_RUN_EDGES.get((src, dst), frozenset())
    assert can_transition_run(src, dst) is bool(expected)
    assert RUN_TRANSITIONS.get((src, dst), frozenset()) == expected
    for cause in Cause:
        assert can_transition_run(src, dst, cause) is (cause in expected), cause


def test_run_table_has_no_other_keys() -> None:
    assert len(RUN_PAIRS) == 25
    assert set(RUN_TRANSITIONS) == set(EXPECTED_RUN_EDGES)


@pytest.mark.parametrize("dst", list(RunState))
def test_run_sources_agree_with_table(dst: RunState) -> None:
    for cause in Cause:
        expected = {
            s for (s, d), causes in EXPECTED_RUN_EDGES.items() if d == dst and cause in causes
        }
        assert run_sources(dst, cause) == expected, cause


@pytest.mark.parametrize("state", sorted(FINISHED_RUN_STATES))
def test_finished_run_state_leaves_only_by_clear(state: RunState) -> None:
    exits = {
        (dst, cause) for dst in RunState for cause in Cause if can_transition_run(state, dst, cause)
    }
    # A cancelled run is final: clearing its tasks is refused ("trigger a new run").
    reopened = {(R.QUEUED, C.CLEAR)}
    assert exits == (set() if state is R.CANCELLED else reopened)


def test_every_run_state_reachable_from_queued() -> None:
    assert _reachable(R.QUEUED, list(RUN_TRANSITIONS)) == set(RunState)


# --- the diagram ---------------------------------------------------------------------------

_EDGE_LINE = re.compile(r"^    ([a-z_]+) --> ([a-z_]+): ([a-z_, ]+)$")


def test_mermaid_diagram_lists_every_edge_exactly_once() -> None:
    text = mermaid_diagram()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[:2] == ["stateDiagram-v2", "    [*] --> pending"]
    seen: list[tuple[TaskState, TaskState]] = []
    for line in lines[2:]:
        match = _EDGE_LINE.match(line)
        assert match, f"not an edge line: {line!r}"
        src, dst = TaskState(match[1]), TaskState(match[2])
        causes = match[3].split(", ")
        assert causes == sorted(causes), "labels are sorted"
        assert frozenset(Cause(c) for c in causes) == EXPECTED_TASK_EDGES[(src, dst)]
        seen.append((src, dst))
    assert len(seen) == len(set(seen)) == len(EXPECTED_TASK_EDGES)
    assert set(seen) == set(EXPECTED_TASK_EDGES)


def test_mermaid_diagram_is_deterministic_and_sorted() -> None:
    first = mermaid_diagram()
    assert first == mermaid_diagram()
    edges = first.splitlines()[2:]
    assert edges == sorted(edges)
