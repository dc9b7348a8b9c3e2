"""The four functions, their environment (the functions' env contract) and event sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from infra_synth import Synthesized
from skydag_infra.asset import LAMBDA_PYTHON

from skydag.settings import Settings
from skydag.store.models import ALL_MODELS

HANDLERS = {
    "DagLoader": "skydag.handlers.dag_loader.lambda_handler",
    "Scheduler": "skydag.handlers.scheduler.lambda_handler",
    "StreamProcessor": "skydag.handlers.stream_processor.lambda_handler",
    "Reconciler": "skydag.handlers.reconciler.lambda_handler",
}


@pytest.mark.parametrize("name", HANDLERS)
def test_function_runtime_architecture_handler_logging_and_tracing(
    synth: Synthesized, name: str
) -> None:
    function = synth.skydag.functions[name]
    props = synth.resource(function)["Properties"]
    assert props["Runtime"] == "python3.14" == f"python{LAMBDA_PYTHON}"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == HANDLERS[name]
    # X-Ray is opt-in (context skydag:tracing): off, no trace is recorded or paid for,
    # and the handlers do not import the X-Ray SDK at cold start.
    assert props.get("TracingConfig", {"Mode": "PassThrough"}) == {"Mode": "PassThrough"}
    assert props["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "true"
    # Lambda's own START/REPORT lines only on request (context skydag:systemLogLevel): at a
    # few invocations per task they would cost more than skydag's own logs.
    assert props["LoggingConfig"] == {
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "WARN",
        "LogFormat": "JSON",
        "LogGroup": {"Ref": synth.logical_id(function.log_group)},
    }
    assert props["Role"] == {"Fn::GetAtt": [synth.logical_id(synth.skydag.roles[name]), "Arn"]}
    assert "ReservedConcurrentExecutions" not in props


def test_log_groups_have_a_retention(synth: Synthesized) -> None:
    log_groups = synth.resources("AWS::Logs::LogGroup")
    assert len(log_groups) == 4
    assert {g["Properties"]["RetentionInDays"] for g in log_groups.values()} == {30}


def test_environment_is_what_settings_from_env_reads(synth: Synthesized) -> None:
    skydag = synth.skydag
    for name in HANDLERS:
        variables = synth.resource(skydag.functions[name])["Properties"]["Environment"]["Variables"]
        assert set(variables) == {
            "SKYDAG_DAGS_TABLE",
            "SKYDAG_DAG_VERSIONS_TABLE",
            "SKYDAG_RUNS_TABLE",
            "SKYDAG_TASK_INSTANCES_TABLE",
            "SKYDAG_TASK_STATE_TABLE",
            "SKYDAG_DAG_BUCKET",
            "SKYDAG_DAG_PREFIX",
            "SKYDAG_EVENT_BUS",
            "SKYDAG_EVENT_BUS_ARN",
            "SKYDAG_SCHEDULE_GROUP",
            "SKYDAG_SCHEDULER_ROLE_ARN",
            "SKYDAG_SCHEDULER_QUEUE_ARN",
            "SKYDAG_EVENT_DELIVERY_DLQ_ARN",
            "POWERTOOLS_SERVICE_NAME",
            "POWERTOOLS_METRICS_NAMESPACE",
            "LOG_LEVEL",
            "POWERTOOLS_TRACE_DISABLED",
        }
        # Each reference stands for what it points at; Settings must read every one back.
        env = {key: str(value) for key, value in variables.items()}
        settings = Settings.from_env(env)
        assert settings.dag_bucket == str({"Ref": synth.logical_id(skydag.dag_bucket)})
        assert settings.dag_prefix == "dags/"
        assert settings.event_bus == str({"Ref": synth.logical_id(skydag.event_bus)})
        assert settings.event_bus_arn == str(
            {"Fn::GetAtt": [synth.logical_id(skydag.event_bus), "Arn"]}
        )
        assert settings.schedule_group == "skydag"
        queues = skydag.queues
        assert settings.scheduler_queue_arn == str(
            {"Fn::GetAtt": [synth.logical_id(queues["SchedulerQueue"]), "Arn"]}
        )
        assert settings.event_delivery_dlq_arn == str(
            {"Fn::GetAtt": [synth.logical_id(queues["EventDeliveryDlq"]), "Arn"]}
        )
        assert settings.scheduler_role_arn == str(
            {"Fn::GetAtt": [synth.logical_id(skydag.scheduler_role), "Arn"]}
        )
        table_refs = {str({"Ref": synth.logical_id(t)}) for t in skydag.tables.values()}
        assert set(settings.tables.model_dump().values()) == table_refs
        assert len(table_refs) == len(ALL_MODELS)
        assert variables["POWERTOOLS_SERVICE_NAME"] == "skydag"
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "skydag"
        assert variables["LOG_LEVEL"] == "INFO"


def _deployed_environment(synth: Synthesized, name: str) -> dict[str, str]:
    """A function's environment as CloudFormation would fill it in (plausible values)."""
    values = {
        "SKYDAG_EVENT_BUS_ARN": "arn:aws:events:us-east-1:111122223333:event-bus/skydag",
        "SKYDAG_SCHEDULER_ROLE_ARN": "arn:aws:iam::111122223333:role/skydag-schedules",
        "SKYDAG_SCHEDULER_QUEUE_ARN": "arn:aws:sqs:us-east-1:111122223333:skydag-scheduler",
        "SKYDAG_EVENT_DELIVERY_DLQ_ARN": "arn:aws:sqs:us-east-1:111122223333:skydag-delivery",
    }
    variables = synth.resource(synth.skydag.functions[name])["Properties"]["Environment"][
        "Variables"
    ]
    return {
        key: value if isinstance(value, str) else values.get(key, f"skydag-{key.lower()}")
        for key, value in variables.items()
    }


@pytest.mark.parametrize("name", HANDLERS)
def test_the_handlers_accept_the_environment_the_stack_gives_them(
    synth: Synthesized, name: str
) -> None:
    from skydag.handlers._runtime import validate_environment

    env = _deployed_environment(synth, name)
    settings = validate_environment(env)
    assert settings.tables.dags == env["SKYDAG_DAGS_TABLE"]
    assert settings.scheduler_role_arn == env["SKYDAG_SCHEDULER_ROLE_ARN"]


def test_every_handler_imports_and_is_callable_with_that_environment(
    synth: Synthesized,
) -> None:
    """In a fresh interpreter, as a cold start: the handler modules validate the
    environment when imported."""
    env = dict(os.environ) | _deployed_environment(synth, "Scheduler")
    env["POWERTOOLS_TRACE_DISABLED"] = "true"
    check = "; ".join(
        f"import {module}; assert callable({module}.{function})"
        for module, _, function in (h.rpartition(".") for h in HANDLERS.values())
    )
    result = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_scheduler_consumes_its_queue_in_batches_reporting_item_failures(
    synth: Synthesized,
) -> None:
    skydag = synth.skydag
    synth.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionName": {"Ref": synth.logical_id(skydag.functions["Scheduler"])},
            "EventSourceArn": {"Fn::GetAtt": [synth.logical_id(skydag.scheduler_queue), "Arn"]},
            "BatchSize": 10,
            "MaximumBatchingWindowInSeconds": 0,  # a job's end is on the latency path
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    )
    queue = synth.resource(skydag.scheduler_queue)["Properties"]
    assert queue["VisibilityTimeout"] == 6 * 60  # six times the function timeout
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {
            "Fn::GetAtt": [synth.logical_id(skydag.dead_letter_queues["SchedulerDlq"]), "Arn"]
        },
        "maxReceiveCount": 5,
    }


def test_every_streamed_table_feeds_the_stream_processor_with_bounded_retries(
    synth: Synthesized,
) -> None:
    skydag = synth.skydag
    streamed = [s.field for s in skydag.table_specs if s.stream_view_type]
    assert sorted(streamed) == ["runs", "task_instances"]
    processor = {"Ref": synth.logical_id(skydag.functions["StreamProcessor"])}
    mappings = [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == processor
    ]
    assert len(mappings) == len(streamed)
    stream_dlq = synth.logical_id(skydag.dead_letter_queues["StreamDlq"])
    for field in streamed:
        table_id = synth.logical_id(skydag.tables[field])
        (mapping,) = (
            m for m in mappings if m["EventSourceArn"] == {"Fn::GetAtt": [table_id, "StreamArn"]}
        )
        mapping = dict(mapping)  # (the template is shared by the module's tests)
        criteria = mapping.pop("FilterCriteria", None)
        if field == "task_instances":
            # All but a task written pending again, or created so, or a write unheard.
            heard = {"unheard": {"BOOL": [{"exists": False}]}}
            not_pending = {"S": [{"anything-but": ["pending"]}]}
            assert [json.loads(f["Pattern"]) for f in criteria["Filters"]] == [
                {"dynamodb": {"NewImage": {"state": not_pending, **heard}}},
                {
                    "dynamodb": {
                        "NewImage": {"state": {"S": ["pending"]}, **heard},
                        "OldImage": {"state": not_pending},
                    }
                },
            ]
        else:  # a run's start and end only
            assert [json.loads(f["Pattern"]) for f in criteria["Filters"]] == [
                {"dynamodb": {"NewImage": {"state": {"S": ["cancelled", "failed", "success"]}}}},
                {
                    "dynamodb": {
                        "NewImage": {"state": {"S": ["running"]}},
                        "OldImage": {"state": {"S": ["queued"]}},
                    }
                },
                {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"state": {"S": ["running"]}}}},
            ]
        assert mapping == {
            "FunctionName": processor,
            "EventSourceArn": {"Fn::GetAtt": [table_id, "StreamArn"]},
            "StartingPosition": "LATEST",
            "BatchSize": 25,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 5,
            "MaximumRecordAgeInSeconds": 6 * 3600,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ParallelizationFactor": 1,
            "DestinationConfig": {
                "OnFailure": {"Destination": {"Fn::GetAtt": [stream_dlq, "Arn"]}}
            },
        }


@pytest.mark.parametrize(
    ("name", "dlq", "max_age"),
    [("DagLoader", "DagLoaderDlq", 6 * 3600), ("Reconciler", "ReconcilerDlq", 300)],
)
def test_asynchronously_invoked_functions_retry_then_dead_letter(
    synth: Synthesized, name: str, dlq: str, max_age: int
) -> None:
    skydag = synth.skydag
    synth.template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "FunctionName": {"Ref": synth.logical_id(skydag.functions[name])},
            "MaximumRetryAttempts": 2,
            "MaximumEventAgeInSeconds": max_age,
            "DestinationConfig": {
                "OnFailure": {
                    "Destination": {
                        "Fn::GetAtt": [synth.logical_id(skydag.dead_letter_queues[dlq]), "Arn"]
                    }
                }
            },
        },
    )


def test_every_queue_is_encrypted_and_refuses_plain_http(synth: Synthesized) -> None:
    queues = synth.resources("AWS::SQS::Queue")
    assert len(queues) == 7  # the scheduler queue and six dead-letter queues
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    policies = synth.resources("AWS::SQS::QueuePolicy").values()
    for queue_id in queues:
        (policy,) = (p for p in policies if {"Ref": queue_id} in p["Properties"]["Queues"])
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
        )
