"""The stream processor Lambda: DynamoDB Streams of the runs and task-instances tables
(NEW_AND_OLD_IMAGES) → ``on_run_changed`` / ``on_task_changed``.

A change is what moves a run on: a run that starts gets its root tasks evaluated, a task
that becomes queued is dispatched, a finished task tells its downstream tasks and its run.

The response names failed records by sequence number (``batchItemFailures``): Lambda
checkpoints before the lowest one and delivers the rest of the shard again, so the later
records of the batch are seen twice (harmless: every reaction is idempotent — conditional
writes and dispatch tokens). The event source mapping should bisect failing batches, cap
retries and send what still fails to an on-failure destination (nothing is lost):

- dropped (logged, counted as BadEvents): a record from another table, an image that is
  not a run or task instance, a change about a run or DAG version that no longer exists;
- retried: AWS errors, a race still lost after the service's re-decide loop (Conflicts),
  a dispatch the target refused as retryable, any unexpected error.

Metrics: RunsStarted, RunsFinished and TaskOutcomes (dimension ``state``) count the
transitions seen (a finish whose write leaves no record, ``unheard``, is counted by the
scheduler that wrote it), SchedulingDelay the time from the change to its handling. A record
delivered again after a failure later in its batch is counted again: the counts are
approximate by the retries, never short.
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
    stream_sequence_number,
)

runtime.cold_start("stream_processor")
logger, metrics = runtime.logger, runtime.metrics


def table_of(stream_arn: str | None) -> str | None:
    """The table name in ``arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<time>``."""
    if not stream_arn or ":table/" not in stream_arn:
        return None
    return stream_arn.split(":table/", 1)[1].split("/", 1)[0]


def _images(record: Record) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    data = _stream_data(record)
    return data.get("OldImage"), data.get("NewImage")


def _stream_data(record: Record) -> Mapping[str, Any]:
    data = record.get("dynamodb")
    return data if isinstance(data, Mapping) else {}


def _decode(convert: Any, image: dict[str, Any] | None, what: str) -> Any:
    """An image as an engine record; a malformed one is a BadEvent (it never decodes)."""
    from skydag.service.router import BadEvent

    if image is None:
        return None
    try:
        return convert(image)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BadEvent(f"{what}: not a valid image ({type(error).__name__}: {error})") from None


def _process(record: Record, what: str) -> None:
    from skydag.service.router import BadEvent
    from skydag.store.repositories import run_from_image, task_instance_from_image

    tables = runtime.settings().tables
    source_arn = record.get("eventSourceARN")
    table = table_of(source_arn if isinstance(source_arn, str) else None)
    old_image, new_image = _images(record)
    if new_image is None:
        return  # a removed item (TTL, cleanup): nothing to react to
    runtime.record_delay(
        runtime.event_time(_stream_data(record).get("ApproximateCreationDateTime"))
    )
    if table == tables.runs:
        old_run = _decode(run_from_image, old_image, what)
        run = _decode(run_from_image, new_image, what)
        with runtime.log_keys(dag=run.dag_id, run=run.run_id):
            runtime.scheduler_service().on_run_changed(old_run, run)
            _count_run(old_run, run)
    elif table == tables.task_instances:
        old_ti = _decode(task_instance_from_image, old_image, what)
        ti = _decode(task_instance_from_image, new_image, what)
        with runtime.log_keys(dag=ti.dag_id, run=ti.run_id, task=ti.task_id):
            runtime.scheduler_service().on_task_changed(old_ti, ti)
            _count_task(old_ti, ti)
    else:
        raise BadEvent(f"{what}: from table {table!r}, not the runs or task-instances table")


def _count_run(old: Any, new: Any) -> None:
    from skydag.engine.states import FINISHED_RUN_STATES, RunState

    if old is not None and old.state == new.state:
        return
    if new.state is RunState.RUNNING:
        runtime.count("RunsStarted")
    elif new.state in FINISHED_RUN_STATES:
        runtime.count_by("RunsFinished", "state", new.state.value)


def _count_task(old: Any, new: Any) -> None:
    from skydag.engine.reactions import is_outcome

    if old is not None and old.state == new.state and old.try_number == new.try_number:
        return
    if is_outcome(new.state):
        runtime.count_by("TaskOutcomes", "state", new.state.value)


def _handle(record: Record) -> None:
    sequence = stream_sequence_number(record) or None
    what = f"stream record {sequence} ({record.get('eventName') or '?'})"
    runtime.handle_record(lambda: _process(record, what), what=what)


@logger.inject_lambda_context(clear_state=True)
@runtime.traced
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    runtime.start_invocation("stream_processor")
    runtime.count("EventsReceived", len(event.get("Records") or []))
    try:
        return process_batch(event, _handle, stream_sequence_number)
    finally:
        runtime.flush_dimensioned()
