"""`skydag logs` against moto: each service's log layout is created as the service would
create it (groups, streams, S3 objects), and the command must find the try's output there
-- or in the local cloud's stream, or say plainly that there is none."""

from __future__ import annotations

import contextlib
import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from cli_support import Skydag
from moto.batch.models import batch_backends
from moto.core import DEFAULT_ACCOUNT_ID

from skydag import joblogs
from skydag.cli import remote
from skydag.engine.models import DagRun, RunType, TaskInstance, TryRecord
from skydag.engine.states import Cause, RunState, TaskState
from skydag.engine.transitions import Transition

T = TaskState
REGION = "us-east-1"
RUN = "manual__2026-11-22T09:00:00+00:00"
# CloudWatch Logs refuses events older than 14 days, so the logs are written
# an hour ago rather than on a fixed date (a fixed date made this file fail by itself).
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
SFN_ARN = "arn:aws:states:us-east-1:123456789012:execution:etl:skydag-jobs-flow-abc"

DAG = """
dag: jobs
tasks:
  crunch: {batch: {job_queue: q, job_definition: crunch}}
  serve: {ecs: {cluster: web, task_definition: web, launch_type: FARGATE}}
  score: {lambda: {function_name: "score-fn:live"}}
  templated: {lambda: {function_name: "{{ params.fn }}"}}
  flow:
    stepfunctions: {state_machine_arn: "arn:aws:states:us-east-1:123456789012:stateMachine:etl"}
  step: {emr: {cluster_id: j-1, step: {args: [spark-submit, job.py]}}}
  spark:
    emr_serverless:
      application_id: app
      execution_role_arn: arn:aws:iam::123456789012:role/emr
      job_driver: {sparkSubmit: {entryPoint: s3://code/job.py}}
  done: {noop: {}}
"""


@pytest.fixture(autouse=True)
def _no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """--follow polls once a second: the tests never wait for real."""
    monkeypatch.setattr(remote, "pause", lambda seconds: None)


@pytest.fixture
def jobs_dag(skydag: Skydag) -> Skydag:
    skydag.load_dag(DAG)
    skydag.repos.runs.create(
        DagRun(
            dag_id="jobs",
            run_id=RUN,
            dag_version=1,
            run_type=RunType.MANUAL,
            state=RunState.RUNNING,
            created_at=T0,
            started_at=T0,
        )
    )
    return skydag


def put_task(skydag: Skydag, task: str, state: TaskState = T.SUCCESS, **fields: Any) -> None:
    fields.setdefault("try_number", 1)
    if fields["try_number"] and state is not T.PENDING:
        fields.setdefault("started_at", T0)
    skydag.repos.tasks.put_new(
        [TaskInstance("jobs", RUN, task, dag_version=1, state=state, **fields)]
    )


def put_log(group: str, stream: str, *messages: str, at: datetime = T0) -> None:
    logs = boto3.client("logs", region_name=REGION)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    start = int(at.timestamp() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": start + i, "message": m} for i, m in enumerate(messages)],
    )


def batch_job() -> str:
    """A Batch job as moto keeps it; its log stream is what Batch names once it runs."""
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch", region_name=REGION)
    environment = batch.create_compute_environment(
        computeEnvironmentName="compute", type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    batch.create_job_queue(
        jobQueueName="queue",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )
    batch.register_job_definition(
        jobDefinitionName="crunch",
        type="container",
        containerProperties={"image": "busybox", "vcpus": 1, "memory": 128},
    )
    job_id: str = batch.submit_job(jobName="crunch", jobQueue="queue", jobDefinition="crunch")[
        "jobId"
    ]
    batch_backends[DEFAULT_ACCOUNT_ID][REGION]._jobs[
        job_id
    ].log_stream_name = f"crunch/default/{job_id}"
    return job_id


# --- Batch ---------------------------------------------------------------------------------


def test_a_batch_jobs_output_is_read_from_its_stream(jobs_dag: Skydag) -> None:
    job_id = batch_job()
    put_log(joblogs.BATCH_LOG_GROUP, f"crunch/default/{job_id}", "loading", "42 rows")
    put_task(jobs_dag, "crunch", job_id=job_id, exit_code=0)
    result = jobs_dag.run("logs", "jobs", RUN, "crunch")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["loading", "42 rows"]
    assert f"/aws/batch/job, stream crunch/default/{job_id}" in result.err
    as_json = jobs_dag.run("logs", "jobs", RUN, "crunch", "--output", "json").json()
    assert as_json["source"] == f"log group /aws/batch/job, stream crunch/default/{job_id}"
    assert (as_json["try_number"], as_json["job_id"], as_json["map_index"]) == (1, job_id, None)
    assert [line["message"] for line in as_json["lines"]] == ["loading", "42 rows"]
    assert as_json["lines"][0]["timestamp"] == T0.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_follow_reads_until_the_try_ended_and_its_stream_is_drained(
    jobs_dag: Skydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = batch_job()
    stream = f"crunch/default/{job_id}"
    put_log(joblogs.BATCH_LOG_GROUP, stream, "one")
    put_task(jobs_dag, "crunch", T.RUNNING, job_id=job_id, queued_at=T0)
    later = T0 + timedelta(seconds=5)

    def finish() -> None:
        ti = jobs_dag.repos.tasks.get("jobs", RUN, "crunch")
        jobs_dag.repos.tasks.apply(
            ti,
            Transition(
                "crunch", T.RUNNING, T.SUCCESS, Cause.SUCCEEDED, ti.version, {"ended_at": later}
            ),
        )

    # What happens while the command waits between two reads.
    steps = iter(
        [
            lambda: put_log(joblogs.BATCH_LOG_GROUP, stream, "two", at=later),
            lambda: (finish(), put_log(joblogs.BATCH_LOG_GROUP, stream, "three", at=later)),
        ]
    )
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        next(steps, lambda: None)()

    monkeypatch.setattr(remote, "pause", pause)
    result = jobs_dag.run("logs", "jobs", RUN, "crunch", "--follow")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["one", "two", "three"]
    assert len(pauses) == 3  # the last read after the end brought nothing: drained


# --- ECS -----------------------------------------------------------------------------------


def test_an_ecs_tasks_output_is_read_from_its_awslogs_stream(jobs_dag: Skydag) -> None:
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="web")
    ecs.register_task_definition(
        family="web",
        containerDefinitions=[
            {
                "name": "app",
                "image": "web:1",
                "essential": True,
                "memory": 512,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": "/ecs/web", "awslogs-stream-prefix": "jobs"},
                },
            },
            {"name": "proxy", "image": "envoy", "essential": True, "memory": 64},
        ],
    )
    marker = [{"name": "SKYDAG_TASK", "value": "serve"}]
    task_arn = ecs.run_task(
        cluster="web",
        taskDefinition="web",
        launchType="FARGATE",
        overrides={"containerOverrides": [{"name": "app", "environment": marker}]},
    )["tasks"][0]["taskArn"]
    task_id = task_arn.rsplit("/", 1)[-1]
    put_log("/ecs/web", f"jobs/app/{task_id}", "listening on :8080")
    put_log("/ecs/web", f"jobs/proxy/{task_id}", "envoy ready")  # not skydag's container
    put_task(jobs_dag, "serve", T.RUNNING, job_id=task_arn)
    result = jobs_dag.run("logs", "jobs", RUN, "serve")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["listening on :8080"]


def test_an_ecs_container_without_awslogs_says_how_to_configure_it(jobs_dag: Skydag) -> None:
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="web")
    ecs.register_task_definition(
        family="web",
        containerDefinitions=[{"name": "app", "image": "web:1", "memory": 512}],
    )
    task_arn = ecs.run_task(cluster="web", taskDefinition="web", launchType="FARGATE")["tasks"][0][
        "taskArn"
    ]
    put_task(jobs_dag, "serve", job_id=task_arn)
    result = jobs_dag.run("logs", "jobs", RUN, "serve")
    assert result.code == 0
    assert result.out == ""
    assert "logConfiguration with the awslogs driver" in result.err


# --- Lambda --------------------------------------------------------------------------------


def test_a_lambda_invocations_lines_are_those_between_its_start_and_end(
    jobs_dag: Skydag,
) -> None:
    put_log(
        "/aws/lambda/score-fn",
        "2026/11/22/[$LATEST]0123456789abcdef",
        "START RequestId: other Version: $LATEST",
        "someone else's line",
        "END RequestId: other",
        "START RequestId: req-1 Version: $LATEST",
        "scoring 3 shards\n",
        "done",
        "END RequestId: req-1",
        "REPORT RequestId: req-1\tDuration: 12.00 ms",
        "START RequestId: later Version: $LATEST",
        "the next invocation",
    )
    put_task(jobs_dag, "score", job_id="req-1")
    result = jobs_dag.run("logs", "jobs", RUN, "score")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["scoring 3 shards", "done"]
    assert "invocation req-1" in result.err


def test_a_past_try_is_read_through_the_try_history(jobs_dag: Skydag) -> None:
    stream = "2026/11/22/[$LATEST]feed"
    put_log(
        "/aws/lambda/score-fn",
        stream,
        "START RequestId: req-1 Version: $LATEST",
        "Traceback: boom",
        "END RequestId: req-1",
        "START RequestId: req-2 Version: $LATEST",
        "fine this time",
        "END RequestId: req-2",
    )
    first = TryRecord(1, T.FAILED, T0, T0 + timedelta(seconds=3), None, "req-1", "boom")
    put_task(jobs_dag, "score", try_number=2, job_id="req-2", tries=(first,))
    assert jobs_dag.run("logs", "jobs", RUN, "score").out.splitlines() == ["fine this time"]
    past = jobs_dag.run("logs", "jobs", RUN, "score", "--try", "1")
    assert past.code == 0, past.err
    assert past.out.splitlines() == ["Traceback: boom"]
    unknown = jobs_dag.run("logs", "jobs", RUN, "score", "--try", "3")
    assert unknown.code == 1
    assert unknown.err.strip() == (
        f"skydag logs: error: task jobs/{RUN}/score has no try 3 (its tries: 1 to 2)"
    )


def test_a_try_dropped_from_the_history_says_so(jobs_dag: Skydag) -> None:
    kept = tuple(TryRecord(n, T.FAILED, job_id=f"req-{n}") for n in range(11, 61))
    put_task(jobs_dag, "score", T.RUNNING, try_number=61, job_id="req-61", tries=kept)
    result = jobs_dag.run("logs", "jobs", RUN, "score", "--try", "10")
    assert result.code == 1
    assert "try 10 of" in result.err
    assert "is no longer kept (the last 50 tries are; the oldest kept is try 11)" in result.err


def test_a_templated_function_name_cannot_be_resolved(jobs_dag: Skydag) -> None:
    put_task(jobs_dag, "templated", job_id="req-9")
    result = jobs_dag.run("logs", "jobs", RUN, "templated")
    assert result.code == 0
    assert "function_name is a template ({{ params.fn }})" in result.err
    assert "cannot be resolved" in result.err


# --- EMR and EMR Serverless ----------------------------------------------------------------


def test_an_emr_steps_output_is_read_from_the_clusters_log_uri(jobs_dag: Skydag) -> None:
    emr = boto3.client("emr", region_name=REGION)
    cluster_id = emr.run_job_flow(
        Name="etl",
        LogUri="s3n://emr-logs/etl/",
        Instances={"InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        ReleaseLabel="emr-7.0.0",
    )["JobFlowId"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="emr-logs")
    s3.put_object(
        Bucket="emr-logs",
        Key=f"etl/{cluster_id}/steps/s-STEP1/stdout.gz",
        Body=gzip.compress(b"spark says hi\nwrote 7 files\n"),
    )
    put_task(jobs_dag, "step", job_id=f"{cluster_id}/s-STEP1")
    result = jobs_dag.run("logs", "jobs", RUN, "step")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["spark says hi", "wrote 7 files"]
    assert f"s3://emr-logs/etl/{cluster_id}/steps/s-STEP1/stdout.gz" in result.err


def test_an_emr_serverless_runs_output_is_read_from_cloudwatch(jobs_dag: Skydag) -> None:
    client = boto3.client("emr-serverless", region_name=REGION)
    app = client.create_application(name="etl", releaseLabel="emr-7.0.0", type="SPARK")[
        "applicationId"
    ]
    run = client.start_job_run(
        applicationId=app,
        executionRoleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/emr",
        jobDriver={"sparkSubmit": {"entryPoint": "s3://code/job.py"}},
        configurationOverrides={
            "monitoringConfiguration": {
                "cloudWatchLoggingConfiguration": {
                    "enabled": True,
                    "logGroupName": "/emr/etl",
                    "logStreamNamePrefix": "nightly",
                }
            }
        },
    )["jobRunId"]
    put_log("/emr/etl", f"nightly/applications/{app}/jobs/{run}/SPARK_DRIVER/stdout", "rows=9")
    put_task(jobs_dag, "spark", job_id=f"{app}/{run}")
    result = jobs_dag.run("logs", "jobs", RUN, "spark")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["rows=9"]


# --- where the service keeps nothing -------------------------------------------------------


def test_the_local_clouds_stream_is_read_when_the_service_has_nothing(
    jobs_dag: Skydag,
) -> None:
    job_id = batch_job()  # Batch knows the job, but its stream was never written
    put_task(jobs_dag, "crunch", T.FAILED, job_id=job_id, exit_code=3)
    stream = joblogs.local_stream("jobs", RUN, "crunch", 1)
    put_log(joblogs.LOCAL_LOG_GROUP, stream, "played locally", "exit 3")
    result = jobs_dag.run("logs", "jobs", RUN, "crunch")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["played locally", "exit 3"]
    assert f"{joblogs.LOCAL_LOG_GROUP}, stream {stream}" in result.err


def test_step_functions_keeps_no_output_and_says_so(jobs_dag: Skydag) -> None:
    put_task(jobs_dag, "flow", job_id=SFN_ARN)
    result = jobs_dag.run("logs", "jobs", RUN, "flow")
    assert result.code == 0
    assert result.out == ""
    [line] = result.err.splitlines()
    assert line.startswith(f"skydag logs: try 1 of jobs/{RUN}/flow: Step Functions keeps no")
    assert SFN_ARN in line
    # Played by the local cloud, the same try has a stream: that is shown instead.
    put_log(joblogs.LOCAL_LOG_GROUP, joblogs.local_stream("jobs", RUN, "flow", 1), "state A")
    assert jobs_dag.run("logs", "jobs", RUN, "flow").out == "state A\n"


def test_a_noop_task_has_no_output(jobs_dag: Skydag) -> None:
    put_task(jobs_dag, "done", job_id="0" * 32)
    result = jobs_dag.run("logs", "jobs", RUN, "done", "--output", "json")
    assert result.code == 0
    body = result.json()
    assert (body["source"], body["lines"]) == (None, [])
    assert body["note"] == "a noop task runs no job: it has no output"


def test_a_configured_location_with_nothing_in_it_says_where_it_looked(
    jobs_dag: Skydag,
) -> None:
    job_id = batch_job()
    put_task(jobs_dag, "crunch", job_id=job_id)
    result = jobs_dag.run("logs", "jobs", RUN, "crunch")
    assert result.code == 0
    assert "no output found at log group /aws/batch/job, stream crunch/default/" in result.err
    assert f"{joblogs.LOCAL_LOG_GROUP}, stream" in result.err


# --- what cannot be read -------------------------------------------------------------------


def test_a_try_that_never_started_is_an_error(jobs_dag: Skydag) -> None:
    put_task(jobs_dag, "crunch", T.PENDING, try_number=0)
    pending = jobs_dag.run("logs", "jobs", RUN, "crunch")
    assert pending.code == 1
    assert pending.err == (
        f"skydag logs: error: task jobs/{RUN}/crunch has not started (it is pending): "
        "it has no tries yet\n"
    )
    put_task(jobs_dag, "serve", T.QUEUED)
    queued = jobs_dag.run("logs", "jobs", RUN, "serve")
    assert queued.code == 1
    assert "try 1 of" in queued.err
    assert "has not started a job yet (queued)" in queued.err
    reason = "template error: 'params' is undefined"
    put_task(jobs_dag, "score", T.FAILED, reason=reason)
    refused = jobs_dag.run("logs", "jobs", RUN, "score")
    assert refused.code == 1
    assert f"never started a job (failed: {reason})" in refused.err


def test_unknown_runs_tasks_and_map_indexes_are_errors(jobs_dag: Skydag) -> None:
    for argv, message in [
        (["jobs", "manual__nope", "crunch"], "run jobs/manual__nope not found"),
        (["nope", RUN, "crunch"], f"run nope/{RUN} not found"),
        (["jobs", RUN, "nope"], f"task 'nope' not found in run jobs/{RUN}"),
    ]:
        result = jobs_dag.run("logs", *argv)
        assert result.code == 1, argv
        assert result.err.startswith(f"skydag logs: error: {message}"), result.err
    put_task(jobs_dag, "done", job_id="0" * 32)
    mapped = jobs_dag.run("logs", "jobs", RUN, "done", "--map-index", "2")
    assert mapped.code == 1
    assert "task 'done' is not mapped" in mapped.err


def test_the_json_of_a_missing_log_is_still_one_object(jobs_dag: Skydag) -> None:
    put_task(jobs_dag, "flow", job_id=SFN_ARN)
    body = jobs_dag.run("logs", "jobs", RUN, "flow", "--output", "json").json()
    assert body["note"].startswith("Step Functions keeps no job output")
    assert json.loads(json.dumps(body)) == body
