"""Translating skydag schedules into EventBridge Scheduler expressions (no AWS needed).

Each translated cron is checked against cronsim (skydag's own evaluator) over a whole
year: an exact translation fires at exactly the same minutes, an approximate one at least
at all of them (the scheduler finds nothing owed at the extra ticks)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cronsim import CronSim

from skydag.adapters import schedules
from skydag.adapters.schedules import (
    END_DATE_GRACE,
    cron_expression,
    dag_schedule_name,
    translate_schedule,
)
from skydag.service import router
from skydag.spec.schedule import PRESETS

YEAR_START, YEAR_END = datetime(2026, 1, 1), datetime(2027, 1, 1)
NOW = datetime(2026, 3, 1, 10, 7, 30, tzinfo=UTC)
EB_WEEKDAYS = {"SUN": 6, "MON": 0, "TUE": 1, "WED": 2, "THU": 3, "FRI": 4, "SAT": 5}


def _values(text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    """The values of one EventBridge cron field as this translator writes them."""
    if text in ("*", "?"):
        return set(range(low, high + 1))

    def number(token: str) -> int:
        return names[token] if names and token in names else int(token)

    found: set[int] = set()
    for item in text.split(","):
        if "/" in item:
            start, step = item.split("/")
            found.update(range(number(start), high + 1, int(step)))
        elif "-" in item:
            first, last = item.split("-")
            found.update(range(number(first), number(last) + 1))
        else:
            found.add(number(item))
    return found


def eventbridge_fires(expression: str) -> set[datetime]:
    """Every minute of 2026 an EventBridge ``cron(...)`` expression fires at."""
    minute, hour, dom, month, dow, year = expression.removeprefix("cron(")[:-1].split()
    assert year == "*"
    assert (dom == "?") != (dow == "?"), "exactly one day field must be '?'"
    minutes, hours = _values(minute, 0, 59), _values(hour, 0, 23)
    months = _values(month, 1, 12)
    fires: set[datetime] = set()
    day = YEAR_START
    while day < YEAR_END:
        if dom == "?":
            matches = day.weekday() in {EB_WEEKDAYS[name] for name in _weekday_names(dow)}
        else:
            matches = day.day in _values(dom, 1, 31)
        if matches and day.month in months:
            fires.update(day.replace(hour=h, minute=m) for h in hours for m in minutes)
        day += timedelta(days=1)
    return fires


def _weekday_names(text: str) -> Iterator[str]:
    order = list(EB_WEEKDAYS)
    for item in text.split(","):
        first, _, last = item.partition("-")
        yield from order[order.index(first) : order.index(last or first) + 1]


def cron_fires(cron: str) -> set[datetime]:
    fires: set[datetime] = set()
    for fire in CronSim(cron, YEAR_START - timedelta(minutes=1)):
        if fire >= YEAR_END:
            return fires
        fires.add(fire)
    return fires


EXACT = {
    "*/15 * * * *": "cron(0/15 * * * ? *)",
    "5-59/10 2 * * *": "cron(5/10 2 * * ? *)",
    "0 */6 * * *": "cron(0 0/6 * * ? *)",
    "0 9 * * 1-5": "cron(0 9 ? * MON-FRI *)",
    "0 9 * * mon-fri": "cron(0 9 ? * MON-FRI *)",
    "30 2 * * 5-7": "cron(30 2 ? * SUN,FRI,SAT *)",
    "0 0 * * 7": "cron(0 0 ? * SUN *)",
    "0 0 * * */2": "cron(0 0 ? * SUN,TUE,THU,SAT *)",
    "0 0 * JAN-MAR,DEC *": "cron(0 0 * 1-3,12 ? *)",
    "0,30 8-17 * * *": "cron(0,30 8-17 * * ? *)",
    "1,2,3,10 4 * * *": "cron(1-3,10 4 * * ? *)",
    "0 12 1,15 * *": "cron(0 12 1,15 * ? *)",
    "0 12 */10 * *": "cron(0 12 1/10 * ? *)",
    "0 0 1-31 * MON": "cron(0 0 * * ? *)",  # either-or with every day: every day
    "0 0 */2 * *": "cron(0 0 1/2 * ? *)",
    "0 6 * 2 MON": "cron(0 6 ? 2 MON *)",
}


@pytest.mark.parametrize(("cron", "expected"), EXACT.items())
def test_cron_translates_exactly(cron: str, expected: str) -> None:
    expression, note = cron_expression(cron)

    assert (expression, note) == (expected, None)
    assert eventbridge_fires(expression) == cron_fires(cron)


@pytest.mark.parametrize(
    ("cron", "expected", "why"),
    [
        # Either the 1st/15th or a Monday: EventBridge cannot say "or"; every day instead.
        ("0 9 1,15 * MON", "cron(0 9 * * ? *)", "either-or"),
        # Odd days that are Mondays (a '*'-field makes cron require both): every Monday.
        ("0 9 */2 * MON", "cron(0 9 ? * MON *)", "must both match"),
    ],
)
def test_day_of_month_with_day_of_week_ticks_on_a_superset(
    cron: str, expected: str, why: str
) -> None:
    expression, note = cron_expression(cron)

    assert expression == expected
    assert note is not None
    assert why in note
    extra = eventbridge_fires(expression) - cron_fires(cron)
    assert cron_fires(cron) <= eventbridge_fires(expression)
    assert extra  # it really is an approximation


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("@hourly", "cron(0 * * * ? *)"),
        ("@daily", "cron(0 0 * * ? *)"),
        ("@midnight", "cron(0 0 * * ? *)"),
        ("@weekly", "cron(0 0 ? * SUN *)"),
        ("@monthly", "cron(0 0 1 * ? *)"),
        ("@yearly", "cron(0 0 1 1 ? *)"),
        ("@annually", "cron(0 0 1 1 ? *)"),
    ],
)
def test_every_preset(preset: str, expected: str) -> None:
    translated = translate_schedule(preset, now=NOW)

    assert translated is not None
    assert (translated.expression, translated.exact) == (expected, True)
    assert eventbridge_fires(translated.expression) == cron_fires(PRESETS[preset])


def test_the_presets_are_all_covered() -> None:
    assert set(PRESETS) == {
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    }


@pytest.mark.parametrize(
    ("rate", "step"),
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(6 hours)", timedelta(hours=6)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(7 days)", timedelta(days=7)),
    ],
)
def test_rates_start_on_the_dags_grid(rate: str, step: timedelta) -> None:
    anchor = datetime(2026, 1, 1, 0, 3, tzinfo=UTC)

    translated = translate_schedule(rate, timezone="Europe/Paris", start_date=anchor, now=NOW)

    assert translated is not None
    assert (translated.expression, translated.timezone) == (rate, "UTC")
    first = translated.start_date
    assert first is not None
    assert NOW < first <= NOW + step
    assert (first - anchor) % step == timedelta(0)


def test_a_rate_starting_later_starts_at_its_start_date() -> None:
    anchor = NOW + timedelta(days=3)

    translated = translate_schedule("rate(2 hours)", start_date=anchor, now=NOW)

    assert translated is not None
    assert translated.start_date == anchor


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
def test_the_time_zone_is_passed_through(zone: str) -> None:
    translated = translate_schedule("0 2 * * *", timezone=zone, now=NOW)

    assert translated is not None
    assert translated.timezone == zone
    assert translated.expression == "cron(0 2 * * ? *)"


def test_start_and_end_dates() -> None:
    future, past = NOW + timedelta(days=10), NOW - timedelta(days=10)
    end = NOW + timedelta(days=30)

    later = translate_schedule("@daily", start_date=future, end_date=end, now=NOW)
    running = translate_schedule("@daily", start_date=past, end_date=end, now=NOW)
    ended = translate_schedule("@daily", start_date=past, end_date=NOW - END_DATE_GRACE, now=NOW)

    assert later is not None
    assert (later.start_date, later.end_date) == (future, end + END_DATE_GRACE)
    assert running is not None
    # EventBridge refuses a recurring StartDate in the past; ticks before it are harmless.
    assert running.start_date is None
    assert ended is None


def test_naive_dates_are_utc() -> None:
    translated = translate_schedule(
        "@daily", start_date=datetime(2026, 6, 1), end_date=datetime(2026, 7, 1), now=NOW
    )

    assert translated is not None
    assert translated.start_date == datetime(2026, 6, 1, tzinfo=UTC)


def test_schedule_names() -> None:
    assert dag_schedule_name("etl_daily") == "dag-etl_daily"
    longest = dag_schedule_name("a" + "b" * 63)
    assert len(longest) == 64
    assert longest.startswith("dag-abbb")
    assert longest != dag_schedule_name("a" + "b" * 62 + "c")


def test_the_event_names_are_the_routers() -> None:
    assert schedules.SCHEDULER_SOURCE == router.SCHEDULER_SOURCE
    assert schedules.SCHEDULE_TICK == router.SCHEDULE_TICK
    assert schedules.TIMER_FIRED == router.TIMER_FIRED
