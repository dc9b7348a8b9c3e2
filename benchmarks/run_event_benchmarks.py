"""What the event-driven parts cost: idle, per signal, per reconciler pass, per cold start.

    PYTHONPATH=functions python benchmarks/run_event_benchmarks.py [--dags N] [--json FILE]

- idle: one reconciler pass when nothing is due (what "nothing runs while nothing
  happens" costs: the pass the 5-minute schedule makes), in AWS calls;
- signals: AWS calls to route one signal with N DAGs loaded, when no DAG listens to
  its source and when one DAG's `on:` matches (a run is created) — flat in N, because a
  signal reads the subscriptions of its source, not every DAG; the baseline is the same
  routing done by scanning every DAG head (what an index-less design would pay);
- reconciler: calls per overdue running job described (a lost event repaired);
- cold start: the import time of each Lambda handler module, against `import boto3`
  (which every Python Lambda on AWS pays), medians of fresh interpreters;
- asset: the size of the Lambda asset when `make synth` has built it.

Counted with botocore hooks on moto in-process; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from call_counter import CallCounter, hook_every_client
from cold_start import FUNCTION_ENV, HANDLERS
from skydag.dev.embedded import EmbeddedSkydag, embedded_aws
from skydag.engine.models import JobReport, JobStatus
from skydag.engine.rules import DISPATCH_CHECK_AFTER
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.store.models import DagModel
from skydag.targets.base import DispatchRequest, DispatchResult, JobRef, Target
from skydag.targets.builtin import TargetSet

ROOT = Path(__file__).resolve().parents[1]


class RunningJobs:
    """A service whose jobs run until described, then report success (a lost event)."""

    def __init__(self) -> None:
        self.count = 0

    def target_for(self, kind: str) -> Target:
        return self

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        self.count += 1
        return DispatchResult(job_id=f"job-{request.token}")

    def describe(self, job: JobRef) -> JobReport | None:
        return JobReport(
            job.dag_id, job.run_id, job.task_id, job.try_number, JobStatus.SUCCEEDED, job.job_id
        )

    def cancel(self, job: JobRef, reason: str) -> None:
        return None

    def poll(self) -> list[JobReport]:
        return []

    def running(self) -> int:
        return 0

    def close(self) -> None:
        return None


def _settle(env: EmbeddedSkydag) -> None:
    while env.pump():
        pass


def _counted(counter: CallCounter, action: Any) -> tuple[int, float, dict[str, int]]:
    with counter.counting():
        started = time.perf_counter()
        action()
        seconds = time.perf_counter() - started
    return sum(counter.calls.values()), seconds, dict(counter.calls)


def event_figures(counter: CallCounter, dags: int, jobs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with embedded_aws(), tempfile.TemporaryDirectory() as logs:
        target = RunningJobs()
        env = EmbeddedSkydag(Settings(), log_dir=Path(logs), target=target)
        env.service.targets = TargetSet(env.clock, target)
        now = env.clock.now()
        for i in range(dags):
            spec = DagSpec.model_validate(
                {
                    "dag": f"d{i:04}",
                    "on": [{"source": [f"team{i}.events"], "detail-type": ["ready"]}],
                    "tasks": {"t": {"noop": {}}},
                }
            )
            env.repos.dags.save_version(spec, source="bench", sha256=None, now=now)

        calls, seconds, ops = _counted(counter, env.service.reconcile)
        figures["idle_reconcile"] = {"calls": calls, "ms": seconds * 1000, "ops": ops}

        def signal(source: str) -> dict[str, Any]:
            return {
                "id": f"e-{time.perf_counter_ns()}",
                "source": source,
                "detail-type": "ready",
                "detail": {},
            }

        calls, seconds, ops = _counted(counter, lambda: env.route(signal("nobody.listens")))
        figures["signal_unmatched"] = {"calls": calls, "ms": seconds * 1000, "ops": ops}
        calls, seconds, ops = _counted(counter, lambda: env.route(signal("team7.events")))
        figures["signal_creates_run"] = {"calls": calls, "ms": seconds * 1000, "ops": ops}

        def scan_every_dag() -> None:  # the index-less alternative: read every head
            list(DagModel.scan())

        calls, seconds, ops = _counted(counter, scan_every_dag)
        figures["baseline_scan_heads"] = {"calls": calls, "ms": seconds * 1000, "ops": ops}
        _settle(env)

        spec = DagSpec.model_validate(
            {
                "dag": "wide",
                "max_active_tasks": jobs,
                "tasks": {
                    f"j{i}": {"batch": {"job_queue": "q", "job_definition": "d"}}
                    for i in range(jobs)
                },
            }
        )
        env.repos.dags.save_version(spec, source="bench", sha256=None, now=now)
        env.service.trigger("wide", run_id="r1")
        _settle(env)
        # Their first look (their claims' expiry: ``looks_at_entry``), each job described
        # and its lost end repaired.
        later = env.clock.now() + DISPATCH_CHECK_AFTER + timedelta(seconds=1)
        calls, seconds, ops = _counted(counter, lambda: env.service.reconcile(later, limit=jobs))
        repaired = sum(
            ti.state.value == "success" for ti in env.repos.tasks.list_for_run("wide", "r1")
        )
        if repaired != jobs:
            raise AssertionError(f"the reconciler repaired {repaired} of {jobs} lost ends")
        figures["reconcile_lost_events"] = {
            "jobs": jobs,
            "calls_per_job": calls / jobs,
            "ms_per_job": seconds * 1000 / jobs,
            "ops": ops,
        }
        env.close()
    return figures


def _import_ms(statement: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", statement],
            check=True,
            cwd=ROOT,
            env=FUNCTION_ENV,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def cold_starts(repeat: int) -> dict[str, Any]:
    interpreter = _import_ms("pass", repeat)
    boto3_ms = _import_ms("import boto3", repeat) - interpreter
    handlers = {}
    for name in HANDLERS:
        ms = _import_ms(f"import skydag.handlers.{name}", repeat) - interpreter
        handlers[name] = {"ms": ms, "x_boto3": ms / boto3_ms}
    return {"interpreter_ms": interpreter, "boto3_ms": boto3_ms, "handlers": handlers}


def asset_size() -> dict[str, Any] | None:
    asset = ROOT / "build" / "lambda-asset"
    if not asset.is_dir():
        return None
    files = [p for p in asset.rglob("*") if p.is_file()]
    return {"files": len(files), "mb": sum(p.stat().st_size for p in files) / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dags", type=int, default=200, help="DAGs loaded for the signal figures")
    parser.add_argument("--jobs", type=int, default=50, help="running jobs for the reconciler")
    parser.add_argument("--repeat", type=int, default=5, help="cold-start samples per module")
    parser.add_argument("--json", type=Path, metavar="FILE")
    args = parser.parse_args(argv)

    counter = CallCounter()
    with hook_every_client(counter):
        events = event_figures(counter, args.dags, args.jobs)
    starts = cold_starts(args.repeat)
    asset = asset_size()

    print(f"skydag event benchmarks ({args.dags} DAGs loaded; moto in-process)")
    idle = events["idle_reconcile"]
    print(
        f"idle reconciler pass:        {idle['calls']} calls ({idle['ops']}), {idle['ms']:.1f} ms"
    )
    for key, label in (
        ("signal_unmatched", "signal nobody listens to"),
        ("signal_creates_run", "signal creating a run"),
        ("baseline_scan_heads", f"baseline: scan {args.dags} DAG heads"),
    ):
        f = events[key]
        print(f"{label + ':':<29}{f['calls']} calls, {f['ms']:.1f} ms  {f['ops']}")
    base = events["baseline_scan_heads"]["ms"]
    print(
        f"  a signal nobody listens to costs x{events['signal_unmatched']['ms'] / base:.2f} "
        f"of scanning the DAG heads"
    )
    rec = events["reconcile_lost_events"]
    print(
        f"reconciler, lost events:     {rec['calls_per_job']:.2f} calls/job, "
        f"{rec['ms_per_job']:.1f} ms/job over {rec['jobs']} jobs  {rec['ops']}"
    )
    print()
    print(
        f"cold import (median of {args.repeat}; interpreter {starts['interpreter_ms']:.0f} ms "
        f"subtracted): import boto3 {starts['boto3_ms']:.0f} ms"
    )
    for name, f in starts["handlers"].items():
        print(f"  skydag.handlers.{name:<18}{f['ms']:>6.0f} ms  x{f['x_boto3']:.2f} of boto3")
    if asset is None:
        print("lambda asset: not built (run `make synth` first)")
    else:
        print(f"lambda asset: {asset['mb']:.1f} MB in {asset['files']} files (build/lambda-asset)")
    if args.json:
        payload = {"events": events, "cold_starts": starts, "asset": asset}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
