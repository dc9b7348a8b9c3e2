"""``SkydagStack``: the ``Skydag`` construct, configured from context, plus the outputs the
CLI reads (``skydag info``) and the cdk-nag checks.

Context (cdk.json or ``cdk deploy -c key=value``):

| key | default | what |
| --- | --- | --- |
| ``skydag:eventBusName`` | ``skydag`` | the bus signals and commands are put on |
| ``skydag:scheduleGroupName`` | ``skydag`` | EventBridge Scheduler group |
| ``skydag:dagPrefix`` | ``dags/`` | where DAG files live in the bucket |
| ``skydag:dispatch`` | ``{}`` | JSON: what skydag may run jobs on (``DispatchTargets``) |
| ``skydag:operators`` | ``[]`` | JSON list: IAM role/user ARNs that may send commands |
| ``skydag:retain`` | ``true`` | ``false``: tables, buckets and logs go with the stack |
| ``skydag:alarmTopicArn`` | none | an SNS topic the alarms notify |
| ``skydag:logLevel`` | ``INFO`` | ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR`` |
| ``skydag:systemLogLevel`` | ``WARN`` | ``INFO``: Lambda's START/REPORT lines too |
| ``skydag:tracing`` | ``false`` | ``true``: X-Ray on every function |
| ``skydag:keepRetiredDueIndex`` | ``false`` | ``true``: first step of the due-index upgrade |
| ``skydag:lambdaAsset`` | built | ``placeholder``: skip the pip build (unit tests) |
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from skydag import wiring
from skydag_infra.asset import placeholder_asset, wants_placeholder
from skydag_infra.construct import SOURCE_ROOT, Skydag
from skydag_infra.permissions import DispatchTargets


class SkydagStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        context = _Context(self)
        retain = context.flag("skydag:retain", default=True)
        topic_arn = context.text("skydag:alarmTopicArn", default="")
        code: lambda_.Code | None = None
        if wants_placeholder(self.node.try_get_context("skydag:lambdaAsset")):
            code = lambda_.Code.from_asset(str(placeholder_asset(SOURCE_ROOT / "build").path))

        self.skydag = Skydag(
            self,
            "Skydag",
            event_bus_name=context.text("skydag:eventBusName", default="skydag"),
            schedule_group_name=context.text("skydag:scheduleGroupName", default="skydag"),
            dag_prefix=context.text("skydag:dagPrefix", default="dags/"),
            dispatch=DispatchTargets.from_json(context.json("skydag:dispatch")),
            code=code,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
            deletion_protection=retain,
            alarm_topic=(
                sns.Topic.from_topic_arn(self, "AlarmTopic", topic_arn) if topic_arn else None
            ),
            log_level=context.text("skydag:logLevel", default="INFO"),
            operators=context.strings("skydag:operators"),
            tracing=context.flag("skydag:tracing", default=wiring.TRACING_BY_DEFAULT),
            system_log_level=context.text(
                "skydag:systemLogLevel", default=wiring.SYSTEM_LOG_LEVEL_BY_DEFAULT
            ),
            keep_retired_due_index=context.flag("skydag:keepRetiredDueIndex", default=False),
        )
        self._outputs()

    def _outputs(self) -> None:
        """What ``skydag info`` and the AWS CLI need; names are part of the CLI contract."""
        skydag = self.skydag
        values = {
            "Region": self.region,
            "DagBucket": skydag.dag_bucket.bucket_name,
            "DagPrefix": skydag.dag_prefix,
            "EventBus": skydag.event_bus.event_bus_name,
            "EventBusArn": skydag.event_bus.event_bus_arn,
            "ScheduleGroup": skydag.schedule_group.schedule_group_name,
            "SchedulerQueueUrl": skydag.scheduler_queue.queue_url,
        }
        for spec in skydag.table_specs:
            values[spec.output_name] = skydag.tables[spec.field].table_name
        for name, value in values.items():
            cdk.CfnOutput(self, name, value=value)


def add_nag_checks(app: cdk.App) -> None:
    """cdk-nag's AWS Solutions pack: a finding without an acknowledgment fails synth."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


class _Context:
    def __init__(self, scope: Construct) -> None:
        self._scope = scope

    def _get(self, key: str) -> Any:
        return self._scope.node.try_get_context(key)

    def text(self, key: str, *, default: str) -> str:
        value = self._get(key)
        return default if value is None else str(value)

    def flag(self, key: str, *, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError(f"{key}: expected true or false, got {value!r}")

    def strings(self, key: str) -> list[str]:
        value = self._get(key)
        if value is None:
            return []
        # ``-c key='[...]'`` arrives as a string; cdk.json gives the list itself.
        parsed = json.loads(value) if isinstance(value, str) else value
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise ValueError(f"{key}: expected a JSON list of strings")
        return parsed

    def json(self, key: str) -> dict[str, Any]:
        value = self._get(key)
        if value is None:
            return {}
        # ``-c key='{...}'`` arrives as a string; cdk.json gives the object itself.
        parsed = json.loads(value) if isinstance(value, str) else value
        if not isinstance(parsed, dict):
            raise ValueError(f"{key}: expected a JSON object")
        return parsed
