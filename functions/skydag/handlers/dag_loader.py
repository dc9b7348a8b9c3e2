"""The DAG loader Lambda: S3 "Object Created" / "Object Deleted" events (EventBridge,
invoked directly, asynchronously) for the DAG bucket.

The handler reads the object (the exact version the event names, when the bucket is
versioned) and hands the bytes to ``skydag.service.dag_loader.DagLoaderService``, which
validates, versions, schedules and reports. A broken DAG file is not a failure of this
function: it is recorded and announced ("DAG Import Error"), and the call succeeds.

- dropped (logged; BadEvents when the event itself is wrong): an event that is not an S3
  Object Created/Deleted event, another bucket, a key outside the DAG prefix or not
  ``.yaml``/``.yml``, an object already gone again (its deletion event follows), a
  deletion while the key still exists (a non-current version was deleted);
- retried (the error is raised: Lambda retries an asynchronous event twice, then sends it
  to the on-failure destination): S3, DynamoDB, EventBridge or Scheduler errors.

Object keys are URL-decoded, as Powertools' S3 EventBridge data class does.

Idempotency is natural: the current version's sha256 is compared with the file's, so a
redelivered event (or a re-upload of the same bytes) makes no new version, and S3's
per-key ``sequencer`` makes a late event for an older write a no-op. No idempotency
table. Run it with reserved concurrency 1: events for one key are then applied one at a
time, in the order the sequencer checks.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from skydag.handlers import _runtime as runtime

runtime.cold_start("dag_loader")
logger, metrics = runtime.logger, runtime.metrics

OBJECT_CREATED = "Object Created"
OBJECT_DELETED = "Object Deleted"
# S3 error codes meaning "that object (version) is not there".
_GONE = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})


class _NotAnObjectEvent(ValueError):
    pass


def _object(event: dict[str, Any]) -> Any:
    """The event's object as a DagObject, or _NotAnObjectEvent saying what is missing."""
    from urllib.parse import unquote_plus

    from skydag.service.dag_loader import DagObject

    try:
        detail = event["detail"]
        raw = detail["object"]
        version = raw.get("version-id")
        # moto and some emitters spell the ETag "eTag".
        etag = raw.get("etag") or raw.get("eTag")
        return DagObject(
            bucket=str(detail["bucket"]["name"]),
            # S3 puts the key URL-encoded in its EventBridge events (a space is "+").
            key=unquote_plus(str(raw["key"])),
            etag=str(etag) if etag else None,
            version_id=str(version) if version and version != "null" else None,
            sequencer=str(raw["sequencer"]) if raw.get("sequencer") else None,
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise _NotAnObjectEvent(f"S3 event without {error}") from None


def _read(obj: Any) -> bytes | None:
    """The object's bytes (at most one byte over the DAG size limit: the loader reports
    the size), or None when it is gone."""
    from botocore.exceptions import ClientError

    from skydag.adapters import error_code
    from skydag.spec.loader import MAX_DAG_FILE_BYTES

    request = {"Bucket": obj.bucket, "Key": obj.key}
    if obj.version_id:
        request["VersionId"] = obj.version_id
    try:
        response = runtime.s3_client().get_object(**request)
    except ClientError as error:
        if error_code(error) in _GONE:
            return None
        raise
    body = response["Body"]
    try:
        data: bytes = body.read(MAX_DAG_FILE_BYTES + 1)
    finally:
        body.close()
    return data


def _still_exists(obj: Any) -> bool:
    from botocore.exceptions import ClientError

    from skydag.adapters import error_code

    try:
        runtime.s3_client().head_object(Bucket=obj.bucket, Key=obj.key)
    except ClientError as error:
        if error_code(error) in _GONE:
            return False
        raise
    return True


def _ignored(source: str | None, reason: str, *, bad_event: bool = False) -> dict[str, Any]:
    logger.info("ignored", extra={"source": source, "reason": reason})
    if bad_event:
        runtime.count("BadEvents")
    return {"outcome": "ignored", "source": source, "reason": reason}


def _not_a_dag_file(obj: Any) -> str | None:
    from skydag.service.dag_loader import dag_file_problem

    settings = runtime.settings()
    if obj.bucket != settings.dag_bucket:
        return f"not the DAG bucket {settings.dag_bucket!r}"
    return dag_file_problem(obj.key, settings.dag_prefix)


def _apply(detail_type: str, obj: Any) -> Any:
    """The loader's LoadResult, or why the event was ignored (a string)."""
    loader = runtime.dag_loader_service()
    if detail_type == OBJECT_CREATED:
        data = _read(obj)
        if data is None:
            return "the object is gone (its deletion event follows)"
        return loader.file_written(obj, data)
    if _still_exists(obj):
        return "the key still exists (an old version was deleted)"
    return loader.file_deleted(obj)


def _handle(event: dict[str, Any]) -> dict[str, Any]:
    detail_type = event.get("detail-type")
    if event.get("source") != "aws.s3" or detail_type not in (OBJECT_CREATED, OBJECT_DELETED):
        return _ignored(None, f"not an S3 object event ({detail_type!r})", bad_event=True)
    try:
        obj = _object(event)
    except _NotAnObjectEvent as error:
        return _ignored(None, str(error), bad_event=True)
    with runtime.log_keys(source=obj.source, s3_event=event.get("id")):
        runtime.record_delay(runtime.event_time(event.get("time")))
        result = _not_a_dag_file(obj) or _apply(detail_type, obj)
        if isinstance(result, str):
            return _ignored(obj.source, result)
        with runtime.log_keys(dag=result.dag_id):
            if result.errors:
                logger.warning("DAG file did not load", extra=result.as_log())
                runtime.count("DagImportErrors")
            else:
                logger.info("DAG file handled", extra=result.as_log())
        log: dict[str, Any] = result.as_log()
        return log


@logger.inject_lambda_context(clear_state=True)
@runtime.traced
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    runtime.start_invocation("dag_loader")
    try:
        return _handle(event)
    except Exception:
        logger.exception("DAG file event failed; Lambda will retry it")
        raise
