"""One target per AWS service: idempotent dispatch, describe, cancel, event translation.

Each target takes its boto3 client; ``AwsTargets`` builds them from the settings and
routes a service's state-change event to the module that reads it.
"""

from __future__ import annotations

from skydag.targets.aws._common import MalformedEvent
from skydag.targets.aws.batch import BatchJobs
from skydag.targets.aws.ecs import EcsTasks
from skydag.targets.aws.emit import EventEmitter
from skydag.targets.aws.emr import EmrSteps
from skydag.targets.aws.emr_serverless import EmrServerlessRuns
from skydag.targets.aws.lambda_ import LambdaInvocations
from skydag.targets.aws.registry import AwsTargets, parse_service_event
from skydag.targets.aws.stepfunctions import StepFunctionsExecutions

__all__ = [
    "AwsTargets",
    "BatchJobs",
    "EcsTasks",
    "EmrServerlessRuns",
    "EmrSteps",
    "EventEmitter",
    "LambdaInvocations",
    "MalformedEvent",
    "StepFunctionsExecutions",
    "parse_service_event",
]
