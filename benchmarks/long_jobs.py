"""What a job that runs for a while costs beyond an instant one: the reconciler's safety net.

The scenarios' jobs end at once, so they never meet it. A try queued by its upstream's
finish is *covered* by its run's due entry (no entry of its own). A job still running
at its first look (its claim's expiry, 5 minutes after it was queued) is *uncovered* by
the run's look then: it gets an entry of its own, there. From then on the
passes that come at its looks (``engine/rules.py looks_at_entry``: there, 10 minutes on,
then gaps that double, hourly at most; each look made by the pass at it and the one
after) read it and describe its job; finding it running, they write nothing. Its finish
takes the entry out.

Measured through the same code as the scenarios: a Batch job kept running by its local
stand-in, the reconciler's passes made at the times they would come
(``Reconciler.reconcile(now=...)``), each pass's AWS calls and the stream records its
writes make metered and priced, less a pass that reads nothing (the pass runs every 5
minutes anyway; its own duration is its calls' round trips, as the meter bills a
handler's waits). The baseline is the way it was before: a look every 10 minutes, each
a read of the try and its run and a move of the entry (the run's read and the move
measured here too: the same calls, the write's stream record).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import cost
from metering import CostMeter
from run_local_cloud_benchmarks import BATCH_TARGET as BATCH
from run_local_cloud_benchmarks import finished, load, trigger
from skydag import wiring
from skydag.engine.rules import (
    DISPATCH_CHECK_AFTER,
    RECONCILE_EVERY,
    RUN_CHECK_AFTER,
    RUNNING_CHECK_EVERY,
    looks_at_entry,
)
from skydag.engine.states import TaskState
from skydag.localcloud.cloud import LocalCloud
from skydag.service.factory import build_service
from skydag.store.repositories import Repositories

DAG = "cost_long_job"
# Long enough for the passes below (each well under a second), short enough to wait for.
STAND_IN = timedelta(seconds=30)
_LOCAL = f"local: {{duration: {int(STAND_IN.total_seconds())}s}}"
BODY = (
    f"dag: {DAG}\ntasks:\n"
    f"  first: {{{BATCH}}}\n"
    f"  long: {{depends_on: [first], {BATCH}, {_LOCAL}}}\n"
).encode()
# Many long jobs at once: a pass's page (100 entries) of them, described together.
MANY = 100
MANY_DAG = "cost_long_jobs"
MANY_BODY = (
    f"dag: {MANY_DAG}\nmax_active_tasks: {MANY + 1}\ntasks:\n"
    f"  first: {{{BATCH}}}\n"
    + "".join(f"  long{i}: {{depends_on: [first], {BATCH}, {_LOCAL}}}\n" for i in range(MANY))
).encode()
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
LENGTHS = (
    timedelta(seconds=30),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
)


@dataclass(frozen=True)
class Step:
    """What one reconciler pass (or write) and the stream records it caused cost."""

    dollars: float
    write_units: float
    read_units: float
    calls: int


@dataclass(frozen=True)
class LongJobFigures:
    uncover: Step
    reads: tuple[Step, ...]  # passes that read the entry and describe the job
    move: Step  # the write a look made before: the entry moved on, its stream record
    run_read: Step  # the read of the try's run a look made before
    finish_entry_out: float  # dollars: the finish's extra index write (an entry to remove)
    # A pass reading MANY running jobs at once: per job, but ``calls`` the pass's in all.
    many: Step | None = None
    many_one_by_one: Step | None = None  # the same pass describing each job alone (before)

    @property
    def read_dollars(self) -> float:
        return sum(step.dollars for step in self.reads) / len(self.reads)

    @property
    def read_units(self) -> tuple[float, float, float]:
        """A reading pass's write units, read units and calls, over those measured."""
        n = len(self.reads)
        return (
            sum(step.write_units for step in self.reads) / n,
            sum(step.read_units for step in self.reads) / n,
            sum(step.calls for step in self.reads) / n,
        )

    def extra_per_million(
        self, length: timedelta, *, before: bool = False, many: bool = False
    ) -> float:
        """What a job of ``length`` adds per million tasks over an instant one. Now: a
        job still running at its first look (its claim's expiry) is uncovered by the pass
        that makes it (measured with that look), then read by the passes at its looks.
        ``before``: uncovered at its run's look a minute after its upstream's count, then
        looked at every 10 minutes, each look a read of the try and its run and a move.
        ``many``: its looks made by passes that read ``MANY`` running jobs at once."""
        if before:
            if length < RUN_CHECK_AFTER:
                return 0.0
            dollars = self.uncover.dollars - self.read_dollars + self.finish_entry_out
            before = self.read_dollars + self.run_read.dollars + self.move.dollars
            dollars += looks_before(length) * before
            return dollars * 1e6
        if length <= DISPATCH_CHECK_AFTER:
            return 0.0  # ended before its first look: its run's entry stood for it
        look = self.many.dollars if many and self.many is not None else self.read_dollars
        dollars = self.uncover.dollars + self.finish_entry_out
        dollars += (reading_passes(length) - 1) * look
        return dollars * 1e6


def reading_passes(length: timedelta) -> int:
    """How many passes (every RECONCILE_EVERY from the entry's place, the claim's expiry
    DISPATCH_CHECK_AFTER into the try) read a job that runs ``length``."""
    place = EPOCH + DISPATCH_CHECK_AFTER
    count, at = 0, place
    while at < EPOCH + length:
        count += looks_at_entry(place, at)
        at += RECONCILE_EVERY
    return count


def looks_before(length: timedelta) -> int:
    """The looks at a job running ``length`` at the pace before: the claim's expiry, then
    every RUNNING_CHECK_EVERY from the start."""
    if length <= DISPATCH_CHECK_AFTER:
        return 0
    return 1 + max(0, (length - timedelta(microseconds=1)) // RUNNING_CHECK_EVERY)


def measure(cloud: LocalCloud, repos: Repositories, meter: CostMeter) -> LongJobFigures:
    """One run of ``first -> long``: ``long`` is covered when its upstream's finish queues
    it; the run's look uncovers it; then passes at its looks and after them read it, a
    pass between its looks reads nothing (the idle baseline), and the old move is made
    once."""
    load(cloud, repos, DAG, BODY)
    cloud.run_until(lambda: not cloud.busy(), timeout=60)
    trigger(cloud, DAG, "r-long")

    def running() -> bool:
        ti = repos.tasks.find(DAG, "r-long", "long")
        return ti is not None and ti.state is TaskState.RUNNING

    if not cloud.run_until(running, timeout=60):
        raise TimeoutError(f"{DAG}: its long job did not start")
    cloud.run_until(lambda: not cloud.busy(jobs=False), timeout=30)
    service = build_service(cloud.settings)
    ti = repos.tasks.get(DAG, "r-long", "long")
    if not ti.covered or ti.queued_at is None:
        raise AssertionError(f"{DAG}: the long job's try was not covered by its run")

    def step(at: datetime, what: str, action: Callable[[], object] | None = None) -> Step:
        before_usage, before_calls = _snapshot(meter)
        with meter.charged_to("Reconciler", f"long job: {what}"):
            result = action() if action else service.reconcile(at, limit=100)
        cloud.run_until(lambda: not cloud.busy(jobs=False), timeout=30)  # its records
        if action is None and not _expected(what, result):
            raise AssertionError(f"{DAG}: the pass at {at} did not {what}: {result}")
        return _difference(meter, before_usage, before_calls)

    place = ti.check_at
    assert place is not None
    # The run's look a minute on leaves the running job covered (its first look, its
    # claim's expiry, has not come); the pass at that look uncovers it and reads it.
    step(ti.queued_at + RUN_CHECK_AFTER + timedelta(seconds=1), "leave it covered")
    uncover = step(place + timedelta(seconds=1), "uncover it")
    # The run is disarmed at the first pass once its last count is quiet (not measured:
    # the chain's figures charge it), then a pass between the entry's looks reads nothing.
    step(place + timedelta(minutes=21), "read nothing")
    idle = step(place + timedelta(minutes=25), "read nothing")
    reads = tuple(
        _less(step(place + timedelta(minutes=minutes), "describe it"), idle)
        for minutes in (30, 35, 70)
    )
    current = repos.tasks.get(DAG, "r-long", "long")
    move = step(
        place,
        "move it (as before)",
        lambda: repos.tasks.check_later(current, place + timedelta(hours=2)),
    )
    run_read = step(place, "read its run (as before)", lambda: repos.runs.get(DAG, "r-long"))
    deadline = time.monotonic() + STAND_IN.total_seconds() + 60
    while not finished(repos, DAG, "r-long") and time.monotonic() < deadline:
        cloud.run_until(lambda: finished(repos, DAG, "r-long"), timeout=5)
    if not finished(repos, DAG, "r-long"):
        raise TimeoutError(f"{DAG}: its run did not end")
    # The finish of an uncovered try deletes its keys-only index entry: one write unit.
    return LongJobFigures(
        _less(uncover, idle), reads, move, run_read, cost.price_of("dynamodb.wru", 1)
    )


def measure_many(
    cloud: LocalCloud, repos: Repositories, meter: CostMeter, figures: LongJobFigures
) -> LongJobFigures:
    """``MANY`` long jobs running at once (``first -> long0 .. long99``): a pass at their
    entries' look reads them as one page (a BatchGetItem) and asks Batch about them in
    one DescribeJobs call, where a lone job pays both calls itself. ``figures`` with the
    per-job cost of that pass (``many``), less a pass that reads nothing."""
    load(cloud, repos, MANY_DAG, MANY_BODY)
    cloud.run_until(lambda: not cloud.busy(), timeout=60)
    trigger(cloud, MANY_DAG, "r-many")
    names = [f"long{i}" for i in range(MANY)]

    def all_running() -> bool:
        tis = repos.tasks.get_many(MANY_DAG, "r-many", names)
        return len(tis) == MANY and all(ti.state is TaskState.RUNNING for ti in tis)

    if not cloud.run_until(all_running, timeout=120):
        raise TimeoutError(f"{MANY_DAG}: its {MANY} long jobs did not all start")
    cloud.run_until(lambda: not cloud.busy(jobs=False), timeout=30)
    service = build_service(cloud.settings)
    tis = repos.tasks.get_many(MANY_DAG, "r-many", names)
    place = max(ti.check_at for ti in tis if ti.check_at is not None)
    queued = max(ti.queued_at for ti in tis if ti.queued_at is not None)

    def step(at: datetime, expected: Callable[[Any], bool]) -> Step:
        before_usage, before_calls = _snapshot(meter)
        with meter.charged_to("Reconciler", "long jobs"):
            result = service.reconcile(at, limit=MANY)
        cloud.run_until(lambda: not cloud.busy(jobs=False), timeout=60)
        if not expected(result):
            raise AssertionError(f"{MANY_DAG}: the pass at {at}: {result}")
        return _difference(meter, before_usage, before_calls)

    step(queued + RUN_CHECK_AFTER + timedelta(seconds=1), lambda r: r.uncovered == 0)
    step(place + timedelta(seconds=1), lambda r: r.uncovered == MANY)
    step(place + timedelta(minutes=21), lambda r: r.described == 0)
    idle = step(place + timedelta(minutes=25), lambda r: r.described == 0)
    read = _less(step(place + timedelta(minutes=30), lambda r: r.described == MANY), idle)
    # The pass after a look makes it too: asked one job at a time there, as before.
    reconciler = service.reconciler
    reconciler._describe_together = lambda page, now: {}  # type: ignore[method-assign]
    alone = _less(step(place + timedelta(minutes=35), lambda r: r.described == MANY), idle)
    per_job, one_by_one = (
        Step(x.dollars / MANY, x.write_units / MANY, x.read_units / MANY, x.calls)
        for x in (read, alone)
    )
    deadline = time.monotonic() + STAND_IN.total_seconds() + 120
    while not finished(repos, MANY_DAG, "r-many") and time.monotonic() < deadline:
        cloud.run_until(lambda: finished(repos, MANY_DAG, "r-many"), timeout=5)
    return replace(figures, many=per_job, many_one_by_one=one_by_one)


def _expected(what: str, result: Any) -> bool:
    if what == "uncover it":
        return bool(result.uncovered == 1 and result.described == 1)
    if what == "describe it":
        return bool(result.described == 1 and result.acted == 0)
    return bool(result.described == 0 and result.uncovered == 0)


def _less(step: Step, idle: Step) -> Step:
    return Step(
        step.dollars - idle.dollars,
        step.write_units - idle.write_units,
        step.read_units - idle.read_units,
        step.calls - idle.calls,
    )


def _snapshot(meter: CostMeter) -> tuple[cost.Usage, Counter[str]]:
    usage = cost.Usage()
    usage.merge(meter.usage)
    return usage, Counter(meter.calls)


def _difference(meter: CostMeter, usage: cost.Usage, calls: Counter[str]) -> Step:
    spent = cost.Usage()
    spent.merge(meter.usage)
    for key, quantity in usage.lines.items():
        spent.lines[key] -= quantity
    made = Counter(meter.calls)
    made.subtract(calls)
    # The pass's own time: the round trips of the calls it made for this job (the stream
    # processor's invocation is metered as any other).
    dynamodb = sum(n for name, n in made.items() if name.startswith("dynamodb:") and n > 0)
    other = sum(n for name, n in made.items() if not name.startswith("dynamodb:") and n > 0)
    memory = wiring.RECONCILER.memory_mb
    seconds = cost.lambda_billed_seconds(0.0, memory, dynamodb_calls=dynamodb, other_calls=other)
    spent.add("lambda.gb_s", seconds * memory / 1024, "Reconciler", "long job", "duration", "")
    return Step(
        spent.dollars(),
        spent.quantity("dynamodb.wru"),
        spent.quantity("dynamodb.rru"),
        sum(n for n in made.values() if n > 0),
    )


def section(figures: LongJobFigures, chain_per_million: float) -> list[str]:
    """The report's section: the safety net's cost by job length, now and before."""
    uncover = figures.uncover
    writes, reads, calls = figures.read_units
    lines = [
        "## A job that runs for a while: the reconciler's safety net",
        "",
        "The scenarios' jobs end at once. A job still running at its first look (its "
        "claim's expiry, 5 minutes after it was queued) is uncovered then (an entry of its "
        "own), read and described by the passes at its "
        "entry's looks (there, 10 minutes on, then gaps that double, hourly at most; each "
        "look made by the pass at it and the one after), which write nothing while it "
        "runs, and its entry is taken out at its finish. Measured "
        "(`benchmarks/long_jobs.py`, a Batch job kept running by its local stand-in, the "
        "reconciler's passes made at their times, less a pass that reads nothing): "
        f"uncovering it ${uncover.dollars * 1e6:.2f} per million jobs "
        f"({uncover.write_units:.0f} write units, with the run's look, the first read and "
        "the stream record it makes); each "
        f"pass that reads it ${figures.read_dollars * 1e6:.2f} per million "
        f"({writes:.1f} write units, {reads:.1f} read units, {calls:.1f} calls: the try and "
        "DescribeJobs); before, each look also read the try's run "
        f"(${figures.run_read.dollars * 1e6:.2f}) and moved the entry "
        f"(${figures.move.dollars * 1e6:.2f}: {figures.move.write_units:.0f} write units and "
        "its stream record), measured here the same way; its finish "
        f"${figures.finish_entry_out * 1e6:.2f} (the entry taken out).",
    ]
    many = figures.many
    if many is not None:
        lines[-1] += (
            f" With {MANY} long jobs running at once (`first -> long0 .. long{MANY - 1}`), a "
            f"pass at their looks read them as one page and asked Batch about them "
            f"together: {many.calls} calls in all (the page's BatchGetItem, one "
            f"DescribeJobs for 100 jobs), ${many.dollars * 1e6:.2f} per million per job "
            "(the pass's wait for its calls shared by the page; the last column prices "
            "the looks at that rate)"
        )
        alone = figures.many_one_by_one
        if alone is not None:
            lines[-1] += (
                f"; the pass after, asking Batch about each job alone as before, made "
                f"{alone.calls} calls, ${alone.dollars * 1e6:.2f} per million per job"
            )
        lines[-1] += "."
    lines += [
        "",
        "| job runs | looks before (uncovered at 1 min, 10-minute pace) | passes reading it now "
        "| + $/M tasks before | + $/M tasks now | before / now | chain task now "
        f"| + $/M tasks now, {MANY} at once |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for length in LENGTHS:
        before = figures.extra_per_million(length, before=True)
        now = figures.extra_per_million(length)
        ratio = f"{before / now:.1f}x" if now else "-"
        at_once = f"{figures.extra_per_million(length, many=True):.2f}" if many is not None else "-"
        lines.append(
            f"| {_length(length)} | {looks_before(length)} | {reading_passes(length)} "
            f"| {before:.2f} | {now:.2f} | {ratio} | {chain_per_million + now:.2f} "
            f"| {at_once} |"
        )
    lines += [
        "",
        "The chain task column adds the safety net to the chain 50 figure above: what a "
        "chain task whose Batch job runs that long costs, all in.",
        "",
    ]
    return lines


def _length(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    if seconds % 86_400 == 0:
        return f"{seconds // 86_400} d"
    if seconds % 3_600 == 0:
        return f"{seconds // 3_600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
