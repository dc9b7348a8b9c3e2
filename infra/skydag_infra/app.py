"""The CDK app: ``cdk synth`` / ``cdk deploy`` run ``infra/app.py``, which calls ``main``."""

from __future__ import annotations

import os

import aws_cdk as cdk

from skydag_infra.stack import SkydagStack, add_nag_checks


def build_app(app: cdk.App | None = None, *, stack_name: str = "Skydag") -> cdk.App:
    """The app with its one stack and the cdk-nag checks (the tests build the same)."""
    app = app or cdk.App()
    SkydagStack(
        app,
        app.node.try_get_context("skydag:stackName") or stack_name,
        description="skydag: a serverless workflow orchestrator (YAML DAGs, EventBridge, DynamoDB)",
        # Environment-agnostic unless the CLI names an account and region; nothing looks up.
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
    )
    add_nag_checks(app)
    return app


def main() -> None:
    build_app().synth()
