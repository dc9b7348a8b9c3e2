"""Amazon EMR Serverless, played: each skydag job run runs its try's ``local:`` block.

moto ends every job run with SUCCESS the moment it is started. The player holds a run
with a skydag-style name in SUBMITTED as StartJobRun creates it (on moto's request
thread: the only thing it does there besides recording), then on its own thread moves
it through RUNNING to SUCCESS, FAILED (with stateDetails) or, after CancelJobRun's
CANCELLING, CANCELLED, so that GetJobRun and the reconciler agree with the "EMR
Serverless Job Run State Change" events it puts. The run's output goes where its
monitoring configuration sends it (CloudWatch Logs, S3) and to the local cloud's own
stream.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from skydag import joblogs
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.localcloud.players.runner import JobRunner, output_tail
from skydag.targets.aws.emr_serverless import DETAIL_TYPE, SOURCE
from skydag.targets.base import token_from_name

KIND = "emr_serverless"
# The most of a job's output its log streams get (all of it stays in its file).
MAX_LOG_BYTES = 1_000_000
# How long a run named like skydag's waits for its try to be found; then it is left to
# moto, as any other run (which ends it with SUCCESS).
PLAN_GRACE_SECONDS = 2.0
# Where EMR Serverless sends a run's logs when its CloudWatch logging names no group.
DEFAULT_LOG_GROUP = "/aws/emr-serverless"
STAND_IN_RELEASE = "emr-7.5.0"
_UNFINISHED = frozenset({"SUBMITTED", "PENDING", "SCHEDULED", "QUEUED", "RUNNING", "CANCELLING"})
# As the canonical events (events/aws): AWS's documented RUNNING example carries no run name.
_NAMED_STATES = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
# Marks the runs the player runs, on moto's own objects (they outlive the tracking).
_PLAYED = "skydag_played"
# GetJobRun's stateDetails is at most 256 characters.
_MAX_STATE_DETAILS = 256


@dataclass
class _Tracked:
    """A job run with a skydag-style name, from StartJobRun to its last event."""

    run: Any  # moto's JobRun
    seen_at: float
    plan: LocalPlan | None = None
    previous_state: str = "SUBMITTED"

    @property
    def job_id(self) -> str:
        return f"{self.run.application_id}/{self.run.id}"


class EmrServerlessPlayer:
    """Plays the job runs of the EMR Serverless applications in moto."""

    kind = KIND

    def __init__(self) -> None:
        self._context: PlayerContext | None = None
        self._runner: JobRunner | None = None
        self._originals: list[tuple[type, str, Any]] = []
        # Guards everything below and the played runs' state: moto's request threads
        # record, poll() consumes.
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._stops: list[tuple[str, str]] = []
        self._exits: list[tuple[str, JobExit]] = []
        self._buckets: set[str] = set()

    # --- installing ---------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.emrserverless.models import EMRServerlessBackend

        if self._originals:
            raise RuntimeError("the EMR Serverless player is installed already")
        self._context = context
        self._runner = runner
        start_original = EMRServerlessBackend.start_job_run
        cancel_original = EMRServerlessBackend.cancel_job_run
        player = self

        def start_job_run(backend: Any, *args: Any, **kwargs: Any) -> Any:
            run = start_original(backend, *args, **kwargs)
            player._record_start(run)
            return run

        def cancel_job_run(backend: Any, application_id: str, job_run_id: str) -> Any:
            if player._cancel(backend.get_job_run(application_id, job_run_id)):
                return application_id, job_run_id
            return cancel_original(backend, application_id, job_run_id)

        self._patch(EMRServerlessBackend, "start_job_run", start_job_run)
        self._patch(EMRServerlessBackend, "cancel_job_run", cancel_job_run)

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)
        self._originals.clear()
        with self._lock:
            self._tracked.clear()
            self._stops.clear()
            self._exits.clear()

    def _patch(self, owner: type, name: str, replacement: Any) -> None:
        self._originals.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, replacement)

    # --- moto's request threads: record only ----------------------------------------------

    def _record_start(self, run: Any) -> None:
        if token_from_name(run.name) is None:
            return
        # Before StartJobRun answers: no GetJobRun may see moto's instant SUCCESS. moto
        # also dates runs at midnight; AWS dates them when they are created.
        now = _naive_utc(None)
        with self._lock:
            run.created_at = run.updated_at = now
            run.state = "SUBMITTED"
            tracked = _Tracked(run, time.monotonic())
            self._tracked[tracked.job_id] = tracked

    def _cancel(self, run: Any) -> bool:
        """CancelJobRun of a played run (False: not one, moto answers). A run that has
        ended is refused, as AWS refuses it."""
        from moto.emrserverless.exceptions import ValidationException

        job_id = f"{run.application_id}/{run.id}"
        with self._lock:
            tracked = self._tracked.get(job_id)
            if tracked is None and not getattr(run, _PLAYED, False):
                return False
            if run.state not in _UNFINISHED:
                raise ValidationException(
                    f"Job run {run.id} is in state {run.state} and cannot be cancelled"
                )
            if run.state != "CANCELLING":
                run.updated_at = _naive_utc(None)
                run.state = "CANCELLING"
                self._stops.append((job_id, "CancelJobRun"))
            return True

    def _exited(self, job_id: str, exit: JobExit) -> None:
        with self._lock:
            self._exits.append((job_id, exit))

    # --- the player's thread ------------------------------------------------------------

    def poll(self) -> int:
        context, runner = self._attached()
        with self._lock:
            waiting = [tracked for tracked in self._tracked.values() if tracked.plan is None]
        happened = sum(self._claim(context, runner, tracked) for tracked in waiting)
        with self._lock:
            stops, self._stops = self._stops, []
        for job_id, reason in stops:
            if runner.stop(_runner_key(job_id), reason):
                context.say(KIND, f"{job_id} stopping: {reason}")
                happened += 1
        runner.poll()
        with self._lock:
            exits, self._exits = self._exits, []
        for job_id, exit in exits:
            self._finish(context, job_id, exit)
        return happened + len(exits)

    def _claim(self, context: PlayerContext, runner: JobRunner, tracked: _Tracked) -> int:
        run = tracked.run
        plan = context.plan_for(KIND, str(token_from_name(run.name)))
        if plan is None:
            if time.monotonic() - tracked.seen_at > PLAN_GRACE_SECONDS:
                self._give_back(tracked)
            return 0
        with self._lock:
            tracked.plan = plan
            setattr(run, _PLAYED, True)
            tracked.previous_state = str(run.state)
            cancelled = run.state == "CANCELLING"
            if cancelled:
                # Cancelled before the player got to it: nothing runs, only the end is told.
                _write_state(run, "CANCELLED")
                self._tracked.pop(tracked.job_id, None)
            else:
                run.started_at = _naive_utc(None)  # GetJobRun's startedAt (moto has none)
                _write_state(run, "RUNNING")
        self._put(context, tracked)
        context.say(KIND, f"{run.name} ({tracked.job_id}) {run.state}")
        if not cancelled:
            job_id = tracked.job_id
            runner.start(_runner_key(job_id), plan, lambda exit: self._exited(job_id, exit))
        return 1

    def _give_back(self, tracked: _Tracked) -> None:
        """No try has this run's token: it ends as moto ends any run."""
        with self._lock:
            self._tracked.pop(tracked.job_id, None)
            run = tracked.run
            _write_state(run, "CANCELLED" if run.state == "CANCELLING" else "SUCCESS")

    def _finish(self, context: PlayerContext, job_id: str, exit: JobExit) -> None:
        with self._lock:
            tracked = self._tracked.get(job_id)
        if tracked is None or tracked.plan is None:
            return
        written = [
            _write_local_log(context, tracked.plan, exit),
            *self._write_logs(context, tracked, exit),
        ]
        run = tracked.run
        with self._lock:
            if run.state in _UNFINISHED:
                tracked.previous_state = str(run.state)
                _close(run, exit)
            self._tracked.pop(job_id, None)
        self._put(context, tracked, at=exit.ended_at)
        context.say(KIND, _summary(tracked, exit, written))

    def _write_logs(self, context: PlayerContext, tracked: _Tracked, exit: JobExit) -> list[str]:
        """The run's output where its monitoring configuration sends the driver's stdout."""
        run = tracked.run
        monitoring = (run.configuration_overrides or {}).get("monitoringConfiguration") or {}
        path = f"applications/{run.application_id}/jobs/{run.id}/SPARK_DRIVER/stdout"
        text = log_text(exit)
        written: list[str] = []
        cloudwatch = monitoring.get("cloudWatchLoggingConfiguration") or {}
        if cloudwatch.get("enabled"):
            group = str(cloudwatch.get("logGroupName") or DEFAULT_LOG_GROUP)
            prefix = str(cloudwatch.get("logStreamNamePrefix") or "").strip("/")
            stream = f"{prefix}/{path}" if prefix else path
            context.write_log(group, stream, text)
            written.append(f"{group} {stream}")
        log_uri = str((monitoring.get("s3MonitoringConfiguration") or {}).get("logUri") or "")
        if log_uri.startswith("s3://"):
            uri = f"{log_uri.rstrip('/')}/{path}.gz"
            if self._put_s3(context, uri, gzip.compress(text.encode("utf-8"))):
                written.append(uri)
        return written

    def _put_s3(self, context: PlayerContext, uri: str, body: bytes) -> bool:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        s3 = _client(context, "s3")
        try:
            if bucket not in self._buckets:
                with contextlib.suppress(
                    s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
                ):
                    s3.create_bucket(Bucket=bucket)
                self._buckets.add(bucket)
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        except (ClientError, BotoCoreError) as error:
            context.say(KIND, f"cannot write the run's log to {uri}: {error}")
            return False
        return True

    def _put(self, context: PlayerContext, tracked: _Tracked, at: datetime | None = None) -> None:
        context.put_event(
            SOURCE,
            DETAIL_TYPE,
            event_detail(tracked.run, tracked.previous_state, context.account_id),
            resources=[],
            time=at,
        )

    def _attached(self) -> tuple[PlayerContext, JobRunner]:
        if self._context is None or self._runner is None:
            raise RuntimeError("the EMR Serverless player is not installed")
        return self._context, self._runner

    # --- stand-in resources -------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        """The application ``application_id`` names, STARTED, with exactly that id."""
        from moto.emrserverless.models import emrserverless_backends

        context, _ = self._attached()
        application_id = _concrete(target.get("application_id"))
        if application_id is None:
            return []
        backend = emrserverless_backends[context.account_id][context.region]
        if application_id in backend.applications:
            return []
        # As CreateApplication passes them: what the request leaves out is None.
        parameters: dict[str, Any] = {
            "name": f"skydag-local-{application_id}",
            "release_label": STAND_IN_RELEASE,
            "application_type": "SPARK",
            "client_token": None,
            "initial_capacity": None,
            "maximum_capacity": None,
            "tags": None,
            "auto_start_configuration": None,
            "auto_stop_configuration": None,
            "network_configuration": None,
        }
        application = backend.create_application(**parameters)
        # CreateApplication cannot choose the id: the new application is re-keyed to
        # the one the DAG names (moto makes it STARTED, which StartJobRun accepts).
        generated = application.id
        backend.applications.pop(generated)
        application.id = application_id
        application.arn = application.arn.replace(generated, application_id)
        backend.applications[application_id] = application
        return [f"emr-serverless application {application_id} (SPARK, {STAND_IN_RELEASE})"]


# --- moto's job run -------------------------------------------------------------------------


def _write_state(run: Any, state: str, at: datetime | None = None) -> None:
    run.updated_at = _naive_utc(at)
    run.state = state


def _close(run: Any, exit: JobExit) -> None:
    """Write the job's outcome into the run; the state goes last, so a concurrent
    GetJobRun sees either the running run or the whole outcome."""
    if run.state == "CANCELLING" or exit.stopped is not None:
        state = "CANCELLED"
        if run.state != "CANCELLING":
            run.state_details = f"stopped by the local cloud: {exit.stopped}"[:_MAX_STATE_DETAILS]
    elif exit.exit_code == 0:
        state = "SUCCESS"
    else:
        state = "FAILED"
        run.state_details = state_details(exit)
    if exit.started_at is not None and exit.ended_at is not None:
        run.total_execution_duration_seconds = int(
            (exit.ended_at - exit.started_at).total_seconds()
        )
    run.ended_at = _naive_utc(exit.ended_at)  # GetJobRun's endedAt (moto has none)
    _write_state(run, state, exit.ended_at)


def state_details(exit: JobExit) -> str:
    """A failed run's stateDetails: the exit code and the output's last line."""
    tail = output_tail(exit.log_path)
    details = f"Job failed: the local job exited with code {exit.exit_code}"
    return (f"{details}: {tail}" if tail else details)[:_MAX_STATE_DETAILS]


def event_detail(run: Any, previous_state: str, account_id: str) -> dict[str, Any]:
    """The detail of an "EMR Serverless Job Run State Change" event, as AWS gives it."""
    state = str(run.state)
    detail: dict[str, Any] = {"jobRunId": run.id}
    if state in _NAMED_STATES:
        detail["jobRunName"] = run.name
    detail.update(
        {
            "applicationId": run.application_id,
            "arn": run.arn,
            "releaseLabel": run.release_label,
            "state": state,
            "previousState": previous_state,
            # moto records no caller; AWS names the identity that started the run.
            "createdBy": run.created_by or f"arn:aws:iam::{account_id}:root",
            "updatedAt": _iso(run.updated_at),
            "createdAt": _iso(run.created_at),
        }
    )
    return detail


def _summary(tracked: _Tracked, exit: JobExit, written: list[str]) -> str:
    run = tracked.run
    head = f"{run.name} ({tracked.job_id}) {run.state}"
    if run.state == "SUCCESS":
        return head
    logs = "; ".join(str(where) for where in [exit.log_path, *written] if where)
    reason = f": {run.state_details}" if run.state_details else ""
    return f"{head}{reason} (exit code {exit.exit_code}, log: {logs})"


# --- helpers ---------------------------------------------------------------------------------


def _runner_key(job_id: str) -> str:
    # The runner is shared by every player: its keys carry the kind.
    return f"{KIND}:{job_id}"


def _write_local_log(context: PlayerContext, plan: LocalPlan, exit: JobExit) -> str:
    """The try's output (or a note on the stand-in) in the local cloud's own stream."""
    who = plan.identity
    stream = joblogs.local_stream(who.dag_id, who.run_id, who.task_id, who.try_number)
    context.write_log(joblogs.LOCAL_LOG_GROUP, stream, log_text(exit))
    return f"{joblogs.LOCAL_LOG_GROUP} {stream}"


def log_text(exit: JobExit) -> str:
    """The job's captured output for its log streams (a stand-in's: one line saying so)."""
    if exit.log_path is None or not exit.log_path.exists():
        seconds = 0.0
        if exit.started_at is not None and exit.ended_at is not None:
            seconds = (exit.ended_at - exit.started_at).total_seconds()
        note = f"stand-in: exited {exit.exit_code} after {seconds:.1f} s"
        return f"{note} (stopped: {exit.stopped})" if exit.stopped else note
    with exit.log_path.open("rb") as stream:
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(max(0, size - MAX_LOG_BYTES))
        text = stream.read().decode("utf-8", "replace")
    if size > MAX_LOG_BYTES:
        left_out = f"[first {size - MAX_LOG_BYTES} bytes left out; all of it: {exit.log_path}]"
        text = f"{left_out}\n{text}"
    return text if text.strip() else "(no output)"


def _concrete(value: Any) -> str | None:
    """A target value ensure_resources can act on (not missing, not an unrendered template)."""
    if value is None or "{{" in str(value):
        return None
    return str(value) or None


def _client(context: PlayerContext, service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        region_name=context.region,
        endpoint_url=context.endpoint_url,
        config=Config(account_id_endpoint_mode="disabled"),
    )


def _naive_utc(moment: datetime | None) -> datetime:
    """moto keeps naive UTC datetimes."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _iso(moment: datetime) -> str:
    """``2026-11-22T00:01:42.299487Z``, as the events give times."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
