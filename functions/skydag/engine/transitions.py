"""Decisions the engine returns instead of acting: a proposed transition, or a reason not to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from skydag.engine.models import TaskInstance
from skydag.engine.states import Cause, TaskState, can_transition


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

    def __post_init__(self) -> None:
        if not can_transition(self.src, self.dst, self.cause):
            raise InvalidTransition(
                f"task '{self.task_id}': {self.src.value} -> {self.dst.value} "
                f"is not allowed for cause '{self.cause.value}'"
            )

    def apply(self, ti: TaskInstance) -> TaskInstance:
        """The record as it will be after the write (the store does the same in DynamoDB)."""
        return replace(ti, state=self.dst, version=ti.version + 1, **self.changes)


class Outcome(StrEnum):
    ACCEPT = "accept"  # apply the transition
    IGNORE = "ignore"  # nothing to do: duplicate, stale or late input
    REJECT = "reject"  # the input is not acceptable in this state: tell whoever sent it


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
