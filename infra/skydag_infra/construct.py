"""``Skydag``: the whole orchestrator as one construct, least privilege throughout.

What it makes (docs/deploy.md tells the story; docs/operations.md how the engine works):
- the DAG bucket (versioned, SSE-S3, TLS only, no public access, access logs, EventBridge on);
- the skydag event bus, whose policy keeps skydag's own sources to skydag's roles;
- one DynamoDB table per PynamoDB model, derived from ``skydag.store.models``;
- four functions (dag loader, scheduler, stream processor, reconciler), one role each;
- the wiring: S3 -> dag loader; the bus and the services' state changes -> SQS -> scheduler;
  DynamoDB Streams -> stream processor; a 5-minute rule -> reconciler. What it is (rules,
  queues, event sources, retries) is ``skydag.wiring``, which the local cloud reads too:
  this module only turns those specs into constructs;
- the EventBridge Scheduler group and the role its schedules assume;
- a dead-letter queue on every asynchronous path, alarms and a dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
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

from skydag import wiring
from skydag.settings import VERSIONS_PREFIX, prefixes_overlap
from skydag.sources import COMMAND_SOURCE, DAG_SOURCE_PREFIX, SCHEDULER_SOURCE, SKYDAG_SOURCE
from skydag.wiring import (
    AsyncInvokeSpec,
    FunctionSpec,
    QueueSpec,
    RuleSpec,
    RuleTarget,
    SqsEventSourceSpec,
    StreamEventSourceSpec,
)
from skydag_infra import nag, observability
from skydag_infra.asset import LAMBDA_PYTHON, build_lambda_asset
from skydag_infra.permissions import DispatchTargets, PolicyBuilder, add_dispatch
from skydag_infra.tables import TableSpec, table_specs, with_retired_due_index

# The newest Python runtime aws-cdk-lib offers (an AttributeError here if it does not know
# LAMBDA_PYTHON); the asset's wheels are built for the same version.
LAMBDA_RUNTIME: lambda_.Runtime = getattr(
    lambda_.Runtime, f"PYTHON_{LAMBDA_PYTHON.replace('.', '_')}"
)
SOURCE_ROOT = Path(__file__).resolve().parents[2]

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
# The functions that run the scheduler service (and so dispatch); the dag loader does not.
ENGINE_FUNCTIONS = (wiring.SCHEDULER.id, wiring.STREAM_PROCESSOR.id, wiring.RECONCILER.id)


class Skydag(Construct):
    """skydag in one construct. Every prop has a default that deploys a working skydag.

    ``dispatch`` lists what skydag may run jobs on (nothing by default: ``emit``, ``wait``
    and ``noop`` tasks still work). ``code`` replaces the Lambda asset (tests, prebuilt
    zips); by default it is built from the checkout at ``source_root`` (see asset.py).

    ``operators`` lists the IAM roles and users (ARNs; ``*`` allowed) that may send
    commands (``skydag.command``: trigger, cancel, clear, mark, pause, backfill) and
    redrive dead-letter queues into the scheduler queue. By default every principal of the
    account may (with ``events:PutEvents`` in its own IAM policy), as before; skydag's own
    functions never may, whatever the list (docs/security.md).

    The ``skydag.wiring`` specs it was built from are kept by construct id
    (``function_specs``, ``queue_specs``, ``rule_specs``, ``async_invoke_specs``) and as
    ``scheduler_event_source_spec`` and ``stream_event_source_spec``.
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
        operators: Sequence[str] = (),
        tracing: bool = wiring.TRACING_BY_DEFAULT,
        system_log_level: str = wiring.SYSTEM_LOG_LEVEL_BY_DEFAULT,
        keep_retired_due_index: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.operators = _principal_arns(operators)
        # X-Ray is opt-in: at scale it is a per-invocation cost, and the X-Ray SDK's
        # import adds ~0.7 s to every cold start (handlers/_runtime.py skips it when off).
        self.tracing = tracing
        if log_level not in _LAMBDA_LOG_LEVELS:
            raise ValueError(f"log_level {log_level!r}: expected one of {list(_LAMBDA_LOG_LEVELS)}")
        if system_log_level not in wiring.SYSTEM_LOG_LEVELS:
            raise ValueError(
                f"system_log_level {system_log_level!r}: expected one of "
                f"{list(wiring.SYSTEM_LOG_LEVELS)}"
            )
        # Lambda's own platform lines (see wiring.SYSTEM_LOG_LEVEL_BY_DEFAULT).
        self.system_log_level = lambda_.SystemLogLevel[system_log_level]
        self.dag_prefix = wiring.validate_dag_prefix(dag_prefix)
        if prefixes_overlap(self.dag_prefix):
            raise ValueError(
                f"dag_prefix {dag_prefix!r} overlaps {VERSIONS_PREFIX!r}, where skydag keeps "
                "DAG versions: choose another DAG prefix"
            )
        self.dispatch = dispatch or DispatchTargets()
        self._removal_policy = removal_policy
        stack = cdk.Stack.of(self)

        self.dag_bucket = self._buckets()
        self.table_specs = table_specs()
        # Upgrading a stack that has the retired ``due`` index takes two deployments
        # (docs/operations.md, Upgrading): the first keeps it, granted to nobody.
        built = (
            with_retired_due_index(self.table_specs) if keep_retired_due_index else self.table_specs
        )
        self.tables: dict[str, dynamodb.Table] = {
            spec.field: self._table(spec, deletion_protection) for spec in built
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

        # In wiring.QUEUES' order, a dead-letter queue comes before the queue redriving to it.
        self.queue_specs: dict[str, QueueSpec] = {spec.id: spec for spec in wiring.QUEUES}
        self.queues: dict[str, sqs.Queue] = {}
        for queue_spec in self.queue_specs.values():
            self.queues[queue_spec.id] = self._queue(queue_spec)
        self.dead_letter_queues: dict[str, sqs.Queue] = {
            spec.id: self.queues[spec.id] for spec in wiring.DEAD_LETTER_QUEUES
        }
        self.scheduler_queue = self.queues[wiring.SCHEDULER_QUEUE.id]

        self.code = code or self._default_code(source_root)
        environment = self._environment(log_level)
        self.roles: dict[str, iam.Role] = {}
        self.function_specs: dict[str, FunctionSpec] = {spec.id: spec for spec in wiring.FUNCTIONS}
        self.async_invoke_specs: dict[str, AsyncInvokeSpec] = {
            spec.function.id: spec for spec in wiring.ASYNC_INVOKES
        }
        self.functions: dict[str, lambda_.Function] = {
            spec.id: self._function(spec, environment, log_level, log_retention)
            for spec in self.function_specs.values()
        }

        self.rule_specs: dict[str, RuleSpec] = {
            spec.id: spec for spec in wiring.rules(self.dag_bucket.bucket_name, self.dag_prefix)
        }
        self.rules: dict[str, events.Rule] = {
            spec.id: self._rule(spec) for spec in self.rule_specs.values()
        }
        self.scheduler_event_source_spec = wiring.SCHEDULER_EVENT_SOURCE
        self._wire_queue(self.scheduler_event_source_spec)
        self.stream_event_source_spec = wiring.STREAM_EVENT_SOURCE
        self._wire_streams(self.stream_event_source_spec)
        policies = self._policies(stack)
        self._bus_policy()
        self._queue_policies()

        dlqs = self.dead_letter_queues
        self.alarms = observability.create_alarms(
            self,
            functions=self.functions,
            dead_letter_queues=dlqs,
            stream_function=self.functions[wiring.STREAM_PROCESSOR.id],
            scheduler_queue=self.scheduler_queue,
            topic=alarm_topic,
        )
        self.dashboard = observability.create_dashboard(
            self,
            functions=self.functions,
            dead_letter_queues=dlqs,
            stream_function=self.functions[wiring.STREAM_PROCESSOR.id],
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
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(365)),
            ],
            removal_policy=self._removal_policy,
        )
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        self._log_access(bucket, cfn_bucket, prefix="dag-bucket/")
        # EventBridge notifications on the bucket itself: ``event_bridge_enabled=True`` would
        # add a custom-resource Lambda to set what CloudFormation sets natively.
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )
        return bucket

    def _log_access(self, bucket: s3.Bucket, cfn_bucket: s3.CfnBucket, *, prefix: str) -> None:
        """Server access logs delivered under a bucket policy, set here rather than by
        ``server_access_logs_bucket``: that one grants an ACL instead unless the host app
        sets ``@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy``, and ACLs are disabled on
        these buckets (so the construct synthesizes in any app, whatever its flags)."""
        logs_bucket = self.access_logs_bucket
        cfn_bucket.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(
            destination_bucket_name=logs_bucket.bucket_name, log_file_prefix=prefix
        )
        logs_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="S3ServerAccessLogsFromTheDagBucket",
                principals=[iam.ServicePrincipal("logging.s3.amazonaws.com")],
                actions=["s3:PutObject"],
                resources=[logs_bucket.arn_for_objects(f"{prefix}*")],
                conditions={
                    "ArnLike": {"aws:SourceArn": bucket.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account},
                },
            )
        )

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

    def _queue(self, spec: QueueSpec) -> sqs.Queue:
        redrive = spec.redrive
        return sqs.Queue(
            self,
            spec.id,
            # SSE-SQS: EventBridge can deliver to it (the AWS-managed KMS key refuses it).
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=_optional_duration(spec.retention),
            visibility_timeout=_optional_duration(spec.visibility_timeout),
            dead_letter_queue=(
                sqs.DeadLetterQueue(
                    queue=self.queues[redrive.dead_letter_queue.id],
                    max_receive_count=redrive.max_receive_count,
                )
                if redrive is not None
                else None
            ),
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
        aws_events = wiring.FORWARDING_TARGET
        env = {spec.env_var: self.tables[spec.field].table_name for spec in self.table_specs}
        env.update(
            SKYDAG_DAG_BUCKET=self.dag_bucket.bucket_name,
            SKYDAG_DAG_PREFIX=self.dag_prefix,
            SKYDAG_EVENT_BUS=self.event_bus.event_bus_name,
            SKYDAG_EVENT_BUS_ARN=self.event_bus.event_bus_arn,
            SKYDAG_SCHEDULE_GROUP=self.schedule_group.schedule_group_name,
            SKYDAG_SCHEDULER_ROLE_ARN=self.scheduler_role.role_arn,
            # Where the dag loader's AWS-event forwarding rules deliver.
            SKYDAG_SCHEDULER_QUEUE_ARN=self.queues[aws_events.resource.id].queue_arn,
            SKYDAG_EVENT_DELIVERY_DLQ_ARN=self.queues[aws_events.dead_letter_queue.id].queue_arn,
            POWERTOOLS_SERVICE_NAME="skydag",
            POWERTOOLS_METRICS_NAMESPACE=observability.METRICS_NAMESPACE,
            LOG_LEVEL=log_level,
            POWERTOOLS_TRACE_DISABLED="false" if self.tracing else "true",
        )
        return env

    def _function(
        self,
        spec: FunctionSpec,
        environment: Mapping[str, str],
        log_level: str,
        log_retention: logs.RetentionDays,
    ) -> lambda_.Function:
        name = spec.id
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
            timeout=_duration(spec.timeout),
            role=role,
            environment=dict(environment),
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            # Lambda drops what Powertools would log below this: keep the two levels equal.
            application_log_level_v2=_LAMBDA_LOG_LEVELS[log_level],
            system_log_level_v2=self.system_log_level,
            tracing=lambda_.Tracing.ACTIVE if self.tracing else lambda_.Tracing.DISABLED,
            **self._async_invoke(name),
        )

    def _async_invoke(self, name: str) -> dict[str, Any]:
        """Lambda's own retries, for the functions EventBridge invokes asynchronously."""
        spec = self.async_invoke_specs.get(name)
        if spec is None:
            return {}
        return {
            "retry_attempts": spec.retry_attempts,
            "max_event_age": _duration(spec.max_event_age),
            "on_failure": destinations.SqsDestination(self.queues[spec.on_failure.id]),
        }

    # -- wiring --------------------------------------------------------------------------

    def _rule(self, spec: RuleSpec) -> events.Rule:
        on_skydag_bus = spec.bus is wiring.Bus.SKYDAG
        return events.Rule(
            self,
            spec.id,
            description=spec.description,
            event_bus=self.event_bus if on_skydag_bus else None,
            event_pattern=_pattern(spec.pattern) if spec.pattern is not None else None,
            schedule=(
                events.Schedule.rate(_duration(spec.schedule_rate))
                if spec.schedule_rate is not None
                else None
            ),
            targets=[self._rule_target(spec.target)],
        )

    def _rule_target(self, spec: RuleTarget) -> events.IRuleTarget:
        delivery: dict[str, Any] = {
            "dead_letter_queue": self.queues[spec.dead_letter_queue.id],
            "retry_attempts": spec.retry_attempts,
            "max_event_age": _duration(spec.max_event_age),
        }
        if isinstance(spec.resource, QueueSpec):
            return targets.SqsQueue(self.queues[spec.resource.id], **delivery)
        return targets.LambdaFunction(self.functions[spec.resource.id], **delivery)

    def _wire_queue(self, spec: SqsEventSourceSpec) -> None:
        self.functions[spec.function.id].add_event_source(
            event_sources.SqsEventSource(
                self.queues[spec.queue.id],
                batch_size=spec.batch_size,
                max_batching_window=_duration(spec.max_batching_window),
                report_batch_item_failures=spec.report_batch_item_failures,
            )
        )

    def _wire_streams(self, spec: StreamEventSourceSpec) -> None:
        """Every table with a stream feeds the stream processor."""
        processor = self.functions[spec.function.id]
        for table in self.table_specs:
            if table.stream_view_type is None:
                continue
            filters = [
                lambda_.FilterCriteria.filter(dict(pattern))
                for pattern in spec.filters.get(table.field, ())
            ]
            processor.add_event_source(
                event_sources.DynamoEventSource(
                    self.tables[table.field],
                    starting_position=lambda_.StartingPosition[spec.starting_position.value],
                    batch_size=spec.batch_size,
                    bisect_batch_on_error=spec.bisect_batch_on_error,
                    retry_attempts=spec.retry_attempts,
                    max_record_age=_duration(spec.max_record_age),
                    report_batch_item_failures=spec.report_batch_item_failures,
                    on_failure=event_sources.SqsDlq(self.queues[spec.on_failure.id]),
                    parallelization_factor=spec.parallelization_factor,
                    filters=filters or None,
                )
            )

    # -- permissions ---------------------------------------------------------------------

    def _policies(self, stack: cdk.Stack) -> dict[str, PolicyBuilder]:
        policies = {name: PolicyBuilder(stack) for name in self.function_specs}
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
        # Each version's spec (skydag.store.spec_objects): only the loader writes one.
        loader.allow(
            ["s3:PutObject"],
            [self.versions_arn],
            wildcard_reason="DAG version specs under the versions prefix (one per version)",
        )
        self._allow_schedules(loader)
        self._allow_put_events(loader)
        self._allow_forwarding_rules(loader)

        # The scheduler, the stream processor and the reconciler run the same scheduler
        # service (skydag.service.factory.build_service): state, notifications, timers and
        # dispatch. Each may start a job (a dispatch, a retry whose time came, a dispatch
        # a crash cut short), describe or cancel one (a report, a timeout), or set a timer.
        # Only the dag loader writes DAG versions.
        everything = [spec.field for spec in self.table_specs]
        for name in ENGINE_FUNCTIONS:
            engine = policies[name]
            self._allow_tables(engine, everything, read_only=("dag_versions",))
            engine.allow(
                ["s3:GetObject"],
                [self.versions_arn],
                wildcard_reason="DAG version specs under the versions prefix (one per version)",
            )
            self._allow_put_events(engine)
            self._allow_schedules(engine)
            add_dispatch(engine, self.dispatch, deployment=self._event_bus_name)

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

    @property
    def versions_arn(self) -> str:
        """The objects holding each DAG version's spec (``Settings.versions_prefix``)."""
        return self.dag_bucket.arn_for_objects(f"{VERSIONS_PREFIX}*")

    @property
    def forwarding_rule_arns(self) -> list[str]:
        """The rules the dag loader keeps for the events DAGs subscribe to
        (``wiring.FORWARDING``: AWS events on the default bus, skydag's own on the skydag
        bus): made at run time, named here so that IAM and the queue policies can name
        each one."""
        stack = cdk.Stack.of(self)
        return [
            stack.format_arn(service="events", resource="rule", resource_name=name)
            for spec in wiring.FORWARDING
            for name in spec.rule_resource_names(self._event_bus_name)
        ]

    def _allow_forwarding_rules(self, policy: PolicyBuilder) -> None:
        """Those rules and no other; their one target is the queue the stack names."""
        policy.allow(
            [
                "events:DescribeRule",
                "events:PutRule",
                "events:DeleteRule",
                "events:ListTargetsByRule",
                "events:RemoveTargets",
            ],
            self.forwarding_rule_arns,
        )
        target = wiring.FORWARDING_TARGET.resource
        policy.allow(
            ["events:PutTargets"],
            self.forwarding_rule_arns,
            conditions={"ArnEquals": {"events:TargetArn": self.queues[target.id].queue_arn}},
        )

    def _allow_put_events(self, policy: PolicyBuilder) -> None:
        policy.allow(["events:PutEvents"], [self.event_bus.event_bus_arn])
        # Notifications are put only when a rule on the bus takes them
        # (skydag.adapters.events.BusListeners): the bus's rules, read-only.
        bus_rules = cdk.Stack.of(self).format_arn(
            service="events", resource="rule", resource_name=f"{self._event_bus_name}/*"
        )
        policy.allow(
            ["events:ListRules"],
            [bus_rules],
            wildcard_reason="who listens on the skydag bus: every rule on it, listed",
        )

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

    def source_senders(self) -> dict[str, list[str]]:
        """skydag's own sources (``StringLike`` patterns) -> the principal ARNs that may put
        them on the bus; the bus policy denies them to everyone else.

        - ``skydag`` (notifications: a DAG may start on another's outcome): the functions
          that run the scheduler service, and the dag loader ("DAG Import Error");
        - ``skydag.scheduler`` (ticks and timers): EventBridge Scheduler's role, and the dag
          loader (the first tick of a DAG whose schedule is due when it loads);
        - ``skydag.dag.*`` (``emit:`` tasks): the functions that dispatch;
        - ``skydag.command`` (trigger, cancel, clear, mark, pause, backfill): the operators
          only, never a function.
        """
        engine = [self.roles[name].role_arn for name in ENGINE_FUNCTIONS]
        loader = self.roles[wiring.DAG_LOADER.id].role_arn
        return {
            SKYDAG_SOURCE: [loader, *engine],
            SCHEDULER_SOURCE: [self.scheduler_role.role_arn, loader],
            f"{DAG_SOURCE_PREFIX}*": engine,
            # Operators only; without a list, anyone of the account but skydag's roles.
            COMMAND_SOURCE: list(self.operators),
        }

    def _skydag_roles(self) -> list[str]:
        """Every role skydag's code runs as: none may send commands (a DAG's templates
        run there, so a DAG author could otherwise forge one)."""
        return [
            *(role.role_arn for role in self.roles.values()),
            self.scheduler_role.role_arn,
        ]

    def _bus_policy(self) -> None:
        """Anyone in the account may signal; only the principals ``source_senders`` names
        may speak as skydag (``events:source`` is evaluated per entry)."""
        # The bus's ARN from its name: its own ``Arn`` attribute would make the bus depend
        # on itself.
        bus_arn = cdk.Stack.of(self).format_arn(
            service="events", resource="event-bus", resource_name=self._event_bus_name
        )
        statements = [
            iam.PolicyStatement(
                sid="AccountMayPutEvents",
                principals=[iam.AccountRootPrincipal()],
                actions=["events:PutEvents"],
                resources=[bus_arn],
            )
        ]
        for source, senders in self.source_senders().items():
            conditions: dict[str, Any] = {"StringLike": {"events:source": source}}
            if senders:
                conditions["ArnNotLike"] = {"aws:PrincipalArn": senders}
            elif source == COMMAND_SOURCE:
                # No operators named: the account's principals may, skydag's roles not.
                conditions["ArnLike"] = {"aws:PrincipalArn": self._skydag_roles()}
            statements.append(
                iam.PolicyStatement(
                    sid=_SOURCE_SIDS[source],
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["events:PutEvents"],
                    resources=[bus_arn],
                    conditions=conditions,
                )
            )
        cfn_bus = self.event_bus.node.default_child
        assert isinstance(cfn_bus, events.CfnEventBus)
        cfn_bus.policy = iam.PolicyDocument(statements=statements)

    def queue_senders(self) -> dict[str, tuple[list[str], list[str]]]:
        """Queue id -> (source ARNs, principal ARNs) that may send to it; the queue's policy
        denies ``sqs:SendMessage`` to any other request. Derived from ``skydag.wiring``:

        - a rule's target queue and dead-letter queue: the rule (EventBridge sends with
          ``aws:SourceArn`` = the rule), the dag loader's forwarding rules included;
        - an asynchronous invocation's or a stream's on-failure queue: the function's role
          (Lambda sends with the function's role);
        - a queue's dead-letter queue: the queue (SQS moves the message itself);
        - the scheduler queue: also the operators, who redrive its dead-letter queues into
          it (``StartMessageMoveTask`` sends with the caller's permissions).
        """
        senders: dict[str, tuple[list[str], list[str]]] = {q: ([], []) for q in self.queues}
        for rule_id, rule in self.rule_specs.items():
            target = rule.target
            for queue in (target.resource, target.dead_letter_queue):
                if isinstance(queue, QueueSpec):
                    senders[queue.id][0].append(self.rules[rule_id].rule_arn)
        forwarding = wiring.FORWARDING_TARGET
        for queue in (forwarding.resource, forwarding.dead_letter_queue):
            senders[queue.id][0].extend(self.forwarding_rule_arns)
        for spec in self.queue_specs.values():
            if spec.redrive is not None:
                senders[spec.redrive.dead_letter_queue.id][0].append(self.queues[spec.id].queue_arn)
        for function, on_failure in (
            *((a.function, a.on_failure) for a in self.async_invoke_specs.values()),
            (self.stream_event_source_spec.function, self.stream_event_source_spec.on_failure),
        ):
            senders[on_failure.id][1].append(self.roles[function.id].role_arn)
        # Without operators named, the account's principals (a role skydag's code runs as
        # could send directly, but its code never does: the bus is what it may not bypass).
        account_principals = [
            cdk.Stack.of(self).format_arn(
                service="iam", region="", resource="*", arn_format=cdk.ArnFormat.NO_RESOURCE_NAME
            )
        ]
        senders[wiring.SCHEDULER_QUEUE.id][1].extend(self.operators or account_principals)
        return senders

    def _queue_policies(self) -> None:
        for queue_id, (sources, principals) in self.queue_senders().items():
            conditions: dict[str, Any] = {}
            if sources:
                conditions["ArnNotEquals"] = {"aws:SourceArn": sources}
            # No principal sends here: deny every IAM principal (a request SQS or another
            # service makes on its own carries no principal ARN).
            conditions.update(
                {"ArnNotLike": {"aws:PrincipalArn": principals}}
                if principals
                else {"Null": {"aws:PrincipalArn": "false"}}
            )
            self.queues[queue_id].add_to_resource_policy(
                iam.PolicyStatement(
                    sid="OnlySkydagSends",
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["sqs:SendMessage"],
                    resources=[self.queues[queue_id].queue_arn],
                    conditions=conditions,
                )
            )

    # -- cdk-nag -------------------------------------------------------------------------

    def _acknowledge(self, policies: Mapping[str, PolicyBuilder]) -> None:
        for name, role in self.roles.items():
            nag.acknowledge_wildcards(role, policies[name].wildcard_reasons)
        for name, queue in self.dead_letter_queues.items():
            if name == wiring.SCHEDULER_DLQ.id:
                continue  # the scheduler queue's redrive target: cdk-nag sees it is a DLQ
            nag.acknowledge(
                queue,
                "AwsSolutions-SQS3",
                f"{name} is a dead-letter queue: the end of its path, watched by an alarm",
            )


# A statement id per reserved source (the bus requires one: requireEventBusPolicySid).
_SOURCE_SIDS = {
    SKYDAG_SOURCE: "OnlySkydagPutsNotifications",
    SCHEDULER_SOURCE: "OnlySchedulesPutTicksAndTimers",
    f"{DAG_SOURCE_PREFIX}*": "OnlySkydagEmitsForDags",
    COMMAND_SOURCE: "OnlyOperatorsPutCommands",
}


def _principal_arns(arns: Sequence[str]) -> tuple[str, ...]:
    """IAM role or user ARNs (``ArnLike`` patterns: ``*`` allowed; tokens pass as they are).
    ``aws:PrincipalArn`` of an assumed role is the role's ARN, never the session's."""
    for arn in arns:
        if cdk.Token.is_unresolved(arn):
            continue
        parts = arn.split(":", 5)
        if len(parts) == 6 and parts[2] == "sts":
            raise ValueError(f"operators: {arn!r}: give the role's ARN, not a session's")
        if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iam":
            raise ValueError(f"operators: {arn!r} is not an IAM role or user ARN")
    return tuple(arns)


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


def _duration(value: timedelta) -> Duration:
    seconds = value.total_seconds()
    if not seconds.is_integer():
        raise ValueError(f"{value}: CloudFormation takes whole seconds")
    return Duration.seconds(int(seconds))


def _optional_duration(value: timedelta | None) -> Duration | None:
    return None if value is None else _duration(value)


def _pattern(pattern: Mapping[str, Any]) -> events.EventPattern:
    """A pattern dict (as in skydag.wiring) to CDK's EventPattern.

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
