"""Amazon ECS: one standalone task per try.

RunTask gets the dispatch token as its client token and the job name as ``startedBy``.
Before running, the cluster's tasks started by that name (ListTasks, running and
stopped) are searched and a task found there is re-attached. The job id is the task ARN.
The task's completion is its "ECS Task State Change" event with lastStatus STOPPED.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
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
    job_name_of,
    joined,
    parse_time,
    refusal,
    require_target,
    required,
    task_key_in,
    translate_errors,
    try_number_in,
)
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef, token_from_name

KIND = "ecs"
SOURCE = "aws.ecs"
DETAIL_TYPE = "ECS Task State Change"
# DescribeTasks takes at most 100 tasks of one cluster a call.
DESCRIBE_TASKS_LIMIT = 100
# The ECS stop code of a task stopped through StopTask (by skydag or anyone else).
USER_INITIATED = "UserInitiated"
# The container override skydag writes carries this variable: it marks the container
# whose exit code is the task's.
_MARKER_VARIABLE = "SKYDAG_TASK"
_MAX_REASON = 255

log = logging.getLogger("skydag.targets.ecs")


class EcsTasks:
    """Runs, describes and stops ECS tasks (``ecs:`` tasks)."""

    def __init__(self, client: Any, *, deployment: str | None = None) -> None:
        self.client = client
        self.deployment = deployment

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        target = request.target
        cluster = str(target["cluster"])
        name = request.job_name
        existing = None if request.first_call else self._find(cluster, name)
        if existing is not None:
            log.info("re-attaching to ECS task %s (%s)", existing, name)
            return DispatchResult(job_id=existing)
        parameters = self._run_parameters(request)
        with translate_errors("ecs", "RunTask", f"task {name} on cluster {cluster}"):
            response = self.client.run_task(**parameters)
        tasks = response.get("tasks") or []
        if not tasks:
            failures = "; ".join(
                joined(f.get("arn"), f.get("reason"), f.get("detail")) or "unknown"
                for f in response.get("failures") or []
            )
            raise refusal(
                "ecs", f"RunTask (task {name} on cluster {cluster}) started nothing: {failures}"
            )
        return DispatchResult(job_id=str(tasks[0]["taskArn"]))

    def describe(self, job: JobRef, *, target: Mapping[str, Any] | None = None) -> JobReport | None:
        target = target if target is not None else job.target
        task = self._task(job, target)
        return None if task is None else _report(job, task)

    def describe_many(self, jobs: Sequence[JobRef]) -> dict[str, JobReport | None]:
        """``DescribesMany``: DescribeTasks, 100 tasks of one cluster a call."""
        by_arn = {job.job_id: job for job in jobs if job.job_id is not None}
        reports: dict[str, JobReport | None] = dict.fromkeys(by_arn)
        by_cluster: dict[str, list[str]] = {}
        for arn, job in by_arn.items():
            by_cluster.setdefault(_cluster_of(arn, job.target), []).append(arn)
        for cluster, arns in by_cluster.items():
            for start in range(0, len(arns), DESCRIBE_TASKS_LIMIT):
                chunk = arns[start : start + DESCRIBE_TASKS_LIMIT]
                with translate_errors("ecs", "DescribeTasks", f"{len(chunk)} tasks on {cluster}"):
                    tasks = self.client.describe_tasks(cluster=cluster, tasks=chunk).get("tasks")
                for task in tasks or []:
                    arn = str(task["taskArn"])
                    if arn in by_arn:
                        reports[arn] = _report(by_arn[arn], task)
        return reports

    def cancel(self, job: JobRef, reason: str, *, target: Mapping[str, Any] | None = None) -> None:
        target = target if target is not None else job.target
        task = self._task(job, target)
        if task is None or task.get("lastStatus") == "STOPPED":
            return
        task_arn = str(task["taskArn"])
        # StopTask on a task that stopped meanwhile is a no-op that returns it.
        with translate_errors("ecs", "StopTask", f"task {task_arn}"):
            self.client.stop_task(
                cluster=_cluster_of(task_arn, target),
                task=task_arn,
                reason=cancel_reason(reason, _MAX_REASON),
            )

    # --- lookups -------------------------------------------------------------------------

    def _task(self, job: JobRef, target: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        task_arn = job.job_id
        if task_arn is None:
            name = job_name_of(job, None)
            if name is None:
                return None
            where = require_target("ecs", job, target)
            task_arn = self._find(str(where["cluster"]), name)
            if task_arn is None:
                return None
        with translate_errors("ecs", "DescribeTasks", f"task {task_arn}"):
            response = self.client.describe_tasks(
                cluster=_cluster_of(task_arn, target), tasks=[task_arn]
            )
        tasks = response.get("tasks") or []
        return tasks[0] if tasks else None

    def _find(self, cluster: str, name: str) -> str | None:
        """A task of ``cluster`` started by ``name``. ListTasks shows tasks meant to run
        by default and stopped ones on request (ECS forgets those after about an hour)."""
        for desired in ("RUNNING", "STOPPED"):
            with translate_errors("ecs", "ListTasks", f"tasks started by {name} on {cluster}"):
                arns = self.client.list_tasks(
                    cluster=cluster, startedBy=name, desiredStatus=desired
                ).get("taskArns")
            if arns:
                return str(arns[0])
        return None

    def _run_parameters(self, request: DispatchRequest) -> dict[str, Any]:
        target = request.target
        container = target.get("container") or self._main_container(str(target["task_definition"]))
        override: dict[str, Any] = {
            "name": container,
            "environment": job_environment(request, target.get("environment")),
        }
        if target.get("command"):
            override["command"] = [str(part) for part in target["command"]]
        parameters: dict[str, Any] = {
            "cluster": str(target["cluster"]),
            "taskDefinition": str(target["task_definition"]),
            "count": 1,
            "startedBy": request.job_name,
            "clientToken": request.token,
            "overrides": {"containerOverrides": [override]},
            "tags": [
                {"key": key, "value": value}
                for key, value in identity_tags(
                    request, target.get("tags"), self.deployment
                ).items()
            ],
        }
        launch_type, provider = target.get("launch_type"), target.get("capacity_provider")
        if launch_type and provider:
            raise refusal("ecs", "give launch_type or capacity_provider, not both")
        if launch_type:
            parameters["launchType"] = str(launch_type)
        if provider:
            parameters["capacityProviderStrategy"] = [{"capacityProvider": str(provider)}]
        if target.get("subnets") or target.get("security_groups"):
            parameters["networkConfiguration"] = {
                "awsvpcConfiguration": {
                    "subnets": [str(s) for s in target.get("subnets") or []],
                    "securityGroups": [str(g) for g in target.get("security_groups") or []],
                    "assignPublicIp": "ENABLED" if target.get("assign_public_ip") else "DISABLED",
                }
            }
        return parameters

    def _main_container(self, task_definition: str) -> str:
        """The container that runs the job when the target names none: the task
        definition's only essential container (or its only container)."""
        where = f"task definition {task_definition}"
        with translate_errors("ecs", "DescribeTaskDefinition", where):
            definition = self.client.describe_task_definition(taskDefinition=task_definition)
        containers = definition["taskDefinition"].get("containerDefinitions") or []
        essential = [c for c in containers if c.get("essential", True)]
        for candidates in (essential, containers):
            if len(candidates) == 1:
                return str(candidates[0]["name"])
        names = ", ".join(str(c.get("name")) for c in essential or containers)
        raise refusal(
            "ecs",
            f"task definition {task_definition} has several essential containers ({names}): "
            "name the one to run with `container:`",
        )


def _cluster_of(task_arn: str, target: Mapping[str, Any] | None) -> str:
    """The cluster in a task ARN (``...:task/<cluster>/<id>``); the old ARN format
    (``...:task/<id>``) has none, and then the target's cluster or ``default`` is meant."""
    resource = task_arn.split(":", 5)[-1]
    parts = resource.split("/")
    if len(parts) == 3:
        return parts[1]
    return str((target or {}).get("cluster") or "default")


def _report(job: JobRef, task: Mapping[str, Any]) -> JobReport:
    return described(job, task, str(task["taskArn"]), _outcome(task))


def _outcome(task: Mapping[str, Any]) -> tuple[JobStatus | None, int | None, str | None]:
    """(status, exit code, reason) of a task as DescribeTasks or an event gives it. The
    status is RUNNING once the task runs, None before that and while it stops."""
    last_status = task.get("lastStatus")
    if last_status == "RUNNING":
        return JobStatus.RUNNING, None, None
    if last_status != "STOPPED":
        return None, None, None
    stopped_reason = task.get("stoppedReason")
    containers = [c for c in task.get("containers") or [] if isinstance(c, Mapping)]
    exit_code = _main_exit_code(task, containers)
    if task.get("stopCode") == USER_INITIATED or is_skydag_cancel(stopped_reason):
        return JobStatus.STOPPED, exit_code, stopped_reason or "task stopped"
    if exit_code == 0:
        return JobStatus.SUCCEEDED, 0, None
    if exit_code is None:
        # No container ran to an exit (it failed to start): the task's reason says why.
        return JobStatus.FAILED, None, stopped_reason or "task stopped"
    failed = next(c for c in containers if int_or_none(c.get("exitCode")) == exit_code)
    reason = joined(stopped_reason, failed.get("name"), failed.get("reason"))
    return JobStatus.FAILED, exit_code, joined(reason, f"exit code {exit_code}")


def _main_exit_code(task: Mapping[str, Any], containers: list[Mapping[str, Any]]) -> int | None:
    """The exit code of the container skydag ran the job in (the one whose override
    carries SKYDAG_TASK); without it, the first non-zero code, else 0 if any exited."""
    overrides = (task.get("overrides") or {}).get("containerOverrides") or []
    main = next(
        (
            o.get("name")
            for o in overrides
            if any(v.get("name") == _MARKER_VARIABLE for v in o.get("environment") or [])
        ),
        None,
    )
    codes = {c.get("name"): int_or_none(c.get("exitCode")) for c in containers}
    if main is not None and main in codes:
        return codes[main]
    known = [code for code in codes.values() if code is not None]
    return next((code for code in known if code != 0), 0 if known else None)


# The event lastStatus values the engine acts on (and the scheduler's rule routes).
EVENT_STATUSES: tuple[str, ...] = ("RUNNING", "STOPPED")
_EVENT_STATUSES = frozenset(EVENT_STATUSES)


def task_key_of(detail: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The try's task instance, from the identity in the overrides the task ran with."""
    return task_key_in(_identity_environment(detail))


def _identity_environment(detail: Mapping[str, Any]) -> Any:
    """The environment of the container override that carries the try's identity."""
    overrides = (detail.get("overrides") or {}).get("containerOverrides") or []
    for override in overrides if isinstance(overrides, list) else ():
        if isinstance(override, Mapping) and task_key_in(override.get("environment")):
            return override.get("environment")
    return None


def parse_event(event: Mapping[str, Any]) -> JobEvent | None:
    """An "ECS Task State Change" event as a JobEvent (None: not one, or a lastStatus
    other than RUNNING and STOPPED: PROVISIONING, PENDING, ACTIVATING, DEACTIVATING,
    STOPPING, DEPROVISIONING)."""
    detail = event_detail(event, SOURCE, frozenset({DETAIL_TYPE}))
    if detail is None:
        return None
    task_arn = required(detail, "taskArn", DETAIL_TYPE)
    if required(detail, "lastStatus", DETAIL_TYPE) not in _EVENT_STATUSES:
        return None
    status, exit_code, reason = _outcome(detail)
    assert status is not None
    environment = _identity_environment(detail)
    return JobEvent(
        kind=KIND,
        status=status,
        token=token_from_name(detail.get("startedBy")),
        job_id=task_arn,
        task_key=task_key_in(environment),
        try_number=try_number_in(environment),
        exit_code=exit_code,
        reason=reason,
        # The task's own times (milliseconds) over the event's (whole seconds).
        at=_moment(detail, status) or event_time(event),
    )


def _moment(detail: Mapping[str, Any], status: JobStatus) -> datetime | None:
    """When the task reached ``status``, by ECS's clock: startedAt or stoppedAt."""
    return parse_time(detail.get("startedAt" if status is JobStatus.RUNNING else "stoppedAt"))
