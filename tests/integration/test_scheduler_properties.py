"""Property tests: random DAGs run to completion through the real engine, store and streams.

A scripted target decides each try's outcome from a table Hypothesis draws, so the final
state of every task is predictable by a small reference model written independently of
the engine. Invariants checked on every change the streams deliver:
- no task is dispatched twice in one try;
- a finished task never changes again (nothing is cleared here);
- a run ends exactly when all its tasks are finished, and only then.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skydag.dev.embedded import EmbeddedSkydag, embedded_aws
from skydag.engine.models import DagRun, JobReport, JobStatus, TaskInstance
from skydag.engine.states import FINISHED_RUN_STATES, FINISHED_TASK_STATES, RunState
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.targets.base import DispatchRequest, DispatchResult, JobRef, Target

RULES = [
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
]
EXAMPLES = int(os.environ.get("SKYDAG_PROPERTY_EXAMPLES", "10"))
# The fixed large example's size: 100 in `make test` (a minute and a half at 200; the
# soak and `make bench` cover scale), more with SKYDAG_PROPERTY_LARGE=N.
LARGE = int(os.environ.get("SKYDAG_PROPERTY_LARGE", "100"))


@dataclass
class ScriptedTarget:
    """Outcome of try N of task T = script[T][N-1] (True = success); reported on poll."""

    script: Mapping[str, list[bool]]
    dispatched: Counter[tuple[str, int]] = field(default_factory=Counter)
    pending: list[DispatchRequest] = field(default_factory=list)

    def target_for(self, kind: str) -> Target:
        return self

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        self.dispatched[(request.task_id, request.try_number)] += 1
        self.pending.append(request)
        return DispatchResult(job_id=f"job-{request.task_id}-{request.try_number}")

    def describe(self, job: JobRef) -> JobReport | None:
        return None

    def cancel(self, job: JobRef, reason: str) -> None:
        return None

    def poll(self) -> list[JobReport]:
        done, self.pending = self.pending, []
        reports = []
        for r in done:
            tries = self.script[r.task_id]
            ok = tries[min(r.try_number, len(tries)) - 1]
            reports.append(
                JobReport(
                    r.dag_id,
                    r.run_id,
                    r.task_id,
                    r.try_number,
                    JobStatus.SUCCEEDED if ok else JobStatus.FAILED,
                    exit_code=0 if ok else 1,
                )
            )
        return reports

    def running(self) -> int:
        return len(self.pending)

    def close(self) -> None:
        return None


Case = tuple[dict[str, Any], dict[str, list[bool]]]


@st.composite
def random_dags(draw: st.DrawFn, max_size: int = 30) -> Case:
    # moto costs milliseconds a call: random cases stay small, and one explicit
    # large case (below, ``LARGE`` tasks) covers the size the engine must handle.
    size = draw(st.integers(1, max_size))
    tasks: dict[str, Any] = {}
    script: dict[str, list[bool]] = {}
    for i in range(size):
        name = f"t{i}"
        deps = sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))) if i else []
        retries = draw(st.integers(0, 2))
        tasks[name] = {
            "noop": {},
            "depends_on": [f"t{d}" for d in deps],
            "trigger_rule": draw(st.sampled_from(RULES)),
            "retries": retries,
            "retry_delay": 0,
        }
        script[name] = draw(st.lists(st.booleans(), min_size=retries + 1, max_size=retries + 1))
    dag = {"dag": "prop", "max_active_tasks": draw(st.integers(1, 40)), "tasks": tasks}
    return dag, script


def reference_states(spec: DagSpec, script: Mapping[str, list[bool]]) -> dict[str, str]:
    """Airflow's trigger rules on final states, written without the engine's code."""
    final: dict[str, str] = {}
    for task_id in spec.topological_order():
        task = spec.tasks[task_id]
        ups = [final[u] for u in task.depends_on]
        verdict = _reference_rule(task.trigger_rule.value, ups) if ups else "run"
        if verdict == "run":
            final[task_id] = "success" if any(script[task_id]) else "failed"
        else:
            final[task_id] = verdict
    return final


def _reference_rule(rule: str, ups: list[str]) -> str:
    n = len(ups)
    ok = ups.count("success")
    skipped = ups.count("skipped")
    bad = n - ok - skipped
    ran_and_failed = bad - ups.count("upstream_failed")
    table = {
        "all_success": "run" if ok == n else ("upstream_failed" if bad else "skipped"),
        "all_failed": "run" if bad == n else "skipped",
        "all_done": "run",
        "one_success": "run" if ok else ("skipped" if skipped == n else "upstream_failed"),
        "one_failed": "run" if bad else "skipped",
        "one_done": "run" if ok or ran_and_failed else "skipped",
        "none_failed": "upstream_failed" if bad else "run",
        "none_failed_min_one_success": "upstream_failed" if bad else ("run" if ok else "skipped"),
        "none_skipped": "skipped" if skipped else "run",
        "always": "run",
    }
    return table[rule]


def large_case(size: int = LARGE, seed: int = 7) -> Case:
    """A fixed large DAG (``LARGE`` tasks) with every trigger rule, retries and failures."""
    rng = random.Random(seed)
    tasks: dict[str, Any] = {}
    script: dict[str, list[bool]] = {}
    for i in range(size):
        deps = sorted(rng.sample(range(i), min(i, rng.randint(0, 3)))) if i else []
        retries = rng.randint(0, 2)
        tasks[f"t{i}"] = {
            "noop": {},
            "depends_on": [f"t{d}" for d in deps],
            "trigger_rule": RULES[i % len(RULES)],
            "retries": retries,
            "retry_delay": 0,
        }
        script[f"t{i}"] = [rng.random() < 0.7 for _ in range(retries + 1)]
    return {"dag": "prop", "max_active_tasks": 32, "tasks": tasks}, script


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=random_dags())
@example(case=large_case())
def test_random_dags_run_to_completion(case: tuple[dict[str, Any], dict[str, list[bool]]]) -> None:
    dag, script = case
    spec = DagSpec.model_validate(dag)
    target = ScriptedTarget(script)
    violations: list[str] = []
    with embedded_aws():
        env = EmbeddedSkydag(Settings(), log_dir=Path("/nonexistent"), target=target)
        finished_seen: dict[str, str] = {}

        def watch_task(old: TaskInstance | None, new: TaskInstance) -> None:
            if old is not None and old.state in FINISHED_TASK_STATES and new.state != old.state:
                violations.append(f"{new.task_id}: finished {old.state} became {new.state}")
            if new.state in FINISHED_TASK_STATES:
                finished_seen[new.task_id] = new.state.value

        def watch_run(old: DagRun | None, new: DagRun) -> None:
            if new.state in FINISHED_RUN_STATES:
                unfinished = set(spec.tasks) - set(finished_seen)
                states = {ti.state for ti in env.repos.tasks.list_for_run("prop", new.run_id)}
                if unfinished and not states <= FINISHED_TASK_STATES:
                    violations.append(f"run ended with unfinished tasks {sorted(unfinished)[:5]}")

        env.task_listeners.append(watch_task)
        env.run_listeners.append(watch_run)
        env.repos.dags.save_version(spec, source=None, sha256=None, now=datetime.now(UTC))
        run_id = env.service.trigger("prop").run.run_id
        # Generous: a loaded machine is slow, and a stuck run returns at once anyway.
        run = env.run_until_finished("prop", run_id, timeout=900, idle_sleep=0.001)
        tasks = {ti.task_id: ti.state.value for ti in env.repos.tasks.list_for_run("prop", run_id)}

    assert not violations, violations
    twice = {key: n for key, n in target.dispatched.items() if n > 1}
    assert not twice, f"dispatched more than once in one try: {twice}"
    assert run.state in FINISHED_RUN_STATES, f"run stuck in {run.state}: {tasks}"
    assert all(s in {f.value for f in FINISHED_TASK_STATES} for s in tasks.values())
    assert tasks == reference_states(spec, script)
    leaves_failed = any(
        tasks[leaf] in ("failed", "upstream_failed", "stopped") for leaf in spec.leaves()
    )
    assert run.state is (RunState.FAILED if leaves_failed else RunState.SUCCESS)
