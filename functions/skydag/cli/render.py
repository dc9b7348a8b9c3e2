"""How runs and task instances look on the command line, as text and as contract JSON."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from skydag.engine.mapping import belongs
from skydag.engine.models import DagRun, TaskInstance, TryRecord
from skydag.engine.tries import all_tries

# The REASON column of text tables wraps at this width (the whole reason is shown).
REASON_WIDTH = 72


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def try_to_json(record: TryRecord) -> dict[str, Any]:
    return {
        "try_number": record.try_number,
        "state": record.state.value,
        "started_at": iso(record.started_at),
        "ended_at": iso(record.ended_at),
        "exit_code": record.exit_code,
        "job_id": record.job_id,
        "reason": record.reason,
    }


def task_to_json(ti: TaskInstance) -> dict[str, Any]:
    """A task entry of the run JSON: the current try's fields, and every try still known
    (oldest first, the current one last)."""
    return {
        "task": ti.task_id,
        "state": ti.state.value,
        "try_number": ti.try_number,
        "started_at": iso(ti.started_at),
        "ended_at": iso(ti.ended_at),
        "exit_code": ti.exit_code,
        "job_id": ti.job_id,
        "reason": ti.reason,
        # An instance of a mapped task (for_each); None for a whole task.
        "map_index": ti.map_index,
        "tries": [try_to_json(record) for record in all_tries(ti)],
    }


def run_to_json(run: DagRun, tasks: Sequence[TaskInstance] | None = None) -> dict[str, Any]:
    """The contract's run object; ``tasks`` is omitted in listings."""
    body: dict[str, Any] = {
        "dag": run.dag_id,
        "run_id": run.run_id,
        "state": run.state.value,
        "run_type": run.run_type.value,
        "dag_version": run.dag_version,
        "conf": dict(run.conf),
        "logical_date": iso(run.logical_date),
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "reason": run.reason,
    }
    if tasks is not None:
        body["tasks"] = [task_to_json(ti) for ti in current_entries(tasks)]
    return body


def current_entries(tasks: Sequence[TaskInstance]) -> list[TaskInstance]:
    """A run's task entries: each task (a mapped one as a whole, ``map_index`` None),
    each followed by the instances of its mapped task's current expansion, in item order.
    Instances of an expansion a clear replaced are left out."""
    mapped = {ti.task_id: ti for ti in tasks if ti.map_index is None}
    entries = [
        ti
        for ti in tasks
        if ti.map_index is None or (ti.task_id in mapped and belongs(mapped[ti.task_id], ti))
    ]
    place: dict[str, int] = {}
    for ti in entries:
        place.setdefault(ti.task_id, len(place))
    return sorted(
        entries, key=lambda ti: (place[ti.task_id], -1 if ti.map_index is None else ti.map_index)
    )


def _duration(ti: TaskInstance) -> str:
    if ti.started_at is None or ti.ended_at is None:
        return "-"
    return f"{(ti.ended_at - ti.started_at).total_seconds():.2f}s"


def wrap(text: str | None, width: int = REASON_WIDTH) -> list[str]:
    """``text`` as lines of at most ``width`` characters, every character kept (long
    words are split, the text's own line breaks are kept); ``[""]`` for no text."""
    lines: list[str] = []
    for paragraph in (text or "").splitlines() or [""]:
        lines.extend(
            textwrap.wrap(
                paragraph,
                width,
                break_on_hyphens=False,
                drop_whitespace=True,
                replace_whitespace=False,
            )
            or [""]
        )
    return lines


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; a cell holding several lines (a wrapped
    last column) continues on the next lines, under its own column."""
    split = [[cell.split("\n") for cell in row] for row in rows]
    widths = [
        max([len(h), *(len(line) for row in split for line in row[i])])
        for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(headers)]
    for row in split:
        height = max(len(cell) for cell in row)
        for i in range(height):
            lines.append(line([cell[i] if i < len(cell) else "" for cell in row]))
    return lines


def run_table(run: DagRun, tasks: Sequence[TaskInstance]) -> str:
    """A fixed-width table of a run's tasks, then the run's outcome. Reasons wrap."""
    headers = ("TASK", "STATE", "TRY", "EXIT", "DURATION", "REASON")
    rows = [
        (
            ti.task_id,
            ti.state.value,
            str(ti.try_number),
            "-" if ti.exit_code is None else str(ti.exit_code),
            _duration(ti),
            "\n".join(wrap(ti.reason)),
        )
        for ti in tasks
    ]
    lines = table(headers, rows)
    outcome = f"run {run.dag_id}/{run.run_id}: {run.state.value}"
    if run.reason:
        outcome += f" ({run.reason})"
    return "\n".join([*lines, "", outcome])
