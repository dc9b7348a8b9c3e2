"""The web console in a real headless Chromium, against `skydag dev up` (which serves it):
the grid fills in as a run proceeds, a failed task's log is read in its page, clearing it
from the page makes it succeed, and the DAG is paused. Screenshots of each page are taken
on the way: into docs/images/ for docs/console.md with ``SKYDAG_SCREENSHOTS=docs`` (``make
docs-screenshots``), else into the test's temporary directory, so a test run leaves the
checkout as it found it.

Needs Debian's ``chromium`` (``make test`` installs it when it can) and Playwright; never a
browser Playwright downloads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
SKYDAG = str(Path(sys.executable).parent / "skydag")
CHROMIUM = os.environ.get("SKYDAG_CHROMIUM", "/usr/bin/chromium")
DOC_IMAGES = ROOT / "docs" / "images"
STARTUP_TIMEOUT = 60.0
STEP_MS = 30_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return (
            f"no chromium at {CHROMIUM} (apt-get install -y chromium; `make test` does it as root)"
        )
    return None


pytestmark = pytest.mark.skipif(
    _browser_missing() is not None, reason=f"browser tests skipped: {_browser_missing()}"
)


def flaky_dag(marker: Path) -> str:
    """extract, then load (fails with 'disk full' on its first try only), then report."""
    load = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); again = p.exists(); p.touch(); "
        "print('loaded 42 rows' if again else 'disk full'); sys.exit(0 if again else 3)"
    )
    return f"""
dag: console_flaky
description: a DAG whose load fails once
params: {{table: orders}}
tasks:
  extract:
    batch: {{job_queue: q, job_definition: extract}}
    local: {{command: [python, -c, "import time; time.sleep(1.5); print('extracted')"]}}
  load:
    depends_on: [extract]
    batch: {{job_queue: q, job_definition: "load-{{{{ params.table }}}}"}}
    local: {{command: [python, -c, "{load}", "{marker}"]}}
  report:
    depends_on: [load]
    wait: {{on: {{source: [acme.reports], detail-type: [report.wanted]}}}}
"""


@dataclass
class Console:
    url: str
    info: dict[str, Any]
    log_lines: list[str]

    def upload(self, name: str, text: str) -> None:
        s3 = boto3.client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.info["endpoint_url"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(account_id_endpoint_mode="disabled"),
        )
        key = f"{self.info['dag_prefix']}{name}"
        s3.put_object(Bucket=self.info["dag_bucket"], Key=key, Body=text.encode())

    def dags(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}api/dags", timeout=10) as answer:
            found: list[dict[str, Any]] = json.loads(answer.read())
        return found


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_PROFILE", None)
    process = subprocess.Popen(
        [SKYDAG, "dev", "up", "--port", "0", "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    log_lines: list[str] = []
    stderr = process.stderr
    threading.Thread(
        target=lambda: log_lines.extend(iter(stderr.readline, "")), daemon=True
    ).start()
    try:
        text, url = "", ""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and not url:
            line = process.stdout.readline()
            if not line:
                break
            text += line
            if line.startswith("web console: "):
                url = line.removeprefix("web console: ").strip()
        assert url, f"dev up served no console:\n{text}{''.join(log_lines)}"
        info = json.loads(text[text.index("{") : text.index("\n}") + 2])
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield Console(url, info, log_lines)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_follow_a_run_read_a_failed_log_clear_it_and_pause_the_dag(
    console: Console, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    console.upload("flaky.yaml", flaky_dag(tmp_path / "load-ran-once"))
    deadline = time.monotonic() + 30
    while not any(d["dag"] == "console_flaky" for d in console.dags()):
        assert time.monotonic() < deadline, "the DAG did not load:\n" + "".join(console.log_lines)
        time.sleep(0.3)
    images = DOC_IMAGES if os.environ.get("SKYDAG_SCREENSHOTS") == "docs" else tmp_path / "images"
    images.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(STEP_MS)
        expect.set_options(timeout=STEP_MS)
        try:
            page.goto(console.url)
            expect(page.get_by_role("link", name="console_flaky")).to_be_visible()
            page.get_by_role("link", name="console_flaky").click()

            # Trigger from the page; the grid fills in as the run goes, with no reload.
            page.get_by_text("Trigger a run").click()
            page.locator("#conf").fill('{"table": "orders"}')
            page.locator("#trigger").click()
            expect(page.locator("#status")).to_contain_text("asked the scheduler to start run")
            extract = page.locator('a.c[aria-label^="extract in manual__"]')
            expect(extract).to_have_class("c s-success")
            failed = page.locator('a.c[aria-label^="load in manual__"]')
            expect(failed).to_have_class("c s-failed")
            page.screenshot(path=str(images / "console-grid.png"))

            # The failed task's page shows its try and its log.
            failed.click()
            expect(page.locator("pre.log")).to_contain_text("disk full")
            expect(page.locator("#task-state")).to_contain_text("failed")
            page.screenshot(path=str(images / "console-task.png"), full_page=True)

            # Clear it from the page: the scheduler runs it again and it succeeds.
            page.locator("#clear").click()
            expect(page.locator("#status")).to_contain_text("asked the scheduler to clear load")
            expect(page.locator("#task-state")).to_contain_text("success")
            expect(page.locator("pre.log")).to_contain_text("loaded 42 rows")

            page.get_by_role("link", name="console_flaky").first.click()
            page.get_by_role("link", name="Graph").click()
            expect(page.locator('a.node[aria-label^="load: success"]')).to_be_visible()
            expect(
                page.locator('a.node[aria-label*="waits for source acme.reports"]')
            ).to_be_visible()
            page.screenshot(path=str(images / "console-graph.png"))

            # Pause the DAG: the page says so once the scheduler has done it.
            page.get_by_role("link", name="Grid").click()
            page.locator("#pause").click()
            expect(page.locator("#status")).to_contain_text("asked the scheduler to pause")
            expect(page.locator("p.summary")).to_contain_text("Paused")
            page.goto(console.url)
            expect(page.locator('tr[data-dag="console_flaky"]')).to_contain_text("paused")
            page.screenshot(path=str(images / "console-dags.png"))
        finally:
            browser.close()
