"""Fixtures for the service players: a moto server in this process (the players patch its
backends), a context that records the events players put, the shared job runner, the test
module's player installed on them (the module names its class ``PLAYER``) and the helpers
of the test modules (``kit``), tries planned for that player among them.

The helpers come as fixtures, never through ``from conftest import``: pytest given several
directories loads each one's conftest as ``conftest``, and the import can find another's."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from skydag.dev.server import aws_environment, moto_server
from skydag.localcloud.players.base import LocalPlan
from skydag.localcloud.players.runner import JobRunner

ROOT = Path(__file__).resolve().parents[3]
CANONICAL = ROOT / "events" / "aws"


@dataclass
class PutEvent:
    source: str
    detail_type: str
    detail: dict[str, Any]
    resources: list[str]
    bus: str
    time: datetime | None


@dataclass
class RecordingContext:
    """A PlayerContext that keeps what players put and answers plans from a dict."""

    endpoint_url: str
    account_id: str = "123456789012"
    region: str = "us-east-1"
    event_bus: str = "skydag"
    plans: dict[str, LocalPlan] = field(default_factory=dict)
    events: list[PutEvent] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    # (kind, token, task key) of every plan asked for.
    asked: list[tuple[str, str, tuple[str, str, str] | None]] = field(default_factory=list)

    def put_event(
        self,
        source: str,
        detail_type: str,
        detail: Mapping[str, Any],
        *,
        resources: list[str],
        time: datetime | None = None,
        bus: str = "default",
    ) -> None:
        # Through JSON, as EventBridge carries it: a datetime left in a detail fails here.
        self.events.append(
            PutEvent(source, detail_type, json.loads(json.dumps(detail)), resources, bus, time)
        )

    def plan_for(
        self, kind: str, token: str, task_key: tuple[str, str, str] | None = None
    ) -> LocalPlan | None:
        self.asked.append((kind, token, task_key))
        return self.plans.get(token)

    def write_log(self, group: str, stream: str, text: str) -> None:
        logs = self.client("logs")
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        lines = text.splitlines() or [""]
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": now, "message": line} for line in lines],
        )

    def say(self, who: str, text: str) -> None:
        self.lines.append(f"{who}: {text}")

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            config=Config(account_id_endpoint_mode="disabled"),
        )

    def events_of(self, detail_type: str) -> list[PutEvent]:
        return [event for event in self.events if event.detail_type == detail_type]

    def as_eventbridge(self, event: PutEvent) -> dict[str, Any]:
        """The event as a rule delivers it (what the targets' ``parse_event`` reads)."""
        return {
            "version": "0",
            "id": "00000000-0000-0000-0000-000000000000",
            "detail-type": event.detail_type,
            "source": event.source,
            "account": self.account_id,
            "time": "2026-12-05T00:00:00Z",
            "region": self.region,
            "resources": event.resources,
            "detail": event.detail,
        }


@pytest.fixture
def endpoint() -> Iterator[str]:
    """moto as a server in this process, this process's AWS settings pointed at it."""
    with moto_server() as url, aws_environment(url):
        yield url


@pytest.fixture
def context(endpoint: str) -> RecordingContext:
    return RecordingContext(endpoint_url=endpoint)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[JobRunner]:
    job_runner = JobRunner(tmp_path / "logs", cwd=ROOT)
    try:
        yield job_runner
    finally:
        job_runner.close()


@pytest.fixture
def player(
    request: pytest.FixtureRequest, context: RecordingContext, runner: JobRunner
) -> Iterator[Any]:
    """The test module's ``PLAYER`` (a player class), installed on the moto server; it is
    uninstalled after the test."""
    played = request.module.PLAYER()
    played.install(context, runner)
    try:
        yield played
    finally:
        played.uninstall()


def canonical(name: str) -> dict[str, Any]:
    """An event file of events/aws by name (without .json)."""
    loaded: dict[str, Any] = json.loads((CANONICAL / f"{name}.json").read_text())
    return loaded


def pump_until(
    poll: Callable[[], int], condition: Callable[[], bool], timeout: float = 10.0
) -> None:
    """Call ``poll`` (a player's) until ``condition`` holds, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        poll()
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def shape(value: Any) -> Any:
    """The keys of a JSON value, recursively (lists: the shape of their first item)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


# --- planned tries ----------------------------------------------------------------------------

PLANNED_RUN = "manual__2026-11-22T00:00:00+00:00"


def planned_request(
    context: RecordingContext,
    kind: str,
    target: Mapping[str, Any],
    local: Mapping[str, Any] | None = None,
    *,
    task_id: str = "extract",
    try_number: int = 1,
) -> Any:
    """A DispatchRequest for the real adapter whose try the context knows (its plan)."""
    import uuid

    from skydag.localcloud.players.base import JobIdentity
    from skydag.targets.base import DispatchRequest

    token = uuid.uuid4().hex
    environment = {
        "SKYDAG_DAG": "etl",
        "SKYDAG_RUN": PLANNED_RUN,
        "SKYDAG_TASK": task_id,
        "SKYDAG_TRY": str(try_number),
    }
    identity = JobIdentity(kind, token, "etl", PLANNED_RUN, task_id, try_number)
    context.plans[token] = LocalPlan(identity, local, environment=environment)
    return DispatchRequest(
        dag_id="etl",
        run_id=PLANNED_RUN,
        task_id=task_id,
        try_number=try_number,
        token=token,
        kind=kind,
        target=target,
        local=local,
        environment=environment,
    )


def planned_job_ref(request: Any, job_id: str | None) -> Any:
    """The JobRef the scheduler would hold for ``request``'s try."""
    from skydag.targets.base import JobRef

    return JobRef(
        request.dag_id,
        request.run_id,
        request.task_id,
        request.try_number,
        job_id,
        request.token,
        target=request.target,
    )


def process_group_gone(pgid: int) -> bool:
    """True when no process of the group is left (a killed job left nothing behind)."""
    import os

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def log_messages(context: RecordingContext, group: str, stream: str) -> list[str]:
    """The messages of one CloudWatch Logs stream in the moto server."""
    logs = context.client("logs")
    events = logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]
    return [str(event["message"]) for event in events]


# --- long jobs, and process groups with grandchildren ---------------------------------------

# A local command that runs until it is stopped.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# One that starts a child (a grandchild of the runner) running until it is killed, then
# runs until it is stopped.
_SLEEP = "import time; time.sleep(60)"
SLEEPER_WITH_CHILD = [
    "python",
    "-c",
    f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {_SLEEP!r}]); {_SLEEP}",
]

_PR_SET_CHILD_SUBREAPER = 36


def pids_in_group(pgid: int) -> list[int]:
    """The processes (zombies included) whose process group is ``pgid``, from /proc."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def subreaper() -> Iterator[Callable[[int], None]]:
    """Orphans of the jobs' process groups become this process's children, and the fixture's
    function reaps a group's dead ones. The machine's init may never reap orphans, and a
    zombie still answers ``os.killpg(pgid, 0)``: after the reaping, that call tells whether
    a process of the group is left."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def reap(pgid: int) -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for pid in pids_in_group(pgid):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            if not pids_in_group(pgid):
                return
            time.sleep(0.02)

    try:
        yield reap
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def missing_keys(actual: Any, model: Any, path: str = "detail") -> list[str]:
    """The key paths of ``model`` (a canonical event's ``shape``) that ``actual`` (a played
    event's ``shape``) lacks: a played event may carry more, never less."""
    if isinstance(model, dict):
        if not isinstance(actual, dict):
            return [path]
        return [
            missing
            for key, value in model.items()
            for missing in (
                missing_keys(actual[key], value, f"{path}.{key}")
                if key in actual
                else [f"{path}.{key}"]
            )
        ]
    if isinstance(model, list) and model and isinstance(actual, list) and actual:
        return missing_keys(actual[0], model[0], f"{path}[0]")
    return []


def missing(detail: Any, name: str) -> list[str]:
    """What the canonical event ``name`` has in its detail and ``detail`` lacks."""
    return missing_keys(shape(detail), shape(canonical(name)["detail"]))


@pytest.fixture
def kit(request: pytest.FixtureRequest, context: RecordingContext) -> Any:
    """This directory's helpers for its test modules (a fixture always finds this
    directory's conftest). ``kit.planned(target, local=None, *, task_id=..., try_number=...)``
    is a DispatchRequest of the kind of the module's ``PLAYER``, for a try whose plan the
    context knows."""
    from types import SimpleNamespace

    return SimpleNamespace(
        planned=functools.partial(planned_request, context, request.module.PLAYER.kind),
        canonical=canonical,
        pump_until=pump_until,
        shape=shape,
        missing=missing,
        planned_job_ref=planned_job_ref,
        log_messages=log_messages,
        process_group_gone=process_group_gone,
        pids_in_group=pids_in_group,
        sleeper=SLEEPER,
        sleeper_with_child=SLEEPER_WITH_CHILD,
    )
