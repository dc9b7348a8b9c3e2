"""Which AWS events the default bus forwards: narrowing, union, packing, splitting."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skydag.signals.forwarding import (
    MAX_RULE_PATTERN_CHARS,
    ForwardingTooLarge,
    forward_rule_patterns,
    forwarded_pattern,
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
    assert forwarded_pattern({"source": ["ml.trainer"]}) is None
    assert forwarded_pattern({"detail-type": ["Object Created"]}) is None
    # A prefix would forward every AWS event of the account: never.
    assert forwarded_pattern({"source": [{"prefix": "aws."}]}) is None


def test_a_pattern_naming_an_app_and_a_service_forwards_the_service_only() -> None:
    mixed = {**S3_INCOMING, "source": ["my.app", "aws.s3"]}

    assert forwarded_pattern(mixed) == S3_INCOMING


def test_no_aws_pattern_means_no_rule() -> None:
    assert forward_rule_patterns([{"source": ["ml.trainer"]}]) == []


def test_one_pattern_is_its_own_rule_and_two_share_one_with_or() -> None:
    assert forward_rule_patterns([S3_INCOMING]) == [S3_INCOMING]

    (rule,) = forward_rule_patterns([S3_INCOMING, GLUE_FAILED])

    assert sorted(rule["$or"], key=pattern_json) == sorted(
        [S3_INCOMING, GLUE_FAILED], key=pattern_json
    )
    validate_pattern(rule)  # EventBridge's grammar, as skydag checks it


def test_the_same_pattern_twice_is_forwarded_once_and_order_does_not_matter() -> None:
    once = forward_rule_patterns([S3_INCOMING, GLUE_FAILED])

    assert forward_rule_patterns([GLUE_FAILED, S3_INCOMING, S3_INCOMING]) == once


def test_the_rule_forwards_exactly_what_the_patterns_match() -> None:
    (rule,) = forward_rule_patterns([S3_INCOMING, GLUE_FAILED])
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

    rules = forward_rule_patterns(patterns)

    assert 1 < len(rules) <= MAX_AWS_EVENT_RULES
    assert all(len(pattern_json(rule)) <= MAX_RULE_PATTERN_CHARS for rule in rules)
    packed = [p for rule in rules for p in rule.get("$or", [rule])]
    assert sorted(map(pattern_json, packed)) == sorted(map(pattern_json, patterns))


def test_more_patterns_than_the_rules_hold_is_an_error_saying_how_many() -> None:
    patterns = [big_pattern(n) for n in range(40)]

    with pytest.raises(ForwardingTooLarge, match=r"need \d+ forwarding rules"):
        forward_rule_patterns(patterns)


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

    rules = forward_rule_patterns(patterns)

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
