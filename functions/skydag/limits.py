"""Limits on untrusted input, defined once: run ids, JSON payloads, filesystem names.

One user's bad DAG, event or command must never hurt another's: every value that reaches a
store key, a recursive walk or a file path is checked here first, and refused with a
one-line message naming what is wrong and where. Standard library only, so that the CLI,
the router and the engine may all import it cheaply.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

# --- run ids -------------------------------------------------------------------------------

RUN_ID_CHARACTERS: Final = "A-Z a-z 0-9 _ . : + -"
MAX_RUN_ID_LENGTH: Final = 250
RUN_ID_PATTERN: Final = rf"^[A-Za-z0-9_.:+-]{{1,{MAX_RUN_ID_LENGTH}}}$"
"""A run id: 1 to 250 letters, digits and ``_ . : + -``. It admits every id skydag makes
(``manual__<ISO time>``, ``scheduled__...``, ``backfill__...``, ``signal__<event id>``),
keeps DynamoDB keys far below their 1 KB limit and has no ``#`` (the stores' key separator),
``/`` or whitespace."""
_RUN_ID: Final = re.compile(RUN_ID_PATTERN)


class LimitError(ValueError):
    """Input over a limit or outside its rule; the message names what and where."""


def is_valid_run_id(value: object) -> bool:
    return isinstance(value, str) and _RUN_ID.fullmatch(value) is not None


def check_run_id(value: object, where: str = "run id") -> str:
    """``value`` when it is a valid run id, else LimitError naming ``where``."""
    if is_valid_run_id(value):
        assert isinstance(value, str)
        return value
    raise LimitError(
        f"{where}: {short(value)} is not a valid run id "
        f"(1 to {MAX_RUN_ID_LENGTH} characters of {RUN_ID_CHARACTERS})"
    )


def derived_run_id(prefix: str, name: str) -> str:
    """``<prefix><name>`` when that is a valid run id, else ``<prefix>sha256-<digest>``:
    the same name always gives the same id (a redelivered event is the same run)."""
    candidate = f"{prefix}{name}"
    if is_valid_run_id(candidate):
        return candidate
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{prefix}sha256-{digest}"


# --- JSON payloads (a run's conf, a signal, a command) ---------------------------------------

MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""A conf or a signal: EventBridge's own limit for one event."""
MAX_JSON_DEPTH: Final = 32
"""Nesting levels of objects and arrays; keeps every recursive walk far from Python's limit."""


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of decoded JSON (a scalar is 0), counted without recursion; stops
    counting once past ``limit`` (returns ``limit + 1``), so a hostile value costs little."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        depth += 1
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def json_text_depth(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """The bracket nesting of JSON text, outside strings, without parsing it (the decoder
    recurses); stops once past ``limit``. Malformed text is the decoder's to report."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return deepest


def check_json_value(
    value: Any,
    where: str,
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> None:
    """Refuse decoded JSON nested deeper than ``max_depth`` or larger than ``max_bytes``
    once encoded; the depth is checked first, so encoding it is safe."""
    if json_depth(value, max_depth) > max_depth:
        raise LimitError(f"{where}: nested more than {max_depth} levels deep")
    size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
    if size > max_bytes:
        raise LimitError(f"{where}: {size} bytes, over the {max_bytes // 1024} KB limit")


def loads_bounded(
    text: str | bytes,
    where: str,
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Decode JSON text after checking its size and nesting (LimitError), so a hostile
    document never reaches the recursive decoder; malformed JSON raises ValueError.
    ``NaN`` and ``Infinity``, which Python reads but are not JSON, are a LimitError."""
    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
    if size > max_bytes:
        raise LimitError(f"{where}: {size} bytes, over the {max_bytes // 1024} KB limit")
    if json_text_depth(text, max_depth) > max_depth:
        raise LimitError(f"{where}: nested more than {max_depth} levels deep")

    def not_json(name: str) -> Any:
        raise LimitError(f"{where}: {name} is not a JSON value")

    return json.loads(text, parse_constant=not_json)


# --- file names ------------------------------------------------------------------------------

MAX_PATH_PART: Final = 100
"""Characters of one path component built from an id (file systems stop at 255 bytes)."""


def safe_path_part(text: str) -> str:
    """A file name made from an id (a DAG, run, task or signal id) that cannot climb out
    of its folder: only letters, digits and ``- _ . = + : @``, no leading dot, at most
    100 characters (a longer one ends with a digest of the whole, so names stay apart)."""
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "-_.=+:@" else "_" for c in text)
    cleaned = cleaned.lstrip(".") or "_"
    if len(cleaned) > MAX_PATH_PART:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        cleaned = f"{cleaned[: MAX_PATH_PART - 17]}-{digest}"
    return cleaned


def short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about hostile input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "DYNAMODB_ITEM_BYTES",
    "FINISH_GROUP",
    "FINISH_TALLY_AT",
    "MAX_JSON_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_RUN_ID_LENGTH",
    "RUN_ID_PATTERN",
    "RUN_TASK_SETS_BYTES",
    "SIGNAL_INDEX_BYTES",
    "TALLY_GROUP",
    "UPSTREAM_MAP_BYTES",
    "LimitError",
    "check_json_value",
    "check_run_id",
    "dag_size_problems",
    "derived_run_id",
    "is_valid_run_id",
    "json_depth",
    "json_text_depth",
    "loads_bounded",
    "run_task_sets_bytes",
    "safe_path_part",
    "short",
    "signal_index_problem",
    "upstream_map_bytes",
]

# Items of one for_each (mapped task): each item is one task instance.
MAX_MAP_ITEMS = 10_000


# --- DAG size: the DynamoDB items that grow with the DAG -------------------------------------
#
# A DAG version's spec is an S3 object, whatever its size; what still grows with the DAG
# are two DynamoDB items (400 KB each). Their sizes are estimated from the DAG, as
# DynamoDB counts them (a name's UTF-8 bytes, a number ~1 byte per 2 digits + 1, a map
# or set element ~1 byte more), and a DAG that could overflow one is an import error.

DYNAMODB_ITEM_BYTES: Final = 400 * 1024
UPSTREAM_MAP_BYTES: Final = 192 * 1024
"""Of a task instance item, what its upstream map may take (``upstream``: upstream id ->
reported state, one entry per ``depends_on``); the rest keeps room for its output, signal,
item and tries."""
FINISH_TALLY_AT: Final = 256
"""A run of a DAG with more tasks than this counts its finishes in finish tallies of
``FINISH_GROUP`` tasks each (engine/tallies.py ``finish_group``): its item holds a count
per done group instead of every finished task's index, so a finish's write is charged the
same whatever the DAG's size."""
FINISH_GROUP: Final = 200
TALLY_GROUP: Final = 64
"""A task with more upstreams than this (a wide join) is told their states through tally
items of this many upstreams each (engine/tallies.py): its own item holds one summary per
group instead of an entry per upstream, so a report's write is charged the same whatever
the width."""
RUN_TASK_SETS_BYTES: Final = 128 * 1024
"""Of a run item, what its per-task sets may take (finished and failed-leaf indexes, the
throttled tasks, the tasks holding a max_active_tasks slot); the rest keeps room for the
run's conf (up to 256 KB) and trigger."""
_UPSTREAM_ENTRY_OVERHEAD: Final = 5  # the element, and its encoded report (<= 6 digits)
_TALLY_SUMMARY_BYTES: Final = 64  # a group's number, version and count per finished state
_INDEX_BYTES: Final = 4  # a task index (< 100,000) in a number set
_SLOT_ENTRY_OVERHEAD: Final = 4  # the element, and its try number
_GROUP_COUNTS_BYTES: Final = 8  # a group's number and a count, in a map


def upstream_map_bytes(upstream: Sequence[str]) -> int:
    """What a task instance's upstream map takes once every upstream reported (a wide
    join's: a summary per group of ``TALLY_GROUP``)."""
    if len(upstream) > TALLY_GROUP:
        return -(-len(upstream) // TALLY_GROUP) * _TALLY_SUMMARY_BYTES
    return sum(len(task.encode()) + _UPSTREAM_ENTRY_OVERHEAD for task in upstream)


def run_task_sets_bytes(
    upstream: Mapping[str, Sequence[str]],
    order: Sequence[str],
    max_active_tasks: int,
    *,
    slots_bind: bool = True,
) -> int:
    """The most a run item's per-task sets can take for this DAG (``upstream``: each task's
    upstreams; ``order``: the tasks, upstreams first; ``slots_bind``: whether
    max_active_tasks can hold a task back, ``DagSpec.task_slots_bind``).

    Every task's index may be in the finished set, every leaf's in the failed one (a
    run of more than ``FINISH_TALLY_AT`` tasks holds two counts per group instead); the
    tasks waiting for a slot (throttled) and holding one (active) are at most the widest
    set of tasks ready at once, which no chain crosses twice: at most ``n - L + 1`` tasks
    for a longest chain of ``L``. Their ids are counted longest first. A DAG whose slots
    cannot bind keeps neither set."""
    has_downstream = {dep for deps in upstream.values() for dep in deps}
    leaves = sum(1 for task in upstream if task not in has_downstream)
    depth: dict[str, int] = {}
    for task in order:
        depth[task] = 1 + max((depth[dep] for dep in upstream[task]), default=0)
    longest = max(depth.values(), default=0)
    width = len(upstream) - longest + 1
    ids = sorted((len(task.encode()) for task in upstream), reverse=True)
    throttled = sum(size + 1 for size in ids[:width])
    active = sum(size + _SLOT_ENTRY_OVERHEAD for size in ids[: min(width, max_active_tasks)])
    slots = throttled + active if slots_bind else 0
    if len(upstream) > FINISH_TALLY_AT:
        # Counted in finish tallies: the run holds two counts per group of tasks.
        groups = -(-len(upstream) // FINISH_GROUP)
        return 2 * groups * _GROUP_COUNTS_BYTES + slots
    return _INDEX_BYTES * (len(upstream) + leaves) + slots


SIGNAL_INDEX_BYTES: Final = 64 * 1024
"""What one DAG's signal subscriptions may take: under each event source (its entry in the
``sub:<source>`` item every DAG listening to that source shares), and the sources listed
on its head."""


def signal_index_problem(entry_bytes: Mapping[str, int]) -> str | None:
    """Why a DAG's subscriptions (``entry_bytes``: source -> bytes of its entry) cannot be
    indexed, or None."""
    names = sum(len(source.encode()) + 1 for source in entry_bytes)
    if names > SIGNAL_INDEX_BYTES:
        return (
            f"signals: the DAG listens to {len(entry_bytes)} event sources (~{names // 1024} "
            f"KB of names), over the {SIGNAL_INDEX_BYTES // 1024} KB limit"
        )
    for source, size in sorted(entry_bytes.items()):
        if size > SIGNAL_INDEX_BYTES:
            return (
                f"signals: the patterns listening to source {short(source)} take "
                f"~{size // 1024} KB, over the {SIGNAL_INDEX_BYTES // 1024} KB limit: "
                "share fewer, smaller patterns"
            )
    return None


def dag_size_problems(
    upstream: Mapping[str, Sequence[str]],
    order: Sequence[str],
    max_active_tasks: int,
    *,
    slots_bind: bool = True,
) -> list[tuple[str | None, str]]:
    """(task or None for the DAG, message) for each item this DAG could overflow."""
    problems: list[tuple[str | None, str]] = []
    for task, deps in upstream.items():
        size = upstream_map_bytes(deps)
        if size > UPSTREAM_MAP_BYTES:
            problems.append(
                (
                    task,
                    f"{len(deps)} upstream tasks need ~{size // 1024} KB of its task "
                    f"instance to record their states, over the {UPSTREAM_MAP_BYTES // 1024} "
                    "KB limit: join them in stages (or use shorter task ids)",
                )
            )
    size = run_task_sets_bytes(upstream, order, max_active_tasks, slots_bind=slots_bind)
    if size > RUN_TASK_SETS_BYTES:
        problems.append(
            (
                None,
                f"{len(upstream)} tasks need up to ~{size // 1024} KB of each run's item to "
                f"track them, over the {RUN_TASK_SETS_BYTES // 1024} KB limit: split the DAG "
                "(or use shorter task ids)",
            )
        )
    return problems
