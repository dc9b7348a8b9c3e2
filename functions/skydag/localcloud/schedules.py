"""EventBridge Scheduler, played: moto stores schedules but never fires them.

Each pass reads the schedules of skydag's group and puts the event of every schedule
whose fire time has come since the previous pass, on time (within a pass): recurring
``cron(...)`` expressions in their ``ScheduleExpressionTimezone``, ``rate(...)`` counted
from ``StartDate``, both bounded by ``StartDate``/``EndDate``; one-shot ``at(...)`` timers
fire once they are due and are then deleted (``ActionAfterCompletion: DELETE``). Missed
fires collapse into one, as a late tick only says "look now" to skydag.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim

from skydag.engine.scheduler import RETRY_TIMER

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_WEEKDAY_NUMBERS = {
    str(n): name for n, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)
}

PutEvent = Callable[[str, str, str, Mapping[str, Any]], None]
"""(bus name or ARN, source, detail-type, detail) -> None."""


def _aware(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _five_field_cron(expression: str) -> str:
    """``cron(m h dom mon dow year)`` (EventBridge) as a 5-field cron cronsim reads:
    ``?`` is ``*``, weekdays 1-7 count from Sunday; the year field is dropped."""
    fields = expression[len("cron(") : -1].split()
    minute, hour, day_of_month, month, day_of_week = fields[:5]
    day_of_month = "*" if day_of_month == "?" else day_of_month
    if day_of_week == "?":
        day_of_week = "*"
    else:
        day_of_week = re.sub(r"\b[1-7]\b", lambda m: _WEEKDAY_NUMBERS[m.group(0)], day_of_week)
    return f"{minute} {hour} {day_of_month} {month} {day_of_week}"


def next_fire(schedule: Mapping[str, Any], after: datetime) -> datetime | None:
    """The schedule's first fire time strictly after ``after`` (None: never again)."""
    expression = str(schedule.get("ScheduleExpression", "")).strip()
    start = _aware(schedule.get("StartDate"))
    end = _aware(schedule.get("EndDate"))
    fire: datetime | None
    if expression.startswith("at("):
        zone = ZoneInfo(str(schedule.get("ScheduleExpressionTimezone") or "UTC"))
        at = datetime.fromisoformat(expression[3:-1]).replace(tzinfo=zone).astimezone(UTC)
        fire = at if at > after else None
    elif match := _RATE.match(expression):
        unit = match.group(2).rstrip("s")
        period = timedelta(seconds=int(match.group(1)) * _UNITS[unit])
        origin = start or after
        if after < origin:
            fire = origin
        else:
            periods = (after - origin) // period + 1
            fire = origin + periods * period
    elif expression.startswith("cron("):
        zone = ZoneInfo(str(schedule.get("ScheduleExpressionTimezone") or "UTC"))
        since = max(after, start - timedelta(seconds=1)) if start else after
        fire = next(CronSim(_five_field_cron(expression), since.astimezone(zone))).astimezone(UTC)
    else:
        return None
    if fire is not None and end is not None and fire > end:
        return None
    return fire


class ScheduleFirer:
    """Fires the schedules of one group (see the module docstring)."""

    def __init__(self, client: Any, group: str, put: PutEvent, *, now: Callable[[], datetime]):
        self._client = client
        self._group = group
        self._put = put
        self._now = now
        self._checked = now()

    def fire_due(self) -> list[str]:
        """Put the events of the schedules due since the last call; returns their names."""
        now = self._now()
        since, self._checked = self._checked, now
        fired: list[str] = []
        pages = self._client.get_paginator("list_schedules").paginate(GroupName=self._group)
        for page in pages:
            for summary in page.get("Schedules", []):
                if summary.get("State", "ENABLED") != "ENABLED":
                    continue
                name = str(summary["Name"])
                schedule = self._client.get_schedule(Name=name, GroupName=self._group)
                if schedule.get("State") != "ENABLED":
                    continue
                one_shot = str(schedule.get("ScheduleExpression", "")).startswith("at(")
                # A timer is due once its time has passed, however long ago (it may have
                # been set for a time already past); a recurring schedule when a fire time
                # fell in (since, now].
                after = datetime.min.replace(tzinfo=UTC) if one_shot else since
                fire = next_fire(schedule, after)
                if fire is None or fire > now:
                    continue
                self._fire(schedule)
                if one_shot and schedule.get("ActionAfterCompletion") == "DELETE":
                    self._client.delete_schedule(Name=name, GroupName=self._group)
                fired.append(name)
        return fired

    def pending_timers(self) -> int:
        """How many retries wait for their time (their one-shot timers). Deadlines are
        not counted: a wait's deadline ends a wait for a signal that may never come."""
        pending = 0
        pages = self._client.get_paginator("list_schedules").paginate(GroupName=self._group)
        for page in pages:
            for summary in page.get("Schedules", []):
                name = str(summary["Name"])
                if not name.startswith(RETRY_TIMER):
                    continue
                schedule = self._client.get_schedule(Name=name, GroupName=self._group)
                pending += str(schedule.get("ScheduleExpression", "")).startswith("at(")
        return pending

    def _fire(self, schedule: Mapping[str, Any]) -> None:
        target = schedule["Target"]
        parameters = target.get("EventBridgeParameters") or {}
        detail = json.loads(target.get("Input") or "{}")
        self._put(
            str(target["Arn"]),
            str(parameters.get("Source", "")),
            str(parameters.get("DetailType", "")),
            detail if isinstance(detail, Mapping) else {},
        )
