"""The Batch player: jobs the real adapter submits run locally and emit Batch's events."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from skydag import joblogs
from skydag.engine.models import JobStatus
from skydag.localcloud.players.batch import BatchPlayer
from skydag.localcloud.players.runner import JobRunner
from skydag.targets.aws.batch import DETAIL_TYPE, BatchJobs, parse_event
from skydag.targets.base import JobEvent

if TYPE_CHECKING:
    from conftest import RecordingContext

# The player the conftest's ``player`` fixture installs.
PLAYER = BatchPlayer
TARGET = {"job_queue": "etl", "job_definition": "etl-extract", "timeout": "2h"}


@pytest.fixture
def jobs(context: RecordingContext, player: BatchPlayer) -> BatchJobs:
    """The real adapter, on a queue and job definition the player's stand-ins created."""
    player.ensure_resources(TARGET)
    return BatchJobs(context.client("batch"))


def statuses(context: RecordingContext) -> list[str]:
    return [event.detail["status"] for event in context.events_of(DETAIL_TYPE)]


def parsed(context: RecordingContext, index: int) -> JobEvent:
    event = parse_event(context.as_eventbridge(context.events_of(DETAIL_TYPE)[index]))
    assert event is not None
    return event


def test_a_stand_in_runs_then_succeeds_with_batch_events_and_describe_agreeing(
    context: RecordingContext,
    player: BatchPlayer,
    jobs: BatchJobs,
    kit: Any,
) -> None:
    request = kit.planned(TARGET, {"duration": "0.3s"})
    job_id = jobs.dispatch(request).job_id
    assert job_id is not None

    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING"], timeout=2)
    running = context.events_of(DETAIL_TYPE)[0]
    assert running.source == "aws.batch"
    assert running.bus == "default"
    assert running.resources == [f"arn:aws:batch:us-east-1:123456789012:job/{job_id}"]
    assert kit.missing(running.detail, "batch_job_running") == []
    # The event echoes the job's environment: its identity names the task instance, which
    # the player also asked for its plan by (no index holds a Batch try's token).
    assert request.task_key_in_events == ("etl", request.run_id, "extract")
    assert context.asked[0] == ("batch", request.token, request.task_key_in_events)
    assert parsed(context, 0) == JobEvent(
        "batch",
        JobStatus.RUNNING,
        request.token,
        job_id,
        at=parsed(context, 0).at,
        task_key=request.task_key_in_events,
        try_number=request.try_number_in_events,
    )
    described = jobs.describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert (described.status, described.at is not None) == (JobStatus.RUNNING, True)
    assert context.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]["startedAt"] > 0

    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING", "SUCCEEDED"], timeout=2)
    succeeded = context.events_of(DETAIL_TYPE)[1]
    assert kit.missing(succeeded.detail, "batch_job_succeeded") == []
    event = parsed(context, 1)
    assert (event.status, event.token, event.job_id, event.exit_code) == (
        JobStatus.SUCCEEDED,
        request.token,
        job_id,
        0,
    )
    described = jobs.describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert (described.status, described.exit_code) == (JobStatus.SUCCEEDED, 0)
    stream = succeeded.detail["container"]["logStreamName"]
    assert stream.startswith("etl-extract/default/")
    assert len(stream.rsplit("/", 1)[1]) == 32
    note = kit.log_messages(context, joblogs.BATCH_LOG_GROUP, stream)
    assert note[0].startswith("stand-in: exited 0 after 0.")
    local = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, local) == note


def test_a_command_exiting_3_fails_with_its_exit_code_and_last_output_line(
    context: RecordingContext,
    player: BatchPlayer,
    jobs: BatchJobs,
    kit: Any,
) -> None:
    script = "import sys; print('loading orders'); print('table orders is locked'); sys.exit(3)"
    request = kit.planned(TARGET, {"command": ["python", "-c", script]})
    job_id = jobs.dispatch(request).job_id

    kit.pump_until(player.poll, lambda: "FAILED" in statuses(context), timeout=2)
    failed = context.events_of(DETAIL_TYPE)[-1]
    assert kit.missing(failed.detail, "batch_job_failed") == []
    assert failed.detail["statusReason"] == "Essential container in task exited"
    assert failed.detail["container"]["exitCode"] == 3
    assert failed.detail["attempts"][0]["container"]["exitCode"] == 3
    event = parsed(context, -1)
    assert (event.status, event.job_id, event.exit_code) == (JobStatus.FAILED, job_id, 3)
    assert event.reason == "Essential container in task exited: table orders is locked"
    described = jobs.describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert (described.status, described.exit_code, described.reason) == (
        JobStatus.FAILED,
        3,
        event.reason,
    )
    expected = ["loading orders", "table orders is locked"]
    stream = failed.detail["container"]["logStreamName"]
    assert kit.log_messages(context, joblogs.BATCH_LOG_GROUP, stream) == expected
    local = joblogs.local_stream("etl", request.run_id, "extract", 1)
    assert kit.log_messages(context, joblogs.LOCAL_LOG_GROUP, local) == expected
    said = context.lines[-1]
    assert "FAILED" in said
    assert "exit code 3" in said
    assert "table orders is locked" in said
    assert ".log" in said

    # As on AWS, TerminateJob on a finished job changes nothing.
    context.client("batch").terminate_job(jobId=job_id, reason="skydag cancel: too late")
    assert player.poll() == 0
    assert jobs.describe(kit.planned_job_ref(request, job_id)) == described


def test_a_stand_in_with_outcome_failed_fails_after_its_duration(
    context: RecordingContext,
    player: BatchPlayer,
    jobs: BatchJobs,
    kit: Any,
) -> None:
    request = kit.planned(TARGET, {"duration": "0.3s", "outcome": "failed"})
    started = time.monotonic()
    job_id = jobs.dispatch(request).job_id

    kit.pump_until(player.poll, lambda: "FAILED" in statuses(context), timeout=2)
    assert time.monotonic() - started >= 0.3
    event = parsed(context, -1)
    assert (event.status, event.job_id, event.exit_code) == (JobStatus.FAILED, job_id, 1)
    assert event.reason == "Essential container in task exited"


def test_terminate_through_the_adapter_kills_the_process_group(
    context: RecordingContext,
    player: BatchPlayer,
    jobs: BatchJobs,
    runner: JobRunner,
    subreaper: Callable[[int], None],
    kit: Any,
) -> None:
    request = kit.planned(TARGET, {"command": kit.sleeper_with_child})
    job_id = jobs.dispatch(request).job_id
    assert job_id is not None
    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING"], timeout=2)
    pgid = runner.pid_of(f"batch:{job_id}")
    assert pgid is not None
    kit.pump_until(lambda: 0, lambda: len(kit.pids_in_group(pgid)) == 2, timeout=2)

    jobs.cancel(kit.planned_job_ref(request, job_id), "run cancelled by alice")
    kit.pump_until(player.poll, lambda: statuses(context) == ["RUNNING", "FAILED"], timeout=2)

    subreaper(pgid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    stopped = context.events_of(DETAIL_TYPE)[-1]
    assert kit.missing(stopped.detail, "batch_job_stopped") == []
    assert stopped.detail["statusReason"] == "skydag cancel: run cancelled by alice"
    assert stopped.detail["isTerminated"] is True
    event = parsed(context, -1)
    assert (event.status, event.job_id, event.reason) == (
        JobStatus.STOPPED,
        job_id,
        "skydag cancel: run cancelled by alice",
    )
    described = jobs.describe(kit.planned_job_ref(request, job_id))
    assert described is not None
    assert (described.status, described.reason) == (JobStatus.STOPPED, event.reason)


def test_a_job_terminated_before_it_started_never_runs(
    context: RecordingContext,
    player: BatchPlayer,
    jobs: BatchJobs,
    runner: JobRunner,
    kit: Any,
) -> None:
    request = kit.planned(TARGET, {"command": ["python", "-c", "pass"]})
    job_id = jobs.dispatch(request).job_id
    assert job_id is not None
    context.client("batch").terminate_job(jobId=job_id, reason="skydag cancel: too late")

    assert player.poll() == 1
    assert statuses(context) == ["FAILED"]
    assert runner.running() == 0
    event = parsed(context, 0)
    assert (event.status, event.exit_code) == (JobStatus.STOPPED, None)
    described = context.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]
    assert "startedAt" not in described
    assert described["isTerminated"] is True


def test_jobs_of_no_try_are_left_to_moto(
    context: RecordingContext,
    player: BatchPlayer,
    jobs: BatchJobs,
    kit: Any,
) -> None:
    batch = context.client("batch")
    unknown = batch.submit_job(
        jobName=f"skydag-etl-other-{'0' * 32}", jobQueue="etl", jobDefinition="etl-extract"
    )["jobId"]
    plain = batch.submit_job(jobName="nightly", jobQueue="etl", jobDefinition="etl-extract")
    # A job without a token is finished by moto inside SubmitJob, as without the player.
    assert batch.describe_jobs(jobs=[plain["jobId"]])["jobs"][0]["status"] == "SUCCEEDED"

    # Held for a moment (the try's row may not be readable yet), then moto's again.
    assert player.poll() == 0
    assert batch.describe_jobs(jobs=[unknown])["jobs"][0]["status"] == "SUBMITTED"
    kit.pump_until(
        player.poll,
        lambda: batch.describe_jobs(jobs=[unknown])["jobs"][0]["status"] == "SUCCEEDED",
        timeout=2,
    )
    assert context.events == []


def test_ensure_resources_creates_the_queue_and_revisions_once(
    context: RecordingContext,
    player: BatchPlayer,
    kit: Any,
) -> None:
    created = player.ensure_resources({"job_queue": "etl", "job_definition": "etl-extract:3"})
    assert created == [
        "iam role skydag-local-batch-service (Batch service role)",
        "batch compute environment skydag-local (unmanaged)",
        "batch job queue etl (on compute environment "
        "arn:aws:batch:us-east-1:123456789012:compute-environment/skydag-local)",
        "batch job definition etl-extract (revision 1-3)",
    ]
    assert player.ensure_resources({"job_queue": "etl", "job_definition": "etl-extract:3"}) == []
    assert player.ensure_resources({"job_queue": "{{ params.queue }}"}) == []
    refused = player.ensure_resources({"job_definition": "etl-extract:101"})
    assert len(refused) == 1
    assert "not created" in refused[0]

    request = kit.planned({"job_queue": "etl", "job_definition": "etl-extract:3"})
    job_id = BatchJobs(context.client("batch")).dispatch(request).job_id
    kit.pump_until(player.poll, lambda: "SUCCEEDED" in statuses(context), timeout=2)
    assert parsed(context, -1).job_id == job_id
    assert context.events_of(DETAIL_TYPE)[-1].detail["jobDefinition"].endswith("etl-extract:3")


def test_uninstall_restores_moto(context: RecordingContext) -> None:
    from moto.batch.models import BatchBackend, Job
    from moto.batch_simple.models import BatchSimpleBackend

    owners = {
        (BatchSimpleBackend, "_mark_job_as_finished"),
        (Job, "run"),
        (Job, "describe"),
        (BatchBackend, "terminate_job"),
        (BatchBackend, "cancel_job"),
    }
    before = {(owner, name): owner.__dict__[name] for owner, name in owners}
    played = BatchPlayer()
    played.install(context, None)
    assert all(owner.__dict__[name] is not before[owner, name] for owner, name in owners)
    played.uninstall()
    assert {(o, n): o.__dict__[n] for o, n in owners} == before
