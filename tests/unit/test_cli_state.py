"""`skydag state`: VALUE parsing and usage errors (exit 2), which never reach AWS."""

from __future__ import annotations

from typing import Any

import pytest

from skydag.cli.main import main
from skydag.cli.state import parse_value

# Nothing listens on port 9: a command that called AWS would fail with exit 3, not 2.
OFFLINE = ["--endpoint-url", "http://127.0.0.1:9"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ('{"page": 3}', {"page": 3}),
        ("[1, 2]", [1, 2]),
        ('"5"', "5"),
        ("2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"),
        ("hello world", "hello world"),
        ("NaN", "NaN"),  # Python's json would read a float; it is not JSON
        ("", ""),
    ],
)
def test_value_is_json_when_valid_json_else_text(text: str, value: Any) -> None:
    assert parse_value(text) == value


@pytest.fixture
def no_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SKYDAG_DAG", "SKYDAG_RUN", "SKYDAG_TASK"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_identity")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "watermark"], "no dag id for the task scope: pass --dag or set SKYDAG_DAG"),
        (
            ["get", "watermark", "--dag", "etl"],
            "no task id for the task scope: pass --task or set SKYDAG_TASK",
        ),
        (
            ["put", "checkpoint", "1", "--scope", "instance", "--dag", "etl", "--task", "x"],
            "no run id for the instance scope: pass --run or set SKYDAG_RUN",
        ),
        (
            ["put", "watermark", "1", "--dag", "etl", "--task", "x", "--ttl", "soon"],
            "--ttl: invalid duration 'soon'",
        ),
        (
            ["put", "watermark", "1", "--dag", "etl", "--task", "x", "--ttl", "0s"],
            "--ttl must be positive",
        ),
    ],
)
def test_usage_errors_exit_2_naming_what_is_missing(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["state", *args, *OFFLINE]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err
    assert err.startswith(f"skydag state {args[0]}: error: ")


@pytest.mark.parametrize(
    "args",
    [
        ["put", "k", "1", "--if-version", "-1"],
        ["put", "k", "1", "--if-version", "two"],
        ["get", "k", "--scope", "run"],
        ["get"],
    ],
)
def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["state", *args])
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.usefixtures("no_identity")
def test_an_unreachable_store_exits_3_saying_where(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["state", "get", "watermark", "--dag", "etl", "--task", "x", *OFFLINE])
    assert code == 3
    assert "cannot use task state in table skydag-task-state at http://127.0.0.1:9" in (
        capsys.readouterr().err
    )
