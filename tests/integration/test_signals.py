"""Signals (AIP-35) through the real service, store and streams: DAG-level `on:`, and
`start_on`, `restart_on`, `stop_on`, `wait` and service tasks — with duplicated,
reordered and late deliveries, which must change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeService, SettableClock

from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import JobStatus, TaskInstance
from skydag.engine.states import RunState, TaskState
from skydag.engine.transitions import Outcome
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.targets.builtin import TargetSet

T = TaskState


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def service_jobs() -> FakeService:
    return FakeService()


@pytest.fixture
def env(
    aws: Settings, tmp_path: Path, clock: SettableClock, service_jobs: FakeService
) -> Iterator[EmbeddedSkydag]:
    # noop and wait finish at once, as in production; every other kind is a remote job.
    embedded = EmbeddedSkydag(
        aws,
        log_dir=tmp_path,
        clock=clock,
        target=service_jobs,
        targets=TargetSet(clock, service_jobs),
    )
    try:
        yield embedded
    finally:
        embedded.close()


def load(env: EmbeddedSkydag, spec: dict[str, Any]) -> DagSpec:
    dag = DagSpec.model_validate(spec)
    env.repos.dags.save_version(dag, source="test", sha256=None, now=env.clock.now())
    return dag


def settle(env: EmbeddedSkydag) -> None:
    for _ in range(200):
        if not env.pump():
            return
    raise AssertionError("the scheduler never settled")


def task(env: EmbeddedSkydag, dag: str, run_id: str, task_id: str) -> TaskInstance:
    return env.repos.tasks.get(dag, run_id, task_id)


def signal(
    env: EmbeddedSkydag, detail_type: str, detail: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    return env.put_event(detail_type, detail or {}, source="ml.trainer", **kw)


def finish_job(env: EmbeddedSkydag, jobs: FakeService, job_id: str, status: JobStatus) -> None:
    decision = env.service.on_job_event(jobs.event(job_id, status))
    # "running" may be a duplicate: a job the service accepted is already recorded running.
    assert decision.outcome is not Outcome.REJECT, decision.reason
    settle(env)


def test_dag_on_signal_creates_one_run_per_event_id(env: EmbeddedSkydag) -> None:
    load(
        env,
        {
            "dag": "evaluate",
            "on": [{"source": ["ml.trainer"], "detail-type": ["model.emitted"]}],
            "tasks": {"score": {"noop": {}}},
        },
    )
    event = signal(env, "model.emitted", {"model_uri": "s3://m/1"})
    settle(env)
    env.route(event)  # the same event delivered again
    env.route({**event, "detail-type": "other"})  # does not match the pattern
    settle(env)
    runs = env.repos.runs.list_for_dag("evaluate")
    assert [r.run_id for r in runs] == [f"signal__{event['id']}"]
    assert runs[0].trigger is not None
    assert runs[0].trigger["detail"] == {"model_uri": "s3://m/1"}


def test_start_on_waits_after_upstreams_and_dispatches_with_the_signal(
    env: EmbeddedSkydag, service_jobs: FakeService
) -> None:
    load(
        env,
        {
            "dag": "deploy",
            "tasks": {
                "build": {"noop": {}},
                "release": {
                    "depends_on": ["build"],
                    "start_on": [{"source": ["ml.trainer"], "detail-type": ["go"]}],
                    "batch": {
                        "job_queue": "q",
                        "job_definition": "d",
                        "command": ["release", "{{ signal.detail.version }}"],
                    },
                },
            },
        },
    )
    early = signal(env, "go", {"version": "too-early"})
    settle(env)  # routed before the run exists: nobody waits yet
    run_id = env.service.trigger("deploy").run.run_id
    settle(env)
    assert task(env, "deploy", run_id, "release").state is T.WAITING
    signal(env, "stop", {"version": "x"})  # not the pattern
    settle(env)
    assert task(env, "deploy", run_id, "release").state is T.WAITING
    go = signal(env, "go", {"version": "1.2"})
    settle(env)
    env.route(go)  # duplicate delivery
    settle(env)
    release = task(env, "deploy", run_id, "release")
    assert (release.state, release.try_number) == (T.RUNNING, 1)
    assert release.signal is not None
    assert release.signal["id"] == go["id"] != early["id"]
    (job,) = service_jobs.jobs.values()
    assert job.target["command"] == ["release", "1.2"]


def test_wait_task_succeeds_with_the_signal_as_output_or_times_out(
    env: EmbeddedSkydag, service_jobs: FakeService, clock: SettableClock
) -> None:
    load(
        env,
        {
            "dag": "gate",
            "tasks": {
                "approval": {
                    "wait": {"on": [{"source": ["ml.trainer"], "detail-type": ["approved"]}]},
                    "timeout": "1h",
                },
                "ship": {
                    "depends_on": ["approval"],
                    "lambda": {
                        "function_name": "ship",
                        "payload": {"by": "{{ outputs.approval.user }}"},
                    },
                },
            },
        },
    )
    approved = env.service.trigger("gate", run_id="approved").run.run_id
    settle(env)
    assert task(env, "gate", approved, "approval").state is T.WAITING
    signal(env, "approved", {"user": "ana"})
    settle(env)
    assert task(env, "gate", approved, "approval").output == {"user": "ana"}
    (job,) = service_jobs.jobs.values()
    assert job.target["payload"] == {"by": "ana"}

    # A second run nobody approves: its wait times out (the reconciler enforces it).
    expired = env.service.trigger("gate", run_id="expired").run.run_id
    settle(env)
    assert env.service.reconcile().acted == 0
    clock.advance(timedelta(hours=1, seconds=1))
    assert env.service.reconcile().timed_out == 1
    settle(env)
    waited = task(env, "gate", expired, "approval")
    assert (waited.state, waited.reason) == (T.FAILED, "timed out after 1:00:00")
    assert task(env, "gate", expired, "ship").state is T.UPSTREAM_FAILED


STREAMING_DAG: dict[str, Any] = {
    "dag": "serving",
    "tasks": {
        "server": {
            "mode": "service",
            "restart_on": [{"source": ["ml.trainer"], "detail-type": ["model.validated"]}],
            "stop_on": [{"source": ["ml.trainer"], "detail-type": ["shutdown"]}],
            "ecs": {
                "cluster": "c",
                "task_definition": "serve",
                "command": [
                    "serve",
                    "{{ (signal.detail | default({'model_uri': 'base'})).model_uri }}",
                ],
            },
        },
        "smoke_test": {"depends_on": ["server"], "noop": {}},
    },
}


def test_service_task_restart_and_stop_by_signals(
    env: EmbeddedSkydag, service_jobs: FakeService
) -> None:
    load(env, STREAMING_DAG)
    run_id = env.service.trigger("serving").run.run_id
    settle(env)
    first = service_jobs.job_of("server", 1)
    assert service_jobs.jobs[first].target["command"] == ["serve", "base"]
    finish_job(env, service_jobs, first, JobStatus.RUNNING)
    # A downstream of a service starts once the service is up, not when it ends.
    assert task(env, "serving", run_id, "smoke_test").state is T.SUCCESS
    assert env.repos.runs.get("serving", run_id).state is RunState.RUNNING

    v2 = signal(env, "model.validated", {"model_uri": "s3://m/2"}, time="2026-11-22T12:05:00Z")
    settle(env)
    second = service_jobs.job_of("server", 2)
    assert service_jobs.jobs[second].target["command"] == ["serve", "s3://m/2"]
    assert service_jobs.cancelled == [(first, "restarted by a signal")]
    # Duplicate of v2, and an older signal delivered late: neither restarts again.
    env.route(v2)
    signal(env, "model.validated", {"model_uri": "s3://m/1"}, time="2026-11-22T12:01:00Z")
    settle(env)
    # The replaced job's own late "stopped" event is history.
    late = env.service.on_job_event(service_jobs.event(first, JobStatus.STOPPED))
    assert late.outcome is Outcome.REJECT
    finish_job(env, service_jobs, second, JobStatus.RUNNING)
    server = task(env, "serving", run_id, "server")
    assert (server.state, server.try_number, server.restarts) == (T.RUNNING, 2, 1)
    assert len(service_jobs.jobs) == 2

    signal(env, "shutdown")
    settle(env)
    server = task(env, "serving", run_id, "server")
    assert server.state is T.STOPPED
    assert service_jobs.cancelled[-1][0] == second
    # Stopping is how a service ends: the run succeeds.
    assert env.repos.runs.get("serving", run_id).state is RunState.SUCCESS


def test_restart_does_not_use_up_retries(env: EmbeddedSkydag, service_jobs: FakeService) -> None:
    load(env, {**STREAMING_DAG, "defaults": {"retries": 1, "retry_delay": 0}})
    run_id = env.service.trigger("serving").run.run_id
    settle(env)
    finish_job(env, service_jobs, service_jobs.job_of("server", 1), JobStatus.RUNNING)
    for n in range(3):
        signal(env, "model.validated", {"model_uri": f"s3://m/{n}"}, time=f"2026-11-22T13:0{n}:00Z")
        settle(env)
    latest = service_jobs.job_of("server", 4)
    finish_job(env, service_jobs, latest, JobStatus.RUNNING)
    finish_job(env, service_jobs, latest, JobStatus.FAILED)
    # Three restarts, then a failure: the one retry is still there (and fires at once).
    server = task(env, "serving", run_id, "server")
    assert (server.state, server.try_number, server.restarts) == (T.RUNNING, 5, 3)
    retry = service_jobs.jobs[service_jobs.job_of("server", 5)]
    # A retry keeps the signal of the try it repeats.
    assert retry.target["command"] == ["serve", "s3://m/2"]


def test_signal_for_a_retired_dag_or_nobody_is_harmless(env: EmbeddedSkydag) -> None:
    load(env, {"dag": "gone", "on": [{"source": ["ml.trainer"]}], "tasks": {"t": {"noop": {}}}})
    env.repos.dags.retire("gone", now=env.clock.now())
    outcome = env.route(signal(env, "anything"))
    assert not isinstance(outcome, Exception)
    assert outcome.ignored == "no DAG or task subscribes to this event"
    assert env.repos.runs.list_for_dag("gone") == []


def test_a_stop_signal_during_dispatch_cancels_the_job_that_starts(
    env: EmbeddedSkydag, service_jobs: FakeService
) -> None:
    """Before: a ``stop_on`` signal that came while the task's dispatch was under way found
    no job id to cancel; the job then started, its "running" report lost to ``stopped``
    and was ignored, and the job ran on, orphaned."""
    load(env, STREAMING_DAG)

    def stop_now(request: object) -> None:
        shutdown = signal(env, "shutdown")
        env.bus.remove(shutdown)
        env.route(shutdown)

    service_jobs.before_start = stop_now
    run_id = env.service.trigger("serving").run.run_id
    settle(env)

    server = task(env, "serving", run_id, "server")
    assert (server.state, server.try_number) == (T.STOPPED, 1)
    job_id = service_jobs.job_of("server", 1)
    assert job_id in [cancelled for cancelled, _ in service_jobs.cancelled]
