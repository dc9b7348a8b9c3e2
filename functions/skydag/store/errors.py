"""Typed store errors. A lost race is normal: the error carries the current item."""

from __future__ import annotations

from typing import Generic, TypeVar

from pynamodb.exceptions import PynamoDBException

ItemT = TypeVar("ItemT")


class StoreError(Exception):
    pass


class ConflictError(StoreError, Generic[ItemT]):
    """A conditional write lost: the item was not in the expected state or version."""

    def __init__(self, message: str, current: ItemT | None) -> None:
        super().__init__(message)
        self.current = current


class NotFound(StoreError):
    pass


def is_condition_failure(error: PynamoDBException) -> bool:
    return error.cause_response_code in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    )
