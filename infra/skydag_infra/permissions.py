"""IAM statements: what each function may touch, scoped to ARNs.

Every statement is built here from data, never with ``*`` except where the API has no
resource-level permission; each such use carries its reason in ``STAR_RESOURCE_REASONS`` (the
construct refuses a ``*`` it cannot explain and turns every reason into a cdk-nag
acknowledgment). Narrower wildcards (``.../jobruns/*``, ``schedule/<group>/*``) are the
children of a resource skydag was given, named by the service at run time; each carries its
reason where it is made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aws_cdk as cdk
from aws_cdk import aws_iam as iam

from skydag.wiring import DEPLOYMENT_TAG, JOB_NAME_PREFIX

# Actions that the services only authorize on "*": the reason is written into the cdk-nag
# acknowledgment of every role that holds them.
STAR_RESOURCE_REASONS: dict[str, str] = {
    "xray:PutTraceSegments": "X-Ray has no resource-level permissions (tracing: Active)",
    "xray:PutTelemetryRecords": "X-Ray has no resource-level permissions (tracing: Active)",
    "dynamodb:ListStreams": (
        "ListStreams has no resource-level permission; the stream reads themselves are "
        "scoped to the two stream ARNs (Lambda's DynamoDB event source needs both)"
    ),
    "batch:DescribeJobs": (
        "DescribeJobs has no resource-level permission (a job id is not known before the "
        "job exists); it only reads"
    ),
    "batch:ListJobs": (
        "ListJobs has no resource-level permission; used to find a job by its deterministic "
        "name after a crash (re-attach, never resubmit); it only reads"
    ),
    "elasticmapreduce:ListClusters": "ListClusters has no resource-level permission; it reads",
    "ecs:DescribeTaskDefinition": (
        "DescribeTaskDefinition has no resource-level permission; it reads which container "
        "of a task definition runs the job"
    ),
    "ecs:ListTasks": (
        "ListTasks is authorized on container instances, not on clusters; the statement is "
        "narrowed to skydag's clusters by the ecs:cluster condition"
    ),
}

# Service principals skydag may pass a job role to, by target kind.
PASS_ROLE_SERVICES = frozenset(
    {
        "batch.amazonaws.com",
        "ecs-tasks.amazonaws.com",
        "emr-serverless.amazonaws.com",
        "elasticmapreduce.amazonaws.com",
        "states.amazonaws.com",
    }
)

_REVISION = re.compile(r":(\d+|\*)$")


@dataclass(frozen=True)
class DispatchTargets:
    """What skydag may start, watch and stop on the user's behalf (and nothing else).

    ARNs, except ``emr_cluster_ids`` (EMR's own ids, ``j-...``: what its events and API use).
    A task definition or Batch job definition without a revision allows every revision.
    ``pass_roles`` maps a service principal (``ecs-tasks.amazonaws.com``,
    ``emr-serverless.amazonaws.com``, ...) to the roles skydag may pass to it.
    """

    batch_job_queues: Sequence[str] = ()
    batch_job_definitions: Sequence[str] = ()
    emr_cluster_ids: Sequence[str] = ()
    emr_serverless_applications: Sequence[str] = ()
    state_machines: Sequence[str] = ()
    lambda_functions: Sequence[str] = ()
    ecs_clusters: Sequence[str] = ()
    ecs_task_definitions: Sequence[str] = ()
    pass_roles: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.pass_roles) - PASS_ROLE_SERVICES)
        if unknown:
            raise ValueError(
                f"pass_roles: unknown service principal(s) {unknown}; "
                f"expected one of {sorted(PASS_ROLE_SERVICES)}"
            )
        if bool(self.batch_job_queues) != bool(self.batch_job_definitions):
            raise ValueError("batch_job_queues and batch_job_definitions go together")
        if bool(self.ecs_clusters) != bool(self.ecs_task_definitions):
            raise ValueError("ecs_clusters and ecs_task_definitions go together")

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> DispatchTargets:
        """From the ``skydag:dispatch`` context value (cdk.json or ``-c``)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"skydag:dispatch: unknown key(s) {unknown}; known: {sorted(known)}")
        values: dict[str, object] = {}
        for key, value in data.items():
            if key == "pass_roles":
                if not isinstance(value, Mapping):
                    raise ValueError("skydag:dispatch.pass_roles: expected an object")
                values[key] = {
                    str(k): tuple(_strings(f"pass_roles.{k}", v)) for k, v in value.items()
                }
            else:
                values[key] = tuple(_strings(key, value))
        return cls(**values)  # type: ignore[arg-type]


def _strings(key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"skydag:dispatch.{key}: expected a list of strings")
    return list(value)


@dataclass
class PolicyBuilder:
    """Statements for one role, remembering why each narrower wildcard is there."""

    scope: cdk.Stack
    statements: list[iam.PolicyStatement] = field(default_factory=list)
    wildcard_reasons: list[tuple[str, str]] = field(default_factory=list)

    def allow(
        self,
        actions: Sequence[str],
        resources: Sequence[str],
        *,
        conditions: Mapping[str, Mapping[str, object]] | None = None,
        wildcard_reason: str | None = None,
    ) -> None:
        for resource in resources:
            if resource == "*":
                unexplained = [a for a in actions if a not in STAR_RESOURCE_REASONS]
                if unexplained:
                    raise ValueError(f"no reason for Resource '*' on {unexplained}")
            elif "*" in resource:
                if wildcard_reason is None:
                    raise ValueError(f"no reason given for the wildcard in {resource}")
                self.wildcard_reasons.append((resource, wildcard_reason))
        self.statements.append(
            iam.PolicyStatement(
                actions=list(actions),
                resources=list(resources),
                conditions=dict(conditions) if conditions else None,
            )
        )

    def attach(self, role: iam.Role) -> None:
        for statement in self.statements:
            role.add_to_policy(statement)


def arn_children(arn: str, arn_format: cdk.ArnFormat, resource: str, suffix: str) -> str:
    """An ARN for the children of ``arn`` (tokens allowed): a state machine's executions,
    an ECS cluster's tasks."""
    parts = cdk.Arn.split(arn, arn_format)
    return cdk.Arn.format(
        cdk.ArnComponents(
            partition=parts.partition,
            service=parts.service,
            region=parts.region,
            account=parts.account,
            resource=resource,
            resource_name=f"{parts.resource_name}{suffix}",
            arn_format=arn_format,
        )
    )


def any_revision(arns: Sequence[str]) -> list[str]:
    """``name`` -> ``name`` and ``name:*``; an ARN that names a revision (or a token) is kept.

    A job submitted by bare name is authorized on the bare ARN, one with a revision on
    ``name:N`` (Batch and ECS task definitions alike), so both are listed.
    """
    out: list[str] = []
    for arn in arns:
        out.append(arn)
        if not cdk.Token.is_unresolved(arn) and not _REVISION.search(arn.rsplit("/", 1)[-1]):
            out.append(f"{arn}:*")
    return out


def tagged_by(deployment: str) -> dict[str, dict[str, object]]:
    """Only what carries this deployment's tag (a job skydag started)."""
    return {"StringEquals": {f"aws:ResourceTag/{DEPLOYMENT_TAG}": deployment}}


def tagging_with(deployment: str) -> dict[str, dict[str, object]]:
    """Only a tagging that sets this deployment's tag (as skydag does when it starts a job)."""
    return {"StringEquals": {f"aws:RequestTag/{DEPLOYMENT_TAG}": deployment}}


def add_dispatch(policy: PolicyBuilder, targets: DispatchTargets, *, deployment: str) -> None:
    """Start, watch and stop jobs on the targets the user allowed (scheduler, streams).

    ``deployment`` is the value of ``DEPLOYMENT_TAG`` on every job skydag starts; the
    statements that stop or tag a job whose id the service assigns require it.
    """
    stack = policy.scope
    if targets.batch_job_queues:
        policy.allow(
            ["batch:SubmitJob"],
            [*targets.batch_job_queues, *any_revision(targets.batch_job_definitions)],
            wildcard_reason="every revision of a job definition the user allowed",
        )
        policy.allow(
            ["batch:TagResource"],
            [_batch_jobs(stack)],
            conditions=tagging_with(deployment),
            wildcard_reason=(
                "tags on the jobs skydag submits (job ids are assigned by Batch), only "
                "with skydag's deployment tag"
            ),
        )
    add_watch_and_cancel(policy, targets, deployment=deployment)
    for cluster_id in targets.emr_cluster_ids:
        policy.allow(["elasticmapreduce:AddJobFlowSteps"], [_emr_cluster(stack, cluster_id)])
    if targets.emr_serverless_applications:
        apps = list(targets.emr_serverless_applications)
        policy.allow(
            ["emr-serverless:StartJobRun"],
            [*apps, *(f"{app}/jobruns/*" for app in apps)],
            wildcard_reason="job runs of the EMR Serverless applications the user allowed",
        )
        policy.allow(
            ["emr-serverless:TagResource"],
            [f"{app}/jobruns/*" for app in apps],
            conditions=tagging_with(deployment),
            wildcard_reason="job runs of the EMR Serverless applications the user allowed",
        )
    if targets.state_machines:
        policy.allow(["states:StartExecution"], list(targets.state_machines))
    if targets.lambda_functions:
        functions = list(targets.lambda_functions)
        policy.allow(
            ["lambda:InvokeFunction"],
            [*functions, *(f"{fn}:*" for fn in functions)],
            wildcard_reason="versions and aliases of the functions the user allowed",
        )
    if targets.ecs_clusters:
        clusters = list(targets.ecs_clusters)
        policy.allow(
            ["ecs:RunTask"],
            any_revision(targets.ecs_task_definitions),
            conditions={"ArnEquals": {"ecs:cluster": clusters}},
            wildcard_reason="every revision of a task definition the user allowed",
        )
        # The ECS target reads a task definition to find the container to run.
        policy.allow(["ecs:DescribeTaskDefinition"], ["*"])
        policy.allow(
            ["ecs:TagResource"],
            [_ecs_tasks(c) for c in clusters],
            conditions={
                "StringEquals": {
                    "ecs:CreateAction": "RunTask",
                    **tagging_with(deployment)["StringEquals"],
                }
            },
            wildcard_reason="tags on the tasks skydag starts (task ids are assigned by ECS)",
        )
    for service, roles in sorted(targets.pass_roles.items()):
        if roles:
            policy.allow(
                ["iam:PassRole"],
                list(roles),
                conditions={"StringEquals": {"iam:PassedToService": service}},
            )


def add_watch_and_cancel(
    policy: PolicyBuilder, targets: DispatchTargets, *, deployment: str
) -> None:
    """Describe, find (by the deterministic name) and stop jobs on the allowed targets.

    Stopping is narrowed to skydag's own jobs: by the deployment tag where the job can
    carry tags (Batch, ECS, EMR Serverless), by the ``skydag-`` name where the ARN holds
    the name (Step Functions executions). EMR steps can do neither: ``CancelSteps`` is
    authorized on the cluster, so it reaches every step of the clusters the user allowed.
    """
    stack = policy.scope
    if targets.batch_job_queues:
        policy.allow(["batch:DescribeJobs", "batch:ListJobs"], ["*"])
        policy.allow(
            ["batch:TerminateJob"],
            [_batch_jobs(stack)],
            conditions=tagged_by(deployment),
            wildcard_reason=(
                "TerminateJob is authorized on job ARNs only, and Batch assigns job ids; "
                "only jobs that carry skydag's deployment tag"
            ),
        )
    if targets.emr_cluster_ids:
        policy.allow(
            [
                "elasticmapreduce:ListSteps",
                "elasticmapreduce:DescribeStep",
                "elasticmapreduce:CancelSteps",
            ],
            [_emr_cluster(stack, c) for c in targets.emr_cluster_ids],
        )
        policy.allow(["elasticmapreduce:ListClusters"], ["*"])
    if targets.emr_serverless_applications:
        apps = list(targets.emr_serverless_applications)
        policy.allow(
            ["emr-serverless:GetJobRun", "emr-serverless:ListJobRuns"],
            [*apps, *(f"{app}/jobruns/*" for app in apps)],
            wildcard_reason="job runs of the EMR Serverless applications the user allowed",
        )
        policy.allow(
            ["emr-serverless:CancelJobRun"],
            [f"{app}/jobruns/*" for app in apps],
            conditions=tagged_by(deployment),
            wildcard_reason="job runs of the EMR Serverless applications the user allowed",
        )
    if targets.state_machines:
        # Executions cannot be tagged; their ARN holds the name, which skydag's start with.
        policy.allow(
            ["states:DescribeExecution", "states:StopExecution"],
            [
                arn_children(
                    sm, cdk.ArnFormat.COLON_RESOURCE_NAME, "execution", f":{JOB_NAME_PREFIX}*"
                )
                for sm in targets.state_machines
            ],
            wildcard_reason=(
                "the executions skydag starts (named skydag-...) of the state machines the "
                "user allowed"
            ),
        )
    if targets.ecs_clusters:
        clusters = list(targets.ecs_clusters)
        policy.allow(
            ["ecs:DescribeTasks"],
            [_ecs_tasks(c) for c in clusters],
            conditions={"ArnEquals": {"ecs:cluster": clusters}},
            wildcard_reason="tasks in the ECS clusters the user allowed",
        )
        policy.allow(
            ["ecs:StopTask"],
            [_ecs_tasks(c) for c in clusters],
            conditions={"ArnEquals": {"ecs:cluster": clusters}, **tagged_by(deployment)},
            wildcard_reason="tasks in the ECS clusters the user allowed",
        )
        policy.allow(["ecs:ListTasks"], ["*"], conditions={"ArnEquals": {"ecs:cluster": clusters}})


def _batch_jobs(stack: cdk.Stack) -> str:
    return stack.format_arn(service="batch", resource="job", resource_name="*")


def _emr_cluster(stack: cdk.Stack, cluster_id: str) -> str:
    return stack.format_arn(
        service="elasticmapreduce", resource="cluster", resource_name=cluster_id
    )


def _ecs_tasks(cluster_arn: str) -> str:
    return arn_children(cluster_arn, cdk.ArnFormat.SLASH_RESOURCE_NAME, "task", "/*")
