"""`skydag dev run`. PLACEHOLDER: being written."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    commands.add_parser("dev", help="the embedded environment")
