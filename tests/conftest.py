"""Shared fixtures: fake AWS credentials, moto in-process, the tables and the embedded stack."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.loaders
import botocore.session
import pytest

from skydag.dev.embedded import EmbeddedSkydag, embedded_aws
from skydag.ports.store import Store
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.store.models import create_tables
from skydag.store.repositories import Repositories

TEST_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto's fake credentials
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


@pytest.fixture(scope="session", autouse=True)
def _test_env() -> Iterator[None]:
    """Fake credentials for the whole session: nothing can reach a real account."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TEST_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        # Every botocore session re-reads the service JSON (PynamoDB opens one per model and
        # each test binds the models afresh): share one loader, it only caches static data.
        patch.setattr(
            botocore.session, "create_loader", functools.cache(botocore.loaders.create_loader)
        )
        yield


@pytest.fixture
def aws() -> Iterator[Settings]:
    """A fresh moto account with skydag's tables (streams and TTL included)."""
    with embedded_aws():
        settings = Settings()
        create_tables(settings)
        yield settings


@pytest.fixture
def repos(aws: Settings) -> Repositories:
    return Repositories()


@pytest.fixture
def embedded(aws: Settings, tmp_path: Path) -> Iterator[EmbeddedSkydag]:
    env = EmbeddedSkydag(aws, log_dir=tmp_path)
    try:
        yield env
    finally:
        env.close()


def load_dag(repos: Store, spec_dict: dict[str, Any]) -> DagSpec:
    """Validate a DAG and store it as a new current version."""
    spec = DagSpec.model_validate(spec_dict)
    repos.dags.save_version(spec, source="test", sha256=None, now=datetime.now(UTC))
    return spec


@pytest.fixture
def dag_loader(repos: Repositories) -> Callable[[dict[str, Any]], DagSpec]:
    """``load_dag`` bound to this test's repositories (a fixture, so no conftest import)."""
    return lambda spec_dict: load_dag(repos, spec_dict)
