"""Routes one EventBridge event to the scheduler: the one entry point the scheduler Lambda
(and the embedded environment) calls for every event it receives.

- ``aws.*`` state-change events of the services skydag dispatches to → a job event;
- ``skydag.command`` events (the CLI, people) → a command;
- ``skydag.scheduler`` events (EventBridge Scheduler: schedule ticks and timers);
- anything else is a user signal: it may create runs (a DAG's ``on:``) and start,
  restart or stop tasks (``start_on``, ``restart_on``, ``stop_on``, ``wait``).

Every route is idempotent: a duplicated, late or reordered event changes nothing.
A malformed event raises ``BadEvent`` with what is wrong (the handler reports it and
moves on; it is never retried).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

COMMAND_SOURCE = "skydag.command"
SCHEDULER_SOURCE = "skydag.scheduler"
# skydag's own notifications ("DagRun State Change", ...): also usable as signals.
SKYDAG_SOURCE = "skydag"

# Command detail-types and their required detail keys.
COMMANDS: dict[str, tuple[str, ...]] = {
    "Trigger DAG": ("dag",),
    "Backfill DAG": ("dag", "start", "end"),
    "Clear Task": ("dag", "run_id", "task"),
    "Mark Task": ("dag", "run_id", "task", "state"),
    "Cancel Run": ("dag", "run_id"),
    "Pause DAG": ("dag",),
    "Unpause DAG": ("dag",),
}
SCHEDULE_TICK = "Schedule Tick"  # detail: {"dag": ...}
TIMER_FIRED = "Timer Fired"  # detail: {"dag": ..., "run_id": ..., "task": ...}


class BadEvent(ValueError):
    """The event cannot be acted on; the message says what and where."""


@dataclass
class RouteResult:
    """What one event did, for logs and metrics."""

    route: str
    actions: list[str] = field(default_factory=list)
    ignored: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def route_event(service: Any, event: Mapping[str, Any]) -> RouteResult:
    """Handle one EventBridge event. Implemented in the dispatch issue's service work."""
    raise NotImplementedError
