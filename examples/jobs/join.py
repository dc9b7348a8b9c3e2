"""Join the shard scores (all_done: report whatever shards finished)."""

from __future__ import annotations

import argparse

from _common import identity, workdir

parser = argparse.ArgumentParser()
parser.add_argument("--shards", type=int, required=True)
args = parser.parse_args()
scores = [workdir() / f"score_{s}.txt" for s in range(args.shards)]
done = [int(p.read_text()) for p in scores if p.exists()]
print(f"join: {identity()} {len(done)}/{args.shards} shards, total {sum(done)}")
