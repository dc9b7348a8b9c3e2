"""Counts that would grow with the DAG kept in tally items, a bounded group each: a wide
join's upstream states, and a big run's finished tasks (``finish_group``).

A task with more upstreams than ``TALLY_GROUP`` is not told each upstream's state on its
own item (one report per upstream, as a narrower task is): the report goes to the tally
item of the upstream's group (upstreams by position in ``depends_on``, ``TALLY_GROUP`` to
a group), and the task holds one summary per group (``Tally``: how many upstreams finished
in each state), written only when the group's tally moves in a way its trigger rule can
see (``tally_moved``).

Why: a write is charged at the size of the item it lands on, and a join's upstream map
grows with its width (a 1,000-wide join ends at ~9 KB, ~5 write units a report; ~49 at
10,000). A tally item holds at most a group's reports (under 1 KB: one write unit), and a
group's summary reaches the join a few times at most whatever the group's size: when a
finished state shows in the group for the first time, and when the group is done.

Why that is enough: every trigger rule decides from which finished states the upstreams
reached and whether all of them are done (engine/trigger_rules.py), never from how many
reached each; the counts a summary carries are as of its group's last move, shown in the
task's reason only. A group with no summary on the join has no finished upstream yet.
"""

from __future__ import annotations

from collections import Counter

from skydag.engine.models import FinishGroup, Tally, TallyMembers
from skydag.engine.states import FINISHED_TASK_STATES, TaskState
from skydag.limits import FINISH_GROUP, FINISH_TALLY_AT, TALLY_GROUP
from skydag.spec.models import DagSpec, TaskMode


def trigger_state(spec: DagSpec, upstream_id: str, state: TaskState) -> TaskState:
    """An upstream's state as a trigger rule sees it: a service upstream (``mode:
    service``) that runs counts as succeeded, its downstream tasks start once it is up
    (AIP-35)."""
    if state is TaskState.RUNNING and spec.tasks[upstream_id].mode is TaskMode.SERVICE:
        return TaskState.SUCCESS
    return state


def tallied(spec: DagSpec, task_id: str, group: int = TALLY_GROUP) -> bool:
    """Whether ``task_id`` is told its upstreams' states through tally items."""
    return len(spec.upstream(task_id)) > group


def tally_place(
    spec: DagSpec, task_id: str, upstream_id: str, group: int = TALLY_GROUP
) -> tuple[int, int]:
    """(group number, position in the group) of an upstream of a wide join."""
    number, position = divmod(spec.upstream_position(task_id, upstream_id), group)
    return number, position


def group_size(spec: DagSpec, task_id: str, number: int, group: int = TALLY_GROUP) -> int:
    """How many upstreams the group ``number`` of a wide join has (the last may be short)."""
    return max(0, min(group, len(spec.upstream(task_id)) - number * group))


def tally_of(
    spec: DagSpec, task_id: str, number: int, tally: TallyMembers, group: int = TALLY_GROUP
) -> Tally:
    """The summary of a group's tally item: its finished upstreams by state, as their
    trigger rule sees them (a clear's tombstone, like an unfinished state, counts none)."""
    upstream = spec.upstream(task_id)
    counts: Counter[TaskState] = Counter()
    for position, report in tally.members.items():
        index = number * group + position
        if report.cleared or not 0 <= position < group or index >= len(upstream):
            continue
        state = trigger_state(spec, upstream[index], report.state)
        if state in FINISHED_TASK_STATES:
            counts[state] += 1
    return Tally(tally.version, dict(counts))


def _seen(tally: Tally | None, size: int) -> tuple[frozenset[TaskState], bool]:
    """What a trigger rule can see of a group: the finished states it shows, and whether
    every upstream in it finished."""
    if tally is None:
        return frozenset(), size == 0
    states = frozenset(state for state, count in tally.counts.items() if count > 0)
    return states, sum(tally.counts.values()) >= size


def tally_moved(before: Tally | None, after: Tally, size: int) -> bool:
    """Whether a group's summary changed in a way a trigger rule can see (``size``: the
    group's upstreams): the join must be told ``after``."""
    return _seen(before, size) != _seen(after, size)


def tally_news(held: Tally | None, tally: Tally, size: int) -> bool:
    """Whether a join holding ``held`` for a group must be told ``tally``: it is of a
    later version and differs in what a trigger rule can see."""
    if held is not None and held.version >= tally.version:
        return False
    return tally_moved(held, tally, size)


def finish_group(
    spec: DagSpec, task_id: str, *, at: int = FINISH_TALLY_AT, size: int = FINISH_GROUP
) -> FinishGroup | None:
    """Where a run of ``spec`` counts a task's finish: None on the run's own item (a DAG
    of up to ``at`` tasks: a few bytes a task), else in the finish tally of the task's
    group (tasks by their index in the file, ``size`` to a group). The run item then holds
    a count per done group only, so a finish's write is charged the same whatever the
    DAG's size (the index set of a 10,000-task run weighs ~40 KB, ~20 write units a
    finish on average)."""
    total = len(spec.tasks)
    if total <= at:
        return None
    number = spec.task_index(task_id) // size
    return FinishGroup(number, min(size, total - number * size))
