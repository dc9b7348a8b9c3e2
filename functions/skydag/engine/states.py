"""Task-instance and DagRun states, and the transition table: the one source of truth.

The engine's checks, the store's DynamoDB write conditions and the state diagram in
docs/states.md are all derived from ``TASK_TRANSITIONS`` and ``RUN_TRANSITIONS``.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UP_FOR_RETRY = "up_for_retry"
    STOPPED = "stopped"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Cause(StrEnum):
    """Why a transition happens; every edge of the table is labelled by its causes."""

    WAIT_FOR_SIGNAL = "wait_for_signal"  # upstreams satisfied, start_on pending
    DISPATCH = "dispatch"  # dispatch intent recorded
    SIGNAL = "signal"  # a start_on signal arrived
    STARTED = "started"  # the job reports it runs
    SUCCEEDED = "succeeded"  # the job reports success
    FAILED = "failed"  # the job reports failure, no tries left
    RETRY = "retry"  # the job failed with tries left
    TIMED_OUT = "timed_out"  # the task exceeded its timeout
    UPSTREAM_FAILED = "upstream_failed"  # its trigger rule can no longer be met
    SKIPPED = "skipped"  # its trigger rule says skip
    STOP = "stop"  # stop_on signal, run cancelled
    RESTART = "restart"  # restart_on signal: a new try
    MARK = "mark"  # a person marked the task success/failed
    CLEAR = "clear"  # a person cleared the task: a fresh start
    CONDITION = "condition"  # its `when:` rendered false (skipped) or could not render (failed)
    EXPAND = "expand"  # a mapped task (for_each) made its instances


T = TaskState
C = Cause

FINISHED_TASK_STATES: frozenset[TaskState] = frozenset(
    {T.SUCCESS, T.FAILED, T.STOPPED, T.UPSTREAM_FAILED, T.SKIPPED}
)
UNFINISHED_TASK_STATES: frozenset[TaskState] = frozenset(TaskState) - FINISHED_TASK_STATES
# States that hold a max_active_tasks slot: the job is (or is about to be) running.
ACTIVE_TASK_STATES: frozenset[TaskState] = frozenset({T.QUEUED, T.RUNNING})
# States a trigger rule counts as a failure of the upstream.
FAILED_TASK_STATES: frozenset[TaskState] = frozenset({T.FAILED, T.UPSTREAM_FAILED, T.STOPPED})

FINISHED_RUN_STATES: frozenset[RunState] = frozenset(
    {RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED}
)
UNFINISHED_RUN_STATES: frozenset[RunState] = frozenset(RunState) - FINISHED_RUN_STATES

_NOT_FINISHED = (T.PENDING, T.WAITING, T.QUEUED, T.RUNNING, T.UP_FOR_RETRY)

TASK_TRANSITIONS: dict[tuple[TaskState, TaskState], frozenset[Cause]] = {
    (T.PENDING, T.WAITING): frozenset({C.WAIT_FOR_SIGNAL}),
    (T.PENDING, T.QUEUED): frozenset({C.DISPATCH}),
    (T.PENDING, T.SKIPPED): frozenset({C.SKIPPED, C.CONDITION}),
    (T.PENDING, T.UPSTREAM_FAILED): frozenset({C.UPSTREAM_FAILED}),
    # A mapped task runs while its instances do; its for_each may render no list at all.
    (T.PENDING, T.RUNNING): frozenset({C.EXPAND}),
    (T.WAITING, T.QUEUED): frozenset({C.SIGNAL}),
    (T.WAITING, T.FAILED): frozenset({C.TIMED_OUT}),
    (T.QUEUED, T.RUNNING): frozenset({C.STARTED}),
    # Events are unordered: a short job's success may arrive before its "running".
    (T.QUEUED, T.SUCCESS): frozenset({C.SUCCEEDED}),
    (T.QUEUED, T.FAILED): frozenset({C.FAILED, C.TIMED_OUT}),
    (T.QUEUED, T.UP_FOR_RETRY): frozenset({C.RETRY}),
    (T.RUNNING, T.SUCCESS): frozenset({C.SUCCEEDED}),
    (T.RUNNING, T.FAILED): frozenset({C.FAILED, C.TIMED_OUT}),
    (T.RUNNING, T.UP_FOR_RETRY): frozenset({C.RETRY}),
    (T.RUNNING, T.QUEUED): frozenset({C.RESTART}),
    (T.UP_FOR_RETRY, T.QUEUED): frozenset({C.DISPATCH}),
    **{(s, T.STOPPED): frozenset({C.STOP}) for s in _NOT_FINISHED},
    **{(s, T.SUCCESS): frozenset({C.MARK}) for s in (T.PENDING, T.WAITING, T.UP_FOR_RETRY)},
    **{(s, T.FAILED): frozenset({C.MARK}) for s in (T.PENDING, T.UP_FOR_RETRY)},
    # Clearing is the only way out of a finished state.
    **{(s, T.PENDING): frozenset({C.CLEAR}) for s in FINISHED_TASK_STATES | {T.UP_FOR_RETRY}},
}

# Marking merges into existing edges rather than replacing them.
for _src in (T.QUEUED, T.RUNNING):
    for _dst in (T.SUCCESS, T.FAILED):
        TASK_TRANSITIONS[(_src, _dst)] = TASK_TRANSITIONS[(_src, _dst)] | {C.MARK}
TASK_TRANSITIONS[(T.WAITING, T.FAILED)] = TASK_TRANSITIONS[(T.WAITING, T.FAILED)] | {C.MARK}
# A task that cannot start: its `when:` cannot be judged, its for_each renders no list.
TASK_TRANSITIONS[(T.PENDING, T.FAILED)] = TASK_TRANSITIONS[(T.PENDING, T.FAILED)] | {
    C.CONDITION,
    C.FAILED,
}
# Clearing one instance of a finished mapped task reopens it (its others stay done).
for _src in (T.SUCCESS, T.FAILED):
    TASK_TRANSITIONS[(_src, T.RUNNING)] = frozenset({C.CLEAR})

RUN_TRANSITIONS: dict[tuple[RunState, RunState], frozenset[Cause]] = {
    (RunState.QUEUED, RunState.RUNNING): frozenset({C.DISPATCH}),
    (RunState.QUEUED, RunState.CANCELLED): frozenset({C.STOP}),
    (RunState.RUNNING, RunState.SUCCESS): frozenset({C.SUCCEEDED}),
    (RunState.RUNNING, RunState.FAILED): frozenset({C.FAILED}),
    (RunState.RUNNING, RunState.CANCELLED): frozenset({C.STOP}),
    # Clearing a task of a finished run reopens the run: queued, then started like any
    # queued run when a slot is free (never straight to running: see RunLifecycle.reopen).
    (RunState.SUCCESS, RunState.QUEUED): frozenset({C.CLEAR}),
    (RunState.FAILED, RunState.QUEUED): frozenset({C.CLEAR}),
}


def can_transition(src: TaskState, dst: TaskState, cause: Cause | None = None) -> bool:
    causes = TASK_TRANSITIONS.get((src, dst))
    if causes is None:
        return False
    return cause is None or cause in causes


def can_transition_run(src: RunState, dst: RunState, cause: Cause | None = None) -> bool:
    causes = RUN_TRANSITIONS.get((src, dst))
    if causes is None:
        return False
    return cause is None or cause in causes


def task_sources(dst: TaskState, cause: Cause) -> frozenset[TaskState]:
    """The states from which ``cause`` may lead to ``dst``: a write's condition."""
    return frozenset(
        s for (s, d), causes in TASK_TRANSITIONS.items() if d == dst and cause in causes
    )


def run_sources(dst: RunState, cause: Cause) -> frozenset[RunState]:
    return frozenset(
        s for (s, d), causes in RUN_TRANSITIONS.items() if d == dst and cause in causes
    )


def mermaid_diagram() -> str:
    """The task-instance state diagram, as written into docs/states.md."""
    lines = ["stateDiagram-v2", "    [*] --> pending"]
    for (src, dst), causes in sorted(TASK_TRANSITIONS.items()):
        label = ", ".join(sorted(causes))
        lines.append(f"    {src.value} --> {dst.value}: {label}")
    return "\n".join(lines) + "\n"


def _rewrite_diagram(path: str) -> None:
    """Replace the mermaid block of ``path`` with the current table's diagram."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    start = text.index("```mermaid\n") + len("```mermaid\n")
    end = text.index("```", start)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text[:start] + mermaid_diagram() + text[end:])


if __name__ == "__main__":
    import sys

    _rewrite_diagram(sys.argv[1])
