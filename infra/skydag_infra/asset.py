"""The Lambda asset, built without Docker: the ``skydag`` package plus its runtime wheels.

``pip install --platform manylinux2014_aarch64 --only-binary=:all:`` fetches the wheels the
Lambda runtime (arm64, CPython ``LAMBDA_PYTHON``) loads, whatever machine synthesises. The
dependency layer is cached under ``build/lambda-deps/<hash of the pinned requirements>`` and
the asset under ``build/lambda-asset/`` is reused while the requirements and the package
sources are unchanged, so a repeated synth costs a hash of the sources, not a pip run.

boto3/botocore are installed too (pinned in pyproject), not taken from the runtime: the
functions then run exactly the SDK the tests ran against.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Must match the function runtime (construct.py derives the runtime from it).
LAMBDA_PYTHON = "3.14"
LAMBDA_PLATFORM = "manylinux2014_aarch64"
PACKAGE = "skydag"
# Set to "placeholder" (or pass the context value ``skydag:lambdaAsset=placeholder``) to skip
# pip in unit tests: the functions then get a one-file placeholder instead of the package.
ASSET_ENV = "SKYDAG_LAMBDA_ASSET"
PLACEHOLDER = "placeholder"
_STAMP = ".skydag-asset-hash"
_SKIPPED = {"__pycache__", ".mypy_cache", ".pytest_cache"}


@dataclass(frozen=True, slots=True)
class LambdaAsset:
    path: Path
    hash: str  # a content hash: used as the CDK asset hash, so CDK need not re-fingerprint
    size_bytes: int
    rebuilt: bool


def runtime_requirements(pyproject: Path) -> list[str]:
    """``[project.dependencies]`` + the ``lambda`` extra, exactly as pinned."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras: list[str] = project.get("optional-dependencies", {}).get("lambda", [])
    return [*project["dependencies"], *extras]


def build_lambda_asset(source_root: Path, *, log: bool = True) -> LambdaAsset:
    """Build (or reuse) ``build/lambda-asset/`` for the checkout at ``source_root``."""
    requirements = runtime_requirements(source_root / "pyproject.toml")
    deps_hash = _digest([LAMBDA_PYTHON, LAMBDA_PLATFORM, *requirements])
    package_dir = source_root / "functions" / PACKAGE
    asset_hash = _digest([deps_hash, *_file_digests(package_dir)])

    asset_dir = source_root / "build" / "lambda-asset"
    stamp = asset_dir / _STAMP
    rebuilt = not (stamp.is_file() and stamp.read_text(encoding="utf-8") == asset_hash)
    if rebuilt:
        deps_dir = _dependencies(source_root / "build" / "lambda-deps", deps_hash, requirements)
        staging = Path(tempfile.mkdtemp(prefix="lambda-asset-", dir=source_root / "build"))
        shutil.copytree(deps_dir, staging, dirs_exist_ok=True)
        shutil.copytree(package_dir, staging / PACKAGE, ignore=_ignore_caches)
        (staging / _STAMP).write_text(asset_hash, encoding="utf-8")
        shutil.rmtree(asset_dir, ignore_errors=True)
        staging.rename(asset_dir)

    size = sum(f.stat().st_size for f in asset_dir.rglob("*") if f.is_file())
    if log:
        state = "built" if rebuilt else "cached"
        # stderr: `cdk synth` shows it, and stdout stays the template for `cdk synth > x`.
        print(
            f"skydag: Lambda asset {state}: {size / 1e6:.1f} MB unzipped "
            f"(python{LAMBDA_PYTHON}, {LAMBDA_PLATFORM}) at {asset_dir}",
            file=sys.stderr,
        )
    return LambdaAsset(asset_dir, asset_hash, size, rebuilt)


def placeholder_asset(build_dir: Path) -> LambdaAsset:
    """A one-file asset for unit tests: same handlers in the template, no pip, no wheels."""
    path = build_dir / "lambda-placeholder"
    path.mkdir(parents=True, exist_ok=True)
    marker = path / "PLACEHOLDER.txt"
    text = "Unit-test placeholder: `make synth` builds the real asset in build/lambda-asset/.\n"
    if not marker.is_file() or marker.read_text(encoding="utf-8") != text:
        marker.write_text(text, encoding="utf-8")
    return LambdaAsset(path, _digest([text]), len(text), rebuilt=False)


def wants_placeholder(context_value: object) -> bool:
    return PLACEHOLDER in (os.environ.get(ASSET_ENV), context_value)


def _dependencies(cache_root: Path, deps_hash: str, requirements: list[str]) -> Path:
    target = cache_root / deps_hash
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{deps_hash}-", dir=cache_root))
    command = [
        sys.executable, "-m", "pip", "install",
        "--quiet", "--disable-pip-version-check", "--no-compile",
        "--platform", LAMBDA_PLATFORM,
        "--implementation", "cp",
        "--python-version", LAMBDA_PYTHON,
        "--only-binary=:all:",
        "--target", str(staging),
        *requirements,
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Console scripts are for a shell, not for the runtime.
    shutil.rmtree(staging / "bin", ignore_errors=True)
    for old in cache_root.iterdir():  # keep one dependency set: the others are stale
        if old != staging:
            shutil.rmtree(old, ignore_errors=True)
    staging.rename(target)
    return target


def _file_digests(root: Path) -> Iterable[str]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not _SKIPPED.intersection(path.relative_to(root).parts):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            yield f"{path.relative_to(root).as_posix()}:{digest}"


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _ignore_caches(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in _SKIPPED or n.endswith(".pyc")}
