"""Seeded faults, injected through the local cloud's hooks and counted by kind.

- a **tap** (``FaultInjector.tap``): every delivery (``rule:``, ``sqs:``, ``stream:``,
  ``invoke:`` channels) may be duplicated (the copy comes after a random delay), delayed
  (different delays reorder) or, for the best-effort service events only (EMR, EMR
  Serverless and Step Functions state changes), dropped: the reconciler must repair those;
- a **fault planner** (``FaultInjector.plan``): an invocation of the scheduler, the stream
  processor or the reconciler crashes right after its N-th AWS call (the local cloud's
  ``FaultPlan``; the event source redelivers), or its N-th AWS call is refused with a
  throttling error that outlasted botocore's retries (``botocore_hook``, which exists in
  these tests only): a DynamoDB call gets ProvisionedThroughputExceededException or
  ThrottlingException, a write also TransactionConflictException (a transaction holds the
  item), a TransactWriteItems a TransactionCanceledException for a TransactionConflict;
  Lambda TooManyRequestsException, the other services ThrottlingException. Each is
  counted by function and error code (``throttle:<function>:<code>``);
- a delivery (an SQS message, a stream record, a reconcile tick) takes at most
  ``max_faults_per_delivery`` crashes and throttles, so the event sources' own budgets
  (five receives before the scheduler's dead-letter queue, five stream retries) are never
  what loses it: a message in a dead-letter queue is a violation, not a fault.

Nothing is injected until ``arm()`` (the DAGs load undisturbed). Rates are drawn from the
seed, and each decision is a hash of the seed and of the delivery's stable content (see
``FaultInjector``), so a rerun of a seed injects the same faults into the same
deliveries as far as timing lets the runs agree (a job's duration is real time: a rerun
may see an event before or after another, never exactly the same interleaving).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from skydag import wiring
from skydag.localcloud.eventbridge import Matched
from skydag.localcloud.hooks import Delivery, FaultPlan, InjectedCrash
from skydag.localcloud.sources import Invocation

CHANNEL_KINDS = ("rule", "sqs", "stream", "invoke")
# The functions whose invocations may crash or be throttled (the DAG loader only runs
# while the scenario is set up).
FAULTY_FUNCTIONS = (
    wiring.SCHEDULER.id,
    wiring.STREAM_PROCESSOR.id,
    wiring.RECONCILER.id,
)
# A crash or a throttle lands on one of an invocation's first this many AWS calls.
MAX_CALL_INDEX = 10
# What a profile may spare, each for the open findings it would otherwise keep hitting
# (docs/guarantees.md): the soak spares nothing, the quick sweep spares all three.
SPARES = {
    "commands": "operator commands are delivered once and on time, their handling never "
    "crashes, a clear waits for the run's end to be handled, and a command is sent only "
    "while no invocation runs and nothing waits for the scheduler, so that its handling "
    "races no report (F1, F2, F3, F6, F7, F9)",
    "signals": "the scenario's signals are delivered once and on time, their handling never "
    "crashes (F4, F5)",
    "cancels": "the calls that find and stop a job are never throttled (F8)",
}
PROFILES: dict[str, frozenset[str]] = {"full": frozenset(), "quick": frozenset(SPARES)}
# Services whose job lookups and cancels the "cancels" spare leaves alone.
JOB_SERVICES = frozenset({"batch", "ecs", "states", "elasticmapreduce", "emr-serverless"})
CANCEL_CALL_PREFIXES = ("Describe", "Get", "List", "Stop", "Terminate", "Cancel")


def best_effort_rules() -> frozenset[str]:
    """The rules carrying events AWS delivers on a best-effort basis (design principle 6)."""
    return frozenset(
        {
            wiring.EMR_STEP_STATUS_RULE.id,
            wiring.EMR_SERVERLESS_JOB_RUN_RULE.id,
            wiring.STEP_FUNCTIONS_EXECUTION_RULE.id,
        }
    )


@dataclass(frozen=True)
class FaultRates:
    """How often each fault happens, per delivery or per invocation."""

    duplicate: Mapping[str, float]  # by channel kind
    delay: Mapping[str, float]  # by channel kind
    max_delay: float  # seconds; a delay or a duplicate's lag is uniform in (0, max_delay)
    drop_best_effort: float
    crash: float
    throttle: float
    max_faults_per_delivery: int = 2
    spare: frozenset[str] = frozenset()  # keys of SPARES
    # Per item an eventually consistent read returns (``StaleReads``).
    stale_read: float = 0.0

    @classmethod
    def draw(cls, rng: random.Random, spare: frozenset[str] = frozenset()) -> FaultRates:
        return cls(
            spare=spare,
            duplicate={kind: round(rng.uniform(0.0, 0.3), 3) for kind in CHANNEL_KINDS},
            delay={kind: round(rng.uniform(0.0, 0.3), 3) for kind in CHANNEL_KINDS},
            max_delay=round(rng.uniform(0.3, 1.0), 2),
            drop_best_effort=round(rng.uniform(0.1, 0.5), 3),
            crash=round(rng.uniform(0.03, 0.2), 3),
            # Throttling is optional: one seed in two has none.
            throttle=round(rng.choice((0.0, rng.uniform(0.02, 0.12))), 3),
            # Drawn last: the rates drawn before it stay each seed's own.
            stale_read=round(rng.uniform(0.1, 0.6), 3),
        )

    def describe(self) -> str:
        def by_kind(rates: Mapping[str, float]) -> str:
            return " ".join(f"{kind}={rates[kind]:.2f}" for kind in CHANNEL_KINDS)

        return (
            f"duplicate[{by_kind(self.duplicate)}] delay[{by_kind(self.delay)}] "
            f"max_delay={self.max_delay:.2f}s drop_best_effort={self.drop_best_effort:.2f} "
            f"crash={self.crash:.2f} throttle={self.throttle:.2f} (per invocation) "
            f"stale_read={self.stale_read:.2f} (per item read eventually consistently)"
            + (f" sparing {', '.join(sorted(self.spare))}" if self.spare else "")
        )


@dataclass
class _Pending:
    """The fault chosen for the invocation under way."""

    function: str
    plan: FaultPlan | None = None
    throttle_at: int | None = None
    calls: int = 0
    # Picks the error among those the throttled call can get (``throttle_codes``).
    code_roll: float = 0.0


# The errors a DynamoDB call can get once botocore's retries are spent: capacity
# (provisioned tables), request-rate throttling (on-demand tables, control plane), and a
# write refused because a transaction holds the item.
DYNAMODB_THROTTLES = (
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
)
DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"})
TRANSACTION_CONFLICT = "TransactionConflictException"
# A transaction cancelled by a conflicting one (the reason a cancellation carries).
TRANSACTION_CANCELLED = "TransactionCanceledException"


def throttle_codes(service: str, operation: str) -> tuple[str, ...]:
    """The errors a throttled (or conflicting) call of ``operation`` may get."""
    if service == "dynamodb":
        if operation == "TransactWriteItems":
            return (*DYNAMODB_THROTTLES, TRANSACTION_CANCELLED)
        if operation in DYNAMODB_WRITES:
            return (*DYNAMODB_THROTTLES, TRANSACTION_CONFLICT)
        return DYNAMODB_THROTTLES
    if service == "lambda":
        return ("TooManyRequestsException",)
    return ("ThrottlingException",)


def throttle_code(service: str, operation: str = "", roll: float = 0.0) -> str:
    """The error ``roll`` (in [0, 1)) picks among ``throttle_codes``."""
    codes = throttle_codes(service, operation)
    return codes[min(int(roll * len(codes)), len(codes) - 1)]


def throttle_error(code: str, operation: str) -> dict[str, Any]:
    """The error response of a refused call, as the service sends it."""
    error: dict[str, Any] = {
        "Error": {"Code": code, "Message": f"{code} (injected)"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    if code == TRANSACTION_CANCELLED:
        error["Error"]["Message"] = "Transaction cancelled, please refer cancellation reasons"
        error["CancellationReasons"] = [
            {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
        ]
    return error


class FaultInjector:
    """The seeded tap, fault planner and throttle decisions of one faulty run.

    Each decision is a hash of the seed and of what is delivered (the event's stable
    content: source, detail-type, DAG, run, task, state, try, job name, ...; a stream
    record's key, state, try and version) with the number of times that content was seen,
    not a draw from one shared generator: the same delivery meets the same fate when a
    seed is rerun, even if timing offers the deliveries in another order.
    """

    def __init__(self, rates: FaultRates, seed: int) -> None:
        self.rates = rates
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self.armed = False
        self._best_effort = best_effort_rules()
        self._seen: Counter[str] = Counter()  # content -> times seen
        self._faults_of: Counter[str] = Counter()  # delivery identity -> faults so far
        # Invocations run concurrently (one thread each): the fault chosen for each is
        # kept on its thread, and the shared counts under a lock.
        self._local = threading.local()
        self._lock = threading.RLock()
        # Tells the call recorder which call a crash came right after, and that a throttle
        # refused the call after the last one.
        self.on_crash: Callable[[str, str], None] | None = None
        self.on_throttle: Callable[[], None] | None = None
        # Writes a line in the local cloud's log for each invocation fault.
        self.say: Callable[[str, str], None] | None = None
        self.stale = StaleReads(rates.stale_read, seed, self._count)

    def arm(self) -> None:
        self.armed = True
        self.stale.armed = True

    @property
    def _pending(self) -> _Pending | None:
        """The fault chosen for the invocation under way on this thread."""
        found: _Pending | None = getattr(self._local, "pending", None)
        return found

    @_pending.setter
    def _pending(self, value: _Pending | None) -> None:
        self._local.pending = value

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _key(self, content: str) -> str:
        with self._lock:
            self._seen[content] += 1
            return f"{content}#{self._seen[content]}"

    def _roll(self, key: str, what: str) -> float:
        """A uniform number in [0, 1) for this decision about this delivery."""
        digest = hashlib.sha256(f"{self.seed}|{what}|{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    # --- deliveries ---------------------------------------------------------------------

    def spared(self, event: Any) -> bool:
        """Whether the profile spares this event (a command or a scenario signal)."""
        source = str(event.get("source", "")) if isinstance(event, Mapping) else ""
        if "commands" in self.rates.spare and source == wiring.COMMAND_SOURCE:
            return True
        return "signals" in self.rates.spare and source.startswith("sim.")

    def tap(self, delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
        if not self.armed or self.spared(delivery_event(delivery)):
            return [(0.0, delivery)]
        kind, _, name = delivery.channel.partition(":")
        key = self._key(f"{delivery.channel}|{delivery_content(delivery)}")
        rates, roll = self.rates, self._roll
        best_effort = kind == "rule" and name in self._best_effort
        if best_effort and roll(key, "drop") < rates.drop_best_effort:
            self._count(f"drop:{name}")
            return []
        first = 0.0
        if roll(key, "delay") < rates.delay.get(kind, 0.0):
            first = 0.05 + roll(key, "delay-by") * (rates.max_delay - 0.05)
            self._count(f"delay:{kind}")
        planned = [(first, delivery)]
        if roll(key, "duplicate") < rates.duplicate.get(kind, 0.0):
            planned.append((first + roll(key, "duplicate-after") * rates.max_delay, delivery))
            self._count(f"duplicate:{kind}")
        return planned

    # --- invocations --------------------------------------------------------------------

    def plan(self, function: str, event: Any) -> FaultPlan | None:
        """The ``FaultPlanner``: called as each invocation starts."""
        pending = self._pending = _Pending(function)
        if not self.armed or function not in FAULTY_FUNCTIONS:
            return None
        if any(self.spared(each) for each in _events_of(event)):
            return None
        identities = _identities(event)
        budget = self.rates.max_faults_per_delivery
        with self._lock:
            if any(self._faults_of[identity] >= budget for identity in identities):
                return None
            key = self._key(f"{function}|{invocation_content(event)}")
            roll = self._roll(key, "invocation")
            call = 1 + int(self._roll(key, "call") * MAX_CALL_INDEX)
            if roll < self.rates.crash:
                pending.plan = FaultPlan(call)
            elif roll < self.rates.crash + self.rates.throttle:
                pending.throttle_at = call
                pending.code_roll = self._roll(key, "throttle-code")
            else:
                return None
            for identity in identities:
                self._faults_of[identity] += 1
        return pending.plan

    def after_invocation(self, result: Invocation) -> None:
        """``Invoker.on_invocation``: counts the crashes that happened."""
        pending, self._pending = self._pending, None
        if isinstance(result.error, InjectedCrash) and pending is not None and pending.plan:
            service, operation = pending.plan.calls[-1]
            self._count(f"crash:{result.function}")
            self._say(f"crashed {result.function} right after {service}:{operation}")
            if self.on_crash is not None:
                self.on_crash(service, operation)

    def _say(self, text: str) -> None:
        if self.say is not None:
            self.say("fault injected", text)

    def throttle_now(self, service: str, operation: str) -> str | None:
        """Whether the call about to be made is refused (the error code), counted."""
        pending = self._pending
        if pending is None or pending.throttle_at is None:
            return None
        cancel_call = service in JOB_SERVICES and operation.startswith(CANCEL_CALL_PREFIXES)
        if "cancels" in self.rates.spare and cancel_call:
            return None
        pending.calls += 1
        if pending.calls != pending.throttle_at:
            return None
        pending.throttle_at = None
        code = throttle_code(service, operation, pending.code_roll)
        self._count(f"throttle:{pending.function}:{code}")
        self._say(f"throttled {pending.function}'s call {service}:{operation} ({code})")
        if self.on_throttle is not None:
            self.on_throttle()
        return code


# What identifies an event across reruns: its source, detail-type and these detail values
# (ids and times differ from one run to the next).
STABLE_DETAIL_KEYS = (
    "dag",
    "run_id",
    "task",
    "state",
    "try_number",
    "jobName",
    "startedBy",
    "name",
    "status",
    "lastStatus",
    "n",
)


def event_content(event: Any) -> str:
    if not isinstance(event, Mapping):
        return "?"
    detail = event.get("detail")
    detail = detail if isinstance(detail, Mapping) else {}
    parts = [str(event.get("source")), str(event.get("detail-type"))]
    parts += [f"{key}={detail[key]}" for key in STABLE_DETAIL_KEYS if key in detail]
    payload = detail.get("requestPayload")  # a Lambda destination event: its try's token
    identity = payload.get("skydag") if isinstance(payload, Mapping) else None
    if isinstance(identity, Mapping):
        parts.append(f"token={identity.get('token')}")
    return "|".join(parts)


def record_content(record: Mapping[str, Any]) -> str:
    """A stream record: its item's key and the state, try and version it carries."""
    data = record.get("dynamodb") or {}
    image = data.get("NewImage") or {}

    def text(name: str) -> str:
        value = image.get(name) or (data.get("Keys") or {}).get(name) or {}
        return str(next(iter(value.values()), "")) if isinstance(value, Mapping) else ""

    names = ("run_key", "dag_id", "run_id", "task_id", "state", "try_number", "version")
    return "|".join(text(name) for name in names)


def delivery_event(delivery: Delivery) -> Any:
    """The EventBridge event a delivery carries (None for a stream record)."""
    payload = delivery.payload
    if isinstance(payload, Matched):
        return payload.event
    if isinstance(payload, Mapping) and "Body" in payload:  # an SQS message
        return _json(payload["Body"])
    if isinstance(payload, Mapping) and "dynamodb" in payload:
        return None
    return payload


def delivery_content(delivery: Delivery) -> str:
    payload = delivery.payload
    if isinstance(payload, Mapping) and "dynamodb" in payload:
        return record_content(payload)
    return event_content(delivery_event(delivery))


def _events_of(event: Any) -> list[Any]:
    """The EventBridge events an invocation carries (an SQS batch's bodies, or itself)."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        return [event]
    return [_json(record["body"]) for record in records if "body" in record]


def invocation_content(event: Any) -> str:
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        return event_content(event)
    contents = [
        _body_content(record["body"]) if "body" in record else record_content(record)
        for record in records
    ]
    return ";".join(sorted(contents))


def _body_content(body: Any) -> str:
    return event_content(_json(body))


def _json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _identities(event: Any) -> list[str]:
    """What the event source would deliver again: SQS message ids, stream sequence
    numbers, or the asynchronous event's id."""
    if not isinstance(event, Mapping):
        return []
    records = event.get("Records")
    if isinstance(records, list):
        found = []
        for record in records:
            if "messageId" in record:
                found.append(f"sqs:{record['messageId']}")
            else:
                found.append(f"stream:{(record.get('dynamodb') or {}).get('SequenceNumber')}")
        return found
    return [f"event:{event.get('id')}"]


# --------------------------------------------------------------------------- botocore


@dataclass
class CallStatus:
    """The HTTP status and parsed response of the last AWS call made on each thread (the
    call watcher reads them right after the call: a refused call started nothing, and a
    call the service answered with an existing job, as StartExecution does for a name
    already running, started nothing new)."""

    _local: threading.local = field(default_factory=threading.local)

    @property
    def last(self) -> int:
        return int(getattr(self._local, "status", 0))

    @property
    def response(self) -> Mapping[str, Any]:
        found = getattr(self._local, "response", None)
        return found if isinstance(found, Mapping) else {}

    def set(self, status: int, response: Any = None) -> None:
        self._local.status = status
        self._local.response = response


@contextmanager
def botocore_hook(
    throttle: Callable[[str, str], str | None] | None,
    status: CallStatus,
    stale: StaleReads | None = None,
) -> Iterator[None]:
    """Wrap botocore's ``Endpoint.make_request`` (under the local cloud's own wrapper, so
    enter this before the cloud): note each response's status and, when ``throttle`` says
    so, refuse the call with that error code instead of making it; ``stale`` sees each
    DynamoDB call and may serve an eventually consistent read stale."""
    from botocore.endpoint import Endpoint
    from botocore.exceptions import ClientError

    original = Endpoint.make_request

    def make_request(self: Any, operation_model: Any, request_dict: Any) -> Any:
        service = operation_model.service_model.endpoint_prefix
        code = throttle(service, operation_model.name) if throttle is not None else None
        if code is not None:
            status.set(400)
            raise ClientError(throttle_error(code, operation_model.name), operation_model.name)
        response = original(self, operation_model, request_dict)
        http, parsed = response if isinstance(response, tuple) else (None, None)
        status.set(int(getattr(http, "status_code", 0) or 0), parsed)
        if stale is not None and service == "dynamodb":
            stale.after_call(operation_model.name, _json(request_dict.get("body")), parsed)
        return response

    Endpoint.make_request = make_request
    try:
        yield
    finally:
        Endpoint.make_request = original


# --------------------------------------------------------------------------- stale reads

# How many versions of each item ``StaleReads`` remembers.
REMEMBERED_VERSIONS = 4
_KEYED_WRITES = frozenset({"UpdateItem", "DeleteItem"})


def _item_key(item: Mapping[str, Any], names: Sequence[str]) -> str:
    return json.dumps([item.get(name) for name in names], sort_keys=True)


class StaleReads:
    """DynamoDB's eventually consistent reads, served stale.

    Every item a DynamoDB call shows (what a read returns or finds missing, what an
    UpdateItem returns, what a PutItem writes, a DeleteItem's absence) is remembered by
    table and key, its last ``REMEMBERED_VERSIONS`` versions. An eventually consistent
    GetItem or BatchGetItem (a table asked without ConsistentRead) is then answered, at
    ``rate`` per item, with an earlier remembered version of it, or without it where it
    was last seen missing: what DynamoDB may answer for a moment after a write. Only
    versions that existed are served, each item whole."""

    def __init__(self, rate: float, seed: int, count: Callable[[str], None]) -> None:
        self.rate = rate
        self.armed = False
        self._count = count
        self._rng = random.Random(f"stale-{seed}")
        self._keys: dict[str, list[str]] = {}  # table -> its key attributes
        self._versions: dict[tuple[str, str], list[Any]] = {}
        self._lock = threading.Lock()

    def after_call(self, operation: str, request: Any, parsed: Any) -> None:
        """Remember what the call showed, then serve a read stale (``parsed`` in place)."""
        if not isinstance(request, Mapping) or not isinstance(parsed, dict) or "Error" in parsed:
            return
        with self._lock:
            if operation == "GetItem":
                self._get_item(request, parsed)
            elif operation == "BatchGetItem":
                self._batch_get_item(request, parsed)
            elif operation in _KEYED_WRITES:
                table, key = request["TableName"], request["Key"]
                self._learn(table, key)
                found = parsed.get("Attributes") if operation == "UpdateItem" else None
                if operation == "DeleteItem" or request.get("ReturnValues") == "ALL_NEW":
                    self._remember(table, key, found)
            elif operation == "PutItem":
                table = request["TableName"]
                if table in self._keys:
                    self._remember(table, request["Item"], request["Item"])

    def _learn(self, table: str, key: Mapping[str, Any]) -> None:
        self._keys.setdefault(table, sorted(key))

    def _remember(self, table: str, key: Mapping[str, Any], item: Any) -> None:
        names = self._keys[table]
        versions = self._versions.setdefault((table, _item_key(key, names)), [])
        if not versions or versions[-1] != item:
            versions.append(item)
            del versions[:-REMEMBERED_VERSIONS]

    def _earlier(self, table: str, key: Mapping[str, Any], now: Any) -> tuple[bool, Any]:
        """(whether to serve it stale, the earlier version: None for missing)."""
        versions = self._versions.get((table, _item_key(key, self._keys[table])), [])
        earlier = [version for version in versions if version != now]
        if not self.armed or not earlier or self._rng.random() >= self.rate:
            return False, None
        self._count(f"stale:{table}")
        return True, self._rng.choice(earlier)

    def _get_item(self, request: Mapping[str, Any], parsed: dict[str, Any]) -> None:
        table, key = request["TableName"], request["Key"]
        self._learn(table, key)
        now = parsed.get("Item")
        stale, earlier = (
            (False, None) if request.get("ConsistentRead") else self._earlier(table, key, now)
        )
        self._remember(table, key, now)
        if not stale:
            return
        if earlier is None:
            parsed.pop("Item", None)
        else:
            parsed["Item"] = earlier

    def _batch_get_item(self, request: Mapping[str, Any], parsed: dict[str, Any]) -> None:
        responses = parsed.get("Responses") or {}
        unprocessed = parsed.get("UnprocessedKeys") or {}
        for table, asked in (request.get("RequestItems") or {}).items():
            keys = asked.get("Keys") or []
            if not keys:
                continue
            self._learn(table, keys[0])
            names = self._keys[table]
            found = {_item_key(item, names): item for item in responses.get(table, [])}
            left = {_item_key(key, names) for key in (unprocessed.get(table) or {}).get("Keys", [])}
            served = []
            for key in keys:
                wanted = _item_key(key, names)
                if wanted in left:
                    continue
                now = found.get(wanted)
                stale, earlier = (
                    (False, None) if asked.get("ConsistentRead") else self._earlier(table, key, now)
                )
                self._remember(table, key, now)
                item = earlier if stale else now
                if item is not None:
                    served.append(item)
            if table in responses or served:
                responses[table] = served
        if responses:
            parsed["Responses"] = responses
