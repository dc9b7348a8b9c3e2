"""Announce a validated model (dev mode stands in for the `emit` target)."""

from __future__ import annotations

import argparse
import json

from _common import identity, workdir

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
args = parser.parse_args()
event = {"detail-type": "model.validated", "detail": {"model_uri": args.model}}
(workdir() / "published.json").write_text(json.dumps(event))
print(f"publish: {identity()} {json.dumps(event)}")
