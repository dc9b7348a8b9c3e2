"""The EventBridge rules' event patterns, as data (the tests compare them exactly).

Where events come from and why each rule exists:

On the skydag bus (everything there is meant for the scheduler):
- ``skydag.command``: people and the CLI ("Trigger DAG", "Cancel Run", ...). All of them:
  a malformed command must reach the scheduler to be reported, not vanish in a filter.
- ``skydag.scheduler``: EventBridge Scheduler's "Schedule Tick" and "Timer Fired".
- ``lambda``: Lambda destination events ("Lambda Function Invocation Result - ...") of the
  functions skydag invoked; users point their functions' async destinations at this bus.
- anything else is a user signal, including skydag's own notifications (source ``skydag``:
  "DagRun State Change", ...), so that one DAG can be triggered by another's outcome.

On the default bus (where AWS services put their events):
- S3 "Object Created"/"Object Deleted" under the DAG prefix -> the dag loader;
- each service's native state-change event, narrowed to skydag's jobs (names start with
  ``skydag-``) and to the statuses the engine acts on -> the scheduler.
"""

from __future__ import annotations

from typing import Any

COMMAND_SOURCE = "skydag.command"
SCHEDULER_SOURCE = "skydag.scheduler"
SKYDAG_SOURCE = "skydag"
LAMBDA_SOURCE = "lambda"
# Every job, step, execution and task skydag starts is named ``skydag-<dag>-<task>-<token>``
# (``skydag.targets.base.DispatchRequest.job_name``; a test keeps the two equal).
JOB_NAME_PREFIX = "skydag-"

SCHEDULER_DETAIL_TYPES = ["Schedule Tick", "Timer Fired"]
LAMBDA_RESULT_DETAIL_TYPES = [
    "Lambda Function Invocation Result - Success",
    "Lambda Function Invocation Result - Failure",
]

Pattern = dict[str, Any]


def skydag_bus_patterns() -> dict[str, Pattern]:
    """Rule id -> pattern, for the rules on the skydag bus (all feed the scheduler queue)."""
    return {
        "CommandsRule": {"source": [COMMAND_SOURCE]},
        "SchedulerEventsRule": {
            "source": [SCHEDULER_SOURCE],
            "detail-type": SCHEDULER_DETAIL_TYPES,
        },
        "LambdaResultsRule": {
            "source": [LAMBDA_SOURCE],
            "detail-type": LAMBDA_RESULT_DETAIL_TYPES,
        },
        # The complement of the three rules above: each event is delivered once.
        "SignalsRule": {
            "source": [{"anything-but": [COMMAND_SOURCE, SCHEDULER_SOURCE, LAMBDA_SOURCE]}]
        },
    }


def job_event_patterns() -> dict[str, Pattern]:
    """Rule id -> pattern, for the services' state changes on the default bus."""
    skydag_job = [{"prefix": JOB_NAME_PREFIX}]
    return {
        "BatchJobStateRule": {
            "source": ["aws.batch"],
            "detail-type": ["Batch Job State Change"],
            "detail": {"status": ["RUNNING", "SUCCEEDED", "FAILED"], "jobName": skydag_job},
        },
        "EmrStepStatusRule": {
            "source": ["aws.emr"],
            "detail-type": ["EMR Step Status Change"],
            "detail": {
                "state": ["RUNNING", "COMPLETED", "FAILED", "CANCELLED"],
                "name": skydag_job,
            },
        },
        # EMR Serverless job-run events carry no name to filter on: the scheduler looks the
        # run id up (job index) and ignores runs that are not skydag's.
        "EmrServerlessJobRunRule": {
            "source": ["aws.emr-serverless"],
            "detail-type": ["EMR Serverless Job Run State Change"],
            "detail": {"state": ["RUNNING", "SUCCESS", "FAILED", "CANCELLED"]},
        },
        "StepFunctionsExecutionRule": {
            "source": ["aws.states"],
            "detail-type": ["Step Functions Execution Status Change"],
            "detail": {
                "status": ["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
                "name": skydag_job,
            },
        },
        "EcsTaskStateRule": {
            "source": ["aws.ecs"],
            "detail-type": ["ECS Task State Change"],
            "detail": {"lastStatus": ["RUNNING", "STOPPED"], "startedBy": skydag_job},
        },
    }


def dag_file_pattern(bucket_name: str, dag_prefix: str) -> Pattern:
    """S3 events for ``<prefix>*.yaml`` / ``<prefix>*.yml`` in the DAG bucket."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {
            "bucket": {"name": [bucket_name]},
            # A wildcard holds prefix and suffix at once (``*`` also matches ``/``).
            "object": {
                "key": [{"wildcard": f"{dag_prefix}*.yaml"}, {"wildcard": f"{dag_prefix}*.yml"}]
            },
        },
    }


def validate_dag_prefix(dag_prefix: str) -> str:
    """``dags/``: a folder, and no character the wildcard pattern would read as syntax."""
    if not dag_prefix.endswith("/") or dag_prefix.startswith("/"):
        raise ValueError(f"dag_prefix {dag_prefix!r}: expected a folder such as 'dags/'")
    if any(c in dag_prefix for c in "*\\"):
        raise ValueError(f"dag_prefix {dag_prefix!r}: '*' and '\\' are not allowed")
    return dag_prefix
