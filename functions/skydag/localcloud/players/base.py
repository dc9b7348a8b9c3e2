"""What a service player is: the part of the local cloud that plays one AWS service.

moto stores the jobs skydag's real target adapters create (a Batch job, an ECS task, a
Step Functions execution, ...) but never runs them and never emits their state-change
events. A player does both: it watches its service's backend in moto (this process hosts
the moto server, so the backends are plain objects here), runs each job's ``local:``
block (or a stand-in) through the shared ``JobRunner``, moves the job through its states
in moto (so ``Describe*`` and the reconciler agree with the events), and puts the
service's native state-change event, in the exact shape of ``events/aws/*.json``, on the
default bus, where the stack's rules pick it up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """Which try a job belongs to, as the runner needs it (logs, environment)."""

    kind: str
    token: str
    dag_id: str
    run_id: str
    task_id: str
    try_number: int


@dataclass(frozen=True, slots=True)
class LocalPlan:
    """What to run for one try: the rendered ``local:`` block (None: the stand-in)."""

    identity: JobIdentity
    local: Mapping[str, Any] | None
    # The try's SKYDAG_* identity and task-state variables (``DispatchRequest.environment``).
    environment: Mapping[str, str] = field(default_factory=dict)
    # A ``mode: service`` task: its stand-in (no command, no duration) runs until stopped.
    service: bool = False


@dataclass(frozen=True, slots=True)
class JobExit:
    """How a played job ended. ``stopped`` carries the reason of a stop (cancel, timeout)."""

    exit_code: int
    stopped: str | None = None
    output: Any = None
    log_path: Path | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class PlayerContext(Protocol):
    """What the local cloud gives every player."""

    account_id: str
    region: str
    endpoint_url: str
    # The skydag bus: where Lambda destination events go (users point their functions'
    # asynchronous destinations at it); the services' own events go to the default bus.
    event_bus: str

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
        """Put a service event on ``bus`` (through the local EventBridge and its rules)."""

    def plan_for(
        self, kind: str, token: str, task_key: tuple[str, str, str] | None = None
    ) -> LocalPlan | None:
        """The rendered local block of the current try with dispatch ``token`` (None when
        no task instance has it: a job skydag did not start). ``task_key`` (dag, run,
        instance id), where the job names its task instance, finds it with no index."""

    def write_log(self, group: str, stream: str, text: str) -> None:
        """Append ``text`` (lines) to a CloudWatch Logs stream, creating group and stream."""

    def say(self, who: str, text: str) -> None:
        """One line in the `dev up` log."""


class ServicePlayer(Protocol):
    """One AWS service, played. Installed once per local cloud, uninstalled on exit."""

    kind: str

    def install(self, context: PlayerContext, runner: Any) -> None: ...

    def uninstall(self) -> None: ...

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        """Create what a task's target block names and moto lacks (stand-ins); returns one
        line per resource created. Values still holding ``{{`` are skipped."""
        ...

    def poll(self) -> int:
        """Advance the played jobs (starts, exits, events); returns how much happened."""
        ...
