"""The local cloud's fault-injection points: every delivery passes through them.

Two kinds of hook, both off by default:

- a ``Tap`` sees each delivery before it is made — an event a rule sends to its target, a
  message the queue hands to the scheduler, a stream record handed to the stream
  processor, an asynchronous invocation — and says what really happens to it: delivered
  now, later (a delay; two different delays reorder), twice (a duplicate) or never (a
  loss). ``Delivery`` names the channel and carries the payload; a tap returns the
  deliveries to make, each with its delay in seconds.
- a ``FaultPlan`` makes one handler invocation crash right after a chosen AWS call (the
  call itself happened): the crash is an ``InjectedCrash``, a ``BaseException`` so that
  no ``except Exception`` in the handler (the batch loop's included) can
  absorb it, exactly like a Lambda killed by a timeout or out of memory.

Nothing in the local cloud delivers except through ``Deliveries.offer``, and every
handler invocation goes through ``invoke`` with the plan of its function.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Delivery:
    """One thing about to be delivered.

    ``channel`` says where: ``rule:<rule id>`` (a rule's event on its way to its target),
    ``sqs:<queue>`` (a message handed to the queue's function), ``stream:<table>`` (a stream
    record), ``invoke:<function>`` (an asynchronous invocation's event).
    """

    channel: str
    payload: Any


class Tap(Protocol):
    def __call__(self, delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
        """The deliveries to make instead, each after a delay in seconds ([] drops it)."""
        ...


def deliver_as_is(delivery: Delivery) -> Sequence[tuple[float, Delivery]]:
    return [(0.0, delivery)]


class Deliveries:
    """Applies the tap to each delivery; holds delayed ones until they are due."""

    def __init__(self, tap: Tap | None = None, clock: Callable[[], float] = time.monotonic):
        self.tap: Tap = tap or deliver_as_is
        self._clock = clock
        self._held: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()

    def offer(self, delivery: Delivery) -> list[Delivery]:
        """What to deliver now for ``delivery`` (delayed parts are kept for ``due``)."""
        now_list: list[Delivery] = []
        for delay, planned in self.tap(delivery):
            if delay <= 0:
                now_list.append(planned)
            else:
                with self._lock:
                    heapq.heappush(self._held, (self._clock() + delay, next(self._order), planned))
        return now_list

    def due_for(self, channel: str) -> list[Delivery]:
        """Delayed deliveries of ``channel`` whose time has come, in time order."""
        now = self._clock()
        ready: list[Delivery] = []
        with self._lock:
            kept = []
            for item in sorted(self._held):
                if item[0] <= now and item[2].channel == channel:
                    ready.append(item[2])
                else:
                    kept.append(item)
            if ready:
                self._held = kept
                heapq.heapify(self._held)
        return ready

    def held(self) -> int:
        with self._lock:
            return len(self._held)


class InjectedCrash(BaseException):
    """The invocation died here (injected): nothing after this AWS call happened."""


@dataclass
class FaultPlan:
    """Crash the invocation right after its ``after_calls``-th AWS call that matches
    ``service``/``operation`` (None matches any), e.g. ``FaultPlan(1, "dynamodb",
    "UpdateItem")``: the first UpdateItem is written, then the function dies."""

    after_calls: int
    service: str | None = None
    operation: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def matches(self, service: str, operation: str) -> bool:
        return (self.service in (None, service)) and (self.operation in (None, operation))


# Which plan applies to the invocation running on this thread.
_active = threading.local()


class _CallCounter:
    """botocore's ``Endpoint.make_request`` (PynamoDB calls through it too), wrapped while
    at least one local cloud counts calls; restored when the last one stops."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.original: Any = None

    def make_request(self, endpoint: Any, operation_model: Any, request_dict: Any) -> Any:
        afters = _observers_before(operation_model, request_dict)
        response = self.original(endpoint, operation_model, request_dict)
        for after in afters:
            after(_parsed(response))
        watcher: CallWatcher | None = getattr(_active, "watcher", None)
        if watcher is not None:
            watcher(
                operation_model.service_model.endpoint_prefix,
                operation_model.name,
                _request_body(request_dict),
            )
        plan: FaultPlan | None = getattr(_active, "plan", None)
        if plan is not None:
            service = operation_model.service_model.endpoint_prefix
            name = operation_model.name
            plan.calls.append((service, name))
            matching = sum(1 for s, o in plan.calls if plan.matches(s, o))
            if plan.matches(service, name) and matching == plan.after_calls:
                _active.plan = None  # one crash per plan
                raise InjectedCrash(f"injected crash after {service}:{name} (call {matching})")
        return response


_counter = _CallCounter()


@contextmanager
def counting_calls() -> Iterator[None]:
    """Count the AWS calls of invocations that carry a fault plan, while active."""
    from botocore.endpoint import Endpoint

    with _counter.lock:
        if _counter.users == 0:
            _counter.original = Endpoint.make_request

            def make_request(self: Any, operation_model: Any, request_dict: Any) -> Any:
                return _counter.make_request(self, operation_model, request_dict)

            Endpoint.make_request = make_request
        _counter.users += 1
    try:
        yield
    finally:
        with _counter.lock:
            _counter.users -= 1
            if _counter.users == 0:
                Endpoint.make_request = _counter.original


CallWatcher = Callable[[str, str, Any], None]
"""(service, operation, the request's JSON body or None) -> None, after each AWS call an
invocation makes (tests record what the handlers asked of AWS, benchmarks count it)."""


def _request_body(request_dict: Any) -> Any:
    body = request_dict.get("body") if isinstance(request_dict, dict) else None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.startswith("{"):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return None


class CallObserver(Protocol):
    def __call__(self, service: str, operation: str, request: Any) -> Callable[[Any], None] | None:
        """Before an invocation's AWS call (the request's JSON body or None): what to call
        with its parsed response (an error's too), or None."""
        ...


_observers: list[CallObserver] = []


@contextmanager
def observing_calls(observer: CallObserver) -> Iterator[None]:
    """Show ``observer`` every AWS call a handler invocation makes, before and after it
    (the cost meter reads item sizes before a write and the response after it); calls the
    local cloud itself makes are not shown. Needs ``counting_calls`` active."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def _observers_before(operation_model: Any, request_dict: Any) -> list[Callable[[Any], None]]:
    if not _observers or not getattr(_active, "invoking", False):
        return []
    service = operation_model.service_model.endpoint_prefix
    body = _request_body(request_dict)
    afters = [observer(service, operation_model.name, body) for observer in list(_observers)]
    return [after for after in afters if after is not None]


def _parsed(response: Any) -> Any:
    """botocore's ``(http response, parsed)`` pair → the parsed dict."""
    if isinstance(response, tuple) and len(response) == 2:
        return response[1]
    return None


@contextmanager
def fault(plan: FaultPlan | None, watcher: CallWatcher | None = None) -> Iterator[None]:
    """Apply ``plan`` (and ``watcher``) to the AWS calls this thread makes inside."""
    _active.plan = plan
    _active.watcher = watcher
    _active.invoking = True
    try:
        yield
    finally:
        _active.plan = None
        _active.watcher = None
        _active.invoking = False


FaultPlanner = Callable[[str, Any], "FaultPlan | None"]
"""(function name, the invocation's event) -> the plan for that invocation, or None."""


def no_faults(function: str, event: Any) -> FaultPlan | None:
    return None
