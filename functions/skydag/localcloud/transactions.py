"""DynamoDB transactions in the local cloud at the cost of the items they touch.

moto's ``TransactWriteItems`` backs up every table an operation names by deep-copying the
whole table, once per operation, before it writes, so that it can roll back. A
transaction then costs as much as the tables are big, times its operations: the
scheduler's transactions (a mapped instance's finish counted on its task, instances
created 100 at a time, a run slot released against its run) made a 500-item mapped
task quadratic here, and the copies were a quarter of the local cloud's CPU time.

``item_level_transactions`` swaps in a transaction with DynamoDB's own semantics and a
backup of only the touched items:

1. one operation per item (else ``ValidationException``), at most 100 operations;
2. every condition is judged against the items as they were before the transaction (no
   two operations touch one item, so this is what judging them in turn gives too); if
   any fails, nothing is written and ``TransactionCanceledException`` carries one reason
   per operation (``ALL_OLD`` items where asked);
3. the writes are applied in order; a write that fails midway (a bad update expression)
   restores the touched items and their stream, and its error is raised.

The local cloud serializes DynamoDB requests (``concurrency.atomic_dynamodb``), so the
transaction is atomic to every other request, as on AWS.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table

MAX_OPERATIONS = 100
_CONDITION_FAILED = "ConditionalCheckFailed"
_CONDITION_FAILED_MESSAGE = "The conditional request failed"


@dataclass
class _Operation:
    kind: str  # ConditionCheck, Put, Delete or Update
    request: dict[str, Any]
    table: Table
    key: dict[str, Any]


@dataclass
class _Backup:
    """One touched item as it was (None: absent), and its table's stream length."""

    table: Table
    hash_key: DynamoType
    range_key: DynamoType | None
    item: Item | None
    stream_length: int | None


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """``DynamoDBBackend.transact_write_items`` with item-level backups (module docstring)."""
    operations = _operations(self, transact_items)
    reasons = [_condition_failure(self, operation) for operation in operations]
    if any(reason is not None for reason in reasons):
        raise TransactionCanceledException([reason or (None, None, None) for reason in reasons])
    backups = [_backup(self, operation) for operation in operations]
    try:
        for operation in operations:
            _apply(self, operation)
    except Exception:
        for backup in reversed(backups):
            _restore(backup)
        raise


@contextmanager
def item_level_transactions() -> Iterator[None]:
    """Use ``transact_write_items`` above for moto's DynamoDB while the block runs."""
    original = DynamoDBBackend.transact_write_items
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    try:
        yield
    finally:
        DynamoDBBackend.transact_write_items = original  # type: ignore[method-assign]


def _operations(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> list[_Operation]:
    if len(transact_items) > MAX_OPERATIONS:
        raise TooManyTransactionsException()
    operations: list[_Operation] = []
    seen: set[tuple[str, str]] = set()
    for entry in transact_items:
        if len(entry) != 1:
            raise TransactWriteSingleOpException
        ((kind, request),) = entry.items()
        table = backend.get_table(request["TableName"])
        if kind == "Put":
            names = [table.hash_key_attr, *([table.range_key_attr] if table.range_key_attr else [])]
            key = {name: request["Item"][name] for name in names}
        else:
            key = request["Key"]
        identity = (table.name, json.dumps(key, sort_keys=True))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        operations.append(_Operation(kind, request, table, key))
    return operations


def _condition_failure(
    backend: DynamoDBBackend, operation: _Operation
) -> tuple[str, str, Any] | None:
    """Why the operation's condition fails on the item as it is, or None when it holds."""
    request = operation.request
    expression = request.get("ConditionExpression")
    if expression is None:
        return None
    current = backend.get_item(operation.table.name, operation.key)
    condition = get_filter_expression(
        expression,
        request.get("ExpressionAttributeNames"),
        request.get("ExpressionAttributeValues"),
    )
    if condition.expr(current):
        return None
    wants_old = request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
    old = current.to_json()["Attributes"] if wants_old and current is not None else None
    return (_CONDITION_FAILED, _CONDITION_FAILED_MESSAGE, old)


def _backup(backend: DynamoDBBackend, operation: _Operation) -> _Backup:
    table = operation.table
    hash_key, range_key = backend.get_keys_value(table, operation.key)
    current = table.get_item(hash_key, range_key)
    stream = table.stream_shard
    return _Backup(
        table,
        hash_key,
        range_key,
        copy.deepcopy(current),
        None if stream is None else len(stream.items),
    )


def _apply(backend: DynamoDBBackend, operation: _Operation) -> None:
    """The write, its condition already judged (so none is passed again)."""
    request, name = operation.request, operation.table.name
    names: dict[str, Any] = request.get("ExpressionAttributeNames") or {}
    values: dict[str, Any] = request.get("ExpressionAttributeValues") or {}
    if operation.kind == "Put":
        backend.put_item(name, request["Item"])
    elif operation.kind == "Delete":
        backend.delete_item(name, operation.key)
    elif operation.kind == "Update":
        backend.update_item(
            name,
            operation.key,
            update_expression=request["UpdateExpression"],
            expression_attribute_names=names,
            expression_attribute_values=values,
        )
    elif operation.kind != "ConditionCheck":
        raise ValueError(f"Unsupported transaction operation {operation.kind!r}")


def _restore(backup: _Backup) -> None:
    items: Any = backup.table.items
    if backup.range_key is not None:
        if backup.item is None:
            items[backup.hash_key].pop(backup.range_key, None)
        else:
            items[backup.hash_key][backup.range_key] = backup.item
    elif backup.item is None:
        items.pop(backup.hash_key, None)
    else:
        items[backup.hash_key] = backup.item
    stream = backup.table.stream_shard
    if stream is not None and backup.stream_length is not None:
        del stream.items[backup.stream_length :]


__all__ = ["MAX_OPERATIONS", "item_level_transactions", "transact_write_items"]
