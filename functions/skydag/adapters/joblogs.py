"""Reading a try's output where its service keeps it: the AWS side of ``skydag.joblogs``.

``JobLogs.locate`` asks the job's service where its output is (DescribeJobs,
DescribeTasks, GetJobRun, DescribeCluster) and ``skydag.joblogs`` turns the answer into a
location; ``JobLogs.source`` reads that location (CloudWatch Logs, S3) forward, a little
more at each call, so ``skydag logs --follow`` can poll it.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from skydag import joblogs
from skydag.joblogs import LogLocation, LogStream, NoLog, S3Log

# A forward read stops after this many pages even if the service keeps handing out new
# tokens: the next poll goes on from there.
_MAX_PAGES = 100
_NOT_FOUND_CODES = frozenset(
    {"ResourceNotFoundException", "NoSuchKey", "NoSuchBucket", "404", "NotFound"}
)

ClientFactory = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class LogLine:
    timestamp: datetime | None
    message: str


class LogSource(Protocol):
    """A log read forward: each ``read`` returns what came since the previous one."""

    where: str

    @property
    def done(self) -> bool:
        """Nothing more can ever come (an S3 object read, a Lambda invocation's END seen)."""
        ...

    def read(self) -> list[LogLine] | None:
        """The new lines; None while the log does not exist (yet)."""
        ...


def _error_code(error: Exception) -> str | None:
    response = getattr(error, "response", None)
    if not isinstance(response, Mapping):
        return None
    code = (response.get("Error") or {}).get("Code")
    return str(code) if code is not None else None


def _is_not_found(error: Exception) -> bool:
    return _error_code(error) in _NOT_FOUND_CODES


def _when(timestamp: Any) -> datetime | None:
    return datetime.fromtimestamp(timestamp / 1000, UTC) if timestamp is not None else None


class StreamSource:
    """One CloudWatch Logs stream, from its head (or from ``start_time``) onwards."""

    def __init__(
        self, logs: Any, group: str, stream: str, *, start_time: int | None = None
    ) -> None:
        self._logs = logs
        self._group = group
        self._stream = stream
        self._start_time = start_time
        self._token: str | None = None
        self.where = str(LogStream(group, stream))

    @property
    def done(self) -> bool:
        return False  # a stream can always grow

    def read(self) -> list[LogLine] | None:
        from botocore.exceptions import ClientError

        lines: list[LogLine] = []
        for _ in range(_MAX_PAGES):
            params: dict[str, Any] = {
                "logGroupName": self._group,
                "logStreamName": self._stream,
                "startFromHead": True,
            }
            if self._token is not None:
                params["nextToken"] = self._token
            elif self._start_time is not None:
                params["startTime"] = self._start_time
            try:
                response = self._logs.get_log_events(**params)
            except ClientError as error:
                if _is_not_found(error) and self._token is None:
                    return None
                raise
            lines.extend(
                LogLine(_when(event.get("timestamp")), str(event.get("message", "")))
                for event in response.get("events") or []
            )
            token = response.get("nextForwardToken")
            # CloudWatch Logs hands back the token it was given once the stream is drained.
            if token is None or token == self._token:
                break
            self._token = token
        return lines


class LambdaInvocationSource:
    """One invocation in its function's log group: the lines between ``START RequestId``
    and ``END RequestId``, in the stream that a search for the request id finds."""

    def __init__(self, logs: Any, group: str, request_id: str) -> None:
        self._logs = logs
        self._group = group
        self._request_id = request_id
        self._stream: StreamSource | None = None
        self._started = False
        self._ended = False
        self.where = str(LogStream(group, None, request_id))

    @property
    def done(self) -> bool:
        return self._ended

    def read(self) -> list[LogLine] | None:
        if self._stream is None:
            self._stream = self._find()
            if self._stream is None:
                return None
            self.where = f"{self._stream.where}, invocation {self._request_id}"
        lines: list[LogLine] = []
        start = joblogs.invocation_start(self._request_id)
        end = joblogs.invocation_end(self._request_id)
        for line in self._stream.read() or []:
            if self._ended:
                break
            if not self._started:
                self._started = line.message.startswith(start)
            elif line.message.startswith(end):
                self._ended = True
            else:
                lines.append(line)
        return lines

    def _find(self) -> StreamSource | None:
        from botocore.exceptions import ClientError

        start = joblogs.invocation_start(self._request_id)
        params: dict[str, Any] = {
            "logGroupName": self._group,
            "filterPattern": f'"{self._request_id}"',
        }
        for _ in range(_MAX_PAGES):
            try:
                response = self._logs.filter_log_events(**params)
            except ClientError as error:
                if _is_not_found(error):
                    return None
                raise
            for event in response.get("events") or []:
                if str(event.get("message", "")).startswith(start):
                    return StreamSource(
                        self._logs,
                        self._group,
                        str(event["logStreamName"]),
                        start_time=event.get("timestamp"),
                    )
            if not response.get("nextToken"):
                return None
            params["nextToken"] = response["nextToken"]
        return None


class S3Source:
    """An object written once the job ended (EMR and EMR Serverless logs): read whole."""

    def __init__(self, s3: Any, location: S3Log) -> None:
        self._s3 = s3
        self._location = location
        self._read = False
        self.where = str(location)

    @property
    def done(self) -> bool:
        return self._read

    def read(self) -> list[LogLine] | None:
        from botocore.exceptions import ClientError

        if self._read:
            return []
        try:
            body = self._s3.get_object(Bucket=self._location.bucket, Key=self._location.key)
        except ClientError as error:
            if _is_not_found(error):
                return None
            raise
        data = body["Body"].read()
        if self._location.key.endswith(".gz"):
            data = gzip.decompress(data)
        self._read = True
        text = data.decode("utf-8", errors="replace")
        return [LogLine(None, line) for line in text.splitlines()]


class JobLogs:
    """Where a job's output is (asking its service) and how to read it."""

    def __init__(self, client: ClientFactory) -> None:
        self._client = client

    def locate(self, kind: str, job_id: str, target: Mapping[str, Any]) -> LogLocation:
        """The output's location for a job of ``kind``; ``target`` is the task's target
        block as the DAG file has it (templates unrendered)."""
        if kind in joblogs.NO_JOB_KINDS:
            return NoLog(f"a {kind} task runs no job: it has no output")
        by_kind: dict[str, Callable[[str, Mapping[str, Any]], LogLocation]] = {
            "batch": self._batch,
            "ecs": self._ecs,
            "lambda": self._lambda,
            "emr_serverless": self._emr_serverless,
            "emr": self._emr,
            "stepfunctions": lambda job, _target: joblogs.stepfunctions_none(job),
        }
        locate = by_kind.get(kind)
        if locate is None:
            return NoLog(f"skydag does not know where {kind} jobs keep their output")
        return locate(job_id, target)

    def source(self, location: LogStream | S3Log) -> LogSource:
        if isinstance(location, S3Log):
            return S3Source(self._client("s3"), location)
        logs = self._client("logs")
        if location.request_id is not None:
            return LambdaInvocationSource(logs, location.group, location.request_id)
        assert location.stream is not None
        return StreamSource(logs, location.group, location.stream)

    def local_source(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> LogSource:
        """The local cloud's stream of the try (absent on AWS)."""
        stream = joblogs.local_stream(dag_id, run_id, task_id, try_number)
        return StreamSource(self._client("logs"), joblogs.LOCAL_LOG_GROUP, stream)

    # --- one method per service ---------------------------------------------------------------

    def _batch(self, job_id: str, target: Mapping[str, Any]) -> LogLocation:
        jobs = self._client("batch").describe_jobs(jobs=[job_id]).get("jobs") or []
        if not jobs:
            return NoLog(f"AWS Batch no longer knows job {job_id} (it forgets finished jobs)")
        return joblogs.batch_location(jobs[0])

    def _ecs(self, task_arn: str, target: Mapping[str, Any]) -> LogLocation:
        ecs = self._client("ecs")
        cluster, _ = joblogs.ecs_task_parts(task_arn)
        cluster = cluster or str(target.get("cluster") or "default")
        tasks = ecs.describe_tasks(cluster=cluster, tasks=[task_arn]).get("tasks") or []
        if tasks:
            task: Mapping[str, Any] = tasks[0]
            definition_arn = str(task.get("taskDefinitionArn") or target.get("task_definition"))
        else:
            # ECS forgets stopped tasks within hours; the stream is named by the task id
            # and the task definition, which the DAG file names.
            container = target.get("container")
            marker = [{"name": joblogs.ECS_MARKER_VARIABLE, "value": ""}]
            overrides = [{"name": container, "environment": marker}] if container else []
            task = {"taskArn": task_arn, "overrides": {"containerOverrides": overrides}}
            definition_arn = str(target.get("task_definition"))
        if "{{" in definition_arn:
            return NoLog(
                f"ECS task {task_arn} is gone and its task definition is a template "
                f"({definition_arn}): the stream cannot be named"
            )
        definition = ecs.describe_task_definition(taskDefinition=definition_arn)
        containers = definition["taskDefinition"].get("containerDefinitions") or []
        return joblogs.ecs_location(task, containers)

    def _lambda(self, request_id: str, target: Mapping[str, Any]) -> LogLocation:
        function = str(target.get("function_name") or "")
        if "{{" in function:
            return NoLog(
                f"the task's function_name is a template ({function}) and the name it "
                "rendered to is not stored, so its log group cannot be resolved: read "
                f"/aws/lambda/<function> for request {request_id}"
            )
        return LogStream(joblogs.lambda_log_group(function), None, request_id)

    def _emr_serverless(self, job_id: str, target: Mapping[str, Any]) -> LogLocation:
        application_id, _, run_id = job_id.partition("/")
        client = self._client("emr-serverless")
        run = client.get_job_run(applicationId=application_id, jobRunId=run_id)["jobRun"]
        overrides: Mapping[str, Any] = run.get("configurationOverrides") or {}
        monitoring: Mapping[str, Any] = overrides.get("monitoringConfiguration") or {}
        if not monitoring:
            # An application may set a default for its runs.
            application = client.get_application(applicationId=application_id)["application"]
            monitoring = application.get("monitoringConfiguration") or {}
        return joblogs.emr_serverless_location(application_id, run_id, monitoring)

    def _emr(self, job_id: str, target: Mapping[str, Any]) -> LogLocation:
        cluster_id, _, step_id = job_id.partition("/")
        cluster = self._client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]
        return joblogs.emr_step_location(cluster.get("LogUri"), cluster_id, step_id)
