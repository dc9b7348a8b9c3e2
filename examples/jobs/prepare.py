"""Split the input into shards."""

from __future__ import annotations

import argparse

from _common import identity, workdir

parser = argparse.ArgumentParser()
parser.add_argument("--shards", type=int, required=True)
args = parser.parse_args()
for shard in range(args.shards):
    (workdir() / f"shard_{shard}.txt").write_text(
        "\n".join(str(i) for i in range(shard, 1000, args.shards))
    )
print(f"prepare: {identity()} wrote {args.shards} shards")
