"""`skydag output set|get`: a job publishes its try's output from a shell.

A Batch, ECS or EMR job returns nothing to the scheduler but its exit code; with
``skydag output set '{"rows": 3}'`` it publishes a JSON value that downstream templates
see as ``outputs.<task>``, as they see a Lambda response. The try comes from the
SKYDAG_* variables skydag gives every job (SKYDAG_TRY included), each overridable by an
option. Exit codes: 0 ok; 1 no output (get); 2 usage error (not JSON, too large, no
identity); 3 the store could not be read or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from skydag.cli.state import EXIT_MISSING, EXIT_OK, EXIT_STORE, EXIT_USAGE

if TYPE_CHECKING:
    from skydag.taskstate import TaskState

MAX_INPUT_CHARACTERS = 8 * 1024 * 1024
"""Most text ``--file`` reads: a pretty-printed value may be larger than its compact
encoding, which must still fit in 256 KiB."""


def register(commands: Any) -> None:
    """Add `output set` and `output get` to the `skydag` command's subparsers."""
    output: argparse.ArgumentParser = commands.add_parser(
        "output",
        help="publish this try's output (for outputs.<task> downstream)",
        description=(
            "Publish a JSON value as the output of the try this job runs as: downstream "
            "tasks' templates see it as outputs.<task>. The try comes from SKYDAG_DAG, "
            "SKYDAG_RUN, SKYDAG_TASK and SKYDAG_TRY, which skydag sets for every job."
        ),
        epilog="Exit codes: 0 done; 1 no output (get); 2 usage error (not JSON, over "
        "256 KiB, no dag/run/task/try id); 3 the store could not be read or written.",
    )
    sub = output.add_subparsers(dest="output_command", required=True, metavar="COMMAND")

    set_ = sub.add_parser(
        "set",
        help="publish a JSON value as this try's output",
        description="Publish JSON (an argument, or --file F, - for stdin) as this try's "
        "output. It must be JSON: a string is quoted ('\"done\"'). Publishing again "
        "replaces it.",
    )
    set_.add_argument("value", metavar="JSON", nargs="?", help="the output, as JSON text")
    set_.add_argument("--file", metavar="F", help="read the JSON from file F (- for stdin)")
    _add_location_options(set_)
    set_.add_argument("--output", choices=("text", "json"), default="text")
    set_.set_defaults(handler=run_set)

    get = sub.add_parser(
        "get",
        help="print this try's published output (exit 1 when there is none)",
        description="Print, as JSON, what this try published with `skydag output set`.",
    )
    _add_location_options(get)
    get.set_defaults(handler=run_get)


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dag", help="DAG id (default: $SKYDAG_DAG)")
    parser.add_argument("--run", help="run id (default: $SKYDAG_RUN)")
    parser.add_argument("--task", help="task id (default: $SKYDAG_TASK)")
    parser.add_argument(
        "--try",
        dest="try_number",
        type=_try_number,
        metavar="N",
        help="try number (default: $SKYDAG_TRY)",
    )
    parser.add_argument("--table", help="task state table (default: $SKYDAG_TASK_STATE_TABLE)")
    parser.add_argument("--endpoint-url", help="AWS endpoint (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="AWS region (default: $AWS_REGION)")


def _try_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a try number (1 or more), got {text!r}")
    return int(text)


def parse_output(text: str, source: str) -> Any:
    """``text`` as JSON, or ValueError naming ``source`` and why it is not JSON. NaN and
    Infinity are refused, and so is JSON nested deeper than the limit."""
    from skydag.limits import MAX_JSON_DEPTH, json_text_depth

    if json_text_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"{source}: nested more than {MAX_JSON_DEPTH} levels deep")

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as error:
        hint = " (a string is quoted: '\"done\"')" if text.strip()[:1].isalpha() else ""
        raise ValueError(f"{source} is not JSON: {error}{hint}") from None


def read_output_text(args: argparse.Namespace, stdin: TextIO) -> tuple[str, str]:
    """(JSON text, where it came from) from the argument or ``--file``: exactly one."""
    if (args.value is None) == (args.file is None):
        raise ValueError("give the output as JSON or with --file F (- for stdin), not both")
    if args.value is not None:
        return args.value, "the output argument"
    source = "the output on stdin" if args.file == "-" else f"the output in {args.file}"
    try:
        if args.file == "-":
            text = stdin.read(MAX_INPUT_CHARACTERS + 1)
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read(MAX_INPUT_CHARACTERS + 1)
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {source}: {error}") from None
    if len(text) > MAX_INPUT_CHARACTERS:
        raise ValueError(
            f"{source}: more than {MAX_INPUT_CHARACTERS} characters; an output is at most "
            "256 KiB encoded: store the data elsewhere (S3) and publish its key"
        )
    return text, source


def run_set(args: argparse.Namespace) -> int:
    command = "skydag output set"
    store = _store(args)
    try:
        value = parse_output(*read_output_text(args, sys.stdin))
        times = store.set_output(value)
    except Exception as error:
        return _failed(command, error, store)
    if args.output == "json":
        print(json.dumps(_as_json(store, value, times), indent=2))
    else:
        print(f"output of {_describe(store)}: published ({_times(times)})")
    return EXIT_OK


def run_get(args: argparse.Namespace) -> int:
    command = "skydag output get"
    store = _store(args)
    try:
        found = store.get_output()
    except Exception as error:
        return _failed(command, error, store)
    if found is None:
        print(
            f"{command}: {_describe(store)} has published no output ({store.where()})",
            file=sys.stderr,
        )
        return EXIT_MISSING
    print(json.dumps(found.value))
    return EXIT_OK


def _failed(command: str, error: Exception, store: TaskState) -> int:
    """Say on stderr what went wrong and where; return the exit code. Anything that is not
    a usage or store error is a bug and propagates."""
    from botocore.exceptions import BotoCoreError, ClientError

    from skydag.taskstate import MissingIdentity, TaskStateError

    if isinstance(error, MissingIdentity):
        message = f"no {error.part} id for the output: pass --{error.part} or set {error.variable}"
        code = EXIT_USAGE
    elif isinstance(error, TaskStateError):  # its message says what and where
        message, code = str(error), EXIT_STORE
    elif isinstance(error, ValueError):  # not JSON, too large, unreadable file
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
        try_number=args.try_number,
        table=args.table,
        endpoint_url=args.endpoint_url,
        region=args.region,
    )


def _describe(store: TaskState) -> str:
    return f"{store.dag}/{store.run}/{store.task} try {store.try_number}"


def _times(count: int) -> str:
    return "first time" if count == 1 else f"replacing an earlier one; {count} times in all"


def _as_json(store: TaskState, value: Any, times: int) -> dict[str, Any]:
    return {
        "dag": store.dag,
        "run": store.run,
        "task": store.task,
        "try_number": store.try_number,
        "output": value,
        "version": times,
    }
