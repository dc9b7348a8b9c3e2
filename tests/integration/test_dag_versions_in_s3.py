"""Each DAG version's spec is an immutable S3 object the version item points at: written
before the item, read once per repository, checked against its pointer, and items of older
releases holding the spec inline still read. A 10,000-task DAG stores and reads back."""

from __future__ import annotations

import gzip
import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pynamodb.exceptions import PutError

from skydag.service.dag_loader import dag_file_problem
from skydag.settings import VERSIONS_PREFIX, Settings
from skydag.spec.loader import load_dag_bytes
from skydag.spec.models import DagSpec
from skydag.store.models import DagVersionModel
from skydag.store.repositories import Repositories
from skydag.store.spec_objects import SpecObjectError, SpecObjects, spec_objects

NOW = datetime(2026, 3, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
SPEC = DagSpec.model_validate(
    {
        "dag": "etl",
        "tasks": {"extract": {"noop": {}}, "load": {"noop": {}, "depends_on": ["extract"]}},
    }
)


def _scale_dags() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "scale_dags", ROOT / "benchmarks" / "scale_dags.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _objects(aws: Settings) -> list[str]:
    listed = spec_objects().client.list_objects_v2(Bucket=aws.dag_bucket)
    return [obj["Key"] for obj in listed.get("Contents", [])]


def _count_gets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    keys: list[str] = []
    original = SpecObjects.get

    def counted(self: SpecObjects, pointer: Any) -> str:
        keys.append(pointer.key)
        return original(self, pointer)

    monkeypatch.setattr(SpecObjects, "get", counted)
    return keys


def test_a_version_is_an_s3_object_the_item_points_at(aws: Settings, repos: Repositories) -> None:
    number = repos.dags.save_version(SPEC, source="test", sha256="abc", now=NOW)

    item = DagVersionModel.get("etl", number)
    assert item.spec is None
    assert item.spec_key is not None
    assert item.spec_key.startswith(f"{VERSIONS_PREFIX}etl/v1/")
    assert item.spec_key.endswith(".json.gz")
    assert _objects(aws) == [item.spec_key]
    body = spec_objects().client.get_object(Bucket=aws.dag_bucket, Key=item.spec_key)["Body"].read()
    assert len(body) == item.spec_size
    assert DagSpec.model_validate_json(gzip.decompress(body)) == SPEC
    # Outside the DAG prefix, and not a DAG file name: the loader never loads it.
    assert dag_file_problem(item.spec_key, aws.dag_prefix) is not None
    assert Repositories().dags.load_spec("etl", number) == SPEC


def test_a_spec_is_read_once_per_repository(
    aws: Settings, repos: Repositories, monkeypatch: pytest.MonkeyPatch
) -> None:
    repos.dags.save_version(SPEC, source="test", sha256=None, now=NOW)
    reads = _count_gets(monkeypatch)
    reader = Repositories()

    assert reader.dags.load_spec("etl", 1) == SPEC
    assert reader.dags.load_spec("etl", 1) == SPEC

    assert len(reads) == 1


def test_an_item_of_an_older_release_with_the_spec_inline_still_reads(
    aws: Settings, repos: Repositories
) -> None:
    DagVersionModel(
        "etl", 1, spec=SPEC.model_dump_json(by_alias=True, exclude_none=True), created_at=NOW
    ).save()

    assert repos.dags.load_spec("etl", 1) == SPEC


def test_an_object_that_is_not_what_the_item_says_is_refused(
    aws: Settings, repos: Repositories
) -> None:
    repos.dags.save_version(SPEC, source="test", sha256=None, now=NOW)
    key = DagVersionModel.get("etl", 1).spec_key
    other = SPEC.model_copy(update={"description": "changed"})
    tampered = gzip.compress(other.model_dump_json().encode(), mtime=0)
    spec_objects().client.put_object(Bucket=aws.dag_bucket, Key=key, Body=tampered)

    with pytest.raises(SpecObjectError, match="not the bytes the version item points at"):
        Repositories().dags.load_spec("etl", 1)


def test_the_object_is_written_before_the_item(
    aws: Settings, repos: Repositories, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: DagVersionModel, *args: Any, **kwargs: Any) -> Any:
        raise PutError("the loader died")

    monkeypatch.setattr(DagVersionModel, "save", crash)
    with pytest.raises(PutError):
        repos.dags.save_version(SPEC, source="test", sha256=None, now=NOW)

    # An object nobody points at, never an item pointing at nothing.
    assert len(_objects(aws)) == 1
    assert list(DagVersionModel.query("etl")) == []


def test_two_versions_keep_their_own_objects(aws: Settings, repos: Repositories) -> None:
    second = SPEC.model_copy(update={"description": "v2"})
    repos.dags.save_version(SPEC, source="test", sha256=None, now=NOW)
    repos.dags.save_version(second, source="test", sha256=None, now=NOW)

    reader = Repositories()
    assert reader.dags.load_spec("etl", 1) == SPEC
    assert reader.dags.load_spec("etl", 2) == second
    assert len(_objects(aws)) == 2


@pytest.mark.parametrize("shape", ["chain", "fan"])
def test_a_10000_task_dag_validates_stores_and_reads_back(
    aws: Settings, repos: Repositories, shape: str
) -> None:
    text = _scale_dags().dag_yaml(shape, 10_000)
    spec = load_dag_bytes(text.encode(), f"{shape}.yaml")
    assert len(spec.tasks) == 10_000

    number = repos.dags.save_version(spec, source="test", sha256=None, now=NOW)

    item = DagVersionModel.get(spec.dag, number)
    assert item.spec is None  # ~1 MB of JSON: no longer fits in an item
    assert item.spec_size is not None
    assert item.spec_size < 400 * 1024
    read = Repositories().dags.load_spec(spec.dag, number)
    assert read == spec
    assert read.topological_order() == spec.topological_order()
    assert json.loads(read.model_dump_json())["dag"] == spec.dag
