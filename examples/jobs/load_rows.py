"""Load what the upstream task staged, told by its output: a count and a JSON manifest."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import identity

parser = argparse.ArgumentParser()
parser.add_argument("--rows", required=True, type=int, help="{{ outputs.stage.rows }}")
parser.add_argument("--manifest", required=True, type=json.loads, help="{{ outputs.stage }}")
args = parser.parse_args()
rows = json.loads(Path(args.manifest["file"]).read_text())
if len(rows) != args.rows:
    sys.exit(f"load: expected {args.rows} rows, found {len(rows)} in {args.manifest['file']}")
print(f"load: {identity()} loaded {len(rows)} rows from {args.manifest['file']}")
