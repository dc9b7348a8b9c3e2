"""`skydag dev run`: a `local` command publishes its try's output and the next task renders it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skydag.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

DAG = """
dag: published
tasks:
  first:
    batch: {job_queue: etl, job_definition: "first:1"}
    local:
      command: [python, -m, skydag.cli.main, output, set, '{"rows": 3}']
  second:
    depends_on: [first]
    batch: {job_queue: etl, job_definition: "second:1"}
    local:
      command: [python, -c, "import sys; print('got', sys.argv[1], sys.argv[2])",
                "{{ outputs.first.rows }}", "{{ outputs.first }}"]
"""


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the example names its jobs relative to the repository root


def dev_run(
    path: Path, logs: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> dict[str, Any]:
    code = main(["dev", "run", str(path), "--output", "json", "--log-dir", str(logs), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    run: dict[str, Any] = json.loads(out)
    return run


def test_skydag_output_set_in_a_local_command_feeds_the_next_template(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "published.yaml"
    path.write_text(DAG, encoding="utf-8")
    run = dev_run(path, tmp_path / "logs", capsys)
    assert [(t["task"], t["state"]) for t in run["tasks"]] == [
        ("first", "success"),
        ("second", "success"),
    ]
    first_log = (tmp_path / "logs" / "published" / run["run_id"] / "first.1.log").read_text()
    assert "published (first time)" in first_log
    second_log = (tmp_path / "logs" / "published" / run["run_id"] / "second.1.log").read_text()
    assert second_log.strip() == 'got 3 {"rows":3}'


def test_the_outputs_example_passes_a_count_and_a_json_manifest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    example = ROOT / "examples" / "dags" / "outputs.yaml"
    run = dev_run(example, tmp_path, capsys, "--conf", '{"rows": 42}')
    assert run["state"] == "success"
    load_log = (tmp_path / "outputs" / run["run_id"] / "load.1.log").read_text()
    assert "loaded 42 rows from " in load_log
