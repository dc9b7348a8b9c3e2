"""EventBridge Scheduler: one recurring schedule per scheduled DAG, and one-shot timers.

Both put an event on the skydag bus (an EventBridge templated target, assuming the
scheduler role): a DAG's schedule ``dag-<dag_id>`` puts "Schedule Tick" ``{"dag": id}``,
a timer puts "Timer Fired" with the detail it was set with; the source is always
``skydag.scheduler``. A tick only says "look now": the scheduler computes the intervals
owed from the DAG's high-water mark, so a late, duplicated or extra tick creates nothing
twice. That is what makes the approximations below safe.

Translating a skydag schedule (5-field cron, presets, ``rate(...)``; see
``skydag.spec.schedule``):

- cron → ``cron(minute hour day-of-month month day-of-week *)`` evaluated in the DAG's
  ``timezone`` (``ScheduleExpressionTimezone``). Every field is expanded to the set of
  values it matches and written back in EventBridge's syntax, so steps and names mean
  the same on both sides (EventBridge numbers weekdays 1-7 from Sunday and has no step in
  day-of-week: weekdays are written as names). EventBridge needs ``?`` in day-of-month
  or day-of-week. When both are restricted, cron means "either matches" (or "both",
  when one starts with ``*``), which one EventBridge expression cannot say: the schedule
  then ticks on the coarser superset (every day, or the restricted day-of-week) at the
  cron's times, and the extra ticks find nothing owed.
- ``rate(N unit)`` → the same rate with ``StartDate`` at the next fire time of the
  DAG's grid (``start_date + k * N``): EventBridge starts a rate schedule at its
  StartDate, so ticks land on the interval boundaries.
- ``start_date`` in the future → ``StartDate`` (EventBridge refuses a recurring
  StartDate more than 5 minutes in the past; earlier ticks would find nothing anyway).
  ``end_date`` → ``EndDate`` two minutes later (a fire at ``end_date`` is delivered
  within the following minute); a DAG whose end has passed gets no schedule.

A time skipped by a daylight-saving change is not invoked by EventBridge Scheduler (and
a repeated time once): the run owed then is created by the next tick.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from skydag.adapters.events import detail_json
from skydag.ports import Clock, SystemClock
from skydag.settings import Settings
from skydag.sources import SCHEDULE_TICK, SCHEDULER_SOURCE, TIMER_FIRED

if TYPE_CHECKING:
    from skydag.spec.models import DagSpec


MAX_SCHEDULE_NAME = 64
MAX_DESCRIPTION = 512
# A fire at end_date is invoked within the minute after it: keep the schedule that long.
END_DATE_GRACE = timedelta(minutes=2)
# at() in the past is refused; EventBridge Scheduler fires with one-minute precision. The
# local cloud fires to the second (``Settings.timer_precision_seconds``).
TIMER_LEAD = timedelta(minutes=1)
# Deliveries that fail (throttled bus, ...) are retried for a day: a late tick is harmless.
RETRY_POLICY = {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}

_NAME_CHARS = re.compile(r"[^0-9A-Za-z_.-]")
_HASH_LENGTH = 8


# --------------------------------------------------------------------------- names


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]


def _fit_name(prefix: str, name: str) -> str:
    """``prefix + name`` when it is a valid schedule name, otherwise a shortened, cleaned
    form ending in a hash of ``name`` (deterministic, so setting it again finds it)."""
    full = prefix + name
    if len(full) <= MAX_SCHEDULE_NAME and not _NAME_CHARS.search(full):
        return full
    cleaned = _NAME_CHARS.sub("-", full)
    return f"{cleaned[: MAX_SCHEDULE_NAME - _HASH_LENGTH - 1]}-{_short_hash(name)}"


def dag_schedule_name(dag_id: str) -> str:
    """``dag-<dag_id>``; ids longer than 60 characters are shortened with a hash."""
    return _fit_name("dag-", dag_id)


def timer_schedule_name(name: str) -> str:
    """The timer's own name when valid (``[0-9A-Za-z_.-]{1,64}``), else a cleaned form."""
    return _fit_name("", name)


# --------------------------------------------------------------------------- cron


@dataclass(frozen=True, slots=True)
class _CronField:
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name_value: int = 0

    def _number(self, token: str) -> int:
        if token.isdigit():
            return int(token)
        return self.names.index(token.upper()) + self.first_name_value

    def values(self, text: str) -> frozenset[int]:
        """The values a (validated) field matches; ``a/s`` runs from ``a`` to the top."""
        found: set[int] = set()
        for item in text.split(","):
            base, slash, step_text = item.partition("/")
            step = int(step_text) if slash else 1
            if base == "*":
                start, end = self.low, self.high
            elif "-" in base:
                first, last = base.split("-", 1)
                start, end = self._number(first), self._number(last)
            else:
                start = self._number(base)
                end = self.high if slash else start
            found.update(range(start, end + 1, step))
        return frozenset(found)


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MINUTE = _CronField(0, 59)
_HOUR = _CronField(0, 23)
_DAY_OF_MONTH = _CronField(1, 31)
_MONTH = _CronField(1, 12, _MONTHS, 1)
_DAY_OF_WEEK = _CronField(0, 7, _WEEKDAYS, 0)  # 7 is Sunday too
_EVERY_WEEKDAY = frozenset(range(7))
_EVERY_DAY_OF_MONTH = frozenset(range(1, 32))


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted values, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _join_runs(runs: list[tuple[int, int]], label: tuple[str, ...] | None = None) -> str:
    def text(value: int) -> str:
        return label[value] if label else str(value)

    parts: list[str] = []
    for first, last in runs:
        if last - first >= 2:
            parts.append(f"{text(first)}-{text(last)}")
        else:
            parts.extend(text(value) for value in range(first, last + 1))
    return ",".join(parts)


def _numbers(values: frozenset[int], field: _CronField) -> str:
    """A value set in EventBridge's syntax: ``*``, ``start/step`` or a list with ranges."""
    ordered = sorted(values)
    if ordered == list(range(field.low, field.high + 1)):
        return "*"
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], field.high + 1, step)):
            return f"{ordered[0]}/{step}"
    return _join_runs(_runs(ordered))


def _weekdays(values: frozenset[int]) -> str:
    return _join_runs(_runs(sorted(values)), _WEEKDAYS)


def cron_expression(cron: str) -> tuple[str, str | None]:
    """A validated 5-field cron as an EventBridge Scheduler ``cron(...)`` expression, and,
    when EventBridge cannot say exactly the same, a note on what it says instead."""
    minute, hour, day_of_month, month, day_of_week = cron.split()
    minutes = _numbers(_MINUTE.values(minute), _MINUTE)
    hours = _numbers(_HOUR.values(hour), _HOUR)
    months = _numbers(_MONTH.values(month), _MONTH)
    dom = _DAY_OF_MONTH.values(day_of_month)
    dow = frozenset(value % 7 for value in _DAY_OF_WEEK.values(day_of_week))
    dom_all, dow_all = dom == _EVERY_DAY_OF_MONTH, dow == _EVERY_WEEKDAY
    # cron's rule (Vixie, cronsim): a day matches both fields when either starts with
    # '*', and either field otherwise.
    both_must_match = day_of_month.startswith("*") or day_of_week.startswith("*")
    note = None
    if dom_all and dow_all:
        days = ("*", "?")
    elif both_must_match:
        if dow_all:
            days = (_numbers(dom, _DAY_OF_MONTH), "?")
        elif dom_all:
            days = ("?", _weekdays(dow))
        else:
            days = ("?", _weekdays(dow))
            note = (
                f"day-of-month {day_of_month!r} and day-of-week {day_of_week!r} must both "
                "match; EventBridge ticks on every matching weekday instead"
            )
    elif dom_all or dow_all:
        days = ("*", "?")  # "either matches" with one field matching every day
    else:
        days = ("*", "?")
        note = (
            f"day-of-month {day_of_month!r} or day-of-week {day_of_week!r}: EventBridge "
            "cannot express either-or, so it ticks every day at these times instead"
        )
    return f"cron({minutes} {hours} {days[0]} {months} {days[1]} *)", note


# --------------------------------------------------------------------------- schedules


@dataclass(frozen=True, slots=True)
class SchedulerExpression:
    """What a DAG's schedule becomes on EventBridge Scheduler."""

    expression: str
    timezone: str
    start_date: datetime | None = None
    end_date: datetime | None = None
    # False when EventBridge ticks more often than the DAG's schedule (see ``note``).
    exact: bool = True
    note: str | None = None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def translate_schedule(
    schedule: str,
    *,
    timezone: str = "UTC",
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    now: datetime,
) -> SchedulerExpression | None:
    """A DAG schedule as EventBridge Scheduler parameters; None once ``end_date`` passed.

    ``schedule`` must be valid (``skydag.spec.schedule.ScheduleError`` otherwise).
    """
    from skydag.spec.schedule import PRESETS, parse_schedule

    now = _utc(now)
    end = None if end_date is None else _utc(end_date) + END_DATE_GRACE
    if end is not None and end <= now:
        return None
    parsed = parse_schedule(schedule, timezone, start_date)
    if parsed.kind == "rate":
        value, unit = parsed.expression[parsed.expression.index("(") + 1 : -1].split()
        # The first fire of the DAG's own grid (start_date + k * rate) from now on, never
        # before start_date: EventBridge counts the rate from StartDate.
        first = parsed.next_fire_after(now)
        if start_date is not None and first < _utc(start_date):
            first = _utc(start_date)
        return SchedulerExpression(f"rate({int(value)} {unit.lower()})", "UTC", first, end)
    cron = PRESETS.get(parsed.expression.lower(), parsed.expression)
    expression, note = cron_expression(" ".join(cron.split()))
    start = None if start_date is None or _utc(start_date) <= now else _utc(start_date)
    return SchedulerExpression(expression, timezone, start, end, exact=note is None, note=note)


def _ceil_minute(moment: datetime) -> datetime:
    return _ceil(moment, timedelta(minutes=1))


def _ceil(moment: datetime, step: timedelta) -> datetime:
    """``moment`` rounded up to a whole ``step`` (of the epoch, in UTC)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    steps = -(-(_utc(moment) - epoch) // step)
    return epoch + steps * step


class EventBridgeSchedules:
    """DAG schedules and one-shot timers in the skydag schedule group.

    Satisfies ``skydag.ports.Timers`` (``set_timer``) and the DAG loader's
    ``DagSchedules`` port (``put_dag_schedule``, ``delete_dag_schedule``).
    """

    def __init__(
        self, settings: Settings, *, client: Any = None, clock: Clock | None = None
    ) -> None:
        if not settings.scheduler_role_arn or not settings.event_bus_arn:
            raise ValueError(
                "EventBridge Scheduler needs the scheduler role and the bus ARN "
                "(SKYDAG_SCHEDULER_ROLE_ARN, SKYDAG_EVENT_BUS_ARN)"
            )
        if client is None:
            from skydag.adapters import LazyClient

            client = LazyClient("scheduler", settings)
        self._client = client
        self._group = settings.schedule_group
        self._role_arn = settings.scheduler_role_arn
        self._bus_arn = settings.event_bus_arn
        self._clock: Clock = clock or SystemClock()
        self._timer_precision = timedelta(seconds=settings.timer_precision_seconds)

    # --- DAG schedules ----------------------------------------------------------------

    def put_dag_schedule(
        self, spec: DagSpec, *, enabled: bool, now: datetime | None = None
    ) -> SchedulerExpression | None:
        """Create or replace the DAG's schedule (DISABLED while the DAG is paused); a DAG
        without a schedule, or past its end_date, has none. Returns what was set."""
        translated = None
        if spec.schedule is not None:
            translated = translate_schedule(
                spec.schedule,
                timezone=spec.timezone,
                start_date=spec.start_date,
                end_date=spec.end_date,
                now=now or self._clock.now(),
            )
        if translated is None:
            self.delete_dag_schedule(spec.dag)
            return None
        description = f"skydag: ticks for DAG '{spec.dag}' ({spec.schedule}, {spec.timezone})"
        if translated.note:
            description += f"; {translated.note}"
        request: dict[str, Any] = {
            "Name": dag_schedule_name(spec.dag),
            "GroupName": self._group,
            "ScheduleExpression": translated.expression,
            "ScheduleExpressionTimezone": translated.timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED" if enabled else "DISABLED",
            "Description": description[:MAX_DESCRIPTION],
            "Target": self._target(SCHEDULE_TICK, {"dag": spec.dag}),
        }
        if translated.start_date is not None:
            request["StartDate"] = translated.start_date
        if translated.end_date is not None:
            request["EndDate"] = translated.end_date
        self._upsert(request)
        return translated

    def delete_dag_schedule(self, dag_id: str) -> bool:
        """Remove the DAG's schedule; False when it had none."""
        return self._delete(dag_schedule_name(dag_id))

    def set_dag_schedule_enabled(self, dag_id: str, enabled: bool) -> bool:
        """ENABLE or DISABLE the DAG's schedule (pause/unpause); False when it has none."""
        from botocore.exceptions import ClientError

        from skydag.adapters import error_code

        name = dag_schedule_name(dag_id)
        try:
            current = self._client.get_schedule(Name=name, GroupName=self._group)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return False
            raise
        request = {
            key: current[key]
            for key in (
                "Name",
                "GroupName",
                "ScheduleExpression",
                "ScheduleExpressionTimezone",
                "FlexibleTimeWindow",
                "Target",
                "Description",
                "EndDate",
                "KmsKeyArn",
            )
            if current.get(key) is not None
        }
        start = current.get("StartDate")
        if isinstance(start, datetime):
            # UpdateSchedule replaces everything and refuses a StartDate in the past; a
            # rate keeps its phase by moving StartDate forward a whole number of periods.
            start = self._next_aligned(current["ScheduleExpression"], _utc(start))
            if start is not None:
                request["StartDate"] = start
        request["State"] = "ENABLED" if enabled else "DISABLED"
        self._client.update_schedule(**request)
        return True

    def _next_aligned(self, expression: str, start: datetime) -> datetime | None:
        now = _utc(self._clock.now())
        if start > now:
            return start
        if not expression.startswith("rate("):
            return None
        from skydag.spec.schedule import parse_schedule

        return parse_schedule(expression, "UTC", start).next_fire_after(now)

    # --- one-shot timers --------------------------------------------------------------

    def set_timer(self, name: str, at: datetime, detail: Mapping[str, Any]) -> None:
        """Put "Timer Fired" ``detail`` on the bus at ``at`` (never before: the time is
        rounded up to the minute; a time already past fires about a minute from now).
        Idempotent: a timer of that name that is already set is left as it is."""
        from botocore.exceptions import ClientError

        from skydag.adapters import error_code

        precision = self._timer_precision
        earliest = _utc(self._clock.now()) + (TIMER_LEAD if precision >= TIMER_LEAD else precision)
        fire_at = _ceil(max(_utc(at), earliest), precision)
        request = {
            "Name": timer_schedule_name(name),
            "GroupName": self._group,
            "ScheduleExpression": f"at({fire_at:%Y-%m-%dT%H:%M:%S})",
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "Description": f"skydag timer {name}"[:MAX_DESCRIPTION],
            "Target": self._target(TIMER_FIRED, detail),
        }
        try:
            self._client.create_schedule(**request)
        except ClientError as error:
            if error_code(error) != "ConflictException":
                raise

    def delete_timer(self, name: str) -> bool:
        """Cancel a timer; False when it was not set (or has fired and been deleted)."""
        return self._delete(timer_schedule_name(name))

    # --- internals ----------------------------------------------------------------------

    def _target(self, detail_type: str, detail: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "Arn": self._bus_arn,
            "RoleArn": self._role_arn,
            "Input": detail_json(detail),
            "EventBridgeParameters": {"DetailType": detail_type, "Source": SCHEDULER_SOURCE},
            "RetryPolicy": dict(RETRY_POLICY),
        }

    def _upsert(self, request: dict[str, Any]) -> None:
        """UpdateSchedule replaces a schedule whole; create it when it does not exist
        (and update after all when a concurrent loader created it first)."""
        from botocore.exceptions import ClientError

        from skydag.adapters import error_code

        try:
            self._client.update_schedule(**request)
            return
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
        try:
            self._client.create_schedule(**request)
        except ClientError as error:
            if error_code(error) != "ConflictException":
                raise
            self._client.update_schedule(**request)

    def _delete(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        from skydag.adapters import error_code

        try:
            self._client.delete_schedule(Name=name, GroupName=self._group)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return False
            raise
        return True
