"""What a backfill does with each logical date of its range: create a run or skip it.

A pure decision on the intervals the schedule gives and the runs that already exist for
those dates; the scheduler (``service/runs.py``) applies it, and ``skydag backfill
--dry-run`` prints it, so both always agree.

Run ids make a backfill command safe to deliver twice: the run a date gets is named by
the date alone (``--reprocess none``: one backfill run per date, ever) or by the date
and the backfill's id (``failed``/``all``: each backfill request reruns a date at most
once). A redelivered command decides on the runs as they are now, and whatever it
decides names the run its first delivery created: it creates nothing more.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from skydag.engine.models import DagRun, RunType
from skydag.engine.states import FINISHED_RUN_STATES, RunState

if TYPE_CHECKING:
    from skydag.spec.schedule import DataInterval

# A backfill's id: the suffix of the run ids it reruns dates under.
BACKFILL_ID_PATTERN = r"^[a-z0-9]{1,16}$"
_BACKFILL_ID = re.compile(BACKFILL_ID_PATTERN)
_NEVER = datetime.min.replace(tzinfo=UTC)
# The most a backfill's --max-active-runs may be (as a DAG's max_active_runs).
MAX_BACKFILL_ACTIVE_RUNS = 1000


class Reprocess(StrEnum):
    """Which dates that already have a run are run again."""

    NONE = "none"  # none: a date with a run is skipped
    FAILED = "failed"  # a date whose last run failed
    ALL = "all"  # every date (but one still running)


@dataclass(frozen=True, slots=True)
class PlannedRun:
    interval: DataInterval
    run_id: str


@dataclass(frozen=True, slots=True)
class BackfillPlan:
    create: tuple[PlannedRun, ...]
    skip: tuple[DataInterval, ...]


def check_backfill_id(value: str, where: str) -> str:
    """``value`` when it is a valid backfill id; ValueError naming ``where`` otherwise."""
    if not _BACKFILL_ID.fullmatch(value):
        raise ValueError(
            f"{where} {value[:40]!r} is not a valid backfill id (must match {BACKFILL_ID_PATTERN})"
        )
    return value


def derived_backfill_id(command_id: str) -> str:
    """A backfill id for a command that names none: a digest of its event id (the same in
    every delivered copy)."""
    return hashlib.sha256(command_id.encode()).hexdigest()[:12]


def backfill_run_id(logical_date: datetime, reprocess: Reprocess, backfill_id: str) -> str:
    """The run a backfill gives a date: ``backfill__<date>``, or with ``__<backfill id>``
    when the backfill reprocesses (so each request reruns a date at most once)."""
    # Imported here: the CLI imports this module for its choices, and the scheduler's
    # module loads the DAG models (pydantic), which `skydag --help` should not pay for.
    from skydag.engine.scheduler import make_run_id

    plain = make_run_id(RunType.BACKFILL, at=logical_date)
    return plain if reprocess is Reprocess.NONE else f"{plain}__{backfill_id}"


def last_run(runs: Iterable[DagRun]) -> DagRun | None:
    """The run created last (the run id breaks a tie, for determinism)."""
    return max(runs, key=lambda run: (run.created_at or _NEVER, run.run_id), default=None)


def should_create(existing: Sequence[DagRun], reprocess: Reprocess) -> bool:
    """Whether a date with these runs gets a new one.

    A date with no run always does; a date whose last run is still queued or running
    never does (it is being processed); otherwise ``reprocess`` decides."""
    latest = last_run(existing)
    if latest is None:
        return True
    if latest.state not in FINISHED_RUN_STATES:
        return False
    if reprocess is Reprocess.ALL:
        return True
    return reprocess is Reprocess.FAILED and latest.state is RunState.FAILED


def plan_backfill(
    intervals: Sequence[DataInterval],
    existing: Iterable[DagRun],
    reprocess: Reprocess,
    backfill_id: str,
) -> BackfillPlan:
    """Each interval created (with its run id) or skipped, oldest first. ``existing``: the
    DAG's runs whose logical dates are in the range (others are ignored)."""
    by_date: dict[datetime, list[DagRun]] = {}
    for run in existing:
        if run.logical_date is not None:
            by_date.setdefault(run.logical_date, []).append(run)
    create: list[PlannedRun] = []
    skip: list[DataInterval] = []
    for interval in intervals:
        if should_create(by_date.get(interval.start, []), reprocess):
            run_id = backfill_run_id(interval.start, reprocess, backfill_id)
            create.append(PlannedRun(interval, run_id))
        else:
            skip.append(interval)
    return BackfillPlan(tuple(create), tuple(skip))
