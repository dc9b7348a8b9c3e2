"""Merge every staged page into the warehouse table (a JSON file in dev mode), by order id.

Loads whatever is staged, not only this run's pages: a run whose load failed leaves its
pages behind and the next run's load picks them up, so an advanced watermark never loses
data. The merge is an upsert by id and the table is replaced atomically before the pages
are removed, so a load that crashes halfway and runs again loads nothing twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description="Merge the staged orders into the warehouse.")
    parser.add_argument("--staging", required=True, type=Path, help="the staging folder")
    parser.add_argument("--warehouse", required=True, type=Path, help="the table (a JSON file)")
    args = parser.parse_args()
    pages = sorted(args.staging.glob("*/orders-*.json"))
    table: dict[int, dict[str, Any]] = {}
    if args.warehouse.exists():
        table = {row["id"]: row for row in json.loads(args.warehouse.read_text(encoding="utf-8"))}
    before = len(table)
    for page in pages:
        for row in json.loads(page.read_text(encoding="utf-8")):
            table[row["id"]] = row
    args.warehouse.parent.mkdir(parents=True, exist_ok=True)
    partial = args.warehouse.with_suffix(".partial")
    partial.write_text(json.dumps([table[key] for key in sorted(table)]), encoding="utf-8")
    partial.replace(args.warehouse)
    for page in pages:
        page.unlink()
    for folder in {page.parent for page in pages}:
        if not any(folder.iterdir()):
            folder.rmdir()
    print(
        f"load: {len(pages)} pages merged, {len(table) - before} new orders, "
        f"{len(table)} in {args.warehouse}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
