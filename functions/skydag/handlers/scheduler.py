"""The scheduler Lambda: EventBridge events, one per invocation or in SQS batches.

Two ways in (``skydag.wiring``), each event routed by ``skydag.service.router.route_event``:

- the services' job state changes and Lambda results: the rules invoke the function with
  the event itself, asynchronously. A failure is raised, so Lambda retries the event
  (twice) and then sends it to ``JobEventsDlq``. An event no such rule would deliver (a
  command or a signal invoked directly) is dropped: those come through the queue.
- user signals, skydag commands, schedule ticks and timers: the rules send them to the
  scheduler queue, read in batches. The response lists, in ``batchItemFailures``, only
  the messages that may succeed later, so SQS redelivers just those (and after
  maxReceiveCount moves them to the dead-letter queue: nothing is lost).

Either way:

- dropped (logged, counted as BadEvents, deleted from the queue): a body that is not a
  JSON object, an event over EventBridge's size or missing its envelope, an unknown or
  incomplete command, an unknown DAG, run or task — no retry can fix these and retrying
  would poison the queue (or spend Lambda's retries);
- retried: throttling and other AWS errors, a race still lost after the service's own
  re-decide loop (also counted as Conflicts), any unexpected error.

Every route is idempotent (conditional writes, deterministic run ids, dispatch tokens),
so a redelivered event changes nothing twice; no idempotency table is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from skydag.handlers import _runtime as runtime
from skydag.handlers._batch import (
    PartialItemFailureResponse,
    Record,
    process_batch,
    sqs_message_id,
)

runtime.cold_start("scheduler")
logger, metrics = runtime.logger, runtime.metrics

# SQS's own limit for a message body; the router then holds an event to EventBridge's 256 KB.
SQS_MAX_BODY_BYTES = 1024 * 1024


def _decode(record: Record) -> dict[str, Any]:
    """The EventBridge event in an SQS message body, or BadEvent saying what is wrong."""
    from skydag.limits import LimitError, loads_bounded
    from skydag.service.router import BadEvent

    where = f"SQS message {sqs_message_id(record)}"
    try:
        # Size and nesting are checked before the (recursive) decoder sees the body.
        event = loads_bounded(str(record.get("body") or ""), where, max_bytes=SQS_MAX_BODY_BYTES)
    except LimitError as error:
        raise BadEvent(str(error)) from None
    except (TypeError, ValueError) as error:
        raise BadEvent(f"{where}: body is not JSON ({error})") from None
    if not isinstance(event, dict):
        raise BadEvent(
            f"SQS message {sqs_message_id(record)}: body is a JSON {type(event).__name__}, "
            "not an EventBridge event"
        )
    return event


def _keys(event: Mapping[str, Any]) -> dict[str, Any]:
    """Log keys naming what the event is about (when it says)."""
    detail = event.get("detail")
    detail = detail if isinstance(detail, Mapping) else {}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    return {
        "event_id": text(event.get("id")),
        "source": text(event.get("source")),
        "detail_type": text(event.get("detail-type")),
        "dag": text(detail.get("dag")),
        "run": text(detail.get("run_id")),
        "task": text(detail.get("task")),
    }


def _route(event: dict[str, Any]) -> None:
    from skydag.service.router import route_event

    with runtime.log_keys(**_keys(event)):
        runtime.record_delay(runtime.event_time(event.get("time")))
        service = runtime.scheduler_service()
        try:
            result = route_event(service, event)
        finally:
            # Finishes whose writes leave no stream record: counted by their writer.
            for state, written in service.scheduler.take_unheard_outcomes().items():
                runtime.count_by("TaskOutcomes", "state", state, written)
        # An event that changed nothing (a duplicate, a state already recorded, a signal
        # nobody subscribes to) is most of what arrives: logged at DEBUG, it costs nothing.
        log = logger.info if result.actions else logger.debug
        log(
            "event handled",
            extra={"route": result.route, "actions": result.actions, "ignored": result.ignored},
        )


def _handle(record: Record) -> None:
    runtime.handle_record(
        lambda: _route(_decode(record)), what=f"SQS message {sqs_message_id(record)}"
    )


def _invoked_by_a_rule(event: Any) -> dict[str, Any]:
    """The event, if one of the rules that invoke the scheduler would deliver it."""
    from skydag import wiring
    from skydag.service.router import BadEvent

    if not isinstance(event, dict):
        raise BadEvent(f"invoked with a JSON {type(event).__name__}, not an EventBridge event")
    if not wiring.invokes_scheduler(event):
        keys = _keys(event)
        raise BadEvent(
            f"event {keys['event_id']!r} ({keys['source']!r}, {keys['detail_type']!r}): "
            "not a job state change; only those invoke the scheduler (commands and signals "
            "come through its queue)"
        )
    return event


def _handle_invoked(event: Any) -> None:
    what = f"event {_keys(event)['event_id']!r}" if isinstance(event, dict) else "invocation"
    runtime.handle_record(lambda: _route(_invoked_by_a_rule(event)), what=what)


def _is_sqs_batch(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get("Records"), list)


@logger.inject_lambda_context(clear_state=True)
@runtime.traced
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext
) -> PartialItemFailureResponse | None:
    # clear_state dropped the keys of the previous invocation, the handler's name too.
    runtime.start_invocation("scheduler")
    try:
        if _is_sqs_batch(event):
            runtime.count("EventsReceived", len(event["Records"]))
            return process_batch(event, _handle, sqs_message_id)
        # One event (Lambda's own Invocations metric counts it); raises what Lambda should
        # retry.
        _handle_invoked(event)
        return None
    finally:
        runtime.flush_dimensioned()
