"""Decisions on what people and signals ask of one task: clear, mark, stop, restart,
start. Like every decision they return a transition (or a reason not to) and do no I/O.

Each command or signal counts once per task. Its event id is written by the transition it
causes (``applied``, newest last, bounded by ``MAX_APPLIED``), in the same conditional
write, so a copy delivered again -- late, after the task reran -- is recognised and
refused instead of clearing, marking or restarting the task a second time. A transition
that ends a live try from outside also hands its job over to be cancelled
(``job_left_live``): the cancel follows the write wherever the write lands.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from skydag.engine.models import TaskInstance
from skydag.engine.scheduler import decide_signal_start, dispatch_transition
from skydag.engine.states import FINISHED_TASK_STATES, Cause, TaskState
from skydag.engine.transitions import Decision, Transition
from skydag.engine.tries import job_left_live
from skydag.signals.patterns import matches
from skydag.spec.models import DagSpec, TaskSpec

T = TaskState

# Enough for any burst of duplicates EventBridge or SQS delivers (minutes apart at most).
MAX_APPLIED = 32


class SignalKind(StrEnum):
    """How a task subscribes to a signal (the DAG file's keys)."""

    START_ON = "start_on"
    WAIT = "wait"
    RESTART_ON = "restart_on"
    STOP_ON = "stop_on"


def event_id(event: Mapping[str, Any] | None) -> str | None:
    return str(event["id"]) if event and event.get("id") else None


def already_applied(ti: TaskInstance, applied_id: str | None) -> bool:
    return applied_id is not None and applied_id in ti.applied


def applied_changes(ti: TaskInstance, applied_id: str | None) -> dict[str, Any]:
    """The change that records ``applied_id`` on the task (nothing without an id)."""
    if applied_id is None:
        return {}
    return {"applied": (*ti.applied, applied_id)[-MAX_APPLIED:]}


def decide_clear(
    ti: TaskInstance, allowed: frozenset[TaskState], command_id: str | None = None
) -> Decision:
    """A person cleared the task: back to pending, its try left in the history."""
    if already_applied(ti, command_id):
        return Decision.ignore(f"command {command_id} already cleared it")
    if ti.state not in allowed:
        return Decision.ignore(f"task is {ti.state.value}")
    changes = {
        "reason": "cleared",
        "ended_at": None,
        "next_attempt_at": None,
        "timeout_at": None,
        # Run again beside the tasks that ran after it: its tries take slots from now on
        # (engine/slots.py), and so do the tasks its finishes start.
        "slotted": True,
        **applied_changes(ti, command_id),
    }
    return Decision.accept(
        Transition(ti.task_id, ti.state, T.PENDING, Cause.CLEAR, ti.version, changes), "cleared"
    )


def decide_mark(
    ti: TaskInstance, state: TaskState, now: datetime, command_id: str | None = None
) -> Decision:
    """A person set the task's outcome. A try ended by hand has no exit code, whatever its
    job does next (it is cancelled). A finished task is rejected: it is reset first, so
    that the tasks its old outcome skipped are decided again."""
    if already_applied(ti, command_id):
        return Decision.ignore(f"command {command_id} already marked it")
    if ti.state is state:
        return Decision.ignore(f"task is already {state.value}")
    if ti.state in FINISHED_TASK_STATES:
        return Decision.reject(f"task is {ti.state.value}: reset it first")
    changes = {
        "reason": f"marked {state.value}",
        "ended_at": now,
        "exit_code": None,
        # Ended by hand, maybe before its upstreams: the tasks its finish starts take
        # slots (engine/slots.py).
        "slotted": True,
        **job_left_live(ti),
        **applied_changes(ti, command_id),
    }
    return Decision.accept(
        Transition(ti.task_id, ti.state, state, Cause.MARK, ti.version, changes),
        f"marked {state.value}",
    )


def decide_stop(
    ti: TaskInstance, reason: str, now: datetime, signal: Mapping[str, Any] | None = None
) -> Decision:
    """A stop_on signal (or a cancelled run): an unfinished task stops, its job cancelled."""
    if already_applied(ti, event_id(signal)):
        return Decision.ignore(f"signal {event_id(signal)} already stopped it")
    if ti.state in FINISHED_TASK_STATES:
        return Decision.ignore(f"task already {ti.state.value}")
    changes = {
        "reason": reason,
        "ended_at": now,
        "next_attempt_at": None,
        "check_at": None,
        **job_left_live(ti),
        **applied_changes(ti, event_id(signal)),
    }
    return Decision.accept(
        Transition(ti.task_id, ti.state, T.STOPPED, Cause.STOP, ti.version, changes), reason
    )


def decide_restart(
    spec: DagSpec, ti: TaskInstance, signal: Mapping[str, Any], now: datetime
) -> Decision:
    """A restart_on signal: the running try is replaced by a new one that sees the signal.

    A signal restarts once (its id is recorded), and a signal older than the one that
    started the current try is stale (events arrive out of order).
    """
    if ti.state is not T.RUNNING:
        return Decision.ignore(f"task is {ti.state.value}, not running")
    if already_applied(ti, event_id(signal)) or (
        ti.signal is not None and event_id(ti.signal) == event_id(signal)
    ):
        return Decision.ignore("this signal already restarted the task")
    if ti.signal is not None:
        current_time, new_time = ti.signal.get("time"), signal.get("time")
        if isinstance(current_time, str) and isinstance(new_time, str) and new_time < current_time:
            return Decision.ignore(
                f"signal of {new_time} is older than the one of the current try ({current_time})"
            )
    transition = dispatch_transition(spec, ti, now, cause=Cause.RESTART, signal=signal)
    changes = {
        **transition.changes,
        "restarts": ti.restarts + 1,
        **job_left_live(ti),
        **applied_changes(ti, event_id(signal)),
    }
    return Decision.accept(
        Transition(ti.task_id, ti.state, T.QUEUED, Cause.RESTART, ti.version, changes),
        f"restarted by signal {event_id(signal)}",
    )


def decide_signal(
    kind: SignalKind, spec: DagSpec, ti: TaskInstance, signal: Mapping[str, Any], now: datetime
) -> Decision:
    """What a signal the task subscribes to (as ``kind``) does to it now."""
    if kind in (SignalKind.START_ON, SignalKind.WAIT):
        if already_applied(ti, event_id(signal)):
            return Decision.ignore(f"signal {event_id(signal)} already started it")
        decision = decide_signal_start(spec, ti, signal, now)
        if decision.transition is None:
            return decision
        transition = decision.transition
        changes = {**transition.changes, **applied_changes(ti, event_id(signal))}
        return Decision.accept(
            Transition(
                transition.task_id,
                transition.src,
                transition.dst,
                transition.cause,
                transition.expected_version,
                changes,
            ),
            decision.reason,
        )
    if kind is SignalKind.RESTART_ON:
        return decide_restart(spec, ti, signal, now)
    return decide_stop(ti, f"stopped by signal {event_id(signal)}", now, signal)


def task_listens(task: TaskSpec, kind: SignalKind, event: Mapping[str, Any]) -> bool:
    """Whether the task, as its run's pinned version has it, subscribes to this event."""
    if kind is SignalKind.WAIT:
        patterns = task.wait.on if task.wait else None
    else:
        patterns = getattr(task, kind.value, None)
    return any(matches(pattern, event) for pattern in patterns or [])
