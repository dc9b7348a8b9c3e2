"""Concurrent invocations in the local cloud, as Lambda runs them.

On AWS, a function runs as many invocations at once as its event sources ask for, each
in its own execution environment (a container: its own module globals, its own warm
services), and DynamoDB applies each request atomically. Here, with
``LocalCloudOptions(concurrency=N)`` and N > 1:

- ``HandlerPool``: a function's execution environments. The first is the handler module
  as imported; each other one is a private copy of the handler module and of
  ``skydag.handlers._runtime`` (its own logger, metric set and
  per-invocation counts), loaded once when the pool is made. An invocation takes a free
  environment for its whole run, as Lambda gives one invocation at a time to a container.
  The services the runtime builds (repositories, target adapters, clients: no state of
  an invocation, and botocore clients are thread-safe) stay shared, as the four
  functions share them here anyway: building them per environment rebinds the store's
  models, and every rebind makes every environment open new clients;
- ``atomic_dynamodb``: moto's server answers each request on its own thread and its
  DynamoDB backend takes no lock, so two conditional writes of one item could both pass
  their condition. The local cloud serializes moto's DynamoDB and DynamoDB Streams
  requests: each is atomic, as on AWS (``tests/integration/localcloud`` checks it);
- ``quiet_output``: what handlers print (Powertools' EMF metric documents) is dropped for
  the threads that run invocations only: ``contextlib.redirect_stdout`` and
  ``warnings.catch_warnings`` swap process-wide state and cannot be nested across threads.

With N = 1 (the default: ``skydag dev run`` and ``dev up``), nothing of this runs
concurrently: one environment per function, invocations on the loop's own thread.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TextIO

Handler = Callable[[dict[str, Any], Any], Any]

RUNTIME_MODULE = "skydag.handlers._runtime"
HANDLERS_PACKAGE = "skydag.handlers"
# Loading environments swaps ``skydag.handlers._runtime`` for a moment: one at a time.
_loading = threading.Lock()


class HandlerPool:
    """A function's execution environments (see the module docstring); callable as its
    handler. ``size`` environments; an invocation waits while all are busy."""

    def __init__(self, module_name: str, attribute: str, size: int = 1) -> None:
        self.module_name = module_name
        self.attribute = attribute
        self._lock = threading.Lock()
        self._free: list[Handler] = [_handler_of(importlib.import_module(module_name), attribute)]
        self._copies: list[str] = []
        for index in range(1, max(1, size)):
            self._free.append(self._copy(index))
        self.size = len(self._free)
        self._available = threading.Semaphore(self.size)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self._available.acquire()
        with self._lock:
            handler = self._free.pop()
        try:
            return handler(event, context)
        finally:
            with self._lock:
                self._free.append(handler)
            self._available.release()

    def close(self) -> None:
        """Forget the copies (they are registered in ``sys.modules`` while in use)."""
        for name in self._copies:
            sys.modules.pop(name, None)
        self._copies.clear()

    def _copy(self, index: int) -> Handler:
        suffix = f"__env{index}"
        with _loading:
            package = importlib.import_module(HANDLERS_PACKAGE)
            original = importlib.import_module(RUNTIME_MODULE)
            runtime = _load_copy(RUNTIME_MODULE, RUNTIME_MODULE + suffix)
            _private_metrics(runtime)
            runtime._runtime = original._runtime  # type: ignore[attr-defined]  # shared: see above
            self._copies.append(runtime.__name__)
            saved = package.__dict__.get("_runtime")
            sys.modules[RUNTIME_MODULE] = runtime
            package._runtime = runtime  # type: ignore[attr-defined]
            try:
                module = _load_copy(self.module_name, self.module_name + suffix)
            finally:
                sys.modules[RUNTIME_MODULE] = original
                package._runtime = saved if saved is not None else original  # type: ignore[attr-defined]
            self._copies.append(module.__name__)
        return _handler_of(module, self.attribute)


def _handler_of(module: ModuleType, attribute: str) -> Handler:
    handler: Handler = getattr(module, attribute)
    return handler


def _load_copy(name: str, alias: str) -> ModuleType:
    """A fresh module from ``name``'s source, registered as ``alias``."""
    found = importlib.util.find_spec(name)
    if found is None or found.origin is None:
        raise ImportError(f"cannot copy {name}: no source")
    spec = importlib.util.spec_from_file_location(alias, found.origin)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot copy {name} from {found.origin}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(alias, None)
        raise
    return module


def _private_metrics(runtime: ModuleType) -> None:
    """Powertools' ``Metrics`` keeps its metric set at class level (one per process, as
    one per container on AWS): give this environment's its own."""
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
        AmazonCloudWatchEMFProvider,
    )

    metrics = runtime.metrics
    metrics.metric_set = {}
    metrics.dimension_set = {}
    metrics.metadata_set = {}
    metrics.provider = AmazonCloudWatchEMFProvider(
        namespace=runtime.NAMESPACE,
        metric_set=metrics.metric_set,
        dimension_set=metrics.dimension_set,
        metadata_set=metrics.metadata_set,
        default_dimensions={},
    )


# --------------------------------------------------------------------------- DynamoDB


class MotoActivity:
    """How many requests that may change what the event sources read moto answered: a
    DynamoDB write (a new stream record) and an SQS send or visibility change (a message
    to receive). The sources skip their GetRecords and ReceiveMessage while these stand
    still (``sources``), and still look now and then (a visibility timeout running out
    changes nothing here)."""

    SQS_CHANGES = frozenset(
        {"SendMessage", "SendMessageBatch", "ChangeMessageVisibility"}
        | {"ChangeMessageVisibilityBatch"}
    )
    DYNAMODB_READS = frozenset(
        {"GetItem", "BatchGetItem", "Query", "Scan", "DescribeTable", "ListTables"}
        | {"DescribeTimeToLive", "ListTagsOfResource", "DescribeContinuousBackups"}
    )

    def __init__(self) -> None:
        self.dynamodb_writes = 0
        self.sqs_changes = 0

    def dynamodb(self, action: str) -> None:
        if action not in self.DYNAMODB_READS:
            self.dynamodb_writes += 1  # under the DynamoDB lock

    def sqs(self, action: str) -> None:
        if action in self.SQS_CHANGES:
            self.sqs_changes += 1  # a lost increment only delays a receive: GIL-atomic enough


@contextmanager
def atomic_dynamodb(activity: MotoActivity | None = None) -> Iterator[MotoActivity]:
    """Serialize moto's DynamoDB and DynamoDB Streams requests (see the module
    docstring), and count in ``activity`` the requests that may change what the event
    sources read."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
    from moto.sqs.responses import SQSResponse

    seen = activity or MotoActivity()
    lock = threading.RLock()
    saved: list[tuple[type, Any]] = []

    def serialized(original: Any) -> Any:
        def call_action(self: Any) -> Any:
            with lock:
                response = original(self)
                seen.dynamodb(self._get_action())
                return response

        return call_action

    def serialized_reads(original: Any) -> Any:
        def call_action(self: Any) -> Any:
            with lock:
                return original(self)

        return call_action

    def counted(original: Any) -> Any:
        def call_action(self: Any) -> Any:
            response = original(self)
            seen.sqs(self._get_action())
            return response

        return call_action

    for handler_class, wrap in (
        (DynamoHandler, serialized),
        (DynamoDBStreamsHandler, serialized_reads),
        (SQSResponse, counted),
    ):
        saved.append((handler_class, handler_class.__dict__.get("call_action")))
        setattr(handler_class, "call_action", wrap(handler_class.call_action))  # noqa: B010
    try:
        yield seen
    finally:
        for handler_class, own in reversed(saved):
            if own is None:
                delattr(handler_class, "call_action")
            else:
                setattr(handler_class, "call_action", own)  # noqa: B010


# --------------------------------------------------------------------------- output


class _QuietThreads(io.TextIOBase):
    """``sys.stdout`` while the local cloud runs: what the threads running invocations
    print is dropped, everything else goes where it went."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self.quiet = threading.local()

    def write(self, text: str) -> int:
        if getattr(self.quiet, "on", False):
            return len(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.target, "encoding", "utf-8"))


class _Installed:
    router: _QuietThreads | None = None


@contextmanager
def quiet_output() -> Iterator[None]:
    """Install the thread-aware stdout and ignore Powertools' "No application metrics"
    warning, for as long as the local cloud runs."""
    previous = sys.stdout
    router = _QuietThreads(previous)
    sys.stdout = router
    saved, _Installed.router = _Installed.router, router
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No application metrics to publish")
            yield
    finally:
        _Installed.router = saved
        if sys.stdout is router:
            sys.stdout = previous


def quiet_threads_installed() -> bool:
    return _Installed.router is not None


@contextmanager
def quiet_thread() -> Iterator[None]:
    """Drop what this thread prints inside (when ``quiet_output`` is installed)."""
    router = _Installed.router
    if router is None:
        yield
        return
    before = getattr(router.quiet, "on", False)
    router.quiet.on = True
    try:
        yield
    finally:
        router.quiet.on = before
