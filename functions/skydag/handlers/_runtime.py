"""What every skydag Lambda handler shares, set up once per container.

- The environment, validated by a Pydantic model at cold start: a missing or malformed
  variable stops the function's init with an error naming it, so a misconfigured
  function never handles (and half-handles) an event.
- Powertools' Logger (JSON; the engine's ``skydag.*`` loggers propagate into it, so their
  lines carry the same keys), Metrics (EMF, namespace ``POWERTOOLS_METRICS_NAMESPACE``,
  default ``skydag``) and Tracer (X-Ray; only built when tracing is on).
- The services, built on first use and kept while the container is warm. boto3, PynamoDB
  and the engine are imported then, not when a handler module is imported.
- How a record's failure is classified: dropped (it can never succeed; retrying it would
  only poison the queue) or retried (it may succeed later).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skydag.settings import Settings

if TYPE_CHECKING:
    from skydag.service.dag_loader import DagLoaderService
    from skydag.service.scheduler_service import SchedulerService

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "skydag"

# The logger is named "skydag" whatever POWERTOOLS_SERVICE_NAME says: the engine logs to
# "skydag.*" loggers, which propagate into this one and so share its format and keys.
# No ``location`` key (the handler's source line, ~25 bytes a line): a line's message and
# keys say what happened, and an error's traceback says where. No ``timestamp`` (~40
# bytes): CloudWatch Logs stamps each line as it takes it (``@timestamp``).
logger = Logger(service="skydag", location=None, timestamp=None)
metrics = Metrics(namespace=NAMESPACE)
# The handlers that publish their metrics themselves (``flush_dimensioned``) leave
# ``log_metrics`` none to flush, which it would say on stderr, a log line a container.
warnings.filterwarnings("ignore", message="No application metrics to publish")

_TRUE = frozenset({"1", "true", "t", "y", "yes", "on"})


def _tracing_enabled() -> bool:
    """Powertools' own rule (POWERTOOLS_TRACE_DISABLED, outside Lambda, SAM/Chalice
    local), checked before a Tracer exists: even a disabled Tracer imports the X-Ray
    SDK, whose recorder builds two botocore clients at import (~0.7 s of cold start)."""
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in _TRUE:
        return False
    if not os.environ.get("LAMBDA_TASK_ROOT"):
        return False
    return not (os.environ.get("AWS_SAM_LOCAL") or os.environ.get("AWS_CHALICE_CLI_MODE"))


# Only botocore is patched (PynamoDB calls through it too): patch_all would import every
# library the X-Ray SDK knows how to patch that happens to be installed.
tracer: Tracer | None = (
    Tracer(service="skydag", patch_modules=("botocore",)) if _tracing_enabled() else None
)

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def traced(handler: HandlerT) -> HandlerT:
    """``Tracer.capture_lambda_handler`` when tracing is on; the handler itself otherwise."""
    if tracer is None:
        return handler
    return cast(HandlerT, tracer.capture_lambda_handler(handler))


# --------------------------------------------------------------------------- environment

_ARN = r"^arn:aws[a-z-]*:"


class HandlerEnvironment(BaseModel):
    """The variables every skydag function needs (the CDK stack sets them all)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    dags_table: str = Field(alias="SKYDAG_DAGS_TABLE", min_length=1)
    dag_versions_table: str = Field(alias="SKYDAG_DAG_VERSIONS_TABLE", min_length=1)
    runs_table: str = Field(alias="SKYDAG_RUNS_TABLE", min_length=1)
    task_instances_table: str = Field(alias="SKYDAG_TASK_INSTANCES_TABLE", min_length=1)
    task_state_table: str = Field(alias="SKYDAG_TASK_STATE_TABLE", min_length=1)
    dag_bucket: str = Field(alias="SKYDAG_DAG_BUCKET", min_length=1)
    dag_prefix: str = Field(alias="SKYDAG_DAG_PREFIX", default="dags/")
    event_bus: str = Field(alias="SKYDAG_EVENT_BUS", min_length=1)
    event_bus_arn: str = Field(alias="SKYDAG_EVENT_BUS_ARN", pattern=_ARN)
    schedule_group: str = Field(alias="SKYDAG_SCHEDULE_GROUP", default="skydag", min_length=1)
    scheduler_role_arn: str = Field(alias="SKYDAG_SCHEDULER_ROLE_ARN", pattern=_ARN)
    # Where the dag loader's forwarding rules deliver (the stack sets both).
    scheduler_queue_arn: str | None = Field(
        alias="SKYDAG_SCHEDULER_QUEUE_ARN", default=None, pattern=_ARN
    )
    event_delivery_dlq_arn: str | None = Field(
        alias="SKYDAG_EVENT_DELIVERY_DLQ_ARN", default=None, pattern=_ARN
    )


class HandlerConfigError(RuntimeError):
    """The function's environment is incomplete or malformed; the message names what."""


def _explain(error: ValidationError) -> str:
    problems = []
    for detail in error.errors():
        name = str(detail["loc"][0]) if detail["loc"] else "environment"
        kind = detail["type"]
        if kind == "missing":
            problems.append(f"{name} is not set")
        elif kind == "string_too_short":
            problems.append(f"{name} is empty")
        elif kind == "string_pattern_mismatch":
            problems.append(f"{name} must be an ARN (arn:aws:...), got {detail['input']!r}")
        else:
            problems.append(f"{name}: {detail['msg']}")
    return "skydag function environment: " + "; ".join(problems)


def validate_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings for this function, or HandlerConfigError naming every bad variable."""
    env = dict(os.environ if environ is None else environ)
    try:
        HandlerEnvironment.model_validate(env)
    except ValidationError as error:
        raise HandlerConfigError(_explain(error)) from None
    return Settings.from_env(env)


# --------------------------------------------------------------------------- services

ServiceFactory = Callable[[Settings], "SchedulerService"]


class _Runtime:
    """The per-container state: settings from the cold start, services built once."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.service: SchedulerService | None = None
        self.dag_loader: DagLoaderService | None = None
        self.s3: Any = None
        self.service_factory: ServiceFactory | None = None


_runtime = _Runtime()


def cold_start(handler: str) -> Settings:
    """Validate the environment (raising at init when it is wrong) and name the handler
    in every log line. Called once, when a handler module is imported."""
    _runtime.settings = validate_environment()
    logger.append_keys(handler=handler)
    return _runtime.settings


# Keys that every line of one function's log group shares (its log group already names
# them): the Lambda context's, ~140 bytes a line, and the service's (always "skydag"),
# dropped. The request id and cold start stay.
_REDUNDANT_CONTEXT_KEYS = ("function_name", "function_arn", "function_memory_size", "service")


def start_invocation(handler: str) -> None:
    """Name the handler in this invocation's log lines, without what the group says."""
    logger.append_keys(handler=handler)
    logger.remove_keys(list(_REDUNDANT_CONTEXT_KEYS))


def settings() -> Settings:
    if _runtime.settings is None:
        _runtime.settings = validate_environment()
    return _runtime.settings


def scheduler_service() -> SchedulerService:
    """The scheduler service (repositories, AWS targets, events, timers), built once."""
    if _runtime.service is None:
        factory = _runtime.service_factory or _build_scheduler_service
        _runtime.service = factory(settings())
    return _runtime.service


def _build_scheduler_service(config: Settings) -> SchedulerService:
    from skydag.service.factory import build_service

    return build_service(config)


def dag_loader_service() -> DagLoaderService:
    """The DAG loader: repositories, file records, EventBridge Scheduler and the bus."""
    if _runtime.dag_loader is None:
        from skydag.adapters.events import EventBridgeEventSink
        from skydag.adapters.schedules import EventBridgeSchedules
        from skydag.ports import SystemClock
        from skydag.service.dag_loader import DagLoaderService
        from skydag.sources import SCHEDULER_SOURCE
        from skydag.store.dag_files import DagFileRepository, bind_dag_files
        from skydag.store.models import bind_models
        from skydag.store.repositories import Repositories

        config = settings()
        bind_models(config)
        bind_dag_files(config)
        clock = SystemClock()
        forwarding = []
        if config.scheduler_queue_arn and config.event_delivery_dlq_arn:
            from skydag.adapters.forwarding import EventBridgeForwardingRules
            from skydag.signals.forwarding import FAMILIES

            forwarding = [EventBridgeForwardingRules(config, family) for family in FAMILIES]
        _runtime.dag_loader = DagLoaderService(
            Repositories(),
            DagFileRepository(),
            EventBridgeSchedules(config, clock=clock),
            EventBridgeEventSink(config),
            clock,
            ticks=EventBridgeEventSink(config, source=SCHEDULER_SOURCE),
            forwarding=forwarding,
            prefix=config.dag_prefix,
        )
    return _runtime.dag_loader


def s3_client() -> Any:
    if _runtime.s3 is None:
        from skydag.adapters import aws_client

        _runtime.s3 = aws_client("s3", settings())
    return _runtime.s3


def reset(*, service_factory: ServiceFactory | None = None) -> None:
    """Forget the built services, clients and unpublished metrics (tests: each runs in a
    fresh moto account, and a count one test made outside a handler must not be published
    by the next test's invocation), and optionally build the scheduler service with
    ``service_factory`` from now on."""
    metrics.clear_metrics()
    _dimensioned.clear()
    _runtime.service = None
    _runtime.dag_loader = None
    _runtime.s3 = None
    _runtime.service_factory = service_factory
    _runtime.settings = None


# --------------------------------------------------------------------------- failures


def _permanent_errors() -> tuple[type[BaseException], ...]:
    """Errors no retry can fix: the event is malformed, oversized or names something that
    does not exist. Imported lazily: the router pulls in the scheduler service."""
    from skydag.service.router import BadEvent
    from skydag.service.scheduler_service import DagNotFound
    from skydag.store.errors import NotFound

    return (BadEvent, DagNotFound, NotFound)


def _conflict_errors() -> tuple[type[BaseException], ...]:
    from skydag.store.errors import ConflictError

    return (ConflictError,)


def handle_record(work: Callable[[], object], *, what: str) -> None:
    """Run one record's work: a permanent failure is logged (what and where), counted as
    BadEvents and dropped; anything else is logged and re-raised, so the batch reports the
    record as failed and its event source delivers it again."""
    try:
        work()
    except _permanent_errors() as error:
        logger.warning(
            "dropped bad event", extra={"what": what, "error": str(error), "retry": False}
        )
        count("BadEvents")
    except _conflict_errors() as error:
        # A race lost more often than the service's own re-decide loop allows: retry the
        # whole record later, when the competing writer is done.
        logger.warning(
            "conflict; will retry", extra={"what": what, "error": str(error), "retry": True}
        )
        count("Conflicts")
        raise
    except Exception as error:
        logger.exception(
            "record failed; will retry",
            extra={"what": what, "error": f"{type(error).__name__}: {error}", "retry": True},
        )
        raise


@contextmanager
def log_keys(**keys: Any) -> Iterator[None]:
    """Append the non-empty ``keys`` (dag, run, task, ...) to every log line inside."""
    present = {name: value for name, value in keys.items() if value not in (None, "")}
    with logger.append_context_keys(**present):
        yield


# --------------------------------------------------------------------------- metrics

# Counts with a dimension are collected per invocation and published at its end with the
# invocation's other metrics: Metrics' dimensions apply to all its metrics, so each such
# count is a directive of its own, in the same EMF document where their keys agree.
_dimensioned: Counter[tuple[str, str, str]] = Counter()


def count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def count_by(name: str, dimension: str, dimension_value: str, value: int = 1) -> None:
    _dimensioned[(name, dimension, dimension_value)] += value


def flush_dimensioned() -> None:
    """Publish this invocation's metrics (call once, at its end, before ``log_metrics``
    would): as few EMF documents as their keys allow (``merged_emf``), each a log line
    CloudWatch Logs bills by its bytes: a job's end told at once is one, not two."""
    documents: list[dict[str, Any]] = []
    if metrics.metric_set:
        documents.append(dict(metrics.serialize_metric_set()))
    service = os.environ.get("POWERTOOLS_SERVICE_NAME")
    for (name, dimension, dimension_value), value in sorted(_dimensioned.items()):
        dimensions = {dimension: dimension_value, **({"service": service} if service else {})}
        metric = {"Unit": MetricUnit.Count.value, "StorageResolution": 60, "Value": [value]}
        emf = metrics.serialize_metric_set(metrics={name: metric}, dimensions=dimensions)
        documents.append(dict(emf))
    _dimensioned.clear()
    metrics.clear_metrics()
    if is_metrics_disabled():
        return
    for document in merged_emf(documents):
        print(json.dumps(document, separators=(",", ":")))


def merged_emf(documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """EMF documents merged into as few as CloudWatch reads the same: one takes another's
    metric directives and values where no key of theirs (a dimension's, a metric's) is in
    both with different values, and no metric is in both."""
    merged: list[dict[str, Any]] = []
    for document in documents:
        directives = document["_aws"]["CloudWatchMetrics"]
        values = {key: value for key, value in document.items() if key != "_aws"}
        names = {m["Name"] for d in directives for m in d["Metrics"]}
        for into in merged:
            into_names = {
                m["Name"] for d in into["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
            }
            agree = all(into.get(key, value) == value for key, value in values.items())
            if agree and not names & into_names:
                into["_aws"]["CloudWatchMetrics"].extend(directives)
                into.update(values)
                break
        else:
            merged.append(
                {**document, "_aws": {**document["_aws"], "CloudWatchMetrics": [*directives]}}
            )
    return merged


def record_delay(since: datetime | None, now: datetime | None = None) -> None:
    """SchedulingDelay: milliseconds from when the event happened to its handling."""
    if since is None:
        return
    # Whole milliseconds: the events' times are no finer (EventBridge's ``time`` is to the
    # second), and a float's 17 digits were ~15 log bytes a record for nothing.
    delay = round(((now or datetime.now(UTC)) - since).total_seconds() * 1000)
    if delay >= 0:
        metrics.add_metric(name="SchedulingDelay", unit=MetricUnit.Milliseconds, value=delay)


def event_time(value: Any) -> datetime | None:
    """An event's time: ISO 8601 (EventBridge's ``time``) or epoch seconds; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None
