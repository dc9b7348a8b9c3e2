"""``when:`` end to end: `skydag dev run` through the production handlers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skydag.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
BRANCHING = ROOT / "examples" / "dags" / "branching.yaml"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize(
    ("mode", "ran", "skipped"),
    [("full", "full_reload", "incremental"), ("incremental", "incremental", "full_reload")],
)
def test_the_false_branch_is_skipped_and_the_join_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str, ran: str, skipped: str
) -> None:
    code = main(
        [
            "dev",
            "run",
            str(BRANCHING),
            "--conf",
            json.dumps({"mode": mode}),
            "--output",
            "json",
            "--log-dir",
            str(tmp_path),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    run = json.loads(out)
    tasks = {task["task"]: task for task in run["tasks"]}
    assert run["state"] == "success"
    assert tasks[ran]["state"] == "success"
    assert tasks[skipped]["state"] == "skipped"
    assert tasks[skipped]["try_number"] == 0  # never dispatched
    assert tasks["publish"]["state"] == "success"


def test_a_condition_that_does_not_render_fails_its_task_with_the_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dag = tmp_path / "dag.yaml"
    dag.write_text(
        """
dag: bad_condition
tasks:
  first: {noop: {}}
  second:
    depends_on: [first]
    when: "{{ params.missing.deeper }}"
    noop: {}
  third:
    depends_on: [second]
    noop: {}
""",
        encoding="utf-8",
    )
    code = main(["dev", "run", str(dag), "--output", "json", "--log-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1, err
    tasks = {task["task"]: task for task in json.loads(out)["tasks"]}
    assert tasks["second"]["state"] == "failed"
    assert tasks["second"]["reason"].startswith("when: undefined:")
    assert tasks["third"]["state"] == "upstream_failed"


def test_a_condition_with_a_syntax_error_is_refused_by_validate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dag = tmp_path / "dag.yaml"
    dag.write_text(
        'dag: bad\ntasks:\n  only:\n    when: "{{ params.x == }}"\n    noop: {}\n',
        encoding="utf-8",
    )
    assert main(["validate", str(dag)]) == 1
    err = capsys.readouterr().err
    assert f"{dag}:4: error:" in err or f"{dag}: error:" in err, err
    assert "when" in err
    assert "template syntax error" in err
