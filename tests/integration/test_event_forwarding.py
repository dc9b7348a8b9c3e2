"""The dag loader keeps the forwarding rules in step with the loaded DAGs: the default bus's
for AWS events, the skydag bus's for skydag's own notifications (moto: DynamoDB,
EventBridge, SQS)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import boto3
import pytest

from skydag import wiring
from skydag.adapters.forwarding import TARGET_ID, EventBridgeForwardingRules
from skydag.ports import MemoryEventSink, SystemClock
from skydag.service.dag_loader import DagLoaderService, DagObject, LoadOutcome
from skydag.service.forwarding import ForwardingRules
from skydag.settings import Settings
from skydag.signals.forwarding import AWS_EVENTS, FAMILIES, SKYDAG_EVENTS, ForwardedFamily
from skydag.spec.models import DagSpec
from skydag.store.dag_files import DagFileRepository
from skydag.store.repositories import Repositories

BUCKET = "skydag-dags"
RULES = wiring.aws_event_rule_names("skydag")

S3_DAG = """\
dag: on_landing
on:
  - source: [aws.s3]
    detail-type: [Object Created]
    detail: {bucket: {name: [my-data]}, object: {key: [{prefix: incoming/}]}}
tasks:
  ingest: {noop: }
"""
GLUE_DAG = """\
dag: on_glue
tasks:
  wait_glue:
    wait:
      on: {source: [aws.glue], detail-type: [Glue Job State Change], detail: {state: [FAILED]}}
  after: {depends_on: [wait_glue], noop: }
"""
APP_DAG = """\
dag: on_app
on: [{source: [ml.trainer]}]
tasks:
  t: {noop: }
"""
S3_PATTERN = {
    "source": ["aws.s3"],
    "detail-type": ["Object Created"],
    "detail": {"bucket": {"name": ["my-data"]}, "object": {"key": [{"prefix": "incoming/"}]}},
}
GLUE_PATTERN = {
    "source": ["aws.glue"],
    "detail-type": ["Glue Job State Change"],
    "detail": {"state": ["FAILED"]},
}


class _NoSchedules:
    def put_dag_schedule(self, spec: DagSpec, *, enabled: bool) -> None:
        return None

    def delete_dag_schedule(self, dag_id: str) -> None:
        return None


@pytest.fixture
def stack(aws: Settings) -> Settings:
    sqs = boto3.client("sqs", region_name=aws.region)
    arns = {}
    for name in ("skydag-scheduler-queue", "skydag-event-delivery-dlq"):
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arns[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    boto3.client("events", region_name=aws.region).create_event_bus(Name=aws.event_bus)
    return aws.model_copy(
        update={
            "scheduler_queue_arn": arns["skydag-scheduler-queue"],
            "event_delivery_dlq_arn": arns["skydag-event-delivery-dlq"],
        }
    )


def loader(settings: Settings, *forwarding: ForwardingRules) -> DagLoaderService:
    """The loader as the Lambda builds it: every family forwarded, unless told which."""
    return DagLoaderService(
        Repositories(),
        DagFileRepository(),
        _NoSchedules(),
        MemoryEventSink(),
        SystemClock(),
        forwarding=forwarding
        or [EventBridgeForwardingRules(settings, family) for family in FAMILIES],
    )


def put(service: DagLoaderService, name: str, text: str) -> Any:
    return service.file_written(DagObject(BUCKET, f"dags/{name}.yaml"), text.encode())


def delete(service: DagLoaderService, name: str) -> Any:
    return service.file_deleted(DagObject(BUCKET, f"dags/{name}.yaml"))


def rules(family: ForwardedFamily = AWS_EVENTS) -> dict[str, dict[str, Any]]:
    """The family's rules: name -> {"pattern", "state", "targets"} as EventBridge holds
    them."""
    events = boto3.client("events", region_name="us-east-1")
    bus = family.rules.event_bus_name("skydag")
    found = {}
    for name in family.rules.rule_names("skydag"):
        try:
            rule = events.describe_rule(Name=name, EventBusName=bus)
        except events.exceptions.ResourceNotFoundException:
            continue
        found[name] = {
            "pattern": json.loads(rule["EventPattern"]),
            "state": rule["State"],
            "targets": events.list_targets_by_rule(Rule=name, EventBusName=bus)["Targets"],
        }
    return found


def alternatives(pattern: Mapping[str, Any]) -> list[Any]:
    return sorted(pattern.get("$or", [pattern]), key=lambda p: json.dumps(p, sort_keys=True))


def test_a_dag_on_an_s3_event_gets_one_rule_to_the_scheduler_queue(stack: Settings) -> None:
    result = put(loader(stack), "on_landing", S3_DAG)

    assert result.outcome is LoadOutcome.LOADED
    assert result.forwarding == (f"put {RULES[0]}",)
    (rule,) = rules().values()
    assert rule["pattern"] == S3_PATTERN
    assert rule["state"] == "ENABLED"
    assert rule["targets"] == [
        {
            "Id": TARGET_ID,
            "Arn": stack.scheduler_queue_arn,
            "DeadLetterConfig": {"Arn": stack.event_delivery_dlq_arn},
            "RetryPolicy": {
                "MaximumRetryAttempts": wiring.FORWARDING_TARGET.retry_attempts,
                "MaximumEventAgeInSeconds": int(
                    wiring.FORWARDING_TARGET.max_event_age.total_seconds()
                ),
            },
        }
    ]


def test_two_dags_share_the_rule_and_retiring_them_narrows_then_removes_it(
    stack: Settings,
) -> None:
    service = loader(stack)
    put(service, "on_landing", S3_DAG)
    put(service, "on_glue", GLUE_DAG)
    put(service, "on_app", APP_DAG)  # not an AWS source: nothing forwarded for it

    (rule,) = rules().values()
    assert alternatives(rule["pattern"]) == alternatives({"$or": [S3_PATTERN, GLUE_PATTERN]})

    delete(service, "on_landing")
    (rule,) = rules().values()
    assert rule["pattern"] == GLUE_PATTERN

    delete(service, "on_glue")
    assert rules() == {}


def test_loading_the_same_file_again_changes_no_rule(stack: Settings) -> None:
    service = loader(stack)
    put(service, "on_landing", S3_DAG)

    again = put(service, "on_landing", S3_DAG)

    assert again.outcome is LoadOutcome.UNCHANGED
    assert again.forwarding == ()


def test_a_rule_changed_behind_skydags_back_is_put_back(stack: Settings) -> None:
    service = loader(stack)
    put(service, "on_landing", S3_DAG)
    events = boto3.client("events", region_name="us-east-1")
    events.put_rule(Name=RULES[0], EventPattern=json.dumps(GLUE_PATTERN), State="DISABLED")
    events.remove_targets(Rule=RULES[0], Ids=[TARGET_ID])

    put(service, "on_landing", S3_DAG)

    rule = rules()[RULES[0]]
    assert (rule["pattern"], rule["state"], len(rule["targets"])) == (S3_PATTERN, "ENABLED", 1)


class _RacingRules:
    """Forwarding rules whose first ``apply`` is preceded by another loader's whole load:
    the patterns this loader computed are stale when it writes them."""

    def __init__(
        self,
        settings: Settings,
        family: ForwardedFamily,
        other: DagLoaderService,
        other_file: tuple[str, str],
    ) -> None:
        self.rules = EventBridgeForwardingRules(settings, family)
        self.other = other
        self.other_file = other_file
        self.raced = False

    @property
    def family(self) -> ForwardedFamily:
        return self.rules.family

    def apply(self, patterns: Sequence[Mapping[str, Any]]) -> list[str]:
        if not self.raced:
            self.raced = True
            put(self.other, *self.other_file)
        return self.rules.apply(patterns)


def test_two_loaders_racing_end_with_both_dags_forwarded(stack: Settings) -> None:
    other = loader(stack)
    racing = loader(stack, _RacingRules(stack, AWS_EVENTS, other, ("on_glue", GLUE_DAG)))

    put(racing, "on_landing", S3_DAG)

    (rule,) = rules().values()
    assert alternatives(rule["pattern"]) == alternatives({"$or": [S3_PATTERN, GLUE_PATTERN]})


def test_a_dag_whose_patterns_would_overflow_the_rules_is_an_import_error(
    stack: Settings,
) -> None:
    service = loader(stack)
    put(service, "on_landing", S3_DAG)
    keys = [f"incoming/{n}/{'z' * 60}" for n in range(20)]
    patterns = [
        {"source": ["aws.s3"], "detail": {"object": {"key": [*keys, f"k{i}"]}}} for i in range(8)
    ]
    greedy = json.dumps({"dag": "greedy", "on": patterns, "tasks": {"t": {"noop": None}}})

    result = put(service, "greedy", greedy)

    assert result.outcome is LoadOutcome.IMPORT_ERROR
    (error,) = result.errors
    assert "forwarding rules of 2048 characters, over the 5 skydag keeps" in error
    (rule,) = rules().values()
    assert rule["pattern"] == S3_PATTERN


# --- skydag's own notifications, on the skydag bus -------------------------------------------

SKYDAG_RULES = wiring.skydag_event_rule_names("skydag")
AFTER_OTHER_DAG = """\
dag: after_other
on:
  - source: [skydag]
    detail-type: [DagRun State Change]
    detail: {dag: [other], state: [success]}
tasks:
  t: {noop: }
"""
ANY_FAILURE_DAG = """\
dag: any_failure
tasks:
  alert:
    wait:
      on: {detail-type: [Task Instance State Change], detail: {state: [failed]}}
"""
NOT_SKYDAG_DAG = """\
dag: not_skydag
on: [{source: [{anything-but: [skydag]}], detail-type: [DagRun State Change]}]
tasks:
  t: {noop: }
"""
AFTER_OTHER_PATTERN = {
    "source": ["skydag"],
    "detail-type": ["DagRun State Change"],
    "detail": {"dag": ["other"], "state": ["success"]},
}
ANY_FAILURE_PATTERN = {
    "source": ["skydag"],
    "detail-type": ["Task Instance State Change"],
    "detail": {"state": ["failed"]},
}


def received(settings: Settings) -> list[dict[str, Any]]:
    """The events on the scheduler queue (moto's EventBridge delivered them)."""
    sqs = boto3.client("sqs", region_name=settings.region)
    url = sqs.get_queue_url(QueueName="skydag-scheduler-queue")["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def put_skydag_event(settings: Settings, detail_type: str, detail: dict[str, Any]) -> None:
    boto3.client("events", region_name=settings.region).put_events(
        Entries=[
            {
                "EventBusName": settings.event_bus,
                "Source": "skydag",
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
            }
        ]
    )


def test_a_dag_on_another_dags_outcome_gets_one_skydag_bus_rule(stack: Settings) -> None:
    result = put(loader(stack), "after_other", AFTER_OTHER_DAG)

    assert result.forwarding == (f"put {SKYDAG_RULES[0]}",)
    assert rules(AWS_EVENTS) == {}
    (rule,) = rules(SKYDAG_EVENTS).values()
    assert (rule["pattern"], rule["state"]) == (AFTER_OTHER_PATTERN, "ENABLED")
    assert [(t["Id"], t["Arn"]) for t in rule["targets"]] == [
        (TARGET_ID, stack.scheduler_queue_arn)
    ]
    # The rule is on the skydag bus, where the stream processor puts skydag's events.
    put_skydag_event(stack, "DagRun State Change", {"dag": "other", "state": "success"})
    put_skydag_event(stack, "DagRun State Change", {"dag": "mine", "state": "success"})
    put_skydag_event(stack, "Task Instance State Change", {"dag": "other", "state": "running"})
    assert [e["detail"] for e in received(stack)] == [{"dag": "other", "state": "success"}]


def test_no_skydag_subscription_means_no_skydag_rule(stack: Settings) -> None:
    service = loader(stack)
    put(service, "on_landing", S3_DAG)
    put(service, "on_app", APP_DAG)
    put(service, "not_skydag", NOT_SKYDAG_DAG)

    assert rules(SKYDAG_EVENTS) == {}
    put_skydag_event(stack, "DagRun State Change", {"dag": "other", "state": "success"})
    assert received(stack) == []


def test_a_pattern_without_source_is_narrowed_and_leaves_with_its_last_dag(
    stack: Settings,
) -> None:
    service = loader(stack)
    put(service, "after_other", AFTER_OTHER_DAG)
    put(service, "any_failure", ANY_FAILURE_DAG)

    (rule,) = rules(SKYDAG_EVENTS).values()
    assert alternatives(rule["pattern"]) == alternatives(
        {"$or": [AFTER_OTHER_PATTERN, ANY_FAILURE_PATTERN]}
    )

    delete(service, "after_other")
    (rule,) = rules(SKYDAG_EVENTS).values()
    assert rule["pattern"] == ANY_FAILURE_PATTERN

    result = delete(service, "any_failure")
    assert result.outcome is LoadOutcome.RETIRED
    assert rules(SKYDAG_EVENTS) == {}


def test_two_loaders_racing_end_with_both_skydag_patterns_forwarded(stack: Settings) -> None:
    other = loader(stack)
    racing = loader(
        stack,
        EventBridgeForwardingRules(stack, AWS_EVENTS),
        _RacingRules(stack, SKYDAG_EVENTS, other, ("any_failure", ANY_FAILURE_DAG)),
    )

    put(racing, "after_other", AFTER_OTHER_DAG)

    (rule,) = rules(SKYDAG_EVENTS).values()
    assert alternatives(rule["pattern"]) == alternatives(
        {"$or": [AFTER_OTHER_PATTERN, ANY_FAILURE_PATTERN]}
    )


def test_a_dag_overflowing_the_skydag_rules_is_an_import_error_naming_them(
    stack: Settings,
) -> None:
    service = loader(stack)
    put(service, "after_other", AFTER_OTHER_DAG)
    dags = [f"d{n}-{'z' * 60}" for n in range(20)]
    patterns = [{"source": ["skydag"], "detail": {"dag": [*dags, f"k{i}"]}} for i in range(8)]
    greedy = json.dumps({"dag": "greedy", "on": patterns, "tasks": {"t": {"noop": None}}})

    result = put(service, "greedy", greedy)

    assert result.outcome is LoadOutcome.IMPORT_ERROR
    (error,) = result.errors
    assert "skydag event patterns need" in error
    assert "over the 5 skydag keeps" in error
    (rule,) = rules(SKYDAG_EVENTS).values()
    assert rule["pattern"] == AFTER_OTHER_PATTERN
