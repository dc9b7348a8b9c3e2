"""Which events the forwarding rules deliver to skydag: the patterns of the loaded DAGs,
packed into a few EventBridge rules per family (pure: no AWS calls).

Two families of events reach the scheduler only when a loaded DAG subscribes to them,
each through up to five rules the dag loader keeps (``skydag.wiring.FORWARDING``):

- AWS services' events (``AWS_EVENTS``), on the account's default bus: a DAG that
  subscribes to one (``on: [{source: [aws.s3], detail-type: [Object Created], ...}]``)
  gets it, and an AWS event no DAG wants is never delivered (nor paid for). A pattern is
  forwarded when its ``source`` lists exact ``aws.*`` sources; the forwarded copy keeps
  only those (a pattern also naming ``my.app`` does not pull ``my.app`` events off the
  default bus). Patterns without an exact source list are never forwarded: a prefix such
  as ``aws.`` would forward every AWS event of the account.
- skydag's own notifications (``SKYDAG_EVENTS``, source ``skydag``: "DagRun State
  Change", "Task Instance State Change", ...), on the skydag bus: put on every task
  transition and almost always for nobody. A pattern is forwarded, with its ``source``
  replaced by ``["skydag"]``, whenever its own ``source`` condition (absent, exact,
  prefix, anything-but, wildcard, ...) matches the value ``skydag``, as decided by the
  matcher itself; the copy matches exactly the skydag events the pattern matches.

The scheduler then matches each delivered event against the subscriptions as it does any
signal: the rules only narrow what reaches it. Identical patterns (two DAGs, two tasks)
are forwarded once; the rest are packed, in a stable order, into ``{"$or": [...]}`` rules
of at most ``MAX_RULE_PATTERN_CHARS`` characters each (EventBridge's default quota), at
most the family's ``max_rules`` rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from skydag import wiring
from skydag.signals.patterns import matches
from skydag.sources import AWS_SOURCE_PREFIX, SKYDAG_SOURCE

__all__ = [
    "AWS_EVENTS",
    "FAMILIES",
    "MAX_RULE_PATTERN_CHARS",
    "SKYDAG_EVENTS",
    "ForwardedFamily",
    "ForwardingTooLarge",
    "forward_rule_patterns",
    "pattern_json",
    "pattern_too_large",
]

MAX_RULE_PATTERN_CHARS: Final = 2048
"""EventBridge's default quota for one rule's event pattern, in characters (adjustable to
4096; skydag keeps to the default so that it deploys in any account)."""

OR_KEY: Final = "$or"


class ForwardingTooLarge(ValueError):
    """The patterns do not fit in the family's forwarding rules; the message says by how
    much."""


def pattern_json(pattern: Mapping[str, Any]) -> str:
    """The pattern as the rule holds it: compact JSON, keys sorted (one text per pattern)."""
    return json.dumps(pattern, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _aws_copy(pattern: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pattern with its exact ``aws.*`` sources only, or None when it names none."""
    sources = pattern.get("source")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        return None
    aws_sources = sorted({s for s in sources if s.startswith(AWS_SOURCE_PREFIX)})
    if not aws_sources:
        return None
    return {**pattern, "source": aws_sources}


def _skydag_copy(pattern: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pattern narrowed to source ``skydag``, or None when its source condition
    refuses that value."""
    if "source" in pattern and not matches(
        {"source": pattern["source"]}, {"source": SKYDAG_SOURCE}
    ):
        return None
    return {**pattern, "source": [SKYDAG_SOURCE]}


@dataclass(frozen=True, slots=True)
class ForwardedFamily:
    """One family of forwarded events: where its rules are (``rules``), what it calls its
    patterns in errors, and the copy of a subscription pattern its rules hold (None: the
    pattern cannot match an event of the family)."""

    rules: wiring.ForwardingSpec
    noun: str  # "AWS event": "an AWS event pattern is ..."
    article: str
    narrow: Callable[[Mapping[str, Any]], dict[str, Any] | None]

    def forwarded(self, pattern: Mapping[str, Any]) -> dict[str, Any] | None:
        """The copy of ``pattern`` this family's rules forward, or None."""
        return self.narrow(pattern)


AWS_EVENTS: Final = ForwardedFamily(wiring.AWS_EVENT_FORWARDING, "AWS event", "an", _aws_copy)
SKYDAG_EVENTS: Final = ForwardedFamily(
    wiring.SKYDAG_EVENT_FORWARDING, "skydag event", "a", _skydag_copy
)
FAMILIES: Final = (AWS_EVENTS, SKYDAG_EVENTS)


def pattern_too_large(pattern: Mapping[str, Any]) -> str | None:
    """Why ``pattern`` cannot be forwarded even in a rule of its own, in some family
    (None: it can, wherever it is forwarded)."""
    for family in FAMILIES:
        problem = _too_large(family, pattern)
        if problem is not None:
            return problem
    return None


def _too_large(family: ForwardedFamily, pattern: Mapping[str, Any]) -> str | None:
    forwarded = family.forwarded(pattern)
    return None if forwarded is None else _size_problem(family, forwarded)


def _size_problem(family: ForwardedFamily, forwarded: Mapping[str, Any]) -> str | None:
    size = len(pattern_json(forwarded))
    if size <= MAX_RULE_PATTERN_CHARS:
        return None
    return (
        f"{family.article} {family.noun} pattern is {size} characters as JSON, over the "
        f"{MAX_RULE_PATTERN_CHARS} of the {family.rules.bus.value}-bus rule that forwards it"
    )


def forward_rule_patterns(
    family: ForwardedFamily, patterns: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The family's forwarding rules' patterns for these subscription patterns, in rule
    order; ``ForwardingTooLarge`` when they need more rules than the family has."""
    unique: dict[str, dict[str, Any]] = {}
    for pattern in patterns:
        forwarded = family.forwarded(pattern)
        if forwarded is not None:
            unique.setdefault(pattern_json(forwarded), forwarded)
    groups: list[list[str]] = []
    for text in sorted(unique):  # a stable order: the same DAGs give the same rules
        problem = _size_problem(family, unique[text])
        if problem is not None:
            raise ForwardingTooLarge(problem)
        if groups and _packed_size([*groups[-1], text]) <= MAX_RULE_PATTERN_CHARS:
            groups[-1].append(text)
        else:
            groups.append([text])
    max_rules = family.rules.max_rules
    if len(groups) > max_rules:
        raise ForwardingTooLarge(
            f"the loaded DAGs' {family.noun} patterns need {len(groups)} forwarding rules of "
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
