"""AWS Step Functions, played: each skydag execution runs its try's ``local:`` block.

moto keeps a started execution RUNNING for ever (it only interprets state machines with
``execute_state_machine``, which cannot run skydag's kind of work anyway) and ignores
StopExecution's error and cause. The player records what StartExecution and
StopExecution did on moto's request threads, and on its own thread runs the job, writes
the outcome into the execution (status, output, error, cause, stop date, so that
DescribeExecution and the reconciler agree with the event) and puts the "Step Functions
Execution Status Change" event AWS would send. Step Functions keeps no job output: the
captured output goes to the local cloud's own log stream only.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skydag import joblogs
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.localcloud.players.runner import JobRunner, output_tail
from skydag.targets.aws.stepfunctions import DETAIL_TYPE, SOURCE
from skydag.targets.base import token_from_name

KIND = "stepfunctions"
# The most of a job's output its log streams get (all of it stays in its file).
MAX_LOG_BYTES = 1_000_000
# How long an execution named like skydag's waits for its try to be found; then it is
# left to moto, as any other execution.
PLAN_GRACE_SECONDS = 2.0
# AWS's error for a failed Task state: the played job is the one task of the execution.
FAILED_ERROR = "States.TaskFailed"
# An execution whose job the local cloud stopped (not StopExecution): AWS has no such case.
STOPPED_ERROR = "skydag.local.Stopped"
# What ensure_resources creates for a state machine the DAG names and moto lacks.
STAND_IN_ROLE = "skydag-local-stepfunctions"
STAND_IN_DEFINITION = {
    "Comment": "skydag local cloud stand-in: the task's local block runs instead",
    "StartAt": "Done",
    "States": {"Done": {"Type": "Pass", "End": True}},
}
_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "states.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
_FINISHED = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
# Marks the executions the player runs, on moto's own objects (they outlive the tracking).
_PLAYED = "skydag_played"


@dataclass
class _Tracked:
    """An execution with a skydag-style name, from StartExecution to its last event."""

    execution: Any  # moto's Execution
    seen_at: float
    plan: LocalPlan | None = None


class StepFunctionsPlayer:
    """Plays Step Functions executions of the state machines in moto."""

    kind = KIND

    def __init__(self) -> None:
        self._context: PlayerContext | None = None
        self._runner: JobRunner | None = None
        self._originals: list[tuple[type, str, Any]] = []
        # Guards everything below: moto's request threads record, poll() consumes.
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._stops: list[tuple[str, str]] = []
        self._exits: list[tuple[str, JobExit]] = []

    # --- installing ---------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.core.responses import ActionResult
        from moto.stepfunctions.models import StepFunctionBackend
        from moto.stepfunctions.responses import StepFunctionResponse

        if self._originals:
            raise RuntimeError("the Step Functions player is installed already")
        self._context = context
        self._runner = runner
        start_original = StepFunctionBackend.start_execution
        stop_original = StepFunctionBackend.stop_execution
        player = self

        def start_execution(backend: Any, *args: Any, **kwargs: Any) -> Any:
            execution = start_original(backend, *args, **kwargs)
            player._record_start(execution)
            return execution

        def stop_execution(
            backend: Any, execution_arn: str, error: str | None = None, cause: str | None = None
        ) -> Any:
            return player._stop(backend, stop_original, execution_arn, error, cause)

        def stop_execution_response(response: Any) -> Any:
            # moto's handler drops StopExecution's error and cause; AWS keeps them.
            execution = response.stepfunction_backend.stop_execution(
                response._get_param("executionArn"),
                error=response._get_param("error"),
                cause=response._get_param("cause"),
            )
            return ActionResult({"stopDate": execution.stop_date})

        self._patch(StepFunctionBackend, "start_execution", start_execution)
        self._patch(StepFunctionBackend, "stop_execution", stop_execution)
        self._patch(StepFunctionResponse, "stop_execution", stop_execution_response)

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)
        self._originals.clear()
        with self._lock:
            self._tracked.clear()
            self._stops.clear()
            self._exits.clear()

    def _patch(self, owner: type, name: str, replacement: Callable[..., Any]) -> None:
        self._originals.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, replacement)

    # --- moto's request threads: record only ----------------------------------------------

    def _record_start(self, execution: Any) -> None:
        if token_from_name(execution.name) is None:
            return
        with self._lock:
            # A repeated StartExecution returns the running execution: tracked once.
            self._tracked.setdefault(execution.execution_arn, _Tracked(execution, time.monotonic()))

    def _stop(
        self,
        backend: Any,
        original: Callable[..., Any],
        execution_arn: str,
        error: str | None,
        cause: str | None,
    ) -> Any:
        with self._lock:
            execution = backend.describe_execution(execution_arn)
            if getattr(execution, _PLAYED, False) and execution.status in _FINISHED:
                return execution  # a played execution stays as it closed, as on AWS
            # Written before moto flips the status, so no reader sees ABORTED without them.
            execution.error = error
            execution.cause = cause
            execution = original(backend, execution_arn)
            if execution_arn in self._tracked:
                self._stops.append((execution_arn, joined_reason(error, cause)))
            return execution

    def _exited(self, execution_arn: str, exit: JobExit) -> None:
        with self._lock:
            self._exits.append((execution_arn, exit))

    # --- the player's thread ------------------------------------------------------------

    def poll(self) -> int:
        context, runner = self._attached()
        with self._lock:
            waiting = [tracked for tracked in self._tracked.values() if tracked.plan is None]
        happened = sum(self._claim(context, runner, tracked) for tracked in waiting)
        with self._lock:
            stops, self._stops = self._stops, []
        for execution_arn, reason in stops:
            if runner.stop(_runner_key(execution_arn), reason):
                context.say(KIND, f"{execution_arn} stopping: {reason}")
                happened += 1
        runner.poll()
        with self._lock:
            exits, self._exits = self._exits, []
        for execution_arn, exit in exits:
            self._finish(context, execution_arn, exit)
        return happened + len(exits)

    def _claim(self, context: PlayerContext, runner: JobRunner, tracked: _Tracked) -> int:
        execution = tracked.execution
        plan = context.plan_for(KIND, str(token_from_name(execution.name)))
        if plan is None:
            if time.monotonic() - tracked.seen_at > PLAN_GRACE_SECONDS:
                with self._lock:
                    self._tracked.pop(execution.execution_arn, None)
            return 0
        with self._lock:
            tracked.plan = plan
            setattr(execution, _PLAYED, True)
            status = execution.status
        if status != "RUNNING":
            # Stopped before the player got to it: nothing runs, only the end is told.
            self._put(context, execution)
            context.say(KIND, f"{execution.name} {status} before it started")
            with self._lock:
                self._tracked.pop(execution.execution_arn, None)
            return 1
        self._put(context, execution)
        context.say(KIND, f"{execution.name} RUNNING")
        execution_arn = execution.execution_arn
        runner.start(
            _runner_key(execution_arn), plan, lambda exit: self._exited(execution_arn, exit)
        )
        return 1

    def _finish(self, context: PlayerContext, execution_arn: str, exit: JobExit) -> None:
        with self._lock:
            tracked = self._tracked.get(execution_arn)
        if tracked is None or tracked.plan is None:
            return
        stream = _write_local_log(context, tracked.plan, exit)
        execution = tracked.execution
        with self._lock:
            # A StopExecution that came first has closed the execution already: it wins.
            if execution.status == "RUNNING":
                _close(execution, exit)
            self._tracked.pop(execution_arn, None)
        self._put(context, execution, at=exit.ended_at)
        context.say(KIND, _summary(execution, exit, stream))

    def _put(self, context: PlayerContext, execution: Any, at: datetime | None = None) -> None:
        context.put_event(
            SOURCE,
            DETAIL_TYPE,
            event_detail(execution),
            resources=[execution.execution_arn],
            time=at,
        )

    def _attached(self) -> tuple[PlayerContext, JobRunner]:
        if self._context is None or self._runner is None:
            raise RuntimeError("the Step Functions player is not installed")
        return self._context, self._runner

    # --- stand-in resources -------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        """The state machine ``state_machine_arn`` names, as a one-Pass-state stand-in."""
        context, _ = self._attached()
        arn = _concrete(target.get("state_machine_arn"))
        if arn is None:
            return []
        parts = arn.split(":")
        if len(parts) < 7 or parts[2] != "states" or parts[5] != "stateMachine":
            return [f"stepfunctions state machine {arn!r} not created: not a state machine ARN"]
        if parts[3] != context.region or parts[4] != context.account_id:
            return [
                f"stepfunctions state machine {arn} not created: it is in account "
                f"{parts[4]}, region {parts[3]}; the local cloud is account "
                f"{context.account_id}, region {context.region}"
            ]
        machine_arn = ":".join(parts[:7])  # executions run on the machine, not a qualifier
        sfn = _client(context, "stepfunctions")
        with contextlib.suppress(sfn.exceptions.StateMachineDoesNotExist):
            sfn.describe_state_machine(stateMachineArn=machine_arn)
            return []
        created, role_arn = _ensure_role(context)
        sfn.create_state_machine(
            name=parts[6], definition=json.dumps(STAND_IN_DEFINITION), roleArn=role_arn
        )
        return [*created, f"stepfunctions state machine {parts[6]} (a Pass-state stand-in)"]


# --- moto's execution -----------------------------------------------------------------------


def _close(execution: Any, exit: JobExit) -> None:
    """Write the job's outcome into the execution; the status goes last, so a concurrent
    DescribeExecution sees either RUNNING or the whole outcome."""
    if exit.stopped is not None:
        status, error, cause = "ABORTED", STOPPED_ERROR, exit.stopped
    elif exit.exit_code == 0:
        # The stand-in's ``local.output``; a command's output comes in a later issue
        # (`skydag output set`), and an execution always ends with one.
        output = "{}" if exit.output is None else json.dumps(exit.output)
        status, error, cause = "SUCCEEDED", None, None
        execution.output = output
        execution.output_details = {"included": True}
    else:
        status, error = "FAILED", FAILED_ERROR
        cause = failure_cause(exit)
    execution.error = error
    execution.cause = cause
    execution.stop_date = _naive_utc(exit.ended_at)
    execution.status = status


def failure_cause(exit: JobExit) -> str:
    """What a failed execution's cause says: the exit code and the output's last line."""
    tail = output_tail(exit.log_path)
    cause = f"the local job exited with code {exit.exit_code}"
    return f"{cause}: {tail}" if tail else cause


def event_detail(execution: Any) -> dict[str, Any]:
    """The detail of a "Step Functions Execution Status Change" event, as AWS gives it."""
    status = str(execution.status)
    finished = status in _FINISHED
    output = execution.output if status == "SUCCEEDED" else None
    return {
        "executionArn": execution.execution_arn,
        "stateMachineArn": execution.state_machine_arn,
        "name": execution.name,
        "status": status,
        "startDate": _epoch_ms(execution.start_date),
        "stopDate": _epoch_ms(execution.stop_date) if finished else None,
        "input": execution.execution_input,
        "inputDetails": {"included": True},
        "output": output,
        "outputDetails": {"included": True} if output is not None else None,
        "error": (execution.error or None) if finished else None,
        "cause": (execution.cause or None) if finished else None,
    }


def joined_reason(error: str | None, cause: str | None) -> str:
    return ": ".join(part for part in (error, cause) if part) or "StopExecution"


def _summary(execution: Any, exit: JobExit, stream: str) -> str:
    status = str(execution.status)
    if status == "SUCCEEDED":
        return f"{execution.name} SUCCEEDED"
    reason = joined_reason(execution.error, execution.cause)
    where = exit.log_path or f"{joblogs.LOCAL_LOG_GROUP} {stream}"
    return f"{execution.name} {status}: {reason} (exit code {exit.exit_code}, log: {where})"


# --- helpers ---------------------------------------------------------------------------------


def _runner_key(execution_arn: str) -> str:
    # The runner is shared by every player: its keys carry the kind.
    return f"{KIND}:{execution_arn}"


def _write_local_log(context: PlayerContext, plan: LocalPlan, exit: JobExit) -> str:
    """The try's output (or a note on the stand-in) in the local cloud's own stream."""
    who = plan.identity
    stream = joblogs.local_stream(who.dag_id, who.run_id, who.task_id, who.try_number)
    context.write_log(joblogs.LOCAL_LOG_GROUP, stream, log_text(exit))
    return stream


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


def _ensure_role(context: PlayerContext) -> tuple[list[str], str]:
    iam = _client(context, "iam")
    try:
        role = iam.get_role(RoleName=STAND_IN_ROLE)["Role"]
        return [], str(role["Arn"])
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(
            RoleName=STAND_IN_ROLE, AssumeRolePolicyDocument=json.dumps(_TRUST_POLICY)
        )["Role"]
        return [f"iam role {STAND_IN_ROLE} (Step Functions role)"], str(role["Arn"])


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


def _epoch_ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)
