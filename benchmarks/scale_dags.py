"""Generated DAG files of any size, for the scale benchmark and the scale tests.

- ``chain``: ``t00000 -> t00001 -> ... -> t<n-1>`` (the deepest graph: n levels);
- ``fan``: ``start -> t00000..t<n-3> -> end`` (the widest: one task with n-2 upstreams).

Every task is a ``noop`` in the file as written (nothing to dispatch), so a file stays
small per task and the numbers measure skydag, not the targets.
"""

from __future__ import annotations

SHAPES = ("chain", "fan")


def task_id(index: int) -> str:
    return f"t{index:05d}"


def dag_yaml(shape: str, tasks: int, dag: str | None = None) -> str:
    """The text of a DAG file of ``tasks`` tasks shaped as ``shape`` (see SHAPES)."""
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: expected one of {', '.join(SHAPES)}")
    if tasks < 3:
        raise ValueError(f"tasks {tasks}: expected at least 3")
    lines = [f"dag: {dag or f'{shape}_{tasks}'}", "tasks:"]
    if shape == "chain":
        lines.append(f"  {task_id(0)}: {{noop: {{}}}}")
        lines.extend(
            f"  {task_id(i)}: {{noop: {{}}, depends_on: [{task_id(i - 1)}]}}"
            for i in range(1, tasks)
        )
    else:
        lines.append("  start: {noop: {}}")
        middle = [task_id(i) for i in range(tasks - 2)]
        lines.extend(f"  {name}: {{noop: {{}}, depends_on: [start]}}" for name in middle)
        lines.append("  end:")
        lines.append("    noop: {}")
        lines.append("    depends_on:")
        lines.extend(f"      - {name}" for name in middle)
    return "\n".join(lines) + "\n"
