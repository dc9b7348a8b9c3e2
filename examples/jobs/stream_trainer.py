"""A stand-in for a streaming trainer (dev mode): trains until stopped (SIGTERM)."""

from __future__ import annotations

import signal
import sys
import time

from _common import identity


def stop(signum: int, frame: object) -> None:
    print(f"trainer: {identity()} stopping (signal {signum})", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print(f"trainer: {identity()} training on the stream", flush=True)
while True:
    time.sleep(0.5)
