"""How events reach skydag's functions: the stack's rules, queues, event sources and
asynchronous invocations, as plain data.

The CDK app (``infra/skydag_infra/construct.py``) builds the deployed stack from these very
objects and the local cloud (``skydag.localcloud``) delivers with them, so the two cannot
drift apart. Neither CDK nor boto3 is imported here; durations are ``timedelta``.

Where events come from and why each rule exists:

On the skydag bus (everything there is meant for the scheduler):
- ``skydag.command``: people and the CLI ("Trigger DAG", "Cancel Run", ...). All of them:
  a malformed command must reach the scheduler to be reported, not vanish in a filter.
- ``skydag.scheduler``: EventBridge Scheduler's "Schedule Tick" and "Timer Fired".
- ``lambda``: Lambda destination events ("Lambda Function Invocation Result - ...") of the
  functions skydag invoked; users point their functions' async destinations at this bus.
- anything else is a user signal;
- skydag's own notifications (source ``skydag``: "DagRun State Change", ...), so that one
  DAG can be triggered by another's outcome: not a rule of the stack but up to
  ``MAX_SKYDAG_EVENT_RULES`` rules the dag loader keeps in step with what the DAGs
  subscribe to (``skydag_event_rule_names``), since nearly all of them are for nobody.

On the default bus (where AWS services put their events):
- S3 "Object Created"/"Object Deleted" under the DAG prefix -> the dag loader;
- each service's native state-change event, narrowed to skydag's jobs (names start with
  ``skydag-``) and to the statuses the engine acts on -> the scheduler, invoked directly
  (asynchronously: Lambda's own retries, then ``JOB_EVENTS_DLQ``), as are Lambda results;
- every five minutes -> the reconciler;
- AWS events the loaded DAGs subscribe to -> the scheduler queue: not a rule of the
  stack but up to ``MAX_AWS_EVENT_RULES`` rules the dag loader keeps in step with the
  DAGs (``aws_event_rule_names``).

The rules whose patterns come from the target modules (``skydag.targets.aws.*``: source,
detail-type, statuses) are built on first use, since those modules load botocore and
pydantic; everything else is built at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from skydag import sources

# skydag's own sources (defined in ``skydag.sources``), for whoever reads the rules.
COMMAND_SOURCE = sources.COMMAND_SOURCE
SCHEDULER_SOURCE = sources.SCHEDULER_SOURCE
SKYDAG_SOURCE = sources.SKYDAG_SOURCE

# Every job, step, execution and task skydag starts is named ``skydag-<dag>-<task>-<token>``
# (``skydag.targets.base.DispatchRequest.job_name``; a test keeps the two equal).
JOB_NAME_PREFIX = "skydag-"
# Every Batch job, ECS task and EMR Serverless job run skydag starts carries this tag, its
# value the skydag bus's name (unique per account and region): the functions may stop and
# tag only what carries it (``aws:ResourceTag``), never another deployment's jobs or
# anyone else's.
DEPLOYMENT_TAG = "skydag:deployment"

# An EventBridge event pattern, as JSON (lists, not tuples: it equals the template's).
Pattern = Mapping[str, Any]


class Bus(StrEnum):
    """The event bus a rule listens on."""

    SKYDAG = "skydag"  # the stack's own bus (its name is a construct prop)
    DEFAULT = "default"  # the account's default bus, where AWS services put their events


class StartingPosition(StrEnum):
    LATEST = "LATEST"
    TRIM_HORIZON = "TRIM_HORIZON"


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A Lambda function of the stack; ``id`` is its CDK construct id."""

    id: str
    handler: str
    description: str
    timeout: timedelta
    memory_mb: int = 512


@dataclass(frozen=True, slots=True)
class Redrive:
    """Where SQS moves a message received ``max_receive_count`` times without success."""

    dead_letter_queue: QueueSpec
    max_receive_count: int


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """An SQS queue of the stack; ``id`` is its CDK construct id. None: SQS's default
    (``SQS_DEFAULT_VISIBILITY_TIMEOUT``, ``SQS_DEFAULT_RETENTION``), left out of the
    template."""

    id: str
    visibility_timeout: timedelta | None = None
    retention: timedelta | None = None
    redrive: Redrive | None = None


@dataclass(frozen=True, slots=True)
class RuleTarget:
    """A rule's target and how EventBridge delivers to it: ``retry_attempts`` retries
    within ``max_event_age``, then the event goes to ``dead_letter_queue``."""

    resource: QueueSpec | FunctionSpec
    retry_attempts: int
    max_event_age: timedelta
    dead_letter_queue: QueueSpec


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """An EventBridge rule; ``id`` is its CDK construct id. It matches ``pattern`` or fires
    every ``schedule_rate``, never both."""

    id: str
    bus: Bus
    target: RuleTarget
    # Patterns are JSON objects (unhashable): equality compares them, the hash does not.
    pattern: Pattern | None = field(default=None, hash=False)
    schedule_rate: timedelta | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        if (self.pattern is None) == (self.schedule_rate is None):
            raise ValueError(f"rule {self.id}: give a pattern or a schedule rate, not both")


@dataclass(frozen=True, slots=True)
class SqsEventSourceSpec:
    """Lambda polling a queue: batches of up to ``batch_size`` messages, gathered for at
    most ``max_batching_window``."""

    queue: QueueSpec
    function: FunctionSpec
    batch_size: int
    max_batching_window: timedelta
    report_batch_item_failures: bool


@dataclass(frozen=True, slots=True)
class StreamEventSourceSpec:
    """Lambda reading a DynamoDB stream (every table that has one): a failing batch is
    halved (``bisect_batch_on_error``) and retried ``retry_attempts`` times while its
    records are younger than ``max_record_age``; what still fails is described in a
    message to ``on_failure``."""

    function: FunctionSpec
    starting_position: StartingPosition
    batch_size: int
    bisect_batch_on_error: bool
    retry_attempts: int
    max_record_age: timedelta
    report_batch_item_failures: bool
    parallelization_factor: int
    on_failure: QueueSpec
    # Per table (its settings field, as ``"runs"``): the event filters a record must match
    # one of to be delivered at all (Lambda's ``FilterCriteria``; a record filtered out
    # costs no invocation). A table not named here has every record delivered.
    filters: Mapping[str, tuple[Pattern, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AsyncInvokeSpec:
    """Lambda's own retries of an asynchronous invocation of ``function`` (as EventBridge
    invokes it); what still fails after them, or is older than ``max_event_age``, goes to
    ``on_failure``."""

    function: FunctionSpec
    retry_attempts: int
    max_event_age: timedelta
    on_failure: QueueSpec


# --- functions ---------------------------------------------------------------------------

RECONCILE_EVERY = timedelta(minutes=5)

DAG_LOADER = FunctionSpec(
    "DagLoader",
    "skydag.handlers.dag_loader.lambda_handler",
    "Validates and stores DAG files uploaded to S3; keeps their schedules",
    timedelta(seconds=60),
)
SCHEDULER = FunctionSpec(
    "Scheduler",
    "skydag.handlers.scheduler.lambda_handler",
    "Job state changes (invoked by the rules); signals, commands, ticks, timers (SQS)",
    timedelta(seconds=60),
)
STREAM_PROCESSOR = FunctionSpec(
    "StreamProcessor",
    "skydag.handlers.stream_processor.lambda_handler",
    "Reacts to run and task-instance changes (DynamoDB Streams): dispatch, downstream",
    timedelta(seconds=120),
)
RECONCILER = FunctionSpec(
    "Reconciler",
    "skydag.handlers.reconciler.lambda_handler",
    "Due retries and timeouts, interrupted dispatches, jobs whose events were lost",
    # Under the reconcile period, so two reconciles rarely overlap.
    timedelta(seconds=240),
)
FUNCTIONS = (DAG_LOADER, SCHEDULER, STREAM_PROCESSOR, RECONCILER)

# --- queues ------------------------------------------------------------------------------

SQS_DEFAULT_VISIBILITY_TIMEOUT = timedelta(seconds=30)
SQS_DEFAULT_RETENTION = timedelta(days=4)
DLQ_RETENTION = timedelta(days=14)  # the SQS maximum: time to notice, fix and redrive

# Dead-letter queues: every asynchronous path ends in one (and one alarm each).
DAG_LOADER_DLQ = QueueSpec(  # S3 event delivery and the loader's own async failures
    "DagLoaderDlq", retention=DLQ_RETENTION
)
EVENT_DELIVERY_DLQ = QueueSpec(  # rules -> scheduler (queue or function) delivery failures
    "EventDeliveryDlq", retention=DLQ_RETENTION
)
SCHEDULER_DLQ = QueueSpec(  # scheduler-queue messages that kept failing
    "SchedulerDlq", retention=DLQ_RETENTION
)
JOB_EVENTS_DLQ = QueueSpec(  # job state changes the scheduler kept failing on
    "JobEventsDlq", retention=DLQ_RETENTION
)
STREAM_DLQ = QueueSpec(  # stream batches that kept failing
    "StreamDlq", retention=DLQ_RETENTION
)
RECONCILER_DLQ = QueueSpec(  # reconcile ticks that kept failing
    "ReconcilerDlq", retention=DLQ_RETENTION
)
DEAD_LETTER_QUEUES = (
    DAG_LOADER_DLQ,
    EVENT_DELIVERY_DLQ,
    SCHEDULER_DLQ,
    JOB_EVENTS_DLQ,
    STREAM_DLQ,
    RECONCILER_DLQ,
)

SCHEDULER_QUEUE = QueueSpec(
    "SchedulerQueue",
    # Six times the function timeout, as Lambda's SQS event source recommends.
    visibility_timeout=SCHEDULER.timeout * 6,
    redrive=Redrive(SCHEDULER_DLQ, max_receive_count=5),
)
QUEUES = (*DEAD_LETTER_QUEUES, SCHEDULER_QUEUE)

# --- event sources and asynchronous invocations ------------------------------------------

SCHEDULER_EVENT_SOURCE = SqsEventSourceSpec(
    SCHEDULER_QUEUE,
    SCHEDULER,
    batch_size=10,
    # No wait: a job's end is on the latency path to the next dispatch. Under load the
    # batches still fill (the pollers take what is in the queue, up to batch_size); a
    # one-second window saved few invocations and added up to a second to every hop.
    max_batching_window=timedelta(0),
    report_batch_item_failures=True,
)


def _run_change_filters() -> tuple[Pattern, ...]:
    """The run records the stream processor acts on (``engine.scheduler.run_change``): a
    run that starts (running, from queued or inserted so) or ends (in a finished state; a
    finished run written again in the same state is judged by the handler). Most run
    writes leave the state alone (a slot taken, a finish counted) and are not delivered."""
    from skydag.engine.states import FINISHED_RUN_STATES, RunState

    running, queued = [RunState.RUNNING.value], [RunState.QUEUED.value]
    ended = sorted(state.value for state in FINISHED_RUN_STATES)
    return (
        {"dynamodb": {"NewImage": {"state": {"S": ended}}}},
        {"dynamodb": {"NewImage": {"state": {"S": running}}, "OldImage": {"state": {"S": queued}}}},
        {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"state": {"S": running}}}},
    )


def _task_change_filters() -> tuple[Pattern, ...]:
    """The task-instance records the stream processor acts on: every one but a task
    written pending that was pending or did not exist (a run's tasks created, a for_each's
    instances, an upstream's report to a task still waiting): nothing reacts to those
    (``ChangeReactions.on_task_changed``), and a run of N tasks spares N records at its
    trigger; and but a write marked ``unheard`` (engine/reactions.py: its writer did what
    its record would, as a chain task's ``→ queued`` and ``running`` writes by the
    invocation that starts the job). A removed item (no new image) is not delivered either."""
    from skydag.engine.states import TaskState

    pending = [TaskState.PENDING.value]
    not_pending = [{"anything-but": pending}]
    # ``exists`` matches leaves only: the attribute's typed value, as Lambda's docs show.
    heard = {"unheard": {"BOOL": [{"exists": False}]}}
    return (
        {"dynamodb": {"NewImage": {"state": {"S": not_pending}, **heard}}},
        {
            "dynamodb": {
                "NewImage": {"state": {"S": pending}, **heard},
                "OldImage": {"state": {"S": not_pending}},
            }
        },
    )


STREAM_EVENT_SOURCE = StreamEventSourceSpec(
    STREAM_PROCESSOR,
    starting_position=StartingPosition.LATEST,
    batch_size=25,
    # A poison record is isolated by halving, then sent to the DLQ after the bounded
    # retries instead of blocking its shard for 24 hours.
    bisect_batch_on_error=True,
    retry_attempts=5,
    max_record_age=timedelta(hours=6),
    report_batch_item_failures=True,
    # One batch per shard at a time keeps each item's changes in order.
    parallelization_factor=1,
    on_failure=STREAM_DLQ,
    filters={"runs": _run_change_filters(), "task_instances": _task_change_filters()},
)

# How long an undelivered event stays worth delivering: a DAG file, a command or a job's
# state change is not superseded by anything that follows.
EVENT_MAX_AGE = timedelta(hours=6)
# X-Ray on the functions unless a deployment asks for it (context skydag:tracing): the
# stack's default, and what the cost model prices.
TRACING_BY_DEFAULT = False
# Lambda's own log lines (platform.start and platform.report, ~650 bytes an invocation)
# unless a deployment asks for them (context skydag:systemLogLevel): at a few invocations
# per task they cost more than everything skydag logs itself, and the functions' Duration,
# Errors and Throttles metrics say the same. WARN keeps what Lambda reports as a problem
# (a timeout, a crashed runtime). The cost model prices this default.
SYSTEM_LOG_LEVEL_BY_DEFAULT = "WARN"
SYSTEM_LOG_LEVELS = ("DEBUG", "INFO", "WARN")

DAG_LOADER_ASYNC_INVOKE = AsyncInvokeSpec(
    DAG_LOADER, retry_attempts=2, max_event_age=EVENT_MAX_AGE, on_failure=DAG_LOADER_DLQ
)
# A job's end is on every task's path: the rules invoke the scheduler with it directly, so
# that it costs no SQS request (a send, a receive and a delete: ~$1.2 a million tasks).
# Commands, signals and ticks keep the queue, whose policy admits only the stack's rules
# and the operators (docs/security.md); a run's worth of them, not a task's.
SCHEDULER_ASYNC_INVOKE = AsyncInvokeSpec(
    SCHEDULER, retry_attempts=2, max_event_age=EVENT_MAX_AGE, on_failure=JOB_EVENTS_DLQ
)
RECONCILER_ASYNC_INVOKE = AsyncInvokeSpec(
    RECONCILER,
    retry_attempts=2,
    # A tick older than the period is superseded by the next one.
    max_event_age=RECONCILE_EVERY,
    on_failure=RECONCILER_DLQ,
)
# The functions EventBridge rules invoke asynchronously.
ASYNC_INVOKES = (DAG_LOADER_ASYNC_INVOKE, SCHEDULER_ASYNC_INVOKE, RECONCILER_ASYNC_INVOKE)

# --- rules -------------------------------------------------------------------------------

TO_SCHEDULER_QUEUE = RuleTarget(
    SCHEDULER_QUEUE,
    retry_attempts=8,
    max_event_age=EVENT_MAX_AGE,
    dead_letter_queue=EVENT_DELIVERY_DLQ,
)
TO_SCHEDULER = RuleTarget(
    SCHEDULER, retry_attempts=8, max_event_age=EVENT_MAX_AGE, dead_letter_queue=EVENT_DELIVERY_DLQ
)
TO_DAG_LOADER = RuleTarget(
    DAG_LOADER, retry_attempts=8, max_event_age=EVENT_MAX_AGE, dead_letter_queue=DAG_LOADER_DLQ
)
TO_RECONCILER = RuleTarget(
    RECONCILER,
    retry_attempts=2,
    # A tick older than the period is superseded by the next one.
    max_event_age=RECONCILE_EVERY,
    dead_letter_queue=RECONCILER_DLQ,
)


@dataclass(frozen=True, slots=True)
class ForwardingSpec:
    """Rules the dag loader keeps at run time on ``bus``, named
    ``<skydag bus>-<family>-<n>``, whose patterns are exactly what the loaded DAGs
    subscribe to among the events of that family (``skydag.signals.forwarding``). They
    deliver straight to ``FORWARDING_TARGET``, as the stack's own rules do: the queue
    stays the one way into the scheduler, and no role is passed. Their names are fixed so
    that IAM and the queue policies can name each one."""

    family: str
    bus: Bus
    max_rules: int

    def rule_names(self, bus_name: str) -> tuple[str, ...]:
        """The rules of the stack whose bus is ``bus_name``, in the order they fill."""
        return tuple(f"{bus_name}-{self.family}-{n}" for n in range(1, self.max_rules + 1))

    def event_bus_name(self, bus_name: str) -> str:
        """The name of the bus the rules are on (``bus_name``: the skydag bus's)."""
        return bus_name if self.bus is Bus.SKYDAG else Bus.DEFAULT.value

    def rule_resource_names(self, bus_name: str) -> tuple[str, ...]:
        """The rules' ARN resource names: ``<name>`` on the default bus, ``<bus>/<name>``
        on another (``arn:aws:events:<region>:<account>:rule/<resource name>``)."""
        if self.bus is Bus.DEFAULT:
            return self.rule_names(bus_name)
        return tuple(f"{bus_name}/{name}" for name in self.rule_names(bus_name))


# Where every forwarding rule delivers, and how (the settings name this queue and its DLQ).
FORWARDING_TARGET = TO_SCHEDULER_QUEUE
MAX_AWS_EVENT_RULES = 5
MAX_SKYDAG_EVENT_RULES = 5
# AWS service events that DAGs subscribe to (``on: [{source: [aws.s3], ...}]``), on the
# default bus where the services put them.
AWS_EVENT_FORWARDING = ForwardingSpec("aws-events", Bus.DEFAULT, MAX_AWS_EVENT_RULES)
# skydag's own notifications (source ``skydag``: "Task Instance State Change", ...) that
# DAGs subscribe to: put on every task transition, almost always for nobody, so only the
# subscribed ones go to the scheduler (``SIGNALS_RULE`` leaves them out).
SKYDAG_EVENT_FORWARDING = ForwardingSpec("skydag-events", Bus.SKYDAG, MAX_SKYDAG_EVENT_RULES)
FORWARDING = (AWS_EVENT_FORWARDING, SKYDAG_EVENT_FORWARDING)


def aws_event_rule_names(bus_name: str) -> tuple[str, ...]:
    """The default-bus rules forwarding subscribed AWS events, in the order they fill."""
    return AWS_EVENT_FORWARDING.rule_names(bus_name)


def skydag_event_rule_names(bus_name: str) -> tuple[str, ...]:
    """The skydag-bus rules forwarding subscribed skydag events, in the order they fill."""
    return SKYDAG_EVENT_FORWARDING.rule_names(bus_name)


COMMANDS_RULE = RuleSpec(
    "CommandsRule", Bus.SKYDAG, TO_SCHEDULER_QUEUE, pattern={"source": [COMMAND_SOURCE]}
)
SCHEDULER_EVENTS_RULE = RuleSpec(
    "SchedulerEventsRule",
    Bus.SKYDAG,
    TO_SCHEDULER_QUEUE,
    pattern={
        "source": [SCHEDULER_SOURCE],
        "detail-type": [sources.SCHEDULE_TICK, sources.TIMER_FIRED],
    },
)
# A plain EventBridge rule, not an EventBridge Scheduler schedule: it needs no role of its
# own, and it stays out of the schedule group that the dag loader owns (and prunes) for
# DAG schedules and timers.
RECONCILE_RULE = RuleSpec(
    "ReconcileRule",
    Bus.DEFAULT,
    TO_RECONCILER,
    schedule_rate=RECONCILE_EVERY,
    description="skydag: reconcile running jobs",
)

# Built on first use from the target modules (see ``_target_rules``).
LAMBDA_RESULTS_RULE: RuleSpec
SIGNALS_RULE: RuleSpec
BATCH_JOB_STATE_RULE: RuleSpec
EMR_STEP_STATUS_RULE: RuleSpec
EMR_SERVERLESS_JOB_RUN_RULE: RuleSpec
STEP_FUNCTIONS_EXECUTION_RULE: RuleSpec
ECS_TASK_STATE_RULE: RuleSpec
_TARGET_RULES = (
    "LAMBDA_RESULTS_RULE",
    "SIGNALS_RULE",
    "BATCH_JOB_STATE_RULE",
    "EMR_STEP_STATUS_RULE",
    "EMR_SERVERLESS_JOB_RUN_RULE",
    "STEP_FUNCTIONS_EXECUTION_RULE",
    "ECS_TASK_STATE_RULE",
)


def skydag_bus_rules() -> tuple[RuleSpec, ...]:
    """The rules on the skydag bus; all feed the scheduler (Lambda results directly, the
    others through its queue)."""
    return (
        COMMANDS_RULE,
        SCHEDULER_EVENTS_RULE,
        *_target_rules("LAMBDA_RESULTS_RULE", "SIGNALS_RULE"),
    )


def job_event_rules() -> tuple[RuleSpec, ...]:
    """The services' state changes on the default bus -> the scheduler, invoked."""
    return _target_rules(
        "BATCH_JOB_STATE_RULE",
        "EMR_STEP_STATUS_RULE",
        "EMR_SERVERLESS_JOB_RUN_RULE",
        "STEP_FUNCTIONS_EXECUTION_RULE",
        "ECS_TASK_STATE_RULE",
    )


def dag_files_rule(dag_bucket: str, dag_prefix: str) -> RuleSpec:
    """S3 events for DAG files in ``dag_bucket`` under ``dag_prefix`` -> the dag loader."""
    return RuleSpec(
        "DagFilesRule",
        Bus.DEFAULT,
        TO_DAG_LOADER,
        pattern=dag_file_pattern(dag_bucket, validate_dag_prefix(dag_prefix)),
        description="skydag: DAG files created or deleted under the DAG prefix",
    )


def rules(dag_bucket: str, dag_prefix: str) -> tuple[RuleSpec, ...]:
    """Every rule of the stack whose DAG files are in ``dag_bucket`` under ``dag_prefix``."""
    return (
        dag_files_rule(dag_bucket, dag_prefix),
        *skydag_bus_rules(),
        *job_event_rules(),
        RECONCILE_RULE,
    )


def skydag_bus_patterns() -> dict[str, Pattern]:
    """Rule id -> pattern, for the rules on the skydag bus."""
    return {rule.id: _pattern_of(rule) for rule in skydag_bus_rules()}


def job_event_patterns() -> dict[str, Pattern]:
    """Rule id -> pattern, for the services' state changes on the default bus."""
    return {rule.id: _pattern_of(rule) for rule in job_event_rules()}


def scheduler_invoke_patterns() -> tuple[Pattern, ...]:
    """What may invoke the scheduler directly: the patterns of the rules whose target is
    the function itself (job state changes, Lambda results). The scheduler drops any other
    event so invoked (a command or a signal must come through the queue and its policy)."""
    invoking = (*skydag_bus_rules(), *job_event_rules())
    return tuple(_pattern_of(rule) for rule in invoking if rule.target is TO_SCHEDULER)


def invokes_scheduler(event: Mapping[str, Any]) -> bool:
    """Whether a rule that invokes the scheduler would deliver ``event`` (skydag's own
    EventBridge matcher, pure Python)."""
    from skydag.signals.patterns import matches

    return any(matches(pattern, event) for pattern in scheduler_invoke_patterns())


def dag_file_pattern(bucket_name: str, dag_prefix: str) -> Pattern:
    """S3 events for ``<prefix>*.yaml`` / ``<prefix>*.yml`` in the DAG bucket."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {
            "bucket": {"name": [bucket_name]},
            # A wildcard holds prefix and suffix at once (``*`` also matches ``/``).
            "object": {
                "key": [{"wildcard": f"{dag_prefix}*.yaml"}, {"wildcard": f"{dag_prefix}*.yml"}]
            },
        },
    }


def validate_dag_prefix(dag_prefix: str) -> str:
    """``dags/``: a folder, and no character the wildcard pattern would read as syntax."""
    if not dag_prefix.endswith("/") or dag_prefix.startswith("/"):
        raise ValueError(f"dag_prefix {dag_prefix!r}: expected a folder such as 'dags/'")
    if any(c in dag_prefix for c in "*\\"):
        raise ValueError(f"dag_prefix {dag_prefix!r}: '*' and '\\' are not allowed")
    return dag_prefix


def _pattern_of(rule: RuleSpec) -> Pattern:
    assert rule.pattern is not None, rule.id
    return rule.pattern


class _ServiceEvents(Protocol):
    """What a target module says about its service's state-change events."""

    SOURCE: str
    DETAIL_TYPE: str
    EVENT_STATUSES: tuple[str, ...]


def _job_event_rule(
    rule_id: str, service: _ServiceEvents, status_field: str, name_field: str | None
) -> RuleSpec:
    detail: dict[str, Any] = {status_field: list(service.EVENT_STATUSES)}
    if name_field is not None:
        detail[name_field] = [{"prefix": JOB_NAME_PREFIX}]
    pattern = {"source": [service.SOURCE], "detail-type": [service.DETAIL_TYPE], "detail": detail}
    return RuleSpec(rule_id, Bus.DEFAULT, TO_SCHEDULER, pattern=pattern)


def _build_target_rules() -> dict[str, RuleSpec]:
    from skydag.targets.aws import batch, ecs, emr, emr_serverless, lambda_, stepfunctions

    # A Lambda task's result is a job's end like the others (and anyone who may put on the
    # bus may put one already: ``docs/security.md``), so it too invokes the scheduler.
    lambda_results = RuleSpec(
        "LambdaResultsRule",
        Bus.SKYDAG,
        TO_SCHEDULER,
        pattern={"source": [lambda_.SOURCE], "detail-type": [lambda_.SUCCESS, lambda_.FAILURE]},
    )
    # skydag's own notifications reach the scheduler only through the forwarding rules
    # (``SKYDAG_EVENT_FORWARDING``), when a DAG subscribes to them.
    routed_sources = [COMMAND_SOURCE, SCHEDULER_SOURCE, lambda_.SOURCE, SKYDAG_SOURCE]
    return {
        "LAMBDA_RESULTS_RULE": lambda_results,
        # The complement of the three rules above and of the skydag-event forwarding
        # rules: each event is delivered once.
        "SIGNALS_RULE": RuleSpec(
            "SignalsRule",
            Bus.SKYDAG,
            TO_SCHEDULER_QUEUE,
            pattern={"source": [{"anything-but": routed_sources}]},
        ),
        "BATCH_JOB_STATE_RULE": _job_event_rule("BatchJobStateRule", batch, "status", "jobName"),
        "EMR_STEP_STATUS_RULE": _job_event_rule("EmrStepStatusRule", emr, "state", "name"),
        # EMR Serverless job-run events carry no name to filter on: the scheduler looks the
        # run id up (job index) and ignores runs that are not skydag's.
        "EMR_SERVERLESS_JOB_RUN_RULE": _job_event_rule(
            "EmrServerlessJobRunRule", emr_serverless, "state", None
        ),
        "STEP_FUNCTIONS_EXECUTION_RULE": _job_event_rule(
            "StepFunctionsExecutionRule", stepfunctions, "status", "name"
        ),
        "ECS_TASK_STATE_RULE": _job_event_rule("EcsTaskStateRule", ecs, "lastStatus", "startedBy"),
    }


def _target_rules(*names: str) -> tuple[RuleSpec, ...]:
    """The target rules of these attribute names, made module attributes on first use:
    ``setdefault`` keeps the first ones stored, so every reader, in any thread, gets the
    same objects."""
    namespace = globals()
    if not all(name in namespace for name in _TARGET_RULES):
        for name, rule in _build_target_rules().items():
            namespace.setdefault(name, rule)
    return tuple(namespace[name] for name in names)


if not TYPE_CHECKING:
    # Hidden from mypy, which would otherwise type every unknown attribute as a RuleSpec.

    def __getattr__(name: str) -> RuleSpec:
        if name not in _TARGET_RULES:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        (rule,) = _target_rules(name)
        return rule
