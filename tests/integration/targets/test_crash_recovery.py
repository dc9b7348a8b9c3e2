"""A crash injected at each step of a dispatch, through the scheduler, on the real targets.

The steps are: record the intent (pending → queued, with the try's token), call the
service, record the job id. The scheduler invocation dies after the first or the second;
then the stream redelivers the change and the reconciler looks again after its grace
period. Whatever happens, the service holds exactly one job for the try, and the task
instance is attached to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.moto_api import state_manager

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import JobReport, JobStatus
from skydag.engine.rules import DISPATCH_CHECK_AFTER
from skydag.engine.states import TaskState
from skydag.localcloud.stream_inserts import one_insert_per_created_item
from skydag.settings import Settings
from skydag.spec.models import EVENTS_NAME_THE_TASK, DagSpec
from skydag.store.models import create_tables
from skydag.targets.aws.registry import AwsTargets
from skydag.targets.base import DispatchRequest, DispatchResult, JobEvent, JobRef, Target
from skydag.targets.builtin import TargetSet

REGION = "us-east-1"


class Crash(RuntimeError):
    pass


class CrashingTargets:
    """The AWS targets, except that one dispatch dies before or after its service call."""

    def __init__(self, inner: AwsTargets, when: str) -> None:
        self.inner, self.when = inner, when

    def target_for(self, kind: str) -> Target:
        return _Crashing(self, self.inner.target_for(kind))


class _Crashing:
    def __init__(self, owner: CrashingTargets, inner: Target) -> None:
        self.owner, self.inner = owner, inner

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        when, self.owner.when = self.owner.when, ""
        if when == "before_call":
            raise Crash("the invocation died before calling the service")
        result = self.inner.dispatch(request)
        if when == "after_call":
            raise Crash("the invocation died before recording the job id")
        return result

    def describe(self, job: JobRef) -> JobReport | None:
        return self.inner.describe(job)

    def cancel(self, job: JobRef, reason: str) -> None:
        self.inner.cancel(job, reason)


class Clock:
    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.moment = datetime.now(UTC)

    def now(self) -> Any:
        return self.moment


def _batch() -> tuple[dict[str, Any], Callable[[], list[str]]]:
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch", region_name=REGION)
    compute = batch.create_compute_environment(
        computeEnvironmentName="etl-compute", type="UNMANAGED", state="ENABLED", serviceRole=role
    )
    batch.create_job_queue(
        jobQueueName="etl-queue",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": compute["computeEnvironmentArn"]}
        ],
    )
    batch.register_job_definition(
        jobDefinitionName="etl-def",
        type="container",
        containerProperties={"image": "x", "vcpus": 1, "memory": 128, "command": ["true"]},
    )

    def jobs() -> list[str]:
        listed = batch.list_jobs(
            jobQueue="etl-queue", filters=[{"name": "JOB_NAME", "values": ["skydag-*"]}]
        )
        return [j["jobId"] for j in listed["jobSummaryList"]]

    return {"batch": {"job_queue": "etl-queue", "job_definition": "etl-def"}}, jobs


def _stepfunctions() -> tuple[dict[str, Any], Callable[[], list[str]]]:
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}
    arn = sfn.create_state_machine(name="m", definition=json.dumps(definition), roleArn=role)[
        "stateMachineArn"
    ]

    def jobs() -> list[str]:
        return [e["executionArn"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]]

    return {"stepfunctions": {"state_machine_arn": arn, "input": {"day": "1"}}}, jobs


def _emr_serverless() -> tuple[dict[str, Any], Callable[[], list[str]]]:
    emr = boto3.client("emr-serverless", region_name=REGION)
    app = emr.create_application(name="a", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]

    def jobs() -> list[str]:
        try:
            return [r["id"] for r in emr.list_job_runs(applicationId=app)["jobRuns"]]
        except emr.exceptions.ResourceNotFoundException:
            return []  # moto: an application without runs is "not found"

    target = {
        "application_id": app,
        "execution_role_arn": "arn:aws:iam::123456789012:role/emr",
        "job_driver": {"sparkSubmit": {"entryPoint": "s3://code/job.py"}},
    }
    return {"emr_serverless": target}, jobs


def _ecs() -> tuple[dict[str, Any], Callable[[], list[str]]]:
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="c")
    ecs.register_task_definition(
        family="t",
        containerDefinitions=[{"name": "t", "image": "t", "essential": True, "memory": 64}],
    )

    def jobs() -> list[str]:
        return list(ecs.list_tasks(cluster="c")["taskArns"])

    return {"ecs": {"cluster": "c", "task_definition": "t", "launch_type": "FARGATE"}}, jobs


SERVICES = {
    "batch": _batch,
    "stepfunctions": _stepfunctions,
    "emr_serverless": _emr_serverless,
    "ecs": _ecs,
}


def pump(env: EmbeddedSkydag) -> None:
    for _ in range(20):
        env.pump()


@pytest.fixture
def moto_aws() -> Iterator[None]:
    from moto import mock_aws

    with mock_aws(config={"batch": {"use_docker": False}}), one_insert_per_created_item():
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 1_000_000})
        try:
            yield
        finally:
            state_manager.unset_transition("ecs::task")


@pytest.mark.parametrize("service", sorted(SERVICES))
@pytest.mark.parametrize("when", ["before_call", "after_call"])
def test_exactly_one_job_per_try_after_a_crash(
    moto_aws: None, tmp_path: Path, service: str, when: str
) -> None:
    settings = Settings()
    create_tables(settings)
    block, jobs = SERVICES[service]()
    clock = Clock()
    env = EmbeddedSkydag(settings, log_dir=tmp_path, clock=clock)
    env.service.targets = TargetSet(clock, CrashingTargets(AwsTargets(settings), when))
    spec = DagSpec.model_validate({"dag": "etl", "tasks": {"extract": block}})
    env.repos.dags.save_version(spec, source="test", sha256=None, now=clock.now())
    env.service.trigger("etl", run_id="r1")

    with pytest.raises(Crash):
        pump(env)
    queued = env.repos.tasks.get("etl", "r1", "extract")
    assert (queued.state, queued.job_id) == (TaskState.QUEUED, None)
    assert len(jobs()) == (1 if when == "after_call" else 0)

    env.service.dispatch(queued)  # the stream's redelivery of the same change
    clock.moment += DISPATCH_CHECK_AFTER
    env.service.reconcile()  # and the reconciler's look after the grace period
    pump(env)

    attached = env.repos.tasks.get("etl", "r1", "extract")
    assert len(jobs()) == 1, jobs()
    assert attached.job_id is not None
    assert attached.job_id.endswith(jobs()[0]) or jobs()[0].endswith(attached.job_id)
    assert attached.try_number == 1
    env.close()


class RecordingTargets:
    """The AWS targets, recording each dispatch request (``first_call`` above all)."""

    def __init__(self, inner: Any, requests: list[DispatchRequest]) -> None:
        self.inner, self.requests = inner, requests

    def target_for(self, kind: str) -> Target:
        return _Recording(self, self.inner.target_for(kind))


class _Recording(_Crashing):
    def __init__(self, owner: Any, inner: Target) -> None:
        self.owner, self.inner = owner, inner

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        self.owner.requests.append(request)
        return self.inner.dispatch(request)


# The targets that look for an earlier call's job by name before starting one.
LOOKING_FIRST = ("batch", "ecs", "emr_serverless")


@pytest.mark.parametrize("service", LOOKING_FIRST)
def test_an_owned_dispatch_that_dies_after_its_call_leaves_exactly_one_job(
    moto_aws: None, tmp_path: Path, service: str
) -> None:
    """A job's end dispatches the next task at once, as a first call (no lookup by name:
    no earlier call can exist). It dies before recording the job id: the ``→ queued``
    record stands down (the claim is the dying invocation's), the reconciler takes over
    once the claim runs out, looks the job up by name and attaches it."""
    settings = Settings()
    create_tables(settings)
    block, jobs = SERVICES[service]()
    clock = Clock()
    requests: list[DispatchRequest] = []
    env = EmbeddedSkydag(settings, log_dir=tmp_path, clock=clock)
    recording = RecordingTargets(AwsTargets(settings), requests)
    env.service.targets = TargetSet(clock, recording)
    tasks = {"extract": block, "load": {**block, "depends_on": ["extract"]}}
    spec = DagSpec.model_validate({"dag": "etl", "tasks": tasks})
    env.repos.dags.save_version(spec, source="test", sha256=None, now=clock.now())
    env.service.trigger("etl", run_id="r1")
    pump(env)
    extract = env.repos.tasks.get("etl", "r1", "extract")
    assert extract.job_id is not None
    assert [r.first_call for r in requests] == [False]  # from its → queued record

    env.service.targets = TargetSet(clock, CrashingTargets(recording, "after_call"))
    named = ("etl", "r1", "extract") if service in EVENTS_NAME_THE_TASK else None
    end = JobEvent(
        service, JobStatus.SUCCEEDED, extract.dispatch_token, extract.job_id, task_key=named
    )
    with pytest.raises(Crash):
        env.service.on_job_event(end)
    assert [r.first_call for r in requests] == [False, True]
    assert len(jobs()) == 2
    env.service.targets = TargetSet(clock, recording)
    pump(env)  # the records: the load's → queued one is another's claim
    load = env.repos.tasks.get("etl", "r1", "load")
    assert (load.state, load.job_id) == (TaskState.QUEUED, None)

    clock.moment += DISPATCH_CHECK_AFTER
    env.service.reconcile()
    pump(env)

    load = env.repos.tasks.get("etl", "r1", "load")
    assert [r.first_call for r in requests] == [False, True, False]
    assert len(jobs()) == 2, jobs()  # one job each: the lookup found the load's
    assert load.job_id is not None
    assert any(load.job_id.endswith(job) or job.endswith(load.job_id) for job in jobs())
    env.close()
