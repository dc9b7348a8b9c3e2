"""The local cloud: skydag's stack on moto, fed to the production handlers as AWS feeds them.

One object, used by `skydag dev run`, `skydag dev up`, the end-to-end tests and the
benchmarks. It starts moto as a server in this process (so jobs, the CLI and the AWS CLI
reach it at its endpoint), creates the stack's resources from ``skydag.wiring`` — the very
definitions the CDK app deploys — and then, in ``step()``:

- delivers what the stack's EventBridge rules match (``eventbridge``) to their targets:
  the scheduler queue, or a function invoked asynchronously (the scheduler with a job's
  state change, the DAG loader);
- plays the event source mappings (``sources``): the scheduler queue, the tables'
  streams, asynchronous invocations, each with the stack's batch sizes, retries and
  dead-letter queues;
- plays EventBridge Scheduler (``schedules``) and the reconcile rule's rate;
- plays the services (``players``): jobs run their ``local:`` block or a stand-in, and
  their native state-change events go through the rules like AWS's.

Deliveries pass through ``hooks``: a test (or the reliability simulator) can duplicate,
delay, reorder or drop any of them, or crash an invocation after a chosen AWS call.

``LocalCloudOptions.concurrency`` (default 1: one invocation at a time, on the loop's
thread) lets the event sources run invocations concurrently, as Lambda does
(``concurrency``: execution environments, atomic DynamoDB requests).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from skydag import joblogs, wiring
from skydag.limits import loads_bounded
from skydag.localcloud.concurrency import HandlerPool, atomic_dynamodb, quiet_output
from skydag.localcloud.eventbridge import LocalEventBridge, LocalRule, Matched
from skydag.localcloud.hooks import (
    CallWatcher,
    Deliveries,
    Delivery,
    FaultPlanner,
    Tap,
    counting_calls,
)
from skydag.localcloud.players.base import JobIdentity, LocalPlan, ServicePlayer
from skydag.localcloud.players.runner import JobRunner
from skydag.localcloud.schedules import ScheduleFirer
from skydag.localcloud.sources import (
    AsyncInvoker,
    Invocation,
    Invoker,
    QueueSource,
    StreamSource,
)
from skydag.localcloud.transactions import item_level_transactions
from skydag.settings import Settings

if TYPE_CHECKING:
    from skydag.engine.models import DagRun, TaskInstance
    from skydag.service.scheduler_service import SchedulerService

ACCOUNT_ID = "123456789012"  # moto's account
SCHEDULER_ROLE = "skydag-scheduler"
SCHEDULES_EVERY = 1.0  # seconds between two passes over the schedules
IDLE_SLEEP = 0.05
SQS_BATCH_BYTES = 200_000  # under SendMessageBatch's 256 KiB for the whole batch

# What the handlers need in their environment besides the stack's names.
_HANDLER_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    # Metrics are EMF documents printed on stdout: noise on a terminal.
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "skydag",
}


def physical_name(spec_id: str) -> str:
    """The local name of a stack resource: ``SchedulerQueue`` → ``skydag-scheduler-queue``."""
    words = "".join(f"-{c.lower()}" if c.isupper() else c for c in spec_id).strip("-")
    return f"skydag-{words}"


@dataclass
class Timing:
    """The stack's timings, as ``skydag.wiring`` gives them; tests may shorten them."""

    reconcile_every: timedelta = wiring.RECONCILE_EVERY
    async_retry_delays: tuple[float, ...] = (60.0, 120.0)
    batching_window: timedelta = wiring.SCHEDULER_EVENT_SOURCE.max_batching_window
    # None: the queue's own (the scheduler queue's is six times the function timeout).
    visibility_timeout: timedelta | None = None
    # How often the played EventBridge Scheduler reads its schedules (a timer fires at
    # most this late).
    schedules_every: float = SCHEDULES_EVERY


@dataclass
class LocalCloudOptions:
    port: int = 0
    log_dir: Path | None = None
    cwd: Path | None = None
    log: TextIO | None = None
    tap: Tap | None = None
    faults: FaultPlanner | None = None
    # Sees every AWS call a handler makes (service, operation, the request's JSON body).
    watcher: CallWatcher | None = None
    timing: Timing = field(default_factory=Timing)
    settings: Settings | None = None
    # Invocations at once: up to this many scheduler batches, one stream batch per shard
    # (the shards concurrently) and this many asynchronous invocations per function, each
    # on a thread in an execution environment of its own (``concurrency``). 1: one
    # invocation at a time, on the loop's thread (``dev run``, ``dev up``).
    concurrency: int = 1
    # How often the handlers list the bus's rules to learn who listens to skydag's
    # notifications (``Settings.listeners_refresh_seconds``): every time here, so that a
    # DAG subscribing to another's events hears the next one the moment it loads;
    # benchmarks set the deployed value.
    listeners_refresh_seconds: int = 0


class LocalCloud:
    """See the module docstring. Use as a context manager: everything stops on exit."""

    def __init__(self, options: LocalCloudOptions | None = None) -> None:
        self.options = options or LocalCloudOptions()
        self.log = self.options.log or sys.stderr
        self.deliveries = Deliveries(self.options.tap)
        self._stack = contextlib.ExitStack()
        self.endpoint_url = ""
        self.settings = Settings()
        self.account_id = ACCOUNT_ID
        self.region = self.settings.region
        self.event_bus = self.settings.event_bus
        self.queue_urls: dict[str, str] = {}
        self.players: dict[str, ServicePlayer] = {}
        self.log_dir = self.options.log_dir or Path(
            __import__("tempfile").mkdtemp(prefix="skydag-logs-")
        )
        self.runner = JobRunner(self.log_dir, cwd=self.options.cwd)
        self._last_schedules = 0.0
        self._last_reconcile = 0.0
        self._clients: dict[str, Any] = {}
        self._plans_service: Any = None
        # Called with (old, new) task instances for every task change the streams carry
        # (`dev run`'s progress lines).
        self.task_listeners: list[Callable[[Any, Any], None]] = []
        self._say_lock = threading.Lock()
        # Queue id -> message bodies the rules send during one pass (``_deliver_matched``).
        self._outbox: dict[str, list[str]] | None = None
        self._pools: dict[str, HandlerPool] = {}
        if self.options.concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, not {self.options.concurrency}")

    # --- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> LocalCloud:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        invoker: Invoker | None = getattr(self, "invoker", None)
        if invoker is not None:
            invoker.close()  # the invocations in flight end while the stack still runs
        self.runner.close()
        self._stack.close()

    def _start(self) -> None:
        from skydag.dev.server import aws_environment, moto_server

        stack = self._stack
        stack.enter_context(_shared_botocore_loader())
        self.endpoint_url = stack.enter_context(moto_server(port=self.options.port))
        self.activity = stack.enter_context(atomic_dynamodb())
        stack.enter_context(item_level_transactions())
        stack.enter_context(quiet_output())
        stack.enter_context(aws_environment(self.endpoint_url))
        base = self.options.settings or Settings()
        # The played EventBridge Scheduler fires to the second: retries come on time.
        self.settings = base.model_copy(
            update={
                "endpoint_url": self.endpoint_url,
                "timer_precision_seconds": 1,
                "listeners_refresh_seconds": self.options.listeners_refresh_seconds,
            }
        )
        self.region, self.event_bus = self.settings.region, self.settings.event_bus
        bus_arn, role_arn = self._create_resources()
        forwarded_to = wiring.FORWARDING_TARGET
        assert isinstance(forwarded_to.resource, wiring.QueueSpec)
        self.settings = self.settings.model_copy(
            update={
                "event_bus_arn": bus_arn,
                "scheduler_role_arn": role_arn,
                "scheduler_queue_arn": self.queue_arn(forwarded_to.resource),
                "event_delivery_dlq_arn": self.queue_arn(forwarded_to.dead_letter_queue),
            }
        )
        stack.enter_context(handler_environment(self.settings, self._service_with_stand_ins))
        stack.enter_context(counting_calls())
        self.invoker = Invoker(
            self.account_id,
            self.region,
            faults=self.options.faults or (lambda function, event: None),
            watcher=self.options.watcher,
            concurrency=self.options.concurrency,
        )
        self._wire()
        for player in self._make_players():
            player.install(self, self.runner)
            stack.callback(player.uninstall)
            self.players[player.kind] = player
        now = time.monotonic()
        self._last_schedules = self._last_reconcile = now

    def _make_players(self) -> list[ServicePlayer]:
        from skydag.localcloud.players import all_players

        return all_players()

    # --- resources -----------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is None:
            import boto3
            from botocore.config import Config

            found = boto3.client(
                service,
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=Config(account_id_endpoint_mode="disabled"),
            )
            self._clients[service] = found
        return found

    def _create_resources(self) -> tuple[str, str]:
        """The stack's resources (``skydag.wiring`` and the store's models); returns the
        bus ARN and the scheduler role's ARN."""
        from skydag.store.models import create_tables

        settings = self.settings
        create_tables(settings)
        s3 = self.client("s3")
        s3.create_bucket(Bucket=settings.dag_bucket)
        s3.put_bucket_versioning(
            Bucket=settings.dag_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        s3.put_bucket_notification_configuration(
            Bucket=settings.dag_bucket,
            NotificationConfiguration={"EventBridgeConfiguration": {}},
        )
        sqs = self.client("sqs")
        for queue in wiring.QUEUES:  # dead-letter queues come first: redrives name them
            visibility = (
                self.options.timing.visibility_timeout
                or queue.visibility_timeout
                or wiring.SQS_DEFAULT_VISIBILITY_TIMEOUT
            )
            attributes = {
                "VisibilityTimeout": str(int(visibility.total_seconds())),
                "MessageRetentionPeriod": str(
                    int((queue.retention or wiring.SQS_DEFAULT_RETENTION).total_seconds())
                ),
            }
            if queue.redrive is not None:
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": self.queue_arn(queue.redrive.dead_letter_queue),
                        "maxReceiveCount": queue.redrive.max_receive_count,
                    }
                )
            url = sqs.create_queue(QueueName=physical_name(queue.id), Attributes=attributes)
            self.queue_urls[queue.id] = str(url["QueueUrl"])
        events = self.client("events")
        bus_arn = str(events.create_event_bus(Name=settings.event_bus)["EventBusArn"])
        self.client("scheduler").create_schedule_group(Name=settings.schedule_group)
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
        role = self.client("iam").create_role(
            RoleName=SCHEDULER_ROLE, AssumeRolePolicyDocument=json.dumps(trust)
        )
        return bus_arn, str(role["Role"]["Arn"])

    def queue_arn(self, queue: wiring.QueueSpec) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account_id}:{physical_name(queue.id)}"

    def bus_name(self, bus: wiring.Bus) -> str:
        return self.settings.event_bus if bus is wiring.Bus.SKYDAG else "default"

    # --- wiring --------------------------------------------------------------------------------

    def _wire(self) -> None:
        settings = self.settings
        self.rules = wiring.rules(settings.dag_bucket, settings.dag_prefix)
        self.rule_specs = {rule.id: rule for rule in self.rules}
        # The dag loader's rules for the events DAGs subscribe to (made at run time).
        self.forwarding_rules = tuple(
            (spec.event_bus_name(settings.event_bus), name)
            for spec in wiring.FORWARDING
            for name in spec.rule_names(settings.event_bus)
        )
        self.bridge = LocalEventBridge(
            self.account_id,
            self.region,
            [
                LocalRule(rule.id, self.bus_name(rule.bus), rule.pattern, rule.target.resource.id)
                for rule in self.rules
                if rule.pattern is not None
            ],
            forwarding_rules=self.forwarding_rules,
            targets_by_arn={self.queue_arn(queue): queue.id for queue in wiring.QUEUES},
        )
        self.bridge.install()
        self._stack.callback(self.bridge.uninstall)
        self.bridge.create_rules(self.client("events"))
        timing = self.options.timing

        scheduler = wiring.SCHEDULER_EVENT_SOURCE
        self.queue_source = QueueSource(
            function=scheduler.function.id,
            handler=self._handler(scheduler.function),
            sqs=self.client("sqs"),
            queue_url=self.queue_urls[scheduler.queue.id],
            queue_arn=self.queue_arn(scheduler.queue),
            batch_size=scheduler.batch_size,
            batching_window=timing.batching_window.total_seconds(),
            timeout=scheduler.function.timeout.total_seconds(),
            invoker=self.invoker,
            deliveries=self.deliveries,
            on_batch=self._log_scheduler_batch,
            changes=lambda: self.activity.sqs_changes,
        )
        streams = wiring.STREAM_EVENT_SOURCE
        stream_arns = self._stream_arns()
        self.stream_source = StreamSource(
            function=streams.function.id,
            handler=self._handler(streams.function),
            streams=self.client("dynamodbstreams"),
            stream_arns=list(stream_arns.values()),
            filters={
                stream_arns[table]: patterns
                for table, patterns in streams.filters.items()
                if table in stream_arns
            },
            batch_size=streams.batch_size,
            bisect_on_error=streams.bisect_batch_on_error,
            retry_attempts=streams.retry_attempts,
            max_record_age=streams.max_record_age.total_seconds(),
            timeout=streams.function.timeout.total_seconds(),
            invoker=self.invoker,
            deliveries=self.deliveries,
            on_failure=self._dead_letter(streams.on_failure),
            observe=self._log_change,
            changes=lambda: self.activity.dynamodb_writes,
        )
        self.async_invokers: dict[str, AsyncInvoker] = {}
        for spec in wiring.ASYNC_INVOKES:
            self.async_invokers[spec.function.id] = AsyncInvoker(
                function=spec.function.id,
                handler=self._handler(spec.function),
                retry_attempts=spec.retry_attempts,
                max_event_age=spec.max_event_age.total_seconds(),
                timeout=spec.function.timeout.total_seconds(),
                invoker=self.invoker,
                deliveries=self.deliveries,
                on_failure=self._dead_letter(spec.on_failure),
                retry_delays=timing.async_retry_delays,
                on_result=self._on_async_result,
            )
        self.schedules = ScheduleFirer(
            self.client("scheduler"),
            settings.schedule_group,
            self._put_scheduled,
            now=lambda: datetime.now(UTC),
        )

    def _handler(self, function: wiring.FunctionSpec) -> Callable[[dict[str, Any], Any], Any]:
        """The production handler (``module.function``), imported with the stack's
        environment in place (handlers validate it at import, as at a cold start); with
        concurrency, as many execution environments as can run at once."""
        module_name, _, name = function.handler.rpartition(".")
        if self.options.concurrency == 1:
            handler: Callable[[dict[str, Any], Any], Any] = getattr(
                importlib.import_module(module_name), name
            )
            return handler
        pool = HandlerPool(module_name, name, size=self.options.concurrency)
        self._stack.callback(pool.close)
        self._pools[function.id] = pool
        return pool

    def _stream_arns(self) -> dict[str, str]:
        """Each table with a stream (by its settings field, as ``"runs"``): the stream's ARN."""
        dynamodb = self.client("dynamodb")
        arns = {}
        for name, table in self.settings.tables.model_dump().items():
            described = dynamodb.describe_table(TableName=table)["Table"]
            if described.get("StreamSpecification", {}).get("StreamEnabled"):
                arns[name] = str(described["LatestStreamArn"])
        return arns

    def _dead_letter(self, queue: wiring.QueueSpec) -> Callable[[dict[str, Any]], None]:
        def send(message: dict[str, Any]) -> None:
            self.client("sqs").send_message(
                QueueUrl=self.queue_urls[queue.id], MessageBody=json.dumps(message, default=str)
            )
            self.say("dead letter", f"{queue.id}: {_describe_failure(message)}")

        return send

    # --- the loop ------------------------------------------------------------------------------

    def step(self) -> int:
        """Do what is due now; returns how much was done (0: idle)."""
        done = self._deliver_matched()
        for invoker in self.async_invokers.values():
            done += invoker.poll()
        done += self.queue_source.poll()
        done += self.stream_source.poll()
        done += self.runner.poll()
        for player in self.players.values():
            done += player.poll()
        now = time.monotonic()
        if now - self._last_schedules >= self.options.timing.schedules_every:
            self._last_schedules = now
            fired = self.schedules.fire_due()
            for name in fired:
                self.say("eventbridge scheduler", f"{name} fired")
            done += len(fired)
        if now - self._last_reconcile >= self.options.timing.reconcile_every.total_seconds():
            self._last_reconcile = now
            self.reconcile()
            done += 1
        return done

    def run_until(
        self, condition: Callable[[], bool], *, timeout: float, idle_sleep: float = IDLE_SLEEP
    ) -> bool:
        """Step until ``condition()`` holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        ended = self.invoker.ended
        while time.monotonic() < deadline:
            if condition():
                return True
            ended.clear()
            if not self.step():
                ended.wait(idle_sleep)  # an invocation that ends cuts the wait short
        return condition()

    def busy(self, *, jobs: bool = True) -> bool:
        """Whether anything is still in flight: a held or queued delivery, a pending batch,
        a running job (unless ``jobs`` is False: what a job that runs on leaves to do).
        (A message waiting out its visibility timeout is not counted.)"""
        return bool(
            self.bridge.pending()
            or self.deliveries.held()
            or self.queue_source.pending()
            or self.stream_source.pending()
            or self.stream_source.unread()
            or any(invoker.pending() for invoker in self.async_invokers.values())
            or (jobs and self.runner.running())
            or self._queue_depth()
        )

    def _queue_depth(self) -> int:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_source.queue_url,
            AttributeNames=["ApproximateNumberOfMessages"],
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def reconcile(self) -> None:
        """The reconcile rule's tick: an asynchronous invocation of the reconciler."""
        rule = wiring.RECONCILE_RULE
        event = {
            "version": "0",
            "id": str(__import__("uuid").uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account_id,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{self.account_id}:rule/{rule.id}"],
            "detail": {},
        }
        self._to_target(rule, event)

    def _deliver_matched(self) -> int:
        matched = self.bridge.take_matched()
        self._outbox = {}
        try:
            for item in matched:
                for planned in self.deliveries.offer(Delivery(f"rule:{item.rule.rule_id}", item)):
                    self._deliver(planned.payload)
            for held in self._held_rule_deliveries():
                self._deliver(held.payload)
        finally:
            outbox, self._outbox = self._outbox, None
            self._send_all(outbox or {})
        return len(matched)

    def _send_all(self, outbox: Mapping[str, list[str]]) -> None:
        """The messages the rules sent to each queue in one pass: SendMessageBatch, ten
        at a time (what EventBridge does is its own business; one call per ten is one
        moto request per ten)."""
        sqs = self.client("sqs")
        for queue_id, bodies in outbox.items():
            for start in range(0, len(bodies), 10):
                chunk = bodies[start : start + 10]
                if sum(len(body.encode()) for body in chunk) > SQS_BATCH_BYTES:
                    for body in chunk:
                        sqs.send_message(QueueUrl=self.queue_urls[queue_id], MessageBody=body)
                    continue
                response = sqs.send_message_batch(
                    QueueUrl=self.queue_urls[queue_id],
                    Entries=[
                        {"Id": str(index), "MessageBody": body} for index, body in enumerate(chunk)
                    ],
                )
                for failed in response.get("Failed") or []:
                    self.say("eventbridge", f"SendMessageBatch refused a message: {failed}")

    def _held_rule_deliveries(self) -> list[Delivery]:
        return [
            held
            for rule_id in (*self.rule_specs, *(name for _, name in self.forwarding_rules))
            for held in self.deliveries.due_for(f"rule:{rule_id}")
        ]

    def _deliver(self, item: Matched) -> None:
        spec = self.rule_specs.get(item.rule.rule_id)
        if spec is None:  # a forwarding rule: its target is a queue of the stack
            self._to_queue(item.rule.target, item.event)
            return
        self._to_target(spec, item.event)

    def _to_target(self, rule: wiring.RuleSpec, event: dict[str, Any]) -> None:
        resource = rule.target.resource
        if isinstance(resource, wiring.QueueSpec):
            self._to_queue(resource.id, event)
        else:
            self.async_invokers[resource.id].submit(event)

    def _to_queue(self, queue_id: str, event: dict[str, Any]) -> None:
        body = json.dumps(event, default=str)
        if self._outbox is not None:  # sent together at the end of the pass
            self._outbox.setdefault(queue_id, []).append(body)
            return
        self.client("sqs").send_message(QueueUrl=self.queue_urls[queue_id], MessageBody=body)

    def _put_scheduled(
        self, bus: str, source: str, detail_type: str, detail: Mapping[str, Any]
    ) -> None:
        """What an EventBridge Scheduler target does: PutEvents on the target's bus."""
        self._put_events(bus, source, detail_type, detail, resources=[])

    def _put_events(
        self,
        bus: str,
        source: str,
        detail_type: str,
        detail: Mapping[str, Any],
        *,
        resources: list[str],
        at: datetime | None = None,
    ) -> str:
        entry: dict[str, Any] = {
            "EventBusName": bus,
            "Source": source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, default=str),
            "Resources": resources,
        }
        if at is not None:
            entry["Time"] = at
        response = self.client("events").put_events(Entries=[entry])
        result = (response.get("Entries") or [{}])[0]
        if response.get("FailedEntryCount"):
            self.say("eventbridge", f"PutEvents refused {detail_type}: {result}")
        return str(result.get("EventId", ""))

    def put_event(
        self,
        source: str,
        detail_type: str,
        detail: Mapping[str, Any],
        *,
        resources: list[str],
        time: datetime | None = None,
        bus: str = "default",
    ) -> None:
        """A service's event (players): PutEvents on ``bus``, through the rules."""
        self._put_events(bus, source, detail_type, detail, resources=resources, at=time)

    def put_signal(self, entry: Mapping[str, Any]) -> str:
        """A user's PutEvents entry (``Source``, ``DetailType``, ``Detail``) on the skydag
        bus unless it names another; returns the event id."""
        detail = entry.get("Detail", "{}")
        return self._put_events(
            str(entry.get("EventBusName") or self.event_bus),
            str(entry["Source"]),
            str(entry["DetailType"]),
            loads_bounded(detail, "Detail") if isinstance(detail, str) else dict(detail),
            resources=list(entry.get("Resources") or []),
        )

    # --- what the players need -----------------------------------------------------------------

    def plan_for(
        self, kind: str, token: str, task_key: tuple[str, str, str] | None = None
    ) -> LocalPlan | None:
        """The rendered ``local:`` block of the try whose dispatch token is ``token``,
        rendered by the scheduler service exactly as it rendered the dispatch."""
        service = self._service()
        tasks = service.repos.tasks
        ti = tasks.find(*task_key) if task_key is not None else tasks.find_by_token(token)
        if ti is None or ti.dispatch_token != token:
            return None
        run = service.repos.runs.find(ti.dag_id, ti.run_id)
        if run is None:
            return None
        request = service.dispatch_request_for(run, ti)
        spec = service.spec_of_run(run)
        identity = JobIdentity(kind, token, ti.dag_id, ti.run_id, ti.instance_id, ti.try_number)
        task = spec.tasks[ti.task_id]
        return LocalPlan(
            identity,
            request.local,
            dict(request.environment),
            service=str(getattr(task, "mode", "batch")) == "service",
        )

    def _service(self) -> Any:
        if self._plans_service is None:
            from skydag.ports import MemoryEventSink, NoTimers
            from skydag.service.factory import build_service

            self._plans_service = build_service(
                self.settings, events=MemoryEventSink(), timers=NoTimers()
            )
        return self._plans_service

    def write_log(self, group: str, stream: str, text: str) -> None:
        logs = self.client("logs")
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        lines = text.splitlines() or [""]
        # PutLogEvents takes at most 10,000 events per call.
        for start in range(0, len(lines), 10_000):
            logs.put_log_events(
                logGroupName=group,
                logStreamName=stream,
                logEvents=[
                    {"timestamp": now, "message": line} for line in lines[start : start + 10_000]
                ],
            )

    def say(self, who: str, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        with self._say_lock:  # one line at a time, whichever thread says it
            self.log.write(f"{stamp} {who:<22} {text}\n")
            self.log.flush()

    # --- stand-in resources --------------------------------------------------------------------

    def _on_async_result(self, event: dict[str, Any], result: Invocation) -> None:
        if event.get("source") == "aws.s3":
            self._log_load(event, result)
            if result.ok and isinstance(result.response, Mapping):
                self.ensure_resources_for(result.response)
        elif result.function == wiring.SCHEDULER.id:
            outcome = (
                "handled"
                if result.ok
                else f"invocation failed ({type(result.error).__name__}), Lambda retries"
            )
            self.say("scheduler", f"{_describe_event(event)}: {outcome}")

    def ensure_resources_for(self, load: Mapping[str, Any]) -> None:
        """After a DAG loads: the stand-in resources its tasks name (static values only;
        templated ones are created when a job is submitted)."""
        if load.get("outcome") != "loaded" or not load.get("dag") or not load.get("version"):
            return
        from skydag.spec.models import DagSpec

        service = self._service()
        spec: DagSpec = service.repos.dags.load_spec(str(load["dag"]), int(load["version"]))
        for task_id, task in spec.tasks.items():
            player = self.players.get(task.target_kind)
            if player is None:
                continue
            target = task.target.model_dump(by_alias=True, mode="json")
            for line in player.ensure_resources(target):
                self.say("stand-in", f"{spec.dag}.{task_id}: {line}")

    def _service_with_stand_ins(self, settings: Settings) -> SchedulerService:
        """The handlers' scheduler service, whose every dispatch first makes the stand-ins
        of the resources its target names by template (a queue named from ``conf``...):
        what a real account would already have."""
        from skydag.service.factory import build_service

        service = build_service(settings)
        dispatch = service.dispatcher.dispatch

        def dispatch_with_stand_ins(
            image: TaskInstance,
            *,
            owner: bool = False,
            run: DagRun | None = None,
            later: list[Callable[[], object]] | None = None,
        ) -> None:
            self._ensure_rendered_resources(image)
            dispatch(image, owner=owner, run=run, later=later)

        service.dispatcher.dispatch = dispatch_with_stand_ins  # type: ignore[method-assign]
        return service

    def _ensure_rendered_resources(self, ti: TaskInstance) -> None:
        """A try about to be dispatched whose target names resources by template: their
        stand-ins, from the target as the scheduler renders it."""
        from skydag.spec.templates import TemplateRenderError
        from skydag.targets.base import DispatchRequest

        service = self._service()
        if ti.dispatch_token is None:
            return
        # The task's DAG version (cached), not its run: no read for a target without
        # templates (the usual one), which would be charged to the dispatch by the bench.
        task = service.scheduler.spec_of_task(ti).tasks.get(ti.task_id)
        player = self.players.get(task.target_kind) if task is not None else None
        if task is None or player is None or "{{" not in task.target.model_dump_json():
            return
        run = service.repos.runs.find(ti.dag_id, ti.run_id)
        if run is None:
            return
        try:
            request: DispatchRequest = service.dispatch_request_for(run, ti)
        except TemplateRenderError as error:  # the dispatch reports it on the task
            self.say("stand-in", f"{ti.dag_id}.{ti.task_id}: not rendered ({error})")
            return
        for line in player.ensure_resources(request.target):
            self.say("stand-in", f"{ti.dag_id}.{ti.task_id}: {line}")

    # --- the log ---------------------------------------------------------------------------

    def _log_load(self, event: Mapping[str, Any], result: Invocation) -> None:
        if not result.ok:
            self.say("dag loader", f"failed, Lambda retries it: {result.error}")
            return
        response = result.response if isinstance(result.response, Mapping) else {}
        what = f"{event.get('detail-type')} {response.get('source', '')}".rstrip()
        outcome = str(response.get("outcome"))
        for key in ("dag", "version"):
            if response.get(key):
                outcome += f" {key}={response[key]}"
        if response.get("reason"):
            outcome += f" ({response['reason']})"
        for error in response.get("errors") or []:
            outcome += f"\n    {error}"
        self.say("dag loader", f"{what}: {outcome}")

    def _log_scheduler_batch(self, messages: list[dict[str, Any]], result: Invocation) -> None:
        from skydag.localcloud.sources import failed_items

        failed = failed_items(result.response) if result.ok else set()
        for message in messages:
            try:
                # The log line only: a hostile body (too big, too deep) is the handler's to
                # refuse; decoding it here must not raise a RecursionError.
                event = loads_bounded(message["Body"], "SQS message body")
            except ValueError:  # LimitError is a ValueError
                event = {}
            if not result.ok:
                outcome = f"invocation failed ({type(result.error).__name__}), SQS redelivers"
            elif message["MessageId"] in failed:
                outcome = "failed, SQS redelivers"
            else:
                outcome = "handled"
            self.say("scheduler", f"{_describe_event(event)}: {outcome}")

    def _log_change(self, record: Mapping[str, Any]) -> None:
        data = record.get("dynamodb") or {}
        new, old = data.get("NewImage") or {}, data.get("OldImage") or {}
        if not new:
            return
        if self.task_listeners and _text(new, "task_id"):
            self._tell_listeners(old, new)
        state, before = _text(new, "state"), _text(old, "state")
        names = [_text(new, key) for key in ("dag_id", "run_id", "task_id")]
        where = "/".join(name for name in names if name)
        if state == before and _text(new, "try_number", "N") == _text(old, "try_number", "N"):
            told = _text(new, "reported", "N")
            if told is not None and told != _text(old, "reported", "N"):
                self.say("stream", f"task {where}: {state}, told {told} downstream tasks so far")
            return  # not a state change
        kind = "task" if _text(new, "task_id") else "run"
        line = f"{kind} {where}: {before or 'new'} -> {state}"
        try_number = _text(new, "try_number", "N")
        if kind == "task" and try_number and try_number != "0":
            line += f" (try {try_number})"
        exit_code = _text(new, "exit_code", "N")
        if exit_code is not None and state in ("failed", "up_for_retry", "success"):
            line += f" exit code {exit_code}"
        reason = _text(new, "reason")
        if reason and state not in ("pending", "queued", "running"):
            line += f": {reason}"
        if kind == "task" and state in ("failed", "up_for_retry") and names[2]:
            stream = joblogs.local_stream(
                names[0] or "", names[1] or "", names[2], int(try_number or 0)
            )
            path = self.runner.log_path(
                names[0] or "", names[1] or "", names[2], int(try_number or 0)
            )
            where = f"{path}, " if path.exists() else ""
            line += f" [output: {where}log stream {joblogs.LOCAL_LOG_GROUP} {stream}]"
        self.say("stream", line)

    def _tell_listeners(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        from skydag.store.repositories import task_instance_from_image

        try:
            before = task_instance_from_image(dict(old)) if old else None
            after = task_instance_from_image(dict(new))
        except (KeyError, TypeError, ValueError):
            return  # not a task instance image: the stream processor reports it
        for listener in self.task_listeners:
            listener(before, after)


# --------------------------------------------------------------------------- helpers


def _text(image: Mapping[str, Any], name: str, kind: str = "S") -> str | None:
    value = image.get(name)
    if isinstance(value, Mapping) and kind in value:
        return str(value[kind])
    return None


def _describe_event(event: Mapping[str, Any]) -> str:
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        detail = {}
    about = " ".join(
        f"{key}={detail[key]}"
        for key in ("dag", "run_id", "task", "jobName", "name", "startedBy")
        if key in detail and isinstance(detail[key], str)
    )
    return f"{event.get('source')} '{event.get('detail-type')}' {about}".rstrip()


def _describe_failure(message: Mapping[str, Any]) -> str:
    context = message.get("requestContext") or {}
    response = message.get("responseContext") or {}
    return f"{context.get('condition')}: {response.get('functionError') or ''}".rstrip(": ")


@contextmanager
def handler_environment(
    settings: Settings, service_factory: Callable[[Settings], SchedulerService] | None = None
) -> Iterator[None]:
    """The variables the CDK stack gives the functions (``skydag.handlers._runtime``
    reads ``os.environ``); restored on exit, with the handlers' built services forgotten
    on entry and exit so that they are built for this endpoint only."""
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
        "SKYDAG_EVENT_BUS_ARN": str(settings.event_bus_arn),
        "SKYDAG_SCHEDULE_GROUP": settings.schedule_group,
        "SKYDAG_SCHEDULER_ROLE_ARN": str(settings.scheduler_role_arn),
        "SKYDAG_SCHEDULER_QUEUE_ARN": str(settings.scheduler_queue_arn),
        "SKYDAG_EVENT_DELIVERY_DLQ_ARN": str(settings.event_delivery_dlq_arn),
        "SKYDAG_TIMER_PRECISION_SECONDS": str(settings.timer_precision_seconds),
        "SKYDAG_LISTENERS_REFRESH_SECONDS": str(settings.listeners_refresh_seconds),
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    runtime.reset(service_factory=service_factory)
    # The handlers' JSON "event handled" lines would double the local cloud's own.
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


@contextmanager
def _shared_botocore_loader() -> Iterator[None]:
    """One botocore loader for every session opened meanwhile: PynamoDB opens a session per
    model and connection, and each new session parses the service's JSON again (tenths of
    a second each). That data is static, so sharing it is safe."""
    import botocore.loaders
    import botocore.session

    original = botocore.session.create_loader
    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)
    try:
        yield
    finally:
        botocore.session.create_loader = original
