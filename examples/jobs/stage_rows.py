"""Stage some rows, then publish how many and where as this try's output.

Downstream templates see the output as ``outputs.stage``. The shell equivalent of the
last line is ``skydag output set '{"rows": 3, "file": "..."}'``.
"""

from __future__ import annotations

import argparse
import json

from _common import identity, workdir

from skydag import taskstate

parser = argparse.ArgumentParser()
parser.add_argument("--rows", required=True, type=int)
args = parser.parse_args()
rows = [{"id": i, "amount": i * 3 % 17} for i in range(args.rows)]
staged = workdir() / "staged.json"
staged.write_text(json.dumps(rows))
taskstate.set_output({"rows": len(rows), "file": str(staged)})
print(f"stage: {identity()} staged {len(rows)} rows in {staged}")
