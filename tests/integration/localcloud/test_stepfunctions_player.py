"""The Step Functions player against the moto server, driven through the real adapter."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import pytest

from skydag import joblogs
from skydag.engine.models import JobStatus
from skydag.localcloud.players.runner import JobRunner
from skydag.localcloud.players.stepfunctions import StepFunctionsPlayer
from skydag.targets.aws.stepfunctions import (
    CANCEL_ERROR,
    DETAIL_TYPE,
    StepFunctionsExecutions,
    parse_event,
)

if TYPE_CHECKING:
    from conftest import RecordingContext

# The player the conftest's ``player`` fixture installs.
PLAYER = StepFunctionsPlayer
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:etl-extract"


@pytest.fixture
def sfn(context: RecordingContext, player: StepFunctionsPlayer) -> Any:
    player.ensure_resources({"state_machine_arn": MACHINE})
    return context.client("stepfunctions")


def statuses(context: RecordingContext) -> list[str]:
    return [event.detail["status"] for event in context.events_of(DETAIL_TYPE)]


def dispatch(kit: Any, sfn: Any, local: dict[str, Any] | None) -> Any:
    request = kit.planned({"state_machine_arn": MACHINE, "input": {"day": 1}}, local)
    result = StepFunctionsExecutions(sfn).dispatch(request)
    return request, result.job_id


def test_a_stand_in_succeeds_with_its_output_in_the_event_and_the_execution(
    context: RecordingContext, kit: Any, player: StepFunctionsPlayer, sfn: Any
) -> None:
    request, job_id = dispatch(kit, sfn, {"outcome": "success", "output": {"a": 1}})

    kit.pump_until(player.poll, lambda: "SUCCEEDED" in statuses(context), timeout=2)

    assert statuses(context) == ["RUNNING", "SUCCEEDED"]
    running, succeeded = context.events_of(DETAIL_TYPE)
    for event, name in ((running, "running"), (succeeded, "succeeded")):
        model = kit.canonical(f"sfn_execution_{name}")
        assert kit.shape(event.detail) == kit.shape(model["detail"])
        assert event.source == model["source"]
        assert event.resources == [job_id]
        assert event.bus == "default"
    assert running.detail["input"] == json.dumps({"day": 1})
    parsed = parse_event(context.as_eventbridge(succeeded))
    assert parsed is not None
    assert (parsed.status, parsed.token, parsed.job_id) == (
        JobStatus.SUCCEEDED,
        request.token,
        job_id,
    )
    assert parsed.output == {"a": 1}
    described = StepFunctionsExecutions(sfn).describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert (described.status, described.output) == (JobStatus.SUCCEEDED, {"a": 1})
    stream = joblogs.local_stream("etl", request.run_id, "extract", 1)
    [note] = kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, stream)
    assert note.startswith("stand-in: exited 0 after")
    sfn.stop_execution(executionArn=job_id, error="late", cause="too late")
    assert sfn.describe_execution(executionArn=job_id)["status"] == "SUCCEEDED"


def test_a_failing_command_fails_the_execution_with_its_exit_code_and_last_line(
    context: RecordingContext, kit: Any, player: StepFunctionsPlayer, sfn: Any
) -> None:
    command = [sys.executable, "-c", "print('loading'); print('table locked'); exit(3)"]
    request, job_id = dispatch(kit, sfn, {"command": command})

    kit.pump_until(player.poll, lambda: "FAILED" in statuses(context), timeout=2)

    failed = context.events_of(DETAIL_TYPE)[-1]
    assert kit.shape(failed.detail) == kit.shape(kit.canonical("sfn_execution_failed")["detail"])
    parsed = parse_event(context.as_eventbridge(failed))
    assert parsed is not None
    assert parsed.status is JobStatus.FAILED
    assert parsed.reason is not None
    assert "code 3" in parsed.reason
    assert "table locked" in parsed.reason
    described = StepFunctionsExecutions(sfn).describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert (described.status, described.reason) == (JobStatus.FAILED, parsed.reason)
    stream = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, stream) == ["loading", "table locked"]
    assert any("FAILED" in line and "exit code 3" in line for line in context.lines)


def test_cancel_aborts_the_execution_and_kills_the_process_group(
    context: RecordingContext, kit: Any, player: StepFunctionsPlayer, sfn: Any, runner: JobRunner
) -> None:
    request, job_id = dispatch(kit, sfn, {"command": kit.sleeper})
    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING"], timeout=2)
    pgid = runner.pid_of(f"stepfunctions:{job_id}")
    assert pgid is not None

    StepFunctionsExecutions(sfn).cancel(
        kit.planned_job_ref(request, job_id), "run cancelled by alice"
    )
    kit.pump_until(player.poll, lambda: "ABORTED" in statuses(context), timeout=2)

    assert kit.process_group_gone(pgid)
    aborted = context.events_of(DETAIL_TYPE)[-1]
    assert kit.shape(aborted.detail) == kit.shape(kit.canonical("sfn_execution_aborted")["detail"])
    assert (aborted.detail["error"], aborted.detail["cause"]) == (
        CANCEL_ERROR,
        "run cancelled by alice",
    )
    parsed = parse_event(context.as_eventbridge(aborted))
    assert parsed is not None
    assert parsed.status is JobStatus.STOPPED
    assert parsed.reason == f"{CANCEL_ERROR}: run cancelled by alice"
    execution = sfn.describe_execution(executionArn=job_id)
    assert (execution["status"], execution["error"]) == ("ABORTED", CANCEL_ERROR)


def test_an_execution_skydag_did_not_start_is_left_to_moto(
    context: RecordingContext, player: StepFunctionsPlayer, sfn: Any
) -> None:
    sfn.start_execution(stateMachineArn=MACHINE, name="adhoc-backfill", input="{}")

    for _ in range(3):
        player.poll()

    assert context.events == []


def test_ensure_resources_creates_only_what_it_can(
    context: RecordingContext, player: StepFunctionsPlayer
) -> None:
    lines = player.ensure_resources({"state_machine_arn": MACHINE})

    assert lines == [
        "iam role skydag-local-stepfunctions (Step Functions role)",
        "stepfunctions state machine etl-extract (a Pass-state stand-in)",
    ]
    assert player.ensure_resources({"state_machine_arn": MACHINE}) == []
    elsewhere = "arn:aws:states:eu-west-1:999999999999:stateMachine:other"
    [refused] = player.ensure_resources({"state_machine_arn": elsewhere})
    assert "not created" in refused
    assert player.ensure_resources({"state_machine_arn": "{{ params.machine }}"}) == []


def test_uninstall_restores_moto(context: RecordingContext, runner: JobRunner) -> None:
    from moto.stepfunctions.models import StepFunctionBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    originals = (
        StepFunctionBackend.start_execution,
        StepFunctionBackend.stop_execution,
        StepFunctionResponse.stop_execution,
    )
    played = StepFunctionsPlayer()
    played.install(context, runner)
    assert StepFunctionBackend.start_execution is not originals[0]

    played.uninstall()

    assert (
        StepFunctionBackend.start_execution,
        StepFunctionBackend.stop_execution,
        StepFunctionResponse.stop_execution,
    ) == originals
