"""The emit target against moto: the event lands on the bus and the task succeeds at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from skydag.engine.models import JobStatus
from skydag.spec.models import EmitTarget
from skydag.targets.aws import EventEmitter
from skydag.targets.base import DispatchError, DispatchRequest, JobRef

MakeRequest = Callable[..., DispatchRequest]
JobRefFor = Callable[[DispatchRequest, str | None], JobRef]
BUS = "skydag"


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 11, 22, 0, 30, tzinfo=UTC)


def emit_target(**keys: Any) -> dict[str, Any]:
    keys.setdefault("detail-type", "extract.done")
    return EmitTarget.model_validate(keys).model_dump(by_alias=True, mode="json")


@pytest.fixture
def events(mocked_aws: None, aws_client: Callable[[str], Any]) -> Any:
    client = aws_client("events")
    client.create_event_bus(Name=BUS)
    return client


@pytest.fixture
def seen(events: Any, aws_client: Callable[[str], Any]) -> Callable[[], list[dict[str, Any]]]:
    """What reached the bus: a rule copies every event to a queue, read by the result."""
    sqs = aws_client("sqs")
    queue_url = sqs.create_queue(QueueName="seen")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    pattern = json.dumps({"source": [{"prefix": ""}]})
    events.put_rule(Name="all", EventBusName=BUS, EventPattern=pattern)
    events.put_targets(
        Rule="all",
        EventBusName=BUS,
        Targets=[{"Id": "seen", "Arn": attributes["Attributes"]["QueueArn"]}],
    )

    def received() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]

    return received


def test_dispatch_puts_the_event_and_succeeds_at_once(
    events: Any, seen: Callable[[], list[dict[str, Any]]], make_request: MakeRequest
) -> None:
    request = make_request("emit", emit_target(detail={"rows": 3}))

    result = EventEmitter(events, BUS, clock=FixedClock()).dispatch(request)

    [event] = seen()
    assert event["source"] == "skydag.dag.etl"
    assert event["detail-type"] == "extract.done"
    assert event["detail"] == {"rows": 3}
    assert result.job_id == event["id"]
    assert result.report is not None
    assert result.report.status is JobStatus.SUCCEEDED
    assert (result.report.job_id, result.report.exit_code) == (event["id"], 0)
    assert result.report.at == FixedClock().now()


@pytest.mark.parametrize("source", ["etl.extract", "etl.extract.rows", "skydag.dag.etl.step"])
def test_the_source_can_be_given_under_a_declared_prefix_or_the_dags_own(
    events: Any, seen: Callable[[], list[dict[str, Any]]], make_request: MakeRequest, source: str
) -> None:
    request = replace(
        make_request("emit", emit_target(source=source)), emit_sources=("etl.extract",)
    )
    EventEmitter(events, BUS).dispatch(request)

    [event] = seen()
    assert event["source"] == source


# The rendered block, as the dispatcher hands it over: a template made these sources.
@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ({"source": "skydag.command", "detail-type": "Cancel Run"}, "'skydag.command' is reserved"),
        ({"source": "skydag", "detail-type": "DagRun State Change"}, "'skydag' is reserved"),
        ({"source": "lambda", "detail-type": "x"}, "'lambda' is reserved"),
        ({"source": "aws.batch", "detail-type": "x"}, "'aws.batch' is reserved"),
        ({"source": "skydag.dag.other", "detail-type": "x"}, "'skydag.dag.other' is reserved"),
        ({"source": "etl.extractor", "detail-type": "x"}, "not under this DAG's namespace"),
        ({"source": "etl.extract", "detail-type": ""}, "detail-type is empty"),
        ({"detail-type": "x" * 129}, "detail-type is 129 characters long"),
        ({"detail-type": "big", "detail": {"x": "y" * 262144}}, "limit 262144"),
    ],
)
def test_a_refused_rendered_block_puts_nothing_and_is_not_retried(
    events: Any,
    seen: Callable[[], list[dict[str, Any]]],
    make_request: MakeRequest,
    target: dict[str, Any],
    reason: str,
) -> None:
    request = replace(make_request("emit", target), emit_sources=("etl.extract",))

    with pytest.raises(DispatchError) as raised:
        EventEmitter(events, BUS).dispatch(request)

    assert raised.value.retryable is False
    assert raised.value.reason.startswith("emit refused: ")
    assert reason in raised.value.reason
    assert "\n" not in raised.value.reason
    assert seen() == []


def test_describe_and_cancel(events: Any, make_request: MakeRequest, job_ref: JobRefFor) -> None:
    request = make_request("emit", emit_target())
    emitter = EventEmitter(events, BUS)
    event_id = emitter.dispatch(request).job_id

    described = emitter.describe(job_ref(request, event_id))
    emitter.cancel(job_ref(request, event_id), "too late")  # nothing to stop: no error

    assert described is not None
    assert described.status is JobStatus.SUCCEEDED
    assert emitter.describe(job_ref(request, None)) is None


@pytest.mark.parametrize(
    ("code", "retryable"), [("ThrottlingException", True), ("InvalidArgument", False)]
)
def test_a_failed_entry_is_a_dispatch_error(
    aws_client: Callable[[str], Any], make_request: MakeRequest, code: str, retryable: bool
) -> None:
    client = aws_client("events")
    with Stubber(client) as stubber:
        stubber.add_response(
            "put_events",
            {"FailedEntryCount": 1, "Entries": [{"ErrorCode": code, "ErrorMessage": "no"}]},
        )

        with pytest.raises(DispatchError, match=f"events PutEvents .*{code}: no") as raised:
            EventEmitter(client, BUS).dispatch(make_request("emit", emit_target()))

    assert raised.value.retryable is retryable


def test_a_throttled_call_is_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client("events", "put_events", "ThrottlingException", 400)

    with pytest.raises(DispatchError) as raised:
        EventEmitter(client, BUS).dispatch(make_request("emit", emit_target()))

    assert raised.value.retryable
