"""Fixtures for the handler tests: the functions' environment, the handler modules
(cold-started with it) and the stack in moto (helpers: handler_support.py)."""

from __future__ import annotations

import types
from collections.abc import Iterator

import pytest
from handler_support import FUNCTION_ENV, LambdaContext, Stack

from skydag.settings import Settings


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture(autouse=True)
def function_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FUNCTION_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def handlers(function_env: None) -> types.SimpleNamespace:
    """The four handler modules (imported, i.e. cold-started, with the function env)."""
    from skydag.handlers import dag_loader, reconciler, scheduler, stream_processor

    return types.SimpleNamespace(
        dag_loader=dag_loader,
        scheduler=scheduler,
        stream_processor=stream_processor,
        reconciler=reconciler,
    )


@pytest.fixture
def stack(aws: Settings, handlers: types.SimpleNamespace) -> Iterator[Stack]:
    from skydag.handlers import _runtime
    from skydag.store.dag_files import bind_dag_files

    bind_dag_files(aws)
    _runtime.reset()  # services built in an earlier test talk to an earlier moto
    yield Stack(aws)
    _runtime.reset()
