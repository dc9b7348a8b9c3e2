"""The synthesized app the infra tests read, and how it is configured."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The CDK app's package lives in infra/ (it is not part of the installed skydag package).
if str(ROOT / "infra") not in sys.path:
    sys.path.insert(0, str(ROOT / "infra"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402
from skydag_infra.app import build_app  # noqa: E402
from skydag_infra.construct import Skydag  # noqa: E402
from skydag_infra.stack import SkydagStack  # noqa: E402

ACCOUNT = "111122223333"
REGION = "us-east-1"
ALARM_TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:skydag-alarms"
# The roles that may send commands: one by name, and every SSO administrator role.
OPERATORS = [
    f"arn:aws:iam::{ACCOUNT}:role/skydag-operator",
    f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_Admin_*",
]
DISPATCH: dict[str, Any] = {
    "batch_job_queues": [f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/eval"],
    "batch_job_definitions": [
        f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/evaluate",
        f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/train:3",
    ],
    "emr_cluster_ids": ["j-2AXXXXXXGAPLF"],
    "emr_serverless_applications": [
        f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/00fabc1234567890"
    ],
    "state_machines": [f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:publish"],
    "lambda_functions": [f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:redeploy"],
    "ecs_clusters": [f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/jobs"],
    "ecs_task_definitions": [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/shard"],
    "pass_roles": {
        "ecs-tasks.amazonaws.com": [f"arn:aws:iam::{ACCOUNT}:role/shard-task"],
        "emr-serverless.amazonaws.com": [f"arn:aws:iam::{ACCOUNT}:role/emr-job"],
    },
}


@dataclass(frozen=True)
class Synthesized:
    stack: SkydagStack
    template: Template
    json: dict[str, Any]
    metadata: dict[str, list[dict[str, Any]]]  # construct path -> metadata entries
    outdir: Path

    @property
    def skydag(self) -> Skydag:
        return self.stack.skydag

    def logical_id(self, construct: Any) -> str:
        """The template's logical id of an L2 construct (or of an L1 resource)."""
        cfn = construct.node.default_child or construct
        return str(self.stack.resolve(self.stack.get_logical_id(cfn)))

    def resource(self, construct: Any) -> dict[str, Any]:
        resource: dict[str, Any] = self.json["Resources"][self.logical_id(construct)]
        return resource

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.json["Resources"].items()
            if resource["Type"] == resource_type
        }


def synthesize(outdir: Path) -> Synthesized:
    """Build the app as ``infra/app.py`` does (cdk.json's context) and synthesize it."""
    context = json.loads((ROOT / "cdk.json").read_text(encoding="utf-8"))["context"] | {
        "skydag:lambdaAsset": "placeholder",
        "skydag:dispatch": DISPATCH,
        "skydag:alarmTopicArn": ALARM_TOPIC_ARN,
        "skydag:operators": OPERATORS,
    }
    app = build_app(cdk.App(context=context, outdir=str(outdir)))
    # Raises on any unacknowledged cdk-nag finding (and on CloudFormation validation errors).
    assembly = app.synth()
    (stack,) = (child for child in app.node.children if isinstance(child, SkydagStack))
    artifact = assembly.get_stack_artifact(stack.artifact_id)
    template_json: dict[str, Any] = artifact.template
    metadata = json.loads((outdir / f"{stack.artifact_id}.metadata.json").read_text("utf-8"))
    return Synthesized(stack, Template.from_json(template_json), template_json, metadata, outdir)
