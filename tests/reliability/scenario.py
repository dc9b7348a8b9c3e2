"""A seeded scenario: DAGs of varied shapes, the runs to start and the script of signals
and operator commands, each sent once a condition holds.

From a seed, always the same scenario:

- two or three shape DAGs among a chain (half of them with ``max_active_tasks: 2``), a
  fan-out/fan-in (``max_active_tasks: 2``) and a diamond; the first one has
  ``max_active_runs: 1`` and two runs. Their downstream tasks take the ten trigger rules
  in a seeded order;
- ``ops`` (half of them with ``max_active_tasks: 3``): ``prep`` → ``slow`` (a stand-in
  that runs until stopped) and ``approve`` (a ``wait`` task) → ``report``. Run ``o1``
  marks ``slow`` (success or failed) while it runs and ``approve`` success while it
  waits; run ``o2`` is cancelled while ``slow`` runs;
- ``svc``: ``feed`` (``mode: service``, ``restart_on``/``stop_on``) with ``consumer`` on
  it, and ``gate`` (``wait``) → ``after``. Its run gets one or two restart signals, the
  gate's signal, then the stop signal;
- one finished shape run is cleared (a random task, with or without its downstream).

Jobs are stand-ins on the six services with seeded durations and outcomes: ``ok``,
``fail`` (with or without a retry) or ``flaky`` (fails its first try, its retry passes:
a ``sh`` command that tests ``task.try_number``). Retries wait ``retry_delay: 1s``.

Every signal and command is sent only once the run it acts on reached a state that the
oracle and a faulty run both reach, and that fixes the outcome (the scheduler's trigger
rules do not depend on the order upstreams finish), so the final states must be equal.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from skydag import wiring
from skydag.spec.models import DagSpec, TriggerRule

ACCOUNT = "123456789012"
KINDS = ("batch", "ecs", "lambda", "stepfunctions", "emr", "emr_serverless")
# Lambda cannot stop an invocation: jobs that must be stopped run elsewhere.
STOPPABLE_KINDS = tuple(kind for kind in KINDS if kind != "lambda")
TARGETS: dict[str, dict[str, Any]] = {
    "batch": {"job_queue": "sim", "job_definition": "sim"},
    "ecs": {"cluster": "sim", "task_definition": "sim"},
    "lambda": {"function_name": "sim"},
    "stepfunctions": {"state_machine_arn": f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:sim"},
    "emr": {"cluster_name": "sim", "step": {"args": ["spark-submit", "job.py"]}},
    "emr_serverless": {
        "application_id": "00fsim0000000001",
        "execution_role_arn": f"arn:aws:iam::{ACCOUNT}:role/sim",
        "job_driver": {"sparkSubmit": {"entryPoint": "job.py"}},
    },
    "noop": {},
}
# The rules that let a task run when its only upstream succeeded.
RUN_AFTER_SUCCESS = (
    TriggerRule.ALL_SUCCESS,
    TriggerRule.ALL_DONE,
    TriggerRule.ONE_SUCCESS,
    TriggerRule.ONE_DONE,
    TriggerRule.NONE_FAILED,
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
    TriggerRule.NONE_SKIPPED,
)
RETRY_DELAY = "1s"
FEED_SOURCE, GATE_SOURCE, APPROVE_SOURCE = "sim.feed", "sim.gate", "sim.approve"


# --------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class Condition:
    """A state the driver waits for, read from the streams: the run in one of ``states``
    (``task`` None), or the task in one of ``states`` (at ``try_number`` when given)."""

    dag: str
    run: str
    task: str | None = None
    states: tuple[str, ...] = ()
    try_number: int | None = None

    def describe(self) -> str:
        what = f"{self.dag}/{self.run}" + (f"/{self.task}" if self.task else "")
        at = f" at try {self.try_number}" if self.try_number is not None else ""
        return f"{what} {'|'.join(self.states)}{at}"


@dataclass(frozen=True)
class Action:
    """A PutEvents on the skydag bus: a command (source ``skydag.command``, as the CLI
    sends it) or a signal."""

    source: str
    detail_type: str
    detail: Mapping[str, Any]
    # The run (task None) or task whose next change acknowledges the action: the script
    # goes on (or ends) once the streams show it.
    acts_on: tuple[str, str, str | None]

    def describe(self) -> str:
        return f"{self.source} '{self.detail_type}' {dict(self.detail)}"


@dataclass(frozen=True)
class Step:
    when: tuple[Condition, ...]
    action: Action

    def describe(self) -> str:
        conditions = " and ".join(c.describe() for c in self.when) or "at once"
        return f"when {conditions}: {self.action.describe()}"


FINISHED = ("success", "failed", "stopped", "upstream_failed", "skipped")


@dataclass
class Scenario:
    seed: int
    dags: dict[str, str] = field(default_factory=dict)  # dag id -> YAML
    runs: list[tuple[str, str]] = field(default_factory=list)
    # Independent scripts: each waits for its own conditions, in order.
    scripts: list[list[Step]] = field(default_factory=list)
    max_active_runs: dict[str, int] = field(default_factory=dict)
    max_active_tasks: dict[str, int] = field(default_factory=dict)
    # Task -> its target kind (noop and wait start no remote job).
    kinds: dict[tuple[str, str], str] = field(default_factory=dict)
    # (dag, run, task) -> restart signals it gets.
    restarts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rules: set[str] = field(default_factory=set)

    def describe(self) -> str:
        lines = [f"scenario of seed {self.seed}:"]
        for dag_id, text in self.dags.items():
            lines.append(f"--- {dag_id}.yaml")
            lines.extend(f"    {line}" for line in text.rstrip().splitlines())
        lines.append(f"--- runs: {', '.join(f'{d}/{r}' for d, r in self.runs)}")
        for index, script in enumerate(self.scripts):
            for step in script:
                lines.append(f"    script {index}: {step.describe()}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- building


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"scenario-{seed}")
        self.scenario = Scenario(seed)
        rules = list(TriggerRule)
        self.rng.shuffle(rules)
        self._rules = rules
        self._next_rule = 0

    def rule(self, allowed: tuple[TriggerRule, ...] | None = None) -> str:
        """The next rule of the seeded cycle (so one seed covers as many as it has slots),
        or a seeded pick among ``allowed``."""
        if allowed is not None:
            chosen = self.rng.choice(allowed)
        else:
            chosen = self._rules[self._next_rule % len(self._rules)]
            self._next_rule += 1
        self.scenario.rules.add(chosen.value)
        return chosen.value

    def duration(self) -> str:
        return f"{self.rng.randint(1, 5) / 20:.2f}s"  # 0.05 to 0.25 s

    def job(
        self,
        dag_id: str,
        task_id: str,
        *,
        kinds: tuple[str, ...] = (*KINDS, "noop"),
        behaviours: tuple[str, ...] = ("ok", "ok", "ok", "fail", "flaky"),
    ) -> dict[str, Any]:
        """A task on a seeded service with a seeded stand-in."""
        kind = self.rng.choice(kinds)
        self.scenario.kinds[(dag_id, task_id)] = kind
        task: dict[str, Any] = {kind: dict(TARGETS[kind])}
        if kind == "noop":
            return task
        behaviour = self.rng.choice(behaviours)
        duration = self.duration()
        if behaviour == "ok":
            task["local"] = {"duration": duration}
        elif behaviour == "fail":
            task["local"] = {"duration": duration, "outcome": "failed"}
            task["retries"] = self.rng.choice((0, 1))
        else:
            seconds = duration.removesuffix("s")
            script = f"sleep {seconds}; test {{{{ task.try_number }}}} -ge 2"
            task["local"] = {"command": ["sh", "-c", script]}
            task["retries"] = 1
        if task.get("retries"):
            task["retry_delay"] = RETRY_DELAY
        return task

    def add_dag(self, dag: dict[str, Any]) -> None:
        spec = DagSpec.model_validate(dag)  # a broken scenario fails here, not in the run
        dag_id = spec.dag
        self.scenario.dags[dag_id] = yaml.safe_dump(dag, sort_keys=False)
        self.scenario.max_active_runs[dag_id] = spec.max_active_runs
        self.scenario.max_active_tasks[dag_id] = spec.max_active_tasks
        for task_id, task in spec.tasks.items():
            self.scenario.kinds.setdefault((dag_id, task_id), task.target_kind)

    def trigger(self, dag_id: str, run_id: str) -> Step:
        self.scenario.runs.append((dag_id, run_id))
        detail = {"dag": dag_id, "conf": {}, "run_id": run_id}
        action = Action(wiring.COMMAND_SOURCE, "Trigger DAG", detail, (dag_id, run_id, None))
        return Step((), action)

    # --- shapes ---------------------------------------------------------------------------

    def chain(self, dag_id: str) -> dict[str, Any]:
        tasks: dict[str, Any] = {}
        for index in range(self.rng.randint(3, 4)):
            task = self.job(dag_id, f"t{index}")
            if index:
                task = {"depends_on": [f"t{index - 1}"], "trigger_rule": self.rule(), **task}
            tasks[f"t{index}"] = task
        dag: dict[str, Any] = {"dag": dag_id, "tasks": tasks}
        if self.rng.random() < 0.5:
            # More tasks than slots, one path: its own tries take none, a cleared one does
            # (engine/slots.py), unless an ``always`` rule starts a task beside another.
            dag["max_active_tasks"] = 2
        return dag

    def fan(self, dag_id: str) -> dict[str, Any]:
        branches = [f"b{index}" for index in range(self.rng.randint(2, 3))]
        tasks: dict[str, Any] = {"root": self.job(dag_id, "root")}
        for branch in branches:
            tasks[branch] = {
                "depends_on": ["root"],
                "trigger_rule": self.rule(),
                **self.job(dag_id, branch),
            }
        tasks["join"] = {"depends_on": branches, "trigger_rule": self.rule()}
        tasks["join"].update(self.job(dag_id, "join"))
        tasks["tail"] = {"depends_on": ["join"], "trigger_rule": self.rule()}
        tasks["tail"].update(self.job(dag_id, "tail"))
        return {"dag": dag_id, "max_active_tasks": 2, "tasks": tasks}

    def diamond(self, dag_id: str) -> dict[str, Any]:
        tasks: dict[str, Any] = {"a": self.job(dag_id, "a")}
        for side in ("b", "c"):
            tasks[side] = {"depends_on": ["a"], "trigger_rule": self.rule()}
            tasks[side].update(self.job(dag_id, side))
        tasks["d"] = {"depends_on": ["b", "c"], "trigger_rule": self.rule()}
        tasks["d"].update(self.job(dag_id, "d"))
        return {"dag": dag_id, "tasks": tasks}

    # --- the operator's DAG ---------------------------------------------------------------

    def ops(self) -> list[list[Step]]:
        dag_id = "ops"
        slow_kind = self.rng.choice(STOPPABLE_KINDS)
        self.scenario.kinds[(dag_id, "slow")] = slow_kind
        not_always = tuple(rule for rule in TriggerRule if rule is not TriggerRule.ALWAYS)
        # ``always`` would start ``slow`` before ``prep`` ends or ``report`` at once:
        # the state the commands find would then depend on timing.
        tasks: dict[str, Any] = {
            "prep": self.job(dag_id, "prep", behaviours=("ok", "flaky")),
            "slow": {
                "depends_on": ["prep"],
                "trigger_rule": self.rule(RUN_AFTER_SUCCESS),
                slow_kind: dict(TARGETS[slow_kind]),
                "local": {"duration": "10m"},
            },
            "approve": {
                "depends_on": ["prep"],
                "trigger_rule": self.rule(RUN_AFTER_SUCCESS),
                "wait": {"on": {"source": [APPROVE_SOURCE], "detail-type": ["approve"]}},
            },
            "report": {
                "depends_on": ["slow", "approve"],
                "trigger_rule": self.rule(not_always),
                **self.job(dag_id, "report"),
            },
        }
        ops: dict[str, Any] = {"dag": dag_id, "tasks": tasks}
        if self.rng.random() < 0.5:
            # Four tasks, three slots, two paths: the tasks the marks start take the slot
            # left over (engine/slots.py), unless ``report`` waits for one upstream only.
            ops["max_active_tasks"] = 3
        self.add_dag(ops)
        marked = self.rng.choice(("success", "failed"))
        slow_runs = Condition(dag_id, "o1", "slow", ("running",))
        mark = Action(
            wiring.COMMAND_SOURCE,
            "Mark Task",
            {"dag": dag_id, "run_id": "o1", "task": "slow", "state": marked},
            (dag_id, "o1", "slow"),
        )
        approve = Action(
            wiring.COMMAND_SOURCE,
            "Mark Task",
            {"dag": dag_id, "run_id": "o1", "task": "approve", "state": "success"},
            (dag_id, "o1", "approve"),
        )
        cancel_when = (
            Condition(dag_id, "o2", "prep", ("success",)),
            Condition(dag_id, "o2", "slow", ("running",)),
            Condition(dag_id, "o2", "approve", ("waiting",)),
        )
        cancel = Action(
            wiring.COMMAND_SOURCE,
            "Cancel Run",
            {"dag": dag_id, "run_id": "o2", "reason": "simulated operator"},
            (dag_id, "o2", None),
        )
        return [
            [self.trigger(dag_id, "o1"), Step((slow_runs,), mark)],
            [Step((Condition(dag_id, "o1", "approve", ("waiting",)),), approve)],
            [self.trigger(dag_id, "o2"), Step(cancel_when, cancel)],
        ]

    # --- the service's DAG ----------------------------------------------------------------

    def svc(self) -> list[list[Step]]:
        dag_id, run_id = "svc", "s1"
        feed_kind = self.rng.choice(STOPPABLE_KINDS)
        self.scenario.kinds[(dag_id, "feed")] = feed_kind
        tasks: dict[str, Any] = {
            "feed": {
                "mode": "service",
                "restart_on": [{"source": [FEED_SOURCE], "detail-type": ["restart"]}],
                "stop_on": [{"source": [FEED_SOURCE], "detail-type": ["stop"]}],
                feed_kind: dict(TARGETS[feed_kind]),
            },
            "consumer": {"depends_on": ["feed"], **self.job(dag_id, "consumer")},
            "gate": {"wait": {"on": {"source": [GATE_SOURCE], "detail-type": ["go"]}}},
            "after": {"depends_on": ["gate"], **self.job(dag_id, "after")},
        }
        self.add_dag({"dag": dag_id, "tasks": tasks})
        restarts = self.rng.randint(1, 2)
        self.scenario.restarts[(dag_id, run_id, "feed")] = restarts
        feed: tuple[str, str, str | None] = (dag_id, run_id, "feed")
        steps = [self.trigger(dag_id, run_id)]
        for number in range(1, restarts + 1):
            when = (
                Condition(dag_id, run_id, "feed", ("running",), try_number=number),
                Condition(dag_id, run_id, "consumer", FINISHED),
            )
            steps.append(Step(when, Action(FEED_SOURCE, "restart", {"n": number}, feed)))
        last_try = restarts + 1
        go_when = (
            Condition(dag_id, run_id, "feed", ("running",), try_number=last_try),
            Condition(dag_id, run_id, "gate", ("waiting",)),
        )
        gate: tuple[str, str, str | None] = (dag_id, run_id, "gate")
        steps.append(Step(go_when, Action(GATE_SOURCE, "go", {}, gate)))
        stop_when = (
            Condition(dag_id, run_id, "after", FINISHED),
            Condition(dag_id, run_id, "feed", ("running",), try_number=last_try),
        )
        steps.append(Step(stop_when, Action(FEED_SOURCE, "stop", {}, feed)))
        return [steps]


ACTS = ("shapes", "ops", "svc")
# How much of the scenario a seed plays: every act ("all"), or one act per seed in turn
# ("rotate": seed 3k the shape DAGs and the clear, 3k+1 ``ops``, 3k+2 ``svc``), a third
# of the work per seed, every act and (across seeds) every rule and service still covered.
SIZES = ("all", "rotate")


def acts_of(seed: int, size: str = "all") -> tuple[str, ...]:
    if size == "all":
        return ACTS
    if size != "rotate":
        raise ValueError(f"scenario size {size!r}: one of {', '.join(SIZES)}")
    return (ACTS[seed % len(ACTS)],)


def build_scenario(seed: int, *, shapes: int = 2, size: str = "all") -> Scenario:
    """The scenario of ``seed`` with ``shapes`` shape DAGs (1 to 3); ``size`` says which
    acts it plays (``acts_of``)."""
    builder = _Builder(seed)
    rng = builder.rng
    scenario = builder.scenario
    acts = acts_of(seed, size)
    if "shapes" not in acts:
        if "ops" in acts:
            scenario.scripts.extend(builder.ops())
        if "svc" in acts:
            scenario.scripts.extend(builder.svc())
        return scenario
    chosen = rng.sample(("chain", "fan", "diamond"), shapes)
    if size == "rotate":  # the shapes in turn too, so that every third seed plays each
        first = (seed // len(ACTS)) % 3
        chosen = [("chain", "fan", "diamond")[(first + n) % 3] for n in range(shapes)]
    shape_runs: list[tuple[str, str]] = []
    for index, shape in enumerate(chosen):
        dag = getattr(builder, shape)(shape)
        runs = 1
        if index == 0:
            dag["max_active_runs"] = 1
            runs = 2
        builder.add_dag(dag)
        triggers = [builder.trigger(shape, f"{shape[0]}{number}") for number in range(1, runs + 1)]
        scenario.scripts.append(triggers)
        shape_runs.extend((shape, f"{shape[0]}{number}") for number in range(1, runs + 1))
    if "ops" in acts:
        scenario.scripts.extend(builder.ops())
    if "svc" in acts:
        scenario.scripts.extend(builder.svc())
    dag_id, run_id = rng.choice(shape_runs)
    task_id = rng.choice(sorted(task for dag, task in scenario.kinds if dag == dag_id))
    clear = Action(
        wiring.COMMAND_SOURCE,
        "Clear Task",
        {
            "dag": dag_id,
            "run_id": run_id,
            "task": task_id,
            "downstream": rng.random() < 0.5,
            "reset_state": False,
        },
        (dag_id, run_id, task_id),
    )
    finished = Condition(dag_id, run_id, None, ("success", "failed"))
    scenario.scripts.append([Step((finished,), clear)])
    return scenario
