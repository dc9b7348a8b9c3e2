"""The console's routes against the local cloud, in process: the pages show what the
tables hold, and each action is a command event the scheduler then carries out."""

from __future__ import annotations

import html
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from skydag.cli.remote import Remote
from skydag.console.app import ACTION_HEADER, create_app
from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions

TIMEOUT = 30.0
ACT = {ACTION_HEADER: "1"}

FLAKY = """
dag: console_demo
description: a DAG the console tests drive
schedule: "@daily"
start_date: 2026-01-01T00:00:00Z
params: {table: orders, rows: 10}
on: {source: [acme.orders], detail-type: [order.placed]}
tasks:
  extract:
    batch: {job_queue: q, job_definition: extract}
    local: {command: [python, -c, "print('extracted rows')"]}
  load:
    depends_on: [extract]
    batch: {job_queue: q, job_definition: "load-{{ params.table }}"}
    local: {command: [python, -c, "import sys; print('disk full'); sys.exit(3)"]}
  report:
    depends_on: [load]
    trigger_rule: all_done
    noop: {}
"""

BROKEN = "dag: broken\ntasks:\n  a: {depends_on: [missing], noop: {}}\n"


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    with LocalCloud(LocalCloudOptions(log=io.StringIO(), log_dir=tmp_path)) as running:
        yield running


@pytest.fixture
def client(cloud: LocalCloud) -> TestClient:
    remote = Remote.at(cloud.settings, f"dev up at {cloud.endpoint_url}")
    remote.bind_tables()
    return TestClient(create_app(remote))


def settle(cloud: LocalCloud, condition: Any, what: str) -> None:
    assert cloud.run_until(condition, timeout=TIMEOUT), (
        f"{what}\n{cloud.log.getvalue()}"  # type: ignore[attr-defined]
    )


def upload(cloud: LocalCloud, name: str, text: str) -> None:
    settings = cloud.settings
    cloud.client("s3").put_object(
        Bucket=settings.dag_bucket, Key=f"{settings.dag_prefix}{name}", Body=text.encode()
    )


def dag_json(client: TestClient, dag: str | None) -> dict[str, Any] | None:
    found = [row for row in client.get("/api/dags").json() if row["dag"] == dag]
    return found[0] if found else None


def finished(client: TestClient, dag: str, run_id: str) -> bool:
    return run_state(client, dag, run_id) in ("success", "failed")


def run_state(client: TestClient, dag: str, run_id: str) -> str | None:
    response = client.get(f"/api/dags/{dag}/runs/{run_id}")
    return str(response.json()["state"]) if response.status_code == 200 else None


@pytest.fixture
def loaded(cloud: LocalCloud, client: TestClient) -> TestClient:
    upload(cloud, "demo.yaml", FLAKY)
    upload(cloud, "broken.yaml", BROKEN)
    settle(
        cloud,
        lambda: dag_json(client, "console_demo") is not None and dag_json(client, "broken"),
        "both files to be loaded or refused",
    )
    return client


def test_the_dags_page_shows_schedule_signals_and_import_errors(loaded: TestClient) -> None:
    demo = dag_json(loaded, "console_demo")
    assert demo is not None
    assert demo["version"] == 1
    assert demo["paused"] is False
    assert demo["schedule"] == "@daily"
    assert demo["next_tick"] is not None
    assert demo["signals"] == ["DAG on: source acme.orders; detail-type order.placed"]
    broken = dag_json(loaded, "broken")
    assert broken is not None
    assert "missing" in broken["import_error"]
    page = loaded.get("/")
    assert page.status_code == 200
    assert 'class="import-error"' in page.text
    assert "Import error" in page.text
    assert "missing" in page.text
    assert '<a href="/dags/console_demo">console_demo</a>' in page.text


def test_a_trigger_runs_and_the_grid_graph_and_task_pages_follow_it(
    cloud: LocalCloud, loaded: TestClient
) -> None:
    answer = loaded.post(
        "/api/dags/console_demo/trigger",
        data={"conf": '{"table": "events"}', "run_id": "manual__console"},
        headers=ACT,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["event_id"]
    assert answer.json()["detail"]["detail"] == {
        "dag": "console_demo",
        "conf": {"table": "events"},
        "run_id": "manual__console",
    }
    settle(cloud, lambda: finished(loaded, "console_demo", "manual__console"), "the run to end")
    grid = loaded.get("/api/dags/console_demo/grid").json()
    column = [run["run_id"] for run in grid["runs"]].index("manual__console")
    cells = {row["task"]: row["cells"][column]["state"] for row in grid["tasks"]}
    assert cells == {"extract": "success", "load": "failed", "report": "success"}
    page = loaded.get("/dags/console_demo")
    assert "load in manual__console: failed" in page.text
    assert loaded.get("/dags/console_demo?fragment=1").text.lstrip().startswith("<p")
    graph = loaded.get("/dags/console_demo/graph?run=manual__console")
    assert "load: failed" in graph.text
    assert "report: success, trigger rule all_done" in graph.text
    task = loaded.get("/dags/console_demo/runs/manual__console/tasks/load")
    assert task.status_code == 200
    assert "disk full" in task.text  # the try's log, in the page
    assert "exit code 3" in task.text or ">3<" in task.text
    assert '"job_definition": "load-events"' in html.unescape(task.text)  # rendered target


def test_clearing_a_task_from_the_console_reruns_it(cloud: LocalCloud, loaded: TestClient) -> None:
    loaded.post(
        "/api/dags/console_demo/trigger", data={"run_id": "manual__clear"}, headers=ACT
    ).raise_for_status()
    settle(cloud, lambda: finished(loaded, "console_demo", "manual__clear"), "the run to end")
    refused = loaded.post("/api/dags/console_demo/runs/manual__clear/tasks/nope/clear", headers=ACT)
    assert refused.status_code == 404
    assert "task 'nope' not found" in refused.json()["error"]
    cleared = loaded.post(
        "/api/dags/console_demo/runs/manual__clear/tasks/load/clear",
        data={"downstream": "1"},
        headers=ACT,
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["detail"]["detail"]["downstream"] is True
    settle(
        cloud,
        lambda: (
            loaded.get("/api/dags/console_demo/runs/manual__clear").json()["tasks"][1]["try_number"]
            == 2
        ),
        "the cleared task to run again",
    )


def test_pause_and_unpause_are_carried_out_by_the_scheduler(
    cloud: LocalCloud, loaded: TestClient
) -> None:
    loaded.post("/api/dags/console_demo/pause", headers=ACT).raise_for_status()
    settle(cloud, lambda: dag_json(loaded, "console_demo")["paused"], "the DAG to pause")  # type: ignore[index]
    assert "❚❚ paused" in loaded.get("/").text
    loaded.post("/api/dags/console_demo/unpause", headers=ACT).raise_for_status()
    settle(
        cloud,
        lambda: not dag_json(loaded, "console_demo")["paused"],  # type: ignore[index]
        "the DAG to unpause",
    )


def test_a_backfill_dry_run_sends_nothing(loaded: TestClient) -> None:
    answer = loaded.post(
        "/api/dags/console_demo/backfill",
        data={"start": "2026-01-01", "end": "2026-01-03", "dry_run": "1"},
        headers=ACT,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["event_id"] is None
    # The dates, as `skydag backfill --dry-run --output json` gives them.
    assert body["detail"]["create"] == [
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ]
    assert body["detail"]["skip"] == []


def test_cancelling_a_run_from_the_console(cloud: LocalCloud, loaded: TestClient) -> None:
    loaded.post("/api/dags/console_demo/pause", headers=ACT).raise_for_status()
    settle(cloud, lambda: dag_json(loaded, "console_demo")["paused"], "the DAG to pause")  # type: ignore[index]
    loaded.post(
        "/api/dags/console_demo/trigger", data={"run_id": "manual__cancel"}, headers=ACT
    ).raise_for_status()
    settle(
        cloud,
        lambda: run_state(loaded, "console_demo", "manual__cancel") == "queued",
        "the run to wait, queued",
    )
    answer = loaded.post("/api/dags/console_demo/runs/manual__cancel/cancel", headers=ACT)
    assert answer.status_code == 200, answer.text
    settle(
        cloud,
        lambda: run_state(loaded, "console_demo", "manual__cancel") == "cancelled",
        "the run to be cancelled",
    )


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (
            {"conf": '{"tabel": "x"}'},
            "conf.tabel: not a param of this DAG (its params: rows, table)",
        ),
        ({"conf": '{"rows": "ten"}'}, "conf.rows: expected a number like the param's default 10"),
        ({"conf": "[1]"}, "conf must be a JSON object, got list"),
        ({"run_id": "bad id"}, "run id"),
    ],
)
def test_a_trigger_with_a_bad_conf_is_refused_with_the_reason(
    loaded: TestClient, form: dict[str, str], message: str
) -> None:
    answer = loaded.post("/api/dags/console_demo/trigger", data=form, headers=ACT)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_actions_need_the_consoles_header_and_a_local_host(loaded: TestClient) -> None:
    forged = loaded.post("/api/dags/console_demo/pause")
    assert forged.status_code == 403
    rebound = loaded.get("/", headers={"host": "evil.example:8765"})
    assert rebound.status_code == 421


def test_an_unknown_dag_is_a_clear_error_page(loaded: TestClient) -> None:
    page = loaded.get("/dags/nope")
    assert page.status_code == 404
    assert "DAG 'nope' not found" in html.unescape(page.text)
