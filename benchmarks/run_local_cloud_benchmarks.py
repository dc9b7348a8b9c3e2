"""The local cloud, measured: how soon a job's end reaches its task, per service, and what a
task costs in handler invocations and AWS calls when the production handlers are fed as the
deployed stack feeds them (job ends invoke the scheduler, commands go through SQS in
batches, streams in batches of 25).

    make bench-local        # or: python benchmarks/run_local_cloud_benchmarks.py [--runs N]

Target (issue "one local cloud"): every kind reaches its terminal state within a second of
its job ending. The per-task figures are the starting point of the cost work; they count
what the handlers asked of AWS, which carries over to AWS (the milliseconds do not).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions"))

from skydag import wiring  # noqa: E402
from skydag.engine.models import JobStatus  # noqa: E402
from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions  # noqa: E402
from skydag.localcloud.eventbridge import Matched  # noqa: E402
from skydag.localcloud.hooks import Delivery  # noqa: E402
from skydag.store.models import bind_models  # noqa: E402
from skydag.store.repositories import Repositories  # noqa: E402
from skydag.targets.aws.registry import parse_service_event  # noqa: E402

TARGET_SECONDS = 1.0
FINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED})
# Each job prints the moment it ends as its last line; the task's terminal state is seen
# on the stream by the local cloud's listener.
END = "import time; print(f'end {time.time():.6f}', flush=True)"
KINDS = {
    "batch": "batch: {job_queue: q, job_definition: d}",
    "ecs": "ecs: {cluster: c, task_definition: t}",
    "lambda": "lambda: {function_name: f}",
    "stepfunctions": (
        "stepfunctions: {state_machine_arn: 'arn:aws:states:us-east-1:123456789012:stateMachine:m'}"
    ),
    "emr": "emr: {cluster_name: spark, step: {args: [spark-submit, job.py]}}",
    "emr_serverless": (
        "emr_serverless: {application_id: 00fbench00000001, "
        "execution_role_arn: 'arn:aws:iam::123456789012:role/r', "
        "job_driver: {sparkSubmit: {entryPoint: job.py}}}"
    ),
}


def six_services_dag() -> bytes:
    lines = ["dag: bench_kinds", "tasks:"]
    for kind, target in KINDS.items():
        lines += [
            f"  on_{kind}:",
            f"    {target}",
            f'    local: {{command: [python, -c, "{END}"]}}',
        ]
    return ("\n".join(lines) + "\n").encode()


def chain_dag(length: int) -> bytes:
    lines = ["dag: bench_chain", "tasks:", "  t0: {noop: {}}"]
    lines += [f"  t{i}: {{depends_on: [t{i - 1}], noop: {{}}}}" for i in range(1, length)]
    return ("\n".join(lines) + "\n").encode()


# The Batch target of the cost benchmarks' tasks (a queue and a definition the local cloud
# makes on first use).
BATCH_TARGET = "batch: {job_queue: bench-q, job_definition: bench-def}"


def load(cloud: LocalCloud, repos: Repositories, name: str, body: bytes) -> None:
    settings = cloud.settings
    cloud.client("s3").put_object(
        Bucket=settings.dag_bucket, Key=f"{settings.dag_prefix}{name}.yaml", Body=body
    )

    def loaded() -> bool:
        head = repos.dags.find(name)
        return head is not None and head.current_version is not None

    assert cloud.run_until(loaded, timeout=60), f"{name} did not load"


def trigger(cloud: LocalCloud, dag: str, run_id: str) -> None:
    cloud.put_signal(
        {
            "Source": wiring.COMMAND_SOURCE,
            "DetailType": "Trigger DAG",
            "Detail": json.dumps({"dag": dag, "run_id": run_id}),
        }
    )


def finished(repos: Repositories, dag: str, run_id: str) -> bool:
    run = repos.runs.find(dag, run_id)
    return run is not None and run.state.value in ("success", "failed", "cancelled")


class EventClock:
    """A delivery tap that notes when each job's final state-change event left its rule."""

    def __init__(self) -> None:
        self.delivered: list[tuple[float, dict[str, Any]]] = []

    def __call__(self, delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
        payload = delivery.payload
        if isinstance(payload, Matched):
            self.delivered.append((time.time(), payload.event))
        return [(0.0, delivery)]

    def final_events(self, repos: Repositories) -> dict[tuple[str, str], float]:
        """(run, task) -> when its job's final event was delivered."""
        found: dict[tuple[str, str], float] = {}
        for moment, event in self.delivered:
            job = parse_service_event(event)
            if job is None or job.status not in FINAL:
                continue
            ti = repos.tasks.find_by_token(job.token) if job.token else None
            if ti is None and job.job_id:
                ti = repos.tasks.find_by_job_id(job.job_id)
            if ti is not None:
                found.setdefault((ti.run_id, ti.task_id), moment)
        return found


def job_end_latency(
    cloud: LocalCloud, repos: Repositories, clock: EventClock, runs: int
) -> dict[str, dict[str, list[float]]]:
    """Per kind: seconds from the job's end to its final event (the played service), and to
    its task's terminal state on the stream (through the stack's batching)."""
    seen: dict[tuple[str, str], float] = {}

    def listen(old: Any, new: Any) -> None:
        if new.dag_id == "bench_kinds" and new.state.value in ("success", "failed"):
            seen.setdefault((new.run_id, new.task_id), time.time())

    cloud.task_listeners.append(listen)
    load(cloud, repos, "bench_kinds", six_services_dag())
    ends: dict[tuple[str, str], float] = {}
    for index in range(runs):
        run_id = f"kinds-{index}"
        trigger(cloud, "bench_kinds", run_id)
        assert cloud.run_until(lambda r=run_id: finished(repos, "bench_kinds", r), timeout=120)
        for kind in KINDS:
            log = cloud.runner.log_path("bench_kinds", run_id, f"on_{kind}", 1).read_text()
            ends[(run_id, f"on_{kind}")] = float(log.strip().splitlines()[-1].split()[1])
    events = clock.final_events(repos)
    latencies: dict[str, dict[str, list[float]]] = {"event": {}, "task": {}}
    for (run_id, task_id), ended in ends.items():
        kind = task_id.removeprefix("on_")
        latencies["event"].setdefault(kind, []).append(events[(run_id, task_id)] - ended)
        latencies["task"].setdefault(kind, []).append(seen[(run_id, task_id)] - ended)
    return latencies


def chain_costs(
    cloud: LocalCloud, repos: Repositories, calls: Counter[str], length: int
) -> dict[str, Any]:
    load(cloud, repos, "bench_chain", chain_dag(length))
    cloud.run_until(lambda: not cloud.busy(), timeout=30)
    calls.clear()
    before = dict(cloud.invoker.invocations)
    started = time.monotonic()
    trigger(cloud, "bench_chain", "chain")
    assert cloud.run_until(lambda: finished(repos, "bench_chain", "chain"), timeout=300)
    seconds = time.monotonic() - started
    cloud.run_until(lambda: not cloud.busy(), timeout=30)
    invocations = {
        name: count - before.get(name, 0) for name, count in cloud.invoker.invocations.items()
    }
    return {"seconds": seconds, "invocations": invocations, "calls": dict(calls)}


def baseline_ms(cloud: LocalCloud) -> float:
    """One PutItem and one GetItem against the same endpoint, the unit of the ratios."""
    dynamodb = cloud.client("dynamodb")
    table = cloud.settings.tables.task_state
    item = {"pk": {"S": "bench"}, "sk": {"S": "bench"}}
    described = dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]
    names = [key["AttributeName"] for key in described]
    item = {name: {"S": "bench"} for name in names}
    samples = []
    for _ in range(50):
        started = time.perf_counter()
        dynamodb.put_item(TableName=table, Item=item)
        dynamodb.get_item(TableName=table, Key=item)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of the six-service DAG")
    parser.add_argument("--chain", type=int, default=20, help="length of the noop chain")
    args = parser.parse_args()
    calls: Counter[str] = Counter()

    def watch(service: str, operation: str, body: Any) -> None:
        calls[f"{service}:{operation}"] += 1

    clock = EventClock()
    with TemporaryDirectory() as logs:
        options = LocalCloudOptions(
            log=io.StringIO(), log_dir=Path(logs), cwd=ROOT, watcher=watch, tap=clock
        )
        with LocalCloud(options) as cloud:
            bind_models(cloud.settings)
            repos = Repositories()
            base = baseline_ms(cloud)
            latencies = job_end_latency(cloud, repos, clock, args.runs)
            chain = chain_costs(cloud, repos, calls, args.chain)

    window = wiring.SCHEDULER_EVENT_SOURCE.max_batching_window.total_seconds()
    print(
        f"job end -> its service's final event put, {args.runs} runs per kind "
        f"(target <= {TARGET_SECONDS:.1f} s); -> the task's final state, the event "
        f"invoking the scheduler (commands: the stack's {window:.0f} s SQS batching window)"
    )
    print(f"{'kind':<16} {'event p50':>9} {'max':>7}  {'verdict':<8} {'task p50':>9} {'max':>7}")
    worst = 0.0
    for kind in KINDS:
        event, task = latencies["event"][kind], latencies["task"][kind]
        worst = max(worst, *event)
        verdict = "MET" if max(event) <= TARGET_SECONDS else "NOT MET"
        print(
            f"{kind:<16} {statistics.median(event):9.3f} {max(event):7.3f}  {verdict:<8} "
            f"{statistics.median(task):9.3f} {max(task):7.3f}"
        )
    overall = "MET" if worst <= TARGET_SECONDS else "NOT MET"
    print(f"every kind within {TARGET_SECONDS:.0f} s: {overall} (worst {worst:.3f} s)")
    print()
    tasks = args.chain
    print(
        f"chain of {tasks} noop tasks through the handlers: {chain['seconds']:.1f} s "
        f"({chain['seconds'] / tasks * 1000:.0f} ms per task; baseline PutItem+GetItem "
        f"{base:.1f} ms, x{chain['seconds'] / tasks * 1000 / base:.0f})"
    )
    print(
        "invocations per task: "
        + ", ".join(
            f"{name} {count / tasks:.2f}"
            for name, count in sorted(chain["invocations"].items())
            if count
        )
    )
    total = sum(chain["calls"].values())
    print(f"AWS calls per task by the handlers: {total / tasks:.1f}")
    for name, count in sorted(chain["calls"].items(), key=lambda item: -item[1]):
        print(f"  {name:<32} {count / tasks:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
