"""Where each service keeps a job's output (skydag.joblogs): pure layouts, from what the
service's Describe* call returns."""

from __future__ import annotations

import pytest

from skydag import joblogs
from skydag.joblogs import LogStream, NoLog, S3Log

TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/web/0123456789abcdef"


def test_a_batch_job_is_in_its_containers_stream_or_its_last_attempts() -> None:
    assert joblogs.batch_location(
        {"jobId": "j", "container": {"logStreamName": "def/default/a"}}
    ) == LogStream("/aws/batch/job", "def/default/a")
    retried = {
        "jobId": "j",
        "container": {},
        "attempts": [
            {"container": {"logStreamName": "def/default/first"}},
            {"container": {"logStreamName": "def/default/last"}},
        ],
    }
    assert joblogs.batch_location(retried) == LogStream("/aws/batch/job", "def/default/last")
    custom = {
        "jobId": "j",
        "container": {
            "logStreamName": "s",
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/etl"}},
        },
    }
    assert joblogs.batch_location(custom) == LogStream("/etl", "s")


def test_a_batch_job_without_a_stream_says_why() -> None:
    waiting = joblogs.batch_location({"jobId": "j", "status": "RUNNABLE", "container": {}})
    assert isinstance(waiting, NoLog)
    assert "has not started" in waiting.reason
    splunk = joblogs.batch_location(
        {"jobId": "j", "container": {"logConfiguration": {"logDriver": "splunk"}}}
    )
    assert isinstance(splunk, NoLog)
    assert "splunk driver" in splunk.reason


def awslogs(prefix: str | None = "jobs") -> dict[str, object]:
    options = {"awslogs-group": "/ecs/web"}
    if prefix:
        options["awslogs-stream-prefix"] = prefix
    return {"logDriver": "awslogs", "options": options}


def test_an_ecs_task_is_in_the_stream_of_the_container_skydag_ran() -> None:
    definitions = [
        {"name": "app", "essential": True, "logConfiguration": awslogs()},
        {"name": "proxy", "essential": True, "logConfiguration": awslogs()},
    ]
    marker = {"name": "app", "environment": [{"name": "SKYDAG_TASK", "value": "serve"}]}
    task = {"taskArn": TASK_ARN, "overrides": {"containerOverrides": [marker]}}
    assert joblogs.ecs_location(task, definitions) == LogStream(
        "/ecs/web", "jobs/app/0123456789abcdef"
    )
    # Without the override, the only essential container is meant.
    only = [definitions[0], {"name": "sidecar", "essential": False}]
    assert joblogs.ecs_location({"taskArn": TASK_ARN}, only) == LogStream(
        "/ecs/web", "jobs/app/0123456789abcdef"
    )
    ambiguous = joblogs.ecs_location({"taskArn": TASK_ARN}, definitions)
    assert isinstance(ambiguous, NoLog)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "with no log driver"),
        ({"logDriver": "fluentd"}, "with fluentd"),
        (awslogs(prefix=None), "without awslogs-group and awslogs-stream-prefix"),
    ],
)
def test_an_ecs_container_not_logging_to_cloudwatch_says_how_to(
    config: dict[str, object] | None, message: str
) -> None:
    definition: dict[str, object] = {"name": "app"}
    if config:
        definition["logConfiguration"] = config
    found = joblogs.ecs_location({"taskArn": TASK_ARN}, [definition])
    assert isinstance(found, NoLog)
    assert message in found.reason


def test_ecs_task_arns_old_and_new() -> None:
    assert joblogs.ecs_task_parts(TASK_ARN) == ("web", "0123456789abcdef")
    old = "arn:aws:ecs:us-east-1:123456789012:task/0123456789abcdef"
    assert joblogs.ecs_task_parts(old) == (None, "0123456789abcdef")


def test_emr_serverless_logs_follow_the_monitoring_configuration() -> None:
    tail = "applications/app/jobs/run/SPARK_DRIVER/stdout"
    enabled = {"cloudWatchLoggingConfiguration": {"enabled": True}}
    assert joblogs.emr_serverless_location("app", "run", enabled) == LogStream(
        "/aws/emr-serverless", tail
    )
    named = {
        "cloudWatchLoggingConfiguration": {
            "enabled": True,
            "logGroupName": "/emr/etl",
            "logStreamNamePrefix": "nightly",
        }
    }
    assert joblogs.emr_serverless_location("app", "run", named) == LogStream(
        "/emr/etl", f"nightly/{tail}"
    )
    s3 = {"s3MonitoringConfiguration": {"logUri": "s3://logs/emr/"}}
    assert joblogs.emr_serverless_location("app", "run", s3) == S3Log("logs", f"emr/{tail}.gz")
    none = joblogs.emr_serverless_location("app", "run", {})
    assert isinstance(none, NoLog)
    assert "monitoringConfiguration" in none.reason


def test_an_emr_step_is_under_its_clusters_log_uri() -> None:
    assert joblogs.emr_step_location("s3n://logs/emr/", "j-1", "s-2") == S3Log(
        "logs", "emr/j-1/steps/s-2/stdout.gz"
    )
    assert joblogs.emr_step_location("s3://logs", "j-1", "s-2") == S3Log(
        "logs", "j-1/steps/s-2/stdout.gz"
    )
    none = joblogs.emr_step_location(None, "j-1", "s-2")
    assert isinstance(none, NoLog)
    assert "--log-uri" in none.reason


def test_lambda_groups_and_local_streams() -> None:
    assert joblogs.lambda_log_group("score:live") == "/aws/lambda/score"
    arn = "arn:aws:lambda:us-east-1:123456789012:function:score:live"
    assert joblogs.lambda_log_group(arn) == "/aws/lambda/score"
    assert joblogs.local_stream("d", "manual__2026-01-01T00:00:00", "t", 2) == (
        "d/manual__2026-01-01T00_00_00/t/2"
    )
    assert str(LogStream("/g", None, "req")) == "log group /g, invocation req"
