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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skydag import joblogs
from skydag.localcloud.players._common import (
    TrackedJobsPlayer,
    ensure_role,
    exit_reason,
    naive_utc,
    output_text,
    rendered,
    write_local_log,
)
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.targets.aws.stepfunctions import DETAIL_TYPE, SOURCE
from skydag.targets.base import token_from_name

KIND = "stepfunctions"
# The most of a job's output its log streams get (all of it stays in its file).
MAX_LOG_BYTES = 1_000_000
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
_FINISHED = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
# Marks the executions the player runs, on moto's own objects (they outlive the tracking).
_PLAYED = "skydag_played"


@dataclass
class _Tracked:
    """An execution with a skydag-style name, from StartExecution to its last event."""

    execution: Any  # moto's Execution
    seen_at: float
    plan: LocalPlan | None = None

    @property
    def job_id(self) -> str:
        return str(self.execution.execution_arn)

    @property
    def name(self) -> str:
        return str(self.execution.name)


class StepFunctionsPlayer(TrackedJobsPlayer[_Tracked]):
    """Plays Step Functions executions of the state machines in moto; its jobs' ids are
    the executions' ARNs."""

    kind = KIND
    title = "the Step Functions player"

    # --- installing ---------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.core.responses import ActionResult
        from moto.stepfunctions.models import StepFunctionBackend
        from moto.stepfunctions.responses import StepFunctionResponse

        self._attach(context, runner)
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

        self._patches.replace(StepFunctionBackend, "start_execution", start_execution)
        self._patches.replace(StepFunctionBackend, "stop_execution", stop_execution)
        self._patches.replace(StepFunctionResponse, "stop_execution", stop_execution_response)

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

    # --- the player's thread ------------------------------------------------------------

    def _start(self, tracked: _Tracked, plan: LocalPlan) -> int:
        execution = tracked.execution
        with self._lock:
            tracked.plan = plan
            setattr(execution, _PLAYED, True)
            status = execution.status
        if status != "RUNNING":
            # Stopped before the player got to it: nothing runs, only the end is told.
            self._put(execution)
            self._say(f"{execution.name} {status} before it started")
            with self._lock:
                self._tracked.pop(execution.execution_arn, None)
            return 1
        self._put(execution)
        self._say(f"{execution.name} RUNNING")
        self._run(tracked.job_id, plan)
        return 1

    def _finish(self, tracked: _Tracked, plan: LocalPlan, exit_: JobExit) -> None:
        text = output_text(exit_, max_bytes=MAX_LOG_BYTES, tell_stop=True)
        stream = write_local_log(self.context, plan, text)
        execution = tracked.execution
        with self._lock:
            # A StopExecution that came first has closed the execution already: it wins.
            if execution.status == "RUNNING":
                _close(execution, exit_)
            self._tracked.pop(tracked.job_id, None)
        self._put(execution, at=exit_.ended_at)
        self._say(_summary(execution, exit_, stream))

    def _put(self, execution: Any, at: datetime | None = None) -> None:
        self.context.put_event(
            SOURCE,
            DETAIL_TYPE,
            event_detail(execution),
            resources=[execution.execution_arn],
            time=at,
        )

    # --- stand-in resources -------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        """The state machine ``state_machine_arn`` names, as a one-Pass-state stand-in."""
        context = self.context
        arn = rendered(target.get("state_machine_arn"))
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
        sfn = self._client("stepfunctions")
        with contextlib.suppress(sfn.exceptions.StateMachineDoesNotExist):
            sfn.describe_state_machine(stateMachineArn=machine_arn)
            return []
        created: list[str] = []
        role_arn = ensure_role(
            context, STAND_IN_ROLE, "states.amazonaws.com", "Step Functions role", created
        )
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
    execution.stop_date = naive_utc(exit.ended_at)
    execution.status = status


def failure_cause(exit: JobExit) -> str:
    """What a failed execution's cause says: the exit code and the output's last line."""
    return exit_reason(exit)


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


def _epoch_ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)
