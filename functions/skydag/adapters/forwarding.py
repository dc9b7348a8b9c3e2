"""The rules that forward subscribed events of one family (AWS events on the default bus,
skydag's own on the skydag bus: ``skydag.signals.forwarding``) to the scheduler queue.

``apply(patterns)`` makes the family's rules (``wiring.ForwardingSpec.rule_names(bus)``)
hold exactly ``patterns`` (rule 1 the first, ...), each enabled with one target, the
scheduler queue, delivered as the stack's own rules deliver there
(``wiring.FORWARDING_TARGET``: retries,
maximum age, dead-letter queue); the rules past the last pattern are deleted. Each rule is
read back (DescribeRule, ListTargetsByRule) and written only when it differs, so a call
that changes nothing writes nothing, and ``apply`` says whether it changed anything: the
dag loader repeats until a pass changes nothing (``EventForwarding.converge``).

Every call names one rule, so IAM grants the loader these rules and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from skydag import wiring
from skydag.settings import Settings
from skydag.signals.forwarding import ForwardedFamily, pattern_json

TARGET_ID = "scheduler-queue"
_NOT_FOUND = "ResourceNotFoundException"


class ForwardingNotConfigured(ValueError):
    """The settings do not say where forwarded events go."""


class EventBridgeForwardingRules:
    """See the module docstring."""

    def __init__(self, settings: Settings, family: ForwardedFamily, *, client: Any = None) -> None:
        if not settings.scheduler_queue_arn or not settings.event_delivery_dlq_arn:
            raise ForwardingNotConfigured(
                f"forwarding {family.noun}s needs SKYDAG_SCHEDULER_QUEUE_ARN and "
                "SKYDAG_EVENT_DELIVERY_DLQ_ARN"
            )
        if client is None:
            from skydag.adapters import LazyClient

            client = LazyClient("events", settings)
        self._client = client
        self.family = family
        self.rule_names = family.rules.rule_names(settings.event_bus)
        self.bus_name = family.rules.event_bus_name(settings.event_bus)
        self._description = (
            f"skydag: {family.noun}s the loaded DAGs subscribe to (kept by the dag loader)"
        )
        delivery = wiring.FORWARDING_TARGET
        self._target: dict[str, Any] = {
            "Id": TARGET_ID,
            "Arn": settings.scheduler_queue_arn,
            "DeadLetterConfig": {"Arn": settings.event_delivery_dlq_arn},
            "RetryPolicy": {
                "MaximumRetryAttempts": delivery.retry_attempts,
                "MaximumEventAgeInSeconds": int(delivery.max_event_age.total_seconds()),
            },
        }

    def apply(self, patterns: Sequence[Mapping[str, Any]]) -> list[str]:
        """Make the rules hold ``patterns``; returns what was changed (empty: nothing)."""
        if len(patterns) > len(self.rule_names):
            raise ValueError(
                f"{len(patterns)} forwarding rules asked, {len(self.rule_names)} exist"
            )
        changed: list[str] = []
        # Filled from the first and emptied from the last, so a crash leaves no gap.
        for name, pattern in zip(self.rule_names, patterns, strict=False):
            if self._put(name, pattern):
                changed.append(f"put {name}")
        for name in reversed(self.rule_names[len(patterns) :]):
            if self._delete(name):
                changed.append(f"deleted {name}")
        return changed

    def _put(self, name: str, pattern: Mapping[str, Any]) -> bool:
        rule = self._describe(name)
        same_rule = (
            rule is not None
            and rule.get("State") == "ENABLED"
            and _same_pattern(rule.get("EventPattern"), pattern)
        )
        if not same_rule:
            self._client.put_rule(
                Name=name,
                EventBusName=self.bus_name,
                EventPattern=pattern_json(pattern),
                State="ENABLED",
                Description=self._description,
            )
        targets = self._targets(name)
        if same_rule and targets == [self._target]:
            return False
        if targets != [self._target]:
            others = [t["Id"] for t in targets if t.get("Id") != TARGET_ID]
            if others:
                self._client.remove_targets(Rule=name, EventBusName=self.bus_name, Ids=others)
            self._check(
                self._client.put_targets(
                    Rule=name, EventBusName=self.bus_name, Targets=[self._target]
                ),
                name,
            )
        return True

    def _delete(self, name: str) -> bool:
        if self._describe(name) is None:
            return False
        from botocore.exceptions import ClientError

        from skydag.adapters import error_code

        try:
            targets = self._targets(name)
            if targets:
                self._client.remove_targets(
                    Rule=name, EventBusName=self.bus_name, Ids=[t["Id"] for t in targets]
                )
            self._client.delete_rule(Name=name, EventBusName=self.bus_name)
        except ClientError as error:
            if error_code(error) != _NOT_FOUND:  # another loader deleted it first
                raise
        return True

    def _describe(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        from skydag.adapters import error_code

        try:
            return dict(self._client.describe_rule(Name=name, EventBusName=self.bus_name))
        except ClientError as error:
            if error_code(error) == _NOT_FOUND:
                return None
            raise

    def _targets(self, name: str) -> list[dict[str, Any]]:
        response = self._client.list_targets_by_rule(Rule=name, EventBusName=self.bus_name)
        return list(response.get("Targets", []))

    @staticmethod
    def _check(response: Mapping[str, Any], name: str) -> None:
        if response.get("FailedEntryCount"):
            raise RuntimeError(f"PutTargets refused the target of {name}: {response}")


def _same_pattern(stored: Any, pattern: Mapping[str, Any]) -> bool:
    if not isinstance(stored, str):
        return False
    try:
        return bool(json.loads(stored) == pattern)
    except ValueError:
        return False
