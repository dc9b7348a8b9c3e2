"""Wide joins' tallies (engine/tallies.py): a group's summary, when it moves, and the
trigger rules decided from the groups' counts as from the upstream states."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from skydag.engine.models import Tally, TallyMembers, UpstreamReport
from skydag.engine.states import TaskState
from skydag.engine.tallies import (
    group_size,
    tallied,
    tally_moved,
    tally_news,
    tally_of,
    tally_place,
)
from skydag.engine.trigger_rules import evaluate
from skydag.spec.models import DagSpec, TriggerRule

T = TaskState
JOB: dict[str, Any] = {"noop": None}


def wide(width: int) -> DagSpec:
    ups = [f"u{i}" for i in range(width)]
    tasks: dict[str, Any] = {u: dict(JOB) for u in ups}
    tasks["u0"] = {**JOB, "mode": "service"}
    tasks["join"] = {"depends_on": ups, **JOB}
    return DagSpec.model_validate({"dag": "wide", "tasks": tasks})


def test_upstreams_are_grouped_by_their_place_in_depends_on() -> None:
    spec = wide(10)
    assert tallied(spec, "join", group=4)
    assert not tallied(spec, "join", group=10)
    assert tally_place(spec, "join", "u0", group=4) == (0, 0)
    assert tally_place(spec, "join", "u9", group=4) == (2, 1)
    assert [group_size(spec, "join", n, group=4) for n in range(4)] == [4, 4, 2, 0]


def test_a_groups_summary_counts_its_finished_upstreams_as_their_rule_sees_them() -> None:
    spec = wide(10)
    members = {
        0: UpstreamReport(T.RUNNING, 3),  # a running service counts as succeeded
        1: UpstreamReport(T.RUNNING, 2),  # a running job does not count
        2: UpstreamReport.tombstone(5),  # cleared: not done
        3: UpstreamReport(T.UPSTREAM_FAILED, 1),
    }
    assert tally_of(spec, "join", 0, TallyMembers(7, members), group=4) == Tally(
        7, {T.SUCCESS: 1, T.UPSTREAM_FAILED: 1}
    )
    # Group 2 has two upstreams (u8, u9): a position past them is no upstream.
    later = {0: UpstreamReport(T.SKIPPED, 1), 3: UpstreamReport(T.SUCCESS, 1)}
    assert tally_of(spec, "join", 2, TallyMembers(2, later), group=4) == Tally(2, {T.SKIPPED: 1})


def test_a_group_moves_when_a_state_shows_first_or_when_it_is_done() -> None:
    assert not tally_moved(None, Tally(1), 4)
    assert tally_moved(None, Tally(1, {T.SUCCESS: 1}), 4)
    assert not tally_moved(Tally(1, {T.SUCCESS: 1}), Tally(2, {T.SUCCESS: 3}), 4)
    assert tally_moved(Tally(2, {T.SUCCESS: 3}), Tally(3, {T.SUCCESS: 4}), 4)  # done
    assert tally_moved(Tally(2, {T.SUCCESS: 3}), Tally(3, {T.SUCCESS: 3, T.FAILED: 1}), 5)
    assert tally_moved(Tally(3, {T.SUCCESS: 4}), Tally(4, {T.SUCCESS: 3}), 4)  # a clear


def test_a_join_is_told_only_a_later_tally_that_moved_from_what_it_holds() -> None:
    held = Tally(4, {T.SUCCESS: 2})
    assert tally_news(None, Tally(1, {T.SUCCESS: 1}), 4)
    assert not tally_news(held, Tally(6, {T.SUCCESS: 3}), 4)
    assert tally_news(held, Tally(6, {T.SUCCESS: 4}), 4)
    assert not tally_news(held, Tally(3, {T.SUCCESS: 4}), 4)  # older than the one held


STATES = (None, T.SUCCESS, T.FAILED, T.SKIPPED, T.UPSTREAM_FAILED, T.RUNNING)


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_every_rule_decides_from_the_groups_as_from_the_upstream_states(
    rule: TriggerRule,
) -> None:
    """Every combination of five upstreams' states (unreported, finished or running),
    in groups of two: the verdict from the groups' counts is the verdict from the states.
    Counts are what a summary holds once its group moved last (exact, here)."""
    ups = [f"u{i}" for i in range(5)]
    for combination in itertools.product(STATES, repeat=len(ups)):
        states = {u: s for u, s in zip(ups, combination, strict=True) if s is not None}
        groups: list[dict[TaskState, int]] = [{}, {}, {}]
        for index, state in enumerate(combination):
            if state is not None and state is not T.RUNNING:
                counts = groups[index // 2]
                counts[state] = counts.get(state, 0) + 1
        direct = evaluate(rule, ups, states)
        tallied_verdict = evaluate(rule, ups, {}, groups)
        assert tallied_verdict.verdict is direct.verdict, (combination, direct, tallied_verdict)
