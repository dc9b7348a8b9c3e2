"""skydag's own events on the skydag bus: PutEvents with EventBridge's size rule and its
per-entry failures handled.

PutEvents succeeds as a call even when an entry is refused: the refusal is only in
``FailedEntryCount`` and the entry's ``ErrorCode``. An unchecked refusal would lose the
event silently, so a retryable refusal (throttling, an internal failure) is tried again a
few times and any refusal that remains raises ``EventPublishError``; the handler then
fails the record and its event source delivers it again (every route is idempotent).

skydag's notifications ("Task Instance State Change", ...) are put only when a rule on
the bus would take them (``BusListeners``): a task transition nobody listens to costs no
PutEvents. Every delivery EventBridge offers hangs off a rule on the bus (user rules,
archives, replication, the forwarding rules of DAGs that subscribe to skydag's events),
so the bus's enabled rules, listed again at most every ``listeners_refresh_seconds``, are
exactly who listens; anything unknown (a listing that fails, a pattern this matcher
cannot read) counts as listening.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from skydag.ports import Listened
from skydag.settings import Settings
from skydag.signals.patterns import PatternError, matches, validate_pattern
from skydag.sources import SKYDAG_SOURCE

logger = logging.getLogger(__name__)

# EventBridge's limit for one entry, counted its way (see ``entry_size``).
MAX_ENTRY_BYTES = 256 * 1024
# The entry's Time field counts as 14 bytes whether or not it is sent.
_TIME_BYTES = 14
# Per-entry codes EventBridge documents as retryable; the others will never succeed.
RETRYABLE_ERROR_CODES = frozenset({"InternalFailure", "ThrottlingException"})
_ATTEMPTS = 3
_BACKOFF_SECONDS = 0.1


class EventTooLarge(ValueError):
    """The event is over EventBridge's 256 KB entry limit; it can never be put."""


class EventPublishError(RuntimeError):
    """EventBridge refused the entry; ``retryable`` when trying later may succeed."""

    def __init__(self, detail_type: str, code: str, message: str) -> None:
        super().__init__(f"PutEvents refused '{detail_type}': {code}: {message}")
        self.code = code
        self.retryable = code in RETRYABLE_ERROR_CODES


def entry_size(source: str, detail_type: str, detail_json: str, resources: tuple[str, ...]) -> int:
    """An entry's size as EventBridge computes it for the 256 KB limit: the UTF-8 bytes
    of Source, DetailType, Detail and each Resource, plus 14 bytes for Time."""
    parts = (source, detail_type, detail_json, *resources)
    return _TIME_BYTES + sum(len(part.encode("utf-8")) for part in parts)


def detail_json(detail: Mapping[str, Any]) -> str:
    """The detail as EventBridge receives it: compact JSON (datetimes as ISO strings)."""
    return json.dumps(dict(detail), separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> str:
    isoformat = getattr(value, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(value)


class BusListeners:
    """Whether a rule on the bus would take an event: the bus's enabled rules' patterns,
    listed (ListRules, every page) at most every ``refresh`` seconds and matched as
    EventBridge matches them. Unknown counts as listening: until a listing succeeds,
    and for a rule whose pattern cannot be read or matched."""

    _LISTS_ALL: Any = object()  # a pattern standing for "takes every event"

    def __init__(
        self,
        client: Any,
        bus_arn: str,
        *,
        refresh: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._bus_arn = bus_arn
        parts = bus_arn.split(":")
        self._region, self._account = parts[3], parts[4]
        self._refresh = refresh
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._patterns: list[Any] | None = None
        self._listed_at: float | None = None

    def listened(self, source: str, detail_type: str, detail: str) -> bool:
        return self.judged(self._current_patterns(), source, detail_type, detail)

    def snapshot(self) -> list[Any] | None:
        """The patterns as listed now (listed again first when the list is old), for
        ``judged`` to match against later without listing."""
        return self._current_patterns()

    def judged(
        self, patterns: list[Any] | None, source: str, detail_type: str, detail: str
    ) -> bool:
        """Whether a rule of ``patterns`` (None: unknown) takes the event."""
        if patterns is None:
            return True
        event = {
            "version": "0",
            "id": "",
            "detail-type": detail_type,
            "source": source,
            "account": self._account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self._region,
            "resources": [],
            "detail": json.loads(detail),
        }
        return any(self._takes(pattern, event) for pattern in patterns)

    def _takes(self, pattern: Any, event: Mapping[str, Any]) -> bool:
        if pattern is self._LISTS_ALL:
            return True
        try:
            return matches(pattern, event)
        except Exception:  # a construct this matcher does not know: it may match
            return True

    def _current_patterns(self) -> list[Any] | None:
        now = self._monotonic()
        with self._lock:
            if self._listed_at is not None and now - self._listed_at < self._refresh:
                return self._patterns
        try:
            patterns: list[Any] | None = self._list_patterns()
        except Exception as error:  # whatever failed, put: as if listened to
            logger.warning(
                "cannot list the rules of %s (%s): putting every notification",
                self._bus_arn,
                error,
            )
            patterns = None
        with self._lock:
            self._patterns, self._listed_at = patterns, now
        return patterns

    def _readable(self, text: str) -> Any:
        """The rule's pattern, or "takes every event" when this matcher cannot judge it
        (it would not match what it does not know)."""
        try:
            pattern = json.loads(text)
            validate_pattern(pattern)
        except (ValueError, PatternError):
            return self._LISTS_ALL
        return pattern

    def _list_patterns(self) -> list[Any]:
        patterns: list[Any] = []
        request: dict[str, Any] = {"EventBusName": self._bus_arn, "Limit": 100}
        while True:
            page = self._client.list_rules(**request)
            for rule in page.get("Rules") or []:
                if rule.get("State") == "DISABLED" or not rule.get("EventPattern"):
                    continue
                patterns.append(self._readable(rule["EventPattern"]))
            if not page.get("NextToken"):
                return patterns
            request["NextToken"] = page["NextToken"]


class EventBridgeEventSink:
    """An ``EventSink`` putting events of one source (``skydag`` by default) on the bus;
    skydag's notifications only when a rule there takes them (``listeners``; the
    settings' bus and refresh by default, none without a bus ARN)."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: str = SKYDAG_SOURCE,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        listeners: BusListeners | None = None,
    ) -> None:
        if client is None:
            from skydag.adapters import LazyClient

            client = LazyClient("events", settings)
        self._client = client
        self._bus = settings.event_bus
        self._source = source
        self._sleep = sleep
        if listeners is None and source == SKYDAG_SOURCE and settings.event_bus_arn:
            refresh = settings.listeners_refresh_seconds
            listeners = BusListeners(client, settings.event_bus_arn, refresh=refresh)
        self._listeners = listeners
        self.unheard = 0  # notifications not put: no rule on the bus takes them

    @property
    def source(self) -> str:
        return self._source

    def listens(self, detail_type: str, detail: Mapping[str, Any]) -> bool:
        return self._listened(detail_type, detail_json(detail))

    def _listened(self, detail_type: str, body: str) -> bool:
        listeners = self._listeners
        return listeners is None or listeners.listened(self._source, detail_type, body)

    def listeners_now(self) -> Listened:
        listeners = self._listeners
        if listeners is None:
            return lambda detail_type, detail: True
        patterns, source = listeners.snapshot(), self._source

        def listened(detail_type: str, detail: Mapping[str, Any]) -> bool:
            return listeners.judged(patterns, source, detail_type, detail_json(detail))

        return listened

    def put(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        body = detail_json(detail)
        size = entry_size(self._source, detail_type, body, ())
        if size > MAX_ENTRY_BYTES:
            raise EventTooLarge(
                f"'{detail_type}' event is {size} bytes, over EventBridge's "
                f"{MAX_ENTRY_BYTES}-byte limit; the producer must send less"
            )
        if not self._listened(detail_type, body):
            self.unheard += 1
            return
        entry = {
            "Source": self._source,
            "DetailType": detail_type,
            "Detail": body,
            "EventBusName": self._bus,
        }
        for attempt in range(_ATTEMPTS):
            response = self._client.put_events(Entries=[entry])
            if not response.get("FailedEntryCount"):
                return
            result = (response.get("Entries") or [{}])[0]
            error = EventPublishError(
                detail_type,
                str(result.get("ErrorCode") or "Unknown"),
                str(result.get("ErrorMessage") or "no message"),
            )
            if not error.retryable or attempt == _ATTEMPTS - 1:
                raise error
            self._sleep(_BACKOFF_SECONDS * 2**attempt)
