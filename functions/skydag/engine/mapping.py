"""Dynamic task mapping (``for_each``): the pure decisions.

A mapped task is one record (``map_index`` None, "the mapped task") and one record per
item (its instances, keyed ``<task>:<index>``). The mapped task is what the DAG sees: one
upstream for its downstream tasks, one task for its run's completion. When its trigger
rule lets it run it expands (pending -> running, with ``map_count``), its instances are
created pending, and each instance runs through the ordinary path (queued, running, its
own retries). At most ``max_parallel`` run at once: the first ``max_parallel`` are created
released, and each instance's finish releases the instance ``max_parallel`` places after
it -- ``max_parallel`` chains, no counter to contend on. Each instance's finish is counted
once on the mapped task (``map_done``, ``map_failed``); when all are counted the mapped
task ends, and its ordinary finish path reports it downstream.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skydag.engine.models import TaskInstance
from skydag.engine.scheduler import decide_next, dispatch_transition
from skydag.engine.states import FAILED_TASK_STATES, Cause, TaskState
from skydag.engine.transitions import Decision, Transition
from skydag.spec.models import DagSpec

T = TaskState


def is_mapped(spec: DagSpec, task_id: str) -> bool:
    return spec.tasks[task_id].for_each is not None


def dispatches_now(spec: DagSpec, decided: TaskInstance | None) -> bool:
    """Whether a task just decided is a queued try whose job the deciding invocation
    starts itself (``TaskProgress.report_downstream``); a mapped task expands, and its
    instances start, from their own changes."""
    return (
        decided is not None
        and decided.state is TaskState.QUEUED
        and decided.map_index is None
        and not is_mapped(spec, decided.task_id)
    )


def is_mapped_task(spec: DagSpec, ti: TaskInstance) -> bool:
    """The mapped task itself (not one of its instances)."""
    return ti.map_index is None and is_mapped(spec, ti.task_id)


def max_parallel(spec: DagSpec, task_id: str) -> int:
    """Instances of the task running at once (default: the DAG's max_active_tasks)."""
    return spec.tasks[task_id].max_parallel or spec.max_active_tasks


def expansion_wanted(decision: Decision) -> bool:
    """Whether the ordinary decision on a pending mapped task is to start it: then it
    expands instead (its for_each is rendered first)."""
    transition = decision.transition
    return transition is not None and transition.dst is T.QUEUED


def decide_expand(
    ti: TaskInstance, items: list[Any] | None, problem: str | None, now: datetime
) -> Decision:
    """A ready mapped task with its for_each rendered: fails when it is no usable list
    (``problem``; a retry would render the same), is skipped for an empty list, or runs
    with one instance per item (a new expansion: its try number)."""
    if ti.state is not T.PENDING or ti.map_index is not None:
        return Decision.ignore(f"task is {ti.state.value}")
    if problem is not None or items is None:
        reason = problem or "for_each rendered nothing"
        changes = {"reason": reason, "ended_at": now}
        return Decision.accept(
            Transition(ti.task_id, T.PENDING, T.FAILED, Cause.FAILED, ti.version, changes),
            reason,
        )
    if not items:
        reason = "for_each is an empty list"
        changes = {"reason": reason, "ended_at": now}
        return Decision.accept(
            Transition(ti.task_id, T.PENDING, T.SKIPPED, Cause.SKIPPED, ti.version, changes),
            reason,
        )
    changes = {
        "try_number": ti.try_number + 1,
        "map_count": len(items),
        "map_done": 0,
        "map_failed": 0,
        "queued_at": now,
        "started_at": now,
        "ended_at": None,
        "reason": None,
        "output": None,
    }
    return Decision.accept(
        Transition(ti.task_id, T.PENDING, T.RUNNING, Cause.EXPAND, ti.version, changes),
        f"expanded into {len(items)} instances",
    )


def new_instances(spec: DagSpec, mapped: TaskInstance, items: list[Any]) -> list[TaskInstance]:
    """The pending instances of a mapped task's current expansion, in item order; the
    first ``max_parallel`` may run at once."""
    parallel = max_parallel(spec, mapped.task_id)
    return [
        TaskInstance(
            dag_id=mapped.dag_id,
            run_id=mapped.run_id,
            task_id=mapped.task_id,
            dag_version=mapped.dag_version,
            map_index=index,
            expansion=mapped.try_number,
            item=item,
            released=index < parallel,
        )
        for index, item in enumerate(items)
    ]


def is_expanding(old: TaskInstance | None, new: TaskInstance) -> bool:
    """Whether a change of a mapped task is its expansion (its instances are to be made)."""
    return (
        new.map_index is None
        and new.map_count is not None
        and new.state is T.RUNNING
        and (old is None or old.state is T.PENDING)
    )


def decide_instance_next(spec: DagSpec, ti: TaskInstance, now: datetime) -> Decision:
    """An instance runs once released (max_parallel); its retries are its own."""
    if ti.state is T.PENDING:
        if not ti.released:
            return Decision.ignore("waiting for a max_parallel place")
        return Decision.accept(dispatch_transition(spec, ti, now), "released")
    return decide_next(spec, ti, now)


def successor(spec: DagSpec, mapped: TaskInstance, ti: TaskInstance) -> int | None:
    """The index an instance's finish releases: ``max_parallel`` places after it."""
    assert ti.map_index is not None
    after = ti.map_index + max_parallel(spec, ti.task_id)
    return after if mapped.map_count is not None and after < mapped.map_count else None


def counts_as_failed_instance(state: TaskState) -> bool:
    return state in FAILED_TASK_STATES


def belongs(mapped: TaskInstance, ti: TaskInstance) -> bool:
    """Whether an instance is of the mapped task's current expansion."""
    return (
        ti.map_index is not None
        and ti.expansion == mapped.try_number
        and mapped.map_count is not None
        and ti.map_index < mapped.map_count
    )


def decide_mapped_finish(ti: TaskInstance, now: datetime) -> Decision:
    """A running mapped task ends once each of its instances finished: success when all
    succeeded, failed when one failed for good (after its retries)."""
    if ti.state is not T.RUNNING or ti.map_count is None:
        return Decision.ignore(f"task is {ti.state.value}")
    if ti.map_done < ti.map_count:
        return Decision.ignore(f"{ti.map_done} of {ti.map_count} instances finished")
    changes: dict[str, Any] = {"ended_at": now}
    if ti.map_failed:
        reason = f"{ti.map_failed} of {ti.map_count} instances failed"
        changes["reason"] = reason
        return Decision.accept(
            Transition(ti.task_id, T.RUNNING, T.FAILED, Cause.FAILED, ti.version, changes),
            reason,
        )
    return Decision.accept(
        Transition(ti.task_id, T.RUNNING, T.SUCCESS, Cause.SUCCEEDED, ti.version, changes),
        f"all {ti.map_count} instances succeeded",
    )


def decide_reopen(ti: TaskInstance, command_id: str | None = None) -> Decision:
    """One instance of a finished mapped task is cleared: the mapped task runs again until
    that instance finishes (its other instances keep their outcomes)."""
    from skydag.engine.commands import already_applied, applied_changes

    if already_applied(ti, command_id):
        return Decision.ignore(f"command {command_id} already reopened it")
    if ti.state not in (T.SUCCESS, T.FAILED) or ti.map_count is None:
        return Decision.ignore(f"task is {ti.state.value}")
    changes = {"ended_at": None, "reason": None, **applied_changes(ti, command_id)}
    return Decision.accept(
        Transition(ti.task_id, ti.state, T.RUNNING, Cause.CLEAR, ti.version, changes),
        "an instance was cleared",
    )


def decide_expansion_failed(
    ti: TaskInstance, expansion: int, reason: str, now: datetime
) -> Decision:
    """The instances of an expansion could not be made as decided (its for_each renders
    otherwise now): the mapped task fails with the reason, unless it moved on."""
    if ti.state is not T.RUNNING or ti.try_number != expansion:
        return Decision.ignore(f"task is {ti.state.value}, try {ti.try_number}")
    changes = {"reason": reason, "ended_at": now}
    return Decision.accept(
        Transition(ti.task_id, T.RUNNING, T.FAILED, Cause.FAILED, ti.version, changes), reason
    )
