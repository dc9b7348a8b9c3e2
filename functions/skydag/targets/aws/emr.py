"""Amazon EMR on EC2: one step per try on a running cluster.

AddJobFlowSteps has no client token, so the step's name (ending in the dispatch token) is
the idempotency key: before adding, the cluster's recent steps are searched for that
name. The job id is ``<cluster_id>/<step_id>``: a step id means nothing without its
cluster. The step's completion is its "EMR Step Status Change" event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from skydag.engine.models import JobReport, JobStatus
from skydag.targets.aws._common import (
    DEFAULT_LOOKUP_WINDOW,
    call_unless_missing,
    event_detail,
    event_time,
    job_name,
    job_name_of,
    joined,
    parse_time,
    refusal,
    report,
    require_target,
    required,
    split_job_id,
    translate_errors,
)
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef, token_from_name

KIND = "emr"
SOURCE = "aws.emr"
DETAIL_TYPE = "EMR Step Status Change"
# Clusters that can still run a step.
ACTIVE_CLUSTER_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
_RUNNING_STATES = frozenset({"PENDING", "CANCEL_PENDING", "RUNNING"})
_MISSING = frozenset({"InvalidRequestException", "ResourceNotFoundException"})

log = logging.getLogger("skydag.targets.emr")


class EmrSteps:
    """Adds, describes and cancels steps on EMR clusters (``emr:`` tasks)."""

    def __init__(
        self,
        client: Any,
        *,
        lookup_window: timedelta = DEFAULT_LOOKUP_WINDOW,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.lookup_window = lookup_window
        self.now = now

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        target = request.target
        step = target["step"]
        cluster_id = self._cluster_id(target)
        name = job_name(request, step.get("name"))
        existing = None if request.first_call else self._find(cluster_id, name)
        if existing is not None:
            log.info("re-attaching to EMR step %s on %s (%s)", existing, cluster_id, name)
            return DispatchResult(job_id=f"{cluster_id}/{existing}")
        jar_step: dict[str, Any] = {
            "Jar": step.get("jar") or "command-runner.jar",
            "Args": [str(arg) for arg in step.get("args") or []],
        }
        if step.get("main_class"):
            jar_step["MainClass"] = str(step["main_class"])
        with translate_errors("emr", "AddJobFlowSteps", f"step {name} on cluster {cluster_id}"):
            response = self.client.add_job_flow_steps(
                JobFlowId=cluster_id,
                Steps=[
                    {
                        "Name": name,
                        "ActionOnFailure": step.get("action_on_failure") or "CONTINUE",
                        "HadoopJarStep": jar_step,
                    }
                ],
            )
        return DispatchResult(job_id=f"{cluster_id}/{response['StepIds'][0]}")

    def describe(self, job: JobRef, *, target: Mapping[str, Any] | None = None) -> JobReport | None:
        target = target if target is not None else job.target
        located = self._locate(job, target)
        if located is None:
            return None
        cluster_id, step_id = located
        step = self._step(cluster_id, step_id)
        if step is None:
            return None
        status = step.get("Status") or {}
        outcome, reason = _outcome(str(status.get("State")), status)
        timeline = status.get("Timeline") or {}
        return report(
            job,
            outcome,
            f"{cluster_id}/{step_id}",
            reason=reason,
            at=parse_time(timeline.get("EndDateTime") or timeline.get("StartDateTime")),
        )

    def cancel(self, job: JobRef, reason: str, *, target: Mapping[str, Any] | None = None) -> None:
        target = target if target is not None else job.target
        located = self._locate(job, target)
        if located is None:
            return
        cluster_id, step_id = located
        if not self._is_unfinished(cluster_id, step_id):
            return
        # EMR keeps no reason with a cancelled step; skydag's reason is only logged.
        log.info("cancelling EMR step %s on %s: %s", step_id, cluster_id, reason)
        with translate_errors("emr", "CancelSteps", f"step {step_id} on cluster {cluster_id}"):
            response = self.client.cancel_steps(
                ClusterId=cluster_id, StepIds=[step_id], StepCancellationOption="SEND_INTERRUPT"
            )
        for info in response.get("CancelStepsInfoList") or []:
            # A step that finished meanwhile cannot be cancelled: that is fine.
            if info.get("Status") == "FAILED" and self._is_unfinished(cluster_id, step_id):
                raise refusal(
                    "emr", f"cannot cancel step {step_id} on {cluster_id}: {info.get('Reason')}"
                )

    # --- lookups -------------------------------------------------------------------------

    def _locate(self, job: JobRef, target: Mapping[str, Any] | None) -> tuple[str, str] | None:
        if job.job_id is not None:
            return split_job_id("emr", job.job_id, "<cluster_id>/<step_id>")
        if job.token is None:
            return None
        where = require_target("emr", job, target)
        cluster_id = self._cluster_id(where)
        name = job_name_of(job, (where.get("step") or {}).get("name"))
        assert name is not None
        step_id = self._find(cluster_id, name)
        return (cluster_id, step_id) if step_id is not None else None

    def _step(self, cluster_id: str, step_id: str) -> Mapping[str, Any] | None:
        response = call_unless_missing(
            "emr",
            "DescribeStep",
            f"step {step_id} on cluster {cluster_id}",
            _MISSING,
            self.client.describe_step,
            ClusterId=cluster_id,
            StepId=step_id,
        )
        return (response or {}).get("Step")

    def _is_unfinished(self, cluster_id: str, step_id: str) -> bool:
        step = self._step(cluster_id, step_id)
        return step is not None and (step.get("Status") or {}).get("State") in _RUNNING_STATES

    def _cluster_id(self, target: Mapping[str, Any]) -> str:
        if target.get("cluster_id"):
            return str(target["cluster_id"])
        name = str(target["cluster_name"])
        paginator = self.client.get_paginator("list_clusters")
        matches: list[str] = []
        with translate_errors("emr", "ListClusters", f"active clusters named {name}"):
            for page in paginator.paginate(ClusterStates=list(ACTIVE_CLUSTER_STATES)):
                matches.extend(
                    str(cluster["Id"])
                    for cluster in page.get("Clusters", [])
                    if cluster.get("Name") == name
                )
        if not matches:
            raise refusal("emr", f"no active cluster is named {name!r}")
        if len(matches) > 1:
            ids = ", ".join(sorted(matches))
            raise refusal(
                "emr",
                f"{len(matches)} active clusters are named {name!r} ({ids}); give cluster_id",
            )
        return matches[0]

    def _find(self, cluster_id: str, name: str) -> str | None:
        """The id of the step named ``name``, among the steps added within the lookup
        window. ListSteps returns the newest first, so the search stops at the first
        step older than the window."""
        oldest = self.now() - self.lookup_window
        paginator = self.client.get_paginator("list_steps")
        with translate_errors("emr", "ListSteps", f"steps named {name} on cluster {cluster_id}"):
            for page in paginator.paginate(ClusterId=cluster_id):
                for step in page.get("Steps", []):
                    if step.get("Name") == name:
                        return str(step["Id"])
                    timeline = (step.get("Status") or {}).get("Timeline") or {}
                    created = parse_time(timeline.get("CreationDateTime"))
                    if created is not None and created < oldest:
                        return None
        return None


def _outcome(state: str, status: Mapping[str, Any]) -> tuple[JobStatus, str | None]:
    """A step's state (DescribeStep) as the engine's status, with a reason when it ended
    otherwise than COMPLETED."""
    change = (status.get("StateChangeReason") or {}).get("Message")
    if state in _RUNNING_STATES:
        return JobStatus.RUNNING, None
    if state == "COMPLETED":
        return JobStatus.SUCCEEDED, None
    if state == "CANCELLED":
        return JobStatus.STOPPED, change or "step cancelled"
    failure = status.get("FailureDetails") or {}
    details = joined(failure.get("Reason"), failure.get("Message"))
    if failure.get("LogFile"):
        details = f"{details or 'step failed'} (log: {failure['LogFile']})"
    prefix = "step interrupted" if state == "INTERRUPTED" else None
    return JobStatus.FAILED, joined(prefix, details or change) or f"step {state.lower()}"


_EVENT_STATUS = {
    "RUNNING": JobStatus.RUNNING,
    "COMPLETED": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
    # The cluster went away under the step (terminated, lost its master).
    "INTERRUPTED": JobStatus.FAILED,
    "CANCELLED": JobStatus.STOPPED,
}
# The event states the scheduler's rule routes: every state the engine acts on, so a step
# whose cluster went away fails when its event comes, not a reconcile period later.
EVENT_STATUSES: tuple[str, ...] = tuple(_EVENT_STATUS)


def parse_event(event: Mapping[str, Any]) -> JobEvent | None:
    """An "EMR Step Status Change" event as a JobEvent (None: not one, or PENDING)."""
    detail = event_detail(event, SOURCE, frozenset({DETAIL_TYPE}))
    if detail is None:
        return None
    step_id = required(detail, "stepId", DETAIL_TYPE)
    cluster_id = required(detail, "clusterId", DETAIL_TYPE)
    status = _EVENT_STATUS.get(required(detail, "state", DETAIL_TYPE))
    if status is None:
        return None
    return JobEvent(
        kind=KIND,
        status=status,
        token=token_from_name(detail.get("name")),
        job_id=f"{cluster_id}/{step_id}",
        reason=None if status is JobStatus.SUCCEEDED else detail.get("message"),
        at=event_time(event),
    )
