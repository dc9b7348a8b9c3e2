"""Where the CLI finds skydag (stack outputs, environment, `dev up`'s endpoint), `skydag
info`'s contract JSON, and the errors people get when skydag is not where it looks."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import boto3
import pytest
from cli_support import REGION, Skydag, clear_location_variables

from skydag.cli import remote
from skydag.service import router
from skydag.settings import Settings, TableNames
from skydag.store.models import create_tables

ROOT = Path(__file__).resolve().parents[3]

PROD_TABLES = TableNames(
    dags="prod-dags",
    dag_versions="prod-dag-versions",
    runs="prod-runs",
    task_instances="prod-task-instances",
    task_state="prod-task-state",
)


def _create_stack(name: str, *, bucket: str = "prod-dag-bucket") -> None:
    """A stack with the outputs the CDK app gives (the bucket is made by the stack; the bus
    and the tables by ``_create_stack_resources``)."""
    outputs = {
        "Region": REGION,
        "DagPrefix": "dags/",
        "EventBus": "prod-bus",
        "EventBusArn": f"arn:aws:events:{REGION}:123456789012:event-bus/prod-bus",
        "ScheduleGroup": "prod-schedules",
        **{remote.TABLE_OUTPUTS[field]: value for field, value in PROD_TABLES},
    }
    template = {
        "Resources": {
            "DagBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": bucket}}
        },
        "Outputs": {
            "DagBucket": {"Value": {"Ref": "DagBucket"}},
            **{key: {"Value": value} for key, value in outputs.items()},
        },
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=name, TemplateBody=json.dumps(template)
    )


def _create_stack_resources() -> None:
    """The bus and tables the stack's outputs name (``skydag info`` checks they exist)."""
    create_tables(Settings(tables=PROD_TABLES))
    boto3.client("events", region_name=REGION).create_event_bus(Name="prod-bus")


def test_info_prints_the_contract_json_from_the_environment(skydag: Skydag) -> None:
    result = skydag.run("info", "--output", "json")
    assert result.code == 0, result.err
    assert result.json() == {
        "region": "us-east-1",
        "endpoint_url": None,
        "dag_bucket": "skydag-dags",
        "dag_prefix": "dags/",
        "event_bus": "skydag",
        "tables": {
            "dags": "skydag-dags",
            "dag_versions": "skydag-dag-versions",
            "runs": "skydag-runs",
            "task_instances": "skydag-task-instances",
            "task_state": "skydag-task-state",
        },
    }


def test_info_reads_the_stack_outputs(
    aws: Settings, skydag: Skydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_location_variables(monkeypatch)
    _create_stack(remote.DEFAULT_STACK)
    _create_stack_resources()
    info = skydag.run("info", "--output", "json")
    assert info.code == 0, info.err
    assert info.json() == {
        "region": REGION,
        "endpoint_url": None,
        "dag_bucket": "prod-dag-bucket",
        "dag_prefix": "dags/",
        "event_bus": "prod-bus",
        "tables": PROD_TABLES.model_dump(),
    }
    text = skydag.run("info")
    assert "stack Skydag" in text.out
    assert "prod-task-instances" in text.out


def test_the_stack_named_by_flag_or_variable_wins_over_the_environment(
    skydag: Skydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create_stack("Other", bucket="other-bucket")
    _create_stack_resources()
    assert skydag.run("info", "--output", "json", "--stack", "Other").json()["event_bus"] == (
        "prod-bus"
    )
    monkeypatch.setenv(remote.STACK_VARIABLE, "Other")
    assert skydag.run("info", "--output", "json").json()["dag_bucket"] == "other-bucket"


def test_commands_read_and_write_where_the_stack_says(
    aws: Settings, skydag: Skydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_location_variables(monkeypatch)
    _create_stack(remote.DEFAULT_STACK)
    _create_stack_resources()
    listing = skydag.run("dags", "list", "--output", "json")
    assert listing.code == 0, listing.err
    assert listing.json() == []
    # The default tables hold a DAG; the stack's do not: the command looked at the stack's.
    skydag.load_dag("dag: elsewhere\ntasks: {a: {noop: {}}}\n")
    assert skydag.run("dags", "list", "--output", "json").json() == []
    assert skydag.run("trigger", "elsewhere").code == 1


def test_a_missing_stack_is_a_clear_error(skydag: Skydag, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_location_variables(monkeypatch)
    result = skydag.run("info")
    assert result.code == 1
    assert result.out == ""
    assert "skydag info: error: stack 'Skydag' not found in us-east-1" in result.err
    assert "--stack" in result.err


def test_a_stack_without_skydag_outputs_is_named(
    skydag: Skydag, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = {
        "Resources": {"Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "x-b"}}}
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName="NotSkydag", TemplateBody=json.dumps(template)
    )
    result = skydag.run("runs", "list", "--stack", "NotSkydag")
    assert result.code == 1
    assert "stack 'NotSkydag'" in result.err
    assert "DagBucket" in result.err
    assert "EventBus" in result.err


def test_an_endpoint_means_dev_up_and_its_default_names(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_location_variables(monkeypatch)
    location = remote.resolve_location(endpoint_url="http://127.0.0.1:4566", environ={})
    assert location.settings.endpoint_url == "http://127.0.0.1:4566"
    assert location.settings.tables == TableNames()
    assert location.settings.event_bus == "skydag"
    from_variable = remote.resolve_location(environ={"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"})
    assert from_variable.settings.endpoint_url == "http://127.0.0.1:5000"
    assert from_variable.origin == "endpoint http://127.0.0.1:5000"


def test_a_missing_table_is_named(skydag: Skydag, monkeypatch: pytest.MonkeyPatch) -> None:
    skydag.load_dag("dag: present\ntasks: {a: {noop: {}}}\n")
    monkeypatch.setenv("SKYDAG_RUNS_TABLE", "no-such-runs")
    result = skydag.run("runs", "list")
    assert result.code == 1
    assert "DynamoDB table 'no-such-runs' not found (region us-east-1)" in result.err


def test_the_stack_outputs_read_are_the_ones_the_cdk_app_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # infra/skydag_infra/tables.py names each table's output; load it alone (the package
    # imports the CDK, which is slow to start).
    path = ROOT / "infra" / "skydag_infra" / "tables.py"
    spec = importlib.util.spec_from_file_location("skydag_infra_tables", path)
    assert spec is not None
    assert spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, tables)  # dataclasses look their module up
    spec.loader.exec_module(tables)
    made = {table.field: table.output_name for table in tables.table_specs()}
    assert made == remote.TABLE_OUTPUTS
    template_path = ROOT / "cdk.out" / "Skydag.template.json"
    if template_path.exists():  # after `make synth`: every output the CLI reads is there
        outputs = set(json.loads(template_path.read_text(encoding="utf-8"))["Outputs"])
        assert (
            set(remote.REQUIRED_OUTPUTS)
            | {
                remote.OUTPUT_REGION,
                remote.OUTPUT_DAG_PREFIX,
                remote.OUTPUT_EVENT_BUS_ARN,
                remote.OUTPUT_SCHEDULE_GROUP,
            }
            <= outputs
        )


def test_info_names_what_the_stack_lacks(skydag: Skydag, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_location_variables(monkeypatch)
    _create_stack(remote.DEFAULT_STACK)
    create_tables(Settings(tables=PROD_TABLES))
    result = skydag.run("info", "--output", "json")
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        "skydag info: error: event bus prod-bus not found in us-east-1 (names from stack Skydag)\n"
    )


def test_the_commands_sent_are_the_ones_the_router_takes() -> None:
    assert remote.COMMAND_SOURCE == router.COMMAND_SOURCE
    assert set(remote.COMMAND_DETAIL_TYPES) == set(router.COMMANDS)
