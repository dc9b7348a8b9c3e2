"""The docs' state diagram is generated from the transition table; this keeps them equal."""

from __future__ import annotations

from pathlib import Path

from skydag.engine.states import mermaid_diagram

ROOT = Path(__file__).resolve().parents[2]


def test_state_diagram_in_docs_matches_the_transition_table() -> None:
    text = (ROOT / "docs" / "states.md").read_text(encoding="utf-8")
    start = text.index("```mermaid\n") + len("```mermaid\n")
    end = text.index("```", start)
    assert text[start:end] == mermaid_diagram(), "run `make docs-states` to regenerate"
