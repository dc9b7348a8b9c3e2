"""`skydag dev run`: one DAG, one run, end to end on the embedded environment (moto as a
server on a loopback port, so the jobs reach it too). `skydag dev up`: that environment
as a long-running endpoint with the stack's resources and the production handlers
(``skydag.dev.up``)."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from skydag.engine.models import DagRun, RunType, TaskInstance
from skydag.engine.scheduler import readiness
from skydag.engine.states import FINISHED_RUN_STATES, RunState, TaskState
from skydag.signals.patterns import matches
from skydag.spec.models import DagSpec

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported on stderr with exit code 2."""


def register(commands: Any) -> None:
    dev: argparse.ArgumentParser = commands.add_parser(
        "dev", help="the embedded environment (no AWS account needed)"
    )
    sub = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="load a DAG, start one run and follow it to the end")
    run.add_argument("file", help="the DAG file (YAML)")
    run.add_argument("--conf", help="the run's conf as a JSON object", default=None)
    run.add_argument("--signal", help="an EventBridge event (JSON file) that starts the run")
    run.add_argument("--output", choices=("text", "json"), default="text")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    run.add_argument("--log-dir", help="where task logs go (default: a temporary folder)")
    run.set_defaults(handler=run_command)
    up = sub.add_parser(
        "up",
        help="serve a local AWS endpoint with skydag's stack and handlers (until Ctrl-C)",
    )
    up.add_argument(
        "--port", type=int, default=None, help="the endpoint's port (default 5555; 0: any free)"
    )
    up.add_argument("--dags", help="a folder whose DAG files are uploaded at start")
    up.set_defaults(handler=up_command)


def run_command(args: argparse.Namespace) -> int:
    from skydag.spec.loader import DagFileError, load_dag_file

    try:
        spec = load_dag_file(args.file)
    except DagFileError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    try:
        conf = _parse_conf(args.conf)
        event = _read_signal(args.signal, spec) if args.signal else None
    except UsageError as error:
        print(f"skydag dev run: error: {error}", file=sys.stderr)
        return EXIT_INVALID
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="skydag-logs-"))
    data = Path(args.file).read_bytes()
    run, tasks = execute(
        spec,
        source=f"file://{Path(args.file).resolve()}",
        sha256=hashlib.sha256(data).hexdigest(),
        conf=conf,
        event=event,
        log_dir=log_dir,
        timeout=args.timeout,
        progress=sys.stderr,
    )
    if run.state not in FINISHED_RUN_STATES:
        waiting = [ti.task_id for ti in tasks if ti.state is TaskState.WAITING]
        why = f"tasks wait for a signal: {', '.join(waiting)}" if waiting else "timed out"
        print(f"skydag dev run: the run cannot finish here ({why})", file=sys.stderr)
    if args.output == "json":
        from skydag.cli.render import run_to_json

        print(json.dumps(run_to_json(run, tasks), indent=2))
    else:
        from skydag.cli.render import run_table

        print(run_table(run, tasks))
        print(f"task logs: {log_dir}")
    return EXIT_OK if run.state is RunState.SUCCESS else EXIT_FAILED


def up_command(args: argparse.Namespace) -> int:
    import threading

    from skydag.dev.up import DEFAULT_PORT, serve

    dags_dir = Path(args.dags) if args.dags else None
    if dags_dir is not None and not dags_dir.is_dir():
        print(f"skydag dev up: error: --dags {args.dags}: not a folder", file=sys.stderr)
        return EXIT_INVALID
    stop = threading.Event()
    try:
        serve(stop, port=DEFAULT_PORT if args.port is None else args.port, dags_dir=dags_dir)
    except KeyboardInterrupt:
        stop.set()  # Ctrl-C is how `dev up` ends: not an error
    except OSError as error:  # the port is taken, most often
        print(f"skydag dev up: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def execute(
    spec: DagSpec,
    *,
    source: str,
    sha256: str | None,
    conf: dict[str, Any] | None,
    event: dict[str, Any] | None,
    log_dir: Path,
    timeout: float,
    progress: TextIO | None,
) -> tuple[DagRun, list[TaskInstance]]:
    """Load the DAG as the loader would, start a run and pump until it ends.

    AWS is moto as a server on a loopback port, not the in-process mock: jobs run as
    subprocesses and reach their task state through its endpoint.
    """
    from skydag.dev.embedded import EmbeddedSkydag
    from skydag.dev.server import aws_environment, moto_server
    from skydag.settings import Settings

    # aws_environment sets this process's os.environ (endpoint, fake credentials, region)
    # because the local target gives jobs os.environ: acceptable for a one-shot command,
    # and restored when the run ends.
    with (
        _shared_botocore_loader(),
        moto_server() as endpoint_url,
        aws_environment(endpoint_url),
    ):
        env = EmbeddedSkydag(Settings(endpoint_url=endpoint_url), log_dir=log_dir)
        try:
            env.repos.dags.save_version(spec, source=source, sha256=sha256, now=env.clock.now())
            started = time.monotonic()
            if progress is not None:
                env.task_listeners.append(_progress_printer(progress, started))
            if event is not None:
                result = env.service.trigger(
                    spec.dag, run_type=RunType.SIGNAL, conf=conf, event=event
                )
            else:
                result = env.service.trigger(spec.dag, run_type=RunType.MANUAL, conf=conf)
            if progress is not None:
                print(f"run {spec.dag}/{result.run.run_id} started", file=progress)
            run = env.run_until_finished(spec.dag, result.run.run_id, timeout=timeout)
            order = {t: i for i, t in enumerate(spec.topological_order())}
            tasks = sorted(
                (_explained(spec, ti) for ti in env.repos.tasks.list_for_run(spec.dag, run.run_id)),
                key=lambda ti: order.get(ti.task_id, 0),
            )
            return run, tasks
        finally:
            env.close()


@contextmanager
def _shared_botocore_loader() -> Iterator[None]:
    """One botocore loader for every session opened meanwhile.

    PynamoDB opens a botocore session per model and connection, and each new session
    reads and parses the service's JSON again (a few tenths of a second each, over a
    second per dev run). That data is static, so sharing it is safe (the test suite does
    the same); the original factory is back when the run ends.
    """
    import botocore.loaders
    import botocore.session

    original = botocore.session.create_loader
    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)
    try:
        yield
    finally:
        botocore.session.create_loader = original


def _explained(spec: DagSpec, ti: TaskInstance) -> TaskInstance:
    """A task that never started says why: which upstreams, under which trigger rule."""
    if ti.state is not TaskState.PENDING:
        return ti
    return replace(ti, reason=f"not started: {readiness(spec, ti)}")


def _progress_printer(stream: TextIO, started: float) -> Any:
    def show(old: TaskInstance | None, new: TaskInstance) -> None:
        if (old is None and new.try_number == 0) or (old is not None and old.state == new.state):
            return  # creation of pending tasks and non-state updates are noise here
        elapsed = time.monotonic() - started
        line = f"  +{elapsed:7.2f}s  {new.task_id:<24} {new.state.value:<15}"
        if new.try_number:
            line += f" try {new.try_number}"
        if new.reason and new.state.value not in ("pending", "queued"):
            line += f"  {new.reason[:100]}"
        print(line.rstrip(), file=stream, flush=True)

    return show


def _parse_conf(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"--conf is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise UsageError("--conf must be a JSON object")
    return value


def _read_signal(path: str, spec: DagSpec) -> dict[str, Any]:
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"--signal {path}: {error}") from error
    if not isinstance(event, dict):
        raise UsageError(f"--signal {path}: an event must be a JSON object")
    event.setdefault("id", str(uuid.uuid4()))
    event.setdefault("detail", {})
    if spec.on and not any(matches(pattern, event) for pattern in spec.on):
        raise UsageError(
            f"--signal {path}: the event matches none of DAG '{spec.dag}' on: patterns"
        )
    return event


__all__ = ["RunState", "execute", "register", "run_command", "up_command"]
