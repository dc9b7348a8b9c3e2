"""EventBridge: the bus and its policy, every rule's pattern (exactly), targets, Scheduler."""

from __future__ import annotations

from typing import Any

import pytest
from infra_synth import Synthesized

from skydag import sources, wiring
from skydag.service import router
from skydag.targets.base import DispatchRequest

SKYDAG_BUS_RULES: dict[str, dict[str, Any]] = {
    "CommandsRule": {"source": ["skydag.command"]},
    "SchedulerEventsRule": {
        "source": ["skydag.scheduler"],
        "detail-type": ["Schedule Tick", "Timer Fired"],
    },
    "LambdaResultsRule": {
        "source": ["lambda"],
        "detail-type": [
            "Lambda Function Invocation Result - Success",
            "Lambda Function Invocation Result - Failure",
        ],
    },
    "SignalsRule": {
        "source": [{"anything-but": ["skydag.command", "skydag.scheduler", "lambda", "skydag"]}]
    },
}
DEFAULT_BUS_RULES: dict[str, dict[str, Any]] = {
    "BatchJobStateRule": {
        "source": ["aws.batch"],
        "detail-type": ["Batch Job State Change"],
        "detail": {
            "status": ["SUCCEEDED", "FAILED"],
            "jobName": [{"prefix": "skydag-"}],
        },
    },
    "EmrStepStatusRule": {
        "source": ["aws.emr"],
        "detail-type": ["EMR Step Status Change"],
        "detail": {
            "state": ["RUNNING", "COMPLETED", "FAILED", "INTERRUPTED", "CANCELLED"],
            "name": [{"prefix": "skydag-"}],
        },
    },
    "EmrServerlessJobRunRule": {
        "source": ["aws.emr-serverless"],
        "detail-type": ["EMR Serverless Job Run State Change"],
        "detail": {"state": ["RUNNING", "SUCCESS", "FAILED", "CANCELLED"]},
    },
    "StepFunctionsExecutionRule": {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "status": ["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
            "name": [{"prefix": "skydag-"}],
        },
    },
    "EcsTaskStateRule": {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {"lastStatus": ["RUNNING", "STOPPED"], "startedBy": [{"prefix": "skydag-"}]},
    },
}


def _rule(synth: Synthesized, rule_id: str) -> dict[str, Any]:
    rule: dict[str, Any] = synth.resource(synth.skydag.node.find_child(rule_id))["Properties"]
    return rule


# Job ends (the services' state changes, Lambda results) invoke the scheduler; the rest
# go to its queue.
INVOKING_RULES = {*DEFAULT_BUS_RULES, "LambdaResultsRule"}


def _scheduler_target(synth: Synthesized, rule_id: str) -> dict[str, Any]:
    skydag = synth.skydag
    resource = (
        skydag.functions["Scheduler"] if rule_id in INVOKING_RULES else skydag.scheduler_queue
    )
    return {
        "Arn": {"Fn::GetAtt": [synth.logical_id(resource), "Arn"]},
        "DeadLetterConfig": {
            "Arn": {
                "Fn::GetAtt": [
                    synth.logical_id(skydag.dead_letter_queues["EventDeliveryDlq"]),
                    "Arn",
                ]
            }
        },
        "RetryPolicy": {"MaximumEventAgeInSeconds": 6 * 3600, "MaximumRetryAttempts": 8},
    }


@pytest.mark.parametrize(("rule_id", "pattern"), SKYDAG_BUS_RULES.items())
def test_skydag_bus_rules_feed_the_scheduler(
    synth: Synthesized, rule_id: str, pattern: dict[str, Any]
) -> None:
    rule = _rule(synth, rule_id)
    assert rule["EventPattern"] == pattern
    assert rule["EventBusName"] == {"Ref": synth.logical_id(synth.skydag.event_bus)}
    (target,) = rule["Targets"]
    assert {k: v for k, v in target.items() if k != "Id"} == _scheduler_target(synth, rule_id)


@pytest.mark.parametrize(("rule_id", "pattern"), DEFAULT_BUS_RULES.items())
def test_service_state_changes_on_the_default_bus_invoke_the_scheduler(
    synth: Synthesized, rule_id: str, pattern: dict[str, Any]
) -> None:
    rule = _rule(synth, rule_id)
    assert rule["EventPattern"] == pattern
    assert "EventBusName" not in rule  # the default bus: where AWS services put events
    (target,) = rule["Targets"]
    assert {k: v for k, v in target.items() if k != "Id"} == _scheduler_target(synth, rule_id)


def test_only_the_invoking_rules_may_invoke_the_scheduler(synth: Synthesized) -> None:
    """EventBridge invokes a function under the function's resource policy: one permission
    per rule that targets the scheduler, each naming its rule."""
    scheduler = {"Fn::GetAtt": [synth.logical_id(synth.skydag.functions["Scheduler"]), "Arn"]}
    allowed = [
        p["Properties"]
        for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == scheduler
    ]
    assert all(p["Principal"] == "events.amazonaws.com" for p in allowed)
    assert all(p["Action"] == "lambda:InvokeFunction" for p in allowed)
    rules = {synth.logical_id(synth.skydag.node.find_child(rule_id)) for rule_id in INVOKING_RULES}
    assert sorted(p["SourceArn"]["Fn::GetAtt"][0] for p in allowed) == sorted(rules)


def test_the_rules_are_exactly_these(synth: Synthesized) -> None:
    rules = synth.resources("AWS::Events::Rule")
    expected = {*SKYDAG_BUS_RULES, *DEFAULT_BUS_RULES, "DagFilesRule", "ReconcileRule"}
    assert len(rules) == len(expected)
    assert {synth.logical_id(synth.skydag.node.find_child(r)) for r in expected} == set(rules)


def test_dag_files_rule_sends_yaml_under_the_prefix_to_the_loader(synth: Synthesized) -> None:
    skydag = synth.skydag
    rule = _rule(synth, "DagFilesRule")
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {
            "bucket": {"name": [{"Ref": synth.logical_id(skydag.dag_bucket)}]},
            "object": {"key": [{"wildcard": "dags/*.yaml"}, {"wildcard": "dags/*.yml"}]},
        },
    }
    assert "EventBusName" not in rule
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [synth.logical_id(skydag.functions["DagLoader"]), "Arn"]}
    assert target["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": [synth.logical_id(skydag.dead_letter_queues["DagLoaderDlq"]), "Arn"]}
    }
    assert target["RetryPolicy"] == {
        "MaximumEventAgeInSeconds": 6 * 3600,
        "MaximumRetryAttempts": 8,
    }


def test_reconciler_runs_every_five_minutes(synth: Synthesized) -> None:
    skydag = synth.skydag
    rule = _rule(synth, "ReconcileRule")
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    (target,) = rule["Targets"]
    assert target["Arn"] == {
        "Fn::GetAtt": [synth.logical_id(skydag.functions["Reconciler"]), "Arn"]
    }
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 300, "MaximumRetryAttempts": 2}


def test_patterns_use_the_sources_and_names_the_code_uses() -> None:
    assert router.COMMAND_SOURCE is sources.COMMAND_SOURCE
    assert router.SCHEDULER_SOURCE is sources.SCHEDULER_SOURCE
    assert wiring.SCHEDULER_EVENTS_RULE.pattern == {
        "source": [router.SCHEDULER_SOURCE],
        "detail-type": [router.SCHEDULE_TICK, router.TIMER_FIRED],
    }
    request = DispatchRequest(
        dag_id="d", run_id="r", task_id="t", try_number=1, token="0" * 32, kind="batch", target={}
    )
    assert request.job_name.startswith(wiring.JOB_NAME_PREFIX)


def test_the_bus_lets_the_account_signal_but_only_skydag_speak_as_skydag(
    synth: Synthesized,
) -> None:
    skydag = synth.skydag
    bus = synth.resource(skydag.event_bus)["Properties"]
    assert bus["Name"] == "skydag"
    bus_arn = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":events:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":event-bus/skydag",
            ],
        ]
    }
    allow, *denials = bus["Policy"]["Statement"]
    assert allow == {
        "Sid": "AccountMayPutEvents",
        "Effect": "Allow",
        "Principal": {
            "AWS": {
                "Fn::Join": [
                    "",
                    [
                        "arn:",
                        {"Ref": "AWS::Partition"},
                        ":iam::",
                        {"Ref": "AWS::AccountId"},
                        ":root",
                    ],
                ]
            }
        },
        "Action": "events:PutEvents",
        "Resource": bus_arn,
    }
    # Who may put each of skydag's own sources: test_resource_policies.py.
    assert len(denials) == 4
    for deny in denials:
        assert deny["Effect"] == "Deny"
        assert deny["Principal"] == {"AWS": "*"}
        assert deny["Action"] == "events:PutEvents"
        assert deny["Resource"] == bus_arn


def test_schedule_group_and_the_role_its_schedules_assume(synth: Synthesized) -> None:
    skydag = synth.skydag
    group = synth.resource(skydag.schedule_group)
    assert group["Properties"] == {"Name": "skydag"}
    role = synth.resource(skydag.scheduler_role)["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {
        "Action": "sts:AssumeRole",
        "Effect": "Allow",
        "Principal": {"Service": "scheduler.amazonaws.com"},
        "Condition": {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnEquals": {
                "aws:SourceArn": {"Fn::GetAtt": [synth.logical_id(skydag.schedule_group), "Arn"]}
            },
        },
    }
    policies = [
        p["Properties"]
        for p in synth.resources("AWS::IAM::Policy").values()
        if {"Ref": synth.logical_id(skydag.scheduler_role)} in p["Properties"]["Roles"]
    ]
    assert [p["PolicyDocument"]["Statement"] for p in policies] == [
        [
            {
                "Action": "events:PutEvents",
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [synth.logical_id(skydag.event_bus), "Arn"]},
            }
        ]
    ]


FORWARDING_ACTIONS = {
    "events:DescribeRule",
    "events:PutRule",
    "events:DeleteRule",
    "events:ListTargetsByRule",
    "events:RemoveTargets",
    "events:PutTargets",
}


def test_the_loader_keeps_only_its_forwarding_rules(synth: Synthesized) -> None:
    from iam_grants import role_grants

    rules = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/"
    arns = {rules + name for name in wiring.aws_event_rule_names("skydag")} | {
        # Rules on the skydag bus: rule/<bus>/<name>.
        rules + "skydag/" + name
        for name in wiring.skydag_event_rule_names("skydag")
    }
    grants = role_grants(synth.stack, synth.json)

    loader = [g for g in grants["Skydag/DagLoaderRole"] if g["action"] in FORWARDING_ACTIONS]
    others = [
        (role, g)
        for role, role_grants_ in grants.items()
        if role != "Skydag/DagLoaderRole"
        for g in role_grants_
        if g["action"] in FORWARDING_ACTIONS
    ]

    assert not others
    assert {(g["action"], g["resource"]) for g in loader} == {
        (action, arn) for action in FORWARDING_ACTIONS for arn in arns
    }
    # The one target those rules may have: the scheduler queue.
    assert {str(g.get("condition")) for g in loader if g["action"] == "events:PutTargets"} == {
        str({"ArnEquals": {"events:TargetArn": "${Skydag/SchedulerQueue.Arn}"}})
    }
