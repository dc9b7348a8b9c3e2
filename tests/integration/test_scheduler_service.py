"""The scheduler service end to end: moto, the tables' streams and the local target."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import START, Crash, FakeService, SettableClock

from skydag.dev.embedded import EmbeddedSkydag, StreamFeed
from skydag.engine.models import (
    DagRun,
    JobReport,
    JobStatus,
    RunType,
    TaskInstance,
    UpstreamReport,
)
from skydag.engine.rules import RUNNING_CHECK_EVERY
from skydag.engine.states import ACTIVE_TASK_STATES, FINISHED_TASK_STATES, RunState, TaskState
from skydag.engine.transitions import Outcome
from skydag.engine.tries import all_tries
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.targets.base import JobRef
from skydag.targets.builtin import TargetSet
from skydag.targets.local import LocalTarget

T = TaskState
FINISHED = FINISHED_TASK_STATES
Loader = Callable[[dict[str, Any]], DagSpec]

# A task that fails on its first try and succeeds from the second on (a real subprocess).
FAILS_FIRST_TRY: dict[str, Any] = {"command": ["sh", "-c", 'test "$SKYDAG_TRY" -ge 2']}
NOOP: dict[str, Any] = {"noop": None}


def job(**local: Any) -> dict[str, Any]:
    """A simulated job (the local target keeps it, so a second dispatch re-attaches)."""
    return {"noop": None, "local": local or {"exit_code": 0}}


def diamond(dag: str, task: dict[str, Any], **dag_keys: Any) -> dict[str, Any]:
    return {
        "dag": dag,
        **dag_keys,
        "tasks": {
            "a": task,
            "b": {"depends_on": ["a"], **task},
            "c": {"depends_on": ["a"], **task},
            "d": {"depends_on": ["b", "c"], **task},
        },
    }


def dispatched(env: EmbeddedSkydag) -> int:
    """How many jobs the local target started (a re-attach to a known token is not one)."""
    assert isinstance(env.local, LocalTarget)
    return env.local.dispatch_count


def chain(dag: str, task: dict[str, Any]) -> dict[str, Any]:
    return {
        "dag": dag,
        "tasks": {
            "a": task,
            "b": {"depends_on": ["a"], **task},
            "c": {"depends_on": ["b"], **task},
        },
    }


def finish(env: EmbeddedSkydag, dag: str, run_id: str, timeout: float = 10.0) -> DagRun:
    return env.run_until_finished(dag, run_id, timeout=timeout, idle_sleep=0.005)


def tasks(env: EmbeddedSkydag, dag: str, run_id: str) -> dict[str, TaskInstance]:
    return {ti.task_id: ti for ti in env.repos.tasks.list_for_run(dag, run_id)}


def states(env: EmbeddedSkydag, dag: str, run_id: str) -> dict[str, tuple[TaskState, int]]:
    return {t: (ti.state, ti.try_number) for t, ti in tasks(env, dag, run_id).items()}


def pump_until(env: EmbeddedSkydag, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the condition was never reached"
        if not env.pump():
            time.sleep(0.005)


def drain(env: EmbeddedSkydag, timeout: float = 30.0) -> None:
    """Pump until nothing is pending and no local job runs."""
    pump_until(env, lambda: env.pump() == 0 and env.local.running() == 0, timeout)


# --- happy paths -----------------------------------------------------------------------------


def test_diamond_runs_to_success(embedded: EmbeddedSkydag, dag_loader: Loader) -> None:
    dag_loader(diamond("diamond", NOOP))
    order: list[str] = []
    embedded.task_listeners.append(
        lambda old, new: order.append(new.task_id) if new.state is T.SUCCESS else None
    )

    result = embedded.service.trigger("diamond", run_id="r1")
    assert result.created
    assert result.run.state is RunState.RUNNING

    run = finish(embedded, "diamond", "r1")

    assert (run.state, run.reason) == (RunState.SUCCESS, None)
    assert run.ended_at is not None
    assert states(embedded, "diamond", "r1") == {t: (T.SUCCESS, 1) for t in "abcd"}
    assert order[0] == "a"
    assert order[-1] == "d"
    assert dispatched(embedded) == 4
    assert embedded.repos.dags.get("diamond").active_runs == frozenset()
    assert (
        "DagRun State Change",
        {
            "dag": "diamond",
            "run_id": "r1",
            "state": "success",
            "reason": None,
        },
    ) in embedded.events.events


def test_a_run_keeps_its_dag_version(embedded: EmbeddedSkydag, dag_loader: Loader) -> None:
    dag_loader({"dag": "pinned", "tasks": {"a": job(duration="100ms")}})
    embedded.service.trigger("pinned", run_id="r1")
    dag_loader({"dag": "pinned", "tasks": {"a": job(), "b": {"depends_on": ["a"], **job()}}})

    run = finish(embedded, "pinned", "r1")

    assert (run.state, run.dag_version) == (RunState.SUCCESS, 1)
    assert list(tasks(embedded, "pinned", "r1")) == ["a"]
    embedded.service.trigger("pinned", run_id="r2")
    assert finish(embedded, "pinned", "r2").dag_version == 2
    assert sorted(tasks(embedded, "pinned", "r2")) == ["a", "b"]


# --- failures and retries --------------------------------------------------------------------


def test_failing_task_retries_then_fails(embedded: EmbeddedSkydag, dag_loader: Loader) -> None:
    dag_loader(
        {
            "dag": "flaky",
            "tasks": {
                "ok": NOOP,
                "bad": {**job(exit_code=1), "retries": 2, "retry_delay": "20ms"},
                "after": {"depends_on": ["bad", "ok"], **NOOP},
            },
        }
    )
    tries: list[tuple[TaskState, int]] = []
    embedded.task_listeners.append(
        lambda old, new: (
            tries.append((new.state, new.try_number))
            if new.task_id == "bad" and (old is None or old.state != new.state)
            else None
        )
    )
    embedded.service.trigger("flaky", run_id="r1")

    run = finish(embedded, "flaky", "r1")

    assert run.state is RunState.FAILED
    assert run.reason  # says which leaves failed
    found = tasks(embedded, "flaky", "r1")
    bad = found["bad"]
    assert (bad.state, bad.try_number, bad.exit_code, bad.reason) == (
        T.FAILED,
        3,
        1,
        "exit code 1",
    )
    after = found["after"]
    assert (after.state, after.try_number) == (T.UPSTREAM_FAILED, 0)
    assert after.reason  # the trigger rule says why
    assert found["ok"].state is T.SUCCESS
    assert [s for s, _ in tries] == [  # its first write (an insert) queues it
        *[T.QUEUED, T.RUNNING, T.UP_FOR_RETRY] * 2,
        T.QUEUED,
        T.RUNNING,
        T.FAILED,
    ]
    assert max(n for _, n in tries) == 3


def test_a_timed_out_task_is_retried_then_fails(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader(
        {
            "dag": "slow",
            "tasks": {
                "a": {**job(duration="5s"), "timeout": "0.3s", "retries": 1, "retry_delay": "10ms"},
                "b": {"depends_on": ["a"], **NOOP},
            },
        }
    )
    started = time.monotonic()
    embedded.service.trigger("slow", run_id="r1")

    run = finish(embedded, "slow", "r1")
    drain(embedded)

    assert run.state is RunState.FAILED
    assert time.monotonic() - started < 4  # the 5 s jobs were stopped, not waited for
    a = tasks(embedded, "slow", "r1")["a"]
    assert (a.state, a.try_number) == (T.FAILED, 2)
    assert a.reason is not None
    assert a.reason.startswith("timed out")
    assert states(embedded, "slow", "r1")["b"] == (T.UPSTREAM_FAILED, 0)
    assert dispatched(embedded) == 2
    assert embedded.local.running() == 0  # both tries' jobs were cancelled


# --- concurrency limits ----------------------------------------------------------------------


def test_max_active_tasks_is_never_exceeded(embedded: EmbeddedSkydag, dag_loader: Loader) -> None:
    dag_loader(
        {
            "dag": "wide",
            "max_active_tasks": 2,
            "tasks": {f"t{i}": job(duration="60ms") for i in range(6)},
        }
    )
    active: set[str] = set()
    peak = [0]

    def watch(old: TaskInstance | None, new: TaskInstance) -> None:
        if new.state in ACTIVE_TASK_STATES:
            active.add(new.task_id)
        else:
            active.discard(new.task_id)
        peak[0] = max(peak[0], len(active))

    slots_peak = [0]
    embedded.task_listeners.append(watch)
    embedded.run_listeners.append(
        lambda old, new: slots_peak.__setitem__(0, max(slots_peak[0], len(new.active)))
    )
    embedded.service.trigger("wide", run_id="r1")

    run = finish(embedded, "wide", "r1")

    assert run.state is RunState.SUCCESS
    assert states(embedded, "wide", "r1") == {f"t{i}": (T.SUCCESS, 1) for i in range(6)}
    assert peak[0] == 2
    assert slots_peak[0] == 2
    final = embedded.repos.runs.get("wide", "r1")
    assert (final.active, final.throttled) == (frozenset(), frozenset())


def test_a_dag_with_no_more_tasks_than_slots_takes_none(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    """Slots are per task instance: with no more tasks than max_active_tasks (and no
    for_each) none can ever wait for one, so the run's item is not written for slots (a
    write and a round trip saved per task), a retry frees none, and all run at once."""
    dag_loader(
        {
            "dag": "narrow",
            "max_active_tasks": 3,
            "defaults": {"retries": 1, "retry_delay": "0s"},
            "tasks": {
                "a": job(duration="60ms"),
                "b": job(duration="60ms"),
                # Fails once, then succeeds: its retry frees and takes no slot either.
                "c": job(**FAILS_FIRST_TRY),
            },
        }
    )
    slots_peak, run_writes = [0], [0]

    def watch(old: DagRun | None, new: DagRun) -> None:
        slots_peak[0] = max(slots_peak[0], len(new.active))
        run_writes[0] += 1

    embedded.run_listeners.append(watch)
    embedded.service.trigger("narrow", run_id="r1")

    run = finish(embedded, "narrow", "r1")

    assert run.state is RunState.SUCCESS
    assert states(embedded, "narrow", "r1") == {
        "a": (T.SUCCESS, 1),
        "b": (T.SUCCESS, 1),
        "c": (T.SUCCESS, 2),
    }
    assert slots_peak[0] == 0
    assert (run.active, run.throttled) == (frozenset(), frozenset())
    # Created, its run slot taken, started, a count per finish, the end: none for task
    # slots (four more with them: a slot per try).
    assert run_writes[0] <= 3 + 3 + 1


def test_max_active_runs_queues_the_next_run(embedded: EmbeddedSkydag, dag_loader: Loader) -> None:
    dag_loader({"dag": "serial", "max_active_runs": 1, "tasks": {"a": job(duration="150ms")}})
    changes: list[tuple[str, RunState]] = []
    running: set[str] = set()
    most = [0]

    def watch(old: DagRun | None, new: DagRun) -> None:
        if old is None or old.state != new.state:
            changes.append((new.run_id, new.state))
        (running.add if new.state is RunState.RUNNING else running.discard)(new.run_id)
        most[0] = max(most[0], len(running))

    embedded.run_listeners.append(watch)

    first = embedded.service.trigger("serial", run_id="r1")
    second = embedded.service.trigger("serial", run_id="r2")

    assert first.run.state is RunState.RUNNING
    assert second.run.state is RunState.QUEUED
    assert embedded.repos.runs.queued_runs("serial", limit=10) == [("serial", "r2")]
    pump_until(embedded, lambda: states(embedded, "serial", "r1")["a"][0] is T.RUNNING)
    assert embedded.repos.runs.get("serial", "r2").state is RunState.QUEUED
    assert states(embedded, "serial", "r2") == {"a": (T.PENDING, 0)}

    assert finish(embedded, "serial", "r1").state is RunState.SUCCESS
    r2 = finish(embedded, "serial", "r2")

    assert r2.state is RunState.SUCCESS
    assert r2.started_at is not None
    r1_ended = embedded.repos.runs.get("serial", "r1").ended_at
    assert r1_ended is not None
    assert r2.started_at >= r1_ended
    assert changes.index(("r2", RunState.RUNNING)) > changes.index(("r1", RunState.SUCCESS))
    assert most[0] == 1
    assert embedded.repos.runs.queued_runs("serial", limit=10) == []
    assert embedded.repos.dags.get("serial").active_runs == frozenset()


def test_a_run_that_starts_at_once_never_enters_the_queued_index(
    embedded: EmbeddedSkydag, dag_loader: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its start records its tasks (no mark, no queued entry put and deleted). A trigger
    cut short after taking the slot leaves a run found by no index: its redelivery
    writes the tasks again, still holds the slot and starts it."""
    dag_loader({"dag": "serial", "max_active_runs": 1, "tasks": {"a": job(duration="150ms")}})
    marks: list[str] = []
    mark = embedded.repos.runs.mark_tasks_created

    def counted(run: DagRun) -> None:
        marks.append(run.run_id)
        mark(run)

    monkeypatch.setattr(embedded.repos.runs, "mark_tasks_created", counted)
    transition = embedded.repos.runs.transition

    def dies_at_the_start(*args: Any, **kwargs: Any) -> DagRun:
        monkeypatch.setattr(embedded.repos.runs, "transition", transition)
        raise Crash("died after taking the run's slot")

    monkeypatch.setattr(embedded.repos.runs, "transition", dies_at_the_start)
    with pytest.raises(Crash):
        embedded.service.trigger("serial", run_id="r1")
    assert embedded.repos.dags.get("serial").active_runs == frozenset({"r1"})
    assert embedded.repos.runs.queued_runs("serial", limit=10) == []

    first = embedded.service.trigger("serial", run_id="r1")  # its redelivery
    assert (first.run.state, first.run.tasks_created) == (RunState.RUNNING, True)
    assert embedded.repos.runs.get("serial", "r1") == first.run
    second = embedded.service.trigger("serial", run_id="r2")
    assert second.run.state is RunState.QUEUED
    assert embedded.repos.runs.queued_runs("serial", limit=10) == [("serial", "r2")]
    assert marks == ["r2"]
    assert finish(embedded, "serial", "r1").state is RunState.SUCCESS
    assert finish(embedded, "serial", "r2").state is RunState.SUCCESS


def test_a_throttled_retry_runs_when_a_slot_frees(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader(
        {
            "dag": "narrow",
            "max_active_tasks": 1,
            "tasks": {
                "a": {**job(exit_code=1), "retries": 1, "retry_delay": "10ms"},
                "b": job(duration="200ms"),  # takes the slot a's first failure frees
            },
        }
    )
    embedded.service.trigger("narrow", run_id="r1")

    run = finish(embedded, "narrow", "r1", timeout=5)

    assert states(embedded, "narrow", "r1") == {"a": (T.FAILED, 2), "b": (T.SUCCESS, 1)}
    assert run.state is RunState.FAILED


def test_a_reopened_run_respects_max_active_runs(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader(
        {
            "dag": "reopen",
            "max_active_runs": 1,
            "tasks": {"a": {"noop": None, "local": {"command": ["sleep", "{{ params.seconds }}"]}}},
        }
    )
    embedded.service.trigger("reopen", run_id="r1", conf={"seconds": 0})
    assert finish(embedded, "reopen", "r1").state is RunState.SUCCESS
    embedded.service.trigger("reopen", run_id="r2", conf={"seconds": 2})
    assert embedded.repos.runs.get("reopen", "r2").state is RunState.RUNNING

    embedded.service.clear("reopen", "r1", "a")

    running = [
        r.run_id for r in embedded.repos.runs.list_for_dag("reopen") if r.state is RunState.RUNNING
    ]
    assert len(running) <= 1, f"{running} running with max_active_runs=1"


# --- duplicates ------------------------------------------------------------------------------


def test_duplicate_and_late_job_reports_change_nothing(
    embedded: EmbeddedSkydag, dag_loader: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag_loader(
        {
            "dag": "dups",
            "tasks": {
                "a": {"noop": None, "local": FAILS_FIRST_TRY, "retries": 1, "retry_delay": "10ms"},
                "b": {"depends_on": ["a"], **job()},
            },
        }
    )
    # Every job report is delivered twice, as an at-least-once event source may.
    seen: list[JobReport] = []
    poll = embedded.local.poll

    def poll_twice() -> list[JobReport]:
        reports = poll()
        seen.extend(reports)
        return [r for r in reports for _ in range(2)]

    monkeypatch.setattr(embedded.local, "poll", poll_twice)
    # Try 1's reports arriving late, while try 2 is under way.
    late: list[Outcome] = []

    def on_change(old: TaskInstance | None, new: TaskInstance) -> None:
        if new.task_id == "a" and new.try_number == 2 and new.state is T.QUEUED:
            for status in (JobStatus.RUNNING, JobStatus.FAILED, JobStatus.SUCCEEDED):
                report = JobReport("dups", "r1", "a", 1, status, exit_code=0)
                late.append(embedded.service.on_job_report(report).outcome)

    embedded.task_listeners.append(on_change)
    embedded.service.trigger("dups", run_id="r1")

    run = finish(embedded, "dups", "r1")

    assert run.state is RunState.SUCCESS
    assert states(embedded, "dups", "r1") == {"a": (T.SUCCESS, 2), "b": (T.SUCCESS, 1)}
    assert late == [Outcome.IGNORE] * 3
    assert dispatched(embedded) == 3
    assert {(r.task_id, r.try_number, r.status) for r in seen} == {
        ("a", 1, JobStatus.FAILED),
        ("a", 2, JobStatus.SUCCEEDED),
        ("b", 1, JobStatus.SUCCEEDED),
    }

    # Every report once more, after the fact: all ignored, nothing written.
    before = tasks(embedded, "dups", "r1")
    decisions = [embedded.service.on_job_report(r) for r in seen]
    assert [d.outcome for d in decisions] == [Outcome.IGNORE] * len(seen)
    assert embedded.pump() == 0
    assert tasks(embedded, "dups", "r1") == before


def test_duplicate_signal_trigger_returns_the_same_run(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader(diamond("sig", job()))
    event = {"id": "e1", "source": "test", "detail-type": "Ready", "detail": {"k": 1}}

    first = embedded.service.trigger("sig", run_type=RunType.SIGNAL, event=event)
    second = embedded.service.trigger("sig", run_type=RunType.SIGNAL, event=event)

    assert (first.created, second.created) == (True, False)
    assert first.run.run_id == second.run.run_id == "signal__e1"
    assert second.run.trigger == event
    run = finish(embedded, "sig", "signal__e1")
    third = embedded.service.trigger("sig", run_type=RunType.SIGNAL, event=event)

    assert run.state is RunState.SUCCESS
    assert (third.created, third.run.run_id, third.run.state) == (
        False,
        "signal__e1",
        RunState.SUCCESS,
    )
    assert [r.run_id for r in embedded.repos.runs.list_for_dag("sig")] == ["signal__e1"]
    assert dispatched(embedded) == 4
    assert embedded.pump() == 0


# --- commands --------------------------------------------------------------------------------


def test_clear_with_downstream_reruns_the_failed_branch(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader(
        {
            "dag": "branch",
            "tasks": {
                "a": job(),
                "b": {"depends_on": ["a"], "noop": None, "local": FAILS_FIRST_TRY},
                "c": {"depends_on": ["b"], **job()},
                "d": {"depends_on": ["a"], **job()},
            },
        }
    )
    embedded.service.trigger("branch", run_id="r1")
    failed = finish(embedded, "branch", "r1")
    assert failed.state is RunState.FAILED
    assert states(embedded, "branch", "r1") == {
        "a": (T.SUCCESS, 1),
        "b": (T.FAILED, 1),
        "c": (T.UPSTREAM_FAILED, 0),
        "d": (T.SUCCESS, 1),
    }

    cleared = embedded.service.clear("branch", "r1", "b", downstream=True)

    assert cleared == ["b", "c"]
    reopened = embedded.repos.runs.get("branch", "r1")
    assert (reopened.state, reopened.ended_at, reopened.reason) == (RunState.RUNNING, None, None)
    assert reopened.finished_idx == {3}  # d: a is no leaf, its finish was not counted
    run = finish(embedded, "branch", "r1")
    assert run.state is RunState.SUCCESS
    assert states(embedded, "branch", "r1") == {
        "a": (T.SUCCESS, 1),  # not rerun
        "b": (T.SUCCESS, 2),
        "c": (T.SUCCESS, 1),
        "d": (T.SUCCESS, 1),
    }
    assert dispatched(embedded) == 5


def test_a_clear_that_loses_a_race_keeps_the_run_counts(
    embedded: EmbeddedSkydag, dag_loader: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag_loader(
        {
            "dag": "race",
            "tasks": {
                "a": NOOP,
                "b": job(duration="3s"),
                "c": {"depends_on": ["a", "b"], "trigger_rule": "one_success", **job()},
            },
        }
    )
    embedded.service.trigger("race", run_id="r1")
    pump_until(embedded, lambda: embedded.repos.runs.get("race", "r1").finished_count == 2)
    assert states(embedded, "race", "r1")["b"][0] is T.RUNNING  # c finished, b still runs
    forget = embedded.repos.runs.forget_finished

    def forget_while_c_changes(*args: Any, **kwargs: Any) -> Any:
        uncounted = forget(*args, **kwargs)
        # Meanwhile another writer touches c (here: an upstream report), so the clear's
        # transition, conditional on c's version, loses.
        embedded.repos.tasks.report_upstream(("race", "r1", "c"), "b", UpstreamReport(T.SUCCESS, 1))
        return uncounted

    monkeypatch.setattr(embedded.repos.runs, "forget_finished", forget_while_c_changes)
    embedded.service.clear("race", "r1", "c")

    finished = [t for t, (s, _) in states(embedded, "race", "r1").items() if s in FINISHED]
    assert embedded.repos.runs.get("race", "r1").finished_count == len(finished)


def test_a_replayed_finish_of_a_cleared_task_does_not_end_the_run(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    rerun_sleeps = {"command": ["sh", "-c", 'test "$SKYDAG_TRY" -ge 2 && sleep 1']}
    dag_loader(
        {
            "dag": "recount",
            "tasks": {"a": job(), "b": {"depends_on": ["a"], "noop": None, "local": rerun_sleeps}},
        }
    )
    embedded.service.trigger("recount", run_id="r1")
    assert finish(embedded, "recount", "r1").state is RunState.FAILED
    embedded.service.clear("recount", "r1", "b")
    pump_until(embedded, lambda: states(embedded, "recount", "r1")["b"] == (T.RUNNING, 2))

    embedded.feed = StreamFeed(embedded.settings)  # the stream redelivered from the start
    embedded.pump()

    assert embedded.repos.runs.get("recount", "r1").state is RunState.RUNNING
    assert finish(embedded, "recount", "r1").state is RunState.SUCCESS


def test_a_stale_count_never_ends_a_run_early(embedded: EmbeddedSkydag, dag_loader: Loader) -> None:
    """The narrow race left open above (a replayed finish counted just as a clear lands):
    the run's end is checked against its task instances, and the stale count is undone."""
    rerun_sleeps = {"command": ["sh", "-c", 'test "$SKYDAG_TRY" -ge 2 && sleep 1']}
    spec = dag_loader(
        {
            "dag": "stale",
            "tasks": {"a": job(), "b": {"depends_on": ["a"], "noop": None, "local": rerun_sleeps}},
        }
    )
    embedded.service.trigger("stale", run_id="r1")
    assert finish(embedded, "stale", "r1").state is RunState.FAILED
    embedded.service.clear("stale", "r1", "b")
    pump_until(embedded, lambda: states(embedded, "stale", "r1")["b"] == (T.RUNNING, 2))
    # What the race leaves behind: b counted as finished while it runs again.
    b = embedded.repos.tasks.get("stale", "r1", "b")
    run = embedded.repos.runs.record_finished(b, spec.task_index("b"), failed_leaf=False)
    assert run.finished_idx == {1}  # every leaf (a is none: not counted)

    embedded.service.runs.complete_if_done(spec, run)

    run = embedded.repos.runs.get("stale", "r1")
    # b uncounted; a, found finished, counted, and from now on every finish counts.
    assert (run.state, run.finished_idx, run.counts_all) == (RunState.RUNNING, {0}, True)
    assert finish(embedded, "stale", "r1").state is RunState.SUCCESS


def test_mark_success_of_a_retrying_task_lets_its_downstream_run(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader(
        {
            "dag": "marked",
            "tasks": {
                "a": {**job(exit_code=1), "retries": 3, "retry_delay": "1h"},
                "b": {"depends_on": ["a"], **job()},
            },
        }
    )
    embedded.service.trigger("marked", run_id="r1")
    pump_until(embedded, lambda: states(embedded, "marked", "r1")["a"][0] is T.UP_FOR_RETRY)

    marked = embedded.service.mark("marked", "r1", "a", T.SUCCESS)

    assert (marked.state, marked.reason) == (T.SUCCESS, "marked success")
    run = finish(embedded, "marked", "r1")
    assert run.state is RunState.SUCCESS
    assert states(embedded, "marked", "r1") == {"a": (T.SUCCESS, 1), "b": (T.SUCCESS, 1)}
    assert embedded.repos.tasks.due(embedded.clock.now().replace(year=2100)) == []


def test_mark_success_of_a_failed_task_lets_its_downstream_run(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader(
        {"dag": "marked", "tasks": {"a": job(exit_code=1), "b": {"depends_on": ["a"], **job()}}}
    )
    embedded.service.trigger("marked", run_id="r1")
    assert finish(embedded, "marked", "r1").state is RunState.FAILED

    embedded.service.mark("marked", "r1", "a", T.SUCCESS)

    run = finish(embedded, "marked", "r1")
    assert states(embedded, "marked", "r1") == {"a": (T.SUCCESS, 1), "b": (T.SUCCESS, 1)}
    assert run.state is RunState.SUCCESS


def test_cancel_run_stops_unfinished_tasks(embedded: EmbeddedSkydag, dag_loader: Loader) -> None:
    dag_loader(
        {
            "dag": "cancel",
            "tasks": {
                "fast": NOOP,
                "long1": job(duration="5s"),
                "long2": job(duration="5s"),
                "next": {"depends_on": ["long1", "fast"], **job()},
            },
        }
    )
    started = time.monotonic()
    embedded.service.trigger("cancel", run_id="r1")
    pump_until(
        embedded,
        lambda: [s for s, _ in states(embedded, "cancel", "r1").values()].count(T.RUNNING) == 2,
    )

    cancelled = embedded.service.cancel_run("cancel", "r1", reason="operator said so")
    drain(embedded)

    assert (cancelled.state, cancelled.reason) == (RunState.CANCELLED, "operator said so")
    assert time.monotonic() - started < 4
    found = tasks(embedded, "cancel", "r1")
    assert {t: ti.state for t, ti in found.items()} == {
        "fast": T.SUCCESS,
        "long1": T.STOPPED,
        "long2": T.STOPPED,
        "next": T.STOPPED,
    }
    assert {found[t].reason for t in ("long1", "long2", "next")} == {"operator said so"}
    run = embedded.repos.runs.get("cancel", "r1")
    assert run.state is RunState.CANCELLED
    assert run.active == frozenset()
    assert embedded.repos.dags.get("cancel").active_runs == frozenset()
    assert embedded.local.running() == 0
    # Cancelling again is a no-op.
    assert embedded.service.cancel_run("cancel", "r1").state is RunState.CANCELLED


# --- stream replay ---------------------------------------------------------------------------


def _run_and_replay(env: EmbeddedSkydag, dag: str, how: str) -> tuple[int, int]:
    """Run the DAG, replay every change; the dispatch counts before and after."""
    pairs: list[tuple[str, Any, Any]] = []
    env.task_listeners.append(lambda old, new: pairs.append(("task", old, new)))
    env.run_listeners.append(lambda old, new: pairs.append(("run", old, new)))
    env.service.trigger(dag, run_id="r1")
    assert finish(env, dag, "r1").state is RunState.SUCCESS
    drain(env)
    before_count = dispatched(env)
    before = tasks(env, dag, "r1")

    if how == "feed":
        env.feed = StreamFeed(env.settings)  # from TRIM_HORIZON: every record again
        drain(env)
    else:
        for kind, old, new in pairs:
            if kind == "run":
                env.service.on_run_changed(old, new)
            else:
                env.service.on_task_changed(old, new)
        drain(env)

    assert tasks(env, dag, "r1") == before
    assert env.repos.runs.get(dag, "r1").state is RunState.SUCCESS
    return before_count, dispatched(env)


@pytest.mark.parametrize("how", ["feed", "pairs"])
def test_replaying_the_stream_dispatches_nothing_twice(
    embedded: EmbeddedSkydag, dag_loader: Loader, how: str
) -> None:
    dag_loader(chain("replay", job()))
    before, after = _run_and_replay(embedded, "replay", how)
    assert before == 3
    assert after == before


def test_replaying_the_stream_dispatches_no_noop_twice(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader(chain("replay-noop", NOOP))
    before, after = _run_and_replay(embedded, "replay-noop", "feed")
    assert before == 3
    assert after == before


def test_a_run_cancelled_between_intent_and_dispatch_starts_no_job(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader({"dag": "late", "tasks": {"a": job(duration="5s")}})
    run = embedded.service.trigger("late", run_id="r1").run
    # The scheduler records a's dispatch intent (pending -> queued) ...
    embedded.service.on_run_changed(None, run)
    assert tasks(embedded, "late", "r1")["a"].state is T.QUEUED
    # ... the run is cancelled before the queued change reaches the dispatcher ...
    embedded.service.cancel_run("late", "r1")
    drain(embedded)
    # ... so no job was ever started for it.
    assert embedded.local.dispatch_count == 0  # type: ignore[attr-defined]
    assert tasks(embedded, "late", "r1")["a"].state is T.STOPPED


def test_runs_triggered_while_paused_wait_and_start_on_unpause(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader({"dag": "paused", "max_active_runs": 2, "tasks": {"a": NOOP}})
    embedded.service.set_paused("paused", True)
    queued = [embedded.service.trigger("paused", run_id=f"r{i}").run for i in range(3)]
    assert {r.state for r in queued} == {RunState.QUEUED}
    embedded.service.set_paused("paused", False)
    states = {r: embedded.repos.runs.get("paused", r).state for r in ("r0", "r1", "r2")}
    assert list(states.values()).count(RunState.RUNNING) == 2
    for run_id in ("r0", "r1", "r2"):
        assert embedded.run_until_finished("paused", run_id, timeout=30).state is RunState.SUCCESS


# --- the try history and one clock -----------------------------------------------------------


def assert_times_add_up(ti: TaskInstance) -> None:
    """Every try known starts after it was queued and ends after it started."""
    if ti.queued_at and ti.started_at:
        assert ti.queued_at <= ti.started_at
    for record in all_tries(ti):
        if record.started_at and record.ended_at:
            assert record.started_at <= record.ended_at, record


def try_rows(ti: TaskInstance) -> list[tuple[int, TaskState, int | None, str | None]]:
    return [(r.try_number, r.state, r.exit_code, r.reason) for r in all_tries(ti)]


def test_retries_clears_and_marks_leave_a_truthful_history(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    flaky = {"noop": None, "local": FAILS_FIRST_TRY, "retries": 1, "retry_delay": "10ms"}
    dag_loader({"dag": "history", "tasks": {"a": flaky}})
    embedded.service.trigger("history", run_id="r1")
    assert finish(embedded, "history", "r1").state is RunState.SUCCESS
    a = tasks(embedded, "history", "r1")["a"]
    assert try_rows(a) == [(1, T.FAILED, 1, "exit code 1"), (2, T.SUCCESS, 0, None)]
    assert [r.try_number for r in a.tries] == [1]  # the current try is the instance itself
    assert_times_add_up(a)

    embedded.service.clear("history", "r1", "a")
    assert finish(embedded, "history", "r1").state is RunState.SUCCESS
    a = tasks(embedded, "history", "r1")["a"]
    assert [(n, s) for n, s, _, _ in try_rows(a)] == [
        (1, T.FAILED),
        (2, T.SUCCESS),
        (3, T.SUCCESS),
    ]

    marked = embedded.service.mark("history", "r1", "a", T.FAILED)
    assert (marked.state, marked.exit_code, marked.reason) == (T.FAILED, None, "marked failed")
    a = tasks(embedded, "history", "r1")["a"]
    # Marking reset the task and set its outcome: no try ran, the three tries stay as they were.
    assert [(n, s) for n, s, _, _ in try_rows(a)] == [
        (1, T.FAILED),
        (2, T.SUCCESS),
        (3, T.SUCCESS),
    ]
    assert (a.state, a.exit_code, a.job_id) == (T.FAILED, None, None)
    assert all_tries(a)[-1].job_id is not None
    for record in all_tries(a):
        assert record.ended_at is not None
        assert record.started_at is not None


def test_a_running_try_marked_failed_shows_no_exit_code(
    embedded: EmbeddedSkydag, dag_loader: Loader
) -> None:
    dag_loader({"dag": "slowmark", "tasks": {"a": job(duration="5s")}})
    embedded.service.trigger("slowmark", run_id="r1")
    pump_until(embedded, lambda: states(embedded, "slowmark", "r1")["a"][0] is T.RUNNING)
    embedded.service.mark("slowmark", "r1", "a", T.FAILED)
    drain(embedded)
    a = tasks(embedded, "slowmark", "r1")["a"]
    assert try_rows(a) == [(1, T.FAILED, None, "marked failed")]
    assert_times_add_up(a)


@pytest.fixture
def remote_jobs(aws: Settings, tmp_path: Path) -> Iterator[tuple[EmbeddedSkydag, FakeService]]:
    """The scheduler on a settable clock, with remote jobs that end when the test says."""
    clock, jobs = SettableClock(), FakeService()
    env = EmbeddedSkydag(
        aws, log_dir=tmp_path, clock=clock, target=jobs, targets=TargetSet(clock, jobs)
    )
    try:
        yield env, jobs
    finally:
        env.close()


def settle(env: EmbeddedSkydag) -> None:
    for _ in range(200):
        if not env.pump():
            return
    raise AssertionError("the scheduler never settled")


REMOTE_DAG: dict[str, Any] = {
    "dag": "remote",
    "defaults": {"retries": 1, "retry_delay": "1m", "timeout": "1h"},
    "tasks": {
        "job": {
            "restart_on": [{"source": ["ml.trainer"], "detail-type": ["model.validated"]}],
            "batch": {"job_queue": "q", "job_definition": "d"},
        }
    },
}


def start_remote(env: EmbeddedSkydag) -> str:
    env.repos.dags.save_version(
        DagSpec.model_validate(REMOTE_DAG), source="test", sha256=None, now=env.clock.now()
    )
    run_id = env.service.trigger("remote").run.run_id
    settle(env)
    return run_id


def test_a_restarted_try_is_history_stopped_when_it_was_replaced(
    remote_jobs: tuple[EmbeddedSkydag, FakeService],
) -> None:
    env, jobs = remote_jobs
    run_id = start_remote(env)
    assert isinstance(env.clock, SettableClock)
    restart_time = env.clock.advance(timedelta(minutes=5))
    signal = env.put_event("model.validated", {}, source="ml.trainer")
    settle(env)
    ti = env.repos.tasks.get("remote", run_id, "job")
    assert try_rows(ti) == [
        (1, T.STOPPED, None, f"restarted by signal {signal['id']}"),
        (2, T.RUNNING, None, None),
    ]
    assert (ti.tries[0].job_id, ti.tries[0].ended_at) == ("job-1", restart_time)
    assert ti.job_id == "job-2"
    assert jobs.cancelled == [("job-1", "restarted by a signal")]
    assert_times_add_up(ti)


class SkewedService(FakeService):
    """A service whose clock is off: what it describes carries times before the try was
    queued or after the scheduler's now."""

    skew: timedelta = timedelta(0)

    def describe(self, job: JobRef) -> JobReport | None:
        found = super().describe(job)
        return None if found is None else replace(found, at=START + self.skew)


def test_skewed_service_times_never_make_a_try_end_before_it_started(
    aws: Settings, tmp_path: Path
) -> None:
    clock, jobs = SettableClock(), SkewedService()
    env = EmbeddedSkydag(
        aws, log_dir=tmp_path, clock=clock, target=jobs, targets=TargetSet(clock, jobs)
    )
    try:
        run_id = start_remote(env)
        queued = env.repos.tasks.get("remote", run_id, "job")
        # The job's "running" event says it started an hour in the future...
        ahead = env.service.on_job_event(
            jobs.event("job-1", JobStatus.RUNNING, at=START + timedelta(hours=1))
        )
        assert ahead.outcome is Outcome.IGNORE  # already running: dispatch recorded the job
        # ... and the lost end, described by the reconciler, that it ended before queued.
        jobs.outcome["job-1"] = JobStatus.FAILED
        jobs.skew = -timedelta(hours=3)
        clock.advance(RUNNING_CHECK_EVERY)
        assert env.service.reconcile().repaired == 1
        settle(env)
        failed = env.repos.tasks.get("remote", run_id, "job")
        assert failed.state is T.UP_FOR_RETRY
        assert failed.started_at == queued.queued_at == START
        assert failed.ended_at == failed.started_at  # clamped: never before the start
        # The retry's job reports times from a clock ahead of ours: kept at our now.
        clock.advance(timedelta(minutes=1))
        env.service.reconcile()
        settle(env)
        jobs.outcome["job-2"] = JobStatus.SUCCEEDED
        jobs.skew = timedelta(hours=5)
        clock.advance(RUNNING_CHECK_EVERY)
        env.service.reconcile()
        settle(env)
        done = env.repos.tasks.get("remote", run_id, "job")
        assert done.state is T.SUCCESS
        assert done.ended_at == clock.now()
        assert [(r.try_number, r.state) for r in all_tries(done)] == [
            (1, T.FAILED),
            (2, T.SUCCESS),
        ]
        assert_times_add_up(done)
        for record in all_tries(done):
            assert record.ended_at is not None
            assert record.ended_at <= clock.now()
    finally:
        env.close()


# --- exactly once under races and redeliveries ---------------------------------------------

BATCH: dict[str, Any] = {"batch": {"job_queue": "q", "job_definition": "d"}}


def load_remote(env: EmbeddedSkydag, dag: dict[str, Any]) -> DagSpec:
    spec = DagSpec.model_validate(dag)
    env.repos.dags.save_version(spec, source="test", sha256=None, now=env.clock.now())
    return spec


def succeed(env: EmbeddedSkydag, jobs: FakeService, task_id: str, try_number: int) -> None:
    job_id = jobs.job_of(task_id, try_number)
    decision = env.service.on_job_event(jobs.event(job_id, JobStatus.SUCCEEDED, exit_code=0))
    assert decision.outcome is Outcome.ACCEPT, decision.reason


@pytest.mark.parametrize("told_by", ["stream record", "job event at once"])
def test_a_clear_racing_a_finish_never_runs_the_child_on_the_old_result(
    remote_jobs: tuple[EmbeddedSkydag, FakeService], monkeypatch: pytest.MonkeyPatch, told_by: str
) -> None:
    """Before: the clear of ``t`` deleted the child's report entry for ``t`` while ``t``'s
    old success was being reported; "no entry" accepted the stale report, and ``child``
    ran on try 1's result while ``t`` was on try 2. The finish is told by its stream
    record, or at once by the scheduler that handled the job's event."""
    env, jobs = remote_jobs
    load_remote(
        env, {"dag": "racy", "tasks": {"t": BATCH, "child": {"depends_on": ["t"], **BATCH}}}
    )
    run_id = env.service.trigger("racy").run.run_id
    settle(env)
    apply = env.repos.tasks.apply
    cleared: list[str] = []

    def clear_first(ti: TaskInstance, transition: Any, **kwargs: Any) -> Any:
        # The clear lands after the finish and the child were read, before the report
        # (with the child's dispatch: one write) reaches the child.
        if kwargs.get("upstream") is not None and not cleared:
            cleared.extend(env.service.clear("racy", run_id, "t"))
        return apply(ti, transition, **kwargs)

    if told_by == "stream record":
        monkeypatch.setattr(env.service.reports, "go_on", None)
        succeed(env, jobs, "t", 1)
        monkeypatch.setattr(env.repos.tasks, "apply", clear_first)
    else:
        monkeypatch.setattr(env.repos.tasks, "apply", clear_first)
        succeed(env, jobs, "t", 1)
    settle(env)

    assert cleared == ["t"]
    assert states(env, "racy", run_id) == {"t": (T.RUNNING, 2), "child": (T.PENDING, 0)}
    assert [request.task_id for request in jobs.jobs.values()] == ["t", "t"]
    succeed(env, jobs, "t", 2)
    settle(env)
    assert states(env, "racy", run_id)["child"] == (T.RUNNING, 1)  # on try 2's result


def test_a_fan_out_cut_short_still_evaluates_every_child(
    remote_jobs: tuple[EmbeddedSkydag, FakeService], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the finish record that died after reporting to one child, before evaluating
    it, was redelivered; that child's report was already there, so the redelivery skipped
    it, and it stayed pending forever. (The finish is told by its record: the scheduler
    that handled the job's event died before going on. The children have a ``when:``,
    so their report and their decision are two writes: see ``reports_in_one_write``.)"""
    env, jobs = remote_jobs
    children = {c: {"depends_on": ["t"], "when": True, **BATCH} for c in ("c1", "c2")}
    load_remote(env, {"dag": "fan", "tasks": {"t": BATCH, **children}})
    run_id = env.service.trigger("fan").run.run_id
    settle(env)
    monkeypatch.setattr(env.service.reports, "go_on", None)
    succeed(env, jobs, "t", 1)
    report = env.repos.tasks.report_upstream

    def die_after_the_first_report(*args: Any, **options: Any) -> Any:
        monkeypatch.setattr(env.repos.tasks, "report_upstream", report)
        report(*args, **options)
        raise Crash("died after reporting to the first child")

    monkeypatch.setattr(env.repos.tasks, "report_upstream", die_after_the_first_report)
    with pytest.raises(Crash):
        settle(env)
    reported = [ti.task_id for ti in tasks(env, "fan", run_id).values() if "t" in ti.upstream]
    assert len(reported) == 1

    # The stream delivers the record again (its batch failed).
    env.service.on_task_changed(None, env.repos.tasks.get("fan", run_id, "t"))
    settle(env)

    assert states(env, "fan", run_id) == {
        "t": (T.SUCCESS, 1),
        "c1": (T.RUNNING, 1),
        "c2": (T.RUNNING, 1),
    }


def test_a_stale_finish_of_a_reopened_run_keeps_its_run_slot(
    remote_jobs: tuple[EmbeddedSkydag, FakeService],
) -> None:
    """Before: the run's ``running → success`` record, redelivered after a clear reopened
    the run, freed the reopened run's ``max_active_runs`` slot: a second run then ran
    beside it, and task signals (which reach the runs holding a slot) stopped reaching it."""
    env, jobs = remote_jobs
    load_remote(env, {"dag": "serial", "max_active_runs": 1, "tasks": {"a": BATCH}})
    finishes: list[tuple[DagRun | None, DagRun]] = []

    def watch(old: DagRun | None, new: DagRun) -> None:
        if old is not None and old.state is RunState.RUNNING and new.state is RunState.SUCCESS:
            finishes.append((old, new))

    env.run_listeners.append(watch)
    env.service.trigger("serial", run_id="r1")
    settle(env)
    succeed(env, jobs, "a", 1)
    settle(env)
    env.service.clear("serial", "r1", "a")
    settle(env)
    assert env.repos.runs.get("serial", "r1").state is RunState.RUNNING
    ((old, new),) = finishes

    env.service.on_run_changed(old, new)  # the old finish, delivered again

    assert env.repos.dags.get("serial").active_runs == frozenset({"r1"})
    assert env.service.trigger("serial", run_id="r2").run.state is RunState.QUEUED
    settle(env)
    assert env.repos.runs.get("serial", "r2").state is RunState.QUEUED


def test_an_always_task_starts_with_its_run(
    remote_jobs: tuple[EmbeddedSkydag, FakeService],
) -> None:
    """Before: a starting run evaluated only its root tasks, so a ``trigger_rule: always``
    task waited for its upstreams to finish instead of starting at once with the run."""
    env, jobs = remote_jobs
    load_remote(
        env,
        {
            "dag": "always",
            "tasks": {
                "a": BATCH,
                "b": {"depends_on": ["a"], **BATCH},
                "watch": {"depends_on": ["b"], "trigger_rule": "always", **BATCH},
            },
        },
    )
    run_id = env.service.trigger("always").run.run_id
    settle(env)

    assert states(env, "always", run_id) == {
        "a": (T.RUNNING, 1),
        "b": (T.PENDING, 0),
        "watch": (T.RUNNING, 1),
    }
    for task_id in ("watch", "a", "b"):
        succeed(env, jobs, task_id, 1)
        settle(env)
    assert env.repos.runs.get("always", run_id).state is RunState.SUCCESS
    assert len(jobs.jobs) == 3
