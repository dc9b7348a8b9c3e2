"""The job runner every service player shares: what a played job actually does.

A try with a ``local.command`` runs it as a subprocess in its own process group (so a
cancel, a stop or a timeout kills the job and everything it started), with its output
captured to ``<log_dir>/<dag>/<run>/<task>.<try>.log``. A try without one is a stand-in:
it ends after ``local.duration`` (default: at once; a service's runs until stopped) with
``local.outcome`` (default ``success``; ``failed`` exits with ``local.exit_code`` or 1)
and, when given, ``local.output`` as the job's output.

The runner never calls AWS: players turn its exits into service state and events.
Exits are reported from ``poll()``, on the caller's thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from skydag.localcloud.players.base import JobExit, LocalPlan
from skydag.spec.durations import parse_duration

# A stopped job's exit code (SIGTERM, as a shell reports it).
STOPPED_EXIT_CODE = 143
# Between SIGTERM to the group and SIGKILL, as ECS's stopTimeout and Batch give.
STOP_GRACE_SECONDS = 2.0
# The tail of a failed job's output shown as its reason.
REASON_TAIL_CHARS = 400

OnExit = Callable[[JobExit], None]


@dataclass
class _Job:
    key: str
    plan: LocalPlan
    on_exit: OnExit
    started_at: datetime
    started: float
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    log_file: IO[bytes] | None = None
    stand_in_seconds: float = 0.0
    stand_in_exit: int = 0
    stopped: str | None = None
    stop_sent_at: float | None = None


def _resolve_python(command: list[str]) -> list[str]:
    """``python`` in a local command means the interpreter skydag runs on: the machine may
    have no ``python`` on PATH, and the job should see the same packages."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return command


def _safe_part(text: str) -> str:
    """A path component that cannot climb out of the log folder."""
    cleaned = "".join(c if c.isalnum() or c in "-_.=+:@" else "_" for c in text)
    return cleaned.lstrip(".") or "_"


class JobRunner:
    """Runs played jobs; keyed by the player's own job key (a job id or ARN)."""

    def __init__(self, log_dir: Path, *, cwd: Path | None = None) -> None:
        self.log_dir = log_dir
        self.cwd = cwd or Path.cwd()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    # --- starting ---------------------------------------------------------------------------

    def start(self, key: str, plan: LocalPlan, on_exit: OnExit) -> Path | None:
        """Start the try's job (once per key: a second call is ignored); returns where its
        output goes (None for a stand-in)."""
        with self._lock:
            if key in self._jobs:
                return self._jobs[key].log_path
        job = _Job(key, plan, on_exit, datetime.now(UTC), time.monotonic())
        local = plan.local or {}
        command = local.get("command")
        if command:
            self._spawn(job, _resolve_python([str(part) for part in command]), local)
        else:
            if plan.service and not local.get("duration"):
                job.stand_in_seconds = float("inf")  # a service runs until it is stopped
            else:
                job.stand_in_seconds = parse_duration(local.get("duration", 0)).total_seconds()
            failed = str(local.get("outcome", "success")) == "failed"
            code = int(local.get("exit_code", 0) or 0)
            job.stand_in_exit = (code or 1) if failed else code
        with self._lock:
            self._jobs[key] = job
        return job.log_path

    def _spawn(self, job: _Job, command: list[str], local: Mapping[str, Any]) -> None:
        who = job.plan.identity
        job.log_path = self.log_path(who.dag_id, who.run_id, who.task_id, who.try_number)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        job.log_file = job.log_path.open("wb")
        env = {
            **os.environ,
            **{str(k): str(v) for k, v in (local.get("environment") or {}).items()},
            **job.plan.environment,
        }
        cwd = self.cwd / str(local["cwd"]) if local.get("cwd") else self.cwd
        try:
            job.process = subprocess.Popen(
                command,
                stdout=job.log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,  # its own process group: killed as a whole
            )
        except OSError as error:
            job.log_file.write(f"cannot start {command[0]!r}: {error.strerror}\n".encode())
            job.log_file.close()
            job.log_file = None
            job.process = None
            job.stand_in_exit = 127
            job.stand_in_seconds = 0.0

    def log_path(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> Path:
        """Where a try's captured output goes: ``<log_dir>/<dag>/<run>/<task>.<try>.log``,
        each part made safe (``skydag.limits.safe_path_part``): inside ``log_dir``, always."""
        from skydag.limits import safe_path_part

        folder = self.log_dir / safe_path_part(dag_id) / safe_path_part(run_id)
        return folder / f"{safe_path_part(task_id)}.{int(try_number)}.log"

    # --- stopping ---------------------------------------------------------------------------

    def stop(self, key: str, reason: str) -> bool:
        """Stop the job (SIGTERM to its process group, SIGKILL after a grace period);
        False when there is no such job or it has ended already."""
        with self._lock:
            job = self._jobs.get(key)
        if job is None or job.stopped is not None or self._exit_code(job) is not None:
            return False
        job.stopped = reason
        job.stop_sent_at = time.monotonic()
        self._signal(job, signal.SIGTERM)
        return True

    def _signal(self, job: _Job, sig: signal.Signals) -> None:
        if job.process is None or job.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.process.pid, sig)

    # --- polling ----------------------------------------------------------------------------

    def poll(self) -> int:
        """Report the jobs that ended since the last poll (their ``on_exit``)."""
        with self._lock:
            jobs = list(self._jobs.values())
        ended = 0
        for job in jobs:
            code = self._exit_code(job)
            if code is None:
                if job.stop_sent_at is not None and (
                    time.monotonic() - job.stop_sent_at > STOP_GRACE_SECONDS
                ):
                    self._signal(job, signal.SIGKILL)
                continue
            with self._lock:
                if self._jobs.pop(job.key, None) is None:
                    continue
            self._finish(job, code)
            ended += 1
        return ended

    def _exit_code(self, job: _Job) -> int | None:
        if job.process is not None:
            code = job.process.poll()
            if code is None:
                return None
            # A process killed by a signal: as a shell reports it (128 + signal).
            return 128 - code if code < 0 else code
        if job.stopped is not None:
            return STOPPED_EXIT_CODE
        if time.monotonic() - job.started < job.stand_in_seconds:
            return None
        return job.stand_in_exit

    def _finish(self, job: _Job, code: int) -> None:
        if job.log_file is not None:
            job.log_file.close()
            job.log_file = None
        if job.process is not None:
            # The leader exited; whatever it left behind in its group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.process.pid, signal.SIGKILL)
        output = None if job.process is not None else (job.plan.local or {}).get("output")
        job.on_exit(
            JobExit(
                exit_code=code,
                stopped=job.stopped,
                output=output,
                log_path=job.log_path,
                started_at=job.started_at,
                ended_at=datetime.now(UTC),
            )
        )

    # --- reading ----------------------------------------------------------------------------

    def running(self) -> int:
        with self._lock:
            return len(self._jobs)

    def is_running(self, key: str) -> bool:
        with self._lock:
            return key in self._jobs

    def pid_of(self, key: str) -> int | None:
        """The job's process (group) id, while it runs."""
        with self._lock:
            job = self._jobs.get(key)
        return job.process.pid if job is not None and job.process is not None else None

    def close(self) -> None:
        """Kill every job's process group: the local cloud never leaves processes behind."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            self._signal(job, signal.SIGKILL)
            if job.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    job.process.wait(timeout=5)
            if job.log_file is not None:
                job.log_file.close()


def output_tail(log_path: Path | None) -> str:
    """The last non-empty line of a job's output (a failure's reason), or ''."""
    if log_path is None or not log_path.exists():
        return ""
    with log_path.open("rb") as stream:
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(max(0, size - REASON_TAIL_CHARS))
        text = stream.read().decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
