"""`skydag validate` and `skydag schema`. PLACEHOLDER: being written."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("validate", help="validate DAG files")
    parser.add_argument("files", nargs="+")
    parser.set_defaults(handler=lambda args: 0)
