"""Schedules: 5-field cron, presets and rate(), with Airflow-style data intervals.

A run covering the interval ``[start, end)`` is created once ``end`` has been reached; its
logical date is ``start``. The fire times of a schedule are the interval boundaries, so every
interval runs from one fire time to the next. Cron schedules are evaluated on the wall clock of
the DAG's time zone (DST included) and converted to UTC; rate schedules are fixed durations
anchored at the DAG's ``start_date``.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "PRESETS",
    "DataInterval",
    "Schedule",
    "ScheduleError",
    "backfill_intervals",
    "due_intervals",
    "interval_for_fire",
    "parse_schedule",
    "validate_timezone",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Airflow's presets, as plain cron; @annually and @midnight are Airflow's aliases.
PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_RATE_UNITS: dict[str, tuple[str, timedelta]] = {
    "minute": ("minutes", timedelta(minutes=1)),
    "hour": ("hours", timedelta(hours=1)),
    "day": ("days", timedelta(days=1)),
}
_RATE = re.compile(r"^rate\s*\((?P<body>.*)\)$", re.IGNORECASE | re.DOTALL)

# Looking back for the newest fire times: widen the window until enough are found. Small
# windows first keep dense schedules cheap; the last one outlasts cronsim's 50-year search.
_LOOKBACK = (
    timedelta(minutes=10),
    timedelta(hours=2),
    timedelta(days=3),
    timedelta(days=63),
    timedelta(days=800),
    timedelta(days=366 * 9),
    timedelta(days=366 * 60),
)
_TICK = timedelta(microseconds=1)
# Larger than any DST shift (1 h, 30 min on Lord Howe, 2 h for historical double summer time).
_MAX_DST_SHIFT = timedelta(hours=3)


class ScheduleError(ValueError):
    """A schedule expression or time zone that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class DataInterval:
    """The span of data a scheduled run covers; its logical date is ``start``."""

    start: datetime
    end: datetime


# --------------------------------------------------------------------------- time zones


def validate_timezone(name: str) -> None:
    """Raise ScheduleError unless ``name`` is an IANA time zone this runtime knows."""
    _zone(name)


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    """The tzinfo for an IANA name; UTC maps to ``datetime.UTC``, which takes the fast path."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"unknown time zone {name!r}")
    if name in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleError(f"unknown time zone {name!r}") from exc


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are UTC by convention; aware ones are converted."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- cron checks


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name_value: int = 0

    def value(self, token: str) -> int:
        """One number or name of this field, range-checked."""
        if token.isascii() and token.isdigit():
            number = int(token)
            if not self.low <= number <= self.high:
                raise ScheduleError(f"{self.name} {number} out of range {self.low}-{self.high}")
            return number
        if token.isascii() and token.isalpha() and self.names:
            if token.upper() in self.names:
                return self.names.index(token.upper()) + self.first_name_value
            expected = f"{self.names[0]}-{self.names[-1]}"
            raise ScheduleError(f"unknown {self.name} name {token!r} (expected {expected})")
        raise ScheduleError(f"{self.name} value {token!r} is not a number")

    def check_item(self, item: str) -> None:
        """One comma-separated item: ``*``, ``a``, ``a-b``, each optionally ``/step``."""
        if not item:
            raise ScheduleError(f"{self.name} has an empty list item")
        base, slash, step = item.partition("/")
        if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
            raise ScheduleError(f"{self.name} step {step!r} must be a positive integer")
        if base == "*":
            return
        first, dash, last = base.partition("-")
        if (dash and not last) or not first:
            raise ScheduleError(f"{self.name} item {item!r} is incomplete")
        start = self.value(first)
        if dash and self.value(last) < start:
            raise ScheduleError(f"{self.name} range {base!r} is reversed (start after end)")

    def check(self, text: str) -> None:
        for item in text.split(","):
            self.check_item(item)


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day-of-week", 0, 7, _WEEKDAYS, 0),
)


def _check_cron(expression: str) -> None:
    """Validate with our own messages; cronsim's are just "Bad minute"."""
    parts = expression.split()
    try:
        if len(parts) != len(_FIELDS):
            expected = "5 fields (minute hour day-of-month month day-of-week)"
            raise ScheduleError(f"expected {expected}, got {len(parts)}")
        for field, text in zip(_FIELDS, parts, strict=True):
            field.check(text)
        try:
            CronSim(expression, EPOCH)
        except CronSimError as exc:
            # What our checks let through: a day-of-month no listed month has (31 in APR).
            raise ScheduleError(
                f"day-of-month {parts[2]!r} never occurs in month {parts[3]!r}"
            ) from exc
    except ScheduleError as exc:
        raise ScheduleError(f"invalid cron expression {expression!r}: {exc}") from None


# --------------------------------------------------------------------------- rate checks


def _parse_rate(expression: str, body: str) -> timedelta:
    """``rate(N unit)`` as EventBridge accepts it: singular unit exactly when N is 1."""
    words = body.split()
    if len(words) != 2:
        raise ScheduleError(f"{expression}: expected rate(<value> <unit>), e.g. rate(5 minutes)")
    value, unit = words[0], words[1].lower()
    if not (value.isascii() and value.isdigit() and int(value) > 0):
        raise ScheduleError(f"{expression}: the value must be a positive integer")
    count = int(value)
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS:
        raise ScheduleError(
            f"{expression}: unknown unit {words[1]!r}; expected minute(s), hour(s) or day(s)"
        )
    plural, size = _RATE_UNITS[singular]
    if count == 1 and unit != singular:
        raise ScheduleError(f"{expression}: use the singular unit {singular!r} when the value is 1")
    if count > 1 and unit != plural:
        raise ScheduleError(
            f"{expression}: use the plural unit {plural!r} when the value is greater than 1"
        )
    try:
        return size * count
    except OverflowError:
        raise ScheduleError(f"{expression}: the value is too large") from None


# --------------------------------------------------------------------------- compiled forms


@dataclass(frozen=True, slots=True)
class _Cron:
    """A validated 5-field cron evaluated on the wall clock of ``zone``.

    cronsim walks naive wall-clock time; the DST mapping to UTC is done here, because
    cronsim's own aware mode steps hours by 3600 s and so misses fires around 30-minute
    shifts (Australia/Lord_Howe). The rules are Debian cron's, as cronsim applies them:

    * ``wall_clock`` jobs (fixed minute and hour, e.g. ``30 2 * * *``) run once per wall
      time: a time skipped by spring-forward runs right after the gap, a repeated time runs
      at its first occurrence only;
    * other jobs (``0 * * * *``, ``*/15 2 * * *``) follow real time: skipped times do not
      fire and repeated times fire twice.
    """

    cron: str
    zone: tzinfo
    wall_clock: bool

    def fires_after(self, moment: datetime) -> Iterator[datetime]:
        """Fire times strictly after ``moment`` (UTC aware), strictly increasing."""
        if self.zone is UTC:
            yield from self._utc_fires(moment)
            return
        last = moment
        pending: list[datetime] = []  # second occurrences of repeated times wait their turn
        try:
            for naive in CronSim(self.cron, self._naive_start(moment)):
                instants = self._instants(naive)
                for instant in instants:
                    heapq.heappush(pending, instant)
                # Later wall times never map before this one's first instant: safe to emit.
                while pending and instants and pending[0] <= instants[0]:
                    fire = heapq.heappop(pending)
                    if fire > last:
                        last = fire
                        yield fire
        except OverflowError:  # the end of datetime's range: no more fires
            pass
        yield from (fire for fire in sorted(pending) if fire > last)

    def _utc_fires(self, moment: datetime) -> Iterator[datetime]:
        """No DST in UTC: the naive fires are the answer."""
        try:
            for fire in CronSim(self.cron, moment.replace(tzinfo=None)):
                yield fire.replace(tzinfo=UTC)
        except OverflowError:  # the end of datetime's range: no more fires
            return

    def _naive_start(self, moment: datetime) -> datetime:
        """The wall time to search from: early enough to catch a fall-back hour just ahead."""
        offsets = [
            (moment + ahead).astimezone(self.zone).utcoffset() or timedelta(0)
            for ahead in (timedelta(0), _MAX_DST_SHIFT)
        ]
        return (moment + min(offsets)).replace(tzinfo=None)

    def _instants(self, naive: datetime) -> list[datetime]:
        """The UTC instants a wall-clock fire stands for, earliest first."""
        local = naive.replace(tzinfo=self.zone)
        first = local.astimezone(UTC)
        if first.astimezone(self.zone).replace(tzinfo=None) != naive:  # skipped by DST
            return [self._after_gap(naive)] if self.wall_clock else []
        second = local.replace(fold=1).astimezone(UTC)
        if second != first and not self.wall_clock:
            return [first, second]
        return [first]

    def _after_gap(self, naive: datetime) -> datetime:
        """The first real moment after a spring-forward gap (Debian cron runs the job then)."""
        while True:
            naive += timedelta(minutes=1)
            first = naive.replace(tzinfo=self.zone).astimezone(UTC)
            if first.astimezone(self.zone).replace(tzinfo=None) == naive:
                return first


@dataclass(frozen=True, slots=True)
class _Rate:
    """Fixed-length steps on a grid through the anchor."""

    step: timedelta

    def fires_after(self, moment: datetime, anchor: datetime) -> Iterator[datetime]:
        index = (moment - anchor) // self.step + 1
        while True:
            yield anchor + index * self.step
            index += 1

    def last_fires(self, moment: datetime, anchor: datetime, count: int) -> list[datetime]:
        index = (moment - anchor) // self.step
        return [anchor + (index - back) * self.step for back in range(count - 1, -1, -1)]


@lru_cache(maxsize=512)
def _compile(expression: str, timezone: str) -> _Cron | _Rate:
    """Validate once per (expression, zone); Schedule stays a plain frozen record."""
    zone = _zone(timezone)
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError("empty schedule expression: expected cron, a preset or rate(...)")
    text = expression.strip()
    if text.startswith("@"):
        cron = PRESETS.get(text.lower())
        if cron is None:
            raise ScheduleError(
                f"unknown schedule preset {text!r}: expected one of {', '.join(PRESETS)}"
            )
        return _Cron(cron, zone, wall_clock=_is_wall_clock(cron))
    rate = _RATE.match(text)
    if rate is not None:
        return _Rate(_parse_rate(text, rate.group("body")))
    if text.lower().startswith("rate"):
        raise ScheduleError(f"{text}: expected rate(<value> <unit>), e.g. rate(5 minutes)")
    _check_cron(text)
    cron = " ".join(text.split())
    return _Cron(cron, zone, wall_clock=_is_wall_clock(cron))


def _is_wall_clock(cron: str) -> bool:
    """Debian cron's test for a fixed-time job: neither minute nor hour starts with ``*``."""
    minute, hour = cron.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated schedule; build it with :func:`parse_schedule`.

    ``anchor`` only matters for rate() schedules, whose fire times are ``anchor + k * rate``.
    """

    expression: str
    timezone: str
    anchor: datetime

    @property
    def kind(self) -> str:
        """``"cron"`` (presets included) or ``"rate"``."""
        return "rate" if isinstance(_compile(self.expression, self.timezone), _Rate) else "cron"

    def fires_after(self, moment: datetime) -> Iterator[datetime]:
        """Every fire time strictly after ``moment``, in order, as UTC-aware datetimes."""
        spec = _compile(self.expression, self.timezone)
        if isinstance(spec, _Rate):
            return spec.fires_after(_utc(moment), _utc(self.anchor))
        return spec.fires_after(_utc(moment))

    def next_fire_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (UTC aware)."""
        fire = next(self.fires_after(moment), None)
        if fire is None:
            raise ScheduleError(f"schedule {self.expression!r} never fires after {moment}")
        return fire

    def last_fires(self, moment: datetime, count: int = 1) -> list[datetime]:
        """The newest ``count`` fire times at or before ``moment``, oldest first (maybe fewer)."""
        spec = _compile(self.expression, self.timezone)
        upper = _utc(moment)
        if isinstance(spec, _Rate):
            return spec.last_fires(upper, _utc(self.anchor), count)
        found: deque[datetime] = deque(maxlen=count)
        for window in _LOOKBACK:
            found.clear()
            for fire in spec.fires_after(upper - window):
                if fire > upper:
                    break
                found.append(fire)
            if len(found) == count:
                break
        return list(found)

    def intervals_between(
        self, start: datetime, end: datetime, *, limit: int | None = None
    ) -> list[DataInterval]:
        """Complete intervals inside ``[start, end]``, in order; at most ``limit`` if given."""
        upper = _utc(end)
        result: list[DataInterval] = []
        previous: datetime | None = None
        for fire in self.fires_after(_utc(start) - _TICK):
            if fire > upper or (limit is not None and len(result) >= limit):
                break
            if previous is not None:
                result.append(DataInterval(previous, fire))
            previous = fire
        return result


def parse_schedule(
    expression: str, timezone: str = "UTC", anchor: datetime | None = None
) -> Schedule:
    """Validate a schedule; ScheduleError says what is wrong. Naive anchors are UTC."""
    _compile(expression, timezone)
    return Schedule(
        expression=expression.strip(),
        timezone=timezone,
        anchor=EPOCH if anchor is None else _utc(anchor),
    )


# --------------------------------------------------------------------------- engine helpers


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ScheduleError(f"limit must be a positive integer, got {limit}")


def due_intervals(
    schedule: Schedule,
    *,
    start_date: datetime,
    end_date: datetime | None,
    last_end: datetime | None,
    now: datetime,
    catchup: bool,
    limit: int = 1000,
) -> list[DataInterval]:
    """Intervals whose run should exist by ``now``, oldest first.

    An interval qualifies when it starts at or after ``start_date`` and ``last_end`` and ends
    by ``now`` (and by ``end_date``). Without catchup only the newest one is returned, so a
    paused or late DAG does not flood the queue (Airflow semantics).
    """
    _check_limit(limit)
    lower = _utc(start_date)
    if last_end is not None:
        lower = max(lower, _utc(last_end))
    upper = _utc(now)
    if end_date is not None:
        upper = min(upper, _utc(end_date))
    if upper <= lower:
        return []
    if catchup:
        return schedule.intervals_between(lower, upper, limit=limit)
    fires = schedule.last_fires(upper, 2)
    if len(fires) < 2 or fires[0] < lower:
        return []
    return [DataInterval(fires[0], fires[1])]


MAX_BACKFILL_INTERVALS = 10_000
"""Runs one backfill may ask for; a wider range is refused (narrow it, or send several)."""


def backfill_intervals(
    schedule: Schedule,
    *,
    start: datetime,
    end: datetime,
    start_date: datetime | None = None,
    limit: int = MAX_BACKFILL_INTERVALS,
) -> list[DataInterval]:
    """Intervals whose logical date lies in ``[start, end]`` (both inclusive), oldest first.

    The last interval may end after ``end``: a backfill names logical dates, not data ends.
    Dates before ``start_date`` are never run: a range that starts earlier begins at
    ``start_date``. A range that ends before it, that covers more than ``limit`` intervals,
    or that leaves the calendar is a ScheduleError.
    """
    _check_limit(limit)
    try:
        lower, upper = _utc(start), _utc(end)
    except OverflowError:  # 9999-12-31T23:00-14:00 is past the calendar's end in UTC
        raise ScheduleError(
            f"backfill from {start.isoformat()} to {end.isoformat()} runs off the calendar "
            "(years 1 to 9999, in UTC)"
        ) from None
    if lower > upper:
        raise ScheduleError(
            f"backfill start {lower.isoformat()} is after its end {upper.isoformat()}"
        )
    if start_date is not None and lower < _utc(start_date):
        if upper < _utc(start_date):
            raise ScheduleError(
                f"backfill from {lower.isoformat()} to {upper.isoformat()} ends before the "
                f"DAG's start_date {_utc(start_date).isoformat()}: dates before start_date "
                "are never run"
            )
        lower = _utc(start_date)
    result: list[DataInterval] = []
    previous: datetime | None = None
    try:
        for fire in schedule.fires_after(lower - _TICK):
            if previous is not None:
                if len(result) == limit:
                    raise ScheduleError(
                        f"backfill from {lower.isoformat()} to {upper.isoformat()} covers more "
                        f"than {limit} intervals of {schedule.expression!r}; narrow the range"
                    )
                result.append(DataInterval(previous, fire))
            if fire > upper:
                break
            previous = fire
    except (OverflowError, ValueError) as error:
        if isinstance(error, ScheduleError):
            raise
        raise ScheduleError(
            f"backfill from {lower.isoformat()} to {upper.isoformat()} runs off the calendar "
            f"(years 1 to 9999): {error}"
        ) from None
    return result


def interval_for_fire(schedule: Schedule, fire_time: datetime) -> DataInterval:
    """The interval ending at the newest fire time at or before ``fire_time``.

    Snapping down tolerates a tick delivered late or carrying seconds.
    """
    fires = schedule.last_fires(fire_time, 2)
    if len(fires) < 2:
        raise ScheduleError(
            f"schedule {schedule.expression!r} has no complete interval ending by "
            f"{_utc(fire_time).isoformat()}"
        )
    return DataInterval(fires[0], fires[1])
