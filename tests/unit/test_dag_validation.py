"""DAG file validation: one test per kind of error, each checking what the user reads.

Every problem must say which file, task, field and line it is about, in plain words, and
a file must report all its problems at once. The happy paths pin the format's shorthands.
"""

from __future__ import annotations

import json
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from skydag.spec.loader import (
    MAX_DAG_FILE_BYTES,
    MAX_REPORTED_PROBLEMS,
    MAX_YAML_ALIASES,
    DagFileError,
    Problem,
    load_dag_bytes,
    load_dag_file,
    parse_yaml,
)
from skydag.spec.models import ID_PATTERN, TARGET_KEYS, DagSpec, TaskSpec, TriggerRule

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dags"
EXAMPLES = ROOT / "examples" / "dags"


def _yaml(text: str) -> bytes:
    return textwrap.dedent(text).lstrip("\n").encode()


def problems_of(text: str | bytes, source: str = "dags/x.yaml") -> list[Problem]:
    data = text if isinstance(text, bytes) else _yaml(text)
    with pytest.raises(DagFileError) as info:
        load_dag_bytes(data, source)
    assert info.value.source == source
    return info.value.problems


def only_problem(text: str | bytes) -> Problem:
    found = problems_of(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def load(text: str) -> DagSpec:
    return load_dag_bytes(_yaml(text), "dags/x.yaml")


# --- the error line --------------------------------------------------------------------------


def test_problem_line_names_file_task_field_and_line() -> None:
    problem = Problem("dags/ml.yaml", "field required", "evaluate", "batch.job_queue", 12)
    assert str(problem) == (
        "dags/ml.yaml: error: task 'evaluate', field 'batch.job_queue' (line 12): field required"
    )
    assert str(Problem("dags/ml.yaml", "dependency cycle: a -> b -> c -> a")) == (
        "dags/ml.yaml: error: dependency cycle: a -> b -> c -> a"
    )
    assert str(Problem("d.yaml", "oops", line=3)) == "d.yaml: error: line 3: oops"
    assert problem.to_dict() == {
        "message": "field required",
        "task": "evaluate",
        "field": "batch.job_queue",
        "line": 12,
    }


def test_error_message_joins_all_problems() -> None:
    with pytest.raises(DagFileError) as info:
        load_dag_file(FIXTURES / "broken.yaml")
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)


def test_every_problem_of_a_file_is_reported_at_once_in_line_order() -> None:
    with pytest.raises(DagFileError) as info:
        load_dag_file(FIXTURES / "broken.yaml")
    source = str(FIXTURES / "broken.yaml")
    assert [str(p) for p in info.value.problems] == [
        f"{source}: error: field 'schedule' (line 3): invalid cron expression '0 25 * * *': "
        "hour 25 out of range 0-23",
        f"{source}: error: task 'extract', field 'retries' (line 8): must be a valid integer, "
        "unable to parse string as an integer (got 'lots')",
        f"{source}: error: task 'load', field 'depends_on[1]' (line 10): "
        "depends on unknown task 'transform' (tasks: extract, load)",
        f"{source}: error: task 'load', field 'lambda.paylod' (line 11): unknown key 'paylod' "
        "(did you mean 'payload'? allowed: function_name, qualifier, payload)",
    ]


# --- keys and ids ----------------------------------------------------------------------------


def test_unknown_key_lists_the_allowed_keys() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          evaluate:
            batch:
              jb_queue: eval
              job_definition: evaluate:3
        """
    )
    assert problem.task == "evaluate"
    assert problem.line == 5
    assert (problem.field, problem.message) == (
        "batch.jb_queue",
        "unknown key 'jb_queue' (did you mean 'job_queue'? allowed: job_queue, job_definition, "
        "job_name, command, parameters, environment, timeout, tags, array_size)",
    )


def test_missing_required_field() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          evaluate:
            batch: {job_definition: evaluate:3}
        """
    )
    assert str(problem) == (
        "dags/x.yaml: error: task 'evaluate', field 'batch.job_queue' (line 4): field required"
    )


def test_duplicate_task_id() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          train: {noop: }
          evaluate: {noop: }
          train: {noop: }
        """
    )
    assert (problem.field, problem.line) == ("tasks", 5)
    assert problem.message == "duplicate key 'train': task ids must be unique (first on line 3)"


def test_duplicate_key_inside_a_task() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          train:
            noop:
            retries: 1
            retries: 2
        """
    )
    assert str(problem) == (
        "dags/x.yaml: error: task 'train' (line 6): duplicate key 'retries' (first on line 5)"
    )


def test_bad_dag_id() -> None:
    problem = only_problem(
        """
        dag: ML Pipeline
        tasks: {a: {noop: }}
        """
    )
    assert (problem.field, problem.line) == ("dag", 1)
    assert problem.message.startswith(f"dag id 'ML Pipeline' must match {ID_PATTERN}")


def test_bad_task_id() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          Bad Id: {noop: }
        """
    )
    assert (problem.field, problem.line) == ("tasks", 3)
    assert problem.message.startswith("task id 'Bad Id' must match ^[a-z][a-z0-9_-]{0,63}$")


# --- dependencies ----------------------------------------------------------------------------


def test_unknown_dependency_suggests_a_close_name() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          evaluate: {noop: }
          publish:
            noop:
            depends_on: [evalute]
        """
    )
    assert (problem.task, problem.field, problem.line) == ("publish", "depends_on[0]", 6)
    assert problem.message == "depends on unknown task 'evalute' (did you mean 'evaluate'?)"


def test_self_dependency() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a:
            noop:
            depends_on: [a]
        """
    )
    assert (problem.task, problem.field, problem.line) == ("a", "depends_on[0]", 5)
    assert problem.message == "a task cannot depend on itself"


def test_dependency_listed_twice() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a: {noop: }
          b: {noop: , depends_on: [a, a]}
        """
    )
    assert (problem.task, problem.field, problem.message) == (
        "b",
        "depends_on",
        "'a' is listed twice",
    )


def test_cycle_prints_the_cycle() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a: {noop: , depends_on: [c]}
          b: {noop: , depends_on: [a]}
          c: {noop: , depends_on: [b]}
        """
    )
    assert str(problem) == "dags/x.yaml: error: dependency cycle: a -> b -> c -> a"


def test_graph_problems_are_reported_alongside_other_errors() -> None:
    found = problems_of(
        """
        dag: ml
        tasks:
          a: {noop: , depends_on: [b], retries: many}
          b: {noop: , depends_on: [a]}
        """
    )
    messages = [p.message for p in found]
    assert "dependency cycle: a -> b -> a" in messages
    assert any(m.startswith("must be a valid integer") for m in messages)


# --- targets ---------------------------------------------------------------------------------


def test_zero_target_keys() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a:
            retries: 1
        """
    )
    assert (problem.task, problem.field, problem.line) == ("a", None, 3)
    assert problem.message == (
        "needs exactly one target key, one of: "
        "batch, emr, emr_serverless, stepfunctions, lambda, ecs, wait, emit, noop"
    )


def test_two_target_keys() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a:
            noop:
            lambda: {function_name: f}
        """
    )
    assert (problem.task, problem.line) == ("a", 3)
    assert problem.message == "has 2 target keys (lambda, noop); give exactly one"


def test_wrong_type_names_what_was_written() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a:
            lambda: {function_name: f, payload: 5}
        """
    )
    assert (problem.task, problem.field) == ("a", "lambda.payload")
    assert problem.message == "expected a mapping (key: value) or a string, got a number (5)"


# --- durations and schedules -----------------------------------------------------------------


def test_bad_duration() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a:
            noop:
            retry_delay: 5x
        """
    )
    assert (problem.task, problem.field, problem.line) == ("a", "retry_delay", 5)
    assert problem.message == (
        "invalid duration '5x': expected e.g. 30s, 10m, 2h, 1d, 1h30m or seconds"
    )


def test_bad_cron() -> None:
    problem = only_problem(
        """
        dag: ml
        schedule: "0 25 * * *"
        start_date: 2026-01-01
        tasks: {a: {noop: }}
        """
    )
    assert (problem.task, problem.field, problem.line) == (None, "schedule", 2)
    assert "invalid cron expression '0 25 * * *'" in problem.message
    assert "hour" in problem.message


def test_bad_rate() -> None:
    problem = only_problem(
        """
        dag: ml
        schedule: rate(0 minutes)
        start_date: 2026-01-01
        tasks: {a: {noop: }}
        """
    )
    assert (problem.field, problem.line) == ("schedule", 2)
    assert "rate(0 minutes)" in problem.message


def test_bad_time_zone() -> None:
    problem = only_problem(
        """
        dag: ml
        schedule: "@daily"
        timezone: Mars/Olympus_Mons
        start_date: 2026-01-01
        tasks: {a: {noop: }}
        """
    )
    assert (problem.field, problem.line) == ("timezone", 3)
    assert "Mars/Olympus_Mons" in problem.message


def test_schedule_without_start_date() -> None:
    problem = only_problem(
        """
        dag: ml
        schedule: "@daily"
        tasks: {a: {noop: }}
        """
    )
    assert (problem.field, problem.line) == ("start_date", 2)
    assert problem.message == "required when schedule is set (when the first interval starts)"


# --- signals and trigger rules ---------------------------------------------------------------


def test_invalid_event_pattern_in_on() -> None:
    problem = only_problem(
        """
        dag: ml
        on:
          - source: [ml.trainer]
            detail: {size: [{numeric: [">>", 5]}]}
        tasks: {a: {noop: }}
        """
    )
    assert (problem.task, problem.field, problem.line) == (None, "on[0]", 3)
    assert problem.message.startswith("invalid event pattern: detail.size")


def test_invalid_event_pattern_in_start_on() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a:
            noop:
            start_on: {detail-type: model.emitted}
        """
    )
    assert (problem.task, problem.field, problem.line) == ("a", "start_on", 5)
    assert problem.message.startswith("invalid event pattern: detail-type")


def test_invalid_trigger_rule() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a: {noop: }
          b:
            noop:
            depends_on: [a]
            trigger_rule: most_success
        """
    )
    assert (problem.task, problem.field, problem.line) == ("b", "trigger_rule", 7)
    assert problem.message.startswith("invalid trigger rule 'most_success': expected ")
    assert all(rule.value in problem.message for rule in TriggerRule)


# --- templates -------------------------------------------------------------------------------


def test_template_syntax_error() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a:
            batch:
              job_queue: q
              job_definition: d
              command: [python, eval.py, "{{ trigger.detail.model_uri }"]
        """
    )
    assert (problem.task, problem.field, problem.line) == ("a", "batch.command[2]", 7)
    assert problem.message == "template syntax error: unexpected '}'"


def test_template_syntax_error_in_local_block_names_the_template_line() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a:
            noop:
            local:
              command:
                - |
                  echo start
                  {% if params.x %}
        """
    )
    assert (problem.task, problem.field, problem.line) == ("a", "local.command[0]", 7)
    assert problem.message.startswith("template syntax error: Unexpected end of template")
    assert problem.message.endswith("(template line 2)")


# --- the file itself -------------------------------------------------------------------------


def test_file_over_one_megabyte_is_refused_before_parsing() -> None:
    problem = only_problem(b"#" * (MAX_DAG_FILE_BYTES + 1))
    assert problem.message == ("file is larger than 1 MiB (1048576 bytes); DAG files are small")


def test_alias_bomb() -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    problem = only_problem("\n".join(levels).encode())
    assert problem.message.startswith("too many YAML aliases (alias bomb?)")


def test_too_many_aliases() -> None:
    text = "x: &a 1\ny: [" + ", ".join(["*a"] * (MAX_YAML_ALIASES + 1)) + "]\n"
    problem = only_problem(text.encode())
    assert problem.line == 2
    assert problem.message == "too many YAML aliases (alias bomb?): more than 100"


def test_recursive_alias() -> None:
    problem = only_problem(b"dag: x\ntasks: &t {a: *t}\n")
    assert problem.message == "a YAML alias refers to its own anchor (recursive data)"


def test_nesting_too_deep() -> None:
    problem = only_problem(b"params: " + b"[" * 80 + b"]" * 80 + b"\n")
    assert problem.message == "YAML nested more than 50 levels deep"


def test_unsafe_yaml_tag_is_refused() -> None:
    problem = only_problem(b"dag: !!python/object/apply:os.system [echo hi]\ntasks: {}\n")
    assert problem.line == 1
    assert problem.message == (
        "unsupported YAML tag '!!python/object/apply:os.system': DAG files are plain YAML"
    )


def test_non_utf8_bytes() -> None:
    problem = only_problem(b"dag: x\ntasks:\n  a: {noop: }\n  caf\xe9: {noop: }\n")
    assert problem.line == 4
    assert problem.message == "not UTF-8: invalid byte 0xe9 at byte offset 33 (line 4)"


def test_yaml_syntax_error_has_line_and_column() -> None:
    problem = only_problem(
        """
        dag: ml
        tasks:
          a: {noop: , retries: 1
          b: {noop: }
        """
    )
    assert problem.line == 4
    assert problem.message.startswith("invalid YAML at column 4: ")
    assert str(problem).startswith("dags/x.yaml: error: line 4: invalid YAML at column 4: ")


def test_multiple_documents() -> None:
    problem = only_problem(
        """
        dag: one
        tasks: {a: {noop: }}
        ---
        dag: two
        tasks: {a: {noop: }}
        """
    )
    assert problem.line == 3
    assert problem.message == "more than one YAML document ('---'): a DAG file holds exactly one"


def test_top_level_not_a_mapping() -> None:
    problem = only_problem(b"- dag: ml\n- tasks: {}\n")
    assert problem.message == "the top level must be a mapping with 'dag:' and 'tasks:', not a list"


@pytest.mark.parametrize("text", [b"", b"# only a comment\n", b"---\n"])
def test_empty_file(text: bytes) -> None:
    problem = only_problem(text)
    assert problem.message == "file is empty: expected a mapping with 'dag:' and 'tasks:'"


def test_missing_file() -> None:
    with pytest.raises(DagFileError) as info:
        load_dag_file(FIXTURES / "no_such_file.yaml")
    [problem] = info.value.problems
    assert problem.message == "cannot read file: No such file or directory"


# --- happy paths -----------------------------------------------------------------------------


def test_design_example_validates() -> None:
    spec = load_dag_file(FIXTURES / "design_example.yaml")
    assert spec.dag == "ml_pipeline"
    assert list(spec.tasks) == ["evaluate", "publish"]
    assert spec.start_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert spec.on == [{"source": ["ml.trainer"], "detail-type": ["model.emitted"]}]
    assert spec.defaults.retry_delay == timedelta(seconds=30)
    assert spec.defaults.timeout == timedelta(hours=2)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_validate(name: str) -> None:
    spec = load_dag_file(EXAMPLES / name)
    assert spec.tasks


def test_every_example_task_has_a_local_command() -> None:
    for name in ("ml_pipeline.yaml", "etl_daily.yaml", "incremental_etl.yaml", "ml_platform.yaml"):
        spec = load_dag_file(EXAMPLES / name)
        for task_id, task in spec.tasks.items():
            assert task.local is not None, (name, task_id)
            assert task.local.command, (name, task_id)


def test_aliases_lambda_and_detail_type() -> None:
    spec = load(
        """
        dag: ml
        tasks:
          call:
            lambda: {function_name: f, payload: {a: 1}}
          announce:
            emit: {detail-type: model.validated, detail: {x: 1}}
        """
    )
    assert spec.tasks["call"].target_kind == "lambda"
    assert spec.tasks["call"].lambda_ is not None
    assert spec.tasks["call"].lambda_.function_name == "f"
    emit = spec.tasks["announce"].emit
    assert emit is not None
    assert emit.detail_type == "model.validated"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("45", timedelta(seconds=45)),
    ],
)
def test_durations(written: str, expected: timedelta) -> None:
    spec = load(
        f"""
        dag: ml
        tasks:
          a: {{noop: , retry_delay: {written}}}
        """
    )
    assert spec.tasks["a"].retry_delay == expected


@pytest.mark.parametrize("shorthand", ["noop:", "noop: {}", "noop: true"])
def test_noop_shorthands(shorthand: str) -> None:
    spec = load(
        f"""
        dag: ml
        tasks:
          a:
            {shorthand}
        """
    )
    assert spec.tasks["a"].target_kind == "noop"


def test_yaml_1_1_booleans_stay_strings() -> None:
    # YAML 1.1 reads `on` as true: the DAG's `on:` key must survive, and `yes` is a string.
    spec = load(
        """
        dag: ml
        params: {answer: yes, code: 010}
        on: {source: [ml.trainer]}
        tasks: {a: {noop: }}
        """
    )
    assert spec.on == [{"source": ["ml.trainer"]}]
    assert spec.params == {"answer": "yes", "code": "010"}


def test_dates_stay_strings_in_params_and_parse_as_start_date() -> None:
    spec = load(
        """
        dag: ml
        schedule: "@daily"
        start_date: 2026-03-01
        params: {since: 2026-01-01}
        tasks: {a: {noop: }}
        """
    )
    assert spec.start_date == datetime(2026, 3, 1)
    assert spec.params == {"since": "2026-01-01"}


def test_anchors_and_merge_keys_are_not_duplicates() -> None:
    spec = load(
        """
        dag: ml
        tasks:
          a: &base
            noop:
            retries: 3
          b:
            <<: *base
            retries: 5
        """
    )
    assert (spec.tasks["a"].retries, spec.tasks["b"].retries) == (3, 5)


def test_target_and_template_problems_are_found_in_tasks_with_other_errors() -> None:
    found = problems_of(
        """
        dag: ml
        tasks:
          a:
            retries: lots
            noop:
            lambda: {function_name: "{{ broken }"}
        """
    )
    assert {(p.field, p.message) for p in found} == {
        ("retries", "must be a valid integer, unable to parse string as an integer (got 'lots')"),
        (None, "has 2 target keys (lambda, noop); give exactly one"),
        ("lambda.function_name", "template syntax error: unexpected '}'"),
    }


# --- the documentation's examples ------------------------------------------------------------

_DAG_KEYS = set(DagSpec.model_fields) | {"on"}
_TASK_KEYS = {info.alias or name for name, info in TaskSpec.model_fields.items()}


def _as_dag(snippet: dict[str, Any]) -> dict[str, Any]:
    """Wrap a docs snippet (a DAG, its tasks, DAG keys or one task) into a whole DAG."""
    if "dag" in snippet:
        return snippet
    if "tasks" in snippet or set(snippet) <= _DAG_KEYS:
        return {"dag": "doc", "tasks": {"t": {"noop": None}}, **snippet}
    if set(snippet) <= _TASK_KEYS:
        task = snippet if set(snippet) & set(TARGET_KEYS) else {**snippet, "noop": None}
        return {"dag": "doc", "tasks": {"t": task}}
    tasks = dict(snippet)
    for task in snippet.values():
        tasks.update({dep: {"noop": None} for dep in task.get("depends_on", [])})
    return {"dag": "doc", "tasks": tasks}


def test_every_yaml_example_in_the_docs_validates() -> None:
    text = (ROOT / "docs" / "dag-file.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) > 15
    for i, block in enumerate(blocks):
        snippet = parse_yaml(block.encode(), f"docs block {i}")
        data = json.dumps(_as_dag(snippet)).encode()  # JSON is YAML
        load_dag_bytes(data, f"docs/dag-file.md block {i}")


def test_problems_are_capped_per_file() -> None:
    tasks = "".join(f"  t{i}: {{batch: {{jb_queue: q, job_definition: d}}}}\n" for i in range(150))
    found = problems_of(f"dag: many\ntasks:\n{tasks}".encode())
    assert len(found) == MAX_REPORTED_PROBLEMS + 1
    assert found[-1].message == "... and 50 more problems"


@pytest.mark.parametrize(
    "source", ["skydag", "skydag.scheduler", "skydag.command", "aws.batch", "lambda"]
)
def test_emit_refuses_reserved_sources(source: str) -> None:
    # A DAG must not forge skydag's notifications, commands, ticks or timers, nor a
    # Lambda job's result.
    problem = only_problem(
        f"""
        dag: forger
        tasks:
          tick:
            emit: {{source: {source}, detail-type: Schedule Tick}}
        """
    )
    assert (problem.task, problem.field, problem.line) == ("tick", "emit.source", 4)
    assert problem.message.startswith(
        f"source '{source}' is reserved (skydag, skydag.*, aws.* and lambda are reserved)"
    )


@pytest.mark.parametrize("source", ["skydag.dag.victim", "ml.evaluation", "acme.mlx"])
def test_emit_refuses_sources_of_other_namespaces(source: str) -> None:
    problem = only_problem(
        f"""
        dag: forger
        emit_sources: [acme.ml]
        tasks:
          announce:
            emit: {{source: {source}, detail-type: done}}
        """
    )
    assert (problem.task, problem.field) == ("announce", "emit.source")
    assert source in problem.message


def test_emit_may_use_its_own_namespace_or_a_declared_prefix() -> None:
    for source in ("skydag.dag.forger", "skydag.dag.forger.sub", "acme.ml", "acme.ml.models"):
        spec = load(
            f"""
            dag: forger
            emit_sources: [acme.ml]
            tasks:
              announce:
                emit: {{source: {source}, detail-type: done}}
            """
        )
        emit = spec.tasks["announce"].emit
        assert emit is not None
        assert emit.source == source


def test_a_templated_source_is_left_to_dispatch() -> None:
    load(
        """
        dag: forger
        tasks:
          announce:
            emit: {source: "{{ params.where }}", detail-type: done}
        """
    )


@pytest.mark.parametrize("prefix", ["skydag", "skydag.dag.x", "aws", "aws.s3", "lambda", "a..b"])
def test_reserved_or_malformed_emit_source_prefixes_are_refused(prefix: str) -> None:
    problem = only_problem(
        f"""
        dag: forger
        emit_sources: ["{prefix}"]
        tasks:
          t: {{noop: }}
        """
    )
    assert f"'{prefix}'" in problem.message


# --- for_each ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("noop: {}\n    max_parallel: 3", "max_parallel needs for_each"),
        ("for_each: [a]\n    max_parallel: 0\n    noop: {}", "greater than or equal to 1"),
        ('lambda: {function_name: "f-{{ item }}"}', "lambda.function_name uses 'item'"),
        (
            'batch: {job_queue: q, job_definition: d, command: ["{{ task.map_index }}"]}',
            "batch.command[0] uses 'task.map_index', which only a task with for_each has",
        ),
        ("for_each: not-a-template\n    noop: {}", "for_each must be a list or a template"),
        ("for_each: [a]\n    mode: service\n    noop: {}", "a service (mode: service) cannot"),
        ("for_each: [a]\n    wait: {on: {source: [x]}}", "cannot be combined with wait"),
        ("for_each: [a]\n    start_on: {source: [x]}\n    noop: {}", "combined with start_on"),
        (f"for_each: {list(range(10_001))}\n    noop: {{}}", "for_each lists 10001 items"),
    ],
)
def test_for_each_misuse_is_one_clear_error(task: str, message: str) -> None:
    problem = only_problem(f"dag: d\ntasks:\n  t:\n    {task}\n")
    assert problem.task == "t"
    assert message in problem.message


def test_a_mapped_task_loads_with_its_list_or_template() -> None:
    spec = load(
        """
        dag: d
        tasks:
          a: {noop: {}}
          m:
            depends_on: [a]
            for_each: "{{ outputs.a.items }}"
            max_parallel: 5
            lambda: {function_name: f, payload: {x: "{{ item }}", i: "{{ task.map_index }}"}}
        """
    )
    assert (spec.tasks["m"].for_each, spec.tasks["m"].max_parallel) == ("{{ outputs.a.items }}", 5)
