"""Which event sources a DAG may put events under (``emit:`` tasks), in one place.

skydag's own roles put ``skydag`` and ``skydag.*`` events (commands, ticks, timers,
notifications) and the router reads ``lambda`` as a Lambda job's result; AWS puts
``aws.*``. A DAG emits under its own namespace, ``skydag.dag.<its id>`` (the default), or
under a prefix its file declares in ``emit_sources`` and no other DAG holds, so no DAG can
cancel another's runs, forge its signals or speak for it. The loader checks literal
sources and the prefixes' owners; the dispatcher checks the rendered block. Pure:
standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from skydag.sources import DAG_SOURCE_PREFIX as DAG_NAMESPACE
from skydag.sources import LAMBDA_RESULT_SOURCE, SKYDAG_SOURCE

RESERVED_SOURCES = frozenset({SKYDAG_SOURCE, LAMBDA_RESULT_SOURCE})
RESERVED_PREFIXES = ("skydag.", "aws.")
MAX_SOURCE_LENGTH = 256
MAX_DETAIL_TYPE_LENGTH = 128
MAX_EVENT_BYTES = 256 * 1024
"""An EventBridge entry's size limit: source, detail-type and detail together."""
MAX_EMIT_SOURCES = 10
"""Prefixes one DAG may declare."""
PREFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*$"
_PREFIX = re.compile(PREFIX_PATTERN)
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
RESERVED_TEXT = "skydag, skydag.*, aws.* and lambda are reserved"


def default_source(dag_id: str) -> str:
    return f"{DAG_NAMESPACE}{dag_id}"


def is_under(source: str, prefix: str) -> bool:
    """``com.acme.orders`` is under ``com.acme`` (and under itself); ``com.acmex`` is not."""
    return source == prefix or source.startswith(prefix + ".")


def overlap(a: str, b: str) -> bool:
    return is_under(a, b) or is_under(b, a)


def is_reserved(source: str) -> bool:
    return source in RESERVED_SOURCES or source.startswith(RESERVED_PREFIXES)


def is_literal(text: str) -> bool:
    """A source written out in the file (no template markup): checkable when loading."""
    return not any(marker in text for marker in _TEMPLATE_MARKERS)


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be declared in ``emit_sources`` (None when it can)."""
    if not _PREFIX.match(prefix) or len(prefix) > MAX_SOURCE_LENGTH:
        return (
            f"'{prefix}' is not an event source prefix: dot-separated words of letters, "
            "digits, _ and -, such as com.acme.orders"
        )
    if is_reserved(prefix) or any(is_under(reserved, prefix) for reserved in RESERVED_SOURCES):
        return f"'{prefix}' is reserved ({RESERVED_TEXT}); declare your own prefix"
    if any(is_under(reserved.rstrip("."), prefix) for reserved in RESERVED_PREFIXES):
        return f"'{prefix}' would include reserved sources ({RESERVED_TEXT})"
    return None


def source_problem(source: str, dag_id: str, declared: Iterable[str]) -> str | None:
    """Why the DAG ``dag_id`` may not emit under ``source`` (None when it may)."""
    if not source:
        return "source is empty"
    if len(source) > MAX_SOURCE_LENGTH:
        return f"source is {len(source)} characters long (limit {MAX_SOURCE_LENGTH})"
    if is_under(source, default_source(dag_id)):
        return None
    declared = list(declared)
    if is_reserved(source):
        return (
            f"source '{source}' is reserved ({RESERVED_TEXT}); leave source out for "
            f"{default_source(dag_id)} or declare your own prefix in emit_sources"
        )
    if any(is_under(source, prefix) for prefix in declared):
        return None
    listed = ", ".join(declared) if declared else "none declared"
    return (
        f"source '{source}' is not under this DAG's namespace: leave source out for "
        f"{default_source(dag_id)}, or declare a prefix in emit_sources ({listed})"
    )


def emit_problem(target: Mapping[str, Any], dag_id: str, declared: Iterable[str]) -> str | None:
    """Why a rendered ``emit:`` block must not be put on the bus (None when it may)."""
    source = target.get("source") or default_source(dag_id)
    if not isinstance(source, str):
        return f"source must be a string, not {type(source).__name__}"
    return source_problem(source, dag_id, declared) or _shape_problem(target, source)


def _shape_problem(target: Mapping[str, Any], source: str) -> str | None:
    detail_type = target.get("detail-type")
    if not isinstance(detail_type, str) or not detail_type.strip():
        return "detail-type is empty"
    if len(detail_type) > MAX_DETAIL_TYPE_LENGTH:
        return f"detail-type is {len(detail_type)} characters long (limit {MAX_DETAIL_TYPE_LENGTH})"
    detail = target.get("detail") or {}
    if not isinstance(detail, Mapping):
        return f"detail must be a mapping, not {type(detail).__name__}"
    size = len(json.dumps(detail).encode()) + len(source.encode()) + len(detail_type.encode())
    if size > MAX_EVENT_BYTES:
        return f"the event is {size} bytes (limit {MAX_EVENT_BYTES})"
    return None


def conflicts(
    dag_id: str, wanted: Iterable[str], held: Mapping[str, str]
) -> dict[str, tuple[str, str]]:
    """``{wanted prefix: (held prefix, its DAG)}`` for each wanted prefix that another DAG
    holds, or holds one inside or around. ``held`` maps every held prefix to its DAG."""
    found: dict[str, tuple[str, str]] = {}
    for prefix in wanted:
        for other, owner in sorted(held.items()):
            if owner != dag_id and overlap(prefix, other):
                found[prefix] = (other, owner)
                break
    return found
