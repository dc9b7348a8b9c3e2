"""The construct in a host app that sets no context and no feature flags at all."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks
from infra_synth import ROOT
from skydag_infra.asset import placeholder_asset
from skydag_infra.construct import Skydag

from skydag.sources import COMMAND_SOURCE


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> tuple[cdk.Stack, Skydag, dict[str, Any]]:
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("bare.out")))  # no context, no flags
    stack = cdk.Stack(app, "Host")
    code = lambda_.Code.from_asset(str(placeholder_asset(ROOT / "build").path))
    skydag = Skydag(stack, "Orchestrator", code=code)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    assembly = app.synth()  # raises on an unacknowledged cdk-nag finding
    return stack, skydag, assembly.get_stack_artifact(stack.artifact_id).template


def _logical_id(stack: cdk.Stack, construct: Any) -> str:
    return str(stack.resolve(stack.get_logical_id(construct.node.default_child)))


def test_it_synthesizes_clean_in_a_bare_app(
    bare: tuple[cdk.Stack, Skydag, dict[str, Any]],
) -> None:
    stack, skydag, _ = bare
    assert skydag.functions
    assert not Annotations.from_stack(stack).find_error("*", Match.any_value())


def test_access_logs_are_delivered_under_a_bucket_policy_not_an_acl(
    bare: tuple[cdk.Stack, Skydag, dict[str, Any]],
) -> None:
    stack, skydag, template = bare
    resources = template["Resources"]
    dag_bucket = resources[_logical_id(stack, skydag.dag_bucket)]
    logs_id = _logical_id(stack, skydag.access_logs_bucket)
    assert dag_bucket["Properties"]["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logs_id},
        "LogFilePrefix": "dag-bucket/",
    }
    assert "AccessControl" not in resources[logs_id]["Properties"]
    Template.from_json(template).has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logs_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Action": "s3:PutObject",
                                "Effect": "Allow",
                            }
                        )
                    ]
                )
            },
        },
    )


def test_without_operators_the_account_but_not_skydag_may_send_commands(
    bare: tuple[cdk.Stack, Skydag, dict[str, Any]],
) -> None:
    """The CLI keeps working after a plain `cdk deploy` (the account's principals may send
    commands); skydag's own roles, where DAG templates run, never may."""
    stack, skydag, template = bare
    bus_id = _logical_id(stack, skydag.event_bus)
    (denial,) = (
        s
        for s in template["Resources"][bus_id]["Properties"]["Policy"]["Statement"]
        if s.get("Condition", {}).get("StringLike", {}).get("events:source") == COMMAND_SOURCE
    )
    assert denial["Effect"] == "Deny"
    denied = denial["Condition"]["ArnLike"]["aws:PrincipalArn"]
    assert len(denied) == len(skydag.roles) + 1  # every function's role and the schedules'
    assert "ArnNotLike" not in denial["Condition"]


def test_tracing_and_platform_logs_are_opt_in_and_then_on(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("traced.out")))
    stack = cdk.Stack(app, "Host")
    code = lambda_.Code.from_asset(str(placeholder_asset(ROOT / "build").path))
    skydag = Skydag(stack, "Orchestrator", code=code, tracing=True, system_log_level="INFO")
    template = app.synth().get_stack_artifact(stack.artifact_id).template
    resources = template["Resources"]
    for name, function in skydag.functions.items():
        props = resources[_logical_id(stack, function)]["Properties"]
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert props["LoggingConfig"]["SystemLogLevel"] == "INFO", name
        assert props["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "false"
    granted = {
        action
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::Policy"
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= granted


def test_without_tracing_no_role_may_write_traces(
    bare: tuple[cdk.Stack, Skydag, dict[str, Any]],
) -> None:
    _, _, template = bare
    policies = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    assert policies
    assert "xray:" not in json.dumps(policies)


def test_an_unknown_system_log_level_is_refused_naming_the_choices() -> None:
    stack = cdk.Stack(cdk.App(), "Host")
    with pytest.raises(ValueError, match=r"system_log_level 'ERROR': expected one of"):
        Skydag(stack, "Orchestrator", system_log_level="ERROR")


def test_the_first_upgrade_deployment_keeps_the_retired_due_index_beside_due_keys(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """CloudFormation creates or deletes one GSI per table update: the upgrade's first
    deployment only adds ``due_keys`` (the old ``due``, projection ALL, stays, granted to
    nobody); the second, without the flag, only removes ``due``."""
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("upgrade.out")))
    stack = cdk.Stack(app, "Host")
    code = lambda_.Code.from_asset(str(placeholder_asset(ROOT / "build").path))
    skydag = Skydag(stack, "Orchestrator", code=code, keep_retired_due_index=True)
    template = app.synth().get_stack_artifact(stack.artifact_id).template
    resources = template["Resources"]

    def indexes(field: str) -> dict[str, Any]:
        table = resources[_logical_id(stack, skydag.tables[field])]
        return {i["IndexName"]: i for i in table["Properties"].get("GlobalSecondaryIndexes", [])}

    tasks = indexes("task_instances")
    assert sorted(tasks) == ["due", "due_keys", "job", "token"]
    assert tasks["due"]["KeySchema"] == tasks["due_keys"]["KeySchema"]
    assert tasks["due"]["Projection"] == {"ProjectionType": "ALL"}
    assert tasks["due_keys"]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    # One index added per table: the runs' own due index may come in the same deployment.
    assert sorted(indexes("runs")) == ["due_runs", "queued"]
    policies = json.dumps([r for r in resources.values() if r["Type"] == "AWS::IAM::Policy"])
    assert "/index/due_keys" in policies
    assert '/index/due"' not in policies
