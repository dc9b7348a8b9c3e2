"""A stand-in for a model server (dev mode): serves one model until stopped (SIGTERM)."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from _common import identity

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
args = parser.parse_args()


def stop(signum: int, frame: object) -> None:
    print(f"server: {identity()} stopped serving {args.model}", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print(f"server: {identity()} serving {args.model}", flush=True)
while True:
    time.sleep(0.5)
