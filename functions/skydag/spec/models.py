"""The DAG file (v1) as typed models: the single source of the JSON Schema and validation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from skydag.limits import MAX_MAP_ITEMS
from skydag.signals.forwarding import pattern_too_large
from skydag.signals.patterns import validate_pattern
from skydag.spec import graph
from skydag.spec.durations import format_duration, parse_duration
from skydag.spec.emit_sources import MAX_EMIT_SOURCES, prefix_problem
from skydag.spec.schedule import parse_schedule, validate_timezone

ID_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
TARGET_KEYS: tuple[str, ...] = (
    "batch",
    "emr",
    "emr_serverless",
    "stepfunctions",
    "lambda",
    "ecs",
    "wait",
    "emit",
    "noop",
)
# The kinds whose service events echo the job's environment (Batch's job detail, ECS's
# task overrides): the SKYDAG_* identity there names the task instance, so an event
# finds its try by key (targets/aws/_common.py ``task_key_in``), and the store indexes
# neither the try's token nor its job id (engine/models.py ``found_by_key``).
EVENTS_NAME_THE_TASK: frozenset[str] = frozenset({"batch", "ecs"})


class TriggerRule(StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"


class TaskMode(StrEnum):
    BATCH = "batch"
    SERVICE = "service"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration of at most 366 days: 30s, 10m, 2h, 1d, 1h30m, "
            "or a number of seconds.",
        }
    ),
]


def _check_pattern(value: dict[str, Any]) -> dict[str, Any]:
    validate_pattern(value)
    # An AWS pattern is also a rule on the default bus (skydag.signals.forwarding).
    too_large = pattern_too_large(value)
    if too_large is not None:
        raise ValueError(too_large)
    return value


def _check_emit_prefix(value: str) -> str:
    problem = prefix_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


EmitSourcePrefix = Annotated[str, AfterValidator(_check_emit_prefix)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, Mapping) else value


EventPattern = Annotated[
    dict[str, Any],
    AfterValidator(_check_pattern),
    WithJsonSchema(
        {"type": "object", "description": "An EventBridge event pattern (content filtering)."}
    ),
]
# A signal subscription: one pattern, or a list of patterns any of which may match.
Signals = Annotated[list[EventPattern], BeforeValidator(_one_or_many)]
StrMap = dict[str, str]


class SpecModel(BaseModel):
    """Strict: an unknown key is a typo that would otherwise silently do nothing."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# --- targets -------------------------------------------------------------------------------


class BatchTarget(SpecModel):
    job_queue: str
    job_definition: str
    job_name: str | None = None
    command: list[str] | None = None
    parameters: StrMap = Field(default_factory=dict)
    environment: StrMap = Field(default_factory=dict)
    timeout: Duration | None = None
    tags: StrMap = Field(default_factory=dict)
    array_size: int | None = Field(default=None, ge=2, le=10000)


class EmrStep(SpecModel):
    name: str | None = None
    jar: str = "command-runner.jar"
    main_class: str | None = None
    args: list[str] = Field(default_factory=list)
    action_on_failure: Literal["CONTINUE", "CANCEL_AND_WAIT"] = "CONTINUE"


class EmrTarget(SpecModel):
    cluster_id: str | None = None
    cluster_name: str | None = None
    step: EmrStep

    @model_validator(mode="after")
    def _one_cluster(self) -> EmrTarget:
        if (self.cluster_id is None) == (self.cluster_name is None):
            raise ValueError("give exactly one of cluster_id or cluster_name")
        return self


class EmrServerlessTarget(SpecModel):
    application_id: str
    execution_role_arn: str
    name: str | None = None
    job_driver: dict[str, Any]
    configuration_overrides: dict[str, Any] | None = None
    execution_timeout: Duration | None = None
    tags: StrMap = Field(default_factory=dict)


class StepFunctionsTarget(SpecModel):
    state_machine_arn: str
    input: dict[str, Any] | str | None = None


class LambdaTarget(SpecModel):
    function_name: str
    qualifier: str | None = None
    payload: dict[str, Any] | str | None = None


class EcsTarget(SpecModel):
    cluster: str
    task_definition: str
    launch_type: Literal["FARGATE", "EC2", "EXTERNAL"] | None = None
    capacity_provider: str | None = None
    container: str | None = None
    command: list[str] | None = None
    environment: StrMap = Field(default_factory=dict)
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    assign_public_ip: bool = False
    tags: StrMap = Field(default_factory=dict)


class WaitTarget(SpecModel):
    """Wait for a matching signal, holding no compute."""

    on: Signals = Field(min_length=1)


class EmitTarget(SpecModel):
    """Put an event on the skydag bus, under the DAG's own source or one it declares."""

    source: str | None = None
    detail_type: str = Field(alias="detail-type", min_length=1)
    detail: dict[str, Any] = Field(default_factory=dict)

    # Which sources a DAG may use is checked where the DAG is known: the loader checks
    # literal sources (skydag.spec.emit_sources), the dispatcher the rendered block.


class NoopTarget(SpecModel):
    pass


class LocalSpec(SpecModel):
    """What dev mode runs instead of the remote target."""

    command: list[str] | None = Field(default=None, min_length=1)
    environment: StrMap = Field(default_factory=dict)
    exit_code: int = Field(default=0, ge=0, le=255)
    duration: Duration = timedelta(0)
    cwd: str | None = None
    # The stand-in (no command): how it ends, and what it returns (a Lambda response, a
    # Step Functions output) for ``outputs.<task>``.
    outcome: Literal["success", "failed"] | None = None
    output: Any = None

    @model_validator(mode="after")
    def _outcome_agrees_with_exit_code(self) -> LocalSpec:
        if self.outcome == "success" and self.exit_code != 0:
            raise ValueError("outcome 'success' with a non-zero exit_code: give one of them")
        return self


# --- tasks ---------------------------------------------------------------------------------


class RetryPolicy(SpecModel):
    retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay: Duration | None = None
    retry_backoff: float | None = Field(default=None, ge=1.0, le=10.0)
    max_retry_delay: Duration | None = None
    timeout: Duration | None = None


class Defaults(RetryPolicy):
    pass


class TaskSpec(RetryPolicy):
    description: str | None = None
    depends_on: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(default_factory=list)
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    mode: TaskMode = TaskMode.BATCH
    start_on: Signals | None = None
    restart_on: Signals | None = None
    stop_on: Signals | None = None
    # A condition rendered once the upstreams let the task run (v1.1): false -> skipped.
    when: bool | str | None = None
    local: LocalSpec | None = None
    # Dynamic task mapping: one instance per item (a list, or a template rendering to a
    # JSON list), at most max_parallel at once (default: the DAG's max_active_tasks).
    for_each: list[Any] | str | None = None
    max_parallel: int | None = Field(default=None, ge=1, le=10000)
    batch: BatchTarget | None = None
    emr: EmrTarget | None = None
    emr_serverless: EmrServerlessTarget | None = None
    stepfunctions: StepFunctionsTarget | None = None
    lambda_: LambdaTarget | None = Field(default=None, alias="lambda")
    ecs: EcsTarget | None = None
    wait: WaitTarget | None = None
    emit: EmitTarget | None = None
    noop: NoopTarget | None = None

    @model_validator(mode="before")
    @classmethod
    def _noop_shorthand(cls, data: Any) -> Any:
        # `noop: {}`, `noop: true` and a bare `noop:` all mean "do nothing".
        if isinstance(data, Mapping) and "noop" in data and data["noop"] in (None, True):
            return {**data, "noop": {}}
        return data

    @model_validator(mode="after")
    def _exactly_one_target(self) -> TaskSpec:
        given = self.target_keys()
        if not given:
            raise ValueError(f"needs exactly one target key, one of: {', '.join(TARGET_KEYS)}")
        if len(given) > 1:
            raise ValueError(f"has {len(given)} target keys ({', '.join(given)}); give exactly one")
        return self

    @model_validator(mode="after")
    def _mapping_fits(self) -> TaskSpec:
        for problem in _mapping_problems(self):
            raise ValueError(problem)
        return self

    @field_validator("depends_on")
    @classmethod
    def _unique_dependencies(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for dep in value:
            if dep in seen:
                raise ValueError(f"'{dep}' is listed twice")
            seen.add(dep)
        return value

    def target_keys(self) -> list[str]:
        return [key for key in TARGET_KEYS if self.target_block(key) is not None]

    def target_block(self, key: str) -> SpecModel | None:
        value: SpecModel | None = getattr(self, "lambda_" if key == "lambda" else key)
        return value

    @property
    def target_kind(self) -> str:
        return self.target_keys()[0]

    @property
    def events_name_the_task(self) -> bool:
        return self.target_kind in EVENTS_NAME_THE_TASK

    @property
    def target(self) -> SpecModel:
        block = self.target_block(self.target_kind)
        assert block is not None
        return block


def _mapping_problems(task: TaskSpec) -> list[str]:
    """What is wrong with the task's for_each, max_parallel, item and task.map_index."""
    from skydag.spec.mapping import mapping_references
    from skydag.spec.templates import template_strings

    if task.for_each is None:
        problems = ["max_parallel needs for_each"] if task.max_parallel is not None else []
        for path, text in template_strings(task):
            for name in mapping_references(text):
                problems.append(f"{path} uses '{name}', which only a task with for_each has")
        return problems
    if isinstance(task.for_each, list) and len(task.for_each) > MAX_MAP_ITEMS:
        return [f"for_each lists {len(task.for_each)} items; the limit is {MAX_MAP_ITEMS}"]
    if isinstance(task.for_each, str) and "{{" not in task.for_each:
        return ["for_each must be a list or a template rendering to a JSON list"]
    if task.mode is TaskMode.SERVICE:
        return ["for_each is for batch tasks: a service (mode: service) cannot be mapped"]
    unmappable = [
        key for key in ("wait", "start_on", "restart_on", "stop_on") if getattr(task, key)
    ]
    if unmappable:
        return [f"for_each cannot be combined with {unmappable[0]} (signals start whole tasks)"]
    return []


# --- the DAG -------------------------------------------------------------------------------


class DagSpec(SpecModel):
    dag: str = Field(pattern=ID_PATTERN)
    description: str | None = None
    schedule: str | None = None
    timezone: str = "UTC"
    start_date: datetime | None = None
    end_date: datetime | None = None
    catchup: bool = False
    max_active_runs: int = Field(default=16, ge=1, le=1000)
    max_active_tasks: int = Field(default=32, ge=1, le=10000)
    params: dict[str, Any] = Field(default_factory=dict)
    on: Signals | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    tags: list[str] = Field(default_factory=list)
    # Event source prefixes this DAG's emit tasks may use besides skydag.dag.<dag>.
    emit_sources: list[EmitSourcePrefix] = Field(default_factory=list, max_length=MAX_EMIT_SOURCES)
    tasks: dict[Annotated[str, Field(pattern=ID_PATTERN)], TaskSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _graph_and_schedule(self) -> DagSpec:
        graph.check_dependencies(self.tasks)
        if self.schedule is not None:
            validate_timezone(self.timezone)
            if self.start_date is None:
                raise ValueError("schedule needs start_date (when the first interval starts)")
            parse_schedule(self.schedule, self.timezone, self.start_date)
        return self

    def upstream(self, task_id: str) -> list[str]:
        return self.tasks[task_id].depends_on

    def downstream(self, task_id: str) -> list[str]:
        return self._downstream_index().get(task_id, [])

    def roots(self) -> list[str]:
        return [t for t, spec in self.tasks.items() if not spec.depends_on]

    def leaves(self) -> list[str]:
        index = self._downstream_index()
        return [t for t in self.tasks if not index.get(t)]

    def upstream_position(self, task_id: str, upstream_id: str) -> int:
        """Where ``upstream_id`` is in ``task_id``'s depends_on (a wide join's tally place)."""
        cache: dict[str, dict[str, int]] = self.__dict__.setdefault("_upstream_positions", {})
        positions = cache.get(task_id)
        if positions is None:
            positions = {up: i for i, up in enumerate(self.tasks[task_id].depends_on)}
            cache[task_id] = positions
        return positions[upstream_id]

    def task_index(self, task_id: str) -> int:
        """The task's position in the file: a small, stable number within a DAG version."""
        cached: dict[str, int] | None = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {t: i for i, t in enumerate(self.tasks)}
            object.__setattr__(self, "_index_cache", cached)
        return cached[task_id]

    def leaf_set(self) -> frozenset[str]:
        cached: frozenset[str] | None = self.__dict__.get("_leaf_cache")
        if cached is None:
            cached = frozenset(self.leaves())
            object.__setattr__(self, "_leaf_cache", cached)
        return cached

    def leaf_indices(self) -> frozenset[int]:
        """The leaves' positions in the file (``task_index``)."""
        cached: frozenset[int] | None = self.__dict__.get("_leaf_index_cache")
        if cached is None:
            cached = frozenset(self.task_index(t) for t in self.leaf_set())
            object.__setattr__(self, "_leaf_index_cache", cached)
        return cached

    def descendants(self, task_id: str) -> list[str]:
        """Every task downstream of ``task_id``, transitively, in topological order."""
        order = {t: i for i, t in enumerate(self.topological_order())}
        found: set[str] = set()
        stack = [task_id]
        while stack:
            for child in self.downstream(stack.pop()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return sorted(found, key=order.__getitem__)

    def task_slots_bind(self) -> bool:
        """Whether max_active_tasks can ever hold a task of this DAG back. A slot is held
        per task instance (a retry or restart of its try keeps it), so a DAG with no more
        tasks than slots and no for_each never waits for one, whatever clears start again
        at once: its runs take and free no slot at all."""
        return len(self.tasks) > self.max_active_tasks or any(
            task.for_each is not None for task in self.tasks.values()
        )

    def topological_order(self) -> list[str]:
        cached: list[str] | None = self.__dict__.get("_topo_cache")
        if cached is None:
            cached = graph.topological_order(self.tasks)
            object.__setattr__(self, "_topo_cache", cached)
        return list(cached)

    def _downstream_index(self) -> dict[str, list[str]]:
        # Frozen model: compute once and keep it outside pydantic's fields.
        cached: dict[str, list[str]] | None = self.__dict__.get("_downstream_cache")
        if cached is None:
            cached = {}
            for task_id, spec in self.tasks.items():
                for dep in spec.depends_on:
                    cached.setdefault(dep, []).append(task_id)
            object.__setattr__(self, "_downstream_cache", cached)
        return cached

    def effective_policy(self, task_id: str) -> EffectivePolicy:
        """The task's retry keys with the DAG's defaults and then the built-ins filled in."""
        task = self.tasks[task_id]

        def pick(name: str) -> Any:
            if name == "timeout" and task.mode is TaskMode.SERVICE:
                # A service runs until stopped: the DAG-wide default timeout would kill a
                # streaming job; only a timeout set on the task itself applies.
                return task.timeout
            for source in (task, self.defaults):
                value = getattr(source, name)
                if value is not None:
                    return value
            return getattr(BUILTIN_POLICY, name)

        return EffectivePolicy(
            retries=pick("retries"),
            retry_delay=pick("retry_delay"),
            retry_backoff=pick("retry_backoff"),
            max_retry_delay=pick("max_retry_delay"),
            timeout=pick("timeout"),
        )

    def iter_signal_patterns(self) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
        """(task or None for the DAG, subscription kind, pattern) for every subscription."""
        for pattern in self.on or []:
            yield None, "on", pattern
        for task_id, task in self.tasks.items():
            for kind in ("start_on", "restart_on", "stop_on"):
                for pattern in getattr(task, kind) or []:
                    yield task_id, kind, pattern
            if task.wait is not None:
                for pattern in task.wait.on:
                    yield task_id, "wait", pattern


class EffectivePolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    retries: int
    retry_delay: timedelta
    retry_backoff: float
    max_retry_delay: timedelta
    timeout: timedelta | None


BUILTIN_POLICY = EffectivePolicy(
    retries=0,
    retry_delay=timedelta(seconds=30),
    retry_backoff=2.0,
    max_retry_delay=timedelta(minutes=10),
    timeout=None,
)
