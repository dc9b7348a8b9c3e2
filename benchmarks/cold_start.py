"""Cold start: how long each Lambda handler takes, in a fresh interpreter, to be ready for
its first event, and what the Lambda asset is made of.

"Ready" is what a cold invocation pays before its first AWS call: importing the handler
module (Lambda's init), then what the first event builds and imports on demand: the
service with its repositories and targets (``_runtime.scheduler_service()`` /
``dag_loader_service()``), the modules its route imports lazily (``FIRST_EVENT_MODULES``)
and the clients every first event uses: DynamoDB's, one per model its route reads or writes
(PynamoDB makes a client per model: ``FIRST_EVENT_MODELS``), and S3's for the DAG loader. Clients
a first event may not need (EventBridge, EventBridge Scheduler, a target's service) are
made on their first call and not counted. Each sample is a new process with the function's
environment (``FUNCTION_ENV``), timed from its first statement: the interpreter's own start
is left out, as Lambda's runtime is up before init. Times are wall time on this machine,
at full CPU: on Lambda, init runs with a whole vCPU's burst, so they are comparable.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 400.0
HANDLERS = ("dag_loader", "scheduler", "stream_processor", "reconciler")
# What the stack gives each function: the handlers validate it when they are imported.
FUNCTION_ENV = {
    "PYTHONPATH": str(ROOT / "functions"),
    "PATH": "/usr/bin:/bin",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "cold-start",
    "AWS_SECRET_ACCESS_KEY": "cold-start",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "SKYDAG_DAGS_TABLE": "skydag-dags",
    "SKYDAG_DAG_VERSIONS_TABLE": "skydag-dag-versions",
    "SKYDAG_RUNS_TABLE": "skydag-runs",
    "SKYDAG_TASK_INSTANCES_TABLE": "skydag-task-instances",
    "SKYDAG_TASK_STATE_TABLE": "skydag-task-state",
    "SKYDAG_DAG_BUCKET": "skydag-dags",
    "SKYDAG_EVENT_BUS": "skydag",
    "SKYDAG_EVENT_BUS_ARN": "arn:aws:events:us-east-1:123456789012:event-bus/skydag",
    "SKYDAG_SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/skydag-schedules",
    "SKYDAG_SCHEDULER_QUEUE_ARN": "arn:aws:sqs:us-east-1:123456789012:skydag-scheduler",
    "SKYDAG_EVENT_DELIVERY_DLQ_ARN": "arn:aws:sqs:us-east-1:123456789012:skydag-delivery-dlq",
}
# The modules a handler's first event imports on demand (its route), beyond its service.
FIRST_EVENT_MODULES: dict[str, tuple[str, ...]] = {
    "dag_loader": ("skydag.service.dag_loader", "skydag.spec.loader"),
    # A job's end, the scheduler's usual first event: the services' event parsers too.
    "scheduler": ("skydag.service.router", "skydag.limits", "skydag.targets.aws.registry"),
    "stream_processor": ("skydag.service.router", "skydag.store.repositories"),
    "reconciler": ("skydag.service.router",),
}

# The models (so the PynamoDB clients) its first event uses: a job's event reads the try,
# what its job published and the run; a stream record, the task and its run; the DAG
# loader, the DAG and its versions.
FIRST_EVENT_MODELS: dict[str, tuple[str, ...]] = {
    "dag_loader": ("DagModel", "DagVersionModel"),
    "scheduler": ("TaskInstanceModel", "TaskStateModel", "RunModel"),
    "stream_processor": ("TaskInstanceModel", "RunModel"),
    "reconciler": ("TaskInstanceModel", "RunModel"),
}

_PROBE = """
import importlib, json, sys, time
started = time.perf_counter()
module = importlib.import_module("skydag.handlers." + sys.argv[1])
imported = time.perf_counter()
from skydag.handlers import _runtime
if sys.argv[1] == "dag_loader":
    _runtime.dag_loader_service()
    _runtime.s3_client()  # its first event reads the uploaded file
else:
    _runtime.scheduler_service()
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
# Every first event reads and writes DynamoDB: PynamoDB makes a client per model, on the
# model's first request; the models its route uses (``FIRST_EVENT_MODELS``).
from skydag.store import models
for name in json.loads(sys.argv[3]):
    getattr(models, name)._get_connection().connection.client
ready = time.perf_counter()
print(json.dumps({"import_ms": (imported - started) * 1000, "ready_ms": (ready - started) * 1000}))
"""


def _run(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, *args], check=True, cwd=ROOT, env=FUNCTION_ENV, capture_output=True
    )
    return done.stdout.decode()


def _probe_args(name: str) -> list[str]:
    return [name, json.dumps(FIRST_EVENT_MODULES[name]), json.dumps(FIRST_EVENT_MODELS[name])]


def handler_ready(name: str, repeat: int) -> dict[str, float]:
    """Median import and ready times (ms) of ``name`` over ``repeat`` fresh processes."""
    samples = [json.loads(_run(["-c", _PROBE, *_probe_args(name)])) for _ in range(repeat)]
    return {
        "import_ms": statistics.median(s["import_ms"] for s in samples),
        "ready_ms": statistics.median(s["ready_ms"] for s in samples),
    }


def heaviest_imports(name: str, top: int = 6) -> list[tuple[str, float]]:
    """The top-level packages whose imports cost ``name`` the most until it is ready for
    its first event (``-X importtime``, self time summed per package), in ms."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _PROBE, *_probe_args(name)],
        check=True,
        cwd=ROOT,
        env=FUNCTION_ENV,
        capture_output=True,
    )
    per_package: Counter[str] = Counter()
    for line in done.stderr.decode().splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        fields = line.removeprefix("import time:").split("|")
        if not fields[0].strip().isdigit():
            continue  # the header line
        package = fields[2].strip().split(".")[0]
        per_package[package] += int(fields[0]) / 1000
    return per_package.most_common(top)


def asset_parts(top: int = 8) -> dict[str, Any] | None:
    """The built Lambda asset (``make synth``): total size and its largest top-level parts."""
    asset = ROOT / "build" / "lambda-asset"
    if not asset.is_dir():
        return None
    sizes: Counter[str] = Counter()
    files = 0
    for path in asset.rglob("*"):
        if path.is_file():
            files += 1
            part = path.relative_to(asset).parts[0]
            if part.endswith(".dist-info"):
                part = part.split("-")[0]
            sizes[part] += path.stat().st_size
    return {
        "mb": sum(sizes.values()) / 1e6,
        "files": files,
        "largest": [(part, size / 1e6) for part, size in sizes.most_common(top)],
    }


def measure(repeat: int = 5) -> dict[str, Any]:
    """Every handler's figures, the asset's parts and the target."""
    handlers: dict[str, Any] = {}
    for name in HANDLERS:
        figures = handler_ready(name, repeat)
        handlers[name] = {
            "import_ms": max(0.0, figures["import_ms"]),
            "ready_ms": max(0.0, figures["ready_ms"]),
            "met": figures["ready_ms"] <= TARGET_MS,
            "heaviest": heaviest_imports(name),
        }
    return {
        "target_ms": TARGET_MS,
        "handlers": handlers,
        "asset": asset_parts(),
    }


def report_lines(figures: dict[str, Any]) -> list[str]:
    """The cold-start section of docs/benchmarks.md."""
    lines = [
        "## Cold start: each handler ready for its first event\n",
        f"Median of fresh processes with the function's environment: the handler's import "
        f"(Lambda's init), then its service, the modules its first event imports and the "
        f"clients every first event makes (DynamoDB's, one per model it uses; S3's for the DAG "
        "loader; the others "
        f"are made on their first call) (`benchmarks/cold_start.py`). Wall time: other work "
        f"on the machine counts. Target ≤ {TARGET_MS:.0f} ms.\n",
        "| handler | import | ready for the first event | ≤ 400 ms "
        "| heaviest imports until ready (ms, self) |",
        "|---|--:|--:|---|---|",
    ]
    for name, f in figures["handlers"].items():
        heaviest = ", ".join(f"{package} {ms:.0f}" for package, ms in f["heaviest"])
        verdict = "MET" if f["met"] else "NOT MET"
        lines.append(
            f"| {name} | {f['import_ms']:.0f} ms | {f['ready_ms']:.0f} ms | {verdict} | "
            f"{heaviest} |"
        )
    asset = figures["asset"]
    if asset is None:
        lines.append("\nLambda asset: not built here (`make synth` builds it).")
    else:
        parts = ", ".join(f"{part} {mb:.1f} MB" for part, mb in asset["largest"])
        lines.append(
            f"\nLambda asset: {asset['mb']:.1f} MB unzipped in {asset['files']} files; "
            f"largest parts: {parts}."
        )
    return lines


if __name__ == "__main__":
    print("\n".join(report_lines(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5))))
