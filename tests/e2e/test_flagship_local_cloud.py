"""The flagship scenario in the local cloud (what `skydag dev up` runs): the two example DAGs
uploaded to the bucket, the signals put with PutEvents, the jobs running their `local:`
commands (a streaming trainer, a model server, evaluations), every event through the
stack's rules, queues and streams to the production handlers.

It reaches the same 15 dispatches and cancellations as the moto test
(tests/e2e/test_flagship.py), read here from the AWS calls the handlers made. The one
thing a user cannot do from outside, delivering model 3's announcement after model 4's,
is done with the local cloud's delivery hook.
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from skydag import wiring
from skydag.engine.states import RunState, TaskState
from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions
from skydag.localcloud.eventbridge import Matched
from skydag.localcloud.hooks import Delivery
from skydag.store.models import bind_models
from skydag.store.repositories import Repositories

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "examples" / "dags"
BASE = "s3://ml-models/churn/base/model.tar.gz"
EVAL = "python eval.py --model {} --threshold 0.9"
# The evaluation's local job: model 2 fails it; model 4 takes over a second, so that its
# announcement is stamped a later second than model 3's (EventBridge times are seconds).
EVAL_LOCAL = (
    'local: {command: [python, -c, "import sys, time; uri = sys.argv[1]; '
    "time.sleep(1.2 if uri.endswith('/4') else 0); sys.exit(1 if uri.endswith('/2') else 0)\", "
    '"{{ trigger.detail.model_uri }}"]}'
)
TIMEOUT = 60.0

Step = tuple[str, str, int, str]


class Recorder:
    """The dispatches and cancellations, in order, from the handlers' AWS calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, service: str, operation: str, body: Any) -> None:
        self.calls.append((service, operation, body))

    def steps(self, started_by: dict[str, str]) -> list[Step]:
        """``started_by``: ECS task ARN -> the job name it was started by (from ECS)."""
        steps: list[Step] = []
        tries: dict[str, int] = {}
        try_of_job: dict[str, int] = {}
        for _service, operation, body in self.calls:
            if not isinstance(body, dict):
                continue
            if operation == "RunTask":
                name = str(body["startedBy"])
                task_id = name.split("-")[2]
                tries[task_id] = tries.get(task_id, 0) + 1
                try_of_job[name] = tries[task_id]
                command = body["overrides"]["containerOverrides"][0]["command"]
                steps.append(("dispatch", task_id, tries[task_id], shlex.join(command)))
            elif operation == "SubmitJob":
                command = body["containerOverrides"]["command"]
                steps.append(("dispatch", "evaluate", 1, shlex.join(command)))
            elif operation == "PutEvents":
                for entry in body.get("Entries", []):
                    if entry.get("DetailType") == "model.validated":
                        steps.append(("dispatch", "publish", 1, "model.validated"))
            elif operation == "StopTask":
                name = started_by[str(body["task"])]
                reason = str(body.get("reason", "")).removeprefix("skydag cancel: ")
                steps.append(("cancel", name.split("-")[2], try_of_job[name], reason))
        return steps


def late_model_3(delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
    """Model 3's announcement reaches the scheduler after model 4's (EventBridge gives no
    order); everything else is delivered at once."""
    payload = delivery.payload
    if isinstance(payload, Matched):
        event = payload.event
        if (
            event.get("detail-type") == "model.validated"
            and event.get("detail", {}).get("model_uri") == "s3://m/3"
        ):
            return [(2.5, delivery)]
    return [(0.0, delivery)]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[LocalCloud, Recorder, Repositories]]:
    recorder = Recorder()
    options = LocalCloudOptions(
        log=io.StringIO(), log_dir=tmp_path, cwd=ROOT, tap=late_model_3, watcher=recorder
    )
    with LocalCloud(options) as cloud:
        bind_models(cloud.settings)
        yield cloud, recorder, Repositories()


def put(cloud: LocalCloud, source: str, detail_type: str, detail: dict[str, Any]) -> str:
    """What `aws events put-events` does; returns the event's id."""
    response = cloud.client("events").put_events(
        Entries=[
            {
                "EventBusName": cloud.settings.event_bus,
                "Source": source,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
            }
        ]
    )
    assert response["FailedEntryCount"] == 0
    return str(response["Entries"][0]["EventId"])


def settle(cloud: LocalCloud, condition: Any, what: str) -> None:
    ok = cloud.run_until(condition, timeout=TIMEOUT)
    assert ok, f"{what}\n{cloud.log.getvalue()}"  # type: ignore[attr-defined]


def delivered(cloud: LocalCloud) -> bool:
    """No event or record left to deliver (the services themselves keep running)."""
    return not (
        cloud.bridge.pending()
        or cloud.deliveries.held()
        or cloud.queue_source.pending()
        or cloud.stream_source.pending()
        or cloud._queue_depth()
    )


def eval_runs(repos: Repositories) -> dict[str, Any]:
    return {
        str(run.trigger["detail"]["model_uri"]): run
        for run in repos.runs.list_for_dag("model_eval")
        if run.trigger
    }


def test_flagship_in_the_local_cloud(platform: tuple[LocalCloud, Recorder, Repositories]) -> None:
    cloud, recorder, repos = platform
    s3 = cloud.client("s3")
    bucket, prefix = cloud.settings.dag_bucket, cloud.settings.dag_prefix
    s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}ml_platform.yaml",
        Body=(DAGS / "ml_platform.yaml").read_bytes(),
    )
    eval_dag = _with_local((DAGS / "model_eval.yaml").read_text())
    s3.put_object(Bucket=bucket, Key=f"{prefix}model_eval.yaml", Body=eval_dag.encode())

    def loaded() -> bool:
        heads = [repos.dags.find(dag) for dag in ("ml_platform", "model_eval")]
        return all(head is not None and head.current_version for head in heads)

    settle(cloud, loaded, "both DAGs load")
    put(cloud, wiring.COMMAND_SOURCE, "Trigger DAG", {"dag": "ml_platform", "run_id": "platform"})

    def task(task_id: str) -> Any:
        return repos.tasks.find("ml_platform", "platform", task_id)

    def running(task_id: str, try_number: int) -> bool:
        ti = task(task_id)
        return ti is not None and ti.state is TaskState.RUNNING and ti.try_number == try_number

    settle(cloud, lambda: running("trainer", 1) and running("server", 1), "both services run")

    put(cloud, "ml.trainer", "model.emitted", {"model_uri": "s3://m/1"})
    settle(cloud, lambda: running("server", 2), "the server restarts on model 1")

    put(cloud, "ml.trainer", "model.emitted", {"model_uri": "s3://m/2"})

    def evaluated(uri: str, state: RunState) -> bool:
        run = eval_runs(repos).get(uri)
        return run is not None and run.state is state

    settle(cloud, lambda: evaluated("s3://m/2", RunState.FAILED), "model 2 fails its evaluation")

    put(cloud, "ml.trainer", "model.emitted", {"model_uri": "s3://m/3"})
    put(cloud, "ml.trainer", "model.emitted", {"model_uri": "s3://m/4"})
    settle(
        cloud,
        lambda: (
            evaluated("s3://m/3", RunState.SUCCESS)
            and evaluated("s3://m/4", RunState.SUCCESS)
            and running("server", 3)
            and delivered(cloud)
        ),
        "models 3 and 4 pass; the server ends on model 4",
    )
    assert task("server").signal["detail"]["model_uri"] == "s3://m/4"

    shutdown = put(cloud, "ml.ops", "platform.shutdown", {})

    def shut_down() -> bool:
        run = repos.runs.find("ml_platform", "platform")
        return run is not None and run.state is RunState.SUCCESS

    settle(cloud, shut_down, "shutdown stops both services and the run succeeds")
    started_by = {
        str(found["taskArn"]): str(found["startedBy"])
        for found in cloud.client("ecs").describe_tasks(
            cluster="ml",
            tasks=cloud.client("ecs").list_tasks(cluster="ml", desiredStatus="STOPPED")["taskArns"],
        )["tasks"]
    }
    assert recorder.steps(started_by) == [
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
        ("cancel", "server", 3, f"stopped by signal {shutdown}"),
        ("cancel", "trainer", 1, f"stopped by signal {shutdown}"),
    ]


def _with_local(text: str) -> str:
    """model_eval.yaml with the evaluation's local job replaced (see EVAL_LOCAL)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("local:"))
    end = start + 1
    while end < len(lines) and lines[end].startswith("      "):
        end += 1
    lines[start:end] = ["    " + EVAL_LOCAL]
    return "\n".join(lines) + "\n"
