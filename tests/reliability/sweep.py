"""Seeds run and judged: the oracle and the faulty run of each seed, then the invariants.

The two runs of a seed are independent processes (moto's state is process-wide, so one
local cloud per process), run ``jobs`` at a time: with two cores, a seed's oracle and
faulty run go side by side.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .invariants import Violation, check_outcome, compare
from .scenario import build_scenario
from .simulator import Outcome, simulate

DEFAULT_SHAPES = 1  # with the rotating size: one shape DAG, two runs, a clear
DEFAULT_SIZE = "rotate"


@dataclass
class SeedResult:
    seed: int
    violations: list[Violation] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    rates: str = ""
    # Lambda invocations repeated after a crash right after Invoke (docs/targets.md).
    documented_duplicates: int = 0
    oracle_seconds: float = 0.0
    faulty_seconds: float = 0.0
    aws_calls: int = 0
    rules: frozenset[str] = frozenset()
    # Of both runs: the most invocations at once, the races lost (ConflictErrors).
    max_in_flight: int = 0
    conflicts: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class Plan:
    """How the seeds run: shape DAGs per scenario, fault profile, where logs go."""

    shapes: int = DEFAULT_SHAPES
    # The scenario's size (``scenario.SIZES``): one act per seed in turn, or every act.
    size: str = DEFAULT_SIZE
    profile: str = "full"
    log_dir: Path | None = None


def _simulate(seed: int, faulty: bool, plan: Plan) -> Outcome:
    log_path = None
    if plan.log_dir is not None:
        log_path = plan.log_dir / f"seed-{seed}-{'faulty' if faulty else 'oracle'}.log"
    return simulate(
        seed,
        faulty=faulty,
        shapes=plan.shapes,
        size=plan.size,
        profile=plan.profile,
        log_path=log_path,
    )


def judge(
    seed: int,
    oracle: Outcome | BaseException,
    faulty: Outcome | BaseException,
    *,
    shapes: int = DEFAULT_SHAPES,
    size: str = DEFAULT_SIZE,
) -> SeedResult:
    scenario = build_scenario(seed, shapes=shapes, size=size)
    result = SeedResult(seed, rules=frozenset(scenario.rules))
    outcomes: list[Outcome] = []
    for which, outcome in (("oracle", oracle), ("faulty", faulty)):
        if isinstance(outcome, BaseException):
            text = "".join(traceback.format_exception(outcome)).strip()
            result.violations.append(Violation(seed, which, "the simulation ran", text))
            continue
        outcomes.append(outcome)
        violations, documented = check_outcome(scenario, outcome)
        result.violations.extend(violations)
        result.aws_calls += outcome.aws_calls
        result.max_in_flight = max(result.max_in_flight, outcome.max_in_flight)
        result.conflicts += outcome.conflicts
        if outcome.faulty:
            result.faults.update(outcome.faults)
            result.rates = outcome.rates
            result.faulty_seconds = outcome.seconds
            result.documented_duplicates = documented
        else:
            result.oracle_seconds = outcome.seconds
    if isinstance(oracle, Outcome) and isinstance(faulty, Outcome):
        result.violations.extend(compare(oracle, faulty))
    return result


def run_seeds(
    seeds: Iterable[int], *, jobs: int = 2, plan: Plan | None = None
) -> Iterator[SeedResult]:
    """Each seed's result, in the order given, as soon as both its runs are done."""
    seeds = list(seeds)
    plan = plan or Plan()
    if jobs <= 1:
        for seed in seeds:
            outcomes = _guarded(seed, False, plan), _guarded(seed, True, plan)
            yield judge(seed, *outcomes, shapes=plan.shapes, size=plan.size)
        return
    # A fresh interpreter per worker: no thread or moto state inherited from the caller.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    try:
        pending: list[tuple[int, Future[Outcome], Future[Outcome]]] = [
            (
                seed,
                pool.submit(_simulate, seed, False, plan),
                pool.submit(_simulate, seed, True, plan),
            )
            for seed in seeds
        ]
        for seed, oracle_run, faulty_run in pending:
            yield judge(
                seed,
                _result(oracle_run),
                _result(faulty_run),
                shapes=plan.shapes,
                size=plan.size,
            )
    finally:
        # Stopped early (the caller closed this generator, or Ctrl-C): the runs in flight
        # finish, the seeds not begun are dropped instead of run to the end.
        pool.shutdown(wait=True, cancel_futures=True)


def _guarded(seed: int, faulty: bool, plan: Plan) -> Outcome | Exception:
    try:
        return _simulate(seed, faulty, plan)
    except Exception as error:  # reported as a violation of the seed, not a crash of all
        return error


def _result(future: Future[Outcome]) -> Outcome | BaseException:
    error = future.exception()
    return error if error is not None else future.result()
