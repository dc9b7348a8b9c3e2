"""How runs and task instances look on the command line, as text and as contract JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from skydag.engine.models import DagRun, TaskInstance


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def task_to_json(ti: TaskInstance) -> dict[str, Any]:
    return {
        "task": ti.task_id,
        "state": ti.state.value,
        "try_number": ti.try_number,
        "started_at": _iso(ti.started_at),
        "ended_at": _iso(ti.ended_at),
        "exit_code": ti.exit_code,
        "job_id": ti.job_id,
        "reason": ti.reason,
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
        "logical_date": _iso(run.logical_date),
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "reason": run.reason,
    }
    if tasks is not None:
        body["tasks"] = [task_to_json(ti) for ti in tasks]
    return body


def _duration(ti: TaskInstance) -> str:
    if ti.started_at is None or ti.ended_at is None:
        return "-"
    return f"{(ti.ended_at - ti.started_at).total_seconds():.2f}s"


def run_table(run: DagRun, tasks: Sequence[TaskInstance]) -> str:
    """A fixed-width table of a run's tasks, then the run's outcome."""
    headers = ("TASK", "STATE", "TRY", "EXIT", "DURATION", "REASON")
    rows = [
        (
            ti.task_id,
            ti.state.value,
            str(ti.try_number),
            "-" if ti.exit_code is None else str(ti.exit_code),
            _duration(ti),
            (ti.reason or "")[:80],
        )
        for ti in tasks
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    outcome = f"run {run.dag_id}/{run.run_id}: {run.state.value}"
    if run.reason:
        outcome += f" ({run.reason})"
    return "\n".join([*lines, "", outcome])
