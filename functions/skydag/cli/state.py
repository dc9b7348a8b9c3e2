"""`skydag state get|put`: a task's state (checkpoints, watermarks) from a shell.

Meant for jobs written in any language: the identity comes from the SKYDAG_* variables
skydag gives every job, the table from SKYDAG_TASK_STATE_TABLE and the endpoint from
AWS_ENDPOINT_URL, each overridable by an option. Exit codes: 0 ok; 1 no value (get) or
version conflict (put); 2 usage error; 3 the store could not be read or written (no table,
no credentials, no network) -- distinct from 1, so a script never mistakes an unreachable
store for a first run without a watermark.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import timedelta

    from skydag.taskstate import TaskState

EXIT_OK, EXIT_MISSING, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3


def register(commands: Any) -> None:
    """Add `state get` and `state put` to the `skydag` command's subparsers."""
    state: argparse.ArgumentParser = commands.add_parser(
        "state",
        help="read and write task state (checkpoints, watermarks)",
        description=(
            "Read and write a task's stored state. Scope 'task' (default) lasts across runs "
            "(watermarks); scope 'instance' belongs to one run's task and its retries "
            "(checkpoints). The task comes from SKYDAG_DAG, SKYDAG_RUN and SKYDAG_TASK, "
            "which skydag sets for every job."
        ),
        epilog="Exit codes: 0 done; 1 no value (get) or version conflict (put); 2 usage "
        "error; 3 the store could not be read or written.",
    )
    sub = state.add_subparsers(dest="state_command", required=True, metavar="COMMAND")

    get = sub.add_parser(
        "get",
        help="print a stored value (exit 1 when there is none)",
        description="Print KEY's value: strings as they are, anything else as JSON.",
    )
    get.add_argument("key", metavar="KEY")
    _add_location_options(get)
    get.add_argument("--output", choices=("text", "json"), default="text")
    get.set_defaults(handler=run_get)

    put = sub.add_parser(
        "put",
        help="store a value (exit 1 on a version conflict)",
        description="Store VALUE under KEY: parsed as JSON when it is valid JSON, else a string.",
    )
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE")
    _add_location_options(put)
    put.add_argument(
        "--ttl", help="keep the value this long after this write (e.g. 30d; default 90d)"
    )
    put.add_argument(
        "--if-version",
        type=_version,
        metavar="N",
        dest="if_version",
        help="write only if the stored version is N (0: only if there is no value yet)",
    )
    put.add_argument("--output", choices=("text", "json"), default="text")
    put.set_defaults(handler=run_put)


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope", choices=("task", "instance"), default="task")
    parser.add_argument("--dag", help="DAG id (default: $SKYDAG_DAG)")
    parser.add_argument("--run", help="run id, for the instance scope (default: $SKYDAG_RUN)")
    parser.add_argument("--task", help="task id (default: $SKYDAG_TASK)")
    parser.add_argument("--table", help="task state table (default: $SKYDAG_TASK_STATE_TABLE)")
    parser.add_argument("--endpoint-url", help="AWS endpoint (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="AWS region (default: $AWS_REGION)")


def _version(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a version number (0 or more), got {text!r}")
    return number


def parse_value(text: str) -> Any:
    """VALUE as JSON when it is valid JSON (``5``, ``true``, ``{"a": 1}``, ``"5"``), else the
    text itself (``2026-01-01T00:00:00+00:00``). NaN and Infinity are not JSON: text.
    JSON nested deeper than the limit is a ValueError (the decoder would recurse)."""
    from skydag.limits import MAX_JSON_DEPTH, LimitError, json_text_depth

    if json_text_depth(text) > MAX_JSON_DEPTH:
        raise LimitError(f"VALUE: nested more than {MAX_JSON_DEPTH} levels deep")

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return text


def run_get(args: argparse.Namespace) -> int:
    command = "skydag state get"
    store = _store(args)
    try:
        found = store.get_versioned(args.key, scope=args.scope)
    except Exception as error:
        return _failed(command, error, store, args)
    if found is None:
        print(
            f"{command}: no value for {args.key!r} in the {_describe(store, args.scope)} "
            f"({store.where()})",
            file=sys.stderr,
        )
        return EXIT_MISSING
    if args.output == "json":
        print(json.dumps(_as_json(store, args, found.value, found.version), indent=2))
    elif isinstance(found.value, str):
        print(found.value)  # as it is, so `$(skydag state get watermark)` is the value
    else:
        print(json.dumps(found.value))
    return EXIT_OK


def run_put(args: argparse.Namespace) -> int:
    command = "skydag state put"
    store = _store(args)
    try:
        value = parse_value(args.value)
        version = store.put(
            args.key,
            value,
            scope=args.scope,
            ttl=_parse_ttl(args.ttl),
            expected_version=args.if_version,
        )
    except Exception as error:
        return _failed(command, error, store, args)
    if args.output == "json":
        print(json.dumps(_as_json(store, args, value, version), indent=2))
    else:
        print(f"{args.key}: version {version}")
    return EXIT_OK


def _failed(command: str, error: Exception, store: TaskState, args: argparse.Namespace) -> int:
    """Say on stderr what went wrong and where; return the exit code. Anything that is not
    a usage, conflict or store error is a bug and propagates."""
    from botocore.exceptions import BotoCoreError, ClientError

    from skydag.taskstate import MissingIdentity, TaskStateError, VersionConflict

    if isinstance(error, MissingIdentity):
        message = (
            f"no {error.part} id for the {args.scope} scope: pass --{error.part} "
            f"or set {error.variable}"
        )
        code = EXIT_USAGE
    elif isinstance(error, VersionConflict) and args.if_version is not None:
        found = f"version {error.current.version}" if error.current else "no value"
        message = (
            f"version conflict on {args.key!r} in the {_describe(store, args.scope)}: "
            f"expected version {args.if_version}, found {found} ({store.where()})"
        )
        code = EXIT_MISSING
    elif isinstance(error, VersionConflict):  # an unconditional write lost every retry
        message, code = str(error), EXIT_MISSING
    elif isinstance(error, TaskStateError):  # its message says what and where
        message, code = str(error), EXIT_STORE
    elif isinstance(error, ValueError):  # a bad --ttl, key or value
        message, code = str(error), EXIT_USAGE
    elif isinstance(error, BotoCoreError | ClientError):
        message, code = f"cannot use task state in {store.where()}: {error}", EXIT_STORE
    else:
        raise error
    print(f"{command}: error: {message}", file=sys.stderr)
    return code


def _store(args: argparse.Namespace) -> TaskState:
    from skydag.taskstate import TaskState

    return TaskState.from_env(
        dag=args.dag,
        run=args.run,
        task=args.task,
        table=args.table,
        endpoint_url=args.endpoint_url,
        region=args.region,
    )


def _parse_ttl(text: str | None) -> timedelta | None:
    if text is None:
        return None
    from skydag.spec.durations import parse_duration

    try:
        ttl = parse_duration(text)
    except ValueError as error:
        raise ValueError(f"--ttl: {error}") from error
    if ttl.total_seconds() <= 0:
        raise ValueError(f"--ttl must be positive, got {text!r}")
    return ttl


def _describe(store: TaskState, scope: str) -> str:
    if scope == "instance":
        return f"instance scope of {store.dag}/{store.run}/{store.task}"
    return f"task scope of {store.dag}/{store.task}"


def _as_json(store: TaskState, args: argparse.Namespace, value: Any, version: int) -> Any:
    return {
        "dag": store.dag,
        "task": store.task,
        "run": store.run if args.scope == "instance" else None,
        "scope": args.scope,
        "key": args.key,
        "value": value,
        "version": version,
    }
