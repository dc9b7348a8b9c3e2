"""`skydag validate FILE...` and `skydag schema`.

validate uses the very loader the dag-loader Lambda uses, so a file that passes here loads
once uploaded. Problems go to stderr one per line (``FILE: error: ...``) so editors and CI
can parse them; ``--output json`` gives the same facts as data on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from skydag.spec.json_schema import dag_file_schema
from skydag.spec.loader import DagFileError, Problem, load_dag_file


def register(commands: Any) -> None:
    """Add `validate` and `schema` to the `skydag` command's subparsers."""
    validate: argparse.ArgumentParser = commands.add_parser(
        "validate",
        help="validate DAG files",
        description="Check DAG files; print every problem as 'FILE: error: ...'.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="DAG file(s) to check")
    validate.add_argument("--output", choices=("text", "json"), default="text")
    validate.set_defaults(handler=run_validate)

    schema: argparse.ArgumentParser = commands.add_parser(
        "schema",
        help="print the DAG file JSON Schema",
        description="Print the DAG file JSON Schema (draft 2020-12), for editors.",
    )
    schema.add_argument("--output", choices=("json",), default="json")
    schema.set_defaults(handler=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    """Exit 0 when every file is valid, 1 otherwise; missing files are problems too."""
    results = [_check(path) for path in args.files]
    if args.output == "json":
        print(json.dumps([result.as_json() for result in results], indent=2))
    else:
        for result in results:
            if result.tasks is not None:
                plural = "" if result.tasks == 1 else "s"
                print(f"{result.file}: ok ({result.tasks} task{plural})")
            for problem in result.problems:
                print(problem, file=sys.stderr)
    return 0 if all(result.tasks is not None for result in results) else 1


@dataclass(frozen=True)
class _Result:
    file: str
    tasks: int | None  # None when the file is not valid
    problems: list[Problem]

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "valid": self.tasks is not None,
            "errors": [problem.to_dict() for problem in self.problems],
        }


def _check(path: str) -> _Result:
    try:
        spec = load_dag_file(path)
    except DagFileError as exc:
        return _Result(path, None, exc.problems)
    return _Result(path, len(spec.tasks), [])


def run_schema(args: argparse.Namespace) -> int:
    print(json.dumps(dag_file_schema(), indent=2))
    return 0
