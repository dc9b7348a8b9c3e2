"""The DAG loader's per-file records: what each DAG file in S3 last was, and whether it loaded.

They live in the dags table under ``file:<s3 key>``, a key no DAG id can take (ids never
contain ':'), so:

- a file that never loaded is still listed (``dags list``) with its source and error;
- a redelivered S3 event is recognised (same sha256), and a late one is refused: S3's
  ``sequencer`` orders the events of one key, and it is stored left-padded so DynamoDB's
  string comparison orders it too;
- deleting a file finds the DAG it defined (the record names it) without any scan.

A deleted file leaves a tombstone (``deleted``) carrying its sequencer, so a late
"Object Created" for an older write cannot bring the DAG back.

The loader also notes import errors on a DAG's head and checks which bytes made the
current version; those two small reads and writes of the DAG tables are here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pynamodb.attributes import (
    BooleanAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.models import Model

from skydag.settings import Settings
from skydag.store.errors import is_condition_failure
from skydag.store.models import DagModel, DagVersionModel

FILE_KEY_PREFIX = "file:"
# S3 sequencers are hex strings of varying length: compare them left-padded to this width.
SEQUENCER_WIDTH = 64


class DagFileModel(Model):
    """One DAG file (an S3 key) in the dags table; not in ALL_MODELS (it has no table)."""

    class Meta:
        table_name: str | None = None
        region = "us-east-1"
        host: str | None = None

    dag_id = UnicodeAttribute(hash_key=True)  # "file:<s3 key>"
    source = UnicodeAttribute()  # s3://bucket/key
    dag = UnicodeAttribute(null=True)  # the DAG the file defines (or names, when broken)
    sha256 = UnicodeAttribute(null=True)
    etag = UnicodeAttribute(null=True)
    object_version_id = UnicodeAttribute(null=True)
    sequencer = UnicodeAttribute(null=True)  # normalised: see sequencer_key
    import_error = UnicodeAttribute(null=True)
    dag_version = NumberAttribute(null=True)  # the version this file last produced
    deleted = BooleanAttribute(default=False)
    updated_at = UTCDateTimeAttribute()


def bind_dag_files(settings: Settings) -> None:
    """Point the file records at the dags table (call beside ``bind_models``)."""
    DagFileModel.Meta.table_name = settings.tables.dags
    DagFileModel.Meta.region = settings.region
    DagFileModel.Meta.host = settings.endpoint_url
    DagFileModel._connection = None


def file_record_key(s3_key: str) -> str:
    return f"{FILE_KEY_PREFIX}{s3_key}"


def is_file_record(dag_id: str) -> bool:
    """True for a dags-table item that is a file record, not a DAG head."""
    return dag_id.startswith(FILE_KEY_PREFIX)


def sequencer_key(sequencer: str | None) -> str | None:
    """S3's rule for ordering two sequencers of one key: pad the shorter with leading
    zeros, then compare as strings (upper-cased here: the hex digits' case varies)."""
    if not sequencer:
        return None
    return sequencer.upper().rjust(SEQUENCER_WIDTH, "0")


def is_older(sequencer: str | None, than: str | None) -> bool:
    """Whether an event with ``sequencer`` happened before the one recorded as ``than``
    (unknown sequencers are never older: without one the order is unknown)."""
    mine, theirs = sequencer_key(sequencer), sequencer_key(than)
    return mine is not None and theirs is not None and mine < theirs


@dataclass(frozen=True, slots=True)
class DagFile:
    key: str  # the S3 key
    source: str  # s3://bucket/key
    dag: str | None = None
    sha256: str | None = None
    etag: str | None = None
    object_version_id: str | None = None
    sequencer: str | None = None
    import_error: str | None = None
    dag_version: int | None = None
    deleted: bool = False
    updated_at: datetime | None = None


def _from_model(item: DagFileModel) -> DagFile:
    return DagFile(
        key=item.dag_id.removeprefix(FILE_KEY_PREFIX),
        source=item.source,
        dag=item.dag,
        sha256=item.sha256,
        etag=item.etag,
        object_version_id=item.object_version_id,
        sequencer=item.sequencer,
        import_error=item.import_error,
        dag_version=None if item.dag_version is None else int(item.dag_version),
        deleted=bool(item.deleted),
        updated_at=item.updated_at,
    )


class DagFileRepository:
    def get(self, s3_key: str) -> DagFile | None:
        try:
            item = DagFileModel.get(file_record_key(s3_key), consistent_read=True)
        except DoesNotExist:
            return None
        return _from_model(item)

    def save(self, file: DagFile, *, now: datetime) -> bool:
        """Write the record unless one from a later S3 event is there; False then."""
        item = DagFileModel(
            file_record_key(file.key),
            source=file.source,
            dag=file.dag,
            sha256=file.sha256,
            etag=file.etag,
            object_version_id=file.object_version_id,
            sequencer=sequencer_key(file.sequencer),
            import_error=file.import_error,
            dag_version=file.dag_version,
            deleted=file.deleted,
            updated_at=now,
        )
        condition = None
        mine = sequencer_key(file.sequencer)
        if mine is not None:
            condition = (
                DagFileModel.dag_id.does_not_exist()
                | DagFileModel.sequencer.does_not_exist()
                | (DagFileModel.sequencer <= mine)
            )
        try:
            item.save(condition=condition)
        except PutError as error:
            if not is_condition_failure(error):
                raise
            return False
        return True

    def list_import_errors(self) -> list[DagFile]:
        """Live files whose last upload did not load (a scan: for ``dags list`` only)."""
        condition = (
            DagFileModel.dag_id.startswith(FILE_KEY_PREFIX)
            & DagFileModel.import_error.exists()
            & (DagFileModel.deleted == False)  # noqa: E712 (a DynamoDB condition)
        )
        files = [_from_model(item) for item in DagFileModel.scan(filter_condition=condition)]
        return sorted(files, key=lambda file: file.source)

    # --- the DAG head, as the loader sees it ----------------------------------------------

    def version_sha256(self, dag_id: str, version: int) -> str | None:
        """The sha256 of the file bytes that made ``version`` (None when unknown)."""
        try:
            item = DagVersionModel.get(dag_id, version, attributes_to_get=["sha256"])
        except DoesNotExist:
            return None
        sha256: str | None = item.sha256
        return sha256

    def set_head_import_error(self, dag_id: str, source: str, error: str | None) -> bool:
        """Show (or, with None, clear) an import error on a DAG's head, if ``source`` is
        the file the DAG's current version came from; False otherwise.

        The head's optimistic version is left alone on purpose: the note changes nothing
        the scheduler decides on, and a concurrent good upload (save_version) clears it.
        """
        action = (
            DagModel.import_error.remove() if error is None else DagModel.import_error.set(error)
        )
        condition = DagModel.current_version.exists() & (DagModel.source == source)
        try:
            DagModel(dag_id).update(actions=[action], condition=condition)
        except UpdateError as failure:
            if not is_condition_failure(failure):
                raise
            return False
        return True
