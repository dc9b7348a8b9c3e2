"""Targets that need no AWS service: ``noop`` and ``wait``, and the registry that puts
them together with the service targets.

Both finish at once when dispatched. A ``wait`` task is dispatched only when its signal
has arrived (the engine holds it in ``waiting`` until then, holding no compute), so its
job is done by then: its output is the signal's detail, for ``outputs.<task>``.
"""

from __future__ import annotations

from skydag.engine.models import JobReport, JobStatus
from skydag.ports import Clock
from skydag.targets.base import DispatchRequest, DispatchResult, JobRef, Target, TargetRegistry


class InstantTarget:
    """``noop`` and ``wait``: succeed at once; the job id is the dispatch token."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        output = None
        if request.kind == "wait" and request.signal is not None:
            output = request.signal.get("detail")
        report = JobReport(
            request.dag_id,
            request.run_id,
            request.task_id,
            request.try_number,
            JobStatus.SUCCEEDED,
            job_id=request.token,
            exit_code=0,
            output=output,
            at=self.clock.now(),
            map_index=request.map_index,
        )
        return DispatchResult(job_id=request.token, report=report)

    def describe(self, job: JobRef) -> JobReport | None:
        return None  # finished at dispatch: there is never anything to look up

    def cancel(self, job: JobRef, reason: str) -> None:
        return None


INSTANT_KINDS = frozenset({"noop", "wait"})


class TargetSet:
    """Kind → target: the instant kinds here, every other kind from ``inner`` (the AWS
    targets in production, the local runner in dev mode)."""

    def __init__(
        self, clock: Clock, inner: TargetRegistry, *, instant_kinds: frozenset[str] = INSTANT_KINDS
    ) -> None:
        self._instant = InstantTarget(clock)
        self._inner = inner
        self._instant_kinds = instant_kinds

    def target_for(self, kind: str) -> Target:
        if kind in self._instant_kinds:
            return self._instant
        return self._inner.target_for(kind)
