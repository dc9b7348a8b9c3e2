"""The EMR Serverless player against the moto server, driven through the real adapter."""

from __future__ import annotations

import gzip
import sys
from typing import TYPE_CHECKING, Any

import pytest

from skydag import joblogs
from skydag.engine.models import JobStatus
from skydag.localcloud.players.emr_serverless import EmrServerlessPlayer
from skydag.localcloud.players.runner import JobRunner
from skydag.targets.aws.emr_serverless import DETAIL_TYPE, EmrServerlessRuns, parse_event

if TYPE_CHECKING:
    from conftest import RecordingContext

# The player the conftest's ``player`` fixture installs.
PLAYER = EmrServerlessPlayer
APPLICATION_ID = "00f1982r1uukb925"
ROLE = "arn:aws:iam::123456789012:role/etl-emr-serverless"
DRIVER = {"sparkSubmit": {"entryPoint": "s3://etl-code/extract.py"}}


@pytest.fixture
def serverless(context: RecordingContext, player: EmrServerlessPlayer) -> Any:
    assert player.ensure_resources({"application_id": APPLICATION_ID}) == [
        f"emr-serverless application {APPLICATION_ID} (SPARK, emr-7.5.0)"
    ]
    assert player.ensure_resources({"application_id": APPLICATION_ID}) == []
    return context.client("emr-serverless")


def target(**overrides: Any) -> dict[str, Any]:
    return {
        "application_id": APPLICATION_ID,
        "execution_role_arn": ROLE,
        "job_driver": DRIVER,
        **overrides,
    }


def states(context: RecordingContext) -> list[str]:
    return [event.detail["state"] for event in context.events_of(DETAIL_TYPE)]


def run_of(serverless: Any, job_id: str) -> dict[str, Any]:
    application_id, run_id = job_id.split("/")
    response = serverless.get_job_run(applicationId=application_id, jobRunId=run_id)
    run: dict[str, Any] = response["jobRun"]
    return run


def test_a_run_succeeds_with_canonical_events_and_its_logs_where_configured(
    context: RecordingContext, kit: Any, player: EmrServerlessPlayer, serverless: Any
) -> None:
    overrides = {
        "monitoringConfiguration": {
            "cloudWatchLoggingConfiguration": {"enabled": True, "logStreamNamePrefix": "etl"},
            "s3MonitoringConfiguration": {"logUri": "s3://etl-logs/serverless/"},
        }
    }
    command = [sys.executable, "-c", "print('wrote 7 files')"]
    request = kit.planned(target(configuration_overrides=overrides), {"command": command})

    job_id = EmrServerlessRuns(serverless).dispatch(request).job_id
    assert job_id is not None
    assert run_of(serverless, job_id)["state"] == "SUBMITTED"
    kit.pump_until(player.poll, lambda: "SUCCESS" in states(context), timeout=2)

    assert states(context) == ["RUNNING", "SUCCESS"]
    for event in context.events_of(DETAIL_TYPE):
        model = kit.canonical(f"emr_serverless_job_run_{event.detail['state'].lower()}")
        assert kit.shape(event.detail) == kit.shape(model["detail"])
        assert (event.source, event.resources) == (model["source"], model["resources"])
        parsed = parse_event(context.as_eventbridge(event))
        assert parsed is not None
        assert parsed.job_id == job_id
    success = parse_event(context.as_eventbridge(context.events[-1]))
    assert success is not None
    assert (success.status, success.token) == (JobStatus.SUCCEEDED, request.token)
    described = EmrServerlessRuns(serverless).describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert described.status is JobStatus.SUCCEEDED
    run_id = job_id.split("/")[1]
    path = f"applications/{APPLICATION_ID}/jobs/{run_id}/SPARK_DRIVER/stdout"
    assert kit.log_messages(context, "/aws/emr-serverless", f"etl/{path}") == ["wrote 7 files"]
    stored = context.client("s3").get_object(Bucket="etl-logs", Key=f"serverless/{path}.gz")
    assert gzip.decompress(stored["Body"].read()) == b"wrote 7 files\n"
    stream = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, stream) == ["wrote 7 files"]


def test_a_failing_run_fails_with_its_exit_code_in_the_state_details(
    context: RecordingContext, kit: Any, player: EmrServerlessPlayer, serverless: Any
) -> None:
    command = [sys.executable, "-c", "print('starting'); print('out of memory'); exit(3)"]
    request = kit.planned(target(), {"command": command})

    job_id = EmrServerlessRuns(serverless).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: "FAILED" in states(context), timeout=2)

    failed = context.events_of(DETAIL_TYPE)[-1]
    assert kit.shape(failed.detail) == kit.shape(
        kit.canonical("emr_serverless_job_run_failed")["detail"]
    )
    assert failed.detail["previousState"] == "RUNNING"
    parsed = parse_event(context.as_eventbridge(failed))
    assert parsed is not None
    assert (parsed.status, parsed.job_id) == (JobStatus.FAILED, job_id)
    assert job_id is not None
    run = run_of(serverless, job_id)
    assert run["state"] == "FAILED"
    assert "code 3: out of memory" in run["stateDetails"]
    assert run["endedAt"] >= run["startedAt"]
    described = EmrServerlessRuns(serverless).describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert (described.status, described.reason) == (JobStatus.FAILED, run["stateDetails"])
    stream = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, stream) == [
        "starting",
        "out of memory",
    ]
    assert any("FAILED" in line and "exit code 3" in line for line in context.lines)


def test_a_stand_in_writes_a_note_as_its_log_and_cannot_be_cancelled_once_ended(
    context: RecordingContext, kit: Any, player: EmrServerlessPlayer, serverless: Any
) -> None:
    request = kit.planned(target(), {"outcome": "success"})

    job_id = EmrServerlessRuns(serverless).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: "SUCCESS" in states(context), timeout=2)

    stream = joblogs.local_stream("etl", request.run_id, "extract", 1)
    [note] = kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, stream)
    assert note.startswith("stand-in: exited 0 after")
    application_id, run_id = str(job_id).split("/")
    with pytest.raises(serverless.exceptions.ValidationException):
        serverless.cancel_job_run(applicationId=application_id, jobRunId=run_id)
    assert run_of(serverless, str(job_id))["state"] == "SUCCESS"


def test_cancel_job_run_cancels_the_run_and_kills_the_process_group(
    context: RecordingContext,
    kit: Any,
    player: EmrServerlessPlayer,
    serverless: Any,
    runner: JobRunner,
) -> None:
    request = kit.planned(target(), {"command": kit.sleeper})
    job_id = EmrServerlessRuns(serverless).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: states(context) == ["RUNNING"], timeout=2)
    pgid = runner.pid_of(f"emr_serverless:{job_id}")
    assert pgid is not None

    EmrServerlessRuns(serverless).cancel(kit.planned_job_ref(request, job_id), "run cancelled")
    kit.pump_until(player.poll, lambda: "CANCELLED" in states(context), timeout=2)

    assert kit.process_group_gone(pgid)
    cancelled = context.events_of(DETAIL_TYPE)[-1]
    model = kit.canonical("emr_serverless_job_run_cancelled")
    assert kit.shape(cancelled.detail) == kit.shape(model["detail"])
    assert cancelled.detail["previousState"] == "CANCELLING"
    parsed = parse_event(context.as_eventbridge(cancelled))
    assert parsed is not None
    assert (parsed.status, parsed.job_id) == (JobStatus.STOPPED, job_id)
    described = EmrServerlessRuns(serverless).describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert described.status is JobStatus.STOPPED


def test_a_skydag_named_run_without_a_try_ends_as_moto_ends_it(
    context: RecordingContext,
    kit: Any,
    player: EmrServerlessPlayer,
    serverless: Any,
) -> None:
    player.claim_grace = 0.0  # no try has the run: let go at once
    request = kit.planned(target())
    context.plans.clear()
    job_id = EmrServerlessRuns(serverless).dispatch(request).job_id
    assert job_id is not None

    kit.pump_until(player.poll, lambda: run_of(serverless, job_id)["state"] == "SUCCESS", timeout=1)

    assert context.events == []


def test_uninstall_restores_moto(context: RecordingContext, runner: JobRunner) -> None:
    from moto.emrserverless.models import EMRServerlessBackend

    originals = (EMRServerlessBackend.start_job_run, EMRServerlessBackend.cancel_job_run)
    played = EmrServerlessPlayer()
    played.install(context, runner)
    assert EMRServerlessBackend.start_job_run is not originals[0]

    played.uninstall()

    assert (EMRServerlessBackend.start_job_run, EMRServerlessBackend.cancel_job_run) == originals
