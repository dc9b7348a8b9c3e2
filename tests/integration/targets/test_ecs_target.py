"""ECS target against moto: RunTask with startedBy and a client token, describe, StopTask.

moto ignores RunTask's client token (the startedBy lookup re-attaches), cannot run an
awsvpc task definition (its ENI lacks a DNS name), and gives a task one container:
what it cannot show is checked on the parameters sent, and finished tasks through the
Stubber.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from botocore.stub import Stubber
from moto.moto_api import state_manager

from skydag.engine.models import JobStatus
from skydag.spec.models import EcsTarget
from skydag.targets.aws import EcsTasks, MalformedEvent
from skydag.targets.aws.ecs import parse_event
from skydag.targets.base import DispatchError, DispatchRequest, JobRef
from skydag.wiring import DEPLOYMENT_TAG

MakeRequest = Callable[..., DispatchRequest]
JobRefFor = Callable[[DispatchRequest, str | None], JobRef]
CLUSTER = "etl"


def ecs_target(**keys: Any) -> dict[str, Any]:
    keys.setdefault("cluster", CLUSTER)
    keys.setdefault("task_definition", "etl-extract")
    keys.setdefault("launch_type", "FARGATE")
    return EcsTarget.model_validate(keys).model_dump(by_alias=True, mode="json")


@pytest.fixture
def ecs(mocked_aws: None, aws_client: Callable[[str], Any]) -> Iterator[Any]:
    """A cluster with a job task definition (the job plus a non-essential log router)
    and one with two essential containers. Tasks stay RUNNING until stopped (moto
    otherwise moves a task one state further each time it is described)."""
    client = aws_client("ecs")
    client.create_cluster(clusterName=CLUSTER)
    client.register_task_definition(
        family="etl-extract",
        containerDefinitions=[
            {"name": "extract", "image": "etl:latest", "essential": True, "memory": 512},
            {"name": "log-router", "image": "fluent-bit", "essential": False, "memory": 64},
        ],
    )
    client.register_task_definition(
        family="etl-pair",
        containerDefinitions=[
            {"name": "extract", "image": "etl:latest", "essential": True, "memory": 512},
            {"name": "proxy", "image": "envoy", "essential": True, "memory": 64},
        ],
    )
    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 1_000_000})
    try:
        yield client
    finally:
        state_manager.unset_transition("ecs::task")


def tasks_started_by(client: Any, name: str) -> list[str]:
    arns: list[str] = []
    for desired in ("RUNNING", "STOPPED"):
        arns += client.list_tasks(cluster=CLUSTER, startedBy=name, desiredStatus=desired)[
            "taskArns"
        ]
    return arns


def test_dispatch_runs_one_task_with_the_tries_parameters(
    ecs: Any, make_request: MakeRequest, recorder: Callable[[Any], Any]
) -> None:
    target = ecs_target(
        command=["python", "extract.py"],
        environment={"LOG_LEVEL": "debug"},
        subnets=["subnet-0abc"],
        security_groups=["sg-0abc"],
        assign_public_ip=True,
        tags={"team": "data"},
    )
    request = make_request("ecs", target)
    calls = recorder(ecs)

    result = EcsTasks(ecs).dispatch(request)

    assert tasks_started_by(ecs, request.job_name) == [result.job_id]
    task = ecs.describe_tasks(cluster=CLUSTER, tasks=[result.job_id], include=["TAGS"])["tasks"][0]
    assert task["startedBy"] == request.job_name
    [override] = task["overrides"]["containerOverrides"]
    assert override["name"] == "extract"  # the only essential container
    assert override["command"] == ["python", "extract.py"]
    environment = {v["name"]: v["value"] for v in override["environment"]}
    assert environment["LOG_LEVEL"] == "debug"
    assert environment["SKYDAG_TASK"] == "extract"
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags["team"] == "data"
    assert tags["skydag:token"] == request.token
    [sent] = calls.of("RunTask")
    assert sent["clientToken"] == request.token
    assert sent["launchType"] == "FARGATE"
    assert sent["count"] == 1
    assert sent["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-0abc"],
            "securityGroups": ["sg-0abc"],
            "assignPublicIp": "ENABLED",
        }
    }


def test_the_task_carries_the_deployment_tag_which_no_user_tag_overrides(
    ecs: Any, make_request: MakeRequest
) -> None:
    """IAM lets skydag stop and tag only tasks with this tag (docs/security.md)."""
    target = ecs_target(tags={DEPLOYMENT_TAG: "someone-else", "team": "data"})

    result = EcsTasks(ecs, deployment="skydag-prod").dispatch(make_request("ecs", target))

    task = ecs.describe_tasks(cluster=CLUSTER, tasks=[result.job_id], include=["TAGS"])["tasks"][0]
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags[DEPLOYMENT_TAG] == "skydag-prod"
    assert tags["team"] == "data"


def test_dispatch_again_with_the_same_token_reattaches(ecs: Any, make_request: MakeRequest) -> None:
    request = make_request("ecs", ecs_target())
    first = EcsTasks(ecs).dispatch(request)

    second = EcsTasks(ecs).dispatch(request)

    assert second.job_id == first.job_id
    assert len(tasks_started_by(ecs, request.job_name)) == 1


def test_a_stopped_task_is_reattached_too(
    ecs: Any, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("ecs", ecs_target())
    first = EcsTasks(ecs).dispatch(request)
    EcsTasks(ecs).cancel(job_ref(request, first.job_id), "stopped early")

    second = EcsTasks(ecs).dispatch(request)

    assert second.job_id == first.job_id


def test_a_new_try_runs_a_new_task(ecs: Any, make_request: MakeRequest) -> None:
    first = EcsTasks(ecs).dispatch(make_request("ecs", ecs_target()))
    second = EcsTasks(ecs).dispatch(make_request("ecs", ecs_target(), try_number=2))

    assert second.job_id != first.job_id


def test_a_capacity_provider_replaces_the_launch_type(
    ecs: Any, make_request: MakeRequest, recorder: Callable[[Any], Any]
) -> None:
    calls = recorder(ecs)

    EcsTasks(ecs).dispatch(
        make_request("ecs", ecs_target(launch_type=None, capacity_provider="FARGATE"))
    )

    [sent] = calls.of("RunTask")
    assert "launchType" not in sent
    assert sent["capacityProviderStrategy"] == [{"capacityProvider": "FARGATE"}]


def test_launch_type_and_capacity_provider_together_are_refused(
    ecs: Any, make_request: MakeRequest
) -> None:
    target = ecs_target(capacity_provider="FARGATE_SPOT")

    with pytest.raises(DispatchError, match="not both"):
        EcsTasks(ecs).dispatch(make_request("ecs", target))


def test_several_essential_containers_need_a_container_name(
    ecs: Any, make_request: MakeRequest
) -> None:
    with pytest.raises(DispatchError, match=r"extract, proxy.*container:"):
        EcsTasks(ecs).dispatch(make_request("ecs", ecs_target(task_definition="etl-pair")))

    result = EcsTasks(ecs).dispatch(
        make_request("ecs", ecs_target(task_definition="etl-pair", container="proxy"))
    )
    assert result.job_id is not None


def test_describe_by_job_id_and_by_token(
    ecs: Any, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("ecs", ecs_target())
    tasks = EcsTasks(ecs)
    job_id = tasks.dispatch(request).job_id

    by_id = tasks.describe(job_ref(request, job_id))
    by_token = tasks.describe(job_ref(request, None), target=request.target)

    assert by_id is not None
    assert by_id.status is JobStatus.RUNNING
    assert by_id.job_id == job_id
    assert by_token == by_id
    assert (
        tasks.describe(
            job_ref(make_request("ecs", ecs_target(), try_number=9), None), target=request.target
        )
        is None
    )


def test_describe_many_asks_for_a_clusters_tasks_together(
    ecs: Any, make_request: MakeRequest, job_ref: JobRefFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler's pass describes a page's running tasks together: one DescribeTasks
    call for a cluster's tasks (100 at most); a task ECS does not know is None."""
    tasks = EcsTasks(ecs)
    refs = []
    for try_number in range(1, 4):
        request = make_request("ecs", ecs_target(), try_number=try_number)
        refs.append(job_ref(request, tasks.dispatch(request).job_id))
    gone = refs[0].job_id
    assert gone is not None
    unknown = replace(refs[0], job_id=gone.rsplit("/", 1)[0] + "/" + "0" * 32)
    asked: list[tuple[str, list[str]]] = []
    describe_tasks = ecs.describe_tasks

    def counted(**kwargs: Any) -> Any:
        asked.append((kwargs["cluster"], kwargs["tasks"]))
        return describe_tasks(**kwargs)

    monkeypatch.setattr(ecs, "describe_tasks", counted)

    reports = tasks.describe_many([*refs, unknown])

    assert [(cluster, len(arns)) for cluster, arns in asked] == [(CLUSTER, 4)]
    assert reports[unknown.job_id] is None  # type: ignore[index]
    for ref in refs:
        report = reports[ref.job_id]  # type: ignore[index]
        assert report is not None
        assert (report.status, report.try_number) == (JobStatus.RUNNING, ref.try_number)


def test_cancel_stops_the_task_with_skydags_reason(
    ecs: Any, make_request: MakeRequest, job_ref: JobRefFor, recorder: Callable[[Any], Any]
) -> None:
    request = make_request("ecs", ecs_target())
    tasks = EcsTasks(ecs)
    job = job_ref(request, tasks.dispatch(request).job_id)
    calls = recorder(ecs)

    tasks.cancel(job, "run cancelled by alice")
    tasks.cancel(job, "run cancelled by alice")  # stopped already: nothing to do

    [stop] = calls.of("StopTask")
    assert stop["reason"] == "skydag cancel: run cancelled by alice"
    described = tasks.describe(job)
    assert described is not None
    assert described.status is JobStatus.STOPPED
    assert described.reason == "skydag cancel: run cancelled by alice"


def stopped_task(exit_codes: dict[str, int | None], **fields: Any) -> dict[str, Any]:
    arn = "arn:aws:ecs:us-east-1:123456789012:task/etl/c13b4cb40f1f4fe4a2971f76ae5a47ad"
    containers = []
    for name, code in exit_codes.items():
        container: dict[str, Any] = {"name": name, "lastStatus": "STOPPED", "taskArn": arn}
        if code is not None:
            container["exitCode"] = code
        containers.append(container)
    return {
        "taskArn": arn,
        "lastStatus": "STOPPED",
        "desiredStatus": "STOPPED",
        "containers": containers,
        "overrides": {
            "containerOverrides": [
                {"name": "extract", "environment": [{"name": "SKYDAG_TASK", "value": "x"}]}
            ]
        },
        **fields,
    }


@pytest.mark.parametrize(
    ("task", "status", "exit_code", "reason"),
    [
        (stopped_task({"extract": 0, "log-router": 143}), JobStatus.SUCCEEDED, 0, None),
        (
            stopped_task(
                {"extract": 2, "log-router": 0},
                stopCode="EssentialContainerExited",
                stoppedReason="Essential container in task exited",
            ),
            JobStatus.FAILED,
            2,
            "Essential container in task exited: extract: exit code 2",
        ),
        (
            stopped_task(
                {"extract": None},
                stopCode="TaskFailedToStart",
                stoppedReason="CannotPullContainerError: pull access denied",
            ),
            JobStatus.FAILED,
            None,
            "CannotPullContainerError: pull access denied",
        ),
        (
            stopped_task(
                {"extract": 137}, stopCode="UserInitiated", stoppedReason="Task stopped by user"
            ),
            JobStatus.STOPPED,
            137,
            "Task stopped by user",
        ),
    ],
)
def test_describe_a_stopped_task(
    aws_client: Callable[[str], Any],
    make_request: MakeRequest,
    job_ref: JobRefFor,
    task: dict[str, Any],
    status: JobStatus,
    exit_code: int | None,
    reason: str | None,
) -> None:
    client = aws_client("ecs")
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_tasks", {"tasks": [task]}, {"cluster": "etl", "tasks": [task["taskArn"]]}
        )

        described = EcsTasks(client).describe(
            job_ref(make_request("ecs", ecs_target()), task["taskArn"])
        )

    assert described is not None
    assert (described.status, described.exit_code, described.reason) == (
        status,
        exit_code,
        reason,
    )


def test_throttling_is_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client("ecs", "list_tasks", "ThrottlingException", 400, "Rate exceeded")

    with pytest.raises(DispatchError) as raised:
        EcsTasks(client).dispatch(make_request("ecs", ecs_target(container="extract")))

    assert raised.value.retryable


def test_a_missing_cluster_is_not_retryable(ecs: Any, make_request: MakeRequest) -> None:
    with pytest.raises(DispatchError, match="ClusterNotFoundException") as raised:
        EcsTasks(ecs).dispatch(make_request("ecs", ecs_target(cluster="nope")))

    assert not raised.value.retryable
    assert "ecs ListTasks" in raised.value.reason


@pytest.mark.parametrize(
    ("name", "status", "exit_code", "reason"),
    [
        ("ecs_task_running", JobStatus.RUNNING, None, None),
        ("ecs_task_stopped_success", JobStatus.SUCCEEDED, 0, None),
        (
            "ecs_task_stopped_failed",
            JobStatus.FAILED,
            2,
            "Essential container in task exited: extract: exit code 2",
        ),
        (
            "ecs_task_stopped_by_user",
            JobStatus.STOPPED,
            143,
            "skydag cancel: run cancelled by alice",
        ),
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
    assert (event.kind, event.status, event.token) == ("ecs", status, token)
    assert event.job_id == (
        "arn:aws:ecs:us-east-1:123456789012:task/etl/c13b4cb40f1f4fe4a2971f76ae5a47ad"
    )
    assert (event.exit_code, event.reason) == (exit_code, reason)
    # The overrides the task ran with carry the try's identity: its task instance.
    assert event.task_key == ("etl", "scheduled__2026-11-22T00:00:00+00:00", "extract")
    assert event.try_number == 1


def test_intermediate_statuses_and_other_events_are_not_reported(
    load_event: Callable[..., dict[str, Any]],
) -> None:
    pending = load_event("ecs_task_running")
    pending["detail"]["lastStatus"] = "PENDING"

    assert parse_event(pending) is None
    assert parse_event(load_event("batch_job_running")) is None


def test_a_malformed_event_is_a_clear_error(
    load_event: Callable[..., dict[str, Any]],
    without: Callable[[dict[str, Any], str], dict[str, Any]],
) -> None:
    with pytest.raises(MalformedEvent, match=r"detail\.taskArn"):
        parse_event(without(load_event("ecs_task_stopped_failed"), "taskArn"))
