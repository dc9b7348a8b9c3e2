"""The dag loader's forwarding rules: each family's rules (the default bus's for AWS events
such as ``aws.s3``, the skydag bus's for skydag's own notifications:
``skydag.signals.forwarding``) brought in step with what the current DAG versions
subscribe to, read back from the store's index rather than from the DAG just loaded, so
two loaders racing both end on the same rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from skydag.ports.store import DagStore, Subscription
from skydag.signals.forwarding import (
    AWS_EVENTS,
    SKYDAG_EVENTS,
    ForwardedFamily,
    ForwardingTooLarge,
    forward_rule_patterns,
)
from skydag.sources import SKYDAG_SOURCE
from skydag.spec.models import DagSpec

# Passes of "read the subscriptions, fix the rules" before giving up (the Lambda retries).
FORWARDING_PASSES = 5


class ForwardingRules(Protocol):
    """One family's rules forwarding subscribed events to the scheduler (EventBridge in
    production): ``apply`` makes them hold these patterns and says what it changed."""

    @property
    def family(self) -> ForwardedFamily: ...

    def apply(self, patterns: Sequence[Mapping[str, Any]]) -> list[str]: ...


class ForwardingUnsettled(RuntimeError):
    """Other loaders kept changing the forwarding rules; a retry finishes the work."""


def _subscriptions_that_may_match(
    family: ForwardedFamily,
) -> Callable[[DagStore], list[Subscription]]:
    """How the index is read for a family: every subscription that may match one of its
    events (the family's narrowing keeps those that do)."""
    if family is AWS_EVENTS:
        return lambda dags: dags.aws_subscriptions()
    assert family is SKYDAG_EVENTS, family
    # Under ``sub:skydag`` and ``sub:*`` (patterns without an exact source list).
    return lambda dags: dags.subscriptions(SKYDAG_SOURCE)


class EventForwarding:
    """Every forwarded family's rules, kept in step with the subscriptions' index."""

    def __init__(self, dags: DagStore, families: Sequence[ForwardingRules]) -> None:
        self.dags = dags
        # One per family that is forwarded (none: tests that do not look at them).
        self.families = tuple(families)

    def problem(self, spec: DagSpec) -> str | None:
        """Why this version's patterns cannot be forwarded beside the other DAGs' (in the
        first family where they do not fit)."""
        own = [pattern for _, _, pattern in spec.iter_signal_patterns()]
        for rules in self.families:
            family = rules.family
            if not any(family.forwarded(p) for p in own):
                continue
            read = _subscriptions_that_may_match(family)
            others = [s.pattern for s in read(self.dags) if s.dag_id != spec.dag]
            try:
                forward_rule_patterns(family, [*others, *own])
            except ForwardingTooLarge as error:
                return str(error)
        return None

    def converge(self) -> list[str]:
        """Bring every family's forwarding rules in step with the current subscriptions."""
        changes: list[str] = []
        for rules in self.families:
            changes.extend(self._converge(rules))
        return changes

    def _converge(self, rules: ForwardingRules) -> list[str]:
        """Bring one family's rules in step with every current subscription.

        Each pass reads the index, then reads each rule back and fixes what differs; it
        ends after a pass that changed nothing. Whoever changes a rule last makes one more
        pass, reading the index after every other loader wrote its subscriptions (each
        writes before its first pass): so the rules end as the final index says, however
        loaders interleave."""
        read = _subscriptions_that_may_match(rules.family)
        changes: list[str] = []
        for _ in range(FORWARDING_PASSES):
            subscriptions = read(self.dags)
            patterns = forward_rule_patterns(rules.family, (sub.pattern for sub in subscriptions))
            changed = rules.apply(patterns)
            if not changed:
                return changes
            changes.extend(changed)
        raise ForwardingUnsettled(
            f"the {rules.family.noun} forwarding rules still changed after "
            f"{FORWARDING_PASSES} passes"
        )
