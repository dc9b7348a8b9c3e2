"""How runs look on the command line: the run JSON's task entries (tries, map_index) and
the text table, whose reasons wrap instead of being cut off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from skydag.cli.render import run_table, run_to_json, task_to_json, wrap
from skydag.engine.models import DagRun, RunType, TaskInstance, TryRecord
from skydag.engine.states import RunState, TaskState

T = TaskState
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
TASK_KEYS = [
    "task",
    "state",
    "try_number",
    "started_at",
    "ended_at",
    "exit_code",
    "job_id",
    "reason",
    "map_index",
    "tries",
]


def run() -> DagRun:
    return DagRun("d", "r", 1, RunType.MANUAL, state=RunState.FAILED)


def test_a_task_entry_lists_its_tries_oldest_first_the_current_last() -> None:
    first = TryRecord(1, T.FAILED, T0, T0 + timedelta(seconds=2), 3, "job-1", "exit 3")
    ti = TaskInstance(
        "d",
        "r",
        "t",
        state=T.SUCCESS,
        try_number=2,
        job_id="job-2",
        exit_code=0,
        started_at=T0 + timedelta(minutes=1),
        ended_at=T0 + timedelta(minutes=2),
        tries=(first,),
    )
    entry = task_to_json(ti)
    assert list(entry) == TASK_KEYS
    assert entry["map_index"] is None
    assert entry["tries"] == [
        {
            "try_number": 1,
            "state": "failed",
            "started_at": "2026-11-22T09:00:00Z",
            "ended_at": "2026-11-22T09:00:02Z",
            "exit_code": 3,
            "job_id": "job-1",
            "reason": "exit 3",
        },
        {
            "try_number": 2,
            "state": "success",
            "started_at": "2026-11-22T09:01:00Z",
            "ended_at": "2026-11-22T09:02:00Z",
            "exit_code": 0,
            "job_id": "job-2",
            "reason": None,
        },
    ]


def test_a_task_that_never_ran_has_no_tries() -> None:
    entry = task_to_json(TaskInstance("d", "r", "t"))
    assert (entry["try_number"], entry["tries"], entry["map_index"]) == (0, [], None)


def test_a_task_up_for_retry_shows_its_try_as_failed() -> None:
    ti = TaskInstance("d", "r", "t", state=T.UP_FOR_RETRY, try_number=1, exit_code=1)
    assert task_to_json(ti)["state"] == "up_for_retry"
    assert [t["state"] for t in task_to_json(ti)["tries"]] == ["failed"]


def test_reasons_are_whole_in_json_and_wrap_in_the_table() -> None:
    reason = "the job failed: " + " ".join(f"word{i}" for i in range(60)) + " " + "z" * 150
    ti = TaskInstance("d", "r", "crash", state=T.FAILED, try_number=1, reason=reason)
    body = run_to_json(run(), [ti])
    assert body["tasks"][0]["reason"] == reason
    assert body["tasks"][0]["tries"][0]["reason"] == reason
    lines = run_table(run(), [ti]).splitlines()
    column = lines[0].index("REASON")
    wrapped = [line[column:] for line in lines[1:] if len(line) > column]
    assert len(wrapped) > 3
    assert all(len(part) <= 72 for part in wrapped)
    # Every character is there, in order, once the lines are put back together.
    assert "".join(part.replace(" ", "") for part in wrapped) == reason.replace(" ", "")
    # Continuation lines leave the other columns blank.
    assert lines[2][:column].strip() == ""


def test_a_task_marked_failed_by_hand_shows_no_exit_code() -> None:
    ti = TaskInstance(
        "d", "r", "t", state=T.FAILED, try_number=1, reason="marked failed", exit_code=None
    )
    assert task_to_json(ti)["exit_code"] is None
    row = run_table(run(), [ti]).splitlines()[1].split()
    assert row[:4] == ["t", "failed", "1", "-"]


def test_wrap_keeps_line_breaks_and_empty_text() -> None:
    assert wrap(None) == [""]
    assert wrap("a\nb") == ["a", "b"]
    assert wrap("x" * 10, width=4) == ["xxxx", "xxxx", "xx"]
