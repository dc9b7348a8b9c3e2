"""The dispatch port: what every target (AWS service or local runner) offers the scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from skydag.engine.models import JobReport


class DispatchError(Exception):
    """The target refused the job. ``retryable`` errors (throttling) are tried again by the
    event source; the others fail the try with ``reason`` shown on the task."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    """One try of one task, with its templates rendered; ``token`` is the idempotency key."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    token: str
    kind: str
    target: Mapping[str, Any]
    local: Mapping[str, Any] | None = None
    timeout: timedelta | None = None
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def job_name(self) -> str:
        """A deterministic name, for services whose only idempotency is a lookup by name."""
        return f"skydag-{self.dag_id}-{self.task_id}-{self.token[:12]}-{self.try_number}"[:128]


@dataclass(frozen=True, slots=True)
class DispatchResult:
    job_id: str | None
    # Set when the outcome is known at once (noop, emit): no state-change event follows.
    report: JobReport | None = None


@dataclass(frozen=True, slots=True)
class JobRef:
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    job_id: str | None
    token: str | None


class Target(Protocol):
    """Dispatch is idempotent per ``request.token``: a second call re-attaches."""

    def dispatch(self, request: DispatchRequest) -> DispatchResult: ...

    def describe(self, job: JobRef) -> JobReport | None: ...

    def cancel(self, job: JobRef, reason: str) -> None: ...


class TargetRegistry(Protocol):
    def target_for(self, kind: str) -> Target: ...
