"""`skydag dags push|list|pause|unpause|delete`.

``push`` judges each file with the loader the dag-loader Lambda uses before anything is
uploaded: one bad file and nothing goes up, so a push never half-applies. The upload goes
to ``s3://<bucket>/<prefix><file name>``; the dag-loader Lambda takes it from there
(``--wait`` follows it through the loader's per-file record).

``list`` shows every DAG head and every file that did not load: a broken upload is seen
where people look, not only in the loader's logs (design principle 8).

``pause``/``unpause``/``delete`` are commands to the scheduler, like every change of state
(``delete`` also removes the DAG's file, as `dags push` put it).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from skydag.cli import remote
from skydag.cli.remote import (
    DELETE_DAG,
    EXIT_FAILED,
    EXIT_OK,
    PAUSE_DAG,
    UNPAUSE_DAG,
    Remote,
    command_sent,
    format_table,
    print_json,
    require_dag,
)

if TYPE_CHECKING:
    from skydag.spec.loader import Problem
    from skydag.spec.models import DagSpec
    from skydag.store.dag_files import DagFile

# What the dag-loader loads (skydag/service/dag_loader.py ``DAG_FILE_SUFFIXES``).
DAG_FILE_SUFFIXES = (".yaml", ".yml")


def register(commands: Any) -> None:
    location, output = remote.location_options(), remote.output_options()
    dags: argparse.ArgumentParser = commands.add_parser(
        "dags", help="upload, list, pause, unpause and delete DAGs"
    )
    sub = dags.add_subparsers(dest="dags_command", required=True, metavar="COMMAND")

    push = sub.add_parser(
        "push",
        parents=[location, output],
        help="validate DAG files, then upload them",
        description="Validate DAG files locally; when all are valid, upload each to "
        "s3://<bucket>/<prefix><file name>, where the DAG loader picks it up.",
    )
    push.add_argument("files", nargs="+", metavar="FILE", help="DAG file(s) (.yaml or .yml)")
    push.add_argument(
        "--wait", action="store_true", help="wait until the DAG loader has loaded each file"
    )
    push.add_argument(
        "--timeout", type=float, default=120.0, help="seconds --wait waits (default 120)"
    )
    push.set_defaults(handler=remote.handler("dags push", push_files))

    listing = sub.add_parser(
        "list",
        parents=[location, output],
        help="list DAGs and files that failed to load",
        description="Every loaded DAG, and every DAG file whose last upload did not load.",
    )
    listing.set_defaults(handler=remote.handler("dags list", list_command))

    delete = sub.add_parser(
        "delete",
        parents=[location, output],
        help="retire a DAG (as deleting its file does); its history stays",
        description="Ask the scheduler to retire a DAG: its signals and schedule create no "
        "more runs; runs already accepted finish (--cancel-runs cancels them). Its file is "
        "removed from the DAG bucket; uploading it again brings the DAG back. Runs and "
        "task instances stay readable (`runs list`, `runs show`).",
    )
    delete.add_argument("dag", help="the DAG id")
    delete.add_argument(
        "--cancel-runs", action="store_true", help="cancel its queued and running runs"
    )
    delete.add_argument(
        "--keep-history",
        action="store_true",
        help="keep its runs and task instances (always so: accepted for compatibility)",
    )
    delete.set_defaults(handler=remote.handler("dags delete", delete_command))

    for name, command, doing in (
        ("pause", PAUSE_DAG, "no new scheduled or signalled runs; queued runs wait"),
        ("unpause", UNPAUSE_DAG, "queued runs start, oldest first"),
    ):
        parser = sub.add_parser(
            name,
            parents=[location, output],
            help=f"{name} a DAG ({doing})",
            description=f"Ask the scheduler to {name} a DAG: {doing}.",
        )
        parser.add_argument("dag", help="the DAG id")
        parser.set_defaults(
            handler=remote.handler(f"dags {name}", _pause_command(command)), verb=name
        )


# --- push ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DagFile:
    """A local DAG file that passed validation, and where it goes."""

    path: str
    data: bytes
    spec: DagSpec

    @property
    def name(self) -> str:
        return PurePosixPath(self.path.replace("\\", "/")).name

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class _Pushed:
    file: _DagFile
    key: str
    source: str
    status: str = "uploaded"  # then "loaded" or "import_error" with --wait
    version: int | None = None
    import_error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file.path,
            "source": self.source,
            "dag": self.file.spec.dag,
            "sha256": self.file.sha256,
            "status": self.status,
            "version": self.version,
            "import_error": self.import_error,
        }


def push_files(args: argparse.Namespace, skydag: Remote) -> int:
    files, problems = _validated(args.files)
    if not problems:
        problems = _ownership_problems(skydag, files)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print("skydag dags push: nothing uploaded", file=sys.stderr)
        return EXIT_FAILED
    s3 = skydag.client("s3")
    bucket, prefix = skydag.settings.dag_bucket, skydag.settings.dag_prefix
    pushed: list[_Pushed] = []
    for file in files:
        key = f"{prefix}{file.name}"
        s3.put_object(Bucket=bucket, Key=key, Body=file.data, ContentType="application/yaml")
        pushed.append(_Pushed(file, key, f"s3://{bucket}/{key}"))
        if args.output == "text":
            tasks = len(file.spec.tasks)
            print(
                f"uploaded {file.path} -> s3://{bucket}/{key} "
                f"(DAG {file.spec.dag}, {tasks} task{'' if tasks == 1 else 's'})"
            )
    if args.wait:
        pushed = _wait_until_loaded(skydag, pushed, timeout=args.timeout)
    if args.output == "json":
        print_json([item.as_json() for item in pushed])
    else:
        for item in pushed:
            if item.status == "loaded":
                print(f"{item.source}: loaded as DAG {item.file.spec.dag} v{item.version}")
            elif item.status == "import_error":
                print(f"{item.source}: the DAG loader refused it:\n{item.import_error}")
    unfinished = [item for item in pushed if args.wait and item.status != "loaded"]
    return EXIT_FAILED if unfinished else EXIT_OK


def _validated(paths: list[str]) -> tuple[list[_DagFile], list[Problem]]:
    """The files, read once (the bytes checked are the bytes uploaded), and every problem."""
    from skydag.spec.loader import MAX_DAG_FILE_BYTES, DagFileError, Problem, load_dag_bytes

    files: list[_DagFile] = []
    problems: list[Problem] = []
    for path in paths:
        if not path.lower().endswith(DAG_FILE_SUFFIXES):
            problems.append(Problem(path, "the DAG loader only loads .yaml and .yml files"))
            continue
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_DAG_FILE_BYTES + 1)
        except OSError as error:
            problems.append(Problem(path, f"cannot read file: {error.strerror or error}"))
            continue
        try:
            files.append(_DagFile(path, data, load_dag_bytes(data, path)))
        except DagFileError as error:
            problems.extend(error.problems)
    by_name: dict[str, str] = {}
    by_dag: dict[str, str] = {}
    for file in files:
        if file.name in by_name:
            problems.append(
                Problem(file.path, f"same file name as {by_name[file.name]}: one would replace")
            )
        if file.spec.dag in by_dag:
            problems.append(
                Problem(
                    file.path,
                    f"DAG '{file.spec.dag}' is also defined by {by_dag[file.spec.dag]}; "
                    "a DAG is defined by one file",
                )
            )
        by_name.setdefault(file.name, file.path)
        by_dag.setdefault(file.spec.dag, file.path)
    return files, problems


def _ownership_problems(skydag: Remote, files: list[_DagFile]) -> list[Problem]:
    """A DAG another live file defines would be refused by the loader: say so now.

    The same rule as the loader's (``DagLoaderService._other_owner``): the other file
    must be one the loader knows is live and still defines the DAG.
    """
    from skydag.spec.loader import Problem

    bucket, prefix = skydag.settings.dag_bucket, skydag.settings.dag_prefix
    problems: list[Problem] = []
    for file in files:
        source = f"s3://{bucket}/{prefix}{file.name}"
        head = skydag.repos.dags.find(file.spec.dag)
        if head is None or head.current_version is None or head.source in (None, source):
            continue
        owner_key = (head.source or "").removeprefix(f"s3://{bucket}/")
        if owner_key == head.source:
            continue  # not a file of this bucket: the new file takes the DAG over
        owner = skydag.dag_files.get(owner_key)
        if owner is not None and not owner.deleted and owner.dag == file.spec.dag:
            problems.append(
                Problem(
                    file.path,
                    f"DAG '{file.spec.dag}' is already defined by {head.source}; push the "
                    f"file under that name, or delete that file first",
                )
            )
    return problems


def _wait_until_loaded(skydag: Remote, pushed: list[_Pushed], *, timeout: float) -> list[_Pushed]:
    """Follow each upload through the loader's file record: done when the record carries
    this upload's sha256 (a loaded version or an import error)."""
    deadline = time.monotonic() + timeout
    pending = {item.key: item for item in pushed}
    done: dict[str, _Pushed] = {}
    print(f"waiting for the DAG loader ({len(pending)} file(s))...", file=sys.stderr)
    while pending:
        for key, item in list(pending.items()):
            record = skydag.dag_files.get(key)
            if record is not None and not record.deleted and record.sha256 == item.file.sha256:
                done[key] = _loaded(item, record)
                del pending[key]
        if not pending:
            break
        if time.monotonic() >= deadline:
            waiting = ", ".join(item.source for item in pending.values())
            print(
                f"skydag dags push: the DAG loader has not processed {waiting} after "
                f"{timeout:g}s: check its logs",
                file=sys.stderr,
            )
            break
        remote.pause(0.5)
    return [done.get(item.key, item) for item in pushed]


def _loaded(item: _Pushed, record: DagFile) -> _Pushed:
    if record.import_error:
        return _Pushed(item.file, item.key, item.source, "import_error", None, record.import_error)
    return _Pushed(item.file, item.key, item.source, "loaded", record.dag_version)


# --- list ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DagListing:
    """One line of ``dags list``: a DAG head, or a file that never loaded (no version)."""

    dag: str | None
    version: int | None
    paused: bool
    source: str | None
    import_error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "dag": self.dag,
            "version": self.version,
            "paused": self.paused,
            "source": self.source,
            "import_error": self.import_error,
        }


def scan_heads(skydag: Remote) -> list[Any]:
    """Every DAG head (``DagModel`` items), retired ones included.

    A Scan of the dags table: fine for the CLI, never done by the scheduler. The table
    also holds signal subscriptions, the loader's file records and the emit source
    holders, all keyed ``<kind>:...``: no DAG id contains ':', so the filter skips them.
    """
    from skydag.store.models import DagModel

    skydag.bind_tables()
    return list(
        DagModel.scan(
            filter_condition=~DagModel.dag_id.contains(":"),
            attributes_to_get=["dag_id", "current_version", "paused", "source", "import_error"],
        )
    )


def dag_ids(skydag: Remote, *, include_retired: bool) -> list[str]:
    """The ids of every DAG; a retired DAG (its file deleted) has no current version."""
    return sorted(
        head.dag_id
        for head in scan_heads(skydag)
        if include_retired or head.current_version is not None
    )


def list_dags(skydag: Remote) -> list[DagListing]:
    """Every live DAG head, then every broken file whose error no head shows.

    A file whose new upload broke while its DAG keeps running the previous version is
    shown on that DAG's line, with the file record's (fuller) error.
    """
    heads = [head for head in scan_heads(skydag) if head.current_version is not None]
    broken = {file.source: file for file in skydag.dag_files.list_import_errors()}
    listings: list[DagListing] = []
    for head in heads:
        own_file = broken.get(head.source or "")
        if own_file is not None and own_file.dag == head.dag_id:
            del broken[own_file.source]
        else:
            own_file = None
        listings.append(
            DagListing(
                dag=head.dag_id,
                version=int(head.current_version),
                paused=bool(head.paused),
                source=head.source,
                import_error=own_file.import_error if own_file else head.import_error,
            )
        )
    listings.extend(
        DagListing(file.dag, None, False, file.source, file.import_error)
        for file in broken.values()
    )
    return sorted(listings, key=lambda item: (item.dag or "", item.source or ""))


def list_command(args: argparse.Namespace, skydag: Remote) -> int:
    listings = list_dags(skydag)
    if args.output == "json":
        print_json([item.as_json() for item in listings])
        return EXIT_OK
    if not listings:
        print("no DAGs (upload one with `skydag dags push FILE`)", file=sys.stderr)
        return EXIT_OK
    rows = [
        (
            item.dag or "?",
            "-" if item.version is None else str(item.version),
            "yes" if item.paused else "no",
            item.source or "-",
            "import error" if item.import_error else "ok",
        )
        for item in listings
    ]
    print(format_table(("DAG", "VERSION", "PAUSED", "SOURCE", "STATUS"), rows))
    for item in listings:
        if item.import_error:
            print(f"\n{item.import_error}")
    return EXIT_OK


# --- delete --------------------------------------------------------------------------------


def delete_command(args: argparse.Namespace, skydag: Remote) -> int:
    """The command first (the scheduler retires the DAG and cancels what was asked), then
    the file, so that nothing (a resync, `dev up` restarting) loads it again; the loader
    retiring an already retired DAG only confirms what the command did."""
    head = require_dag(skydag, args.dag)
    detail = {"dag": args.dag, "version": head.current_version, "cancel_runs": args.cancel_runs}
    sent = command_sent(skydag, DELETE_DAG, detail)
    bucket_prefix = f"s3://{skydag.settings.dag_bucket}/"
    removed: str | None = None
    if head.source and head.source.startswith(bucket_prefix):
        key = head.source.removeprefix(bucket_prefix)
        skydag.client("s3").delete_object(Bucket=skydag.settings.dag_bucket, Key=key)
        removed = head.source
    if args.output == "json":
        print_json({**sent, "removed_file": removed})
    else:
        runs = "; its unfinished runs are cancelled" if args.cancel_runs else ""
        print(
            f"asked the scheduler to delete DAG {args.dag} v{head.current_version} "
            f"(event {sent['event_id']}){runs}"
        )
        if removed:
            print(f"removed {removed} (upload it again to bring the DAG back)")
    return EXIT_OK


# --- pause / unpause -----------------------------------------------------------------------


def set_paused(skydag: Remote, dag_id: str, *, paused: bool) -> dict[str, Any]:
    """Ask the scheduler to pause or unpause a loaded DAG; what was sent."""
    require_dag(skydag, dag_id)
    return command_sent(skydag, PAUSE_DAG if paused else UNPAUSE_DAG, {"dag": dag_id})


def _pause_command(command: str) -> remote.Handler:
    def run(args: argparse.Namespace, skydag: Remote) -> int:
        sent = set_paused(skydag, args.dag, paused=command == PAUSE_DAG)
        if args.output == "json":
            print_json(sent)
        else:
            print(f"asked the scheduler to {args.verb} DAG {args.dag} (event {sent['event_id']})")
        return EXIT_OK

    return run
