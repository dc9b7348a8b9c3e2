"""The dag-loader Lambda end to end: S3 events in, versions, schedules and events out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from handler_support import BUCKET, BUS_ARN, ROLE_ARN, Stack, metric_total, s3_event

from skydag.store.dag_files import DagFileRepository
from skydag.store.models import DagVersionModel
from skydag.store.repositories import Repositories

KEY = "dags/nightly.yaml"
SOURCE = f"s3://{BUCKET}/{KEY}"

NIGHTLY = b"""\
dag: nightly
description: Extract then load, every night at 02:00 Paris time
schedule: "0 2 * * *"
timezone: Europe/Paris
start_date: 2026-01-01T00:00:00Z
tasks:
  extract:
    noop:
  load:
    depends_on: [extract]
    noop:
"""
NIGHTLY_AT_THREE = NIGHTLY.replace(b'"0 2 * * *"', b'"0 3 * * *"')
# Still names the DAG, but 'load' depends on a task that does not exist.
NIGHTLY_BROKEN = NIGHTLY.replace(b"depends_on: [extract]", b"depends_on: [extrakt]")


def upload(stack: Stack, key: str, body: bytes) -> str:
    return str(stack.s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]).strip('"')


def created(
    handlers: SimpleNamespace,
    context: Any,
    stack: Stack,
    body: bytes,
    sequencer: str,
    key: str = KEY,
) -> dict[str, Any]:
    etag = upload(stack, key, body)
    event = s3_event("Object Created", key, sequencer=sequencer, etag=etag)
    result: dict[str, Any] = handlers.dag_loader.lambda_handler(event, context)
    return result


def versions(dag_id: str) -> list[int]:
    return [int(item.version) for item in DagVersionModel.query(dag_id)]


def test_a_good_upload_creates_version_one_and_its_schedule(
    stack: Stack, handlers: SimpleNamespace, context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = created(handlers, context, stack, NIGHTLY, "0A")

    assert result == {
        "outcome": "loaded",
        "source": SOURCE,
        "dag": "nightly",
        "version": 1,
        "schedule": "cron(0 2 * * ? *)",
    }
    head = Repositories().dags.get("nightly")
    assert (head.current_version, head.source, head.import_error) == (1, SOURCE, None)
    schedule = stack.schedule("dag-nightly")
    assert schedule is not None
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert schedule["State"] == "ENABLED"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = schedule["Target"]
    assert (target["Arn"], target["RoleArn"]) == (BUS_ARN, ROLE_ARN)
    assert target["EventBridgeParameters"] == {
        "DetailType": "Schedule Tick",
        "Source": "skydag.scheduler",
    }
    assert json.loads(target["Input"]) == {"dag": "nightly"}
    # A tick right away: runs owed since start_date need not wait for the next 02:00.
    ticks = [(e["source"], e["detail-type"], e["detail"]) for e in stack.bus_events()]
    assert ticks == [("skydag.scheduler", "Schedule Tick", {"dag": "nightly"})]
    assert metric_total(capsys.readouterr().out, "SchedulingDelay") > 0


def test_the_same_bytes_again_create_nothing(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")
    stack.bus_events()

    again = created(handlers, context, stack, NIGHTLY, "0B")

    assert (again["outcome"], again["version"]) == ("unchanged", 1)
    assert versions("nightly") == [1]
    assert stack.bus_events() == []


def test_an_edited_upload_creates_version_two_and_updates_the_schedule(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")

    result = created(handlers, context, stack, NIGHTLY_AT_THREE, "0B")

    assert (result["outcome"], result["version"]) == ("loaded", 2)
    assert versions("nightly") == [1, 2]
    assert Repositories().dags.get("nightly").current_version == 2
    schedule = stack.schedule("dag-nightly")
    assert schedule is not None
    assert schedule["ScheduleExpression"] == "cron(0 3 * * ? *)"


def test_a_broken_upload_keeps_the_previous_version_and_reports_the_error(
    stack: Stack, handlers: SimpleNamespace, context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")
    stack.bus_events()

    result = created(handlers, context, stack, NIGHTLY_BROKEN, "0B")

    assert result["outcome"] == "import_error"
    assert result["dag"] == "nightly"
    assert all(line.startswith(f"{SOURCE}: error: ") for line in result["errors"])
    assert any("extrakt" in line for line in result["errors"])
    # The DAG keeps running version 1; its head says why version 2 did not happen.
    head = Repositories().dags.get("nightly")
    assert head.current_version == 1
    assert head.import_error is not None
    assert "extrakt" in head.import_error
    assert versions("nightly") == [1]
    schedule = stack.schedule("dag-nightly")
    assert schedule is not None
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    [event] = stack.bus_events()
    assert (event["source"], event["detail-type"]) == ("skydag", "DAG Import Error")
    assert event["detail"]["source"] == SOURCE
    assert event["detail"]["dag"] == "nightly"
    assert event["detail"]["errors"] == result["errors"]
    assert metric_total(capsys.readouterr().out, "DagImportErrors") == 1

    # The same broken bytes redelivered: already recorded, not announced again.
    again = created(handlers, context, stack, NIGHTLY_BROKEN, "0B")
    assert (again["outcome"], again["reason"]) == ("import_error", "already recorded")
    assert stack.bus_events() == []

    # Fixed: the good bytes are back, the error is gone, and no new version is needed.
    fixed = created(handlers, context, stack, NIGHTLY, "0C")
    assert (fixed["outcome"], fixed["version"]) == ("unchanged", 1)
    assert Repositories().dags.get("nightly").import_error is None


def test_a_file_that_never_loaded_is_listed_with_its_source_and_error(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    result = created(
        handlers, context, stack, b"dag: ghost\ntasks: [not, a, mapping]\n", "01", "dags/ghost.yaml"
    )

    assert (result["outcome"], result["dag"]) == ("import_error", "ghost")
    assert Repositories().dags.find("ghost") is None
    [listed] = DagFileRepository().list_import_errors()
    assert listed.source == f"s3://{BUCKET}/dags/ghost.yaml"
    assert listed.dag == "ghost"
    assert listed.import_error is not None
    assert listed.import_error.startswith(f"s3://{BUCKET}/dags/ghost.yaml: error: ")
    [event] = stack.bus_events()
    assert event["detail"]["dag"] == "ghost"


def test_unreadable_yaml_names_no_dag(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    result = created(handlers, context, stack, b"dag: [unclosed\n", "01", "dags/garbled.yml")

    assert result["outcome"] == "import_error"
    assert "dag" not in result
    [event] = stack.bus_events()
    assert event["detail"]["dag"] is None
    assert event["detail"]["errors"][0].startswith(f"s3://{BUCKET}/dags/garbled.yml: error: ")


def test_a_deleted_file_retires_its_dag_and_deletes_the_schedule(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")
    stack.s3.delete_object(Bucket=BUCKET, Key=KEY)

    result = handlers.dag_loader.lambda_handler(
        s3_event("Object Deleted", KEY, sequencer="0B"), context
    )

    assert result == {"outcome": "retired", "source": SOURCE, "dag": "nightly"}
    head = Repositories().dags.get("nightly")
    assert head.current_version is None
    assert stack.schedule("dag-nightly") is None
    # Redelivered: nothing left to do, and nothing breaks.
    again = handlers.dag_loader.lambda_handler(
        s3_event("Object Deleted", KEY, sequencer="0B"), context
    )
    assert again["outcome"] == "removed"

    # A late "Object Created" for the write before the deletion changes nothing ...
    upload(stack, KEY, NIGHTLY)
    late = handlers.dag_loader.lambda_handler(
        s3_event("Object Created", KEY, sequencer="0A"), context
    )
    assert late["outcome"] == "stale"
    assert Repositories().dags.get("nightly").current_version is None
    # ... while a new upload brings the DAG back, as a new version.
    revived = created(handlers, context, stack, NIGHTLY, "0C")
    assert (revived["outcome"], revived["version"]) == ("loaded", 2)
    assert stack.schedule("dag-nightly") is not None


def test_a_deletion_while_the_key_still_exists_is_ignored(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")

    result = handlers.dag_loader.lambda_handler(
        s3_event("Object Deleted", KEY, sequencer="0B"), context
    )

    assert result["outcome"] == "ignored"
    assert Repositories().dags.get("nightly").current_version == 1


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("other/nightly.yaml", "outside the DAG prefix 'dags/'"),
        ("dags/README.md", "not a .yaml or .yml file"),
    ],
)
def test_files_that_are_not_dags_are_ignored(
    stack: Stack, handlers: SimpleNamespace, context: Any, key: str, reason: str
) -> None:
    result = created(handlers, context, stack, NIGHTLY, "01", key)

    assert result == {"outcome": "ignored", "source": f"s3://{BUCKET}/{key}", "reason": reason}
    assert Repositories().dags.find("nightly") is None


def test_events_that_are_not_s3_object_events_are_dropped(
    stack: Stack, handlers: SimpleNamespace, context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tags = s3_event("Object Created", KEY, sequencer="01")
    tags["detail-type"] = "Object Tags Added"
    bare = s3_event("Object Created", KEY, sequencer="01")
    del bare["detail"]["object"]

    assert handlers.dag_loader.lambda_handler(tags, context)["outcome"] == "ignored"
    assert handlers.dag_loader.lambda_handler(bare, context)["outcome"] == "ignored"
    assert metric_total(capsys.readouterr().out, "BadEvents") == 2


def test_a_paused_dag_gets_a_disabled_schedule(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")
    Repositories().dags.set_paused("nightly", True)

    created(handlers, context, stack, NIGHTLY_AT_THREE, "0B")

    schedule = stack.schedule("dag-nightly")
    assert schedule is not None
    assert schedule["State"] == "DISABLED"


def test_a_rate_schedule_starts_on_the_dags_grid(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    start = (datetime.now(UTC) - timedelta(days=1)).replace(
        hour=0, minute=7, second=0, microsecond=0
    )
    body = NIGHTLY.replace(b'"0 2 * * *"', b'"rate(15 minutes)"').replace(
        b"2026-01-01T00:00:00Z", start.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    )

    result = created(handlers, context, stack, body, "01")

    assert result["schedule"] == "rate(15 minutes)"
    schedule = stack.schedule("dag-nightly")
    assert schedule is not None
    first = schedule["StartDate"]
    assert first > datetime.now(UTC) - timedelta(minutes=1)
    assert (first - start) % timedelta(minutes=15) == timedelta(0)


def test_a_schedule_removed_from_the_file_is_deleted(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")
    unscheduled = b"\n".join(
        line
        for line in NIGHTLY.splitlines()
        if not line.startswith((b"schedule", b"timezone", b"start_date"))
    )

    result = created(handlers, context, stack, unscheduled, "0B")

    assert (result["outcome"], result["version"]) == ("loaded", 2)
    assert stack.schedule("dag-nightly") is None


def test_a_second_file_cannot_take_over_a_dag(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")

    result = created(handlers, context, stack, NIGHTLY_AT_THREE, "01", "dags/copy.yaml")

    assert result["outcome"] == "import_error"
    assert f"already defined by {SOURCE}" in result["errors"][0]
    head = Repositories().dags.get("nightly")
    assert (head.current_version, head.source, head.import_error) == (1, SOURCE, None)


def test_a_renamed_dag_retires_the_old_one(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    created(handlers, context, stack, NIGHTLY, "0A")

    result = created(
        handlers, context, stack, NIGHTLY.replace(b"dag: nightly", b"dag: nightly_v2"), "0B"
    )

    assert (result["outcome"], result["dag"]) == ("loaded", "nightly_v2")
    assert Repositories().dags.get("nightly").current_version is None
    assert stack.schedule("dag-nightly") is None
    assert stack.schedule("dag-nightly_v2") is not None


def test_moto_s3_notifications_load_too(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    """The event S3 itself sends (as moto emulates it: eTag, epoch time, version-id null)."""
    stack.s3.put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    queue = stack.sqs.create_queue(QueueName="s3-events")["QueueUrl"]
    queue_arn = stack.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    stack.events.put_rule(
        Name="s3",
        EventPattern=json.dumps({"source": ["aws.s3"], "detail-type": ["Object Created"]}),
    )
    stack.events.put_targets(Rule="s3", Targets=[{"Id": "q", "Arn": queue_arn}])
    upload(stack, KEY, NIGHTLY)
    [message] = stack.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]

    result = handlers.dag_loader.lambda_handler(json.loads(message["Body"]), context)

    assert (result["outcome"], result["version"]) == ("loaded", 1)


def emitter(dag: str, prefix: str) -> bytes:
    return (
        f"dag: {dag}\nemit_sources: [{prefix}]\ntasks:\n"
        f"  announce:\n    emit: {{source: {prefix}.done, detail-type: done}}\n"
    ).encode()


def test_an_emit_source_prefix_belongs_to_one_dag(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    """Before: any DAG could declare another DAG's prefix and speak for it."""
    first = created(handlers, context, stack, emitter("orders", "com.acme"), "0A", "dags/a.yaml")
    assert first["outcome"] == "loaded"

    inside = emitter("billing", "com.acme.billing")
    taken = created(handlers, context, stack, inside, "0B", "dags/b.yaml")
    assert taken["outcome"] == "import_error"
    assert (
        "'com.acme.billing' overlaps 'com.acme', which DAG 'orders' declares"
        in (taken["errors"][0])
    )
    assert Repositories().dags.find("billing") is None

    # orders gives the prefix up: billing may take its part.
    created(handlers, context, stack, emitter("orders", "com.acme.orders"), "0C", "dags/a.yaml")
    again = created(handlers, context, stack, inside, "0D", "dags/b.yaml")
    assert again["outcome"] == "loaded"


def _wide_fan(width: int, name_prefix: str) -> bytes:
    names = [f"{name_prefix}{i:05d}" for i in range(width)]
    lines = ["dag: wide", "tasks:", "  start: {noop: {}}"]
    lines += [f"  {name}: {{noop: {{}}, depends_on: [start]}}" for name in names]
    lines += ["  end:", "    noop: {}", f"    depends_on: [{', '.join(names)}]"]
    return ("\n".join(lines) + "\n").encode()


def test_a_dag_over_a_size_limit_is_an_import_error_not_a_retry(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    key = "dags/wide.yaml"
    body = _wide_fan(4200, "partition_with_a_long_descriptive_name_")

    result = created(handlers, context, stack, body, "0A", key=key)

    assert (result["outcome"], result["dag"]) == ("import_error", "wide")
    # Its run item could not track 4,202 tasks of such ids (the join's own item holds a
    # summary per group of upstreams, whatever their ids).
    assert any("4202 tasks need up to ~" in line for line in result["errors"])
    assert any("over the 128 KB limit" in line for line in result["errors"])
    record = DagFileRepository().get(key)
    assert record is not None
    assert record.import_error is not None
    assert "over the 128 KB limit" in record.import_error
    [event] = stack.bus_events()
    assert (event["detail-type"], event["detail"]["dag"]) == ("DAG Import Error", "wide")
    assert versions("wide") == []


def test_a_10000_task_dag_loads(stack: Stack, handlers: SimpleNamespace, context: Any) -> None:
    body = _wide_fan(9998, "t")

    result = created(handlers, context, stack, body, "0A", key="dags/wide.yaml")

    assert (result["outcome"], result["version"]) == ("loaded", 1)
    spec = Repositories().dags.load_spec("wide", 1)
    assert len(spec.tasks) == 10_000
    assert len(spec.upstream("end")) == 9998


def test_signal_patterns_too_large_to_index_are_an_import_error(
    stack: Stack, handlers: SimpleNamespace, context: Any
) -> None:
    values = json.dumps([f"v{i:04d}" for i in range(400)])  # ~3.6 KB: under 4,096 each
    pattern = f'{{"source": ["my.app"], "detail": {{"k": {values}}}}}'
    tasks = "".join(f"  t{i:02d}:\n    noop: {{}}\n    start_on: {pattern}\n" for i in range(22))
    body = f"dag: listens\ntasks:\n{tasks}".encode()

    result = created(handlers, context, stack, body, "0A", key="dags/listens.yaml")

    assert result["outcome"] == "import_error"
    assert result["errors"] == [
        "s3://skydag-dags/dags/listens.yaml: error: DAG 'listens': signals: the patterns "
        "listening to source 'my.app' take ~69 KB, over the 64 KB limit: share fewer, "
        "smaller patterns"
    ]
    assert versions("listens") == []
    assert Repositories().dags.find("listens") is None
    [event] = stack.bus_events()
    assert event["detail-type"] == "DAG Import Error"
