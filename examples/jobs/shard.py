"""Score one shard."""

from __future__ import annotations

import argparse

from _common import identity, workdir

parser = argparse.ArgumentParser()
parser.add_argument("--shard", required=True)
args = parser.parse_args()
values = [int(v) for v in (workdir() / f"shard_{args.shard}.txt").read_text().split()]
(workdir() / f"score_{args.shard}.txt").write_text(str(sum(values)))
print(f"shard: {identity()} shard {args.shard}: {len(values)} items")
