"""`skydag logs DAG RUN TASK [--try N] [--follow]`: a try's output, read where its service
keeps it.

The try's job id comes from the task instance (the current try) or its try history (a
past try); the service says where that job's output is (``skydag.adapters.joblogs``).
When the service has none there, or keeps none, the local cloud's stream of the try is
read instead (it exists only on `skydag dev up`/`dev run`); when neither exists, one line
on stderr says where the service would keep it and how to make it do so (exit 0: the try
is known, it just left nothing to read). A try that never started a job is an error.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skydag.cli import remote
from skydag.cli.remote import EXIT_OK, CliError, Remote, print_json
from skydag.cli.runs import get_run
from skydag.joblogs import NO_JOB_KINDS

if TYPE_CHECKING:
    from skydag.adapters.joblogs import JobLogs, LogLine, LogSource
    from skydag.engine.models import TaskInstance, TryRecord

# How often --follow looks for new lines and at the try's state.
FOLLOW_INTERVAL = 1.0


def register(commands: Any) -> None:
    location, output = remote.location_options(), remote.output_options()
    logs: argparse.ArgumentParser = commands.add_parser(
        "logs",
        parents=[location, output],
        help="a try's output",
        description="Print a try's output (default: the current try's), read where the "
        "job's service keeps it: CloudWatch Logs for Batch, ECS (awslogs) and Lambda, S3 "
        "or CloudWatch Logs for EMR and EMR Serverless. Step Functions keeps none.",
    )
    logs.add_argument("dag", help="the DAG id")
    logs.add_argument("run_id", metavar="RUN", help="the run id")
    logs.add_argument("task", help="the task id")
    logs.add_argument(
        "--try",
        dest="try_number",
        type=_positive_int,
        default=None,
        help="which try (default: the current one; `runs show --output json` lists them)",
    )
    logs.add_argument(
        "--map-index", type=int, default=None, help="the instance of a mapped (for_each) task"
    )
    logs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new lines until the try has ended and its log is drained",
    )
    logs.set_defaults(handler=remote.handler("logs", logs_command))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


@dataclass(frozen=True)
class _Try:
    """The try asked for, and what is needed to find its output."""

    ti: TaskInstance
    record: TryRecord
    kind: str
    target: dict[str, Any]

    @property
    def name(self) -> str:
        where = "/".join(self.ti.key)
        return f"try {self.record.try_number} of {where}"


def logs_command(args: argparse.Namespace, skydag: Remote) -> int:
    from skydag.adapters.joblogs import JobLogs

    chosen = find_try(
        skydag, args.dag, args.run_id, args.task, args.try_number, map_index=args.map_index
    )
    reader = JobLogs(skydag.client)
    if chosen.record.job_id is None and chosen.kind not in NO_JOB_KINDS:
        chosen = _wait_for_job(skydag, chosen, follow=args.follow)
    sources, note = _sources(reader, chosen)
    said = False
    if note and args.follow and _running(chosen.record):
        # The local cloud writes its stream when the job ends: say now why nothing comes.
        print(f"skydag logs: {chosen.name}: {note}; waiting for the try to end", file=sys.stderr)
        said = True
    lines: list[LogLine] = []
    source = _read(skydag, chosen, sources, args, lines)
    missing = None
    if source is None:
        missing = note or f"no output found at {', '.join(s.where for s in sources)}"
        if not said:
            print(f"skydag logs: {chosen.name}: {missing}", file=sys.stderr)
    if args.output == "json":
        print_json(_as_json(chosen, source, lines, missing))
    return EXIT_OK


# --- which try ---------------------------------------------------------------------------


def find_try(
    skydag: Remote,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int | None = None,
    *,
    map_index: int | None = None,
) -> _Try:
    """The try asked for (default: the current one); CliError naming what is missing."""
    from skydag.store.errors import NotFound

    run = get_run(skydag, dag_id, run_id)
    ti = skydag.repos.tasks.find(run.dag_id, run.run_id, task_id)
    if ti is None:
        raise CliError(
            f"task '{task_id}' not found in run {run.dag_id}/{run.run_id} "
            f"(`skydag runs show {run.dag_id} {run.run_id}` lists its tasks)"
        )
    if map_index is not None:
        from skydag.cli.tasks import instance_of

        ti = instance_of(skydag, run, ti, map_index)
    try:
        spec = skydag.repos.dags.load_spec(run.dag_id, run.dag_version)
    except NotFound as error:
        raise CliError(f"run {run.dag_id}/{run.run_id}: {error}") from error
    task = spec.tasks.get(ti.task_id)
    if task is None:
        raise CliError(f"task '{ti.task_id}' is not in DAG {run.dag_id} v{run.dag_version}")
    record = _pick(ti, try_number)
    target = task.target.model_dump(by_alias=True, mode="json")
    return _Try(ti, record, task.target_kind, target)


def _pick(ti: TaskInstance, wanted: int | None) -> TryRecord:
    from skydag.engine.tries import MAX_TRIES_KEPT, all_tries

    where = f"{ti.dag_id}/{ti.run_id}/{ti.instance_id}"
    if ti.try_number < 1:
        raise CliError(
            f"task {where} has not started (it is {ti.state.value}): it has no tries yet"
        )
    number = wanted or ti.try_number
    tries = all_tries(ti)
    for record in tries:
        if record.try_number == number:
            return record
    if number > ti.try_number:
        raise CliError(f"task {where} has no try {number} (its tries: 1 to {ti.try_number})")
    if tries and number < tries[0].try_number:
        raise CliError(
            f"try {number} of {where} is no longer kept (the last {MAX_TRIES_KEPT} tries are; "
            f"the oldest kept is try {tries[0].try_number})"
        )
    # Tries of a task instance written before skydag kept a history.
    raise CliError(f"try {number} of {where} was not recorded: its job is unknown")


def _current(skydag: Remote, chosen: _Try) -> _Try:
    """The same try, as the store has it now."""
    from skydag.engine.tries import all_tries

    ti = skydag.repos.tasks.find(*chosen.ti.key)
    if ti is None:
        return chosen
    for record in all_tries(ti):
        if record.try_number == chosen.record.try_number:
            return _Try(ti, record, chosen.kind, chosen.target)
    return chosen


def _running(record: TryRecord) -> bool:
    from skydag.engine.states import TaskState

    return record.state in (TaskState.QUEUED, TaskState.RUNNING)


def _wait_for_job(skydag: Remote, chosen: _Try, *, follow: bool) -> _Try:
    """A try without a job: with --follow, wait until its job starts; otherwise (or
    when the try ended without one) there is nothing to read."""
    while follow and chosen.record.job_id is None and _running(chosen.record):
        remote.pause(FOLLOW_INTERVAL)
        chosen = _current(skydag, chosen)
    if chosen.record.job_id is not None:
        return chosen
    raise CliError(_no_job(chosen))


def _no_job(chosen: _Try) -> str:
    """Why a try that runs a job has no output: it has not started one (yet)."""
    record = chosen.record
    why = f": {record.reason}" if record.reason else ""
    state = "has not started a job yet" if _running(record) else "never started a job"
    return f"{chosen.name} {state} ({record.state.value}{why}); it has no output"


def read_log(skydag: Remote, chosen: _Try) -> dict[str, Any]:
    """What the try's output holds now, read once, as ``skydag logs --output json`` shows
    it (``note`` says why there is none)."""
    from skydag.adapters.joblogs import JobLogs

    if chosen.record.job_id is None and chosen.kind not in NO_JOB_KINDS:
        return _as_json(chosen, None, [], _no_job(chosen))
    sources, note = _sources(JobLogs(skydag.client), chosen)
    source, lines = _first_existing(sources)
    if source is None:
        note = note or f"no output found at {', '.join(s.where for s in sources)}"
    return _as_json(chosen, source, lines, note if source is None else None)


# --- where, and reading ------------------------------------------------------------------


def _sources(reader: JobLogs, chosen: _Try) -> tuple[list[LogSource], str | None]:
    """Where to look, in order (the service's location, then the local cloud's stream),
    and the service's own word when it keeps nothing."""
    from skydag.joblogs import NoLog

    ti, record = chosen.ti, chosen.record
    location = reader.locate(chosen.kind, record.job_id or "", chosen.target)
    sources: list[LogSource] = []
    note = None
    if isinstance(location, NoLog):
        note = location.reason
    else:
        sources.append(reader.source(location))
    sources.append(reader.local_source(ti.dag_id, ti.run_id, ti.instance_id, record.try_number))
    return sources, note


def _read(
    skydag: Remote,
    chosen: _Try,
    sources: list[LogSource],
    args: argparse.Namespace,
    collected: list[LogLine],
) -> LogSource | None:
    """Read the first source that exists; with --follow, go on until the try has ended
    and a read after that brought nothing new. Returns the source read, if any."""
    found: LogSource | None = None
    ended = not _running(chosen.record)
    while True:
        if found is None:
            found, lines = _first_existing(sources)
            if found is not None and args.output == "text":
                print(f"skydag logs: {chosen.name}: {found.where}", file=sys.stderr)
        else:
            lines = found.read() or []
        _emit(lines, args.output, collected)
        if not args.follow or (found is not None and found.done):
            return found
        if ended and not lines:
            return found
        remote.pause(FOLLOW_INTERVAL)
        # Judged before the next read, so the lines written just before the end are read.
        ended = ended or not _running(_current(skydag, chosen).record)


def _first_existing(sources: list[LogSource]) -> tuple[LogSource | None, list[LogLine]]:
    for source in sources:
        lines = source.read()
        if lines is not None:
            return source, lines
    return None, []


def _emit(lines: list[LogLine], output: str, collected: list[LogLine]) -> None:
    if output == "json":
        collected.extend(lines)
        return
    for line in lines:
        print(line.message.rstrip("\n"), flush=True)


def _as_json(
    chosen: _Try, source: LogSource | None, lines: list[LogLine], note: str | None
) -> dict[str, Any]:
    from skydag.cli.render import iso

    return {
        "dag": chosen.ti.dag_id,
        "run_id": chosen.ti.run_id,
        "task": chosen.ti.task_id,
        "map_index": chosen.ti.map_index,
        "try_number": chosen.record.try_number,
        "job_id": chosen.record.job_id,
        "source": source.where if source else None,
        "note": note,
        "lines": [
            {"timestamp": iso(line.timestamp), "message": line.message.rstrip("\n")}
            for line in lines
        ],
    }
