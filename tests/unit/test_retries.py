"""Retry arithmetic: delay(try n) = min(retry_delay * backoff^(n-1), max_retry_delay)."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest

from skydag.engine.retries import has_tries_left, retry_delay
from skydag.spec.models import DagSpec, EffectivePolicy


def policy(
    *,
    retries: int = 3,
    delay: float = 30,
    backoff: float = 2.0,
    cap: float = 600,
    timeout: timedelta | None = None,
) -> EffectivePolicy:
    return EffectivePolicy(
        retries=retries,
        retry_delay=timedelta(seconds=delay),
        retry_backoff=backoff,
        max_retry_delay=timedelta(seconds=cap),
        timeout=timeout,
    )


def expected_delay(delay: float, backoff: float, cap: float, failed_try: int) -> timedelta:
    """The formula in exact arithmetic (no float overflow, no rounding on the way)."""
    exact = Fraction(delay) * Fraction(backoff) ** (failed_try - 1)
    return timedelta(seconds=float(min(exact, Fraction(cap))))


@pytest.mark.parametrize(
    ("delay", "backoff", "cap", "failed_try", "seconds"),
    [
        # constant backoff: every wait is the base delay
        (30, 1.0, 600, 1, 30),
        (30, 1.0, 600, 2, 30),
        (30, 1.0, 600, 50, 30),
        # doubling: 30, 60, 120, 240, 480, then the 600 cap
        (30, 2.0, 600, 1, 30),
        (30, 2.0, 600, 2, 60),
        (30, 2.0, 600, 3, 120),
        (30, 2.0, 600, 4, 240),
        (30, 2.0, 600, 5, 480),
        (30, 2.0, 600, 6, 600),
        (30, 2.0, 600, 7, 600),
        # non-integer factor: 10, 35, 122.5, 428.75, then capped
        (10, 3.5, 600, 1, 10),
        (10, 3.5, 600, 2, 35),
        (10, 3.5, 600, 3, 122.5),
        (10, 3.5, 600, 4, 428.75),
        (10, 3.5, 600, 5, 600),
        # the cap hit exactly: 75 * 2^3 == 600
        (75, 2.0, 600, 3, 300),
        (75, 2.0, 600, 4, 600),
        (75, 2.0, 600, 5, 600),
        # a base above the cap is capped from the first retry
        (900, 2.0, 600, 1, 600),
        (900, 1.0, 600, 1, 600),
        # a zero delay stays zero whatever the backoff and try
        (0, 2.0, 600, 1, 0),
        (0, 3.5, 600, 1000, 0),
        # a zero cap means no wait at all
        (30, 2.0, 0, 1, 0),
        (30, 2.0, 0, 5, 0),
        # huge try numbers do not overflow (2^999 and 3.5^999 would)
        (30, 2.0, 600, 1000, 600),
        (30, 3.5, 600, 1000, 600),
        (30, 10.0, 86400, 1000, 86400),
        (30, 1.0, 600, 1000, 30),
        # sub-second values
        (0.25, 2.0, 600, 3, 1),
    ],
)
def test_retry_delay_table(
    delay: float, backoff: float, cap: float, failed_try: int, seconds: float
) -> None:
    result = retry_delay(policy(delay=delay, backoff=backoff, cap=cap), failed_try)
    assert result == timedelta(seconds=seconds)
    assert result == expected_delay(delay, backoff, cap, failed_try)


@pytest.mark.parametrize("backoff", [1.0, 1.5, 2.0, 3.5, 10.0])
@pytest.mark.parametrize("delay", [1, 7, 30, 45.5])
def test_retry_delay_matches_formula_for_the_first_twenty_tries(
    backoff: float, delay: float
) -> None:
    cap = 3600.0
    p = policy(delay=delay, backoff=backoff, cap=cap)
    delays = [retry_delay(p, n) for n in range(1, 21)]
    for n, got in enumerate(delays, start=1):
        want = expected_delay(delay, backoff, cap, n)
        assert abs(got - want) <= timedelta(microseconds=1), (n, got, want)
    # Never shrinks, never exceeds the cap.
    assert delays == sorted(delays)
    assert max(delays) <= timedelta(seconds=cap)


def test_retry_delay_of_large_try_is_fast_and_capped() -> None:
    assert retry_delay(policy(delay=1, backoff=1.0, cap=10), 100_000) == timedelta(seconds=1)
    assert retry_delay(policy(delay=1, backoff=2.0, cap=10), 10**9) == timedelta(seconds=10)


def test_builtin_policy_delays() -> None:
    spec = DagSpec.model_validate({"dag": "d", "tasks": {"a": {"noop": {}}}})
    p = spec.effective_policy("a")
    assert [retry_delay(p, n).total_seconds() for n in range(1, 8)] == [
        30,
        60,
        120,
        240,
        480,
        600,
        600,
    ]


@pytest.mark.parametrize(
    ("retries", "try_number", "left"),
    [
        # retries: 0 -> one try in all
        (0, 0, True),
        (0, 1, False),
        (0, 2, False),
        # retries: 1 -> two tries
        (1, 1, True),
        (1, 2, False),
        (1, 3, False),
        # retries: 2 -> three tries
        (2, 1, True),
        (2, 2, True),
        (2, 3, False),
        (2, 4, False),
    ],
)
def test_has_tries_left(retries: int, try_number: int, left: bool) -> None:
    assert has_tries_left(policy(retries=retries), try_number) is left


@pytest.mark.parametrize("retries", [0, 1, 2, 5, 100])
def test_retries_n_means_n_plus_one_tries(retries: int) -> None:
    p = policy(retries=retries)
    tries = 1
    while has_tries_left(p, tries):
        tries += 1
    assert tries == retries + 1
