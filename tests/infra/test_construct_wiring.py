"""The construct is built from ``skydag.wiring``'s very objects, and the template says
what they say: the local cloud, which delivers from the same objects, cannot drift from
the deployed stack."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from infra_synth import Synthesized

from skydag import wiring
from skydag.wiring import FunctionSpec, QueueSpec, RuleSpec

# Module attributes of skydag.wiring naming rules that take no parameter.
SINGLETON_RULES = (
    "COMMANDS_RULE",
    "SCHEDULER_EVENTS_RULE",
    "LAMBDA_RESULTS_RULE",
    "SIGNALS_RULE",
    "BATCH_JOB_STATE_RULE",
    "EMR_STEP_STATUS_RULE",
    "EMR_SERVERLESS_JOB_RUN_RULE",
    "STEP_FUNCTIONS_EXECUTION_RULE",
    "ECS_TASK_STATE_RULE",
    "RECONCILE_RULE",
)


def _seconds(value: timedelta) -> int:
    assert value.total_seconds().is_integer()
    return int(value.total_seconds())


def _arn(synth: Synthesized, construct: Any) -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def _resource(synth: Synthesized, spec: QueueSpec | FunctionSpec) -> Any:
    skydag = synth.skydag
    return skydag.queues[spec.id] if isinstance(spec, QueueSpec) else skydag.functions[spec.id]


def test_the_construct_holds_the_wiring_objects_themselves(synth: Synthesized) -> None:
    skydag = synth.skydag
    for name in SINGLETON_RULES:
        rule = getattr(wiring, name)
        assert skydag.rule_specs[rule.id] is rule, name
    dag_files = skydag.rule_specs["DagFilesRule"]
    assert dag_files.target is wiring.TO_DAG_LOADER
    assert set(skydag.rule_specs) == {
        *(getattr(wiring, n).id for n in SINGLETON_RULES),
        "DagFilesRule",
    }
    assert set(skydag.rules) == set(skydag.rule_specs)

    assert list(skydag.queue_specs.values()) == list(wiring.QUEUES)
    for spec in wiring.QUEUES:
        assert skydag.queue_specs[spec.id] is spec
    for spec in wiring.FUNCTIONS:
        assert skydag.function_specs[spec.id] is spec
    assert set(skydag.functions) == set(skydag.function_specs)
    for spec in wiring.ASYNC_INVOKES:
        assert skydag.async_invoke_specs[spec.function.id] is spec
    assert skydag.scheduler_event_source_spec is wiring.SCHEDULER_EVENT_SOURCE
    assert skydag.stream_event_source_spec is wiring.STREAM_EVENT_SOURCE


@pytest.mark.parametrize(
    "rule_id", [*(getattr(wiring, n).id for n in SINGLETON_RULES), "DagFilesRule"]
)
def test_each_rule_in_the_template_is_its_spec(synth: Synthesized, rule_id: str) -> None:
    skydag = synth.skydag
    spec: RuleSpec = skydag.rule_specs[rule_id]
    rule = synth.resource(skydag.rules[rule_id])["Properties"]
    if spec.pattern is not None:
        # The DAG bucket's name is a token in the spec, a Ref in the template.
        assert rule["EventPattern"] == synth.stack.resolve(spec.pattern)
        assert "ScheduleExpression" not in rule
    else:
        assert spec.schedule_rate == timedelta(minutes=5)
        assert rule["ScheduleExpression"] == "rate(5 minutes)"
        assert "EventPattern" not in rule
    assert rule.get("Description") == spec.description
    if spec.bus is wiring.Bus.SKYDAG:
        assert rule["EventBusName"] == {"Ref": synth.logical_id(skydag.event_bus)}
    else:
        assert "EventBusName" not in rule
    (target,) = rule["Targets"]
    delivery = spec.target
    assert target["Arn"] == _arn(synth, _resource(synth, delivery.resource))
    assert target["DeadLetterConfig"] == {
        "Arn": _arn(synth, skydag.queues[delivery.dead_letter_queue.id])
    }
    assert target["RetryPolicy"] == {
        "MaximumEventAgeInSeconds": _seconds(delivery.max_event_age),
        "MaximumRetryAttempts": delivery.retry_attempts,
    }


@pytest.mark.parametrize("spec", wiring.QUEUES, ids=lambda spec: spec.id)
def test_each_queue_in_the_template_is_its_spec(synth: Synthesized, spec: QueueSpec) -> None:
    queue = synth.resource(synth.skydag.queues[spec.id])["Properties"]
    if spec.visibility_timeout is None:
        assert "VisibilityTimeout" not in queue
    else:
        assert queue["VisibilityTimeout"] == _seconds(spec.visibility_timeout)
    if spec.retention is None:
        assert "MessageRetentionPeriod" not in queue
    else:
        assert queue["MessageRetentionPeriod"] == _seconds(spec.retention)
    if spec.redrive is None:
        assert "RedrivePolicy" not in queue
    else:
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": _arn(
                synth, synth.skydag.queues[spec.redrive.dead_letter_queue.id]
            ),
            "maxReceiveCount": spec.redrive.max_receive_count,
        }


@pytest.mark.parametrize("spec", wiring.FUNCTIONS, ids=lambda spec: spec.id)
def test_each_function_in_the_template_is_its_spec(synth: Synthesized, spec: FunctionSpec) -> None:
    function = synth.resource(synth.skydag.functions[spec.id])["Properties"]
    assert function["Handler"] == spec.handler
    assert function["Description"] == f"skydag: {spec.description}"
    assert function["Timeout"] == _seconds(spec.timeout)
    assert function["MemorySize"] == spec.memory_mb


def _mappings_of(synth: Synthesized, function: FunctionSpec) -> list[dict[str, Any]]:
    name = {"Ref": synth.logical_id(synth.skydag.functions[function.id])}
    return [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == name
    ]


def test_the_scheduler_queue_mapping_is_its_spec(synth: Synthesized) -> None:
    spec = wiring.SCHEDULER_EVENT_SOURCE
    (mapping,) = _mappings_of(synth, spec.function)
    assert mapping == {
        "FunctionName": {"Ref": synth.logical_id(synth.skydag.functions[spec.function.id])},
        "EventSourceArn": _arn(synth, synth.skydag.queues[spec.queue.id]),
        "BatchSize": spec.batch_size,
        "MaximumBatchingWindowInSeconds": _seconds(spec.max_batching_window),
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }
    assert spec.report_batch_item_failures


def test_the_stream_mappings_are_their_spec(synth: Synthesized) -> None:
    spec = wiring.STREAM_EVENT_SOURCE
    mappings = _mappings_of(synth, spec.function)
    streamed = [t for t in synth.skydag.table_specs if t.stream_view_type]
    assert len(mappings) == len(streamed) > 0
    assert spec.report_batch_item_failures
    tables = {synth.logical_id(synth.skydag.tables[t.field]): t.field for t in streamed}
    filtered = set()
    for mapping in mappings:
        table = tables[mapping["EventSourceArn"]["Fn::GetAtt"][0]]
        criteria = mapping.get("FilterCriteria", {"Filters": []})
        patterns = [json.loads(f["Pattern"]) for f in criteria["Filters"]]
        assert patterns == [dict(p) for p in spec.filters.get(table, ())], table
        if patterns:
            filtered.add(table)
        assert {
            k: v
            for k, v in mapping.items()
            if k not in ("FunctionName", "EventSourceArn", "FilterCriteria")
        } == {
            "StartingPosition": spec.starting_position.value,
            "BatchSize": spec.batch_size,
            "BisectBatchOnFunctionError": spec.bisect_batch_on_error,
            "MaximumRetryAttempts": spec.retry_attempts,
            "MaximumRecordAgeInSeconds": _seconds(spec.max_record_age),
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ParallelizationFactor": spec.parallelization_factor,
            "DestinationConfig": {
                "OnFailure": {"Destination": _arn(synth, synth.skydag.queues[spec.on_failure.id])}
            },
        }
    assert filtered == set(spec.filters) == {"runs", "task_instances"}


def test_the_async_invoke_configs_are_their_specs(synth: Synthesized) -> None:
    configs = {
        c["Properties"]["FunctionName"]["Ref"]: c["Properties"]
        for c in synth.resources("AWS::Lambda::EventInvokeConfig").values()
    }
    expected = {}
    for spec in wiring.ASYNC_INVOKES:
        function = synth.skydag.functions[spec.function.id]
        expected[synth.logical_id(function)] = {
            "FunctionName": {"Ref": synth.logical_id(function)},
            "Qualifier": "$LATEST",
            "MaximumRetryAttempts": spec.retry_attempts,
            "MaximumEventAgeInSeconds": _seconds(spec.max_event_age),
            "DestinationConfig": {
                "OnFailure": {"Destination": _arn(synth, synth.skydag.queues[spec.on_failure.id])}
            },
        }
    assert configs == expected
