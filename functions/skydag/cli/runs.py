"""`skydag runs list|show|cancel`.

``list`` and ``show`` read the tables; ``show --output json`` is the very object
``skydag dev run --output json`` prints (``render.run_to_json``). ``cancel`` is a command
to the scheduler, which stops the unfinished tasks and cancels their jobs.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from skydag.cli import remote
from skydag.cli.remote import (
    CANCEL_RUN,
    EXIT_OK,
    CliError,
    Remote,
    command_sent,
    format_table,
    print_json,
    short_time,
)

if TYPE_CHECKING:
    from skydag.engine.models import DagRun, TaskInstance

DEFAULT_LIMIT = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def register(commands: Any) -> None:
    location, output = remote.location_options(), remote.output_options()
    runs: argparse.ArgumentParser = commands.add_parser(
        "runs", help="list, show and cancel DAG runs"
    )
    sub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")

    listing = sub.add_parser(
        "list",
        parents=[location, output],
        help="recent runs, newest first",
        description="Runs of one DAG, or of every DAG, newest first (by creation time).",
    )
    listing.add_argument("dag", nargs="?", help="only this DAG's runs")
    listing.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_LIMIT,
        help=f"at most this many runs (default {DEFAULT_LIMIT})",
    )
    listing.set_defaults(handler=remote.handler("runs list", list_command))

    show = sub.add_parser(
        "show",
        parents=[location, output],
        help="a run and its tasks",
        description="A run and its task instances (as `skydag dev run` shows them).",
    )
    show.add_argument("dag", help="the DAG id")
    show.add_argument("run_id", metavar="RUN", help="the run id")
    show.set_defaults(handler=remote.handler("runs show", show_command))

    cancel = sub.add_parser(
        "cancel",
        parents=[location, output],
        help="cancel a run (its running jobs are stopped)",
        description="Ask the scheduler to cancel a run: unfinished tasks are stopped, "
        "their jobs cancelled, and the run ends cancelled.",
    )
    cancel.add_argument("dag", help="the DAG id")
    cancel.add_argument("run_id", metavar="RUN", help="the run id")
    cancel.add_argument(
        "--reason", default="cancelled from the command line", help="recorded on the run"
    )
    cancel.set_defaults(handler=remote.handler("runs cancel", cancel_command))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


# --- reads ---------------------------------------------------------------------------------


def get_run(skydag: Remote, dag_id: str, run_id: str) -> DagRun:
    run = skydag.repos.runs.find(dag_id, run_id)
    if run is None:
        raise CliError(f"run {dag_id}/{run_id} not found (`skydag runs list {dag_id}` lists runs)")
    return run


def run_tasks(skydag: Remote, run: DagRun) -> list[TaskInstance]:
    """The run's task instances in DAG order; in a finished run, a task that never started
    says why (which upstreams, under which trigger rule), as `dev run` shows it."""
    from dataclasses import replace

    from skydag.engine.scheduler import readiness
    from skydag.engine.states import FINISHED_RUN_STATES, TaskState
    from skydag.store.errors import NotFound

    tasks = skydag.repos.tasks.list_for_run(run.dag_id, run.run_id)
    try:
        spec = skydag.repos.dags.load_spec(run.dag_id, run.dag_version)
    except NotFound:
        return sorted(tasks, key=lambda ti: ti.task_id)  # the pinned version is gone
    order = {task_id: i for i, task_id in enumerate(spec.topological_order())}
    tasks.sort(key=lambda ti: (order.get(ti.task_id, len(order)), ti.task_id))
    if run.state not in FINISHED_RUN_STATES:
        return tasks
    return [
        replace(ti, reason=f"not started: {readiness(spec, ti)}")
        if ti.state is TaskState.PENDING and ti.task_id in spec.tasks and ti.map_index is None
        else ti
        for ti in tasks
    ]


def list_runs(skydag: Remote, dag_id: str | None, limit: int) -> list[DagRun]:
    """The newest ``limit`` runs of one DAG or of all, by creation time.

    Runs are keyed by run id, which does not sort by time across run kinds (manual__,
    scheduled__, signal__<event id>), so each DAG's runs are read in full (one paginated
    Query per DAG) and sorted here.
    """
    from skydag.cli.dags import dag_ids

    if dag_id is not None:
        if skydag.repos.dags.find(dag_id) is None:
            raise CliError(f"DAG '{dag_id}' not found (`skydag dags list` shows the DAGs)")
        dags = [dag_id]
    else:
        # Retired DAGs too: their runs are history worth seeing.
        dags = dag_ids(skydag, include_retired=True)
    runs = [run for dag in dags for run in skydag.repos.runs.list_for_dag(dag)]
    runs.sort(
        key=lambda run: (run.created_at or run.started_at or _EPOCH, run.run_id), reverse=True
    )
    return runs[:limit]


# --- commands ------------------------------------------------------------------------------


def list_command(args: argparse.Namespace, skydag: Remote) -> int:
    from skydag.cli.render import run_to_json

    runs = list_runs(skydag, args.dag, args.limit)
    if args.output == "json":
        print_json([run_to_json(run) for run in runs])
        return EXIT_OK
    if not runs:
        print("no runs", file=sys.stderr)
        return EXIT_OK
    rows = [
        (
            run.dag_id,
            run.run_id,
            run.state.value,
            run.run_type.value,
            # A run that has not started (queued) has no start time to show.
            short_time(run.started_at),
            _duration(run),
        )
        for run in runs
    ]
    print(format_table(("DAG", "RUN", "STATE", "TYPE", "STARTED", "DURATION"), rows))
    return EXIT_OK


def _duration(run: DagRun) -> str:
    if run.started_at is None or run.ended_at is None:
        return "-"
    seconds = (run.ended_at - run.started_at).total_seconds()
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.2f}s"


def show_command(args: argparse.Namespace, skydag: Remote) -> int:
    from skydag.cli.render import run_table, run_to_json

    run = get_run(skydag, args.dag, args.run_id)
    tasks = run_tasks(skydag, run)
    if args.output == "json":
        print_json(run_to_json(run, tasks))
    else:
        print(run_table(run, tasks))
    return EXIT_OK


def cancel_run(skydag: Remote, dag_id: str, run_id: str, reason: str) -> dict[str, Any] | None:
    """Ask the scheduler to cancel a run; what was sent, or None when it already is
    cancelled. CliError when the run already ended otherwise."""
    from skydag.engine.states import FINISHED_RUN_STATES, RunState

    run = get_run(skydag, dag_id, run_id)
    if run.state is RunState.CANCELLED:
        return None
    if run.state in FINISHED_RUN_STATES:
        raise CliError(
            f"run {run.dag_id}/{run.run_id} already ended ({run.state.value}); nothing to cancel"
        )
    detail = {"dag": run.dag_id, "run_id": run.run_id, "reason": reason}
    return command_sent(skydag, CANCEL_RUN, detail)


def cancel_command(args: argparse.Namespace, skydag: Remote) -> int:
    sent = cancel_run(skydag, args.dag, args.run_id, args.reason)
    if sent is None:
        print(f"run {args.dag}/{args.run_id} is already cancelled", file=sys.stderr)
        return EXIT_OK
    if args.output == "json":
        print_json(sent)
    else:
        print(
            f"asked the scheduler to cancel run {args.dag}/{args.run_id} (event {sent['event_id']})"
        )
    return EXIT_OK
