"""AwsTargets: targets by task kind, clients from the settings, service events routed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skydag.engine.models import JobStatus
from skydag.settings import Settings
from skydag.targets.aws import (
    AwsTargets,
    BatchJobs,
    EcsTasks,
    EmrServerlessRuns,
    EmrSteps,
    EventEmitter,
    LambdaInvocations,
    StepFunctionsExecutions,
    parse_service_event,
)
from skydag.targets.base import DispatchRequest

ROOT = Path(__file__).resolve().parents[3]
KIND_OF_PREFIX = {
    "batch": "batch",
    "emr_step": "emr",
    "emr_serverless": "emr_serverless",
    "sfn": "stepfunctions",
    "ecs": "ecs",
    "lambda": "lambda",
}


@pytest.mark.parametrize(
    ("kind", "target_class"),
    [
        ("batch", BatchJobs),
        ("emr", EmrSteps),
        ("emr_serverless", EmrServerlessRuns),
        ("stepfunctions", StepFunctionsExecutions),
        ("lambda", LambdaInvocations),
        ("ecs", EcsTasks),
        ("emit", EventEmitter),
    ],
)
def test_a_target_per_kind_made_once(kind: str, target_class: type) -> None:
    targets = AwsTargets(Settings())

    target = targets.target_for(kind)

    assert isinstance(target, target_class)
    assert targets.target_for(kind) is target


@pytest.mark.parametrize("kind", ["batch", "ecs", "emr_serverless"])
def test_jobs_are_tagged_with_the_settings_bus_as_their_deployment(kind: str) -> None:
    """The deployment tag's value is the bus's name, as the stack's IAM conditions say."""
    target = AwsTargets(Settings(event_bus="skydag-prod")).target_for(kind)

    assert getattr(target, "deployment", None) == "skydag-prod"


@pytest.mark.parametrize("kind", ["noop", "wait", "local", "glue"])
def test_kinds_without_an_aws_target_are_a_key_error(kind: str) -> None:
    with pytest.raises(KeyError, match=kind):
        AwsTargets(Settings()).target_for(kind)


def test_clients_use_the_settings_region_and_endpoint() -> None:
    targets = AwsTargets(Settings(region="eu-west-1", endpoint_url="http://localhost:4566"))

    client = targets.client("stepfunctions")

    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == "http://localhost:4566"
    assert targets.client("stepfunctions") is client


def test_given_clients_are_used_and_emit_puts_on_the_settings_bus() -> None:
    given = object()
    targets = AwsTargets(Settings(event_bus="skydag-prod"), clients={"events": given})

    emitter = targets.target_for("emit")

    assert isinstance(emitter, EventEmitter)
    assert emitter.client is given
    assert emitter.bus_name == "skydag-prod"


def test_a_dispatch_through_the_registry(
    mocked_aws: None, aws_client: Callable[[str], Any], make_request: Callable[..., DispatchRequest]
) -> None:
    aws_client("events").create_event_bus(Name="skydag")
    targets = AwsTargets(Settings())

    result = targets.target_for("emit").dispatch(
        make_request("emit", {"source": None, "detail-type": "extract.done", "detail": {}})
    )

    assert result.report is not None
    assert result.report.status is JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    "path", sorted((ROOT / "events" / "aws").glob("*.json")), ids=lambda p: p.stem
)
def test_every_canonical_service_event_is_routed_to_its_parser(path: Path) -> None:
    event = json.loads(path.read_text(encoding="utf-8"))
    kind = next(k for prefix, k in KIND_OF_PREFIX.items() if path.stem.startswith(prefix))

    parsed = parse_service_event(event)

    assert parsed is not None
    assert parsed.kind == kind
    assert parsed.job_id
    assert AwsTargets.parse_service_event(event) == parsed


def test_events_that_are_not_service_job_events_are_none() -> None:
    signal = json.loads((ROOT / "events" / "signals" / "model_emitted.json").read_text())

    assert parse_service_event(signal) is None
    assert (
        parse_service_event(
            {"source": "aws.ecs", "detail-type": "ECS Container Instance State Change"}
        )
        is None
    )
    assert parse_service_event({}) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Batch and Step Functions: epoch milliseconds; ECS and Lambda: ISO with fractions.
        ("batch_job_running", "detail.startedAt"),
        ("batch_job_succeeded", "detail.stoppedAt"),
        ("ecs_task_running", "detail.startedAt"),
        ("ecs_task_stopped_success", "detail.stoppedAt"),
        ("sfn_execution_running", "detail.startDate"),
        ("sfn_execution_succeeded", "detail.stopDate"),
        ("lambda_invocation_success", "detail.timestamp"),
    ],
)
def test_a_job_events_time_is_the_services_own_not_the_events_second(
    name: str, expected: str
) -> None:
    """EventBridge stamps events to the second; the job's own times are finer, and a try's
    duration is measured between two of them."""
    from skydag.targets.aws._common import parse_time

    event = json.loads((ROOT / "events" / "aws" / f"{name}.json").read_text())
    parsed = parse_service_event(event)
    assert parsed is not None
    assert parsed.at == parse_time(event["detail"][expected.split(".")[1]])
