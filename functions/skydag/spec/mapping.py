"""``for_each`` in the DAG file: which template names only a mapped task has, and how a
rendered ``for_each`` becomes a list of items (or a one-line reason it does not)."""

from __future__ import annotations

import ast
import json
from typing import Any

from jinja2 import nodes

from skydag.limits import MAX_MAP_ITEMS
from skydag.spec.templates import ENVIRONMENT, has_template

# What only an instance of a mapped task sees in its templates.
MAPPED_NAMES = ("item", "task.map_index")


def mapping_references(text: str) -> list[str]:
    """The mapped-only names (``item``, ``task.map_index``) a template uses; [] for a
    template that does not compile (its syntax error is reported on its own)."""
    if not has_template(text):
        return []
    try:
        tree = ENVIRONMENT.parse(text)
    except Exception:  # reported by the template syntax check, with its line
        return []
    found: set[str] = set()
    for name in tree.find_all(nodes.Name):
        if name.name == "item" and name.ctx == "load":
            found.add("item")
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attribute: Any
        if isinstance(node, nodes.Getattr):
            target, attribute = node.node, node.attr
        elif isinstance(node, nodes.Getitem):
            target, attribute = node.node, getattr(node.arg, "value", None)
        else:
            continue
        if isinstance(target, nodes.Name) and target.name == "task" and attribute == "map_index":
            found.add("task.map_index")
    return [name for name in MAPPED_NAMES if name in found]


class ForEachProblem(ValueError):
    """A rendered ``for_each`` that is no list of at most MAX_MAP_ITEMS items."""


def items_of(rendered: Any) -> list[Any]:
    """The items of a rendered ``for_each``: a list as it is, or a string holding a JSON
    list (or the list a template printed, Python-style). Anything else is refused with
    the reason, as is a list over ``MAX_MAP_ITEMS``."""
    value = rendered
    if isinstance(value, str):
        value = _parse_list_text(value)
    if not isinstance(value, list):
        raise ForEachProblem(f"for_each rendered {_kind(value)}, not a list: {_short(rendered)}")
    if len(value) > MAX_MAP_ITEMS:
        raise ForEachProblem(f"for_each rendered {len(value)} items; the limit is {MAX_MAP_ITEMS}")
    return value


def _parse_list_text(text: str) -> Any:
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    try:
        # What ``{{ a_list }}`` prints: Python literals only (no code is evaluated).
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
