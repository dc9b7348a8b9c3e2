"""Test doubles for the service-side tests: a settable clock and a remote service whose
jobs run until the test says how they ended (like Batch or EMR without their events)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import JobReport, JobStatus
from skydag.engine.rules import RECONCILE_EVERY
from skydag.service.reconciler import ReconcileResult
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef, Target
from skydag.targets.builtin import TargetSet

START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class SettableClock:
    moment: datetime = START

    def now(self) -> datetime:
        return self.moment

    def advance(self, delta: timedelta) -> datetime:
        self.moment += delta
        return self.moment


class Crash(RuntimeError):
    """A scheduler invocation dying mid-way (Lambda timeout, out of memory, ...)."""


@dataclass
class FakeService:
    """A remote service with idempotent dispatch by token, like the AWS targets.

    ``jobs`` maps job id → request; ``outcome`` says what describe() reports per job id;
    ``crash`` makes the next dispatch die before or after the service call;
    ``before_start`` runs once inside the next dispatch, before the service starts the job
    (whatever the scheduler does meanwhile happens while the dispatch is under way);
    ``broken`` makes describe() of those job ids raise (a bug, not a service error).
    """

    jobs: dict[str, DispatchRequest] = field(default_factory=dict)
    by_token: dict[str, str] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    cancelled: list[tuple[str | None, str]] = field(default_factory=list)
    outcome: dict[str, JobStatus] = field(default_factory=dict)
    crash: str | None = None  # "before_call" | "after_call"
    before_start: Callable[[DispatchRequest], None] | None = None
    broken: dict[str, Exception] = field(default_factory=dict)

    def target_for(self, kind: str) -> Target:
        return self

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        self.calls["dispatch"] += 1
        if self.crash == "before_call":
            self.crash = None
            raise Crash("died before calling the service")
        if self.before_start is not None:
            hook, self.before_start = self.before_start, None
            hook(request)
        job_id = self.by_token.get(request.token)
        if job_id is None:
            job_id = f"job-{len(self.jobs) + 1}"
            self.jobs[job_id] = request
            self.by_token[request.token] = job_id
        if self.crash == "after_call":
            self.crash = None
            raise Crash("died after the service started the job")
        return DispatchResult(job_id=job_id)

    def describe(self, job: JobRef) -> JobReport | None:
        self.calls["describe"] += 1
        return self._report(job)

    def _report(self, job: JobRef) -> JobReport | None:
        job_id = job.job_id or self.by_token.get(job.token or "")
        if job_id is None or job_id not in self.jobs:
            return None
        if job_id in self.broken:
            raise self.broken[job_id]
        status = self.outcome.get(job_id, JobStatus.RUNNING)
        return JobReport(
            job.dag_id,
            job.run_id,
            job.task_id,
            job.try_number,
            status,
            job_id=job_id,
            exit_code=None if status is JobStatus.RUNNING else int(status is JobStatus.FAILED),
        )

    def cancel(self, job: JobRef, reason: str) -> None:
        self.calls["cancel"] += 1
        self.cancelled.append((job.job_id, reason))

    # PollingTarget: outcomes come as events, never by polling.
    def poll(self) -> list[JobReport]:
        return []

    def running(self) -> int:
        return 0

    def close(self) -> None:
        return None

    # --- helpers for the tests -------------------------------------------------------------

    def job_of(self, task_id: str, try_number: int) -> str:
        found = [
            job_id
            for job_id, r in self.jobs.items()
            if r.task_id == task_id and r.try_number == try_number
        ]
        assert len(found) == 1, f"{task_id} try {try_number}: jobs {found}"
        return found[0]

    def event(self, job_id: str, status: JobStatus, **extra: Any) -> JobEvent:
        """The state-change event the service would send for one of its jobs."""
        request = self.jobs[job_id]
        extra.setdefault("task_key", request.task_key_in_events)
        extra.setdefault("try_number", request.try_number_in_events)
        return JobEvent("fake", status, request.token, job_id=job_id, **extra)


@contextmanager
def embedded_with(
    aws: Settings,
    log_dir: Path,
    clock: SettableClock,
    jobs: FakeService,
    dags: Iterable[dict[str, Any]],
) -> Iterator[EmbeddedSkydag]:
    """The embedded scheduler on the DynamoDB store, every target played by ``jobs``,
    with these DAGs loaded."""
    embedded = EmbeddedSkydag(
        aws, log_dir=log_dir, clock=clock, target=jobs, targets=TargetSet(clock, jobs)
    )
    for dag in dags:
        embedded.repos.dags.save_version(
            DagSpec.model_validate(dag), source="test", sha256=None, now=clock.now()
        )
    try:
        yield embedded
    finally:
        embedded.close()


def passes(
    env: EmbeddedSkydag, clock: SettableClock, span: timedelta, every: timedelta = RECONCILE_EVERY
) -> list[tuple[timedelta, ReconcileResult]]:
    """The reconciler's passes over the next ``span``, one every ``every`` as scheduled
    (the clock moved to each, the changes settled after it): when each came (after the
    start) and what it did."""
    start, done = clock.now(), []
    while clock.now() + every <= start + span:
        clock.advance(every)
        done.append((clock.now() - start, env.service.reconcile()))
        settle(env)
    return done


def settle(env: EmbeddedSkydag, rounds: int = 200) -> None:
    """Pump until nothing is left to handle (at most ``rounds`` times)."""
    for _ in range(rounds):
        if not env.pump():
            return
    raise AssertionError("the scheduler never settled")


@dataclass
class ManyAtOnceService(FakeService):
    """A FakeService that also describes many jobs a call (``DescribesMany``), as Batch's
    DescribeJobs does; ``many_fails`` makes that call raise."""

    many_fails: Exception | None = None

    def describe_many(self, jobs: Sequence[JobRef]) -> dict[str, JobReport | None]:
        self.calls["describe_many"] += 1
        if self.many_fails is not None:
            raise self.many_fails
        return {job.job_id: self._report(job) for job in jobs if job.job_id is not None}
