"""EMR Serverless target against moto: client token and name lookup, describe, cancel.

moto ignores StartJobRun's client token (AWS honours it) and ends every run at once with
SUCCESS: the re-attach tests exercise the name lookup, running runs use the Stubber.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from skydag.engine.models import JobStatus
from skydag.spec.models import EmrServerlessTarget
from skydag.targets.aws import EmrServerlessRuns, MalformedEvent
from skydag.targets.aws.emr_serverless import parse_event
from skydag.targets.base import DispatchError, DispatchRequest, JobRef
from skydag.wiring import DEPLOYMENT_TAG

MakeRequest = Callable[..., DispatchRequest]
JobRefFor = Callable[[DispatchRequest, str | None], JobRef]
ROLE = "arn:aws:iam::123456789012:role/etl-emr-serverless"
DRIVER = {"sparkSubmit": {"entryPoint": "s3://etl-code/extract.py", "entryPointArguments": ["x"]}}


def serverless_target(application_id: str, **keys: Any) -> dict[str, Any]:
    block = EmrServerlessTarget(
        application_id=application_id, execution_role_arn=ROLE, job_driver=DRIVER, **keys
    )
    return block.model_dump(by_alias=True, mode="json")


@pytest.fixture
def emr_serverless(mocked_aws: None, aws_client: Callable[[str], Any]) -> Any:
    return aws_client("emr-serverless")


@pytest.fixture
def application_id(emr_serverless: Any) -> str:
    application: str = emr_serverless.create_application(
        name="etl", releaseLabel="emr-7.5.0", type="SPARK"
    )["applicationId"]
    return application


def runs_of(client: Any, application_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = client.list_job_runs(applicationId=application_id)["jobRuns"]
    return runs


def test_dispatch_starts_one_run_with_the_tries_parameters(
    emr_serverless: Any,
    application_id: str,
    make_request: MakeRequest,
    recorder: Callable[[Any], Any],
) -> None:
    target = serverless_target(
        application_id,
        configuration_overrides={"monitoringConfiguration": {}},
        execution_timeout="90m",
        tags={"team": "data"},
    )
    request = make_request("emr_serverless", target)
    calls = recorder(emr_serverless)

    result = EmrServerlessRuns(emr_serverless).dispatch(request)

    [run] = runs_of(emr_serverless, application_id)
    assert result.job_id == f"{application_id}/{run['id']}"
    described = emr_serverless.get_job_run(applicationId=application_id, jobRunId=run["id"])
    job_run = described["jobRun"]
    assert job_run["name"] == request.job_name
    assert job_run["executionRole"] == ROLE
    assert job_run["jobDriver"] == DRIVER
    assert job_run["executionTimeoutMinutes"] == 90
    assert job_run["tags"]["team"] == "data"
    assert job_run["tags"]["skydag:token"] == request.token
    [sent] = calls.of("StartJobRun")
    assert sent["clientToken"] == request.token  # AWS's own idempotency key
    assert sent["configurationOverrides"] == {"monitoringConfiguration": {}}


def test_the_run_carries_the_deployment_tag_which_no_user_tag_overrides(
    emr_serverless: Any, application_id: str, make_request: MakeRequest
) -> None:
    """IAM lets skydag cancel and tag only runs with this tag (docs/security.md)."""
    target = serverless_target(application_id, tags={DEPLOYMENT_TAG: "someone-else"})
    runs = EmrServerlessRuns(emr_serverless, deployment="skydag-prod")

    job_id = runs.dispatch(make_request("emr_serverless", target)).job_id

    assert job_id is not None
    run_id = job_id.split("/")[1]
    job_run = emr_serverless.get_job_run(applicationId=application_id, jobRunId=run_id)["jobRun"]
    assert job_run["tags"][DEPLOYMENT_TAG] == "skydag-prod"


def test_dispatch_again_with_the_same_token_reattaches(
    emr_serverless: Any, application_id: str, make_request: MakeRequest
) -> None:
    request = make_request("emr_serverless", serverless_target(application_id))
    first = EmrServerlessRuns(emr_serverless).dispatch(request)

    second = EmrServerlessRuns(emr_serverless).dispatch(request)

    assert second.job_id == first.job_id
    assert len(runs_of(emr_serverless, application_id)) == 1


def test_a_new_try_starts_a_new_run(
    emr_serverless: Any, application_id: str, make_request: MakeRequest
) -> None:
    target = serverless_target(application_id)
    first = EmrServerlessRuns(emr_serverless).dispatch(make_request("emr_serverless", target))
    second = EmrServerlessRuns(emr_serverless).dispatch(
        make_request("emr_serverless", target, try_number=2)
    )

    assert second.job_id != first.job_id
    assert len(runs_of(emr_serverless, application_id)) == 2


def test_the_tasks_timeout_is_at_least_the_services_minimum(
    emr_serverless: Any,
    application_id: str,
    make_request: MakeRequest,
) -> None:
    request = make_request(
        "emr_serverless", serverless_target(application_id), timeout=timedelta(seconds=90)
    )

    job_id = EmrServerlessRuns(emr_serverless).dispatch(request).job_id

    assert job_id is not None
    run = emr_serverless.get_job_run(applicationId=application_id, jobRunId=job_id.split("/")[1])
    assert run["jobRun"]["executionTimeoutMinutes"] == 5


def test_describe_by_job_id_and_by_token(
    emr_serverless: Any, application_id: str, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("emr_serverless", serverless_target(application_id))
    runs = EmrServerlessRuns(emr_serverless)
    job_id = runs.dispatch(request).job_id

    by_id = runs.describe(job_ref(request, job_id))
    by_token = runs.describe(job_ref(request, None), target=request.target)

    assert by_id is not None
    assert by_id.status is JobStatus.SUCCEEDED  # moto ends runs at once
    assert by_id.job_id == job_id
    assert by_token == by_id
    assert runs.describe(job_ref(request, f"{application_id}/unknown")) is None


def test_describe_and_cancel_a_running_run(
    aws_client: Callable[[str], Any], make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    client = aws_client("emr-serverless")
    running = {
        "jobRun": {
            "applicationId": "00f1982r1uukb925",
            "jobRunId": "00f1cbn5g4bb0c01",
            "arn": "arn:aws:emr-serverless:us-east-1:123456789012:/applications/a/jobruns/r",
            "createdBy": "arn:aws:iam::123456789012:role/skydag",
            "createdAt": "2026-11-22T00:00:00Z",
            "updatedAt": "2026-11-22T00:01:00Z",
            "executionRole": ROLE,
            "state": "RUNNING",
            "stateDetails": "Job run is running",
            "releaseLabel": "emr-7.5.0",
            "jobDriver": DRIVER,
        }
    }
    job = job_ref(
        make_request("emr_serverless", serverless_target("00f1982r1uukb925")),
        "00f1982r1uukb925/00f1cbn5g4bb0c01",
    )
    with Stubber(client) as stubber:
        stubber.add_response("get_job_run", running)
        stubber.add_response("get_job_run", running)
        stubber.add_response(
            "cancel_job_run",
            {"applicationId": "00f1982r1uukb925", "jobRunId": "00f1cbn5g4bb0c01"},
            {"applicationId": "00f1982r1uukb925", "jobRunId": "00f1cbn5g4bb0c01"},
        )

        described = EmrServerlessRuns(client).describe(job)
        EmrServerlessRuns(client).cancel(job, "run cancelled")

        stubber.assert_no_pending_responses()
    assert described is not None
    assert described.status is JobStatus.RUNNING


def test_cancel_a_finished_run_does_nothing(
    emr_serverless: Any,
    application_id: str,
    make_request: MakeRequest,
    job_ref: JobRefFor,
    recorder: Callable[[Any], Any],
) -> None:
    request = make_request("emr_serverless", serverless_target(application_id))
    runs = EmrServerlessRuns(emr_serverless)
    job_id = runs.dispatch(request).job_id
    calls = recorder(emr_serverless)

    runs.cancel(job_ref(request, job_id), "too late")

    assert calls.of("CancelJobRun") == []


def test_throttling_is_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client("emr-serverless", "list_job_runs", "ThrottlingException", 429)

    with pytest.raises(DispatchError) as raised:
        EmrServerlessRuns(client).dispatch(make_request("emr_serverless", serverless_target("a")))

    assert raised.value.retryable


def test_an_unknown_application_is_a_clear_error(
    emr_serverless: Any, make_request: MakeRequest
) -> None:
    with pytest.raises(DispatchError, match="emr-serverless StartJobRun") as raised:
        EmrServerlessRuns(emr_serverless).dispatch(
            make_request("emr_serverless", serverless_target("nope"))
        )

    assert not raised.value.retryable
    assert "nope" in raised.value.reason


@pytest.mark.parametrize(
    ("name", "status", "has_name"),
    [
        ("emr_serverless_job_run_running", JobStatus.RUNNING, False),
        ("emr_serverless_job_run_success", JobStatus.SUCCEEDED, True),
        ("emr_serverless_job_run_failed", JobStatus.FAILED, True),
        ("emr_serverless_job_run_cancelled", JobStatus.STOPPED, True),
    ],
)
def test_parse_event(
    load_event: Callable[..., dict[str, Any]], name: str, status: JobStatus, has_name: bool
) -> None:
    token = "0123456789abcdef0123456789abcdef"

    event = parse_event(load_event(name, token=token))

    assert event is not None
    assert (event.kind, event.status) == ("emr_serverless", status)
    assert event.job_id == "00f1982r1uukb925/00f1cbn5g4bb0c01"
    # AWS's documented example carries no run name: then only the job id finds the try.
    assert event.token == (token if has_name else None)
    assert (event.reason is None) == (status in (JobStatus.RUNNING, JobStatus.SUCCEEDED))


def test_intermediate_states_and_other_events_are_not_reported(
    load_event: Callable[..., dict[str, Any]],
) -> None:
    cancelling = load_event("emr_serverless_job_run_cancelled")
    cancelling["detail"]["state"] = "CANCELLING"

    assert parse_event(cancelling) is None
    assert parse_event(load_event("emr_step_running")) is None


def test_a_malformed_event_is_a_clear_error(
    load_event: Callable[..., dict[str, Any]],
    without: Callable[[dict[str, Any], str], dict[str, Any]],
) -> None:
    with pytest.raises(MalformedEvent, match=r"detail\.applicationId"):
        parse_event(without(load_event("emr_serverless_job_run_failed"), "applicationId"))
