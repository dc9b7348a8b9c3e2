"""Alarms and the dashboard: what an operator looks at when something is stuck.

Alarms fire on what needs a person: a message in any dead-letter queue (something was given
up on), function errors, a DynamoDB stream falling behind (the scheduler reacts late), and
an old message in the scheduler queue. With an SNS topic they notify it.

The dashboard reads the functions' EMF metrics (namespace ``skydag``) by metric name with
SEARCH expressions, so it shows every dimension combination the handlers emit (Powertools
adds ``service``) without infra copying them.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

METRICS_NAMESPACE = "skydag"
# The EMF metrics the handlers emit (skydag.handlers: Powertools Metrics, namespace
# ``skydag``). RunsFinished and TaskOutcomes carry a ``state`` dimension, Reconciled an
# ``action``: SEARCH draws one line per value.
RUN_METRICS = ("RunsStarted", "RunsFinished")
TASK_METRICS = ("TaskOutcomes",)
SCHEDULING_DELAY_METRIC = "SchedulingDelay"  # milliseconds from an event to its handling
PROBLEM_METRICS = ("BadEvents", "Conflicts", "DagImportErrors")
RECONCILE_METRICS = ("Reconciled",)

PERIOD = Duration.minutes(5)
# A stream batch older than this means the scheduler reacts late to every change.
ITERATOR_AGE_THRESHOLD_MS = 5 * 60 * 1000
# A scheduler-queue message older than this: the scheduler is failing or throttled.
QUEUE_AGE_THRESHOLD_S = 15 * 60


def create_alarms(
    scope: Construct,
    *,
    functions: Mapping[str, lambda_.Function],
    dead_letter_queues: Mapping[str, sqs.Queue],
    stream_function: lambda_.Function,
    scheduler_queue: sqs.Queue,
    topic: sns.ITopic | None,
) -> dict[str, cloudwatch.Alarm]:
    alarms: dict[str, cloudwatch.Alarm] = {}
    for name, queue in dead_letter_queues.items():
        alarms[f"{name}Depth"] = cloudwatch.Alarm(
            scope,
            f"{name}DepthAlarm",
            alarm_description=f"skydag: messages in {name} (gave up on an event; redrive it)",
            metric=queue.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic="Maximum"
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
    for name, function in functions.items():
        alarms[f"{name}Errors"] = cloudwatch.Alarm(
            scope,
            f"{name}ErrorsAlarm",
            alarm_description=f"skydag: the {name} function failed",
            metric=function.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
    alarms["StreamIteratorAge"] = cloudwatch.Alarm(
        scope,
        "StreamIteratorAgeAlarm",
        alarm_description="skydag: the stream processor is behind the DynamoDB streams",
        metric=stream_function.metric("IteratorAge", period=PERIOD, statistic="Maximum"),
        threshold=ITERATOR_AGE_THRESHOLD_MS,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=2,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    alarms["SchedulerQueueAge"] = cloudwatch.Alarm(
        scope,
        "SchedulerQueueAgeAlarm",
        alarm_description="skydag: events wait in the scheduler queue",
        metric=scheduler_queue.metric_approximate_age_of_oldest_message(
            period=PERIOD, statistic="Maximum"
        ),
        threshold=QUEUE_AGE_THRESHOLD_S,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=2,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    if topic is not None:
        action = cloudwatch_actions.SnsAction(topic)
        for alarm in alarms.values():
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
    return alarms


def _emf(metric_name: str, statistic: str, label: str) -> cloudwatch.MathExpression:
    """Every series of one EMF metric, whatever its dimensions."""
    return cloudwatch.MathExpression(
        expression=(
            f"SEARCH('{{{METRICS_NAMESPACE}}} MetricName=\"{metric_name}\"', "
            f"'{statistic}', {int(PERIOD.to_seconds())})"
        ),
        label=label,
        period=PERIOD,
    )


def create_dashboard(
    scope: Construct,
    *,
    functions: Mapping[str, lambda_.Function],
    dead_letter_queues: Mapping[str, sqs.Queue],
    stream_function: lambda_.Function,
    scheduler_queue: sqs.Queue,
    name: str,
) -> cloudwatch.Dashboard:
    dashboard = cloudwatch.Dashboard(scope, "Dashboard", dashboard_name=name)
    dashboard.add_widgets(
        cloudwatch.GraphWidget(
            title="Runs started / finished",
            left=[_emf(name, "Sum", name) for name in RUN_METRICS],
            width=8,
        ),
        cloudwatch.GraphWidget(
            title="Task outcomes",
            left=[_emf(name, "Sum", name) for name in TASK_METRICS],
            width=8,
        ),
        cloudwatch.GraphWidget(
            title="Scheduling delay (ms)",
            left=[
                _emf(SCHEDULING_DELAY_METRIC, "Average", "average"),
                _emf(SCHEDULING_DELAY_METRIC, "Maximum", "maximum"),
            ],
            width=8,
        ),
    )
    dashboard.add_widgets(
        cloudwatch.GraphWidget(
            title="Dropped events, lost races, DAG import errors",
            left=[_emf(name, "Sum", name) for name in PROBLEM_METRICS],
            width=12,
        ),
        cloudwatch.GraphWidget(
            title="Reconciler repairs",
            left=[_emf(name, "Sum", name) for name in RECONCILE_METRICS],
            width=12,
        ),
    )
    dashboard.add_widgets(
        cloudwatch.GraphWidget(
            title="Function errors",
            left=[
                fn.metric_errors(label=name, period=PERIOD, statistic="Sum")
                for name, fn in functions.items()
            ],
            width=8,
        ),
        cloudwatch.GraphWidget(
            title="Stream iterator age (ms)",
            left=[stream_function.metric("IteratorAge", period=PERIOD, statistic="Maximum")],
            width=8,
        ),
        cloudwatch.GraphWidget(
            title="Dead-letter queues / scheduler queue",
            left=[
                queue.metric_approximate_number_of_messages_visible(
                    label=name, period=PERIOD, statistic="Maximum"
                )
                for name, queue in dead_letter_queues.items()
            ],
            right=[
                scheduler_queue.metric_approximate_age_of_oldest_message(
                    label="scheduler queue: oldest message (s)", period=PERIOD
                )
            ],
            width=8,
        ),
    )
    return dashboard
