"""Which AWS events the default bus forwards to skydag: the patterns of the loaded DAGs,
packed into a few EventBridge rules (pure: no AWS calls).

AWS services put their events on the account's default bus, not on skydag's. A DAG that
subscribes to one (``on: [{source: [aws.s3], detail-type: [Object Created], ...}]``) gets
it because the dag loader keeps rules on the default bus whose patterns are exactly what
the loaded DAGs subscribe to, so an AWS event no DAG wants is never delivered (nor paid
for). The scheduler then matches each delivered event against the subscriptions as it does
any signal: the rules only narrow what reaches it.

- A pattern is forwarded when its ``source`` lists exact ``aws.*`` sources; the forwarded
  copy keeps only those (a pattern also naming ``my.app`` does not pull ``my.app`` events
  off the default bus). Patterns without an exact source list are never forwarded: a
  prefix such as ``aws.`` would forward every AWS event of the account.
- Identical patterns (two DAGs, two tasks) are forwarded once; the rest are packed, in a
  stable order, into ``{"$or": [...]}`` rules of at most ``MAX_RULE_PATTERN_CHARS``
  characters each (EventBridge's default quota), at most ``MAX_AWS_EVENT_RULES`` rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from skydag.sources import AWS_SOURCE_PREFIX
from skydag.wiring import MAX_AWS_EVENT_RULES

__all__ = [
    "MAX_RULE_PATTERN_CHARS",
    "ForwardingTooLarge",
    "forward_rule_patterns",
    "forwarded_pattern",
    "pattern_json",
    "pattern_too_large",
]

MAX_RULE_PATTERN_CHARS: Final = 2048
"""EventBridge's default quota for one rule's event pattern, in characters (adjustable to
4096; skydag keeps to the default so that it deploys in any account)."""

OR_KEY: Final = "$or"


class ForwardingTooLarge(ValueError):
    """The AWS patterns do not fit in the forwarding rules; the message says by how much."""


def pattern_json(pattern: Mapping[str, Any]) -> str:
    """The pattern as the rule holds it: compact JSON, keys sorted (one text per pattern)."""
    return json.dumps(pattern, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def forwarded_pattern(pattern: Mapping[str, Any]) -> dict[str, Any] | None:
    """The copy of ``pattern`` the default bus forwards (its ``aws.*`` sources only), or
    None when it names no exact AWS source."""
    sources = pattern.get("source")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        return None
    aws_sources = sorted({s for s in sources if s.startswith(AWS_SOURCE_PREFIX)})
    if not aws_sources:
        return None
    return {**pattern, "source": aws_sources}


def pattern_too_large(pattern: Mapping[str, Any]) -> str | None:
    """Why ``pattern`` cannot be forwarded even in a rule of its own (None: it can)."""
    forwarded = forwarded_pattern(pattern)
    if forwarded is None:
        return None
    size = len(pattern_json(forwarded))
    if size <= MAX_RULE_PATTERN_CHARS:
        return None
    return (
        f"an AWS event pattern is {size} characters as JSON, over the "
        f"{MAX_RULE_PATTERN_CHARS} of the default-bus rule that forwards it"
    )


def forward_rule_patterns(
    patterns: Iterable[Mapping[str, Any]], *, max_rules: int = MAX_AWS_EVENT_RULES
) -> list[dict[str, Any]]:
    """The forwarding rules' patterns for these subscription patterns, in rule order;
    ``ForwardingTooLarge`` when they need more than ``max_rules`` rules."""
    unique: dict[str, dict[str, Any]] = {}
    for pattern in patterns:
        forwarded = forwarded_pattern(pattern)
        if forwarded is not None:
            unique.setdefault(pattern_json(forwarded), forwarded)
    groups: list[list[str]] = []
    for text in sorted(unique):  # a stable order: the same DAGs give the same rules
        problem = pattern_too_large(unique[text])
        if problem is not None:
            raise ForwardingTooLarge(problem)
        if groups and _packed_size([*groups[-1], text]) <= MAX_RULE_PATTERN_CHARS:
            groups[-1].append(text)
        else:
            groups.append([text])
    if len(groups) > max_rules:
        raise ForwardingTooLarge(
            f"the loaded DAGs' AWS event patterns need {len(groups)} forwarding rules of "
            f"{MAX_RULE_PATTERN_CHARS} characters, over the {max_rules} skydag keeps"
        )
    return [_packed([unique[text] for text in group]) for group in groups]


def _packed(patterns: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if len(patterns) == 1:
        return patterns[0]
    return {OR_KEY: list(patterns)}


def _packed_size(texts: Sequence[str]) -> int:
    if len(texts) == 1:
        return len(texts[0])
    # {"$or":[a,b,...]}: the wrapper, the patterns and a comma between two.
    return len('{"$or":[]}') + sum(len(t) for t in texts) + len(texts) - 1
