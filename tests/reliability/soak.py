"""The soak: many seeds of the fault-injection simulator, and what they found.

    make soak                                   # 50 seeds (SEEDS=N to change)
    python -m tests.reliability --seeds 200     # seeds 1..200
    python -m tests.reliability --seed 17       # one seed alone, e.g. to rerun a failure

Prints one line per seed (faults injected, time, verdict), then the seeds run, the
faults injected by kind, the invariant violations (each with its seed and evidence) and
the seeds to rerun. Exits 1 when any invariant was violated. The local cloud's log of
each failing seed's runs is kept (the path is printed); the others are removed.

Stopped early (Ctrl-C, or SIGTERM to this process), it finishes the seeds in flight,
prints the same summary for the seeds done and the ``--first`` that resumes it, and
exits 130 (1 if a seed done violated an invariant).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .faults import PROFILES
from .scenario import SIZES
from .sweep import DEFAULT_SHAPES, DEFAULT_SIZE, Plan, SeedResult, run_seeds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability",
        description="Run seeds of the fault-injection simulator and check the invariants.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=50, help="how many seeds (default 50)")
    which.add_argument("--seed", type=int, action="append", help="run this seed (repeatable)")
    parser.add_argument("--first", type=int, default=1, help="the first of --seeds (default 1)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="simulations at once, one process each (default: 2, or 1 on one core)",
    )
    parser.add_argument(
        "--shapes",
        type=int,
        choices=(1, 2, 3),
        default=DEFAULT_SHAPES,
        help=f"shape DAGs per scenario (default {DEFAULT_SHAPES})",
    )
    parser.add_argument(
        "--size",
        choices=SIZES,
        default=DEFAULT_SIZE,
        help=f"rotate: one act a seed in turn (shape DAGs and a clear, ops, svc); all: every "
        f"act every seed, three times the work (default {DEFAULT_SIZE})",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="full",
        help="full: every fault anywhere (default); quick: the quick sweep's, which spares "
        "the paths of open findings (docs/guarantees.md)",
    )
    parser.add_argument(
        "--logs", type=Path, help="keep every run's local cloud log here (default: failures)"
    )
    parser.add_argument("--scenario", action="store_true", help="print each seed's scenario")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = args.seed or list(range(args.first, args.first + args.seeds))
    keep_all = args.logs is not None
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="skydag-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[SeedResult] = []
    plan = Plan(shapes=args.shapes, size=args.size, profile=args.profile, log_dir=log_dir)
    stopped = False
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        for result in run_seeds(seeds, jobs=args.jobs, plan=plan):
            results.append(result)
            print(_seed_line(result), flush=True)
            if args.scenario:
                from .scenario import build_scenario

                scenario = build_scenario(result.seed, shapes=args.shapes, size=args.size)
                print(scenario.describe(), flush=True)
            if result.ok and not keep_all:
                for path in log_dir.glob(f"seed-{result.seed}-*.log"):
                    path.unlink()
    except KeyboardInterrupt:
        stopped = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    text = summary(results, time.monotonic() - started, log_dir)
    if stopped:
        text += "\n" + _resume_line(seeds, results, args)
    print(text)
    if not all(result.ok for result in results) or keep_all:
        (log_dir / "summary.txt").write_text(text + "\n")
    if not keep_all and not any(log_dir.iterdir()):
        shutil.rmtree(log_dir, ignore_errors=True)
    if not all(result.ok for result in results):
        return 1
    return 130 if stopped else 0


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _resume_line(
    seeds: Sequence[int], results: Sequence[SeedResult], args: argparse.Namespace
) -> str:
    """Where a soak stopped early resumes (the seeds run are a prefix of ``seeds``)."""
    left = seeds[len(results) :]
    if not left:
        return "stopped early, after the last seed"
    return (
        f"stopped early after {len(results)} of {len(seeds)} seeds; resume with: "
        f"python -m tests.reliability --seeds {len(left)} --first {left[0]}"
    )


def _seed_line(result: SeedResult) -> str:
    verdict = "ok" if result.ok else f"{len(result.violations)} VIOLATION(S)"
    faults = sum(result.faults.values())
    return (
        f"seed {result.seed:>5}: {faults:>4} faults, {result.aws_calls:>5} AWS calls, "
        f"{result.conflicts:>3} lost races, {result.max_in_flight} at once, "
        f"oracle {result.oracle_seconds:5.1f} s, faulty {result.faulty_seconds:5.1f} s: {verdict}"
    )


def summary(results: Sequence[SeedResult], seconds: float, log_dir: Path) -> str:
    faults: Counter[str] = Counter()
    rules: set[str] = set()
    for result in results:
        faults.update(result.faults)
        rules |= result.rules
    failed = [result for result in results if not result.ok]
    violations = [v for result in failed for v in result.violations]
    lines = [
        "",
        f"seeds run: {len(results)} ({', '.join(_ranges([r.seed for r in results]))}) "
        f"in {seconds:.0f} s",
        f"faults injected: {sum(faults.values())}",
    ]
    for kind in sorted(faults):
        lines.append(f"  {kind:<58} {faults[kind]:>6}")
    documented = sum(result.documented_duplicates for result in results)
    lines.append(f"documented Lambda re-invocations (crash or throttle after Invoke): {documented}")
    lines.append(f"trigger rules covered: {len(rules)} of 10")
    calls = sum(result.aws_calls for result in results)
    lines.append(f"AWS calls by the handlers: {calls} ({calls / max(len(results), 1):.0f} a seed)")
    lost = sum(result.conflicts for result in results)
    at_once = max((result.max_in_flight for result in results), default=0)
    lines.append(
        f"lost races re-decided (ConflictError): {lost}; most invocations at once: {at_once}"
    )
    lines.append(f"invariant violations: {len(violations)}")
    by_invariant = Counter(v.invariant for v in violations)
    for invariant, count in sorted(by_invariant.items()):
        lines.append(f"  {invariant:<36} {count:>6}")
    for violation in violations:
        lines.append(f"- {violation.describe()}")
    for result in failed:
        lines.append(f"  seed {result.seed}'s fault rates: {result.rates}")
    if failed:
        seeds = " ".join(str(result.seed) for result in failed)
        lines.append(f"failing seeds: {seeds}")
        lines.append(
            "rerun one alone: python -m tests.reliability "
            + " ".join(f"--seed {result.seed}" for result in failed[:3])
        )
        lines.append(f"their local cloud logs: {log_dir}")
    return "\n".join(lines)


def _ranges(seeds: Sequence[int]) -> list[str]:
    """``1-5, 9`` for [1, 2, 3, 4, 5, 9]."""
    out: list[tuple[int, int]] = []
    for seed in sorted(seeds):
        if out and out[-1][1] == seed - 1:
            out[-1] = (out[-1][0], seed)
        else:
            out.append((seed, seed))
    return [f"{a}-{b}" if a != b else f"{a}" for a, b in out]


if __name__ == "__main__":
    sys.exit(main())
