"""The AWS targets by task kind, their boto3 clients, and the routing of service events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from skydag.settings import Settings
from skydag.targets.aws import batch, ecs, emr, emr_serverless, lambda_, stepfunctions
from skydag.targets.aws.batch import BatchJobs
from skydag.targets.aws.ecs import EcsTasks
from skydag.targets.aws.emit import EventEmitter
from skydag.targets.aws.emr import EmrSteps
from skydag.targets.aws.emr_serverless import EmrServerlessRuns
from skydag.targets.aws.lambda_ import LambdaInvocations
from skydag.targets.aws.stepfunctions import StepFunctionsExecutions
from skydag.targets.base import JobEvent, Target

# Task kind -> the boto3 service its target calls.
SERVICE_OF_KIND: Mapping[str, str] = {
    "batch": "batch",
    "emr": "emr",
    "emr_serverless": "emr-serverless",
    "stepfunctions": "stepfunctions",
    "lambda": "lambda",
    "ecs": "ecs",
    "emit": "events",
}

EventParser = Callable[[Mapping[str, Any]], JobEvent | None]

# (source, detail-type) of every service event that completes a job -> its parser.
EVENT_PARSERS: Mapping[tuple[str, str], EventParser] = {
    (batch.SOURCE, batch.DETAIL_TYPE): batch.parse_event,
    (emr.SOURCE, emr.DETAIL_TYPE): emr.parse_event,
    (emr_serverless.SOURCE, emr_serverless.DETAIL_TYPE): emr_serverless.parse_event,
    (stepfunctions.SOURCE, stepfunctions.DETAIL_TYPE): stepfunctions.parse_event,
    (ecs.SOURCE, ecs.DETAIL_TYPE): ecs.parse_event,
    (lambda_.SOURCE, lambda_.SUCCESS): lambda_.parse_event,
    (lambda_.SOURCE, lambda_.FAILURE): lambda_.parse_event,
}


def parse_service_event(event: Mapping[str, Any]) -> JobEvent | None:
    """The JobEvent in a service's state-change event; None for any other event.
    Raises MalformedEvent (a ValueError) for a service event missing a field it needs."""
    parser = EVENT_PARSERS.get((str(event.get("source")), str(event.get("detail-type"))))
    return parser(event) if parser is not None else None


class AwsTargets:
    """The AWS targets, created on first use with their clients (a cold start pays only
    for the services its events need). ``clients`` (service name -> client) replaces
    the clients a test or the embedded environment brings."""

    def __init__(
        self,
        settings: Settings,
        *,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._clients: dict[str, Any] = dict(clients or {})
        self._targets: dict[str, Target] = {}

    def target_for(self, kind: str) -> Target:
        if kind not in SERVICE_OF_KIND:
            raise KeyError(
                f"no AWS target for task kind {kind!r}: noop and wait tasks are handled by "
                "the scheduler itself"
            )
        target = self._targets.get(kind)
        if target is None:
            target = self._make(kind, self.client(SERVICE_OF_KIND[kind]))
            self._targets[kind] = target
        return target

    def client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            client = self._new_client(service)
            self._clients[service] = client
        return client

    parse_service_event = staticmethod(parse_service_event)

    def _make(self, kind: str, client: Any) -> Target:
        if kind == "emit":
            return EventEmitter(client, self.settings.event_bus)
        # What skydag starts is tagged with its deployment (the bus's name), the tag its
        # IAM statements require to stop or tag a job.
        deployment = self.settings.event_bus
        makers: Mapping[str, Callable[[Any], Target]] = {
            "batch": lambda c: BatchJobs(c, deployment=deployment),
            "emr": EmrSteps,
            "emr_serverless": lambda c: EmrServerlessRuns(c, deployment=deployment),
            "stepfunctions": StepFunctionsExecutions,
            "lambda": LambdaInvocations,
            "ecs": lambda c: EcsTasks(c, deployment=deployment),
        }
        return makers[kind](client)

    def _new_client(self, service: str) -> Any:
        from skydag.adapters import new_client

        # Standard retries absorb brief throttling inside the call; what remains becomes
        # a retryable DispatchError for the event source to try again later.
        return new_client(service, self.settings, max_attempts=3)
