"""Remove the run's intermediate files, whatever happened upstream."""

from __future__ import annotations

import argparse
import shutil

from _common import identity, workdir

parser = argparse.ArgumentParser()
parser.add_argument("--date", required=True)
args = parser.parse_args()
shutil.rmtree(workdir(), ignore_errors=True)
print(f"cleanup: {identity()} removed intermediates of {args.date}")
