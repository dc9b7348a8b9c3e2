"""What the console's pages show, built from the records the CLI's read layer returns.

The builders that take plain records (``build_grid``, ``layout_graph``) are pure, so the
grid's render speed is measured on in-memory data; the ``*_view`` functions read through a
``Remote`` first.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from functools import cache
from typing import TYPE_CHECKING, Any

from skydag.engine.states import RunState, TaskState

if TYPE_CHECKING:
    from skydag.cli.remote import Remote
    from skydag.engine.models import DagRun, TaskInstance
    from skydag.spec.models import DagSpec, TaskSpec

# Runs shown per DAG on the DAGs page, and by default in the grid.
LAST_RUNS = 5
DEFAULT_GRID_RUNS = 25
MAX_GRID_RUNS = 500

# A folded cell (several instances of one task in a run) is coloured by the state that
# most needs a look, in this order; its text gives the count of each.
STATE_URGENCY: tuple[TaskState, ...] = (
    TaskState.FAILED,
    TaskState.UPSTREAM_FAILED,
    TaskState.UP_FOR_RETRY,
    TaskState.RUNNING,
    TaskState.QUEUED,
    TaskState.WAITING,
    TaskState.PENDING,
    TaskState.STOPPED,
    TaskState.SKIPPED,
    TaskState.SUCCESS,
)
# The short text a grid cell shows besides its colour (the full state is its label).
STATE_MARK: dict[str, str] = {
    "success": "✓",
    "failed": "✗",
    "running": "▶",
    "queued": "…",
    "pending": "·",
    "waiting": "◷",
    "up_for_retry": "↻",
    "stopped": "■",
    "upstream_failed": "⊘",
    "skipped": "↷",
    "cancelled": "■",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def run_moment(run: DagRun) -> datetime:
    """When a run belongs: its logical date, else when it was created."""
    return run.logical_date or run.created_at or run.started_at or _EPOCH


# --- DAGs page -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DagRow:
    """One DAG (or one file that never loaded, ``dag`` None or ``version`` None)."""

    dag: str | None
    version: int | None
    paused: bool
    source: str | None
    import_error: str | None
    description: str | None = None
    schedule: str | None = None
    next_tick: datetime | None = None
    signals: tuple[str, ...] = ()
    last_runs: tuple[DagRun, ...] = ()


def describe_pattern(pattern: Mapping[str, Any]) -> str:
    """An event pattern in one line: its source and detail-type when it names them."""
    parts = [
        f"{key} {', '.join(map(str, value)) if isinstance(value, list) else value}"
        for key in ("source", "detail-type")
        if (value := pattern.get(key)) is not None
    ]
    return "; ".join(parts) or json.dumps(pattern, separators=(",", ":"), sort_keys=True)


def next_tick(spec: DagSpec, now: datetime) -> datetime | None:
    """The next schedule tick after ``now`` (not before ``start_date``); None without a
    schedule or after ``end_date``."""
    from skydag.spec.schedule import ScheduleError, parse_schedule

    if spec.schedule is None:
        return None
    try:
        schedule = parse_schedule(spec.schedule, spec.timezone, spec.start_date)
        after = max(now, spec.start_date) if spec.start_date else now
        tick = schedule.next_fire_after(after)
    except ScheduleError:
        return None
    if spec.end_date is not None and tick > spec.end_date:
        return None
    return tick


def dag_signals(spec: DagSpec) -> tuple[str, ...]:
    """What the DAG listens to: ``on`` patterns, and each task's start/restart/stop."""
    return tuple(
        f"{'DAG' if task is None else task} {kind}: {describe_pattern(pattern)}"
        for task, kind, pattern in spec.iter_signal_patterns()
    )


def dags_view(remote: Remote, now: datetime) -> list[DagRow]:
    from skydag.cli.dags import list_dags
    from skydag.cli.runs import list_runs

    rows: list[DagRow] = []
    for listing in list_dags(remote):
        if listing.dag is None or listing.version is None:
            rows.append(
                DagRow(listing.dag, None, listing.paused, listing.source, listing.import_error)
            )
            continue
        spec = remote.repos.dags.load_spec(listing.dag, listing.version)
        rows.append(
            DagRow(
                dag=listing.dag,
                version=listing.version,
                paused=listing.paused,
                source=listing.source,
                import_error=listing.import_error,
                description=spec.description,
                schedule=spec.schedule,
                next_tick=next_tick(spec, now),
                signals=dag_signals(spec),
                last_runs=tuple(list_runs(remote, listing.dag, LAST_RUNS)),
            )
        )
    return rows


# --- grid ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridFilter:
    """Which runs the grid shows: by run state, by date (inclusive), at most ``limit``."""

    states: frozenset[str] = frozenset()
    since: date | None = None
    until: date | None = None
    limit: int = DEFAULT_GRID_RUNS

    def keeps(self, run: DagRun) -> bool:
        if self.states and run.state.value not in self.states:
            return False
        moment = run_moment(run)
        if self.since and moment < datetime.combine(self.since, time.min, UTC):
            return False
        return not (self.until and moment > datetime.combine(self.until, time.max, UTC))


@dataclass(frozen=True)
class GridCell:
    """A task's instances in one run: one, or several when the task is mapped (folded)."""

    state: str
    counts: tuple[tuple[str, int], ...]
    try_number: int

    @property
    def folded(self) -> bool:
        return sum(count for _, count in self.counts) > 1

    @property
    def mark(self) -> str:
        if self.folded:
            return str(sum(count for _, count in self.counts))
        return STATE_MARK.get(self.state, "?")

    @property
    def label(self) -> str:
        if not self.folded:
            retried = f", try {self.try_number}" if self.try_number > 1 else ""
            return f"{self.state}{retried}"
        return ", ".join(f"{count} {state}" for state, count in self.counts)


@dataclass(frozen=True)
class GridRow:
    task: str
    cells: tuple[GridCell | None, ...]


@dataclass(frozen=True)
class Grid:
    dag: str
    runs: tuple[DagRun, ...]  # oldest first: time runs left to right
    rows: tuple[GridRow, ...]
    hidden_runs: int = 0  # runs the filter kept but the limit left out


def fold(instances: Sequence[TaskInstance]) -> GridCell:
    if len(instances) == 1:  # the common case, 20,000 times in a large grid: kept cheap
        return _single(instances[0].state.value, instances[0].try_number)
    counts = Counter(ti.state for ti in instances)
    state = next(s for s in STATE_URGENCY if counts.get(s))
    ordered = tuple((s.value, counts[s]) for s in STATE_URGENCY if counts.get(s))
    return GridCell(state.value, ordered, max(ti.try_number for ti in instances))


@cache
def _single(state: str, try_number: int) -> GridCell:
    return GridCell(state, ((state, 1),), try_number)


def build_grid(
    dag_id: str,
    task_order: Sequence[str],
    runs: Sequence[DagRun],
    instances: Mapping[str, Sequence[TaskInstance]],
) -> Grid:
    """Tasks as rows (``task_order`` first, then any task only older runs had), runs as
    columns; ``instances`` maps a run id to its task instances."""
    by_run: dict[str, dict[str, list[TaskInstance]]] = {}
    extra: list[str] = []
    known = set(task_order)
    for run in runs:
        tasks: dict[str, list[TaskInstance]] = {}
        for ti in instances.get(run.run_id, ()):
            tasks.setdefault(ti.task_id, []).append(ti)
            if ti.task_id not in known:
                known.add(ti.task_id)
                extra.append(ti.task_id)
        by_run[run.run_id] = tasks
    rows = tuple(
        GridRow(
            task,
            tuple(fold(found) if (found := by_run[run.run_id].get(task)) else None for run in runs),
        )
        for task in [*task_order, *sorted(extra)]
    )
    return Grid(dag_id, tuple(runs), rows)


def grid_rows_html(grid: Grid) -> list[str]:
    """The grid's body rows as HTML, built here rather than in the template: 20,000 cells
    through Jinja's per-cell filters take seconds, a join takes milliseconds."""
    from urllib.parse import quote

    from markupsafe import escape

    dag = quote(grid.dag, safe="")
    runs = [(escape(run.run_id), quote(run.run_id, safe="")) for run in grid.runs]
    rows = []
    for row in grid.rows:
        task = escape(row.task)
        href_task = quote(row.task, safe="")
        cells = []
        for column, cell in enumerate(row.cells):
            run_id, href_run = runs[column]
            if cell is None:
                cells.append(f'<td class="c none" aria-label="{task}: not in run {run_id}"></td>')
                continue
            label = f"{task} in {run_id}: {cell.label}"
            cells.append(
                f'<td><a id="c-{column}-{task}" class="c s-{cell.state}" '
                f'href="/dags/{dag}/runs/{href_run}/tasks/{href_task}" title="{label}" '
                f'aria-label="{label}">{cell.mark}</a></td>'
            )
        rows.append(f'<tr><th scope="row">{task}</th>{"".join(cells)}</tr>')
    return rows


def grid_view(remote: Remote, dag_id: str, wanted: GridFilter) -> tuple[Grid, DagSpec]:
    from skydag.cli.remote import require_dag

    head = require_dag(remote, dag_id)
    assert head.current_version is not None
    spec = remote.repos.dags.load_spec(dag_id, head.current_version)
    kept = sorted(
        (run for run in remote.repos.runs.list_for_dag(dag_id) if wanted.keeps(run)),
        key=lambda run: (run_moment(run), run.run_id),
    )
    shown = kept[-wanted.limit :]
    instances = {run.run_id: remote.repos.tasks.list_for_run(dag_id, run.run_id) for run in shown}
    grid = build_grid(dag_id, spec.topological_order(), shown, instances)
    return Grid(grid.dag, grid.runs, grid.rows, len(kept) - len(shown)), spec


# --- graph -----------------------------------------------------------------------------------

NODE_WIDTH, NODE_HEIGHT = 200, 46
COLUMN_GAP, ROW_GAP, MARGIN = 70, 14, 16


@dataclass(frozen=True)
class GraphNode:
    task: str
    x: int
    y: int
    kind: str
    state: str | None
    trigger_rule: str | None  # None when the default (all_success)
    waits_for: tuple[str, ...]  # signals: start_on patterns, or a wait target's


@dataclass(frozen=True)
class GraphEdge:
    upstream: str
    downstream: str
    path: str  # SVG path data


@dataclass(frozen=True)
class Graph:
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    width: int
    height: int


def _waits_for(task: TaskSpec) -> tuple[str, ...]:
    patterns = [*(task.start_on or []), *(task.wait.on if task.wait else [])]
    return tuple(describe_pattern(pattern) for pattern in patterns)


def layout_graph(spec: DagSpec, states: Mapping[str, str]) -> Graph:
    """Tasks in columns by depth (longest path from a root), left to right; within a
    column, near their upstreams' rows (one barycentre pass), so edges stay short."""
    from skydag.spec.models import TriggerRule

    order = spec.topological_order()
    depth: dict[str, int] = {}
    for task in order:
        depth[task] = max((depth[up] + 1 for up in spec.upstream(task)), default=0)
    columns: dict[int, list[str]] = {}
    for task in order:
        columns.setdefault(depth[task], []).append(task)
    row: dict[str, float] = {}
    for level in sorted(columns):
        tasks = columns[level]
        for i, task in enumerate(tasks):
            ups = spec.upstream(task)
            row[task] = sum(row[u] for u in ups) / len(ups) if ups else float(i)
        tasks.sort(key=lambda t: (row[t], order.index(t)))
        for i, task in enumerate(tasks):
            row[task] = float(i)
    nodes = []
    position: dict[str, tuple[int, int]] = {}
    for level, tasks in columns.items():
        for i, task in enumerate(tasks):
            x = MARGIN + level * (NODE_WIDTH + COLUMN_GAP)
            y = MARGIN + i * (NODE_HEIGHT + ROW_GAP)
            position[task] = (x, y)
            spec_task = spec.tasks[task]
            rule = spec_task.trigger_rule
            nodes.append(
                GraphNode(
                    task=task,
                    x=x,
                    y=y,
                    kind=spec_task.target_kind,
                    state=states.get(task),
                    trigger_rule=None if rule is TriggerRule.ALL_SUCCESS else rule.value,
                    waits_for=_waits_for(spec_task),
                )
            )
    edges = []
    for task in order:
        x2, y2 = position[task]
        for up in spec.upstream(task):
            x1, y1 = position[up]
            start_x, start_y = x1 + NODE_WIDTH, y1 + NODE_HEIGHT // 2
            end_y = y2 + NODE_HEIGHT // 2
            bend = (x2 - start_x) // 2
            path = (
                f"M{start_x},{start_y} C{start_x + bend},{start_y} {x2 - bend},{end_y} {x2},{end_y}"
            )
            edges.append(GraphEdge(up, task, path))
    width = MARGIN * 2 + len(columns) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    tallest = max(len(tasks) for tasks in columns.values())
    height = MARGIN * 2 + tallest * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    return Graph(tuple(nodes), tuple(edges), width, height)


@dataclass(frozen=True)
class GraphView:
    spec: DagSpec
    graph: Graph
    run: DagRun | None
    runs: tuple[DagRun, ...]  # to choose from, newest first


def graph_view(remote: Remote, dag_id: str, run_id: str | None) -> GraphView:
    from skydag.cli.remote import require_dag
    from skydag.cli.runs import get_run, list_runs

    head = require_dag(remote, dag_id)
    assert head.current_version is not None
    runs = tuple(list_runs(remote, dag_id, DEFAULT_GRID_RUNS))
    run = get_run(remote, dag_id, run_id) if run_id else (runs[0] if runs else None)
    # The graph of the version the run is pinned to: what that run really runs.
    version = run.dag_version if run is not None else head.current_version
    spec = remote.repos.dags.load_spec(dag_id, version)
    states: dict[str, str] = {}
    if run is not None:
        for ti in remote.repos.tasks.list_for_run(dag_id, run.run_id):
            states[ti.task_id] = ti.state.value
    return GraphView(spec, layout_graph(spec, states), run, runs)


# --- task detail -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobLinks:
    """Where a try's job is in the AWS console, and its logs; None where unknown."""

    job: str | None = None
    logs: str | None = None


def console_links(kind: str, job_id: str | None, region: str, log_group: str | None) -> JobLinks:
    """The AWS console pages of a job of ``kind`` (``job_id`` as skydag records it)."""
    from urllib.parse import quote

    if not job_id:
        return JobLinks()
    base = f"https://{region}.console.aws.amazon.com"
    job: str | None = None
    if kind == "batch":
        job = f"{base}/batch/home?region={region}#jobs/detail/{job_id}"
    elif kind == "ecs":
        cluster = job_id.split(":task/")[-1].split("/")[0] if ":task/" in job_id else "default"
        task = job_id.rsplit("/", 1)[-1]
        job = f"{base}/ecs/v2/clusters/{cluster}/tasks/{task}?region={region}"
    elif kind == "stepfunctions":
        job = f"{base}/states/home?region={region}#/v2/executions/details/{job_id}"
    elif kind == "emr":
        cluster, _, _step = job_id.partition("/")
        job = f"{base}/emr/home?region={region}#/clusterDetails/{cluster}"
    elif kind == "emr_serverless":
        application, _, run = job_id.partition("/")
        job = (
            f"{base}/emr/home?region={region}#/serverless/applications/{application}/job-runs/{run}"
        )
    logs = None
    if log_group:
        group = quote(quote(log_group, safe=""), safe="")
        logs = f"{base}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{group}"
    return JobLinks(job, logs)


@dataclass(frozen=True)
class TaskDetail:
    run: DagRun
    ti: TaskInstance
    kind: str
    tries: tuple[Any, ...]  # TryRecord, oldest first
    links: dict[int, JobLinks]
    target: Any  # rendered for the current try, or the DAG file's block
    target_note: str | None
    task_state: dict[str, Any] = field(default_factory=dict)
    instance_state: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] | None = None
    log_error: str | None = None


def task_view(
    remote: Remote, dag_id: str, run_id: str, task_id: str, try_number: int | None
) -> TaskDetail:
    from skydag.cli.logs import find_try, read_log
    from skydag.cli.remote import CliError
    from skydag.cli.runs import get_run
    from skydag.engine.tries import all_tries
    from skydag.ports.store import instance_scope, task_scope
    from skydag.service.jobs import template_context
    from skydag.spec.templates import TemplateRenderError, render_value

    run = get_run(remote, dag_id, run_id)
    ti = remote.repos.tasks.find(dag_id, run_id, task_id)
    if ti is None:
        raise CliError(f"task '{task_id}' not found in run {dag_id}/{run_id}")
    spec = remote.repos.dags.load_spec(dag_id, run.dag_version)
    task = spec.tasks.get(task_id)
    kind = task.target_kind if task else "unknown"
    target: Any = None
    note = None
    if task is not None:
        block = task.target.model_dump(by_alias=True, mode="json")
        try:
            target = render_value(block, template_context(remote.repos, spec, run, ti), kind)
            note = f"rendered for try {ti.try_number}" if ti.try_number else "rendered"
        except TemplateRenderError as error:
            target, note = block, f"as in the DAG file (rendering failed: {error})"
    tries = tuple(all_tries(ti)) if ti.try_number else ()
    log = log_error = None
    if tries:
        try:
            log = read_log(remote, find_try(remote, dag_id, run_id, task_id, try_number))
        except CliError as error:
            log_error = str(error)
    region = remote.settings.region
    group = _log_group((log or {}).get("source"))
    deployed = remote.settings.endpoint_url is None
    links = {
        record.try_number: console_links(kind, record.job_id, region, group if deployed else None)
        if deployed
        else JobLinks()
        for record in tries
    }
    return TaskDetail(
        run=run,
        ti=ti,
        kind=kind,
        tries=tries,
        links=links,
        target=target,
        target_note=note,
        task_state=remote.repos.state.get_all(task_scope(dag_id, task_id)),
        instance_state=remote.repos.state.get_all(instance_scope(dag_id, run_id, task_id)),
        log=log,
        log_error=log_error,
    )


def _log_group(where: str | None) -> str | None:
    """The CloudWatch Logs group in a log source's ``where`` (``LogStream.__str__``:
    ``log group G, stream S``); None for S3 and unknown sources."""
    if not where or not where.startswith("log group "):
        return None
    return where.removeprefix("log group ").split(", ")[0]


def duration(started: datetime | None, ended: datetime | None) -> str:
    if started is None:
        return "-"
    seconds = ((ended or datetime.now(UTC)) - started).total_seconds()
    text = f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.2f}s"
    return text if ended else f"{text} so far"


__all__ = [
    "RunState",
    "build_grid",
    "dags_view",
    "graph_view",
    "grid_view",
    "layout_graph",
    "task_view",
]
