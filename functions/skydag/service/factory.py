"""Production wiring: one scheduler service on real AWS (or any endpoint, e.g. `dev up`).

The handlers build it once per warm Lambda; everything heavy is imported here, lazily,
so a handler's cold start pays only for what it uses.
"""

from __future__ import annotations

from datetime import timedelta

from skydag.ports import Clock, EventSink, SystemClock, Timers
from skydag.service.scheduler_service import SchedulerService
from skydag.settings import Settings


def build_service(
    settings: Settings,
    *,
    clock: Clock | None = None,
    events: EventSink | None = None,
    timers: Timers | None = None,
) -> SchedulerService:
    """Repositories bound to the settings' tables, the AWS targets, skydag's event sink
    (PutEvents on the skydag bus) and one-shot timers (EventBridge Scheduler)."""
    from skydag.store.models import bind_models
    from skydag.store.repositories import Repositories
    from skydag.targets.aws.registry import AwsTargets
    from skydag.targets.builtin import TargetSet

    bind_models(settings)
    clock = clock or SystemClock()
    if events is None:
        from skydag.adapters.events import EventBridgeEventSink

        events = EventBridgeEventSink(settings)
    if timers is None and settings.scheduler_role_arn:
        from skydag.adapters.schedules import EventBridgeSchedules

        timers = EventBridgeSchedules(settings)
    return SchedulerService(
        Repositories(task_state_ttl=timedelta(days=settings.task_state_ttl_days)),
        TargetSet(clock, AwsTargets(settings)),
        clock,
        events,
        state_table=settings.tables.task_state,
        timers=timers,
    )
