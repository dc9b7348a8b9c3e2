"""Roll the model server onto a new model (dev mode stands in for the Lambda target)."""

from __future__ import annotations

import argparse
import time

from _common import identity

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
args = parser.parse_args()
for step in ("drain", "swap model", "warm up", "serve"):
    time.sleep(0.1)
    print(f"redeploy: {identity()} {step} -> {args.model}", flush=True)
