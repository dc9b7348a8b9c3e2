"""Where a try's output lives: the services' own log locations, and the local cloud's.

On AWS each service keeps a job's output where it always does (Batch and ECS: CloudWatch
Logs streams; Lambda: the function's log group; EMR Serverless and EMR steps: where
their monitoring configuration says). The local cloud writes a played job's captured
output to those same places where the service would have them, and to one stream per
try in ``LOCAL_LOG_GROUP``, so `skydag logs` reads the emulator exactly as it reads AWS.

This module only knows the layouts: given what a service says about a job (the response
of its Describe* call), where the output is. The calls themselves are made by
``skydag.adapters.joblogs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The local cloud's own group: one stream per try, for every kind (it does not exist on AWS).
LOCAL_LOG_GROUP = "/skydag/local-jobs"
BATCH_LOG_GROUP = "/aws/batch/job"
EMR_SERVERLESS_LOG_GROUP = "/aws/emr-serverless"
# The variable skydag's container override carries (targets/aws/ecs.py): it marks the
# container that runs the task.
ECS_MARKER_VARIABLE = "SKYDAG_TASK"
# Kinds whose tries run no job of their own: nothing to read but the local cloud's stream.
NO_JOB_KINDS = frozenset({"noop", "wait", "emit"})


def local_stream(dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    """The local cloud's stream of one try: ``<dag>/<run>/<task>/<try>`` (CloudWatch Logs
    forbids ``:`` and ``*`` in stream names; run ids hold ``:``)."""
    name = f"{dag_id}/{run_id}/{task_id}/{try_number}"
    return name.replace(":", "_").replace("*", "_")


def lambda_log_group(function_name: str) -> str:
    """``/aws/lambda/<name>`` (a function ARN or ``name:qualifier`` gives its name)."""
    if function_name.startswith("arn:"):
        function_name = function_name.split(":")[6]
    return f"/aws/lambda/{function_name.split(':')[0]}"


# --- locations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogStream:
    """A CloudWatch Logs stream; ``request_id`` narrows it to one Lambda invocation (the
    lines between ``START RequestId: <id>`` and ``END RequestId: <id>``), and then
    ``stream`` is None: the invocation's stream is found by searching the group."""

    group: str
    stream: str | None
    request_id: str | None = None

    def __str__(self) -> str:
        if self.stream is None:
            return f"log group {self.group}, invocation {self.request_id}"
        return f"log group {self.group}, stream {self.stream}"


@dataclass(frozen=True, slots=True)
class S3Log:
    """An object in S3, gzip-compressed when its key ends in ``.gz``."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class NoLog:
    """The service keeps no output of this job (or was not told to): why, in one line,
    and what to do about it."""

    reason: str


LogLocation = LogStream | S3Log | NoLog


def batch_location(job: Mapping[str, Any]) -> LogLocation:
    """A Batch job (a DescribeJobs entry): its container's stream, or its last attempt's,
    in the group its log configuration names (``/aws/batch/job`` by default)."""
    container: Mapping[str, Any] = job.get("container") or {}
    stream = container.get("logStreamName")
    if not stream:
        attempts: Sequence[Mapping[str, Any]] = job.get("attempts") or []
        for attempt in reversed(attempts):
            stream = (attempt.get("container") or {}).get("logStreamName")
            if stream:
                break
    config: Mapping[str, Any] = container.get("logConfiguration") or {}
    driver = config.get("logDriver", "awslogs")
    if driver != "awslogs":
        return NoLog(
            f"Batch job {job.get('jobId')} logs with the {driver} driver, not to CloudWatch "
            "Logs: read it where that driver sends it"
        )
    if not stream:
        return NoLog(
            f"Batch job {job.get('jobId')} has no log stream (status {job.get('status')}): "
            "its container has not started"
        )
    options: Mapping[str, Any] = config.get("options") or {}
    return LogStream(str(options.get("awslogs-group") or BATCH_LOG_GROUP), str(stream))


def ecs_task_parts(task_arn: str) -> tuple[str | None, str]:
    """``(cluster, task id)`` of a task ARN ``...:task/<cluster>/<id>``; the old format
    ``...:task/<id>`` names no cluster."""
    parts = task_arn.split(":", 5)[-1].split("/")
    if len(parts) == 3:
        return parts[1], parts[2]
    return None, parts[-1]


def ecs_container_name(task: Mapping[str, Any], definitions: Sequence[Mapping[str, Any]]) -> str:
    """The container that ran the job: the one whose override carries SKYDAG_TASK, else
    the task definition's only essential container (or its only container)."""
    overrides = (task.get("overrides") or {}).get("containerOverrides") or []
    for override in overrides:
        names = {e.get("name") for e in override.get("environment") or []}
        if ECS_MARKER_VARIABLE in names and override.get("name"):
            return str(override["name"])
    essential = [d for d in definitions if d.get("essential", True)]
    for candidates in (essential, definitions):
        if len(candidates) == 1:
            return str(candidates[0]["name"])
    raise ValueError("several essential containers and no override marks skydag's")


def ecs_location(task: Mapping[str, Any], definitions: Sequence[Mapping[str, Any]]) -> LogLocation:
    """An ECS task (DescribeTasks) and its task definition's containers: the awslogs
    stream ``<awslogs-stream-prefix>/<container>/<task id>``."""
    task_arn = str(task.get("taskArn"))
    try:
        name = ecs_container_name(task, definitions)
    except ValueError as error:
        return NoLog(f"ECS task {task_arn}: {error}")
    definition = next((d for d in definitions if d.get("name") == name), {})
    config: Mapping[str, Any] = definition.get("logConfiguration") or {}
    options: Mapping[str, Any] = config.get("options") or {}
    how = "give its container definition a logConfiguration with the awslogs driver"
    if config.get("logDriver") != "awslogs":
        driver = config.get("logDriver") or "no log driver"
        return NoLog(
            f"ECS container {name} of task {task_arn} logs with {driver}, not CloudWatch "
            f"Logs: {how} (awslogs-group, awslogs-stream-prefix)"
        )
    prefix = options.get("awslogs-stream-prefix")
    if not prefix or not options.get("awslogs-group"):
        return NoLog(
            f"ECS container {name} of task {task_arn} logs with awslogs but without "
            "awslogs-group and awslogs-stream-prefix, so its stream cannot be named: set both"
        )
    _, task_id = ecs_task_parts(task_arn)
    return LogStream(str(options["awslogs-group"]), f"{prefix}/{name}/{task_id}")


def emr_serverless_location(
    application_id: str, run_id: str, monitoring: Mapping[str, Any]
) -> LogLocation:
    """An EMR Serverless job run's driver stdout, from its monitoring configuration
    (``configurationOverrides.monitoringConfiguration``): CloudWatch Logs when enabled,
    else the S3 log URI."""
    tail = f"applications/{application_id}/jobs/{run_id}/SPARK_DRIVER/stdout"
    cloudwatch: Mapping[str, Any] = monitoring.get("cloudWatchLoggingConfiguration") or {}
    if cloudwatch.get("enabled"):
        prefix = cloudwatch.get("logStreamNamePrefix")
        group = str(cloudwatch.get("logGroupName") or EMR_SERVERLESS_LOG_GROUP)
        return LogStream(group, f"{prefix}/{tail}" if prefix else tail)
    s3: Mapping[str, Any] = monitoring.get("s3MonitoringConfiguration") or {}
    if s3.get("logUri"):
        bucket, prefix = split_s3_uri(str(s3["logUri"]))
        return S3Log(bucket, _join(prefix, f"{tail}.gz"))
    return NoLog(
        f"EMR Serverless job run {application_id}/{run_id} has no log destination: set "
        "configuration_overrides.monitoringConfiguration (cloudWatchLoggingConfiguration "
        "or s3MonitoringConfiguration.logUri) in the task's emr_serverless block"
    )


def emr_step_location(log_uri: str | None, cluster_id: str, step_id: str) -> LogLocation:
    """An EMR step's stdout under its cluster's LogUri."""
    if not log_uri:
        return NoLog(
            f"EMR cluster {cluster_id} has no LogUri, so EMR keeps no step output: create "
            "the cluster with a log URI (--log-uri s3://...)"
        )
    bucket, prefix = split_s3_uri(log_uri)
    return S3Log(bucket, _join(prefix, f"{cluster_id}/steps/{step_id}/stdout.gz"))


def stepfunctions_none(execution_arn: str | None) -> NoLog:
    return NoLog(
        f"Step Functions keeps no job output; execution {execution_arn}: its history is in "
        "the Step Functions console (or `aws stepfunctions get-execution-history "
        "--execution-arn ARN`)"
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` (or EMR's ``s3n://``) as ``(bucket, prefix)``."""
    rest = uri.partition("://")[2] if "://" in uri else uri
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


# --- Lambda invocations ----------------------------------------------------------------------


def invocation_start(request_id: str) -> str:
    return f"START RequestId: {request_id}"


def invocation_end(request_id: str) -> str:
    return f"END RequestId: {request_id}"
