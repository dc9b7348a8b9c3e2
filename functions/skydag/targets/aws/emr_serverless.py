"""Amazon EMR Serverless: one job run per try.

StartJobRun takes the dispatch token as its client token, so AWS itself answers a
repeated start with the run it already started. The run is also named after the token
and looked up by that name first, which re-attaches where the client token is not
honoured (an emulator, a token AWS has forgotten) and lets a try without a job id be
found. The job id is ``<application_id>/<job_run_id>``. The run's completion is its
"EMR Serverless Job Run State Change" event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from skydag.engine.models import JobReport, JobStatus
from skydag.targets.aws._common import (
    DEFAULT_LOOKUP_WINDOW,
    call_unless_missing,
    error_code,
    event_detail,
    event_time,
    identity_tags,
    job_name,
    job_name_of,
    parse_time,
    refusal,
    report,
    require_target,
    required,
    service_error,
    split_job_id,
    timeout_of,
    translate_errors,
    whole_units,
)
from skydag.targets.base import (
    DispatchError,
    DispatchRequest,
    DispatchResult,
    JobEvent,
    JobRef,
    token_from_name,
)

KIND = "emr_serverless"
SOURCE = "aws.emr-serverless"
DETAIL_TYPE = "EMR Serverless Job Run State Change"
# EMR Serverless refuses run timeouts under five minutes.
_MIN_TIMEOUT_MINUTES = 5
_UNFINISHED = frozenset({"SUBMITTED", "PENDING", "SCHEDULED", "QUEUED", "RUNNING", "CANCELLING"})
_MISSING = frozenset({"ResourceNotFoundException"})

log = logging.getLogger("skydag.targets.emr_serverless")


class EmrServerlessRuns:
    """Starts, describes and cancels EMR Serverless job runs (``emr_serverless:`` tasks)."""

    def __init__(
        self,
        client: Any,
        *,
        lookup_window: timedelta = DEFAULT_LOOKUP_WINDOW,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        deployment: str | None = None,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.lookup_window = lookup_window
        self.now = now

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        target = request.target
        application_id = str(target["application_id"])
        name = job_name(request, target.get("name"))
        existing = None if request.first_call else self._find(application_id, name)
        if existing is not None:
            log.info("re-attaching to EMR Serverless run %s (%s)", existing, name)
            return DispatchResult(job_id=f"{application_id}/{existing}")
        parameters: dict[str, Any] = {
            "applicationId": application_id,
            "clientToken": request.token,
            "name": name,
            "executionRoleArn": str(target["execution_role_arn"]),
            "jobDriver": target["job_driver"],
            "tags": identity_tags(request, target.get("tags"), self.deployment),
        }
        if target.get("configuration_overrides"):
            parameters["configurationOverrides"] = target["configuration_overrides"]
        timeout = timeout_of(target.get("execution_timeout"), request)
        if timeout is not None:
            parameters["executionTimeoutMinutes"] = whole_units(
                timeout, timedelta(minutes=1), _MIN_TIMEOUT_MINUTES
            )
        with translate_errors(
            "emr-serverless", "StartJobRun", f"run {name} on application {application_id}"
        ):
            response = self.client.start_job_run(**parameters)
        return DispatchResult(job_id=f"{application_id}/{response['jobRunId']}")

    def describe(self, job: JobRef, *, target: Mapping[str, Any] | None = None) -> JobReport | None:
        target = target if target is not None else job.target
        located = self._locate(job, target)
        if located is None:
            return None
        run = self._run(*located)
        if run is None:
            return None
        status, reason = _outcome(str(run.get("state")), run.get("stateDetails"))
        return report(
            job,
            status,
            f"{located[0]}/{located[1]}",
            reason=reason,
            at=parse_time(run.get("endedAt") or run.get("updatedAt")),
        )

    def cancel(self, job: JobRef, reason: str, *, target: Mapping[str, Any] | None = None) -> None:
        target = target if target is not None else job.target
        located = self._locate(job, target)
        if located is None or not self._is_unfinished(*located):
            return
        application_id, run_id = located
        # EMR Serverless keeps no reason with a cancelled run; skydag's is only logged.
        log.info("cancelling EMR Serverless run %s/%s: %s", application_id, run_id, reason)
        try:
            with translate_errors(
                "emr-serverless", "CancelJobRun", f"run {run_id} on application {application_id}"
            ):
                self.client.cancel_job_run(applicationId=application_id, jobRunId=run_id)
        except DispatchError:
            # A run that ended between the look and the cancel refuses it: that is fine.
            if self._is_unfinished(application_id, run_id):
                raise

    # --- lookups -------------------------------------------------------------------------

    def _locate(self, job: JobRef, target: Mapping[str, Any] | None) -> tuple[str, str] | None:
        if job.job_id is not None:
            return split_job_id("emr-serverless", job.job_id, "<application_id>/<job_run_id>")
        if job.token is None:
            return None
        where = require_target("emr-serverless", job, target)
        application_id = str(where["application_id"])
        name = job_name_of(job, where.get("name"))
        assert name is not None
        run_id = self._find(application_id, name)
        return (application_id, run_id) if run_id is not None else None

    def _run(self, application_id: str, run_id: str) -> Mapping[str, Any] | None:
        response = call_unless_missing(
            "emr-serverless",
            "GetJobRun",
            f"run {run_id} on application {application_id}",
            _MISSING,
            self.client.get_job_run,
            applicationId=application_id,
            jobRunId=run_id,
        )
        return (response or {}).get("jobRun")

    def _is_unfinished(self, application_id: str, run_id: str) -> bool:
        run = self._run(application_id, run_id)
        return run is not None and run.get("state") in _UNFINISHED

    def _find(self, application_id: str, name: str) -> str | None:
        """The id of the run named ``name`` among the application's runs created within
        the lookup window (ListJobRuns cannot filter by name)."""
        paginator = self.client.get_paginator("list_job_runs")
        since = self.now() - self.lookup_window
        where = f"runs named {name} on application {application_id}"
        try:
            for page in paginator.paginate(applicationId=application_id, createdAtAfter=since):
                for run in page.get("jobRuns", []):
                    if run.get("name") == name:
                        return str(run["id"])
        except ClientError as error:
            if error_code(error) in _MISSING:
                # Nothing to re-attach to; if the application itself is missing, the
                # start that follows says so.
                return None
            raise service_error("emr-serverless", "ListJobRuns", where, error) from error
        except (BotoCoreError, NotImplementedError) as error:
            raise service_error("emr-serverless", "ListJobRuns", where, error) from error
        return None


def _outcome(state: str, details: Any) -> tuple[JobStatus, str | None]:
    if state in _UNFINISHED:
        return JobStatus.RUNNING, None
    if state == "SUCCESS":
        return JobStatus.SUCCEEDED, None
    if state == "CANCELLED":
        # Also the end of a run past its executionTimeoutMinutes: stateDetails says which.
        return JobStatus.STOPPED, details or "job run cancelled"
    if state == "FAILED":
        return JobStatus.FAILED, details or "job run failed"
    raise refusal("emr-serverless", f"unknown job run state {state!r}")


_EVENT_STATUS = {
    "RUNNING": JobStatus.RUNNING,
    "SUCCESS": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
    "CANCELLED": JobStatus.STOPPED,
}
# The event states the engine acts on (and the scheduler's rule routes).
EVENT_STATUSES = tuple(_EVENT_STATUS)


def parse_event(event: Mapping[str, Any]) -> JobEvent | None:
    """An "EMR Serverless Job Run State Change" event as a JobEvent (None: not one, or a
    state the engine does not need: SUBMITTED, PENDING, SCHEDULED, QUEUED, CANCELLING).

    The token comes from ``jobRunName`` when the event carries it; AWS's documented
    example does not, and then the token is None and the scheduler finds the try by its
    job id."""
    detail = event_detail(event, SOURCE, frozenset({DETAIL_TYPE}))
    if detail is None:
        return None
    run_id = required(detail, "jobRunId", DETAIL_TYPE)
    application_id = required(detail, "applicationId", DETAIL_TYPE)
    status = _EVENT_STATUS.get(required(detail, "state", DETAIL_TYPE))
    if status is None:
        return None
    reason = None
    if status in (JobStatus.FAILED, JobStatus.STOPPED):
        reason = detail.get("stateDetails") or f"job run {str(detail['state']).lower()}"
    return JobEvent(
        kind=KIND,
        status=status,
        token=token_from_name(detail.get("jobRunName")),
        job_id=f"{application_id}/{run_id}",
        reason=reason,
        at=event_time(event),
    )
