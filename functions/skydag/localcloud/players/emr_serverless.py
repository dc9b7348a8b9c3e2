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

import gzip
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skydag import joblogs
from skydag.localcloud.players._common import (
    TrackedJobsPlayer,
    exit_reason,
    naive_utc,
    output_text,
    rendered,
    write_local_log,
)
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.targets.aws.emr_serverless import DETAIL_TYPE, SOURCE
from skydag.targets.base import token_from_name

KIND = "emr_serverless"
# The most of a job's output its log streams get (all of it stays in its file).
MAX_LOG_BYTES = 1_000_000
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

    @property
    def name(self) -> str:
        return str(self.run.name)


class EmrServerlessPlayer(TrackedJobsPlayer[_Tracked]):
    """Plays the job runs of the EMR Serverless applications in moto; its jobs' ids are
    ``<application id>/<run id>``. Its lock also guards the played runs' state."""

    kind = KIND
    title = "the EMR Serverless player"

    # --- installing ---------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.emrserverless.models import EMRServerlessBackend

        self._attach(context, runner)
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

        self._patches.replace(EMRServerlessBackend, "start_job_run", start_job_run)
        self._patches.replace(EMRServerlessBackend, "cancel_job_run", cancel_job_run)

    # --- moto's request threads: record only ----------------------------------------------

    def _record_start(self, run: Any) -> None:
        if token_from_name(run.name) is None:
            return
        # Before StartJobRun answers: no GetJobRun may see moto's instant SUCCESS. moto
        # also dates runs at midnight; AWS dates them when they are created.
        now = naive_utc(None)
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
                run.updated_at = naive_utc(None)
                run.state = "CANCELLING"
                self._stops.append((job_id, "CancelJobRun"))
            return True

    # --- the player's thread ------------------------------------------------------------

    def _start(self, tracked: _Tracked, plan: LocalPlan) -> int:
        run = tracked.run
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
                run.started_at = naive_utc(None)  # GetJobRun's startedAt (moto has none)
                _write_state(run, "RUNNING")
        self._put(tracked)
        self._say(f"{run.name} ({tracked.job_id}) {run.state}")
        if not cancelled:
            self._run(tracked.job_id, plan)
        return 1

    def _let_go(self, tracked: _Tracked) -> None:
        """No try has this run's token: it ends as moto ends any run."""
        with self._lock:
            self._tracked.pop(tracked.job_id, None)
            run = tracked.run
            _write_state(run, "CANCELLED" if run.state == "CANCELLING" else "SUCCESS")

    def _finish(self, tracked: _Tracked, plan: LocalPlan, exit: JobExit) -> None:
        text = output_text(exit, max_bytes=MAX_LOG_BYTES, tell_stop=True)
        written = [
            f"{joblogs.LOCAL_LOG_GROUP} {write_local_log(self.context, plan, text)}",
            *self._write_logs(tracked, text),
        ]
        run = tracked.run
        with self._lock:
            if run.state in _UNFINISHED:
                tracked.previous_state = str(run.state)
                _close(run, exit)
            self._tracked.pop(tracked.job_id, None)
        self._put(tracked, at=exit.ended_at)
        self._say(_summary(tracked, exit, written))

    def _write_logs(self, tracked: _Tracked, text: str) -> list[str]:
        """The run's output where its monitoring configuration sends the driver's stdout."""
        run = tracked.run
        monitoring = (run.configuration_overrides or {}).get("monitoringConfiguration") or {}
        path = f"applications/{run.application_id}/jobs/{run.id}/SPARK_DRIVER/stdout"
        written: list[str] = []
        cloudwatch = monitoring.get("cloudWatchLoggingConfiguration") or {}
        if cloudwatch.get("enabled"):
            group = str(cloudwatch.get("logGroupName") or DEFAULT_LOG_GROUP)
            prefix = str(cloudwatch.get("logStreamNamePrefix") or "").strip("/")
            stream = f"{prefix}/{path}" if prefix else path
            self.context.write_log(group, stream, text)
            written.append(f"{group} {stream}")
        log_uri = str((monitoring.get("s3MonitoringConfiguration") or {}).get("logUri") or "")
        if log_uri.startswith("s3://"):
            uri = f"{log_uri.rstrip('/')}/{path}.gz"
            body = gzip.compress(text.encode("utf-8"))
            if self._put_log_object(uri, body, "the run's log"):
                written.append(uri)
        return written

    def _put(self, tracked: _Tracked, at: datetime | None = None) -> None:
        context = self.context
        context.put_event(
            SOURCE,
            DETAIL_TYPE,
            event_detail(tracked.run, tracked.previous_state, context.account_id),
            resources=[],
            time=at,
        )

    # --- stand-in resources -------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        """The application ``application_id`` names, STARTED, with exactly that id."""
        from moto.emrserverless.models import emrserverless_backends

        context = self.context
        application_id = rendered(target.get("application_id"))
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
    run.updated_at = naive_utc(at)
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
    run.ended_at = naive_utc(exit.ended_at)  # GetJobRun's endedAt (moto has none)
    _write_state(run, state, exit.ended_at)


def state_details(exit: JobExit) -> str:
    """A failed run's stateDetails: the exit code and the output's last line."""
    return f"Job failed: {exit_reason(exit)}"[:_MAX_STATE_DETAILS]


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


def _iso(moment: datetime) -> str:
    """``2026-11-22T00:01:42.299487Z``, as the events give times."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
