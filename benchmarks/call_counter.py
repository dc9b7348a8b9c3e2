"""Counting and timing every AWS call a benchmark makes (boto3's and PynamoDB's clients)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import botocore.session

_STARTED = "skydag_benchmark_started"


class CallCounter:
    """Counts and times API calls of every botocore client while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        if self.active:
            self.calls[_operation(model)] += 1
            context[_STARTED] = time.perf_counter()

    def after_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        started = context.pop(_STARTED, None)
        if started is not None:
            self.seconds[_operation(model)] += time.perf_counter() - started

    @contextmanager
    def counting(self) -> Iterator[None]:
        self.calls.clear()
        self.seconds.clear()
        self.active = True
        try:
            yield
        finally:
            self.active = False


def _operation(model: Any) -> str:
    return f"{model.service_model.service_name}.{model.name}"


@contextmanager
def hook_every_client(counter: CallCounter) -> Iterator[None]:
    """Register the counter on each client botocore creates (boto3's and PynamoDB's)."""
    original: Callable[..., Any] = botocore.session.Session.create_client

    def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(session, *args, **kwargs)
        client.meta.events.register("before-call.*.*", counter.before_call)
        client.meta.events.register("after-call.*.*", counter.after_call)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    try:
        yield
    finally:
        botocore.session.Session.create_client = original  # type: ignore[method-assign]
