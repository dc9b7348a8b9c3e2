"""EMR on EC2 target against moto: idempotent steps, clusters by name, describe, cancel.

moto keeps steps PENDING/RUNNING forever and does not implement CancelSteps: finished
steps and cancellation are exercised with botocore's Stubber instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from skydag.engine.models import JobStatus
from skydag.spec.models import EmrTarget
from skydag.targets.aws import EmrSteps, MalformedEvent
from skydag.targets.aws.emr import parse_event
from skydag.targets.base import DispatchError, DispatchRequest, JobRef

MakeRequest = Callable[..., DispatchRequest]
JobRefFor = Callable[[DispatchRequest, str | None], JobRef]


def emr_target(**keys: Any) -> dict[str, Any]:
    keys.setdefault(
        "step",
        {"args": ["spark-submit", "s3://etl-code/extract.py", "--date", "2026-11-22"]},
    )
    return EmrTarget.model_validate(keys).model_dump(by_alias=True, mode="json")


def start_cluster(client: Any, name: str) -> str:
    cluster: str = client.run_job_flow(
        Name=name,
        ReleaseLabel="emr-7.5.0",
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "SlaveInstanceType": "m5.xlarge",
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    return cluster


@pytest.fixture
def emr(mocked_aws: None, aws_client: Callable[[str], Any]) -> Any:
    return aws_client("emr")


@pytest.fixture
def cluster_id(emr: Any) -> str:
    return start_cluster(emr, "analytics")


def steps_of(client: Any, cluster_id: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = client.list_steps(ClusterId=cluster_id)["Steps"]
    return steps


# --- dispatch --------------------------------------------------------------------------------


def test_dispatch_adds_one_step_named_after_the_try(
    emr: Any, cluster_id: str, make_request: MakeRequest, recorder: Callable[[Any], Any]
) -> None:
    target = emr_target(
        cluster_id=cluster_id,
        step={
            "jar": "s3://etl-code/extract.jar",
            "main_class": "com.example.Extract",
            "args": ["--date", "2026-11-22"],
            "action_on_failure": "CANCEL_AND_WAIT",
        },
    )
    request = make_request("emr", target)
    calls = recorder(emr)

    result = EmrSteps(emr).dispatch(request)

    [step] = steps_of(emr, cluster_id)
    assert result.job_id == f"{cluster_id}/{step['Id']}"
    assert step["Name"] == request.job_name
    assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"
    assert step["Config"]["Jar"] == "s3://etl-code/extract.jar"
    assert step["Config"]["Args"] == ["--date", "2026-11-22"]
    # moto does not keep MainClass: check what was sent.
    [sent] = calls.of("AddJobFlowSteps")
    assert sent["Steps"][0]["HadoopJarStep"]["MainClass"] == "com.example.Extract"


def test_dispatch_again_with_the_same_token_reattaches(
    emr: Any, cluster_id: str, make_request: MakeRequest
) -> None:
    request = make_request("emr", emr_target(cluster_id=cluster_id))
    first = EmrSteps(emr).dispatch(request)

    second = EmrSteps(emr).dispatch(request)

    assert second.job_id == first.job_id
    assert len(steps_of(emr, cluster_id)) == 1


def test_a_first_call_adds_its_step_without_listing_steps(
    emr: Any, cluster_id: str, make_request: MakeRequest, recorder: Callable[[Any], Any]
) -> None:
    calls = recorder(emr)
    request = replace(make_request("emr", emr_target(cluster_id=cluster_id)), first_call=True)

    EmrSteps(emr).dispatch(request)

    assert calls.of("ListSteps") == []
    assert len(steps_of(emr, cluster_id)) == 1


def test_a_new_try_adds_a_new_step(emr: Any, cluster_id: str, make_request: MakeRequest) -> None:
    target = emr_target(cluster_id=cluster_id)
    first = EmrSteps(emr).dispatch(make_request("emr", target))
    second = EmrSteps(emr).dispatch(make_request("emr", target, try_number=2))

    assert second.job_id != first.job_id
    assert len(steps_of(emr, cluster_id)) == 2


def test_a_named_step_keeps_the_skydag_prefix_and_the_token(
    emr: Any, cluster_id: str, make_request: MakeRequest
) -> None:
    request = make_request("emr", emr_target(cluster_id=cluster_id, step={"name": "extract"}))

    EmrSteps(emr).dispatch(request)

    [step] = steps_of(emr, cluster_id)
    assert step["Name"] == f"skydag-extract-{request.token}"


def test_the_name_lookup_stops_at_the_first_step_older_than_its_window(
    aws_client: Callable[[str], Any], make_request: MakeRequest
) -> None:
    client = aws_client("emr")
    old_step = {
        "Id": "s-OLD",
        "Name": "someone-elses-step",
        "Status": {"State": "COMPLETED", "Timeline": {"CreationDateTime": datetime(2026, 1, 1)}},
    }
    with Stubber(client) as stubber:
        # More pages would follow (Marker), but ListSteps lists the newest first: a step
        # older than the window ends the search without reading them.
        stubber.add_response("list_steps", {"Steps": [old_step], "Marker": "page-2"})
        stubber.add_response("add_job_flow_steps", {"StepIds": ["s-NEW"]})

        result = EmrSteps(client, now=lambda: datetime(2026, 11, 22, tzinfo=UTC)).dispatch(
            make_request("emr", emr_target(cluster_id="j-1"))
        )

        stubber.assert_no_pending_responses()
    assert result.job_id == "j-1/s-NEW"


def test_a_cluster_is_found_by_its_name(emr: Any, make_request: MakeRequest) -> None:
    start_cluster(emr, "reporting")
    cluster_id = start_cluster(emr, "analytics")

    result = EmrSteps(emr).dispatch(make_request("emr", emr_target(cluster_name="analytics")))

    assert result.job_id is not None
    assert result.job_id.startswith(f"{cluster_id}/")


@pytest.mark.parametrize(("clusters", "message"), [(0, "no active cluster"), (2, "2 active")])
def test_a_cluster_name_must_match_exactly_one_active_cluster(
    emr: Any, make_request: MakeRequest, clusters: int, message: str
) -> None:
    for _ in range(clusters):
        start_cluster(emr, "analytics")

    with pytest.raises(DispatchError, match=message) as raised:
        EmrSteps(emr).dispatch(make_request("emr", emr_target(cluster_name="analytics")))

    assert not raised.value.retryable


# --- describe and cancel ---------------------------------------------------------------------


def test_describe_by_job_id_and_by_token(
    emr: Any, cluster_id: str, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("emr", emr_target(cluster_id=cluster_id))
    steps = EmrSteps(emr)
    job_id = steps.dispatch(request).job_id

    by_id = steps.describe(job_ref(request, job_id))
    by_token = steps.describe(job_ref(request, None), target=request.target)

    assert by_id is not None
    assert by_id.status is JobStatus.RUNNING  # moto: PENDING or RUNNING, forever
    assert by_id.job_id == job_id
    assert by_token == by_id


def test_describe_an_unknown_step_is_none(
    emr: Any, cluster_id: str, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("emr", emr_target(cluster_id=cluster_id))

    assert EmrSteps(emr).describe(job_ref(request, f"{cluster_id}/s-UNKNOWN")) is None
    assert EmrSteps(emr).describe(job_ref(request, None), target=request.target) is None


def test_a_job_id_must_name_cluster_and_step(
    emr: Any, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    with pytest.raises(DispatchError, match="<cluster_id>/<step_id>"):
        EmrSteps(emr).describe(job_ref(make_request("emr", emr_target(cluster_id="j-1")), "s-1"))


def described_step(state: str, **status: Any) -> dict[str, Any]:
    return {
        "Step": {
            "Id": "s-1XXXXXXXK8E5Q",
            "Name": "skydag-etl-extract-0123456789abcdef0123456789abcdef",
            "Status": {"State": state, **status},
        }
    }


@pytest.mark.parametrize(
    ("state", "status", "failure", "reason"),
    [
        ("COMPLETED", JobStatus.SUCCEEDED, None, None),
        (
            "FAILED",
            JobStatus.FAILED,
            {"Reason": "Unknown Error.", "LogFile": "s3://logs/j-1/steps/s-1/stderr.gz"},
            "Unknown Error. (log: s3://logs/j-1/steps/s-1/stderr.gz)",
        ),
        ("CANCELLED", JobStatus.STOPPED, None, "step cancelled"),
        ("INTERRUPTED", JobStatus.FAILED, None, "step interrupted"),
    ],
)
def test_describe_a_finished_step(
    aws_client: Callable[[str], Any],
    make_request: MakeRequest,
    job_ref: JobRefFor,
    state: str,
    status: JobStatus,
    failure: dict[str, str] | None,
    reason: str | None,
) -> None:
    client = aws_client("emr")
    extra = {"FailureDetails": failure} if failure else {}
    with Stubber(client) as stubber:
        stubber.add_response("describe_step", described_step(state, **extra))

        described = EmrSteps(client).describe(
            job_ref(make_request("emr", emr_target(cluster_id="j-1")), "j-1/s-1XXXXXXXK8E5Q")
        )

    assert described is not None
    assert (described.status, described.reason) == (status, reason)


def test_cancel_sends_cancel_steps_for_an_unfinished_step(
    aws_client: Callable[[str], Any], make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    client = aws_client("emr")
    with Stubber(client) as stubber:
        stubber.add_response("describe_step", described_step("RUNNING"))
        stubber.add_response(
            "cancel_steps",
            {"CancelStepsInfoList": [{"StepId": "s-1", "Status": "SUBMITTED"}]},
            {
                "ClusterId": "j-1",
                "StepIds": ["s-1"],
                "StepCancellationOption": "SEND_INTERRUPT",
            },
        )

        EmrSteps(client).cancel(
            job_ref(make_request("emr", emr_target(cluster_id="j-1")), "j-1/s-1"), "run cancelled"
        )

        stubber.assert_no_pending_responses()


def test_a_refused_cancel_of_a_step_still_running_is_an_error(
    aws_client: Callable[[str], Any], make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    client = aws_client("emr")
    with Stubber(client) as stubber:
        stubber.add_response("describe_step", described_step("RUNNING"))
        stubber.add_response(
            "cancel_steps",
            {"CancelStepsInfoList": [{"StepId": "s-1", "Status": "FAILED", "Reason": "too old"}]},
        )
        stubber.add_response("describe_step", described_step("RUNNING"))

        with pytest.raises(DispatchError, match="too old"):
            EmrSteps(client).cancel(
                job_ref(make_request("emr", emr_target(cluster_id="j-1")), "j-1/s-1"), "x"
            )


def test_cancel_a_finished_step_does_nothing(
    aws_client: Callable[[str], Any], make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    client = aws_client("emr")
    with Stubber(client) as stubber:
        stubber.add_response("describe_step", described_step("COMPLETED"))

        EmrSteps(client).cancel(
            job_ref(make_request("emr", emr_target(cluster_id="j-1")), "j-1/s-1"), "x"
        )

        stubber.assert_no_pending_responses()


def test_cancel_against_moto_reports_that_cancel_steps_is_not_implemented(
    emr: Any, cluster_id: str, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("emr", emr_target(cluster_id=cluster_id))
    steps = EmrSteps(emr)
    job_id = steps.dispatch(request).job_id

    with pytest.raises(DispatchError, match="not implemented") as raised:
        steps.cancel(job_ref(request, job_id), "run cancelled")

    assert not raised.value.retryable


# --- errors ----------------------------------------------------------------------------------


def test_throttling_is_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client("emr", "list_steps", "ThrottlingException", 400, "Rate exceeded")

    with pytest.raises(DispatchError) as raised:
        EmrSteps(client).dispatch(make_request("emr", emr_target(cluster_id="j-1")))

    assert raised.value.retryable
    assert "Rate exceeded" in raised.value.reason


def test_access_denied_is_not_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client("emr", "list_steps", "AccessDeniedException", 400, "not allowed")

    with pytest.raises(DispatchError, match=r"emr ListSteps .*j-1.*not allowed") as raised:
        EmrSteps(client).dispatch(make_request("emr", emr_target(cluster_id="j-1")))

    assert not raised.value.retryable


# --- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "reason_part"),
    [
        ("emr_step_running", JobStatus.RUNNING, "started running"),
        ("emr_step_completed", JobStatus.SUCCEEDED, None),
        ("emr_step_failed", JobStatus.FAILED, "failed at"),
        ("emr_step_cancelled", JobStatus.STOPPED, "cancelled"),
    ],
)
def test_parse_event(
    load_event: Callable[..., dict[str, Any]],
    name: str,
    status: JobStatus,
    reason_part: str | None,
) -> None:
    token = "0123456789abcdef0123456789abcdef"

    event = parse_event(load_event(name, token=token))

    assert event is not None
    assert (event.kind, event.status, event.token) == ("emr", status, token)
    assert event.job_id == "j-2AXXXXXXGAPLF/s-1XXXXXXXK8E5Q"
    if reason_part is None:
        assert event.reason is None
    else:
        assert event.reason is not None
        assert reason_part in event.reason


def test_pending_and_other_events_are_not_reported(
    load_event: Callable[..., dict[str, Any]],
) -> None:
    pending = load_event("emr_step_running")
    pending["detail"]["state"] = "PENDING"

    assert parse_event(pending) is None
    assert parse_event(load_event("batch_job_running")) is None


def test_a_malformed_event_is_a_clear_error(
    load_event: Callable[..., dict[str, Any]],
    without: Callable[[dict[str, Any], str], dict[str, Any]],
) -> None:
    with pytest.raises(MalformedEvent, match=r"detail\.clusterId"):
        parse_event(without(load_event("emr_step_failed"), "clusterId"))
