"""Which events the forwarding rules deliver (AWS events on the default bus, skydag's own on
the skydag bus): narrowing, union, packing, splitting."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skydag.signals.forwarding import (
    AWS_EVENTS,
    MAX_RULE_PATTERN_CHARS,
    SKYDAG_EVENTS,
    ForwardingTooLarge,
    forward_rule_patterns,
    pattern_json,
)
from skydag.signals.patterns import matches, validate_pattern
from skydag.spec.loader import DagFileError, load_dag_bytes
from skydag.wiring import MAX_AWS_EVENT_RULES

S3_INCOMING = {
    "source": ["aws.s3"],
    "detail-type": ["Object Created"],
    "detail": {"bucket": {"name": ["my-data"]}, "object": {"key": [{"prefix": "incoming/"}]}},
}
GLUE_FAILED = {
    "source": ["aws.glue"],
    "detail-type": ["Glue Job State Change"],
    "detail": {"state": ["FAILED"]},
}


def event(source: str, detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {"id": "1", "source": source, "detail-type": detail_type, "detail": detail}


def test_only_exact_aws_sources_are_forwarded() -> None:
    assert AWS_EVENTS.forwarded({"source": ["ml.trainer"]}) is None
    assert AWS_EVENTS.forwarded({"detail-type": ["Object Created"]}) is None
    # A prefix would forward every AWS event of the account: never.
    assert AWS_EVENTS.forwarded({"source": [{"prefix": "aws."}]}) is None


def test_a_pattern_naming_an_app_and_a_service_forwards_the_service_only() -> None:
    mixed = {**S3_INCOMING, "source": ["my.app", "aws.s3"]}

    assert AWS_EVENTS.forwarded(mixed) == S3_INCOMING


def test_no_aws_pattern_means_no_rule() -> None:
    assert forward_rule_patterns(AWS_EVENTS, [{"source": ["ml.trainer"]}]) == []


def test_one_pattern_is_its_own_rule_and_two_share_one_with_or() -> None:
    assert forward_rule_patterns(AWS_EVENTS, [S3_INCOMING]) == [S3_INCOMING]

    (rule,) = forward_rule_patterns(AWS_EVENTS, [S3_INCOMING, GLUE_FAILED])

    assert sorted(rule["$or"], key=pattern_json) == sorted(
        [S3_INCOMING, GLUE_FAILED], key=pattern_json
    )
    validate_pattern(rule)  # EventBridge's grammar, as skydag checks it


def test_the_same_pattern_twice_is_forwarded_once_and_order_does_not_matter() -> None:
    once = forward_rule_patterns(AWS_EVENTS, [S3_INCOMING, GLUE_FAILED])

    assert forward_rule_patterns(AWS_EVENTS, [GLUE_FAILED, S3_INCOMING, S3_INCOMING]) == once


def test_the_rule_forwards_exactly_what_the_patterns_match() -> None:
    (rule,) = forward_rule_patterns(AWS_EVENTS, [S3_INCOMING, GLUE_FAILED])
    landed = event(
        "aws.s3", "Object Created", {"bucket": {"name": "my-data"}, "object": {"key": "incoming/a"}}
    )
    elsewhere = event(
        "aws.s3", "Object Created", {"bucket": {"name": "my-data"}, "object": {"key": "archive/a"}}
    )
    glue_ok = event("aws.glue", "Glue Job State Change", {"state": "SUCCEEDED"})

    assert matches(rule, landed)
    assert not matches(rule, elsewhere)
    assert not matches(rule, glue_ok)


def big_pattern(n: int) -> dict[str, Any]:
    """An S3 pattern of about 700 characters, one per n."""
    keys = [f"incoming/{n:03d}/{'x' * 40}/{i}" for i in range(12)]
    return {**S3_INCOMING, "detail": {"object": {"key": keys}}}


def test_patterns_that_do_not_fit_one_rule_are_split_under_the_quota() -> None:
    patterns = [big_pattern(n) for n in range(6)]

    rules = forward_rule_patterns(AWS_EVENTS, patterns)

    assert 1 < len(rules) <= MAX_AWS_EVENT_RULES
    assert all(len(pattern_json(rule)) <= MAX_RULE_PATTERN_CHARS for rule in rules)
    packed = [p for rule in rules for p in rule.get("$or", [rule])]
    assert sorted(map(pattern_json, packed)) == sorted(map(pattern_json, patterns))


def test_more_patterns_than_the_rules_hold_is_an_error_saying_how_many() -> None:
    patterns = [big_pattern(n) for n in range(40)]

    with pytest.raises(ForwardingTooLarge, match=r"need \d+ forwarding rules"):
        forward_rule_patterns(AWS_EVENTS, patterns)


def test_a_dag_whose_aws_pattern_alone_is_too_large_does_not_validate() -> None:
    keys = [f"incoming/{i}/{'y' * 60}" for i in range(40)]
    text = json.dumps(
        {
            "dag": "too_big",
            "on": [{"source": ["aws.s3"], "detail": {"object": {"key": keys}}}],
            "tasks": {"t": {"noop": None}},
        }
    )

    with pytest.raises(DagFileError) as raised:
        load_dag_bytes(text.encode(), "too_big.yaml")

    (problem,) = raised.value.problems
    assert "on" in str(problem)
    assert f"over the {MAX_RULE_PATTERN_CHARS} of the default-bus rule" in str(problem)


def test_the_same_large_pattern_with_an_app_source_validates() -> None:
    keys = [f"incoming/{i}/{'y' * 60}" for i in range(40)]
    text = json.dumps(
        {
            "dag": "app_only",
            "on": [{"source": ["my.app"], "detail": {"object": {"key": keys}}}],
            "tasks": {"t": {"noop": None}},
        }
    )

    assert load_dag_bytes(text.encode(), "app_only.yaml").dag == "app_only"


names = st.sampled_from(["my-data", "other", "logs"])
prefixes = st.sampled_from(["incoming/", "archive/", "in"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(names, prefixes), min_size=1, max_size=8),
    st.tuples(names, st.sampled_from(["incoming/a", "archive/b", "inbox", "x"])),
)
def test_the_rules_match_an_event_iff_some_pattern_does(
    subscribed: list[tuple[str, str]], landed: tuple[str, str]
) -> None:
    patterns = [
        {**S3_INCOMING, "detail": {"bucket": {"name": [b]}, "object": {"key": [{"prefix": p}]}}}
        for b, p in subscribed
    ]
    s3_event = event(
        "aws.s3",
        "Object Created",
        {"bucket": {"name": landed[0]}, "object": {"key": landed[1]}},
    )

    rules = forward_rule_patterns(AWS_EVENTS, patterns)

    assert any(matches(r, s3_event) for r in rules) == any(matches(p, s3_event) for p in patterns)


def test_the_memory_store_lists_the_current_aws_subscriptions() -> None:
    from datetime import UTC, datetime

    from skydag.spec.models import DagSpec
    from skydag.store.memory import MemoryStore

    store = MemoryStore()
    now = datetime.now(UTC)
    for dag, pattern in (("landing", S3_INCOMING), ("glue", GLUE_FAILED)):
        spec = DagSpec.model_validate(
            {"dag": dag, "on": [pattern, {"source": ["my.app"]}], "tasks": {"t": {"noop": None}}}
        )
        store.dags.save_version(spec, source=None, sha256=None, now=now)

    assert sorted(map(pattern_json, (s.pattern for s in store.dags.aws_subscriptions()))) == sorted(
        map(pattern_json, [S3_INCOMING, GLUE_FAILED])
    )

    store.dags.retire("landing", now=now)

    assert [s.pattern for s in store.dags.aws_subscriptions()] == [GLUE_FAILED]


# --- skydag's own notifications, on the skydag bus -----------------------------------------

OTHER_FINISHED = {
    "source": ["skydag"],
    "detail-type": ["DagRun State Change"],
    "detail": {"dag": ["other"], "state": ["success"]},
}


def skydag_event(detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
    return event("skydag", detail_type, detail)


@pytest.mark.parametrize(
    ("source", "forwarded"),
    [
        pytest.param(None, True, id="absent"),
        pytest.param(["skydag"], True, id="exact"),
        pytest.param([{"prefix": "sky"}], True, id="prefix"),
        pytest.param([{"wildcard": "sky*g"}], True, id="wildcard"),
        pytest.param([{"equals-ignore-case": "SKYDAG"}], True, id="ignore-case"),
        pytest.param([{"exists": True}], True, id="exists"),
        pytest.param([{"anything-but": ["my.app"]}], True, id="anything-but-other"),
        pytest.param([{"anything-but": ["skydag"]}], False, id="anything-but-skydag"),
        pytest.param([{"anything-but": {"prefix": "sky"}}], False, id="anything-but-prefix"),
        pytest.param(["skydag.dag.other"], False, id="a-dag-emit-source"),
        pytest.param([{"prefix": "skydag."}], False, id="prefix-of-dag-sources"),
        pytest.param(["my.app"], False, id="an-app"),
        pytest.param(["aws.s3"], False, id="an-aws-service"),
    ],
)
def test_a_pattern_is_forwarded_on_the_skydag_bus_when_its_source_matches_skydag(
    source: list[Any] | None, forwarded: bool
) -> None:
    pattern: dict[str, Any] = {"detail-type": ["DagRun State Change"]}
    if source is not None:
        pattern["source"] = source

    copy = SKYDAG_EVENTS.forwarded(pattern)

    if forwarded:
        assert copy == {"detail-type": ["DagRun State Change"], "source": ["skydag"]}
    else:
        assert copy is None
    # The families are independent: only an exact aws.* source goes to the default bus.
    assert (AWS_EVENTS.forwarded(pattern) is not None) == (source == ["aws.s3"])


def test_a_pattern_naming_skydag_and_an_app_forwards_skydag_only() -> None:
    mixed = {**OTHER_FINISHED, "source": ["skydag", "my.app"]}

    assert SKYDAG_EVENTS.forwarded(mixed) == OTHER_FINISHED
    assert forward_rule_patterns(SKYDAG_EVENTS, [mixed, OTHER_FINISHED]) == [OTHER_FINISHED]


def test_no_pattern_for_skydag_events_means_no_skydag_rule() -> None:
    patterns = [S3_INCOMING, {"source": ["my.app"]}, {"source": [{"anything-but": ["skydag"]}]}]

    assert forward_rule_patterns(SKYDAG_EVENTS, patterns) == []


def test_the_skydag_rule_forwards_exactly_the_skydag_events_the_patterns_match() -> None:
    by_type = {"detail-type": ["Task Instance State Change"], "detail": {"state": ["failed"]}}
    (rule,) = forward_rule_patterns(SKYDAG_EVENTS, [OTHER_FINISHED, by_type])
    validate_pattern(rule)

    assert matches(rule, skydag_event("DagRun State Change", {"dag": "other", "state": "success"}))
    assert matches(rule, skydag_event("Task Instance State Change", {"state": "failed"}))
    assert not matches(rule, skydag_event("Task Instance State Change", {"state": "running"}))
    assert not matches(rule, skydag_event("DagRun State Change", {"dag": "mine", "state": "x"}))
    # The pattern without a source matches any app's event: the signals rule delivers those.
    assert not matches(rule, event("my.app", "Task Instance State Change", {"state": "failed"}))


def test_a_pattern_too_large_for_a_skydag_bus_rule_does_not_validate() -> None:
    dags = [f"d{i:03d}{'z' * 40}" for i in range(60)]
    text = json.dumps(
        {
            "dag": "too_big",
            "on": [{"detail-type": ["DagRun State Change"], "detail": {"dag": dags}}],
            "tasks": {"t": {"noop": None}},
        }
    )

    with pytest.raises(DagFileError) as raised:
        load_dag_bytes(text.encode(), "too_big.yaml")

    (problem,) = raised.value.problems
    assert "a skydag event pattern is" in str(problem)
    assert f"over the {MAX_RULE_PATTERN_CHARS} of the skydag-bus rule" in str(problem)


def test_too_many_skydag_patterns_is_an_error_naming_the_family() -> None:
    patterns = [
        {**OTHER_FINISHED, "detail": {"dag": [f"d{n:03d}-{i}-{'q' * 40}" for i in range(12)]}}
        for n in range(40)
    ]

    with pytest.raises(ForwardingTooLarge, match=r"skydag event patterns need \d+ forwarding"):
        forward_rule_patterns(SKYDAG_EVENTS, patterns)


def test_the_memory_store_lists_the_subscriptions_that_may_match_skydag_events() -> None:
    from datetime import UTC, datetime

    from skydag.spec.models import DagSpec
    from skydag.store.memory import MemoryStore

    store = MemoryStore()
    now = datetime.now(UTC)
    no_source = {"detail-type": ["Task Instance State Change"]}
    for dag, pattern in (("after", OTHER_FINISHED), ("watch", no_source), ("app", S3_INCOMING)):
        spec = DagSpec.model_validate({"dag": dag, "on": [pattern], "tasks": {"t": {"noop": None}}})
        store.dags.save_version(spec, source=None, sha256=None, now=now)

    found = [s.pattern for s in store.dags.subscriptions("skydag")]

    assert sorted(map(pattern_json, found)) == sorted(
        map(pattern_json, [OTHER_FINISHED, no_source])
    )
    assert sorted(
        map(pattern_json, forward_rule_patterns(SKYDAG_EVENTS, found)[0]["$or"])
    ) == sorted(map(pattern_json, [OTHER_FINISHED, {**no_source, "source": ["skydag"]}]))
