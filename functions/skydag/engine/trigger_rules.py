"""Airflow's ten trigger rules, evaluated from upstream states alone, with the reason why.

A rule may decide before every upstream is done (``one_success`` fires on the first
success; ``all_success`` gives up on the first failure), as Airflow does, but only when
no later upstream outcome could change the verdict: the result never depends on the
order in which upstreams finish (Airflow's ``all_success`` skips on the first skipped
upstream even if another is about to fail; here it waits and becomes upstream_failed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from skydag.engine.states import FINISHED_TASK_STATES, TaskState
from skydag.spec.models import TriggerRule


class Verdict(StrEnum):
    READY = "ready"
    WAIT = "wait"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether a task may run and, when not, why: which upstreams under which rule."""

    verdict: Verdict
    rule: TriggerRule
    reason: str
    waiting_for: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.verdict.value}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _Counts:
    total: int
    success: int
    failed: int  # failed, upstream_failed or stopped
    skipped: int
    pending: tuple[str, ...]  # the unfinished upstreams, where they are known by id
    upstream_failed: int = 0  # the part of ``failed`` that never ran

    @property
    def ran_and_failed(self) -> int:
        return self.failed - self.upstream_failed

    @property
    def done(self) -> int:
        return self.success + self.failed + self.skipped

    @property
    def unfinished(self) -> int:
        return self.total - self.done

    @property
    def all_done(self) -> bool:
        return self.done >= self.total


def _count(
    upstream_ids: Sequence[str],
    states: Mapping[str, TaskState],
    tallies: Iterable[Mapping[TaskState, int]] | None = None,
) -> _Counts:
    finished: Counter[TaskState] = Counter()
    pending: list[str] = []
    if tallies is None:
        for task_id in upstream_ids:
            state = states.get(task_id)
            if state is None or state not in FINISHED_TASK_STATES:
                pending.append(task_id)
            else:
                finished[state] += 1
    else:
        for counts in tallies:
            finished.update({s: n for s, n in counts.items() if s in FINISHED_TASK_STATES})
    success, skipped = finished[TaskState.SUCCESS], finished[TaskState.SKIPPED]
    failed = sum(finished.values()) - success - skipped
    upstream_failed = finished[TaskState.UPSTREAM_FAILED]
    return _Counts(len(upstream_ids), success, failed, skipped, tuple(pending), upstream_failed)


_Rule = Callable[[_Counts], tuple[Verdict, str]]


def _wait(c: _Counts) -> tuple[Verdict, str]:
    return Verdict.WAIT, f"waiting for {c.unfinished} of {c.total} upstream tasks"


def _all_success(c: _Counts) -> tuple[Verdict, str]:
    if c.failed:
        return Verdict.UPSTREAM_FAILED, f"{c.failed} upstream task(s) failed"
    if not c.all_done:
        # A skip must not decide early: a later failure makes the task upstream_failed,
        # and the outcome may not depend on the order the upstreams finish in.
        return _wait(c)
    if c.skipped:
        return Verdict.SKIP, f"{c.skipped} upstream task(s) skipped"
    return Verdict.READY, "all upstream tasks succeeded"


def _all_failed(c: _Counts) -> tuple[Verdict, str]:
    if c.success or c.skipped:
        return Verdict.SKIP, "an upstream task did not fail"
    return (Verdict.READY, "all upstream tasks failed") if c.all_done else _wait(c)


def _all_done(c: _Counts) -> tuple[Verdict, str]:
    return (Verdict.READY, "all upstream tasks are done") if c.all_done else _wait(c)


def _one_success(c: _Counts) -> tuple[Verdict, str]:
    if c.success:
        return Verdict.READY, "an upstream task succeeded"
    if not c.all_done:
        return _wait(c)
    if c.skipped == c.total:
        return Verdict.SKIP, "all upstream tasks skipped"
    return Verdict.UPSTREAM_FAILED, "no upstream task succeeded"


def _one_failed(c: _Counts) -> tuple[Verdict, str]:
    if c.failed:
        return Verdict.READY, "an upstream task failed"
    return (Verdict.SKIP, "no upstream task failed") if c.all_done else _wait(c)


def _one_done(c: _Counts) -> tuple[Verdict, str]:
    # Airflow counts only tasks that ran: upstream_failed ones never did.
    if c.success or c.ran_and_failed:
        return Verdict.READY, "an upstream task finished"
    return (Verdict.SKIP, "no upstream task ran") if c.all_done else _wait(c)


def _none_failed(c: _Counts) -> tuple[Verdict, str]:
    if c.failed:
        return Verdict.UPSTREAM_FAILED, f"{c.failed} upstream task(s) failed"
    return (Verdict.READY, "no upstream task failed") if c.all_done else _wait(c)


def _none_failed_min_one_success(c: _Counts) -> tuple[Verdict, str]:
    if c.failed:
        return Verdict.UPSTREAM_FAILED, f"{c.failed} upstream task(s) failed"
    if not c.all_done:
        return _wait(c)
    if c.success:
        return Verdict.READY, "no upstream task failed and at least one succeeded"
    return Verdict.SKIP, "all upstream tasks skipped"


def _none_skipped(c: _Counts) -> tuple[Verdict, str]:
    if c.skipped:
        return Verdict.SKIP, f"{c.skipped} upstream task(s) skipped"
    return (Verdict.READY, "no upstream task skipped") if c.all_done else _wait(c)


def _always(c: _Counts) -> tuple[Verdict, str]:
    return Verdict.READY, "trigger rule always"


RULES: dict[TriggerRule, _Rule] = {
    TriggerRule.ALL_SUCCESS: _all_success,
    TriggerRule.ALL_FAILED: _all_failed,
    TriggerRule.ALL_DONE: _all_done,
    TriggerRule.ONE_SUCCESS: _one_success,
    TriggerRule.ONE_FAILED: _one_failed,
    TriggerRule.ONE_DONE: _one_done,
    TriggerRule.NONE_FAILED: _none_failed,
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: _none_failed_min_one_success,
    TriggerRule.NONE_SKIPPED: _none_skipped,
    TriggerRule.ALWAYS: _always,
}


def evaluate(
    rule: TriggerRule,
    upstream_ids: Sequence[str],
    states: Mapping[str, TaskState],
    tallies: Iterable[Mapping[TaskState, int]] | None = None,
) -> Readiness:
    """Decide a task's readiness from the states of its upstreams (missing = not done),
    or, for a wide join (``tallies``: engine/tallies.py), from how many finished in each
    state, by group. A group's counts may lag behind its upstreams, but only in what no
    rule decides by: which finished states show and whether all are done never lag."""
    if not upstream_ids:
        return Readiness(Verdict.READY, rule, "no upstream tasks")
    counts = _count(upstream_ids, states, tallies)
    verdict, reason = RULES[rule](counts)
    waiting_for = counts.pending if verdict is Verdict.WAIT else ()
    if waiting_for:
        reason = f"{reason} under {rule.value}: {', '.join(waiting_for[:10])}"
        if len(waiting_for) > 10:
            reason += f" and {len(waiting_for) - 10} more"
    elif verdict is Verdict.WAIT:
        reason = f"{reason} under {rule.value}"
    return Readiness(verdict, rule, reason, waiting_for)
