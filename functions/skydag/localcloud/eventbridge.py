"""EventBridge and S3's EventBridge notifications, as the local cloud delivers them.

moto stores buses and rules and calls each rule with every event put on its bus, but its
pattern matcher lacks parts of the grammar the stack uses (``wildcard``) and it sends a
bucket's S3 events to every bus with a constant ``sequencer``. So for the stack's rules
(and only those) the local cloud takes over after moto accepted the event:

- the rule's pattern is matched by skydag's own matcher (``skydag.signals.patterns``, the
  full EventBridge grammar);
- a match is queued, not delivered on moto's request thread: the local cloud's loop
  delivers it to the rule's target through the fault-injection taps, as EventBridge
  delivers asynchronously after PutEvents has answered;
- the event is in AWS's shape: ``time`` as ISO 8601, no moto-only fields.

The rules the dag loader keeps for the events DAGs subscribe to (``forwarding_rules``,
(bus, name) pairs: the default bus's for AWS events, the skydag bus's for skydag's own
notifications; it creates them in moto with boto3, as in AWS) are run the same way: their
pattern and targets are read from moto when an event arrives, so S3 events of a user's
bucket, the players' service events and skydag's notifications reach the scheduler queue
exactly when the deployed rules would deliver them.

S3 → EventBridge: "Object Created" / "Object Deleted" go to the default bus only, with a
per-bucket increasing ``sequencer``; deletes on a versioned bucket, which moto does not
announce, are announced as S3 does ("Delete Marker Created", "Permanently Deleted").
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skydag.signals.patterns import matches

DEFAULT_BUS = "default"


@dataclass(frozen=True, slots=True)
class LocalRule:
    """A stack rule as the local cloud runs it: its bus, pattern and where matches go."""

    rule_id: str
    bus: str
    pattern: Mapping[str, Any]
    target: str  # the local cloud's name for the target (a queue or a function)


@dataclass(frozen=True, slots=True)
class Matched:
    rule: LocalRule
    event: dict[str, Any]


def iso_time(value: Any) -> str:
    """EventBridge's ``time``: ``2026-11-22T00:31:40Z`` whatever moto kept."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    else:
        moment = datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def aws_shaped(event: Mapping[str, Any]) -> dict[str, Any]:
    shaped = {key: copy.deepcopy(value) for key, value in event.items() if key != "ingestion-time"}
    shaped["time"] = iso_time(event.get("time"))
    return shaped


class LocalEventBridge:
    """Owns the stack's rules in moto (see the module docstring). Install once per cloud."""

    def __init__(
        self,
        account_id: str,
        region: str,
        rules: list[LocalRule],
        *,
        forwarding_rules: tuple[tuple[str, str], ...] = (),
        targets_by_arn: Mapping[str, str] | None = None,
    ) -> None:
        self.account_id = account_id
        self.region = region
        self.rules = {(rule.bus, rule.rule_id): rule for rule in rules}
        # Rules made at run time, as (bus, name), and the local name of each ARN they may
        # target.
        self.forwarding_rules = frozenset(forwarding_rules)
        self.targets_by_arn = dict(targets_by_arn or {})
        self._matched: deque[Matched] = deque()
        self._lock = threading.Lock()
        self._sequencers: dict[str, itertools.count[int]] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    # --- moto ------------------------------------------------------------------------------

    def create_rules(self, events_client: Any) -> None:
        """The stack's rules in moto, without targets: moto's own delivery then does nothing
        for them and ``send_to_targets`` (patched) hands their events to this object."""
        for rule in self.rules.values():
            events_client.put_rule(
                Name=rule.rule_id, EventBusName=rule.bus, EventPattern=json.dumps(rule.pattern)
            )

    def install(self) -> None:
        from moto.events.models import Rule
        from moto.s3 import models as s3_models
        from moto.s3 import notifications

        bridge = self
        original_send = Rule.send_to_targets

        def send_to_targets(rule: Any, original_event: Any, transform_input: bool = True) -> None:
            if (rule.event_bus_name, rule.name) in bridge.forwarding_rules:
                bridge._queue(bridge._forwarded_by(rule, aws_shaped(original_event)))
                return
            ours = bridge.rules.get((rule.event_bus_name, rule.name))
            if ours is None:
                original_send(rule, original_event, transform_input)
                return
            event = aws_shaped(original_event)
            if matches(ours.pattern, event):
                with bridge._lock:
                    bridge._matched.append(Matched(ours, event))

        original_s3_message = notifications._send_event_bridge_message

        def send_s3_event(account_id: str, bucket: Any, event_name: str, key: Any) -> None:
            bridge.s3_event(bucket, event_name, key)

        original_delete = s3_models.S3Backend.delete_object

        def delete_object(
            backend: Any,
            bucket_name: str,
            key_name: str,
            version_id: str | None = None,
            bypass: bool = False,
        ) -> tuple[bool, dict[str, Any]]:
            bucket = backend.get_bucket(bucket_name)
            versioned = bool(getattr(bucket, "is_versioned", False))
            existed = key_name in bucket.keys
            deleted, meta = original_delete(backend, bucket_name, key_name, version_id, bypass)
            if deleted and versioned and existed:
                bridge.s3_delete_event(bucket, key_name, version_id, meta)
            return deleted, meta

        self._patch(Rule, "send_to_targets", send_to_targets, original_send)
        self._patch(notifications, "_send_event_bridge_message", send_s3_event, original_s3_message)
        self._patch(s3_models.S3Backend, "delete_object", delete_object, original_delete)

    def _patch(self, owner: Any, name: str, replacement: Any, original: Any) -> None:
        setattr(owner, name, replacement)
        self._saved.append((owner, name, original))

    def uninstall(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)

    # --- matches ----------------------------------------------------------------------------

    def take_matched(self) -> list[Matched]:
        with self._lock:
            taken = list(self._matched)
            self._matched.clear()
        return taken

    def pending(self) -> int:
        with self._lock:
            return len(self._matched)

    def offer(self, bus: str, event: Mapping[str, Any]) -> int:
        """Match an event (already on ``bus``) against the stack's rules there and the
        forwarding rules that exist now."""
        count = 0
        for rule in self.rules.values():
            if rule.bus == bus and matches(rule.pattern, event):
                with self._lock:
                    self._matched.append(Matched(rule, dict(event)))
                count += 1
        names = sorted(name for on, name in self.forwarding_rules if on == bus)
        if names:
            from moto.events.models import events_backends

            moto_rules = events_backends[self.account_id][self.region].event_buses[bus].rules
            for name in names:
                forwarding = moto_rules.get(name)
                if forwarding is not None:
                    count += self._queue(self._forwarded_by(forwarding, dict(event)))
        return count

    def _forwarded_by(self, rule: Any, event: dict[str, Any]) -> list[Matched]:
        """What a forwarding rule (moto's) delivers of ``event``: one match per target the
        local cloud knows, when the rule is enabled and its pattern matches."""
        raw = rule.event_pattern.dump()
        if rule.state != "ENABLED" or not raw:
            return []
        pattern = json.loads(raw)
        if not matches(pattern, event):
            return []
        return [
            Matched(
                LocalRule(rule.name, rule.event_bus_name, pattern, self.targets_by_arn[arn]), event
            )
            for arn in (target["Arn"] for target in rule.targets)
            if arn in self.targets_by_arn
        ]

    def _queue(self, matched: list[Matched]) -> int:
        with self._lock:
            self._matched.extend(matched)
        return len(matched)

    # --- S3 -------------------------------------------------------------------------------------

    def _sequencer(self, bucket_name: str) -> str:
        counter = self._sequencers.setdefault(bucket_name, itertools.count(1))
        # S3's sequencers are hex strings that compare in order for one key.
        return f"{int(datetime.now(UTC).timestamp() * 1000):012X}{next(counter):08X}"

    def _s3_envelope(
        self, bucket: Any, detail_type: str, obj: dict[str, Any], reason: str, **extra: Any
    ) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "version": "0",
            "bucket": {"name": bucket.name},
            "object": obj,
            "request-id": uuid.uuid4().hex[:16].upper(),
            "requester": self.account_id,
            "source-ip-address": "127.0.0.1",
            "reason": reason,
        }
        detail.update(extra)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.s3",
            "account": self.account_id,
            "time": iso_time(datetime.now(UTC)),
            "region": self.region,
            "resources": [f"arn:aws:s3:::{bucket.name}"],
            "detail": detail,
        }

    def s3_event(self, bucket: Any, event_name: str, key: Any) -> None:
        """moto's S3 → EventBridge notification, as S3 sends it (default bus only)."""
        if "ObjectCreated" in event_name:
            detail_type = "Object Created"
        elif "ObjectRemoved" in event_name:
            detail_type = "Object Deleted"
        else:
            return  # tags, restores, ...: nothing the stack listens to
        obj: dict[str, Any] = {
            "key": key.name,
            "sequencer": self._sequencer(bucket.name),
        }
        if detail_type == "Object Created":
            obj.update(size=key.size, etag=str(key.etag).replace('"', ""))
        if getattr(key, "version_id", None) and key.version_id != "null":
            obj["version-id"] = key.version_id
        extra = {"deletion-type": "Permanently Deleted"} if detail_type == "Object Deleted" else {}
        reason = event_name.rsplit(":", maxsplit=1)[-1]
        if detail_type == "Object Created":
            reason = "PutObject" if reason == "Put" else reason
        else:
            reason = "DeleteObject"
        self.offer(DEFAULT_BUS, self._s3_envelope(bucket, detail_type, obj, reason, **extra))

    def s3_delete_event(
        self, bucket: Any, key_name: str, version_id: str | None, meta: Mapping[str, Any]
    ) -> None:
        """A delete on a versioned bucket: a delete marker, or one version removed."""
        if version_id is None:
            deletion_type = "Delete Marker Created"
            marker = meta.get("version-id")
        elif key_name in bucket.keys:
            # Another version remains: moto says nothing; S3 announces the version's end.
            deletion_type, marker = "Permanently Deleted", version_id
        else:
            return  # the last version: moto announced it (``s3_event``)
        obj: dict[str, Any] = {"key": key_name, "sequencer": self._sequencer(bucket.name)}
        if marker:
            obj["version-id"] = str(marker)
        event = self._s3_envelope(
            bucket, "Object Deleted", obj, "DeleteObject", **{"deletion-type": deletion_type}
        )
        self.offer(DEFAULT_BUS, event)


RuleTargetSender = Callable[[LocalRule, dict[str, Any]], None]
