"""The DAG bucket and the DynamoDB tables, checked against the PynamoDB models themselves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from infra_synth import Synthesized
from pynamodb.indexes import GlobalSecondaryIndex, LocalSecondaryIndex
from pynamodb.models import Model

from skydag.settings import Settings
from skydag.store.models import ALL_MODELS, bind_models


def test_dag_bucket_is_versioned_encrypted_private_logged_and_on_eventbridge(
    synth: Synthesized,
) -> None:
    skydag = synth.skydag
    props = synth.resource(skydag.dag_bucket)["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": synth.logical_id(skydag.access_logs_bucket)
    }
    assert props["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    assert synth.resource(skydag.dag_bucket)["DeletionPolicy"] == "Retain"


def test_no_custom_resource_sets_the_bucket_notification(synth: Synthesized) -> None:
    custom = [
        r["Type"] for r in synth.json["Resources"].values() if r["Type"].startswith("Custom::")
    ]
    assert custom == []
    assert len(synth.resources("AWS::Lambda::Function")) == 4  # only skydag's own functions


@pytest.mark.parametrize("bucket", ["dag_bucket", "access_logs_bucket"])
def test_buckets_refuse_plain_http(synth: Synthesized, bucket: str) -> None:
    bucket_id = synth.logical_id(getattr(synth.skydag, bucket))
    (policy,) = (
        r
        for r in synth.resources("AWS::S3::BucketPolicy").values()
        if r["Properties"]["Bucket"] == {"Ref": bucket_id}
    )
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )


def _expected_table(model: type[Model]) -> dict[str, Any]:
    """The table a model describes, read from its attributes (not from infra's derivation)."""

    def key_schema(attributes: dict[str, Any]) -> list[dict[str, str]]:
        hash_key = [a.attr_name for a in attributes.values() if a.is_hash_key]
        range_key = [a.attr_name for a in attributes.values() if a.is_range_key]
        return [{"AttributeName": hash_key[0], "KeyType": "HASH"}] + [
            {"AttributeName": name, "KeyType": "RANGE"} for name in range_key
        ]

    attributes = model.get_attributes()
    key_types = {
        a.attr_name: a.attr_type for a in attributes.values() if a.is_hash_key or a.is_range_key
    }
    global_indexes, local_indexes = [], []
    for index in model._indexes.values():
        index_attributes = index.Meta.attributes
        key_types |= {
            a.attr_name: a.attr_type
            for a in index_attributes.values()
            if a.is_hash_key or a.is_range_key
        }
        projection: dict[str, Any] = {"ProjectionType": index.Meta.projection.projection_type}
        if index.Meta.projection.non_key_attributes:
            projection["NonKeyAttributes"] = list(index.Meta.projection.non_key_attributes)
        rendered = {
            "IndexName": index.Meta.index_name,
            "KeySchema": key_schema(index_attributes),
            "Projection": projection,
        }
        if isinstance(index, GlobalSecondaryIndex):
            global_indexes.append(rendered)
        elif isinstance(index, LocalSecondaryIndex):
            local_indexes.append(rendered)
    expected: dict[str, Any] = {
        "KeySchema": key_schema(attributes),
        "AttributeDefinitions": sorted(
            ({"AttributeName": n, "AttributeType": t} for n, t in key_types.items()),
            key=lambda d: d["AttributeName"],
        ),
        "GlobalSecondaryIndexes": sorted(global_indexes, key=lambda i: i["IndexName"]),
        "LocalSecondaryIndexes": sorted(local_indexes, key=lambda i: i["IndexName"]),
        "StreamSpecification": (
            {"StreamViewType": model.Meta.stream_view_type}
            if getattr(model.Meta, "stream_view_type", None)
            else None
        ),
        "TimeToLiveSpecification": (
            {"AttributeName": model._ttl_attribute().attr_name, "Enabled": True}
            if model._ttl_attribute()
            else None
        ),
    }
    return expected


def _actual_table(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": sorted(
            props["AttributeDefinitions"], key=lambda d: d["AttributeName"]
        ),
        "GlobalSecondaryIndexes": sorted(
            props.get("GlobalSecondaryIndexes", []), key=lambda i: i["IndexName"]
        ),
        "LocalSecondaryIndexes": sorted(
            props.get("LocalSecondaryIndexes", []), key=lambda i: i["IndexName"]
        ),
        "StreamSpecification": props.get("StreamSpecification"),
        "TimeToLiveSpecification": props.get("TimeToLiveSpecification"),
    }


@pytest.fixture
def models_bound_to_template(synth: Synthesized) -> Iterator[dict[type[Model], str]]:
    """Bind the models as a deployed function would (``Settings.from_env`` on the function's
    environment), with each table reference standing for its logical id."""
    variables = synth.resource(synth.skydag.functions["Scheduler"])["Properties"]["Environment"][
        "Variables"
    ]
    env = {name: value["Ref"] for name, value in variables.items() if "Ref" in value}
    saved = {model: model.Meta.table_name for model in ALL_MODELS}
    bind_models(Settings.from_env(env))
    try:
        yield {model: str(model.Meta.table_name) for model in ALL_MODELS}
    finally:
        for model, name in saved.items():
            model.Meta.table_name = name


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_each_model_is_bound_to_a_table_with_its_keys_indexes_stream_and_ttl(
    synth: Synthesized, models_bound_to_template: dict[type[Model], str], model: type[Model]
) -> None:
    table = synth.json["Resources"][models_bound_to_template[model]]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert _actual_table(table["Properties"]) == _expected_table(model)


def test_every_table_is_on_demand_recoverable_encrypted_and_retained(
    synth: Synthesized,
) -> None:
    tables = synth.resources("AWS::DynamoDB::Table")
    assert len(tables) == len(ALL_MODELS)
    for table in tables.values():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}
        assert props["DeletionProtectionEnabled"] is True
        assert table["DeletionPolicy"] == "Retain"
        assert "TableName" not in props  # generated: two stacks never collide
