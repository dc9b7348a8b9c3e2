"""`skydag dev up` as a user runs it: a subprocess, driven only through boto3 and the CLI.

A DAG with one task on each of the six services runs with no resource created by hand
(the local cloud makes stand-ins), a failing `local` command reports its exit code and
output, a cancelled run kills its service task's process group, and deleting the DAG's
file retires the DAG.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
SKYDAG = str(Path(sys.executable).parent / "skydag")
STARTUP_TIMEOUT = 60.0
STEP_TIMEOUT = 30.0


@dataclass
class DevUp:
    process: subprocess.Popen[str]
    info: dict[str, Any]
    log_dir: Path
    log_lines: list[str]

    @property
    def endpoint(self) -> str:
        return str(self.info["endpoint_url"])

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(account_id_endpoint_mode="disabled"),
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SKYDAG, *args, "--endpoint-url", self.endpoint],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
            check=False,
        )

    def upload(self, name: str, text: str) -> None:
        key = f"{self.info['dag_prefix']}{name}"
        self.client("s3").put_object(Bucket=self.info["dag_bucket"], Key=key, Body=text.encode())

    def trigger(self, dag: str, run_id: str) -> None:
        result = self.cli("trigger", dag, "--run-id", run_id)
        assert result.returncode == 0, result.stderr

    def run_json(self, dag: str, run_id: str) -> dict[str, Any]:
        result = self.cli("runs", "show", dag, run_id, "--output", "json")
        assert result.returncode == 0, result.stderr
        shown: dict[str, Any] = json.loads(result.stdout)
        return shown

    def wait_for_run(self, dag: str, run_id: str, states: tuple[str, ...]) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def reached() -> bool:
            result = self.cli("runs", "show", dag, run_id, "--output", "json")
            if result.returncode != 0:
                return False
            found.update(json.loads(result.stdout))
            return found.get("state") in states

        wait_for(reached, STEP_TIMEOUT, f"run {dag}/{run_id} to reach {states}", self)
        return found

    def log(self) -> str:
        return "\n".join(self.log_lines)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
    )
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_PROFILE", None)
    return env


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, dev_up: DevUp | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    log = f"\n--- dev up log ---\n{dev_up.log()}" if dev_up is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")


@pytest.fixture
def dev_up(tmp_path: Path) -> Iterator[DevUp]:
    """`skydag dev up --port 0` as a subprocess; always stopped, even when a test fails."""
    log_dir = tmp_path / "logs"
    process = subprocess.Popen(
        [SKYDAG, "dev", "up", "--port", "0", "--log-dir", str(log_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    log_lines: list[str] = []
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None
    assert stderr is not None
    threading.Thread(
        target=lambda: log_lines.extend(iter(stderr.readline, "")), daemon=True
    ).start()
    try:
        text = ""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                break
            text += line
            if line.startswith("}"):
                break
        assert text.strip().endswith("}"), f"dev up did not start: {text}{''.join(log_lines)}"
        info = json.loads(text)
        threading.Thread(target=stdout.read, daemon=True).start()
        yield DevUp(process, info, log_dir, log_lines)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


SIX_SERVICES = """
dag: six_services
tasks:
  on_batch:
    batch: {job_queue: nightly, job_definition: "crunch:2", command: [crunch]}
  on_emr:
    emr:
      cluster_name: analytics
      step: {args: [spark-submit, s3://code/job.py]}
  on_emr_serverless:
    emr_serverless:
      application_id: 00fabc123def4567
      execution_role_arn: arn:aws:iam::123456789012:role/emr-serverless-job
      job_driver: {sparkSubmit: {entryPoint: s3://code/job.py}}
  on_stepfunctions:
    stepfunctions:
      state_machine_arn: arn:aws:states:us-east-1:123456789012:stateMachine:etl-flow
    local: {output: {rows: 42}}
  on_lambda:
    lambda: {function_name: score-model, payload: {model: m-1}}
    local: {output: {score: 0.97}}
  on_ecs:
    ecs: {cluster: workers, task_definition: "report:1", command: [report]}
  after_all:
    depends_on: [on_batch, on_emr, on_emr_serverless, on_stepfunctions, on_lambda, on_ecs]
    emit:
      detail-type: six.done
      detail: {lambda: "{{ outputs.on_lambda.score }}", sfn: "{{ outputs.on_stepfunctions.rows }}"}
"""


def test_a_dag_on_all_six_services_runs_with_no_resources_made_by_hand(dev_up: DevUp) -> None:
    dev_up.upload("six.yaml", SIX_SERVICES)
    wait_for(
        lambda: "loaded dag=six_services" in dev_up.log(), STEP_TIMEOUT, "the DAG to load", dev_up
    )
    dev_up.trigger("six_services", "manual__six")
    run = dev_up.wait_for_run("six_services", "manual__six", ("success", "failed"))
    states = {task["task"]: task["state"] for task in run["tasks"]}
    assert run["state"] == "success", (states, dev_up.log())
    assert set(states.values()) == {"success"}
    jobs = {task["task"]: task["job_id"] for task in run["tasks"]}
    assert all(jobs.values()), jobs  # each a real (moto) job of its service
    # Outputs came back through the native events (Lambda destination, SFN output).
    assert "six.done" in dev_up.log() or run["state"] == "success"


FAILING = """
dag: failing_job
tasks:
  crunch:
    batch: {job_queue: nightly, job_definition: crunch}
    local: {command: [python, -c, "import sys; print('disk full'); sys.exit(3)"]}
"""


def test_a_local_command_exiting_3_fails_with_its_exit_code_and_output(dev_up: DevUp) -> None:
    dev_up.upload("failing.yaml", FAILING)
    wait_for(
        lambda: "loaded dag=failing_job" in dev_up.log(), STEP_TIMEOUT, "the DAG to load", dev_up
    )
    dev_up.trigger("failing_job", "manual__fails")
    run = dev_up.wait_for_run("failing_job", "manual__fails", ("success", "failed"))
    assert run["state"] == "failed"
    (task,) = run["tasks"]
    assert task["state"] == "failed"
    assert task["exit_code"] == 3
    assert "disk full" in (task["reason"] or "")
    log = dev_up.log()
    assert "failing_job/manual__fails/crunch" in log
    assert "exit code 3" in log
    assert "crunch.1.log" in log  # where its captured output is
    logs = dev_up.cli("logs", "failing_job", "manual__fails", "crunch")
    assert "disk full" in logs.stdout, logs.stderr


def service_dag(pid_file: Path) -> str:
    script = (
        "import os, pathlib, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"pathlib.Path({str(pid_file)!r}).write_text(f'{{os.getpid()}} {{child.pid}}'); "
        "time.sleep(600)"
    )
    return f"""
dag: long_service
tasks:
  server:
    mode: service
    ecs: {{cluster: web, task_definition: server, launch_type: EC2}}
    local: {{command: [python, -c, "{script}"]}}
"""


def test_cancelling_a_run_kills_its_service_tasks_process_group(
    dev_up: DevUp, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    dev_up.upload("service.yaml", service_dag(pid_file))
    wait_for(
        lambda: "loaded dag=long_service" in dev_up.log(), STEP_TIMEOUT, "the DAG to load", dev_up
    )
    dev_up.trigger("long_service", "manual__svc")
    wait_for(pid_file.exists, STEP_TIMEOUT, "the service's process to start", dev_up)
    wait_for(lambda: len(pid_file.read_text().split()) == 2, 5, "both pids")
    pids = [int(pid) for pid in pid_file.read_text().split()]
    dev_up.wait_for_run("long_service", "manual__svc", ("running",))
    result = dev_up.cli("runs", "cancel", "long_service", "manual__svc")
    assert result.returncode == 0, result.stderr

    def gone() -> bool:
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            return False
        return True

    wait_for(gone, STEP_TIMEOUT, "the service's process group to be killed", dev_up)
    run = dev_up.wait_for_run("long_service", "manual__svc", ("cancelled",))
    assert run["state"] == "cancelled"


def test_deleting_the_dag_file_retires_the_dag(dev_up: DevUp) -> None:
    dev_up.upload("short.yaml", "dag: short_lived\ntasks:\n  a: {noop: {}}\n")
    wait_for(
        lambda: "loaded dag=short_lived" in dev_up.log(), STEP_TIMEOUT, "the DAG to load", dev_up
    )
    dev_up.client("s3").delete_object(
        Bucket=dev_up.info["dag_bucket"], Key=f"{dev_up.info['dag_prefix']}short.yaml"
    )

    def retired() -> bool:
        listed = dev_up.cli("dags", "list", "--output", "json")
        return listed.returncode == 0 and all(
            dag["dag"] != "short_lived" or dag.get("version") is None
            for dag in json.loads(listed.stdout)
        )

    wait_for(retired, STEP_TIMEOUT, "the DAG to be retired", dev_up)


def test_a_file_landing_in_a_user_bucket_starts_a_run_that_sees_its_key(dev_up: DevUp) -> None:
    dag = (ROOT / "examples" / "dags" / "s3_landing.yaml").read_text()
    dev_up.upload("s3_landing.yaml", dag)
    wait_for(
        lambda: "loaded dag=s3_landing" in dev_up.log(), STEP_TIMEOUT, "the DAG to load", dev_up
    )
    s3 = dev_up.client("s3")
    s3.create_bucket(Bucket="my-data")
    s3.put_bucket_notification_configuration(
        Bucket="my-data", NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    s3.put_object(Bucket="my-data", Key="archive/old.csv", Body=b"not under incoming/")
    s3.put_object(Bucket="my-data", Key="incoming/2026-11-22.csv", Body=b"a,b\n1,2\n")

    runs: list[dict[str, Any]] = []

    def started() -> bool:
        listed = dev_up.cli("runs", "list", "s3_landing", "--output", "json")
        runs[:] = json.loads(listed.stdout) if listed.returncode == 0 else []
        return bool(runs)

    wait_for(started, STEP_TIMEOUT, "the file to start a run", dev_up)
    (run,) = runs  # the file under archive/ started nothing
    finished = dev_up.wait_for_run("s3_landing", run["run_id"], ("success", "failed"))
    assert finished["state"] == "success", dev_up.log()
    logs = dev_up.cli("logs", "s3_landing", run["run_id"], "ingest")
    assert "ingesting my-data incoming/2026-11-22.csv" in logs.stdout, logs.stderr


DAILY_FAILING_ON_THE_2ND = """
dag: daily_report
schedule: "@daily"
start_date: 2026-11-01T00:00:00Z
tasks:
  report:
    batch: {job_queue: nightly, job_definition: report}
    local:
      # exits 1 (True) on the run of 2026-11-02 only
      command: [python, -c, "import sys; sys.exit('{{ run.logical_date }}'[:10] == '2026-11-02')"]
"""


def backfill_runs(dev_up: DevUp, dag: str) -> list[dict[str, Any]]:
    listed = dev_up.cli("runs", "list", dag, "--output", "json")
    assert listed.returncode == 0, listed.stderr
    return [run for run in json.loads(listed.stdout) if run["run_type"] == "backfill"]


def wait_for_backfills(dev_up: DevUp, dag: str, count: int) -> list[dict[str, Any]]:
    finished: list[dict[str, Any]] = []

    def done() -> bool:
        runs = backfill_runs(dev_up, dag)
        finished[:] = runs
        return len(runs) == count and all(r["state"] in ("success", "failed") for r in runs)

    wait_for(done, STEP_TIMEOUT, f"{count} finished backfill runs of {dag}", dev_up)
    return finished


def test_backfill_dry_run_then_reprocess_failed_reruns_the_failed_date(dev_up: DevUp) -> None:
    dev_up.upload("daily_report.yaml", DAILY_FAILING_ON_THE_2ND)
    wait_for(
        lambda: "loaded dag=daily_report" in dev_up.log(), STEP_TIMEOUT, "the DAG to load", dev_up
    )
    window = ("backfill", "daily_report", "--start", "2026-11-01", "--end", "2026-11-03")
    first = dev_up.cli(*window)
    assert first.returncode == 0, first.stderr
    runs = wait_for_backfills(dev_up, "daily_report", 3)
    states = {run["logical_date"]: run["state"] for run in runs}
    assert states == {
        "2026-11-01T00:00:00Z": "success",
        "2026-11-02T00:00:00Z": "failed",
        "2026-11-03T00:00:00Z": "success",
    }

    dry = dev_up.cli(*window, "--reprocess", "failed", "--dry-run", "--output", "json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {
        "dag": "daily_report",
        "create": ["2026-11-02T00:00:00Z"],
        "skip": ["2026-11-01T00:00:00Z", "2026-11-03T00:00:00Z"],
    }
    assert len(backfill_runs(dev_up, "daily_report")) == 3  # the dry run changed nothing

    rerun = dev_up.cli(*window, "--reprocess", "failed", "--output", "json")
    assert rerun.returncode == 0, rerun.stderr
    [run_id] = json.loads(rerun.stdout)["runs"]
    runs = wait_for_backfills(dev_up, "daily_report", 4)
    [created] = [run for run in runs if run["run_id"] == run_id]
    assert created["logical_date"] == "2026-11-02T00:00:00Z"
    assert created["state"] == "failed"  # the job still fails on that date: a real rerun
    nothing = dev_up.cli(*window)  # --reprocess none: every date has a run
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing to create" in nothing.stderr


def sleeper(seconds: int) -> str:
    return f"""
dag: sleeper
tasks:
  nap:
    batch: {{job_queue: nightly, job_definition: nap}}
    local: {{command: [python, -c, "import time; time.sleep({seconds})"]}}
"""


def deleted(dev_up: DevUp, dag: str) -> bool:
    listed = dev_up.cli("dags", "list", "--output", "json")
    return listed.returncode == 0 and dag not in [d["dag"] for d in json.loads(listed.stdout)]


@pytest.mark.parametrize("cancel_runs", [False, True])
def test_deleting_a_dag_while_a_run_is_in_flight(dev_up: DevUp, cancel_runs: bool) -> None:
    dev_up.upload("sleeper.yaml", sleeper(300 if cancel_runs else 4))
    wait_for(lambda: "loaded dag=sleeper" in dev_up.log(), STEP_TIMEOUT, "the DAG to load", dev_up)
    dev_up.trigger("sleeper", "manual__nap")
    dev_up.wait_for_run("sleeper", "manual__nap", ("running",))
    flags = ["--cancel-runs"] if cancel_runs else []
    result = dev_up.cli("dags", "delete", "sleeper", *flags)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: deleted(dev_up, "sleeper"), STEP_TIMEOUT, "the DAG to be deleted", dev_up)
    refused = dev_up.cli("trigger", "sleeper")
    assert refused.returncode == 1
    assert "DAG 'sleeper' not found" in refused.stderr
    expected = "cancelled" if cancel_runs else "success"
    run = dev_up.wait_for_run("sleeper", "manual__nap", (expected,))  # history stays readable
    assert run["state"] == expected
    # Uploading the file again brings the DAG back.
    dev_up.upload("sleeper.yaml", sleeper(0))
    wait_for(lambda: not deleted(dev_up, "sleeper"), STEP_TIMEOUT, "the DAG to come back", dev_up)
