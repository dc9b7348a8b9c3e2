"""Least privilege: every statement scoped to ARNs; ``*`` only where an API requires it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from infra_synth import ACCOUNT, DISPATCH, REGION, Synthesized

from skydag.settings import VERSIONS_PREFIX
from skydag.wiring import DEPLOYMENT_TAG

BUS = "skydag"  # the test stack's bus: the deployment tag's value

# Actions allowed on Resource "*", each because the API has no resource-level permission.
STAR_ALLOWED = {
    "xray:PutTraceSegments": "X-Ray has no resource-level permissions",
    "xray:PutTelemetryRecords": "X-Ray has no resource-level permissions",
    "dynamodb:ListStreams": "no resource-level permission (Lambda's stream event source)",
    "batch:DescribeJobs": "no resource-level permission",
    "batch:ListJobs": "no resource-level permission",
    "elasticmapreduce:ListClusters": "no resource-level permission",
    "ecs:DescribeTaskDefinition": "no resource-level permission",
    "ecs:ListTasks": "authorized on container instances; narrowed by ecs:cluster",
}
DISPATCH_ACTIONS = {
    "batch:SubmitJob",
    "elasticmapreduce:AddJobFlowSteps",
    "emr-serverless:StartJobRun",
    "states:StartExecution",
    "lambda:InvokeFunction",
    "ecs:RunTask",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _documents(synth: Synthesized) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every identity policy document in the template: (owner, document)."""
    for logical_id, policy in synth.resources("AWS::IAM::Policy").items():
        yield logical_id, policy["Properties"]["PolicyDocument"]
    for logical_id, role in synth.resources("AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            yield logical_id, inline["PolicyDocument"]


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in document["Statement"] if s["Effect"] == "Allow"]


def _role_statements(synth: Synthesized, name: str) -> list[dict[str, Any]]:
    role = {"Ref": synth.logical_id(synth.skydag.roles[name])}
    return [
        statement
        for policy in synth.resources("AWS::IAM::Policy").values()
        if role in policy["Properties"]["Roles"]
        for statement in _statements(policy["Properties"]["PolicyDocument"])
    ]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements for a in _as_list(s["Action"])}


def test_star_resources_only_where_the_api_requires_it(synth: Synthesized) -> None:
    checked = 0
    for owner, document in _documents(synth):
        for statement in _statements(document):
            actions = _as_list(statement["Action"])
            assert not [a for a in actions if "*" in a], f"{owner}: wildcard action {actions}"
            if "*" in _as_list(statement["Resource"]):
                unexplained = sorted(set(actions) - STAR_ALLOWED.keys())
                assert not unexplained, f"{owner}: Resource '*' for {unexplained}"
                checked += 1
    assert checked  # the walk saw dynamodb:ListStreams at least


def test_no_role_has_a_managed_policy_or_trusts_more_than_one_service(
    synth: Synthesized,
) -> None:
    for logical_id, role in synth.resources("AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], logical_id
        (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert set(trust["Principal"]) == {"Service"}, logical_id


def test_every_pass_role_names_the_service_it_passes_to(synth: Synthesized) -> None:
    for owner, document in _documents(synth):
        for statement in _statements(document):
            if "iam:PassRole" in _as_list(statement["Action"]):
                assert _as_list(statement["Action"]) == ["iam:PassRole"], owner
                assert set(statement["Condition"]) == {"StringEquals"}, owner
                assert set(statement["Condition"]["StringEquals"]) == {"iam:PassedToService"}
                assert "*" not in _as_list(statement["Resource"]), owner


@pytest.mark.parametrize("name", ["DagLoader", "Scheduler", "StreamProcessor", "Reconciler"])
def test_functions_may_pass_only_the_schedule_role_to_eventbridge_scheduler(
    synth: Synthesized, name: str
) -> None:
    schedule_role = {"Fn::GetAtt": [synth.logical_id(synth.skydag.scheduler_role), "Arn"]}
    (statement,) = (
        s
        for s in _role_statements(synth, name)
        if s["Action"] == "iam:PassRole"
        and s["Condition"]["StringEquals"]["iam:PassedToService"] == "scheduler.amazonaws.com"
    )
    assert statement["Resource"] == schedule_role
    (schedules,) = (
        s for s in _role_statements(synth, name) if "scheduler:CreateSchedule" in s["Action"]
    )
    assert sorted(schedules["Action"]) == [
        "scheduler:CreateSchedule",
        "scheduler:DeleteSchedule",
        "scheduler:GetSchedule",
        "scheduler:UpdateSchedule",
    ]
    assert schedules["Resource"]["Fn::Join"][1][-1] == ":schedule/skydag/*"


def test_dag_loader_reads_dag_files_and_writes_only_the_dag_tables(synth: Synthesized) -> None:
    skydag = synth.skydag
    statements = _role_statements(synth, "DagLoader")
    assert not _actions(statements) & DISPATCH_ACTIONS
    table_arns = {synth.logical_id(skydag.tables[field]): field for field in skydag.tables}
    touched = {
        table_arns[resource["Fn::GetAtt"][0]]
        for s in statements
        if any(a.startswith("dynamodb:") for a in _as_list(s["Action"]))
        for resource in _as_list(s["Resource"])
        if isinstance(resource, dict) and resource.get("Fn::GetAtt", [None])[0] in table_arns
    }
    assert touched == {"dags", "dag_versions"}
    (objects,) = (s for s in statements if "s3:GetObject" in _as_list(s["Action"]))
    assert objects["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [synth.logical_id(skydag.dag_bucket), "Arn"]}, "/dags/*"]]
    }
    (listing,) = (s for s in statements if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "dags/*"}}
    # It writes each version's spec, under the versions prefix only (never a DAG file).
    (writes,) = (s for s in statements if "s3:PutObject" in _as_list(s["Action"]))
    assert _as_list(writes["Action"]) == ["s3:PutObject"]
    assert writes["Resource"] == _versions_objects(synth)


def _versions_objects(synth: Synthesized) -> dict[str, Any]:
    bucket = {"Fn::GetAtt": [synth.logical_id(synth.skydag.dag_bucket), "Arn"]}
    return {"Fn::Join": ["", [bucket, f"/{VERSIONS_PREFIX}*"]]}


@pytest.mark.parametrize("name", ["Scheduler", "StreamProcessor", "Reconciler"])
def test_engine_functions_read_dag_version_specs_and_no_other_object(
    synth: Synthesized, name: str
) -> None:
    statements = _role_statements(synth, name)
    s3_statements = [
        s for s in statements if any(a.startswith("s3:") for a in _as_list(s["Action"]))
    ]
    assert [_as_list(s["Action"]) for s in s3_statements] == [["s3:GetObject"]]
    assert s3_statements[0]["Resource"] == _versions_objects(synth)


@pytest.mark.parametrize("name", ["Scheduler", "StreamProcessor", "Reconciler"])
def test_engine_functions_write_state_but_never_a_dag_version(
    synth: Synthesized, name: str
) -> None:
    skydag = synth.skydag
    versions = {"Fn::GetAtt": [synth.logical_id(skydag.tables["dag_versions"]), "Arn"]}
    for statement in _role_statements(synth, name):
        if "dynamodb:PutItem" in _as_list(statement["Action"]):
            assert versions not in _as_list(statement["Resource"])
            assert len(_as_list(statement["Resource"])) == len(skydag.tables) - 1
    assert "dynamodb:Scan" not in _actions(_role_statements(synth, name))


def test_table_reads_name_each_index_rather_than_all_of_them(synth: Synthesized) -> None:
    for owner, document in _documents(synth):
        for statement in _statements(document):
            for resource in _as_list(statement["Resource"]):
                if isinstance(resource, dict) and "Fn::Join" in resource:
                    tail = resource["Fn::Join"][1][-1]
                    assert not (isinstance(tail, str) and tail.endswith("/index/*")), owner


@pytest.mark.parametrize("name", ["Scheduler", "StreamProcessor", "Reconciler"])
def test_dispatch_is_scoped_to_what_the_user_allowed(synth: Synthesized, name: str) -> None:
    statements = _role_statements(synth, name)

    def resources_for(action: str) -> list[Any]:
        return [
            r
            for s in statements
            if action in _as_list(s["Action"])
            for r in _as_list(s["Resource"])
        ]

    assert sorted(resources_for("batch:SubmitJob")) == sorted(
        [
            *DISPATCH["batch_job_queues"],
            f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/evaluate",
            f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/evaluate:*",
            f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/train:3",
        ]
    )
    assert resources_for("states:StartExecution") == DISPATCH["state_machines"]
    # Executions cannot be tagged: only those named as skydag names them may be stopped.
    assert resources_for("states:StopExecution") == [
        f"arn:aws:states:{REGION}:{ACCOUNT}:execution:publish:skydag-*"
    ]
    function = DISPATCH["lambda_functions"][0]
    assert resources_for("lambda:InvokeFunction") == [function, f"{function}:*"]
    application = DISPATCH["emr_serverless_applications"][0]
    assert resources_for("emr-serverless:StartJobRun") == [application, f"{application}/jobruns/*"]
    (emr,) = resources_for("elasticmapreduce:AddJobFlowSteps")
    assert emr["Fn::Join"][1][-1] == ":cluster/j-2AXXXXXXGAPLF"
    cluster = DISPATCH["ecs_clusters"][0]
    (run_task,) = (s for s in statements if s["Action"] == "ecs:RunTask")
    assert run_task["Condition"] == {"ArnEquals": {"ecs:cluster": [cluster]}}
    assert run_task["Resource"] == [
        DISPATCH["ecs_task_definitions"][0],
        f"{DISPATCH['ecs_task_definitions'][0]}:*",
    ]
    assert resources_for("ecs:StopTask") == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/jobs/*"]
    (tag_tasks,) = (s for s in statements if s["Action"] == "ecs:TagResource")
    assert tag_tasks["Condition"] == {
        "StringEquals": {"ecs:CreateAction": "RunTask", f"aws:RequestTag/{DEPLOYMENT_TAG}": BUS}
    }
    (list_tasks,) = (s for s in statements if s["Action"] == "ecs:ListTasks")
    assert list_tasks["Condition"] == {"ArnEquals": {"ecs:cluster": [cluster]}}
    for service, roles in DISPATCH["pass_roles"].items():
        (passing,) = (
            s
            for s in statements
            if s["Action"] == "iam:PassRole"
            and s["Condition"]["StringEquals"]["iam:PassedToService"] == service
        )
        assert _as_list(passing["Resource"]) == roles


@pytest.mark.parametrize("name", ["Scheduler", "StreamProcessor", "Reconciler"])
@pytest.mark.parametrize(
    ("action", "tag_key"),
    [
        ("batch:TerminateJob", "aws:ResourceTag"),
        ("batch:TagResource", "aws:RequestTag"),
        ("ecs:StopTask", "aws:ResourceTag"),
        ("ecs:TagResource", "aws:RequestTag"),
        ("emr-serverless:CancelJobRun", "aws:ResourceTag"),
        ("emr-serverless:TagResource", "aws:RequestTag"),
    ],
)
def test_stopping_and_tagging_need_the_deployment_tag(
    synth: Synthesized, name: str, action: str, tag_key: str
) -> None:
    """Job ids are assigned by the services, so these are granted on ``job/*`` and the like:
    the tag skydag puts on what it starts is what keeps them off everyone else's jobs."""
    statements = [s for s in _role_statements(synth, name) if action in _as_list(s["Action"])]
    assert statements, action
    for statement in statements:
        assert _as_list(statement["Action"]) == [action]
        assert statement["Condition"]["StringEquals"][f"{tag_key}/{DEPLOYMENT_TAG}"] == BUS


def test_the_event_bus_is_the_only_place_functions_put_events(synth: Synthesized) -> None:
    bus = {"Fn::GetAtt": [synth.logical_id(synth.skydag.event_bus), "Arn"]}
    for name in synth.skydag.roles:
        puts = [
            s for s in _role_statements(synth, name) if "events:PutEvents" in _as_list(s["Action"])
        ]
        assert [s["Resource"] for s in puts] == [bus], name


@pytest.mark.parametrize("name", ["Scheduler", "StreamProcessor", "Reconciler"])
def test_the_engine_queries_the_keys_only_due_index_by_its_name(
    synth: Synthesized, name: str
) -> None:
    """The due index became keys-only under a new name (a changed projection is a new
    index): the engine's roles name ``due_keys``, and no grant is left on the old ``due``."""
    table_construct = synth.skydag.tables["task_instances"]
    tasks = {"Fn::GetAtt": [synth.logical_id(table_construct), "Arn"]}
    table = synth.resource(table_construct)
    indexes = {i["IndexName"]: i for i in table["Properties"]["GlobalSecondaryIndexes"]}
    assert indexes["due_keys"]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert "due" not in indexes
    index_grants = {
        (action, resource["Fn::Join"][1][-1])
        for statement in _role_statements(synth, name)
        for action in _as_list(statement["Action"])
        for resource in _as_list(statement["Resource"])
        if isinstance(resource, dict)
        and "Fn::Join" in resource
        and resource["Fn::Join"][1][0] == tasks
    }
    assert ("dynamodb:Query", "/index/due_keys") in index_grants
    assert not any(tail == "/index/due" for _, tail in index_grants)
