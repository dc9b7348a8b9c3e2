"""The flagship scenario end to end, on the AWS targets against moto.

A streaming trainer (an ECS service task) emits "model.emitted" signals; each creates a run
of the evaluation DAG (Batch), which emits "model.validated" when the model passes; that
signal restarts the model server (an ECS service task) with the new model in its command.

Signals travel as in production: PutEvents on the skydag bus → an EventBridge rule → the
scheduler's SQS queue, drained here and routed like the scheduler Lambda does. The
services' state-change events are the canonical files of events/aws with the job's name
and id filled in; moto emits none. The test injects duplicated and reordered deliveries
and asserts the exact sequence of dispatches and cancellations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.moto_api import state_manager

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import JobReport, TaskInstance
from skydag.engine.states import RunState, TaskState
from skydag.localcloud.stream_inserts import one_insert_per_created_item
from skydag.service.jobs import job_environment
from skydag.settings import Settings
from skydag.spec.loader import load_dag_file
from skydag.store.models import create_tables
from skydag.targets.aws.registry import AwsTargets
from skydag.targets.base import DispatchRequest, DispatchResult, JobRef, Target
from skydag.targets.builtin import TargetSet

ROOT = Path(__file__).resolve().parents[2]
CANONICAL_TOKEN = "9f86d081884c7d659a2feaa0c55ad015"  # the token in every events/aws file
REGION = "us-east-1"
T = TaskState

Step = tuple[str, str, int, str]  # (dispatch|cancel, task, try, what)


class RecordingTargets:
    """The AWS targets, with every dispatch and cancellation written down in order."""

    def __init__(self, inner: AwsTargets) -> None:
        self.inner = inner
        self.steps: list[Step] = []

    def target_for(self, kind: str) -> Target:
        return _Recorded(self.inner.target_for(kind), self.steps)


class _Recorded:
    def __init__(self, inner: Target, steps: list[Step]) -> None:
        self.inner, self.steps = inner, steps

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        target = request.target
        what = target.get("detail-type") or " ".join(target.get("command") or [])
        self.steps.append(("dispatch", request.task_id, request.try_number, str(what)))
        return self.inner.dispatch(request)

    def describe(self, job: JobRef) -> JobReport | None:
        return self.inner.describe(job)

    def cancel(self, job: JobRef, reason: str) -> None:
        self.steps.append(("cancel", job.task_id, job.try_number, reason))
        self.inner.cancel(job, reason)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[EmbeddedSkydag, RecordingTargets, Any]]:
    with mock_aws(config={"batch": {"use_docker": False}}), one_insert_per_created_item():
        settings = Settings()
        create_tables(settings)
        _batch_queue()
        _ecs_cluster()
        queue_url = _scheduler_queue(settings.event_bus)
        targets = RecordingTargets(AwsTargets(settings))
        env = EmbeddedSkydag(settings, log_dir=tmp_path)
        env.service.targets = TargetSet(env.clock, targets)
        for name in ("ml_platform", "model_eval"):
            spec = load_dag_file(ROOT / "examples" / "dags" / f"{name}.yaml")
            env.repos.dags.save_version(spec, source=name, sha256=None, now=env.clock.now())
        # ECS tasks stay RUNNING until stopped (moto otherwise advances them on describe).
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 1_000_000})
        try:
            yield env, targets, queue_url
        finally:
            state_manager.unset_transition("ecs::task")
            env.close()


def _batch_queue() -> None:
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch", region_name=REGION)
    compute = batch.create_compute_environment(
        computeEnvironmentName="eval", type="UNMANAGED", state="ENABLED", serviceRole=role
    )
    batch.create_job_queue(
        jobQueueName="eval",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": compute["computeEnvironmentArn"]}
        ],
    )
    batch.register_job_definition(
        jobDefinitionName="evaluate",
        type="container",
        containerProperties={"image": "eval", "vcpus": 1, "memory": 512, "command": ["true"]},
    )


def _ecs_cluster() -> None:
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="ml")
    for family in ("trainer", "model-server"):
        ecs.register_task_definition(
            family=family,
            containerDefinitions=[
                {"name": family, "image": family, "essential": True, "memory": 512}
            ],
        )


def _scheduler_queue(bus: str) -> str:
    """The skydag bus, and the rule that feeds the scheduler's queue, as the stack makes them."""
    events = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    events.create_event_bus(Name=bus)
    queue_url = sqs.create_queue(QueueName="scheduler")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    events.put_rule(
        Name="signals",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["ml.trainer", "ml.evaluation", "ml.ops"]}),
    )
    events.put_targets(
        Rule="signals",
        EventBusName=bus,
        Targets=[{"Id": "scheduler", "Arn": arn["Attributes"]["QueueArn"]}],
    )
    return str(queue_url)


# --- the harness: deliveries ------------------------------------------------------------------


def settle(env: EmbeddedSkydag) -> None:
    for _ in range(200):
        if not env.pump():
            return
    raise AssertionError("the scheduler never settled")


def receive(queue_url: str) -> list[dict[str, Any]]:
    """Drain the scheduler's queue: the EventBridge events the rules delivered."""
    sqs = boto3.client("sqs", region_name=REGION)
    events: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not messages:
            return events
        for message in messages:
            events.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def route_all(env: EmbeddedSkydag, events: list[dict[str, Any]]) -> None:
    for event in events:
        outcome = env.route(event)
        assert not isinstance(outcome, Exception), outcome
        settle(env)


def put_signal(source: str, detail_type: str, detail: dict[str, Any]) -> None:
    """What `aws events put-events` does for a user (the trainer, an operator)."""
    response = boto3.client("events", region_name=REGION).put_events(
        Entries=[
            {
                "EventBusName": "skydag",
                "Source": source,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
            }
        ]
    )
    assert response["FailedEntryCount"] == 0


def service_event(name: str, ti: TaskInstance, **detail: Any) -> dict[str, Any]:
    """A canonical state-change event (events/aws/NAME.json) for the job of ``ti``'s try."""
    assert ti.dispatch_token is not None
    assert ti.job_id is not None
    text = (ROOT / "events" / "aws" / f"{name}.json").read_text(encoding="utf-8")
    event: dict[str, Any] = json.loads(text.replace(CANONICAL_TOKEN, ti.dispatch_token))
    event["detail"].update(detail)
    # The job's environment as the service echoes it (Batch's container, ECS's
    # overrides): the identity skydag gave this try's job.
    identity = [{"name": k, "value": v} for k, v in job_environment(ti, None).items()]
    environments = [event["detail"].get("container")] + [
        o for o in event["detail"].get("overrides", {}).get("containerOverrides", [])
    ]
    for holder in environments:
        if holder is not None and "environment" in holder:
            holder["environment"] = identity
    return event


def batch_event(name: str, ti: TaskInstance) -> dict[str, Any]:
    assert ti.job_id is not None
    return service_event(name, ti, jobId=ti.job_id)


def ecs_event(name: str, ti: TaskInstance) -> dict[str, Any]:
    return service_event(name, ti, taskArn=ti.job_id)


def task(env: EmbeddedSkydag, dag: str, run_id: str, task_id: str) -> TaskInstance:
    return env.repos.tasks.get(dag, run_id, task_id)


def eval_run(env: EmbeddedSkydag, model: str) -> str:
    """The evaluation run the emitted model created (one per model)."""
    runs = [
        r.run_id
        for r in env.repos.runs.list_for_dag("model_eval")
        if r.trigger and r.trigger["detail"]["model_uri"] == model
    ]
    assert len(runs) == 1, runs
    return runs[0]


def evaluate(env: EmbeddedSkydag, model: str) -> TaskInstance:
    return task(env, "model_eval", eval_run(env, model), "evaluate")


# --- the scenario -----------------------------------------------------------------------------

BASE = "s3://ml-models/churn/base/model.tar.gz"
EVAL = "python eval.py --model {} --threshold 0.9"


def test_streaming_training_evaluation_and_serving(
    platform: tuple[EmbeddedSkydag, RecordingTargets, str],
) -> None:
    env, targets, queue = platform
    run_id = env.service.trigger("ml_platform", run_id="platform").run.run_id
    settle(env)
    trainer = task(env, "ml_platform", run_id, "trainer")
    server = task(env, "ml_platform", run_id, "server")
    # ECS says both run; each event arrives twice.
    route_all(
        env, [ecs_event("ecs_task_running", trainer), ecs_event("ecs_task_running", server)] * 2
    )

    # Model 1: emitted (and the event delivered twice), evaluated, validated.
    put_signal("ml.trainer", "model.emitted", {"model_uri": "s3://m/1"})
    emitted = receive(queue)
    route_all(env, emitted + emitted)
    first = evaluate(env, "s3://m/1")
    # Batch's events out of order and duplicated: success first, then "running", then success.
    route_all(
        env,
        [
            batch_event("batch_job_succeeded", first),
            batch_event("batch_job_running", first),
            batch_event("batch_job_succeeded", first),
        ],
    )
    route_all(env, receive(queue))  # "model.validated" → the server restarts on model 1

    # Model 2 fails its evaluation: nothing is announced, the server keeps model 1.
    put_signal("ml.trainer", "model.emitted", {"model_uri": "s3://m/2"})
    route_all(env, receive(queue))
    route_all(env, [batch_event("batch_job_failed", evaluate(env, "s3://m/2"))])
    assert receive(queue) == []

    # Models 3 and 4 pass in that order, but their announcements arrive in reverse: the
    # server ends on model 4, and model 3's late announcement does not restart it again.
    put_signal("ml.trainer", "model.emitted", {"model_uri": "s3://m/3"})
    put_signal("ml.trainer", "model.emitted", {"model_uri": "s3://m/4"})
    route_all(env, receive(queue))
    route_all(env, [batch_event("batch_job_succeeded", evaluate(env, "s3://m/3"))])
    time.sleep(1.1)  # EventBridge stamps events to the second: keep the two apart
    route_all(env, [batch_event("batch_job_succeeded", evaluate(env, "s3://m/4"))])
    validated = receive(queue)
    assert [e["detail"]["model_uri"] for e in validated] == ["s3://m/3", "s3://m/4"]
    route_all(env, list(reversed(validated)))

    # Shutdown stops both services; stopping is how a service ends, so the run succeeds.
    put_signal("ml.ops", "platform.shutdown", {})
    route_all(env, receive(queue))

    assert targets.steps == [
        ("dispatch", "trainer", 1, "python train.py --stream kinesis://clicks --emit-every 1h"),
        ("dispatch", "server", 1, f"serve --model {BASE}"),
        ("dispatch", "evaluate", 1, EVAL.format("s3://m/1")),
        ("dispatch", "publish", 1, "model.validated"),
        ("cancel", "server", 1, "restarted by a signal"),
        ("dispatch", "server", 2, "serve --model s3://m/1"),
        ("dispatch", "evaluate", 1, EVAL.format("s3://m/2")),
        ("dispatch", "evaluate", 1, EVAL.format("s3://m/3")),
        ("dispatch", "evaluate", 1, EVAL.format("s3://m/4")),
        ("dispatch", "publish", 1, "model.validated"),
        ("dispatch", "publish", 1, "model.validated"),
        ("cancel", "server", 2, "restarted by a signal"),
        ("dispatch", "server", 3, "serve --model s3://m/4"),
        ("cancel", "server", 3, "stopped by signal " + _shutdown_id(env)),
        ("cancel", "trainer", 1, "stopped by signal " + _shutdown_id(env)),
    ]
    platform_run = env.repos.runs.get("ml_platform", run_id)
    assert platform_run.state is RunState.SUCCESS
    states = {
        ti.task_id: (ti.state, ti.try_number)
        for ti in env.repos.tasks.list_for_run("ml_platform", run_id)
    }
    assert states == {"trainer": (T.STOPPED, 1), "server": (T.STOPPED, 3)}
    outcomes = {
        r.trigger["detail"]["model_uri"]: r.state
        for r in env.repos.runs.list_for_dag("model_eval")
        if r.trigger
    }
    assert outcomes == {
        "s3://m/1": RunState.SUCCESS,
        "s3://m/2": RunState.FAILED,
        "s3://m/3": RunState.SUCCESS,
        "s3://m/4": RunState.SUCCESS,
    }
    # The ECS service really saw the stops: no server or trainer task is left running.
    ecs = boto3.client("ecs", region_name=REGION)
    assert ecs.list_tasks(cluster="ml", desiredStatus="RUNNING")["taskArns"] == []


def _shutdown_id(env: EmbeddedSkydag) -> str:
    shutdown = [
        e
        for e, _ in env.routed
        if isinstance(e, dict) and e.get("detail-type") == "platform.shutdown"
    ]
    return str(shutdown[-1]["id"])
