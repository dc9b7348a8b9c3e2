"""Partial batch responses (skydag.handlers._batch): the records that raised are named as
each event source retries them, and one bad record stops no other."""

from __future__ import annotations

from typing import Any

from skydag.handlers._batch import process_batch, sqs_message_id, stream_sequence_number


def _sqs(*ids: str) -> dict[str, Any]:
    return {"Records": [{"messageId": i, "body": i} for i in ids]}


def _stream(*sequences: str) -> dict[str, Any]:
    return {
        "Records": [{"eventName": "MODIFY", "dynamodb": {"SequenceNumber": s}} for s in sequences]
    }


def test_sqs_failures_are_named_by_message_id_and_the_rest_still_run() -> None:
    seen: list[str] = []

    def handle(record: Any) -> None:
        seen.append(record["body"])
        if record["body"] in ("b", "d"):
            raise RuntimeError("throttled")

    response = process_batch(_sqs("a", "b", "c", "d"), handle, sqs_message_id)
    assert seen == ["a", "b", "c", "d"]
    assert response == {"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "d"}]}


def test_stream_failures_are_named_by_sequence_number() -> None:
    def handle(record: Any) -> None:
        if record["dynamodb"]["SequenceNumber"] == "200":
            raise RuntimeError("conflict")

    response = process_batch(_stream("100", "200", "300"), handle, stream_sequence_number)
    assert response == {"batchItemFailures": [{"itemIdentifier": "200"}]}


def test_a_batch_that_all_succeeds_reports_no_failure() -> None:
    assert process_batch(_sqs("a", "b"), lambda record: None, sqs_message_id) == {
        "batchItemFailures": []
    }


def test_an_event_without_records_or_with_a_non_object_record_fails_nothing() -> None:
    handled: list[Any] = []
    for event in ({}, {"Records": None}, {"Records": "x"}, {"Records": [42, "x", None]}):
        assert process_batch(event, handled.append, sqs_message_id) == {"batchItemFailures": []}
    assert handled == []


def test_a_record_without_an_identifier_is_named_empty_rather_than_lost() -> None:
    def fail(record: Any) -> None:
        raise RuntimeError("boom")

    assert process_batch({"Records": [{"body": "x"}]}, fail, sqs_message_id) == {
        "batchItemFailures": [{"itemIdentifier": ""}]
    }
    assert stream_sequence_number({"dynamodb": "not an object"}) == ""
