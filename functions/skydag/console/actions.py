"""The console's actions: each form becomes the very command the CLI sends (through the
same functions), so the scheduler stays the only writer and refuses or accepts alike.

Every action returns what the page confirms (``Done``) or raises ``CliError`` with the
one line the CLI would print.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skydag.cli.remote import CliError, UsageError

if TYPE_CHECKING:
    from skydag.cli.remote import Remote

CANCEL_REASON = "cancelled from the console"


@dataclass(frozen=True)
class Done:
    """What an action did, for the page: a sentence, the event sent (None for a dry run
    or when nothing was needed) and anything more to list."""

    message: str
    event_id: str | None = None
    items: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "event_id": self.event_id,
            "items": list(self.items),
            "detail": dict(self.detail),
        }


def _flag(form: Mapping[str, str], name: str) -> bool:
    return form.get(name, "").lower() in ("1", "true", "on", "yes")


def trigger(remote: Remote, dag_id: str, form: Mapping[str, str]) -> Done:
    from skydag.cli.remote import parse_json_object, require_dag
    from skydag.cli.trigger import request_run
    from skydag.limits import LimitError, check_run_id
    from skydag.spec.params import conf_problems

    text = form.get("conf", "").strip()
    conf = parse_json_object(text, "conf") if text else {}
    run_id = form.get("run_id", "").strip() or None
    if run_id is not None:
        try:
            check_run_id(run_id, "run id")
        except LimitError as error:
            raise UsageError(str(error)) from error
    head = require_dag(remote, dag_id)
    assert head.current_version is not None
    spec = remote.repos.dags.load_spec(dag_id, head.current_version)
    problems = conf_problems(spec.params, conf)
    if problems:
        raise UsageError("; ".join(problems))
    sent = request_run(remote, dag_id, conf, run_id)
    started = sent["detail"]["run_id"]
    waits = " (the DAG is paused: it waits, queued)" if head.paused else ""
    return Done(f"asked the scheduler to start run {started}{waits}", sent["event_id"], (), sent)


def clear(remote: Remote, dag_id: str, run_id: str, task_id: str, form: Mapping[str, str]) -> Done:
    from skydag.cli.tasks import clear_task

    downstream = _flag(form, "downstream")
    sent = clear_task(
        remote,
        dag_id,
        run_id,
        task_id,
        downstream=downstream,
        reset_state=_flag(form, "reset_state"),
    )
    which = f"{task_id} and its downstream tasks" if downstream else task_id
    return Done(f"asked the scheduler to clear {which}", sent["event_id"], (), sent)


def mark(remote: Remote, dag_id: str, run_id: str, task_id: str, form: Mapping[str, str]) -> Done:
    from skydag.cli.tasks import mark_task

    state = form.get("state", "")
    if state not in ("success", "failed"):
        raise UsageError(f"mark: state must be success or failed, not {state!r}")
    sent = mark_task(remote, dag_id, run_id, task_id, state)
    if sent is None:
        return Done(f"task {task_id} is already {state}")
    return Done(f"asked the scheduler to mark {task_id} {state}", sent["event_id"], (), sent)


def cancel(remote: Remote, dag_id: str, run_id: str, form: Mapping[str, str]) -> Done:
    from skydag.cli.runs import cancel_run

    reason = form.get("reason", "").strip() or CANCEL_REASON
    sent = cancel_run(remote, dag_id, run_id, reason)
    if sent is None:
        return Done(f"run {run_id} is already cancelled")
    return Done(f"asked the scheduler to cancel run {run_id}", sent["event_id"], (), sent)


def pause(remote: Remote, dag_id: str, *, paused: bool) -> Done:
    from skydag.cli.dags import set_paused

    sent = set_paused(remote, dag_id, paused=paused)
    verb = "pause" if paused else "unpause"
    return Done(f"asked the scheduler to {verb} DAG {dag_id}", sent["event_id"], (), sent)


def backfill(remote: Remote, dag_id: str, form: Mapping[str, str]) -> Done:
    """With ``dry_run``: the dates it would create and those it would skip, nothing sent.
    The plan is the scheduler's own (``cli.trigger.plan_backfill``)."""
    import secrets

    from skydag.cli.trigger import parse_moment, plan_backfill, request_backfill
    from skydag.engine.backfill import Reprocess

    start = parse_moment(form.get("start", "").strip(), "start")
    end = parse_moment(form.get("end", "").strip(), "end")
    if start > end:
        raise UsageError(f"start {start.isoformat()} is after end {end.isoformat()}")
    try:
        reprocess = Reprocess(form.get("reprocess", "none").strip() or "none")
    except ValueError:
        raise UsageError(
            f"reprocess {form.get('reprocess')!r}: expected one of none, failed, all"
        ) from None
    backfill_id = secrets.token_hex(4)
    plan = plan_backfill(remote, dag_id, start, end, reprocess=reprocess, backfill_id=backfill_id)
    if _flag(form, "dry_run"):
        return Done(
            f"dry run: {len(plan.create_dates)} run(s) to create, {len(plan.skip_dates)} to "
            "skip; nothing sent",
            None,
            tuple(plan.create_dates) + tuple(f"{d} (has a run: skipped)" for d in plan.skip_dates),
            {"dag": dag_id, "create": plan.create_dates, "skip": plan.skip_dates},
        )
    if not plan.create_dates:
        return Done(f"nothing to create: every date has a run ({len(plan.skip_dates)} skipped)")
    sent = request_backfill(
        remote, dag_id, start, end, reprocess=reprocess, backfill_id=backfill_id
    )
    return Done(
        f"asked the scheduler for {len(plan.run_ids)} backfill run(s)",
        sent["event_id"],
        tuple(plan.run_ids),
        sent,
    )


__all__ = ["CliError", "Done", "backfill", "cancel", "clear", "mark", "pause", "trigger"]
