"""The invariants checked after each seed, on the oracle and on the faulty run.

On each run (``check_outcome``):

- **one job per try**: at most one remote job started per dispatch token (SubmitJob,
  RunTask, StartExecution, Invoke, AddJobFlowSteps, StartJobRun accepted by the service).
  Lambda alone may invoke once more per crash injected right after an Invoke, or per
  throttle of the call that follows it (it has no idempotency token: docs/targets.md);
  those are counted as documented duplicates;
- **a job for each try that ran**: every try that recorded a job id has its job, every
  try that succeeded without being marked had one, and no job belongs to no try;
- **nothing lost or stuck**: every run finished, no task left pending, waiting, queued,
  running or up for retry, one run per trigger (no run nobody asked for);
- **signals applied once**: each ``restart_on`` signal restarted its service once (its
  ``restarts`` equals the signals sent), the ``wait`` task started once;
- **limits**: never more runs ``running`` than ``max_active_runs``, nor tasks queued or
  running than ``max_active_tasks`` (measured on the streams at every change);
- **no orphaned job**: no job still running once everything settled (stops included);
- **no dead letter**: the stack's dead-letter queues (``wiring.DEAD_LETTER_QUEUES``) are
  empty (the faults stay within the event sources' retry budgets, so a dead letter is a loss);
- whatever the run itself saw go wrong (``Outcome.problems``: stuck, never settled).

Between the two (``compare``): **same final states**: every run's state and every task's
state and try number equal the oracle's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from .scenario import Scenario
from .simulator import Outcome

FINISHED_RUNS = frozenset({"success", "failed", "cancelled"})
FINISHED_TASKS = frozenset({"success", "failed", "stopped", "upstream_failed", "skipped"})
# Target kinds that start no remote job.
NO_JOB_KINDS = frozenset({"noop", "wait", "emit"})


@dataclass(frozen=True)
class Violation:
    seed: int
    run: str  # "oracle" or "faulty"
    invariant: str
    evidence: str

    def describe(self) -> str:
        return f"seed {self.seed} ({self.run}): {self.invariant}: {self.evidence}"


def dispatch_token(dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    """The scheduler's token of a try (``skydag.engine.scheduler.dispatch_token``),
    recomputed here so that a change there shows up as jobs of no try."""
    raw = f"{dag_id}/{run_id}/{task_id}/{try_number}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


Report = Callable[[str, str], None]


def check_outcome(scenario: Scenario, outcome: Outcome) -> tuple[list[Violation], int]:
    """The violations of one run, and how many documented Lambda duplicates it had."""
    which = "faulty" if outcome.faulty else "oracle"
    found: list[Violation] = []

    def violation(invariant: str, evidence: str) -> None:
        found.append(Violation(outcome.seed, which, invariant, evidence))

    for invariant, evidence in outcome.problems:
        violation(invariant, evidence)
    documented = _check_jobs(scenario, outcome, violation)
    _check_ends(outcome, violation)
    _check_signals(scenario, outcome, violation)
    if outcome.jobs_left and not any(name == "no orphaned job" for name, _ in outcome.problems):
        violation("no orphaned job", f"{outcome.jobs_left} job(s) still running at the end")
    for queue, count in sorted(outcome.dead_letters.items()):
        violation("no dead letter", f"{count} message(s) in {queue}")
    return found, documented


def _check_ends(outcome: Outcome, report: Report) -> None:
    for run, state in sorted(outcome.runs.items()):
        if state not in FINISHED_RUNS:
            report("every run finished", f"run {run} is {state}")
    for task, (state, try_number) in sorted(outcome.tasks.items()):
        if state not in FINISHED_TASKS:
            report("no task stuck", f"task {task} is {state} at try {try_number}")
    for run in outcome.unexpected_runs:
        report("one run per trigger", f"run {run} was never asked for")


def _check_signals(scenario: Scenario, outcome: Outcome, report: Report) -> None:
    for (dag_id, run_id, task_id), planned in sorted(scenario.restarts.items()):
        key = f"{dag_id}/{run_id}/{task_id}"
        actual = outcome.restarts.get(key)
        if actual != planned:
            report(
                "every signal applied once",
                f"{key} restarted {actual} times for {planned} restart signals "
                f"(tries: {outcome.tries.get(key)})",
            )
    for key, (_state, try_number) in sorted(outcome.tasks.items()):
        dag_id, _run, task_id = key.split("/")
        if scenario.kinds.get((dag_id, task_id)) == "wait" and try_number > 1:
            report("every signal applied once", f"{key} started {try_number} times")


def _check_jobs(scenario: Scenario, outcome: Outcome, report: Report) -> int:
    tries_of: dict[str, str] = {}
    documented = 0
    for key, tries in outcome.tries.items():
        dag_id, run_id, task_id = key.split("/")
        kind = scenario.kinds.get((dag_id, task_id), "noop")
        for try_number, state, job_id, reason in tries:
            token = dispatch_token(dag_id, run_id, task_id, try_number)
            tries_of[token] = f"{key} try {try_number} ({kind})"
            if kind in NO_JOB_KINDS:
                continue
            jobs = outcome.jobs.get(token, 0)
            if job_id is not None and jobs == 0:
                report(
                    "a job for each try that ran",
                    f"{key} try {try_number} ({state}) recorded job {job_id}, "
                    "but no call started it",
                )
            marked = (reason or "").startswith("marked")
            if state == "success" and not marked and job_id is None:
                report(
                    "a job for each try that ran",
                    f"{key} try {try_number} succeeded without a job",
                )
    for token, jobs in sorted(outcome.jobs.items()):
        where = tries_of.get(token)
        if where is None:
            report("a job for each try that ran", f"{jobs} job(s) of token {token}: no such try")
            continue
        allowed = 1 + outcome.crashed_invokes.get(token, 0)
        if jobs > allowed:
            report(
                "one job per try",
                f"{where}: {jobs} jobs started (token {token}; "
                f"{allowed - 1} crash(es) or throttle(s) right after its Invoke)",
            )
        elif jobs > 1:
            documented += jobs - 1
    return documented


def compare(oracle: Outcome, faulty: Outcome) -> list[Violation]:
    """Where the faulty run's final states differ from the oracle's."""
    found: list[Violation] = []
    seed = faulty.seed
    for run in sorted(set(oracle.runs) | set(faulty.runs)):
        expected, actual = oracle.runs.get(run), faulty.runs.get(run)
        if expected != actual:
            found.append(
                Violation(
                    seed,
                    "faulty",
                    "same final states as the oracle",
                    f"run {run} is {actual}, the oracle's {expected}",
                )
            )
    for task in sorted(set(oracle.tasks) | set(faulty.tasks)):
        expected_task, actual_task = oracle.tasks.get(task), faulty.tasks.get(task)
        if expected_task != actual_task:
            found.append(
                Violation(
                    seed,
                    "faulty",
                    "same final states as the oracle",
                    f"task {task} is {_state(actual_task)}, the oracle's "
                    f"{_state(expected_task)} (tries: {faulty.tries.get(task)}; "
                    f"oracle's: {oracle.tries.get(task)})",
                )
            )
    return found


def _state(value: tuple[str, int] | None) -> str:
    return "missing" if value is None else f"{value[0]} at try {value[1]}"
