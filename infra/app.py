"""Entry point of the CDK app (``cdk.json``: ``.venv/bin/python infra/app.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The CDK CLI runs this file directly: make the infra package and the functions importable.
sys.path[:0] = [str(ROOT / "infra"), str(ROOT / "functions")]

from skydag_infra.app import main  # noqa: E402

if __name__ == "__main__":
    main()
