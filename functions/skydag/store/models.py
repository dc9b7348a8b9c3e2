"""PynamoDB models: one table per record kind. Table names are bound at run time.

Key design keeps every read of the engine bounded:
- task instances are keyed by run (``run_key``) and task id, so a task and its
  neighbourhood are a handful of GetItem/BatchGetItem calls;
- a downstream task carries its upstreams' states (``upstream``), so its trigger rule
  needs no read of the upstream items at all;
- sparse indexes hold only what is due (``due``: retries, timeouts and jobs to check
  on) or waiting (``queued``: runs waiting for a max_active_runs slot), so neither is
  ever scanned; ``token`` and ``job`` lead a service's event back to its try.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    MapAttribute,
    NumberAttribute,
    NumberSetAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from skydag.settings import Settings

DUE_SHARDS = 4


class DagModel(Model):
    class Meta:
        table_name: str | None = None
        region = "us-east-1"

    dag_id = UnicodeAttribute(hash_key=True)
    current_version = NumberAttribute(null=True)
    paused = BooleanAttribute(default=False)
    source = UnicodeAttribute(null=True)
    import_error = UnicodeAttribute(null=True)
    version = NumberAttribute(default=0)
    active_runs = UnicodeSetAttribute(null=True)
    # The active runs that hold a slot under a backfill's limit (see reserve_run_slot).
    active_backfills = UnicodeSetAttribute(null=True)
    last_scheduled_end = UTCDateTimeAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    # The highest version ever stored (a retired DAG has no current one but keeps counting).
    latest_version = NumberAttribute(null=True)
    # Event sources the current version subscribes to (see SignalSubscriptionModel).
    signal_sources = UnicodeSetAttribute(null=True)


class SignalSubscriptionModel(Model):
    """Who listens to an event source: one item per source, in the dags table.

    ``dag_id`` is ``sub:<source>`` (``sub:*`` for patterns without an exact source), a
    key no DAG id can take (ids never contain ':'). ``dags`` maps each subscribing DAG to
    ``{"v": version, "subs": JSON list of [task or null, kind, pattern]}``. A signal reads
    two items (its source and ``*``), never every DAG.
    """

    class Meta:
        table_name: str | None = None
        region = "us-east-1"

    dag_id = UnicodeAttribute(hash_key=True)
    dags: MapAttribute[str, Any] = MapAttribute(default=dict)


class EmitSourcesModel(Model):
    """Which DAG holds each declared ``emit_sources`` prefix: one item in the dags table,
    keyed ``emit:sources`` (no DAG id contains ':'), changed by conditional writes on
    ``version`` so two loaders never both take one prefix."""

    class Meta:
        table_name: str | None = None
        region = "us-east-1"

    dag_id = UnicodeAttribute(hash_key=True)
    holders = UnicodeAttribute(default="{}")  # JSON: prefix -> DAG id
    version = NumberAttribute(default=0)


class AwsSourcesModel(Model):
    """Every ``aws.*`` source a DAG has ever subscribed to: one item in the dags table,
    keyed ``aws:sources`` (no DAG id contains ':'). The dag loader reads the subscriptions
    under each (``sub:<source>``) to keep the default bus's forwarding rules in step; the
    set only grows (an ``ADD`` is atomic, a removal could race with a new subscriber), and
    a source nobody listens to any more has an empty subscription item."""

    class Meta:
        table_name: str | None = None
        region = "us-east-1"

    dag_id = UnicodeAttribute(hash_key=True)
    sources = UnicodeSetAttribute(null=True)


class DagVersionModel(Model):
    """One immutable DAG version. Its spec is an S3 object (``store/spec_objects.py``) the
    item points at; items written before that keep the spec inline (``spec``) and are
    still read."""

    class Meta:
        table_name: str | None = None
        region = "us-east-1"

    dag_id = UnicodeAttribute(hash_key=True)
    version = NumberAttribute(range_key=True)
    spec = UnicodeAttribute(null=True)  # the validated DAG as JSON (items of old releases)
    spec_key = UnicodeAttribute(null=True)  # the spec object in the DAG bucket
    spec_size = NumberAttribute(null=True)  # its bytes (gzip'd JSON)
    spec_sha256 = UnicodeAttribute(null=True)  # of those bytes
    source = UnicodeAttribute(null=True)
    sha256 = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()


class QueuedRunsIndex(GlobalSecondaryIndex["RunModel"]):
    """Runs waiting for a max_active_runs slot, oldest first (sparse)."""

    class Meta:
        index_name = "queued"
        projection = KeysOnlyProjection()

    dag_id = UnicodeAttribute(hash_key=True)
    queued_key = UnicodeAttribute(range_key=True)


class DueRunsIndex(GlobalSecondaryIndex["RunModel"]):
    """Runs whose entry stands for their covered tries' (``TaskInstance.covered``), by
    time (sparse, sharded, keys only): armed by a finish's count, looked at by the
    reconciler, which gives the tries still queued or running entries of their own."""

    class Meta:
        index_name = "due_runs"
        projection = KeysOnlyProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = UnicodeAttribute(range_key=True)


class RunModel(Model):
    class Meta:
        table_name: str | None = None
        region = "us-east-1"
        # The scheduler reacts to changes of these records (DynamoDB Streams).
        stream_view_type = "NEW_AND_OLD_IMAGES"

    dag_id = UnicodeAttribute(hash_key=True)
    run_id = UnicodeAttribute(range_key=True)
    dag_version = NumberAttribute()
    run_type = UnicodeAttribute()
    state = UnicodeAttribute()
    version = NumberAttribute(default=0)
    conf = UnicodeAttribute(default="{}")  # JSON
    logical_date = UTCDateTimeAttribute(null=True)
    data_interval_start = UTCDateTimeAttribute(null=True)
    data_interval_end = UTCDateTimeAttribute(null=True)
    trigger = UnicodeAttribute(null=True)  # JSON
    created_at = UTCDateTimeAttribute(null=True)
    started_at = UTCDateTimeAttribute(null=True)
    ended_at = UTCDateTimeAttribute(null=True)
    # Indexes (position in the DAG file) of finished tasks and of failed leaves. Sets
    # make counting idempotent (a redelivered event adds nothing) and stay small: a few
    # bytes a task, so the run item stays cheap to read and write.
    finished_idx = NumberSetAttribute(null=True)
    failed_leaf_idx = NumberSetAttribute(null=True)
    # A big DAG's run counts its finishes in finish tallies instead (FinishTallyModel), and
    # holds here only each done group's count of tasks and of failed leaves: group -> n.
    finished_groups: MapAttribute[str, Any] = MapAttribute(null=True)
    failed_groups: MapAttribute[str, Any] = MapAttribute(null=True)
    # task -> try holding a max_active_tasks slot; keyed by try so a late release of an
    # old try cannot free the slot of the current one.
    active: MapAttribute[str, Any] = MapAttribute(default=dict)
    throttled = UnicodeSetAttribute(null=True)
    tasks_created = BooleanAttribute(default=False)
    backfill_limit = NumberAttribute(null=True)
    reason = UnicodeAttribute(null=True)
    queued_key = UnicodeAttribute(null=True)
    queued_index = QueuedRunsIndex()
    due_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    due_index = DueRunsIndex()
    counted_at = UnicodeAttribute(null=True)  # the last count's time (ports/store.py Arming)
    counts_all = BooleanAttribute(null=True)  # (DagRun.counts_all)


class DueTasksIndex(GlobalSecondaryIndex["TaskInstanceModel"]):
    """Task instances with a due time (retry, timeout), by time (sparse, sharded).

    Keys only: an index entry is then a few dozen bytes, so entering, moving or leaving
    the index costs one write unit per entry whatever the task item weighs, and a write
    that leaves ``due_at`` alone costs nothing in the index. The reconciler reads the
    items it finds (consistent BatchGetItem) and judges each as it is then."""

    class Meta:
        # A new projection is a new index: "due" (projection ALL) became "due_keys".
        index_name = "due_keys"
        projection = KeysOnlyProjection()

    due_shard = UnicodeAttribute(hash_key=True)
    due_at = UnicodeAttribute(range_key=True)


class TokenIndex(GlobalSecondaryIndex["TaskInstanceModel"]):
    """A service's state-change event names its job by the dispatch token (job name,
    client token, payload): this finds the try it belongs to. Only the current try's
    token is indexed, so an event of a replaced try finds nothing and changes nothing."""

    class Meta:
        index_name = "token"
        projection = KeysOnlyProjection()

    dispatch_token = UnicodeAttribute(hash_key=True)


class JobIndex(GlobalSecondaryIndex["TaskInstanceModel"]):
    """For events that carry only the service's job id (no name to read a token from)."""

    class Meta:
        index_name = "job"
        projection = KeysOnlyProjection()

    job_id = UnicodeAttribute(hash_key=True)


class TaskInstanceModel(Model):
    class Meta:
        table_name: str | None = None
        region = "us-east-1"
        # The scheduler reacts to changes of these records (DynamoDB Streams).
        stream_view_type = "NEW_AND_OLD_IMAGES"

    run_key = UnicodeAttribute(hash_key=True)  # "<dag_id>#<run_id>"
    task_id = UnicodeAttribute(range_key=True)
    dag_id = UnicodeAttribute()
    run_id = UnicodeAttribute()
    dag_version = NumberAttribute(default=0)
    state = UnicodeAttribute()
    try_number = NumberAttribute(default=0)
    version = NumberAttribute(default=0)
    upstream: MapAttribute[str, Any] = MapAttribute(default=dict)
    # A wide join's summary of each tally group (engine/tallies.py): group number ->
    # "<version, 12 digits>|<state code>:<count>,...", ordered by version as strings.
    tallies: MapAttribute[str, Any] = MapAttribute(null=True)
    dispatch_token = UnicodeAttribute(null=True)
    job_id = UnicodeAttribute(null=True)
    # A try found by its key (engine/models.py ``found_by_key``) keeps its token and job
    # id here instead, where no index reads them: no index write for either.
    found_by_key = BooleanAttribute(null=True)
    try_token = UnicodeAttribute(null=True)
    try_job = UnicodeAttribute(null=True)
    exit_code = NumberAttribute(null=True)
    reason = UnicodeAttribute(null=True)
    queued_at = UTCDateTimeAttribute(null=True)
    started_at = UTCDateTimeAttribute(null=True)
    ended_at = UTCDateTimeAttribute(null=True)
    next_attempt_at = UTCDateTimeAttribute(null=True)
    timeout_at = UTCDateTimeAttribute(null=True)
    check_at = UTCDateTimeAttribute(null=True)
    signal = UnicodeAttribute(null=True)  # JSON
    output = UnicodeAttribute(null=True)  # JSON
    restarts = NumberAttribute(default=0)
    superseded_job = UnicodeAttribute(null=True)  # JSON
    applied = UnicodeAttribute(null=True)  # JSON list of command and signal ids
    # The tries left behind, oldest first: a compact JSON list (store/repositories.py
    # ``encode_tries``), bounded by engine/tries.py, written by the transition that
    # leaves a try behind.
    tries = UnicodeAttribute(null=True)
    # for_each (engine/mapping.py). An instance's key is ``<task>:<index>``; it carries
    # its expansion, item (JSON), release and counted finish. The mapped task carries its
    # instance count and finished/failed counters, each added to once per instance finish
    # (a few bytes whatever the number of items).
    expansion = NumberAttribute(null=True)
    item = UnicodeAttribute(null=True)  # JSON
    released = BooleanAttribute(null=True)
    counted = NumberAttribute(null=True)
    map_count = NumberAttribute(null=True)
    map_done = NumberAttribute(null=True)
    map_failed = NumberAttribute(null=True)
    # A finish told to a wide fan-out a chunk at a time: how many downstream tasks were
    # told, of which version (service/progress.py; no version bump of its own).
    reported_version = NumberAttribute(null=True)
    reported = NumberAttribute(null=True)
    claim_owned = BooleanAttribute(null=True)  # engine/models.py TaskInstance.claim_owned
    covered = BooleanAttribute(null=True)  # engine/models.py TaskInstance.covered
    slotted = BooleanAttribute(null=True)  # engine/models.py TaskInstance.slotted
    # The last write's stream record has nothing to do (engine/reactions.py): the stream's
    # filter drops it. Set by such a write only; every other write removes it.
    unheard = BooleanAttribute(null=True)
    due_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    due_index = DueTasksIndex()
    token_index = TokenIndex()
    job_index = JobIndex()


class TaskStateModel(Model):
    """Checkpoints (one try's task instance and its retries) and watermarks (across runs)."""

    class Meta:
        table_name: str | None = None
        region = "us-east-1"

    scope = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    value = UnicodeAttribute()  # JSON
    version = NumberAttribute(default=1)
    updated_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute(null=True)


class TallyModel(Model):
    """A group of a wide join's upstream reports (engine/tallies.py). In the task state
    table: its writes feed no stream, and it is no task instance to list with its run."""

    class Meta:
        table_name: str | None = None
        region = "us-east-1"

    scope = UnicodeAttribute(hash_key=True)  # ports/store.py tally_scope
    key = UnicodeAttribute(range_key=True)  # the group's number
    members: MapAttribute[str, Any] = MapAttribute(default=dict)  # position -> report
    version = NumberAttribute(default=0)


class FinishTallyModel(Model):
    """A group of a big run's finished tasks (engine/tallies.py ``finish_group``): their
    indexes, and those of its failed leaves; sets, so a finish counted twice counts once.
    In the task state table (no stream)."""

    class Meta:
        table_name: str | None = None
        region = "us-east-1"

    scope = UnicodeAttribute(hash_key=True)  # ports/store.py finish_scope
    key = UnicodeAttribute(range_key=True)  # the group's number
    done = NumberSetAttribute(null=True)
    failed = NumberSetAttribute(null=True)


ALL_MODELS: tuple[type[Model], ...] = (
    DagModel,
    DagVersionModel,
    RunModel,
    TaskInstanceModel,
    TaskStateModel,
)


def share_botocore_session() -> None:
    """Make PynamoDB's connections use the functions' one botocore session.

    PynamoDB makes a session per model connection (and thread), and each new session
    loads the endpoint data and DynamoDB's service model again: ~50 ms for each model a
    cold start touches (a job's event touches three), where a client from the shared,
    loaded session takes ~2 ms. PynamoDB has no setting for it, hence the module hook."""
    from pynamodb.connection import base

    from skydag.adapters import SharedSession

    # Not an exported name: set as an attribute of the module that calls it.
    setattr(base, "get_session", SharedSession)  # noqa: B010


def bind_models(settings: Settings) -> None:
    """Point every model at the tables and endpoint of ``settings``.

    PynamoDB reads ``Meta`` when it opens a connection; resetting the cached connection
    makes a later call use the new endpoint too.
    """
    share_botocore_session()
    names: dict[type[Model], str] = {
        DagModel: settings.tables.dags,
        DagVersionModel: settings.tables.dag_versions,
        RunModel: settings.tables.runs,
        TaskInstanceModel: settings.tables.task_instances,
        TaskStateModel: settings.tables.task_state,
    }
    # Models that share a table with another (not created on their own).
    names[SignalSubscriptionModel] = settings.tables.dags
    names[EmitSourcesModel] = settings.tables.dags
    names[AwsSourcesModel] = settings.tables.dags
    names[TallyModel] = settings.tables.task_state
    names[FinishTallyModel] = settings.tables.task_state
    for model, table_name in names.items():
        model.Meta.table_name = table_name
        model.Meta.region = settings.region
        model.Meta.host = settings.endpoint_url
        model._connection = None
    from skydag.store.dag_files import bind_dag_files  # shares the dags table
    from skydag.store.spec_objects import bind_spec_objects  # the versions' specs

    bind_dag_files(settings)
    bind_spec_objects(settings)


def create_tables(settings: Settings) -> None:
    """Create the tables as the CDK stack does (on-demand, streams, TTL), and the DAG
    bucket the versions' specs live in when it is missing: dev and tests."""
    bind_models(settings)
    for model in ALL_MODELS:
        if not model.exists():
            # create_table also enables TTL when the model has a TTLAttribute.
            model.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
    from skydag.store.spec_objects import spec_objects

    spec_objects().ensure_bucket()
