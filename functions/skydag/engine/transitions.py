"""Decisions the engine returns instead of acting: a proposed transition, or a reason not to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from skydag.engine.models import TaskInstance
from skydag.engine.states import Cause, TaskState, can_transition
from skydag.engine.tries import leaves_try_behind, retire_current_try, with_ordered_times


class InvalidTransition(ValueError):
    """The engine proposed an edge that is not in the transition table: a bug, not a race."""


@dataclass(frozen=True, slots=True)
class Transition:
    """Move one task instance from ``src`` to ``dst``, expecting it at ``expected_version``."""

    task_id: str
    src: TaskState
    dst: TaskState
    cause: Cause
    expected_version: int
    changes: Mapping[str, Any] = field(default_factory=dict)
    # The write's stream record has nothing to do: its writer did it, or it needs nothing
    # (engine/reactions.py). The store marks the write so, and the stream drops its record.
    unheard: bool = False

    def __post_init__(self) -> None:
        if not can_transition(self.src, self.dst, self.cause):
            raise InvalidTransition(
                f"task '{self.task_id}': {self.src.value} -> {self.dst.value} "
                f"is not allowed for cause '{self.cause.value}'"
            )

    def changes_for(self, ti: TaskInstance) -> dict[str, Any]:
        """Every field this transition writes on ``ti``: its own changes, the current try
        moved into the history when the edge leaves it behind, and the try's times kept in
        order (engine/tries.py). The store writes exactly these, in one conditional write.
        """
        changes: dict[str, Any] = {}
        if leaves_try_behind(self.src, self.dst, self.cause):
            # A try replaced by a new one ends when the new one is queued.
            at = self.changes.get("queued_at") or self.changes.get("ended_at")
            changes.update(retire_current_try(ti, at=at, signal=self.changes.get("signal")))
        changes.update(self.changes)
        return with_ordered_times(ti, changes)

    def apply(self, ti: TaskInstance) -> TaskInstance:
        """The record as it will be after the write (the store does the same in DynamoDB)."""
        return replace(ti, state=self.dst, version=ti.version + 1, **self.changes_for(ti))


class Outcome(StrEnum):
    ACCEPT = "accept"  # apply the transition
    IGNORE = "ignore"  # nothing to do: duplicate, stale or late input
    REJECT = "reject"  # the input is not acceptable in this state: tell whoever sent it
    CANCEL_JOB = "cancel_job"  # a job runs for a try that is over: cancel it, change nothing


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str
    transition: Transition | None = None

    @classmethod
    def accept(cls, transition: Transition, reason: str) -> Decision:
        return cls(Outcome.ACCEPT, reason, transition)

    @classmethod
    def ignore(cls, reason: str) -> Decision:
        return cls(Outcome.IGNORE, reason)

    @classmethod
    def reject(cls, reason: str) -> Decision:
        return cls(Outcome.REJECT, reason)

    @classmethod
    def cancel_job(cls, reason: str) -> Decision:
        return cls(Outcome.CANCEL_JOB, reason)
