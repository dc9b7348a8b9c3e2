"""The cost meter: what the production handlers cost, counted through the local cloud.

Attached to a ``LocalCloud`` (``skydag.localcloud``), it sees, without changing anything:

- every handler invocation (the handlers are wrapped where the event sources call them):
  its function, its records, its billed duration, and the bytes it logs at the default
  level (INFO: Powertools' JSON lines and the EMF metrics documents it prints). The
  duration is what it would be on AWS (``cost.lambda_billed_seconds``): the handler
  thread's own CPU time, scaled to the function's CPU share, plus each AWS call at its
  per-hop latency. Wall time here would measure moto, and whatever else the machine runs;
- every record the handler works on (``skydag.handlers._runtime.handle_record``), so each
  AWS call is charged to the record, and so to the cause, that made it;
- every AWS call of an invocation (``hooks.observing_calls``), with the request and the
  parsed response; DynamoDB units are computed from the item sizes before and after each
  write (read from moto's backend, in this process), GSI entries included;
- every rule delivery (the tap): the SQS SendMessage an EventBridge target makes.

It prices them with ``cost.py`` and keeps a causal graph of record handlings (an event put
by one record and handled by another; a write whose stream record another handles), from
which the critical path from a job's completion event to the next dispatch is read.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cost
from skydag.localcloud.eventbridge import Matched
from skydag.localcloud.hooks import Delivery, fault, observing_calls

Item = dict[str, Any]

_SQS_ID = re.compile(r"SQS message (\S+)")
_STREAM_SEQ = re.compile(r"stream record (\S+)")
_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
# Functions whose work is not per task: the DAG loader (per upload) and the reconciler
# (per period). Counted and shown apart.
NOT_PER_TASK = frozenset({"DagLoader", "Reconciler"})
# Dispatch calls: the first AWS call that starts the next task's job.
DISPATCH = frozenset(
    {
        ("batch", "SubmitJob"),
        ("ecs", "RunTask"),
        ("states", "StartExecution"),
        ("lambda", "Invoke"),
        ("elasticmapreduce", "AddJobFlowSteps"),
        ("emr-serverless", "StartJobRun"),
    }
)


@dataclass
class Call:
    service: str
    operation: str
    dynamodb: bool
    started: float
    seconds: float = 0.0
    body: Any = None
    # The invocation's own CPU seconds when the call began (the meter's taken out).
    cpu: float = 0.0
    event_ids: list[str] = field(default_factory=list)


@dataclass
class Node:
    """One record handled by one invocation (or an invocation's work outside records)."""

    id: int
    function: str
    cause: str
    origin: tuple[int, int] | None  # (node, call index) that caused it
    root: str | None  # what started it when no node did (a service's or user's event)
    calls: list[Call] = field(default_factory=list)
    cpu_started: float = 0.0  # the invocation's own CPU seconds when the record began
    # How the function was reached: "async" (a rule invoked it), "sqs" or "stream".
    kind: str = "async"


@dataclass
class _Invocation:
    function: str
    records: list[dict[str, Any]]
    causes: list[str]
    log: io.StringIO
    stdout: io.StringIO
    # The event itself when a rule invoked the function with it (no batch of records).
    event: Any = None
    outside: Node | None = None
    # CPU seconds the meter itself spent inside the invocation (taken out of its duration).
    overhead: float = 0.0
    # The invocation's AWS calls, each billed at its latency on AWS.
    dynamodb_calls: int = 0
    other_calls: int = 0
    # Log text before, between and after records: the invocation's own lines.
    outside_log: list[str] = field(default_factory=list)
    log_at: int = 0
    cpu_started: float = 0.0  # the thread's CPU clock when the invocation began
    per_task: bool = False  # charged per task whatever the function (``charged_to``)

    def cpu(self) -> float:
        """The handler's own CPU seconds so far (the meter's taken out)."""
        return time.thread_time() - self.cpu_started - self.overhead


class CostMeter:
    """See the module docstring. Create it before the cloud (``tap`` goes into its
    options), then ``attach(cloud)`` inside it."""

    def __init__(self) -> None:
        self.usage = cost.Usage()
        self.fixed = cost.Usage()  # not per task: DAG loads, reconciles
        self.nodes: list[Node] = []
        self.invocations: Counter[str] = Counter()
        self.records: Counter[str] = Counter()
        self.handler_seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.log_bytes: Counter[str] = Counter()
        # Per-task functions' GB-seconds had every function the memory size of the key.
        self.gb_s_by_memory: Counter[int] = Counter()
        self.noop_stream_records = 0
        self.unpriced: Counter[str] = Counter()
        self._producers: dict[str, tuple[int, int]] = {}  # event id -> (node, call)
        self._writes: dict[str, tuple[int, int]] = {}  # table|image -> (node, call)
        self._external: dict[str, dict[str, Any]] = {}  # event id -> event (not a handler's)
        self._inv: _Invocation | None = None
        self._node: Node | None = None
        self._cloud: Any = None
        self._tables: dict[str, str] = {}
        self._stack = contextlib.ExitStack()

    # --- wiring -----------------------------------------------------------------------------

    def tap(self, delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
        """The local cloud's tap: charges each rule delivery to a queue (SendMessage)."""
        payload = delivery.payload
        if self._cloud is not None and isinstance(payload, Matched):
            self._on_rule_delivery(payload)
        return [(0.0, delivery)]

    def attach(self, cloud: Any) -> None:
        from skydag.handlers import _runtime as runtime

        self._cloud = cloud
        self._tables = {name: field for field, name in cloud.settings.tables.model_dump().items()}
        sources = [cloud.queue_source, cloud.stream_source, *cloud.async_invokers.values()]
        for source in sources:
            source.handler = self._wrap(source.function, source.handler)
        original = runtime.handle_record

        def handle_record(work: Callable[[], object], *, what: str) -> None:
            self._begin_record(what)
            try:
                original(work, what=what)
            finally:
                self._end_record()

        runtime.handle_record = handle_record
        self._stack.callback(setattr, runtime, "handle_record", original)
        # The deployed functions publish their EMF metrics (CloudWatch Logs bytes).
        saved = os.environ.get("POWERTOOLS_METRICS_DISABLED")
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "false"
        self._stack.callback(_restore_env, "POWERTOOLS_METRICS_DISABLED", saved)
        self._stack.enter_context(observing_calls(self._observe))
        fire_due = cloud.schedules.fire_due

        def fired() -> list[str]:
            names: list[str] = fire_due()
            for _name in names:
                self.usage.add("scheduler.invocations", 1, "EventBridge Scheduler", "timer", "")
                self.usage.add("events.custom", 1, "EventBridge Scheduler", "timer", "PutEvents")
            return names

        cloud.schedules.fire_due = fired

    def close(self) -> None:
        self._stack.close()

    @contextlib.contextmanager
    def charged_to(self, function: str, cause: str) -> Iterator[None]:
        """Charge the AWS calls made here, outside any invocation, per task to ``function``
        and ``cause``: work the tasks left for later (a pass minutes on), done now so that
        it is counted. Their handler time is not (a pass runs anyway)."""
        self._inv = _Invocation(function, [], [cause], io.StringIO(), io.StringIO(), per_task=True)
        try:
            with fault(None):  # observed as a handler's calls are
                yield
        finally:
            self._inv, self._node = None, None

    def reset(self) -> None:
        """Forget what was counted (after loading DAGs, before the measured runs)."""
        self.__init_counts()

    def __init_counts(self) -> None:
        self.usage, self.fixed = cost.Usage(), cost.Usage()
        self.nodes.clear()
        for counter in (
            self.invocations,
            self.records,
            self.handler_seconds,
            self.calls,
            self.log_bytes,
            self.unpriced,
            self.gb_s_by_memory,
        ):
            counter.clear()
        self.noop_stream_records = 0
        self._producers.clear()
        self._writes.clear()
        self._external.clear()

    # --- invocations ------------------------------------------------------------------------

    def _wrap(self, function: str, handler: Callable[[dict[str, Any], Any], Any]) -> Any:
        def invoked(event: dict[str, Any], context: Any) -> Any:
            return self._invoke(function, handler, event, context)

        return invoked

    def _invoke(
        self, function: str, handler: Callable[..., Any], event: dict[str, Any], context: Any
    ) -> Any:
        from skydag.handlers import _runtime as runtime

        records = list(event.get("Records") or []) if isinstance(event, dict) else []
        causes = [self._cause(function, record) for record in records] or [self._event_cause(event)]
        inv = _Invocation(function, records, causes, io.StringIO(), io.StringIO())
        if not records:
            inv.event = event
        self._inv = inv
        logger = runtime.logger
        handler_ = logger.registered_handler
        stream = getattr(handler_, "stream", None)
        level = logger.log_level
        handler_.setStream(inv.log)  # type: ignore[attr-defined]
        logger.setLevel(logging.INFO)  # the stack's default LOG_LEVEL
        started = inv.cpu_started = time.thread_time()
        try:
            with contextlib.redirect_stdout(inv.stdout):
                return handler(event, context)
        finally:
            cpu = max(0.0, time.thread_time() - started - inv.overhead)
            seconds = cost.lambda_billed_seconds(
                cpu,
                self._memory_mb(function),
                dynamodb_calls=inv.dynamodb_calls,
                other_calls=inv.other_calls,
            )
            logger.setLevel(level)
            handler_.setStream(stream)  # type: ignore[attr-defined]
            self._inv, self._node = None, None
            self._close(inv, seconds)
            if function not in NOT_PER_TASK:
                for memory in cost.MEMORY_CHOICES_MB:
                    at_size = cost.lambda_billed_seconds(
                        cpu,
                        memory,
                        dynamodb_calls=inv.dynamodb_calls,
                        other_calls=inv.other_calls,
                    )
                    self.gb_s_by_memory[memory] += cost.billed_gb_seconds(at_size, memory)

    def _close(self, inv: _Invocation, seconds: float) -> None:
        function = inv.function
        usage = self.fixed if function in NOT_PER_TASK else self.usage
        self.invocations[function] += 1
        # A function a rule invoked with one event handled that one event.
        self.records[function] += len(inv.records) or int(inv.event is not None)
        self.handler_seconds[function] += seconds
        gb_s = cost.billed_gb_seconds(seconds, self._memory_mb(function))
        inv.outside_log.append(inv.log.getvalue()[inv.log_at :])
        out = inv.stdout.getvalue()
        shared_log = (
            sum(_log_bytes(part) for part in inv.outside_log)
            + _log_bytes(out)
            + cost.PLATFORM_LOG_BYTES
        )
        self.log_bytes[function] += shared_log
        share = 1 / len(inv.causes)
        for cause in inv.causes:
            usage.add("lambda.requests", share, function, cause, "invocation", "")
            usage.add("lambda.gb_s", share * gb_s, function, cause, "duration", "")
            usage.add("xray.traces", share * cost.TRACED_SHARE, function, cause, "trace", "")
            usage.add("logs.gb", share * shared_log / 1e9, function, cause, "logs", "")
        if function == "Scheduler" and inv.records:
            # The event source mapping's ReceiveMessage and DeleteMessageBatch, per batch.
            for cause in inv.causes:
                usage.add("sqs.requests", 2 * share, function, cause, "ReceiveMessage+Delete", "")

    def _memory_mb(self, function: str) -> int:
        from skydag import wiring

        for spec in wiring.FUNCTIONS:
            if spec.id == function:
                return spec.memory_mb
        return 512

    def _begin_record(self, what: str) -> None:
        inv = self._inv
        if inv is None:
            return
        found = _SQS_ID.search(what) or _STREAM_SEQ.search(what)
        record: dict[str, Any] | None = None
        if found:
            wanted = found.group(1)
            for candidate in inv.records:
                ident = candidate.get("messageId") or (candidate.get("dynamodb") or {}).get(
                    "SequenceNumber"
                )
                if str(ident) == wanted:
                    record = candidate
                    break
        kind = "async"
        if record is None:
            cause, origin, root = inv.causes[0], None, None
            if isinstance(inv.event, Mapping):
                origin, root = self._event_origin(inv.event)
        else:
            cause = self._cause(inv.function, record)
            origin, root = self._origin(record)
            kind = "sqs" if "body" in record else "stream"
        # Log lines before this record are the invocation's own.
        text = inv.log.getvalue()
        inv.outside_log.append(text[inv.log_at :])
        inv.log_at = len(text)
        node = Node(
            len(self.nodes), inv.function, cause, origin, root, cpu_started=inv.cpu(), kind=kind
        )
        self.nodes.append(node)
        self._node = node

    def _end_record(self) -> None:
        """Charge the record's log lines to its cause."""
        inv, node = self._inv, self._node
        self._node = None
        if inv is None or node is None:
            return
        text = inv.log.getvalue()
        size = _log_bytes(text[inv.log_at :])
        inv.log_at = len(text)
        if size:
            usage = self.fixed if inv.function in NOT_PER_TASK else self.usage
            self.log_bytes[inv.function] += size
            usage.add("logs.gb", size / 1e9, inv.function, node.cause, "logs", "")

    # --- causes and origins -------------------------------------------------------------------

    def _cause(self, function: str, record: Mapping[str, Any]) -> str:
        if "body" in record:
            try:
                event = json.loads(record["body"])
            except ValueError:
                return "unreadable message"
            return self._event_cause(event)
        data = record.get("dynamodb") or {}
        new, old = data.get("NewImage") or {}, data.get("OldImage") or {}
        if new == old:
            self.noop_stream_records += 1
        table = self._tables.get(_table_of(str(record.get("eventSourceARN", ""))), "?")
        kind = "task" if table == "task_instances" else "run" if table == "runs" else table
        before, after = _text(old, "state"), _text(new, "state")
        if not old:
            return f"stream: {kind} created {after}"
        if before == after:
            return f"stream: {kind} {after}, state unchanged"
        return f"stream: {kind} {before}->{after}"

    @staticmethod
    def _event_cause(event: Mapping[str, Any]) -> str:
        detail = event.get("detail") if isinstance(event.get("detail"), Mapping) else {}
        name = str(event.get("detail-type") or event.get("source") or "event")
        status = detail.get("status") or detail.get("state") if detail else None
        if status and str(event.get("source", "")).startswith("aws."):
            name += f" {status}"
        return name

    def _origin(self, record: Mapping[str, Any]) -> tuple[tuple[int, int] | None, str | None]:
        if "body" in record:
            try:
                event = json.loads(record["body"])
            except ValueError:
                return None, "unreadable"
            return self._event_origin(event)
        data = record.get("dynamodb") or {}
        table = _table_of(str(record.get("eventSourceARN", "")))
        key = f"{table}|{_canonical(data.get('NewImage') or {})}"
        writer = self._writes.get(key)
        return (writer, None) if writer is not None else (None, "write outside the handlers")

    def _event_origin(self, event: Mapping[str, Any]) -> tuple[tuple[int, int] | None, str | None]:
        producer = self._producers.get(str(event.get("id")))
        if producer is not None:
            return producer, None
        return None, f"event {event.get('id')}"

    def _on_rule_delivery(self, matched: Matched) -> None:
        event = matched.event
        rule = self._cloud.rule_specs.get(matched.rule.rule_id)
        if rule is None:
            return
        from skydag import wiring

        if str(event.get("id")) not in self._producers:
            self._external[str(event.get("id"))] = event
        if isinstance(rule.target.resource, wiring.QueueSpec):
            size = len(json.dumps(event, default=str).encode())
            self.usage.add(
                "sqs.requests",
                cost.chunks_64k(size),
                rule.target.resource.id,
                self._event_cause(event),
                "SendMessage (rule target)",
                "",
            )

    # --- AWS calls ----------------------------------------------------------------------------

    def _observe(self, service: str, operation: str, request: Any) -> Callable[[Any], None]:
        began = time.thread_time()
        inv = self._inv
        after = self._observe_call(service, operation, request, inv.cpu() if inv else 0.0)

        def timed_after(response: Any) -> None:
            ended = time.thread_time()
            after(response)
            if inv is not None:
                inv.overhead += time.thread_time() - ended

        if inv is not None:
            if service == "dynamodb":
                inv.dynamodb_calls += 1
            else:
                inv.other_calls += 1
            inv.overhead += time.thread_time() - began
        return timed_after

    def _observe_call(
        self, service: str, operation: str, request: Any, cpu: float
    ) -> Callable[[Any], None]:
        node = self._node
        inv = self._inv
        function = inv.function if inv else "?"
        cause = node.cause if node else (inv.causes[0] if inv else "?")
        fixed = function in NOT_PER_TASK and not (inv is not None and inv.per_task)
        usage = self.fixed if fixed else self.usage
        call = Call(
            service, operation, service == "dynamodb", time.perf_counter(), body=request, cpu=cpu
        )
        if node is None and inv is not None:
            if inv.outside is None:
                inv.outside = Node(len(self.nodes), function, cause, None, "invocation")
                self.nodes.append(inv.outside)
            node = inv.outside
        index = -1
        if node is not None:
            node.calls.append(call)
            index = len(node.calls) - 1
        self.calls[f"{service}:{operation}"] += 1
        labels = (function, cause)
        before = self._before_write(operation, request) if service == "dynamodb" else None

        def after(response: Any) -> None:
            call.seconds = time.perf_counter() - call.started
            response = response if isinstance(response, dict) else {}
            if service == "dynamodb":
                self._dynamodb(usage, labels, operation, request, response, before)
                if node is not None:
                    self._note_writes(operation, request, node.id, index)
            elif service == "events" and operation == "PutEvents":
                self._put_events(usage, labels, request, response, call)
                if node is not None:
                    for event_id in call.event_ids:
                        self._producers[event_id] = (node.id, index)
            elif service == "sqs":
                usage.add("sqs.requests", 1, *labels, operation, "")
            elif service in ("scheduler", "batch", "logs", "s3", "events"):
                # API calls these services do not bill (S3 GETs: a rounding error);
                # EventBridge bills the events published, not its other calls (ListRules).
                pass
            else:
                self.unpriced[f"{service}:{operation}"] += 1

        return after

    def _put_events(
        self, usage: cost.Usage, labels: tuple[str, str], request: Any, response: Any, call: Call
    ) -> None:
        entries = (request or {}).get("Entries") or []
        results = response.get("Entries") or []
        for position, entry in enumerate(entries):
            chunks = cost.chunks_64k(cost.event_entry_size(entry))
            usage.add("events.custom", chunks, *labels, "PutEvents", str(entry.get("DetailType")))
            if position < len(results) and results[position].get("EventId"):
                call.event_ids.append(str(results[position]["EventId"]))

    # --- DynamoDB units -------------------------------------------------------------------------

    def _backend_table(self, name: str) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        backend = dynamodb_backends[self._cloud.account_id][self._cloud.region]
        return backend.get_table(name)

    def _item(self, table_name: str, key: Mapping[str, Any]) -> Item | None:
        from moto.dynamodb.models.dynamo_type import DynamoType

        table = self._backend_table(table_name)
        hash_value = key.get(table.hash_key_attr)
        if hash_value is None:
            return None
        range_value = key.get(table.range_key_attr) if table.range_key_attr else None
        try:
            found = table.get_item(
                DynamoType(hash_value), DynamoType(range_value) if range_value else None
            )
        except (KeyError, ValueError):
            return None
        if found is None:
            return None
        attributes: Item = found.to_json()["Attributes"]
        return attributes

    def _key_of(self, table_name: str, item: Mapping[str, Any]) -> dict[str, Any]:
        table = self._backend_table(table_name)
        return {name: item[name] for name in table.table_key_attrs if name in item}

    def _before_write(self, operation: str, request: Any) -> Any:
        request = request or {}
        if operation in _WRITES:
            table = str(request.get("TableName"))
            key = request.get("Key") or self._key_of(table, request.get("Item") or {})
            return self._item(table, key)
        if operation == "TransactWriteItems":
            return {
                position: self._item(table, key)
                for position, (_kind, table, key) in enumerate(self._transact_targets(request))
            }
        if operation == "BatchWriteItem":
            befores = {}
            for table, writes in (request.get("RequestItems") or {}).items():
                for position, write in enumerate(writes):
                    body = write.get("PutRequest", {}).get("Item") or write.get(
                        "DeleteRequest", {}
                    ).get("Key")
                    befores[(table, position)] = self._item(table, self._key_of(table, body or {}))
            return befores
        return None

    def _dynamodb(
        self,
        usage: cost.Usage,
        labels: tuple[str, str],
        operation: str,
        request: Any,
        response: Mapping[str, Any],
        before: Any,
    ) -> None:
        request = request or {}
        failed = "Error" in response
        if operation in _WRITES:
            table = str(request.get("TableName"))
            key = request.get("Key") or self._key_of(table, request.get("Item") or {})
            after = None if failed else self._item(table, key)
            self._charge_write(usage, labels, operation, table, before, after, failed=failed)
        elif operation == "BatchWriteItem":
            for table, writes in (request.get("RequestItems") or {}).items():
                for position, write in enumerate(writes):
                    body = write.get("PutRequest", {}).get("Item") or write.get(
                        "DeleteRequest", {}
                    ).get("Key")
                    after = self._item(table, self._key_of(table, body or {}))
                    self._charge_write(
                        usage, labels, operation, table, before.get((table, position)), after
                    )
        elif operation == "TransactWriteItems":
            self._charge_transaction(usage, labels, request, before, failed=failed)
        elif operation == "GetItem":
            table = str(request.get("TableName"))
            item = self._item(table, request.get("Key") or {})
            units = cost.read_units(
                cost.item_size(item), consistent=bool(request.get("ConsistentRead"))
            )
            usage.add("dynamodb.rru", units, *labels, operation, self._short(table))
        elif operation == "BatchGetItem":
            for table, wanted in (request.get("RequestItems") or {}).items():
                consistent = bool(wanted.get("ConsistentRead"))
                for key in wanted.get("Keys") or []:
                    size = cost.item_size(self._item(table, key))
                    units = cost.read_units(size, consistent=consistent)
                    usage.add("dynamodb.rru", units, *labels, operation, self._short(table))
        elif operation in ("Query", "Scan"):
            table = str(request.get("TableName"))
            index = request.get("IndexName")
            size = sum(self._read_size(table, index, item) for item in response.get("Items") or [])
            units = cost.read_units(size, consistent=bool(request.get("ConsistentRead")))
            where = self._short(table) + (f" ({index})" if index else "")
            usage.add("dynamodb.rru", units, *labels, operation, where)
        elif operation not in ("DescribeTable",):
            self.unpriced[f"dynamodb:{operation}"] += 1

    def _charge_transaction(
        self,
        usage: cost.Usage,
        labels: tuple[str, str],
        request: Any,
        befores: Mapping[int, Item | None],
        *,
        failed: bool,
    ) -> None:
        """Twice a plain write's units per item (AWS's prepare and commit); a condition
        check twice a strongly consistent read of its item. A cancelled transaction is
        charged as its writes' failed conditions."""
        for position, (kind, table, key) in enumerate(self._transact_targets(request)):
            before = befores.get(position)
            if kind == "ConditionCheck":
                units = cost.read_units(cost.item_size(before), consistent=True, transactional=True)
                usage.add("dynamodb.rru", units, *labels, "TransactWriteItems", self._short(table))
                continue
            after = None if failed else self._item(table, key)
            self._charge_write(
                usage,
                labels,
                "TransactWriteItems",
                table,
                before,
                after,
                failed=failed,
                transactional=True,
            )

    def _read_size(self, table: str, index: str | None, returned: Mapping[str, Any]) -> int:
        full = self._item(table, self._key_of(table, returned)) or dict(returned)
        if index is None:
            return cost.item_size(full)
        for gsi in self._backend_table(table).global_indexes:
            if gsi.name == index:
                return cost.item_size(_project(gsi, full))
        return cost.item_size(returned)

    def _charge_write(
        self,
        usage: cost.Usage,
        labels: tuple[str, str],
        operation: str,
        table: str,
        before: Item | None,
        after: Item | None,
        *,
        failed: bool = False,
        transactional: bool = False,
    ) -> None:
        size = max(cost.item_size(before), cost.item_size(after))
        short = self._short(table)
        what = f"{operation} failed condition" if failed else operation
        units = cost.write_units(size, transactional=transactional)
        usage.add("dynamodb.wru", units, *labels, what, short)
        if failed:
            return
        for gsi in self._backend_table(table).global_indexes:
            units = _index_write_units(gsi, before, after)
            if units:
                usage.add("dynamodb.wru", units, *labels, operation, f"{short} GSI {gsi.name}")

    def _transact_targets(self, request: Any) -> list[tuple[str, str, Mapping[str, Any]]]:
        """(kind, table, key) of each action of a TransactWriteItems request."""
        targets = []
        for action in (request or {}).get("TransactItems") or []:
            for kind, body in action.items():
                table = str(body.get("TableName"))
                key = body.get("Key") or self._key_of(table, body.get("Item") or {})
                targets.append((kind, table, key))
        return targets

    def _note_writes(self, operation: str, request: Any, node: int, index: int) -> None:
        request = request or {}
        tables: list[tuple[str, Mapping[str, Any]]] = []
        if operation == "TransactWriteItems":
            tables += [
                (table, key)
                for kind, table, key in self._transact_targets(request)
                if kind != "ConditionCheck"
            ]
        if operation in _WRITES:
            table = str(request.get("TableName"))
            tables.append((table, request.get("Key") or self._key_of(table, request["Item"])))
        elif operation == "BatchWriteItem":
            for table, writes in (request.get("RequestItems") or {}).items():
                for write in writes:
                    body = write.get("PutRequest", {}).get("Item") or {}
                    if body:
                        tables.append((table, self._key_of(table, body)))
        for table, key in tables:
            item = self._item(table, key)
            if item is not None:
                self._writes[f"{table}|{_canonical(item)}"] = (node, index)

    def _short(self, table: str) -> str:
        return self._tables.get(table, table)

    # --- the critical path ----------------------------------------------------------------------

    def most_dynamodb_calls_for_one_record(self) -> int:
        """The most DynamoDB calls made handling one record (one after the other): the
        work a wide fan-out asks of one invocation, which must not grow with its width."""
        return max((sum(1 for c in n.calls if c.dynamodb) for n in self.nodes), default=0)

    def dispatch_paths(self) -> list[dict[str, Any]]:
        """For every dispatch call: the path back to what started it, with its Lambda hops
        and the DynamoDB round trips made one after the other on the way."""
        paths = []
        for node in self.nodes:
            for position, call in enumerate(node.calls):
                if (call.service, call.operation) not in DISPATCH:
                    continue
                hops: list[tuple[Node, int]] = [(node, position)]
                current = node
                while current.origin is not None:
                    parent_id, at = current.origin
                    current = self.nodes[parent_id]
                    hops.append((current, at))
                hops.reverse()
                round_trips = [sum(1 for c in n.calls[: at + 1] if c.dynamodb) for n, at in hops]
                # Other calls on the way (a PutEvents that carries the path on); the
                # dispatch call itself ends it and is not counted.
                others = [
                    sum(
                        1
                        for c in n.calls[: at + (0 if i == len(hops) - 1 else 1)]
                        if not c.dynamodb
                    )
                    for i, (n, at) in enumerate(hops)
                ]
                root_event = self._external.get((current.root or "").removeprefix("event "))
                paths.append(
                    {
                        "root": self._event_cause(root_event) if root_event else current.root,
                        "hops": [f"{n.function} ({n.cause})" for n, _ in hops],
                        "lambda_hops": len(hops),
                        "round_trips": round_trips,
                        "sequential_round_trips": sum(round_trips),
                        "latency_hops": [
                            cost.Hop(
                                n.kind,
                                rt,
                                other,
                                cost.cpu_on_aws_ms(
                                    n.calls[at].cpu - n.cpu_started, self._memory_mb(n.function)
                                ),
                            )
                            for (n, at), rt, other in zip(hops, round_trips, others, strict=True)
                        ],
                        # Each hop's own CPU until the call that carries the path on, as
                        # measured here (seconds): the estimate at another memory size.
                        "hop_cpu_s": [n.calls[at].cpu - n.cpu_started for n, at in hops],
                        "job": (call.body or {}).get("jobName"),
                        # What started it: dispatches of one root were released together.
                        "root_id": current.root,
                    }
                )
        return paths


# --------------------------------------------------------------------------- helpers


def _project(gsi: Any, item: Item | None) -> Item | None:
    """The index entry of ``item`` (None: the item is not in the index)."""
    if item is None:
        return None
    keys = [k["AttributeName"] for k in gsi.schema]
    if any(name not in item for name in keys):
        return None
    projection = (gsi.projection or {}).get("ProjectionType", "ALL")
    if projection == "ALL":
        return dict(item)
    wanted = set(keys) | set(gsi.table_key_attrs)
    if projection == "INCLUDE":
        wanted |= set(gsi.projection.get("NonKeyAttributes") or [])
    return {name: value for name, value in item.items() if name in wanted}


def _index_write_units(gsi: Any, before: Item | None, after: Item | None) -> int:
    """Write units a table write costs in one GSI: nothing when its entry is unchanged, a
    put or a delete when the item enters or leaves it, both when its key moves."""
    old, new = _project(gsi, before), _project(gsi, after)
    if old is None and new is None:
        return 0
    if old is None or new is None:
        return cost.write_units(cost.item_size(old or new))
    keys = [k["AttributeName"] for k in gsi.schema]
    if any(old.get(name) != new.get(name) for name in keys):
        return cost.write_units(cost.item_size(old)) + cost.write_units(cost.item_size(new))
    if old == new:
        return 0
    return cost.write_units(cost.item_size(new))


def _canonical(image: Mapping[str, Any]) -> str:
    def sort_sets(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: sorted(v) if k in ("SS", "NS", "BS") else sort_sets(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [sort_sets(v) for v in value]
        return value

    return json.dumps(sort_sets(dict(image)), sort_keys=True, default=str)


def _table_of(arn: str) -> str:
    return arn.split(":table/", 1)[1].split("/", 1)[0] if ":table/" in arn else arn


def _text(image: Mapping[str, Any], name: str) -> str | None:
    value = image.get(name)
    return str(value["S"]) if isinstance(value, Mapping) and "S" in value else None


def _log_bytes(text: str) -> int:
    """What CloudWatch Logs ingests for these lines (each line an event)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return sum(len(line.encode()) + cost.LOG_EVENT_OVERHEAD for line in lines)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def metered(meter: CostMeter, cloud: Any) -> Iterator[CostMeter]:
    meter.attach(cloud)
    try:
        yield meter
    finally:
        meter.close()
