"""AWS Batch: one job per try, named after its dispatch token.

SubmitJob has no client token, so the name is the idempotency key: before submitting,
the queue is searched for a job of that name (ListJobs, JOB_NAME filter) and a job found
there is re-attached. The job's completion is its "Batch Job State Change" event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from skydag.engine.models import JobReport, JobStatus
from skydag.targets.aws._common import (
    cancel_reason,
    described,
    event_detail,
    event_time,
    identity_tags,
    int_or_none,
    is_skydag_cancel,
    job_environment,
    job_name,
    job_name_of,
    joined,
    parse_time,
    require_target,
    required,
    task_key_in,
    timeout_of,
    translate_errors,
    try_number_in,
    whole_units,
)
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef, token_from_name

KIND = "batch"
SOURCE = "aws.batch"
DETAIL_TYPE = "Batch Job State Change"
# Batch refuses attempt timeouts under a minute; TerminateJob reasons over 1024 characters.
_MIN_ATTEMPT_SECONDS = 60
_MAX_REASON = 1024
_FINISHED = frozenset({"SUCCEEDED", "FAILED"})
# DescribeJobs takes at most 100 job ids a call.
DESCRIBE_JOBS_LIMIT = 100
# The event statuses the scheduler's rule routes: a job's end. RUNNING is recorded already
# (the dispatch writes the try running with the job id SubmitJob returned), so its event
# would change nothing and still cost an SQS round and an invocation; statuses before it
# mean nothing to the engine. A RUNNING event that arrives anyway is still understood.
EVENT_STATUSES: tuple[str, ...] = ("SUCCEEDED", "FAILED")
_EVENT_STATUSES = frozenset({"RUNNING", *EVENT_STATUSES})

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_-]")

log = logging.getLogger("skydag.targets.batch")


class BatchJobs:
    """Submits, describes and terminates AWS Batch jobs (``batch:`` tasks)."""

    def __init__(self, client: Any, *, deployment: str | None = None) -> None:
        self.client = client
        self.deployment = deployment

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        target = request.target
        name = job_name(request, _name_prefix(target))
        queue = str(target["job_queue"])
        existing = None if request.first_call else self._find(queue, name)
        if existing is not None:
            log.info("re-attaching to Batch job %s (%s)", existing, name)
            return DispatchResult(job_id=existing)
        with translate_errors("batch", "SubmitJob", f"job {name} on queue {queue}"):
            response = self.client.submit_job(**_submit_parameters(request, name, self.deployment))
        return DispatchResult(job_id=str(response["jobId"]))

    def describe(self, job: JobRef, *, target: Mapping[str, Any] | None = None) -> JobReport | None:
        target = target if target is not None else job.target
        detail = self._detail(job, target)
        return None if detail is None else _report(job, detail)

    def describe_many(self, jobs: Sequence[JobRef]) -> dict[str, JobReport | None]:
        """``DescribesMany``: DescribeJobs, 100 job ids a call."""
        by_id = {job.job_id: job for job in jobs if job.job_id is not None}
        ids = list(by_id)
        reports: dict[str, JobReport | None] = dict.fromkeys(ids)
        for start in range(0, len(ids), DESCRIBE_JOBS_LIMIT):
            chunk = ids[start : start + DESCRIBE_JOBS_LIMIT]
            with translate_errors("batch", "DescribeJobs", f"{len(chunk)} jobs from {chunk[0]}"):
                details = self.client.describe_jobs(jobs=chunk).get("jobs") or []
            for detail in details:
                job_id = str(detail["jobId"])
                if job_id in by_id:
                    reports[job_id] = _report(by_id[job_id], detail)
        return reports

    def cancel(self, job: JobRef, reason: str, *, target: Mapping[str, Any] | None = None) -> None:
        target = target if target is not None else job.target
        detail = self._detail(job, target)
        if detail is None or detail.get("status") in _FINISHED:
            return
        job_id = str(detail["jobId"])
        # TerminateJob also cancels a job that has not started, and is a no-op on one
        # that has finished meanwhile.
        with translate_errors("batch", "TerminateJob", f"job {job_id}"):
            self.client.terminate_job(jobId=job_id, reason=cancel_reason(reason, _MAX_REASON))

    # --- lookups -------------------------------------------------------------------------

    def _detail(self, job: JobRef, target: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        job_id = job.job_id
        if job_id is None:
            if job.token is None:
                return None
            where = require_target("batch", job, target)
            name = job_name_of(job, _name_prefix(where))
            assert name is not None
            job_id = self._find(str(where["job_queue"]), name)
            if job_id is None:
                return None
        with translate_errors("batch", "DescribeJobs", f"job {job_id}"):
            jobs = self.client.describe_jobs(jobs=[job_id]).get("jobs") or []
        return jobs[0] if jobs else None

    def _find(self, queue: str, name: str) -> str | None:
        """The id of the job named ``name`` on ``queue``, in any status."""
        paginator = self.client.get_paginator("list_jobs")
        found: list[Mapping[str, Any]] = []
        with translate_errors("batch", "ListJobs", f"jobs named {name} on queue {queue}"):
            pages = paginator.paginate(
                jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
            )
            for page in pages:
                found.extend(
                    summary
                    for summary in page.get("jobSummaryList", [])
                    # The filter ignores case, and lists array children (<id>:<index>)
                    # and multi-node children (<id>#<node>) under the parent's name.
                    if summary.get("jobName") == name and _is_parent(str(summary["jobId"]))
                )
        if not found:
            return None
        if len(found) > 1:
            log.warning("%d Batch jobs are named %s; re-attaching to the oldest", len(found), name)
        oldest = min(found, key=lambda summary: summary.get("createdAt") or 0)
        return str(oldest["jobId"])


def _name_prefix(target: Mapping[str, Any]) -> str | None:
    """The target's ``job_name`` in the characters Batch allows in a name (a rendered
    ``{{ run.id }}`` brings ``:`` and ``+``)."""
    custom = target.get("job_name")
    return _NOT_IN_NAMES.sub("-", str(custom)) if custom else None


def _is_parent(job_id: str) -> bool:
    return ":" not in job_id and "#" not in job_id


def _submit_parameters(
    request: DispatchRequest, name: str, deployment: str | None
) -> dict[str, Any]:
    target = request.target
    overrides: dict[str, Any] = {
        "environment": job_environment(request, target.get("environment")),
    }
    if target.get("command"):
        overrides["command"] = [str(part) for part in target["command"]]
    parameters: dict[str, Any] = {
        "jobName": name,
        "jobQueue": str(target["job_queue"]),
        "jobDefinition": str(target["job_definition"]),
        "containerOverrides": overrides,
        "tags": identity_tags(request, target.get("tags"), deployment),
        # The ECS tasks that run the job carry its tags too (cost reports, clean-up).
        "propagateTags": True,
    }
    if target.get("parameters"):
        parameters["parameters"] = {str(k): str(v) for k, v in target["parameters"].items()}
    timeout = timeout_of(target.get("timeout"), request)
    if timeout is not None:
        seconds = whole_units(timeout, timedelta(seconds=1), _MIN_ATTEMPT_SECONDS)
        parameters["timeout"] = {"attemptDurationSeconds": seconds}
    if target.get("array_size"):
        parameters["arrayProperties"] = {"size": int(target["array_size"])}
    return parameters


def _report(job: JobRef, detail: Mapping[str, Any]) -> JobReport:
    return described(job, detail, str(detail["jobId"]), _outcome(detail))


def _outcome(detail: Mapping[str, Any]) -> tuple[JobStatus | None, int | None, str | None]:
    """(status, exit code, reason) of a JobDetail, as DescribeJobs or an event gives it.
    The status is None while the job has not reached RUNNING."""
    status = detail.get("status")
    container = detail.get("container") or {}
    attempts = detail.get("attempts") or []
    last_attempt = (attempts[-1].get("container") or {}) if attempts else {}
    exit_code = int_or_none(container.get("exitCode"))
    if exit_code is None:
        exit_code = int_or_none(last_attempt.get("exitCode"))
    reason = detail.get("statusReason")
    if status == "RUNNING":
        return JobStatus.RUNNING, None, None
    if status == "SUCCEEDED":
        return JobStatus.SUCCEEDED, exit_code, None
    if status == "FAILED":
        # A terminated or cancelled job also ends FAILED; its flags (newer API versions)
        # or skydag's own reason say it was stopped rather than failed.
        if detail.get("isTerminated") or detail.get("isCancelled") or is_skydag_cancel(reason):
            return JobStatus.STOPPED, exit_code, reason
        container_reason = container.get("reason") or last_attempt.get("reason")
        detail_reason = container_reason if container_reason != reason else None
        return JobStatus.FAILED, exit_code, joined(reason, detail_reason)
    return None, None, None


def parse_event(event: Mapping[str, Any]) -> JobEvent | None:
    """A "Batch Job State Change" event as a JobEvent (None: not one, or not a status the
    engine needs: SUBMITTED, PENDING, RUNNABLE, STARTING, or an array child's change)."""
    detail = event_detail(event, SOURCE, frozenset({DETAIL_TYPE}))
    if detail is None:
        return None
    job_id = required(detail, "jobId", DETAIL_TYPE)
    if required(detail, "status", DETAIL_TYPE) not in _EVENT_STATUSES:
        return None
    array = detail.get("arrayProperties") or {}
    if "index" in array or not _is_parent(job_id):
        # The parent array job reports the outcome of all its children.
        return None
    status, exit_code, reason = _outcome(detail)
    assert status is not None
    # The job's environment, as the event's container echoes it: its identity.
    environment = (detail.get("container") or {}).get("environment")
    return JobEvent(
        kind=KIND,
        status=status,
        token=token_from_name(detail.get("jobName")),
        job_id=job_id,
        task_key=task_key_in(environment),
        try_number=try_number_in(environment),
        exit_code=exit_code,
        reason=reason,
        # The job's own times (milliseconds) over the event's (whole seconds).
        at=_moment(detail, status) or event_time(event),
    )


def _moment(detail: Mapping[str, Any], status: JobStatus) -> datetime | None:
    """When the job reached ``status``, by Batch's clock: startedAt or stoppedAt."""
    return parse_time(detail.get("startedAt" if status is JobStatus.RUNNING else "stoppedAt"))
