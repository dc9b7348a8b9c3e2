"""Input limits: each finding of issue 9 as a regression test, with its one-line error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from skydag.engine.models import RunType
from skydag.engine.scheduler import make_run_id
from skydag.limits import (
    MAX_JSON_DEPTH,
    LimitError,
    check_run_id,
    is_valid_run_id,
    json_depth,
    json_text_depth,
    loads_bounded,
    safe_path_part,
)
from skydag.spec.durations import parse_duration
from skydag.spec.loader import DagFileError, load_dag_bytes
from skydag.spec.schedule import ScheduleError, backfill_intervals, parse_schedule
from skydag.taskstate import MAX_KEY_LENGTH, TaskState, check_key, check_ttl

NOW = datetime(2026, 11, 21, 6, 30, tzinfo=UTC)

# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "written", "shown"),
    [
        ("timeout", ".inf", "inf"),
        ("timeout", "1e400", "inf"),
        ("timeout", ".nan", "nan"),
        ("retry_delay", "99999999999999999999999d", "'99999999999999999999999d'"),
        ("max_retry_delay", "9" * 30, "9" * 30),
        ("timeout", "367d", "'367d'"),
    ],
)
def test_an_overflowing_duration_is_one_line_naming_task_and_field(
    field: str, written: str, shown: str
) -> None:
    text = f"dag: d\ntasks:\n  extract:\n    noop: {{}}\n    {field}: {written}\n"
    with pytest.raises(DagFileError) as caught:
        load_dag_bytes(text.encode(), "d.yaml")
    [problem] = caught.value.problems
    assert str(problem) == (
        f"d.yaml: error: task 'extract', field '{field}' (line 5): "
        f"{shown} is not a finite duration of at most 366 days"
    )


def test_durations_within_the_limit_still_parse() -> None:
    assert parse_duration("366d") == timedelta(days=366)
    assert parse_duration(0) == timedelta(0)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    with pytest.raises(ValueError, match="must be above zero"):
        parse_duration(0, positive=True)
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(-1)


# --- backfill ranges ------------------------------------------------------------------------

HOURLY = parse_schedule("@hourly", "UTC", datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC), "10000 intervals"),
        (datetime(2025, 12, 1, tzinfo=UTC), datetime(2025, 12, 31, tzinfo=UTC), "never run"),
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC), "10000 intervals"),
    ],
)
def test_backfill_ranges_are_bounded(start: datetime, end: datetime, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        backfill_intervals(
            HOURLY, start=start, end=end, start_date=datetime(2026, 1, 1, tzinfo=UTC)
        )


def test_a_backfill_range_starting_before_start_date_begins_at_start_date() -> None:
    intervals = backfill_intervals(
        HOURLY,
        start=datetime(2025, 12, 31, tzinfo=UTC),
        end=datetime(2026, 1, 1, 2, tzinfo=UTC),
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert [i.start.hour for i in intervals] == [0, 1, 2]
    assert intervals[0].start == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_backfill_off_the_calendar_is_a_schedule_error_not_an_overflow() -> None:
    yearly = parse_schedule("@yearly")
    with pytest.raises(ScheduleError, match="runs off the calendar"):
        backfill_intervals(
            yearly, start=datetime(1, 1, 1, tzinfo=UTC), end=datetime(2, 1, 1, tzinfo=UTC)
        )


# --- run ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id",
    [
        make_run_id(RunType.MANUAL, at=NOW),
        make_run_id(RunType.SCHEDULED, at=NOW),
        make_run_id(RunType.BACKFILL, at=NOW),
        make_run_id(RunType.SIGNAL, at=NOW, event_id="4e7bca3a-6f6a-4b0c-9b1a-0b1d3c0e3a55"),
        "manual__rerun-1",
        "r",
        "x" * 250,
    ],
)
def test_the_ids_skydag_makes_are_valid_run_ids(run_id: str) -> None:
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "x" * 251, "x/../../ESCAPE", "a#b", "a b", "é", None, 7])
def test_other_run_ids_are_refused_with_the_rule(run_id: Any) -> None:
    with pytest.raises(LimitError, match=r"^--run-id: .* is not a valid run id \(1 to 250"):
        check_run_id(run_id, "--run-id")


def test_a_signal_with_a_hostile_event_id_gets_a_stable_valid_run_id() -> None:
    for event_id in ("x/../../ESCAPE", "e" * 2000):
        run_id = make_run_id(RunType.SIGNAL, at=NOW, event_id=event_id)
        assert is_valid_run_id(run_id)
        assert run_id.startswith("signal__sha256-")
        assert run_id == make_run_id(RunType.SIGNAL, at=NOW, event_id=event_id)
    assert make_run_id(RunType.SIGNAL, at=NOW, event_id="a/b") != make_run_id(
        RunType.SIGNAL, at=NOW, event_id="a_b"
    )


# --- JSON depth and size --------------------------------------------------------------------


def test_depth_is_measured_without_recursion() -> None:
    text = "[" * 60_000 + "]" * 60_000
    assert json_text_depth(text) == MAX_JSON_DEPTH + 1
    assert json_text_depth('{"a": "[[[[[[", "b": [1, {"c": "\\"]"}]}') == 3
    value: Any = 1
    for _ in range(60_000):
        value = [value]
    assert json_depth(value) == MAX_JSON_DEPTH + 1
    assert json_depth({"a": [1, {"b": 2}]}) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a":' + "[" * 60_000 + "]" * 60_000 + "}", r"--conf: nested more than 32 levels deep"),
        (json.dumps({"a": "x" * 300_000}), r"--conf: \d+ bytes, over the 256 KB limit"),
    ],
)
def test_loads_bounded_refuses_before_decoding(text: str, message: str) -> None:
    with pytest.raises(LimitError, match=f"^{message}$"):
        loads_bounded(text, "--conf")


@pytest.mark.parametrize("flags", [["trigger", "d", "--conf"], ["dev", "run", "d.yaml", "--conf"]])
def test_a_60000_deep_conf_is_a_usage_error_not_a_recursion_error(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from skydag.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.yaml").write_text("dag: d\ntasks:\n  a: {noop: {}}\n")
    code = main([*flags, '{"a":' + "[" * 60_000 + "]" * 60_000 + "}"])
    assert code == 2
    assert "--conf: nested more than 32 levels deep" in capsys.readouterr().err


def test_a_2000_character_run_id_is_refused_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from skydag.cli.main import main

    assert main(["trigger", "d", "--run-id", "r" * 2000]) == 2
    err = capsys.readouterr().err
    assert "--run-id: 'rrrr" in err
    assert "is not a valid run id (1 to 250 characters of A-Z a-z 0-9 _ . : + -)" in err
    assert len(err.strip().splitlines()) == 1


# --- file names -----------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["x/../../ESCAPE", "..", "../..", "a" * 5000, "/etc/passwd"])
def test_path_parts_made_from_ids_stay_in_their_folder(hostile: str, tmp_path: Path) -> None:
    part = safe_path_part(hostile)
    assert "/" not in part
    assert not part.startswith(".")
    assert len(part) <= 100
    assert (tmp_path / part).resolve().parent == tmp_path.resolve()


def test_the_local_targets_log_stays_in_its_folder(tmp_path: Path) -> None:
    from skydag.targets.base import DispatchRequest
    from skydag.targets.local import LocalTarget

    class Clock:
        def now(self) -> datetime:
            return NOW

    logs = tmp_path / "logs"
    target = LocalTarget(Clock(), logs, cwd=tmp_path)
    request = DispatchRequest(
        dag_id="d",
        run_id="signal__x/../../ESCAPE",
        task_id="t",
        try_number=1,
        kind="batch",
        target={},
        token="tok",
        local={"command": ["true"]},
    )
    try:
        target.dispatch(request)
    finally:
        target.close()
    written = [p for p in tmp_path.rglob("*.log")]
    assert written
    assert all(logs.resolve() in p.resolve().parents for p in written)


# --- task state keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "non-empty string"),
        ("k" * (MAX_KEY_LENGTH + 1), "over the 256-character limit"),
        ("a\nb", "control characters"),
    ],
)
def test_task_state_keys_are_bounded(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_key(key)
    with pytest.raises(ValueError, match=message):
        TaskState(dag="d", task="t").put(key, 1)  # refused before any AWS call


def test_task_state_ttls_are_bounded() -> None:
    assert check_ttl(timedelta(days=366)) == timedelta(days=366)
    with pytest.raises(ValueError, match="over the 366-day limit"):
        check_ttl(timedelta(days=10**6))
    with pytest.raises(ValueError, match="over the 366-day limit"):
        TaskState(dag="d", task="t").put("k", 1, ttl=timedelta(days=999_999_999))
