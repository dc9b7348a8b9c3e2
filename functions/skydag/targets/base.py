"""The dispatch port: what every target (AWS service or local runner) offers the scheduler."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from skydag.engine.models import JobReport, JobStatus, instance_key
from skydag.spec.models import EVENTS_NAME_THE_TASK

# The strictest name limit among the services (Step Functions execution names: 80).
MAX_JOB_NAME = 80
_TOKEN_AT_END = re.compile(r"-([0-9a-f]{32})$")


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
    # The signal that started or restarted this try (start_on, restart_on, wait), if any.
    signal: Mapping[str, Any] | None = None
    # The source prefixes the DAG declares (``emit_sources``), for emit tasks.
    emit_sources: tuple[str, ...] = ()
    # The instance of a mapped task (for_each) this try is of; None for a whole task.
    map_index: int | None = None
    # No earlier call for this try can have reached the service: the invocation that
    # queued the try calls it, under its own claim (``owned_dispatch``), which outlasts
    # the invocation. A target that looks for a crashed dispatcher's job by name before
    # starting one (a List call, often rate-limited) skips the look: no such job exists.
    first_call: bool = False

    @property
    def job_name(self) -> str:
        """``skydag-<dag>-<task>[-<map index>]-<token>``: deterministic per try (a lookup
        by name finds a job a crashed dispatcher started) and ending in the whole dispatch
        token, so a state-change event that carries only the name leads back to its try."""
        task = self.task_id if self.map_index is None else f"{self.task_id}-{self.map_index}"
        return name_with_token(f"skydag-{self.dag_id}-{task}", self.token)

    @property
    def task_key_in_events(self) -> tuple[str, str, str] | None:
        """(dag, run, instance id) as this try's job events carry it (the job's identity
        echoed: ``JobEvent.task_key``); None for a kind whose events name only the job."""
        if self.kind not in EVENTS_NAME_THE_TASK:
            return None
        return self.dag_id, self.run_id, instance_key(self.task_id, self.map_index)

    @property
    def try_number_in_events(self) -> int | None:
        """The try as this try's job events carry it (``JobEvent.try_number``)."""
        return self.try_number if self.kind in EVENTS_NAME_THE_TASK else None


def name_with_token(prefix: str, token: str) -> str:
    """``prefix`` (cut to fit) + ``-`` + the 32-character token, at most MAX_JOB_NAME long."""
    return f"{prefix[: MAX_JOB_NAME - len(token) - 1]}-{token}"


def token_from_name(name: str | None) -> str | None:
    """The dispatch token at the end of a job/step/execution name, if it has one."""
    if not name:
        return None
    match = _TOKEN_AT_END.search(name)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A service's native state-change event, translated: which try's job, and what it says.

    ``token`` (the dispatch token, from the job name, client token or payload) finds the
    task instance; an event whose token is not a task's current one is stale and ignored.
    ``task_key`` (dag, run, instance id), where the event echoes the job's identity, finds
    it with no index (the token still decides whether the event is the current try's).
    """

    kind: str
    status: JobStatus
    token: str | None
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    output: Any = None
    at: datetime | None = None
    task_key: tuple[str, str, str] | None = None
    # The try the job's echoed identity names (``SKYDAG_TRY``), with ``task_key``.
    try_number: int | None = None


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
    # The try's rendered target block: where the job lives (queue, cluster, application),
    # for a lookup by token when the job id was never recorded.
    target: Mapping[str, Any] | None = None
    map_index: int | None = None


class Target(Protocol):
    """Dispatch is idempotent per ``request.token``: a second call re-attaches."""

    def dispatch(self, request: DispatchRequest) -> DispatchResult: ...

    def describe(self, job: JobRef) -> JobReport | None: ...

    def cancel(self, job: JobRef, reason: str) -> None: ...


@runtime_checkable
class DescribesMany(Protocol):
    """A target whose service describes many jobs in one call (Batch's DescribeJobs and
    ECS's DescribeTasks take 100): the reconciler's pass describes the running jobs of a
    page together, rather than a call (and a round trip) per job."""

    def describe_many(self, jobs: Sequence[JobRef]) -> dict[str, JobReport | None]:
        """Reports by job id for those of ``jobs`` that have one (None: the service does
        not know the job); jobs without an id are left out (``describe`` finds them)."""
        ...


class TargetRegistry(Protocol):
    def target_for(self, kind: str) -> Target: ...
