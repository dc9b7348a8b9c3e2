"""The reconciler Lambda, invoked by EventBridge Scheduler every few minutes.

One pass of ``SchedulerService.reconcile`` over the sparse due index (never a scan): fire
retries whose time has come, enforce timeouts, re-attach dispatches a crash cut short,
and ask the services about jobs whose state-change events are overdue (EMR, EMR
Serverless and Step Functions events are best effort). It repairs what lost events left.

The pass is idempotent (the same conditional writes as every other path), so a failed
invocation is simply retried by Lambda's asynchronous retries, and if that fails too the
next pass, minutes later, does the work. The invoking payload is not read.

Metrics: ``Reconciled`` with dimension ``action`` (retries, timed_out, redispatched,
described, repaired, moved: entries found before their time that are not a running
job's (a running job's entry stays where it is and is read at its looks), uncovered:
tries of an armed run given entries of their own, and failed: items whose
handling raised, each logged with its task and skipped for a while, so one poisoned item
never stops a pass) and Conflicts.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from skydag.handlers import _runtime as runtime

runtime.cold_start("reconciler")
logger, metrics = runtime.logger, runtime.metrics


def _counts(result: object) -> dict[str, int]:
    """The pass's counters by name (ReconcileResult is a dataclass of ints)."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        fields = dataclasses.asdict(result)
    else:
        fields = dict(vars(result))
    return {name: int(value) for name, value in fields.items() if isinstance(value, int)}


@logger.inject_lambda_context(clear_state=True)
@runtime.traced
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    runtime.start_invocation("reconciler")
    now = datetime.now(UTC)
    if isinstance(event, dict):
        runtime.record_delay(runtime.event_time(event.get("time")), now)
    try:
        # Page after page while half the invocation's time is left: a backlog is worked
        # through in one pass, and the pass ends well before the function's timeout.
        remaining = context.get_remaining_time_in_millis() / 1000
        deadline = time.monotonic() + remaining / 2
        counts = _counts(runtime.scheduler_service().reconcile(now, deadline=deadline))
        logger.info("reconciled", extra={"counts": counts})
        for name, value in counts.items():
            if name == "conflicts":
                runtime.count("Conflicts", value)
            else:
                runtime.count_by("Reconciled", "action", name, value)
        return counts
    finally:
        runtime.flush_dimensioned()
