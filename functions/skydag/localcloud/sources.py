"""Lambda's event sources, played: how each function of the stack is fed on AWS.

- ``QueueSource``: an SQS event source mapping (the scheduler). Batches of up to
  ``batch_size`` messages, filled for up to the batching window; the function's
  ``batchItemFailures`` stay in the queue and come back after the visibility timeout,
  until the queue's redrive policy moves them to the dead-letter queue (moto applies it);
  a crashed invocation leaves the whole batch to come back.
- ``StreamSource``: a DynamoDB Streams event source mapping (the stream processor), one
  batch per shard at a time, in order. A partial failure checkpoints before the first
  failed record and retries from it; a crashed invocation bisects the batch; after
  ``retry_attempts`` retries, or for a record older than ``max_record_age``, the batch's
  description goes to the on-failure destination and the shard moves on.
- ``AsyncInvoker``: asynchronous invocation (the DAG loader and the reconciler, invoked by
  rules): an error is retried ``retry_attempts`` times (after 1 then 2 minutes, as
  Lambda does) while the event is younger than ``max_event_age``, then sent to the
  on-failure destination.

Every delivery passes through the taps (``hooks.Deliveries``) and every invocation through
``Invoker.invoke`` with its function's fault plan.

With ``Invoker.concurrency`` N > 1, invocations run on threads, as concurrently as on
AWS: up to N scheduler batches at once, one stream batch per shard at a time (the shards
concurrently), up to N asynchronous invocations of each function at once. Each source
starts an invocation and goes on; what follows it (deleting the batch's messages, the
shard's checkpoint, an asynchronous retry) is done by the source's next ``poll`` once the
invocation ended, on the loop's thread: only the handlers run on other threads.

Given ``changes`` (a count of the moto requests that may add a stream record or a
message, ``concurrency.MotoActivity``), a source reads (GetRecords, ReceiveMessage) only
when it moved, when the last read may have left more, or every ``look_every`` seconds:
the local cloud's own polling was a third of the requests moto answered.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skydag.localcloud.concurrency import quiet_thread, quiet_threads_installed
from skydag.localcloud.hooks import (
    CallWatcher,
    Deliveries,
    Delivery,
    FaultPlanner,
    fault,
    no_faults,
)
from skydag.signals.patterns import matches

Handler = Callable[[dict[str, Any], Any], Any]


class LambdaContext:
    """What Powertools reads from a Lambda context."""

    def __init__(self, function_name: str, account_id: str, region: str, timeout: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local-cloud"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    function: str
    ok: bool
    response: Any = None
    error: BaseException | None = None
    records: int = 0
    seconds: float = 0.0


@dataclass
class Invoker:
    """Calls a handler as Lambda would; counts invocations. With ``concurrency`` 1, one
    invocation at a time on the caller's thread (``invoke``); above, ``submit`` runs it on
    a thread of its own and the sources keep up to that many in flight per function."""

    account_id: str
    region: str
    faults: FaultPlanner = no_faults
    quiet: bool = True
    invocations: dict[str, int] = field(default_factory=dict)
    on_invocation: Callable[[Invocation], None] | None = None
    # Sees every AWS call the handlers make: (service, operation, JSON body).
    watcher: CallWatcher | None = None
    concurrency: int = 1
    # The most invocations in flight at once: of all functions, and of each one.
    max_in_flight: int = 0
    max_in_flight_of: dict[str, int] = field(default_factory=dict)
    # Set whenever an invocation ends (the loop waits on it instead of sleeping).
    ended: threading.Event = field(default_factory=threading.Event)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _executor: ThreadPoolExecutor | None = None

    @property
    def concurrent(self) -> bool:
        return self.concurrency > 1

    def submit(
        self, function: str, handler: Handler, event: dict[str, Any], *, timeout: float
    ) -> Future[Invocation]:
        """``invoke`` on a thread of its own (concurrency > 1), or here and now."""
        if not self.concurrent:
            done: Future[Invocation] = Future()
            done.set_result(self.invoke(function, handler, event, timeout=timeout))
            return done
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=4 * self.concurrency + 4, thread_name_prefix="lambda"
                )
            executor = self._executor
        return executor.submit(self.invoke, function, handler, event, timeout=timeout)

    def close(self) -> None:
        """Wait for the invocations in flight (threads only)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def in_flight(self, function: str | None = None) -> int:
        with self._lock:
            if function is None:
                return sum(self._in_flight.values())
            return self._in_flight.get(function, 0)

    def invoke(
        self, function: str, handler: Handler, event: dict[str, Any], *, timeout: float
    ) -> Invocation:
        context = LambdaContext(function, self.account_id, self.region, timeout)
        plan = self.faults(function, event)
        started = time.monotonic()
        self._enter(function)
        records = len(event.get("Records") or []) if isinstance(event, dict) else 0
        try:
            with self._quiet(), fault(plan, self.watcher):
                response = handler(event, context)
            result = Invocation(function, True, response, records=records)
        # A handler's error, or an injected crash (a BaseException): the invocation failed.
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt | SystemExit):
                self._leave(function)
                raise
            result = Invocation(function, False, error=error, records=records)
        self._leave(function)
        result.seconds = time.monotonic() - started
        if self.on_invocation is not None:
            self.on_invocation(result)
        self.ended.set()
        return result

    def _enter(self, function: str) -> None:
        with self._lock:
            self.invocations[function] = self.invocations.get(function, 0) + 1
            self._in_flight[function] = self._in_flight.get(function, 0) + 1
            self.max_in_flight = max(self.max_in_flight, sum(self._in_flight.values()))
            self.max_in_flight_of[function] = max(
                self.max_in_flight_of.get(function, 0), self._in_flight[function]
            )

    def _leave(self, function: str) -> None:
        with self._lock:
            self._in_flight[function] -= 1

    @contextlib.contextmanager
    def _quiet(self) -> Any:
        """Powertools prints EMF metrics on stdout even with metrics disabled."""
        if not self.quiet:
            yield
            return
        if quiet_threads_installed():  # the local cloud's: safe on any thread
            with quiet_thread():
                yield
            return
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No application metrics to publish"
            yield


def failed_items(response: Any) -> set[str]:
    """The ``itemIdentifier``s of a partial batch response."""
    if not isinstance(response, Mapping):
        return set()
    return {
        str(item.get("itemIdentifier"))
        for item in response.get("batchItemFailures") or []
        if isinstance(item, Mapping)
    }


# --------------------------------------------------------------------------- SQS

LOOK_EVERY = 0.5  # seconds: how often a source with ``changes`` reads while they stand still


@dataclass
class _ReadWhenChanged:
    """Whether a source should read now (see the module docstring)."""

    changes: Callable[[], int] | None
    look_every: float
    seen: int = -1
    read_at: float = 0.0
    more: bool = False

    def due(self) -> bool:
        if self.changes is None:
            return True
        now, count = time.monotonic(), self.changes()
        if count == self.seen and not self.more and now - self.read_at < self.look_every:
            return False
        self.seen, self.read_at, self.more = count, now, False
        return True

    def unread(self) -> bool:
        """Whether records may be waiting that no read has fetched yet: a request that may
        add one came since the last read, or the last read stopped at its limit."""
        return self.changes is not None and (self.more or self.changes() != self.seen)


@dataclass
class QueueSource:
    """An SQS event source mapping: ``queue_url`` → ``handler`` (see the module docstring)."""

    function: str
    handler: Handler
    sqs: Any
    queue_url: str
    queue_arn: str
    batch_size: int
    batching_window: float
    timeout: float
    invoker: Invoker
    deliveries: Deliveries
    on_batch: Callable[[list[dict[str, Any]], Invocation], None] | None = None
    # A count of the requests that may add a message (None: receive on every poll).
    changes: Callable[[], int] | None = None
    look_every: float = LOOK_EVERY
    _batch: list[dict[str, Any]] = field(default_factory=list)
    _first_at: float | None = None
    # Batches handed to the function and not yet done with (concurrency > 1).
    _in_flight: list[tuple[list[dict[str, Any]], Future[Invocation]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reads = _ReadWhenChanged(self.changes, self.look_every)

    def poll(self) -> int:
        """Receive, and invoke once the batch is full or its window has passed (while
        fewer than the invoker's concurrency batches are in flight)."""
        done = self._finish_ended()
        if len(self._in_flight) >= self.invoker.concurrency:
            return done  # the messages wait in the queue, as for a busy mapping
        room = self.batch_size - len(self._batch)
        if room > 0 and self._reads.due():
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, room),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages", [])
            self._reads.more = len(received) >= min(10, room)
            for message in received:
                if self._rereceived(message):
                    continue
                for planned in self.deliveries.offer(Delivery(f"sqs:{self.function}", message)):
                    self._batch.append(planned.payload)
                if self._first_at is None:
                    self._first_at = time.monotonic()
        for held in self.deliveries.due_for(f"sqs:{self.function}"):
            self._batch.append(held.payload)
            self._first_at = self._first_at or time.monotonic()
        if not self._batch:
            return done
        full = len(self._batch) >= self.batch_size
        waited = self._first_at is not None and (
            time.monotonic() - self._first_at >= self.batching_window
        )
        if not (full or waited):
            return done
        batch, self._batch, self._first_at = self._batch[: self.batch_size], [], None
        self._invoke(batch)
        return done + len(batch)

    def pending(self) -> int:
        return len(self._batch) + sum(len(batch) for batch, _ in self._in_flight)

    def _rereceived(self, message: Mapping[str, Any]) -> bool:
        """A message already waiting in the batch came back (its visibility timeout ran
        out meanwhile): keep one copy, with the newest receipt handle."""
        for index, held in enumerate(self._batch):
            if held["MessageId"] == message["MessageId"]:
                self._batch[index] = {**held, "ReceiptHandle": message["ReceiptHandle"]}
                return True
        return False

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        records = [self._record(message) for message in messages]
        started = self.invoker.submit(
            self.function, self.handler, {"Records": records}, timeout=self.timeout
        )
        self._in_flight.append((messages, started))
        self._finish_ended()

    def _finish_ended(self) -> int:
        """What follows each invocation that ended: the log, the messages deleted."""
        ended = [(batch, future) for batch, future in self._in_flight if future.done()]
        for entry in ended:
            self._in_flight.remove(entry)
            self._finish(*entry)
        return len(ended)

    def _finish(self, messages: list[dict[str, Any]], started: Future[Invocation]) -> None:
        result = started.result()
        if self.on_batch is not None:
            self.on_batch(messages, result)
        if not result.ok:
            return  # every message comes back after the visibility timeout
        failed = failed_items(result.response)
        handles: list[str] = []
        for message in messages:
            handle = message["ReceiptHandle"]
            if message["MessageId"] not in failed and handle not in handles:
                handles.append(handle)
        # DeleteMessageBatch, ten at a time; a duplicate's handle may be gone already (the
        # batch reports it as failed, which changes nothing).
        for start in range(0, len(handles), 10):
            entries = [
                {"Id": str(index), "ReceiptHandle": handle}
                for index, handle in enumerate(handles[start : start + 10])
            ]
            with contextlib.suppress(Exception):
                self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)

    def _record(self, message: Mapping[str, Any]) -> dict[str, Any]:
        region = self.queue_arn.split(":")[3]
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": dict(message.get("MessageAttributes") or {}),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": region,
        }


# --------------------------------------------------------------------------- streams


@dataclass
class _Shard:
    stream_arn: str
    shard_id: str
    iterator: str | None
    pending: list[dict[str, Any]] = field(default_factory=list)
    batch_size: int = 0
    attempts: int = 0
    retry_at: float = 0.0
    # The batch handed to the function and not yet done with (concurrency > 1): the
    # shard's head, which nothing else moves meanwhile.
    in_flight: tuple[list[dict[str, Any]], Future[Invocation]] | None = None


@dataclass
class StreamSource:
    """A DynamoDB Streams event source mapping (see the module docstring)."""

    function: str
    handler: Handler
    streams: Any
    stream_arns: list[str]
    batch_size: int
    bisect_on_error: bool
    retry_attempts: int
    max_record_age: float
    timeout: float
    invoker: Invoker
    deliveries: Deliveries
    on_failure: Callable[[dict[str, Any]], None]
    # Sees each record once, as it is read (the local cloud's log).
    observe: Callable[[dict[str, Any]], None] | None = None
    # A count of the requests that may add a record (None: read on every poll).
    changes: Callable[[], int] | None = None
    look_every: float = LOOK_EVERY
    # Per stream ARN: the mapping's event filters (``wiring.StreamEventSourceSpec.filters``):
    # a record that matches none is never delivered, as Lambda drops it before invoking.
    filters: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    _shards: list[_Shard] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reads = _ReadWhenChanged(self.changes, self.look_every)
        for arn in self.stream_arns:
            described = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]
            for shard in described["Shards"]:
                # The mapping exists before any write (it is deployed with the tables), so
                # it sees every record: the horizon, here where the loop starts later.
                iterator = self.streams.get_shard_iterator(
                    StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
                self._shards.append(_Shard(arn, shard["ShardId"], iterator))

    def poll(self) -> int:
        handled = 0
        read = self._reads.due()
        for shard in self._shards:
            self._fetch(shard, read=read)
            handled += self._deliver(shard)
        return handled

    def pending(self) -> int:
        return sum(len(shard.pending) for shard in self._shards)

    def delivers(self, record: Mapping[str, Any]) -> bool:
        """Whether the mapping's filters let the record through to the function."""
        patterns = self.filters.get(str(record.get("eventSourceARN")))
        return patterns is None or any(matches(pattern, record) for pattern in patterns)

    def unread(self) -> bool:
        """Whether the streams may hold records not read yet (a write since the last read):
        between two reads nothing is pending here while the stream still has work."""
        return self._reads.unread()

    def _fetch(self, shard: _Shard, *, read: bool = True) -> None:
        channel = f"stream:{self.function}"
        if read and shard.iterator is not None and len(shard.pending) >= self.batch_size:
            self._reads.more = True  # not read now: read again on the next poll
        elif read and shard.iterator is not None:
            response = self.streams.get_records(ShardIterator=shard.iterator, Limit=100)
            shard.iterator = response.get("NextShardIterator")
            records = response.get("Records", [])
            self._reads.more = self._reads.more or len(records) >= 100
            for raw in records:
                record = _lambda_stream_record(raw, shard.stream_arn)
                if self.observe is not None:
                    self.observe(record)
                if not self.delivers(record):
                    continue
                for planned in self.deliveries.offer(Delivery(channel, record)):
                    shard.pending.append(planned.payload)
        for held in self.deliveries.due_for(channel):
            if held.payload.get("eventSourceARN") == shard.stream_arn:
                shard.pending.append(held.payload)

    def _deliver(self, shard: _Shard) -> int:
        if shard.in_flight is not None:
            return self._finish(shard)
        if not shard.pending or time.monotonic() < shard.retry_at:
            return 0
        self._expire_old(shard)
        if not shard.pending:
            return 0
        size = shard.batch_size or self.batch_size
        batch = shard.pending[:size]
        shard.in_flight = (
            batch,
            self.invoker.submit(
                self.function, self.handler, {"Records": batch}, timeout=self.timeout
            ),
        )
        return self._finish(shard) or len(batch)

    def _finish(self, shard: _Shard) -> int:
        """The checkpoint after the shard's invocation, once it ended (0: still running)."""
        assert shard.in_flight is not None
        batch, started = shard.in_flight
        if not started.done():
            return 0
        shard.in_flight = None
        result = started.result()
        if result.ok and not failed_items(result.response):
            del shard.pending[: len(batch)]
            shard.attempts, shard.batch_size = 0, 0
            return len(batch)
        shard.attempts += 1
        if result.ok:
            # Checkpoint before the first failed record; the retry starts from it.
            failed = failed_items(result.response)
            first = next((i for i, r in enumerate(batch) if _sequence(r) in failed), 0)
            del shard.pending[:first]
            batch = batch[first:]
        elif self.bisect_on_error and len(batch) > 1:
            shard.batch_size = max(1, len(batch) // 2)
        if shard.attempts > self.retry_attempts:
            self._give_up(shard, batch[: shard.batch_size or len(batch)], result)
        else:
            shard.retry_at = time.monotonic() + min(30.0, 0.2 * 2 ** (shard.attempts - 1))
        return len(batch)

    def _expire_old(self, shard: _Shard) -> None:
        now = time.time()
        while shard.pending:
            created = shard.pending[0]["dynamodb"].get("ApproximateCreationDateTime")
            if not isinstance(created, int | float) or now - created <= self.max_record_age:
                return
            self._give_up(shard, [shard.pending[0]], None, why="RecordAgeExceeded")

    def _give_up(
        self,
        shard: _Shard,
        batch: list[dict[str, Any]],
        result: Invocation | None,
        *,
        why: str = "RetryAttemptsExhausted",
    ) -> None:
        """Send the batch's description to the on-failure destination and move past it."""
        del shard.pending[: len(batch)]
        shard.attempts, shard.batch_size, shard.retry_at = 0, 0, 0.0
        error = None if result is None else result.error
        self.on_failure(
            {
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": f"arn:aws:lambda:function:{self.function}",
                    "condition": why,
                    "approximateInvokeCount": self.retry_attempts + 1,
                },
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": f"{type(error).__name__}: {error}" if error else None,
                },
                "version": "1.0",
                "timestamp": datetime.now(UTC).isoformat(),
                "DDBStreamBatchInfo": {
                    "shardId": shard.shard_id,
                    "startSequenceNumber": _sequence(batch[0]),
                    "endSequenceNumber": _sequence(batch[-1]),
                    "approximateArrivalOfFirstRecord": _arrival(batch[0]),
                    "approximateArrivalOfLastRecord": _arrival(batch[-1]),
                    "batchSize": len(batch),
                    "streamArn": shard.stream_arn,
                },
            }
        )


def _sequence(record: Mapping[str, Any]) -> str:
    return str(record["dynamodb"].get("SequenceNumber"))


def _arrival(record: Mapping[str, Any]) -> str | None:
    created = record["dynamodb"].get("ApproximateCreationDateTime")
    if isinstance(created, int | float):
        return datetime.fromtimestamp(created, UTC).isoformat()
    return None


def _lambda_stream_record(record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda delivers it: with the stream's ARN, and the creation
    time in epoch seconds (boto3 parsed it to a datetime)."""
    data = dict(record["dynamodb"])
    created = data.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        data["ApproximateCreationDateTime"] = created.timestamp()
    shaped = {key: value for key, value in record.items() if key != "dynamodb"}
    return {**shaped, "dynamodb": data, "eventSourceARN": stream_arn}


# --------------------------------------------------------------------------- async invoke


@dataclass
class _Queued:
    event: dict[str, Any]
    first_at: float
    attempts: int = 0
    due: float = 0.0


@dataclass
class AsyncInvoker:
    """Asynchronous invocations of one function (see the module docstring)."""

    function: str
    handler: Handler
    retry_attempts: int
    max_event_age: float
    timeout: float
    invoker: Invoker
    deliveries: Deliveries
    on_failure: Callable[[dict[str, Any]], None]
    retry_delays: tuple[float, ...] = (60.0, 120.0)
    on_result: Callable[[dict[str, Any], Invocation], None] | None = None
    _queue: list[_Queued] = field(default_factory=list)
    # Invocations under way (concurrency > 1).
    _in_flight: list[tuple[_Queued, Future[Invocation]]] = field(default_factory=list)

    def submit(self, event: Mapping[str, Any]) -> None:
        for planned in self.deliveries.offer(Delivery(f"invoke:{self.function}", dict(event))):
            self._queue.append(_Queued(planned.payload, time.monotonic()))

    def poll(self) -> int:
        done = self._finish_ended()
        for held in self.deliveries.due_for(f"invoke:{self.function}"):
            self._queue.append(_Queued(held.payload, time.monotonic()))
        now = time.monotonic()
        ready = [item for item in self._queue if item.due <= now]
        if self.invoker.concurrent:  # up to that many at once; the rest wait their turn
            ready = ready[: max(0, self.invoker.concurrency - len(self._in_flight))]
        # Taken out by identity, in one pass: a wide fan-out's ends are thousands of
        # invocations queued at once (``list.remove`` would compare their events).
        taken = {id(item) for item in ready}
        self._queue = [item for item in self._queue if id(item) not in taken]
        for item in ready:
            started = self.invoker.submit(
                self.function, self.handler, item.event, timeout=self.timeout
            )
            self._in_flight.append((item, started))
            done += self._finish_ended()
        return max(done, len(ready))

    def _finish_ended(self) -> int:
        ended = [(item, future) for item, future in self._in_flight if future.done()]
        for entry in ended:
            self._in_flight.remove(entry)
            self._finish(*entry)
        return len(ended)

    def _finish(self, item: _Queued, started: Future[Invocation]) -> None:
        result = started.result()
        if self.on_result is not None:
            self.on_result(item.event, result)
        if result.ok:
            return
        item.attempts += 1
        too_old = time.monotonic() - item.first_at > self.max_event_age
        if item.attempts > self.retry_attempts or too_old:
            self.on_failure(_async_failure(self.function, item, result))
            return
        delay = self.retry_delays[min(item.attempts, len(self.retry_delays)) - 1]
        item.due = time.monotonic() + delay
        self._queue.append(item)

    def pending(self) -> int:
        return len(self._queue) + len(self._in_flight)


def _async_failure(function: str, item: _Queued, result: Invocation) -> dict[str, Any]:
    """What Lambda sends an on-failure destination for an asynchronous invocation."""
    error = result.error
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"arn:aws:lambda:function:{function}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": item.attempts,
        },
        "requestPayload": item.event,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {
            "errorType": type(error).__name__ if error else "Error",
            "errorMessage": str(error),
        },
    }


def json_body(value: Any) -> str:
    return json.dumps(value, default=str)
