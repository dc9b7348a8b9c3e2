"""Run-time settings, read from the environment once and validated (never at import time)."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, model_validator

VERSIONS_PREFIX = "skydag-versions/"
"""Where the DAG bucket keeps each DAG version's spec (``skydag.store.spec_objects``):
written by the dag loader only, never under the DAG prefix, never a DAG file."""


def prefixes_overlap(dag_prefix: str, versions_prefix: str = VERSIONS_PREFIX) -> bool:
    """Whether one prefix lies inside the other (then the loader could see version objects)."""
    return dag_prefix.startswith(versions_prefix) or versions_prefix.startswith(dag_prefix)


class TableNames(BaseModel):
    model_config = ConfigDict(frozen=True)

    dags: str = "skydag-dags"
    dag_versions: str = "skydag-dag-versions"
    runs: str = "skydag-runs"
    task_instances: str = "skydag-task-instances"
    task_state: str = "skydag-task-state"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    region: str = "us-east-1"
    endpoint_url: str | None = None
    tables: TableNames = Field(default_factory=TableNames)
    dag_bucket: str = "skydag-dags"
    dag_prefix: str = "dags/"
    versions_prefix: str = VERSIONS_PREFIX
    event_bus: str = "skydag"
    # Task state kept this long after its last write unless a job asks otherwise.
    task_state_ttl_days: int = Field(default=90, ge=1)
    # EventBridge Scheduler: the group holding DAG schedules and one-shot timers, and the
    # role it assumes to put their events on the skydag bus (empty in dev: ticks are local).
    schedule_group: str = "skydag"
    scheduler_role_arn: str | None = None
    event_bus_arn: str | None = None
    # Where the dag loader's forwarding rules (AWS events, skydag events) deliver (the
    # scheduler queue) and where EventBridge puts what it could not deliver; without them
    # the dag loader keeps no forwarding rules.
    scheduler_queue_arn: str | None = None
    event_delivery_dlq_arn: str | None = None
    # How finely one-shot timers (retry times) are set: EventBridge Scheduler fires within
    # a minute of an at() time; the local cloud's scheduler fires to the second.
    timer_precision_seconds: int = Field(default=60, ge=1, le=60)
    # skydag's notifications are put only when a rule on the bus would take them; the
    # bus's rules are listed again at most this often per warm function (0: every time).
    # A rule added to the bus gets its first notification at most this long after.
    listeners_refresh_seconds: int = Field(default=30, ge=0, le=3600)

    @model_validator(mode="after")
    def _versions_outside_dags(self) -> Settings:
        if prefixes_overlap(self.dag_prefix, self.versions_prefix):
            raise ValueError(
                f"dag_prefix {self.dag_prefix!r} overlaps {self.versions_prefix!r}, "
                "where skydag keeps DAG versions: choose another DAG prefix"
            )
        return self

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        prefix = env.get("SKYDAG_TABLE_PREFIX", "skydag")
        tables = TableNames(
            dags=env.get("SKYDAG_DAGS_TABLE", f"{prefix}-dags"),
            dag_versions=env.get("SKYDAG_DAG_VERSIONS_TABLE", f"{prefix}-dag-versions"),
            runs=env.get("SKYDAG_RUNS_TABLE", f"{prefix}-runs"),
            task_instances=env.get("SKYDAG_TASK_INSTANCES_TABLE", f"{prefix}-task-instances"),
            task_state=env.get("SKYDAG_TASK_STATE_TABLE", f"{prefix}-task-state"),
        )
        return cls(
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            tables=tables,
            dag_bucket=env.get("SKYDAG_DAG_BUCKET", "skydag-dags"),
            dag_prefix=env.get("SKYDAG_DAG_PREFIX", "dags/"),
            event_bus=env.get("SKYDAG_EVENT_BUS", "skydag"),
            schedule_group=env.get("SKYDAG_SCHEDULE_GROUP", "skydag"),
            scheduler_role_arn=env.get("SKYDAG_SCHEDULER_ROLE_ARN") or None,
            event_bus_arn=env.get("SKYDAG_EVENT_BUS_ARN") or None,
            scheduler_queue_arn=env.get("SKYDAG_SCHEDULER_QUEUE_ARN") or None,
            event_delivery_dlq_arn=env.get("SKYDAG_EVENT_DELIVERY_DLQ_ARN") or None,
            timer_precision_seconds=int(env.get("SKYDAG_TIMER_PRECISION_SECONDS") or 60),
            listeners_refresh_seconds=int(env.get("SKYDAG_LISTENERS_REFRESH_SECONDS") or 30),
        )
