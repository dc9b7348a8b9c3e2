"""skydag's own events on the skydag bus: PutEvents with EventBridge's size rule and its
per-entry failures handled.

PutEvents succeeds as a call even when an entry is refused: the refusal is only in
``FailedEntryCount`` and the entry's ``ErrorCode``. An unchecked refusal would lose the
event silently, so a retryable refusal (throttling, an internal failure) is tried again a
few times and any refusal that remains raises ``EventPublishError``; the handler then
fails the record and its event source delivers it again (every route is idempotent).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from skydag.settings import Settings
from skydag.sources import SKYDAG_SOURCE

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


class EventBridgeEventSink:
    """An ``EventSink`` putting events of one source (``skydag`` by default) on the bus."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: str = SKYDAG_SOURCE,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if client is None:
            from skydag.adapters import aws_client

            client = aws_client("events", settings)
        self._client = client
        self._bus = settings.event_bus
        self._source = source
        self._sleep = sleep

    @property
    def source(self) -> str:
        return self._source

    def put(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        body = detail_json(detail)
        size = entry_size(self._source, detail_type, body, ())
        if size > MAX_ENTRY_BYTES:
            raise EventTooLarge(
                f"'{detail_type}' event is {size} bytes, over EventBridge's "
                f"{MAX_ENTRY_BYTES}-byte limit; the producer must send less"
            )
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
