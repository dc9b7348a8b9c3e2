"""`skydag info` answers "is skydag there?": exit 0 only when the endpoint answers and the
bucket, the bus and every table exist; otherwise one line naming what and where, soon."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import boto3
import pytest
from cli_support import REGION, Result, Skydag, clear_location_variables

from skydag.cli import remote
from skydag.cli.main import main
from skydag.dev.server import moto_server
from skydag.settings import Settings, TableNames

TABLES = TableNames()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return Result(code, out, err)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server holding skydag's default bucket, bus and tables (as `dev up` makes
    them); yields its endpoint URL."""
    clear_location_variables(monkeypatch)
    with moto_server() as url:
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=url)
        s3.create_bucket(Bucket=Settings().dag_bucket)
        events = boto3.client("events", region_name=REGION, endpoint_url=url)
        events.create_event_bus(Name=Settings().event_bus)
        dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=url)
        for table in TABLES.model_dump().values():
            dynamodb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        yield url


def test_nothing_listening_is_one_line_and_quick(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_location_variables(monkeypatch)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    result = _run(capsys, "info", "--endpoint-url", endpoint)
    assert time.monotonic() - started < 10
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        f"skydag info: error: nothing answers at {endpoint} (connection refused); "
        "start it with: skydag dev up\n"
    )


def test_an_endpoint_that_never_answers_fails_after_the_read_timeout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_location_variables(monkeypatch)
    monkeypatch.setitem(remote.FAIL_FAST_CONFIG, "read_timeout", 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections complete in the backlog; nothing ever reads them
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = _run(capsys, "info", "--endpoint-url", endpoint)
        elapsed = time.monotonic() - started
    assert elapsed < 4  # one attempt, not botocore's retries
    assert result.code == 1
    assert result.err == (
        f"skydag info: error: nothing answers at {endpoint} (connected, but no answer in "
        "time); start it with: skydag dev up\n"
    )


def test_nothing_listening_also_when_a_stack_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_location_variables(monkeypatch)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    result = _run(capsys, "info", "--output", "json", "--endpoint-url", endpoint, "--stack", "S")
    assert result.code == 1
    assert result.out == ""
    assert result.err.splitlines() == [
        f"skydag info: error: nothing answers at {endpoint} (connection refused); "
        "start it with: skydag dev up"
    ]


def test_a_complete_skydag_at_the_endpoint_is_described(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _run(capsys, "info", "--output", "json", "--endpoint-url", server)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "region": REGION,
        "endpoint_url": server,
        "dag_bucket": "skydag-dags",
        "dag_prefix": "dags/",
        "event_bus": "skydag",
        "tables": TABLES.model_dump(),
    }
    text = _run(capsys, "info", "--endpoint-url", server)
    assert text.code == 0, text.err
    assert f"endpoint {server}" in text.out


def test_a_missing_table_at_the_endpoint_is_named(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("dynamodb", region_name=REGION, endpoint_url=server).delete_table(
        TableName=TABLES.runs
    )
    result = _run(capsys, "info", "--output", "json", "--endpoint-url", server)
    assert result.code == 1
    assert result.out == ""
    assert result.err == (f"skydag info: error: table {TABLES.runs} not found at {server}\n")


def test_every_missing_resource_is_named_in_one_line(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3", region_name=REGION, endpoint_url=server).delete_bucket(Bucket="skydag-dags")
    boto3.client("events", region_name=REGION, endpoint_url=server).delete_event_bus(Name="skydag")
    result = _run(capsys, "info", "--endpoint-url", server)
    assert result.code == 1
    assert result.err == (
        f"skydag info: error: bucket skydag-dags, event bus skydag not found at {server}\n"
    )


def test_names_from_the_environment_say_so(skydag: Skydag, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYDAG_DAGS_TABLE", "no-such-dags")
    result = skydag.run("info")
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        "skydag info: error: table no-such-dags not found in us-east-1 "
        "(names from environment (SKYDAG_* variables))\n"
    )
