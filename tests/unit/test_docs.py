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


def _github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (code blocks left out)."""
    import re

    seen: dict[str, int] = {}
    anchors = set()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", prose, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_every_link_to_a_heading_finds_it() -> None:
    """A link ``file.md#anchor`` (or ``#anchor``) in the README or docs names a heading
    that exists: a renamed heading breaks no link silently."""
    import re

    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    anchors = {path.resolve(): _github_anchors(path.read_text("utf-8")) for path in files}
    broken = [
        f"{path.name}: {target}#{anchor}"
        for path in files
        for target, anchor in re.findall(r"\]\(([^)\s#]*)#([^)\s]+)\)", path.read_text("utf-8"))
        if (resolved := (path.parent / target).resolve() if target else path.resolve()) in anchors
        and anchor not in anchors[resolved]
    ]
    assert not broken, broken
