"""A try's job as the targets see it: the rendered dispatch request, the handle to find
or cancel the job, and the environment a job learns its identity from."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from skydag.engine.conditions import Condition, judge_condition
from skydag.engine.mapping import belongs, is_mapped
from skydag.engine.models import DagRun, TaskInstance
from skydag.engine.scheduler import merged_params
from skydag.ports.store import Store, instance_scope, task_scope
from skydag.service.core import Scheduler
from skydag.spec.models import DagSpec, TaskSpec
from skydag.spec.templates import TemplateRenderError, render_string, render_value
from skydag.targets.base import DispatchError, DispatchRequest, JobRef

log = logging.getLogger("skydag.scheduler")


class Jobs:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def dispatch_request(
        self, spec: DagSpec, run: DagRun, ti: TaskInstance, *, first_call: bool = False
    ) -> DispatchRequest:
        """The try's dispatch, its target and local blocks rendered for this try
        (``first_call``: see ``DispatchRequest``)."""
        task = spec.tasks[ti.task_id]
        context = self.template_context(spec, run, ti)
        # Errors name the field as the DAG file does: batch.command[2], local.environment.X.
        kind = task.target_kind
        target = render_value(task.target.model_dump(by_alias=True, mode="json"), context, kind)
        local = (
            render_value(task.local.model_dump(mode="json"), context, "local")
            if task.local
            else None
        )
        assert ti.dispatch_token is not None
        return DispatchRequest(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            token=ti.dispatch_token,
            kind=task.target_kind,
            target=target,
            local=local,
            timeout=spec.effective_policy(ti.task_id).timeout,
            environment=job_environment(ti, self.scheduler.state_table),
            signal=ti.signal,
            emit_sources=tuple(spec.emit_sources),
            map_index=ti.map_index,
            first_call=first_call,
        )

    def template_context(self, spec: DagSpec, run: DagRun, ti: TaskInstance) -> dict[str, Any]:
        return template_context(self.scheduler.repos, spec, run, ti)

    def render_condition(self, spec: DagSpec, run: DagRun, ti: TaskInstance) -> Condition:
        """The task's ``when:`` rendered in the context its job would see (the try it
        would start: ``task.try_number`` is the next one)."""
        when = spec.tasks[ti.task_id].when
        if when is None or isinstance(when, bool):
            return judge_condition(bool(when) if when is not None else True)
        upcoming = replace(ti, try_number=ti.try_number + 1)
        try:
            rendered = render_string(when, self.template_context(spec, run, upcoming), "when")
        except TemplateRenderError as error:
            return Condition.failed(error.message)
        return judge_condition(rendered)

    def job_ref(
        self, spec: DagSpec, ti: TaskInstance, job: Mapping[str, Any] | None = None
    ) -> JobRef:
        """The handle on a try's job (the current try's, or ``job``: a try left behind,
        as ``superseded_job`` keeps it). Without a job id it carries the rendered target
        block, so the target can find the job by its token where it lives."""
        try_number = int(job["try_number"] or 0) if job else ti.try_number
        job_id = job.get("job_id") if job else ti.job_id
        token = job.get("token") if job else ti.dispatch_token
        target = None
        if job_id is None and token is not None and ti.dispatch_token is not None:
            run = self.scheduler.repos.runs.find(ti.dag_id, ti.run_id)
            if run is not None:
                with contextlib.suppress(TemplateRenderError):
                    target = self.dispatch_request(spec, run, ti).target
        return JobRef(
            ti.dag_id, ti.run_id, ti.task_id, try_number, job_id, token, target, ti.map_index
        )

    def cancel(self, spec: DagSpec, job: JobRef, reason: str) -> None:
        """Cancel a job (idempotent). A retryable failure (throttling, a service error)
        raises, so the change that asked for the cancel is delivered again; a job the
        service refuses to cancel is logged."""
        try:
            self.scheduler.targets.target_for(spec.tasks[job.task_id].target_kind).cancel(
                job, reason
            )
        except DispatchError as error:
            if error.retryable:
                raise
            log.warning(
                "could not cancel %s/%s/%s try %s: %s",
                job.dag_id,
                job.run_id,
                job.task_id,
                job.try_number,
                error.reason,
            )


def template_context(repos: Store, spec: DagSpec, run: DagRun, ti: TaskInstance) -> dict[str, Any]:
    """What a try's templates see (the console shows a target rendered with it too)."""

    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    task: dict[str, Any] = {"id": ti.task_id, "try_number": ti.try_number}
    mapped: dict[str, Any] = {}
    if ti.map_index is not None:
        # Only an instance of a mapped task has these (the loader refuses them elsewhere).
        task["map_index"] = ti.map_index
        mapped["item"] = ti.item
    return {
        **mapped,
        "dag": spec.dag,  # the contract: `dag` is the id
        "run": {
            "id": run.run_id,
            "type": run.run_type.value,
            "logical_date": iso(run.logical_date),
            "data_interval_start": iso(run.data_interval_start),
            "data_interval_end": iso(run.data_interval_end),
            "conf": dict(run.conf),
        },
        "params": merged_params(spec, run),
        "trigger": dict(run.trigger or {}),
        "signal": dict(ti.signal or {}),
        "task": task,
        "state": _task_state(repos, spec, ti),
        "outputs": _upstream_outputs(repos, spec, ti),
    }


def _upstream_outputs(repos: Store, spec: DagSpec, ti: TaskInstance) -> dict[str, Any]:
    """``outputs.<task>``: what upstream jobs returned (Step Functions output, Lambda
    response, a wait task's signal detail, a job's ``skydag output set``). Read only when
    a template mentions it."""
    task = spec.tasks[ti.task_id]
    if not task.depends_on or "outputs" not in _template_text(task):
        return {}
    outputs: dict[str, Any] = {}
    for upstream in repos.tasks.get_many(ti.dag_id, ti.run_id, task.depends_on):
        if is_mapped(spec, upstream.task_id):
            # A mapped upstream's output: its instances' outputs, in item order.
            outputs[upstream.task_id] = _mapped_outputs(repos, upstream)
        elif upstream.output is not None:
            outputs[upstream.task_id] = upstream.output
    return outputs


def _mapped_outputs(repos: Store, mapped: TaskInstance) -> list[Any]:
    if mapped.map_count is None:
        return []
    instances = repos.tasks.list_instances(mapped.dag_id, mapped.run_id, mapped.task_id)
    by_index = {ti.map_index: ti.output for ti in instances if belongs(mapped, ti)}
    return [by_index.get(index) for index in range(mapped.map_count)]


def _task_state(repos: Store, spec: DagSpec, ti: TaskInstance) -> dict[str, Any]:
    """The task's stored state for templates: its watermarks (task scope) overlaid by
    this task instance's checkpoints. Read only when a template mentions ``state``."""
    if "state" not in _template_text(spec.tasks[ti.task_id]):
        return {}
    merged = repos.state.get_all(task_scope(ti.dag_id, ti.task_id))
    merged.update(repos.state.get_all(instance_scope(ti.dag_id, ti.run_id, ti.instance_id)))
    return merged


def _template_text(task: TaskSpec) -> str:
    """The task's templated blocks as text: a cheap test of which context they use."""
    local = task.local.model_dump_json() if task.local else ""
    when = task.when if isinstance(task.when, str) else ""
    for_each = json.dumps(task.for_each) if task.for_each is not None else ""
    return task.target.model_dump_json() + local + when + for_each


def job_environment(ti: TaskInstance, state_table: str | None) -> dict[str, str]:
    """What a job learns of its identity (and where its task state lives)."""
    env = {
        "SKYDAG_DAG": ti.dag_id,
        "SKYDAG_RUN": ti.run_id,
        "SKYDAG_TASK": ti.task_id,
        "SKYDAG_TRY": str(ti.try_number),
    }
    if ti.map_index is not None:
        env["SKYDAG_MAP_INDEX"] = str(ti.map_index)
    if state_table:
        env["SKYDAG_TASK_STATE_TABLE"] = state_table
    return env
