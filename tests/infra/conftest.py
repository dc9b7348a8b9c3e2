"""One synthesis of the real app for the whole session (jsii start-up and cdk-nag dominate).

The app is built exactly as ``infra/app.py`` builds it, with cdk.json's context, the
placeholder Lambda asset (no pip) and a dispatch configuration that exercises every target
kind, so every IAM statement skydag can generate is in the template the tests read.
"""

from __future__ import annotations

import pytest
from infra_synth import Synthesized, synthesize


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(tmp_path_factory.mktemp("cdk.out"))
