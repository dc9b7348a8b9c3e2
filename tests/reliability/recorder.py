"""What the simulator watches while a scenario runs.

- ``JobCalls`` (the local cloud's call watcher): every call that starts a remote job —
  SubmitJob, RunTask, StartExecution, Invoke, AddJobFlowSteps, StartJobRun — counted by
  the dispatch token found in the job's name, ``startedBy`` or payload, when the service
  accepted it (a StartExecution refused because the name exists started nothing). A crash
  injected right after an Invoke is noted: Lambda has no idempotency token, so the retried
  dispatch invokes again, as docs/targets.md says.
- ``Mirror`` (the local cloud's stream observer and task listener): runs and task
  instances as the tables' streams carry them, in commit order. The driver reads its
  conditions from it (no AWS call per check) and it measures the concurrency limits at
  every change: runs ``running`` per DAG, tasks ``queued``/``running`` per run.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skydag.engine.models import DagRun, TaskInstance
from skydag.engine.states import RunState, TaskState
from skydag.targets.base import token_from_name

from .faults import CallStatus

log = logging.getLogger("skydag.reliability")

# (service endpoint prefix, operation) -> the kind of job it starts.
DISPATCH_CALLS = {
    ("batch", "SubmitJob"): "batch",
    ("ecs", "RunTask"): "ecs",
    ("states", "StartExecution"): "stepfunctions",
    ("lambda", "Invoke"): "lambda",
    ("elasticmapreduce", "AddJobFlowSteps"): "emr",
    ("emr-serverless", "StartJobRun"): "emr_serverless",
}


def dispatch_tokens(service: str, operation: str, body: Any) -> list[str]:
    """The dispatch tokens of the jobs a call starts (none for any other call)."""
    if (service, operation) not in DISPATCH_CALLS or not isinstance(body, Mapping):
        return []
    if operation == "Invoke":
        identity = body.get("skydag")
        token = identity.get("token") if isinstance(identity, Mapping) else None
        return [token] if isinstance(token, str) else []
    if operation == "AddJobFlowSteps":
        names = [step.get("Name") for step in body.get("Steps") or []]
    elif operation == "RunTask":
        names = [body.get("startedBy")]
    elif operation == "SubmitJob":
        names = [body.get("jobName")]
    else:
        names = [body.get("name")]
    return [token for name in names if (token := token_from_name(name)) is not None]


# Where each service's answer names the job it started (or the one it already had).
JOB_ID_FIELDS = ("jobId", "executionArn", "jobRunId", "StepIds", "tasks")


def job_ids(response: Mapping[str, Any]) -> list[str]:
    """The jobs a dispatch call's answer names (Invoke: its request id)."""
    for name in JOB_ID_FIELDS:
        value = response.get(name)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [str(v.get("taskArn") if isinstance(v, Mapping) else v) for v in value]
    request_id = (response.get("ResponseMetadata") or {}).get("RequestId")
    return [str(request_id)] if request_id else []


@dataclass
class JobCalls:
    """The call watcher: the distinct jobs started per dispatch token."""

    status: CallStatus
    jobs: dict[str, set[str]] = field(default_factory=dict)
    # Tokens whose Invoke was followed at once by an injected crash: each allows Lambda one
    # more invocation of that try.
    crashed_invokes: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    # Invocations run concurrently: the last call's tokens are kept per thread (a crash is
    # noted on the thread of the invocation it ends), the counts under a lock.
    _last: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, service: str, operation: str, body: Any) -> None:
        tokens = dispatch_tokens(service, operation, body)
        self._last.tokens = tokens
        self._last.call = (service, operation)
        with self._lock:
            self.calls[f"{service}:{operation}"] += 1
            if not tokens or not 200 <= self.status.last < 300:
                return
            started = job_ids(self.status.response) or [f"{operation} #{sum(self.calls.values())}"]
            for index, token in enumerate(tokens):  # AddJobFlowSteps: StepIds in step order
                self.jobs.setdefault(token, set()).add(started[min(index, len(started) - 1)])

    def throttled_next(self) -> None:
        """An injected throttle refused the call that follows the last one: the invocation
        fails as a crash right after that call would (``FaultInjector.on_throttle``), so
        a Lambda Invoke just before it is repeated when its record is delivered again."""
        last = getattr(self._last, "call", None)
        if last is not None:
            self.crashed_after(*last)

    def crashed_after(self, service: str, operation: str) -> None:
        """An injected crash came right after this call (``FaultInjector.on_crash``)."""
        if (service, operation) == ("lambda", "Invoke"):
            with self._lock:
                for token in getattr(self._last, "tokens", []):
                    self.crashed_invokes[token] += 1


@dataclass
class Mirror:
    """Runs and task instances as the streams carry them (newest image per item)."""

    max_active_runs: Mapping[str, int]
    max_active_tasks: Mapping[str, int]
    runs: dict[tuple[str, str], DagRun] = field(default_factory=dict)
    tasks: dict[tuple[str, str, str], TaskInstance] = field(default_factory=dict)
    # Every time a limit was passed: (what, evidence).
    over_limits: list[tuple[str, str]] = field(default_factory=list)
    # (dag, run, task or None) -> state changes seen (a new state or a new try).
    changes: Counter[tuple[str, str, str | None]] = field(default_factory=Counter)

    def observer(
        self, then: Callable[[dict[str, Any]], None] | None
    ) -> Callable[[dict[str, Any]], None]:
        """A stream observer that sees run records, then calls the local cloud's own."""
        from skydag.store.repositories import run_from_image

        def observe(record: dict[str, Any]) -> None:
            image = (record.get("dynamodb") or {}).get("NewImage")
            if image and "task_id" not in image and "run_id" in image:
                try:
                    self.on_run(run_from_image(dict(image)))
                except (KeyError, TypeError, ValueError) as error:
                    log.warning("unreadable run image: %s", error)
            if then is not None:
                then(record)

        return observe

    def on_run(self, run: DagRun) -> None:
        before = self.runs.get((run.dag_id, run.run_id))
        if before is None or before.state is not run.state:
            self.changes[(run.dag_id, run.run_id, None)] += 1
        self.runs[(run.dag_id, run.run_id)] = run
        running = sorted(
            run_id
            for (dag_id, run_id), each in self.runs.items()
            if dag_id == run.dag_id and each.state is RunState.RUNNING
        )
        limit = self.max_active_runs.get(run.dag_id)
        if limit is not None and len(running) > limit:
            self.over_limits.append(
                (
                    "max_active_runs",
                    f"{run.dag_id}: {len(running)} runs running at once "
                    f"(limit {limit}): {', '.join(running)}",
                )
            )

    def on_task(self, old: TaskInstance | None, new: TaskInstance) -> None:
        """A ``LocalCloud.task_listeners`` entry."""
        before = self.tasks.get(new.key)
        if before is None or (before.state, before.try_number) != (new.state, new.try_number):
            self.changes[new.key] += 1
        self.tasks[new.key] = new
        active = sorted(
            task_id
            for (dag_id, run_id, task_id), each in self.tasks.items()
            if (dag_id, run_id) == (new.dag_id, new.run_id)
            and each.state in (TaskState.QUEUED, TaskState.RUNNING)
        )
        where = f"{new.dag_id}/{new.run_id}"
        limit = self.max_active_tasks.get(new.dag_id)
        if limit is not None and len(active) > limit:
            self.over_limits.append(
                (
                    "max_active_tasks",
                    f"{where}: {len(active)} tasks queued or running at once "
                    f"(limit {limit}): {', '.join(active)}",
                )
            )

    # --- what the driver asks -----------------------------------------------------------

    def run_state(self, dag_id: str, run_id: str) -> RunState | None:
        run = self.runs.get((dag_id, run_id))
        return run.state if run is not None else None

    def task(self, dag_id: str, run_id: str, task_id: str) -> TaskInstance | None:
        return self.tasks.get((dag_id, run_id, task_id))
