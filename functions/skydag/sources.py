"""The EventBridge sources and detail-types skydag itself speaks, defined once.

The scheduler's router reads them, the CLI and EventBridge Scheduler put them, and the
stack's rules (``skydag.wiring``) and bus policy are built from them. Standard library
only, so that any module may import it without loading the scheduler.
"""

from __future__ import annotations

# People and the CLI ("Trigger DAG", "Cancel Run", ...).
COMMAND_SOURCE = "skydag.command"
# EventBridge Scheduler's schedules and one-shot timers.
SCHEDULER_SOURCE = "skydag.scheduler"
# skydag's own notifications ("DagRun State Change", ...): also usable as signals.
SKYDAG_SOURCE = "skydag"
# What ``emit:`` tasks put by default: ``skydag.dag.<dag id>``, each DAG under its own name.
DAG_SOURCE_PREFIX = "skydag.dag."
# Lambda's asynchronous invocation results (the destination puts them under this source).
LAMBDA_RESULT_SOURCE = "lambda"

# AWS services' own events: what a DAG may subscribe to but never emit.
AWS_SOURCE_PREFIX = "aws."

SCHEDULE_TICK = "Schedule Tick"  # detail: {"dag": ...}
TIMER_FIRED = "Timer Fired"  # detail: {"dag": ..., "run_id": ..., "task": ...}
