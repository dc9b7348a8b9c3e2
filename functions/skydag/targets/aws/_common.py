"""What every AWS target shares: error translation, names, tags, timeouts, event parsing."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from skydag.engine.models import JobReport, JobStatus, instance_key
from skydag.limits import MAX_MAP_ITEMS, is_valid_run_id
from skydag.spec.durations import parse_duration
from skydag.spec.models import ID_PATTERN
from skydag.targets.base import DispatchError, DispatchRequest, JobRef, name_with_token
from skydag.wiring import DEPLOYMENT_TAG

# What skydag writes as the reason when it stops a job, so the job's final state
# (Batch statusReason, ECS stoppedReason) tells a skydag cancel from a crash.
CANCEL_REASON_PREFIX = "skydag cancel: "

# How far back a lookup by name reaches when the service can only list by time (EMR
# steps, EMR Serverless job runs). A dispatch is retried by its event source within a
# day (stream records live 24 hours); two days leave a margin.
DEFAULT_LOOKUP_WINDOW = timedelta(days=2)

# Error codes the services use for "slow down" or "try again": the call may succeed later.
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "ServerException",
        "ServiceException",
        "EC2ThrottledException",
    }
)


class MalformedEvent(ValueError):
    """A service event of the expected source and type lacks a field skydag needs."""


# --- errors ----------------------------------------------------------------------------------


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_retryable_code(code: str) -> bool:
    return code in _RETRYABLE_CODES


def is_retryable(error: ClientError) -> bool:
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return is_retryable_code(error_code(error)) or status == 429 or status >= 500


def service_error(service: str, action: str, resource: str, error: Exception) -> DispatchError:
    """A DispatchError naming the service, the call, the resource and AWS's own message."""
    where = f"{service} {action} ({resource})"
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        message = details.get("Message") or str(error)
        return DispatchError(
            f"{where}: {error_code(error) or 'error'}: {message}", retryable=is_retryable(error)
        )
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return DispatchError(f"{where}: {error}", retryable=True)
    if isinstance(error, NotImplementedError):
        # Only an in-process emulator (moto) raises this; AWS itself never does.
        return DispatchError(f"{where}: not implemented by this endpoint: {error}")
    return DispatchError(f"{where}: {error}")


@contextmanager
def translate_errors(service: str, action: str, resource: str) -> Iterator[None]:
    """Turn whatever boto3 raises into a DispatchError saying where it happened."""
    try:
        yield
    except (ClientError, BotoCoreError, NotImplementedError) as error:
        raise service_error(service, action, resource, error) from error


def call_unless_missing(
    service: str,
    action: str,
    resource: str,
    missing_codes: frozenset[str],
    method: Callable[..., Any],
    **parameters: Any,
) -> Any | None:
    """``method(**parameters)``, or None when AWS answers that the resource does not exist
    (one of ``missing_codes``); any other error becomes a DispatchError."""
    try:
        return method(**parameters)
    except ClientError as error:
        if error_code(error) in missing_codes:
            return None
        raise service_error(service, action, resource, error) from error
    except (BotoCoreError, NotImplementedError) as error:
        raise service_error(service, action, resource, error) from error


def refusal(service: str, message: str) -> DispatchError:
    """A non-retryable DispatchError for a problem skydag found itself (not AWS)."""
    return DispatchError(f"{service}: {message}")


# --- names, tags, environment, timeouts ------------------------------------------------------


def job_name(request: DispatchRequest, custom_prefix: str | None) -> str:
    """The deterministic name of this try's job. A user's own name is kept, but still
    starts with ``skydag-`` (the EventBridge rules filter on it) and ends in the token."""
    if custom_prefix:
        return name_with_token(f"skydag-{custom_prefix}", request.token)
    return request.job_name


def job_name_of(job: JobRef, custom_prefix: str | None) -> str | None:
    """The name ``job_name`` gave the try ``job`` refers to (None without a token)."""
    if not job.token:
        return None
    base = f"skydag-{custom_prefix}" if custom_prefix else f"skydag-{job.dag_id}-{job.task_id}"
    return name_with_token(base, job.token)


def identity_tags(
    request: DispatchRequest, user_tags: Mapping[str, str] | None, deployment: str | None
) -> dict[str, str]:
    """The user's tags plus the try's identity and, when known, the deployment's
    (``wiring.DEPLOYMENT_TAG``: IAM lets skydag stop only what carries it); skydag's own
    keys win."""
    tags = {str(k): str(v) for k, v in (user_tags or {}).items()}
    tags.update(
        {
            "skydag:dag": request.dag_id,
            "skydag:run": request.run_id,
            "skydag:task": request.task_id,
            "skydag:try": str(request.try_number),
            "skydag:token": request.token,
        }
    )
    if deployment is not None:
        tags[DEPLOYMENT_TAG] = deployment
    # Tag values are at most 256 characters in every service used here.
    return {k: v[:256] for k, v in tags.items()}


def job_environment(
    request: DispatchRequest, user_environment: Mapping[str, str] | None
) -> list[dict[str, str]]:
    """The target's environment, then the try's SKYDAG_* identity (which wins)."""
    merged = {str(k): str(v) for k, v in (user_environment or {}).items()}
    merged.update(request.environment)
    return [{"name": name, "value": value} for name, value in merged.items()]


def task_key_in(environment: Any) -> tuple[str, str, str] | None:
    """(dag, run, instance id) from the SKYDAG_* identity in a job's environment as a
    service's event echoes it (``[{"name": ..., "value": ...}]``); None when it is not
    all there (not skydag's job, or a shape this code does not know)."""
    return _task_key(_names(environment))


def try_number_in(environment: Any) -> int | None:
    """The try (``SKYDAG_TRY``) the job's echoed identity names, if it is a number."""
    value = _names(environment).get("SKYDAG_TRY")
    if value is None or not (value.isascii() and value.isdigit() and len(value) <= 9):
        return None
    return int(value)


def _names(environment: Any) -> dict[str, str]:
    if not isinstance(environment, list):
        return {}
    return {
        str(v.get("name")): str(v.get("value"))
        for v in environment
        if isinstance(v, Mapping) and v.get("value") is not None
    }


def _task_key(names: Mapping[str, str]) -> tuple[str, str, str] | None:
    dag, run, task = names.get("SKYDAG_DAG"), names.get("SKYDAG_RUN"), names.get("SKYDAG_TASK")
    if dag is None or run is None or task is None:
        return None
    # Only what could be a key: an event is anybody's to send, and a forged identity must
    # not become a read the store refuses (an oversized or malformed key).
    if not (_ID.fullmatch(dag) and _ID.fullmatch(task) and is_valid_run_id(run)):
        return None
    index = names.get("SKYDAG_MAP_INDEX")
    if index is None:
        return dag, run, task
    digits = index.isascii() and index.isdigit() and len(index) <= len(str(MAX_MAP_ITEMS))
    if not (digits and int(index) < MAX_MAP_ITEMS):
        return None
    return dag, run, instance_key(task, int(index))


_ID = re.compile(ID_PATTERN)


def timeout_of(target_value: Any, request: DispatchRequest) -> timedelta | None:
    """The target's own timeout (as the DAG file gave it) or else the task's timeout."""
    if target_value is not None:
        return parse_duration(target_value)
    return request.timeout


def whole_units(value: timedelta, unit: timedelta, minimum: int) -> int:
    return max(minimum, math.ceil(value / unit))


def cancel_reason(reason: str, limit: int) -> str:
    return f"{CANCEL_REASON_PREFIX}{reason}"[:limit]


def is_skydag_cancel(reason: Any) -> bool:
    return isinstance(reason, str) and reason.startswith(CANCEL_REASON_PREFIX)


def split_job_id(service: str, job_id: str, what: str) -> tuple[str, str]:
    """``<container>/<job>`` ids (EMR, EMR Serverless) back into their two parts."""
    container, _, job = job_id.partition("/")
    if not container or not job:
        raise refusal(service, f"job id {job_id!r} is not of the form {what}")
    return container, job


def require_target(
    service: str, job: JobRef, target: Mapping[str, Any] | None
) -> Mapping[str, Any]:
    """A try without a job id is found by name, which needs the target's location."""
    if target is None:
        raise refusal(
            service,
            f"try {job.try_number} of {job.dag_id}/{job.run_id}/{job.task_id} has no job id; "
            "finding it by its token needs the task's rendered target block (target=...)",
        )
    return target


def report(
    job: JobRef,
    status: JobStatus,
    job_id: str | None,
    *,
    exit_code: int | None = None,
    reason: str | None = None,
    output: Any = None,
    at: datetime | None = None,
) -> JobReport:
    return JobReport(
        job.dag_id,
        job.run_id,
        job.task_id,
        job.try_number,
        status,
        job_id=job_id,
        exit_code=exit_code,
        reason=reason,
        output=output,
        at=at,
        map_index=job.map_index,
    )


def described(
    job: JobRef,
    found: Mapping[str, Any],
    job_id: str,
    outcome: tuple[JobStatus | None, int | None, str | None],
) -> JobReport:
    """A describe call's report of what the service ``found`` (a Batch job, an ECS task):
    ``outcome`` as its module reads it, running until it has one, at its stop or else its
    start by the service's clock."""
    status, exit_code, reason = outcome
    return report(
        job,
        status or JobStatus.RUNNING,
        job_id,
        exit_code=exit_code,
        reason=reason,
        at=parse_time(found.get("stoppedAt") or found.get("startedAt")),
    )


# --- events and service responses ------------------------------------------------------------


def event_detail(
    event: Mapping[str, Any], source: str, detail_types: frozenset[str]
) -> Mapping[str, Any] | None:
    """The detail of an event of this source and detail-type; None for any other event."""
    if event.get("source") != source or event.get("detail-type") not in detail_types:
        return None
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise MalformedEvent(f"{source} {event.get('detail-type')!r} event has no detail object")
    return detail


def required(detail: Mapping[str, Any], key: str, what: str) -> str:
    value = detail.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{what} event: detail.{key} is missing or not a string")
    return value


def event_time(event: Mapping[str, Any]) -> datetime | None:
    return parse_time(event.get("time"))


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 strings (events), datetimes (boto3) and epoch milliseconds (Batch)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def json_or_text(value: Any) -> Any:
    """Service outputs are JSON text when they are JSON; anything else is kept as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def joined(*parts: Any) -> str | None:
    """The non-empty parts, in order, as one reason ("error: cause")."""
    texts = [str(p) for p in parts if p not in (None, "")]
    return ": ".join(texts) or None
