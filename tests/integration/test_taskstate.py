"""The jobs' helper (skydag.taskstate) and the store's TaskStateRepository share one format:
each reads what the other writes, versions continue across both, and compare-and-set
conflicts either way."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from skydag import taskstate
from skydag.engine.models import TaskInstance
from skydag.service.scheduler_service import job_environment
from skydag.settings import Settings
from skydag.store.errors import ConflictError
from skydag.store.models import TaskStateModel
from skydag.store.repositories import Repositories, instance_scope, task_scope
from skydag.taskstate import TaskState, VersionConflict

DAG, RUN, TASK = "etl", "scheduled__2026-01-02", "extract"
NOW = datetime(2026, 1, 2, 0, 5, tzinfo=UTC)


@pytest.fixture
def helper(aws: Settings) -> TaskState:
    return TaskState(dag=DAG, task=TASK, run=RUN, table=aws.tables.task_state)


def raw_item(settings: Settings, scope: str, key: str) -> dict[str, Any]:
    client = boto3.client("dynamodb", region_name=settings.region)
    item: dict[str, Any] = client.get_item(
        TableName=settings.tables.task_state,
        Key={"scope": {"S": scope}, "key": {"S": key}},
        ConsistentRead=True,
    )["Item"]
    return item


def test_scope_keys_and_defaults_match_the_store() -> None:
    assert taskstate.task_scope_key(DAG, TASK) == task_scope(DAG, TASK)
    assert taskstate.instance_scope_key(DAG, RUN, TASK) == instance_scope(DAG, RUN, TASK)
    assert timedelta(days=Settings().task_state_ttl_days) == taskstate.DEFAULT_TTL
    for environ in (
        {},
        {"SKYDAG_TABLE_PREFIX": "team-a"},
        {"SKYDAG_TASK_STATE_TABLE": "custom", "SKYDAG_TABLE_PREFIX": "team-a"},
    ):
        assert taskstate.default_table(environ) == Settings.from_env(environ).tables.task_state


def test_helper_writes_items_exactly_like_the_repository(
    aws: Settings, repos: Repositories, helper: TaskState
) -> None:
    now = datetime.now(UTC)
    repos.state.put(task_scope(DAG, TASK), "by_repository", {"n": 1}, now=now)
    helper.put("by_helper", {"n": 1})

    from_repository = raw_item(aws, task_scope(DAG, TASK), "by_repository")
    from_helper = raw_item(aws, task_scope(DAG, TASK), "by_helper")
    shape = {name: next(iter(value)) for name, value in from_repository.items()}
    assert {name: next(iter(value)) for name, value in from_helper.items()} == shape
    assert shape == {
        "scope": "S",
        "key": "S",
        "value": "S",
        "version": "N",
        "updated_at": "S",
        "expires_at": "N",
    }
    assert from_helper["value"] == from_repository["value"] == {"S": '{"n":1}'}
    # The model parses what the helper wrote: updated_at in PynamoDB's format, TTL in
    # whole epoch seconds, 90 days ahead by default.
    model = TaskStateModel.get(task_scope(DAG, TASK), "by_helper")
    assert abs((model.updated_at - now).total_seconds()) < 60
    assert model.expires_at is not None
    assert abs((model.expires_at - model.updated_at) - timedelta(days=90)) < timedelta(seconds=2)
    assert int(from_helper["expires_at"]["N"]) == int(model.expires_at.timestamp())


def test_each_side_reads_what_the_other_writes_and_versions_continue(
    repos: Repositories, helper: TaskState
) -> None:
    scope = task_scope(DAG, TASK)
    assert repos.state.put(scope, "watermark", "2026-01-02T00:00:00+00:00", now=NOW) == 1
    assert helper.get_versioned("watermark") == ("2026-01-02T00:00:00+00:00", 1)

    assert helper.put("watermark", "2026-01-03T00:00:00+00:00") == 2
    assert repos.state.get(scope, "watermark") == ("2026-01-03T00:00:00+00:00", 2)

    assert repos.state.put(scope, "watermark", "2026-01-04", now=NOW, expected_version=2) == 3
    assert helper.put("watermark", "2026-01-05", expected_version=3) == 4
    assert helper.get("watermark") == "2026-01-05"

    # Checkpoints: the instance scope, which templates overlay on the task scope.
    helper.put(
        "checkpoint", {"pages": 2, "cursor": ["2026-01-01T11:30:00+00:00", 24]}, scope="instance"
    )
    assert repos.state.get_all(instance_scope(DAG, RUN, TASK)) == {
        "checkpoint": {"pages": 2, "cursor": ["2026-01-01T11:30:00+00:00", 24]}
    }
    assert repos.state.get_all(scope) == {"watermark": "2026-01-05"}


def test_compare_and_set_conflicts_across_both_sides(
    repos: Repositories, helper: TaskState
) -> None:
    scope = task_scope(DAG, TASK)
    repos.state.put(scope, "watermark", "a", now=NOW, expected_version=0)
    with pytest.raises(VersionConflict) as lost:
        helper.put("watermark", "b", expected_version=0)
    assert lost.value.current == ("a", 1)
    assert "expected version 0, found version 1" in str(lost.value)

    helper.put("watermark", "c", expected_version=1)
    with pytest.raises(ConflictError):
        repos.state.put(scope, "watermark", "d", now=NOW, expected_version=1)
    with pytest.raises(VersionConflict) as stale:
        helper.put("watermark", "e", expected_version=1)
    assert stale.value.current == ("c", 2)
    assert helper.get_versioned("watermark") == ("c", 2)


def test_ttl_is_epoch_seconds_after_the_write(aws: Settings, helper: TaskState) -> None:
    before = int(time.time())
    helper.put("checkpoint", 1, scope="instance", ttl=timedelta(days=7))
    expires = int(raw_item(aws, instance_scope(DAG, RUN, TASK), "checkpoint")["expires_at"]["N"])
    assert before + 7 * 86400 <= expires <= int(time.time()) + 7 * 86400


def test_module_functions_use_the_job_environment(
    aws: Settings, repos: Repositories, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the scheduler puts in a job's environment is all the helper needs."""
    ti = TaskInstance(DAG, RUN, TASK, try_number=2)
    for name, value in job_environment(ti, aws.tables.task_state).items():
        monkeypatch.setenv(name, value)
    assert taskstate.get("watermark", "none yet") == "none yet"
    assert taskstate.put("watermark", datetime(2026, 1, 3, tzinfo=UTC)) == 1
    assert taskstate.put("checkpoint", [1, 2], scope="instance") == 1
    assert repos.state.get(task_scope(DAG, TASK), "watermark") == ("2026-01-03T00:00:00+00:00", 1)
    assert taskstate.get_versioned("checkpoint", scope="instance") == ([1, 2], 1)


def test_a_missing_identity_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SKYDAG_DAG", "SKYDAG_RUN", "SKYDAG_TASK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(taskstate.MissingIdentity, match=r"^SKYDAG_DAG is not set"):
        taskstate.get("watermark")
    partial = TaskState.from_env({"SKYDAG_DAG": DAG, "SKYDAG_TASK": TASK})
    assert partial.scope_key("task") == task_scope(DAG, TASK)  # no run needed
    with pytest.raises(taskstate.MissingIdentity, match=r"^SKYDAG_RUN is not set") as missing:
        partial.get("checkpoint", scope="instance")
    assert (missing.value.part, missing.value.variable) == ("run", "SKYDAG_RUN")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.put("k", {1, 2}), "must be JSON"),
        (lambda s: s.put("k", float("nan")), "must be JSON"),
        (lambda s: s.put("k", "x" * (300 * 1024)), "over the 262144-byte limit"),
        (lambda s: s.put("k", 1, ttl=timedelta(0)), "ttl must be positive"),
        (lambda s: s.put("k", 1, expected_version=-1), "expected_version must be 0 or more"),
        (lambda s: s.get(""), "non-empty string"),
        (lambda s: s.get("k", scope="run"), "unknown task state scope 'run'"),
    ],
)
def test_bad_input_is_refused_before_any_call(call: Any, message: str) -> None:
    # Nothing listens on port 9: any AWS call would fail with a connection error instead.
    offline = TaskState(dag=DAG, task=TASK, run=RUN, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match=message):
        call(offline)


def test_a_missing_table_is_named(aws: Settings) -> None:
    store = TaskState(dag=DAG, task=TASK, table="no-such-table")
    with pytest.raises(taskstate.TableNotFound, match="table no-such-table at AWS us-east-1"):
        store.get("watermark")


def test_an_output_the_helper_publishes_is_what_the_scheduler_reads(
    aws: Settings, repos: Repositories
) -> None:
    from skydag.ports.store import output_key, output_scope

    job = TaskState(dag=DAG, task=TASK, run=RUN, try_number=2, table=aws.tables.task_state)
    assert job.set_output({"rows": 3}) == 1
    assert job.set_output({"rows": 4}) == 2  # publishing again replaces it
    assert repos.state.get(output_scope(DAG, RUN, TASK), output_key(2)) == ({"rows": 4}, 2)
    assert repos.state.get(output_scope(DAG, RUN, TASK), output_key(1)) is None
    assert job.get_output() == taskstate.VersionedValue({"rows": 4}, 2)
    # An output is not task state: the templates' `state` never shows it.
    assert repos.state.get_all(instance_scope(DAG, RUN, TASK)) == {}
