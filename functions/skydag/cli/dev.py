"""`skydag dev run`: one DAG, one run, end to end on the local cloud (``skydag.localcloud``):
the file goes into the stack's bucket, the production handlers load it, a command or a
signal starts the run, and every task runs its `local:` block or a stand-in, with the
services' native events. While it runs, its endpoint answers the CLI and the AWS CLI.
`skydag dev up`: the same local cloud as a long-running endpoint (``skydag.dev.up``)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from skydag.engine.models import DagRun, RunType, TaskInstance
from skydag.engine.scheduler import readiness
from skydag.engine.states import FINISHED_RUN_STATES, RunState, TaskState
from skydag.localcloud.hooks import Delivery
from skydag.signals.patterns import matches
from skydag.sources import SCHEDULE_TICK
from skydag.spec.models import DagSpec

if TYPE_CHECKING:
    from skydag.localcloud.cloud import LocalCloud
    from skydag.store.repositories import Repositories

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C
# Seconds with nothing in flight before a run that cannot move is reported as stuck.
STUCK_AFTER = 3.0
# How long the loader and the scheduler get to load the file and create the run.
SETUP_TIMEOUT = 60.0


class UsageError(Exception):
    """Bad command-line input: reported on stderr with exit code 2."""


@dataclass(frozen=True)
class TimedSignal:
    """``--signal FILE@SECONDS``: put this event that many seconds after the run starts."""

    path: str
    event: dict[str, Any]
    after: float


def register(commands: Any) -> None:
    dev: argparse.ArgumentParser = commands.add_parser(
        "dev", help="the local cloud (no AWS account needed)"
    )
    sub = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="load a DAG, start one run and follow it to the end")
    run.add_argument("file", help="the DAG file (YAML)")
    run.add_argument("--conf", help="the run's conf as a JSON object", default=None)
    run.add_argument(
        "--signal",
        action="append",
        default=[],
        metavar="FILE[@SECONDS]",
        help="an EventBridge event (JSON file): without @SECONDS it starts the run; with "
        "@SECONDS it is put that long after the run starts (repeatable)",
    )
    run.add_argument("--output", choices=("text", "json"), default="text")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    run.add_argument("--log-dir", help="where task logs go (default: a temporary folder)")
    run.add_argument(
        "--signal-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long a run whose tasks wait for a signal nobody has sent is kept going, "
        "for a signal sent by hand (default 30)",
    )
    run.add_argument(
        "--port", type=int, default=0, help="the local endpoint's port (default: any free one)"
    )
    run.set_defaults(handler=run_command)
    up = sub.add_parser(
        "up",
        help="serve a local AWS endpoint with skydag's stack and handlers (until Ctrl-C)",
    )
    up.add_argument(
        "--port", type=int, default=None, help="the endpoint's port (default 5555; 0: any free)"
    )
    up.add_argument(
        "--ui-port",
        type=int,
        default=None,
        help="the web console's port on 127.0.0.1 (default 8765, or any free one with "
        "--port 0; -1: no console)",
    )
    up.add_argument("--dags", help="a folder whose DAG files are uploaded at start")
    up.add_argument("--log-dir", help="where task logs go (default: a temporary folder)")
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
        start_event, later = _read_signals(args.signal, spec)
    except UsageError as error:
        print(f"skydag dev run: error: {error}", file=sys.stderr)
        return EXIT_INVALID
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="skydag-logs-"))
    try:
        run, tasks = execute(
            spec,
            data=Path(args.file).read_bytes(),
            conf=conf,
            event=start_event,
            later_signals=later,
            log_dir=log_dir,
            timeout=args.timeout,
            progress=sys.stderr,
            port=args.port,
            signal_wait=args.signal_wait,
        )
    except DevRunError as error:
        print(f"skydag dev run: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        # The local cloud has stopped every job on its way out.
        print("skydag dev run: interrupted; every job was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    if run.state not in FINISHED_RUN_STATES:
        waiting = [ti.task_id for ti in tasks if ti.state is TaskState.WAITING]
        why = f"tasks wait for a signal: {', '.join(waiting)}" if waiting else "timed out"
        print(f"skydag dev run: the run did not finish ({why})", file=sys.stderr)
    if args.output == "json":
        from skydag.cli.render import run_to_json

        print(json.dumps(run_to_json(run, tasks), indent=2))
    else:
        from skydag.cli.render import run_table

        print(run_table(run, tasks))
        print(f"task logs: {log_dir} (local cloud log: {log_dir / LOCAL_CLOUD_LOG})")
    return EXIT_OK if run.state is RunState.SUCCESS else EXIT_FAILED


def up_command(args: argparse.Namespace) -> int:
    import signal
    import threading

    from skydag.console.server import DEFAULT_PORT as CONSOLE_PORT
    from skydag.dev.up import DEFAULT_PORT, serve

    dags_dir = Path(args.dags) if args.dags else None
    if dags_dir is not None and not dags_dir.is_dir():
        print(f"skydag dev up: error: --dags {args.dags}: not a folder", file=sys.stderr)
        return EXIT_INVALID
    stop = threading.Event()
    # Ctrl-C and `kill` both end `dev up` cleanly (jobs killed, the port freed), also when
    # started in the background, where a shell leaves SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve(
            stop,
            port=DEFAULT_PORT if args.port is None else args.port,
            dags_dir=dags_dir,
            log_dir=Path(args.log_dir) if args.log_dir else None,
            console_port=_console_port(args.ui_port, args.port, CONSOLE_PORT),
        )
    except KeyboardInterrupt:
        stop.set()  # Ctrl-C is how `dev up` ends: not an error
    except OSError as error:  # the port is taken, most often
        print(f"skydag dev up: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _console_port(ui_port: int | None, port: int | None, default: int) -> int | None:
    """``--ui-port``: -1 is none; unset is the default, or a free port beside ``--port 0``
    (tests and parallel environments must not contend for one fixed port)."""
    if ui_port is None:
        return 0 if port == 0 else default
    return None if ui_port < 0 else ui_port


LOCAL_CLOUD_LOG = "local-cloud.log"


class DevRunError(Exception):
    """The local cloud could not load the file or start the run; the message says why."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def execute(
    spec: DagSpec,
    *,
    data: bytes,
    conf: dict[str, Any] | None,
    event: dict[str, Any] | None,
    log_dir: Path,
    timeout: float,
    progress: TextIO | None,
    later_signals: tuple[TimedSignal, ...] = (),
    port: int = 0,
    signal_wait: float = 30.0,
) -> tuple[DagRun, list[TaskInstance]]:
    """Upload the file, start a run by a command (or by ``event``) and step the local cloud
    until the run ends; returns the run and its tasks (in DAG order)."""
    from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions

    log_dir.mkdir(parents=True, exist_ok=True)
    with (
        (log_dir / LOCAL_CLOUD_LOG).open("a", encoding="utf-8") as cloud_log,
        LocalCloud(
            LocalCloudOptions(
                port=port, log_dir=log_dir, log=cloud_log, tap=_without_schedule_ticks
            )
        ) as cloud,
    ):
        if progress is not None:
            print(
                f"local cloud at {cloud.endpoint_url} (the CLI and the AWS CLI reach it "
                "with --endpoint-url while the run lasts)",
                file=progress,
            )
        repos = _repositories(cloud)
        _load(cloud, repos, spec, data)
        started = time.monotonic()
        run_id = _start(cloud, spec, conf, event)
        if progress is not None:
            cloud.task_listeners.append(_progress_printer(progress, started, run_id))
        if not cloud.run_until(
            lambda: repos.runs.find(spec.dag, run_id) is not None, timeout=SETUP_TIMEOUT
        ):
            raise DevRunError(
                f"the scheduler did not create run {spec.dag}/{run_id} "
                f"(see {log_dir / LOCAL_CLOUD_LOG})"
            )
        if progress is not None:
            print(f"run {spec.dag}/{run_id} started", file=progress)
        run = _follow(
            cloud=cloud,
            repos=repos,
            spec=spec,
            run_id=run_id,
            later=later_signals,
            started=started,
            timeout=timeout,
            progress=progress,
            signal_wait=signal_wait,
        )
        order = {t: i for i, t in enumerate(spec.topological_order())}
        tasks = sorted(
            (_explained(spec, ti) for ti in repos.tasks.list_for_run(spec.dag, run.run_id)),
            key=lambda ti: order.get(ti.task_id, 0),
        )
        return run, tasks


def _repositories(cloud: LocalCloud) -> Repositories:
    from skydag.store.models import bind_models
    from skydag.store.repositories import Repositories

    bind_models(cloud.settings)
    return Repositories()


def _load(cloud: LocalCloud, repos: Repositories, spec: DagSpec, data: bytes) -> None:
    """Upload the file under the DAG prefix and wait for the loader to load it."""
    settings = cloud.settings
    key = f"{settings.dag_prefix}{spec.dag}.yaml"
    cloud.client("s3").put_object(Bucket=settings.dag_bucket, Key=key, Body=data)

    def settled() -> bool:
        head = repos.dags.find(spec.dag)
        return head is not None and (head.current_version is not None or bool(head.import_error))

    if not cloud.run_until(settled, timeout=SETUP_TIMEOUT):
        raise DevRunError(f"the DAG loader did not load s3://{settings.dag_bucket}/{key}")
    head = repos.dags.get(spec.dag)
    if head.current_version is None:
        raise DevRunError(f"s3://{settings.dag_bucket}/{key}: {head.import_error}", EXIT_INVALID)


def _start(
    cloud: LocalCloud, spec: DagSpec, conf: dict[str, Any] | None, event: dict[str, Any] | None
) -> str:
    """Put the starting signal, or a "Trigger DAG" command; returns the run's id."""
    from skydag.engine.scheduler import make_run_id
    from skydag.wiring import COMMAND_SOURCE

    if event is not None:
        event_id = cloud.put_signal(_entry(event))
        return make_run_id(RunType.SIGNAL, at=datetime.now(UTC), event_id=event_id)
    run_id = make_run_id(RunType.MANUAL, at=datetime.now(UTC))
    detail: dict[str, Any] = {"dag": spec.dag, "run_id": run_id}
    if conf:
        detail["conf"] = conf
    cloud.put_signal(
        {"Source": COMMAND_SOURCE, "DetailType": "Trigger DAG", "Detail": json.dumps(detail)}
    )
    return run_id


def _entry(event: dict[str, Any]) -> dict[str, Any]:
    """An event file as a PutEvents entry (on the skydag bus)."""
    return {
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(event.get("detail") or {}),
        "Resources": list(event.get("resources") or []),
    }


def _follow(
    *,
    cloud: LocalCloud,
    repos: Repositories,
    spec: DagSpec,
    run_id: str,
    later: tuple[TimedSignal, ...],
    started: float,
    timeout: float,
    progress: TextIO | None,
    signal_wait: float,
) -> DagRun:
    """Step until the run ends, putting the timed signals when due; a run that nothing can
    move any more (nothing in flight, no timer, no signal to come) ends the wait."""
    pending = sorted(later, key=lambda signal: signal.after)
    deadline = started + timeout
    idle_since: float | None = None
    hinted = False
    while time.monotonic() < deadline:
        now = time.monotonic()
        while pending and now - started >= pending[0].after:
            signal = pending.pop(0)
            event_id = cloud.put_signal(_entry(signal.event))
            if progress is not None:
                print(
                    f"  +{now - started:7.2f}s  signal {signal.path} put ({event_id})",
                    file=progress,
                )
        if cloud.step():
            idle_since = None
            continue
        run = repos.runs.get(spec.dag, run_id)
        if run.state in FINISHED_RUN_STATES:
            return run
        if cloud.busy() or pending or cloud.schedules.pending_timers():
            idle_since = None
        else:
            idle_since = idle_since or now
            waiting = [
                ti.task_id
                for ti in repos.tasks.list_for_run(spec.dag, run_id)
                if ti.state is TaskState.WAITING
            ]
            if waiting and not hinted and progress is not None:
                hinted = True
                print(
                    f"  waiting up to {signal_wait:g}s for a signal ({', '.join(waiting)}): "
                    "put it with "
                    f"`skydag signal ... --endpoint-url {cloud.endpoint_url}` or "
                    f"`aws events put-events --endpoint-url {cloud.endpoint_url} ...`",
                    file=progress,
                )
            patience = signal_wait if waiting else STUCK_AFTER
            if now - idle_since >= patience:
                return run
        time.sleep(0.05)
    return repos.runs.get(spec.dag, run_id)


def _explained(spec: DagSpec, ti: TaskInstance) -> TaskInstance:
    """A task that never started says why: which upstreams, under which trigger rule."""
    if ti.state is not TaskState.PENDING:
        return ti
    return replace(ti, reason=f"not started: {readiness(spec, ti)}")


def _progress_printer(stream: TextIO, started: float, run_id: str) -> Any:
    def show(old: TaskInstance | None, new: TaskInstance) -> None:
        if new.run_id != run_id:
            return
        if (old is None and new.try_number == 0) or (
            old is not None and old.state == new.state and old.try_number == new.try_number
        ):
            return  # creation of pending tasks and non-state updates are noise here
        elapsed = time.monotonic() - started
        line = f"  +{elapsed:7.2f}s  {new.task_id:<24} {new.state.value:<15}"
        if new.try_number:
            line += f" try {new.try_number}"
        if new.exit_code is not None and new.state.value in ("failed", "up_for_retry"):
            line += f"  exit code {new.exit_code}"
        if new.reason and new.state.value not in ("pending", "queued"):
            line += f"  {new.reason}"
        print(line.rstrip(), file=stream, flush=True)

    return show


def _without_schedule_ticks(delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
    """`dev run` runs the one run it starts: the ticks of the DAG's schedule (the loader
    puts one when a scheduled DAG loads) are not delivered."""
    payload = delivery.payload
    event = getattr(payload, "event", None)
    if isinstance(event, dict) and event.get("detail-type") == SCHEDULE_TICK:
        return []
    return [(0.0, delivery)]


def _parse_conf(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    from skydag.limits import LimitError, loads_bounded

    try:
        value = loads_bounded(text, "--conf")  # size and nesting first: the decoder recurses
    except LimitError as error:
        raise UsageError(str(error)) from error
    except json.JSONDecodeError as error:
        raise UsageError(f"--conf is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise UsageError("--conf must be a JSON object")
    return value


def _read_event(path: str) -> dict[str, Any]:
    from skydag.limits import LimitError, loads_bounded

    try:
        event = loads_bounded(Path(path).read_bytes(), f"--signal {path}")
    except LimitError as error:
        raise UsageError(str(error)) from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"--signal {path}: {error}") from error
    if not isinstance(event, dict):
        raise UsageError(f"--signal {path}: an event must be a JSON object")
    for key in ("source", "detail-type"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise UsageError(f"--signal {path}: '{key}' must be a non-empty string")
    if not isinstance(event.setdefault("detail", {}), dict):
        raise UsageError(f"--signal {path}: 'detail' must be a JSON object")
    event.setdefault("id", str(uuid.uuid4()))
    return event


_TIMED = re.compile(r"^(?P<path>.+)@(?P<seconds>\d+(\.\d+)?)$")


def _read_signals(
    values: list[str], spec: DagSpec
) -> tuple[dict[str, Any] | None, tuple[TimedSignal, ...]]:
    """The starting signal (a ``--signal FILE``) and the timed ones (``FILE@SECONDS``)."""
    start: dict[str, Any] | None = None
    later: list[TimedSignal] = []
    for value in values:
        timed = _TIMED.match(value)
        if timed is not None and not Path(value).exists():
            path = timed.group("path")
            later.append(TimedSignal(path, _read_event(path), float(timed.group("seconds"))))
            continue
        if start is not None:
            raise UsageError(
                f"--signal {value}: only one signal starts the run; put later ones with "
                "FILE@SECONDS"
            )
        start = _read_event(value)
        if spec.on and not any(matches(pattern, start) for pattern in spec.on):
            raise UsageError(
                f"--signal {value}: the event matches none of DAG '{spec.dag}' on: patterns"
            )
    return start, tuple(later)


__all__ = ["RunState", "TimedSignal", "execute", "register", "run_command", "up_command"]
