"""Dependency-graph checks: unknown dependencies and cycles, each error naming the tasks."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Protocol


class _HasDependencies(Protocol):
    @property
    def depends_on(self) -> list[str]: ...


class GraphError(ValueError):
    """A dependency problem; ``task`` names where it was found."""

    def __init__(self, message: str, task: str | None = None) -> None:
        super().__init__(message)
        self.task = task


def check_dependencies(tasks: Mapping[str, _HasDependencies]) -> None:
    for task_id, task in tasks.items():
        for dep in task.depends_on:
            if dep == task_id:
                raise GraphError(f"task '{task_id}': depends_on lists itself", task_id)
            if dep not in tasks:
                known = ", ".join(sorted(tasks)) or "none"
                raise GraphError(
                    f"task '{task_id}': depends_on names unknown task '{dep}' (tasks: {known})",
                    task_id,
                )
    cycle = find_cycle(tasks)
    if cycle:
        raise GraphError("dependency cycle: " + " -> ".join(cycle), cycle[0])


def find_cycle(tasks: Mapping[str, _HasDependencies]) -> list[str] | None:
    """A cycle as a closed path (first == last), or None. Iterative: DAGs may be deep."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(tasks, white)
    for start in tasks:
        if colour[start] != white:
            continue
        path: list[str] = [start]
        iterators = [iter(tasks[start].depends_on)]
        colour[start] = grey
        while iterators:
            nxt = next(iterators[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iterators.pop()
            elif colour[nxt] == grey:
                # nxt is an upstream of path[-1]; report in dependency-flow order.
                loop = [*path[path.index(nxt) :], nxt]
                return list(reversed(loop))
            elif colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                iterators.append(iter(tasks[nxt].depends_on))
    return None


def topological_order(tasks: Mapping[str, _HasDependencies]) -> list[str]:
    """Kahn's algorithm, stable in file order: upstreams always come before downstreams."""
    remaining = {t: len(spec.depends_on) for t, spec in tasks.items()}
    children: dict[str, list[str]] = {}
    for task_id, spec in tasks.items():
        for dep in spec.depends_on:
            children.setdefault(dep, []).append(task_id)
    # A deque: popping the front of a list is linear, and a wide DAG has many ready at once.
    ready = deque(t for t, n in remaining.items() if n == 0)
    order: list[str] = []
    while ready:
        current = ready.popleft()
        order.append(current)
        for child in children.get(current, []):
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    return order
