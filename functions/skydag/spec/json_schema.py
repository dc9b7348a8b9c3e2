"""The DAG file's JSON Schema, for editors (`skydag schema`).

Generated from the Pydantic models so it cannot drift from validation, then adjusted where
the models accept more than their generated schema says (one pattern instead of a list,
``noop: true``) and where a rule lives in a validator (exactly one target key, schedule
needs start_date). The schema catches typos while typing; ``skydag validate`` stays the
authority (cycles, cron syntax, event patterns and templates are only checked there).
"""

from __future__ import annotations

from typing import Any

from skydag.spec.models import ID_PATTERN, TARGET_KEYS, DagSpec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:skydag:schema:dag-file:v1"

_SIGNAL_KEYS = ("on", "start_on", "restart_on", "stop_on")

DAG_KEY_DOCS: dict[str, str] = {
    "dag": "The DAG id: a lowercase letter, then up to 63 lowercase letters, digits, _ or -.",
    "description": "What the DAG does, for people.",
    "schedule": "5-field cron, @hourly/@daily/@weekly/@monthly/@yearly, or rate(N units).",
    "timezone": "IANA time zone the cron schedule is read in (default UTC).",
    "start_date": "Start of the first data interval; required with schedule.",
    "end_date": "No scheduled runs for intervals starting after this.",
    "catchup": "Create runs for the intervals missed since start_date (default false).",
    "max_active_runs": "Runs of this DAG that may be running at once (default 16).",
    "max_active_tasks": "Tasks of one run that may be queued or running at once (default 32).",
    "params": "Default template parameters; a run's conf overrides them.",
    "on": "Signals: each event matching one of these patterns creates a run.",
    "defaults": "Retry and timeout defaults for every task.",
    "tags": "Free-form labels.",
    "emit_sources": (
        "Event source prefixes this DAG's emit tasks may use besides skydag.dag.<dag>; "
        "skydag, skydag.*, aws.* and lambda are reserved."
    ),
    "tasks": "The tasks, by id. Each has exactly one target key.",
}

TASK_KEY_DOCS: dict[str, str] = {
    "description": "What the task does, for people.",
    "depends_on": "Upstream task ids.",
    "trigger_rule": "When the task may run, given its upstreams' states (default all_success).",
    "mode": "batch (runs to completion, default) or service (runs until stopped).",
    "start_on": "After its upstreams are done, wait for a matching signal before dispatch.",
    "restart_on": "Signals that restart the running task (a new try).",
    "stop_on": "Signals that stop the running task.",
    "when": "A condition rendered once the task may run: false skips the task.",
    "local": "What `skydag dev` runs instead of the remote target.",
    "retries": "Tries after the first failure (default 0).",
    "retry_delay": "Wait before the first retry (default 30s).",
    "retry_backoff": "Multiplier applied to the delay after each retry (default 2.0).",
    "max_retry_delay": "Upper bound of the retry delay (default 10m).",
    "timeout": "Fail the try when it runs longer than this.",
    "batch": "Target: an AWS Batch job.",
    "emr": "Target: a step on an EMR cluster.",
    "emr_serverless": "Target: an EMR Serverless job run.",
    "stepfunctions": "Target: a Step Functions execution.",
    "lambda": "Target: a Lambda invocation.",
    "ecs": "Target: an ECS task.",
    "wait": "Target: wait for a matching signal, holding no compute.",
    "emit": "Target: put an event on the skydag bus.",
    "noop": "Target: do nothing (`noop:`, `noop: {}` or `noop: true`).",
}


def dag_file_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a DAG file, with aliases (`lambda`, `detail-type`)."""
    body = DagSpec.model_json_schema(by_alias=True)
    defs: dict[str, Any] = body["$defs"]
    _describe(body, DAG_KEY_DOCS)
    _describe(defs["TaskSpec"], TASK_KEY_DOCS)
    _allow_single_patterns(body, defs)
    _strict_task_ids(body)
    _noop_shorthand(defs["TaskSpec"])
    _date_or_datetime(body)
    defs["TaskSpec"]["oneOf"] = [{"required": [key]} for key in TARGET_KEYS]
    body["dependentRequired"] = {"schedule": ["start_date"]}
    body["title"] = "skydag DAG file (v1)"
    body["description"] = "A skydag DAG: tasks, their dependencies, targets and triggers."
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, **body}


def _describe(schema: dict[str, Any], docs: dict[str, str]) -> None:
    for key, prop in schema["properties"].items():
        if key in docs:
            prop["description"] = docs[key]


def _allow_single_patterns(body: dict[str, Any], defs: dict[str, Any]) -> None:
    """`on: {...}` is one pattern; the model wraps it in a list."""
    holders = [
        (body, ("on",)),
        (defs["TaskSpec"], _SIGNAL_KEYS[1:]),
        (defs["WaitTarget"], ("on",)),
    ]
    for schema, keys in holders:
        for key in keys:
            schema["properties"][key] = _one_or_many(schema["properties"][key])


def _one_or_many(prop: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in prop:
        prop["anyOf"] = [
            {"anyOf": [option["items"], option]} if option.get("type") == "array" else option
            for option in prop["anyOf"]
        ]
        return prop
    array = {k: prop[k] for k in ("type", "items", "minItems") if k in prop}
    rest = {k: v for k, v in prop.items() if k not in array}
    return {**rest, "anyOf": [prop["items"], array]}


def _strict_task_ids(body: dict[str, Any]) -> None:
    tasks = body["properties"]["tasks"]
    tasks["propertyNames"] = {"pattern": ID_PATTERN}
    tasks["additionalProperties"] = False


def _noop_shorthand(task: dict[str, Any]) -> None:
    task["properties"]["noop"]["anyOf"].append({"const": True})


def _date_or_datetime(body: dict[str, Any]) -> None:
    """YAML users write `2026-01-01` as often as a full timestamp; both validate."""
    for key in ("start_date", "end_date"):
        for option in body["properties"][key]["anyOf"]:
            if option.get("format") == "date-time":
                option.pop("format")
                option["anyOf"] = [{"format": "date-time"}, {"format": "date"}]
