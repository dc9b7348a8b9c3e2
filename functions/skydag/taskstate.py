"""Task state from inside a job: checkpoints and watermarks, read and written by the job.

    from skydag import taskstate

    since = taskstate.get("watermark", "1970-01-01T00:00:00+00:00")     # task scope
    done = taskstate.get("checkpoint", {}, scope="instance")            # this task instance
    taskstate.put("checkpoint", {"pages": 3}, scope="instance", ttl=timedelta(days=7))
    taskstate.put("watermark", until)
    taskstate.set_output({"rows": 3})      # this try's output: outputs.<task> downstream

Two scopes:

* ``"task"`` (the default): one task across every run of its DAG, for watermarks
  ("extracted up to 2026-01-02"). A later run reads what an earlier run stored.
* ``"instance"``: one task instance (one run's task), kept across its retries, for
  checkpoints ("pages 1-3 are written"): a retried try resumes instead of starting over.

The job's identity comes from the variables skydag gives every job (``SKYDAG_DAG``,
``SKYDAG_RUN``, ``SKYDAG_TASK``), the table from ``SKYDAG_TASK_STATE_TABLE``, the endpoint
from ``AWS_ENDPOINT_URL`` (dev mode) and the region from ``AWS_REGION``/``AWS_DEFAULT_REGION``.
Values are JSON. Every write bumps the item's version; ``expected_version`` makes a write
compare-and-set (0: only if the key does not exist yet).

A job's *output* (``set_output``) is kept beside its state, under the scope
``out#<dag>#<run>#<task>`` and the key ``try/<N>`` of the try that published it
(``SKYDAG_TRY``): the scheduler reads the key of the try whose end it records, so what an
older try (or a try of a cleared task) publishes lands under its own key and can never
become the current try's output.

Items are written exactly as ``skydag.store.repositories.TaskStateRepository`` writes them
(same attributes, versions, TTL in epoch seconds, conditions), so the scheduler (templates'
``state``), ``skydag state`` and jobs all see the same values. This module imports nothing
of skydag and nothing but boto3, so a job starts fast and an image can ship this one file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal, NamedTuple

from botocore.config import Config
from botocore.exceptions import ClientError

from skydag.engine.models import instance_key

Scope = Literal["task", "instance"]
SCOPES: Final[tuple[Scope, ...]] = ("task", "instance")

DEFAULT_TTL: Final = timedelta(days=90)
"""How long a value is kept after its last write unless ``ttl`` says otherwise: the same
default as ``Settings.task_state_ttl_days`` (a test keeps the two equal)."""

MAX_VALUE_BYTES: Final = 256 * 1024
"""Largest encoded value. DynamoDB items stop at 400 KB, and task state is for small
checkpoints and watermarks: keep data in S3 and its key here."""

MAX_KEY_LENGTH: Final = 256
"""Longest key, in characters: a name such as ``watermark`` or ``pages/2026-01-01``, not
data (DynamoDB refuses sort keys over 1 KB). Control characters are refused."""
MAX_TTL: Final = timedelta(days=366)
"""Longest ``ttl``: a value still wanted after a year is rewritten within it."""

DAG_VARIABLE: Final = "SKYDAG_DAG"
RUN_VARIABLE: Final = "SKYDAG_RUN"
TASK_VARIABLE: Final = "SKYDAG_TASK"
TABLE_VARIABLE: Final = "SKYDAG_TASK_STATE_TABLE"
TRY_VARIABLE: Final = "SKYDAG_TRY"
MAP_INDEX_VARIABLE: Final = "SKYDAG_MAP_INDEX"

# Last writer wins without expected_version, but each write is still a compare-and-set
# on the version just read, so versions never repeat; this many lost races give up.
_WRITE_ATTEMPTS: Final = 10
# PynamoDB's UTCDateTimeAttribute text, which TaskStateModel.updated_at parses.
_UPDATED_AT_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%f+0000"
# A wrong endpoint should fail a job in seconds, not after botocore's 60 s default.
_CLIENT_CONFIG: Final = Config(connect_timeout=10, retries={"mode": "standard"})


class TaskStateError(Exception):
    """Task state could not be read or written; the message says what and where."""


class MissingIdentity(TaskStateError):
    """The job's identity is incomplete: ``variable`` is the environment variable to set."""

    def __init__(self, part: str, variable: str, needed_by: str) -> None:
        super().__init__(
            f"{variable} is not set: {needed_by} needs the {part} id, which skydag "
            "sets for every job (outside a job, set "
            f"{DAG_VARIABLE}, {TASK_VARIABLE} and, for the instance scope, {RUN_VARIABLE}; "
            f"for an output also {RUN_VARIABLE} and {TRY_VARIABLE})"
        )
        self.part = part
        self.variable = variable


class TableNotFound(TaskStateError):
    """The task state table does not exist where the client looked."""


class VersionedValue(NamedTuple):
    value: Any
    version: int


class VersionConflict(TaskStateError):
    """A compare-and-set lost: the stored version was not the expected one.

    ``current`` is the value as it is now (None when the key does not exist).
    """

    def __init__(self, message: str, current: VersionedValue | None) -> None:
        super().__init__(message)
        self.current = current


def check_key(key: Any) -> str:
    """``key`` when it is a valid task state key, else ValueError saying why."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a task state key is a non-empty string, got {_short(key)}")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"task state key {_short(key)}: {len(key)} characters, over the "
            f"{MAX_KEY_LENGTH}-character limit (a key names a value; keep data in the value)"
        )
    if not key.isprintable():
        raise ValueError(f"task state key {_short(key)}: control characters are not allowed")
    return key


def check_try_number(try_number: Any) -> int:
    """``try_number`` when it is a try's number (1 or more), else ValueError."""
    if isinstance(try_number, bool) or not isinstance(try_number, int) or try_number < 1:
        raise ValueError(f"a try number is 1 or more, got {_short(try_number)}")
    return try_number


def check_ttl(ttl: timedelta) -> timedelta:
    """``ttl`` when it is above zero and at most 366 days, else ValueError."""
    if ttl <= timedelta(0):
        raise ValueError(f"ttl must be positive, got {ttl}")
    if ttl > MAX_TTL:
        raise ValueError(f"ttl {ttl} is over the {MAX_TTL.days}-day limit")
    return ttl


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def task_scope_key(dag_id: str, task_id: str) -> str:
    """The table's ``scope`` for watermarks (the format of store.repositories.task_scope)."""
    return f"task#{dag_id}#{task_id}"


def instance_scope_key(dag_id: str, run_id: str, task_id: str) -> str:
    """The table's ``scope`` for checkpoints (store.repositories.instance_scope)."""
    return f"ti#{dag_id}#{run_id}#{task_id}"


def output_scope_key(dag_id: str, run_id: str, task_id: str) -> str:
    """The table's ``scope`` for a task instance's outputs (store.repositories.output_scope)."""
    return f"out#{dag_id}#{run_id}#{task_id}"


def output_key(try_number: int) -> str:
    """The table's ``key`` for one try's output (ports.store.output_key)."""
    return f"try/{try_number}"


def encode_output(value: Any) -> str:
    """``value`` as the output is stored (compact JSON), or ValueError saying why it
    cannot be an output: not JSON, or over 256 KiB encoded."""
    return _encode(value, "job output")


def default_table(environ: Mapping[str, str]) -> str:
    """The task state table's name, found as ``Settings.from_env`` finds it."""
    prefix = environ.get("SKYDAG_TABLE_PREFIX", "skydag")
    return environ.get(TABLE_VARIABLE) or f"{prefix}-task-state"


@dataclass
class TaskState:
    """One task's state in one table. ``dag``/``task`` (and ``run`` for the instance scope)
    are checked when a scope is used, so a task-scope reader needs no run id."""

    dag: str | None
    task: str | None
    run: str | None = None
    table: str = "skydag-task-state"
    try_number: int | None = None
    endpoint_url: str | None = None
    region: str = "us-east-1"
    # The job's item of a mapped task (for_each): its checkpoints and output are its own.
    map_index: int | None = None
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dag: str | None = None,
        run: str | None = None,
        task: str | None = None,
        try_number: int | None = None,
        table: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        map_index: int | None = None,
    ) -> TaskState:
        """The job's own state, from the SKYDAG_* variables; arguments override them."""
        env = os.environ if environ is None else environ
        return cls(
            dag=dag or env.get(DAG_VARIABLE) or None,
            task=task or env.get(TASK_VARIABLE) or None,
            run=run or env.get(RUN_VARIABLE) or None,
            try_number=try_number or _try_from(env),
            table=table or default_table(env),
            endpoint_url=endpoint_url or env.get("AWS_ENDPOINT_URL") or None,
            region=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            map_index=map_index if map_index is not None else _map_index_from(env),
        )

    def scope_key(self, scope: Scope) -> str:
        if scope not in SCOPES:
            raise ValueError(f"unknown task state scope {scope!r}: expected 'task' or 'instance'")
        needed_by = f"the {scope} scope"
        dag = self._require("dag", self.dag, DAG_VARIABLE, needed_by)
        task = self._require("task", self.task, TASK_VARIABLE, needed_by)
        if scope == "task":
            return task_scope_key(dag, task)
        run = self._require("run", self.run, RUN_VARIABLE, needed_by)
        return instance_scope_key(dag, run, instance_key(task, self.map_index))

    def output_location(self) -> tuple[str, str]:
        """(scope, key) of this try's output: the job's task instance and try number."""
        needed_by = "a job output"
        dag = self._require("dag", self.dag, DAG_VARIABLE, needed_by)
        run = self._require("run", self.run, RUN_VARIABLE, needed_by)
        task = self._require("task", self.task, TASK_VARIABLE, needed_by)
        if self.try_number is None:
            raise MissingIdentity("try", TRY_VARIABLE, needed_by)
        instance = instance_key(task, self.map_index)
        return output_scope_key(dag, run, instance), output_key(check_try_number(self.try_number))

    def where(self) -> str:
        """Where the values live, for messages: table and endpoint (or region)."""
        return f"table {self.table} at {self.endpoint_url or f'AWS {self.region}'}"

    # --- reads -------------------------------------------------------------------------

    def get(self, key: str, default: Any = None, *, scope: Scope = "task") -> Any:
        """The stored value, or ``default`` when the key has none."""
        found = self.get_versioned(key, scope=scope)
        return default if found is None else found.value

    def get_versioned(self, key: str, *, scope: Scope = "task") -> VersionedValue | None:
        """The value with its version (for ``put(..., expected_version=)``), or None."""
        return self._get_at(self.scope_key(scope), check_key(key))

    def get_output(self) -> VersionedValue | None:
        """What this try published with ``set_output`` (and how many times), or None."""
        return self._get_at(*self.output_location())

    def _get_at(self, scope_key: str, key: str) -> VersionedValue | None:
        response = self._call(
            "get_item",
            Key=_item_key(scope_key, key),
            ConsistentRead=True,
            ProjectionExpression="#value, #version",
            ExpressionAttributeNames={"#value": "value", "#version": "version"},
        )
        item = response.get("Item")
        if item is None:
            return None
        return VersionedValue(json.loads(item["value"]["S"]), int(item["version"]["N"]))

    # --- writes ------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: Any,
        *,
        scope: Scope = "task",
        ttl: timedelta | None = None,
        expected_version: int | None = None,
    ) -> int:
        """Store ``value``; returns its new version.

        With ``expected_version`` the write happens only if the stored version is that one
        (0: only if the key has no value yet), else VersionConflict. Without it the last
        writer wins. The value expires ``ttl`` (default 90 days) after this write.
        """
        check_key(key)
        encoded = _encode(value, f"task state {key!r}")
        lifetime = check_ttl(DEFAULT_TTL if ttl is None else ttl)
        return self._write(self.scope_key(scope), key, encoded, lifetime, expected_version)

    def set_output(self, value: Any) -> int:
        """Publish ``value`` as this try's output, for ``outputs.<task>`` downstream.

        It is stored under this try's number (``SKYDAG_TRY``): the scheduler takes it when
        it records the end of this very try. Calling it again replaces it (last writer
        wins); returns how many times this try has published. ValueError when ``value`` is
        not JSON or is over 256 KiB encoded; MissingIdentity outside a job.
        """
        encoded = encode_output(value)
        return self._write(*self.output_location(), encoded, DEFAULT_TTL, None)

    def _write(
        self,
        scope_key: str,
        key: str,
        encoded: str,
        ttl: timedelta,
        expected_version: int | None,
    ) -> int:
        if expected_version is not None:
            return self._put_if(scope_key, key, encoded, ttl, expected_version)
        current: VersionedValue | None = None
        for _ in range(_WRITE_ATTEMPTS):
            current = self._get_at(scope_key, key)
            try:
                return self._put_if(scope_key, key, encoded, ttl, current.version if current else 0)
            except VersionConflict:
                continue
        raise VersionConflict(
            f"task state {scope_key}/{key}: too many concurrent writers "
            f"({_WRITE_ATTEMPTS} attempts) in {self.where()}",
            current,
        )

    def _put_if(
        self, scope_key: str, key: str, encoded: str, ttl: timedelta, expected_version: int
    ) -> int:
        if expected_version < 0:
            raise ValueError(f"expected_version must be 0 or more, got {expected_version}")
        now = datetime.now(UTC)
        new_version = expected_version + 1
        item = {
            **_item_key(scope_key, key),
            "value": {"S": encoded},
            "version": {"N": str(new_version)},
            "updated_at": {"S": now.strftime(_UPDATED_AT_FORMAT)},
            # DynamoDB TTL: whole epoch seconds (PynamoDB's TTLAttribute truncates too).
            "expires_at": {"N": str(int((now + ttl).timestamp()))},
        }
        if expected_version == 0:
            condition: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#key)",
                "ExpressionAttributeNames": {"#key": "key"},
            }
        else:
            condition = {
                "ConditionExpression": "#version = :expected",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":expected": {"N": str(expected_version)}},
            }
        try:
            self._call("put_item", Item=item, **condition)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            current = self._get_at(scope_key, key)
            found = f"version {current.version}" if current else "no value"
            raise VersionConflict(
                f"task state {scope_key}/{key}: expected version "
                f"{expected_version}, found {found} in {self.where()}",
                current,
            ) from error
        return new_version

    # --- internals ---------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        if self._client is None:
            import boto3  # here, not at import: the handlers import this module too

            self._client = boto3.client(
                "dynamodb",
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=_CLIENT_CONFIG,
            )
        try:
            response: dict[str, Any] = getattr(self._client, operation)(
                TableName=self.table, **kwargs
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise TableNotFound(
                    f"no task state {self.where()}: the table does not exist"
                ) from error
            raise
        return response

    @staticmethod
    def _require(part: str, value: str | None, variable: str, needed_by: str) -> str:
        if not value:
            raise MissingIdentity(part, variable, needed_by)
        return value


def _item_key(scope_key: str, key: str) -> dict[str, Any]:
    return {"scope": {"S": scope_key}, "key": {"S": key}}


def _try_from(environ: Mapping[str, str]) -> int | None:
    """The try number in SKYDAG_TRY; None when it is missing or not a try number (a job
    output then fails with MissingIdentity naming the variable)."""
    text = environ.get(TRY_VARIABLE, "").strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) >= 1 else None


def _map_index_from(environ: Mapping[str, str]) -> int | None:
    """The item index in SKYDAG_MAP_INDEX (set for the jobs of a mapped task only)."""
    text = environ.get(MAP_INDEX_VARIABLE, "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _encode(value: Any, what: str) -> str:
    """JSON as the repository writes it (compact, sorted keys); dates become ISO 8601.
    ``what`` names the value in errors (``task state 'watermark'``, ``job output``)."""
    try:
        encoded = json.dumps(
            value, separators=(",", ":"), sort_keys=True, default=_iso_dates, allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"{what}: the value must be JSON: {error}") from error
    size = len(encoded.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        raise ValueError(
            f"{what}: the value is {size} bytes encoded, over the "
            f"{MAX_VALUE_BYTES}-byte limit; store the data elsewhere (S3) and keep its key here"
        )
    return encoded


def _iso_dates(value: Any) -> str:
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- the job's own state (from its environment) ----------------------------------------------

_ENVIRONMENT = (
    DAG_VARIABLE,
    RUN_VARIABLE,
    TASK_VARIABLE,
    TRY_VARIABLE,
    TABLE_VARIABLE,
    "SKYDAG_TABLE_PREFIX",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


@lru_cache(maxsize=8)
def _state_for(environment: tuple[tuple[str, str], ...]) -> TaskState:
    # Cached per environment so a job's calls share one boto3 client (creating one costs
    # tens of milliseconds), while a changed environment (tests) gets its own.
    return TaskState.from_env(dict(environment))


def current() -> TaskState:
    """The state of the task this process runs as (from its SKYDAG_* environment)."""
    return _state_for(
        tuple((name, os.environ[name]) for name in _ENVIRONMENT if name in os.environ)
    )


def get(key: str, default: Any = None, *, scope: Scope = "task") -> Any:
    """This task's value for ``key`` (``scope="instance"``: this task instance's)."""
    return current().get(key, default, scope=scope)


def get_versioned(key: str, *, scope: Scope = "task") -> VersionedValue | None:
    """This task's value and version for ``key``, or None."""
    return current().get_versioned(key, scope=scope)


def put(
    key: str,
    value: Any,
    *,
    scope: Scope = "task",
    ttl: timedelta | None = None,
    expected_version: int | None = None,
) -> int:
    """Store this task's value for ``key``; returns the new version (see TaskState.put)."""
    return current().put(key, value, scope=scope, ttl=ttl, expected_version=expected_version)


def set_output(value: Any) -> int:
    """Publish ``value`` (JSON, at most 256 KiB encoded) as this try's output: downstream
    templates see it as ``outputs.<task>`` (see TaskState.set_output)."""
    return current().set_output(value)


def get_output() -> Any:
    """What this try published with ``set_output``, or None."""
    found = current().get_output()
    return None if found is None else found.value


__all__ = [
    "DEFAULT_TTL",
    "SCOPES",
    "MissingIdentity",
    "Scope",
    "TableNotFound",
    "TaskState",
    "TaskStateError",
    "VersionConflict",
    "VersionedValue",
    "check_key",
    "check_try_number",
    "check_ttl",
    "current",
    "encode_output",
    "get",
    "get_output",
    "get_versioned",
    "instance_scope_key",
    "output_key",
    "output_scope_key",
    "put",
    "set_output",
    "task_scope_key",
]
