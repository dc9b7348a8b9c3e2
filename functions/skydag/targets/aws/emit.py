"""``emit:`` tasks: put one event on the skydag bus. Done as soon as PutEvents accepts it.

The rendered block is checked first (``skydag.spec.emit_sources``): a DAG puts events only
under its own namespace or a prefix it declared, never skydag's, AWS's or ``lambda``.

PutEvents has no idempotency key: a crash between the put and recording it puts the
event again. Consumers of emitted events deduplicate as they would for any EventBridge
event, which is delivered at least once anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from skydag.engine.models import JobReport, JobStatus
from skydag.ports import Clock, SystemClock
from skydag.sources import DAG_SOURCE_PREFIX
from skydag.spec.emit_sources import emit_problem
from skydag.targets.aws._common import is_retryable_code, report, translate_errors
from skydag.targets.base import DispatchError, DispatchRequest, DispatchResult, JobRef

log = logging.getLogger("skydag.targets.emit")


class EventEmitter:
    """Puts a task's rendered ``emit:`` block on ``bus_name``."""

    def __init__(self, client: Any, bus_name: str, *, clock: Clock | None = None) -> None:
        self.client = client
        self.bus_name = bus_name
        self.clock = clock or SystemClock()

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        target = request.target
        # The rendered block: a template can make any source (skydag.command, lambda, a
        # source of another DAG's). Refused for good: the same try renders the same.
        problem = emit_problem(target, request.dag_id, request.emit_sources)
        if problem is not None:
            raise DispatchError(f"emit refused: {problem}", retryable=False)
        entry = {
            "Source": str(target.get("source") or f"{DAG_SOURCE_PREFIX}{request.dag_id}"),
            "DetailType": str(target["detail-type"]),
            "Detail": json.dumps(target.get("detail") or {}),
            "EventBusName": self.bus_name,
        }
        where = f"{entry['DetailType']!r} event on bus {self.bus_name}"
        with translate_errors("events", "PutEvents", where):
            response = self.client.put_events(Entries=[entry])
        result = (response.get("Entries") or [{}])[0]
        if response.get("FailedEntryCount") or not result.get("EventId"):
            code = str(result.get("ErrorCode") or "unknown")
            raise DispatchError(
                f"events PutEvents ({where}): {code}: {result.get('ErrorMessage')}",
                retryable=is_retryable_code(code),
            )
        event_id = str(result["EventId"])
        job = JobRef(
            request.dag_id,
            request.run_id,
            request.task_id,
            request.try_number,
            event_id,
            None,
            map_index=request.map_index,
        )
        return DispatchResult(
            job_id=event_id,
            report=report(job, JobStatus.SUCCEEDED, event_id, exit_code=0, at=self.clock.now()),
        )

    def describe(self, job: JobRef, *, target: Mapping[str, Any] | None = None) -> JobReport | None:
        """An emit with an event id succeeded when it was dispatched; without one, no
        event was put (or its put was never recorded, and nothing can tell)."""
        if job.job_id is None:
            return None
        return report(job, JobStatus.SUCCEEDED, job.job_id, exit_code=0)

    def cancel(self, job: JobRef, reason: str, *, target: Mapping[str, Any] | None = None) -> None:
        """An event once put cannot be taken back; nothing runs to be stopped."""
        log.info("nothing to cancel for emitted event %s (%s)", job.job_id, reason)
