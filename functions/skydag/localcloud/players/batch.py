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

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skydag import joblogs
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.localcloud.players.runner import output_tail
from skydag.targets.aws.batch import DETAIL_TYPE, SOURCE
from skydag.targets.base import token_from_name

KIND = "batch"
# What AWS Batch says of a job whose container ran to an exit, successful or not.
CONTAINER_EXITED = "Essential container in task exited"
# ``name:N`` in a target makes the stand-in register revisions 1..N: bounded, since every
# revision is one more job definition in the emulator.
MAX_STAND_IN_REVISION = 100
STAND_IN_IMAGE = "public.ecr.aws/amazonlinux/amazonlinux:latest"
STAND_IN_COMPUTE_ENVIRONMENT = "skydag-local"
STAND_IN_SERVICE_ROLE = "skydag-local-batch-service"
# A job's own log stream holds at most this much of its output (CloudWatch Logs' request
# limit is 1 MB); the local file keeps all of it.
MAX_LOG_BYTES = 256 * 1024

# A job whose token no try claims is handed back to moto after this long: the try's row
# may not be readable yet when the job's first poll comes.
CLAIM_GRACE_SECONDS = 1.0

# The attribute on a played moto Job holding what the player adds to DescribeJobs.
_EXTRA = "_skydag_detail"
# Statuses in which TerminateJob, and CancelJob, no longer do anything.
_FINISHED = frozenset({"SUCCEEDED", "FAILED"})
_STARTED = frozenset({"STARTING", "RUNNING", *_FINISHED})
_ABSENT = object()


@dataclass
class _Held:
    """A job with a token in its name, kept from moto's own lifecycle until ``poll()``."""

    job: Any
    # moto's own way to run or finish it: for a job that is not a try's.
    release: Callable[[], None]
    held_at: float = field(default_factory=time.monotonic)


@dataclass
class _Stop:
    job_id: str
    reason: str
    backend: Any
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


class _Patches:
    """Class attributes replaced on moto, and how to put the originals back."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, Any]] = []

    def replace(self, owner: type, name: str, value: Any) -> None:
        self._saved.append((owner, name, owner.__dict__.get(name, _ABSENT)))
        setattr(owner, name, value)

    def restore(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


class BatchPlayer:
    """Plays AWS Batch for the local cloud (see the module docstring)."""

    kind = KIND

    def __init__(self, *, claim_grace: float = CLAIM_GRACE_SECONDS) -> None:
        self._claim_grace = claim_grace
        self._context: PlayerContext | None = None
        self._runner: Any = None
        self._patches = _Patches()
        self._lock = threading.Lock()
        # Filled on moto's request threads, drained by poll(). _mine: the jobs the player
        # holds or played (not those it handed back to moto).
        self._mine: set[str] = set()
        self._submitted: list[_Held] = []
        self._children: dict[str, list[_Held]] = {}
        self._stops: list[_Stop] = []
        self._exits: list[tuple[str, JobExit]] = []
        # poll()'s own.
        self._played: dict[str, _Played] = {}

    # --- install ----------------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.batch.models import BatchBackend, Job
        from moto.batch_simple.models import BatchSimpleBackend

        self._context, self._runner = context, runner
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
            self._hold(job, lambda: mark_finished(backend, include_start_attempt, job))

        def run_job(job: Any) -> None:
            # With Docker: the job's thread. An array's children run as moto runs them.
            if token_from_name(job.job_name) is None or _is_array_child(job):
                run(job)
                return
            self._hold(job, lambda: threading.Thread(target=run, args=(job,), daemon=True).start())

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

    def uninstall(self) -> None:
        self._patches.restore()

    # --- on moto's request threads: record only -----------------------------------------

    def _hold(self, job: Any, release: Callable[[], None]) -> None:
        held = _Held(job, release)
        with self._lock:
            self._mine.add(job.job_id)
            if _is_array_child(job):
                # Children are submitted before their parent; they end with it.
                self._children.setdefault(job.job_id.split(":")[0], []).append(held)
            else:
                self._submitted.append(held)

    def _holds(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._mine

    def _request_stop(self, stop: _Stop) -> None:
        with self._lock:
            self._stops.append(stop)

    def _on_exit(self, job_id: str) -> Callable[[JobExit], None]:
        def record(exit_: JobExit) -> None:
            with self._lock:
                self._exits.append((job_id, exit_))

        return record

    # --- poll ---------------------------------------------------------------------------

    def poll(self) -> int:
        with self._lock:
            submitted, self._submitted = self._submitted, []
            stops, self._stops = self._stops, []
        stop_for = {stop.job_id: stop for stop in stops}
        done = 0
        for held in submitted:
            done += self._start(held, stop_for.pop(held.job.job_id, None))
        for stop in stop_for.values():
            done += self._stop(stop)
        self._runner.poll()
        with self._lock:
            exits, self._exits = self._exits, []
        for job_id, exit_ in exits:
            played = self._played.pop(job_id, None)
            if played is not None:
                self._end(played, exit_)
                done += 1
        return done

    def _start(self, held: _Held, stop: _Stop | None) -> int:
        context = self._require_context()
        job = held.job
        token = token_from_name(job.job_name)
        plan = context.plan_for(KIND, token) if token else None
        if plan is None and time.monotonic() - held.held_at < self._claim_grace:
            with self._lock:  # asked again on the next poll
                self._submitted.append(held)
                self._stops.extend([stop] if stop else [])
            return 0
        if plan is None:
            self._release(held)
            if stop is not None:
                self._stop(stop)  # moto's own stop, now that the job is moto's
            return 0
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
        context.say(
            KIND,
            f"{job.job_name} RUNNING (job {job.job_id}; log {joblogs.BATCH_LOG_GROUP} "
            f"{played.log_stream})",
        )
        self._runner.start(_key(job.job_id), plan, self._on_exit(job.job_id))
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
        if not self._runner.stop(_key(stop.job_id), stop.reason):
            return 0  # it exited on its own meanwhile: that exit stands
        played.stop = stop
        return 1

    # --- the end of a job ---------------------------------------------------------------

    def _end(self, played: _Played, exit_: JobExit | None) -> None:
        """SUCCEEDED or FAILED in moto, the logs, the event; ``exit_`` None: the job was
        stopped before it started."""
        context = self._require_context()
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
        context.say(
            KIND, _summary(played, status, reason=reason, code=code, tail=tail, exit_=exit_)
        )

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
        context = self._require_context()
        text = _output_text(exit_)
        who = played.plan.identity
        stream = joblogs.local_stream(who.dag_id, who.run_id, who.task_id, who.try_number)
        context.write_log(joblogs.LOCAL_LOG_GROUP, stream, text)
        context.write_log(joblogs.BATCH_LOG_GROUP, played.log_stream, text)

    def _put(self, played: _Played, at: datetime) -> None:
        job = played.job
        detail = job.describe()
        # Batch's events carry the job's ARN among its tags.
        detail["tags"] = {"resourceArn": job.arn, **(detail.get("tags") or {})}
        self._require_context().put_event(SOURCE, DETAIL_TYPE, detail, resources=[job.arn], time=at)

    # --- stand-ins ----------------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        created: list[str] = []
        queue = _plain(target.get("job_queue"))
        if queue is not None:
            created += self._ensure_queue(queue)
        definition = _plain(target.get("job_definition"))
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
        role = self._ensure_service_role(created)
        # UNMANAGED: moto starts no EC2 instances for it, and needs no Docker.
        arn = batch.create_compute_environment(
            computeEnvironmentName=STAND_IN_COMPUTE_ENVIRONMENT,
            type="UNMANAGED",
            state="ENABLED",
            serviceRole=role,
        )["computeEnvironmentArn"]
        created.append(f"batch compute environment {STAND_IN_COMPUTE_ENVIRONMENT} (unmanaged)")
        return str(arn)

    def _ensure_service_role(self, created: list[str]) -> str:
        iam = self._client("iam")
        with contextlib.suppress(iam.exceptions.NoSuchEntityException):
            return str(iam.get_role(RoleName=STAND_IN_SERVICE_ROLE)["Role"]["Arn"])
        trust = (
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":'
            '{"Service":"batch.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
        )
        role = iam.create_role(RoleName=STAND_IN_SERVICE_ROLE, AssumeRolePolicyDocument=trust)
        created.append(f"iam role {STAND_IN_SERVICE_ROLE} (Batch service role)")
        return str(role["Role"]["Arn"])

    def _ensure_definition(self, definition: str) -> list[str]:
        name, revision = _name_and_revision(definition.rsplit("/", 1)[-1])
        wanted = revision or 1
        if wanted > MAX_STAND_IN_REVISION:
            line = (
                f"batch job definition {name}:{wanted} not created: stand-ins register "
                f"revisions up to {MAX_STAND_IN_REVISION} only"
            )
            self._require_context().say(KIND, line)
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
        revisions = f"{have + 1}" if wanted == have + 1 else f"{have + 1}-{wanted}"
        return [f"batch job definition {name} (revision {revisions})"]

    # --- helpers ------------------------------------------------------------------------

    def _require_context(self) -> PlayerContext:
        if self._context is None:
            raise RuntimeError("the Batch player is not installed")
        return self._context

    def _client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        context = self._require_context()
        return boto3.client(
            service,
            region_name=context.region,
            endpoint_url=context.endpoint_url,
            config=Config(account_id_endpoint_mode="disabled"),
        )


def _key(job_id: str) -> str:
    """The job's key in the runner every player shares."""
    return f"{KIND}:{job_id}"


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


def _name_and_revision(value: str) -> tuple[str, int | None]:
    name, _, revision = value.partition(":")
    return name, int(revision) if revision.isdigit() else None


def _plain(value: Any) -> str | None:
    """A target value the stand-ins can use: set and fully rendered."""
    if value is None or value == "":
        return None
    text = str(value)
    return None if "{{" in text else text


def _output_text(exit_: JobExit) -> str:
    """The job's captured output for its log streams (a stand-in's: one line saying so)."""
    if exit_.log_path is None or not Path(exit_.log_path).exists():
        seconds = 0.0
        if exit_.started_at and exit_.ended_at:
            seconds = (exit_.ended_at - exit_.started_at).total_seconds()
        return f"stand-in: exited {exit_.exit_code} after {seconds:.1f} s"
    with Path(exit_.log_path).open("rb") as stream:
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(max(0, size - MAX_LOG_BYTES))
        text = stream.read().decode("utf-8", "replace")
    if size > MAX_LOG_BYTES:
        text = f"[first {size - MAX_LOG_BYTES} bytes left out; all of it: {exit_.log_path}]\n{text}"
    return text if text.strip() else "(no output)"


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
