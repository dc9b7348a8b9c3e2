"""The pieces infra derives or checks by itself (no synthesis)."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from pynamodb.models import Model
from skydag_infra.nag import flatten_cfn_reference
from skydag_infra.permissions import DispatchTargets, PolicyBuilder, add_dispatch
from skydag_infra.tables import table_specs

from skydag.settings import Settings, TableNames
from skydag.store.models import ALL_MODELS, bind_models
from skydag.wiring import validate_dag_prefix


def _all_models(base: type[Model]) -> list[type[Model]]:
    return [m for s in base.__subclasses__() for m in (s, *_all_models(s))]


def test_a_table_per_model_and_settings_field() -> None:
    specs = table_specs()
    assert [s.model for s in specs] == list(ALL_MODELS)
    assert sorted(s.field for s in specs) == sorted(TableNames.model_fields)


def test_deriving_leaves_the_models_as_they_were() -> None:
    before = {m: m.Meta.table_name for m in _all_models(Model)}
    table_specs()
    assert {m: m.Meta.table_name for m in _all_models(Model)} == before


def test_models_sharing_a_table_share_its_keys() -> None:
    """Records of another kind kept in a model's table (file records, subscriptions in the
    dags table) must use that table's keys, or their writes would fail in AWS."""
    from skydag.store.dag_files import bind_dag_files

    specs = {s.field: s for s in table_specs()}
    names = TableNames(**{field: f"marker-{field}" for field in TableNames.model_fields})
    saved = {m: m.Meta.table_name for m in _all_models(Model)}
    try:
        bind_models(Settings(tables=names))
        bind_dag_files(Settings(tables=names))
        bound = {
            m: str(m.Meta.table_name).removeprefix("marker-")
            for m in _all_models(Model)
            if str(m.Meta.table_name).startswith("marker-")
        }
    finally:
        for model, name in saved.items():
            model.Meta.table_name = name
    assert len(bound) > len(ALL_MODELS)  # the shared-table models are seen too
    for model, field in bound.items():
        keys = {
            a.attr_name: a.attr_type
            for a in model.get_attributes().values()
            if a.is_hash_key or a.is_range_key
        }
        spec = specs[field]
        expected = {spec.partition_key.name: spec.partition_key.type}
        if spec.sort_key:
            expected[spec.sort_key.name] = spec.sort_key.type
        assert keys == expected, model.__name__


def test_flatten_matches_cdk_nag() -> None:
    assert flatten_cfn_reference("*") == "*"
    assert flatten_cfn_reference({"Fn::GetAtt": ["Table1", "Arn"]}) == "<Table1.Arn>"
    joined = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::b/dags/*"]]}
    assert flatten_cfn_reference(joined) == "arn:<AWS::Partition>:s3:::b/dags/*"
    assert flatten_cfn_reference({"Fn::Sub": "arn:${AWS::Region}"}) == "arn:<AWS::Region>"


def test_dispatch_targets_validate_their_shape() -> None:
    with pytest.raises(ValueError, match="unknown service principal"):
        DispatchTargets(pass_roles={"ec2.amazonaws.com": ["arn:aws:iam::1:role/x"]})
    with pytest.raises(ValueError, match="go together"):
        DispatchTargets(batch_job_queues=["arn:aws:batch:us-east-1:1:job-queue/q"])
    with pytest.raises(ValueError, match="unknown key"):
        DispatchTargets.from_json({"batch_queues": []})
    with pytest.raises(ValueError, match="list of strings"):
        DispatchTargets.from_json({"state_machines": "arn:aws:states:..."})
    parsed = DispatchTargets.from_json(
        {"lambda_functions": ["arn:aws:lambda:us-east-1:1:function:f"]}
    )
    assert parsed.lambda_functions == ("arn:aws:lambda:us-east-1:1:function:f",)


def test_no_dispatch_target_means_no_dispatch_permission() -> None:
    policy = PolicyBuilder(cdk.Stack())
    add_dispatch(policy, DispatchTargets(), deployment="skydag")
    assert policy.statements == []


def test_a_wildcard_needs_a_reason() -> None:
    policy = PolicyBuilder(cdk.Stack())
    with pytest.raises(ValueError, match="no reason"):
        policy.allow(["s3:GetObject"], ["arn:aws:s3:::bucket/*"])
    with pytest.raises(ValueError, match="no reason for Resource"):
        policy.allow(["s3:GetObject"], ["*"])


@pytest.mark.parametrize("prefix", ["dags", "/dags/", "da*gs/", ""])
def test_dag_prefix_must_be_a_plain_folder(prefix: str) -> None:
    with pytest.raises(ValueError, match="dag_prefix"):
        validate_dag_prefix(prefix)
