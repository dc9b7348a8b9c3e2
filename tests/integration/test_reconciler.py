"""Idempotent dispatch, job events and the reconciler, through the real service and store.

A crash is injected between every pair of dispatch steps (record intent / call the
service / record the job id); afterwards exactly one job exists per try and the task
re-attaches to it. Lost events are repaired by the reconciler; late and duplicate events
after that change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import (
    Crash,
    FakeService,
    ManyAtOnceService,
    SettableClock,
    embedded_with,
    passes,
    settle,
)

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import JobStatus, TaskInstance
from skydag.engine.rules import DISPATCH_CHECK_AFTER, LOOK_WINDOW, RUNNING_CHECK_EVERY
from skydag.engine.states import RunState, TaskState
from skydag.engine.transitions import Outcome
from skydag.service.router import BadEvent
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.targets.base import JobEvent

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
    with embedded_with(aws, tmp_path, clock, jobs, [DAG]) as embedded:
        yield embedded


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


EMR_SERVERLESS = {
    "application_id": "app",
    "execution_role_arn": "arn:aws:iam::123456789012:role/emr",
    "job_driver": {"sparkSubmit": {"entryPoint": "s3://b/job.py"}},
}


def test_job_events_find_their_try_by_token_or_job_id(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """A service whose events do not name the task instance (EMR Serverless): its try is
    found through the store's indexes, by its job id when the event has no token."""
    indexed = {**DAG, "tasks": {**DAG["tasks"], "extract": {"emr_serverless": EMR_SERVERLESS}}}
    env.repos.dags.save_version(
        DagSpec.model_validate(indexed), source="test", sha256=None, now=clock.now()
    )
    run_id = start(env)
    assert not extract(env, run_id).found_by_key
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


def test_a_batch_try_is_found_by_the_key_its_events_carry_and_is_in_no_index(
    env: EmbeddedSkydag, jobs: FakeService
) -> None:
    """Batch's events echo the job's environment, whose identity names the task instance:
    the try is read by key, and neither its token nor its job id is indexed (no index
    writes). An event of another try, or one without the key, changes nothing."""
    run_id = start(env)
    running = extract(env, run_id)
    assert running.found_by_key
    assert running.job_id == "job-1"
    assert running.dispatch_token is not None
    assert env.repos.tasks.find_by_token(running.dispatch_token) is None
    assert env.repos.tasks.find_by_job_id("job-1") is None
    key = ("etl", run_id, "extract")
    unnamed = JobEvent("fake", JobStatus.SUCCEEDED, running.dispatch_token, job_id="job-1")
    assert env.service.on_job_event(unnamed).outcome is Outcome.REJECT
    other_try = JobEvent("fake", JobStatus.SUCCEEDED, "f" * 32, job_id="job-0", task_key=key)
    assert env.service.on_job_event(other_try).outcome is Outcome.REJECT
    assert extract(env, run_id).state is T.RUNNING
    assert env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED)).outcome is (
        Outcome.ACCEPT
    )
    settle(env)
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


def test_a_running_job_is_described_at_its_looks_and_never_written(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """A running try's entry stays at its claim's expiry (5 minutes): the passes describe
    its job at the entry's looks (there, 10 minutes on, then 20 later), each made by the
    pass at it and the one after; one that finds the job running writes nothing. Before,
    each look moved the entry (three write units and a stream record)."""
    run_id = start(env)
    running = extract(env, run_id)
    assert running.check_at == running.queued_at + DISPATCH_CHECK_AFTER  # type: ignore[operator]
    run_reads: list[str] = []
    get_run = env.repos.runs.get

    def counted_get(dag_id: str, run_id: str) -> Any:
        run_reads.append(run_id)
        return get_run(dag_id, run_id)

    env.repos.runs.get = counted_get  # type: ignore[method-assign]
    done = passes(env, clock, timedelta(minutes=30))
    assert run_reads == []  # a running job's look reads its try, not its run
    minutes = [int(at.total_seconds() // 60) for at, result in done if result.described]
    assert minutes == [5, 10, 15, 20]
    assert all(result.moved == 0 and result.acted == 0 for _, result in done)
    assert extract(env, run_id) == running  # not one write
    assert list(jobs.jobs) == ["job-1"]  # never resubmitted


def test_a_running_jobs_entry_waits_at_its_timeout_when_that_comes_before_its_next_look(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """Its timeout (1 h) comes before the look 70 minutes after its place: the look at
    35 minutes moves the entry to the timeout (the one write), where the pass enforces it
    on time if the timer did not."""
    run_id = start(env)
    running = extract(env, run_id)
    done = passes(env, clock, timedelta(minutes=40))
    # The look at 35 minutes moved it: the pass after (40) does not read it.
    assert [int(at.total_seconds() // 60) for at, r in done if r.described] == [5, 10, 15, 20, 35]
    moved = extract(env, run_id)
    assert moved.check_at == moved.timeout_at == running.timeout_at
    assert moved.version == running.version + 1
    done = passes(env, clock, timedelta(minutes=20, seconds=1), every=timedelta(minutes=5))
    assert sum(result.timed_out for _, result in done) == 1
    assert extract(env, run_id).state is T.UP_FOR_RETRY


def test_a_pass_with_time_left_works_through_a_backlog_page_after_page(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """Without a deadline a pass reads one page of the due index; with one, it reads
    page after page until nothing is left to look at (the handler gives it half its
    time). A running job left where it is is not read twice by one pass."""
    for number in range(3):
        env.service.trigger("etl", run_id=f"r{number}")
    settle(env)
    assert len(jobs.jobs) == 3
    clock.advance(DISPATCH_CHECK_AFTER)  # three running jobs at their first look
    assert env.service.reconcile(limit=1).described == 1
    deadline = time.monotonic() + 60
    assert env.service.reconcile(limit=1, deadline=deadline).described == 3
    clock.advance(2 * LOOK_WINDOW)  # their next look (15 min) was a window ago: none read
    assert env.service.reconcile(limit=1, deadline=deadline).described == 0


@pytest.mark.parametrize("many_fails", [None, RuntimeError("DescribeJobs broke")])
def test_a_pass_describes_its_pages_running_jobs_in_one_call(
    aws: Settings, tmp_path: Path, clock: SettableClock, many_fails: Exception | None
) -> None:
    """A service that takes many jobs a call (Batch, ECS) is asked once for a page's
    running jobs, not once per job; a finished one among them is repaired as its own
    describe would. When that call fails, each look asks for its own job, as before."""
    service = ManyAtOnceService(many_fails=many_fails)
    with embedded_with(aws, tmp_path, clock, service, [DAG]) as env:
        for number in range(3):
            env.service.trigger("etl", run_id=f"r{number}")
        settle(env)
        service.outcome["job-2"] = JobStatus.SUCCEEDED
        clock.advance(DISPATCH_CHECK_AFTER)  # three running jobs at their first look

        result = env.service.reconcile()

        assert (result.described, result.repaired) == (3, 1)
        assert service.calls["describe_many"] == 1
        assert service.calls["describe"] == (3 if many_fails else 0)
        tries = [extract(env, f"r{number}") for number in range(3)]
        assert sorted((ti.job_id, ti.state) for ti in tries) == [
            ("job-1", T.RUNNING),
            ("job-2", T.SUCCESS),
            ("job-3", T.RUNNING),
        ]


def test_a_page_whose_target_cannot_be_had_fails_each_look_not_the_pass(
    aws: Settings, tmp_path: Path, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Describing a page's jobs together meets the error first: it leaves each try to its
    own look, which logs it and backs off (counted ``failed``); the pass ends."""
    service = ManyAtOnceService()
    with embedded_with(aws, tmp_path, clock, service, [DAG]) as env:
        for number in range(3):
            env.service.trigger("etl", run_id=f"r{number}")
        settle(env)
        clock.advance(DISPATCH_CHECK_AFTER)

        def no_target(kind: str) -> Any:
            raise KeyError(kind)

        monkeypatch.setattr(service, "target_for", no_target)
        result = env.service.reconcile()

        assert (result.failed, result.described) == (3, 0)
        assert service.calls["describe_many"] == 0


def test_reconciler_enforces_timeouts_by_cancelling_the_job(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    run_id = start(env)
    done = passes(env, clock, timedelta(minutes=55))  # every 5 minutes, as deployed
    assert sum(result.timed_out for _, result in done) == 0
    clock.advance(timedelta(minutes=5, seconds=1))
    assert env.service.reconcile().timed_out == 1
    assert jobs.cancelled == []  # not by the reconciler: by the change it wrote
    settle(env)
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

        def delete_timer(self, name: str) -> bool:
            return True

    env.service.timers = RecordingTimers()
    run_id = start(env)
    env.service.on_job_event(jobs.event("job-1", JobStatus.FAILED, exit_code=1))
    settle(env)
    ti = extract(env, run_id)
    assert [timer for timer in timers if timer[0].startswith("retry-")] == [
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


# --- exactly once: stale records, work cut short, poisoned items, deadlines ------------------


def queued_record(env: EmbeddedSkydag) -> list[tuple[TaskInstance | None, TaskInstance]]:
    """Collects the extract task's ``→ queued`` changes as the stream delivers them."""
    seen: list[tuple[TaskInstance | None, TaskInstance]] = []

    def watch(old: TaskInstance | None, new: TaskInstance) -> None:
        if new.task_id == "extract" and new.state is T.QUEUED:
            seen.append((old, new))

    env.task_listeners.append(watch)
    return seen


@pytest.mark.parametrize("after", ["up_for_retry", "next_try_running"])
def test_a_stale_queued_record_calls_no_target(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock, after: str
) -> None:
    """Before: a ``pending → queued`` record redelivered after its try had finished (the run
    still running) dispatched that try again: the target was called for a try that was no
    longer current, and only its idempotency token kept the job from running twice."""
    seen = queued_record(env)
    run_id = start(env)
    env.service.on_job_event(jobs.event("job-1", JobStatus.FAILED, exit_code=1))
    settle(env)
    if after == "next_try_running":
        clock.advance(timedelta(minutes=1))
        env.service.reconcile()
        settle(env)
    state = extract(env, run_id).state
    assert state is (T.UP_FOR_RETRY if after == "up_for_retry" else T.RUNNING)
    calls = jobs.calls["dispatch"]

    old, new = seen[0]
    assert new.try_number == 1
    env.service.on_task_changed(old, new)  # try 1's record, delivered again
    settle(env)

    assert jobs.calls["dispatch"] == calls
    assert extract(env, run_id).state is state


def test_four_deliveries_of_one_queued_record_call_the_target_once(
    env: EmbeddedSkydag, jobs: FakeService
) -> None:
    """Before: every delivery of the same ``→ queued`` record called the target again (four
    invocations, four calls; the token made them one job). Now the scheduler re-reads the
    try and skips one that already has its job. Truly concurrent invocations that all read
    the try before any recorded the job id still each call the target: there the target's
    idempotency token is what keeps it to one job."""
    run = env.service.trigger("etl", run_id="r1").run
    env.service.on_run_changed(None, run)  # evaluates the root: extract's intent recorded
    queued = extract(env, "r1")
    assert (queued.state, queued.job_id) == (T.QUEUED, None)

    for _ in range(4):
        env.service.on_task_changed(None, queued)
    settle(env)  # and the stream's own delivery of it

    assert jobs.calls["dispatch"] == 1
    assert list(jobs.jobs) == ["job-1"]
    assert (extract(env, "r1").state, extract(env, "r1").job_id) == (T.RUNNING, "job-1")


def _end_the_try(env: EmbeddedSkydag, clock: SettableClock, how: str, run_id: str) -> None:
    if how == "cancel_run":
        env.service.cancel_run("etl", run_id)
    elif how == "mark_failed":
        env.service.mark("etl", run_id, "extract", T.FAILED)
    elif how == "mark_success":
        env.service.mark("etl", run_id, "extract", T.SUCCESS)
    else:  # its timeout's timer fires while the dispatch is under way
        clock.advance(timedelta(hours=1, seconds=1))
        assert env.service.on_timer_fired("etl", run_id, "extract")


@pytest.mark.parametrize(
    ("how", "state"),
    [
        ("cancel_run", T.STOPPED),
        ("mark_failed", T.FAILED),
        ("mark_success", T.SUCCESS),
        ("timeout", T.UP_FOR_RETRY),
    ],
)
def test_a_try_ended_during_its_dispatch_cancels_the_job_that_starts(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock, how: str, state: TaskState
) -> None:
    """Before: the try ended (run cancelled, task marked, timed out) while its dispatch was
    under way; the cancel found no job id, then the job started, and its "running" report
    lost to the ended try and was ignored: the job ran on, orphaned."""
    jobs.before_start = lambda request: _end_the_try(env, clock, how, request.run_id)
    run_id = start(env)

    ended = extract(env, run_id)
    assert (ended.state, ended.try_number) == (state, 1)
    assert list(jobs.jobs) == ["job-1"]
    assert "job-1" in [job_id for job_id, _ in jobs.cancelled]
    # Its own late events change nothing more.
    settle(env)
    assert extract(env, run_id).state is state


def test_the_running_event_of_a_job_whose_try_was_cancelled_cancels_it(
    env: EmbeddedSkydag, jobs: FakeService
) -> None:
    """Before: the dispatch died after the service started the job, the run was cancelled
    (no job id to cancel), and the service's own "running" event then lost to ``stopped``
    and was ignored: the job ran on, orphaned."""
    jobs.crash = "after_call"
    run_id = env.service.trigger("etl").run.run_id
    with pytest.raises(Crash):
        settle(env)
    env.service.cancel_run("etl", run_id)
    settle(env)
    assert jobs.cancelled == [(None, "cancelled")]  # found by token only: nothing known

    decision = env.service.on_job_event(jobs.event("job-1", JobStatus.RUNNING))

    assert jobs.cancelled[-1] == ("job-1", decision.reason)
    assert decision.outcome is Outcome.CANCEL_JOB
    assert extract(env, run_id).state is T.STOPPED


def test_a_poisoned_task_does_not_stall_the_reconciler(
    env: EmbeddedSkydag,
    jobs: FakeService,
    clock: SettableClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a task whose handling always raised stayed first in the due index, and every
    reconciler pass died on it: the lost events of every task behind it were never repaired."""
    env.service.trigger("etl", run_id="r1")
    settle(env)
    clock.advance(timedelta(seconds=1))  # r1's job is due first
    env.service.trigger("etl", run_id="r2")
    settle(env)
    jobs.broken["job-1"] = RuntimeError("describe exploded")
    jobs.outcome["job-2"] = JobStatus.SUCCEEDED  # its event was lost
    clock.advance(RUNNING_CHECK_EVERY + timedelta(seconds=1))

    result = env.service.reconcile()

    assert (result.failed, result.described, result.repaired) == (1, 1, 1)
    settle(env)
    assert extract(env, "r2").state is T.SUCCESS
    assert env.repos.runs.get("etl", "r2").state is RunState.SUCCESS
    assert "etl/r1/extract" in caplog.text
    assert "describe exploded" in caplog.text
    # Skipped with a backoff: the next pass does not trip on it again at once ...
    assert env.service.reconcile().failed == 0
    # ... but looks again later (and it still fails, still alone).
    done = passes(env, clock, timedelta(minutes=30))
    failed = [result.failed for _, result in done]
    assert failed[0] == 0  # within its backoff (5 minutes and 2 s)
    assert sum(failed) >= 1
    assert all(count <= 1 for count in failed)
    assert extract(env, "r1").state is T.RUNNING


class RecordingTimers:
    def __init__(self) -> None:
        self.timers: list[tuple[str, Any, dict[str, Any]]] = []
        self.deleted: list[str] = []

    def set_timer(self, name: str, at: Any, detail: Any) -> None:
        self.timers.append((name, at, dict(detail)))

    def delete_timer(self, name: str) -> bool:
        self.deleted.append(name)
        return True

    def set_dag_schedule_enabled(self, dag_id: str, enabled: bool) -> bool:
        return False


def timer_fired(detail: dict[str, Any]) -> dict[str, Any]:
    """The event a one-shot timer puts on the bus when it fires."""
    return {
        "id": "timer-1",
        "source": "skydag.scheduler",
        "detail-type": "Timer Fired",
        "detail": detail,
    }


def test_a_timeout_fires_on_time_by_a_timer(
    env: EmbeddedSkydag, jobs: FakeService, clock: SettableClock
) -> None:
    """Before: only retries set a one-shot timer; a try past its timeout waited for the
    reconciler's next pass (every 5 minutes) to be stopped."""
    timers = RecordingTimers()
    env.service.timers = timers
    run_id = start(env)
    ti = extract(env, run_id)
    assert ti.timeout_at == clock.now() + timedelta(hours=1)
    deadlines = [timer for timer in timers.timers if timer[0].startswith("timeout-")]
    detail = {"dag": "etl", "run_id": run_id, "task": "extract"}
    assert [(at, d) for _, at, d in deadlines] == [(ti.timeout_at, detail)]

    clock.advance(timedelta(hours=1))
    routed = env.route(timer_fired(detail))

    assert not isinstance(routed, BadEvent)
    assert routed.actions == ["acted"]
    timed_out = extract(env, run_id)
    assert (timed_out.state, timed_out.reason) == (T.UP_FOR_RETRY, "timed out after 1:00:00")
    settle(env)
    assert jobs.cancelled == [("job-1", "timed out after 1:00:00")]
    # The ended try's timer is removed (it fired here); only live deadlines stay pending.
    assert timers.deleted == [deadlines[0][0]]


def test_finished_tries_remove_their_deadline_timers(
    env: EmbeddedSkydag, jobs: FakeService
) -> None:
    timers = RecordingTimers()
    env.service.timers = timers
    run_id = start(env)
    (deadline,) = [name for name, _, _ in timers.timers if name.startswith("timeout-")]

    env.service.on_job_event(jobs.event("job-1", JobStatus.SUCCEEDED, exit_code=0))
    settle(env)

    assert env.repos.runs.get("etl", run_id).state is RunState.SUCCESS
    deadlines = {name for name, _, _ in timers.timers if name.startswith("timeout-")}
    assert len(deadlines) == 2  # extract's, and load's (the DAG's default timeout)
    assert deadline in timers.deleted
    assert set(timers.deleted) == deadlines  # nothing left pending once the run is over
