"""Task state end to end: moto as a server, the real scheduler, and jobs as subprocesses
that keep their watermark and checkpoints in the scheduler's own task state table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from skydag.cli.main import main
from skydag.dev.embedded import EmbeddedSkydag, embedded_aws
from skydag.dev.server import aws_environment, moto_server
from skydag.engine.models import DagRun
from skydag.engine.states import RunState, TaskState
from skydag.settings import Settings
from skydag.spec.loader import load_dag_file
from skydag.spec.models import DagSpec
from skydag.store.models import TaskStateModel, bind_models
from skydag.store.repositories import instance_scope, task_scope

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dags" / "incremental_etl.yaml"
DAG = "incremental_etl"


@pytest.fixture
def endpoint() -> Iterator[str]:
    """moto as a server, with this process (and so every job it starts) pointed at it."""
    with moto_server() as url, aws_environment(url):
        yield url


@pytest.fixture
def served(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmbeddedSkydag]:
    monkeypatch.chdir(ROOT)  # the example names its jobs relative to the repository root
    env = EmbeddedSkydag(Settings(endpoint_url=endpoint), log_dir=tmp_path / "logs")
    try:
        yield env
    finally:
        env.close()


def load_example(env: EmbeddedSkydag, tmp_path: Path) -> DagSpec:
    raw = load_dag_file(EXAMPLE).model_dump(by_alias=True, exclude_none=True, mode="json")
    raw["params"]["staging_dir"] = str(tmp_path / "staging")
    raw["params"]["warehouse"] = str(tmp_path / "warehouse" / "orders.json")
    raw["tasks"]["extract"]["retry_delay"] = 0.1  # the example waits 10 s before a retry
    spec = DagSpec.model_validate(raw)
    env.repos.dags.save_version(spec, source=EXAMPLE.as_uri(), sha256=None, now=env.clock.now())
    return spec


def scheduled_run(env: EmbeddedSkydag, now: datetime) -> DagRun:
    """The run a schedule tick at ``now`` creates, followed to its end."""
    (run,) = env.service.schedule_tick(DAG, now=now)
    return env.run_until_finished(DAG, run.run_id, timeout=60)


def job_log(tmp_path: Path, run: DagRun, task_try: str) -> str:
    return (tmp_path / "logs" / DAG / run.run_id / f"{task_try}.log").read_text()


def staged_pages(log: str) -> list[int]:
    return [int(number) for number in re.findall(r"^extract: page (\d+):", log, re.MULTILINE)]


def test_a_run_starts_from_the_previous_watermark_and_a_retry_from_its_checkpoint(
    served: EmbeddedSkydag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_example(served, tmp_path)
    state = served.repos.state

    # Run 1 (2026-01-02): no watermark yet, so everything up to the interval's end: 96
    # orders, 4 pages. Its first try crashes after 2 pages; the retry resumes after them.
    monkeypatch.setenv("ETL_EXTRACT_CRASH_AFTER_PAGES", "2")
    first = scheduled_run(served, datetime(2026, 1, 3, 0, 5, tzinfo=UTC))
    assert first.state is RunState.SUCCESS, first.reason
    extract = served.repos.tasks.get(DAG, first.run_id, "extract")
    assert (extract.state, extract.try_number) == (TaskState.SUCCESS, 2)
    try_1 = job_log(tmp_path, first, "extract.1")
    try_2 = job_log(tmp_path, first, "extract.2")
    assert "window 1970-01-01T00:00:00+00:00 .. 2026-01-03T00:00:00+00:00 (try 1)" in try_1
    assert "simulated crash after 2 pages" in try_1
    assert staged_pages(try_1) == [1, 2]
    assert "resuming after page 2 (48 orders) from the checkpoint" in try_2
    assert staged_pages(try_2) == [3, 4]  # pages 1-2 were not extracted again
    first_checkpoint = (
        {
            "window": ["1970-01-01T00:00:00+00:00", "2026-01-03T00:00:00+00:00"],
            "cursor": ["2026-01-02T23:30:00+00:00", 96],
            "pages": 4,
            "rows": 96,
        },
        4,  # one write per page, across both tries
    )
    assert state.get(instance_scope(DAG, first.run_id, "extract"), "checkpoint") == (
        first_checkpoint
    )
    assert state.get(task_scope(DAG, "extract"), "watermark") == ("2026-01-03T00:00:00+00:00", 1)

    # Run 2 (2026-01-03): its template rendered the watermark run 1 stored.
    monkeypatch.delenv("ETL_EXTRACT_CRASH_AFTER_PAGES")
    second = scheduled_run(served, datetime(2026, 1, 4, 0, 5, tzinfo=UTC))
    assert second.state is RunState.SUCCESS, second.reason
    extract_2 = job_log(tmp_path, second, "extract.1")
    assert "window 2026-01-03T00:00:00+00:00 .. 2026-01-04T00:00:00+00:00 (try 1)" in extract_2
    assert staged_pages(extract_2) == [1, 2]  # one day: 48 orders
    assert state.get(task_scope(DAG, "extract"), "watermark") == ("2026-01-04T00:00:00+00:00", 2)
    # Each run's checkpoint is its own.
    assert state.get(instance_scope(DAG, second.run_id, "extract"), "checkpoint") == (
        {
            "window": ["2026-01-03T00:00:00+00:00", "2026-01-04T00:00:00+00:00"],
            "cursor": ["2026-01-03T23:30:00+00:00", 144],
            "pages": 2,
            "rows": 48,
        },
        2,
    )
    assert state.get(instance_scope(DAG, first.run_id, "extract"), "checkpoint") == (
        first_checkpoint
    )

    # Three days of orders, each loaded once, nothing left staged.
    warehouse = json.loads((tmp_path / "warehouse" / "orders.json").read_text())
    assert [order["id"] for order in warehouse] == list(range(1, 145))
    assert not list((tmp_path / "staging").rglob("*.json"))


def test_state_cli_reads_and_writes_what_the_store_sees(
    endpoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bind_models(Settings(endpoint_url=endpoint))
    TaskStateModel.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
    run_id = "scheduled__2026-01-02T00:00:00+00:00"
    for name, value in {"SKYDAG_DAG": DAG, "SKYDAG_TASK": "extract", "SKYDAG_RUN": run_id}.items():
        monkeypatch.setenv(name, value)

    assert main(["state", "get", "watermark"]) == 1
    assert "no value for 'watermark' in the task scope of incremental_etl/extract" in (
        capsys.readouterr().err
    )
    assert (
        main(["state", "put", "watermark", "2026-01-03T00:00:00+00:00", "--if-version", "0"]) == 0
    )
    assert capsys.readouterr().out == "watermark: version 1\n"
    assert (
        main(["state", "put", "watermark", "2026-01-09T00:00:00+00:00", "--if-version", "0"]) == 1
    )
    err = capsys.readouterr().err
    assert "version conflict on 'watermark'" in err
    assert f"expected version 0, found version 1 (table skydag-task-state at {endpoint})" in err

    assert main(["state", "get", "watermark", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "dag": DAG,
        "task": "extract",
        "run": None,
        "scope": "task",
        "key": "watermark",
        "value": "2026-01-03T00:00:00+00:00",
        "version": 1,
    }

    put = ["state", "put", "checkpoint", '{"pages": 2}', "--scope", "instance", "--ttl", "7d"]
    assert main(put) == 0
    capsys.readouterr()
    item = TaskStateModel.get(instance_scope(DAG, run_id, "extract"), "checkpoint")
    assert (json.loads(item.value), item.version) == ({"pages": 2}, 1)
    assert item.expires_at is not None
    assert abs(item.expires_at - item.updated_at - timedelta(days=7)) < timedelta(seconds=2)

    # As a job would call it: another process, finding the server through its environment.
    skydag = Path(sys.executable).with_name("skydag")
    done = subprocess.run(
        [str(skydag), "state", "get", "checkpoint", "--scope", "instance"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"pages": 2}\n', "")


def test_dev_server_is_configured_and_the_environment_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://dynamodb.example.com")
    before = dict(os.environ)
    with moto_server() as url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        with urllib.request.urlopen(f"{url}/moto-api/config", timeout=10) as response:
            assert json.load(response)["batch"]["use_docker"] is False
        with aws_environment(url):
            assert os.environ["AWS_ENDPOINT_URL"] == url
            assert "AWS_PROFILE" not in os.environ
            assert "AWS_ENDPOINT_URL_DYNAMODB" not in os.environ
            # A client configured by the environment alone reaches the server.
            assert boto3.client("dynamodb").list_tables()["TableNames"] == []
    assert dict(os.environ) == before


def test_dev_server_refuses_to_run_under_the_in_process_mock() -> None:
    with embedded_aws(), pytest.raises(RuntimeError, match="in-process mock"), moto_server():
        pass
