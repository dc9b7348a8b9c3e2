"""Routes one EventBridge event to the scheduler: the one entry point the scheduler Lambda
(and the embedded environment) calls for every event it receives.

- ``aws.*`` state-change events of the services skydag dispatches to → a job event;
- ``skydag.command`` events (the CLI, people) → a command;
- ``skydag.scheduler`` events (EventBridge Scheduler: schedule ticks and timers);
- anything else is a user signal: it may create runs (a DAG's ``on:``) and start,
  restart or stop tasks (``start_on``, ``restart_on``, ``stop_on``, ``wait``).

Every route is idempotent: a duplicated, late or reordered event changes nothing.
A malformed event raises ``BadEvent`` with what is wrong (the handler reports it and
moves on; it is never retried).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from skydag.engine.backfill import (
    MAX_BACKFILL_ACTIVE_RUNS,
    Reprocess,
    check_backfill_id,
    derived_backfill_id,
)
from skydag.engine.models import instance_key
from skydag.engine.states import TaskState
from skydag.engine.transitions import Outcome
from skydag.limits import (
    MAX_JSON_DEPTH,
    MAX_MAP_ITEMS,
    LimitError,
    check_run_id,
    json_depth,
    short,
)
from skydag.ports.store import NotFound
from skydag.service.core import CommandRefused, DagNotFound
from skydag.sources import (
    COMMAND_SOURCE,
    LAMBDA_RESULT_SOURCE,
    SCHEDULE_TICK,
    SCHEDULER_SOURCE,
    TIMER_FIRED,
)
from skydag.spec.models import ID_PATTERN

if TYPE_CHECKING:
    from skydag.service.scheduler_service import SchedulerService
    from skydag.targets.base import JobEvent

# Command detail-types and their required detail keys.
COMMANDS: dict[str, tuple[str, ...]] = {
    "Trigger DAG": ("dag",),
    "Backfill DAG": ("dag", "start", "end"),
    "Clear Task": ("dag", "run_id", "task"),
    "Mark Task": ("dag", "run_id", "task", "state"),
    "Cancel Run": ("dag", "run_id"),
    "Pause DAG": ("dag",),
    "Unpause DAG": ("dag",),
    "Delete DAG": ("dag",),
}


_ID = re.compile(ID_PATTERN)


class BadEvent(ValueError):
    """The event cannot be acted on; the message says what and where."""


@dataclass
class RouteResult:
    """What one event did, for logs and metrics."""

    route: str
    actions: list[str] = field(default_factory=list)
    ignored: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# EventBridge's own limit for one event; anything larger was not delivered by it.
MAX_EVENT_BYTES = 256 * 1024

JobEventParser = Callable[[Mapping[str, Any]], "JobEvent | None"]


def route_event(
    service: SchedulerService,
    event: Any,
    *,
    parse_job_event: JobEventParser | None = None,
) -> RouteResult:
    """Handle one EventBridge event; raises ``BadEvent`` for input that can never work."""
    envelope = _check_envelope(event)
    source, detail_type = envelope["source"], envelope["detail-type"]
    if source.startswith("aws.") or source == LAMBDA_RESULT_SOURCE:
        parse = parse_job_event or _default_job_parser()
        try:
            job_event = parse(envelope)
        except ValueError as error:  # a service event without a field it always has
            raise BadEvent(f"{source} event {envelope['id']!r}: {error}") from error
        except (TypeError, KeyError, AttributeError) as error:  # a field of another type
            raise BadEvent(
                f"{source} event {envelope['id']!r}: malformed ({type(error).__name__}: {error})"
            ) from error
        if job_event is not None:
            decision = service.on_job_event(job_event)
            result = RouteResult("job", detail={"kind": job_event.kind, "job": job_event.job_id})
            if decision.outcome in (Outcome.ACCEPT, Outcome.CANCEL_JOB):
                result.actions.append(decision.reason)
            else:
                result.ignored = decision.reason
            return result
        # Other AWS events (an S3 object in a data bucket, ...) are signals like any other.
    if source == COMMAND_SOURCE:
        return _command(service, envelope)
    if source == SCHEDULER_SOURCE:
        return _scheduler_event(service, detail_type, envelope["detail"])
    result = RouteResult("signal", detail={"source": source, "detail-type": detail_type})
    result.actions = service.on_signal(envelope)
    if not result.actions:
        result.ignored = "no DAG or task subscribes to this event"
    return result


def _check_envelope(event: Any) -> dict[str, Any]:
    if not isinstance(event, Mapping):
        raise BadEvent(f"an event must be a JSON object, not {type(event).__name__}")
    problems = [
        f"'{key}' must be a non-empty string"
        for key in ("id", "source", "detail-type")
        if not isinstance(event.get(key), str) or not event.get(key)
    ]
    if not isinstance(event.get("detail"), Mapping):
        problems.append("'detail' must be a JSON object")
    if problems:
        where = f"event {event.get('id')!r}" if isinstance(event.get("id"), str) else "event"
        raise BadEvent(f"{where}: " + "; ".join(problems))
    if json_depth(event) > MAX_JSON_DEPTH:  # before anything walks it recursively
        raise BadEvent(f"event {event['id']!r}: nested more than {MAX_JSON_DEPTH} levels deep")
    size = len(json.dumps(event, default=str).encode())
    if size > MAX_EVENT_BYTES:
        raise BadEvent(f"event {event['id']!r}: {size} bytes, over EventBridge's 256 KB")
    return dict(event)


def _default_job_parser() -> JobEventParser:
    from skydag.targets.aws.registry import parse_service_event

    return parse_service_event


def _require(detail_type: str, detail: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if detail.get(key) in (None, "")]
    if missing:
        raise BadEvent(f"command '{detail_type}': detail lacks {', '.join(missing)}")
    for key in keys:
        if key != "conf" and not isinstance(detail[key], str):
            raise BadEvent(f"command '{detail_type}': '{key}' must be a string")
    _check_ids(detail_type, detail)


def _check_ids(detail_type: str, detail: Mapping[str, Any]) -> None:
    """Ids that no DAG, run or task can have are refused before they reach a store key
    (DynamoDB refuses keys over 1 KB: the event would be retried forever)."""
    for key in ("dag", "task"):
        value = detail.get(key)
        if value is not None and (not isinstance(value, str) or not _ID.fullmatch(value)):
            raise BadEvent(
                f"command '{detail_type}': '{key}' {short(value)} is not a valid id "
                f"(must match {ID_PATTERN})"
            )
    run_id = detail.get("run_id")
    if run_id is not None and run_id != "":
        try:
            check_run_id(run_id, "'run_id'")
        except LimitError as error:
            raise BadEvent(f"command '{detail_type}': {error}") from error


def _map_index(detail_type: str, detail: Mapping[str, Any]) -> int | None:
    """The optional ``map_index`` of a command or timer: one instance of a mapped task."""
    value = detail.get("map_index")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_MAP_ITEMS:
        raise BadEvent(
            f"'{detail_type}': 'map_index' {short(value)} is not an index below {MAX_MAP_ITEMS}"
        )
    return value


def _datetime(detail_type: str, name: str, value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as error:
        raise BadEvent(
            f"command '{detail_type}': '{name}' is not an ISO date: {value!r}"
        ) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _command(service: SchedulerService, envelope: Mapping[str, Any]) -> RouteResult:
    detail_type, detail = envelope["detail-type"], envelope["detail"]
    if detail_type not in COMMANDS:
        raise BadEvent(
            f"unknown command '{detail_type}': expected one of {', '.join(sorted(COMMANDS))}"
        )
    _require(detail_type, detail, COMMANDS[detail_type])
    result = RouteResult("command", detail={"command": detail_type, "dag": detail["dag"]})
    dag_id = str(detail["dag"])
    try:
        result.actions = _run_command(service, detail_type, dag_id, detail, envelope["id"])
    except (DagNotFound, NotFound, CommandRefused) as error:
        # Only what the command asked is wrong; an engine bug (any other error) is
        # retried and alarmed, never dropped as a bad event.
        message = error.args[0] if error.args else str(error)
        raise BadEvent(f"command '{detail_type}' for DAG '{dag_id}': {message}") from error
    return result


def _run_command(
    service: SchedulerService,
    detail_type: str,
    dag_id: str,
    detail: Mapping[str, Any],
    command_id: str,
) -> list[str]:
    """Apply one command. ``command_id`` (the event's id, the same in every copy that
    EventBridge or SQS delivers) keeps a command from applying twice to a task."""
    if detail_type == "Trigger DAG":
        conf = detail.get("conf") or {}
        if not isinstance(conf, Mapping):
            raise BadEvent("command 'Trigger DAG': 'conf' must be a JSON object")
        run_id = detail.get("run_id")
        triggered = service.trigger(
            dag_id, conf=conf, run_id=str(run_id) if run_id else None, event=None
        )
        verb = "created" if triggered.created else "already exists"
        return [f"run {triggered.run.run_id} {verb}"]
    if detail_type == "Backfill DAG":
        return _backfill(service, dag_id, detail, command_id)
    run_id, task_id = str(detail.get("run_id", "")), str(detail.get("task", ""))
    if detail_type == "Clear Task":
        cleared = service.clear(
            dag_id,
            run_id,
            task_id,
            downstream=bool(detail.get("downstream", False)),
            reset_state=bool(detail.get("reset_state", False)),
            command_id=command_id,
            map_index=_map_index(detail_type, detail),
        )
        return [f"cleared {', '.join(cleared) or 'nothing'}"]
    if detail_type == "Mark Task":
        state = str(detail["state"])
        if state not in ("success", "failed"):
            raise BadEvent(f"command 'Mark Task': state must be success or failed, not {state!r}")
        marked = service.mark(
            dag_id,
            run_id,
            task_id,
            TaskState(state),
            command_id=command_id,
            map_index=_map_index(detail_type, detail),
        )
        return [f"{task_id} marked {marked.state.value}"]
    if detail_type == "Cancel Run":
        run = service.cancel_run(dag_id, run_id, str(detail.get("reason") or "cancelled"))
        return [f"run {run.run_id} {run.state.value}"]
    return _dag_command(service, detail_type, dag_id, detail)


def _dag_command(
    service: SchedulerService, detail_type: str, dag_id: str, detail: Mapping[str, Any]
) -> list[str]:
    """The commands on a whole DAG: pause, unpause, delete."""
    if detail_type == "Delete DAG":
        return _delete_dag(service, dag_id, detail)
    paused = detail_type == "Pause DAG"
    service.set_paused(dag_id, paused)
    return ["paused" if paused else "unpaused"]


def _delete_dag(service: SchedulerService, dag_id: str, detail: Mapping[str, Any]) -> list[str]:
    """``version`` (the one the sender saw current) and ``cancel_runs`` are optional."""
    version = detail.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise BadEvent(f"command 'Delete DAG': 'version' must be an integer, not {short(version)}")
    return service.delete_dag(
        dag_id, version=version, cancel_runs=detail.get("cancel_runs") is True
    )


def _backfill(
    service: SchedulerService, dag_id: str, detail: Mapping[str, Any], command_id: str
) -> list[str]:
    """``reprocess`` (none), ``backfill_id`` (else one derived from the command's id, the
    same in every copy) and ``max_active_runs`` (none) are optional."""
    detail_type = "Backfill DAG"
    start = _datetime(detail_type, "start", detail["start"])
    end = _datetime(detail_type, "end", detail["end"])
    try:
        reprocess = Reprocess(str(detail.get("reprocess") or Reprocess.NONE.value))
    except ValueError as error:
        choices = ", ".join(item.value for item in Reprocess)
        raise BadEvent(
            f"command '{detail_type}': 'reprocess' must be one of {choices}, "
            f"not {short(detail.get('reprocess'))}"
        ) from error
    backfill_id = detail.get("backfill_id") or derived_backfill_id(command_id)
    try:
        check_backfill_id(str(backfill_id), f"command '{detail_type}': 'backfill_id'")
    except ValueError as error:
        raise BadEvent(str(error)) from error
    limit = detail.get("max_active_runs")
    if limit is not None and (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= MAX_BACKFILL_ACTIVE_RUNS
    ):
        raise BadEvent(
            f"command '{detail_type}': 'max_active_runs' must be an integer from 1 to "
            f"{MAX_BACKFILL_ACTIVE_RUNS}, "
            f"not {short(limit)}"
        )
    result = service.backfill(
        dag_id,
        start,
        end,
        reprocess=reprocess,
        backfill_id=str(backfill_id),
        max_active_runs=limit,
    )
    return [f"run {run.run_id}" for run in result.runs] + [
        f"skipped {interval.start.isoformat()}" for interval in result.skipped
    ]


def _scheduler_event(
    service: SchedulerService, detail_type: str, detail: Mapping[str, Any]
) -> RouteResult:
    if detail_type == SCHEDULE_TICK:
        _require(detail_type, detail, ("dag",))
        runs = service.schedule_tick(str(detail["dag"]))
        return RouteResult("schedule", [f"run {run.run_id}" for run in runs])
    if detail_type == TIMER_FIRED:
        _require(detail_type, detail, ("dag", "run_id", "task"))
        acted = service.on_timer_fired(
            str(detail["dag"]),
            str(detail["run_id"]),
            instance_key(str(detail["task"]), _map_index(detail_type, detail)),
        )
        return RouteResult("timer", ["acted" if acted else "nothing due"])
    raise BadEvent(f"unknown scheduler event '{detail_type}'")
