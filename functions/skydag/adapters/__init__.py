"""Adapters to AWS services that are not task targets: skydag's own events (EventBridge)
and time (EventBridge Scheduler: DAG schedules and one-shot timers).

botocore is imported only when a client is built, so importing an adapter module is
cheap; boto3 is not needed at all (its import, s3transfer's and multiprocessing's with it,
was a tenth of a handler's cold start).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from skydag.settings import Settings

_session_lock = threading.Lock()


@functools.cache
def _botocore_session() -> Any:
    import botocore.session

    return botocore.session.get_session()


def botocore_session() -> Any:
    """One botocore session for every client the functions make: its service models and
    endpoint data are loaded once. Used under a lock (a session is not thread-safe while
    it loads; the local cloud runs handlers on threads)."""
    with _session_lock:
        return _botocore_session()


class SharedSession:
    """The functions' one botocore session, as a library that makes its own asks for one
    (PynamoDB: ``store.models.share_botocore_session``): clients made under the lock.
    Anything else is the session's own."""

    def create_client(self, *args: Any, **kwargs: Any) -> Any:
        session = botocore_session()
        with _session_lock:
            return session.create_client(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(botocore_session(), name)


def new_client(service_name: str, settings: Settings, *, max_attempts: int) -> Any:
    """A botocore client for ``settings``' region and endpoint (``dev up`` sets one), in
    standard retry mode: throttling and transient errors are retried with backoff inside
    the call (``max_attempts`` in all), so callers only see errors that outlasted them."""
    from botocore.config import Config

    session = botocore_session()
    with _session_lock:
        return session.create_client(
            service_name,
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": max_attempts}),
        )


def aws_client(service_name: str, settings: Settings) -> Any:
    """A client of the functions' own services (EventBridge, EventBridge Scheduler, S3)."""
    return new_client(service_name, settings, max_attempts=4)


class LazyClient:
    """A client made on its first call: a cold start pays for building it (tens of
    milliseconds each) only when its first event needs the service."""

    def __init__(self, service_name: str, settings: Settings) -> None:
        self._service_name = service_name
        self._settings = settings
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = aws_client(self._service_name, self._settings)
        return getattr(self._client, name)


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None
