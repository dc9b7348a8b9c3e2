"""What the service players share (``base`` says what a player is).

Each player hooks moto its own way and puts its service's own events; around that, they
all do the same things, kept here once:

- ``Patches``: the class attributes a player replaces on moto, and putting them back;
- ``CLAIM_GRACE_SECONDS``: how long a job with a dispatch token waits for its try;
- ``rendered``: a target value the stand-ins can act on (set, no ``{{`` left);
- ``output_text``, ``write_local_log`` and ``exit_reason``: a job's output for its log
  streams, the local cloud's own stream of the try, and why a job failed;
- ``client`` and ``ensure_role``: a client of the local cloud, the IAM role a stand-in needs;
- ``PlayerBase``: the context, runner, lock and patches of an installed player, the
  runner's keys and the exits it reports, claiming a try's plan, log objects in S3;
- ``HeldJobsPlayer`` (Batch, ECS, Lambda) and ``TrackedJobsPlayer`` (Step Functions, EMR,
  EMR Serverless): the two ``poll()`` skeletons of the players. What happens to a job, and
  which events say so, stays in each player's module.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from skydag import joblogs
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.localcloud.players.runner import JobRunner, output_tail
from skydag.targets.base import token_from_name

# A job whose dispatch token no try claims yet is asked about again on each poll for this
# long (the try's row may not be readable yet when the job's first poll comes); then it is
# left to moto. Every player takes its own as ``claim_grace``.
CLAIM_GRACE_SECONDS = 1.0
# A job's log streams hold at most this much of its output (CloudWatch Logs' request limit
# is 1 MB); the local file keeps all of it.
MAX_LOG_BYTES = 256 * 1024
# The image of the stand-in job and task definitions (Batch, ECS).
STAND_IN_IMAGE = "public.ecr.aws/amazonlinux/amazonlinux:latest"
# ``name:N`` in a target makes a stand-in register revisions (or publish versions) 1..N:
# bounded, since every one is one more resource in the emulator.
MAX_STAND_IN_REVISION = 100

_ABSENT = object()


# --- moto --------------------------------------------------------------------------------------


class Patches:
    """Class attributes replaced on moto, and how to put the originals back."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, Any]] = []

    @property
    def installed(self) -> bool:
        return bool(self._saved)

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


def naive_utc(moment: datetime | None) -> datetime:
    """``moment`` (default: now) as moto keeps datetimes: naive UTC."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def iso_milliseconds(moment: datetime) -> str:
    """``2026-11-22T00:01:42.299Z``, as the ECS and Lambda events give times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- targets and stand-ins ---------------------------------------------------------------------


def rendered(value: Any) -> str | None:
    """A target value the stand-ins can act on: set, and fully rendered (no ``{{`` left)."""
    text = "" if value is None else str(value)
    return text if text and "{{" not in text else None


def split_revision(value: str) -> tuple[str, int | None]:
    """``name:N`` as name and N (None without a numeric one)."""
    name, _, revision = value.partition(":")
    return name, int(revision) if revision.isdigit() else None


def numbers(first: int, last: int) -> str:
    """``3`` or ``1-3``: the revisions (versions) a stand-in made."""
    return f"{first}" if first == last else f"{first}-{last}"


def client(context: PlayerContext, service: str) -> Any:
    """A boto3 client of the local cloud."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        region_name=context.region,
        endpoint_url=context.endpoint_url,
        config=Config(account_id_endpoint_mode="disabled"),
    )


def ensure_role(
    context: PlayerContext, name: str, principal: str, purpose: str, created: list[str]
) -> str:
    """The ARN of the IAM role ``name`` the service ``principal`` (``batch.amazonaws.com``)
    assumes; made when missing, with a line in ``created`` (``purpose`` says what for)."""
    iam = client(context, "iam")
    with contextlib.suppress(iam.exceptions.NoSuchEntityException):
        return str(iam.get_role(RoleName=name)["Role"]["Arn"])
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": principal}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    created.append(f"iam role {name} ({purpose})")
    return str(role["Role"]["Arn"])


# --- logs --------------------------------------------------------------------------------------


def output_text(exit_: JobExit, *, max_bytes: int = MAX_LOG_BYTES, tell_stop: bool = False) -> str:
    """The job's captured output for its log streams: its last ``max_bytes`` (all of it stays
    in its file); a stand-in's, one line saying so (with ``tell_stop``: and why it stopped)."""
    log_path = exit_.log_path
    if log_path is None or not Path(log_path).exists():
        seconds = 0.0
        if exit_.started_at is not None and exit_.ended_at is not None:
            seconds = (exit_.ended_at - exit_.started_at).total_seconds()
        note = f"stand-in: exited {exit_.exit_code} after {seconds:.1f} s"
        return f"{note} (stopped: {exit_.stopped})" if tell_stop and exit_.stopped else note
    with Path(log_path).open("rb") as stream:
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(max(0, size - max_bytes))
        text = stream.read().decode("utf-8", "replace")
    if size > max_bytes:
        text = f"[first {size - max_bytes} bytes left out; all of it: {log_path}]\n{text}"
    return text if text.strip() else "(no output)"


def write_local_log(context: PlayerContext, plan: LocalPlan, text: str) -> str:
    """``text`` (a job's output) in the local cloud's own stream of the try; returns the
    stream's name (in ``joblogs.LOCAL_LOG_GROUP``)."""
    who = plan.identity
    stream = joblogs.local_stream(who.dag_id, who.run_id, who.task_id, who.try_number)
    context.write_log(joblogs.LOCAL_LOG_GROUP, stream, text)
    return stream


def exit_reason(exit_: JobExit, subject: str = "the local job") -> str:
    """Why a job failed: ``<subject> exited with code 3``, and its output's last line."""
    tail = output_tail(exit_.log_path)
    reason = f"{subject} exited with code {exit_.exit_code}"
    return f"{reason}: {tail}" if tail else reason


# --- the players' skeletons --------------------------------------------------------------------


class PlayerBase:
    """What every player keeps once installed, and how it uses the shared runner: a job's
    runner key is ``<kind>:<job id>``, its exit is recorded on the runner's call and taken
    by ``poll()``; a job's try is found by its dispatch token, within ``claim_grace``."""

    kind: str
    # How errors name the player: "the Batch player".
    title: ClassVar[str]
    # How long a job's token waits for a try to claim it; a player made with
    # ``claim_grace`` waits that long instead.
    claim_grace: float = CLAIM_GRACE_SECONDS

    def __init__(self, *, claim_grace: float | None = None) -> None:
        if claim_grace is not None:
            self.claim_grace = claim_grace
        self._installed_context: PlayerContext | None = None
        self._installed_runner: JobRunner | None = None
        self._patches = Patches()
        # Between moto's request threads (they record) and poll() (it consumes).
        self._lock = threading.Lock()
        self._exits: list[tuple[str, JobExit]] = []
        # The S3 buckets of log objects made (or found) so far.
        self._log_buckets: set[str] = set()

    def _attach(self, context: PlayerContext, runner: Any) -> None:
        self._installed_context, self._installed_runner = context, runner

    def uninstall(self) -> None:
        self._patches.restore()

    @property
    def context(self) -> PlayerContext:
        if self._installed_context is None:
            raise RuntimeError(f"{self.title} is not installed")
        return self._installed_context

    @property
    def runner(self) -> JobRunner:
        if self._installed_runner is None:
            raise RuntimeError(f"{self.title} is not installed")
        return self._installed_runner

    def _say(self, text: str) -> None:
        self.context.say(self.kind, text)

    def _client(self, service: str) -> Any:
        return client(self.context, service)

    # --- claiming and running ---------------------------------------------------------------

    def _plan_of(
        self, token: str | None, task_key: tuple[str, str, str] | None = None
    ) -> LocalPlan | None:
        """The plan of the try with dispatch token ``token`` (None: no try has it, yet)."""
        return self.context.plan_for(self.kind, token, task_key) if token else None

    def _gave_up(self, since: float) -> bool:
        """Whether a job no try claimed since ``since`` is no longer asked about."""
        return time.monotonic() - since >= self.claim_grace

    def _key(self, job_id: str) -> str:
        """The job's key in the runner every player shares."""
        return f"{self.kind}:{job_id}"

    def _run(self, job_id: str, plan: LocalPlan) -> None:
        """Start the try's job; its exit waits for ``poll()`` under ``job_id``."""

        def record(exit_: JobExit) -> None:
            with self._lock:
                self._exits.append((job_id, exit_))

        self.runner.start(self._key(job_id), plan, record)

    def _take_exits(self) -> list[tuple[str, JobExit]]:
        with self._lock:
            exits, self._exits = self._exits, []
        return exits

    # --- logs ---------------------------------------------------------------------------------

    def _put_log_object(self, uri: str, body: bytes, what: str) -> bool:
        """``body`` at ``uri`` (``s3://bucket/key``), the bucket made on first use; False,
        with a line saying why (``what`` names the log), when it cannot be written."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        s3 = self._client("s3")
        try:
            if bucket not in self._log_buckets:
                with contextlib.suppress(
                    s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
                ):
                    s3.create_bucket(Bucket=bucket)
                self._log_buckets.add(bucket)
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        except (ClientError, BotoCoreError) as error:
            self._say(f"cannot write {what} to {uri}: {error}")
            return False
        return True


class Held(Protocol):
    """A job moto's request thread held for ``poll()`` to claim."""

    @property
    def job_id(self) -> str: ...

    @property
    def token(self) -> str | None: ...

    @property
    def task_key(self) -> tuple[str, str, str] | None:
        """The try's task instance where the job's identity names it (as its events do)."""
        ...

    @property
    def held_at(self) -> float: ...


@dataclass
class Stop:
    """A stop asked on moto's request thread, for ``poll()`` to play."""

    job_id: str
    reason: str
    backend: Any


HeldT = TypeVar("HeldT", bound=Held)
StopT = TypeVar("StopT", bound=Stop)
PlayedT = TypeVar("PlayedT")


class HeldJobsPlayer(PlayerBase, ABC, Generic[HeldT, StopT, PlayedT]):
    """Batch, ECS and Lambda: moto's request threads hold the jobs with a token (``_hold``)
    and record stops (``_request_stop``); ``poll()`` plays each held job a try claims
    (``_play``), hands back those none claims within the grace period (``_release``), plays
    the stops of the others (``_stop``) and ends the played jobs that exited (``_end``)."""

    def __init__(self, *, claim_grace: float | None = None) -> None:
        super().__init__(claim_grace=claim_grace)
        self._pending: list[HeldT] = []
        self._stops: list[StopT] = []
        # poll()'s own, by job id.
        self._played: dict[str, PlayedT] = {}

    # --- on moto's request threads: record only -----------------------------------------------

    def _hold(self, held: HeldT) -> None:
        with self._lock:
            self._pending.append(held)

    def _request_stop(self, stop: StopT) -> None:
        with self._lock:
            self._stops.append(stop)

    # --- poll ---------------------------------------------------------------------------------

    def poll(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, []
            stops, self._stops = self._stops, []
        stop_for = {stop.job_id: stop for stop in stops}
        done = 0
        for held in pending:
            done += self._claim(held, stop_for.pop(held.job_id, None))
        for stop in stop_for.values():
            done += self._stop(stop)
        self.runner.poll()
        for job_id, exit_ in self._take_exits():
            played = self._played.pop(job_id, None)
            if played is not None:
                self._end(played, exit_)
                done += 1
        return done

    def _claim(self, held: HeldT, stop: StopT | None) -> int:
        plan = self._plan_of(held.token, held.task_key)
        if plan is None and not self._gave_up(held.held_at):
            with self._lock:  # asked again on the next poll
                self._pending.append(held)
                self._stops.extend([stop] if stop else [])
            return 0
        if plan is None:
            self._release(held)
            if stop is not None:
                self._stop(stop)  # moto's own stop, now that the job is moto's
            return 0
        return self._play(held, plan, stop)

    @abstractmethod
    def _play(self, held: HeldT, plan: LocalPlan, stop: StopT | None) -> int:
        """Play the held job for the try (``stop``: it was stopped before it started);
        returns how much happened."""

    @abstractmethod
    def _end(self, played: PlayedT, exit_: JobExit) -> None:
        """The played job exited: its end in moto, its logs, its event."""

    def _release(self, held: HeldT) -> None:
        """No try claims the held job: it goes back to moto (nothing to give back here)."""

    def _stop(self, stop: StopT) -> int:
        """A stop of a job held or played (none here); returns how much happened."""
        return 0


class Tracked(Protocol):
    """A job with a skydag-style name, from its start in moto to its last event."""

    seen_at: float
    plan: LocalPlan | None

    @property
    def job_id(self) -> str: ...

    # The job's name in moto: it carries the dispatch token.
    @property
    def name(self) -> str: ...


TrackedT = TypeVar("TrackedT", bound=Tracked)


class TrackedJobsPlayer(PlayerBase, ABC, Generic[TrackedT]):
    """Step Functions, EMR and EMR Serverless: moto's request threads track the jobs with
    a skydag-style name (in ``_tracked``) and record stops as (job id, reason) in
    ``_stops``; ``poll()`` starts each tracked job a try claims (``_start``), lets go of
    those none claims within the grace period (``_let_go``), stops the jobs asked to stop
    and finishes those that exited (``_finish``)."""

    # These players have always waited twice as long as the others for a try.
    claim_grace = 2 * CLAIM_GRACE_SECONDS

    def __init__(self, *, claim_grace: float | None = None) -> None:
        super().__init__(claim_grace=claim_grace)
        self._tracked: dict[str, TrackedT] = {}
        self._stops: list[tuple[str, str]] = []

    def _attach(self, context: PlayerContext, runner: Any) -> None:
        if self._patches.installed:
            raise RuntimeError(f"{self.title} is installed already")
        super()._attach(context, runner)

    def uninstall(self) -> None:
        super().uninstall()
        with self._lock:
            self._tracked.clear()
            self._stops.clear()
            self._exits.clear()

    # --- poll ---------------------------------------------------------------------------------

    def poll(self) -> int:
        runner = self.runner
        with self._lock:
            waiting = [tracked for tracked in self._tracked.values() if tracked.plan is None]
        happened = sum(self._claim(tracked) for tracked in waiting)
        with self._lock:
            stops, self._stops = self._stops, []
        for job_id, reason in stops:
            if runner.stop(self._key(job_id), reason):
                self._say(f"{job_id} stopping: {reason}")
                happened += 1
        runner.poll()
        exits = self._take_exits()
        for job_id, exit_ in exits:
            with self._lock:
                tracked = self._tracked.get(job_id)
            if tracked is not None and tracked.plan is not None:
                self._finish(tracked, tracked.plan, exit_)
        return happened + len(exits)

    def _claim(self, tracked: TrackedT) -> int:
        plan = self._plan_of(token_from_name(tracked.name))
        if plan is None:
            if self._gave_up(tracked.seen_at):
                self._let_go(tracked)
            return 0
        return self._start(tracked, plan)

    def _let_go(self, tracked: TrackedT) -> None:
        """No try has the job's token: it is moto's, as any other job."""
        with self._lock:
            self._tracked.pop(tracked.job_id, None)

    @abstractmethod
    def _start(self, tracked: TrackedT, plan: LocalPlan) -> int:
        """The try claimed the job: run it (or tell it ended, stopped before it started);
        returns how much happened."""

    @abstractmethod
    def _finish(self, tracked: TrackedT, plan: LocalPlan, exit_: JobExit) -> None:
        """The job exited: its outcome in moto, its logs, its event."""
