"""Load the transformed parts into the warehouse table (a file, in dev mode)."""

from __future__ import annotations

import argparse
import json

from _common import identity, workdir

parser = argparse.ArgumentParser()
parser.add_argument("--table", required=True)
args = parser.parse_args()
total = sum(len(json.loads((workdir() / f"transform_{p}.json").read_text())) for p in "ab")
print(f"load: {identity()} {total} rows into {args.table}")
