"""AWS Batch target against moto: idempotent submit, describe, terminate, and its events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from skydag.engine.models import JobStatus, instance_key
from skydag.spec.models import BatchTarget
from skydag.targets.aws import BatchJobs, MalformedEvent
from skydag.targets.aws.batch import parse_event
from skydag.targets.base import DispatchError, DispatchRequest, JobRef
from skydag.wiring import DEPLOYMENT_TAG

QUEUE = "etl-queue"
MakeRequest = Callable[..., DispatchRequest]
JobRefFor = Callable[[DispatchRequest, str | None], JobRef]


def batch_target(**keys: Any) -> dict[str, Any]:
    """A ``batch:`` block as the scheduler hands it over (the spec model, dumped)."""
    block = BatchTarget(job_queue=QUEUE, job_definition="etl-extract", **keys)
    return block.model_dump(by_alias=True, mode="json")


@pytest.fixture
def batch(mocked_aws: None, aws_client: Callable[[str], Any]) -> Any:
    """A Batch client with a queue and a job definition to submit to."""
    role = aws_client("iam").create_role(RoleName="batch", AssumeRolePolicyDocument="{}")
    client = aws_client("batch")
    environment = client.create_compute_environment(
        computeEnvironmentName="etl-compute",
        type="UNMANAGED",
        state="ENABLED",
        serviceRole=role["Role"]["Arn"],
    )
    client.create_job_queue(
        jobQueueName=QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}
        ],
    )
    client.register_job_definition(
        jobDefinitionName="etl-extract",
        type="container",
        containerProperties={"image": "busybox", "vcpus": 1, "memory": 128, "command": ["true"]},
    )
    return client


def jobs_named(client: Any, name: str) -> list[dict[str, Any]]:
    summaries = client.list_jobs(jobQueue=QUEUE, filters=[{"name": "JOB_NAME", "values": [name]}])[
        "jobSummaryList"
    ]
    return [s for s in summaries if ":" not in s["jobId"]]


def all_jobs(client: Any) -> list[dict[str, Any]]:
    return jobs_named(client, "skydag-*")


# --- dispatch --------------------------------------------------------------------------------


def test_dispatch_submits_one_job_with_the_tries_parameters(
    batch: Any, make_request: MakeRequest
) -> None:
    target = batch_target(
        command=["python", "extract.py", "--date", "2026-11-22"],
        parameters={"date": "2026-11-22"},
        environment={"LOG_LEVEL": "debug", "SKYDAG_TASK": "not-this"},
        timeout="30s",
        tags={"team": "data"},
    )
    request = make_request("batch", target)

    result = BatchJobs(batch).dispatch(request)

    [summary] = all_jobs(batch)
    assert summary["jobId"] == result.job_id
    assert summary["jobName"] == request.job_name
    job = batch.describe_jobs(jobs=[result.job_id])["jobs"][0]
    assert job["container"]["command"] == ["python", "extract.py", "--date", "2026-11-22"]
    environment = {v["name"]: v["value"] for v in job["container"]["environment"]}
    assert environment["LOG_LEVEL"] == "debug"
    assert environment["SKYDAG_TASK"] == "extract"  # the try's identity wins
    assert environment["SKYDAG_TRY"] == "1"
    assert job["parameters"] == {"date": "2026-11-22"}
    assert job["timeout"] == {"attemptDurationSeconds": 60}  # Batch's minimum
    assert job["tags"]["team"] == "data"
    assert job["tags"]["skydag:token"] == request.token
    assert job["tags"]["skydag:try"] == "1"
    assert result.report is None  # the outcome comes from the job's events


def test_dispatch_again_with_the_same_token_reattaches(
    batch: Any, make_request: MakeRequest
) -> None:
    request = make_request("batch", batch_target())
    first = BatchJobs(batch).dispatch(request)

    # A crash after SubmitJob, before the job id was recorded: the dispatch is redone.
    second = BatchJobs(batch).dispatch(request)

    assert second.job_id == first.job_id
    assert len(all_jobs(batch)) == 1


def test_a_first_call_submits_without_looking_for_an_earlier_job(
    batch: Any, make_request: MakeRequest, recorder: Callable[[Any], Any]
) -> None:
    """The invocation that queued the try calls it under its own claim: no earlier call
    can exist, and ListJobs (rate-limited, on the latency path) is not called."""
    calls = recorder(batch)
    request = replace(make_request("batch", batch_target()), first_call=True)

    result = BatchJobs(batch).dispatch(request)

    assert calls.of("ListJobs") == []
    assert [job["jobId"] for job in all_jobs(batch)] == [result.job_id]


def test_a_new_try_submits_a_new_job(batch: Any, make_request: MakeRequest) -> None:
    first = BatchJobs(batch).dispatch(make_request("batch", batch_target()))
    second = BatchJobs(batch).dispatch(make_request("batch", batch_target(), try_number=2))

    assert second.job_id != first.job_id
    assert len(all_jobs(batch)) == 2


def test_a_named_job_keeps_the_skydag_prefix_and_the_token(
    batch: Any, make_request: MakeRequest
) -> None:
    # A rendered "extract-{{ run.id }}": Batch names allow letters, digits, - and _ only.
    request = make_request("batch", batch_target(job_name="extract-manual__2026-11-22T00:00"))

    BatchJobs(batch).dispatch(request)

    [summary] = all_jobs(batch)
    assert summary["jobName"] == f"skydag-extract-manual__2026-11-22T00-00-{request.token}"


@pytest.mark.parametrize(
    ("target_timeout", "task_timeout", "seconds"),
    [("90m", None, 5400), (None, timedelta(hours=2), 7200), (None, None, None)],
)
def test_the_attempt_timeout_is_the_targets_or_else_the_tasks(
    batch: Any,
    make_request: MakeRequest,
    target_timeout: str | None,
    task_timeout: timedelta | None,
    seconds: int | None,
) -> None:
    request = make_request("batch", batch_target(timeout=target_timeout), timeout=task_timeout)

    result = BatchJobs(batch).dispatch(request)

    job = batch.describe_jobs(jobs=[result.job_id])["jobs"][0]
    assert job.get("timeout", {}).get("attemptDurationSeconds") == seconds


def test_an_array_job_reattaches_to_its_parent(batch: Any, make_request: MakeRequest) -> None:
    request = make_request("batch", batch_target(array_size=3))
    first = BatchJobs(batch).dispatch(request)

    second = BatchJobs(batch).dispatch(request)

    assert second.job_id == first.job_id
    job = batch.describe_jobs(jobs=[first.job_id])["jobs"][0]
    assert job["arrayProperties"]["size"] == 3


# --- describe and cancel ---------------------------------------------------------------------


def test_describe_by_job_id_and_by_token(
    batch: Any, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("batch", batch_target())
    jobs = BatchJobs(batch)
    job_id = jobs.dispatch(request).job_id

    by_id = jobs.describe(job_ref(request, job_id))
    by_token = jobs.describe(job_ref(request, None), target=request.target)

    assert by_id is not None
    assert by_id.status is JobStatus.SUCCEEDED  # moto without Docker ends jobs at once
    assert (by_id.dag_id, by_id.task_id, by_id.try_number) == ("etl", "extract", 1)
    assert by_token == by_id


def test_describe_a_job_that_does_not_exist_is_none(
    batch: Any, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("batch", batch_target())
    jobs = BatchJobs(batch)

    assert jobs.describe(job_ref(request, "0b2d4f6a-8c0e-4a1b-9c3d-5e7f9a1b3c5d")) is None
    assert jobs.describe(job_ref(request, None), target=request.target) is None


def test_describe_by_token_needs_the_target_block(
    batch: Any, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("batch", batch_target())

    with pytest.raises(DispatchError, match="rendered target block"):
        BatchJobs(batch).describe(job_ref(request, None))


def test_describe_a_failed_job(
    batch: Any, make_request: MakeRequest, job_ref: JobRefFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")
    request = make_request("batch", batch_target())
    jobs = BatchJobs(batch)
    job_id = jobs.dispatch(request).job_id

    described = jobs.describe(job_ref(request, job_id))

    assert described is not None
    assert described.status is JobStatus.FAILED


def test_describe_a_running_job(
    aws_client: Callable[[str], Any],
    make_request: MakeRequest,
    job_ref: JobRefFor,
    load_event: Callable[..., dict[str, Any]],
) -> None:
    detail = load_event("batch_job_running")["detail"]
    client = aws_client("batch")
    with Stubber(client) as stubber:
        stubber.add_response("describe_jobs", {"jobs": [detail]}, {"jobs": [detail["jobId"]]})

        described = BatchJobs(client).describe(
            job_ref(make_request("batch", batch_target()), detail["jobId"])
        )

    assert described is not None
    assert described.status is JobStatus.RUNNING
    assert described.job_id == detail["jobId"]


def test_describe_many_asks_for_100_jobs_a_call(
    batch: Any, make_request: MakeRequest, job_ref: JobRefFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler's pass describes a page's running jobs together: 101 jobs are two
    DescribeJobs calls; a job the service does not know is None; a job without an id is
    left to ``describe`` (it is found by its token)."""
    jobs = BatchJobs(batch)
    refs = []
    for try_number in range(1, 102):
        request = make_request("batch", batch_target(), try_number=try_number)
        refs.append(job_ref(request, jobs.dispatch(request).job_id))
    unknown = replace(refs[0], job_id="0b2d4f6a-8c0e-4a1b-9c3d-5e7f9a1b3c5d")
    asked: list[list[str]] = []
    describe_jobs = batch.describe_jobs

    def counted(**kwargs: Any) -> Any:
        asked.append(kwargs["jobs"])
        return describe_jobs(**kwargs)

    monkeypatch.setattr(batch, "describe_jobs", counted)

    reports = jobs.describe_many([*refs, unknown, replace(refs[1], job_id=None)])

    assert [len(chunk) for chunk in asked] == [100, 2]
    assert reports[unknown.job_id] is None  # type: ignore[index]
    assert set(reports) == {ref.job_id for ref in [*refs, unknown]}
    for ref in refs:
        report = reports[ref.job_id]  # type: ignore[index]
        assert report is not None
        assert (report.status, report.try_number) == (JobStatus.SUCCEEDED, ref.try_number)
        assert report == jobs.describe(ref)


def test_cancel_terminates_a_running_job_with_skydags_reason(
    aws_client: Callable[[str], Any],
    make_request: MakeRequest,
    job_ref: JobRefFor,
    load_event: Callable[..., dict[str, Any]],
) -> None:
    detail = load_event("batch_job_running")["detail"]
    client = aws_client("batch")
    with Stubber(client) as stubber:
        stubber.add_response("describe_jobs", {"jobs": [detail]}, {"jobs": [detail["jobId"]]})
        stubber.add_response(
            "terminate_job",
            {},
            {"jobId": detail["jobId"], "reason": "skydag cancel: run cancelled by alice"},
        )

        BatchJobs(client).cancel(
            job_ref(make_request("batch", batch_target()), detail["jobId"]),
            "run cancelled by alice",
        )

        stubber.assert_no_pending_responses()


def test_cancel_a_finished_or_unknown_job_does_nothing(
    batch: Any,
    make_request: MakeRequest,
    job_ref: JobRefFor,
    recorder: Callable[[Any], Any],
) -> None:
    request = make_request("batch", batch_target())
    jobs = BatchJobs(batch)
    job_id = jobs.dispatch(request).job_id
    calls = recorder(batch)

    never_dispatched = make_request("batch", batch_target(), try_number=5)

    jobs.cancel(job_ref(request, job_id), "too late")
    jobs.cancel(job_ref(never_dispatched, None), "x", target=never_dispatched.target)

    assert calls.of("TerminateJob") == []


# --- errors ----------------------------------------------------------------------------------


def test_throttling_is_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client("batch", "list_jobs", "TooManyRequestsException", 429)

    with pytest.raises(DispatchError) as raised:
        BatchJobs(client).dispatch(make_request("batch", batch_target()))

    assert raised.value.retryable


def test_a_refused_submit_names_the_service_the_queue_and_awss_message(
    batch: Any, make_request: MakeRequest
) -> None:
    target = {**batch_target(), "job_definition": "no-such-definition"}

    with pytest.raises(DispatchError) as raised:
        BatchJobs(batch).dispatch(make_request("batch", target))

    assert not raised.value.retryable
    assert "batch SubmitJob" in raised.value.reason
    assert QUEUE in raised.value.reason


# --- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "exit_code", "reason"),
    [
        ("batch_job_running", JobStatus.RUNNING, None, None),
        ("batch_job_succeeded", JobStatus.SUCCEEDED, 0, None),
        ("batch_job_failed", JobStatus.FAILED, 3, "Essential container in task exited"),
        ("batch_job_stopped", JobStatus.STOPPED, 137, "skydag cancel: run cancelled by alice"),
    ],
)
def test_parse_event(
    load_event: Callable[..., dict[str, Any]],
    name: str,
    status: JobStatus,
    exit_code: int | None,
    reason: str | None,
) -> None:
    token = "0123456789abcdef0123456789abcdef"

    event = parse_event(load_event(name, token=token))

    assert event is not None
    assert (event.kind, event.status, event.token) == ("batch", status, token)
    assert event.job_id == "4c7599ae-0a82-49aa-ba5a-4727fcce14a8"
    assert (event.exit_code, event.reason) == (exit_code, reason)
    assert event.at is not None
    # The job's environment, echoed in the event's container, names its task instance.
    assert event.task_key == ("etl", "scheduled__2026-11-22T00:00:00+00:00", "extract")
    assert event.try_number == 1


def test_an_events_task_key_comes_from_the_jobs_whole_identity(
    load_event: Callable[..., dict[str, Any]],
) -> None:
    event = load_event("batch_job_succeeded")
    environment = event["detail"]["container"]["environment"]
    environment.append({"name": "SKYDAG_MAP_INDEX", "value": "7"})
    parsed = parse_event(event)
    assert parsed is not None
    run = "scheduled__2026-11-22T00:00:00+00:00"
    assert parsed.task_key == ("etl", run, instance_key("extract", 7))
    # Without the whole identity (not skydag's job, or a job whose environment is not
    # echoed), the event is found by its token as before.
    environment[:] = [v for v in environment if v["name"] != "SKYDAG_RUN"]
    parsed = parse_event(event)
    assert parsed is not None
    assert parsed.task_key is None
    del event["detail"]["container"]
    parsed = parse_event(event)
    assert parsed is not None
    assert parsed.task_key is None


def test_statuses_before_running_and_array_children_are_not_reported(
    load_event: Callable[..., dict[str, Any]],
) -> None:
    runnable = load_event("batch_job_running")
    runnable["detail"]["status"] = "RUNNABLE"
    child = load_event("batch_job_succeeded")
    child["detail"]["jobId"] += ":2"
    child["detail"]["arrayProperties"] = {"index": 2}

    assert parse_event(runnable) is None
    assert parse_event(child) is None


def test_other_events_are_not_batchs(load_event: Callable[..., dict[str, Any]]) -> None:
    assert parse_event(load_event("ecs_task_running")) is None
    assert (
        parse_event({"source": "aws.batch", "detail-type": "Batch Service Job State Change"})
        is None
    )


def test_a_malformed_event_is_a_clear_error(
    load_event: Callable[..., dict[str, Any]],
    without: Callable[[dict[str, Any], str], dict[str, Any]],
) -> None:
    with pytest.raises(MalformedEvent, match=r"detail\.jobId"):
        parse_event(without(load_event("batch_job_failed"), "jobId"))


def test_the_job_carries_the_deployment_tag_which_no_user_tag_overrides(
    batch: Any, make_request: MakeRequest, recorder: Callable[[Any], Any]
) -> None:
    """IAM lets skydag terminate and tag only jobs with this tag (docs/security.md)."""
    target = batch_target(tags={DEPLOYMENT_TAG: "someone-else", "team": "data"})
    calls = recorder(batch)

    result = BatchJobs(batch, deployment="skydag-prod").dispatch(make_request("batch", target))

    job = batch.describe_jobs(jobs=[result.job_id])["jobs"][0]
    assert job["tags"][DEPLOYMENT_TAG] == "skydag-prod"
    assert job["tags"]["team"] == "data"
    [submit] = calls.of("SubmitJob")
    assert submit["propagateTags"] is True  # the job's ECS tasks carry the tags too
