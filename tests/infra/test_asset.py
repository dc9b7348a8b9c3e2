"""The Lambda asset build: pip for the Lambda platform, cached by what went into it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import infra_synth
import pytest
from skydag_infra import asset
from skydag_infra.construct import LAMBDA_RUNTIME

PYPROJECT = """
[project]
name = "skydag"
dependencies = ["pynamodb==6.1.0", "pyyaml==6.0.3"]
[project.optional-dependencies]
lambda = ["aws-lambda-powertools[tracer,parser]==3.37.0"]
dev = ["pytest==9.2.0"]
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    package = tmp_path / "functions" / "skydag"
    (package / "handlers").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "handlers" / "scheduler.py").write_text("def lambda_handler(e, c): ...\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"stale")
    return tmp_path


@pytest.fixture
def pip_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """pip replaced by a fake that 'installs' one module into --target."""
    calls: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "yaml").mkdir(parents=True)
        (target / "yaml" / "__init__.py").write_text("", encoding="utf-8")
        (target / "bin").mkdir()
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(asset.subprocess, "run", fake_run)
    return calls


def test_requirements_are_the_pinned_dependencies_and_the_lambda_extra(checkout: Path) -> None:
    assert asset.runtime_requirements(checkout / "pyproject.toml") == [
        "pynamodb==6.1.0",
        "pyyaml==6.0.3",
        "aws-lambda-powertools[tracer,parser]==3.37.0",
    ]


def test_the_real_pyproject_pins_every_runtime_requirement() -> None:
    requirements = asset.runtime_requirements(infra_synth.ROOT / "pyproject.toml")
    assert any(r.startswith("boto3==") for r in requirements)
    assert any(r.startswith("aws-lambda-powertools") for r in requirements)
    assert all("==" in r for r in requirements)


def test_pip_installs_wheels_for_the_lambda_platform_and_runtime(
    checkout: Path, pip_calls: list[list[str]]
) -> None:
    built = asset.build_lambda_asset(checkout, log=False)
    (command,) = pip_calls
    assert command[command.index("--platform") + 1] == "manylinux2014_aarch64"
    assert command[command.index("--python-version") + 1] == asset.LAMBDA_PYTHON
    assert f"python{asset.LAMBDA_PYTHON}" == LAMBDA_RUNTIME.name
    assert "--only-binary=:all:" in command
    assert command[-3:] == asset.runtime_requirements(checkout / "pyproject.toml")
    assert built.path == checkout / "build" / "lambda-asset"
    assert (built.path / "yaml" / "__init__.py").is_file()
    assert (built.path / "skydag" / "handlers" / "scheduler.py").is_file()
    assert not (built.path / "bin").exists()
    assert not list(built.path.rglob("__pycache__"))
    assert built.rebuilt
    assert built.size_bytes > 0


def test_a_second_build_reuses_everything(checkout: Path, pip_calls: list[list[str]]) -> None:
    first = asset.build_lambda_asset(checkout, log=False)
    second = asset.build_lambda_asset(checkout, log=False)
    assert len(pip_calls) == 1
    assert not second.rebuilt
    assert second.hash == first.hash


def test_a_source_change_rebuilds_the_asset_but_not_the_dependencies(
    checkout: Path, pip_calls: list[list[str]]
) -> None:
    first = asset.build_lambda_asset(checkout, log=False)
    (checkout / "functions" / "skydag" / "handlers" / "scheduler.py").write_text("# changed\n")
    second = asset.build_lambda_asset(checkout, log=False)
    assert second.rebuilt
    assert second.hash != first.hash
    assert len(pip_calls) == 1
    assert (second.path / "skydag" / "handlers" / "scheduler.py").read_text() == "# changed\n"


def test_a_dependency_change_runs_pip_again(checkout: Path, pip_calls: list[list[str]]) -> None:
    asset.build_lambda_asset(checkout, log=False)
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(PYPROJECT.replace("6.0.3", "6.0.4"), encoding="utf-8")
    asset.build_lambda_asset(checkout, log=False)
    assert len(pip_calls) == 2
    assert len(list((checkout / "build" / "lambda-deps").iterdir())) == 1  # stale set removed


def test_the_placeholder_is_chosen_by_env_or_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(asset.ASSET_ENV, raising=False)
    assert not asset.wants_placeholder(None)
    assert asset.wants_placeholder("placeholder")
    monkeypatch.setenv(asset.ASSET_ENV, "placeholder")
    assert asset.wants_placeholder(None)
