"""Shared pieces for the AWS target tests: moto, dispatch requests, canonical events, and
clients that record what was sent or answer with an AWS error."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from skydag.targets.base import DispatchRequest, JobRef

ROOT = Path(__file__).resolve().parents[3]
EVENTS = ROOT / "events" / "aws"
# The token every canonical event in events/aws carries (in its job name or payload).
CANONICAL_TOKEN = "9f86d081884c7d659a2feaa0c55ad015"
ACCOUNT = "123456789012"
REGION = "us-east-1"


@pytest.fixture
def mocked_aws() -> Iterator[None]:
    """A fresh moto account. Batch and Lambda run without Docker: Batch jobs end at once
    (SUCCEEDED, or FAILED with MOTO_SIMPLE_BATCH_FAIL_AFTER=0)."""
    with mock_aws(config={"batch": {"use_docker": False}, "lambda": {"use_docker": False}}):
        yield


def _client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


def token_for(run_id: str, task_id: str, try_number: int) -> str:
    """Deterministic per try, like the scheduler's dispatch token."""
    return hashlib.sha256(f"etl/{run_id}/{task_id}/{try_number}".encode()).hexdigest()[:32]


def _make_request(
    kind: str,
    target: dict[str, Any],
    *,
    run_id: str = "manual__2026-11-22T00:00:00+00:00",
    task_id: str = "extract",
    try_number: int = 1,
    timeout: timedelta | None = None,
) -> DispatchRequest:
    return DispatchRequest(
        dag_id="etl",
        run_id=run_id,
        task_id=task_id,
        try_number=try_number,
        token=token_for(run_id, task_id, try_number),
        kind=kind,
        target=target,
        timeout=timeout,
        environment={
            "SKYDAG_DAG": "etl",
            "SKYDAG_RUN": run_id,
            "SKYDAG_TASK": task_id,
            "SKYDAG_TRY": str(try_number),
        },
    )


def _job_ref(request: DispatchRequest, job_id: str | None) -> JobRef:
    """The scheduler's handle on the try ``request`` dispatched (job id None: not recorded)."""
    return JobRef(
        request.dag_id,
        request.run_id,
        request.task_id,
        request.try_number,
        job_id,
        request.token,
    )


def _load_event(name: str, *, token: str | None = None) -> dict[str, Any]:
    """A canonical event from events/aws, its token replaced by ``token`` when given."""
    text = (EVENTS / f"{name}.json").read_text(encoding="utf-8")
    if token is not None:
        text = text.replace(CANONICAL_TOKEN, token)
    event: dict[str, Any] = json.loads(text)
    return event


def _without(event: dict[str, Any], key: str) -> dict[str, Any]:
    """``event`` with ``detail[key]`` removed (a malformed event)."""
    broken = copy.deepcopy(event)
    del broken["detail"][key]
    return broken


class CallRecorder:
    """The parameters of every call a client makes, as sent (moto cannot show them all)."""

    def __init__(self, aws_client: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        aws_client.meta.events.register("provide-client-params", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, copy.deepcopy(params)))

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]


def _failing_client(
    service: str, operation: str, code: str, status: int, message: str = "slow down"
) -> tuple[Any, Stubber]:
    """A client whose first call (``operation``) fails with an AWS error."""
    aws_client = _client(service)
    stubber = Stubber(aws_client)
    stubber.add_client_error(
        operation, service_error_code=code, service_message=message, http_status_code=status
    )
    stubber.activate()
    return aws_client, stubber


# Helpers are fixtures (returning the function), so no test imports a conftest module.


@pytest.fixture
def aws_client() -> Callable[[str], Any]:
    return _client


@pytest.fixture
def make_request() -> Callable[..., DispatchRequest]:
    return _make_request


@pytest.fixture
def job_ref() -> Callable[[DispatchRequest, str | None], JobRef]:
    return _job_ref


@pytest.fixture
def load_event() -> Callable[..., dict[str, Any]]:
    return _load_event


@pytest.fixture
def without() -> Callable[[dict[str, Any], str], dict[str, Any]]:
    return _without


@pytest.fixture
def recorder() -> Callable[[Any], CallRecorder]:
    return CallRecorder


@pytest.fixture
def failing_client() -> Callable[..., tuple[Any, Stubber]]:
    return _failing_client
