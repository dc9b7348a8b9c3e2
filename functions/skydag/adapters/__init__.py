"""Adapters to AWS services that are not task targets: skydag's own events (EventBridge)
and time (EventBridge Scheduler: DAG schedules and one-shot timers).

boto3 is imported only when a client is built, so importing an adapter module is cheap.
"""

from __future__ import annotations

from typing import Any

from skydag.settings import Settings


def aws_client(service_name: str, settings: Settings) -> Any:
    """A boto3 client for ``settings``' region and endpoint (``dev up`` sets one).

    Standard retry mode: throttling and transient errors are retried with backoff inside
    the call, so the handlers only see errors that outlasted a few attempts.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        service_name,
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 4}),
    )


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None
