"""The local target: what dev mode runs instead of AWS jobs.

A task's ``local.command`` runs as a subprocess with the SKYDAG_* identity variables;
without a command, ``local.exit_code`` and ``local.duration`` simulate the job. Outcomes
come back as JobReports from ``poll()``, the way a service's state-change events would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from skydag.engine.models import JobReport, JobStatus
from skydag.limits import safe_path_part
from skydag.ports import Clock
from skydag.spec.durations import parse_duration
from skydag.targets.base import DispatchError, DispatchRequest, DispatchResult, JobRef, Target

# Only the tail of a failed job's output is kept as its reason.
REASON_TAIL_CHARS = 400


@dataclass
class _LocalJob:
    request: DispatchRequest
    job_id: str
    started: float
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    log_file: IO[bytes] | None = None
    simulated_exit: int = 0
    simulated_seconds: float = 0.0
    done: bool = False
    cancelled: str | None = None


def _resolve_python(command: list[str]) -> list[str]:
    """``python`` in a DAG's local command means the interpreter skydag runs on: the
    machine may have no ``python`` on PATH, and the job should see the same packages."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return command


class LocalTarget:
    """Runs every kind of task locally. Idempotent per dispatch token (re-attaches)."""

    def __init__(
        self,
        clock: Clock,
        log_dir: Path,
        *,
        emit: Callable[[Mapping[str, Any]], None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.clock = clock
        self.log_dir = log_dir
        self.emit = emit
        self.cwd = cwd or Path.cwd()
        self._jobs: dict[str, _LocalJob] = {}
        self._lock = threading.Lock()
        self._counter = 0
        self.dispatch_count = 0

    def target_for(self, kind: str) -> Target:
        return self

    # --- Target ----------------------------------------------------------------------------

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        with self._lock:
            existing = self._jobs.get(request.token)
            if existing is not None:
                return DispatchResult(job_id=existing.job_id)
            self.dispatch_count += 1
            self._counter += 1
            job_id = f"local-{self._counter}"
        job = _LocalJob(request, job_id, time.monotonic())
        if request.kind in ("noop", "emit") and not request.local:
            # Remembered like any job, so a redelivered dispatch never emits twice.
            job.done = True
            with self._lock:
                self._jobs[request.token] = job
            return DispatchResult(job_id=job_id, report=self._immediate(request, job_id))
        local = request.local or {}
        command = local.get("command")
        if command:
            self._start_process(job, _resolve_python([str(part) for part in command]), local)
        else:
            job.simulated_exit = int(local.get("exit_code", 0))
            job.simulated_seconds = parse_duration(local.get("duration", 0)).total_seconds()
        with self._lock:
            self._jobs[request.token] = job
        return DispatchResult(job_id=job_id)

    def describe(self, job: JobRef) -> JobReport | None:
        with self._lock:
            local = self._jobs.get(job.token or "")
        if local is None:
            return None
        return self._report_if_done(local) or self._report(local, JobStatus.RUNNING)

    def cancel(self, job: JobRef, reason: str) -> None:
        with self._lock:
            local = self._jobs.get(job.token or "")
        if local is None or local.done:
            return
        local.cancelled = reason
        if local.process is not None and local.process.poll() is None:
            local.process.terminate()

    # --- polling ---------------------------------------------------------------------------

    def poll(self) -> list[JobReport]:
        """Reports for jobs that ended since the last poll."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if not j.done]
        reports = []
        for job in jobs:
            report = self._report_if_done(job)
            if report is not None:
                job.done = True
                reports.append(report)
        return reports

    def running(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if not j.done)

    def close(self) -> None:
        """Stop whatever still runs: dev mode never leaves processes behind."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.process is not None and job.process.poll() is None:
                job.process.kill()
                job.process.wait(timeout=5)
            if job.log_file is not None:
                job.log_file.close()

    # --- internals -------------------------------------------------------------------------

    def _immediate(self, request: DispatchRequest, job_id: str) -> JobReport:
        if request.kind == "emit" and self.emit is not None:
            self.emit(request.target)
        return JobReport(
            request.dag_id,
            request.run_id,
            request.task_id,
            request.try_number,
            JobStatus.SUCCEEDED,
            job_id=job_id,
            exit_code=0,
            at=self.clock.now(),
            map_index=request.map_index,
        )

    def _start_process(self, job: _LocalJob, command: list[str], local: Mapping[str, Any]) -> None:
        request = job.request
        # Ids come from events and commands: each part is made safe to stay in log_dir.
        folder = self.log_dir / safe_path_part(request.dag_id) / safe_path_part(request.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        job.log_path = folder / f"{safe_path_part(request.task_id)}.{int(request.try_number)}.log"
        job.log_file = job.log_path.open("wb")
        env = {**os.environ, **dict(local.get("environment") or {}), **request.environment}
        cwd = self.cwd / str(local["cwd"]) if local.get("cwd") else self.cwd
        try:
            job.process = subprocess.Popen(
                command, stdout=job.log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )
        except OSError as error:
            job.log_file.close()
            raise DispatchError(f"cannot start {command[0]!r}: {error.strerror}") from error

    def _report_if_done(self, job: _LocalJob) -> JobReport | None:
        if job.process is not None:
            code = job.process.poll()
            if code is None:
                return None
            if job.log_file is not None:
                job.log_file.close()
            return self._finished(job, code)
        elapsed = time.monotonic() - job.started
        if job.cancelled is None and elapsed < job.simulated_seconds:
            return None
        return self._finished(job, 143 if job.cancelled else job.simulated_exit)

    def _finished(self, job: _LocalJob, code: int) -> JobReport:
        if job.cancelled is not None:
            return self._report(job, JobStatus.STOPPED, exit_code=code, reason=job.cancelled)
        if code == 0:
            return self._report(job, JobStatus.SUCCEEDED, exit_code=0)
        reason = f"exit code {code}"
        tail = self._log_tail(job)
        if tail:
            reason += f": {tail}"
        return self._report(job, JobStatus.FAILED, exit_code=code, reason=reason)

    def _report(
        self,
        job: _LocalJob,
        status: JobStatus,
        *,
        exit_code: int | None = None,
        reason: str | None = None,
    ) -> JobReport:
        r = job.request
        return JobReport(
            r.dag_id,
            r.run_id,
            r.task_id,
            r.try_number,
            status,
            job_id=job.job_id,
            exit_code=exit_code,
            reason=reason,
            at=self.clock.now(),
            map_index=r.map_index,
        )

    @staticmethod
    def _log_tail(job: _LocalJob) -> str:
        if job.log_path is None or not job.log_path.exists():
            return ""
        text = job.log_path.read_bytes()[-REASON_TAIL_CHARS:].decode("utf-8", "replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""
