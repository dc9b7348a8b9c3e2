"""Which tries take a max_active_tasks slot of their run.

A slot costs a run write when it is taken and when it is freed (or handed over), so a
run takes slots only where the limit could ever hold a task back:

- a DAG with no more tasks than slots, and no ``for_each``, never waits for one;
- a DAG whose shape alone never runs more tasks at once than it has slots (its *natural
  width*, below) takes none for the tries its own trigger rules start: only for the
  tries of tasks an operator cleared or marked, and of the tasks their finishes start
  (``TaskInstance.slotted``), from a pool of the slots its shape leaves over;
- any other DAG takes one for every try.

Why the natural width bounds the tasks running at once: when every trigger rule waits
for all of a task's upstreams to finish, a task queued by its rules has every ancestor
finished, and an ancestor only runs again if an operator clears it (or a task ends by
hand, before its upstreams did): such tasks and the ones their finishes start are
``slotted``. So the unslotted tasks queued or running at any moment never include one
and its ancestor: they lie on distinct paths of any cover of the DAG by paths along its
edges, and a DAG is covered by as many as it has tasks less a maximum matching of its
edges (each edge in the matching joins two tasks into one path)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from skydag.engine.models import TaskInstance
from skydag.spec.models import DagSpec, TaskMode, TriggerRule

# Rules that let a task run only once every upstream has finished, whatever their number.
_WAIT_FOR_ALL = frozenset(
    {
        TriggerRule.ALL_SUCCESS,
        TriggerRule.ALL_FAILED,
        TriggerRule.ALL_DONE,
        TriggerRule.NONE_FAILED,
        TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        TriggerRule.NONE_SKIPPED,
    }
)
_ONE_OF = frozenset({TriggerRule.ONE_SUCCESS, TriggerRule.ONE_FAILED, TriggerRule.ONE_DONE})
# Augmenting steps the matching may take before it settles for the cover it has (any
# matching gives a cover, so the bound stays sound, only less tight).
_MATCHING_STEPS = 2_000_000


def waits_for_all(rule: TriggerRule, upstreams: int) -> bool:
    """Whether a task under ``rule`` with ``upstreams`` upstream tasks can be queued only
    after all of them finished (``one_*`` with a single upstream waits for it;
    ``always`` waits for nothing)."""
    if rule in _WAIT_FOR_ALL:
        return True
    if rule in _ONE_OF:
        return upstreams <= 1
    return upstreams == 0


def natural_width(spec: DagSpec) -> int | None:
    """How many tasks of a run its own trigger rules can have queued or running at once,
    at most (a bound: the number of paths of a cover of the DAG), or None where the shape
    bounds nothing: a ``for_each`` task, a service (its downstream tasks start while it
    runs), or a rule that starts a task before all its upstreams finished."""
    cached: tuple[int | None] | None = spec.__dict__.get("_natural_width_cache")
    if cached is None:
        cached = (_natural_width(spec),)
        object.__setattr__(spec, "_natural_width_cache", cached)
    return cached[0]


def _natural_width(spec: DagSpec) -> int | None:
    for task in spec.tasks.values():
        if task.for_each is not None or task.mode is TaskMode.SERVICE:
            return None
        if not waits_for_all(task.trigger_rule, len(task.depends_on)):
            return None
    successors = {task_id: spec.downstream(task_id) for task_id in spec.tasks}
    return len(spec.tasks) - _maximum_matching(spec.topological_order(), successors)


def _maximum_matching(order: Sequence[str], successors: Mapping[str, Sequence[str]]) -> int:
    """The size of a maximum matching of the edges (task -> successor), each task matched
    at most once on each side: greedily along ``order``, then by augmenting paths (Kuhn)
    within ``_MATCHING_STEPS``."""
    next_of: dict[str, str] = {}  # task -> its successor in the matching
    prev_of: dict[str, str] = {}  # successor -> its task
    for task in order:
        for child in successors[task]:
            if child not in prev_of:
                next_of[task], prev_of[child] = child, task
                break
    steps = 0
    for start in order:
        if start not in next_of and successors[start]:
            path, taken = _augmenting_path(start, successors, prev_of)
            steps += taken
            for task, child in path:
                next_of[task], prev_of[child] = child, task
            if steps > _MATCHING_STEPS:
                break
    return len(next_of)


def _augmenting_path(
    start: str, successors: Mapping[str, Sequence[str]], prev_of: Mapping[str, str]
) -> tuple[list[tuple[str, str]], int]:
    """A path from the unmatched ``start`` to an unmatched successor alternating between
    edges out of and in the matching, depth first and iteratively, as the (task, child)
    pairs to match; empty when there is none. Also: the steps it took."""
    seen: set[str] = set()
    stack: list[tuple[str, int]] = [(start, 0)]  # a task, and its next successor to try
    trail: list[str] = []  # the successor taken at each level of the stack
    steps = 0
    while stack:
        task, index = stack[-1]
        children = successors[task]
        if index >= len(children):
            stack.pop()
            if trail:
                trail.pop()
            continue
        stack[-1] = (task, index + 1)
        child = children[index]
        steps += 1
        if child in seen:
            continue
        seen.add(child)
        trail.append(child)
        owner = prev_of.get(child)
        if owner is None:
            return [(task, child) for (task, _), child in zip(stack, trail, strict=True)], steps
        stack.append((owner, 0))
    return [], steps


def slots_bind(spec: DagSpec) -> bool:
    """Whether any try of this DAG's runs may take a slot (``DagSpec.task_slots_bind``):
    when not, its runs take and free no slot at all, whatever an operator does."""
    return spec.task_slots_bind()


def slot_pool(spec: DagSpec) -> int:
    """How many slots the tries that take one share: the DAG's ``max_active_tasks``, less
    its natural width where only ``slotted`` tries take one (the others never exceed it)."""
    width = _unslotted_width(spec)
    return spec.max_active_tasks - (width or 0)


def takes_slot(spec: DagSpec, ti: TaskInstance) -> bool:
    """Whether this task's next try takes a slot of its run (as the task is now)."""
    if not slots_bind(spec):
        return False
    return _unslotted_width(spec) is None or ti.slotted


def passes_slotted(spec: DagSpec, ti: TaskInstance) -> bool:
    """Whether this task's finish makes the downstream tasks it tells ``slotted``."""
    return ti.slotted and _unslotted_width(spec) is not None


def _unslotted_width(spec: DagSpec) -> int | None:
    """The natural width where it leaves a slot over for the slotted tries (else every
    try takes a slot): None when slots never bind, or the shape bounds nothing."""
    if not slots_bind(spec):
        return None
    width = natural_width(spec)
    if width is None or width >= spec.max_active_tasks:
        return None
    return width
