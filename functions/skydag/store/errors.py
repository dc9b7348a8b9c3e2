"""Typed store errors. A lost race is normal: the error carries the current item.

The error classes are part of the store's ports (``skydag.ports.store``); they are
re-exported here for the code that imports them from the store."""

from __future__ import annotations

from pynamodb.exceptions import PynamoDBException

from skydag.ports.store import ConflictError, NotFound, StoreError


def is_condition_failure(error: PynamoDBException) -> bool:
    return error.cause_response_code in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    )


__all__ = ["ConflictError", "NotFound", "StoreError", "is_condition_failure"]
