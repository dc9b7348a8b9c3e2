"""``Skydag``: the whole orchestrator as one construct, least privilege throughout.

What it makes (docs/deploy.md tells the story; docs/operations.md how the engine works):
- the DAG bucket (versioned, SSE-S3, TLS only, no public access, access logs, EventBridge on);
- the skydag event bus, whose policy keeps skydag's own sources to skydag's roles;
- one DynamoDB table per PynamoDB model, derived from ``skydag.store.models``;
- four functions (dag loader, scheduler, stream processor, reconciler), one role each;
- the wiring: S3 -> dag loader; the bus and the services' state changes -> SQS -> scheduler;
  DynamoDB Streams -> stream processor; a 5-minute rule -> reconciler;
- the EventBridge Scheduler group and the role its schedules assume;
- a dead-letter queue on every asynchronous path, alarms and a dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from skydag_infra import event_patterns, nag, observability
from skydag_infra.asset import LAMBDA_PYTHON, build_lambda_asset
from skydag_infra.permissions import DispatchTargets, PolicyBuilder, add_dispatch
from skydag_infra.tables import TableSpec, table_specs

# The newest Python runtime aws-cdk-lib offers (an AttributeError here if it does not know
# LAMBDA_PYTHON); the asset's wheels are built for the same version.
LAMBDA_RUNTIME: lambda_.Runtime = getattr(
    lambda_.Runtime, f"PYTHON_{LAMBDA_PYTHON.replace('.', '_')}"
)
SOURCE_ROOT = Path(__file__).resolve().parents[2]
RECONCILE_EVERY = Duration.minutes(5)
DLQ_RETENTION = Duration.days(14)  # the SQS maximum: time to notice, fix and redrive

_READ = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:ConditionCheckItem",
    # PynamoDB describes a table on first use.
    "dynamodb:DescribeTable",
]
_WRITE = [
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
]
# The functions EventBridge rules invoke asynchronously, and where their failures go.
_ASYNC_DLQ = {"DagLoader": "DagLoaderDlq", "Reconciler": "ReconcilerDlq"}


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    handler: str
    description: str
    timeout: Duration
    memory_mb: int = 512


FUNCTIONS: dict[str, FunctionSpec] = {
    "DagLoader": FunctionSpec(
        "skydag.handlers.dag_loader.lambda_handler",
        "Validates and stores DAG files uploaded to S3; keeps their schedules",
        Duration.seconds(60),
    ),
    "Scheduler": FunctionSpec(
        "skydag.handlers.scheduler.lambda_handler",
        "Signals, commands, ticks, timers and job state changes (SQS)",
        Duration.seconds(60),
    ),
    "StreamProcessor": FunctionSpec(
        "skydag.handlers.stream_processor.lambda_handler",
        "Reacts to run and task-instance changes (DynamoDB Streams): dispatch, downstream",
        Duration.seconds(120),
    ),
    "Reconciler": FunctionSpec(
        "skydag.handlers.reconciler.lambda_handler",
        "Due retries and timeouts, interrupted dispatches, jobs whose events were lost",
        # Under the 5-minute period, so two reconciles rarely overlap.
        Duration.seconds(240),
    ),
}


# The functions that run the scheduler service (and so dispatch); the dag loader does not.
ENGINE_FUNCTIONS = ("Scheduler", "StreamProcessor", "Reconciler")


class Skydag(Construct):
    """skydag in one construct. Every prop has a default that deploys a working skydag.

    ``dispatch`` lists what skydag may run jobs on (nothing by default: ``emit``, ``wait``
    and ``noop`` tasks still work). ``code`` replaces the Lambda asset (tests, prebuilt
    zips); by default it is built from the checkout at ``source_root`` (see asset.py).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        event_bus_name: str = "skydag",
        schedule_group_name: str = "skydag",
        dag_prefix: str = "dags/",
        dispatch: DispatchTargets | None = None,
        code: lambda_.Code | None = None,
        source_root: Path = SOURCE_ROOT,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        deletion_protection: bool = True,
        alarm_topic: sns.ITopic | None = None,
        log_level: str = "INFO",
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
    ) -> None:
        super().__init__(scope, construct_id)
        if log_level not in _LAMBDA_LOG_LEVELS:
            raise ValueError(f"log_level {log_level!r}: expected one of {list(_LAMBDA_LOG_LEVELS)}")
        self.dag_prefix = event_patterns.validate_dag_prefix(dag_prefix)
        self.dispatch = dispatch or DispatchTargets()
        self._removal_policy = removal_policy
        stack = cdk.Stack.of(self)

        self.dag_bucket = self._buckets()
        self.table_specs = table_specs()
        self.tables: dict[str, dynamodb.Table] = {
            spec.field: self._table(spec, deletion_protection) for spec in self.table_specs
        }
        self._event_bus_name = event_bus_name
        self.event_bus = events.EventBus(self, "EventBus", event_bus_name=event_bus_name)
        self.schedule_group = scheduler.ScheduleGroup(
            self,
            "ScheduleGroup",
            schedule_group_name=schedule_group_name,
            removal_policy=removal_policy,
        )
        self.scheduler_role = self._scheduler_role()

        # Dead-letter queues: every asynchronous path ends in one (and one alarm each).
        self.dead_letter_queues: dict[str, sqs.Queue] = {
            name: self._queue(name, retention=DLQ_RETENTION)
            for name in (
                "DagLoaderDlq",  # S3 event delivery and the loader's own async failures
                "EventDeliveryDlq",  # rules -> scheduler queue delivery failures
                "SchedulerDlq",  # scheduler-queue messages that kept failing
                "StreamDlq",  # stream batches that kept failing
                "ReconcilerDlq",  # reconcile ticks that kept failing
            )
        }
        self.scheduler_queue = self._queue(
            "SchedulerQueue",
            # Six times the function timeout, as Lambda's SQS event source recommends.
            visibility_timeout=Duration.seconds(FUNCTIONS["Scheduler"].timeout.to_seconds() * 6),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queues["SchedulerDlq"], max_receive_count=5
            ),
        )

        self.code = code or self._default_code(source_root)
        environment = self._environment(log_level)
        self.roles: dict[str, iam.Role] = {}
        self.functions: dict[str, lambda_.Function] = {
            name: self._function(name, spec, environment, log_level, log_retention)
            for name, spec in FUNCTIONS.items()
        }

        self._wire_dag_files()
        self._wire_scheduler()
        self._wire_streams()
        self._wire_reconciler()
        policies = self._policies(stack)
        self._bus_policy()

        dlqs = self.dead_letter_queues
        self.alarms = observability.create_alarms(
            self,
            functions=self.functions,
            dead_letter_queues=dlqs,
            stream_function=self.functions["StreamProcessor"],
            scheduler_queue=self.scheduler_queue,
            topic=alarm_topic,
        )
        self.dashboard = observability.create_dashboard(
            self,
            functions=self.functions,
            dead_letter_queues=dlqs,
            stream_function=self.functions["StreamProcessor"],
            scheduler_queue=self.scheduler_queue,
            # "<stack>-skydag": found by the stack's name, unique per construct.
            name=f"{stack.stack_name}-{construct_id.lower()}",
        )
        self._acknowledge(policies)

    # -- storage -------------------------------------------------------------------------

    def _buckets(self) -> s3.Bucket:
        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,  # the only one S3 log delivery takes
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=self._removal_policy,
        )
        bucket = s3.Bucket(
            self,
            "DagBucket",
            versioned=True,  # a run's DAG version can always be traced to its file
            # SSE-S3: free and keyless; a KMS key would cost while idle and add grants.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="dag-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(365)),
            ],
            removal_policy=self._removal_policy,
        )
        # EventBridge notifications on the bucket itself: ``event_bridge_enabled=True`` would
        # add a custom-resource Lambda to set what CloudFormation sets natively.
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )
        return bucket

    def _table(self, spec: TableSpec, deletion_protection: bool) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            spec.construct_id,
            partition_key=_attribute(spec.partition_key.name, spec.partition_key.type),
            sort_key=(
                _attribute(spec.sort_key.name, spec.sort_key.type) if spec.sort_key else None
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,  # nothing to pay while idle
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            stream=(
                dynamodb.StreamViewType(spec.stream_view_type) if spec.stream_view_type else None
            ),
            time_to_live_attribute=spec.ttl_attribute,
            deletion_protection=deletion_protection,
            removal_policy=self._removal_policy,
        )
        for index in spec.global_indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=_attribute(index.partition_key.name, index.partition_key.type),
                sort_key=(
                    _attribute(index.sort_key.name, index.sort_key.type) if index.sort_key else None
                ),
                projection_type=dynamodb.ProjectionType(index.projection),
                non_key_attributes=list(index.non_key_attributes) or None,
            )
        for index in spec.local_indexes:
            assert index.sort_key is not None  # a local index always has a sort key
            table.add_local_secondary_index(
                index_name=index.name,
                sort_key=_attribute(index.sort_key.name, index.sort_key.type),
                projection_type=dynamodb.ProjectionType(index.projection),
                non_key_attributes=list(index.non_key_attributes) or None,
            )
        return table

    def _queue(
        self,
        construct_id: str,
        *,
        retention: Duration | None = None,
        visibility_timeout: Duration | None = None,
        dead_letter_queue: sqs.DeadLetterQueue | None = None,
    ) -> sqs.Queue:
        return sqs.Queue(
            self,
            construct_id,
            # SSE-SQS: EventBridge can deliver to it (the AWS-managed KMS key refuses it).
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=retention,
            visibility_timeout=visibility_timeout,
            dead_letter_queue=dead_letter_queue,
            removal_policy=RemovalPolicy.DESTROY,  # messages, not records
        )

    # -- scheduling ----------------------------------------------------------------------

    def _scheduler_role(self) -> iam.Role:
        """The role EventBridge Scheduler assumes: it may only put events on the bus."""
        stack = cdk.Stack.of(self)
        role = iam.Role(
            self,
            "ScheduleRole",
            description="Assumed by skydag's schedules to put ticks and timers on the bus",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={
                    # Confused-deputy guard: only schedules of this account's skydag group.
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnEquals": {"aws:SourceArn": self.schedule_group.schedule_group_arn},
                },
            ),
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["events:PutEvents"], resources=[self.event_bus.event_bus_arn]
            )
        )
        return role

    @property
    def schedules_arn(self) -> str:
        """Every schedule in skydag's group (DAG schedules and one-shot timers)."""
        return cdk.Stack.of(self).format_arn(
            service="scheduler",
            resource="schedule",
            resource_name=f"{self.schedule_group.schedule_group_name}/*",
        )

    # -- functions -----------------------------------------------------------------------

    def _default_code(self, source_root: Path) -> lambda_.Code:
        asset = build_lambda_asset(source_root)
        return lambda_.Code.from_asset(
            str(asset.path),
            asset_hash=asset.hash,
            asset_hash_type=cdk.AssetHashType.CUSTOM,  # the build already hashed the inputs
            exclude=[".skydag-asset-hash"],
        )

    def _environment(self, log_level: str) -> dict[str, str]:
        """What ``skydag.settings.Settings.from_env`` reads (a test holds them equal)."""
        env = {spec.env_var: self.tables[spec.field].table_name for spec in self.table_specs}
        env.update(
            SKYDAG_DAG_BUCKET=self.dag_bucket.bucket_name,
            SKYDAG_DAG_PREFIX=self.dag_prefix,
            SKYDAG_EVENT_BUS=self.event_bus.event_bus_name,
            SKYDAG_EVENT_BUS_ARN=self.event_bus.event_bus_arn,
            SKYDAG_SCHEDULE_GROUP=self.schedule_group.schedule_group_name,
            SKYDAG_SCHEDULER_ROLE_ARN=self.scheduler_role.role_arn,
            POWERTOOLS_SERVICE_NAME="skydag",
            POWERTOOLS_METRICS_NAMESPACE=observability.METRICS_NAMESPACE,
            LOG_LEVEL=log_level,
        )
        return env

    def _function(
        self,
        name: str,
        spec: FunctionSpec,
        environment: Mapping[str, str],
        log_level: str,
        log_retention: logs.RetentionDays,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self, f"{name}Logs", retention=log_retention, removal_policy=self._removal_policy
        )
        # One role per function, no managed policy: each gets exactly its statements.
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"skydag {name} function",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            )
        )
        self.roles[name] = role
        return lambda_.Function(
            self,
            name,
            description=f"skydag: {spec.description}",
            code=self.code,
            handler=spec.handler,
            runtime=LAMBDA_RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            memory_size=spec.memory_mb,
            timeout=spec.timeout,
            role=role,
            environment=dict(environment),
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            # Lambda drops what Powertools would log below this: keep the two levels equal.
            application_log_level_v2=_LAMBDA_LOG_LEVELS[log_level],
            tracing=lambda_.Tracing.ACTIVE,
            **(self._async_invoke(name) if name in _ASYNC_DLQ else {}),
        )

    def _async_invoke(self, name: str) -> dict[str, Any]:
        """Lambda's own retries for the functions EventBridge invokes asynchronously; what
        still fails lands in the function's dead-letter queue."""
        return {
            "retry_attempts": 2,
            # A reconcile tick is superseded by the next one; a DAG file event is not.
            "max_event_age": RECONCILE_EVERY if name == "Reconciler" else Duration.hours(6),
            "on_failure": destinations.SqsDestination(self.dead_letter_queues[_ASYNC_DLQ[name]]),
        }

    # -- wiring --------------------------------------------------------------------------

    def _wire_dag_files(self) -> None:
        events.Rule(
            self,
            "DagFilesRule",
            description="skydag: DAG files created or deleted under the DAG prefix",
            event_pattern=_pattern(
                event_patterns.dag_file_pattern(self.dag_bucket.bucket_name, self.dag_prefix)
            ),
            targets=[
                targets.LambdaFunction(
                    self.functions["DagLoader"],
                    dead_letter_queue=self.dead_letter_queues["DagLoaderDlq"],
                    retry_attempts=8,
                    max_event_age=Duration.hours(6),
                )
            ],
        )

    def _wire_scheduler(self) -> None:
        def to_queue() -> targets.SqsQueue:
            return targets.SqsQueue(
                self.scheduler_queue,
                dead_letter_queue=self.dead_letter_queues["EventDeliveryDlq"],
                retry_attempts=8,
                max_event_age=Duration.hours(6),
            )

        for rule_id, pattern in event_patterns.skydag_bus_patterns().items():
            events.Rule(
                self,
                rule_id,
                event_bus=self.event_bus,
                event_pattern=_pattern(pattern),
                targets=[to_queue()],
            )
        for rule_id, pattern in event_patterns.job_event_patterns().items():
            events.Rule(self, rule_id, event_pattern=_pattern(pattern), targets=[to_queue()])
        self.functions["Scheduler"].add_event_source(
            event_sources.SqsEventSource(
                self.scheduler_queue,
                batch_size=10,
                # A short wait fills batches under load and adds at most a second when idle.
                max_batching_window=Duration.seconds(1),
                report_batch_item_failures=True,
            )
        )

    def _wire_streams(self) -> None:
        processor = self.functions["StreamProcessor"]
        for spec in self.table_specs:
            if spec.stream_view_type is None:
                continue
            processor.add_event_source(
                event_sources.DynamoEventSource(
                    self.tables[spec.field],
                    starting_position=lambda_.StartingPosition.LATEST,
                    batch_size=25,
                    # A poison record is isolated by halving, then sent to the DLQ after the
                    # bounded retries instead of blocking its shard for 24 hours.
                    bisect_batch_on_error=True,
                    retry_attempts=5,
                    max_record_age=Duration.hours(6),
                    report_batch_item_failures=True,
                    on_failure=event_sources.SqsDlq(self.dead_letter_queues["StreamDlq"]),
                    # One batch per shard at a time keeps each item's changes in order.
                    parallelization_factor=1,
                )
            )

    def _wire_reconciler(self) -> None:
        # A plain EventBridge rule, not an EventBridge Scheduler schedule: it needs no role
        # of its own, and it stays out of the schedule group that the dag loader owns (and
        # prunes) for DAG schedules and timers.
        events.Rule(
            self,
            "ReconcileRule",
            description="skydag: reconcile running jobs",
            schedule=events.Schedule.rate(RECONCILE_EVERY),
            targets=[
                targets.LambdaFunction(
                    self.functions["Reconciler"],
                    dead_letter_queue=self.dead_letter_queues["ReconcilerDlq"],
                    retry_attempts=2,
                    # A tick older than the period is superseded by the next one.
                    max_event_age=RECONCILE_EVERY,
                )
            ],
        )

    # -- permissions ---------------------------------------------------------------------

    def _policies(self, stack: cdk.Stack) -> dict[str, PolicyBuilder]:
        policies = {name: PolicyBuilder(stack) for name in FUNCTIONS}
        loader = policies["DagLoader"]
        self._allow_tables(loader, ["dags", "dag_versions"], read_only=())
        loader.allow(
            ["s3:GetObject", "s3:GetObjectVersion"],  # the version the event names
            [self.dag_bucket.arn_for_objects(f"{self.dag_prefix}*")],
            wildcard_reason="DAG files under the DAG prefix (named by users)",
        )
        # With ListBucket a file deleted since its event reads as 404, not 403.
        loader.allow(
            ["s3:ListBucket"],
            [self.dag_bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": f"{self.dag_prefix}*"}},
        )
        self._allow_schedules(loader)
        self._allow_put_events(loader)

        # The scheduler, the stream processor and the reconciler run the same scheduler
        # service (skydag.service.factory.build_service): state, notifications, timers and
        # dispatch. Each may start a job (a dispatch, a retry whose time came, a dispatch
        # a crash cut short), describe or cancel one (a report, a timeout), or set a timer.
        # Only the dag loader writes DAG versions.
        everything = [spec.field for spec in self.table_specs]
        for name in ENGINE_FUNCTIONS:
            engine = policies[name]
            self._allow_tables(engine, everything, read_only=("dag_versions",))
            self._allow_put_events(engine)
            self._allow_schedules(engine)
            add_dispatch(engine, self.dispatch)

        for name, policy in policies.items():
            policy.attach(self.roles[name])
        return policies

    def _allow_tables(
        self, policy: PolicyBuilder, fields: list[str], *, read_only: tuple[str, ...]
    ) -> None:
        specs = {spec.field: spec for spec in self.table_specs}
        for access, chosen in (
            (_READ, fields),
            (_WRITE, [f for f in fields if f not in read_only]),
        ):
            resources: list[str] = []
            for field in chosen:
                table = self.tables[field]
                resources.append(table.table_arn)
                # Each index by name (derived from the models), not ``index/*``.
                resources.extend(
                    f"{table.table_arn}/index/{index.name}"
                    for index in (*specs[field].global_indexes, *specs[field].local_indexes)
                    if access is _READ
                )
            if resources:
                policy.allow(access, resources)

    def _allow_put_events(self, policy: PolicyBuilder) -> None:
        policy.allow(["events:PutEvents"], [self.event_bus.event_bus_arn])

    def _allow_schedules(self, policy: PolicyBuilder) -> None:
        policy.allow(
            [
                "scheduler:CreateSchedule",
                "scheduler:UpdateSchedule",
                "scheduler:DeleteSchedule",
                "scheduler:GetSchedule",
            ],
            [self.schedules_arn],
            wildcard_reason=(
                "schedules in skydag's own group only; named per DAG and per timer at run time"
            ),
        )
        policy.allow(
            ["iam:PassRole"],
            [self.scheduler_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
        )

    def _bus_policy(self) -> None:
        """Anyone in the account may signal; only skydag may speak as skydag.

        ``skydag`` (notifications) and ``skydag.scheduler`` (ticks, timers) events start
        runs and fire retries, so a principal other than skydag's roles is denied putting
        them (``events:source`` is evaluated per entry). Commands (``skydag.command``) and
        signals come from people and are governed by their own IAM permissions.
        """
        own_roles = [role.role_arn for role in (*self.roles.values(), self.scheduler_role)]
        # The bus's ARN from its name: its own ``Arn`` attribute would make the bus depend
        # on itself.
        bus_arn = cdk.Stack.of(self).format_arn(
            service="events", resource="event-bus", resource_name=self._event_bus_name
        )
        document = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="AccountMayPutEvents",
                    principals=[iam.AccountRootPrincipal()],
                    actions=["events:PutEvents"],
                    resources=[bus_arn],
                ),
                iam.PolicyStatement(
                    sid="OnlySkydagPutsSkydagSources",
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["events:PutEvents"],
                    resources=[bus_arn],
                    conditions={
                        "StringEquals": {
                            "events:source": [
                                event_patterns.SKYDAG_SOURCE,
                                event_patterns.SCHEDULER_SOURCE,
                            ]
                        },
                        "ArnNotEquals": {"aws:PrincipalArn": own_roles},
                    },
                ),
            ]
        )
        cfn_bus = self.event_bus.node.default_child
        assert isinstance(cfn_bus, events.CfnEventBus)
        cfn_bus.policy = document

    # -- cdk-nag -------------------------------------------------------------------------

    def _acknowledge(self, policies: Mapping[str, PolicyBuilder]) -> None:
        for name, role in self.roles.items():
            nag.acknowledge_wildcards(role, policies[name].wildcard_reasons)
        for name, queue in self.dead_letter_queues.items():
            if name == "SchedulerDlq":
                continue  # the scheduler queue's redrive target: cdk-nag sees it is a DLQ
            nag.acknowledge(
                queue,
                "AwsSolutions-SQS3",
                f"{name} is a dead-letter queue: the end of its path, watched by an alarm",
            )


def _attribute(name: str, attribute_type: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType(_TYPES[attribute_type]))


_TYPES = {"S": "STRING", "N": "NUMBER", "B": "BINARY"}
# Python's level names (LOG_LEVEL, read by Powertools) -> Lambda's log-level filter.
_LAMBDA_LOG_LEVELS = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
}


def _pattern(pattern: Mapping[str, Any]) -> events.EventPattern:
    """A pattern dict (as in event_patterns) to CDK's EventPattern.

    ``detail`` takes any JSON; the top-level fields are typed as lists of strings, so a
    content filter there goes through CDK's ``Match`` (which renders the same JSON).
    """
    fields: dict[str, Any] = {}
    for key, value in pattern.items():
        name = key.replace("-", "_")
        if key != "detail" and any(isinstance(v, Mapping) for v in value):
            (matcher,) = value  # one content filter per top-level field is all we use
            ((operator, operand),) = matcher.items()
            fields[name] = _MATCHERS[operator](operand)
        else:
            fields[name] = value
    return events.EventPattern(**fields)


_MATCHERS: dict[str, Callable[[Any], list[str]]] = {
    "anything-but": lambda values: events.Match.anything_but(*values),
    "prefix": events.Match.prefix,
    "wildcard": events.Match.wildcard,
}
