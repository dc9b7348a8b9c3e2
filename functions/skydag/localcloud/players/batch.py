"""AWS Batch, played: skydag's Batch jobs run locally and emit their state-change events.

moto without Docker (``BatchSimpleBackend``) marks every submitted job SUCCEEDED inside
SubmitJob; with Docker, each job's thread runs a container. The player holds jobs whose
name ends in a dispatch token instead (the hook on moto's "finish at once" and on the
job's ``run``), and on ``poll()`` plays the ones that belong to a try: RUNNING in moto
with a ``startedAt`` and a "Batch Job State Change" event, the try's ``local:`` block
through the runner, then SUCCEEDED or FAILED (exit code, reason, attempts, log stream)
and the terminal event. TerminateJob (and CancelJob before the job started) stops it.
A held job no try claims is handed back to moto's own behaviour.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skydag import joblogs
from skydag.localcloud.players._common import (
    MAX_STAND_IN_REVISION,
    STAND_IN_IMAGE,
    HeldJobsPlayer,
    Stop,
    ensure_role,
    numbers,
    output_text,
    rendered,
    split_revision,
    write_local_log,
)
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.localcloud.players.runner import output_tail
from skydag.targets.aws._common import task_key_in
from skydag.targets.aws.batch import DETAIL_TYPE, SOURCE
from skydag.targets.base import token_from_name

KIND = "batch"
# What AWS Batch says of a job whose container ran to an exit, successful or not.
CONTAINER_EXITED = "Essential container in task exited"
STAND_IN_COMPUTE_ENVIRONMENT = "skydag-local"
STAND_IN_SERVICE_ROLE = "skydag-local-batch-service"

# The attribute on a played moto Job holding what the player adds to DescribeJobs.
_EXTRA = "_skydag_detail"
# Statuses in which TerminateJob, and CancelJob, no longer do anything.
_FINISHED = frozenset({"SUCCEEDED", "FAILED"})
_STARTED = frozenset({"STARTING", "RUNNING", *_FINISHED})


@dataclass
class _Held:
    """A job with a token in its name, kept from moto's own lifecycle until ``poll()``."""

    job: Any
    # moto's own way to run or finish it: for a job that is not a try's.
    release: Callable[[], None]
    held_at: float = field(default_factory=time.monotonic)

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def token(self) -> str | None:
        return token_from_name(self.job.job_name)

    @property
    def task_key(self) -> tuple[str, str, str] | None:
        return task_key_in((self.job.container_overrides or {}).get("environment"))


@dataclass
class _Stop(Stop):
    # CancelJob (before the job started) rather than TerminateJob.
    cancelled: bool = False


@dataclass
class _Played:
    """A job the player plays: the try's plan and what AWS would have given the job."""

    job: Any
    plan: LocalPlan
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    stop: _Stop | None = None

    @property
    def log_stream(self) -> str:
        return f"{self.job.job_definition.name}/default/{self.task_id}"

    def cluster(self) -> str:
        """The ECS cluster of the job's compute environment (moto makes one for it)."""
        environments = getattr(self.job.job_queue, "environments", None) or []
        cluster = getattr(environments[0], "ecs_name", "") if environments else ""
        return cluster or f"AWSBatch-{self.job.job_queue.name}"

    def ecs_arn(self, resource: str) -> str:
        backend = self.job.backend
        return (
            f"arn:aws:ecs:{backend.region_name}:{backend.account_id}:{resource}/"
            f"{self.cluster()}/{self.task_id}"
        )


class BatchPlayer(HeldJobsPlayer[_Held, _Stop, _Played]):
    """Plays AWS Batch for the local cloud (see the module docstring)."""

    kind = KIND
    title = "the Batch player"

    def __init__(self, *, claim_grace: float | None = None) -> None:
        super().__init__(claim_grace=claim_grace)
        # Filled on moto's request threads. _mine: the jobs the player holds or played (not
        # those it handed back to moto).
        self._mine: set[str] = set()
        self._children: dict[str, list[_Held]] = {}

    # --- install ----------------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.batch.models import BatchBackend, Job
        from moto.batch_simple.models import BatchSimpleBackend

        self._attach(context, runner)
        mark_finished = BatchSimpleBackend._mark_job_as_finished
        run = Job.run
        describe = Job.describe
        terminate = BatchBackend.terminate_job
        cancel = BatchBackend.cancel_job

        def mark_job_as_finished(backend: Any, include_start_attempt: bool, job: Any) -> None:
            if token_from_name(job.job_name) is None:
                mark_finished(backend, include_start_attempt, job)
                return
            # Listed and described as moto's own mark does, but left SUBMITTED.
            backend.backend._jobs[job.job_id] = job
            self._hold_job(job, lambda: mark_finished(backend, include_start_attempt, job))

        def run_job(job: Any) -> None:
            # With Docker: the job's thread. An array's children run as moto runs them.
            if token_from_name(job.job_name) is None or _is_array_child(job):
                run(job)
                return
            self._hold_job(
                job, lambda: threading.Thread(target=run, args=(job,), daemon=True).start()
            )

        def describe_job(job: Any) -> dict[str, Any]:
            result: dict[str, Any] = describe(job)
            extra = getattr(job, _EXTRA, None)
            if extra:
                _merge(result, extra)
            return result

        self._patches.replace(BatchSimpleBackend, "_mark_job_as_finished", mark_job_as_finished)
        self._patches.replace(Job, "run", run_job)
        self._patches.replace(Job, "describe", describe_job)
        self._patches.replace(
            BatchBackend, "terminate_job", self._stopping(terminate, cancelled=False)
        )
        self._patches.replace(BatchBackend, "cancel_job", self._stopping(cancel, cancelled=True))

    def _stopping(self, stop_job: Callable[..., None], *, cancelled: bool) -> Callable[..., None]:
        """TerminateJob or CancelJob: for a job the player holds, a stop to play."""
        # As on AWS: TerminateJob changes nothing on a finished job, CancelJob nothing on a
        # job that has started.
        unchanged = _STARTED if cancelled else _FINISHED

        def stop_job_for_tries(backend: Any, job_id: str, reason: str) -> None:
            job = backend.get_job_by_id(job_id) if job_id and reason else None
            if job is None or not self._holds(job.job_id):
                stop_job(backend, job_id, reason)
            elif job.status not in unchanged:
                self._request_stop(_Stop(job.job_id, reason, backend, cancelled=cancelled))

        return stop_job_for_tries

    # --- on moto's request threads: record only -----------------------------------------

    def _hold_job(self, job: Any, release: Callable[[], None]) -> None:
        held = _Held(job, release)
        with self._lock:
            self._mine.add(job.job_id)
            if _is_array_child(job):
                # Children are submitted before their parent; they end with it.
                self._children.setdefault(job.job_id.split(":")[0], []).append(held)
            else:
                self._pending.append(held)

    def _holds(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._mine

    # --- poll ---------------------------------------------------------------------------

    def _play(self, held: _Held, plan: LocalPlan, stop: _Stop | None) -> int:
        job = held.job
        played = _Played(job, plan)
        if stop is not None:
            # Stopped before it started: it never runs, as on AWS.
            played.stop = stop
            self._end(played, None)
            return 1
        now = datetime.now(UTC)
        job.log_stream_name = played.log_stream
        job.job_started_at = now
        setattr(job, _EXTRA, _running_extra(played))
        job.status = "RUNNING"
        self._played[job.job_id] = played
        self._put(played, now)
        self._say(
            f"{job.job_name} RUNNING (job {job.job_id}; log {joblogs.BATCH_LOG_GROUP} "
            f"{played.log_stream})"
        )
        self._run(job.job_id, plan)
        return 1

    def _release(self, held: _Held) -> None:
        """Not a try's job: moto runs it (or finishes it) as it would have."""
        job_id = held.job.job_id
        with self._lock:
            children = self._children.pop(job_id, [])
            self._mine.difference_update({job_id, *(c.job.job_id for c in children)})
        for child in children:
            threading.Thread(target=child.release, daemon=True).start()
        # moto may sleep there (MOTO_SIMPLE_BATCH_FAIL_AFTER): not on the poll thread.
        threading.Thread(target=held.release, daemon=True).start()

    def _stop(self, stop: _Stop) -> int:
        played = self._played.get(stop.job_id)
        if played is None and self._holds(stop.job_id):
            return 0  # it ended meanwhile
        if played is None:
            # Not a try's job (handed back to moto meanwhile): what moto's own call does.
            job = stop.backend.get_job_by_id(stop.job_id)
            if job is not None and not (stop.cancelled and job.status in _STARTED):
                job.terminate(stop.reason)
            return 0
        if stop.cancelled or played.stop is not None:
            return 0  # CancelJob on a started job, or a second terminate: nothing to do
        if not self.runner.stop(self._key(stop.job_id), stop.reason):
            return 0  # it exited on its own meanwhile: that exit stands
        played.stop = stop
        return 1

    # --- the end of a job ---------------------------------------------------------------

    def _end(self, played: _Played, exit_: JobExit | None) -> None:
        """SUCCEEDED or FAILED in moto, the logs, the event; ``exit_`` None: the job was
        stopped before it started."""
        job = played.job
        code = exit_.exit_code if exit_ else None
        ended = (exit_.ended_at if exit_ else None) or datetime.now(UTC)
        stopped = played.stop.reason if played.stop else (exit_.stopped if exit_ else None)
        succeeded = stopped is None and code == 0
        # A failure's last line of output goes into its reason (a stop's reason is its own).
        tail = ""
        if exit_ is not None and stopped is None and not succeeded:
            tail = output_tail(exit_.log_path)
        reason = stopped or CONTAINER_EXITED
        extra: dict[str, Any] = _running_extra(played) if exit_ is not None else {}
        if exit_ is not None:
            container = {"exitCode": code, "reason": tail or None}
            extra["container"].update(container)
            job.attempts = [_attempt(played, exit_, code, tail)]
            job.latest_attempt = job.attempts[0]
            job.exit_code = code
        else:
            extra["startedAt"] = None  # it never started
        if stopped is not None:
            cancelled = played.stop is not None and played.stop.cancelled
            extra["isCancelled" if cancelled else "isTerminated"] = True
        setattr(job, _EXTRA, extra)
        job.job_stopped_reason = reason
        job.job_stopped_at = ended
        job.job_stopped = True
        status = "SUCCEEDED" if succeeded else "FAILED"
        job.status = status
        self._end_children(job, status, ended)
        if exit_ is not None:
            self._write_logs(played, exit_)
        self._put(played, ended)
        self._say(_summary(played, status, reason=reason, code=code, tail=tail, exit_=exit_))

    def _end_children(self, job: Any, status: str, ended: datetime) -> None:
        with self._lock:
            children = self._children.pop(job.job_id, [])
        for child in children:
            child.job.job_started_at = job.job_started_at
            child.job.job_stopped_at = ended
            child.job.job_stopped_reason = job.job_stopped_reason
            child.job.exit_code = job.exit_code
            child.job.job_stopped = True
            child.job.status = status

    def _write_logs(self, played: _Played, exit_: JobExit) -> None:
        text = output_text(exit_)
        write_local_log(self.context, played.plan, text)
        self.context.write_log(joblogs.BATCH_LOG_GROUP, played.log_stream, text)

    def _put(self, played: _Played, at: datetime) -> None:
        job = played.job
        detail = job.describe()
        # Batch's events carry the job's ARN among its tags.
        detail["tags"] = {"resourceArn": job.arn, **(detail.get("tags") or {})}
        self.context.put_event(SOURCE, DETAIL_TYPE, detail, resources=[job.arn], time=at)

    # --- stand-ins ----------------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        created: list[str] = []
        queue = rendered(target.get("job_queue"))
        if queue is not None:
            created += self._ensure_queue(queue)
        definition = rendered(target.get("job_definition"))
        if definition is not None:
            created += self._ensure_definition(definition)
        return created

    def _ensure_queue(self, queue: str) -> list[str]:
        batch = self._client("batch")
        if batch.describe_job_queues(jobQueues=[queue])["jobQueues"]:
            return []
        created: list[str] = []
        environment = self._ensure_compute_environment(created)
        name = queue.rsplit("/", 1)[-1]
        batch.create_job_queue(
            jobQueueName=name,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )
        created.append(f"batch job queue {name} (on compute environment {environment})")
        return created

    def _ensure_compute_environment(self, created: list[str]) -> str:
        batch = self._client("batch")
        found = batch.describe_compute_environments(
            computeEnvironments=[STAND_IN_COMPUTE_ENVIRONMENT]
        )["computeEnvironments"]
        if found:
            return str(found[0]["computeEnvironmentArn"])
        role = ensure_role(
            self.context,
            STAND_IN_SERVICE_ROLE,
            "batch.amazonaws.com",
            "Batch service role",
            created,
        )
        # UNMANAGED: moto starts no EC2 instances for it, and needs no Docker.
        arn = batch.create_compute_environment(
            computeEnvironmentName=STAND_IN_COMPUTE_ENVIRONMENT,
            type="UNMANAGED",
            state="ENABLED",
            serviceRole=role,
        )["computeEnvironmentArn"]
        created.append(f"batch compute environment {STAND_IN_COMPUTE_ENVIRONMENT} (unmanaged)")
        return str(arn)

    def _ensure_definition(self, definition: str) -> list[str]:
        name, revision = split_revision(definition.rsplit("/", 1)[-1])
        wanted = revision or 1
        if wanted > MAX_STAND_IN_REVISION:
            line = (
                f"batch job definition {name}:{wanted} not created: stand-ins register "
                f"revisions up to {MAX_STAND_IN_REVISION} only"
            )
            self._say(line)
            return [line]
        batch = self._client("batch")
        existing = batch.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"]
        latest = max(existing, key=lambda d: int(d["revision"]), default=None)
        have = int(latest["revision"]) if latest else 0
        if have >= wanted:
            return []
        properties = (latest or {}).get("containerProperties") or {
            "image": STAND_IN_IMAGE,
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "2048"},
            ],
        }
        for _ in range(wanted - have):
            batch.register_job_definition(
                jobDefinitionName=name, type="container", containerProperties=properties
            )
        return [f"batch job definition {name} (revision {numbers(have + 1, wanted)})"]


def _is_array_child(job: Any) -> bool:
    return "index" in (job.array_properties or {})


def _running_extra(played: _Played) -> dict[str, Any]:
    """What AWS shows of a started job and moto leaves out (the ECS task behind it, the
    log stream, the image and resources)."""
    job = played.job
    properties = job.job_definition.container_properties or {}
    requirements = properties.get("resourceRequirements") or [
        {"value": str(properties.get("vcpus", 1)), "type": "VCPU"},
        {"value": str(properties.get("memory", 2048)), "type": "MEMORY"},
    ]
    return {
        "retryStrategy": job.job_definition.retry_strategy or {"attempts": 1, "evaluateOnExit": []},
        "propagateTags": bool(job.job_definition.propagate_tags),
        "platformCapabilities": job.job_definition.platform_capabilities or [],
        "container": {
            "image": properties.get("image", STAND_IN_IMAGE),
            "mountPoints": properties.get("mountPoints") or [],
            "ulimits": properties.get("ulimits") or [],
            "networkInterfaces": [],
            "resourceRequirements": requirements,
            "secrets": properties.get("secrets") or [],
            "containerInstanceArn": played.ecs_arn("container-instance"),
            "taskArn": played.ecs_arn("task"),
            "logStreamName": played.log_stream,
        },
    }


def _attempt(played: _Played, exit_: JobExit, code: int | None, tail: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "containerInstanceArn": played.ecs_arn("container-instance"),
        "taskArn": played.ecs_arn("task"),
        "logStreamName": played.log_stream,
        "networkInterfaces": [],
        "exitCode": code,
    }
    if tail:
        container["reason"] = tail
    started = exit_.started_at or played.job.job_started_at
    ended = exit_.ended_at or datetime.now(UTC)
    return {
        "container": container,
        "startedAt": int(started.timestamp() * 1000),
        "stoppedAt": int(ended.timestamp() * 1000),
        "statusReason": CONTAINER_EXITED,
    }


def _merge(result: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """``extra`` over ``result``: nested objects merged, a None value removes the key."""
    for key, value in extra.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), dict):
            _merge(result[key], value)
        else:
            result[key] = value
    container = result.get("container")
    if isinstance(container, dict) and isinstance(container.get("environment"), list):
        # moto appends AWS_BATCH_JOB_ID to the job's overrides on every describe.
        unique = {v.get("name"): v for v in reversed(container["environment"])}
        container["environment"] = list(reversed(unique.values()))


def _summary(
    played: _Played,
    status: str,
    *,
    reason: str,
    code: int | None,
    tail: str,
    exit_: JobExit | None,
) -> str:
    job = played.job
    if status == "SUCCEEDED":
        return f"{job.job_name} SUCCEEDED (job {job.job_id})"
    where = str(exit_.log_path) if exit_ and exit_.log_path else None
    if exit_ is not None:
        where = where or f"{joblogs.BATCH_LOG_GROUP} {played.log_stream}"
    how = "FAILED, terminated" if played.stop or (exit_ and exit_.stopped) else "FAILED"
    parts = [f"{job.job_name} {how} (job {job.job_id}): {reason}"]
    if tail:
        parts.append(tail)
    if code is not None:
        parts.append(f"exit code {code}")
    if where:
        parts.append(f"log {where}")
    return "; ".join(parts)
