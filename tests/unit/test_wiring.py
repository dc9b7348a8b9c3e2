"""``skydag.wiring``: cheap to import (no CDK, no boto3), one fact per source and status,
and every asynchronous path ends in a dead-letter queue."""

from __future__ import annotations

import subprocess
import sys
import typing
from datetime import timedelta
from types import ModuleType

import pytest

from skydag import sources, wiring
from skydag.engine.rules import (
    ARM_REFRESH,
    DISPATCH_CHECK_AFTER,
    LONGEST_INVOCATION,
    LOOK_WINDOW,
    RECONCILE_EVERY,
    RUN_CHECK_AFTER,
    RUN_QUIET,
)
from skydag.targets.aws import batch, ecs, emr, emr_serverless, lambda_, stepfunctions
from skydag.wiring import Bus, RuleSpec


def _modules_after(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(result.stdout.split())


def _top_level(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def test_importing_wiring_loads_neither_cdk_nor_boto3() -> None:
    loaded = _top_level(_modules_after("import skydag.wiring"))
    assert "skydag" in loaded
    assert not loaded & {"aws_cdk", "constructs", "jsii", "boto3", "botocore", "pydantic"}


def test_the_rules_from_target_modules_load_them_on_first_use_only() -> None:
    loaded = _top_level(
        _modules_after("import skydag.wiring as w\nassert w.BATCH_JOB_STATE_RULE.pattern")
    )
    assert "botocore" in loaded
    assert not loaded & {"aws_cdk", "constructs", "jsii", "boto3"}


def test_rules_are_module_singletons() -> None:
    everything = wiring.rules("bucket", "dags/")
    again = wiring.rules("bucket", "dags/")
    assert [r.id for r in everything] == [r.id for r in again]
    for first, second in zip(everything[1:], again[1:], strict=True):
        assert first is second  # all but the DAG file rule, which takes the bucket
    assert wiring.BATCH_JOB_STATE_RULE is wiring.job_event_rules()[0]
    assert wiring.SIGNALS_RULE is wiring.skydag_bus_rules()[-1]
    assert len({r.id for r in everything}) == len(everything)


@pytest.mark.parametrize(
    ("rule_id", "service", "status_field"),
    [
        ("BatchJobStateRule", batch, "status"),
        ("EmrStepStatusRule", emr, "state"),
        ("EmrServerlessJobRunRule", emr_serverless, "state"),
        ("StepFunctionsExecutionRule", stepfunctions, "status"),
        ("EcsTaskStateRule", ecs, "lastStatus"),
    ],
)
def test_job_event_rules_use_their_target_modules_constants(
    rule_id: str, service: ModuleType, status_field: str
) -> None:
    (rule,) = (r for r in wiring.job_event_rules() if r.id == rule_id)
    assert rule.bus is Bus.DEFAULT
    assert rule.target is wiring.TO_SCHEDULER
    assert rule.pattern is not None
    assert rule.pattern["source"] == [service.SOURCE]
    assert rule.pattern["detail-type"] == [service.DETAIL_TYPE]
    assert rule.pattern["detail"][status_field] == list(service.EVENT_STATUSES)


def test_skydag_bus_rules_use_the_sources_and_signals_are_the_rest() -> None:
    rules = {r.id: r for r in wiring.skydag_bus_rules()}
    assert all(r.bus is Bus.SKYDAG for r in rules.values())
    # A Lambda result is a job's end: it invokes the scheduler; the rest go to its queue.
    assert {r.id for r in rules.values() if r.target is wiring.TO_SCHEDULER} == {
        wiring.LAMBDA_RESULTS_RULE.id
    }
    assert all(
        r.target is wiring.TO_SCHEDULER_QUEUE
        for r in rules.values()
        if r is not wiring.LAMBDA_RESULTS_RULE
    )
    assert wiring.COMMANDS_RULE.pattern == {"source": [sources.COMMAND_SOURCE]}
    assert wiring.LAMBDA_RESULTS_RULE.pattern == {
        "source": [lambda_.SOURCE],
        "detail-type": [lambda_.SUCCESS, lambda_.FAILURE],
    }
    routed = [
        source
        for rule in rules.values()
        if rule is not wiring.SIGNALS_RULE
        for source in (rule.pattern or {})["source"]
    ]
    # skydag's notifications are signals too, but only the subscribed ones are delivered,
    # by the dag loader's forwarding rules: the signals rule leaves them all out.
    assert sources.SKYDAG_SOURCE not in routed
    assert wiring.SIGNALS_RULE.pattern == {
        "source": [{"anything-but": [*routed, sources.SKYDAG_SOURCE]}]
    }


def test_forwarding_rules_have_one_name_each_on_their_bus() -> None:
    aws = wiring.aws_event_rule_names("prod")
    skydag = wiring.skydag_event_rule_names("prod")

    assert aws == tuple(f"prod-aws-events-{n}" for n in range(1, 6))
    assert skydag == tuple(f"prod-skydag-events-{n}" for n in range(1, 6))
    assert wiring.AWS_EVENT_FORWARDING.event_bus_name("prod") == "default"
    assert wiring.SKYDAG_EVENT_FORWARDING.event_bus_name("prod") == "prod"
    # Rule ARNs: rule/<name> on the default bus, rule/<bus>/<name> on another.
    assert wiring.AWS_EVENT_FORWARDING.rule_resource_names("prod") == aws
    assert wiring.SKYDAG_EVENT_FORWARDING.rule_resource_names("prod") == tuple(
        f"prod/{name}" for name in skydag
    )


def test_the_dag_file_rule_takes_its_bucket_and_a_checked_prefix() -> None:
    rule = wiring.dag_files_rule("my-bucket", "team/dags/")
    assert rule.pattern == wiring.dag_file_pattern("my-bucket", "team/dags/")
    assert rule.target is wiring.TO_DAG_LOADER
    assert rule.bus is Bus.DEFAULT
    with pytest.raises(ValueError, match="expected a folder"):
        wiring.dag_files_rule("my-bucket", "dags")


def test_a_rule_has_a_pattern_or_a_schedule() -> None:
    with pytest.raises(ValueError, match="not both"):
        RuleSpec("Both", Bus.DEFAULT, wiring.TO_RECONCILER, pattern={}, schedule_rate=timedelta(1))
    with pytest.raises(ValueError, match="not both"):
        RuleSpec("Neither", Bus.DEFAULT, wiring.TO_RECONCILER)


def test_every_dead_letter_queue_ends_an_asynchronous_path() -> None:
    ends = {
        *(r.target.dead_letter_queue for r in wiring.rules("bucket", "dags/")),
        *(spec.on_failure for spec in wiring.ASYNC_INVOKES),
        wiring.STREAM_EVENT_SOURCE.on_failure,
        *(q.redrive.dead_letter_queue for q in wiring.QUEUES if q.redrive is not None),
    }
    assert ends == set(wiring.DEAD_LETTER_QUEUES)


def test_only_job_ends_invoke_the_scheduler_directly() -> None:
    """The patterns the scheduler admits when invoked are those of the rules invoking it:
    every job-event rule and the Lambda results rule, and nothing a command or a signal
    would match."""
    invoking = [*wiring.job_event_rules(), wiring.LAMBDA_RESULTS_RULE]
    assert wiring.scheduler_invoke_patterns() == tuple(
        r.pattern
        for r in sorted(invoking, key=[*wiring.skydag_bus_rules(), *wiring.job_event_rules()].index)
    )
    batch_end = {
        "source": "aws.batch",
        "detail-type": "Batch Job State Change",
        "detail": {"status": "SUCCEEDED", "jobName": "skydag-etl-extract-0123"},
    }
    assert wiring.invokes_scheduler(batch_end)
    assert not wiring.invokes_scheduler({**batch_end, "detail": {"status": "RUNNING"}})
    assert not wiring.invokes_scheduler({"source": "skydag.command", "detail-type": "Trigger DAG"})
    assert wiring.SCHEDULER_ASYNC_INVOKE.function is wiring.SCHEDULER
    assert wiring.SCHEDULER_ASYNC_INVOKE.on_failure is wiring.JOB_EVENTS_DLQ


def test_the_scheduler_queue_outlasts_six_scheduler_timeouts() -> None:
    assert wiring.SCHEDULER_QUEUE.visibility_timeout == 6 * wiring.SCHEDULER.timeout
    assert wiring.SCHEDULER_EVENT_SOURCE.queue is wiring.SCHEDULER_QUEUE
    assert wiring.RECONCILER.timeout < wiring.RECONCILE_EVERY


def test_a_dispatch_claim_outlasts_every_invocation_that_may_hold_it() -> None:
    """Found by the soak (seed 632 of f4f5a46): a dispatch whose call outlasted its claim
    and the reconciler's, claiming after it, both called EMR. Lambda ends an invocation at
    its timeout, so a claim longer than every function's timeout is never outlasted."""
    from skydag.engine.rules import DISPATCH_CHECK_AFTER

    assert all(function.timeout < DISPATCH_CHECK_AFTER for function in wiring.FUNCTIONS)


def _run_record(event_name: str, old: str | None, new: str) -> dict[str, object]:
    data: dict[str, object] = {"NewImage": {"state": {"S": new}, "dag_id": {"S": "d"}}}
    if old is not None:
        data["OldImage"] = {"state": {"S": old}, "dag_id": {"S": "d"}}
    return {"eventName": event_name, "eventSourceARN": "arn:runs", "dynamodb": data}


def test_the_runs_stream_delivers_every_run_change_the_processor_acts_on() -> None:
    """Every pair of states, inserted or modified: a record the stream processor acts on
    (``run_change``, its metrics) passes a filter, and of the rest only a finished run
    written again in its state passes (the handler judges it). A run write that leaves a
    running or queued run as it was (a slot, a finish counted) is never delivered."""
    from skydag.engine.models import DagRun, RunType
    from skydag.engine.scheduler import RunChange, run_change
    from skydag.engine.states import FINISHED_RUN_STATES, RunState
    from skydag.signals.patterns import matches, validate_pattern

    patterns = wiring.STREAM_EVENT_SOURCE.filters["runs"]
    for pattern in patterns:
        validate_pattern(dict(pattern))
    olds: list[RunState | None] = [None, *RunState]
    for old in olds:
        for new in RunState:
            record = _run_record("INSERT" if old is None else "MODIFY", old, new)
            delivered = any(matches(pattern, record) for pattern in patterns)
            before = None if old is None else DagRun("d", "r", 1, RunType.MANUAL, state=old)
            acted = run_change(before, DagRun("d", "r", 1, RunType.MANUAL, state=new))
            assert delivered == (acted is not RunChange.NONE or new in FINISHED_RUN_STATES), (
                old,
                new,
            )
    assert not any(
        matches(pattern, _run_record("MODIFY", "running", "running")) for pattern in patterns
    )
    removed = {"eventName": "REMOVE", "dynamodb": {"OldImage": {"state": {"S": "running"}}}}
    assert not any(matches(pattern, removed) for pattern in patterns)


def test_the_task_stream_delivers_every_record_but_a_task_written_pending_again() -> None:
    """Every pair of states, inserted or modified: a task written in any state but pending,
    or made pending from another state (a clear, a retry's reset), is delivered; one
    created pending or written pending again (a report to a waiting task) is not, nor a
    write marked ``unheard`` (engine/reactions.py), nor a removed item. What the stream
    processor does with those is nothing: see
    ``test_the_task_records_the_stream_filters_out_change_nothing`` and
    ``test_writes_marked_unheard_leave_out_records_that_would_do_nothing``."""
    from skydag.engine.states import TaskState
    from skydag.signals.patterns import matches, validate_pattern

    patterns = wiring.STREAM_EVENT_SOURCE.filters["task_instances"]
    for pattern in patterns:
        validate_pattern(dict(pattern))
    for old in [None, *TaskState]:
        for new in TaskState:
            record = _run_record("INSERT" if old is None else "MODIFY", old, new)
            delivered = any(matches(pattern, record) for pattern in patterns)
            quiet = new is TaskState.PENDING and old in (None, TaskState.PENDING)
            assert delivered is not quiet, (old, new)
            # A write marked unheard is never delivered; the write after it is.
            data: typing.Any = record["dynamodb"]
            data["NewImage"]["unheard"] = {"BOOL": True}
            assert not any(matches(pattern, record) for pattern in patterns), (old, new)
            if old is not None:
                data["OldImage"]["unheard"] = data["NewImage"].pop("unheard")
                assert any(matches(p, record) for p in patterns) is delivered, (old, new)
    removed = {"eventName": "REMOVE", "dynamodb": {"OldImage": {"state": {"S": "success"}}}}
    assert not any(matches(pattern, removed) for pattern in patterns)


def test_the_rule_examples_in_the_targets_doc_are_the_rules() -> None:
    """docs/targets.md shows three job-event rules as JSON: each is its rule's pattern."""
    import json
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "targets.md").read_text("utf-8")
    shown = [
        json.loads(block.split("```", 1)[0])
        for block in text.split("```json\n")[1:]
        if '"detail-type"' in block.split("```", 1)[0]
    ]
    rules = (wiring.BATCH_JOB_STATE_RULE, wiring.EMR_SERVERLESS_JOB_RUN_RULE)
    assert shown == [*(rule.pattern for rule in rules), wiring.LAMBDA_RESULTS_RULE.pattern]


def test_no_engine_function_outlives_the_times_the_engine_counts_on() -> None:
    """A dispatch's claim and a run's quiet period assume no invocation lives longer than
    ``LONGEST_INVOCATION`` (engine/rules.py, which does not import wiring): raising a
    function's timeout past it must raise it too."""
    assert max(function.timeout for function in wiring.FUNCTIONS) <= LONGEST_INVOCATION
    assert DISPATCH_CHECK_AFTER > LONGEST_INVOCATION
    assert RUN_CHECK_AFTER + LONGEST_INVOCATION <= DISPATCH_CHECK_AFTER
    assert RUN_QUIET > LONGEST_INVOCATION + ARM_REFRESH


def test_the_engine_counts_on_the_reconcile_schedule_as_deployed() -> None:
    """A running job's look is made by a pass within ``LOOK_WINDOW`` after it
    (``looks_at_entry``): two periods of the reconcile rule, so that a pass that fails or
    comes late loses no look. The engine's period must be the rule's."""
    assert RECONCILE_EVERY == wiring.RECONCILE_EVERY == wiring.RECONCILE_RULE.schedule_rate
    assert LOOK_WINDOW >= 2 * wiring.RECONCILE_EVERY
