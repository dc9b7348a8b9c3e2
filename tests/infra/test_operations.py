"""Alarms, dashboard, outputs, and cdk-nag: what operators and the CLI rely on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from infra_synth import ALARM_TOPIC_ARN, Synthesized
from skydag_infra import observability

OUTPUTS = {
    "Region",
    "DagBucket",
    "DagPrefix",
    "EventBus",
    "EventBusArn",
    "DagsTable",
    "DagVersionsTable",
    "RunsTable",
    "TaskInstancesTable",
    "TaskStateTable",
    "ScheduleGroup",
    "SchedulerQueueUrl",
}


def _alarms_on(synth: Synthesized, metric: str, dimension: dict[str, Any]) -> list[dict[str, Any]]:
    ((name, value),) = dimension.items()
    return [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == metric
        and a["Properties"]["Dimensions"] == [{"Name": name, "Value": value}]
    ]


@pytest.mark.parametrize(
    "dlq", ["DagLoaderDlq", "EventDeliveryDlq", "SchedulerDlq", "StreamDlq", "ReconcilerDlq"]
)
def test_each_dead_letter_queue_alarms_on_its_first_message(synth: Synthesized, dlq: str) -> None:
    queue = synth.skydag.dead_letter_queues[dlq]
    (alarm,) = _alarms_on(
        synth,
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": {"Fn::GetAtt": [synth.logical_id(queue), "QueueName"]}},
    )
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["AlarmActions"] == [ALARM_TOPIC_ARN]


@pytest.mark.parametrize("name", ["DagLoader", "Scheduler", "StreamProcessor", "Reconciler"])
def test_each_function_alarms_on_errors(synth: Synthesized, name: str) -> None:
    function = synth.skydag.functions[name]
    (alarm,) = _alarms_on(synth, "Errors", {"FunctionName": {"Ref": synth.logical_id(function)}})
    assert alarm["Namespace"] == "AWS/Lambda"
    assert alarm["Statistic"] == "Sum"
    assert alarm["Threshold"] == 0
    assert alarm["AlarmActions"] == [ALARM_TOPIC_ARN]


def test_stream_iterator_age_and_scheduler_queue_age_alarm(synth: Synthesized) -> None:
    skydag = synth.skydag
    (age,) = _alarms_on(
        synth,
        "IteratorAge",
        {"FunctionName": {"Ref": synth.logical_id(skydag.functions["StreamProcessor"])}},
    )
    assert age["Statistic"] == "Maximum"
    assert age["Threshold"] == observability.ITERATOR_AGE_THRESHOLD_MS
    (oldest,) = _alarms_on(
        synth,
        "ApproximateAgeOfOldestMessage",
        {"QueueName": {"Fn::GetAtt": [synth.logical_id(skydag.scheduler_queue), "QueueName"]}},
    )
    assert oldest["Threshold"] == observability.QUEUE_AGE_THRESHOLD_S
    assert len(synth.resources("AWS::CloudWatch::Alarm")) == 6 + 4 + 2


def test_dashboard_shows_the_handlers_metrics_and_the_health_signals(synth: Synthesized) -> None:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == "Skydag-skydag"
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in (
        *observability.RUN_METRICS,
        *observability.TASK_METRICS,
        observability.SCHEDULING_DELAY_METRIC,
        *observability.PROBLEM_METRICS,
    ):
        assert f'MetricName=\\\\\\"{metric}\\\\\\"' in body, metric
    for health in ("IteratorAge", "ApproximateNumberOfMessagesVisible", "Errors"):
        assert health in body


def test_handlers_emit_the_metrics_the_dashboard_draws() -> None:
    """The dashboard reads metrics by name: each must be one a handler emits."""
    from pathlib import Path

    import skydag.handlers

    sources = "".join(
        path.read_text(encoding="utf-8")
        for path in Path(skydag.handlers.__file__).parent.glob("*.py")
    )
    for metric in (
        *observability.RUN_METRICS,
        *observability.TASK_METRICS,
        observability.SCHEDULING_DELAY_METRIC,
        *observability.PROBLEM_METRICS,
        *observability.RECONCILE_METRICS,
    ):
        assert f'"{metric}"' in sources, f"no handler emits {metric}"


def test_outputs_the_cli_reads(synth: Synthesized) -> None:
    outputs = synth.json["Outputs"]
    assert set(outputs) == OUTPUTS
    skydag = synth.skydag
    assert outputs["DagPrefix"]["Value"] == "dags/"
    assert outputs["Region"]["Value"] == {"Ref": "AWS::Region"}
    assert outputs["SchedulerQueueUrl"]["Value"] == {
        "Ref": synth.logical_id(skydag.scheduler_queue)
    }
    for spec in skydag.table_specs:
        assert outputs[spec.output_name]["Value"] == {
            "Ref": synth.logical_id(skydag.tables[spec.field])
        }


def test_cdk_nag_is_clean_and_every_acknowledgment_says_why(synth: Synthesized) -> None:
    # synth() raised on any unacknowledged finding; the report names no violation either.
    report = json.loads((synth.outdir / "validation-report.json").read_text("utf-8"))
    assert [r for r in report["pluginReports"] if r.get("violations")] == []
    acknowledged = [
        (path, rule, reason)
        for path, entries in synth.metadata.items()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for rule, reason in entry["data"].items()
    ]
    assert acknowledged
    for path, rule, reason in acknowledged:
        assert rule.startswith(
            ("Annotation::AwsSolutions-IAM5[", "Annotation::AwsSolutions-SQS3")
        ), (
            path,
            rule,
        )
        assert len(reason) > 20, (path, rule)
    # No blanket acknowledgment: IAM5 is acknowledged one resource at a time.
    assert not [rule for _, rule, _ in acknowledged if rule == "Annotation::AwsSolutions-IAM5"]
