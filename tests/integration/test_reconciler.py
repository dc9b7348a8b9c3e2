"""Idempotent dispatch, job events and the reconciler, through the real service and store.

A crash is injected between every pair of dispatch steps (record intent / call the
service / record the job id); afterwards exactly one job exists per try and the task
re-attaches to it. Lost events are repaired by the reconciler; late and duplicate events
after that change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import Crash, FakeService, SettableClock

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import JobStatus, TaskInstance
from skydag.engine.rules import DISPATCH_CHECK_AFTER, RUNNING_CHECK_EVERY
from skydag.engine.states import RunState, TaskState
from skydag.engine.transitions import Outcome
from skydag.service.router import BadEvent
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.targets.base import JobEvent
from skydag.targets.builtin import TargetSet

T = TaskState

DAG: dict[str, Any] = {
    "dag": "etl",
    "defaults": {"retries": 1, "retry_delay": "1m", "timeout": "1h"},
    "tasks": {
        "extract": {"batch": {"job_queue": "q", "job_definition": "extract:1"}},
        "load": {"depends_on": ["extract"], "noop": {}},
    },
}


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def jobs() -> FakeService:
    return FakeService()


@pytest.fixture
def env(
    aws: Settings, tmp_path: Path, clock: SettableClock, jobs: FakeService
) -> Iterator[EmbeddedSkydag]:
    embedded = EmbeddedSkydag(
        aws, log_dir=tmp_path, clock=clock, target=jobs, targets=TargetSet(clock, jobs)
    )
    embedded.repos.dags.save_version(
        DagSpec.model_validate(DAG), source="test", sha256=None, now=clock.now()
    )
    try:
        yield embedded
    finally:
        embedded.close()


def settle(env: EmbeddedSkydag) -> None:
    for _ in range(200):
        if not env.pump():
            return
    raise AssertionError("the scheduler never settled")


def extract(env: EmbeddedSkydag, run_id: str) -> TaskInstance:
    return env.repos.tasks.get("etl", run_id, "extract")


def start(env: EmbeddedSkydag) -> str:
    run_id = env.service.trigger("etl").run.run_id
    settle(env)
    return run_id


@pytest.mark.parametrize("crash", ["before_call", "after_call"])
def test_a_crash_in_dispatch_is_repaired_with_exactly_one_job(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock, crash: str
) -> None:
    jobs.crash = crash
    run_id = env.service.trigger("etl").run.run_id
    with pytest.raises(Crash):
        settle(env)  # the invocation dies after the intent was recorded
    queued = extract(env, run_id)
    assert (queued.state, queued.job_id, queued.try_number) == (T.QUEUED, None, 1)
    assert len(jobs.jobs) == (1 if crash == "after_call" else 0)

    # The stream redelivers the change (the failed batch is retried) ...
    env.service.dispatch(queued)
    # ... and, had that been lost too, the reconciler re-attaches after the grace period.
    clock.advance(DISPATCH_CHECK_AFTER)
    env.service.reconcile()
    settle(env)
    running = extract(env, run_id)
    assert (running.state, running.job_id) == (T.RUNNING, "job-1")
    assert list(jobs.jobs) == ["job-1"]  # one job for the try, whatever happened


def test_a_crash_after_recording_the_job_id_changes_nothing(
    env: EmbeddedSkydag, jobs: FakeService
) -> None:
    run_id = start(env)
    before = extract(env, run_id)
    env.service.dispatch(before)  # the same change delivered again
    env.service.on_task_changed(None, before)
    settle(env)
    assert list(jobs.jobs) == ["job-1"]
    assert extract(env, run_id).version == before.version


def test_job_events_find_their_try_by_token_or_job_id(
    env: EmbeddedSkydag, jobs: FakeService
) -> None:
    run_id = start(env)
    by_job_id_only = JobEvent("fake", JobStatus.SUCCEEDED, None, job_id="job-1", exit_code=0)
    assert env.service.on_job_event(by_job_id_only).outcome is Outcome.ACCEPT
    settle(env)
    assert extract(env, run_id).state is T.SUCCESS
    assert env.repos.runs.get("etl", run_id).state is RunState.SUCCESS
    # Duplicates and strangers change nothing.
    assert env.service.on_job_event(jobs.event("job-1", JobStatus.FAILED)).outcome in (
        Outcome.IGNORE,
        Outcome.REJECT,
    )
    stranger = JobEvent("fake", JobStatus.FAILED, "f" * 32, job_id="not-ours")
    assert env.service.on_job_event(stranger).outcome is Outcome.REJECT
    assert extract(env, run_id).state is T.SUCCESS


def test_an_event_of_a_replaced_try_is_ignored(env: EmbeddedSkydag, jobs: FakeService) -> None:
    run_id = start(env)
    failed = env.service.on_job_event(jobs.event("job-1", JobStatus.FAILED, exit_code=3))
    assert failed.outcome is Outcome.ACCEPT
    settle(env)
    env.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    env.service.reconcile()
    settle(env)
    assert (extract(env, run_id).try_number, extract(env, run_id).job_id) == (2, "job-2")
    # Try 1's job reports again, late and reordered: it is not the current try.
    for status in (JobStatus.SUCCEEDED, JobStatus.RUNNING, JobStatus.FAILED):
        assert env.service.on_job_event(jobs.event("job-1", status)).outcome is Outcome.REJECT
    current = extract(env, run_id)
    assert (current.state, current.try_number, current.exit_code) == (T.RUNNING, 2, None)


def test_reconciler_repairs_a_lost_event_and_late_events_change_nothing(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    run_id = start(env)
    assert env.service.reconcile().described == 0  # nothing overdue yet
    jobs.outcome["job-1"] = JobStatus.SUCCEEDED  # the job ended; its event was lost
    clock.advance(RUNNING_CHECK_EVERY)
    result = env.service.reconcile()
    assert (result.described, result.repaired) == (1, 1)
    settle(env)
    assert extract(env, run_id).state is T.SUCCESS
    assert env.repos.runs.get("etl", run_id).state is RunState.SUCCESS
    late = env.service.on_job_event(jobs.event("job-1", JobStatus.FAILED))
    assert late.outcome is not Outcome.ACCEPT
    assert extract(env, run_id).state is T.SUCCESS


def test_reconciler_keeps_checking_a_long_running_job(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    run_id = start(env)
    for _ in range(3):  # a streaming job: still running at every look
        clock.advance(RUNNING_CHECK_EVERY)
        assert env.service.reconcile().described == 1
        settle(env)
    running = extract(env, run_id)
    assert (running.state, running.try_number) == (T.RUNNING, 1)
    assert running.check_at == clock.now() + RUNNING_CHECK_EVERY
    assert list(jobs.jobs) == ["job-1"]  # never resubmitted


def test_reconciler_enforces_timeouts_by_cancelling_the_job(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    run_id = start(env)
    clock.advance(timedelta(hours=1, seconds=1))
    assert env.service.reconcile().timed_out == 1
    assert jobs.cancelled == [("job-1", "timed out after 1:00:00")]
    assert extract(env, run_id).state is T.UP_FOR_RETRY
    clock.advance(timedelta(minutes=1))
    env.service.reconcile()
    settle(env)
    assert (extract(env, run_id).state, extract(env, run_id).try_number) == (T.RUNNING, 2)
    # The cancelled job's late "stopped" event belongs to try 1: nothing happens.
    late = env.service.on_job_event(jobs.event("job-1", JobStatus.STOPPED))
    assert late.outcome is Outcome.REJECT


def test_retry_timers_are_set_for_up_for_retry(env: EmbeddedSkydag, jobs: FakeService) -> None:
    timers: list[tuple[str, Any, dict[str, Any]]] = []

    class RecordingTimers:
        def set_timer(self, name: str, at: Any, detail: Any) -> None:
            timers.append((name, at, dict(detail)))

    env.service.timers = RecordingTimers()
    run_id = start(env)
    env.service.on_job_event(jobs.event("job-1", JobStatus.FAILED, exit_code=1))
    settle(env)
    ti = extract(env, run_id)
    assert timers == [
        (
            f"retry-{ti.dispatch_token}",
            ti.next_attempt_at,
            {"dag": "etl", "run_id": run_id, "task": "extract"},
        )
    ]
    assert env.service.on_timer_fired("etl", run_id, "extract") is False  # not yet due
    env.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    assert env.service.on_timer_fired("etl", run_id, "extract") is True
    assert env.service.on_timer_fired("etl", run_id, "extract") is False  # a duplicate


# --- the router: commands and bad input ------------------------------------------------------


def command(detail_type: str, **detail: Any) -> dict[str, Any]:
    return {
        "id": f"cmd-{detail_type}",
        "source": "skydag.command",
        "detail-type": detail_type,
        "detail": detail,
    }


def test_commands_drive_runs(env: EmbeddedSkydag, jobs: FakeService) -> None:
    result = env.route(command("Trigger DAG", dag="etl", conf={"day": "1"}, run_id="r1"))
    assert not isinstance(result, BadEvent)
    assert result.actions == ["run r1 created"]
    settle(env)
    env.route(command("Mark Task", dag="etl", run_id="r1", task="extract", state="failed"))
    settle(env)
    assert env.repos.runs.get("etl", "r1").state is RunState.FAILED
    assert jobs.cancelled == [("job-1", "marked failed")]
    cleared = env.route(command("Clear Task", dag="etl", run_id="r1", task="extract"))
    assert not isinstance(cleared, BadEvent)
    settle(env)
    assert extract(env, "r1").state is T.RUNNING
    env.route(command("Cancel Run", dag="etl", run_id="r1", reason="enough"))
    settle(env)
    assert env.repos.runs.get("etl", "r1").state is RunState.CANCELLED
    env.route(command("Pause DAG", dag="etl"))
    assert env.repos.dags.get("etl").paused


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("not an object", "an event must be a JSON object, not str"),
        ({"id": "e1", "source": "x"}, "event 'e1': 'detail-type' must be a non-empty string; "),
        (command("Launch Rocket", dag="etl"), "unknown command 'Launch Rocket': expected one of"),
        (command("Trigger DAG"), "command 'Trigger DAG': detail lacks dag"),
        (command("Trigger DAG", dag="nope"), "command 'Trigger DAG' for DAG 'nope': DAG 'nope'"),
        (
            command("Clear Task", dag="etl", run_id="r9", task="x"),
            "command 'Clear Task' for DAG 'etl': run etl/r9",
        ),
        (
            command("Trigger DAG", dag="etl", conf="yes"),
            "command 'Trigger DAG': 'conf' must be a JSON object",
        ),
        (
            {**command("Trigger DAG", dag="etl"), "detail": {"dag": "etl", "blob": "x" * 300_000}},
            "bytes, over EventBridge's 256 KB",
        ),
    ],
)
def test_bad_events_are_refused_with_what_and_where(
    env: EmbeddedSkydag, event: Any, message: str
) -> None:
    outcome = env.route(event)
    assert isinstance(outcome, BadEvent)
    assert message in str(outcome)
    assert env.repos.runs.list_for_dag("etl") == []  # nothing was created
