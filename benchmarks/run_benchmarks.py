"""Scheduler throughput and AWS calls per task, through the engine and the store, on moto.

    PYTHONPATH=functions python benchmarks/run_benchmarks.py [--quick] [--json FILE]

Every scenario runs in a fresh in-process moto account, driven by EmbeddedSkydag with noop
tasks (no subprocesses), so what is measured is the scheduler's own work: its DynamoDB
calls and its Python. AWS calls are counted with a botocore ``before-call`` hook on every
client created (PynamoDB's connections included), by service and operation. Reading the
DynamoDB Streams (``dynamodbstreams.GetRecords``) is transport, not scheduler work: it is
reported apart and its time is taken out of the scheduler time.

The baseline is the raw cost, on the same moto, of one PutItem and one GetItem per task
through boto3: ``x base`` says how many of those round trips one scheduled task costs.
Absolute times depend on the machine; the calls per task do not.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session

from skydag.dev.embedded import EmbeddedSkydag, embedded_aws
from skydag.engine.models import DagRun
from skydag.engine.states import FINISHED_RUN_STATES, RunState
from skydag.settings import Settings
from skydag.spec.models import DagSpec

TRANSPORT = frozenset({"dynamodbstreams.GetRecords"})
_STARTED = "skydag_benchmark_started"


# --- counting AWS calls ----------------------------------------------------------------------


class CallCounter:
    """Counts and times API calls of every botocore client while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        if self.active:
            self.calls[_operation(model)] += 1
            context[_STARTED] = time.perf_counter()

    def after_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        started = context.pop(_STARTED, None)
        if started is not None:
            self.seconds[_operation(model)] += time.perf_counter() - started

    @contextmanager
    def counting(self) -> Iterator[None]:
        self.calls.clear()
        self.seconds.clear()
        self.active = True
        try:
            yield
        finally:
            self.active = False


def _operation(model: Any) -> str:
    return f"{model.service_model.service_name}.{model.name}"


@contextmanager
def hook_every_client(counter: CallCounter) -> Iterator[None]:
    """Register the counter on each client botocore creates (boto3's and PynamoDB's)."""
    original: Callable[..., Any] = botocore.session.Session.create_client

    def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(session, *args, **kwargs)
        client.meta.events.register("before-call.*.*", counter.before_call)
        client.meta.events.register("after-call.*.*", counter.after_call)
        return client

    botocore.session.Session.create_client = create_client
    try:
        yield
    finally:
        botocore.session.Session.create_client = original


# --- scenarios -------------------------------------------------------------------------------

NOOP: dict[str, Any] = {"noop": None}


def chain(length: int) -> dict[str, Any]:
    tasks = {
        f"t{i:04}": {**NOOP, "depends_on": [f"t{i - 1:04}"] if i else []} for i in range(length)
    }
    return {"dag": "chain", "tasks": tasks}


def fan_out(width: int) -> dict[str, Any]:
    middle = [f"m{i:04}" for i in range(width)]
    tasks: dict[str, Any] = {"start": NOOP}
    tasks |= {m: {**NOOP, "depends_on": ["start"]} for m in middle}
    tasks["end"] = {**NOOP, "depends_on": middle}
    # No throttling: this measures fan-out, not the max_active_tasks queue.
    return {"dag": "fanout", "max_active_tasks": width + 2, "tasks": tasks}


def diamond(runs: int) -> dict[str, Any]:
    return {
        "dag": "diamond",
        "max_active_runs": runs,
        "tasks": {
            "a": NOOP,
            "b": {**NOOP, "depends_on": ["a"]},
            "c": {**NOOP, "depends_on": ["a"]},
            "d": {**NOOP, "depends_on": ["a"]},
            "e": {**NOOP, "depends_on": ["b", "c", "d"]},
        },
    }


@dataclass(frozen=True)
class Scenario:
    name: str
    spec: dict[str, Any]
    runs: int = 1


@dataclass
class Result:
    name: str
    tasks: int
    runs: int
    wall_s: float
    scheduler_s: float
    tasks_per_s: float
    calls_per_task: float
    scheduler_calls_per_task: float
    per_task: dict[str, float]
    transport_calls: dict[str, int]
    transport_s: float
    ratio_to_baseline: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)
    call_seconds: dict[str, float] = field(default_factory=dict)


def run_scenario(counter: CallCounter, scenario: Scenario, timeout: float) -> Result:
    with embedded_aws(), tempfile.TemporaryDirectory() as logs:
        settings = Settings()
        env = EmbeddedSkydag(settings, log_dir=Path(logs))
        try:
            spec = DagSpec.model_validate(scenario.spec)
            env.repos.dags.save_version(spec, source="bench", sha256=None, now=datetime.now(UTC))
            run_ids = [f"r{i:04}" for i in range(scenario.runs)]
            finished: set[str] = set()

            def on_run(old: DagRun | None, new: DagRun) -> None:
                if new.state in FINISHED_RUN_STATES:
                    finished.add(new.run_id)

            env.run_listeners.append(on_run)
            deadline = time.monotonic() + timeout
            with counter.counting():
                started = time.perf_counter()
                for run_id in run_ids:
                    env.service.trigger(spec.dag, run_id=run_id)
                while len(finished) < len(run_ids):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{scenario.name}: {len(finished)}/{len(run_ids)} runs")
                    if not env.pump():
                        time.sleep(0.001)
                wall = time.perf_counter() - started
            for run_id in run_ids:  # not counted: the harness checking the outcome
                run = env.repos.runs.get(spec.dag, run_id)
                if run.state is not RunState.SUCCESS:
                    raise RuntimeError(f"{scenario.name}: run {run_id} ended {run.state.value}")
        finally:
            env.close()
    tasks = len(spec.tasks) * scenario.runs
    calls = dict(counter.calls)
    transport = {op: n for op, n in calls.items() if op in TRANSPORT}
    transport_s = sum(counter.seconds[op] for op in transport)
    scheduler_calls = sum(n for op, n in calls.items() if op not in TRANSPORT)
    return Result(
        name=scenario.name,
        tasks=tasks,
        runs=scenario.runs,
        wall_s=wall,
        scheduler_s=wall - transport_s,
        tasks_per_s=tasks / wall,
        calls_per_task=sum(calls.values()) / tasks,
        scheduler_calls_per_task=scheduler_calls / tasks,
        per_task={
            op: n / tasks
            for op, n in sorted(calls.items(), key=lambda kv: -kv[1])
            if op not in TRANSPORT
        },
        transport_calls=transport,
        transport_s=transport_s,
        calls=calls,
        call_seconds={op: round(counter.seconds[op], 4) for op in calls},
    )


# --- baseline --------------------------------------------------------------------------------


@dataclass
class Baseline:
    tasks: int
    seconds: float
    per_task_ms: float
    calls: dict[str, int]


def run_baseline(counter: CallCounter, tasks: int) -> Baseline:
    """One PutItem and one GetItem per task, through boto3, on the same moto."""
    with embedded_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="baseline",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        item = {"state": {"S": "success"}, "version": {"N": "1"}, "try_number": {"N": "1"}}
        with counter.counting():
            started = time.perf_counter()
            for i in range(tasks):
                key = {"pk": {"S": f"task-{i}"}}
                client.put_item(TableName="baseline", Item={**key, **item})
                client.get_item(TableName="baseline", Key=key, ConsistentRead=True)
            seconds = time.perf_counter() - started
    return Baseline(tasks, seconds, seconds / tasks * 1000, dict(counter.calls))


# --- report ----------------------------------------------------------------------------------


def print_report(results: list[Result], baseline: Baseline, mode: str) -> None:
    print(f"skydag scheduler benchmark ({mode}; moto in-process, noop tasks)")
    print(
        f"baseline: boto3 PutItem+GetItem {baseline.per_task_ms:.2f} ms/task "
        f"({baseline.tasks} tasks, {baseline.seconds:.2f} s)"
    )
    print()
    header = (
        f"{'scenario':<22}{'tasks':>6}{'wall s':>9}{'tasks/s':>9}{'sched s':>9}"
        f"{'calls/task':>12}{'ms/task':>9}{'x base':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<22}{r.tasks:>6}{r.wall_s:>9.2f}{r.tasks_per_s:>9.1f}{r.scheduler_s:>9.2f}"
            f"{r.scheduler_calls_per_task:>12.2f}{r.scheduler_s / r.tasks * 1000:>9.2f}"
            f"{r.ratio_to_baseline:>8.1f}"
        )
        ops = "  ".join(
            f"{op} {n:.2f} ({r.call_seconds[op] / r.calls[op] * 1000:.0f} ms)"
            for op, n in r.per_task.items()
        )
        print(f"  per task (mean time per call): {ops}")
        stream = ", ".join(f"{op} {n} calls" for op, n in r.transport_calls.items()) or "none"
        print(
            f"  transport (not counted above): {stream} "
            f"({sum(r.transport_calls.values()) / r.tasks:.2f}/task, {r.transport_s:.2f} s)"
        )
    print()
    print(
        "calls/task and ms/task exclude stream polling; x base = scheduler ms/task divided "
        "by the baseline's ms/task."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a CI smoke run)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per scenario, seconds")
    args = parser.parse_args(argv)

    sizes = (20, 50, 10) if args.quick else (100, 500, 50)
    scenarios = [
        Scenario(f"chain({sizes[0]})", chain(sizes[0])),
        Scenario(f"fan-out 1>{sizes[1]}>1", fan_out(sizes[1])),
        Scenario(f"{sizes[2]} x diamond(5)", diamond(sizes[2]), runs=sizes[2]),
    ]
    counter = CallCounter()
    results: list[Result] = []
    with hook_every_client(counter):
        baseline = run_baseline(counter, 50 if args.quick else 200)
        for scenario in scenarios:
            result = run_scenario(counter, scenario, args.timeout)
            result.ratio_to_baseline = (
                result.scheduler_s / result.tasks * 1000 / baseline.per_task_ms
            )
            results.append(result)
            print(f"... {result.name}: {result.wall_s:.1f} s", file=sys.stderr, flush=True)

    print_report(results, baseline, "quick" if args.quick else "full")
    if args.json:
        figures = {
            "mode": "quick" if args.quick else "full",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "baseline": asdict(baseline),
            "scenarios": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
