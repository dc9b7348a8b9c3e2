"""The meter (benchmarks/metering.py) prices what the handlers' calls cost on AWS: a smoke
of its DynamoDB units on the local cloud, for the calls the cost model alone cannot see
(a transaction's items, read before and after the call)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run_benchmarks  # noqa: E402
from metering import CostMeter  # noqa: E402

CAUSE = ("Scheduler", "a test")


@pytest.fixture(scope="module")
def metered() -> Iterator[tuple[Any, CostMeter]]:
    with run_benchmarks.metered_cloud() as (cloud, _repos, meter):
        yield cloud, meter


def _key(meter: CostMeter, table: str, value: str) -> dict[str, Any]:
    return {name: {"S": value} for name in meter._backend_table(table).table_key_attrs}


def _units(meter: CostMeter) -> dict[tuple[str, str, str], float]:
    return {
        (meter_name, labels[2], labels[3]): quantity
        for (meter_name, labels), quantity in meter.usage.lines.items()
        if labels[:2] == CAUSE
    }


def _check_then_update(
    client: Any, meter: CostMeter, runs: str, dags: str, expected_state: str
) -> None:
    """One transaction: check the run is at ``expected_state``, add one to the DAG's item."""
    client.transact_write_items(
        TransactItems=[
            {
                "ConditionCheck": {
                    "TableName": runs,
                    "Key": _key(meter, runs, "r"),
                    "ConditionExpression": "#s = :s",
                    "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {":s": {"S": expected_state}},
                }
            },
            {
                "Update": {
                    "TableName": dags,
                    "Key": _key(meter, dags, "d"),
                    "UpdateExpression": "SET n = n + :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
        ]
    )


def test_a_transaction_is_charged_twice_per_item_and_its_condition_check_as_a_read(
    metered: tuple[Any, CostMeter],
) -> None:
    cloud, meter = metered
    client = boto3.client("dynamodb", region_name=cloud.region)
    runs, dags = cloud.settings.tables.runs, cloud.settings.tables.dags
    client.put_item(TableName=runs, Item={**_key(meter, runs, "r"), "state": {"S": "success"}})
    client.put_item(TableName=dags, Item={**_key(meter, dags, "d"), "n": {"N": "1"}})
    meter.reset()
    with meter.charged_to(*CAUSE):
        _check_then_update(client, meter, runs, dags, "success")
    assert _units(meter) == {
        ("dynamodb.rru", "TransactWriteItems", "runs"): 2.0,
        ("dynamodb.wru", "TransactWriteItems", "dags"): 2.0,
    }
    assert not meter.unpriced

    meter.reset()
    with meter.charged_to(*CAUSE), pytest.raises(client.exceptions.TransactionCanceledException):
        _check_then_update(client, meter, runs, dags, "running")
    assert _units(meter) == {
        ("dynamodb.rru", "TransactWriteItems", "runs"): 2.0,
        ("dynamodb.wru", "TransactWriteItems failed condition", "dags"): 2.0,
    }
