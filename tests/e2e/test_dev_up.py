"""`skydag dev up` end to end: a DAG file uploaded to the bucket is loaded by the dag
loader handler, a "Trigger DAG" command put on the bus reaches the scheduler handler, and
the stream processor moves the run to success (a Batch task included: its state-change
event is the one `dev up` emulates)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from skydag.dev.up import DevStack, serve
from skydag.engine.states import RunState
from skydag.store.models import bind_models
from skydag.store.repositories import Repositories

STARTUP_TIMEOUT = 15.0
STEP_TIMEOUT = 10.0


@dataclass
class RunningDevUp:
    stack: DevStack
    log: io.StringIO

    def client(self, service: str) -> Any:
        return boto3.client(
            service, region_name=self.stack.settings.region, endpoint_url=self.stack.endpoint_url
        )

    def repos(self) -> Repositories:
        bind_models(self.stack.settings)
        return Repositories()


@pytest.fixture
def dev_up() -> Iterator[RunningDevUp]:
    """`dev up` in a thread on a free port; always stopped, even when the test fails."""
    stop = threading.Event()
    ready: list[DevStack] = []
    out, log = io.StringIO(), io.StringIO()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            serve(stop, port=0, out=out, log=log, on_ready=ready.append)
        except BaseException as error:  # reported by the fixture, not lost in the thread
            failure.append(error)

    thread = threading.Thread(target=run, name="dev-up", daemon=True)
    thread.start()
    try:
        wait_for(lambda: bool(ready or failure), STARTUP_TIMEOUT, "dev up to start")
        assert not failure, failure
        info = json.loads(out.getvalue().split("\n\n", 1)[0])
        assert info == ready[0].info()
        assert info["endpoint_url"] == ready[0].endpoint_url
        yield RunningDevUp(ready[0], log)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive(), "dev up did not stop"
    assert not failure, failure


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def create_batch_queue(skydag: RunningDevUp) -> None:
    batch = skydag.client("batch")
    iam = skydag.client("iam")
    role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    environment = batch.create_compute_environment(
        computeEnvironmentName="dev", type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    batch.create_job_queue(
        jobQueueName="eval",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )
    batch.register_job_definition(
        jobDefinitionName="evaluate",
        type="container",
        containerProperties={"image": "busybox", "vcpus": 1, "memory": 128, "command": ["true"]},
    )


DAG = b"""
dag: dev_up_demo
tasks:
  start: {noop: {}}
  evaluate:
    depends_on: [start]
    batch: {job_queue: eval, job_definition: evaluate, command: [echo, "{{ run.id }}"]}
  finish:
    depends_on: [evaluate]
    noop: {}
"""


def test_uploaded_dag_triggered_by_command_succeeds(dev_up: RunningDevUp) -> None:
    create_batch_queue(dev_up)
    settings = dev_up.stack.settings
    dev_up.client("s3").put_object(
        Bucket=settings.dag_bucket, Key=f"{settings.dag_prefix}demo.yaml", Body=DAG
    )
    repos = dev_up.repos()

    def loaded() -> bool:
        head = repos.dags.find("dev_up_demo")
        return head is not None and head.current_version == 1

    wait_for(loaded, STEP_TIMEOUT, "the dag loader to load the DAG")

    response = dev_up.client("events").put_events(
        Entries=[
            {
                "EventBusName": settings.event_bus,
                "Source": "skydag.command",
                "DetailType": "Trigger DAG",
                "Detail": json.dumps({"dag": "dev_up_demo", "run_id": "manual__demo"}),
            }
        ]
    )
    assert response["FailedEntryCount"] == 0

    def finished() -> bool:
        run = repos.runs.find("dev_up_demo", "manual__demo")
        return run is not None and run.state in (RunState.SUCCESS, RunState.FAILED)

    wait_for(finished, STEP_TIMEOUT, "the run to finish")
    run = repos.runs.get("dev_up_demo", "manual__demo")
    tasks = {ti.task_id: ti for ti in repos.tasks.list_for_run("dev_up_demo", "manual__demo")}
    assert run.state is RunState.SUCCESS, (run, tasks, dev_up.log.getvalue())
    assert {task: ti.state.value for task, ti in tasks.items()} == {
        "start": "success",
        "evaluate": "success",
        "finish": "success",
    }
    assert tasks["evaluate"].job_id  # a real (moto) Batch job, reported by its event
    log = dev_up.log.getvalue()
    assert "loaded dag=dev_up_demo version=1" in log
    assert "skydag.command 'Trigger DAG' dag=dev_up_demo" in log
    assert "SUCCEEDED: state-change event put" in log
