"""Transform one part of the extracted rows."""

from __future__ import annotations

import argparse
import json

from _common import identity, workdir

parser = argparse.ArgumentParser()
parser.add_argument("--part", required=True, choices=["a", "b"])
parser.add_argument("--date", required=True)
args = parser.parse_args()
rows = json.loads((workdir() / "extract.json").read_text())
keep = [r for r in rows if (r["id"] % 2 == 0) == (args.part == "a")]
(workdir() / f"transform_{args.part}.json").write_text(json.dumps(keep))
print(f"transform: {identity()} part {args.part}: {len(keep)} rows for {args.date}")
