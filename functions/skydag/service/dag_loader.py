"""Loading DAG files: bytes → validated DAG → a new current version → its schedule.

What the dag-loader Lambda does for each S3 event on the DAG prefix (the handler reads the
object; everything after the bytes is here, so the rules are tested without S3):

- a valid file makes a new immutable version current (``save_version``), creates,
  updates or removes the DAG's EventBridge schedule (DISABLED while the DAG is paused)
  and, for a scheduled DAG, asks for a tick at once so a catchup starts now rather than
  at the next fire time;
- the same bytes again (an S3 redelivery, a re-upload) create nothing: the current
  version's sha256 is compared with the file's, the natural idempotency key, so no
  idempotency table is needed; the schedule is still put (a retry after a crash between
  the version and the schedule completes the work);
- a broken file changes nothing that runs: its errors (``FILE: error: ...`` lines) are
  recorded on the file record (so a file that never loaded appears in ``dags list``) and,
  when it names a DAG this file already defines, on that DAG's head, which keeps its
  previous version; a "DAG Import Error" event ``{source, dag, errors}`` is put once;
- a deleted file retires the DAG it defined (no current version, no schedule);
- S3 events for one key carry a ``sequencer``: an event older than the last one applied
  is ignored, so a late "Object Created" cannot undo a later upload or deletion;
- a file that defines a DAG another live file already defines is an import error: two
  files would otherwise overwrite each other's versions;
- after every load and retirement, the forwarding rules are brought in step with what
  the current versions subscribe to (``skydag.service.forwarding``); a DAG whose patterns
  would not fit in a family's rules is an import error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from skydag.engine.models import DagRecord
from skydag.limits import LimitError
from skydag.ports import Clock, EventSink
from skydag.ports.store import Store
from skydag.service.forwarding import EventForwarding, ForwardingRules
from skydag.sources import SCHEDULE_TICK
from skydag.spec.loader import DagFileError, load_dag_bytes, parse_yaml
from skydag.spec.models import ID_PATTERN, DagSpec
from skydag.store.dag_files import DagFile, DagFileRepository, is_older

DAG_IMPORT_ERROR = "DAG Import Error"
DAG_FILE_SUFFIXES = (".yaml", ".yml")

# How much of an import error each place keeps. The head is read on every trigger, so its
# copy stays short; the file record and the event carry more (the CLI shows the record).
HEAD_ERROR_BYTES = 4 * 1024
FILE_ERROR_BYTES = 32 * 1024
EVENT_ERROR_BYTES = 64 * 1024

_DAG_ID = re.compile(ID_PATTERN)


class DagSchedules(Protocol):
    """Where a DAG's recurring schedule lives (EventBridge Scheduler in production)."""

    def put_dag_schedule(self, spec: DagSpec, *, enabled: bool) -> object: ...

    def delete_dag_schedule(self, dag_id: str) -> object: ...


class LoadOutcome(StrEnum):
    LOADED = "loaded"  # a new version is current
    UNCHANGED = "unchanged"  # these bytes already are the current version
    IMPORT_ERROR = "import_error"  # the file is broken; what ran keeps running
    RETIRED = "retired"  # the file was deleted and its DAG retired
    REMOVED = "removed"  # the file was deleted; no DAG was loaded from it
    STALE = "stale"  # an older S3 event than one already applied
    IGNORED = "ignored"  # not a DAG file


@dataclass(frozen=True, slots=True)
class DagObject:
    """One S3 object (version) as an S3 event names it."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None

    @property
    def source(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class LoadResult:
    outcome: LoadOutcome
    source: str
    dag_id: str | None = None
    version: int | None = None
    errors: tuple[str, ...] = ()
    reason: str | None = None
    schedule: str | None = None  # the EventBridge expression put, if any
    forwarding: tuple[str, ...] = ()  # the forwarding rules this load changed

    def as_log(self) -> dict[str, Any]:
        fields = {
            "outcome": self.outcome.value,
            "source": self.source,
            "dag": self.dag_id,
            "version": self.version,
            "reason": self.reason,
            "schedule": self.schedule,
            "errors": list(self.errors) or None,
            "forwarding": list(self.forwarding) or None,
        }
        return {key: value for key, value in fields.items() if value is not None}


def dag_file_problem(key: str, prefix: str) -> str | None:
    """Why the object ``key`` is not a DAG file to load (None when it is one)."""
    if not key.startswith(prefix):
        return f"outside the DAG prefix {prefix!r}"
    if not key.lower().endswith(DAG_FILE_SUFFIXES):
        return "not a .yaml or .yml file"
    return None


def bounded_lines(lines: Sequence[str], max_bytes: int) -> list[str]:
    """As many whole lines as fit in ``max_bytes`` (UTF-8, newlines counted), then a line
    saying how many were left out."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        size = len(line.encode()) + 1
        if used + size > max_bytes - 64:  # room for the "... more" line
            kept.append(f"... and {len(lines) - index} more problems")
            break
        kept.append(line)
        used += size
    return kept


def named_dag(data: bytes, source: str) -> str | None:
    """The DAG id a (possibly invalid) file names, when its YAML reads and the id is valid."""
    try:
        document = parse_yaml(data, source)
    except DagFileError:
        return None
    value = document.get("dag") if isinstance(document, dict) else None
    return value if isinstance(value, str) and _DAG_ID.match(value) else None


def _s3_key(source: str) -> str | None:
    if not source.startswith("s3://"):
        return None
    _, _, key = source.removeprefix("s3://").partition("/")
    return key or None


class DagLoaderService:
    def __init__(
        self,
        repos: Store,
        files: DagFileRepository,
        schedules: DagSchedules,
        events: EventSink,
        clock: Clock,
        *,
        ticks: EventSink | None = None,
        forwarding: Sequence[ForwardingRules] = (),
        prefix: str = "dags/",
    ) -> None:
        self.repos = repos
        self.files = files
        self.schedules = schedules
        self.events = events
        self.clock = clock
        # Puts "Schedule Tick" {"dag": id} for the scheduler (source skydag.scheduler).
        self.ticks = ticks
        self.forwarding = EventForwarding(repos.dags, forwarding)
        self.prefix = prefix

    # --- a file was written ------------------------------------------------------------

    def file_written(self, obj: DagObject, data: bytes) -> LoadResult:
        problem = dag_file_problem(obj.key, self.prefix)
        if problem is not None:
            return LoadResult(LoadOutcome.IGNORED, obj.source, reason=problem)
        record = self.files.get(obj.key)
        if record is not None and is_older(obj.sequencer, record.sequencer):
            return LoadResult(LoadOutcome.STALE, obj.source, reason="a later event was applied")
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            spec = load_dag_bytes(data, obj.source)
        except DagFileError as error:
            return self._import_error(obj, record, data, sha256, [str(p) for p in error.problems])
        head = self.repos.dags.find(spec.dag)
        refused = self._refusal(spec, head, obj.source)
        if refused:
            return self._import_error(obj, record, data, sha256, refused)

        now = self.clock.now()
        unchanged = (
            head is not None
            and head.current_version is not None
            and head.source == obj.source
            and self.files.version_sha256(spec.dag, head.current_version) == sha256
        )
        if unchanged:
            assert head is not None
            assert head.current_version is not None
            version, outcome = head.current_version, LoadOutcome.UNCHANGED
            if head.import_error:
                # The good bytes are back after a broken upload: the error is over.
                self.files.set_head_import_error(spec.dag, obj.source, None)
        else:
            try:
                version = self.repos.dags.save_version(
                    spec, source=obj.source, sha256=sha256, now=now
                )
            except LimitError as error:  # no retry makes it fit: the file must change
                return self._import_error(
                    obj, record, data, sha256, [f"{obj.source}: error: {error}"]
                )
            outcome = LoadOutcome.LOADED
        paused = head.paused if head is not None else False
        expression = self._sync_schedule(spec, paused=paused)
        if outcome is LoadOutcome.LOADED and expression is not None and self.ticks is not None:
            self.ticks.put(SCHEDULE_TICK, {"dag": spec.dag})
        if record is not None and record.dag and record.dag != spec.dag and not record.deleted:
            # The file now defines another DAG: the one it defined before lost its file.
            self._retire(record.dag, obj.source)
        self.files.save(
            DagFile(
                key=obj.key,
                source=obj.source,
                dag=spec.dag,
                sha256=sha256,
                etag=obj.etag,
                object_version_id=obj.version_id,
                sequencer=obj.sequencer,
                dag_version=version,
            ),
            now=now,
        )
        forwarding = self.forwarding.converge()
        return LoadResult(
            outcome,
            obj.source,
            spec.dag,
            version,
            schedule=expression,
            forwarding=tuple(forwarding),
        )

    def _refusal(self, spec: DagSpec, head: DagRecord | None, source: str) -> list[str]:
        """Why a valid file still cannot become its DAG's current version (none: it can,
        and it now holds its ``emit_sources``)."""
        owner = self._other_owner(head, source)
        if owner is not None:
            return [
                f"{source}: error: DAG '{spec.dag}' is already defined by {owner}; "
                "a DAG is defined by one file"
            ]
        too_large = self.forwarding.problem(spec)
        if too_large is not None:
            return [f"{source}: error: {too_large}"]
        clashes = self.repos.dags.hold_emit_sources(spec.dag, list(spec.emit_sources))
        return [
            f"{source}: error: emit_sources: '{prefix}' overlaps '{held}', which DAG "
            f"'{holder}' declares; a source prefix belongs to one DAG"
            for prefix, (held, holder) in sorted(clashes.items())
        ]

    def _sync_schedule(self, spec: DagSpec, *, paused: bool) -> str | None:
        if spec.schedule is None:
            self.schedules.delete_dag_schedule(spec.dag)
            return None
        put = self.schedules.put_dag_schedule(spec, enabled=not paused)
        expression = getattr(put, "expression", None)
        return expression if isinstance(expression, str) else None

    def _other_owner(self, head: DagRecord | None, source: str) -> str | None:
        """The live file that defines the DAG of ``head``, when it is not ``source``."""
        if head is None or head.current_version is None or not head.source:
            return None
        if head.source == source:
            return None
        other_key = _s3_key(head.source)
        other = self.files.get(other_key) if other_key else None
        if other is None or other.deleted or other.dag != head.dag_id:
            # Not a file we know is live (its DAG came from elsewhere or it was renamed):
            # the new file takes the DAG over.
            return None
        return head.source

    def _import_error(
        self,
        obj: DagObject,
        record: DagFile | None,
        data: bytes,
        sha256: str,
        errors: list[str],
    ) -> LoadResult:
        dag_id = named_dag(data, obj.source) or (record.dag if record else None)
        if (
            record is not None
            and not record.deleted
            and record.sha256 == sha256
            and record.import_error is not None
        ):
            # The same broken bytes again (a redelivery): already recorded and reported.
            return LoadResult(
                LoadOutcome.IMPORT_ERROR,
                obj.source,
                dag_id,
                errors=tuple(errors),
                reason="already recorded",
            )
        now = self.clock.now()
        head_error = "\n".join(bounded_lines(errors, HEAD_ERROR_BYTES))
        # The DAGs this file defines keep running their version; their heads show why the
        # new upload did not replace it (only heads this file owns: set_head_import_error
        # checks the source).
        for affected in _unique([dag_id, record.dag if record else None]):
            self.files.set_head_import_error(affected, obj.source, head_error)
        self.events.put(
            DAG_IMPORT_ERROR,
            {
                "source": obj.source,
                "dag": dag_id,
                "errors": bounded_lines(errors, EVENT_ERROR_BYTES),
            },
        )
        self.files.save(
            DagFile(
                key=obj.key,
                source=obj.source,
                dag=dag_id,
                sha256=sha256,
                etag=obj.etag,
                object_version_id=obj.version_id,
                sequencer=obj.sequencer,
                import_error="\n".join(bounded_lines(errors, FILE_ERROR_BYTES)),
                dag_version=record.dag_version if record and record.dag == dag_id else None,
            ),
            now=now,
        )
        return LoadResult(LoadOutcome.IMPORT_ERROR, obj.source, dag_id, errors=tuple(errors))

    # --- a file was deleted --------------------------------------------------------------

    def file_deleted(self, obj: DagObject) -> LoadResult:
        problem = dag_file_problem(obj.key, self.prefix)
        if problem is not None:
            return LoadResult(LoadOutcome.IGNORED, obj.source, reason=problem)
        record = self.files.get(obj.key)
        if record is not None and is_older(obj.sequencer, record.sequencer):
            return LoadResult(LoadOutcome.STALE, obj.source, reason="a later event was applied")
        retired = None
        if record is not None and record.dag and not record.deleted:
            retired = record.dag if self._retire(record.dag, obj.source) else None
        self.files.save(
            DagFile(
                key=obj.key,
                source=obj.source,
                dag=record.dag if record else None,
                sequencer=obj.sequencer,
                deleted=True,
            ),
            now=self.clock.now(),
        )
        if retired is None:
            return LoadResult(
                LoadOutcome.REMOVED, obj.source, reason="no DAG was loaded from this file"
            )
        return LoadResult(LoadOutcome.RETIRED, obj.source, retired)

    def _retire(self, dag_id: str, source: str) -> bool:
        """Retire ``dag_id`` and drop its schedule, if ``source`` defines its current
        version (a DAG another file took over is left alone)."""
        head = self.repos.dags.find(dag_id)
        if head is None or head.source != source:
            return False
        if head.current_version is not None:
            self.files.set_head_import_error(dag_id, source, None)
            self.repos.dags.retire(dag_id, now=self.clock.now())
        # Also when already retired: a retry after a crash still frees its prefixes.
        self.repos.dags.hold_emit_sources(dag_id, [])
        # Also when already retired: a retry after a crash still removes the schedule.
        self.schedules.delete_dag_schedule(dag_id)
        self.forwarding.converge()
        return True


def _unique(values: Iterable[str | None]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if value and value not in seen:
            seen.append(value)
    return seen
