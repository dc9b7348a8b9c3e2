"""Ports on the bottom floor: time, skydag's own events and one-shot timers (the store's
interfaces are in ``skydag.ports.store``). Nothing here imports anything of skydag."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class EventSink(Protocol):
    """Where skydag puts its own events ("DagRun State Change", ...)."""

    def put(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...

    def listens(self, detail_type: str, detail: Mapping[str, Any]) -> bool:
        """Whether ``put`` would deliver the event (somebody takes it): unknown is yes."""
        ...

    def listeners_now(self) -> Listened:
        """``listens`` as who takes the events is known now (learnt now if need be), for
        any event later, asking nothing more: a judgement that must make no call of its
        own (after a target's call, a failure would start the job again)."""
        ...


# Whether an event (detail type, detail) would be delivered: ``EventSink.listeners_now``.
Listened = Callable[[str, Mapping[str, Any]], bool]


class MemoryEventSink:
    """Keeps every event put; ``listened``: what ``listens`` answers (a test may play a
    bus on which no rule takes skydag's events)."""

    def __init__(self, *, listened: bool = True) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.listened = listened

    def put(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        self.events.append((detail_type, dict(detail)))

    def listens(self, detail_type: str, detail: Mapping[str, Any]) -> bool:
        return self.listened

    def listeners_now(self) -> Listened:
        listened = self.listened
        return lambda detail_type, detail: listened


class Timers(Protocol):
    """One-shot timers (EventBridge Scheduler ``at()`` schedules in production) that put a
    "Timer Fired" event back to the scheduler: retries and deadlines fire on time without
    polling."""

    def set_timer(self, name: str, at: datetime, detail: Mapping[str, Any]) -> None: ...

    def delete_timer(self, name: str) -> bool: ...

    def set_dag_schedule_enabled(self, dag_id: str, enabled: bool) -> bool: ...


class NoTimers:
    """Dev and tests: due work is found by polling the due index instead."""

    def set_timer(self, name: str, at: datetime, detail: Mapping[str, Any]) -> None:
        return None

    def delete_timer(self, name: str) -> bool:
        return False

    def set_dag_schedule_enabled(self, dag_id: str, enabled: bool) -> bool:
        return False
