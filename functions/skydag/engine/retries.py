"""Retry arithmetic: exponential backoff capped by a maximum delay."""

from __future__ import annotations

from datetime import timedelta

from skydag.spec.models import EffectivePolicy


def retry_delay(policy: EffectivePolicy, failed_try: int) -> timedelta:
    """The wait after try ``failed_try`` (1-based) failed: delay * backoff^(try-1), capped."""
    base = policy.retry_delay.total_seconds()
    cap = policy.max_retry_delay.total_seconds()
    if base <= 0:
        return timedelta(0)
    seconds = base
    # Multiply step by step so a large try number cannot overflow a float power.
    for _ in range(max(failed_try - 1, 0)):
        seconds *= policy.retry_backoff
        if seconds >= cap:
            return timedelta(seconds=cap)
    return timedelta(seconds=min(seconds, cap))


def has_tries_left(policy: EffectivePolicy, try_number: int) -> bool:
    """``retries: 2`` means three tries in all."""
    return try_number <= policy.retries
