"""cdk-nag acknowledgments, each with its reason, and none broader than one finding.

cdk-nag 3 reports one ``AwsSolutions-IAM5[Resource::<flattened ARN>]`` finding per wildcard
resource and wants each acknowledged on its own. The construct knows why every wildcard is
there (``permissions.PolicyBuilder`` refuses one without a reason), so the acknowledgments
are computed from the policies themselves rather than copied by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from skydag_infra.permissions import STAR_RESOURCE_REASONS


def acknowledge(scope: Construct, rule: str, reason: str) -> None:
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def flatten_cfn_reference(value: Any) -> str:
    """cdk-nag's ``flattenCfnReference``: how a resource appears in a finding id."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("${", "<").replace("}", ">")
    if isinstance(value, Mapping):
        for function, flatten in _INTRINSICS.items():
            if function in value:
                return flatten(value[function])
    return json.dumps(value, separators=(",", ":"))


def _join(arguments: Any) -> str:
    delimiter, items = arguments
    return str(delimiter).join(flatten_cfn_reference(item) for item in items)


def _get_att(arguments: Any) -> str:
    resource, attribute = arguments
    return f"<{flatten_cfn_reference(resource)}.{flatten_cfn_reference(attribute)}>"


# In cdk-nag's order of precedence.
_INTRINSICS: dict[str, Callable[[Any], str]] = {
    "Fn::Join": _join,
    "Fn::Sub": flatten_cfn_reference,
    "Fn::GetAtt": _get_att,
    "Fn::ImportValue": flatten_cfn_reference,
    "Ref": lambda name: f"<{flatten_cfn_reference(name)}>",
}


def acknowledge_wildcards(role: iam.Role, wildcard_reasons: Iterable[tuple[str, str]]) -> None:
    """Acknowledge every wildcard resource in ``role``'s policies with its reason.

    ``wildcard_reasons`` holds (resource as written, reason) for the narrower wildcards;
    ``*`` takes its reason from the actions it is granted for. A wildcard without a reason
    raises: an unexplained wildcard is a bug, not a finding to wave through.
    """
    stack = cdk.Stack.of(role)
    reasons: dict[str, list[str]] = {}
    for resource, reason in wildcard_reasons:
        # One ARN may serve several statements (an ECS cluster's tasks: tag, stop, describe).
        given = reasons.setdefault(flatten_cfn_reference(stack.resolve(resource)), [])
        if reason not in given:
            given.append(reason)
    star_actions: set[str] = set()
    findings: dict[str, str] = {}
    for statement in _allow_statements(role):
        resources = statement.get("Resource", [])
        for resource in resources if isinstance(resources, list) else [resources]:
            flat = flatten_cfn_reference(resource)
            if flat == "*":
                actions = statement["Action"]
                star_actions.update(actions if isinstance(actions, list) else [actions])
            elif "*" in flat:
                if flat not in reasons:
                    raise ValueError(f"{role.node.path}: no reason for the wildcard in {flat}")
                findings[flat] = "; ".join(reasons[flat])
    if star_actions:
        unexplained = sorted(star_actions - STAR_RESOURCE_REASONS.keys())
        if unexplained:
            raise ValueError(f"{role.node.path}: no reason for Resource '*' on {unexplained}")
        findings["*"] = "; ".join(
            sorted({f"{a}: {STAR_RESOURCE_REASONS[a]}" for a in sorted(star_actions)})
        )
    for flat, reason in sorted(findings.items()):
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{flat}]", reason)


def _allow_statements(role: iam.Role) -> list[dict[str, Any]]:
    stack = cdk.Stack.of(role)
    statements: list[dict[str, Any]] = []
    for child in role.node.find_all():
        if isinstance(child, iam.Policy):
            document = stack.resolve(child.document)
            statements.extend(s for s in document.get("Statement", []) if s["Effect"] == "Allow")
    return statements
