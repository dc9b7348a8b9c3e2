"""The `skydag` command line: one module per command group, assembled here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from skydag.cli import dags, dev, info, logs, output, runs, state, tasks, trigger, ui, validate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skydag", description="A serverless workflow orchestrator for AWS."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate.register(commands)
    dev.register(commands)
    info.register(commands)
    dags.register(commands)
    trigger.register(commands)
    runs.register(commands)
    tasks.register(commands)
    logs.register(commands)
    state.register(commands)
    ui.register(commands)
    output.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except BrokenPipeError:
        # `skydag schema | head`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
