"""Stage the orders changed in [--since, --until), page by page, and advance the watermark.

The window comes from the DAG's templates: --since is the watermark the previous run
stored (the extract task's task-scope state), --until the end of this run's data interval.
Task state does the bookkeeping:

* after each staged page, a checkpoint (instance scope: this run's extract, kept across its
  retries) records the last order staged, so a retried try resumes after it;
* once the whole window is staged, the watermark (task scope: kept across runs) moves to
  --until, by compare-and-set on the version read at the start, so two runs can never
  both believe they advanced it.

The source is a small, fixed, generated table of orders (five days from 2026-01-01, one
every 30 minutes), so every run of this example sees the same data. Pages are written
atomically and named by the orders they hold: extracting a page again rewrites the same
file, never a duplicate.

Set ETL_EXTRACT_CRASH_AFTER_PAGES=N to make the first try crash after staging N pages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from skydag import taskstate

SOURCE_OPENED = datetime(2026, 1, 1, tzinfo=UTC)
SOURCE_ORDERS = 240
ORDER_EVERY = timedelta(minutes=30)
# A checkpoint matters only while this run's extract may be retried or cleared.
CHECKPOINT_TTL = timedelta(days=7)
CRASH_VARIABLE = "ETL_EXTRACT_CRASH_AFTER_PAGES"

Order = dict[str, Any]


def source_orders() -> list[Order]:
    """The source table, ordered as the extract reads it: by (updated_at, id)."""
    return [
        {
            "id": number,
            "updated_at": (SOURCE_OPENED + (number - 1) * ORDER_EVERY).isoformat(),
            "amount": round(5 + (number * 37) % 101 + 0.99, 2),
        }
        for number in range(1, SOURCE_ORDERS + 1)
    ]


def cursor_of(order: Order) -> list[Any]:
    return [order["updated_at"], order["id"]]


def next_page(
    orders: list[Order], since: datetime, until: datetime, after: list[Any] | None, size: int
) -> list[Order]:
    """Keyset pagination: the next ``size`` orders of the window after the cursor."""
    page: list[Order] = []
    for order in orders:
        updated = datetime.fromisoformat(order["updated_at"])
        if not since <= updated < until:
            continue
        if after is not None and (updated, order["id"]) <= (
            datetime.fromisoformat(after[0]),
            after[1],
        ):
            continue
        page.append(order)
        if len(page) == size:
            break
    return page


def stage(folder: Path, page: list[Order]) -> Path:
    """Write a page atomically: a crash mid-write leaves no partial page for load."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"orders-{page[0]['id']:06d}-{page[-1]['id']:06d}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(page), encoding="utf-8")
    partial.replace(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description="Stage the orders changed in a window.")
    parser.add_argument("--since", required=True, type=datetime.fromisoformat)
    parser.add_argument("--until", required=True, type=datetime.fromisoformat)
    parser.add_argument("--out", required=True, type=Path, help="the staging folder")
    parser.add_argument("--page-size", type=int, default=24)
    args = parser.parse_args()
    since, until = args.since, args.until
    window = [since.isoformat(), until.isoformat()]
    attempt = os.environ.get("SKYDAG_TRY", "?")
    print(f"extract: window {window[0]} .. {window[1]} (try {attempt})", flush=True)

    # Read now, written back with compare-and-set once the window is staged.
    watermark_at_start = taskstate.get_versioned("watermark")

    # The checkpoint is written by compare-and-set too: should a try that skydag gave up
    # on (timed out) still be running, it cannot overwrite the progress of the next one.
    stored = taskstate.get_versioned("checkpoint", scope="instance")
    checkpoint_version = stored.version if stored else 0
    if stored and stored.value["window"] == window:
        cursor, pages, rows = stored.value["cursor"], stored.value["pages"], stored.value["rows"]
        print(f"extract: resuming after page {pages} ({rows} orders) from the checkpoint")
    else:
        cursor, pages, rows = None, 0, 0

    crash_after = int(os.environ.get(CRASH_VARIABLE, "0")) if attempt == "1" else 0
    folder = args.out / os.environ.get("SKYDAG_RUN", "adhoc").replace(":", "_")
    orders = source_orders()
    staged_this_try = 0
    while page := next_page(orders, since, until, cursor, args.page_size):
        path = stage(folder, page)
        cursor, pages, rows = cursor_of(page[-1]), pages + 1, rows + len(page)
        checkpoint_version = taskstate.put(
            "checkpoint",
            {"window": window, "cursor": cursor, "pages": pages, "rows": rows},
            scope="instance",
            ttl=CHECKPOINT_TTL,
            expected_version=checkpoint_version,
        )
        staged_this_try += 1
        print(f"extract: page {pages}: orders {page[0]['id']}-{page[-1]['id']} -> {path.name}")
        if staged_this_try == crash_after:
            print(f"extract: simulated crash after {crash_after} pages ({CRASH_VARIABLE})")
            return 1

    if watermark_at_start and datetime.fromisoformat(watermark_at_start.value) >= until:
        # A backfill of an old interval: never move the watermark backwards.
        print(f"extract: watermark stays at {watermark_at_start.value}")
    else:
        try:
            version = taskstate.put(
                "watermark",
                until.isoformat(),
                expected_version=watermark_at_start.version if watermark_at_start else 0,
            )
        except taskstate.VersionConflict as conflict:
            print(f"extract: another run moved the watermark meanwhile: {conflict}")
            return 1
        print(f"extract: watermark {until.isoformat()} stored (version {version})")
    print(f"extract: {rows} orders in {pages} pages staged for this window")
    return 0


if __name__ == "__main__":
    sys.exit(main())
