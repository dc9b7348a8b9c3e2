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
from skydag.targets.aws.emr import ACTIVE_CLUSTER_STATES, DETAIL_TYPE, SOURCE
from skydag.targets.base import token_from_name

KIND = "emr"
# The most of a job's output its log streams get (all of it stays in its file).
MAX_LOG_BYTES = 1_000_000
# The clusters ensure_resources creates log their steps here, as EMR does with a LogUri.
STAND_IN_LOG_URI = "s3://skydag-local-emr-logs/"
STAND_IN_RELEASE = "emr-7.5.0"
# Where played steps keep their FailureDetails on moto's Step (moto has no such field).
_FAILURE_ATTRIBUTE = "skydag_failure_details"
_UNFINISHED = frozenset({"PENDING", "RUNNING", "CANCEL_PENDING"})
_SEVERITY = {"RUNNING": "INFO", "COMPLETED": "INFO", "FAILED": "ERROR", "CANCELLED": "WARN"}


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

    @property
    def name(self) -> str:
        return str(self.step.name)


class EmrPlayer(TrackedJobsPlayer[_Tracked]):
    """Plays the steps of the EMR clusters in moto; its jobs' ids are
    ``<cluster id>/<step id>``. Its lock also guards the played steps' state."""

    kind = KIND
    title = "the EMR player"

    # --- installing ---------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.core.responses import ActionResult
        from moto.emr.models import ElasticMapReduceBackend, Step
        from moto.emr.responses import ElasticMapReduceResponse

        self._attach(context, runner)
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

        self._patches.replace(ElasticMapReduceBackend, "add_job_flow_steps", add_job_flow_steps)
        self._patches.replace(ElasticMapReduceBackend, "cancel_steps", cancel_steps)
        self._patches.replace(ElasticMapReduceResponse, "cancel_steps", cancel_steps_response)
        self._patches.replace(Step, "status", property(status))

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
                    step.end_date_time = naive_utc(None)
                    step.state = "CANCELLED"
                infos.append({"StepId": step_id, "Status": "SUBMITTED"})
        return infos

    # --- the player's thread ------------------------------------------------------------

    def _start(self, tracked: _Tracked, plan: LocalPlan) -> int:
        step = tracked.step
        with self._lock:
            tracked.plan = plan
            cancelled = step.state == "CANCEL_PENDING"
            if cancelled:
                # Cancelled before the player got to it: nothing runs, only the end is told.
                step.end_date_time = naive_utc(None)
                step.state = "CANCELLED"
                self._tracked.pop(tracked.job_id, None)
            else:
                # EMR runs steps concurrently up to the cluster's level; the local cloud
                # runs each at once (moto would leave all but the first PENDING).
                step.start_date_time = naive_utc(None)
                step.state = "RUNNING"
                tracked.cluster.state = "RUNNING"
        self._put(tracked)
        self._say(f"{step.name} on {tracked.cluster.id} {step.state}")
        if not cancelled:
            self._run(tracked.job_id, plan)
        return 1

    def _finish(self, tracked: _Tracked, plan: LocalPlan, exit: JobExit) -> None:
        text = output_text(exit, max_bytes=MAX_LOG_BYTES, tell_stop=True)
        stream = f"{joblogs.LOCAL_LOG_GROUP} {write_local_log(self.context, plan, text)}"
        log_file = self._write_step_log(tracked, text)
        step = tracked.step
        with self._lock:
            if step.state in _UNFINISHED:
                _close(step, exit, log_file)
            self._tracked.pop(tracked.job_id, None)
            cluster = tracked.cluster
            if cluster.state == "RUNNING" and not any(
                other.state in _UNFINISHED for other in cluster.steps
            ):
                cluster.state = "WAITING"
        self._put(tracked, at=exit.ended_at, log_file=log_file, exit=exit)
        self._say(_summary(tracked, exit, log_file or stream))

    def _write_step_log(self, tracked: _Tracked, text: str) -> str:
        """The step's output where EMR keeps it (the cluster's LogUri), or '' without one."""
        log_uri = tracked.cluster.log_uri
        if not log_uri or "://" not in str(log_uri):
            return ""
        bucket, _, prefix = str(log_uri).partition("://")[2].partition("/")
        parts = (prefix.strip("/"), tracked.cluster.id, "steps", tracked.step.id, "stdout.gz")
        uri = f"s3://{bucket}/" + "/".join(part for part in parts if part)
        body = gzip.compress(text.encode("utf-8"))
        if not self._put_log_object(uri, body, "the step's log"):
            return ""
        return uri

    def _put(
        self,
        tracked: _Tracked,
        *,
        at: datetime | None = None,
        log_file: str = "",
        exit: JobExit | None = None,
    ) -> None:
        self.context.put_event(
            SOURCE,
            DETAIL_TYPE,
            event_detail(tracked.cluster, tracked.step, exit, log_file),
            resources=[],
            time=at,
        )

    # --- stand-in resources -------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        """The cluster ``cluster_id`` or ``cluster_name`` names, WAITING for steps."""
        cluster_id = rendered(target.get("cluster_id"))
        cluster_name = rendered(target.get("cluster_name"))
        if cluster_id is not None:
            return self._ensure_cluster_id(self.context, cluster_id, cluster_name)
        if cluster_name is not None:
            return self._ensure_cluster_name(cluster_name)
        return []

    def _ensure_cluster_name(self, name: str) -> list[str]:
        emr = self._client("emr")
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
    step.end_date_time = naive_utc(exit.ended_at)
    step.state = state


def failure_message(exit: JobExit) -> str:
    """A failed step's FailureDetails message: the exit code and the output's last line."""
    return exit_reason(exit, "The local job")


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


def _aware(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
