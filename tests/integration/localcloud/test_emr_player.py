"""The EMR player against the moto server, driven through the real adapter."""

from __future__ import annotations

import gzip
import sys
from typing import TYPE_CHECKING, Any

import pytest

from skydag import joblogs
from skydag.engine.models import JobStatus
from skydag.localcloud.players.emr import EmrPlayer
from skydag.localcloud.players.runner import JobRunner
from skydag.targets.aws.emr import DETAIL_TYPE, EmrSteps, parse_event

if TYPE_CHECKING:
    from conftest import RecordingContext

# The player the conftest's ``player`` fixture installs.
PLAYER = EmrPlayer
CLUSTER_ID = "j-2AXXXXXXGAPLF"
STEP = {"args": ["spark-submit", "s3://etl-code/extract.py"]}


@pytest.fixture
def emr(context: RecordingContext, player: EmrPlayer) -> Any:
    return context.client("emr")


def states(context: RecordingContext) -> list[str]:
    return [event.detail["state"] for event in context.events_of(DETAIL_TYPE)]


def test_a_step_on_a_cluster_id_completes_with_its_events_and_its_log(
    context: RecordingContext, kit: Any, player: EmrPlayer, emr: Any
) -> None:
    assert player.ensure_resources({"cluster_id": CLUSTER_ID, "step": STEP}) == [
        f"emr cluster {CLUSTER_ID}, WAITING for steps"
    ]
    target = {"cluster_id": CLUSTER_ID, "step": STEP}
    command = [sys.executable, "-c", "print('extracted 12 rows')"]
    request = kit.planned(target, {"command": command})

    job_id = EmrSteps(emr).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: "COMPLETED" in states(context), timeout=2)

    assert states(context) == ["RUNNING", "COMPLETED"]
    assert job_id is not None
    assert job_id.startswith(f"{CLUSTER_ID}/s-")
    for event in context.events_of(DETAIL_TYPE):
        model = kit.canonical(f"emr_step_{event.detail['state'].lower()}")
        assert kit.shape(event.detail) == kit.shape(model["detail"])
        assert (event.source, event.resources) == (model["source"], model["resources"])
        parsed = parse_event(context.as_eventbridge(event))
        assert parsed is not None
        assert (parsed.token, parsed.job_id) == (request.token, job_id)
    completed = parse_event(context.as_eventbridge(context.events[-1]))
    assert completed is not None
    assert completed.status is JobStatus.SUCCEEDED
    described = EmrSteps(emr).describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert described.status is JobStatus.SUCCEEDED
    step_id = job_id.split("/")[1]
    stored = context.client("s3").get_object(
        Bucket="skydag-local-emr-logs", Key=f"{CLUSTER_ID}/steps/{step_id}/stdout.gz"
    )
    assert gzip.decompress(stored["Body"].read()) == b"extracted 12 rows\n"
    stream = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, stream) == ["extracted 12 rows"]
    assert emr.describe_cluster(ClusterId=CLUSTER_ID)["Cluster"]["Status"]["State"] == "WAITING"


def test_a_failing_step_on_a_named_cluster_fails_with_its_exit_code_and_log_file(
    context: RecordingContext, kit: Any, player: EmrPlayer, emr: Any
) -> None:
    target = {"cluster_name": "analytics", "step": STEP}
    [created] = player.ensure_resources(target)
    assert created.startswith("emr cluster analytics (j-")
    assert player.ensure_resources(target) == []
    command = [sys.executable, "-c", "print('reading'); print('no such table'); exit(3)"]
    request = kit.planned(target, {"command": command})

    job_id = EmrSteps(emr).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: "FAILED" in states(context), timeout=2)

    failed = context.events_of(DETAIL_TYPE)[-1]
    assert kit.shape(failed.detail) == kit.shape(kit.canonical("emr_step_failed")["detail"])
    assert failed.detail["severity"] == "ERROR"
    parsed = parse_event(context.as_eventbridge(failed))
    assert parsed is not None
    assert (parsed.status, parsed.job_id) == (JobStatus.FAILED, job_id)
    assert parsed.reason is not None
    assert "code 3: no such table" in parsed.reason
    assert job_id is not None
    cluster_id, step_id = job_id.split("/")
    step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
    log_file = f"s3://skydag-local-emr-logs/{cluster_id}/steps/{step_id}/stdout.gz"
    assert step["Status"]["FailureDetails"] == {
        "Reason": "Step failed",
        "Message": "The local job exited with code 3: no such table",
        "LogFile": log_file,
    }
    described = EmrSteps(emr).describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert described.status is JobStatus.FAILED
    assert described.reason is not None
    assert "no such table" in described.reason
    assert log_file in described.reason
    stream = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, stream) == [
        "reading",
        "no such table",
    ]
    assert any("FAILED" in line and "exit code 3" in line for line in context.lines)


def test_cancel_steps_cancels_the_step_and_kills_the_process_group(
    context: RecordingContext, kit: Any, player: EmrPlayer, emr: Any, runner: JobRunner
) -> None:
    target = {"cluster_id": CLUSTER_ID, "step": STEP}
    player.ensure_resources(target)
    request = kit.planned(target, {"command": kit.sleeper})
    job_id = EmrSteps(emr).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: states(context) == ["RUNNING"], timeout=2)
    pgid = runner.pid_of(f"emr:{job_id}")
    assert pgid is not None

    EmrSteps(emr).cancel(kit.planned_job_ref(request, job_id), "run cancelled by alice")
    kit.pump_until(player.poll, lambda: "CANCELLED" in states(context), timeout=2)

    assert kit.process_group_gone(pgid)
    cancelled = context.events_of(DETAIL_TYPE)[-1]
    assert kit.shape(cancelled.detail) == kit.shape(kit.canonical("emr_step_cancelled")["detail"])
    parsed = parse_event(context.as_eventbridge(cancelled))
    assert parsed is not None
    assert (parsed.status, parsed.job_id) == (JobStatus.STOPPED, job_id)
    described = EmrSteps(emr).describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert described.status is JobStatus.STOPPED


def test_cancel_steps_answers_like_aws(
    context: RecordingContext, player: EmrPlayer, emr: Any
) -> None:
    player.ensure_resources({"cluster_id": CLUSTER_ID})
    [step_id] = emr.add_job_flow_steps(
        JobFlowId=CLUSTER_ID,
        Steps=[{"Name": "adhoc", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": []}}],
    )["StepIds"]

    first = emr.cancel_steps(ClusterId=CLUSTER_ID, StepIds=[step_id, "s-MISSING"])
    again = emr.cancel_steps(ClusterId=CLUSTER_ID, StepIds=[step_id])

    assert [info["Status"] for info in first["CancelStepsInfoList"]] == ["SUBMITTED", "FAILED"]
    [refused] = again["CancelStepsInfoList"]
    assert refused["Status"] == "FAILED"
    assert "CANCELLED" in refused["Reason"]
    step = emr.describe_step(ClusterId=CLUSTER_ID, StepId=step_id)["Step"]
    assert step["Status"]["State"] == "CANCELLED"


def test_a_skydag_named_step_without_a_try_is_left_to_moto(
    context: RecordingContext,
    kit: Any,
    player: EmrPlayer,
    emr: Any,
) -> None:
    player.claim_grace = 0.0  # no try has the step: let go at once
    target = {"cluster_id": CLUSTER_ID, "step": STEP}
    player.ensure_resources(target)
    request = kit.planned(target)
    context.plans.clear()
    EmrSteps(emr).dispatch(request)

    for _ in range(3):
        player.poll()

    assert context.events == []


def test_uninstall_restores_moto(context: RecordingContext, runner: JobRunner) -> None:
    from moto.emr.models import ElasticMapReduceBackend, Step
    from moto.emr.responses import ElasticMapReduceResponse

    add_steps, status = ElasticMapReduceBackend.add_job_flow_steps, Step.__dict__["status"]
    played = EmrPlayer()
    played.install(context, runner)
    assert hasattr(ElasticMapReduceResponse, "cancel_steps")

    played.uninstall()

    assert ElasticMapReduceBackend.add_job_flow_steps is add_steps
    assert Step.__dict__["status"] is status
    assert not hasattr(ElasticMapReduceBackend, "cancel_steps")
    assert not hasattr(ElasticMapReduceResponse, "cancel_steps")
