"""The seeded fault-injection simulator: one scenario on the local cloud, with or without
faults, and what came of it.

``simulate(seed, faulty=False)`` is the oracle: the scenario of the seed
(``scenario.build_scenario``) on a fresh local cloud with nothing injected.
``simulate(seed, faulty=True)`` runs the same scenario with the seed's faults
(``faults.FaultRates``): duplicated, delayed and reordered deliveries on every channel,
lost best-effort service events, crashes after a random AWS call, throttling, stale
eventually consistent DynamoDB reads (``faults.StaleReads``); the
``quick`` profile spares the paths of open findings (``faults.SPARES``). Each returns an
``Outcome`` (plain data, so that a worker process can send it back); ``invariants`` checks
each and compares the two, and ``sweep.run_seeds`` runs both for each seed, in two
processes at once (the machine has two cores).

Signals and commands are sent by the ``Driver`` when the streams show the state their
script waits for, and the next step waits until the streams show the previous one acted.

What the simulation changes in the stack, for both runs alike, and why:

- the reconciler runs every second (``Timing``) and the scheduler's own check intervals
  are compressed (``COMPRESSED``: a running job is described after 1 s without news
  instead of 10 minutes, an unconfirmed dispatch re-attached after 1 s instead of 2
  minutes, a failing item looked at again after 1 to 5 s), so that a lost event is
  repaired within the seed;
- SQS hands a failed batch back after 3 s instead of 6 minutes and gathers batches for
  0.1 s instead of 1 s; Lambda retries a failed asynchronous invocation after 0.5 and 1 s
  instead of 1 and 2 minutes; the played EventBridge Scheduler reads its schedules every
  0.25 s instead of every second (a retry's timer still fires on its whole second);
- up to four invocations at once (``CONCURRENCY``). Nothing else differs from the
  deployed stack.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from skydag import wiring
from skydag.engine.states import FINISHED_RUN_STATES, FINISHED_TASK_STATES, TaskState
from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions, Timing
from skydag.localcloud.hooks import Deliveries, Delivery
from skydag.localcloud.sources import StreamSource
from skydag.store.models import bind_models
from skydag.store.repositories import Repositories

from .faults import PROFILES, CallStatus, FaultInjector, FaultRates, botocore_hook
from .recorder import JobCalls, Mirror
from .scenario import Condition, Scenario, Step, build_scenario

TIMING = Timing(
    reconcile_every=timedelta(seconds=1),
    async_retry_delays=(0.5, 1.0),
    batching_window=timedelta(seconds=0.1),
    visibility_timeout=timedelta(seconds=3),
    schedules_every=0.25,
)
# The scheduler's intervals, compressed for the simulation (module constants, patched in
# every module that imported them, restored afterwards).
COMPRESSED = {
    "RUNNING_CHECK_EVERY": timedelta(seconds=1),
    "RUNNING_CHECK_MAX": timedelta(seconds=4),
    # Two passes (one a second), as on AWS (two of five minutes).
    "LOOK_WINDOW": timedelta(seconds=2),
    "RECONCILE_EVERY": timedelta(seconds=1),
    # As on AWS, longer than any invocation that may hold a dispatch's claim takes (an
    # invocation here can take seconds on a loaded machine; a claim of 1 s let a slow
    # dispatch and the reconciler's both call EMR: soak seed 632 of f4f5a46).
    "DISPATCH_CHECK_AFTER": timedelta(seconds=15),
    # An armed run is looked at soon: its tries are uncovered and the run disarmed while
    # finishes are still being counted, so those races meet the faults too.
    "RUN_CHECK_AFTER": timedelta(seconds=2),
    # As DISPATCH_CHECK_AFTER, longer than any invocation here takes.
    "LONGEST_INVOCATION": timedelta(seconds=13),
    "ARM_REFRESH": timedelta(seconds=1),
    "RUN_QUIET": timedelta(seconds=15),
    "RECONCILE_BACKOFF_MIN": timedelta(seconds=1),
    "RECONCILE_BACKOFF_MAX": timedelta(seconds=5),
}
COMPRESSED_IN = (
    "skydag.engine.rules",
    "skydag.engine.scheduler",
    "skydag.service.scheduler_service",
    "skydag.service.covering",
    "skydag.service.reconciler",
)
# Downstream tasks told per invocation, in both runs: the shapes' fan-outs (three wide)
# are told in chunks, so a chunk's count and its stream record meet the faults too.
REPORT_CHUNK = 2
# Upstreams per tally group, in both runs: a fan's join of three branches is a wide join
# (two groups), one of two is told directly, so both ways meet the faults.
TALLY_GROUP = 2
# A run of more tasks counts its finishes in finish tallies of FINISH_GROUP tasks, in both
# runs: the shapes of five tasks or more do, the smaller ones count on the run's item.
FINISH_TALLY_AT = 4
FINISH_GROUP = 2
# Invocations at once (``LocalCloudOptions.concurrency``), in both runs: up to four
# scheduler batches, the two tables' stream shards side by side, overlapping reconciler
# ticks, so conditional writes lose races and the re-decide paths run.
CONCURRENCY = 4
# See ``route_held_stream_records``.
WORK_AROUND_HELD_STREAM_RECORDS = True
LOAD_TIMEOUT = 60.0
RUN_TIMEOUT = 100.0  # every run finished and every script sent, or the seed is stuck
SETTLE_TIMEOUT = 20.0  # then nothing left in flight: deliveries, messages, jobs
SETTLE_WHEN_STUCK = 3.0


@dataclass
class Outcome:
    """What one simulation ended with (plain data)."""

    seed: int
    faulty: bool
    runs: dict[str, str] = field(default_factory=dict)  # "dag/run" -> state
    tasks: dict[str, tuple[str, int]] = field(default_factory=dict)  # "dag/run/task"
    # "dag/run/task" -> [(try, state, job id, reason)], oldest first, the current try last.
    tries: dict[str, list[tuple[int, str, str | None, str | None]]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)  # "dag/run/task" -> restarts
    jobs: dict[str, int] = field(default_factory=dict)  # dispatch token -> jobs started
    crashed_invokes: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    rates: str = ""
    # Problems seen while running: (invariant, evidence).
    problems: list[tuple[str, str]] = field(default_factory=list)
    unexpected_runs: list[str] = field(default_factory=list)
    jobs_left: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    invocations: dict[str, int] = field(default_factory=dict)
    aws_calls: int = 0
    seconds: float = 0.0
    # The most handler invocations in flight at once, and the races they lost (each
    # ConflictError the store raised: a conditional write refused, re-decided).
    max_in_flight: int = 0
    conflicts: int = 0


@contextlib.contextmanager
def compressed_intervals() -> Iterator[None]:
    saved: list[tuple[Any, str, Any]] = []
    for name in COMPRESSED_IN:
        module = importlib.import_module(name)
        for constant, value in COMPRESSED.items():
            if hasattr(module, constant):
                saved.append((module, constant, getattr(module, constant)))
                setattr(module, constant, value)
    try:
        yield
    finally:
        for module, constant, value in reversed(saved):
            setattr(module, constant, value)


@contextlib.contextmanager
def small_report_chunks() -> Iterator[None]:
    from skydag.service.progress import TaskProgress

    saved = TaskProgress.report_chunk
    TaskProgress.report_chunk = REPORT_CHUNK
    try:
        yield
    finally:
        TaskProgress.report_chunk = saved


@contextlib.contextmanager
def small_tally_groups() -> Iterator[None]:
    from skydag.service.core import Scheduler
    from skydag.service.joins import WideJoins

    saved = WideJoins.group, Scheduler.finish_tally_at, Scheduler.finish_group_size
    WideJoins.group = TALLY_GROUP
    Scheduler.finish_tally_at, Scheduler.finish_group_size = FINISH_TALLY_AT, FINISH_GROUP
    try:
        yield
    finally:
        WideJoins.group, Scheduler.finish_tally_at, Scheduler.finish_group_size = saved


@contextlib.contextmanager
def counting_conflicts() -> Iterator[list[int]]:
    """Count the ConflictErrors the store raises (lost races) while inside."""
    from skydag.store.errors import ConflictError

    count = [0]
    lock = threading.Lock()
    original = ConflictError.__init__

    def init(self: Any, message: str, current: Any) -> None:
        with lock:
            count[0] += 1
        original(self, message, current)

    ConflictError.__init__ = init  # type: ignore[method-assign]
    try:
        yield count
    finally:
        ConflictError.__init__ = original  # type: ignore[method-assign]


class Driver:
    """Sends the scenario's scripts: each step once its conditions hold (read from the
    mirror of the streams), the next one once the streams show the step's effect."""

    SLOT_CHECK_EVERY = 0.2  # seconds between two reads of a DAG's run slots
    # Every run finished but a task not: how long to wait for the tasks once the tables
    # too say every task finished (the mirror may lag: a record held by a fault) before
    # ending anyway (a task left behind is then a violation, seen at the end). While the
    # tables still hold an unfinished task, the driver waits on (up to RUN_TIMEOUT): a
    # clear's tasks show pending before the run's reopening, which a crashed and
    # redelivered clear can delay by many seconds (soak seed 204 ended a run too early).
    TASKS_GRACE = 5.0
    TABLES_CHECK_EVERY = 0.5  # seconds between two reads of the runs' task instances

    def __init__(
        self,
        cloud: LocalCloud,
        scenario: Scenario,
        mirror: Mirror,
        repos: Repositories,
        spare: frozenset[str] = frozenset(),
    ) -> None:
        self.cloud = cloud
        self.scenario = scenario
        self.mirror = mirror
        self.repos = repos
        self.spare = spare
        self.scripts = [list(script) for script in scenario.scripts]
        # Per script, the step sent whose effect is awaited, and the change count then.
        self.awaited: list[tuple[Step, int] | None] = [None] * len(self.scripts)
        self._slots_read_at = 0.0
        self._tables_read_at = 0.0
        self._tables_unfinished = True
        self._slots: dict[str, frozenset[str]] = {}
        self._tasks_behind_since: float | None = None

    def holds(self, condition: Condition) -> bool:
        mirror = self.mirror
        if condition.task is None:
            state = mirror.run_state(condition.dag, condition.run)
            return state is not None and state.value in condition.states
        ti = mirror.task(condition.dag, condition.run, condition.task)
        if ti is None or ti.state.value not in condition.states:
            return False
        return condition.try_number is None or ti.try_number == condition.try_number

    def ready(self, step: Step) -> bool:
        if not all(self.holds(c) for c in step.when):
            return False
        if "commands" in self.spare and step.action.source == wiring.COMMAND_SOURCE:
            # Spared (F9): sent while nothing else is handled, so that it races no report.
            cloud = self.cloud
            busy = (
                cloud.invoker.in_flight()
                or cloud.queue_source.pending()
                or cloud.bridge.pending()
                or cloud.deliveries.held()
            )
            if busy:
                return False
        if "commands" in self.spare and step.action.detail_type == "Clear Task":
            # Spared (F7): the clear waits until the run's end was handled (its slot freed).
            dag_id, run_id, _task = step.action.acts_on
            return run_id not in self._run_slots(dag_id)
        return True

    def _run_slots(self, dag_id: str) -> frozenset[str]:
        if time.monotonic() - self._slots_read_at >= self.SLOT_CHECK_EVERY:
            self._slots_read_at = time.monotonic()
            head = self.repos.dags.find(dag_id)
            self._slots[dag_id] = head.active_runs if head is not None else frozenset()
        return self._slots.get(dag_id, frozenset())

    def advance(self) -> bool:
        """Send what is due; True once every step is sent and seen to act, and every run
        finished."""
        changes = self.mirror.changes
        for index, script in enumerate(self.scripts):
            while True:
                awaited = self.awaited[index]
                if awaited is not None:
                    step, baseline = awaited
                    if changes[step.action.acts_on] <= baseline:
                        break
                    self.awaited[index] = None
                if not script or not self.ready(script[0]):
                    break
                step = script.pop(0)
                self.awaited[index] = (step, changes[step.action.acts_on])
                self.send(step)
        if any(self.scripts) or any(self.awaited):
            return False
        runs = set(self.scenario.runs)
        if not all(
            (state := self.mirror.run_state(dag, run)) is not None and state in FINISHED_RUN_STATES
            for dag, run in runs
        ):
            self._tasks_behind_since = None
            return False
        # Every task finished too, or TASKS_GRACE passed since the tables said so.
        if not self._tasks_behind():
            return True
        now = time.monotonic()
        if self._unfinished_in_tables(now):
            self._tasks_behind_since = None
            return False
        if self._tasks_behind_since is None:
            self._tasks_behind_since = now
        return now - self._tasks_behind_since >= self.TASKS_GRACE

    def _unfinished_in_tables(self, now: float) -> bool:
        """Whether a task of a scenario run is unfinished in the table (read at most every
        TABLES_CHECK_EVERY seconds; the last answer in between)."""
        if now - self._tables_read_at >= self.TABLES_CHECK_EVERY:
            self._tables_read_at = now
            self._tables_unfinished = any(
                ti.state not in FINISHED_TASK_STATES
                for dag, run in self.scenario.runs
                for ti in self.repos.tasks.list_for_run(dag, run)
            )
        return self._tables_unfinished

    def _tasks_behind(self) -> list[str]:
        runs = set(self.scenario.runs)
        return sorted(
            f"{dag}/{run}/{task}={ti.state.value}@{ti.try_number}"
            for (dag, run, task), ti in self.mirror.tasks.items()
            if (dag, run) in runs and ti.state not in FINISHED_TASK_STATES
        )

    def send(self, step: Step) -> None:
        """PutEvents on the skydag bus, as the CLI and ``aws events put-events`` do."""
        action = step.action
        entry = {
            "Source": action.source,
            "DetailType": action.detail_type,
            "Detail": json.dumps(dict(action.detail), separators=(",", ":")),
            "EventBusName": self.cloud.settings.event_bus,
            "Time": datetime.now(UTC),
        }
        response = self.cloud.client("events").put_events(Entries=[entry])
        if response.get("FailedEntryCount"):
            raise RuntimeError(f"PutEvents refused {action.describe()}: {response}")

    def waiting_on(self) -> list[str]:
        """What the driver still waits for (evidence for a stuck seed)."""
        found = []
        for index, script in enumerate(self.scripts):
            awaited = self.awaited[index]
            if awaited is not None:
                found.append(f"{awaited[0].action.describe()} sent, no effect seen yet")
            elif script:
                unmet = [c.describe() for c in script[0].when if not self.holds(c)]
                found.append(f"{script[0].action.describe()} waits for {', '.join(unmet)}")
        for dag, run in self.scenario.runs:
            state = self.mirror.run_state(dag, run)
            if state is None or state not in FINISHED_RUN_STATES:
                tasks = sorted(
                    f"{ti.task_id}={ti.state.value}@{ti.try_number}"
                    for key, ti in self.mirror.tasks.items()
                    if key[:2] == (dag, run)
                )
                found.append(f"run {dag}/{run} is {state}: {' '.join(tasks)}")
        if behind := self._tasks_behind():
            found.append(f"tasks not finished: {' '.join(behind)}")
        return found


@contextlib.contextmanager
def warnings_to(cloud: LocalCloud) -> Iterator[None]:
    """The handlers' warnings and errors (a record retried, a cancel that failed, a task
    uncounted, ...) go to the local cloud's log, next to what caused them, instead of the
    Powertools logger's JSON on stdout."""

    class ToCloudLog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if self is on_root and record.name.split(".")[0] == "skydag":
                return  # seen by the handler on "skydag" already
            extra = {k: record.__dict__[k] for k in ("what", "error") if k in record.__dict__}
            details = " ".join(f"{key}={value}" for key, value in extra.items())
            cloud.say(
                f"{record.levelname.lower()} {record.name}", f"{record.getMessage()} {details}"
            )

    handler, on_root = ToCloudLog(logging.WARNING), ToCloudLog(logging.WARNING)
    powertools = logging.getLogger("skydag")
    saved = list(powertools.handlers)
    for old in saved:
        powertools.removeHandler(old)
    powertools.addHandler(handler)
    root = logging.getLogger()
    root.addHandler(on_root)
    try:
        yield
    finally:
        root.removeHandler(on_root)
        powertools.removeHandler(handler)
        for old in saved:
            powertools.addHandler(old)


def route_held_stream_records(source: StreamSource, deliveries: Deliveries) -> None:
    """Deliver each delayed stream record to its own shard.

    Works around a local cloud bug (``StreamSource._fetch``, ``localcloud/sources.py``):
    each shard drains every due held record of the ``stream:`` channel and keeps only its
    own, so a delayed record of the other table's stream is silently lost (the runs and
    task-instances tables have a stream each). ``test_reliability`` keeps a strict xfail
    that reproduces it: when that test passes, remove this.
    """
    channel = f"stream:{source.function}"
    due_for = deliveries.due_for

    def routed(name: str) -> list[Delivery]:
        ready = due_for(name)
        if name != channel:
            return ready
        shards = {shard.stream_arn: shard for shard in source._shards}
        for held in ready:
            shards[held.payload["eventSourceARN"]].pending.append(held.payload)
        return []

    deliveries.due_for = routed  # type: ignore[method-assign,assignment]


def simulate(
    seed: int,
    *,
    faulty: bool,
    shapes: int = 2,
    size: str = "all",
    profile: str = "full",
    log_path: Path | None = None,
) -> Outcome:
    """Run the seed's scenario on a fresh local cloud (see the module docstring)."""
    scenario = build_scenario(seed, shapes=shapes, size=size)
    outcome = Outcome(seed, faulty)
    started = time.monotonic()
    status = CallStatus()
    injector: FaultInjector | None = None
    if faulty:
        rates = FaultRates.draw(random.Random(f"rates-{seed}"), PROFILES[profile])
        injector = FaultInjector(rates, seed)
        outcome.rates = rates.describe()
    calls = JobCalls(status)
    mirror = Mirror(scenario.max_active_runs, scenario.max_active_tasks)
    log = io.StringIO()
    with contextlib.ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="skydag-sim-")))
        stack.enter_context(compressed_intervals())
        stack.enter_context(small_report_chunks())
        stack.enter_context(small_tally_groups())
        conflicts = stack.enter_context(counting_conflicts())
        stack.enter_context(
            botocore_hook(
                injector.throttle_now if injector else None,
                status,
                injector.stale if injector else None,
            )
        )
        options = LocalCloudOptions(
            log=log,
            log_dir=log_dir,
            cwd=log_dir,
            tap=injector.tap if injector else None,
            faults=injector.plan if injector else None,
            watcher=calls,
            timing=TIMING,
            concurrency=CONCURRENCY,
        )
        cloud = stack.enter_context(LocalCloud(options))
        stack.enter_context(warnings_to(cloud))
        if injector is not None:
            cloud.invoker.on_invocation = injector.after_invocation
            injector.on_crash = calls.crashed_after
            injector.on_throttle = calls.throttled_next
            injector.say = cloud.say
        if WORK_AROUND_HELD_STREAM_RECORDS:
            route_held_stream_records(cloud.stream_source, cloud.deliveries)
        cloud.task_listeners.append(mirror.on_task)
        cloud.stream_source.observe = mirror.observer(cloud.stream_source.observe)
        bind_models(cloud.settings)
        repos = Repositories()
        _load(cloud, repos, scenario)
        if injector is not None:
            injector.arm()
        driver = Driver(cloud, scenario, mirror, repos, PROFILES[profile])
        finished = cloud.run_until(driver.advance, timeout=RUN_TIMEOUT)
        if not finished:
            stuck = "; ".join(driver.waiting_on())
            items = "; ".join(_stuck_items(repos, scenario))
            outcome.problems.append(
                ("no task stuck", f"after {RUN_TIMEOUT:.0f} s: {stuck}. Items: {items}")
            )
        settle = SETTLE_TIMEOUT if finished else SETTLE_WHEN_STUCK
        if not cloud.run_until(lambda: _settled(cloud), timeout=settle):
            outcome.problems.append(("settles", f"still in flight: {_in_flight(cloud)}"))
        _collect(outcome, cloud, repos, scenario)
        outcome.jobs_left = cloud.runner.running()
        if outcome.jobs_left:
            outcome.problems.append(("no orphaned job", _jobs_left(cloud)))
        outcome.invocations = dict(cloud.invoker.invocations)
        outcome.max_in_flight = cloud.invoker.max_in_flight
        outcome.conflicts = conflicts[0]
    outcome.jobs = {token: len(jobs) for token, jobs in calls.jobs.items()}
    outcome.crashed_invokes = dict(calls.crashed_invokes)
    outcome.aws_calls = sum(calls.calls.values())
    outcome.problems.extend(mirror.over_limits)
    if injector is not None:
        outcome.faults = dict(injector.counts)
    outcome.seconds = time.monotonic() - started
    text = log.getvalue()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"{scenario.describe()}\n\n{text}")
    return outcome


def _load(cloud: LocalCloud, repos: Repositories, scenario: Scenario) -> None:
    settings = cloud.settings
    for dag_id, text in scenario.dags.items():
        key = f"{settings.dag_prefix}{dag_id}.yaml"
        cloud.client("s3").put_object(Bucket=settings.dag_bucket, Key=key, Body=text.encode())

    def loaded() -> bool:
        heads = [repos.dags.find(dag_id) for dag_id in scenario.dags]
        return all(head is not None and head.current_version for head in heads)

    if not cloud.run_until(loaded, timeout=LOAD_TIMEOUT, idle_sleep=0.1):
        raise RuntimeError(f"seed {scenario.seed}: the DAGs did not load")


def _in_flight(cloud: LocalCloud) -> dict[str, int]:
    attributes = cloud.client("sqs").get_queue_attributes(
        QueueUrl=cloud.queue_source.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return {
        "rule matches": cloud.bridge.pending(),
        "held deliveries": cloud.deliveries.held(),
        "scheduler batch": cloud.queue_source.pending(),
        "stream records": cloud.stream_source.pending(),
        "queued messages": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "messages in flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "jobs running": cloud.runner.running(),
        "invocations running": cloud.invoker.in_flight(),
    }


def _settled(cloud: LocalCloud) -> bool:
    """Nothing left that could still change a state (a reconcile tick may be queued)."""
    return not any(_in_flight(cloud).values())


def _stuck_items(repos: Repositories, scenario: Scenario) -> list[str]:
    """The stored items of unfinished runs and their unfinished tasks (evidence)."""
    found = []
    for dag_id, run_id in scenario.runs:
        run = repos.runs.find(dag_id, run_id)
        if run is None or run.state in FINISHED_RUN_STATES:
            continue
        head = repos.dags.find(dag_id)
        slots = sorted(head.active_runs) if head is not None else None
        found.append(
            f"run {dag_id}/{run_id} {run.state.value} v{run.version} (DAG slots: {slots}) "
            f"finished={run.finished_count} failed_leaves={run.failed_leaves} "
            f"active={sorted(run.active)} throttled={sorted(run.throttled)}"
        )
        for ti in repos.tasks.list_for_run(dag_id, run_id):
            if ti.state in FINISHED_TASK_STATES:
                continue
            upstream = {name: f"{r.state.value}@v{r.version}" for name, r in ti.upstream.items()}
            found.append(
                f"task {ti.task_id} {ti.state.value} try {ti.try_number} v{ti.version} "
                f"upstream={upstream} job={ti.job_id} check_at={ti.check_at} "
                f"next_attempt_at={ti.next_attempt_at}"
            )
    return found


def _jobs_left(cloud: LocalCloud) -> str:
    """The tries whose jobs still run (the runner's own table: diagnostics only)."""
    jobs = getattr(cloud.runner, "_jobs", {})
    found = [
        f"{job.plan.identity.kind} job {key} of {job.plan.identity.dag_id}/"
        f"{job.plan.identity.run_id}/{job.plan.identity.task_id} try "
        f"{job.plan.identity.try_number}"
        for key, job in list(jobs.items())
    ]
    return f"{len(found)} job(s) still running at the end: {'; '.join(found)}"


def _collect(outcome: Outcome, cloud: LocalCloud, repos: Repositories, scenario: Scenario) -> None:
    planned = set(scenario.runs)
    for dag_id in scenario.dags:
        for run in repos.runs.list_for_dag(dag_id):
            if (dag_id, run.run_id) not in planned:
                outcome.unexpected_runs.append(f"{dag_id}/{run.run_id} ({run.state.value})")
    for dag_id, run_id in scenario.runs:
        found = repos.runs.find(dag_id, run_id)
        outcome.runs[f"{dag_id}/{run_id}"] = found.state.value if found else "missing"
        for ti in repos.tasks.list_for_run(dag_id, run_id):
            key = f"{dag_id}/{run_id}/{ti.task_id}"
            outcome.tasks[key] = (ti.state.value, ti.try_number)
            tries = [(t.try_number, t.state.value, t.job_id, t.reason) for t in ti.tries]
            if ti.try_number:
                current = ti.state if ti.state is not TaskState.UP_FOR_RETRY else TaskState.FAILED
                tries.append((ti.try_number, current.value, ti.job_id, ti.reason))
            outcome.tries[key] = tries
            if (dag_id, run_id, ti.task_id) in scenario.restarts:
                outcome.restarts[key] = ti.restarts
    sqs = cloud.client("sqs")
    for queue in wiring.DEAD_LETTER_QUEUES:
        attributes = sqs.get_queue_attributes(
            QueueUrl=cloud.queue_urls[queue.id],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        count = sum(int(value) for value in attributes.values())
        if count:
            outcome.dead_letters[queue.id] = count
