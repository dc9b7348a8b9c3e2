"""The ECS player: tasks the real adapter runs are played locally and emit ECS's events."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from skydag import joblogs
from skydag.engine.models import JobStatus
from skydag.localcloud.players.ecs import EcsPlayer
from skydag.localcloud.players.runner import JobRunner
from skydag.targets.aws.ecs import DETAIL_TYPE, EcsTasks, parse_event
from skydag.targets.base import JobEvent

if TYPE_CHECKING:
    from conftest import RecordingContext

# The player the conftest's ``player`` fixture installs.
PLAYER = EcsPlayer
# The command ECS would run (the played task runs the try's ``local:`` block instead).
COMMAND = ["python", "extract.py"]
FARGATE = {
    "cluster": "etl",
    "task_definition": "etl-extract",
    "launch_type": "FARGATE",
    "command": COMMAND,
}
EC2 = {"cluster": "etl", "task_definition": "etl-extract", "launch_type": "EC2", "command": COMMAND}


@pytest.fixture
def tasks(context: RecordingContext, player: EcsPlayer) -> EcsTasks:
    """The real adapter, on a cluster and task definition the player's stand-ins created."""
    player.ensure_resources(EC2)
    return EcsTasks(context.client("ecs"))


def statuses(context: RecordingContext) -> list[str]:
    return [event.detail["lastStatus"] for event in context.events_of(DETAIL_TYPE)]


def parsed(context: RecordingContext, index: int) -> JobEvent:
    event = parse_event(context.as_eventbridge(context.events_of(DETAIL_TYPE)[index]))
    assert event is not None
    return event


def described_task(context: RecordingContext, task_arn: str) -> dict[str, Any]:
    response = context.client("ecs").describe_tasks(cluster="etl", tasks=[task_arn])
    task: dict[str, Any] = response["tasks"][0]
    return task


def test_a_fargate_stand_in_runs_then_stops_with_ecs_events_and_describe_agreeing(
    context: RecordingContext,
    player: EcsPlayer,
    tasks: EcsTasks,
    kit: Any,
) -> None:
    request = kit.planned(FARGATE, {"duration": "0.3s"})
    task_arn = tasks.dispatch(request).job_id
    assert task_arn is not None
    assert described_task(context, task_arn)["lastStatus"] == "PROVISIONING"

    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING"], timeout=2)
    running = context.events_of(DETAIL_TYPE)[0]
    assert (running.source, running.bus, running.resources) == ("aws.ecs", "default", [task_arn])
    assert kit.missing(running.detail, "ecs_task_running") == []
    assert set(running.detail) == set(kit.canonical("ecs_task_running")["detail"])
    event = parsed(context, 0)
    assert (event.status, event.token, event.job_id) == (JobStatus.RUNNING, request.token, task_arn)
    # moto's DescribeTasks would walk a task towards STOPPED: a played one stays RUNNING.
    for _ in range(5):
        described = described_task(context, task_arn)
    assert (described["lastStatus"], "startedAt" in described) == ("RUNNING", True)
    report = tasks.describe(kit.planned_job_ref(request, task_arn))
    assert report is not None
    assert report.status is JobStatus.RUNNING

    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING", "STOPPED"], timeout=2)
    stopped = context.events_of(DETAIL_TYPE)[1]
    assert kit.missing(stopped.detail, "ecs_task_stopped_success") == []
    assert set(stopped.detail) == set(kit.canonical("ecs_task_stopped_success")["detail"])
    assert stopped.detail["stopCode"] == "EssentialContainerExited"
    event = parsed(context, 1)
    assert (event.status, event.job_id, event.exit_code) == (JobStatus.SUCCEEDED, task_arn, 0)
    report = tasks.describe(kit.planned_job_ref(request, task_arn))
    assert report is not None
    assert (report.status, report.exit_code) == (JobStatus.SUCCEEDED, 0)
    task_id = task_arn.rsplit("/", 1)[1]
    note = kit.log_messages(context, "/ecs/etl-extract", f"skydag/etl-extract/{task_id}")
    assert note[0].startswith("stand-in: exited 0 after 0.")
    local = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, local) == note


def test_a_command_exiting_3_on_ec2_stops_with_its_exit_code_and_last_output_line(
    context: RecordingContext,
    player: EcsPlayer,
    tasks: EcsTasks,
    kit: Any,
) -> None:
    script = "import sys; print('loading orders'); print('table orders is locked'); sys.exit(3)"
    request = kit.planned(EC2, {"command": ["python", "-c", script]})
    task_arn = tasks.dispatch(request).job_id
    assert task_arn is not None

    kit.pump_until(player.poll, lambda: "STOPPED" in statuses(context), timeout=2)
    stopped = context.events_of(DETAIL_TYPE)[-1]
    # An EC2 task names its container instance where a Fargate one has a platform version.
    assert kit.missing(stopped.detail, "ecs_task_stopped_failed") == ["detail.platformVersion"]
    assert "containerInstanceArn" in stopped.detail
    assert stopped.detail["launchType"] == "EC2"
    assert stopped.detail["containers"][0]["exitCode"] == 3
    assert stopped.detail["containers"][0]["reason"] == "table orders is locked"
    event = parsed(context, -1)
    assert (event.status, event.job_id, event.exit_code) == (JobStatus.FAILED, task_arn, 3)
    assert event.reason == (
        "Essential container in task exited: etl-extract: table orders is locked: exit code 3"
    )
    report = tasks.describe(kit.planned_job_ref(request, task_arn))
    assert report is not None
    assert (report.status, report.exit_code, report.reason) == (JobStatus.FAILED, 3, event.reason)
    task_id = task_arn.rsplit("/", 1)[1]
    expected = ["loading orders", "table orders is locked"]
    assert (
        kit.log_messages(context, "/ecs/etl-extract", f"skydag/etl-extract/{task_id}") == expected
    )
    local = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, local) == expected
    said = context.lines[-1]
    assert "exit code 3" in said
    assert "table orders is locked" in said
    assert ".log" in said

    # As on ECS, StopTask on a stopped task changes nothing.
    context.client("ecs").stop_task(cluster="etl", task=task_arn, reason="too late")
    assert player.poll() == 0
    assert tasks.describe(kit.planned_job_ref(request, task_arn)) == report


def test_a_stand_in_with_outcome_failed_and_no_launch_type_fails_after_its_duration(
    context: RecordingContext,
    player: EcsPlayer,
    tasks: EcsTasks,
    kit: Any,
) -> None:
    target = {"cluster": "etl", "task_definition": "etl-extract"}
    request = kit.planned(target, {"duration": "0.3s", "outcome": "failed"})
    started = time.monotonic()
    task_arn = tasks.dispatch(request).job_id

    kit.pump_until(player.poll, lambda: "STOPPED" in statuses(context), timeout=2)
    assert time.monotonic() - started >= 0.3
    event = parsed(context, -1)
    assert (event.status, event.job_id, event.exit_code) == (JobStatus.FAILED, task_arn, 1)
    assert event.reason == "Essential container in task exited: etl-extract: exit code 1"


def test_stop_through_the_adapter_kills_the_process_group(
    context: RecordingContext,
    player: EcsPlayer,
    tasks: EcsTasks,
    runner: JobRunner,
    subreaper: Callable[[int], None],
    kit: Any,
) -> None:
    request = kit.planned(FARGATE, {"command": kit.sleeper_with_child})
    task_arn = tasks.dispatch(request).job_id
    assert task_arn is not None
    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING"], timeout=2)
    pgid = runner.pid_of(f"ecs:{task_arn}")
    assert pgid is not None
    kit.pump_until(lambda: 0, lambda: len(kit.pids_in_group(pgid)) == 2, timeout=2)

    tasks.cancel(kit.planned_job_ref(request, task_arn), "run cancelled by alice")
    assert described_task(context, task_arn)["desiredStatus"] == "STOPPED"
    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING", "STOPPED"], timeout=2)

    subreaper(pgid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    stopped = context.events_of(DETAIL_TYPE)[-1]
    assert kit.missing(stopped.detail, "ecs_task_stopped_by_user") == []
    assert (stopped.detail["stopCode"], stopped.detail["stoppedReason"]) == (
        "UserInitiated",
        "skydag cancel: run cancelled by alice",
    )
    event = parsed(context, -1)
    assert (event.status, event.job_id, event.reason) == (
        JobStatus.STOPPED,
        task_arn,
        "skydag cancel: run cancelled by alice",
    )
    report = tasks.describe(kit.planned_job_ref(request, task_arn))
    assert report is not None
    assert (report.status, report.reason) == (JobStatus.STOPPED, event.reason)


@pytest.mark.parametrize(
    "placement",
    [
        {"launch_type": "EC2"},
        {},
        {"launch_type": "FARGATE"},
        {"capacity_provider": "FARGATE_SPOT"},
        {"launch_type": "EXTERNAL"},
    ],
    ids=["ec2", "no-launch-type", "fargate", "fargate-spot-provider", "external"],
)
def test_ensure_resources_lets_a_task_run_with_any_launch_type(
    context: RecordingContext,
    player: EcsPlayer,
    placement: dict[str, str],
    kit: Any,
) -> None:
    target = {"cluster": "etl", "task_definition": "etl-extract:2", **placement}
    created = player.ensure_resources(target)

    assert created[0] == "ecs cluster etl"
    assert created[-1] == "ecs task definition etl-extract (revision 1-2; container etl-extract)"
    on_instance = placement.get("launch_type") != "FARGATE" and "capacity_provider" not in placement
    assert len(created) == (3 if on_instance else 2)
    assert player.ensure_resources(target) == []
    request = kit.planned(target)
    task_arn = EcsTasks(context.client("ecs")).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: "STOPPED" in statuses(context), timeout=2)
    assert parsed(context, -1) == JobEvent(
        "ecs",
        JobStatus.SUCCEEDED,
        request.token,
        task_arn,
        0,
        at=parsed(context, -1).at,
        task_key=request.task_key_in_events,
        try_number=request.try_number_in_events,
    )
    assert context.events_of(DETAIL_TYPE)[-1].detail["taskDefinitionArn"].endswith("etl-extract:2")


def test_ensure_resources_uses_the_users_own_and_skips_what_it_cannot_make(
    context: RecordingContext,
    player: EcsPlayer,
    kit: Any,
) -> None:
    ecs = context.client("ecs")
    ecs.create_cluster(clusterName="mine")
    ecs.register_task_definition(
        family="loader",
        containerDefinitions=[{"name": "app", "image": "loader:1", "memory": 256}],
    )

    created = player.ensure_resources({"cluster": "mine", "task_definition": "loader"})
    assert len(created) == 1
    assert created[0].startswith("ecs container instance arn:aws:ecs:us-east-1:")
    assert player.ensure_resources({"cluster": "mine", "task_definition": "loader:2"}) == [
        "ecs task definition loader (revision 2; container app)"
    ]
    assert player.ensure_resources({"cluster": "{{ params.cluster }}"}) == []
    refused = player.ensure_resources({"task_definition": "loader:101"})
    assert len(refused) == 1
    assert "not created" in refused[0]
    assert "not created" in context.lines[-1]

    request = kit.planned({"cluster": "mine", "task_definition": "loader:2"})
    task_arn = EcsTasks(ecs).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: "STOPPED" in statuses(context), timeout=2)
    assert parsed(context, -1).job_id == task_arn
    # No awslogs driver on the user's container: only the local stream has the output.
    local = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, local)[0].startswith("stand-in:")


def test_a_task_of_no_try_is_left_to_moto(
    context: RecordingContext,
    player: EcsPlayer,
    tasks: EcsTasks,
    kit: Any,
) -> None:
    ecs = context.client("ecs")
    started, stopped = (
        ecs.run_task(
            cluster="etl",
            taskDefinition="etl-extract",
            launchType="FARGATE",
            startedBy=f"skydag-etl-other-{digit * 32}",
        )["tasks"][0]["taskArn"]
        for digit in "01"
    )
    ecs.stop_task(cluster="etl", task=stopped, reason="not needed")
    # Held for a moment (the try's row may not be readable yet), then moto's again.
    assert player.poll() == 0
    assert described_task(context, started)["lastStatus"] == "PROVISIONING"
    kit.pump_until(
        player.poll, lambda: described_task(context, stopped)["lastStatus"] == "STOPPED", timeout=2
    )
    assert described_task(context, stopped)["stoppedReason"] == "not needed"
    kit.pump_until(
        lambda: 0, lambda: described_task(context, started)["lastStatus"] == "STOPPED", timeout=2
    )
    assert context.events == []


def test_uninstall_restores_moto(context: RecordingContext) -> None:
    from moto.ecs.models import EC2ContainerServiceBackend

    names = ("run_task", "stop_task")
    before = {name: EC2ContainerServiceBackend.__dict__[name] for name in names}
    played = EcsPlayer()
    played.install(context, None)
    assert all(EC2ContainerServiceBackend.__dict__[name] is not before[name] for name in names)
    played.uninstall()
    assert {name: EC2ContainerServiceBackend.__dict__[name] for name in names} == before


def test_run_task_with_a_client_token_seen_before_starts_nothing_more(
    context: RecordingContext, player: EcsPlayer, tasks: EcsTasks
) -> None:
    """As ECS: the simulator found two dispatchers of one try, both finding no task by
    ``startedBy``, started two tasks on moto (which ignores the token)."""
    ecs = context.client("ecs")
    token = "7848736327507e50c30bb9b6feabc927"
    started = [
        ecs.run_task(
            cluster="etl",
            taskDefinition="etl-extract",
            launchType="FARGATE",
            startedBy=f"skydag-etl-extract-{token}",
            clientToken=token,
        )["tasks"][0]["taskArn"]
        for _ in range(2)
    ]
    assert started[0] == started[1]
    listed = ecs.list_tasks(cluster="etl", startedBy=f"skydag-etl-extract-{token}")
    assert listed["taskArns"] == [started[0]]
