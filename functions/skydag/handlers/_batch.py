"""Partial batch responses for the SQS and DynamoDB Streams event sources.

Each record of the batch is handled in turn; a record whose handler raises is named in
``batchItemFailures`` (SQS: its message id, redelivered alone; DynamoDB Streams: its
sequence number, from which Lambda delivers the shard again) and the records after it
are still handled, so one bad record delays no other. The record handlers log their own
failures (``_runtime.handle_record``).

This is what Powertools' batch utility does for these two sources, without its import:
with every event data class it pulls in, that is about 80 ms of each cold start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypedDict


class ItemFailure(TypedDict):
    itemIdentifier: str


class PartialItemFailureResponse(TypedDict):
    batchItemFailures: list[ItemFailure]


Record = Mapping[str, Any]


def sqs_message_id(record: Record) -> str:
    return str(record.get("messageId") or "")


def stream_sequence_number(record: Record) -> str:
    data = record.get("dynamodb")
    return str(data.get("SequenceNumber") or "") if isinstance(data, Mapping) else ""


def process_batch(
    event: Mapping[str, Any],
    handle: Callable[[Record], None],
    identify: Callable[[Record], str],
) -> PartialItemFailureResponse:
    """Handle every record of ``event``; the ones that raised, by ``identify``."""
    records = event.get("Records")
    failures: list[ItemFailure] = []
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, Mapping):
            continue  # no identifier to retry it by: nothing a redelivery could fix
        try:
            handle(record)
        except Exception:
            failures.append({"itemIdentifier": identify(record)})
    return {"batchItemFailures": failures}
