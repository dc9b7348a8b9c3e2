"""Score a model on a held-out set; exit 1 when it scores below the threshold."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

from _common import identity, workdir


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--threshold", type=float, required=True)
    args = parser.parse_args()
    print(f"evaluate: {identity()} model={args.model}", flush=True)
    for batch in range(1, 4):
        time.sleep(0.1)
        print(f"evaluate: batch {batch}/3 scored", flush=True)
    # A stable pseudo-score per model URI, so the demo is repeatable.
    digest = hashlib.sha256(args.model.encode()).digest()
    score = 0.9 + (digest[0] / 255) * 0.1
    (workdir() / "score.txt").write_text(f"{score:.4f}\n")
    print(f"evaluate: accuracy {score:.4f} (threshold {args.threshold})", flush=True)
    return 0 if score >= args.threshold else 1


if __name__ == "__main__":
    sys.exit(main())
