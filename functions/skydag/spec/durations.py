"""Durations as users write them: ``30s``, ``10m``, ``2h``, ``1d``, ``1h30m`` or seconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
# A year is far beyond any job's timeout or retry delay; larger values are typos.
MAX_DURATION = timedelta(days=366)


def parse_duration(value: Any, *, positive: bool = False) -> timedelta:
    """Parse a duration; raise ValueError with an example of the accepted forms.

    A duration is finite, not negative (``positive``: above zero) and at most 366 days;
    the bounds are checked on the number of seconds, before any ``timedelta`` is made, so
    ``.inf`` or a 400-digit number is an error message, never an OverflowError.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 10m, 2h, 1d or seconds")
    elif isinstance(value, int | float):
        seconds = float(value) if isinstance(value, float) or abs(value) < 10**18 else math.inf
    elif isinstance(value, str) and _WHOLE.match(value.strip().replace(" ", "")):
        text = value.strip().replace(" ", "")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    else:
        raise ValueError(
            f"invalid duration {_short(value)}: expected e.g. 30s, 10m, 2h, 1d, 1h30m or seconds"
        )
    if not math.isfinite(seconds) or seconds > MAX_DURATION.total_seconds():
        raise ValueError(
            f"{_short(value)} is not a finite duration of at most {MAX_DURATION.days} days"
        )
    if seconds < 0 or (positive and seconds == 0):
        must = "be above zero" if positive else "not be negative"
        raise ValueError(f"invalid duration {_short(value)}: must {must}")
    return timedelta(seconds=seconds)


def _short(value: Any, limit: int = 40) -> str:
    text = str(value) if isinstance(value, int | float) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 90s -> 1m30s, 0.25s -> 250ms; parse_duration reads it back."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
