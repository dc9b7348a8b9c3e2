"""Pure helpers both stores share (the DynamoDB repositories and the in-memory store):
the JSON form of stored values, time keys, and which event sources a pattern is indexed
under. Nothing here imports an AWS library."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from skydag.engine.models import DagRun
from skydag.limits import LimitError, signal_index_problem
from skydag.ports.store import ANY_SOURCE, ConflictError, TaskStateStore
from skydag.spec.models import DagSpec


def dumps(value: Any) -> str:
    """A stored JSON value: compact, keys sorted, anything else as its ``str``."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def run_key(dag_id: str, run_id: str) -> str:
    return f"{dag_id}#{run_id}"


def iso(moment: datetime) -> str:
    """A sortable UTC time key (microseconds, ``Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(key: str) -> datetime:
    """The time of an ``iso`` key."""
    return datetime.strptime(key, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def queued_key(run: DagRun) -> str:
    """A queued run's place in the queue: its logical date (or creation), then its id."""
    moment = run.logical_date or run.created_at or datetime.now(UTC)
    return f"{iso(moment)}#{run.run_id}"


def pattern_sources(pattern: Mapping[str, Any]) -> list[str]:
    """The exact sources a pattern can match, or ``*`` when it is not a list of strings."""
    sources = pattern.get("source")
    if isinstance(sources, list) and sources and all(isinstance(v, str) for v in sources):
        return sorted(set(sources))
    return [ANY_SOURCE]


def signal_sources(spec: DagSpec) -> set[str]:
    return {s for _, _, pattern in spec.iter_signal_patterns() for s in pattern_sources(pattern)}


def subscriptions_by_source(spec: DagSpec | None) -> dict[str, list[list[Any]]]:
    """The version's subscriptions, ``[task, kind, pattern]`` each, under every source."""
    grouped: dict[str, list[list[Any]]] = {}
    for task_id, kind, pattern in spec.iter_signal_patterns() if spec else ():
        for source in pattern_sources(pattern):
            grouped.setdefault(source, []).append([task_id, kind, pattern])
    return grouped


def check_signal_index(spec: DagSpec) -> None:
    """LimitError when the version's subscriptions cannot be indexed (checked before any
    write, so a DAG over the limit changes nothing)."""
    grouped = subscriptions_by_source(spec)
    problem = signal_index_problem({s: len(dumps(subs).encode()) for s, subs in grouped.items()})
    if problem is not None:
        raise LimitError(f"DAG '{spec.dag}': {problem}")


# The task-instance fields a write may change (besides state and version): stored as they
# are, as JSON, or (``tries``) as the compact try history.
TI_JSON_FIELDS = frozenset({"signal", "output", "superseded_job", "applied", "item"})
TI_PLAIN_FIELDS = frozenset(
    {
        "try_number",
        "dispatch_token",
        "job_id",
        "exit_code",
        "reason",
        "queued_at",
        "started_at",
        "ended_at",
        "next_attempt_at",
        "timeout_at",
        "check_at",
        "claim_owned",
        "covered",
        "slotted",
        "found_by_key",
        "restarts",
        # for_each (engine/mapping.py): an instance's expansion, release and counted
        # finish; a mapped task's instance count and finished/failed counters.
        "expansion",
        "released",
        "counted",
        "map_count",
        "map_done",
        "map_failed",
    }
)


def put_last_writer_wins(
    state: TaskStateStore,
    scope: str,
    key: str,
    value: Any,
    *,
    now: datetime,
    ttl: timedelta | None,
) -> int:
    """A task-state write without an expected version: compare-and-set on the version
    read, again when a concurrent write wins, so versions never repeat."""
    for _ in range(10):
        current = state.get(scope, key)
        try:
            return state.put(
                scope, key, value, now=now, expected_version=current[1] if current else 0, ttl=ttl
            )
        except ConflictError:
            continue
    raise ConflictError[Any](f"task state {scope}/{key}: too many concurrent writers", None)
