"""A task instance's tries: the bounded history of the tries it left behind, and the one
clock rule for a try's times.

History. The current try lives in the task instance's own fields (``try_number``,
``state``, ``started_at``, ...). When it is left behind -- a new try starts (a retry, a
``restart_on`` restart), the task is cleared, or the task is marked or stopped while it
waits for a retry -- it becomes a ``TryRecord`` appended to ``TaskInstance.tries`` by the
very transition that leaves it (``Transition.apply``), so the store writes it in that
transition's one conditional UpdateItem. The history keeps the newest ``MAX_TRIES_KEPT``
tries, fewer when their text would pass ``MAX_HISTORY_CHARS`` (oldest dropped first, the
newest always kept): a task instance stays far below DynamoDB's 400 KB item limit, and
every write of it cheap. ``try_number`` counts every try ever made, so a history that
starts at try k says tries 1 to k-1 were dropped.

Clock. A try's times are the service's when it gives them (its event's time, or what
Describe* returns) and the scheduler's otherwise, kept inside what the scheduler has seen:
a reported time is never later than the scheduler's receipt of it (``service_time``), and
``queued_at <= started_at <= ended_at`` always holds (``ordered_times``, applied to every
transition by ``Transition.apply``). Clock skew between a service and the scheduler, and
events that come late or out of order, can shorten a duration to zero but never make it
negative.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from skydag.engine.models import TaskInstance, TryRecord
from skydag.engine.states import Cause, TaskState

T = TaskState

MAX_TRIES_KEPT = 50
MAX_HISTORY_CHARS = 32_000
# What a record's fixed fields (number, state, two times, exit code) take once stored.
_RECORD_OVERHEAD = 120

# The states a task instance can be in through its current try. Pending and waiting (and
# skipped or upstream_failed, reachable only from those) come before any try, or after a
# clear has already moved the try into the history.
_STATES_OF_A_TRY = frozenset({T.QUEUED, T.RUNNING, T.UP_FOR_RETRY, T.SUCCESS, T.FAILED, T.STOPPED})
# The instance's fields that describe its current try; reset once the try is history.
CURRENT_TRY_FIELDS = ("queued_at", "started_at", "ended_at", "exit_code", "job_id", "reason")


def try_state(state: TaskState) -> TaskState:
    """A try's own outcome: up_for_retry is the task's next step, the try itself failed."""
    return T.FAILED if state is T.UP_FOR_RETRY else state


def current_try(ti: TaskInstance) -> TryRecord | None:
    """The try the instance's fields describe; None before the first dispatch and once
    the try is in the history."""
    if ti.try_number < 1 or ti.state not in _STATES_OF_A_TRY:
        return None
    if ti.tries and ti.tries[-1].try_number >= ti.try_number:
        return None
    return TryRecord(
        try_number=ti.try_number,
        state=try_state(ti.state),
        started_at=ti.started_at,
        ended_at=ti.ended_at,
        exit_code=ti.exit_code,
        job_id=ti.job_id,
        reason=ti.reason,
    )


def all_tries(ti: TaskInstance) -> list[TryRecord]:
    """Every try still known, oldest first: the history, then the current try."""
    current = current_try(ti)
    return [*ti.tries, current] if current is not None else list(ti.tries)


def job_of_try(ti: TaskInstance, try_number: int) -> str | None:
    """The job id recorded for one of the task's tries (current or in the history)."""
    for record in all_tries(ti):
        if record.try_number == try_number:
            return record.job_id
    return None


# The states of a try whose job may be running.
LIVE_TRY_STATES = frozenset({T.QUEUED, T.RUNNING})


def job_left_live(ti: TaskInstance) -> dict[str, Any]:
    """The change that hands the job of a live try over to be cancelled, for a transition
    that ends the try from outside (restart, stop, mark, timeout): the scheduler cancels
    ``superseded_job`` when it sees the change, not after the write, so the cancel is as
    durable as the write. A queued try without a job id is found by its token."""
    if ti.state not in LIVE_TRY_STATES:
        return {}
    job = {"job_id": ti.job_id, "token": ti.dispatch_token, "try_number": ti.try_number}
    return {"superseded_job": job}


def leaves_try_behind(src: TaskState, dst: TaskState, cause: Cause) -> bool:
    """Whether an edge of the transition table ends the current try's tenure: a new try
    starts (to queued), the task is reset (clear), or the task's outcome is set after its
    try already ended (mark or stop while up for retry)."""
    return dst is T.QUEUED or cause is Cause.CLEAR or src is T.UP_FOR_RETRY


def retire_current_try(
    ti: TaskInstance, *, at: datetime | None, signal: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The changes that move the current try into the history and clear the fields that
    described it; nothing when there is no current try. A try still queued or running
    when a new one replaces it (a restart) was stopped then (``at``)."""
    record = current_try(ti)
    if record is None:
        return {}
    if ti.state in (T.QUEUED, T.RUNNING):
        signal_id = signal.get("id") if signal else None
        why = f"restarted by signal {signal_id}" if signal_id else "replaced by a new try"
        record = replace(record, state=T.STOPPED, ended_at=at, reason=record.reason or why)
    started_at, ended_at = ordered_times(ti.queued_at, record.started_at, record.ended_at)
    record = replace(record, started_at=started_at, ended_at=ended_at)
    return {"tries": bounded_history((*ti.tries, record))} | dict.fromkeys(CURRENT_TRY_FIELDS)


def bounded_history(records: Iterable[TryRecord]) -> tuple[TryRecord, ...]:
    """The newest MAX_TRIES_KEPT records, fewer when their text passes MAX_HISTORY_CHARS
    (a Lambda error message can be long); the newest one is always kept."""
    kept = list(records)[-MAX_TRIES_KEPT:]
    weight = sum(_weight(record) for record in kept)
    while len(kept) > 1 and weight > MAX_HISTORY_CHARS:
        weight -= _weight(kept.pop(0))
    return tuple(kept)


def _weight(record: TryRecord) -> int:
    return _RECORD_OVERHEAD + len(record.job_id or "") + len(record.reason or "")


# --- the clock rule ----------------------------------------------------------------------


def service_time(at: datetime | None, now: datetime) -> datetime:
    """A time a service reported, as recorded: the scheduler's receipt time ``now`` when
    the service gave none or a later one (a clock ahead of ours)."""
    return now if at is None or at > now else at


def ordered_times(
    queued_at: datetime | None, started_at: datetime | None, ended_at: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """``(started_at, ended_at)`` moved forward where needed so that queued_at <=
    started_at <= ended_at: a try cannot start before it was queued nor end before it
    started."""
    if started_at is not None and queued_at is not None and started_at < queued_at:
        started_at = queued_at
    floor = started_at or queued_at
    if ended_at is not None and floor is not None and ended_at < floor:
        ended_at = floor
    return started_at, ended_at


def with_ordered_times(ti: TaskInstance, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` plus whatever time fields ``ordered_times`` had to move, judged on the
    record as it will be after them."""

    def value(name: str) -> Any:
        return changes[name] if name in changes else getattr(ti, name)

    started_at, ended_at = ordered_times(value("queued_at"), value("started_at"), value("ended_at"))
    if started_at != value("started_at"):
        changes["started_at"] = started_at
    if ended_at != value("ended_at"):
        changes["ended_at"] = ended_at
    return changes
