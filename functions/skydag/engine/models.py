"""Plain records the engine reasons about. The store converts them to and from DynamoDB."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from skydag.engine.states import RunState, TaskState
from skydag.limits import MAX_MAP_ITEMS

# A mapped task's instances are stored beside it, keyed ``<task>:<index>`` (task ids never
# contain ':'), the index zero-padded so that a key-ordered read gives item order.
MAP_KEY_SEPARATOR = ":"
_MAP_INDEX_WIDTH = len(str(MAX_MAP_ITEMS - 1))


def instance_key(task_id: str, map_index: int | None) -> str:
    """The store key of a task instance: the task id, or ``<task>:<index>`` for one
    instance of a mapped task (``for_each``)."""
    if map_index is None:
        return task_id
    return f"{task_id}{MAP_KEY_SEPARATOR}{map_index:0{_MAP_INDEX_WIDTH}d}"


def split_instance_key(key: str) -> tuple[str, int | None]:
    """(task id, map index or None) of a store key made by ``instance_key``."""
    task_id, separator, index = key.partition(MAP_KEY_SEPARATOR)
    return (task_id, int(index)) if separator else (task_id, None)


def map_key_prefix(task_id: str) -> str:
    """What every instance key of a mapped task starts with."""
    return f"{task_id}{MAP_KEY_SEPARATOR}"


class RunType(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    SIGNAL = "signal"
    BACKFILL = "backfill"


@dataclass(frozen=True, slots=True)
class UpstreamReport:
    """What a downstream task knows of one upstream: its state at a given version.

    A tombstone (``cleared``) is what a clear of the upstream leaves: the upstream is not
    done (``pending``), and every report of ``version`` or older is stale, so a finish
    reported late, after the clear, is refused instead of being taken as news."""

    state: TaskState
    version: int
    cleared: bool = False
    # Told by a task that takes max_active_tasks slots where its DAG's shape alone would
    # not (``TaskInstance.slotted``): the downstream task takes them too. Not stored with
    # the report (the downstream's own ``slotted`` is), nor compared.
    slotted: bool = field(default=False, compare=False)

    @classmethod
    def tombstone(cls, version: int) -> UpstreamReport:
        """The mark of a clear of the upstream at ``version``."""
        return cls(TaskState.PENDING, version, cleared=True)


@dataclass(frozen=True, slots=True)
class Tally:
    """What a wide join holds of one group of its upstreams (engine/tallies.py): how many
    of them finished in each state, as the group's tally item was at ``version``."""

    version: int
    counts: Mapping[TaskState, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TallyMembers:
    """A group's tally item: the reports of its upstreams by position in the group, and
    the item's version (one more per report written)."""

    version: int = 0
    members: Mapping[int, UpstreamReport] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TallyWrite:
    """A report told to a group's tally item: the item before and after. ``written``:
    False when the item held the report already (told before), both then the same."""

    before: TallyMembers
    after: TallyMembers
    written: bool = True


@dataclass(frozen=True, slots=True)
class FinishGroup:
    """Where a big run counts a task's finish (engine/tallies.py ``finish_group``): the
    group's number and how many tasks it has."""

    number: int
    size: int


@dataclass(frozen=True, slots=True)
class TryRecord:
    """One try of a task instance as it ended (or as it is, for the current try).

    ``state`` is the try's own outcome: a try whose task is up for retry failed."""

    try_number: int
    state: TaskState
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    job_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TaskInstance:
    dag_id: str
    run_id: str
    task_id: str
    # The run's pinned DAG version, copied here so a job report needs no read of the run.
    dag_version: int = 0
    state: TaskState = TaskState.PENDING
    # 0 until first dispatched; each dispatch (retry, restart) is a new try.
    try_number: int = 0
    # Optimistic-concurrency version: every write expects it and increments it.
    version: int = 0
    # Upstream states reported to this task: its trigger rule reads only these, and, for a
    # wide join, the summaries of its tally groups (group number -> tally) instead.
    upstream: Mapping[str, UpstreamReport] = field(default_factory=dict)
    tallies: Mapping[int, Tally] = field(default_factory=dict)
    dispatch_token: str | None = None
    job_id: str | None = None
    # The try's job events name this task instance (its target puts the identity where
    # the service's events echo it): they find it by its key, so the store keeps the
    # token and the job id out of its lookup indexes (no index write for either).
    found_by_key: bool = False
    exit_code: int | None = None
    reason: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    next_attempt_at: datetime | None = None
    timeout_at: datetime | None = None
    # When the reconciler should ask the service about the job if no event came first.
    check_at: datetime | None = None
    # The → queued write of this try was made by an invocation that starts its job
    # itself (it told an upstream's finish at once): that invocation owns the claim, and
    # the write's own stream record stands down while the claim runs (``dispatch_claim``).
    claim_owned: bool = False
    # The try was queued by a finish told downstream in the invocation that then counts
    # the finish on the run (``covered_dispatch``): while queued or running it has no
    # entry of its own in the due index; the run's own entry, which that count arms,
    # stands for it (store contract ``has_due_entry``; the reconciler's ``uncover``).
    covered: bool = False
    # Its tries take max_active_tasks slots although its DAG's shape alone never runs more
    # tasks at once than slots (engine/slots.py): an operator's clear or mark set it, or a
    # finish told from such a task; it stays for the run.
    slotted: bool = False
    signal: Mapping[str, Any] | None = None
    output: Any = None
    # Tries started by restart_on signals: they do not use up the task's retries.
    restarts: int = 0
    # The job of a try that ended while it was live (a restart, stop, mark or timeout):
    # the change that sets it is what cancels it (engine/tries.py ``job_left_live``), so a
    # crash after the write cannot lose the cancel: the stream record is redelivered.
    superseded_job: Mapping[str, Any] | None = None
    # Ids of the commands and signals applied to this task, newest last and bounded
    # (engine/commands.py): a duplicate delivered after the task moved on is refused.
    applied: tuple[str, ...] = ()
    # Tries left behind (by a new try, a clear, or a mark after a retry was scheduled),
    # oldest first and bounded (engine/tries.py); the current try is the fields above.
    tries: tuple[TryRecord, ...] = ()
    # --- for_each (engine/mapping.py) ---
    # An instance of a mapped task: its position in the list, the expansion of the mapped
    # task it belongs to (the mapped task's try number when it expanded), and its item.
    map_index: int | None = None
    expansion: int = 0
    item: Any = None
    # An instance of the current expansion that may run (max_parallel lets it).
    released: bool = False
    # The version whose finish was counted on the mapped task (each finish counts once).
    counted: int | None = None
    # The mapped task itself (map_index None): its instances in the current expansion,
    # and how many of them finished and failed (each counted once by its instance).
    map_count: int | None = None
    map_done: int = 0
    map_failed: int = 0
    # A wide fan-out is told of this task's finish (or its service's start) a chunk per
    # invocation: how many downstream tasks were told, of version ``reported_version``
    # (another version's count is stale: none of the current one was told yet).
    reported_version: int | None = None
    reported: int = 0

    @property
    def instance_id(self) -> str:
        """The store key within the run: the task id, or ``<task>:<index>``."""
        return instance_key(self.task_id, self.map_index)

    @property
    def is_mapped_instance(self) -> bool:
        return self.map_index is not None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dag_id, self.run_id, self.instance_id)


@dataclass(frozen=True, slots=True)
class DagRun:
    dag_id: str
    run_id: str
    dag_version: int
    run_type: RunType
    state: RunState = RunState.QUEUED
    version: int = 0
    conf: Mapping[str, Any] = field(default_factory=dict)
    logical_date: datetime | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    trigger: Mapping[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # A run ends when finished_count reaches its number of tasks and fails when
    # failed_leaves > 0; both are counted once per task finish (see RunRepository).
    finished_count: int = 0
    failed_leaves: int = 0
    # Which tasks (their index in the DAG file) the counts hold. A big run counts in
    # finish tallies (engine/tallies.py ``finish_group``): these then hold the one group
    # read with the run (``get_with_run``), or none.
    finished_idx: frozenset[int] = frozenset()
    failed_leaf_idx: frozenset[int] = frozenset()
    # Tasks holding a max_active_tasks slot, and ready tasks waiting for one.
    active: frozenset[str] = frozenset()
    throttled: frozenset[str] = frozenset()
    reason: str | None = None
    # Set once every task instance is written: only then may the run start (a trigger
    # cut short between the two writes is finished by its redelivery).
    tasks_created: bool = False
    # The last stamp of a finish's count, or of an arming for the tries a finish covers
    # (ports/store.py Arming): the run is disarmed only once it is old enough.
    counted_at: datetime | None = None
    # A run counting on its item counts its leaves' finishes (engine/scheduler.py
    # finish_counts); once they are all counted and a task is found unfinished, the
    # finishes found then are counted and every later finish counts (``counts_all``).
    counts_all: bool = False
    # A backfill's --max-active-runs: at most this many of the DAG's runs that carry a
    # limit run at once (their slots are also counted in ``DagRecord.active_backfills``).
    backfill_limit: int | None = None


@dataclass(frozen=True, slots=True)
class DagRecord:
    """The head of a DAG: which version is current, and DAG-wide counters."""

    dag_id: str
    current_version: int | None = None
    paused: bool = False
    source: str | None = None
    import_error: str | None = None
    version: int = 0
    active_runs: frozenset[str] = frozenset()
    last_scheduled_end: datetime | None = None
    # The running runs that hold a slot under a backfill limit (a subset of active_runs).
    active_backfills: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class JobReport:
    """What a worker or a service's state-change event says about one try of a task."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    status: JobStatus
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    # What the service returned (a Lambda response, a Step Functions output).
    output: Any = None
    at: datetime | None = None
    # What the job published for this try (``skydag output set``), read from the task
    # state table when the try ends; it wins over ``output`` (engine/rules.py ``try_output``).
    published_output: Any = None
    map_index: int | None = None

    @property
    def instance_id(self) -> str:
        return instance_key(self.task_id, self.map_index)


class JobStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
