"""`skydag trigger`, `skydag signal` and `skydag backfill`: events that start runs.

``trigger`` picks the run id itself when none is given (``manual__<UTC time>``, the form
the scheduler gives manual runs), so ``--wait`` knows which run to follow; it then polls
the run until it ends, printing task changes on stderr as `dev run` does.

``signal`` puts a user event on the skydag bus, exactly as a producer would with
PutEvents: the DAGs and tasks whose patterns match react to it. ``backfill`` works out the
runs it will create, from the DAG's schedule, before asking the scheduler for them.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from skydag.cli import remote
from skydag.cli.remote import (
    BACKFILL_DAG,
    COMMAND_SOURCE,
    EXIT_FAILED,
    EXIT_OK,
    TRIGGER_DAG,
    CliError,
    Remote,
    UsageError,
    command_sent,
    parse_json_object,
    print_json,
    require_dag,
)
from skydag.engine.backfill import MAX_BACKFILL_ACTIVE_RUNS, Reprocess
from skydag.limits import RUN_ID_PATTERN, LimitError, check_run_id, loads_bounded

if TYPE_CHECKING:
    from skydag.engine.models import DagRun

# The scheduler creates a run within seconds of the command; a minute without it means
# the command was refused (the scheduler logs why) or never delivered.
RUN_CREATION_GRACE = 60.0
DEFAULT_TIMEOUT = 3600.0
DEFAULT_INTERVAL = 2.0


def register(commands: Any) -> None:
    location, output = remote.location_options(), remote.output_options()

    trigger: argparse.ArgumentParser = commands.add_parser(
        "trigger",
        parents=[location, output],
        help="start a run of a DAG",
        description="Ask the scheduler to start a run of a DAG (with --wait: follow it to "
        "the end; exit 0 when it succeeds, 1 when it fails, is cancelled or times out).",
    )
    trigger.add_argument("dag", help="the DAG id")
    trigger.add_argument("--conf", help="the run's conf, a JSON object (overrides params)")
    trigger.add_argument(
        "--run-id",
        help="the run's id (default: manual__<UTC time>); one run per id; 1 to 250 "
        f"letters, digits and _ . : + - ({RUN_ID_PATTERN})",
    )
    trigger.add_argument("--wait", action="store_true", help="follow the run until it ends")
    trigger.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds --wait waits (default {DEFAULT_TIMEOUT:g})",
    )
    trigger.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help=f"seconds between two looks at the run (default {DEFAULT_INTERVAL:g})",
    )
    trigger.set_defaults(handler=remote.handler("trigger", trigger_command))

    signal = commands.add_parser(
        "signal",
        parents=[location, output],
        help="put a signal (an event) on the skydag bus",
        description="Put an event on the skydag bus; DAGs (on:) and tasks (start_on, "
        "restart_on, stop_on, wait) whose patterns match it react.",
    )
    signal.add_argument("--source", help="the event's source (not aws.* nor skydag*)")
    signal.add_argument("--detail-type", help="the event's detail-type")
    given = signal.add_mutually_exclusive_group()
    given.add_argument("--detail", help="the event's detail, a JSON object (default {})")
    given.add_argument(
        "--file",
        help="an EventBridge event (JSON) giving source, detail-type, detail and resources; "
        "--source and --detail-type override it",
    )
    signal.set_defaults(handler=remote.handler("signal", signal_command))

    backfill = commands.add_parser(
        "backfill",
        parents=[location, output],
        help="create the runs of past schedule intervals",
        description="Ask the scheduler for a run of each logical date the DAG's schedule "
        "gives in [--start, --end] (none before its start_date). Dates that already have "
        "a run are skipped unless --reprocess says otherwise; a date whose last run is "
        "still queued or running is always skipped. Beyond max_active_runs (the DAG's, "
        "and --max-active-runs) runs wait their turn, oldest first.",
    )
    backfill.add_argument("dag", help="the DAG id (it must have a schedule)")
    backfill.add_argument(
        "--start", required=True, help="first logical date: ISO date or time (UTC unless given)"
    )
    backfill.add_argument("--end", required=True, help="last logical date (inclusive)")
    backfill.add_argument(
        "--reprocess",
        choices=[item.value for item in Reprocess],
        default=Reprocess.NONE.value,
        help="dates that already have a run: none (skip them, the default), failed (rerun "
        "those whose last run failed), all (rerun every one); a rerun is a new run",
    )
    backfill.add_argument(
        "--dry-run",
        action="store_true",
        help="print the dates that would be created and skipped; change nothing",
    )
    backfill.add_argument(
        "--max-active-runs",
        type=_run_limit,
        default=None,
        metavar="N",
        help="at most N of this backfill's runs running at once (1 to 1000; default: only "
        "the DAG's max_active_runs)",
    )
    backfill.set_defaults(handler=remote.handler("backfill", backfill_command))


# --- trigger -------------------------------------------------------------------------------


def trigger_command(args: argparse.Namespace, skydag: Remote) -> int:
    conf = parse_json_object(args.conf, "--conf") if args.conf is not None else {}
    if args.run_id is not None:
        try:
            check_run_id(args.run_id, "--run-id")
        except LimitError as error:
            raise UsageError(str(error)) from error
    if args.wait and (args.timeout <= 0 or args.interval <= 0):
        raise UsageError("--timeout and --interval must be positive")
    head = require_dag(skydag, args.dag)
    if head.paused:
        print(
            f"note: DAG {args.dag} is paused: the run waits, queued, until it is unpaused",
            file=sys.stderr,
        )
    sent = request_run(skydag, args.dag, conf, args.run_id)
    run_id = sent["detail"]["run_id"]
    if not args.wait:
        if args.output == "json":
            print_json(sent)
        else:
            print(
                f"asked the scheduler to start run {args.dag}/{run_id} (event {sent['event_id']})"
            )
        return EXIT_OK
    return _wait_and_show(args, skydag, run_id)


def request_run(
    skydag: Remote, dag_id: str, conf: dict[str, Any], run_id: str | None = None
) -> dict[str, Any]:
    """Ask the scheduler to start a run of a loaded DAG; what was sent (its detail names
    the run id, ``manual__<UTC time>`` unless given). CliError when the run id is taken."""
    require_dag(skydag, dag_id)
    if run_id is not None:
        existing = skydag.repos.runs.find(dag_id, run_id)
        if existing is not None:
            raise CliError(
                f"run {dag_id}/{run_id} already exists ({existing.state.value}); "
                "a run id names one run: choose another"
            )
    detail = {"dag": dag_id, "conf": conf, "run_id": run_id or _manual_run_id()}
    return command_sent(skydag, TRIGGER_DAG, detail)


def _manual_run_id() -> str:
    from skydag.engine.models import RunType
    from skydag.engine.scheduler import make_run_id

    return make_run_id(RunType.MANUAL, at=datetime.now(UTC))


def _wait_and_show(args: argparse.Namespace, skydag: Remote, run_id: str) -> int:
    from skydag.cli.render import run_table, run_to_json
    from skydag.cli.runs import run_tasks
    from skydag.engine.states import FINISHED_RUN_STATES, RunState

    print(f"run {args.dag}/{run_id} requested; following it", file=sys.stderr)
    run = follow_run(
        skydag,
        args.dag,
        run_id,
        timeout=args.timeout,
        interval=args.interval,
        progress=sys.stderr,
    )
    tasks = run_tasks(skydag, run)
    if run.state not in FINISHED_RUN_STATES:
        print(
            f"skydag trigger: timed out after {args.timeout:g}s; "
            f"run {args.dag}/{run_id} is still {run.state.value}",
            file=sys.stderr,
        )
    if args.output == "json":
        print_json(run_to_json(run, tasks))
    else:
        print(run_table(run, tasks))
    return EXIT_OK if run.state is RunState.SUCCESS else EXIT_FAILED


def follow_run(
    skydag: Remote,
    dag_id: str,
    run_id: str,
    *,
    timeout: float,
    interval: float,
    progress: TextIO,
) -> DagRun:
    """Poll a run until it ends or ``timeout`` passes; print each task change.

    Raises CliError when the run does not appear (the scheduler refused the command).
    """
    from skydag.engine.states import FINISHED_RUN_STATES, TaskState

    started = time.monotonic()
    seen: dict[str, tuple[TaskState, int]] = {}
    run_state: str | None = None
    while True:
        elapsed = time.monotonic() - started
        run = skydag.repos.runs.find(dag_id, run_id)
        if run is None:
            if elapsed >= min(timeout, RUN_CREATION_GRACE):
                raise CliError(
                    f"the scheduler has not created run {dag_id}/{run_id} after "
                    f"{elapsed:.0f}s: it may have refused the command (its logs say why)"
                )
        else:
            if run.state.value != run_state:
                run_state = run.state.value
                print(f"  +{elapsed:7.2f}s  run {run_state}", file=progress, flush=True)
            for ti in skydag.repos.tasks.list_for_run(dag_id, run_id):
                now = (ti.state, ti.try_number)
                before = seen.get(ti.task_id)
                seen[ti.task_id] = now
                if before == now or (before is None and ti.state is TaskState.PENDING):
                    continue  # unchanged, or just created: noise
                line = f"  +{elapsed:7.2f}s  {ti.task_id:<24} {ti.state.value:<15}"
                if ti.try_number:
                    line += f" try {ti.try_number}"
                if ti.reason and ti.state not in (TaskState.PENDING, TaskState.QUEUED):
                    line += f"  {ti.reason[:100]}"
                print(line.rstrip(), file=progress, flush=True)
            if run.state in FINISHED_RUN_STATES or elapsed >= timeout:
                return run
        remote.pause(interval)


# --- signal --------------------------------------------------------------------------------


def signal_command(args: argparse.Namespace, skydag: Remote) -> int:
    event = _read_event(args.file) if args.file else {}
    source = args.source or event.get("source")
    detail_type = args.detail_type or event.get("detail-type")
    if args.detail is not None:
        detail: Any = parse_json_object(args.detail, "--detail")
    else:
        detail = event.get("detail", {})
    if not isinstance(source, str) or not source:
        raise UsageError("--source is required (or a --file with a 'source')")
    if not isinstance(detail_type, str) or not detail_type:
        raise UsageError("--detail-type is required (or a --file with a 'detail-type')")
    if not isinstance(detail, dict):
        raise UsageError(f"--file {args.file}: 'detail' must be a JSON object")
    resources = event.get("resources") or []
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise UsageError(f"--file {args.file}: 'resources' must be a list of strings")
    _check_source(source)
    event_id = skydag.put_event(source, detail_type, detail, resources=resources)
    bus = skydag.settings.event_bus
    if args.output == "json":
        print_json(
            {"event_id": event_id, "event_bus": bus, "source": source, "detail-type": detail_type}
        )
    else:
        print(f"put event {event_id} on bus {bus} (source {source}, detail-type {detail_type})")
    return EXIT_OK


def _read_event(path: str) -> dict[str, Any]:
    try:
        event = loads_bounded(Path(path).read_bytes(), f"--file {path}")
    except LimitError as error:
        raise UsageError(str(error)) from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"--file {path}: {error}") from error
    if not isinstance(event, dict):
        raise UsageError(f"--file {path}: an event must be a JSON object")
    return event


def _check_source(source: str) -> None:
    """Refuse the sources a signal must not use: AWS's own (EventBridge refuses them from
    PutEvents) and skydag's (commands, schedule ticks and notifications)."""
    if source.startswith("aws."):
        raise UsageError(f"source '{source}': aws.* sources are reserved for AWS services")
    if source.startswith("skydag"):
        hint = (
            "use `skydag trigger`, `runs cancel`, `tasks clear|mark`, `dags pause|unpause` "
            "or `backfill` for commands"
            if source == COMMAND_SOURCE
            else "pick your own source, e.g. 'acme.orders'"
        )
        raise UsageError(f"source '{source}' is reserved for skydag itself: {hint}")


# --- backfill ------------------------------------------------------------------------------


def _run_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BACKFILL_ACTIVE_RUNS:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 1 to {MAX_BACKFILL_ACTIVE_RUNS}, not {text!r}"
        )
    return value


def backfill_command(args: argparse.Namespace, skydag: Remote) -> int:
    start, end = parse_moment(args.start, "--start"), parse_moment(args.end, "--end")
    if start > end:
        raise UsageError(f"--start {start.isoformat()} is after --end {end.isoformat()}")
    reprocess = Reprocess(args.reprocess)
    # The backfill's id names the runs it reruns dates under: chosen here, so the run ids
    # printed are the ones the scheduler creates.
    backfill_id = secrets.token_hex(4)
    plan = plan_backfill(skydag, args.dag, start, end, reprocess=reprocess, backfill_id=backfill_id)
    create, skip = plan.create_dates, plan.skip_dates
    if args.dry_run:
        if args.output == "json":
            print_json({"dag": args.dag, "create": create, "skip": skip})
        else:
            _print_dates("would create", create)
            _print_dates("would skip (they have a run)", skip)
        return EXIT_OK
    if not create:
        print(
            f"nothing to create: every date of the range already has a run ({len(skip)} "
            "skipped); --reprocess failed or all reruns them",
            file=sys.stderr,
        )
        if args.output == "json":
            print_json({"dag": args.dag, "create": [], "skip": skip, "runs": []})
        return EXIT_OK
    sent = request_backfill(
        skydag,
        args.dag,
        start,
        end,
        reprocess=reprocess,
        backfill_id=backfill_id,
        max_active_runs=args.max_active_runs,
    )
    run_ids = plan.run_ids
    if args.output == "json":
        print_json({**sent, "create": create, "skip": skip, "runs": run_ids})
    else:
        plural = "" if len(run_ids) == 1 else "s"
        print(
            f"asked the scheduler for {len(run_ids)} backfill run{plural} of DAG {args.dag} "
            f"(event {sent['event_id']}):"
        )
        for run_id in run_ids:
            print(f"  {run_id}")
        _print_dates("skipped (they have a run)", skip)
    return EXIT_OK


def _print_dates(title: str, dates: list[str]) -> None:
    print(f"{title}: {len(dates)}")
    for date in dates:
        print(f"  {date}")


@dataclass(frozen=True)
class BackfillPreview:
    """What a backfill of a range would do, as the scheduler will decide it."""

    create_dates: list[str]
    skip_dates: list[str]
    run_ids: list[str]


def plan_backfill(
    skydag: Remote,
    dag_id: str,
    start: datetime,
    end: datetime,
    *,
    reprocess: Reprocess = Reprocess.NONE,
    backfill_id: str | None = None,
) -> BackfillPreview:
    """The very decision the scheduler makes on the command (``RunLifecycle.backfill``),
    on the runs as they are now. CliError when the range holds no logical date."""
    from skydag.cli.render import iso
    from skydag.service.runs import backfill_plan

    head = require_dag(skydag, dag_id)
    assert head.current_version is not None
    spec = skydag.repos.dags.load_spec(dag_id, head.current_version)
    try:
        plan = backfill_plan(
            spec,
            skydag.repos.runs,
            start,
            end,
            reprocess=reprocess,
            backfill_id=backfill_id or secrets.token_hex(4),
        )
    except ValueError as error:
        raise CliError(str(error)) from error
    if not plan.create and not plan.skip:
        raise CliError(
            f"no interval of schedule '{spec.schedule}' has a logical date between "
            f"{start.isoformat()} and {end.isoformat()}: nothing to backfill"
        )
    return BackfillPreview(
        [str(iso(planned.interval.start)) for planned in plan.create],
        [str(iso(interval.start)) for interval in plan.skip],
        [planned.run_id for planned in plan.create],
    )


def request_backfill(
    skydag: Remote,
    dag_id: str,
    start: datetime,
    end: datetime,
    *,
    reprocess: Reprocess = Reprocess.NONE,
    backfill_id: str,
    max_active_runs: int | None = None,
) -> dict[str, Any]:
    """Ask the scheduler for the runs of [start, end]; what was sent."""
    detail: dict[str, Any] = {
        "dag": dag_id,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "reprocess": reprocess.value,
        "backfill_id": backfill_id,
    }
    if max_active_runs is not None:
        detail["max_active_runs"] = max_active_runs
    return command_sent(skydag, BACKFILL_DAG, detail)


def parse_moment(text: str, flag: str) -> datetime:
    """An ISO date or date-time; naive ones are UTC, as the scheduler reads them."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise UsageError(
            f"{flag} is not an ISO date or time (e.g. 2026-11-01 or 2026-11-01T06:00:00Z): {text!r}"
        ) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
