"""Fixtures for the commands that act on a deployed skydag, against moto."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import Skydag, clear_location_variables

from skydag.settings import Settings


@pytest.fixture
def skydag(
    aws: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Skydag:
    """skydag found through the functions' environment variables (no stack lookup)."""
    clear_location_variables(monkeypatch)
    monkeypatch.setenv("SKYDAG_EVENT_BUS", aws.event_bus)
    monkeypatch.setenv("SKYDAG_DAG_BUCKET", aws.dag_bucket)
    monkeypatch.setenv("SKYDAG_DAGS_TABLE", aws.tables.dags)
    return Skydag(aws, capsys)


@pytest.fixture
def dag_file(tmp_path: Path) -> Callable[..., str]:
    """Write a DAG file under tmp_path; returns its path as a string."""

    def write(text: str, name: str = "dag.yaml") -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
