"""The Lambda player: invocations the real adapter makes run locally and report through
Lambda's destination events on the skydag bus."""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from skydag import joblogs
from skydag.engine.models import JobStatus
from skydag.localcloud.players.lambda_ import LambdaPlayer
from skydag.targets.aws.lambda_ import FAILURE, SUCCESS, LambdaInvocations, parse_event
from skydag.targets.base import JobEvent

if TYPE_CHECKING:
    from conftest import RecordingContext

# The player the conftest's ``player`` fixture installs.
PLAYER = LambdaPlayer
TARGET = {"function_name": "etl-extract", "payload": {"date": "2026-11-22"}}
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:etl-extract"


@pytest.fixture
def invocations(context: RecordingContext, player: LambdaPlayer) -> LambdaInvocations:
    """The real adapter, on a function the player's stand-ins created."""
    player.ensure_resources(TARGET)
    return LambdaInvocations(context.client("lambda"))


def results(context: RecordingContext) -> list[str]:
    return [e.detail_type for e in context.events if e.detail_type in (SUCCESS, FAILURE)]


def parsed(context: RecordingContext, index: int) -> JobEvent:
    event = parse_event(context.as_eventbridge(context.events[index]))
    assert event is not None
    return event


def function_streams(context: RecordingContext) -> list[str]:
    logs = context.client("logs")
    found = logs.describe_log_streams(logGroupName="/aws/lambda/etl-extract")["logStreams"]
    return [str(stream["logStreamName"]) for stream in found]


def test_a_stand_in_succeeds_with_its_output_as_the_response_payload(
    context: RecordingContext,
    player: LambdaPlayer,
    invocations: LambdaInvocations,
    kit: Any,
) -> None:
    output = {"rows": 120934, "location": "s3://etl-data/extract/2026-11-22/"}
    request = kit.planned(TARGET, {"duration": "0.2s", "output": output})
    request_id = invocations.dispatch(request).job_id
    assert request_id is not None
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)

    kit.pump_until(player.poll, lambda: results(context) == [SUCCESS], timeout=2)
    success = context.events[-1]
    assert (success.source, success.bus) == ("lambda", "skydag")
    assert success.resources == [
        "arn:aws:events:us-east-1:123456789012:event-bus/skydag",
        f"{FUNCTION_ARN}:$LATEST",
    ]
    model = kit.canonical("lambda_invocation_success")
    assert kit.shape(success.detail) == kit.shape(model["detail"])
    assert success.detail["requestPayload"]["date"] == "2026-11-22"
    assert parsed(context, -1) == JobEvent(
        "lambda",
        JobStatus.SUCCEEDED,
        request.token,
        request_id,
        output=output,
        at=parsed(context, -1).at,
    )
    [stream] = function_streams(context)
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", stream)
    lines = kit.log_messages(context, "/aws/lambda/etl-extract", stream)
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert lines[1].startswith("stand-in: exited 0 after 0.")
    assert lines[2] == f"END RequestId: {request_id}"
    assert lines[3].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    local = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, local) == [lines[1]]


def test_a_command_exiting_3_fails_with_the_exit_status_and_last_output_line(
    context: RecordingContext,
    player: LambdaPlayer,
    invocations: LambdaInvocations,
    kit: Any,
) -> None:
    script = "import sys; print('loading orders'); print('table orders is locked'); sys.exit(3)"
    request = kit.planned(TARGET, {"command": ["python", "-c", script]})
    request_id = invocations.dispatch(request).job_id

    kit.pump_until(player.poll, lambda: results(context) == [FAILURE], timeout=2)
    failure = context.events[-1]
    assert kit.missing(failure.detail, "lambda_invocation_failure") == []
    assert failure.detail["requestContext"]["condition"] == "RetriesExhausted"
    assert failure.detail["responsePayload"]["errorType"] == "Runtime.ExitError"
    event = parsed(context, -1)
    assert (event.status, event.token, event.job_id, event.output) == (
        JobStatus.FAILED,
        request.token,
        request_id,
        None,
    )
    assert event.reason == (
        "RetriesExhausted: Runtime.ExitError: "
        "Runtime exited with error: exit status 3: table orders is locked"
    )
    [stream] = function_streams(context)
    lines = kit.log_messages(context, "/aws/lambda/etl-extract", stream)
    assert lines[1:3] == ["loading orders", "table orders is locked"]
    local = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, local) == lines[1:3]
    said = context.lines[-1]
    assert "exit code 3" in said
    assert ".log" in said


def test_a_command_that_succeeds_has_no_output(
    context: RecordingContext,
    player: LambdaPlayer,
    invocations: LambdaInvocations,
    kit: Any,
) -> None:
    command = [sys.executable, "-c", "print('done')"]
    request = kit.planned(TARGET, {"command": command})
    invocations.dispatch(request)

    kit.pump_until(player.poll, lambda: results(context) == [SUCCESS], timeout=2)
    assert context.events[-1].detail["responsePayload"] is None
    assert parsed(context, -1).output is None


def test_a_stand_in_with_outcome_failed_fails_after_its_duration(
    context: RecordingContext,
    player: LambdaPlayer,
    invocations: LambdaInvocations,
    kit: Any,
) -> None:
    request = kit.planned(TARGET, {"duration": "0.3s", "outcome": "failed"})
    started = time.monotonic()
    invocations.dispatch(request)

    kit.pump_until(player.poll, lambda: results(context) == [FAILURE], timeout=2)
    assert time.monotonic() - started >= 0.3
    event = parsed(context, -1)
    assert event.status is JobStatus.FAILED
    assert (
        event.reason
        == "RetriesExhausted: Runtime.ExitError: Runtime exited with error: exit status 1"
    )


def test_invocations_of_no_try_are_dropped_after_a_grace_period(
    context: RecordingContext,
    player: LambdaPlayer,
    invocations: LambdaInvocations,
    kit: Any,
) -> None:
    client = context.client("lambda")
    stale = b'{"skydag": {"token": "00000000000000000000000000000000"}}'
    response = client.invoke(FunctionName="etl-extract", InvocationType="Event", Payload=stale)
    assert response["StatusCode"] == 202
    # Asked again on each poll for a moment (the try's row may not be readable yet).
    deadline = time.monotonic() + player.claim_grace + 0.1
    kit.pump_until(player.poll, lambda: time.monotonic() > deadline, timeout=2)
    assert context.events == []
    assert context.lines == []
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="missing", InvocationType="Event", Payload=stale)


def test_ensure_resources_creates_the_function_its_versions_and_aliases_once(
    context: RecordingContext,
    player: LambdaPlayer,
    kit: Any,
) -> None:
    assert player.ensure_resources({"function_name": "loader", "qualifier": "2"}) == [
        "iam role skydag-local-lambda (Lambda execution role)",
        "lambda function loader (python3.12 stand-in)",
        "lambda function loader (version 1-2)",
    ]
    assert player.ensure_resources({"function_name": "loader:live"}) == [
        "lambda alias loader:live (to $LATEST)"
    ]
    assert player.ensure_resources({"function_name": f"{FUNCTION_ARN[:-11]}loader:2"}) == []
    assert player.ensure_resources({"function_name": "{{ params.function }}"}) == []
    refused = player.ensure_resources({"function_name": "loader", "qualifier": "101"})
    assert len(refused) == 1
    assert "not created" in refused[0]

    target = {"function_name": "loader", "qualifier": "2"}
    request = kit.planned(target)
    request_id = LambdaInvocations(context.client("lambda")).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: results(context) == [SUCCESS], timeout=2)
    success = context.events[-1]
    assert success.detail["requestContext"]["requestId"] == request_id
    assert success.detail["requestContext"]["functionArn"].endswith(":function:loader:2")
    assert success.detail["responseContext"]["executedVersion"] == "2"


def test_uninstall_restores_moto(context: RecordingContext) -> None:
    from moto.awslambda.models import LambdaBackend
    from moto.awslambda.responses import LambdaResponse
    from moto.awslambda_simple.models import LambdaSimpleBackend

    owners = [(LambdaBackend, "invoke"), (LambdaSimpleBackend, "invoke")]
    before = {owner: owner.__dict__[name] for owner, name in owners}
    played = LambdaPlayer()
    played.install(context, None)
    assert "call_action" in LambdaResponse.__dict__
    played.uninstall()
    assert {owner: owner.__dict__[name] for owner, name in owners} == before
    assert "call_action" not in LambdaResponse.__dict__
