"""Extract one data interval's rows into the run's folder."""

from __future__ import annotations

import argparse
import json

from _common import identity, workdir

parser = argparse.ArgumentParser()
parser.add_argument("--since", required=True)
parser.add_argument("--until", required=True)
args = parser.parse_args()
rows = [{"id": i, "amount": i * 3 % 17} for i in range(100)]
(workdir() / "extract.json").write_text(json.dumps(rows))
print(f"extract: {identity()} {len(rows)} rows from {args.since} to {args.until}")
