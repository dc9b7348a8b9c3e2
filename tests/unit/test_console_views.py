"""The console's pure builders: the grid (folding, order, render speed at 200 runs x 100
tasks), the graph's layout at 500 tasks, and a trigger's conf against params."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import pytest

from skydag.cli.remote import Remote
from skydag.console.app import Console
from skydag.console.views import GridFilter, build_grid, fold, layout_graph
from skydag.engine.models import DagRun, RunType, TaskInstance
from skydag.engine.states import RunState, TaskState
from skydag.settings import Settings
from skydag.spec.models import DagSpec
from skydag.spec.params import conf_problems

START = datetime(2026, 1, 1, tzinfo=UTC)
STATES = list(TaskState)


def chain(tasks: int, width: int = 10) -> DagSpec:
    """``tasks`` tasks in layers of ``width``, each depending on the previous layer's."""
    body: dict[str, dict[str, object]] = {}
    for i in range(tasks):
        layer = i // width
        ups = [f"t{j}" for j in range((layer - 1) * width, layer * width)] if layer else []
        body[f"t{i}"] = {"noop": {}, "depends_on": ups[: 3 + i % 3]}
    return DagSpec.model_validate({"dag": "big", "tasks": body})


def runs_and_tasks(spec: DagSpec, count: int) -> tuple[list[DagRun], dict[str, list[TaskInstance]]]:
    runs = [
        DagRun(
            "big",
            f"scheduled__{i}",
            1,
            RunType.SCHEDULED,
            state=RunState.SUCCESS,
            logical_date=START + timedelta(days=i),
        )
        for i in range(count)
    ]
    instances = {
        run.run_id: [
            TaskInstance("big", run.run_id, task, state=STATES[(r + t) % len(STATES)])
            for t, task in enumerate(spec.tasks)
        ]
        for r, run in enumerate(runs)
    }
    return runs, instances


def test_a_mapped_tasks_instances_fold_into_one_cell_with_counts() -> None:
    instances = [
        TaskInstance("d", "r", "m", state=TaskState.SUCCESS),
        TaskInstance("d", "r", "m", state=TaskState.FAILED),
        TaskInstance("d", "r", "m", state=TaskState.SUCCESS),
    ]
    cell = fold(instances)
    assert cell.state == "failed"  # the state that most needs a look colours it
    assert cell.counts == (("failed", 1), ("success", 2))
    assert cell.folded
    assert cell.mark == "3"
    assert cell.label == "1 failed, 2 success"


def test_the_grid_has_tasks_in_dag_order_and_a_gap_where_a_run_lacks_a_task() -> None:
    spec = chain(4, width=2)
    runs, instances = runs_and_tasks(spec, 2)
    instances["scheduled__0"] = [ti for ti in instances["scheduled__0"] if ti.task_id != "t3"]
    instances["scheduled__1"].append(TaskInstance("big", "scheduled__1", "old_task"))
    grid = build_grid("big", spec.topological_order(), runs, instances)
    assert [row.task for row in grid.rows] == ["t0", "t1", "t2", "t3", "old_task"]
    assert grid.rows[3].cells[0] is None
    assert grid.rows[4].cells == (None, fold([TaskInstance("big", "scheduled__1", "old_task")]))


def test_the_grid_filter_keeps_runs_by_state_and_date() -> None:
    run = DagRun("d", "r", 1, RunType.MANUAL, state=RunState.FAILED, logical_date=START)
    assert GridFilter(frozenset({"failed"})).keeps(run)
    assert not GridFilter(frozenset({"success"})).keeps(run)
    assert GridFilter(since=START.date(), until=START.date()).keeps(run)
    assert not GridFilter(since=(START + timedelta(days=1)).date()).keeps(run)


def test_a_200_run_by_100_task_grid_renders_quickly() -> None:
    spec = chain(100)
    runs, instances = runs_and_tasks(spec, 200)
    console = Console(Remote(argparse.Namespace()))
    began = time.perf_counter()
    grid = build_grid("big", spec.topological_order(), runs, instances)
    html = console.templates.get_template("grid.html").render(
        dag="big", grid=grid, spec=spec, head=None, wanted=GridFilter(limit=200), where="test"
    )
    took = time.perf_counter() - began
    print(f"\nbenchmark: 200 runs x 100 tasks grid built and rendered in {took * 1000:.0f} ms")
    assert html.count('<td><a id="c-') == 200 * 100
    # Well under a second on an idle machine (the line above); generous here, where the
    # tests share two cores with other work.
    assert took < 5.0


def test_the_graph_lays_500_tasks_out_in_columns_without_overlap() -> None:
    spec = chain(500, width=25)
    graph = layout_graph(spec, {"t0": "success"})
    assert len(graph.nodes) == 500
    assert len(graph.edges) == sum(len(task.depends_on) for task in spec.tasks.values())
    places = {(node.x, node.y) for node in graph.nodes}
    assert len(places) == 500
    by_task = {node.task: node for node in graph.nodes}
    assert all(by_task[up].x < by_task[task].x for task in spec.tasks for up in spec.upstream(task))
    assert by_task["t0"].state == "success"
    assert graph.width > 0
    assert graph.height < 30 * 60 + 100  # 25 rows of nodes, not 500


def test_settings_are_not_needed_to_build_views() -> None:
    assert Settings().region  # the views above ran with no AWS at all


@pytest.mark.parametrize(
    ("params", "conf", "problems"),
    [
        ({}, {"anything": 1}, []),
        ({"table": "orders"}, {"table": "events"}, []),
        ({"uri": None}, {"uri": [1, 2]}, []),
        (
            {"table": "orders"},
            {"tabel": "x"},
            ["conf.tabel: not a param of this DAG (its params: table)"],
        ),
        (
            {"rows": 10},
            {"rows": True},
            ["conf.rows: expected a number like the param's default 10, got a boolean"],
        ),
    ],
)
def test_a_conf_is_checked_against_the_dags_params(
    params: dict[str, object], conf: dict[str, object], problems: list[str]
) -> None:
    assert conf_problems(params, conf) == problems
