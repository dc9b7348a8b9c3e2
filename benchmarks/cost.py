"""What skydag costs on AWS: the price table and the billing units, with AWS's rounding.

Pure (no boto3, no moto): the meter (``metering.py``) counts what the handlers did through
the local cloud; this module turns those counts into dollars. The prices are us-east-1
on-demand list prices, without free tiers (they are per account, not per task); they are
kept here, in the repository, and printed in ``docs/benchmarks.md`` beside the figures.

Billing units, as AWS documents them:

- DynamoDB on demand: a write request unit per 1 KB of the item written (PutItem,
  UpdateItem, DeleteItem: the larger of the item before and after; a failed condition still
  costs the item's size), rounded up per item, at least 1; each global secondary index the
  write touches costs its own units for the projected entry (2 when the index key moves: a
  delete and a put). A read request unit per 4 KB read, strongly consistent; half for
  eventually consistent; a Query sums the items' sizes before rounding. Transactions double.
  DynamoDB Streams reads by a Lambda trigger are free.
- Lambda: per request, and per GB-second of billed duration (rounded up to the ms) at the
  function's memory size (arm64).
- EventBridge: a custom event per 64 KB chunk of a PutEvents entry; AWS services' own
  events (Batch's) and rule deliveries are free. EventBridge Scheduler: per invocation.
- SQS: a request per 64 KB chunk (SendMessage, ReceiveMessage, DeleteMessageBatch).
- CloudWatch Logs: per GB ingested. X-Ray: per trace recorded (the default sampling rule
  records the first request each second and 5% of the rest: at scale, 5% of invocations).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from skydag.wiring import SYSTEM_LOG_LEVEL_BY_DEFAULT, TRACING_BY_DEFAULT

KB = 1024
CHUNK_64K = 64 * KB


@dataclass(frozen=True, slots=True)
class Price:
    """``usd`` per ``per`` units of ``unit``."""

    meter: str
    component: str
    unit: str
    usd: float
    per: float
    note: str = ""

    @property
    def usd_per_unit(self) -> float:
        return self.usd / self.per


# us-east-1, on demand, list prices (checked 2025; free tiers left out).
PRICES: dict[str, Price] = {
    price.meter: price
    for price in (
        Price("dynamodb.wru", "DynamoDB", "write request unit", 0.625, 1e6, "on demand"),
        Price("dynamodb.rru", "DynamoDB", "read request unit", 0.125, 1e6, "on demand"),
        Price(
            "dynamodb.streams",
            "DynamoDB",
            "streams read request",
            0.20,
            1e6,
            "free when a Lambda trigger reads the stream (skydag's case)",
        ),
        Price("lambda.requests", "Lambda", "request", 0.20, 1e6),
        Price("lambda.gb_s", "Lambda", "GB-second (arm64)", 0.0000133334, 1.0),
        Price("events.custom", "EventBridge", "custom event (64 KB chunk)", 1.00, 1e6),
        Price("scheduler.invocations", "EventBridge Scheduler", "invocation", 1.00, 1e6),
        Price("sqs.requests", "SQS", "request (64 KB chunk)", 0.40, 1e6, "standard queue"),
        Price("logs.gb", "CloudWatch Logs", "GB ingested", 0.50, 1.0),
        Price("xray.traces", "X-Ray", "trace recorded", 5.00, 1e6),
        Price(
            "stepfunctions.transitions",
            "Step Functions",
            "state transition (Standard)",
            25.0,
            1e6,
        ),
        Price("mwaa.hours", "MWAA", "environment hour (mw1.small)", 0.49, 1.0),
    )
}

# Lambda's default tracing sampling at scale (first request each second, then 5%), when
# the stack traces at all (off by default: skydag.wiring.TRACING_BY_DEFAULT).
XRAY_SAMPLED = 0.05
TRACED_SHARE = XRAY_SAMPLED if TRACING_BY_DEFAULT else 0.0
# Lambda's own log lines per invocation in the JSON log format at system log level INFO
# (platform.start and platform.report; the report carries the X-Ray ids): modelled, since
# the local cloud has no Lambda runtime. The stack's default level (WARN) drops them.
PLATFORM_LOG_BYTES_AT_INFO = 650
PLATFORM_LOG_BYTES = 0 if SYSTEM_LOG_LEVEL_BY_DEFAULT == "WARN" else PLATFORM_LOG_BYTES_AT_INFO
# What CloudWatch Logs counts for each log event besides its message.
LOG_EVENT_OVERHEAD = 26
# MWAA: the yardstick, 10,000 tasks a day on the smallest environment.
MWAA_TASKS_PER_DAY = 10_000


# Per-hop p50 latencies on AWS (ms), in one region, warm functions: the assumptions the
# critical-path estimate rests on (documented figures and common measurements, not ours).
LATENCY_P50_MS: dict[str, tuple[float, str]] = {
    "eventbridge_to_sqs": (150.0, "EventBridge rule match and delivery to an SQS target"),
    "sqs_to_lambda": (30.0, "SQS event source: long poll returns, invoke (plus the window)"),
    "eventbridge_to_lambda": (150.0, "EventBridge rule match and asynchronous invoke"),
    "async_queue_to_lambda": (30.0, "Lambda's queue of asynchronous invocations to the function"),
    "stream_to_lambda": (300.0, "DynamoDB Streams record visible, polled 4 times a second"),
    "lambda_invoke": (10.0, "a warm invocation's own overhead"),
    "dynamodb_call": (6.0, "a DynamoDB GetItem / UpdateItem / Query round trip"),
    "other_call": (25.0, "another AWS call (PutEvents, SubmitJob, ...)"),
}
LATENCY_TARGET_MS = 500.0
# AWS Batch's fixed quota: SubmitJob calls per second per account (Batch user guide,
# "AWS Batch service quotas"; it cannot be raised). The k-th of N jobs a finish releases
# at once cannot be submitted sooner than (k - 1) / 50 s after the first.
BATCH_SUBMIT_JOB_TPS = 50.0


def submit_quota_floors_ms(roots: Sequence[str]) -> list[float]:
    """For each dispatch (its root: the completion event that released it, in the order
    the dispatches were made), the least time after that event Batch's SubmitJob quota
    allows: the k-th job one event released waits (k - 1) / 50 s at least."""
    released: Counter[str] = Counter()
    floors = []
    for root in roots:
        floors.append(released[root] / BATCH_SUBMIT_JOB_TPS * 1000)
        released[root] += 1
    return floors


# Lambda gives a function CPU in proportion to its memory: one full vCPU at 1,769 MB.
FULL_VCPU_MB = 1769


def lambda_billed_seconds(
    cpu_seconds: float, memory_mb: int, *, dynamodb_calls: int, other_calls: int
) -> float:
    """An invocation's duration on AWS: its own CPU time (measured here on a full core)
    stretched to the function's CPU share, plus each AWS call's round trip at its p50
    from ``LATENCY_P50_MS`` (the handler waits for each in turn)."""
    share = min(1.0, memory_mb / FULL_VCPU_MB)
    waiting_ms = (
        dynamodb_calls * LATENCY_P50_MS["dynamodb_call"][0]
        + other_calls * LATENCY_P50_MS["other_call"][0]
    )
    return cpu_seconds / share + waiting_ms / 1000


def billed_gb_seconds(seconds: float, memory_mb: int) -> float:
    """What Lambda bills for an invocation of ``seconds`` at ``memory_mb``: its duration
    rounded up to the millisecond (1 ms at least), in GB-seconds."""
    milliseconds = max(1, math.ceil(seconds * 1000 - 1e-9))
    return milliseconds / 1000 * memory_mb / 1024


# The memory sizes each scenario's Lambda share is also priced at, from the same measured
# CPU and calls (what a power-tuning run would try): CPU time scales inversely with the
# size up to a full vCPU, so its GB-seconds do not change, while the waits for AWS calls
# cost in proportion to it.
MEMORY_CHOICES_MB = (256, 512, 1024, FULL_VCPU_MB)


def cpu_on_aws_ms(cpu_seconds: float, memory_mb: int) -> float:
    """CPU time measured here on a full core, as it takes at a function's CPU share."""
    return cpu_seconds * 1000 / min(1.0, memory_mb / FULL_VCPU_MB)


@dataclass(frozen=True)
class Hop:
    """One Lambda hop of a path: how the function was reached (``kind``: "async", "sqs" or
    "stream"), the AWS calls it made one after the other before the call that carries the
    path on, and the handler's own CPU until then, on AWS (``cpu_on_aws_ms``)."""

    kind: str
    dynamodb_calls: int
    other_calls: int
    cpu_ms: float


def path_latency_ms(hops: Iterable[Hop], batching_window_s: float) -> float:
    """p50 estimate of a path: each hop's delivery and calls from ``LATENCY_P50_MS``, plus
    the handler's own CPU as measured."""
    table = {name: value for name, (value, _) in LATENCY_P50_MS.items()}
    total = 0.0
    for hop in hops:
        if hop.kind == "async":
            total += table["eventbridge_to_lambda"] + table["async_queue_to_lambda"]
        elif hop.kind == "sqs":
            total += table["eventbridge_to_sqs"] + table["sqs_to_lambda"]
            total += batching_window_s * 1000
        else:
            total += table["stream_to_lambda"]
        total += table["lambda_invoke"] + hop.cpu_ms
        total += hop.dynamodb_calls * table["dynamodb_call"]
        total += hop.other_calls * table["other_call"]
    return total


# --------------------------------------------------------------------------- units


def chunks_64k(size: int) -> int:
    """64 KB chunks (EventBridge events, SQS requests): at least one."""
    return max(1, math.ceil(size / CHUNK_64K))


def write_units(size: int, *, transactional: bool = False) -> int:
    units = max(1, math.ceil(size / KB))
    return units * 2 if transactional else units


def read_units(size: int, *, consistent: bool, transactional: bool = False) -> float:
    units = float(max(1, math.ceil(size / (4 * KB))))
    if transactional:
        return units * 2
    return units if consistent else units / 2


def _number_size(text: str) -> int:
    """1 byte per two significant digits, plus 1 (leading and trailing zeros trimmed)."""
    digits = str(Decimal(text).normalize()).lstrip("-").replace(".", "")
    digits = digits.split("E")[0].lstrip("0") or "0"
    return math.ceil(len(digits) / 2) + 1


def value_size(value: Mapping[str, Any]) -> int:
    """The size of one attribute value in DynamoDB JSON (``{"S": "..."}`` etc.)."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(str(raw).encode())
    if kind == "N":
        return _number_size(str(raw))
    if kind == "B":
        return len(raw) if isinstance(raw, bytes) else math.ceil(len(str(raw)) * 3 / 4)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(v).encode()) for v in raw)
    if kind == "NS":
        return sum(_number_size(str(v)) for v in raw)
    if kind == "BS":
        return sum(value_size({"B": v}) for v in raw)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in raw.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    """An item's size: its attribute names' UTF-8 bytes plus their values'."""
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def event_entry_size(entry: Mapping[str, Any]) -> int:
    """A PutEvents entry as EventBridge sizes it: Time (14 bytes when set), Source,
    DetailType, Detail and each Resources entry, in UTF-8."""
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(key) or "").encode())
    size += sum(len(str(resource).encode()) for resource in entry.get("Resources") or [])
    return size


# --------------------------------------------------------------------------- usage


Labels = tuple[str, ...]


class Usage:
    """Billing quantities by meter and by labels (which handler, which cause, which call,
    which item): ``add("dynamodb.wru", 3, "StreamProcessor", "task queued", "UpdateItem")``."""

    def __init__(self) -> None:
        self.lines: defaultdict[tuple[str, Labels], float] = defaultdict(float)

    def add(self, meter: str, quantity: float, *labels: str) -> None:
        if meter not in PRICES:
            raise KeyError(f"no price for meter {meter!r}")
        self.lines[(meter, labels)] += quantity

    def merge(self, other: Usage) -> None:
        for key, quantity in other.lines.items():
            self.lines[key] += quantity

    def quantity(self, meter: str) -> float:
        return sum(q for (m, _), q in self.lines.items() if m == meter)

    def dollars(self) -> float:
        return sum(price_of(meter, q) for (meter, _), q in self.lines.items())

    def by(self, *, depth: int, components: bool = True) -> dict[Labels, float]:
        """Dollars grouped by the first ``depth`` labels (and the component, first)."""
        grouped: defaultdict[Labels, float] = defaultdict(float)
        for (meter, labels), quantity in self.lines.items():
            key = labels[:depth]
            if components:
                key = (PRICES[meter].component, *key)
            grouped[key] += price_of(meter, quantity)
        return dict(grouped)

    def by_meter(self) -> dict[str, tuple[float, float]]:
        """meter -> (quantity, dollars)."""
        out: dict[str, tuple[float, float]] = {}
        for (meter, _), quantity in self.lines.items():
            q, _d = out.get(meter, (0.0, 0.0))
            out[meter] = (q + quantity, price_of(meter, q + quantity))
        return out


def price_of(meter: str, quantity: float) -> float:
    return PRICES[meter].usd_per_unit * quantity


def per_million(dollars: float, tasks: int) -> float:
    return dollars / tasks * 1e6


# --------------------------------------------------------------------------- alternatives


def step_functions_transitions(shape: str, tasks: int, runs: int = 1) -> int:
    """State transitions of the same work as one Step Functions Standard workflow per run
    with ``.sync`` Batch tasks: a Task state per task; a Parallel or Map state for each
    fan-out; a retry would add one per retry (none here)."""
    if shape == "chain":
        return tasks * runs
    if shape == "fan-out":
        return (tasks + 1) * runs  # start, Map, N iterations, end
    if shape == "diamond":
        per_run = tasks // runs
        return (per_run + 1) * runs  # a, Parallel, b c d, e
    raise ValueError(shape)


def step_functions_per_million(shape: str, tasks: int, runs: int = 1) -> float:
    transitions = step_functions_transitions(shape, tasks, runs)
    return per_million(price_of("stepfunctions.transitions", transitions), tasks)


def mwaa_per_million() -> float:
    return price_of("mwaa.hours", 24) / MWAA_TASKS_PER_DAY * 1e6


def price_table_rows() -> Iterable[tuple[str, str, str]]:
    for price in PRICES.values():
        amount = f"${price.usd:g} per {price.per:,.0f}" if price.per != 1 else f"${price.usd:g}"
        yield (
            price.component,
            f"{amount} {price.unit}" + ("s" if price.per != 1 else ""),
            (price.note),
        )
