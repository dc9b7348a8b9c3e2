"""`skydag dev up`: the embedded environment as a long-running local AWS endpoint.

moto runs as a server on a loopback port with the resources the CDK stack makes, under
the default names (``Settings``): the five tables (streams on), the DAG bucket (S3 events
to EventBridge), the ``skydag`` bus and its rules. The production Lambda handlers are
called here with events shaped as their event sources deliver them:

- DAG files: S3 → EventBridge (default bus) → a rule → the "loader" SQS queue → the dag
  loader handler (one EventBridge event per call, as Lambda's asynchronous invoke);
- the skydag bus (commands, signals, schedule ticks, timers) and Batch state changes on
  the default bus → rules → the "scheduler" SQS queue → the scheduler handler (SQS batch);
- the runs and task-instances streams → the stream processor handler (stream batches);
- every ``RECONCILE_EVERY`` seconds → the reconciler handler.

Queues stand in for the Lambda triggers because moto cannot invoke a Lambda without
Docker. What moto does not do is emulated, each through the production path:

- EventBridge Scheduler never fires in moto: once a minute the schedules in skydag's group
  are read and their events put on the bus (recurring ones every pass, one-shot ``at()``
  timers once they are due, then deleted as ``ActionAfterCompletion=DELETE`` would);
- moto emits no service state-change events: a Batch job that a task started is
  described until it reaches RUNNING, SUCCEEDED or FAILED, and a "Batch Job State Change"
  event with that job detail is put on the default bus, where the stack's rule picks it
  up. Other services (EMR, EMR Serverless, Step Functions, ECS) are not emulated: their
  tasks finish only when the reconciler describes them (10 minutes after they start).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from skydag.settings import Settings

# 4566 is LocalStack's port: a different default lets both run on one machine.
DEFAULT_PORT = 5555
LOOPBACK = "127.0.0.1"
RECONCILE_EVERY = 30.0  # seconds; production runs it every few minutes
SCHEDULER_PASS_EVERY = 60.0  # EventBridge Scheduler fires with one-minute precision
IDLE_SLEEP = 0.2  # between two passes that found nothing to do

SCHEDULER_QUEUE = "skydag-scheduler"
LOADER_QUEUE = "skydag-dag-loader"
# A failed record becomes visible again after this long: SQS redelivery, as in production.
VISIBILITY_TIMEOUT_SECONDS = 5
SCHEDULER_ROLE = "skydag-scheduler"

# The stack's rules (infra/skydag_infra/event_patterns.py). The DAG-file rule matches the
# prefix only (moto has no ``wildcard``); the loader ignores keys that are not .yaml/.yml.
COMMAND_SOURCE = "skydag.command"
SCHEDULER_SOURCE = "skydag.scheduler"
BATCH_SOURCE = "aws.batch"
BATCH_DETAIL_TYPE = "Batch Job State Change"
BATCH_EVENT_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED")
JOB_NAME_PREFIX = "skydag-"

# What the handlers need in their environment besides the stack's names (the AWS part,
# endpoint and fake credentials, is ``skydag.dev.server.aws_environment``).
_HANDLER_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    # Metrics are EMF documents printed on stdout: noise on a terminal.
    "POWERTOOLS_METRICS_DISABLED": "true",
}


@dataclass(frozen=True)
class DevStack:
    """Where `dev up`'s resources are."""

    settings: Settings
    scheduler_queue_url: str
    loader_queue_url: str

    @property
    def endpoint_url(self) -> str:
        return str(self.settings.endpoint_url)

    def info(self) -> dict[str, Any]:
        """The JSON `skydag info --output json` prints for this endpoint."""
        settings = self.settings
        return {
            "region": settings.region,
            "endpoint_url": settings.endpoint_url,
            "dag_bucket": settings.dag_bucket,
            "dag_prefix": settings.dag_prefix,
            "event_bus": settings.event_bus,
            "tables": settings.tables.model_dump(),
        }


# --------------------------------------------------------------------------- server


@contextmanager
def moto_server_on(port: int, host: str = LOOPBACK) -> Iterator[str]:
    """moto's server on ``host:port`` (0: a free port), Batch without Docker; yields its URL.

    ``skydag.dev.server.moto_server`` always takes a free port; `dev up` needs a fixed one
    so that people can type it. moto's state is process-wide: reset on entry and exit.
    """
    from moto.core.models import botocore_stubber
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    if botocore_stubber.enabled:
        raise RuntimeError("moto's in-process mock is active: it would answer the server's calls")
    werkzeug_log = logging.getLogger("werkzeug")
    saved_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # one line per request would bury ours
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        url = f"http://{bound_host}:{bound_port}"
        _moto_api(bound_host, bound_port, "reset", {})
        _moto_api(bound_host, bound_port, "config", {"batch": {"use_docker": False}})
        try:
            yield url
        finally:
            _moto_api(bound_host, bound_port, "reset", {})
    finally:
        werkzeug_log.setLevel(saved_level)
        # stop() waits for werkzeug's poll interval; the daemon thread can do that alone.
        threading.Thread(target=server.stop, name="moto-server-stop", daemon=True).start()


def _moto_api(host: str, port: int, path: str, body: Any) -> None:
    """POST to moto's own API (``/moto-api/<path>``) on the server."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(
            "POST",
            f"/moto-api/{path}",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"moto server POST /moto-api/{path}: HTTP {response.status}")
    finally:
        connection.close()


@contextmanager
def handler_environment(settings: Settings, bus_arn: str, role_arn: str) -> Iterator[None]:
    """The variables the CDK stack gives the functions (inside ``aws_environment``).

    The handlers read ``os.environ`` (``skydag.handlers._runtime``), so this sets the
    process's environment and restores it on exit; the handlers' built services are
    forgotten on entry and exit so that they are built for this endpoint only.
    """
    from skydag.handlers import _runtime as runtime

    tables = settings.tables
    values = {
        **_HANDLER_ENV,
        "SKYDAG_DAGS_TABLE": tables.dags,
        "SKYDAG_DAG_VERSIONS_TABLE": tables.dag_versions,
        "SKYDAG_RUNS_TABLE": tables.runs,
        "SKYDAG_TASK_INSTANCES_TABLE": tables.task_instances,
        "SKYDAG_TASK_STATE_TABLE": tables.task_state,
        "SKYDAG_DAG_BUCKET": settings.dag_bucket,
        "SKYDAG_DAG_PREFIX": settings.dag_prefix,
        "SKYDAG_EVENT_BUS": settings.event_bus,
        "SKYDAG_EVENT_BUS_ARN": bus_arn,
        "SKYDAG_SCHEDULE_GROUP": settings.schedule_group,
        "SKYDAG_SCHEDULER_ROLE_ARN": role_arn,
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    runtime.reset()
    # The handlers' JSON "event handled" lines would double ours; warnings still show.
    saved_level = runtime.logger.log_level
    runtime.logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        runtime.logger.setLevel(saved_level)
        runtime.reset()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------- resources


def _client(settings: Settings, service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        config=Config(account_id_endpoint_mode="disabled"),
    )


def create_stack(settings: Settings) -> tuple[DevStack, str, str]:
    """Create the stack's resources; returns them, the bus ARN and the scheduler role ARN."""
    from skydag.store.models import create_tables

    create_tables(settings)
    s3 = _client(settings, "s3")
    s3.create_bucket(Bucket=settings.dag_bucket)
    s3.put_bucket_versioning(
        Bucket=settings.dag_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    s3.put_bucket_notification_configuration(
        Bucket=settings.dag_bucket,
        NotificationConfiguration={"EventBridgeConfiguration": {}},
    )
    sqs = _client(settings, "sqs")
    attributes = {"VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS)}
    scheduler_url = sqs.create_queue(QueueName=SCHEDULER_QUEUE, Attributes=attributes)["QueueUrl"]
    loader_url = sqs.create_queue(QueueName=LOADER_QUEUE, Attributes=attributes)["QueueUrl"]

    def arn_of(queue_url: str) -> str:
        found = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return str(found["Attributes"]["QueueArn"])

    events = _client(settings, "events")
    bus_arn = str(events.create_event_bus(Name=settings.event_bus)["EventBusArn"])
    rules: list[tuple[str, str, dict[str, Any], str]] = [
        # (bus, rule, pattern, queue): every event on the skydag bus is for the scheduler
        # (the stack's four rules there are complementary: together, everything), except
        # S3's: moto sends a bucket's events to every bus, AWS to the default bus only.
        (
            settings.event_bus,
            "skydag-everything",
            {"source": [{"anything-but": ["aws.s3"]}]},
            scheduler_url,
        ),
        (
            "default",
            "skydag-batch-jobs",
            {
                "source": [BATCH_SOURCE],
                "detail-type": [BATCH_DETAIL_TYPE],
                "detail": {
                    "status": list(BATCH_EVENT_STATUSES),
                    "jobName": [{"prefix": JOB_NAME_PREFIX}],
                },
            },
            scheduler_url,
        ),
        (
            "default",
            "skydag-dag-files",
            {
                "source": ["aws.s3"],
                "detail-type": ["Object Created", "Object Deleted"],
                "detail": {
                    "bucket": {"name": [settings.dag_bucket]},
                    "object": {"key": [{"prefix": settings.dag_prefix}]},
                },
            },
            loader_url,
        ),
    ]
    for bus, rule, pattern, queue_url in rules:
        events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern))
        events.put_targets(
            Rule=rule, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn_of(queue_url)}]
        )
    _client(settings, "scheduler").create_schedule_group(Name=settings.schedule_group)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "scheduler.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = _client(settings, "iam").create_role(
        RoleName=SCHEDULER_ROLE, AssumeRolePolicyDocument=json.dumps(trust)
    )
    stack = DevStack(settings, scheduler_url, loader_url)
    return stack, bus_arn, str(role["Role"]["Arn"])


# --------------------------------------------------------------------------- the loop


@contextmanager
def _invocation() -> Iterator[None]:
    """Around a handler call: Powertools prints single metrics (ColdStart, the dimensioned
    counts) as EMF on stdout even with metrics disabled; in a terminal they are noise.
    ``out`` was bound before, so what `dev up` itself prints is unaffected."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No application metrics to publish"
        yield


class _LambdaContext:
    """What Powertools reads from a Lambda context (``inject_lambda_context``)."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "dev-up"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class _Shard:
    table: str
    stream_arn: str
    iterator: str


@dataclass
class DevLoop:
    """One pass at a time over everything that drives skydag (see the module docstring)."""

    stack: DevStack
    log: TextIO
    clock: Callable[[], float] = time.monotonic
    _shards: list[_Shard] = field(default_factory=list)
    _watched_jobs: dict[str, str] = field(default_factory=dict)  # Batch job id -> last status
    _last_reconcile: float = 0.0
    _last_scheduler_pass: float = 0.0

    def __post_init__(self) -> None:
        settings = self.stack.settings
        self._sqs = _client(settings, "sqs")
        self._events = _client(settings, "events")
        self._batch = _client(settings, "batch")
        self._scheduler = _client(settings, "scheduler")
        self._streams = _client(settings, "dynamodbstreams")
        dynamodb = _client(settings, "dynamodb")
        for table in (settings.tables.runs, settings.tables.task_instances):
            arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
            described = self._streams.describe_stream(StreamArn=arn)["StreamDescription"]
            for shard in described["Shards"]:
                iterator = self._streams.get_shard_iterator(
                    StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
                self._shards.append(_Shard(table, arn, iterator))
        # Passes are due once the loop starts, not at once: the stack is empty anyway.
        self._last_reconcile = self._last_scheduler_pass = self.clock()

    def step(self) -> int:
        """Handle what is pending now; returns how many events were handled."""
        handled = self._drain_loader() + self._drain_scheduler() + self._read_streams()
        handled += self._watch_batch_jobs()
        now = self.clock()
        if now - self._last_reconcile >= RECONCILE_EVERY:
            self._last_reconcile = now
            handled += self._reconcile()
        if now - self._last_scheduler_pass >= SCHEDULER_PASS_EVERY:
            self._last_scheduler_pass = now
            handled += self.fire_schedules()
        return handled

    def _say(self, handler: str, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        print(f"{stamp} {handler:<20} {text}", file=self.log, flush=True)

    # -- queues -------------------------------------------------------------------------

    def _receive(self, queue_url: str) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _drain_loader(self) -> int:
        from skydag.handlers import dag_loader

        messages = self._receive(self.stack.loader_queue_url)
        for message in messages:
            event = json.loads(message["Body"])
            try:
                with _invocation():
                    context = _LambdaContext("skydag-dag-loader")
                    result = dag_loader.lambda_handler(event, context)
            except Exception as error:  # Lambda retries an async event: leave it queued
                self._say("dag_loader", f"failed, will retry: {type(error).__name__}: {error}")
                continue
            self._sqs.delete_message(
                QueueUrl=self.stack.loader_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
            self._say("dag_loader", _describe_load(event, result))
        return len(messages)

    def _drain_scheduler(self) -> int:
        from skydag.handlers import scheduler

        messages = self._receive(self.stack.scheduler_queue_url)
        if not messages:
            return 0
        records = [_sqs_record(message, self.stack.scheduler_queue_url) for message in messages]
        with _invocation():
            response = scheduler.lambda_handler(
                {"Records": records}, _LambdaContext("skydag-scheduler")
            )
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        for message in messages:
            event = json.loads(message["Body"])
            outcome = "failed, will retry" if message["MessageId"] in failed else "handled"
            self._say("scheduler", f"{_describe_event(event)}: {outcome}")
            if message["MessageId"] not in failed:  # SQS redelivers the others
                self._sqs.delete_message(
                    QueueUrl=self.stack.scheduler_queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                )
        return len(messages)

    # -- streams ------------------------------------------------------------------------

    def _read_streams(self) -> int:
        from skydag.handlers import stream_processor

        handled = 0
        for shard in self._shards:
            response = self._streams.get_records(ShardIterator=shard.iterator, Limit=100)
            shard.iterator = response["NextShardIterator"]
            records = [_stream_record(record, shard.stream_arn) for record in response["Records"]]
            if not records:
                continue
            handled += len(records)
            with _invocation():
                result = stream_processor.lambda_handler(
                    {"Records": records}, _LambdaContext("skydag-stream-processor")
                )
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
            for record in records:
                sequence = record["dynamodb"].get("SequenceNumber")
                self._note_batch_job(record)
                suffix = ": failed (the reconciler repairs it)" if sequence in failed else ""
                self._say("stream_processor", _describe_change(record) + suffix)
        return handled

    # -- what moto does not do ------------------------------------------------------------

    def _note_batch_job(self, record: Mapping[str, Any]) -> None:
        """Watch the job a task instance names until its state-change event is sent."""
        image = record["dynamodb"].get("NewImage") or {}
        job_id = _image_text(image, "job_id")
        if job_id and _image_text(image, "state") in ("queued", "running"):
            self._watched_jobs.setdefault(job_id, "")

    def _watch_batch_jobs(self) -> int:
        """Put a "Batch Job State Change" event for each status a watched job reached."""
        if not self._watched_jobs:
            return 0
        jobs = self._batch.describe_jobs(jobs=list(self._watched_jobs))["jobs"]
        known = {str(job["jobId"]) for job in jobs}
        for job_id in set(self._watched_jobs) - known:
            del self._watched_jobs[job_id]  # not a Batch job (another target's id)
        sent = 0
        for job in jobs:
            job_id, status = str(job["jobId"]), str(job["status"])
            if status == self._watched_jobs.get(job_id) or status not in BATCH_EVENT_STATUSES:
                continue
            self._put_events(
                "default", BATCH_SOURCE, BATCH_DETAIL_TYPE, job, resources=[job["jobArn"]]
            )
            self._say("batch (emulated)", f"{job['jobName']} {status}: state-change event put")
            sent += 1
            if status == "RUNNING":
                self._watched_jobs[job_id] = status
            else:
                del self._watched_jobs[job_id]
        return sent

    def fire_schedules(self) -> int:
        """EventBridge Scheduler's part: put the events of the schedules that fire now."""
        group = self.stack.settings.schedule_group
        fired = 0
        now = datetime.now(UTC)
        pages = self._scheduler.get_paginator("list_schedules").paginate(GroupName=group)
        for page in pages:
            for summary in page["Schedules"]:
                schedule = self._scheduler.get_schedule(Name=summary["Name"], GroupName=group)
                if schedule.get("State") != "ENABLED":
                    continue
                expression = str(schedule.get("ScheduleExpression", ""))
                one_shot = expression.startswith("at(")
                if one_shot and _at_time(expression) > now:
                    continue
                target = schedule["Target"]
                parameters = target.get("EventBridgeParameters") or {}
                self._put_events(
                    self.stack.settings.event_bus,
                    str(parameters.get("Source", SCHEDULER_SOURCE)),
                    str(parameters.get("DetailType", "")),
                    json.loads(target.get("Input") or "{}"),
                )
                if one_shot:
                    self._scheduler.delete_schedule(Name=summary["Name"], GroupName=group)
                self._say("scheduler (emulated)", f"{summary['Name']} fired")
                fired += 1
        return fired

    def _reconcile(self) -> int:
        from skydag.handlers import reconciler

        with _invocation():
            counts = reconciler.lambda_handler({}, _LambdaContext("skydag-reconciler"))
        acted = {name: value for name, value in counts.items() if value}
        if acted:
            self._say("reconciler", json.dumps(acted))
        return sum(acted.values())

    def _put_events(
        self,
        bus: str,
        source: str,
        detail_type: str,
        detail: Mapping[str, Any],
        *,
        resources: list[str] | None = None,
    ) -> None:
        entry = {
            "EventBusName": bus,
            "Source": source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, default=str),
            "Resources": resources or [],
        }
        response = self._events.put_events(Entries=[entry])
        if response.get("FailedEntryCount"):
            self._say("events", f"PutEvents refused {detail_type}: {response['Entries']}")


# --------------------------------------------------------------------------- shapes


def _sqs_record(message: Mapping[str, Any], queue_url: str) -> dict[str, Any]:
    """An SQS message as Lambda's SQS event source delivers it."""
    queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue_name}",
        "awsRegion": "us-east-1",
    }


def _stream_record(record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda's DynamoDB event source delivers it: with the
    stream's ARN, and the creation time in epoch seconds (boto3 parsed it to a datetime)."""
    data = dict(record["dynamodb"])
    created = data.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        data["ApproximateCreationDateTime"] = created.timestamp()
    return {**record, "dynamodb": data, "eventSourceARN": stream_arn}


def _image_text(image: Mapping[str, Any], name: str) -> str | None:
    value = image.get(name)
    return str(value["S"]) if isinstance(value, Mapping) and "S" in value else None


def _at_time(expression: str) -> datetime:
    """The time of ``at(2026-11-22T08:15:00)`` (UTC: skydag's timers set no time zone)."""
    return datetime.fromisoformat(expression[3:-1]).replace(tzinfo=UTC)


def _describe_event(event: Mapping[str, Any]) -> str:
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        detail = {}
    about = " ".join(
        f"{key}={detail[key]}" for key in ("dag", "run_id", "task", "jobName") if key in detail
    )
    return f"{event.get('source')} '{event.get('detail-type')}' {about}".rstrip()


def _describe_load(event: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    what = f"{event.get('detail-type')} {result.get('source', '')}".rstrip()
    outcome = str(result.get("outcome"))
    if result.get("dag"):
        outcome += f" dag={result['dag']}"
    if result.get("version"):
        outcome += f" version={result['version']}"
    if result.get("reason"):
        outcome += f" ({result['reason']})"
    for error in result.get("errors") or []:
        outcome += f"\n    {error}"
    return f"{what}: {outcome}"


def _describe_change(record: Mapping[str, Any]) -> str:
    image = record["dynamodb"].get("NewImage") or record["dynamodb"].get("OldImage") or {}
    names = [_image_text(image, key) for key in ("dag_id", "run_id", "task_id")]
    where = "/".join(name for name in names if name)
    kind = "task" if _image_text(image, "task_id") else "run"
    state = _image_text(image, "state") or "removed"
    return f"{record.get('eventName', '?')} {kind} {where} {state}"


# --------------------------------------------------------------------------- entry point


def serve(
    stop: threading.Event,
    *,
    port: int = DEFAULT_PORT,
    dags_dir: Path | None = None,
    out: TextIO | None = None,
    log: TextIO | None = None,
    on_ready: Callable[[DevStack], None] | None = None,
) -> None:
    """Run `dev up` until ``stop`` is set: server, resources, then the loop.

    ``out`` gets where things are (JSON) and what to try; ``log`` one line per event.
    ``port`` 0 takes a free port (tests). ``on_ready`` is called once the stack exists.
    """
    out = out or sys.stdout
    log = log or sys.stderr
    from skydag.dev.server import aws_environment

    with moto_server_on(port) as endpoint_url, aws_environment(endpoint_url):
        settings = Settings(endpoint_url=endpoint_url)
        stack, bus_arn, role_arn = create_stack(settings)
        with handler_environment(settings, bus_arn, role_arn):
            loop = DevLoop(stack, log)
            if dags_dir is not None:
                _upload_dags(stack, dags_dir, log)
            print(json.dumps(stack.info(), indent=2), file=out)
            print(_usage(stack), file=out, flush=True)
            if on_ready is not None:
                on_ready(stack)
            while not stop.is_set():
                try:
                    handled = loop.step()
                except Exception as error:  # one bad pass must not end the environment
                    print(f"dev up: pass failed: {type(error).__name__}: {error}", file=log)
                    handled = 0
                if not handled:
                    stop.wait(IDLE_SLEEP)


def _upload_dags(stack: DevStack, dags_dir: Path, log: TextIO) -> None:
    """Put every DAG file of ``dags_dir`` in the bucket: the loader takes it from there."""
    s3 = _client(stack.settings, "s3")
    for path in sorted(dags_dir.iterdir()):
        if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
            key = f"{stack.settings.dag_prefix}{path.name}"
            s3.put_object(Bucket=stack.settings.dag_bucket, Key=key, Body=path.read_bytes())
            print(f"uploaded {path} to s3://{stack.settings.dag_bucket}/{key}", file=log)


def _usage(stack: DevStack) -> str:
    url, settings = stack.endpoint_url, stack.settings
    trigger = json.dumps(
        [
            {
                "Source": COMMAND_SOURCE,
                "DetailType": "Trigger DAG",
                "Detail": json.dumps({"dag": "my_dag"}),
                "EventBusName": settings.event_bus,
            }
        ]
    )
    return f"""
skydag dev up is serving {url} (Ctrl-C stops it; everything is forgotten then).
Any values work as credentials: export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing

  aws --endpoint-url {url} s3 cp dag.yaml s3://{settings.dag_bucket}/{settings.dag_prefix}
  skydag dags list --endpoint-url {url}
  skydag trigger my_dag --wait --endpoint-url {url}
  aws --endpoint-url {url} events put-events --entries '{trigger}'
  skydag runs list my_dag --endpoint-url {url}
(or export AWS_ENDPOINT_URL={url} and leave out --endpoint-url)
"""


__all__ = ["DEFAULT_PORT", "DevLoop", "DevStack", "create_stack", "moto_server_on", "serve"]
