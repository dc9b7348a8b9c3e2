"""The service layer stays cut into collaborators (the scheduler service once was one
1,082-line class): no module of ``skydag/service`` grows past 400 lines."""

from __future__ import annotations

from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "functions" / "skydag" / "service"
MOST_LINES = 400


def test_no_service_module_is_over_400_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in SERVICE.glob("*.py")}
    assert len(sizes) > 10  # the folder was found
    assert {name: n for name, n in sizes.items() if n > MOST_LINES} == {}
