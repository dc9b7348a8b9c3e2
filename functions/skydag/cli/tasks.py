"""`skydag tasks clear|mark`: commands to the scheduler about one task instance.

The run and the task are looked up first, so a typo or a request the scheduler would
refuse (clearing a task of a cancelled run, clearing a task that has not finished) is an
error here, where the person sees it, rather than a line in the scheduler's logs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from skydag.cli import remote
from skydag.cli.remote import (
    CLEAR_TASK,
    EXIT_OK,
    MARK_TASK,
    CliError,
    Remote,
    command_sent,
    print_json,
)
from skydag.cli.runs import get_run

if TYPE_CHECKING:
    from skydag.engine.models import DagRun, TaskInstance


def register(commands: Any) -> None:
    location, output = remote.location_options(), remote.output_options()
    tasks: argparse.ArgumentParser = commands.add_parser(
        "tasks", help="clear or mark task instances"
    )
    sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")

    clear = sub.add_parser(
        "clear",
        parents=[location, output],
        help="rerun a finished task (and, with --downstream, what follows it)",
        description="Ask the scheduler to reset a finished task to pending and run it "
        "again; a finished run reopens. Its checkpoints are kept unless --reset-state.",
    )
    _task_arguments(clear)
    clear.add_argument(
        "--downstream", action="store_true", help="also clear every task downstream of it"
    )
    clear.add_argument(
        "--reset-state",
        action="store_true",
        help="discard the cleared tasks' checkpoints (task-instance state)",
    )
    clear.set_defaults(handler=remote.handler("tasks clear", clear_command))

    mark = sub.add_parser(
        "mark",
        parents=[location, output],
        help="set a task's outcome by hand",
        description="Ask the scheduler to mark a task success or failed; a running job "
        "is cancelled first, and downstream tasks are decided again.",
    )
    _task_arguments(mark)
    mark.add_argument("state", choices=("success", "failed"), help="the outcome to record")
    mark.set_defaults(handler=remote.handler("tasks mark", mark_command))


def _task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dag", help="the DAG id")
    parser.add_argument("run_id", metavar="RUN", help="the run id")
    parser.add_argument("task", help="the task id")
    parser.add_argument(
        "--map-index",
        type=int,
        default=None,
        help="only this instance of a mapped (for_each) task",
    )


def _task_of_open_run(
    skydag: Remote, dag_id: str, run_id: str, task_id: str, *, map_index: int | None = None
) -> tuple[DagRun, TaskInstance]:
    from skydag.engine.states import RunState

    run = get_run(skydag, dag_id, run_id)
    if run.state is RunState.CANCELLED:
        raise CliError(f"run {run.dag_id}/{run.run_id} was cancelled; trigger a new run")
    ti = skydag.repos.tasks.find(run.dag_id, run.run_id, task_id)
    if ti is None:
        known = ", ".join(
            sorted({t.task_id for t in skydag.repos.tasks.list_for_run(run.dag_id, run.run_id)})
        )
        raise CliError(
            f"task '{task_id}' not found in run {run.dag_id}/{run.run_id} "
            f"(tasks: {known or 'none'})"
        )
    if map_index is None:
        return run, ti
    return run, instance_of(skydag, run, ti, map_index)


def instance_of(skydag: Remote, run: DagRun, mapped: TaskInstance, index: int) -> TaskInstance:
    """Instance ``index`` of a mapped task's current expansion (``--map-index``)."""
    from skydag.engine.mapping import belongs
    from skydag.engine.models import instance_key

    if mapped.map_count is None:
        raise CliError(
            f"task '{mapped.task_id}' is not mapped (or has not expanded yet) in run "
            f"{run.dag_id}/{run.run_id}: omit --map-index"
        )
    instance = skydag.repos.tasks.find(run.dag_id, run.run_id, instance_key(mapped.task_id, index))
    if instance is None or not belongs(mapped, instance):
        raise CliError(
            f"task '{mapped.task_id}' has no instance {index} "
            f"(its map indexes are 0 to {mapped.map_count - 1})"
        )
    return instance


def clear_task(
    skydag: Remote,
    dag_id: str,
    run_id: str,
    task_id: str,
    *,
    downstream: bool,
    reset_state: bool,
    map_index: int | None = None,
) -> dict[str, Any]:
    """Ask the scheduler to clear a finished task (or one instance of a mapped task); what
    was sent. CliError when the scheduler would refuse it (the run was cancelled, the task
    has not finished)."""
    from skydag.engine.states import FINISHED_TASK_STATES, TaskState

    run, ti = _task_of_open_run(skydag, dag_id, run_id, task_id, map_index=map_index)
    if ti.state not in FINISHED_TASK_STATES | {TaskState.UP_FOR_RETRY}:
        raise CliError(
            f"task '{ti.task_id}' is {ti.state.value}: only a finished task can be cleared "
            "(mark it, or cancel the run)"
        )
    detail = {
        "dag": run.dag_id,
        "run_id": run.run_id,
        "task": ti.task_id,
        "downstream": downstream,
        "reset_state": reset_state,
        **_map_index(ti),
    }
    return command_sent(skydag, CLEAR_TASK, detail)


def clear_command(args: argparse.Namespace, skydag: Remote) -> int:
    sent = clear_task(
        skydag,
        args.dag,
        args.run_id,
        args.task,
        downstream=bool(args.downstream),
        reset_state=bool(args.reset_state),
        map_index=args.map_index,
    )
    if args.output == "json":
        print_json(sent)
    else:
        which = f"{args.task} and its downstream tasks" if args.downstream else args.task
        print(
            f"asked the scheduler to clear {which} in run {args.dag}/{args.run_id} "
            f"(event {sent['event_id']})"
        )
    return EXIT_OK


def mark_task(
    skydag: Remote,
    dag_id: str,
    run_id: str,
    task_id: str,
    state: str,
    *,
    map_index: int | None = None,
) -> dict[str, Any] | None:
    """Ask the scheduler to mark a task (or one instance of a mapped task) ``success`` or
    ``failed``; what was sent, or None when it already is in that state."""
    run, ti = _task_of_open_run(skydag, dag_id, run_id, task_id, map_index=map_index)
    if ti.state.value == state:
        return None
    detail = {
        "dag": run.dag_id,
        "run_id": run.run_id,
        "task": ti.task_id,
        "state": state,
        **_map_index(ti),
    }
    return command_sent(skydag, MARK_TASK, detail)


def _map_index(ti: TaskInstance) -> dict[str, int]:
    return {} if ti.map_index is None else {"map_index": ti.map_index}


def mark_command(args: argparse.Namespace, skydag: Remote) -> int:
    sent = mark_task(skydag, args.dag, args.run_id, args.task, args.state, map_index=args.map_index)
    if sent is None:
        print(f"task '{args.task}' is already {args.state}", file=sys.stderr)
        return EXIT_OK
    if args.output == "json":
        print_json(sent)
    else:
        print(
            f"asked the scheduler to mark {args.task} {args.state} in run "
            f"{args.dag}/{args.run_id} (event {sent['event_id']})"
        )
    return EXIT_OK
