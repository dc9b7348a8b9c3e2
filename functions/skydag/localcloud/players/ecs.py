"""Amazon ECS, played: skydag's tasks run locally and emit ECS's state-change events.

moto's RunTask makes a task RUNNING at once, and every DescribeTasks walks it one step
further towards STOPPED (its managed state); it never runs anything. The player takes
the tasks RunTask starts for a try (``startedBy`` ends in the dispatch token) out of that
walk (PROVISIONING until ``poll()``), and plays them: RUNNING in moto with ``startedAt``
and an "ECS Task State Change" event, the try's ``local:`` block through the runner,
then STOPPED (containers' exit codes, stop code, reason) and the STOPPED event. StopTask
stops it (stop code UserInitiated). A task no try claims goes back to moto's walk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skydag.localcloud.players._common import (
    MAX_STAND_IN_REVISION,
    STAND_IN_IMAGE,
    HeldJobsPlayer,
    Stop,
    iso_milliseconds,
    numbers,
    output_text,
    rendered,
    split_revision,
    write_local_log,
)
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.localcloud.players.runner import output_tail
from skydag.targets.aws.ecs import DETAIL_TYPE, SOURCE, USER_INITIATED, task_key_of
from skydag.targets.base import token_from_name

KIND = "ecs"
CONTAINER_EXITED = "Essential container in task exited"
ESSENTIAL_CONTAINER_EXITED = "EssentialContainerExited"
# StopTask's reason when the caller gives none, as ECS words it.
STOPPED_BY_USER = "Task stopped by user"
# A container that ECS stops because the task stops: SIGTERM, as a shell reports it.
SIGTERM_EXIT = 143
FARGATE_PROVIDERS = frozenset({"FARGATE", "FARGATE_SPOT"})
FARGATE_PLATFORM = "1.4.0"
STAND_IN_LOG_PREFIX = "skydag"
# moto places EC2 tasks only on a registered container instance with room for them; the
# stand-in instance has room for any number of played tasks.
STAND_IN_AMI = "ami-03cf127a"  # one of moto's built-in AMIs
AMPLE_CPU_UNITS = 1024 * 1024
AMPLE_MEMORY_MIB = 4 * 1024 * 1024


@dataclass
class _Held:
    """A task RunTask started for a try, kept out of moto's walk until ``poll()``."""

    task: Any
    backend: Any
    # moto's own transitions: given back to a task that is not a try's.
    transitions: list[tuple[str | None, str]]
    held_at: float = field(default_factory=time.monotonic)

    @property
    def job_id(self) -> str:
        return str(self.task.task_arn)

    @property
    def token(self) -> str | None:
        return token_from_name(self.task.started_by)

    @property
    def task_key(self) -> tuple[str, str, str] | None:
        return task_key_of({"overrides": self.task.overrides})


@dataclass
class _Stop(Stop):
    """A StopTask; ``job_id`` is the task's ARN."""

    cluster: str


@dataclass
class _Played:
    task: Any
    backend: Any
    definition: Any
    plan: LocalPlan
    main: str
    stop: _Stop | None = None

    @property
    def fargate(self) -> bool:
        return self.task.container_instance_arn is None


class EcsPlayer(HeldJobsPlayer[_Held, _Stop, _Played]):
    """Plays Amazon ECS for the local cloud (see the module docstring); its jobs' ids are
    their task ARNs."""

    kind = KIND
    title = "the ECS player"

    def __init__(self, *, claim_grace: float | None = None) -> None:
        super().__init__(claim_grace=claim_grace)
        self._moto_stop_task: Callable[..., Any] | None = None
        # Filled on moto's request threads. _held: the tasks the player holds or played (not
        # those it handed back to moto), by task id.
        self._held: dict[str, _Held] = {}

    # --- install ----------------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.ecs.models import EC2ContainerServiceBackend

        self._attach(context, runner)
        run_task = EC2ContainerServiceBackend.run_task
        stop_task = EC2ContainerServiceBackend.stop_task
        self._moto_stop_task = stop_task

        def run_task_for_tries(backend: Any, *args: Any, **kwargs: Any) -> Any:
            tasks = run_task(backend, *args, **kwargs)
            for task in tasks:
                if token_from_name(task.started_by) is not None:
                    self._hold_task(task, backend)
            return tasks

        def stop_task_for_tries(backend: Any, cluster_str: str, task_str: str, reason: str) -> Any:
            held = self._held_task(str(task_str).rsplit("/", 1)[-1])
            if held is None:
                return stop_task(backend, cluster_str, task_str, reason)
            backend._get_cluster(cluster_str)  # an unknown cluster fails as moto fails it
            task = held.task
            # As on ECS: StopTask asks, the task is STOPPED once its containers exit; on a
            # task that is stopping or stopped, it changes nothing.
            if task.desired_status != "STOPPED":
                task.desired_status = "STOPPED"
                stop = _Stop(task.task_arn, reason or STOPPED_BY_USER, backend, cluster_str)
                self._request_stop(stop)
            return task

        self._patches.replace(EC2ContainerServiceBackend, "run_task", run_task_for_tries)
        self._patches.replace(EC2ContainerServiceBackend, "stop_task", stop_task_for_tries)
        self._honour_client_tokens()

    def _honour_client_tokens(self) -> None:
        """RunTask with a ``clientToken`` seen before answers the tasks that token started,
        as ECS does (moto ignores the token): two dispatchers of one try that both find no
        task by ``startedBy`` still start one task."""
        from moto.ecs.responses import EC2ContainerServiceResponse

        respond = EC2ContainerServiceResponse.run_task
        started: dict[tuple[str, str, str], list[Any]] = {}
        lock = threading.Lock()

        def run_task_once_per_token(response: Any) -> Any:
            token = response._get_param("clientToken")
            if not token:
                return respond(response)
            key = (response.current_account, response.region, str(token))
            with lock:  # moto's server answers requests on threads
                if key not in started:
                    answer = respond(response)
                    result: Any = answer.result
                    started[key] = list(result["tasks"])
                    return answer
                from moto.core.responses import ActionResult

                return ActionResult({"tasks": started[key], "failures": []})

        self._patches.replace(EC2ContainerServiceResponse, "run_task", run_task_once_per_token)

    # --- on moto's request threads: record only -----------------------------------------

    def _hold_task(self, task: Any, backend: Any) -> None:
        held = _Held(task, backend, task._transitions)
        # No transitions: moto's DescribeTasks no longer walks it towards STOPPED.
        task._transitions = []
        task.created_at = datetime.now(UTC)
        task.version = 1
        task.last_status = "PROVISIONING"
        with self._lock:
            self._held[task.id] = held
            self._pending.append(held)

    def _held_task(self, task_id: str) -> _Held | None:
        with self._lock:
            return self._held.get(task_id)

    # --- poll ---------------------------------------------------------------------------

    def _play(self, held: _Held, plan: LocalPlan, stop: _Stop | None) -> int:
        task = held.task
        definition = held.backend.describe_task_definition(task.task_definition_arn)
        played = _Played(task, held.backend, definition, plan, _main_container(task, definition))
        _describe_placement(played)
        task.containers = [_container(task, item, definition) for item in _definitions(played)]
        if stop is not None:
            # Stopped before it started: it never runs, as on ECS.
            played.stop = stop
            self._end(played, None)
            return 1
        now = datetime.now(UTC)
        task.pull_started_at = task.pull_stopped_at = task.connectivity_at = now
        task.connectivity = "CONNECTED"
        task.started_at = now
        for container in task.containers:
            container.last_status = "RUNNING"
        task.version = 2
        task.last_status = "RUNNING"
        self._played[task.task_arn] = played
        self._put(played, now)
        self._say(f"{task.started_by} RUNNING (task {task.task_arn})")
        self._run(task.task_arn, plan)
        return 1

    def _release(self, held: _Held) -> None:
        """Not a try's task: moto's walk (RUNNING, then STOPPED as it is described)."""
        task = held.task
        with self._lock:
            self._held.pop(task.id, None)
        task._transitions = held.transitions
        task.last_status = "RUNNING"

    def _stop(self, stop: _Stop) -> int:
        played = self._played.get(stop.job_id)
        task_id = stop.job_id.rsplit("/", 1)[-1]
        if played is None and self._held_task(task_id) is None and self._moto_stop_task:
            # Handed back to moto meanwhile (not a try's): moto's own StopTask.
            self._moto_stop_task(stop.backend, stop.cluster, stop.job_id, stop.reason)
            return 0
        if played is None or played.stop is not None:
            return 0
        if not self.runner.stop(self._key(stop.job_id), stop.reason):
            return 0  # it exited on its own meanwhile: that exit stands
        played.stop = stop
        return 1

    # --- the end of a task --------------------------------------------------------------

    def _end(self, played: _Played, exit_: JobExit | None) -> None:
        task = played.task
        ended = (exit_.ended_at if exit_ else None) or datetime.now(UTC)
        stopped = played.stop.reason if played.stop else (exit_.stopped if exit_ else None)
        code = exit_.exit_code if exit_ else None
        tail = output_tail(exit_.log_path) if exit_ and stopped is None and code else ""
        for container in task.containers:
            container.last_status = "STOPPED"
            if exit_ is None:
                continue
            if container.name == played.main:
                container.exitCode = code
                container.reason = tail or None
            else:
                container.exitCode = SIGTERM_EXIT if stopped else 0
        task.stopping_at = task.execution_stopped_at = task.stopped_at = ended
        task.stop_code = USER_INITIATED if stopped is not None else ESSENTIAL_CONTAINER_EXITED
        task.stopped_reason = stopped if stopped is not None else CONTAINER_EXITED
        task.desired_status = "STOPPED"
        for attachment in task.attachments:
            attachment["status"] = "DELETED"
        _free_placement(played)
        task.version = 3
        task.last_status = "STOPPED"
        if exit_ is not None:
            self._write_logs(played, exit_)
        self._put(played, ended)
        self._say(_summary(played, exit_, tail))

    def _write_logs(self, played: _Played, exit_: JobExit) -> None:
        text = output_text(exit_)
        write_local_log(self.context, played.plan, text)
        where = _awslogs(played)
        if where is not None:
            self.context.write_log(*where, text)

    def _put(self, played: _Played, at: datetime) -> None:
        self.context.put_event(
            SOURCE, DETAIL_TYPE, _detail(played, at), resources=[played.task.task_arn], time=at
        )

    # --- stand-ins ----------------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        created: list[str] = []
        cluster = rendered(target.get("cluster"))
        if cluster is not None:
            created += self._ensure_cluster(cluster, placed_on_instances=_on_instances(target))
        definition = rendered(target.get("task_definition"))
        if definition is not None:
            created += self._ensure_task_definition(definition, rendered(target.get("container")))
        return created

    def _ensure_cluster(self, cluster: str, *, placed_on_instances: bool) -> list[str]:
        ecs = self._client("ecs")
        name = cluster.rsplit("/", 1)[-1]
        created: list[str] = []
        found = ecs.describe_clusters(clusters=[cluster])["clusters"]
        if not any(item.get("status") == "ACTIVE" for item in found):
            ecs.create_cluster(clusterName=name)
            created.append(f"ecs cluster {name}")
        if placed_on_instances and not ecs.list_container_instances(cluster=name).get(
            "containerInstanceArns"
        ):
            created.append(self._register_instance(name))
        return created

    def _register_instance(self, cluster: str) -> str:
        """An EC2 instance registered in ``cluster`` with room for every played task."""
        from moto.ecs.models import ecs_backends

        context = self.context
        instance = self._client("ec2").run_instances(ImageId=STAND_IN_AMI, MinCount=1, MaxCount=1)
        instance_id = instance["Instances"][0]["InstanceId"]
        registered = self._client("ecs").register_container_instance(
            cluster=cluster, instanceIdentityDocument=json.dumps({"instanceId": instance_id})
        )["containerInstance"]
        backend = ecs_backends[context.account_id][context.region]
        arn = str(registered["containerInstanceArn"])
        room = {"CPU": AMPLE_CPU_UNITS, "MEMORY": AMPLE_MEMORY_MIB}
        model = backend.container_instances[cluster][arn.rsplit("/", 1)[-1]]
        for resources in (model.registered_resources, model.remaining_resources):
            for resource in resources:
                if resource["name"] in room:
                    resource["integerValue"] = room[resource["name"]]
        return f"ecs container instance {arn} ({instance_id}) in cluster {cluster}"

    def _ensure_task_definition(self, definition: str, container: str | None) -> list[str]:
        family, revision = split_revision(definition.rsplit("/", 1)[-1])
        wanted = revision or 1
        if wanted > MAX_STAND_IN_REVISION:
            line = (
                f"ecs task definition {family}:{wanted} not created: stand-ins register "
                f"revisions up to {MAX_STAND_IN_REVISION} only"
            )
            self._say(line)
            return [line]
        ecs = self._client("ecs")
        arns = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
        have = max((split_revision(a.rsplit("/", 1)[-1])[1] or 0 for a in arns), default=0)
        if have >= wanted:
            return []
        parameters = self._stand_in_definition(family, container)
        if have:
            latest = ecs.describe_task_definition(taskDefinition=f"{family}:{have}")
            parameters = _registrable(latest["taskDefinition"])
        for _ in range(wanted - have):
            ecs.register_task_definition(**parameters)
        revisions = numbers(have + 1, wanted)
        container_name = parameters["containerDefinitions"][0]["name"]
        return [f"ecs task definition {family} (revision {revisions}; container {container_name})"]

    def _stand_in_definition(self, family: str, container: str | None) -> dict[str, Any]:
        return {
            "family": family,
            "cpu": "256",
            "memory": "512",
            "containerDefinitions": [
                {
                    "name": container or family,
                    "image": STAND_IN_IMAGE,
                    "essential": True,
                    "cpu": 256,
                    "memory": 512,
                    "logConfiguration": {
                        "logDriver": "awslogs",
                        "options": {
                            "awslogs-group": f"/ecs/{family}",
                            "awslogs-region": self.context.region,
                            "awslogs-stream-prefix": STAND_IN_LOG_PREFIX,
                        },
                    },
                }
            ],
        }


def _definitions(played: _Played) -> list[Mapping[str, Any]]:
    return list(played.definition.container_definitions or [])


def _main_container(task: Any, definition: Any) -> str:
    """The container that runs the try: the one whose override carries SKYDAG_TASK (the
    adapter marks it), else the only override's, else the first essential one."""
    overrides = (task.overrides or {}).get("containerOverrides") or []
    for override in overrides:
        if any(v.get("name") == "SKYDAG_TASK" for v in override.get("environment") or []):
            return str(override.get("name"))
    if overrides and overrides[0].get("name"):
        return str(overrides[0]["name"])
    containers = list(definition.container_definitions or [])
    essential = [c for c in containers if c.get("essential", True)] or containers
    return str(essential[0].get("name")) if essential else ""


def _container(task: Any, item: Mapping[str, Any], definition: Any) -> Any:
    """A moto Container for one container definition (moto makes one, for the first)."""
    from moto.ecs.models import Container

    # Typed loosely: the player adds the fields moto's Container leaves out.
    make: Any = Container
    container = make(definition)
    image = str(item.get("image") or "")
    container.container_arn = (
        f"arn:aws:ecs:{task.region_name}:{task._account_id}:container/"
        f"{task.cluster_name}/{task.id}/{uuid.uuid4()}"
    )
    container.task_arn = task.task_arn
    container.name = item.get("name")
    container.image = image
    container.image_digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    container.runtime_id = f"{task.id}-{random.randrange(10**9, 10**10)}"  # noqa: S311
    container.cpu = str(item.get("cpu", 0))
    container.memory = str(item["memory"]) if item.get("memory") else None
    container.environment = item.get("environment")
    container.command = item.get("command")
    container.last_status = "PENDING"
    container.exitCode = None
    container.reason = None
    return container


def _describe_placement(played: _Played) -> None:
    """What ECS shows of where the task runs and with what (moto leaves these out)."""
    task, definition = played.task, played.definition
    provider = task.capacity_provider_name
    if not task.launch_type:
        task.launch_type = "FARGATE" if provider in FARGATE_PROVIDERS else "EC2"
    if played.fargate:
        task.platform_version = task.platform_version or FARGATE_PLATFORM
    task.availability_zone = f"{task.region_name}a"
    containers = _definitions(played)
    task.cpu = str(definition.cpu or sum(int(c.get("cpu") or 0) for c in containers))
    task.memory = str(definition.memory or sum(int(c.get("memory") or 0) for c in containers))


def _free_placement(played: _Played) -> None:
    """Give the container instance back the room the task took (as moto's StopTask does)."""
    task, backend = played.task, played.backend
    if not task.container_instance_arn:
        return
    instances = backend.container_instances.get(task.cluster_name, {})
    instance = instances.get(task.container_instance_arn.rsplit("/", 1)[-1])
    if instance is not None and task.resource_requirements:
        backend.update_container_instance_resources(
            instance, task.resource_requirements, removing=True
        )
    with contextlib.suppress(Exception):
        backend.update_cluster_resources(backend._get_cluster(task.cluster_name), -1)


def _awslogs(played: _Played) -> tuple[str, str] | None:
    """(group, stream) of the run container's awslogs driver, if it has one."""
    item = next((c for c in _definitions(played) if c.get("name") == played.main), None)
    configuration = (item or {}).get("logConfiguration") or {}
    options = configuration.get("options") or {}
    if configuration.get("logDriver") != "awslogs" or not options.get("awslogs-group"):
        return None
    prefix = options.get("awslogs-stream-prefix")
    task_id = played.task.id
    stream = f"{prefix}/{played.main}/{task_id}" if prefix else task_id
    return str(options["awslogs-group"]), stream


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_milliseconds(moment)


def _detail(played: _Played, at: datetime) -> dict[str, Any]:
    """The "ECS Task State Change" detail of the task as it is now in moto."""
    task = played.task
    detail: dict[str, Any] = {
        "attachments": [
            {
                "id": a.get("id"),
                "type": "eni",
                "status": a.get("status"),
                "details": a.get("details") or [],
            }
            for a in task.attachments
        ],
        "availabilityZone": task.availability_zone,
        "clusterArn": task.cluster_arn,
        "containers": [_container_detail(task, c) for c in task.containers],
        "createdAt": _iso(task.created_at),
        "launchType": task.launch_type,
        "cpu": task.cpu,
        "memory": task.memory,
        "desiredStatus": task.desired_status,
        "group": task.group,
        "lastStatus": task.last_status,
        "overrides": {"containerOverrides": [], **(task.overrides or {})},
        "connectivity": getattr(task, "connectivity", None),
        "connectivityAt": _iso(getattr(task, "connectivity_at", None)),
        "pullStartedAt": _iso(getattr(task, "pull_started_at", None)),
        "startedAt": _iso(getattr(task, "started_at", None)),
        "startedBy": task.started_by,
        "pullStoppedAt": _iso(getattr(task, "pull_stopped_at", None)),
        "updatedAt": _iso(at),
        "taskArn": task.task_arn,
        "taskDefinitionArn": task.task_definition_arn,
        "version": task.version,
    }
    if played.fargate:
        detail["platformVersion"] = task.platform_version
    else:
        detail["containerInstanceArn"] = task.container_instance_arn
    if task.capacity_provider_name:
        detail["capacityProviderName"] = task.capacity_provider_name
    if task.last_status == "STOPPED":
        detail.update(
            executionStoppedAt=_iso(task.execution_stopped_at),
            stopCode=task.stop_code,
            stoppedAt=_iso(task.stopped_at),
            stoppedReason=task.stopped_reason,
            stoppingAt=_iso(task.stopping_at),
        )
    return {key: value for key, value in detail.items() if value is not None}


def _container_detail(task: Any, container: Any) -> dict[str, Any]:
    attachment = task.attachments[0] if task.attachments else None
    interfaces = []
    if attachment is not None:
        details = {d.get("name"): d.get("value") for d in attachment.get("details") or []}
        interfaces.append(
            {
                "attachmentId": attachment.get("id"),
                "privateIpv4Address": details.get("privateIPv4Address"),
            }
        )
    detail = {
        "containerArn": container.container_arn,
        "exitCode": container.exitCode,
        "lastStatus": container.last_status,
        "name": container.name,
        "image": container.image,
        "imageDigest": container.image_digest,
        "runtimeId": container.runtime_id,
        "taskArn": container.task_arn,
        "networkInterfaces": interfaces,
        "cpu": container.cpu,
        "reason": container.reason,
    }
    return {key: value for key, value in detail.items() if value is not None}


def _registrable(definition: Mapping[str, Any]) -> dict[str, Any]:
    """RegisterTaskDefinition's parameters that reproduce a described task definition."""
    keys = (
        "family",
        "containerDefinitions",
        "taskRoleArn",
        "executionRoleArn",
        "networkMode",
        "volumes",
        "placementConstraints",
        "requiresCompatibilities",
        "cpu",
        "memory",
    )
    return {key: definition[key] for key in keys if definition.get(key) is not None}


def _on_instances(target: Mapping[str, Any]) -> bool:
    """Whether the target's tasks are placed on container instances (not Fargate)."""
    return target.get("launch_type") != "FARGATE" and (
        target.get("capacity_provider") not in FARGATE_PROVIDERS
    )


def _summary(played: _Played, exit_: JobExit | None, tail: str) -> str:
    task = played.task
    name = f"{task.started_by} (task {task.task_arn})"
    code = exit_.exit_code if exit_ else None
    if task.stop_code == ESSENTIAL_CONTAINER_EXITED and code == 0:
        return f"{name} STOPPED: succeeded"
    parts = [f"{name} STOPPED ({task.stop_code}): {task.stopped_reason}"]
    if tail:
        parts.append(tail)
    if code is not None:
        parts.append(f"exit code {code}")
    where = str(exit_.log_path) if exit_ and exit_.log_path else None
    awslogs = _awslogs(played) if exit_ else None
    if where is None and awslogs is not None:
        where = " ".join(awslogs)
    if where:
        parts.append(f"log {where}")
    return "; ".join(parts)
