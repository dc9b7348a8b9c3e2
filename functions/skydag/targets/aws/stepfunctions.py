"""AWS Step Functions: one execution of a Standard state machine per try.

The execution's name (ending in the dispatch token) is the idempotency key, and AWS
enforces it: a name is unique per state machine for 90 days. A repeated StartExecution
returns the running execution, or fails with ExecutionAlreadyExists when it has closed
or the input differs; either way the execution is found again by its ARN, which follows
from the state machine's ARN and the name. The job id is the execution ARN. Its
completion is the "Step Functions Execution Status Change" event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from skydag.engine.models import JobReport, JobStatus
from skydag.targets.aws._common import (
    call_unless_missing,
    error_code,
    event_detail,
    event_time,
    job_name_of,
    joined,
    json_or_text,
    parse_time,
    refusal,
    report,
    require_target,
    required,
    service_error,
    translate_errors,
)
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef, token_from_name

KIND = "stepfunctions"
SOURCE = "aws.states"
DETAIL_TYPE = "Step Functions Execution Status Change"
CANCEL_ERROR = "skydag.Cancelled"
# StopExecution's cause is at most 32768 characters.
_MAX_CAUSE = 32768
_UNFINISHED = frozenset({"RUNNING", "PENDING_REDRIVE"})
_MISSING = frozenset({"ExecutionDoesNotExist"})

log = logging.getLogger("skydag.targets.stepfunctions")


class StepFunctionsExecutions:
    """Starts, describes and stops Step Functions executions (``stepfunctions:`` tasks)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        state_machine = str(request.target["state_machine_arn"])
        name = request.job_name
        execution_arn = execution_arn_for(state_machine, name)
        try:
            response = self.client.start_execution(
                stateMachineArn=state_machine, name=name, input=_input_text(request)
            )
        except ClientError as error:
            # Started by an earlier attempt at this dispatch (and maybe closed since): the
            # same name is the same try, found again by its ARN.
            if error_code(error) != "ExecutionAlreadyExists" or not self._execution(execution_arn):
                raise service_error(
                    "stepfunctions", "StartExecution", f"execution {execution_arn}", error
                ) from error
            log.info("re-attaching to execution %s", execution_arn)
            return DispatchResult(job_id=execution_arn)
        except (BotoCoreError, NotImplementedError) as error:
            raise service_error(
                "stepfunctions", "StartExecution", f"execution {execution_arn}", error
            ) from error
        return DispatchResult(job_id=str(response["executionArn"]))

    def describe(self, job: JobRef, *, target: Mapping[str, Any] | None = None) -> JobReport | None:
        target = target if target is not None else job.target
        execution_arn = self._arn(job, target)
        if execution_arn is None:
            return None
        execution = self._execution(execution_arn)
        if execution is None:
            return None
        status, reason = _outcome(
            str(execution.get("status")), execution.get("error"), execution.get("cause")
        )
        output = json_or_text(execution.get("output")) if status is JobStatus.SUCCEEDED else None
        return report(
            job,
            status,
            execution_arn,
            reason=reason,
            output=output,
            at=parse_time(execution.get("stopDate") or execution.get("startDate")),
        )

    def cancel(self, job: JobRef, reason: str, *, target: Mapping[str, Any] | None = None) -> None:
        target = target if target is not None else job.target
        execution_arn = self._arn(job, target)
        if execution_arn is None:
            return
        execution = self._execution(execution_arn)
        if execution is None or execution.get("status") not in _UNFINISHED:
            return
        with translate_errors("stepfunctions", "StopExecution", f"execution {execution_arn}"):
            self.client.stop_execution(
                executionArn=execution_arn, error=CANCEL_ERROR, cause=reason[:_MAX_CAUSE]
            )

    def _arn(self, job: JobRef, target: Mapping[str, Any] | None) -> str | None:
        if job.job_id is not None:
            return job.job_id
        name = job_name_of(job, None)
        if name is None:
            return None
        where = require_target("stepfunctions", job, target)
        return execution_arn_for(str(where["state_machine_arn"]), name)

    def _execution(self, execution_arn: str) -> Mapping[str, Any] | None:
        response: Mapping[str, Any] | None = call_unless_missing(
            "stepfunctions",
            "DescribeExecution",
            f"execution {execution_arn}",
            _MISSING,
            self.client.describe_execution,
            executionArn=execution_arn,
        )
        return response


def execution_arn_for(state_machine_arn: str, name: str) -> str:
    """``arn:<partition>:states:<region>:<account>:execution:<machine>:<name>``; a version
    or alias qualifier on the state machine's ARN is not part of its executions' ARNs."""
    parts = state_machine_arn.split(":")
    if len(parts) < 7 or parts[2] != "states" or parts[5] != "stateMachine":
        raise refusal("stepfunctions", f"{state_machine_arn!r} is not a state machine ARN")
    return ":".join([*parts[:5], "execution", parts[6], name])


def _input_text(request: DispatchRequest) -> str:
    value = request.target.get("input")
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _outcome(status: str, error: Any, cause: Any) -> tuple[JobStatus, str | None]:
    if status in _UNFINISHED:
        return JobStatus.RUNNING, None
    if status == "SUCCEEDED":
        return JobStatus.SUCCEEDED, None
    if status == "ABORTED":
        return JobStatus.STOPPED, joined(error, cause) or "execution aborted"
    if status == "TIMED_OUT":
        return JobStatus.FAILED, joined("execution timed out", error, cause)
    if status == "FAILED":
        return JobStatus.FAILED, joined(error, cause) or "execution failed"
    raise refusal("stepfunctions", f"unknown execution status {status!r}")


# The event statuses the engine acts on (and the scheduler's rule routes).
EVENT_STATUSES: tuple[str, ...] = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
_EVENT_STATUSES = frozenset(EVENT_STATUSES)


def parse_event(event: Mapping[str, Any]) -> JobEvent | None:
    """A "Step Functions Execution Status Change" event as a JobEvent (None: not one, or
    PENDING_REDRIVE). The output is parsed when it is JSON; AWS leaves it out of the
    event when it is too large (``outputDetails.included`` false)."""
    detail = event_detail(event, SOURCE, frozenset({DETAIL_TYPE}))
    if detail is None:
        return None
    execution_arn = required(detail, "executionArn", DETAIL_TYPE)
    status_text = required(detail, "status", DETAIL_TYPE)
    if status_text not in _EVENT_STATUSES:
        return None
    status, reason = _outcome(status_text, detail.get("error"), detail.get("cause"))
    output = json_or_text(detail.get("output")) if status is JobStatus.SUCCEEDED else None
    return JobEvent(
        kind=KIND,
        status=status,
        token=token_from_name(detail.get("name")),
        job_id=execution_arn,
        reason=reason,
        output=output,
        # The execution's own times (milliseconds) over the event's (whole seconds).
        at=parse_time(detail.get("startDate" if status is JobStatus.RUNNING else "stopDate"))
        or event_time(event),
    )
