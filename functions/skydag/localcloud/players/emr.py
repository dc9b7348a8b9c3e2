"""Amazon EMR on EC2, played: each skydag step runs its try's ``local:`` block.

moto keeps steps PENDING or RUNNING for ever and has no CancelSteps. The player records
the steps AddJobFlowSteps added and the cancels on moto's request threads (CancelSteps is
implemented here, with AWS's answer), and on its own thread moves each step through
RUNNING to COMPLETED, FAILED (with FailureDetails) or CANCELLED in moto, so that
DescribeStep and the reconciler agree with the "EMR Step Status Change" events it puts.
The step's output goes where EMR keeps it when the cluster has a LogUri
(``<LogUri>/<cluster>/steps/<step>/stdout.gz``) and to the local cloud's own stream.
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
from skydag.targets.aws.emr import ACTIVE_CLUSTER_STATES, DETAIL_TYPE, SOURCE
from skydag.targets.base import token_from_name

KIND = "emr"
# The most of a job's output its log streams get (all of it stays in its file).
MAX_LOG_BYTES = 1_000_000
# How long a step named like skydag's waits for its try to be found; then it is left to
# moto, as any other step.
PLAN_GRACE_SECONDS = 2.0
# The clusters ensure_resources creates log their steps here, as EMR does with a LogUri.
STAND_IN_LOG_URI = "s3://skydag-local-emr-logs/"
STAND_IN_RELEASE = "emr-7.5.0"
# Where played steps keep their FailureDetails on moto's Step (moto has no such field).
_FAILURE_ATTRIBUTE = "skydag_failure_details"
_UNFINISHED = frozenset({"PENDING", "RUNNING", "CANCEL_PENDING"})
_SEVERITY = {"RUNNING": "INFO", "COMPLETED": "INFO", "FAILED": "ERROR", "CANCELLED": "WARN"}
_ABSENT = object()


@dataclass
class _Tracked:
    """A step with a skydag-style name, from AddJobFlowSteps to its last event."""

    cluster: Any  # moto's Cluster
    step: Any  # moto's Step
    seen_at: float
    plan: LocalPlan | None = None

    @property
    def job_id(self) -> str:
        return f"{self.cluster.id}/{self.step.id}"


class EmrPlayer:
    """Plays the steps of the EMR clusters in moto."""

    kind = KIND

    def __init__(self) -> None:
        self._context: PlayerContext | None = None
        self._runner: JobRunner | None = None
        self._originals: list[tuple[type, str, Any]] = []
        # Guards everything below and the played steps' state: moto's request threads
        # record, poll() consumes.
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._stops: list[tuple[str, str]] = []
        self._exits: list[tuple[str, JobExit]] = []
        self._buckets: set[str] = set()

    # --- installing ---------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.core.responses import ActionResult
        from moto.emr.models import ElasticMapReduceBackend, Step
        from moto.emr.responses import ElasticMapReduceResponse

        if self._originals:
            raise RuntimeError("the EMR player is installed already")
        self._context = context
        self._runner = runner
        add_original = ElasticMapReduceBackend.add_job_flow_steps
        status_original: Any = Step.__dict__["status"]  # a property
        player = self

        def add_job_flow_steps(backend: Any, job_flow_id: str, steps: Any) -> Any:
            added = add_original(backend, job_flow_id, steps)
            player._record_steps(backend.clusters[job_flow_id], added)
            return added

        def cancel_steps(
            backend: Any,
            cluster_id: str,
            step_ids: list[str],
            step_cancellation_option: str | None = None,
        ) -> list[dict[str, str]]:
            cluster = backend.describe_cluster(cluster_id)
            option = step_cancellation_option or "SEND_INTERRUPT"
            return player._cancel(cluster, step_ids, option)

        def cancel_steps_response(response: Any) -> Any:
            infos = response.backend.cancel_steps(
                response._get_param("ClusterId"),
                list(response._get_param("StepIds", [])),
                response._get_param("StepCancellationOption"),
            )
            return ActionResult({"CancelStepsInfoList": infos})

        def status(step: Any) -> dict[str, Any]:
            value: dict[str, Any] = status_original.fget(step)
            failure = getattr(step, _FAILURE_ATTRIBUTE, None)
            if failure:
                value["FailureDetails"] = failure
            return value

        self._patch(ElasticMapReduceBackend, "add_job_flow_steps", add_job_flow_steps)
        self._patch(ElasticMapReduceBackend, "cancel_steps", cancel_steps)
        self._patch(ElasticMapReduceResponse, "cancel_steps", cancel_steps_response)
        self._patch(Step, "status", property(status))

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._originals):
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._originals.clear()
        with self._lock:
            self._tracked.clear()
            self._stops.clear()
            self._exits.clear()

    def _patch(self, owner: type, name: str, replacement: Any) -> None:
        self._originals.append((owner, name, owner.__dict__.get(name, _ABSENT)))
        setattr(owner, name, replacement)

    # --- moto's request threads: record only ----------------------------------------------

    def _record_steps(self, cluster: Any, steps: list[Any]) -> None:
        now = time.monotonic()
        with self._lock:
            for step in steps:
                if token_from_name(step.name) is not None:
                    tracked = _Tracked(cluster, step, now)
                    self._tracked[tracked.job_id] = tracked

    def _cancel(self, cluster: Any, step_ids: list[str], option: str) -> list[dict[str, str]]:
        """CancelSteps as AWS answers it: SUBMITTED for each step it will cancel, FAILED
        (with a reason) for the others. Played steps wait in CANCEL_PENDING for their job
        to stop; any other step is cancelled at once (nothing runs it)."""
        steps = {step.id: step for step in cluster.steps}
        infos: list[dict[str, str]] = []
        with self._lock:
            for step_id in step_ids:
                step = steps.get(step_id)
                if step is None:
                    reason = f"Step {step_id} does not exist in cluster {cluster.id}."
                    infos.append({"StepId": step_id, "Status": "FAILED", "Reason": reason})
                    continue
                if step.state not in _UNFINISHED:
                    reason = f"Step {step_id} is in state {step.state} and cannot be cancelled."
                    infos.append({"StepId": step_id, "Status": "FAILED", "Reason": reason})
                    continue
                job_id = f"{cluster.id}/{step_id}"
                if job_id in self._tracked:
                    if step.state != "CANCEL_PENDING":
                        step.state = "CANCEL_PENDING"
                        self._stops.append((job_id, f"CancelSteps ({option})"))
                else:
                    step.end_date_time = _naive_utc(None)
                    step.state = "CANCELLED"
                infos.append({"StepId": step_id, "Status": "SUBMITTED"})
        return infos

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
        step = tracked.step
        plan = context.plan_for(KIND, str(token_from_name(step.name)))
        if plan is None:
            if time.monotonic() - tracked.seen_at > PLAN_GRACE_SECONDS:
                with self._lock:
                    self._tracked.pop(tracked.job_id, None)
            return 0
        with self._lock:
            tracked.plan = plan
            cancelled = step.state == "CANCEL_PENDING"
            if cancelled:
                # Cancelled before the player got to it: nothing runs, only the end is told.
                step.end_date_time = _naive_utc(None)
                step.state = "CANCELLED"
                self._tracked.pop(tracked.job_id, None)
            else:
                # EMR runs steps concurrently up to the cluster's level; the local cloud
                # runs each at once (moto would leave all but the first PENDING).
                step.start_date_time = _naive_utc(None)
                step.state = "RUNNING"
                tracked.cluster.state = "RUNNING"
        self._put(context, tracked)
        context.say(KIND, f"{step.name} on {tracked.cluster.id} {step.state}")
        if not cancelled:
            job_id = tracked.job_id
            runner.start(_runner_key(job_id), plan, lambda exit: self._exited(job_id, exit))
        return 1

    def _finish(self, context: PlayerContext, job_id: str, exit: JobExit) -> None:
        with self._lock:
            tracked = self._tracked.get(job_id)
        if tracked is None or tracked.plan is None:
            return
        stream = _write_local_log(context, tracked.plan, exit)
        log_file = self._write_step_log(context, tracked, exit)
        step = tracked.step
        with self._lock:
            if step.state in _UNFINISHED:
                _close(step, exit, log_file)
            self._tracked.pop(job_id, None)
            cluster = tracked.cluster
            if cluster.state == "RUNNING" and not any(
                other.state in _UNFINISHED for other in cluster.steps
            ):
                cluster.state = "WAITING"
        self._put(context, tracked, at=exit.ended_at, log_file=log_file, exit=exit)
        context.say(KIND, _summary(tracked, exit, log_file or stream))

    def _write_step_log(self, context: PlayerContext, tracked: _Tracked, exit: JobExit) -> str:
        """The step's output where EMR keeps it (the cluster's LogUri), or '' without one."""
        log_uri = tracked.cluster.log_uri
        if not log_uri or "://" not in str(log_uri):
            return ""
        bucket, _, prefix = str(log_uri).partition("://")[2].partition("/")
        parts = (prefix.strip("/"), tracked.cluster.id, "steps", tracked.step.id, "stdout.gz")
        key = "/".join(part for part in parts if part)
        s3 = _client(context, "s3")
        try:
            if bucket not in self._buckets:
                with contextlib.suppress(
                    s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
                ):
                    s3.create_bucket(Bucket=bucket)
                self._buckets.add(bucket)
            s3.put_object(
                Bucket=bucket, Key=key, Body=gzip.compress(log_text(exit).encode("utf-8"))
            )
        except (ClientError, BotoCoreError) as error:
            context.say(KIND, f"cannot write the step's log to s3://{bucket}/{key}: {error}")
            return ""
        return f"s3://{bucket}/{key}"

    def _put(
        self,
        context: PlayerContext,
        tracked: _Tracked,
        *,
        at: datetime | None = None,
        log_file: str = "",
        exit: JobExit | None = None,
    ) -> None:
        context.put_event(
            SOURCE,
            DETAIL_TYPE,
            event_detail(tracked.cluster, tracked.step, exit, log_file),
            resources=[],
            time=at,
        )

    def _attached(self) -> tuple[PlayerContext, JobRunner]:
        if self._context is None or self._runner is None:
            raise RuntimeError("the EMR player is not installed")
        return self._context, self._runner

    # --- stand-in resources -------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        """The cluster ``cluster_id`` or ``cluster_name`` names, WAITING for steps."""
        context, _ = self._attached()
        cluster_id = _concrete(target.get("cluster_id"))
        cluster_name = _concrete(target.get("cluster_name"))
        if cluster_id is not None:
            return self._ensure_cluster_id(context, cluster_id, cluster_name)
        if cluster_name is not None:
            return self._ensure_cluster_name(context, cluster_name)
        return []

    def _ensure_cluster_name(self, context: PlayerContext, name: str) -> list[str]:
        emr = _client(context, "emr")
        for page in emr.get_paginator("list_clusters").paginate(
            ClusterStates=list(ACTIVE_CLUSTER_STATES)
        ):
            if any(cluster.get("Name") == name for cluster in page.get("Clusters", [])):
                return []
        created = emr.run_job_flow(
            Name=name,
            LogUri=STAND_IN_LOG_URI,
            ReleaseLabel=STAND_IN_RELEASE,
            Instances={
                "MasterInstanceType": "m5.xlarge",
                "InstanceCount": 1,
                "KeepJobFlowAliveWhenNoSteps": True,
            },
            JobFlowRole="EMR_EC2_DefaultRole",
            ServiceRole="EMR_DefaultRole",
            VisibleToAllUsers=True,
        )
        return [f"emr cluster {name} ({created['JobFlowId']}), WAITING for steps"]

    def _ensure_cluster_id(
        self, context: PlayerContext, cluster_id: str, name: str | None
    ) -> list[str]:
        from moto.emr.models import emr_backends

        backend = emr_backends[context.account_id][context.region]
        if cluster_id in backend.clusters:
            return []
        # RunJobFlow cannot choose the id: the cluster is made in the backend, as
        # RunJobFlow would make it, with the id the DAG names.
        backend.run_job_flow(
            name=name or f"skydag-local-{cluster_id}",
            log_uri=STAND_IN_LOG_URI,
            job_flow_role="EMR_EC2_DefaultRole",
            service_role="EMR_DefaultRole",
            steps=[],
            visible_to_all_users=True,
            release_label=STAND_IN_RELEASE,
            cluster_id=cluster_id,
            instance_attrs={
                "master_instance_type": "m5.xlarge",
                "instance_count": 1,
                "keep_job_flow_alive_when_no_steps": True,
                "ec2_subnet_id": None,
                "emr_managed_master_security_group": None,
                "emr_managed_slave_security_group": None,
                "service_access_security_group": None,
            },
        )
        return [f"emr cluster {cluster_id}, WAITING for steps"]


# --- moto's step ----------------------------------------------------------------------------


def _close(step: Any, exit: JobExit, log_file: str) -> None:
    """Write the job's outcome into the step; the state goes last, so a concurrent
    DescribeStep sees either the running step or the whole outcome."""
    if step.state == "CANCEL_PENDING" or exit.stopped is not None:
        state = "CANCELLED"
    elif exit.exit_code == 0:
        state = "COMPLETED"
    else:
        state = "FAILED"
        failure = {"Reason": "Step failed", "Message": failure_message(exit)}
        if log_file:
            failure["LogFile"] = log_file
        setattr(step, _FAILURE_ATTRIBUTE, failure)
    step.end_date_time = _naive_utc(exit.ended_at)
    step.state = state


def failure_message(exit: JobExit) -> str:
    """A failed step's FailureDetails message: the exit code and the output's last line."""
    tail = output_tail(exit.log_path)
    message = f"The local job exited with code {exit.exit_code}"
    return f"{message}: {tail}" if tail else message


def event_detail(
    cluster: Any, step: Any, exit: JobExit | None = None, log_file: str = ""
) -> dict[str, Any]:
    """The detail of an "EMR Step Status Change" event, as AWS gives it."""
    state = str(step.state)
    return {
        "severity": _SEVERITY.get(state, "INFO"),
        "actionOnFailure": step.action_on_failure,
        "stepId": step.id,
        "name": step.name,
        "clusterId": cluster.id,
        "state": state,
        "message": _message(cluster, step, exit, log_file),
    }


def _message(cluster: Any, step: Any, exit: JobExit | None, log_file: str) -> str:
    """The event's message, worded as EMR words it (a failure adds the exit code and the
    output's last line: the message is the try's reason)."""
    which = f"Step {step.id} ({step.name}) in Amazon EMR cluster {cluster.id} ({cluster.name})"
    state = str(step.state)
    if state == "RUNNING":
        return f"{which} started running at {_minute(step.start_date_time)}."
    ended = _minute(step.end_date_time)
    if state == "COMPLETED":
        took = _took(step.start_date_time, step.end_date_time)
        return (
            f"{which} completed execution at {ended}. The step started running at "
            f"{_minute(step.start_date_time)} and took {took} to complete."
        )
    if state == "CANCELLED":
        return f"{which} was cancelled at {ended}."
    why = f" {failure_message(exit)}." if exit is not None else ""
    where = f" ({log_file})" if log_file else ""
    return f"{which} failed at {ended}.{why} Check the step's logs for more information{where}."


def _summary(tracked: _Tracked, exit: JobExit, log: str) -> str:
    step = tracked.step
    state = str(step.state)
    head = f"{step.name} on {tracked.cluster.id} {state}"
    if state == "COMPLETED":
        return head
    if state == "CANCELLED":
        return f"{head} (exit code {exit.exit_code}, log: {exit.log_path or log})"
    return f"{head}: {failure_message(exit)} (exit code {exit.exit_code}, log: {log})"


def _minute(moment: datetime | None) -> str:
    aware = _aware(moment)
    return aware.strftime("%Y-%m-%d %H:%M UTC")


def _took(start: datetime | None, end: datetime | None) -> str:
    seconds = max(0, int((_aware(end) - _aware(start)).total_seconds()))
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{seconds // 60} minutes"


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


def _aware(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _naive_utc(moment: datetime | None) -> datetime:
    """moto keeps naive UTC datetimes."""
    return _aware(moment).astimezone(UTC).replace(tzinfo=None)
