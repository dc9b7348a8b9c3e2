"""Shared bits of the example jobs: who am I (from skydag's environment) and a place to write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def identity() -> str:
    names = ("SKYDAG_DAG", "SKYDAG_RUN", "SKYDAG_TASK", "SKYDAG_TRY")
    return " ".join(f"{n.removeprefix('SKYDAG_').lower()}={os.environ.get(n, '?')}" for n in names)


def workdir() -> Path:
    """A per-run folder shared by the run's tasks (dev mode runs them on one machine)."""
    run = os.environ.get("SKYDAG_RUN", "adhoc").replace(":", "_").replace("+", "_")
    path = Path(tempfile.gettempdir()) / "skydag-examples" / os.environ.get("SKYDAG_DAG", "x") / run
    path.mkdir(parents=True, exist_ok=True)
    return path
