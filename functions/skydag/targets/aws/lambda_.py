"""AWS Lambda: one asynchronous invocation per try.

The function is invoked with InvocationType=Event; its outcome arrives as the event its
asynchronous-invocation destinations put on EventBridge ("Lambda Function Invocation
Result - Success" / "- Failure"), which carries the request payload and so the
``skydag`` block added to it.

Lambda has no idempotency key for asynchronous invocations and no API to look one up or
stop it: a crash between the invoke and recording it invokes the function again, and
Lambda's asynchronous delivery is itself at least once. Functions deduplicate on
``skydag.token`` (docs/targets.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from skydag.engine.models import JobReport, JobStatus
from skydag.sources import LAMBDA_RESULT_SOURCE
from skydag.targets.aws._common import (
    MalformedEvent,
    event_detail,
    event_time,
    joined,
    parse_time,
    translate_errors,
)
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef

KIND = "lambda"
SOURCE = LAMBDA_RESULT_SOURCE
SUCCESS = "Lambda Function Invocation Result - Success"
FAILURE = "Lambda Function Invocation Result - Failure"

log = logging.getLogger("skydag.targets.lambda")


class LambdaInvocations:
    """Invokes functions asynchronously (``lambda:`` tasks)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        target = request.target
        function = str(target["function_name"])
        parameters: dict[str, Any] = {
            "FunctionName": function,
            "InvocationType": "Event",
            "Payload": json.dumps(invocation_payload(request)).encode("utf-8"),
        }
        if target.get("qualifier"):
            parameters["Qualifier"] = str(target["qualifier"])
        with translate_errors("lambda", "Invoke", f"function {function}"):
            response = self.client.invoke(**parameters)
        # The invoke's request id is the invocation's: the destination event carries it
        # as requestContext.requestId.
        return DispatchResult(job_id=response.get("ResponseMetadata", {}).get("RequestId"))

    def describe(self, job: JobRef, *, target: Mapping[str, Any] | None = None) -> JobReport | None:
        """Always None: Lambda keeps no record of an asynchronous invocation to ask about.
        A lost destination event is covered by the task's timeout, not by a lookup."""
        return None

    def cancel(self, job: JobRef, reason: str, *, target: Mapping[str, Any] | None = None) -> None:
        """Lambda cannot stop an invocation; the function runs to its end."""
        log.warning(
            "cannot cancel Lambda invocation %s of %s/%s/%s (%s): Lambda has no API for it",
            job.job_id,
            job.dag_id,
            job.run_id,
            job.task_id,
            reason,
        )


def invocation_payload(request: DispatchRequest) -> dict[str, Any]:
    """The target's payload with the try's identity under ``skydag``: merged into an
    object payload, or beside any other payload as ``{"skydag": ..., "payload": ...}``."""
    identity = {
        "dag": request.dag_id,
        "run": request.run_id,
        "task": request.task_id,
        "try": request.try_number,
        "token": request.token,
    }
    payload = request.target.get("payload")
    if payload is None:
        return {"skydag": identity}
    if isinstance(payload, Mapping):
        return {**payload, "skydag": identity}
    return {"skydag": identity, "payload": payload}


def parse_event(event: Mapping[str, Any]) -> JobEvent | None:
    """A Lambda destination event (Success or Failure) as a JobEvent; None for others."""
    detail = event_detail(event, SOURCE, frozenset({SUCCESS, FAILURE}))
    if detail is None:
        return None
    context = detail.get("requestContext")
    if not isinstance(context, Mapping) or not isinstance(context.get("requestId"), str):
        raise MalformedEvent(f"{event.get('detail-type')} event: detail.requestContext.requestId")
    request_payload = detail.get("requestPayload")
    identity = request_payload.get("skydag") if isinstance(request_payload, Mapping) else None
    token = identity.get("token") if isinstance(identity, Mapping) else None
    response = detail.get("responsePayload")
    if event.get("detail-type") == SUCCESS:
        status, reason, output = JobStatus.SUCCEEDED, None, response
    else:
        error = response if isinstance(response, Mapping) else {}
        status, output = JobStatus.FAILED, None
        reason = joined(context.get("condition"), error.get("errorType"), error.get("errorMessage"))
    return JobEvent(
        kind=KIND,
        status=status,
        token=token if isinstance(token, str) else None,
        job_id=context["requestId"],
        reason=reason,
        output=output,
        # The result's own timestamp (milliseconds) over the event's (whole seconds).
        at=parse_time(detail.get("timestamp")) or event_time(event),
    )
