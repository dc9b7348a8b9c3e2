"""`skydag dev run` end to end: the CLI, the embedded AWS, the real engine, store and jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skydag.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "dags"
SIGNAL = ROOT / "events" / "signals" / "model_emitted.json"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Example DAGs name their jobs relative to the repository root.
    monkeypatch.chdir(ROOT)


def write_dag(tmp_path: Path, text: str) -> str:
    path = tmp_path / "dag.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_signalled_ml_pipeline_succeeds_with_contract_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(
        [
            "dev",
            "run",
            str(EXAMPLES / "ml_pipeline.yaml"),
            "--signal",
            str(SIGNAL),
            "--output",
            "json",
            "--log-dir",
            str(tmp_path),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    run = json.loads(out)
    assert run["dag"] == "ml_pipeline"
    # The signal is put on the bus as `aws events put-events` would: EventBridge gives it
    # its id, and the run is named after it.
    assert run["run_id"].startswith("signal__")
    assert run["run_id"] != "signal__6a7e8feb-b491-4cf7-a9f1-bf3703467718"
    assert run["state"] == "success"
    assert run["conf"] == {}
    assert [t["task"] for t in run["tasks"]] == ["evaluate", "publish", "redeploy"]
    for task in run["tasks"]:
        assert set(task) >= {
            "task",
            "state",
            "try_number",
            "started_at",
            "ended_at",
            "exit_code",
            "job_id",
        }
        # A Lambda invocation has no exit code (its destination event carries none).
        exit_code = None if task["task"] == "redeploy" else 0
        assert (task["state"], task["try_number"], task["exit_code"]) == ("success", 1, exit_code)
    # Live progress went to stderr, one line per state change.
    assert "evaluate" in err
    assert "running" in err
    # The job saw the signal's model URI through its template.
    log = (tmp_path / "ml_pipeline" / run["run_id"] / "evaluate.1.log").read_text()
    assert "s3://ml-models/churn/2026-11-22/model.tar.gz" in log
    assert f"run={run['run_id']}" in log


def test_failing_task_retries_then_fails_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dag = write_dag(
        tmp_path,
        """
dag: flaky
tasks:
  extract:
    noop: {}
  load:
    depends_on: [extract]
    retries: 1
    retry_delay: 0.1s
    batch: {job_queue: q, job_definition: d}
    local: {command: [python, -c, "import sys; print('disk full', file=sys.stderr); sys.exit(3)"]}
  report:
    depends_on: [load]
    noop: {}
""",
    )
    code = main(["dev", "run", dag, "--output", "json", "--log-dir", str(tmp_path / "logs")])
    out, _ = capsys.readouterr()
    run = json.loads(out)
    assert code == 1
    assert run["state"] == "failed"
    tasks = {t["task"]: t for t in run["tasks"]}
    assert (tasks["load"]["state"], tasks["load"]["try_number"]) == ("failed", 2)
    assert tasks["load"]["exit_code"] == 3
    assert "disk full" in tasks["load"]["reason"]
    assert tasks["report"]["state"] == "upstream_failed"


def test_conf_overrides_params_in_templates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dag = write_dag(
        tmp_path,
        """
dag: conf_demo
params: {greeting: hello}
tasks:
  say:
    lambda: {function_name: f}
    local:
      command:
        - python
        - -c
        - "import sys; sys.exit(0 if sys.argv[1] == 'bonjour' else 9)"
        - "{{ params.greeting }}"
""",
    )
    code = main(
        ["dev", "run", dag, "--conf", '{"greeting": "bonjour"}', "--log-dir", str(tmp_path)]
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "run conf_demo/" in out
    assert ": success" in out


def test_invalid_file_exits_2_with_contract_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dag = write_dag(tmp_path, "dag: broken\ntasks:\n  a: {depends_on: [b], noop: {}}\n")
    assert main(["dev", "run", dag]) == 2
    _, err = capsys.readouterr()
    assert f"{dag}: error:" in err
    assert "'b'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--conf", "{not json"], "--conf is not valid JSON"),
        (["--conf", "[1, 2]"], "--conf must be a JSON object"),
    ],
)
def test_bad_conf_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    dag = write_dag(tmp_path, "dag: ok\ntasks:\n  a: {noop: {}}\n")
    assert main(["dev", "run", dag, *args]) == 2
    assert message in capsys.readouterr().err


def test_signal_that_matches_no_on_pattern_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"source": "someone.else", "detail-type": "x", "detail": {}}))
    code = main(["dev", "run", str(EXAMPLES / "ml_pipeline.yaml"), "--signal", str(event)])
    assert code == 2
    assert "matches none of DAG 'ml_pipeline' on: patterns" in capsys.readouterr().err


def test_templates_see_the_contract_context(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`dag` is the id; `run`, `params`, `task` carry what design.md lists."""
    dag = write_dag(
        tmp_path,
        """
dag: context_demo
params: {size: 3}
tasks:
  show:
    lambda: {function_name: f}
    local:
      command:
        - python
        - -c
        - >-
          import sys;
          sys.exit(0 if sys.argv[1:] == ['context_demo', 'show', '1', '3', 'manual'] else 7)
        - "{{ dag }}"
        - "{{ task.id }}"
        - "{{ task.try_number }}"
        - "{{ params.size }}"
        - "{{ run.type }}"
""",
    )
    code = main(["dev", "run", dag, "--log-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, out + err


def test_timed_signals_drive_start_on_and_stop_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--signal FILE@SECONDS` puts each signal that long after the run starts: one lets a
    `start_on` task go, the next stops a service; the queue is named by a template, so
    its stand-in is made when the task is dispatched."""
    go = tmp_path / "go.json"
    go.write_text(json.dumps({"source": "ops", "detail-type": "go", "detail": {"n": 7}}))
    stop = tmp_path / "stop.json"
    stop.write_text(json.dumps({"source": "ops", "detail-type": "stop", "detail": {}}))
    dag = write_dag(
        tmp_path,
        """
dag: driven
tasks:
  gated:
    start_on: [{source: [ops], detail-type: [go]}]
    batch: {job_queue: "q-{{ dag }}", job_definition: d}
    local: {command: [python, -c, "import sys; sys.exit(0 if sys.argv[1] == '7' else 5)",
                      "{{ signal.detail.n }}"]}
  server:
    mode: service
    stop_on: [{source: [ops], detail-type: [stop]}]
    ecs: {cluster: c, task_definition: srv}
""",
    )
    code = main(
        [
            "dev",
            "run",
            dag,
            "--signal",
            f"{go}@1",
            "--signal",
            f"{stop}@3",
            "--output",
            "json",
            "--log-dir",
            str(tmp_path / "logs"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    run = json.loads(out)
    states = {task["task"]: task["state"] for task in run["tasks"]}
    assert states == {"gated": "success", "server": "stopped"}, err
    assert "go.json put" in err


def test_the_endpoint_answers_the_cli_while_dev_run_runs(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys
    import time

    dag = write_dag(
        tmp_path,
        "dag: slow\ntasks:\n  a_bit:\n    lambda: {function_name: f}\n    local: {duration: 4s}\n",
    )
    skydag = str(Path(sys.executable).parent / "skydag")
    process = subprocess.Popen(
        [skydag, "dev", "run", dag, "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        first = process.stderr.readline()
        found = re.search(r"local cloud at (\S+)", first)
        assert found, first
        deadline = time.monotonic() + 30
        listed = None
        while time.monotonic() < deadline:
            listed = subprocess.run(
                [skydag, "runs", "list", "slow", "--output", "json", "--endpoint-url", found[1]],
                capture_output=True,
                text=True,
                check=False,
            )
            if listed.returncode == 0 and json.loads(listed.stdout):
                break
            time.sleep(0.3)
        assert listed is not None
        assert listed.returncode == 0, listed
        assert [run["state"] for run in json.loads(listed.stdout)] in (["running"], ["queued"])
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
