"""A Batch job publishes an output; the downstream task's template renders it.

On moto: the real Batch target submits the job, the job's own environment (as Batch
holds it) tells the helper which try it is, and the Batch "SUCCEEDED" event, which carries
no output, is routed as the scheduler Lambda routes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.states import TaskState
from skydag.localcloud.stream_inserts import one_insert_per_created_item
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.store.models import create_tables
from skydag.targets.aws.registry import AwsTargets
from skydag.targets.builtin import TargetSet
from skydag.taskstate import TaskState as Helper

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
QUEUE, DEFINITION = "etl-queue", "etl-def"
DAG: dict[str, Any] = {
    "dag": "etl",
    "tasks": {
        "extract": {"batch": {"job_queue": QUEUE, "job_definition": DEFINITION}},
        "load": {
            "depends_on": ["extract"],
            "batch": {
                "job_queue": QUEUE,
                "job_definition": DEFINITION,
                "command": [
                    "load",
                    "--rows",
                    "{{ outputs.extract.rows }}",
                    "{{ outputs.extract }}",
                ],
            },
        },
    },
}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[EmbeddedSkydag]:
    from moto import mock_aws

    with mock_aws(config={"batch": {"use_docker": False}}), one_insert_per_created_item():
        settings = Settings()
        create_tables(settings)
        _batch_resources()
        embedded = EmbeddedSkydag(settings, log_dir=tmp_path)
        embedded.service.targets = TargetSet(embedded.clock, AwsTargets(settings))
        embedded.repos.dags.save_version(
            DagSpec.model_validate(DAG), source="test", sha256=None, now=embedded.clock.now()
        )
        try:
            yield embedded
        finally:
            embedded.close()


def _batch_resources() -> None:
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch", region_name=REGION)
    compute = batch.create_compute_environment(
        computeEnvironmentName="etl-compute", type="UNMANAGED", state="ENABLED", serviceRole=role
    )
    batch.create_job_queue(
        jobQueueName=QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": compute["computeEnvironmentArn"]}
        ],
    )
    batch.register_job_definition(
        jobDefinitionName=DEFINITION,
        type="container",
        containerProperties={"image": "x", "vcpus": 1, "memory": 128, "command": ["true"]},
    )


def settle(env: EmbeddedSkydag) -> None:
    for _ in range(50):
        if not env.pump():
            return
    raise AssertionError("the scheduler never settled")


def submitted_job(job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = boto3.client("batch", region_name=REGION).describe_jobs(jobs=[job_id])[
        "jobs"
    ][0]
    return job


def job_environment(job: dict[str, Any]) -> dict[str, str]:
    """The environment the job's container gets: the job definition's, then the overrides
    skydag submitted (moto keeps the submitted overrides as the job's container)."""
    return {pair["name"]: pair["value"] for pair in job["container"].get("environment", [])}


def batch_event(job: dict[str, Any], status: str) -> dict[str, Any]:
    """The canonical "Batch Job State Change" event, for this job."""
    event: dict[str, Any] = json.loads((ROOT / "events/aws/batch_job_succeeded.json").read_text())
    event["detail"].update(jobId=job["jobId"], jobName=job["jobName"], status=status)
    event["detail"]["jobArn"] = job["jobArn"]
    # The detail is the job's as Batch describes it: its environment names its try.
    event["detail"]["container"]["environment"] = job["container"]["environment"]
    event["resources"] = [job["jobArn"]]
    return event


def test_a_batch_jobs_published_output_feeds_the_downstream_template(
    env: EmbeddedSkydag,
) -> None:
    env.service.trigger("etl", run_id="r1")
    settle(env)
    extract = env.repos.tasks.get("etl", "r1", "extract")
    assert extract.state in (TaskState.QUEUED, TaskState.RUNNING)  # as Batch says
    assert extract.job_id is not None
    job = submitted_job(extract.job_id)

    # The job, in its container: the helper finds its try in the environment Batch gave it.
    environment = job_environment(job)
    assert environment["SKYDAG_TRY"] == "1"
    assert Helper.from_env({**environment, "AWS_REGION": REGION}).set_output({"rows": 3}) == 1

    env.route(batch_event(job, "SUCCEEDED"))
    settle(env)

    extract = env.repos.tasks.get("etl", "r1", "extract")
    assert (extract.state, extract.output) == (TaskState.SUCCESS, {"rows": 3})
    load = env.repos.tasks.get("etl", "r1", "load")
    assert load.job_id is not None
    command = submitted_job(load.job_id)["container"]["command"]
    assert command == ["load", "--rows", "3", '{"rows":3}']

    # Batch delivers the event again: nothing changes, the output stays.
    env.route(batch_event(job, "SUCCEEDED"))
    settle(env)
    assert env.repos.tasks.get("etl", "r1", "extract").output == {"rows": 3}
