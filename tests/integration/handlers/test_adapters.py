"""The EventBridge and EventBridge Scheduler adapters: timers, pause, and PutEvents failures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from handler_support import BUS_ARN, GROUP, Stack

from skydag.adapters.events import (
    MAX_ENTRY_BYTES,
    EventBridgeEventSink,
    EventPublishError,
    EventTooLarge,
    entry_size,
)
from skydag.adapters.schedules import EventBridgeSchedules, timer_schedule_name
from skydag.ports import Timers
from skydag.settings import Settings
from skydag.spec.models import DagSpec


@dataclass
class FixedClock:
    moment: datetime

    def now(self) -> datetime:
        return self.moment


def schedules(stack: Stack, now: datetime) -> EventBridgeSchedules:
    settings = stack.settings.model_copy(
        update={"event_bus_arn": BUS_ARN, "scheduler_role_arn": "arn:aws:iam::1:role/s"}
    )
    return EventBridgeSchedules(settings, clock=FixedClock(now))


def test_a_timer_is_a_one_shot_at_schedule_that_deletes_itself(stack: Stack) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    adapter: Timers = schedules(stack, now)
    at = now + timedelta(minutes=10, seconds=30)
    detail = {"dag": "nightly", "run_id": "scheduled__2026-11-21T01:00:00+00:00", "task": "load"}

    adapter.set_timer("retry-3f9a0c4e8b7d4e21a6c5b9d0e1f2a3b4", at, detail)
    adapter.set_timer("retry-3f9a0c4e8b7d4e21a6c5b9d0e1f2a3b4", at + timedelta(hours=1), detail)

    timer = stack.schedule("retry-3f9a0c4e8b7d4e21a6c5b9d0e1f2a3b4")
    assert timer is not None
    # Rounded up to the minute (never early: the retry is due at `at`), set once.
    fire = (at + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
    assert timer["ScheduleExpression"] == f"at({fire})"
    assert timer["ScheduleExpressionTimezone"] == "UTC"
    assert timer["ActionAfterCompletion"] == "DELETE"
    assert timer["Target"]["EventBridgeParameters"] == {
        "DetailType": "Timer Fired",
        "Source": "skydag.scheduler",
    }
    assert json.loads(timer["Target"]["Input"]) == detail


def test_a_timer_already_due_fires_a_minute_from_now(stack: Stack) -> None:
    now = datetime(2026, 11, 22, 12, 0, 20, tzinfo=UTC)
    adapter = schedules(stack, now)

    adapter.set_timer("late", now - timedelta(hours=1), {"dag": "x"})

    timer = stack.schedule("late")
    assert timer is not None
    assert timer["ScheduleExpression"] == "at(2026-11-22T12:02:00)"
    assert adapter.delete_timer("late") is True
    assert adapter.delete_timer("late") is False


def test_timer_names_are_made_valid_and_stay_the_same() -> None:
    name = "retry-scheduled__2026-11-21T01:00:00+00:00-load"
    cleaned = timer_schedule_name(name)

    assert cleaned == timer_schedule_name(name)
    assert len(cleaned) <= 64
    assert all(c.isalnum() or c in "-_." for c in cleaned)
    assert timer_schedule_name("retry-abc") == "retry-abc"


def test_pausing_disables_the_schedule_and_keeps_a_rates_phase(stack: Stack) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=2, minutes=7)
    spec = DagSpec.model_validate(
        {
            "dag": "often",
            "schedule": "rate(15 minutes)",
            "start_date": start.isoformat(),
            "tasks": {"only": {"noop": None}},
        }
    )
    adapter = schedules(stack, now)
    adapter.put_dag_schedule(spec, enabled=True)
    later = schedules(stack, now + timedelta(hours=1, minutes=3))

    assert later.set_dag_schedule_enabled("often", False) is True

    schedule = stack.schedule("dag-often")
    assert schedule is not None
    assert schedule["State"] == "DISABLED"
    assert schedule["ScheduleExpression"] == "rate(15 minutes)"
    assert (schedule["StartDate"] - start) % timedelta(minutes=15) == timedelta(0)
    assert schedule["StartDate"] > now + timedelta(hours=1)
    assert later.set_dag_schedule_enabled("never_loaded", True) is False


def test_the_sink_puts_skydag_events_on_the_bus(stack: Stack) -> None:
    sink = EventBridgeEventSink(stack.settings.model_copy(update={"event_bus": "skydag"}))

    sink.put("DagRun State Change", {"dag": "nightly", "at": datetime(2026, 11, 22, tzinfo=UTC)})

    [event] = stack.bus_events()
    assert (event["source"], event["detail-type"]) == ("skydag", "DagRun State Change")
    assert event["detail"] == {"dag": "nightly", "at": "2026-11-22T00:00:00+00:00"}


@dataclass
class RefusingEvents:
    """An EventBridge client whose PutEvents refuses entries with the given codes, in turn."""

    codes: list[str]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append(Entries[0])
        code = self.codes.pop(0) if self.codes else None
        if code is None:
            return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}
        return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": code, "ErrorMessage": "no"}]}


def test_a_throttled_entry_is_put_again() -> None:
    client = RefusingEvents(["ThrottlingException"])
    sink = EventBridgeEventSink(Settings(), client=client, sleep=lambda _: None)

    sink.put("DAG Import Error", {"source": "s3://b/dags/x.yaml", "dag": None, "errors": []})

    assert len(client.calls) == 2


def test_a_refused_entry_raises_after_its_retries() -> None:
    always = RefusingEvents(["InternalFailure"] * 3)
    refused = RefusingEvents(["AccessDeniedException"])

    with pytest.raises(EventPublishError) as throttled:
        EventBridgeEventSink(Settings(), client=always, sleep=lambda _: None).put("X", {})
    with pytest.raises(EventPublishError) as denied:
        EventBridgeEventSink(Settings(), client=refused, sleep=lambda _: None).put("X", {})

    assert (throttled.value.retryable, len(always.calls)) == (True, 3)
    assert (denied.value.retryable, len(refused.calls)) == (False, 1)


def test_an_event_over_256_kb_is_refused_before_the_call() -> None:
    client = RefusingEvents([])
    sink = EventBridgeEventSink(Settings(), client=client)

    with pytest.raises(EventTooLarge):
        sink.put("DAG Import Error", {"errors": ["x" * MAX_ENTRY_BYTES]})

    assert client.calls == []
    assert entry_size("skydag", "X", "{}", ()) == 14 + 6 + 1 + 2


def test_the_scheduler_group_is_the_configured_one(stack: Stack) -> None:
    spec = DagSpec.model_validate(
        {
            "dag": "daily",
            "schedule": "@daily",
            "start_date": "2026-01-01",
            "tasks": {"only": {"noop": None}},
        }
    )
    schedules(stack, datetime.now(UTC)).put_dag_schedule(spec, enabled=True)

    listed = stack.scheduler.list_schedules(GroupName=GROUP)["Schedules"]
    assert [s["Name"] for s in listed] == ["dag-daily"]


def test_a_lazy_client_is_made_on_its_first_call_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold start pays for a client only when its first event calls the service: the
    sink and the schedules hold none until then, and one afterwards, made once, for the
    settings' region and endpoint."""
    from skydag import adapters

    made: list[str] = []
    new_client = adapters.new_client

    def counted(service_name: str, settings: Settings, *, max_attempts: int) -> Any:
        made.append(service_name)
        return new_client(service_name, settings, max_attempts=max_attempts)

    monkeypatch.setattr(adapters, "new_client", counted)
    settings = Settings(region="eu-west-1", endpoint_url="http://localhost:4566")
    client = adapters.LazyClient("events", settings)
    EventBridgeEventSink(settings)
    assert made == []

    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == "http://localhost:4566"
    client.meta  # noqa: B018 (a second use makes no second client)
    assert made == ["events"]


def test_the_stores_models_make_their_clients_from_the_functions_one_session(
    aws: Settings,
) -> None:
    """PynamoDB would make a botocore session per model, each loading DynamoDB's service
    model again at a cold start: the models' clients share the functions' session (its
    loader, so the service model loaded once), and so do the functions' own clients."""
    from skydag import adapters
    from skydag.store.models import RunModel, TaskInstanceModel, TaskStateModel, bind_models

    bind_models(aws)
    clients = [
        model._get_connection().connection.client
        for model in (TaskInstanceModel, RunModel, TaskStateModel)
    ]
    loader = adapters.botocore_session().get_component("data_loader")
    assert all(client._loader is loader for client in clients)
    assert adapters.aws_client("s3", aws)._loader is loader
    assert clients[0].meta.endpoint_url == clients[1].meta.endpoint_url
