"""What a Batch task costs, and how fast the next one starts, through the production handlers.

    make bench      # or: python benchmarks/run_benchmarks.py [--quick] [--no-flat] [--json FILE]

Every scenario runs in the local cloud (``skydag.localcloud``): the DAG is uploaded to S3
and loaded by the DAG loader, runs are triggered by command events, and the production
handlers are fed as the deployed stack feeds them (job ends invoke the scheduler, commands
go through SQS in batches of 10, streams in batches of 25); Batch jobs are played
(RUNNING, then SUCCEEDED, with the service's events). The cost meter (``metering.py``)
counts every AWS call, unit and byte, and ``cost.py`` prices them. Writes
``docs/benchmarks.md`` (``--doc`` to change).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cold_start  # noqa: E402
import cost  # noqa: E402
import long_jobs  # noqa: E402
import run_scale_benchmarks  # noqa: E402
import scale_dags  # noqa: E402
from metering import CostMeter  # noqa: E402
from run_local_cloud_benchmarks import BATCH_TARGET as BATCH  # noqa: E402
from run_local_cloud_benchmarks import finished, load, trigger  # noqa: E402
from skydag import wiring  # noqa: E402
from skydag.engine.scheduler import REPORT_CHUNK  # noqa: E402
from skydag.limits import TALLY_GROUP, upstream_map_bytes  # noqa: E402
from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions, Timing  # noqa: E402
from skydag.service.reconciler import ReconcileResult, look_at_armed_runs  # noqa: E402
from skydag.settings import Settings  # noqa: E402
from skydag.store.models import bind_models  # noqa: E402
from skydag.store.repositories import Repositories  # noqa: E402

TARGET_USD_PER_M = 4.00
STRETCH_USD_PER_M = 2.50
TARGET_HOPS = 2
TARGET_ROUND_TRIPS = 4
FLAT_TOLERANCE = 0.10
# What the flatness target holds to ±10% per task as a shape grows.
FLAT_MEASURES = ("AWS calls", "write units", "read units")
# The most DynamoDB calls one record may make, whatever the fan-out's width: a chunk of
# downstream tasks told (service/progress.py) at up to 8 calls each (the report, a
# max_active_tasks slot, twice when throttled, the write to queued, and the dispatch the
# same invocation makes: the task and its run read, the write to running) and what a
# record does besides. It must not grow with the width: before chunks, a 1 -> 200
# fan-out's finish made 608 calls in one record, a 1 -> 10,000 one would make ~30,000.
BOUNDED_RECORD_CALLS = 8 * REPORT_CHUNK + 20


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    shape: str  # chain | fan-out | diamond
    dag: str
    body: bytes
    tasks: int
    runs: int = 1


def chain(length: int) -> Scenario:
    lines = [f"dag: cost_chain_{length}", "tasks:", f"  t0: {{{BATCH}}}"]
    lines += [f"  t{i}: {{depends_on: [t{i - 1}], {BATCH}}}" for i in range(1, length)]
    body = ("\n".join(lines) + "\n").encode()
    return Scenario(f"chain {length}", "chain", f"cost_chain_{length}", body, length)


def fan_out(width: int, max_active_tasks: int | None = None) -> Scenario:
    """1 -> width -> 1; all at once unless ``max_active_tasks`` says otherwise."""
    slots = max_active_tasks or width + 2
    lines = [f"dag: cost_fan_{width}", f"max_active_tasks: {slots}", "tasks:"]
    lines.append(f"  start: {{{BATCH}}}")
    lines += [f"  m{i}: {{depends_on: [start], {BATCH}}}" for i in range(width)]
    middle = ", ".join(f"m{i}" for i in range(width))
    lines.append(f"  end: {{depends_on: [{middle}], {BATCH}}}")
    body = ("\n".join(lines) + "\n").encode()
    return Scenario(f"fan-out 1>{width}>1", "fan-out", f"cost_fan_{width}", body, width + 2)


def diamonds(runs: int) -> Scenario:
    body = (
        f"dag: cost_diamond\nmax_active_runs: {runs}\ntasks:\n"
        f"  a: {{{BATCH}}}\n"
        f"  b: {{depends_on: [a], {BATCH}}}\n"
        f"  c: {{depends_on: [a], {BATCH}}}\n"
        f"  d: {{depends_on: [a], {BATCH}}}\n"
        f"  e: {{depends_on: [b, c, d], {BATCH}}}\n"
    ).encode()
    return Scenario(f"{runs} diamonds", "diamond", "cost_diamond", body, 5 * runs, runs)


@dataclass
class Result:
    scenario: Scenario
    seconds: float
    usage: cost.Usage
    invocations: dict[str, int]
    records: dict[str, int]
    handler_seconds: dict[str, float]
    calls: dict[str, int]
    log_bytes: dict[str, int]
    paths: list[dict[str, Any]]
    noop_stream_records: int
    unpriced: dict[str, int]
    busiest_record: int = 0  # DynamoDB calls
    states: dict[str, int] = field(default_factory=dict)
    # The per-task functions' GB-seconds with every function at this many MB.
    gb_s_by_memory: dict[int, float] = field(default_factory=dict)

    @property
    def tasks(self) -> int:
        return self.scenario.tasks

    def per_million(self) -> float:
        return cost.per_million(self.usage.dollars(), self.tasks)

    def critical(self) -> list[dict[str, Any]]:
        """Dispatches that follow a job's completion event (not a run's first tasks)."""
        return [p for p in self.paths if str(p["root"]).startswith("Batch Job State Change")]


def run_scenario(
    cloud: LocalCloud,
    repos: Repositories,
    meter: CostMeter,
    scenario: Scenario,
    timeout: float,
    progress: Callable[[], None] | None = None,
) -> Result:
    load(cloud, repos, scenario.dag, scenario.body)
    cloud.run_until(lambda: not cloud.busy(), timeout=60)
    meter.reset()
    run_ids = [f"r{i:03}" for i in range(scenario.runs)]
    started = time.monotonic()
    for run_id in run_ids:
        trigger(cloud, scenario.dag, run_id)

    def all_finished() -> bool:
        if progress is not None:
            progress()
        return all(finished(repos, scenario.dag, run_id) for run_id in run_ids)

    if not cloud.run_until(all_finished, timeout=timeout):
        raise TimeoutError(f"{scenario.name}: not finished in {timeout:.0f} s")
    seconds = time.monotonic() - started
    # What follows the end is part of the cost: the records still on the streams (the
    # finishes the scheduler told at once come after the run's end), the notifications.
    if not cloud.run_until(lambda: not cloud.busy(), timeout=timeout):
        raise TimeoutError(f"{scenario.name}: still busy {timeout:.0f} s after its runs ended")
    # And the reconciler's look at each run its finishes armed (TaskInstance.covered): due
    # a minute on, made now, through the same code, charged to the run's tasks.
    looked = ReconcileResult()
    with meter.charged_to("Reconciler", "armed run looked at"):
        look_at_armed_runs(repos, datetime.now(UTC) + timedelta(days=1), looked, limit=100)
    states: Counter[str] = Counter()
    for run_id in run_ids:
        run = repos.runs.find(scenario.dag, run_id)
        states[run.state.value if run else "missing"] += 1
    return Result(
        scenario,
        seconds,
        meter.usage,
        dict(meter.invocations),
        dict(meter.records),
        dict(meter.handler_seconds),
        dict(meter.calls),
        dict(meter.log_bytes),
        meter.dispatch_paths(),
        meter.noop_stream_records,
        dict(meter.unpriced),
        states=dict(states),
        busiest_record=meter.most_dynamodb_calls_for_one_record(),
        gb_s_by_memory=dict(meter.gb_s_by_memory),
    )


@contextmanager
def metered_cloud() -> Iterator[tuple[LocalCloud, Repositories, CostMeter]]:
    """The local cloud as the benchmarks run it, with a meter on every handler and call."""
    meter = CostMeter()
    with TemporaryDirectory() as logs:
        options = LocalCloudOptions(
            log=io.StringIO(),
            log_dir=Path(logs),
            cwd=ROOT,
            tap=meter.tap,
            watcher=None,
            # As deployed: the bus's rules listed at most this often per function.
            listeners_refresh_seconds=Settings().listeners_refresh_seconds,
            # The reconciler's pass every 5 minutes is a fixed cost, not a task's (no event
            # is lost here): one landing in a 2-second scenario was charged to its tasks.
            timing=Timing(reconcile_every=timedelta(hours=6)),
        )
        with LocalCloud(options) as cloud:
            bind_models(cloud.settings)
            meter.attach(cloud)
            try:
                yield cloud, Repositories(), meter
            finally:
                meter.close()


def run_all(
    scenarios: list[Scenario],
    timeout: float,
    progress: Callable[[Scenario, Repositories], Callable[[], None]] | None = None,
) -> list[Result]:
    results = []
    with metered_cloud() as (cloud, repos, meter):
        for scenario in scenarios:
            shown = progress(scenario, repos) if progress else None
            result = run_scenario(cloud, repos, meter, scenario, timeout, shown)
            results.append(result)
            print(
                f"... {scenario.name}: {result.seconds:.1f} s, ${result.per_million():.2f}/M tasks",
                file=sys.stderr,
                flush=True,
            )
    return results


def measure_long_job() -> long_jobs.LongJobFigures:
    with metered_cloud() as (cloud, repos, meter):
        figures = long_jobs.measure(cloud, repos, meter)
        figures = long_jobs.measure_many(cloud, repos, meter, figures)
    assert figures.many is not None
    print(
        f"... a long job: uncovered ${figures.uncover.dollars * 1e6:.2f}/M, "
        f"each pass reading it ${figures.read_dollars * 1e6:.2f}/M alone, "
        f"${figures.many.dollars * 1e6:.2f}/M with {long_jobs.MANY} at once "
        f"({figures.many.calls} calls)",
        file=sys.stderr,
        flush=True,
    )
    return figures


# --------------------------------------------------------------------------- figures


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def component_rows(result: Result) -> list[tuple[str, float]]:
    grouped: defaultdict[str, float] = defaultdict(float)
    for (component,), dollars in result.usage.by(depth=0).items():
        grouped[component] += dollars
    return sorted(
        ((c, cost.per_million(d, result.tasks)) for c, d in grouped.items()), key=lambda r: -r[1]
    )


def line_rows(result: Result, depth: int = 4) -> list[tuple[tuple[str, ...], float]]:
    rows = [
        (labels, cost.per_million(dollars, result.tasks))
        for labels, dollars in result.usage.by(depth=depth).items()
    ]
    return sorted(rows, key=lambda r: -r[1])


def flow_rows(result: Result) -> list[tuple[str, float]]:
    """Dollars per cause: what handling each kind of event or stream record costs, the
    PutEvents that sends an event included (charged to the event it sends)."""
    flows: defaultdict[str, float] = defaultdict(float)
    for (meter, labels), quantity in result.usage.lines.items():
        dollars = cost.price_of(meter, quantity)
        _function, cause, operation, item = (*labels, "", "", "", "")[:4]
        key = item if operation == "PutEvents" else cause
        flows[key] += dollars
    return sorted(
        ((k, cost.per_million(v, result.tasks)) for k, v in flows.items()), key=lambda r: -r[1]
    )


def units_per_task(result: Result) -> dict[str, float]:
    usage, tasks = result.usage, result.tasks
    return {
        "write units": usage.quantity("dynamodb.wru") / tasks,
        "read units": usage.quantity("dynamodb.rru") / tasks,
        "Lambda invocations": usage.quantity("lambda.requests") / tasks,
        "Lambda GB-s (ms at 1 GB)": usage.quantity("lambda.gb_s") / tasks * 1000,
        "custom events": usage.quantity("events.custom") / tasks,
        "SQS requests": usage.quantity("sqs.requests") / tasks,
        "log KB": usage.quantity("logs.gb") * 1e6 / tasks,
        "AWS calls": sum(n for k, n in result.calls.items() if not k.startswith(("s3:", "logs:")))
        / tasks,
    }


def path_summary(result: Result) -> dict[str, Any]:
    paths = result.critical()
    if not paths:
        return {"count": 0}
    window = wiring.SCHEDULER_EVENT_SOURCE.max_batching_window.total_seconds()
    hops = [p["lambda_hops"] for p in paths]
    trips = [p["sequential_round_trips"] for p in paths]
    latency = [cost.path_latency_ms(p["latency_hops"], window) for p in paths]
    typical = sorted(paths, key=lambda p: p["sequential_round_trips"])[len(paths) // 2]
    return {
        "count": len(paths),
        "hops_p50": statistics.median(hops),
        "hops_max": max(hops),
        "round_trips_p50": statistics.median(trips),
        "round_trips_max": max(trips),
        "latency_p50_ms": statistics.median(latency),
        "quota_floor_ms": statistics.median(
            cost.submit_quota_floors_ms([str(p["root_id"]) for p in paths])
        ),
        "example": typical,
    }


def memory_rows(result: Result) -> list[tuple[int, float, float, float | None]]:
    """The scenario at each of ``cost.MEMORY_CHOICES_MB`` for every function: (MB,
    Lambda GB-seconds in $/M tasks, all in $/M tasks, est. p50 ms on AWS or None), from
    the same measured CPU and calls."""
    charged = cost.price_of("lambda.gb_s", result.usage.quantity("lambda.gb_s"))
    window = wiring.SCHEDULER_EVENT_SOURCE.max_batching_window.total_seconds()
    paths = result.critical()
    rows = []
    for memory, gb_s in sorted(result.gb_s_by_memory.items()):
        duration = cost.price_of("lambda.gb_s", gb_s)
        total = result.usage.dollars() - charged + duration
        latency = None
        if paths:
            latency = statistics.median(
                cost.path_latency_ms(
                    [
                        replace(hop, cpu_ms=cost.cpu_on_aws_ms(cpu, memory))
                        for hop, cpu in zip(p["latency_hops"], p["hop_cpu_s"], strict=True)
                    ],
                    window,
                )
                for p in paths
            )
        rows.append(
            (
                memory,
                cost.per_million(duration, result.tasks),
                cost.per_million(total, result.tasks),
                latency,
            )
        )
    return rows


def memory_section(results: list[Result]) -> list[str]:
    deployed = sorted({spec.memory_mb for spec in wiring.FUNCTIONS})
    out = [
        "## Lambda memory: the same work at other sizes\n",
        "Each scenario's Lambda duration priced again with every function at another memory "
        "size, from the same measured CPU time and AWS calls (`cost.MEMORY_CHOICES_MB`): CPU "
        f"time stretches with the CPU share (memory / {cost.FULL_VCPU_MB} MB), so its "
        "GB-seconds stay the same below a full vCPU, while the time spent waiting for AWS "
        "calls is billed in proportion to the size. Deployed: "
        f"{', '.join(f'{m} MB' for m in deployed)} (`wiring.FunctionSpec.memory_mb`). Not "
        "modelled: a cold start's first event, which runs at the same CPU share (init has "
        "a full vCPU), and memory use (a handler ready for its first event holds 61-67 MB "
        "here; each DAG version it caches adds to it).\n",
        "| scenario | memory | Lambda duration $/M | all in $/M | est. p50 on AWS |",
        "|---|--:|--:|--:|--:|",
    ]
    for r in results:
        for memory, duration, total, latency in memory_rows(r):
            lat = "-" if latency is None else f"{latency:.0f} ms"
            out.append(
                f"| {r.scenario.name} | {memory} MB | ${duration:.2f} | ${total:.2f} | {lat} |"
            )
    return [*out, ""]


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; moto server in process"
    )


def step_functions(result: Result) -> float:
    return cost.step_functions_per_million(
        result.scenario.shape, result.tasks, result.scenario.runs
    )


# --------------------------------------------------------------------------- report


def report(
    results: list[Result],
    flat: list[Result],
    command: str,
    cold_starts: dict[str, Any] | None = None,
    big_dags: list[dict[str, Any]] | None = None,
    long_job: long_jobs.LongJobFigures | None = None,
) -> str:
    out: list[str] = []
    w = out.append
    w("# Benchmarks: what a Batch task costs, through the real handlers\n")
    w(
        "Generated by `make bench` (`benchmarks/run_benchmarks.py`): every figure below is "
        "measured in the local cloud with the production handlers fed as the deployed stack "
        "feeds them, every AWS call counted, DynamoDB units computed from item sizes with "
        "AWS's rounding (`benchmarks/metering.py`), priced with the table below "
        "(`benchmarks/cost.py`). Figures are per task; $/M is dollars per million tasks.\n"
    )
    w(f"- command: `{command}`")
    w(f"- machine: {machine()}")
    w(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    w("## Targets\n")
    w(
        "| scenario | tasks | $/M tasks | ≤ $4.00 | stretch ≤ $2.50 | Step Functions Standard "
        "| MWAA (mw1.small, 10k tasks/day) | Lambda hops p50 (max) | ≤ 2 | sequential DynamoDB "
        "round trips p50 (max) | ≤ 4 | est. p50 on AWS | ≤ 500 ms | floor: Batch's SubmitJob "
        "quota |"
    )
    w("|---|--:|--:|---|---|--:|--:|--:|---|--:|---|--:|---|--:|")
    for r in results:
        usd = r.per_million()
        p = path_summary(r)
        hops = f"{p['hops_p50']:g} ({p['hops_max']})" if p["count"] else "-"
        trips = f"{p['round_trips_p50']:g} ({p['round_trips_max']})" if p["count"] else "-"
        hops_ok = verdict(p["count"] > 0 and p["hops_max"] <= TARGET_HOPS)
        trips_ok = verdict(p["count"] > 0 and p["round_trips_max"] <= TARGET_ROUND_TRIPS)
        lat = f"{p['latency_p50_ms']:.0f} ms" if p["count"] else "-"
        lat_ok = verdict(p["count"] > 0 and p["latency_p50_ms"] <= cost.LATENCY_TARGET_MS)
        floor = f"{p['quota_floor_ms']:.0f} ms" if p["count"] else "-"
        w(
            f"| {r.scenario.name} | {r.tasks} | ${usd:.2f} | {verdict(usd <= TARGET_USD_PER_M)} "
            f"| {verdict(usd <= STRETCH_USD_PER_M)} | ${step_functions(r):.2f} "
            f"| ${cost.mwaa_per_million():,.0f} | {hops} | {hops_ok} | {trips} | {trips_ok} "
            f"| {lat} | {lat_ok} | {floor} |"
        )
    w(
        f"\nLatency target: p50 ≤ {cost.LATENCY_TARGET_MS:.0f} ms from a job's completion event "
        "to the next dispatch call, estimated from the per-hop table below along the measured "
        "path (the scheduler's event source has no batching window). The floor is what "
        "Batch's fixed quota of 50 SubmitJob calls a second allows, whatever the scheduler "
        "does: the k-th of the jobs one completion releases cannot start sooner than "
        "(k - 1) / 50 s after it, so the p50 of a 200-wide fan-out is ~2 s at best (one array "
        "job instead of N jobs would lift it). Step Functions Standard counts one state "
        "transition per Task state (`.sync` "
        "Batch integration) plus one per Map or Parallel state. MWAA: $0.49/h, 24 h a day, "
        f"{cost.MWAA_TASKS_PER_DAY:,} tasks a day.\n"
    )
    for r in results:
        out += scenario_section(r)
    out += memory_section(results)
    if long_job is not None:
        chain_figure = next((r.per_million() for r in results if r.scenario.shape == "chain"), 0.0)
        out += long_jobs.section(long_job, chain_figure)
    if flat:
        out += flatness_section(flat)
    if big_dags:
        out += big_dag_section(big_dags)
    if cold_starts is not None:
        out += [*cold_start.report_lines(cold_starts), ""]
    out += tables_section()
    return "\n".join(out) + "\n"


def scenario_section(r: Result) -> list[str]:
    out: list[str] = []
    w = out.append
    w(f"## {r.scenario.name}: ${r.per_million():.2f} per million tasks\n")
    w(
        f"{r.tasks} tasks, {r.scenario.runs} run(s), {r.seconds:.1f} s here; runs "
        f"ended {r.states}.\n"
    )
    w("| component | $/M tasks | share |\n|---|--:|--:|")
    total = r.per_million()
    for component, usd in component_rows(r):
        w(f"| {component} | ${usd:.3f} | {usd / total:.0%} |")
    w("\nPer task:\n")
    w("| measure | per task |\n|---|--:|")
    for name, value in units_per_task(r).items():
        w(f"| {name} | {value:.2f} |")
    w(
        "\nInvocations per task: "
        + ", ".join(f"{f} {n / r.tasks:.2f}" for f, n in sorted(r.invocations.items()))
        + "; records per invocation: "
        + ", ".join(
            f"{f} {r.records.get(f, 0) / n:.1f}" for f, n in sorted(r.invocations.items()) if n
        )
        + "; mean billed duration per invocation (as on AWS): "
        + ", ".join(
            f"{f} {r.handler_seconds[f] / n * 1000:.0f} ms"
            for f, n in sorted(r.invocations.items())
            if n
        )
        + f". Stream records that change nothing at all: {r.noop_stream_records}.\n"
    )
    w(
        "By cause (what handling each event or stream record costs; an event's PutEvents "
        "is charged to the event):\n"
    )
    w("| cause | $/M tasks | share |\n|---|--:|--:|")
    for cause, usd in flow_rows(r)[:12]:
        w(f"| {cause} | ${usd:.3f} | {usd / total:.0%} |")
    w("\nTop 15 lines (component, handler, cause, call, item):\n")
    w("| component | handler | cause | call | item | $/M tasks | share |")
    w("|---|---|---|---|---|--:|--:|")
    for labels, usd in line_rows(r)[: int(os.environ.get("SKYDAG_BENCH_LINES", "15"))]:
        cells = [*labels, "", "", "", "", ""][:5]
        w("| " + " | ".join(cells) + f" | ${usd:.3f} | {usd / total:.0%} |")
    p = path_summary(r)
    if p["count"]:
        ex = p["example"]
        w(
            f"\nCritical path ({p['count']} dispatches after a job's end), a typical one: "
            + " → ".join(
                f"{hop} [{trips} DynamoDB]"
                for hop, trips in zip(ex["hops"], ex["round_trips"], strict=True)
            )
            + " → SubmitJob.\n"
        )
    if r.unpriced:
        w(f"Calls not priced: {r.unpriced}.\n")
    return out


def flatness_section(flat: list[Result]) -> list[str]:
    out: list[str] = []
    w = out.append
    w("## Flatness (±10% from the smallest size)\n")
    w(
        "Judged on what the target names: AWS calls, write units and read units per task. "
        "Lambda invocations per task are shown, not judged: they fall as a shape grows, "
        "since the event sources batch more records into each invocation. The most "
        "DynamoDB calls one record made (one after the other, in one invocation) must stay "
        f"within {BOUNDED_RECORD_CALLS} whatever the width: a fan-out's finish is told "
        f"to its downstream tasks {REPORT_CHUNK} per invocation.\n"
    )
    w(
        "| shape | tasks | AWS calls/task | write units/task | read units/task "
        "| invocations/task | $/M | within ±10% | most DynamoDB calls in one record "
        f"| ≤ {BOUNDED_RECORD_CALLS} |"
    )
    w("|---|--:|--:|--:|--:|--:|--:|---|--:|---|")
    by_shape: defaultdict[str, list[Result]] = defaultdict(list)
    for r in flat:
        by_shape[r.scenario.shape].append(r)
    for shape, group in by_shape.items():
        base = units_per_task(group[0])
        for r in group:
            u = units_per_task(r)
            keys = FLAT_MEASURES
            ok = all(abs(u[k] / base[k] - 1) <= FLAT_TOLERANCE for k in keys if base[k])
            w(
                f"| {shape} | {r.tasks} | {u['AWS calls']:.2f} | {u['write units']:.2f} "
                f"| {u['read units']:.2f} | {u['Lambda invocations']:.2f} "
                f"| ${r.per_million():.2f} | {verdict(ok)} | {r.busiest_record} "
                f"| {verdict(r.busiest_record <= BOUNDED_RECORD_CALLS)} |"
            )
    w("")
    return out


def big_dag_section(big_dags: list[dict[str, Any]]) -> list[str]:
    out = ["## Big DAGs: validated, stored and read back\n"]
    out.append(
        "`benchmarks/run_scale_benchmarks.py` (also `make bench-scale`): the DAG file's "
        "validation in CPU seconds (best of 3), then one save of the version (its spec a "
        "gzip'd S3 object) and one read back, on moto in-process.\n"
    )
    out.append(
        f"| shape | tasks | file | spec JSON | stored object | validation (CPU) "
        f"| < {run_scale_benchmarks.TARGET_SECONDS:.0f} s | save | read back |"
    )
    out.append("|---|--:|--:|--:|--:|--:|---|--:|--:|")
    for r in big_dags:
        out.append(
            f"| {r['shape']} | {r['tasks']:,} | {r['file_bytes'] // 1024:,} KB "
            f"| {r['spec_json_bytes'] // 1024:,} KB | {r['spec_object_bytes'] // 1024:,} KB "
            f"| {r['validate_cpu_seconds']:.2f} s | {verdict(r['met'])} "
            f"| {r['save_seconds']:.2f} s | {r['read_seconds']:.2f} s |"
        )
    out.append(
        "\nA 10,000-task run through the local cloud is `make bench-big-run` (about 40 "
        "minutes here): [benchmarks-big-run.md](benchmarks-big-run.md).\n"
    )
    out.append(
        "A wide join, modelled (not measured) as each report's writes are charged: a join "
        f"of more than {TALLY_GROUP} upstreams is told through tally items of "
        f"{TALLY_GROUP} upstreams each (engine/tallies.py), one write per report at the "
        "tally item's size, and holds a summary per group, written twice per group (its "
        "first finish, then the group done) at the join item's size; a narrower join "
        "holds an entry per upstream (each report charged at its item as it grows; ids "
        f"`m<i>`, an item of ~{JOIN_ITEM_BASE_BYTES} bytes besides them):\n"
    )
    out.append("| N | join item at the end | write units per report (mean) |")
    out.append("|--:|--:|--:|")
    for width in (10, 64, 200, 1_000, 10_000):
        final, mean = join_report_units(width)
        out.append(f"| {width:,} | {final / 1024:,.1f} KB | {mean:.2f} |")
    out.append(
        "\nBefore tally items, a join kept an entry per upstream whatever its width: "
        "1.9 write units per report at 200, 5.4 at 1,000, 48.9 at 10,000.\n"
    )
    return out


# The join task's item besides its upstream reports (keys, state, times, tries), a tally
# item besides its members (keys, version), and what a member and a group's summary take
# as DynamoDB sizes them: the model's.
JOIN_ITEM_BASE_BYTES = 600
TALLY_ITEM_BASE_BYTES = 90
TALLY_MEMBER_BYTES = 7  # a position (<= 2 digits) and an encoded report (a number)
TALLY_SUMMARY_BYTES = 24  # the group's number and "<12-digit version>|<code>:<count>"


def join_report_units(width: int) -> tuple[int, float]:
    """The join's item size after ``width`` reports, and the mean write units a report
    costs (each write charged at the larger of the item before and after it)."""
    size = JOIN_ITEM_BASE_BYTES
    total = 0
    if width <= TALLY_GROUP:
        for index in range(width):
            size += upstream_map_bytes([f"m{index}"])
            total += cost.write_units(size)
        return size, total / width
    for first in range(0, width, TALLY_GROUP):
        members = min(TALLY_GROUP, width - first)
        size += TALLY_SUMMARY_BYTES
        total += 2 * cost.write_units(size)  # the group's first finish, and its end
        for count in range(1, members + 1):
            total += cost.write_units(TALLY_ITEM_BASE_BYTES + count * TALLY_MEMBER_BYTES)
    return size, total / width


def tables_section() -> list[str]:
    out: list[str] = []
    w = out.append
    w("## Price table (us-east-1, on demand, no free tier)\n")
    w("| component | price | note |\n|---|---|---|")
    for component, price, note in cost.price_table_rows():
        w(f"| {component} | {price} | {note} |")
    w(
        "\nDynamoDB units follow AWS's rules from the items' sizes before and after each write: "
        "a write at the larger of the two (1 KB units), each GSI entry put, deleted or both "
        "when its key moves, a failed condition at the item's size; a TransactWriteItems "
        "item twice a plain write (a condition check twice a strongly consistent read)."
    )
    w(
        f"\nModelled, not measured: Lambda's own log lines ({cost.PLATFORM_LOG_BYTES} bytes "
        f"per invocation at the stack's default system log level, "
        f"{wiring.SYSTEM_LOG_LEVEL_BY_DEFAULT}; {cost.PLATFORM_LOG_BYTES_AT_INFO} with context "
        f"skydag:systemLogLevel INFO: platform.start and platform.report in the JSON log "
        f"format); "
        f"{cost.LOG_EVENT_OVERHEAD} bytes per log event; X-Ray traces at "
        f"{cost.TRACED_SHARE:.0%} of invocations (tracing is opt-in, context skydag:tracing; "
        f"when on, the default sampling rule traces {cost.XRAY_SAMPLED:.0%} at scale and its "
        "1 request/s reservoir is a fixed ≤ $13/month); the SQS event source's "
        "ReceiveMessage + DeleteMessageBatch, one each per batch of commands or signals "
        "(job ends invoke the scheduler directly and cost no SQS request; the queue's idle "
        "long polls, ≈ 0.65 M requests a month, are fixed). Lambda GB-seconds come from each "
        "invocation's billed duration as it would be on AWS: the handler thread's CPU time "
        "measured here (moto runs on other threads, so neither it nor the machine's load "
        f"counts) divided by the function's CPU share (memory / {cost.FULL_VCPU_MB} MB), plus "
        "each of its AWS calls at the p50 of the latency table below. The DAG loader and "
        "the reconciler are not per-task and not counted.\n"
    )
    w("## Per-hop latency table (p50 on AWS, assumed)\n")
    w("| hop | ms | what |\n|---|--:|---|")
    for name, (ms, what) in cost.LATENCY_P50_MS.items():
        w(f"| {name} | {ms:g} | {what} |")
    window = wiring.SCHEDULER_EVENT_SOURCE.max_batching_window.total_seconds()
    w(
        f"| SQS batching window | {window * 1000:g} | the scheduler's event source "
        "(`wiring.SCHEDULER_EVENT_SOURCE`), added on every SQS hop (commands, signals) |"
    )
    w(
        "\nBeside these, each hop adds the handler's own CPU time from the start of its "
        "record to the call that carries the path on (measured here on a full core, "
        f"divided by the function's CPU share: memory / {cost.FULL_VCPU_MB} MB), so a "
        "hop that works through 100 downstream tasks before the dispatch pays for them.\n"
    )
    return out


def print_summary(results: list[Result]) -> None:
    for r in results:
        p = path_summary(r)
        usd = r.per_million()
        print(
            f"{r.scenario.name:<18} ${usd:6.2f}/M tasks  (target ≤ ${TARGET_USD_PER_M:.2f}: "
            f"{verdict(usd <= TARGET_USD_PER_M)}; Step Functions Standard "
            f"${step_functions(r):.2f}/M, MWAA ${cost.mwaa_per_million():,.0f}/M)"
        )
        if p["count"]:
            print(
                f"{'':<18} critical path: {p['hops_p50']:g} Lambda hops "
                f"({verdict(p['hops_max'] <= TARGET_HOPS)}), {p['round_trips_p50']:g} "
                "sequential DynamoDB round trips "
                f"({verdict(p['round_trips_max'] <= TARGET_ROUND_TRIPS)}), "
                f"est. p50 {p['latency_p50_ms']:.0f} ms on AWS "
                f"({verdict(p['latency_p50_ms'] <= cost.LATENCY_TARGET_MS)}; Batch's SubmitJob "
                f"quota allows {p['quota_floor_ms']:.0f} ms at best)"
            )
        total = r.per_million()
        for component, value in component_rows(r):
            print(f"{'':<20}{component:<22} ${value:7.3f}  {value / total:4.0%}")
        print(f"{'':<20}top lines:")
        for labels, value in line_rows(r)[:10]:
            name = " / ".join(x for x in labels if x)
            print(f"{'':<22}{name:<100} ${value:6.3f} {value / total:4.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--no-flat", action="store_true", help="skip the flatness sizes")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--timeout", type=float, default=600.0, help="per scenario, seconds")
    parser.add_argument("--no-cold-start", action="store_true", help="skip the cold starts")
    parser.add_argument("--no-long-job", action="store_true", help="skip the long job's checks")
    args = parser.parse_args(argv)

    if args.quick:
        scenarios = [chain(5), fan_out(10), diamonds(2)]
        flat_sizes: list[Scenario] = [] if args.no_flat else [chain(10), fan_out(20)]
    else:
        scenarios = [chain(50), fan_out(200), diamonds(20)]
        # With the main scenarios: chain 10, 50 and 1,000, fan-out 10, 200 and 1,000 (0.2 to
        # 0.3 s a task here; 10,000 tasks is `make bench-big-run`, about 40 minutes). At
        # 1,000 tasks a run counts its finishes in finish tallies, a join in tally items.
        flat_sizes = [] if args.no_flat else [chain(10), chain(1_000), fan_out(10), fan_out(1_000)]
    results = run_all(scenarios + flat_sizes, args.timeout)
    main_results = results[: len(scenarios)]
    flat: list[Result] = []
    if flat_sizes:
        order = sorted(results, key=lambda r: (r.scenario.shape, r.tasks))
        flat = [r for r in order if r.scenario.shape in ("chain", "fan-out")]
    print_summary(main_results)
    long_job = None if args.no_long_job else measure_long_job()
    starts = None
    if not args.no_cold_start:
        starts = cold_start.measure(repeat=1 if args.quick else 5)
        for name, f in starts["handlers"].items():
            print(f"cold start {name:<17} ready in {f['ready_ms']:>5.0f} ms  {verdict(f['met'])}")
    big_dags = [
        run_scale_benchmarks.measure(shape, 1_000 if args.quick else 10_000)
        for shape in scale_dags.SHAPES
    ]
    for r in big_dags:
        print(
            f"big DAG {r['shape']} {r['tasks']}: validates in {r['validate_cpu_seconds']:.2f} s "
            f"CPU  {verdict(r['met'])}"
        )
    command = "make bench" + (" (--quick)" if args.quick else "")
    text = report(main_results, flat, command, starts, big_dags, long_job)
    args.doc.write_text(text, encoding="utf-8")
    print(f"wrote {args.doc}")
    if args.json:
        figures = [
            {
                "scenario": r.scenario.name,
                "tasks": r.tasks,
                "usd_per_million": r.per_million(),
                "components": dict(component_rows(r)),
                "per_task": units_per_task(r),
                "memory": [
                    {"mb": mb, "duration_usd_per_million": d, "usd_per_million": t, "p50_ms": p}
                    for mb, d, t, p in memory_rows(r)
                ],
                "paths": path_summary(r) | {"example": None},
                "lines": [[list(k), v] for k, v in line_rows(r)],
            }
            for r in results
        ]
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
