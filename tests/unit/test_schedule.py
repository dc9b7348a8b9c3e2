"""Schedules: cron, presets, rate(), DST, and the interval helpers the scheduler engine uses."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skydag.spec.schedule import (
    DataInterval,
    Schedule,
    ScheduleError,
    backfill_intervals,
    due_intervals,
    interval_for_fire,
    parse_schedule,
    validate_timezone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def starts(intervals: list[DataInterval]) -> list[datetime]:
    return [interval.start for interval in intervals]


def assert_contiguous(intervals: list[DataInterval]) -> None:
    for interval in intervals:
        assert interval.start < interval.end
        assert interval.start.tzinfo is UTC
        assert interval.end.tzinfo is UTC
    for earlier, later in itertools.pairwise(intervals):
        assert earlier.end == later.start


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("@hourly", [utc(2024, 1, 1, 0), utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)]),
        ("@daily", [utc(2024, 1, 1), utc(2024, 1, 2), utc(2024, 1, 3)]),
        ("@midnight", [utc(2024, 1, 1), utc(2024, 1, 2), utc(2024, 1, 3)]),
        # 2024-01-07 is a Sunday: weeks run Sunday to Sunday, as in Airflow.
        ("@weekly", [utc(2024, 1, 7), utc(2024, 1, 14), utc(2024, 1, 21)]),
        ("@monthly", [utc(2024, 1, 1), utc(2024, 2, 1), utc(2024, 3, 1)]),
        ("@yearly", [utc(2024, 1, 1), utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@annually", [utc(2024, 1, 1), utc(2025, 1, 1), utc(2026, 1, 1)]),
    ],
)
def test_preset_intervals(preset: str, expected: list[datetime]) -> None:
    schedule = parse_schedule(preset)
    intervals = schedule.intervals_between(utc(2024, 1, 1), utc(2030, 1, 1), limit=3)
    assert starts(intervals) == expected
    assert_contiguous(intervals)
    assert intervals[-1].end == schedule.next_fire_after(expected[-1])


def test_presets_are_case_insensitive_and_keep_the_written_expression() -> None:
    schedule = parse_schedule("  @Daily ")
    assert schedule.expression == "@Daily"
    assert schedule.kind == "cron"
    assert schedule.next_fire_after(utc(2024, 5, 5, 12)) == utc(2024, 5, 6)


def test_preset_in_a_time_zone_uses_local_midnight() -> None:
    schedule = parse_schedule("@daily", "Europe/Berlin")
    assert schedule.next_fire_after(utc(2024, 1, 10, 12)) == utc(2024, 1, 10, 23)
    assert schedule.next_fire_after(utc(2024, 7, 10, 12)) == utc(2024, 7, 10, 22)


# --------------------------------------------------------------------------- cron forms


@pytest.mark.parametrize(
    ("expression", "start", "end", "expected_starts"),
    [
        pytest.param(
            "*/20 * * * *",
            utc(2024, 1, 1, 0, 0),
            utc(2024, 1, 1, 1, 19),
            [utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 20), utc(2024, 1, 1, 0, 40)],
            id="minute-step",
        ),
        pytest.param(
            "10-40/15 3 * * *",
            utc(2024, 1, 1),
            utc(2024, 1, 2, 3, 10),
            [utc(2024, 1, 1, 3, 10), utc(2024, 1, 1, 3, 25), utc(2024, 1, 1, 3, 40)],
            id="range-step",
        ),
        pytest.param(
            "15/20 0 * * *",
            utc(2024, 1, 1),
            utc(2024, 1, 2, 0, 15),
            [utc(2024, 1, 1, 0, 15), utc(2024, 1, 1, 0, 35), utc(2024, 1, 1, 0, 55)],
            id="value-step-runs-to-the-field-maximum",
        ),
        pytest.param(
            "0 6,18 * * *",
            utc(2024, 1, 1),
            utc(2024, 1, 2, 18),
            [utc(2024, 1, 1, 6), utc(2024, 1, 1, 18), utc(2024, 1, 2, 6)],
            id="hour-list",
        ),
        pytest.param(
            "0 9 * * MON-FRI",
            utc(2024, 1, 5),  # a Friday
            utc(2024, 1, 10, 9),
            [utc(2024, 1, 5, 9), utc(2024, 1, 8, 9), utc(2024, 1, 9, 9)],
            id="weekday-names-range",
        ),
        pytest.param(
            "0 0 * * sat,SUN",
            utc(2024, 1, 1),
            utc(2024, 1, 14),
            [utc(2024, 1, 6), utc(2024, 1, 7), utc(2024, 1, 13)],
            id="weekday-names-list-any-case",
        ),
        pytest.param(
            "0 0 * * 7",
            utc(2024, 1, 1),
            utc(2024, 1, 21),
            [utc(2024, 1, 7), utc(2024, 1, 14)],
            id="seven-is-sunday",
        ),
        pytest.param(
            "0 0 1 JAN,jul *",
            utc(2024, 1, 1),
            utc(2025, 7, 1),
            [utc(2024, 1, 1), utc(2024, 7, 1), utc(2025, 1, 1)],
            id="month-names",
        ),
        pytest.param(
            "0 0 1 */4 *",
            utc(2024, 1, 1),
            utc(2025, 1, 1),
            [utc(2024, 1, 1), utc(2024, 5, 1), utc(2024, 9, 1)],
            id="month-step",
        ),
        pytest.param(
            "0 0 13 * FRI",
            utc(2024, 9, 1),
            utc(2024, 9, 20),
            [utc(2024, 9, 6), utc(2024, 9, 13)],
            id="day-of-month-or-day-of-week",
        ),
        pytest.param(
            "0 12 29 2 *",
            utc(2023, 1, 1),
            utc(2032, 2, 29, 12),
            [utc(2024, 2, 29, 12), utc(2028, 2, 29, 12)],
            id="leap-day",
        ),
    ],
)
def test_cron_intervals(
    expression: str, start: datetime, end: datetime, expected_starts: list[datetime]
) -> None:
    intervals = parse_schedule(expression).intervals_between(start, end)
    assert starts(intervals) == expected_starts
    assert_contiguous(intervals)
    assert intervals[-1].end <= end


def test_intervals_between_is_aligned_and_only_complete() -> None:
    schedule = parse_schedule("@hourly")
    intervals = schedule.intervals_between(utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 3, 59))
    assert intervals == [
        DataInterval(utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)),
        DataInterval(utc(2024, 1, 1, 2), utc(2024, 1, 1, 3)),
    ]
    assert schedule.intervals_between(utc(2024, 1, 1, 3), utc(2024, 1, 1, 1)) == []


def test_intervals_between_bounds_are_inclusive() -> None:
    schedule = parse_schedule("@hourly")
    assert schedule.intervals_between(utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)) == [
        DataInterval(utc(2024, 1, 1, 1), utc(2024, 1, 1, 2))
    ]


def test_next_fire_after_is_strictly_after() -> None:
    schedule = parse_schedule("*/15 * * * *")
    assert schedule.next_fire_after(utc(2024, 1, 1, 0, 15)) == utc(2024, 1, 1, 0, 30)
    assert schedule.next_fire_after(utc(2024, 1, 1, 0, 14, 59, 999999)) == utc(2024, 1, 1, 0, 15)
    assert schedule.next_fire_after(utc(2024, 1, 1, 0, 15, 0, 1)) == utc(2024, 1, 1, 0, 30)


def test_naive_and_non_utc_moments() -> None:
    schedule = parse_schedule("@hourly")
    assert schedule.next_fire_after(datetime(2024, 1, 1, 10, 5)) == utc(2024, 1, 1, 11)
    berlin_noon = datetime(2024, 1, 1, 12, 5, tzinfo=BERLIN)  # 11:05 UTC
    fire = schedule.next_fire_after(berlin_noon)
    assert fire == utc(2024, 1, 1, 12)
    assert fire.tzinfo is UTC


# --------------------------------------------------------------------------- DST


@pytest.mark.parametrize(
    ("zone", "day_before", "spring_day", "day_after"),
    [
        # Europe/Berlin jumps 02:00 CET -> 03:00 CEST on 2025-03-30.
        ("Europe/Berlin", utc(2025, 3, 29, 1, 30), utc(2025, 3, 30, 1, 0), utc(2025, 3, 31, 0, 30)),
        # America/New_York jumps 02:00 EST -> 03:00 EDT on 2025-03-09.
        (
            "America/New_York",
            utc(2025, 3, 8, 7, 30),
            utc(2025, 3, 9, 7, 0),
            utc(2025, 3, 10, 6, 30),
        ),
    ],
)
def test_daily_0230_on_spring_forward_runs_once_right_after_the_gap(
    zone: str, day_before: datetime, spring_day: datetime, day_after: datetime
) -> None:
    schedule = parse_schedule("30 2 * * *", zone)
    intervals = schedule.intervals_between(day_before, day_after)
    assert starts(intervals) == [day_before, spring_day]
    assert intervals[-1].end == day_after
    # 02:30 does not exist that day: the run happens at 03:00 local, once.
    assert spring_day.astimezone(ZoneInfo(zone)).strftime("%H:%M") == "03:00"
    assert_contiguous(intervals)


@pytest.mark.parametrize(
    ("zone", "local_day"),
    [("Europe/Berlin", datetime(2025, 10, 26)), ("America/New_York", datetime(2025, 11, 2))],
)
def test_hourly_across_fall_back_gives_25_one_hour_intervals(
    zone: str, local_day: datetime
) -> None:
    tz = ZoneInfo(zone)
    start = local_day.replace(tzinfo=tz)
    end = (local_day + timedelta(days=1)).replace(tzinfo=tz)
    intervals = parse_schedule("0 * * * *", zone).intervals_between(start, end)
    assert len(intervals) == 25
    assert all(iv.end - iv.start == timedelta(hours=1) for iv in intervals)
    assert_contiguous(intervals)
    local_hours = [iv.start.astimezone(tz).hour for iv in intervals]
    repeated = 2 if zone == "Europe/Berlin" else 1
    assert local_hours.count(repeated) == 2


def test_hourly_across_spring_forward_gives_23_intervals() -> None:
    start = datetime(2025, 3, 9, tzinfo=NEW_YORK)
    end = datetime(2025, 3, 10, tzinfo=NEW_YORK)
    intervals = parse_schedule("0 * * * *", "America/New_York").intervals_between(start, end)
    assert len(intervals) == 23
    assert all(iv.end - iv.start == timedelta(hours=1) for iv in intervals)


def test_daily_at_a_repeated_time_on_fall_back_runs_once() -> None:
    schedule = parse_schedule("30 1 * * *", "America/New_York")
    intervals = schedule.intervals_between(utc(2025, 11, 1), utc(2025, 11, 4))
    # 01:30 EDT (05:30 UTC) on the fall-back day; 01:30 EST is not a second run.
    assert starts(intervals) == [utc(2025, 11, 1, 5, 30), utc(2025, 11, 2, 5, 30)]
    assert intervals[-1].end == utc(2025, 11, 3, 6, 30)
    # Asking from inside the repeated hour never goes backwards.
    assert schedule.next_fire_after(utc(2025, 11, 2, 6, 10)) == utc(2025, 11, 3, 6, 30)


def test_wildcard_jobs_skip_a_spring_forward_gap() -> None:
    # "*/30 2 * * *" follows real time: 02:xx does not exist in Berlin on 2025-03-30.
    schedule = parse_schedule("*/30 2 * * *", "Europe/Berlin")
    fires = starts(schedule.intervals_between(utc(2025, 3, 29), utc(2025, 3, 31, 1)))
    assert fires == [utc(2025, 3, 29, 1), utc(2025, 3, 29, 1, 30), utc(2025, 3, 31, 0)]


def test_half_hour_dst_shift_keeps_every_fire() -> None:
    # Lord Howe falls back 30 minutes (02:00 +11 -> 01:30 +10:30) on 2025-04-06.
    schedule = parse_schedule("*/15 0 * * *", "Australia/Lord_Howe")
    fires = starts(schedule.intervals_between(utc(2025, 4, 5, 13), utc(2025, 4, 6, 14, 30)))
    assert fires == [
        utc(2025, 4, 5, 13, 0),
        utc(2025, 4, 5, 13, 15),
        utc(2025, 4, 5, 13, 30),
        utc(2025, 4, 5, 13, 45),
        utc(2025, 4, 6, 13, 30),  # 00:00 +10:30 on 2025-04-07
        utc(2025, 4, 6, 13, 45),
        utc(2025, 4, 6, 14, 0),
    ]
    hourly = parse_schedule("30 * * * *", "Australia/Lord_Howe")
    repeated = hourly.intervals_between(utc(2025, 4, 5, 13, 30), utc(2025, 4, 5, 16))
    # 01:30 happens twice, 30 minutes apart: 14:30 UTC (+11) and 15:00 UTC (+10:30).
    assert starts(repeated) == [
        utc(2025, 4, 5, 13, 30),
        utc(2025, 4, 5, 14, 30),
        utc(2025, 4, 5, 15),
    ]
    assert [iv.end - iv.start for iv in repeated] == [
        timedelta(hours=1),
        timedelta(minutes=30),
        timedelta(hours=1),
    ]


def test_daily_midnight_interval_lengths_follow_the_wall_clock() -> None:
    schedule = parse_schedule("@daily", "America/New_York")
    spring = schedule.intervals_between(utc(2025, 3, 8, 5), utc(2025, 3, 10, 4))
    fall = schedule.intervals_between(utc(2025, 11, 1, 4), utc(2025, 11, 3, 5))
    assert [iv.end - iv.start for iv in spring] == [timedelta(hours=24), timedelta(hours=23)]
    assert [iv.end - iv.start for iv in fall] == [timedelta(hours=24), timedelta(hours=25)]


# --------------------------------------------------------------------------- rate()


@pytest.mark.parametrize(
    ("expression", "anchor", "expected"),
    [
        (
            "rate(15 minutes)",
            utc(2024, 1, 1, 0, 7),
            [utc(2024, 1, 1, 0, 7), utc(2024, 1, 1, 0, 22), utc(2024, 1, 1, 0, 37)],
        ),
        (
            "rate(1 minute)",
            utc(2024, 1, 1, 0, 0, 30),
            [utc(2024, 1, 1, 0, 0, 30), utc(2024, 1, 1, 0, 1, 30), utc(2024, 1, 1, 0, 2, 30)],
        ),
        (
            "rate(1 hour)",
            utc(2024, 1, 1, 0, 45),
            [utc(2024, 1, 1, 0, 45), utc(2024, 1, 1, 1, 45), utc(2024, 1, 1, 2, 45)],
        ),
        (
            "rate(6 hours)",
            utc(2024, 1, 1, 1),
            [utc(2024, 1, 1, 1), utc(2024, 1, 1, 7), utc(2024, 1, 1, 13)],
        ),
        (
            "rate(1 day)",
            utc(2024, 1, 1, 10, 30),
            [utc(2024, 1, 1, 10, 30), utc(2024, 1, 2, 10, 30), utc(2024, 1, 3, 10, 30)],
        ),
        (
            "rate(3 days)",
            utc(2024, 1, 1),
            [utc(2024, 1, 1), utc(2024, 1, 4), utc(2024, 1, 7)],
        ),
    ],
)
def test_rate_intervals_are_anchored_at_start_date(
    expression: str, anchor: datetime, expected: list[datetime]
) -> None:
    schedule = parse_schedule(expression, anchor=anchor)
    assert schedule.kind == "rate"
    intervals = schedule.intervals_between(anchor, anchor + timedelta(days=30), limit=3)
    assert starts(intervals) == expected
    assert_contiguous(intervals)
    # Anchoring works from any point, also before the anchor.
    step = expected[1] - expected[0]
    assert schedule.next_fire_after(anchor - step * 5 + timedelta(seconds=1)) == anchor - step * 4


def test_rate_is_a_fixed_duration_across_dst() -> None:
    schedule = parse_schedule("rate(1 day)", "Europe/Berlin", anchor=utc(2025, 3, 28, 10))
    intervals = schedule.intervals_between(utc(2025, 3, 28), utc(2025, 4, 2))
    assert all(iv.end - iv.start == timedelta(days=1) for iv in intervals)
    assert all(iv.start.hour == 10 for iv in intervals)


def test_rate_anchor_naive_is_utc_and_default_is_epoch() -> None:
    assert parse_schedule("rate(5 minutes)", anchor=datetime(2024, 1, 1, 0, 1)).anchor == utc(
        2024, 1, 1, 0, 1
    )
    default = parse_schedule("rate(7 minutes)")
    assert default.anchor == utc(1970, 1, 1)
    assert (default.next_fire_after(utc(2024, 1, 1)) - utc(1970, 1, 1)) % timedelta(
        minutes=7
    ) == timedelta(0)
    aware = parse_schedule("rate(1 hour)", anchor=datetime(2024, 1, 1, 12, 30, tzinfo=BERLIN))
    assert aware.anchor == utc(2024, 1, 1, 11, 30)


def test_rate_accepts_spacing_and_case() -> None:
    schedule = parse_schedule("Rate( 2  Hours )", anchor=utc(2024, 1, 1))
    assert schedule.next_fire_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 2)


def test_schedule_built_directly_works_like_a_parsed_one() -> None:
    direct = Schedule(expression="rate(2 hours)", timezone="UTC", anchor=utc(2024, 1, 1, 1))
    assert direct.next_fire_after(utc(2024, 1, 1, 2)) == utc(2024, 1, 1, 3)
    assert direct.last_fires(utc(2024, 1, 1, 4), 2) == [utc(2024, 1, 1, 1), utc(2024, 1, 1, 3)]


# --------------------------------------------------------------------------- due_intervals

HOURLY = parse_schedule("@hourly")


@pytest.mark.parametrize(
    ("kwargs", "expected_starts"),
    [
        pytest.param(
            {"start_date": utc(2024, 1, 1, 0, 30), "now": utc(2024, 1, 1, 4, 10)},
            [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2), utc(2024, 1, 1, 3)],
            id="catchup-from-aligned-start-date",
        ),
        pytest.param(
            {"start_date": utc(2024, 1, 1), "now": utc(2024, 1, 1, 3)},
            [utc(2024, 1, 1, 0), utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)],
            id="interval-ending-exactly-now-is-due",
        ),
        pytest.param(
            {
                "start_date": utc(2024, 1, 1),
                "last_end": utc(2024, 1, 1, 2),
                "now": utc(2024, 1, 1, 4, 59),
            },
            [utc(2024, 1, 1, 2), utc(2024, 1, 1, 3)],
            id="after-last-end",
        ),
        pytest.param(
            {
                "start_date": utc(2024, 1, 1),
                "last_end": utc(2024, 1, 1, 4),
                "now": utc(2024, 1, 1, 4, 59),
            },
            [],
            id="nothing-new",
        ),
        pytest.param(
            {
                "start_date": utc(2024, 1, 1),
                "end_date": utc(2024, 1, 1, 2, 30),
                "now": utc(2024, 1, 2),
            },
            [utc(2024, 1, 1, 0), utc(2024, 1, 1, 1)],
            id="end-date-bounds-interval-ends",
        ),
        pytest.param(
            {"start_date": utc(2024, 1, 1), "now": utc(2024, 1, 2), "limit": 2},
            [utc(2024, 1, 1, 0), utc(2024, 1, 1, 1)],
            id="limit-keeps-the-oldest",
        ),
        pytest.param(
            {"start_date": utc(2024, 1, 1, 0, 30), "now": utc(2024, 1, 1, 1, 59)},
            [],
            id="no-complete-interval-yet",
        ),
        pytest.param(
            {"start_date": utc(2024, 1, 2), "now": utc(2024, 1, 1)},
            [],
            id="start-date-in-the-future",
        ),
        pytest.param(
            {
                "start_date": utc(2024, 1, 1),
                "end_date": utc(2023, 12, 31),
                "now": utc(2024, 1, 2),
            },
            [],
            id="end-date-before-start-date",
        ),
    ],
)
def test_due_intervals_with_catchup(
    kwargs: dict[str, object], expected_starts: list[datetime]
) -> None:
    args: dict[str, object] = {"end_date": None, "last_end": None, **kwargs}
    intervals = due_intervals(HOURLY, catchup=True, **args)  # type: ignore[arg-type]
    assert starts(intervals) == expected_starts
    assert_contiguous(intervals)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"start_date": utc(2024, 1, 1), "now": utc(2024, 1, 5, 7, 30)},
            [DataInterval(utc(2024, 1, 5, 6), utc(2024, 1, 5, 7))],
            id="only-the-newest",
        ),
        pytest.param(
            {
                "start_date": utc(2024, 1, 1),
                "last_end": utc(2024, 1, 5, 2),
                "now": utc(2024, 1, 5, 7, 30),
            },
            [DataInterval(utc(2024, 1, 5, 6), utc(2024, 1, 5, 7))],
            id="skips-missed-intervals",
        ),
        pytest.param(
            {
                "start_date": utc(2024, 1, 1),
                "last_end": utc(2024, 1, 5, 7),
                "now": utc(2024, 1, 5, 7, 30),
            },
            [],
            id="newest-already-scheduled",
        ),
        pytest.param(
            {
                "start_date": utc(2024, 1, 1),
                "end_date": utc(2024, 1, 3, 12),
                "now": utc(2024, 1, 5, 7, 30),
            },
            [DataInterval(utc(2024, 1, 3, 11), utc(2024, 1, 3, 12))],
            id="newest-before-end-date",
        ),
        pytest.param(
            {"start_date": utc(2024, 1, 5, 6, 30), "now": utc(2024, 1, 5, 7, 30)},
            [],
            id="newest-starts-before-start-date",
        ),
    ],
)
def test_due_intervals_without_catchup(
    kwargs: dict[str, object], expected: list[DataInterval]
) -> None:
    args: dict[str, object] = {"end_date": None, "last_end": None, **kwargs}
    assert due_intervals(HOURLY, catchup=False, **args) == expected  # type: ignore[arg-type]


def test_due_intervals_without_catchup_for_a_sparse_cron_and_a_rate() -> None:
    yearly = parse_schedule("0 0 29 2 *")
    assert due_intervals(
        yearly,
        start_date=utc(2000, 1, 1),
        end_date=None,
        last_end=None,
        now=utc(2026, 6, 1),
        catchup=False,
    ) == [DataInterval(utc(2020, 2, 29), utc(2024, 2, 29))]
    rate = parse_schedule("rate(90 minutes)", anchor=utc(2024, 1, 1, 0, 10))
    assert due_intervals(
        rate,
        start_date=utc(2024, 1, 1, 0, 10),
        end_date=None,
        last_end=None,
        now=utc(2024, 1, 1, 6),
        catchup=False,
    ) == [DataInterval(utc(2024, 1, 1, 3, 10), utc(2024, 1, 1, 4, 40))]


def test_due_intervals_rejects_a_non_positive_limit() -> None:
    with pytest.raises(ScheduleError, match="limit must be a positive integer, got 0"):
        due_intervals(
            HOURLY,
            start_date=utc(2024, 1, 1),
            end_date=None,
            last_end=None,
            now=utc(2024, 1, 2),
            catchup=True,
            limit=0,
        )


def test_due_intervals_catchup_in_a_time_zone() -> None:
    schedule = parse_schedule("0 9 * * MON-FRI", "America/New_York")
    intervals = due_intervals(
        schedule,
        start_date=utc(2025, 3, 6),  # Thursday
        end_date=None,
        last_end=None,
        now=utc(2025, 3, 11, 13),  # Tuesday 09:00 EDT
        catchup=True,
    )
    assert starts(intervals) == [utc(2025, 3, 6, 14), utc(2025, 3, 7, 14), utc(2025, 3, 10, 13)]
    assert intervals[-1].end == utc(2025, 3, 11, 13)


# --------------------------------------------------------------------------- backfill


@pytest.mark.parametrize(
    ("expression", "start", "end", "expected_starts"),
    [
        pytest.param(
            "@daily",
            utc(2024, 1, 1),
            utc(2024, 1, 3),
            [utc(2024, 1, 1), utc(2024, 1, 2), utc(2024, 1, 3)],
            id="both-bounds-inclusive",
        ),
        pytest.param(
            "@daily",
            utc(2024, 1, 1, 0, 0, 1),
            utc(2024, 1, 3, 23, 59),
            [utc(2024, 1, 2), utc(2024, 1, 3)],
            id="unaligned-bounds",
        ),
        pytest.param("@daily", utc(2024, 1, 1), utc(2024, 1, 1), [utc(2024, 1, 1)], id="one-day"),
        pytest.param("@daily", utc(2024, 1, 1, 10), utc(2024, 1, 1, 11), [], id="zero-intervals"),
        pytest.param(
            "rate(2 hours)",
            utc(2024, 1, 1, 1),
            utc(2024, 1, 1, 5),
            [utc(2024, 1, 1, 2), utc(2024, 1, 1, 4)],
            id="rate-from-anchor",
        ),
    ],
)
def test_backfill_intervals(
    expression: str, start: datetime, end: datetime, expected_starts: list[datetime]
) -> None:
    schedule = parse_schedule(expression, anchor=utc(2024, 1, 1))
    intervals = backfill_intervals(schedule, start=start, end=end)
    assert starts(intervals) == expected_starts
    assert_contiguous(intervals)
    if intervals:
        assert intervals[-1].end == schedule.next_fire_after(intervals[-1].start)


def test_backfill_start_after_end_is_an_error() -> None:
    message = "backfill start 2024-01-02T00:00:00+00:00 is after its end 2024-01-01T00:00:00+00:00"
    with pytest.raises(ScheduleError, match=re.escape(message)):
        backfill_intervals(HOURLY, start=utc(2024, 1, 2), end=utc(2024, 1, 1))


def test_backfill_limit() -> None:
    assert len(backfill_intervals(HOURLY, start=utc(2024, 1, 1), end=utc(2024, 1, 1, 4), limit=5))
    with pytest.raises(ScheduleError, match=r"covers more than 4 intervals of '@hourly'"):
        backfill_intervals(HOURLY, start=utc(2024, 1, 1), end=utc(2024, 1, 1, 4), limit=4)
    with pytest.raises(ScheduleError, match="more than 10000 intervals"):
        backfill_intervals(parse_schedule("* * * * *"), start=utc(2024, 1, 1), end=utc(2024, 2, 1))


# --------------------------------------------------------------------------- interval_for_fire


@pytest.mark.parametrize(
    ("schedule", "fire_time", "expected"),
    [
        pytest.param(
            HOURLY,
            utc(2024, 1, 1, 5),
            DataInterval(utc(2024, 1, 1, 4), utc(2024, 1, 1, 5)),
            id="exact-fire",
        ),
        pytest.param(
            HOURLY,
            utc(2024, 1, 1, 5, 0, 42),
            DataInterval(utc(2024, 1, 1, 4), utc(2024, 1, 1, 5)),
            id="late-tick-snaps-down",
        ),
        pytest.param(
            parse_schedule("@weekly"),
            datetime(2024, 1, 14),
            DataInterval(utc(2024, 1, 7), utc(2024, 1, 14)),
            id="naive-is-utc",
        ),
        pytest.param(
            parse_schedule("rate(45 minutes)", anchor=utc(2024, 1, 1)),
            utc(2024, 1, 1, 1, 30),
            DataInterval(utc(2024, 1, 1, 0, 45), utc(2024, 1, 1, 1, 30)),
            id="rate",
        ),
        pytest.param(
            parse_schedule("30 2 * * *", "Europe/Berlin"),
            utc(2025, 3, 30, 1),
            DataInterval(utc(2025, 3, 29, 1, 30), utc(2025, 3, 30, 1)),
            id="dst-shifted-fire",
        ),
        pytest.param(
            parse_schedule("0 * * * *", "America/New_York"),
            utc(2025, 11, 2, 6),
            DataInterval(utc(2025, 11, 2, 5), utc(2025, 11, 2, 6)),
            id="repeated-hour",
        ),
        pytest.param(
            parse_schedule("0 0 29 2 *"),
            utc(2028, 2, 29),
            DataInterval(utc(2024, 2, 29), utc(2028, 2, 29)),
            id="sparse",
        ),
    ],
)
def test_interval_for_fire(schedule: Schedule, fire_time: datetime, expected: DataInterval) -> None:
    assert interval_for_fire(schedule, fire_time) == expected


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        (
            "* * * *",
            "UTC",
            "invalid cron expression '* * * *': expected 5 fields "
            "(minute hour day-of-month month day-of-week), got 4",
        ),
        (
            "0 0 * * * *",
            "UTC",
            "invalid cron expression '0 0 * * * *': expected 5 fields "
            "(minute hour day-of-month month day-of-week), got 6",
        ),
        ("61 * * * *", "UTC", "invalid cron expression '61 * * * *': minute 61 out of range 0-59"),
        ("0 24 * * *", "UTC", "invalid cron expression '0 24 * * *': hour 24 out of range 0-23"),
        (
            "0 0 0 * *",
            "UTC",
            "invalid cron expression '0 0 0 * *': day-of-month 0 out of range 1-31",
        ),
        ("0 0 * 13 *", "UTC", "invalid cron expression '0 0 * 13 *': month 13 out of range 1-12"),
        (
            "0 0 * * 8",
            "UTC",
            "invalid cron expression '0 0 * * 8': day-of-week 8 out of range 0-7",
        ),
        (
            "*/0 * * * *",
            "UTC",
            "invalid cron expression '*/0 * * * *': minute step '0' must be a positive integer",
        ),
        (
            "0 */x * * *",
            "UTC",
            "invalid cron expression '0 */x * * *': hour step 'x' must be a positive integer",
        ),
        (
            "0 0 * * FUNDAY",
            "UTC",
            "invalid cron expression '0 0 * * FUNDAY': "
            "unknown day-of-week name 'FUNDAY' (expected SUN-SAT)",
        ),
        (
            "0 0 * MON *",
            "UTC",
            "invalid cron expression '0 0 * MON *': unknown month name 'MON' (expected JAN-DEC)",
        ),
        (
            "0 0 L * *",
            "UTC",
            "invalid cron expression '0 0 L * *': day-of-month value 'L' is not a number",
        ),
        (
            "30-10 * * * *",
            "UTC",
            "invalid cron expression '30-10 * * * *': "
            "minute range '30-10' is reversed (start after end)",
        ),
        (
            "0,,5 * * * *",
            "UTC",
            "invalid cron expression '0,,5 * * * *': minute has an empty list item",
        ),
        (
            "0 0 31 APR,6 *",
            "UTC",
            "invalid cron expression '0 0 31 APR,6 *': "
            "day-of-month '31' never occurs in month 'APR,6'",
        ),
        (
            "@once",
            "UTC",
            "unknown schedule preset '@once': expected one of "
            "@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually",
        ),
        ("", "UTC", "empty schedule expression: expected cron, a preset or rate(...)"),
        ("rate(0 minutes)", "UTC", "rate(0 minutes): the value must be a positive integer"),
        ("rate(-5 minutes)", "UTC", "rate(-5 minutes): the value must be a positive integer"),
        ("rate(1.5 hours)", "UTC", "rate(1.5 hours): the value must be a positive integer"),
        (
            "rate(1 minutes)",
            "UTC",
            "rate(1 minutes): use the singular unit 'minute' when the value is 1",
        ),
        (
            "rate(5 day)",
            "UTC",
            "rate(5 day): use the plural unit 'days' when the value is greater than 1",
        ),
        (
            "rate(2 weeks)",
            "UTC",
            "rate(2 weeks): unknown unit 'weeks'; expected minute(s), hour(s) or day(s)",
        ),
        (
            "rate(5)",
            "UTC",
            "rate(5): expected rate(<value> <unit>), e.g. rate(5 minutes)",
        ),
        (
            "rate 5 minutes",
            "UTC",
            "rate 5 minutes: expected rate(<value> <unit>), e.g. rate(5 minutes)",
        ),
        ("@daily", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("@daily", "", "unknown time zone ''"),
        ("@daily", "../../etc/passwd", "unknown time zone '../../etc/passwd'"),
    ],
)
def test_errors_say_what_is_wrong(expression: str, timezone: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=f"^{re.escape(message)}$"):
        parse_schedule(expression, timezone)


def test_rate_singular_unit_with_one_is_accepted() -> None:
    assert parse_schedule("rate(1 minute)").kind == "rate"


def test_schedule_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        validate_timezone("Nowhere/Land")


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Europe/Berlin", "Asia/Kolkata"])
def test_validate_timezone_accepts_iana_names(name: str) -> None:
    validate_timezone(name)
    parse_schedule("@daily", name)


# --------------------------------------------------------------------------- properties

_CRON_PARTS = (
    st.sampled_from(["0", "15", "*/15", "0,30", "5-50/15", "59"]),
    st.sampled_from(["*", "0", "2", "1-3", "*/6", "0,12", "9-17", "23"]),
    st.sampled_from(["*", "*", "1", "15", "1,15", "*/10", "28-31"]),
    st.sampled_from(["*", "*", "JAN", "3,10", "*/3", "11"]),
    st.sampled_from(["*", "*", "MON", "MON-FRI", "0,6", "SUN"]),
)
_ZONES = st.sampled_from(
    ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.tuples(*_CRON_PARTS),
    zone=_ZONES,
    start=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    days=st.integers(min_value=1, max_value=40),
)
def test_cron_intervals_are_contiguous_and_increasing(
    parts: tuple[str, ...], zone: str, start: datetime, days: int
) -> None:
    schedule = parse_schedule(" ".join(parts), zone)
    lower, upper = start.replace(tzinfo=UTC), start.replace(tzinfo=UTC) + timedelta(days=days)
    intervals = schedule.intervals_between(lower, upper, limit=400)
    for earlier, later in itertools.pairwise(intervals):
        assert earlier.end == later.start
    for interval in intervals:
        assert lower <= interval.start < interval.end <= upper
    # The helpers agree with the forward iteration, wherever they start from.
    for interval in intervals[:3] + intervals[-3:]:
        assert schedule.next_fire_after(interval.start) == interval.end
        assert interval_for_fire(schedule, interval.end) == interval
