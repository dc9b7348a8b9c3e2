"""Lambda target against moto: asynchronous invocation with the try's identity, and the
destination events that report its outcome."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from botocore.stub import Stubber

from skydag.engine.models import JobStatus
from skydag.spec.models import LambdaTarget
from skydag.targets.aws import LambdaInvocations, MalformedEvent
from skydag.targets.aws.lambda_ import parse_event
from skydag.targets.base import DispatchError, DispatchRequest, JobRef

MakeRequest = Callable[..., DispatchRequest]
JobRefFor = Callable[[DispatchRequest, str | None], JobRef]


def lambda_target(**keys: Any) -> dict[str, Any]:
    block = LambdaTarget(function_name="etl-extract", **keys)
    return block.model_dump(by_alias=True, mode="json")


@pytest.fixture
def lambda_client(mocked_aws: None, aws_client: Callable[[str], Any]) -> Any:
    role = aws_client("iam").create_role(RoleName="fn", AssumeRolePolicyDocument="{}")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return event\n")
    client = aws_client("lambda")
    client.create_function(
        FunctionName="etl-extract",
        Runtime="python3.11",
        Role=role["Role"]["Arn"],
        Handler="index.handler",
        Code={"ZipFile": code.getvalue()},
    )
    return client


def sent_payload(calls: Any) -> Any:
    [invoke] = calls.of("Invoke")
    assert invoke["InvocationType"] == "Event"
    return json.loads(invoke["Payload"])


def test_dispatch_invokes_asynchronously_with_the_tries_identity(
    lambda_client: Any, make_request: MakeRequest, recorder: Callable[[Any], Any]
) -> None:
    request = make_request(
        "lambda", lambda_target(qualifier="$LATEST", payload={"date": "2026-11-22"})
    )
    calls = recorder(lambda_client)

    result = LambdaInvocations(lambda_client).dispatch(request)

    assert result.job_id  # the invocation's request id
    assert result.report is None  # the outcome comes from the destination event
    [invoke] = calls.of("Invoke")
    assert (invoke["FunctionName"], invoke["Qualifier"]) == ("etl-extract", "$LATEST")
    assert sent_payload(calls) == {
        "date": "2026-11-22",
        "skydag": {
            "dag": "etl",
            "run": request.run_id,
            "task": "extract",
            "try": 1,
            "token": request.token,
        },
    }


@pytest.mark.parametrize(
    ("payload", "expected_extra"),
    [("just text", {"payload": "just text"}), (None, {})],
)
def test_a_payload_that_is_not_an_object_is_sent_beside_the_identity(
    lambda_client: Any,
    make_request: MakeRequest,
    recorder: Callable[[Any], Any],
    payload: Any,
    expected_extra: dict[str, Any],
) -> None:
    request = make_request("lambda", lambda_target(payload=payload))
    calls = recorder(lambda_client)

    LambdaInvocations(lambda_client).dispatch(request)

    sent = sent_payload(calls)
    assert sent["skydag"]["token"] == request.token
    assert {k: v for k, v in sent.items() if k != "skydag"} == expected_extra


def test_a_repeated_dispatch_invokes_again(
    lambda_client: Any, make_request: MakeRequest, recorder: Callable[[Any], Any]
) -> None:
    # Lambda has no idempotency key for asynchronous invocations (docs/targets.md):
    # the function deduplicates on skydag.token, which both invocations carry.
    request = make_request("lambda", lambda_target())
    calls = recorder(lambda_client)

    first = LambdaInvocations(lambda_client).dispatch(request)
    second = LambdaInvocations(lambda_client).dispatch(request)

    assert first.job_id != second.job_id
    tokens = [json.loads(c["Payload"])["skydag"]["token"] for c in calls.of("Invoke")]
    assert tokens == [request.token, request.token]


def test_describe_knows_nothing_and_cancel_only_logs(
    lambda_client: Any,
    make_request: MakeRequest,
    job_ref: JobRefFor,
    recorder: Callable[[Any], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = make_request("lambda", lambda_target())
    invocations = LambdaInvocations(lambda_client)
    job = job_ref(request, invocations.dispatch(request).job_id)
    calls = recorder(lambda_client)

    with caplog.at_level(logging.WARNING):
        invocations.cancel(job, "run cancelled")

    assert invocations.describe(job) is None
    assert invocations.describe(job_ref(request, None), target=request.target) is None
    assert calls.calls == []
    assert "cannot cancel Lambda invocation" in caplog.text


def test_throttling_is_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client("lambda", "invoke", "TooManyRequestsException", 429, "Rate")

    with pytest.raises(DispatchError) as raised:
        LambdaInvocations(client).dispatch(make_request("lambda", lambda_target()))

    assert raised.value.retryable


def test_a_missing_function_is_not_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client(
        "lambda", "invoke", "ResourceNotFoundException", 404, "Function not found"
    )

    with pytest.raises(DispatchError, match=r"lambda Invoke \(function etl-extract\)") as raised:
        LambdaInvocations(client).dispatch(make_request("lambda", lambda_target()))

    assert not raised.value.retryable
    assert "Function not found" in raised.value.reason


def test_parse_success(load_event: Callable[..., dict[str, Any]]) -> None:
    token = "0123456789abcdef0123456789abcdef"

    event = parse_event(load_event("lambda_invocation_success", token=token))

    assert event is not None
    assert (event.kind, event.status, event.token) == ("lambda", JobStatus.SUCCEEDED, token)
    assert event.job_id == "c2a6f2ae-7dbb-4d22-8782-d0485c9877e2"
    assert event.output == {"rows": 120934, "location": "s3://etl-data/extract/2026-11-22/"}
    assert event.reason is None


def test_parse_failure(load_event: Callable[..., dict[str, Any]]) -> None:
    token = "0123456789abcdef0123456789abcdef"

    event = parse_event(load_event("lambda_invocation_failure", token=token))

    assert event is not None
    assert (event.status, event.token) == (JobStatus.FAILED, token)
    assert event.reason == (
        "RetriesExhausted: LockedError: Table orders is locked by another loader"
    )
    assert event.output is None


def test_an_invocation_skydag_did_not_make_has_no_token(
    load_event: Callable[..., dict[str, Any]],
) -> None:
    event = load_event("lambda_invocation_success")
    event["detail"]["requestPayload"] = {"date": "2026-11-22"}

    parsed = parse_event(event)

    assert parsed is not None
    assert parsed.token is None


def test_other_events_are_not_lambdas(load_event: Callable[..., dict[str, Any]]) -> None:
    assert parse_event(load_event("sfn_execution_succeeded")) is None


def test_a_malformed_event_is_a_clear_error(
    load_event: Callable[..., dict[str, Any]],
    without: Callable[[dict[str, Any], str], dict[str, Any]],
) -> None:
    with pytest.raises(MalformedEvent, match="requestContext"):
        parse_event(without(load_event("lambda_invocation_failure"), "requestContext"))
