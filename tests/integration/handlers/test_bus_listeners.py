"""skydag's notifications are put only when a rule on the bus takes them: who listens is
the bus's enabled rules, listed at most every ``listeners_refresh_seconds``; anything
unknown counts as listening (a notification is never lost to a guess)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError
from handler_support import BUS, BUS_ARN, REGION, Stack

from skydag.adapters.events import BusListeners, EventBridgeEventSink
from skydag.settings import Settings
from skydag.sources import SCHEDULER_SOURCE

TASK_CHANGE = "Task Instance State Change"
DETAIL = {"dag": "nightly", "run_id": "r1", "task": "extract", "state": "success"}


@dataclass
class Counting:
    """A real EventBridge client (moto) whose PutEvents and ListRules calls are counted."""

    client: Any
    puts: int = 0
    listings: int = 0

    def put_events(self, **request: Any) -> Any:
        self.puts += 1
        return self.client.put_events(**request)

    def list_rules(self, **request: Any) -> Any:
        self.listings += 1
        return self.client.list_rules(**request)


@dataclass
class Ticking:
    seconds: float = 0.0

    def __call__(self) -> float:
        return self.seconds


@dataclass
class FakeRules:
    """ListRules answered from pages of rules, or failing; PutEvents always accepted."""

    pages: list[list[dict[str, Any]]]
    error: Exception | None = None
    puts: list[dict[str, Any]] = field(default_factory=list)

    def list_rules(self, **request: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        index = int(request.get("NextToken", "0"))
        page: dict[str, Any] = {"Rules": self.pages[index]}
        if index + 1 < len(self.pages):
            page["NextToken"] = str(index + 1)
        return page

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.puts.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}


def rule(pattern: Any, state: str = "ENABLED") -> dict[str, Any]:
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    return {"Name": "r", "EventBusName": BUS, "State": state, "EventPattern": text}


def sink_on(
    stack: Stack, clock: Ticking, refresh: int = 30
) -> tuple[EventBridgeEventSink, Counting]:
    settings = stack.settings.model_copy(update={"event_bus": BUS, "event_bus_arn": BUS_ARN})
    client = Counting(boto3.client("events", region_name=REGION))
    listeners = BusListeners(client, BUS_ARN, refresh=refresh, monotonic=clock)
    return EventBridgeEventSink(settings, client=client, listeners=listeners), client


def remove_tap(stack: Stack) -> None:
    stack.events.remove_targets(Rule="tap", EventBusName=BUS, Ids=["tap"])
    stack.events.delete_rule(Name="tap", EventBusName=BUS)


def fake_sink(rules: FakeRules) -> EventBridgeEventSink:
    settings = Settings(event_bus=BUS, event_bus_arn=BUS_ARN)
    return EventBridgeEventSink(settings, client=rules, sleep=lambda _: None)


def test_a_notification_no_rule_takes_is_not_put(stack: Stack) -> None:
    remove_tap(stack)
    stack.events.put_rule(
        Name="commands", EventBusName=BUS, EventPattern=json.dumps({"source": ["skydag.command"]})
    )
    sink, client = sink_on(stack, Ticking())

    sink.put(TASK_CHANGE, DETAIL)
    sink.put("DagRun State Change", {"dag": "nightly", "state": "success"})

    assert (client.puts, sink.unheard, client.listings) == (0, 2, 1)


def test_a_rule_on_the_bus_gets_exactly_the_notifications_it_takes(stack: Stack) -> None:
    stack.events.put_rule(
        Name="tap",
        EventBusName=BUS,
        EventPattern=json.dumps({"source": ["skydag"], "detail": {"state": ["failed"]}}),
    )
    sink, client = sink_on(stack, Ticking())

    sink.put(TASK_CHANGE, DETAIL)
    sink.put(TASK_CHANGE, {**DETAIL, "state": "failed"})

    assert [event["detail"]["state"] for event in stack.bus_events()] == ["failed"]
    assert (client.puts, sink.unheard) == (1, 1)
    # What the scheduler asks before marking a write unheard: the same answer, no call.
    assert sink.listens(TASK_CHANGE, {**DETAIL, "state": "failed"})
    assert not sink.listens(TASK_CHANGE, DETAIL)
    assert client.puts == 1


def test_a_rule_added_hears_the_first_notification_after_the_refresh(stack: Stack) -> None:
    remove_tap(stack)
    clock = Ticking()
    sink, client = sink_on(stack, clock, refresh=30)
    sink.put(TASK_CHANGE, DETAIL)  # nobody listens: the empty bus is remembered

    stack.events.put_rule(
        Name="alerts", EventBusName=BUS, EventPattern=json.dumps({"source": ["skydag"]})
    )
    clock.seconds = 29.0
    sink.put(TASK_CHANGE, DETAIL)
    clock.seconds = 30.0
    sink.put(TASK_CHANGE, DETAIL)

    assert (client.puts, sink.unheard, client.listings) == (1, 2, 2)


def test_a_disabled_rule_does_not_listen(stack: Stack) -> None:
    stack.events.disable_rule(Name="tap", EventBusName=BUS)
    sink, client = sink_on(stack, Ticking())

    sink.put(TASK_CHANGE, DETAIL)

    assert (client.puts, sink.unheard) == (0, 1)


def test_every_page_of_rules_is_read() -> None:
    rules = FakeRules([[rule({"source": ["other"]})] * 100, [rule({"source": ["skydag"]})]])

    fake_sink(rules).put(TASK_CHANGE, DETAIL)

    assert len(rules.puts) == 1


def test_a_pattern_the_matcher_cannot_judge_counts_as_listening() -> None:
    unknown_operator = FakeRules([[rule({"detail": {"state": [{"sounds-like": "ok"}]}})]])
    not_json = FakeRules([[rule("{not json")]])

    fake_sink(unknown_operator).put(TASK_CHANGE, DETAIL)
    fake_sink(not_json).put(TASK_CHANGE, DETAIL)

    assert (len(unknown_operator.puts), len(not_json.puts)) == (1, 1)


def test_when_the_rules_cannot_be_listed_every_notification_is_put() -> None:
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListRules")
    rules = FakeRules([[]], error=denied)
    sink = fake_sink(rules)

    sink.put(TASK_CHANGE, DETAIL)
    sink.put(TASK_CHANGE, DETAIL)

    assert (len(rules.puts), sink.unheard) == (2, 0)


def test_a_pattern_on_account_and_region_matches_the_bus_s() -> None:
    account, region = BUS_ARN.split(":")[4], BUS_ARN.split(":")[3]
    ours = FakeRules([[rule({"account": [account], "region": [region], "source": ["skydag"]})]])
    elsewhere = FakeRules([[rule({"account": ["999999999999"], "source": ["skydag"]})]])

    fake_sink(ours).put(TASK_CHANGE, DETAIL)
    fake_sink(elsewhere).put(TASK_CHANGE, DETAIL)

    assert (len(ours.puts), len(elsewhere.puts)) == (1, 0)


def test_the_schedulers_own_events_are_always_put() -> None:
    rules = FakeRules([[]])
    settings = Settings(event_bus=BUS, event_bus_arn=BUS_ARN)
    ticks = EventBridgeEventSink(settings, source=SCHEDULER_SOURCE, client=rules)

    ticks.put("Timer Fired", {"dag": "nightly"})

    assert len(rules.puts) == 1


def test_listeners_learnt_now_judge_later_events_without_listing_again(stack: Stack) -> None:
    """``listeners_now``: the rules as listed now (listed first when the list is old: a
    refresh of 0 lists every time), then a judgement of any event with no call of its
    own, however old the list grows (the scheduler judges a job's ``running`` write on it
    after the target's call, where a failing call would start the job again)."""
    stack.events.put_rule(
        Name="tap",
        EventBusName=BUS,
        EventPattern=json.dumps({"source": ["skydag"], "detail": {"state": ["failed"]}}),
    )
    clock = Ticking()
    sink, client = sink_on(stack, clock, refresh=0)

    listened = sink.listeners_now()
    assert client.listings == 1
    clock.seconds += 3600
    assert listened(TASK_CHANGE, {**DETAIL, "state": "failed"})
    assert not listened(TASK_CHANGE, DETAIL)
    assert client.listings == 1
    assert sink.listens(TASK_CHANGE, DETAIL) is False  # asked the usual way: listed again
    assert client.listings == 2
