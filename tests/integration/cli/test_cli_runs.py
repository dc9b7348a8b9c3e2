"""`skydag trigger|signal|backfill`, `runs list|show|cancel` and `tasks clear|mark` against
moto; `trigger --wait` and `backfill` end to end with the real scheduler routing the
command events the CLI put on the bus."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from cli_support import CHAIN, DAILY, Skydag

from skydag.cli import remote
from skydag.dev.embedded import EmbeddedSkydag
from skydag.engine.models import DagRun, RunType, TaskInstance, TryRecord
from skydag.engine.states import Cause, RunState, TaskState

ROOT = Path(__file__).resolve().parents[3]
SIGNAL_FILE = str(ROOT / "events" / "signals" / "model_emitted.json")
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
RUN_KEYS = {
    "dag",
    "run_id",
    "state",
    "run_type",
    "dag_version",
    "conf",
    "logical_date",
    "started_at",
    "ended_at",
    "reason",
}

FAILING = f"""
dag: failing
tasks:
  first: {{noop: {{}}}}
  crash:
    depends_on: [first]
    batch: {{job_queue: q, job_definition: d}}
    local: {{command: ["{sys.executable}", -c, "raise SystemExit(3)"]}}
  after: {{noop: {{}}, depends_on: [crash]}}
"""


@pytest.fixture
def scheduler(skydag: Skydag, tmp_path: Path) -> Iterator[EmbeddedSkydag]:
    """The real scheduler on the same moto, fed what the CLI puts on the bus."""
    env = EmbeddedSkydag(skydag.settings, log_dir=tmp_path)
    try:
        yield env
    finally:
        env.close()


def deliver(skydag: Skydag, env: EmbeddedSkydag) -> None:
    """What EventBridge and the scheduler Lambda do between two polls of the CLI."""
    for event in skydag.bus_events():
        env.route(event)
    while env.pump():
        pass
    time.sleep(0.01)  # a local job may be running: let it


def make_run(
    skydag: Skydag,
    dag: str,
    run_id: str,
    *,
    state: RunState = RunState.RUNNING,
    created_at: datetime = T0,
    tasks: dict[str, TaskState] | None = None,
) -> DagRun:
    run = DagRun(
        dag_id=dag,
        run_id=run_id,
        dag_version=1,
        run_type=RunType(run_id.split("__", maxsplit=1)[0]),
        state=state,
        created_at=created_at,
        started_at=created_at,
    )
    repos = skydag.repos
    repos.runs.create(run)
    repos.tasks.put_new(
        TaskInstance(dag, run_id, task, dag_version=1, state=task_state, try_number=1)
        for task, task_state in (tasks or {}).items()
    )
    return run


# --- trigger -------------------------------------------------------------------------------


def test_trigger_sends_the_command_with_a_run_id_it_chose(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    result = skydag.run("trigger", "chain", "--conf", '{"size": 3}', "--output", "json")
    assert result.code == 0, result.err
    [event] = skydag.bus_events()
    assert event["source"] == "skydag.command"
    assert event["detail-type"] == "Trigger DAG"
    run_id = event["detail"]["run_id"]
    assert run_id.startswith("manual__")
    assert event["detail"] == {"dag": "chain", "conf": {"size": 3}, "run_id": run_id}
    assert result.json() == {
        "command": "Trigger DAG",
        "event_id": event["id"],
        "detail": event["detail"],
    }
    named = skydag.run("trigger", "chain", "--run-id", "manual__rerun-1")
    assert named.code == 0, named.err
    assert "chain/manual__rerun-1" in named.out
    assert skydag.bus_events()[0]["detail"] == {
        "dag": "chain",
        "conf": {},
        "run_id": "manual__rerun-1",
    }


def test_bad_conf_is_a_usage_error_naming_the_flag(
    skydag: Skydag, subtests: pytest.Subtests
) -> None:
    for conf, message in [
        ("{size: 3}", "--conf is not valid JSON"),
        ("[1, 2]", "--conf must be a JSON object"),
    ]:
        with subtests.test(conf=conf):
            result = skydag.run("trigger", "chain", "--conf", conf)
            assert result.code == 2
            assert f"skydag trigger: error: {message}" in result.err
            assert skydag.bus_events() == []


def test_trigger_refuses_unknown_dags_and_taken_run_ids(skydag: Skydag) -> None:
    unknown = skydag.run("trigger", "nope")
    assert unknown.code == 1
    assert "DAG 'nope' not found" in unknown.err
    skydag.load_dag(CHAIN)
    make_run(skydag, "chain", "manual__taken")
    taken = skydag.run("trigger", "chain", "--run-id", "manual__taken")
    assert taken.code == 1
    assert "run chain/manual__taken already exists (running)" in taken.err
    assert skydag.bus_events() == []


def test_trigger_wait_follows_the_run_to_success(
    skydag: Skydag, scheduler: EmbeddedSkydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    skydag.load_dag(CHAIN)
    monkeypatch.setattr(remote, "pause", lambda seconds: deliver(skydag, scheduler))
    result = skydag.run("trigger", "chain", "--wait", "--run-id", "manual__w", "--output", "json")
    assert result.code == 0, result.err
    run = result.json()
    assert set(run) == RUN_KEYS | {"tasks"}
    assert (run["dag"], run["run_id"], run["state"]) == ("chain", "manual__w", "success")
    assert [(t["task"], t["state"], t["try_number"]) for t in run["tasks"]] == [
        ("extract", "success", 1),
        ("load", "success", 1),
    ]
    # Live progress went to stderr.
    assert "run success" in result.err
    assert "extract                  success         try 1" in result.err
    # `runs show --output json` is the same object.
    shown = skydag.run("runs", "show", "chain", "manual__w", "--output", "json")
    assert shown.json() == run


def test_trigger_wait_exits_1_when_the_run_fails(
    skydag: Skydag, scheduler: EmbeddedSkydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    skydag.load_dag(FAILING)
    monkeypatch.setattr(remote, "pause", lambda seconds: deliver(skydag, scheduler))
    result = skydag.run("trigger", "failing", "--wait", "--timeout", "60")
    assert result.code == 1, result.err
    assert "run failing/manual__" in result.out
    assert ": failed" in result.out
    table = result.out.splitlines()
    assert table[0].split()[:3] == ["TASK", "STATE", "TRY"]
    assert table[2].split()[:4] == ["crash", "failed", "1", "3"]
    assert table[3].split()[:2] == ["after", "upstream_failed"]


def test_trigger_wait_says_when_the_scheduler_never_created_the_run(
    skydag: Skydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    skydag.load_dag(CHAIN)
    monkeypatch.setattr(remote, "pause", lambda seconds: None)
    result = skydag.run("trigger", "chain", "--wait", "--timeout", "0.01")
    assert result.code == 1
    assert "the scheduler has not created run chain/manual__" in result.err


# --- signal --------------------------------------------------------------------------------


def test_signal_puts_the_users_event_on_the_bus(skydag: Skydag) -> None:
    result = skydag.run(
        "signal",
        "--source",
        "acme.orders",
        "--detail-type",
        "order.placed",
        "--detail",
        '{"order": 7}',
        "--output",
        "json",
    )
    assert result.code == 0, result.err
    [event] = skydag.bus_events()
    assert (event["source"], event["detail-type"], event["detail"]) == (
        "acme.orders",
        "order.placed",
        {"order": 7},
    )
    assert result.json() == {
        "event_id": event["id"],
        "event_bus": "skydag",
        "source": "acme.orders",
        "detail-type": "order.placed",
    }


def test_signal_from_an_event_file(skydag: Skydag) -> None:
    result = skydag.run("signal", "--file", SIGNAL_FILE)
    assert result.code == 0, result.err
    [event] = skydag.bus_events()
    expected = json.loads(Path(SIGNAL_FILE).read_text(encoding="utf-8"))
    assert event["source"] == expected["source"] == "ml.trainer"
    assert event["detail-type"] == expected["detail-type"]
    assert event["detail"] == expected["detail"]
    assert "put event" in result.out


def test_signal_refuses_what_is_not_a_user_signal(
    skydag: Skydag, subtests: pytest.Subtests
) -> None:
    for argv, message in [
        (["--source", "aws.s3", "--detail-type", "x"], "aws.* sources are reserved"),
        (["--source", "skydag.command", "--detail-type", "Trigger DAG"], "use `skydag trigger`"),
        (["--source", "skydag", "--detail-type", "x"], "reserved for skydag itself"),
        (["--source", "acme.orders"], "--detail-type is required"),
        (["--detail-type", "x"], "--source is required"),
        (["--source", "acme.orders", "--detail-type", "x", "--detail", "{"], "--detail is not"),
    ]:
        with subtests.test(argv=argv):
            result = skydag.run("signal", *argv)
            assert result.code == 2
            assert message in result.err
            assert skydag.bus_events() == []


# --- backfill ------------------------------------------------------------------------------


def test_backfill_asks_for_the_runs_the_scheduler_then_creates(
    skydag: Skydag, scheduler: EmbeddedSkydag
) -> None:
    skydag.load_dag(DAILY)
    result = skydag.run(
        "backfill", "daily", "--start", "2026-11-01", "--end", "2026-11-03", "--output", "json"
    )
    assert result.code == 0, result.err
    sent = result.json()
    [event] = skydag.bus_events()
    assert event["detail-type"] == "Backfill DAG"
    assert event["detail"] == {
        "dag": "daily",
        "start": "2026-11-01T00:00:00+00:00",
        "end": "2026-11-03T00:00:00+00:00",
        "reprocess": "none",
        "backfill_id": sent["detail"]["backfill_id"],
    }
    assert sent["event_id"] == event["id"]
    assert len(sent["runs"]) == 3
    assert sent["runs"][0].startswith("backfill__2026-11-01T00:00:00")
    assert sent["create"][0] == "2026-11-01T00:00:00Z"
    assert sent["skip"] == []
    scheduler.route(event)
    created = {run.run_id for run in skydag.repos.runs.list_for_dag("daily")}
    assert created == set(sent["runs"])


def past_run(skydag: Skydag, day: int, state: RunState) -> DagRun:
    """A finished scheduled run of 2026-11-<day> of the DAG ``daily``."""
    logical_date = datetime(2026, 11, day, tzinfo=UTC)
    run = DagRun(
        "daily",
        f"scheduled__2026-11-0{day}",
        1,
        RunType.SCHEDULED,
        state=state,
        logical_date=logical_date,
        created_at=logical_date + timedelta(days=1),
    )
    assert skydag.repos.runs.create(run)
    return run


def test_backfill_dry_run_then_reprocess_failed_creates_only_the_failed_date(
    skydag: Skydag, scheduler: EmbeddedSkydag
) -> None:
    skydag.load_dag(DAILY)
    past_run(skydag, 1, RunState.SUCCESS)
    past_run(skydag, 2, RunState.FAILED)
    past_run(skydag, 3, RunState.SUCCESS)
    window = ("backfill", "daily", "--start", "2026-11-01", "--end", "2026-11-04")
    dates = [f"2026-11-0{day}T00:00:00Z" for day in (1, 2, 3, 4)]

    default = skydag.run(*window, "--dry-run", "--output", "json")
    assert default.code == 0, default.err
    assert default.json() == {"dag": "daily", "create": [dates[3]], "skip": dates[:3]}
    failed = skydag.run(*window, "--reprocess", "failed", "--dry-run", "--output", "json")
    assert failed.json() == {
        "dag": "daily",
        "create": [dates[1], dates[3]],
        "skip": [dates[0], dates[2]],
    }
    every = skydag.run(*window, "--reprocess", "all", "--dry-run", "--output", "json")
    assert every.json() == {"dag": "daily", "create": dates, "skip": []}
    text = skydag.run(*window, "--reprocess", "failed", "--dry-run")
    assert "would create: 2\n  2026-11-02T00:00:00Z\n  2026-11-04T00:00:00Z" in text.out
    assert skydag.bus_events() == []  # a dry run changes nothing
    assert len(skydag.repos.runs.list_for_dag("daily")) == 3

    # The range of the three past dates: only the failed one is run again.
    result = skydag.run(
        "backfill", "daily", "--start", "2026-11-01", "--end", "2026-11-03",
        "--reprocess", "failed", "--max-active-runs", "1", "--output", "json",
    )  # fmt: skip
    assert result.code == 0, result.err
    sent = result.json()
    assert sent["create"] == [dates[1]]
    [event] = skydag.bus_events()
    assert event["detail"]["reprocess"] == "failed"
    assert event["detail"]["max_active_runs"] == 1
    scheduler.route(event)
    runs = skydag.run("runs", "list", "daily", "--output", "json").json()
    backfills = [run for run in runs if run["run_type"] == "backfill"]
    assert [run["run_id"] for run in backfills] == sent["runs"]
    assert backfills[0]["logical_date"] == dates[1]
    assert skydag.repos.runs.get("daily", sent["runs"][0]).backfill_limit == 1
    listed = skydag.run("runs", "list", "daily")
    assert "backfill" in listed.out

    # Nothing left to rerun while that run runs: nothing is sent.
    again = skydag.run(*window[:5], "2026-11-03", "--reprocess", "failed")
    assert again.code == 0, again.err
    assert "nothing to create" in again.err
    assert skydag.bus_events() == []


def test_backfill_refuses_what_would_create_nothing(
    skydag: Skydag, subtests: pytest.Subtests
) -> None:
    skydag.load_dag(DAILY)
    skydag.load_dag(CHAIN)
    for argv, code, message in [
        (["daily", "--start", "yesterday", "--end", "2026-11-03"], 2, "--start is not an ISO"),
        (["daily", "--start", "2026-11-05", "--end", "2026-11-03"], 2, "is after --end"),
        (["chain", "--start", "2026-11-01", "--end", "2026-11-03"], 1, "has no schedule"),
        (
            ["daily", "--start", "2026-11-01T01:00", "--end", "2026-11-01T02:00"],
            1,
            "nothing to backfill",
        ),
    ]:
        with subtests.test(argv=argv):
            result = skydag.run("backfill", *argv)
            assert result.code == code
            assert message in result.err
            assert skydag.bus_events() == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--reprocess", "some"], "invalid choice: 'some'"),
        (["--max-active-runs", "0"], "must be an integer from 1 to 1000, not '0'"),
    ],
)
def test_backfill_flags_are_checked(
    skydag: Skydag, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        skydag.run("backfill", "daily", "--start", "2026-11-01", "--end", "2026-11-03", *flags)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# --- runs ----------------------------------------------------------------------------------


def test_runs_list_is_newest_first_across_dags(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    skydag.load_dag(DAILY)
    # Run ids do not sort by time across kinds: the list sorts by creation time.
    make_run(skydag, "chain", "signal__zzz", created_at=T0)
    make_run(skydag, "chain", "manual__2026-11-22T10", created_at=T0 + timedelta(hours=1))
    make_run(
        skydag,
        "daily",
        "scheduled__2026-11-21",
        state=RunState.SUCCESS,
        created_at=T0 + timedelta(hours=2),
    )
    every = skydag.run("runs", "list", "--output", "json")
    assert every.code == 0, every.err
    assert [(r["dag"], r["run_id"]) for r in every.json()] == [
        ("daily", "scheduled__2026-11-21"),
        ("chain", "manual__2026-11-22T10"),
        ("chain", "signal__zzz"),
    ]
    assert all(set(r) == RUN_KEYS for r in every.json())
    limited = skydag.run("runs", "list", "--limit", "2", "--output", "json").json()
    assert len(limited) == 2
    chain = skydag.run("runs", "list", "chain", "--output", "json").json()
    assert [r["run_id"] for r in chain] == ["manual__2026-11-22T10", "signal__zzz"]
    text = skydag.run("runs", "list", "chain").out.splitlines()
    assert text[0].split() == ["DAG", "RUN", "STATE", "TYPE", "STARTED", "DURATION"]
    assert text[1].split()[:4] == ["chain", "manual__2026-11-22T10", "running", "manual"]


def test_runs_list_and_show_name_what_is_missing(skydag: Skydag) -> None:
    unknown = skydag.run("runs", "list", "nope")
    assert unknown.code == 1
    assert "DAG 'nope' not found" in unknown.err
    skydag.load_dag(CHAIN)
    missing = skydag.run("runs", "show", "chain", "manual__nope")
    assert missing.code == 1
    assert "skydag runs show: error: run chain/manual__nope not found" in missing.err
    with pytest.raises(SystemExit) as usage:  # argparse's own usage error
        skydag.run("runs", "list", "--limit", "0")
    assert usage.value.code == 2


def test_runs_show_explains_tasks_that_never_started(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    make_run(
        skydag,
        "chain",
        "manual__x",
        state=RunState.FAILED,
        tasks={"load": TaskState.PENDING, "extract": TaskState.FAILED},
    )
    shown = skydag.run("runs", "show", "chain", "manual__x", "--output", "json").json()
    assert [t["task"] for t in shown["tasks"]] == ["extract", "load"]  # DAG order
    assert shown["tasks"][1]["reason"].startswith("not started:")
    text = skydag.run("runs", "show", "chain", "manual__x").out
    assert "run chain/manual__x: failed" in text


def test_runs_cancel_sends_the_command_for_an_unfinished_run(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    make_run(skydag, "chain", "manual__a")
    result = skydag.run("runs", "cancel", "chain", "manual__a", "--reason", "bad data")
    assert result.code == 0, result.err
    [event] = skydag.bus_events()
    assert event["detail-type"] == "Cancel Run"
    assert event["detail"] == {"dag": "chain", "run_id": "manual__a", "reason": "bad data"}
    assert skydag.repos.runs.get("chain", "manual__a").state is RunState.RUNNING


def test_runs_cancel_of_an_ended_run_sends_nothing(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    make_run(skydag, "chain", "manual__done", state=RunState.SUCCESS)
    make_run(skydag, "chain", "manual__gone", state=RunState.CANCELLED)
    done = skydag.run("runs", "cancel", "chain", "manual__done")
    assert done.code == 1
    assert "already ended (success)" in done.err
    gone = skydag.run("runs", "cancel", "chain", "manual__gone")
    assert gone.code == 0
    assert "already cancelled" in gone.err
    assert skydag.bus_events() == []


# --- tasks ---------------------------------------------------------------------------------


def test_tasks_clear_and_mark_send_their_commands(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    tasks = {"extract": TaskState.FAILED, "load": TaskState.UPSTREAM_FAILED}
    make_run(skydag, "chain", "manual__a", state=RunState.FAILED, tasks=tasks)
    cleared = skydag.run(
        "tasks", "clear", "chain", "manual__a", "extract", "--downstream", "--reset-state"
    )
    assert cleared.code == 0, cleared.err
    marked = skydag.run(
        "tasks", "mark", "chain", "manual__a", "extract", "success", "--output", "json"
    )
    assert marked.code == 0, marked.err
    clear_event, mark_event = skydag.bus_events()
    assert clear_event["detail-type"] == "Clear Task"
    assert clear_event["detail"] == {
        "dag": "chain",
        "run_id": "manual__a",
        "task": "extract",
        "downstream": True,
        "reset_state": True,
    }
    assert mark_event["detail-type"] == "Mark Task"
    assert mark_event["detail"] == {
        "dag": "chain",
        "run_id": "manual__a",
        "task": "extract",
        "state": "success",
    }
    assert marked.json()["event_id"] == mark_event["id"]


def test_tasks_commands_the_scheduler_would_refuse_are_errors_here(
    skydag: Skydag, subtests: pytest.Subtests
) -> None:
    skydag.load_dag(CHAIN)
    make_run(skydag, "chain", "manual__a", tasks={"extract": TaskState.RUNNING})
    make_run(
        skydag,
        "chain",
        "manual__cancelled",
        state=RunState.CANCELLED,
        tasks={"extract": TaskState.STOPPED},
    )
    for argv, message in [
        (["clear", "chain", "manual__a", "nope"], "task 'nope' not found in run"),
        (["clear", "chain", "manual__a", "extract"], "only a finished task can be cleared"),
        (["clear", "chain", "manual__cancelled", "extract"], "was cancelled; trigger a new run"),
        (["mark", "chain", "manual__nope", "extract", "failed"], "run chain/manual__nope not"),
    ]:
        with subtests.test(argv=argv):
            result = skydag.run("tasks", *argv)
            assert result.code == 1
            assert message in result.err
            assert skydag.bus_events() == []


def test_marking_a_task_with_its_own_state_sends_nothing(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    make_run(skydag, "chain", "manual__a", tasks={"extract": TaskState.SUCCESS})
    result = skydag.run("tasks", "mark", "chain", "manual__a", "extract", "success")
    assert result.code == 0
    assert "already success" in result.err
    assert skydag.bus_events() == []


# --- EventBridge's answer ------------------------------------------------------------------


def test_a_missing_bus_is_reported(skydag: Skydag, monkeypatch: pytest.MonkeyPatch) -> None:
    skydag.load_dag(CHAIN)
    monkeypatch.setenv("SKYDAG_EVENT_BUS", "no-such-bus")
    result = skydag.run("dags", "pause", "chain")
    assert result.code == 1
    assert "skydag dags pause: error: PutEvents: ResourceNotFoundException" in result.err
    assert "no-such-bus" in result.err


def test_a_refused_entry_is_reported(skydag: Skydag, monkeypatch: pytest.MonkeyPatch) -> None:
    skydag.load_dag(CHAIN)
    real_client = remote.Remote.client

    def stubbed(self: remote.Remote, service: str) -> Any:
        client = real_client(self, service)
        if service == "events":
            stubber = Stubber(client)
            stubber.add_response(
                "put_events",
                {
                    "FailedEntryCount": 1,
                    "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}],
                },
            )
            stubber.activate()
        return client

    monkeypatch.setattr(remote.Remote, "client", stubbed)
    result = skydag.run("trigger", "chain")
    assert result.code == 1
    assert "EventBridge refused the event for bus 'skydag': ThrottlingException: slow down" in (
        result.err
    )


# --- tries, start times and reasons --------------------------------------------------------


def test_runs_show_lists_every_try_of_each_task(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    make_run(skydag, "chain", "manual__t", state=RunState.FAILED)
    first = TryRecord(1, TaskState.FAILED, T0, T0 + timedelta(seconds=4), 3, "job-1", "exit 3")
    skydag.repos.tasks.put_new(
        [
            TaskInstance(
                "chain",
                "manual__t",
                "extract",
                dag_version=1,
                state=TaskState.FAILED,
                try_number=2,
                started_at=T0 + timedelta(minutes=1),
                ended_at=T0 + timedelta(minutes=2),
                job_id="job-2",
                reason="marked failed",
                tries=(first,),
            ),
            TaskInstance("chain", "manual__t", "load", dag_version=1),
        ]
    )
    shown = skydag.run("runs", "show", "chain", "manual__t", "--output", "json").json()
    extract, load = shown["tasks"]
    assert (extract["map_index"], load["map_index"]) == (None, None)
    # Marked failed by hand: no exit code, on the task and on its try.
    assert extract["exit_code"] is None
    assert extract["tries"] == [
        {
            "try_number": 1,
            "state": "failed",
            "started_at": "2026-11-22T09:00:00Z",
            "ended_at": "2026-11-22T09:00:04Z",
            "exit_code": 3,
            "job_id": "job-1",
            "reason": "exit 3",
        },
        {
            "try_number": 2,
            "state": "failed",
            "started_at": "2026-11-22T09:01:00Z",
            "ended_at": "2026-11-22T09:02:00Z",
            "exit_code": None,
            "job_id": "job-2",
            "reason": "marked failed",
        },
    ]
    assert load["tries"] == []


def test_a_failed_run_shows_the_tries_the_scheduler_recorded(
    skydag: Skydag, scheduler: EmbeddedSkydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    skydag.load_dag(
        FAILING.replace("  crash:\n", "  crash:\n    retries: 1\n    retry_delay: 0s\n")
    )
    monkeypatch.setattr(remote, "pause", lambda seconds: deliver(skydag, scheduler))
    result = skydag.run("trigger", "failing", "--wait", "--run-id", "manual__f", "--output", "json")
    assert result.code == 1, result.err
    crash = next(t for t in result.json()["tasks"] if t["task"] == "crash")
    assert [(t["try_number"], t["state"], t["exit_code"]) for t in crash["tries"]] == [
        (1, "failed", 3),
        (2, "failed", 3),
    ]
    for entry in crash["tries"]:
        assert entry["started_at"] <= entry["ended_at"]
        assert entry["job_id"]


def test_runs_list_shows_no_start_for_a_run_that_has_not_started(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    skydag.repos.runs.create(
        DagRun("chain", "manual__waiting", 1, RunType.MANUAL, created_at=T0 + timedelta(hours=1))
    )
    going = DagRun("chain", "manual__going", 1, RunType.MANUAL, created_at=T0)
    skydag.repos.runs.create(going)
    skydag.repos.runs.transition(going, RunState.RUNNING, Cause.DISPATCH, started_at=T0)
    rows = skydag.run("runs", "list", "chain").out.splitlines()
    assert rows[1].split()[:6] == ["chain", "manual__waiting", "queued", "manual", "-", "-"]
    assert rows[2].split()[:5] == ["chain", "manual__going", "running", "manual", "2026-11-22"]
    listed = skydag.run("runs", "list", "chain", "--output", "json").json()
    assert [r["started_at"] for r in listed] == [None, "2026-11-22T09:00:00Z"]


def test_long_reasons_wrap_in_the_table_and_stay_whole_in_json(skydag: Skydag) -> None:
    skydag.load_dag(CHAIN)
    make_run(skydag, "chain", "manual__r", state=RunState.FAILED)
    reason = "exit code 1: " + " ".join(f"Traceback-line-{i}" for i in range(20))
    skydag.repos.tasks.put_new(
        [
            TaskInstance(
                "chain", "manual__r", "extract", state=TaskState.FAILED, try_number=1, reason=reason
            )
        ]
    )
    as_json = skydag.run("runs", "show", "chain", "manual__r", "--output", "json").json()
    assert as_json["tasks"][0]["reason"] == reason
    lines = skydag.run("runs", "show", "chain", "manual__r").out.splitlines()
    column = lines[0].index("REASON")
    rows = lines[1 : lines.index("")]
    assert rows[0].split()[:2] == ["extract", "failed"]
    # Its continuation lines, up to the next task's row (the tasks never written: pending).
    ends = next(i for i, line in enumerate(rows[1:], 1) if line[:column].strip())
    assert rows[ends].split()[:2] == ["load", "pending"]
    table = rows[:ends]
    reason_lines = [line[column:] for line in table]
    assert len(reason_lines) > 1
    assert " ".join(reason_lines) == reason
