"""Hostile templates fail their own render with a one-line TemplateRenderError, refused
before they allocate; the templates DAGs really use render exactly as Jinja2 does."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
import pytest

from skydag.spec.loader import load_dag_file
from skydag.spec.sandbox import (
    MAX_CALL_DEPTH,
    MAX_INTEGER,
    MAX_LIST_ITEMS,
    MAX_LOOP_ITERATIONS,
    MAX_STRING,
    measure,
    percent_size,
    replaced_size,
)
from skydag.spec.templates import (
    TemplateRenderError,
    TemplateSyntaxProblem,
    check_template,
    render_string,
    render_value,
    template_strings,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dags"
BIG = "{% set big = 'x' * 200000 %}"
SQUARE_LOOP = (
    "{% set ns = namespace(x=2) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}"
    "{% endfor %}{{ ns.x }}"
)

# The findings of issue 9, and their relatives: each made gigabytes or ran for minutes.
ATTACKS = {
    "replace with a large replacement": "{{ ('x' * 1000) | replace('x', 'y' * 200000) }}",
    "replace chained": "{% set s = 'ab' * 100 %}{{ s | replace('a', s) | replace('a', s) }}",
    "str.replace": "{{ ('x' * 1000).replace('x', 'y' * 200000) }}",
    "join with a large separator": "{{ range(100000) | join('z' * 200000) }}",
    "str.join": "{{ ('y' * 200000).join(['a'] * 1000) }}",
    "indent by a large width": "{{ ('a\\n' * 1000) | indent(250000) }}",
    "indent by a large string": "{{ ('a\\n' * 1000) | indent('x' * 200000) }}",
    "center": "{{ 'a' | center(1000000000) }}",
    "str.ljust": "{{ 'x'.ljust(1000000000) }}",
    "nested format width": "{{ '{:>{w}}'.format('x', w=10**9) }}",
    "format width from an argument": "{{ '%*s' | format(10**9, 'x') }}",
    "format width built at run time": "{% set f = '%' ~ '9' * 9 ~ 's' %}{{ f | format('x') }}",
    "format of a repeated mapping key": "{{ ('%(a)s' * 50000) % {'a': 'x' * 200000} }}",
    "format_map of a repeated field": "{{ ('{a}' * 50000).format_map({'a': 'x' * 200000}) }}",
    "integer squared in a loop": SQUARE_LOOP,
    "integer power": "{{ 10 ** 10 ** 8 }}",
    "string times string length": "{{ ('x' * 250000) * 250000 }}",
    "list times a large count": "{{ ([1] * 200000) | length }}",
    "~ doubling in a loop": (
        "{% set ns = namespace(s='x' * 1000) %}{% for i in range(30) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    ),
    "+ doubling in a loop": (
        "{% set ns = namespace(s='x' * 1000) %}{% for i in range(30) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}"
    ),
    "list + doubling in a loop": (
        "{% set ns = namespace(s=[1] * 1000) %}{% for i in range(30) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}"
    ),
    "a huge range": "{{ range(10**12) | sum }}",
    "nested loops": "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
    "macro recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "branching macro recursion": (
        "{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
        "{{ f(0) }}"
    ),
    "recursive loop": "{% for x in [[1]] recursive %}{{ loop([[x]]) }}{% endfor %}",
    "block captured in a loop": (
        BIG + "{% set b %}{% for i in range(100000) %}{{ big }}{% endfor %}{% endset %}"
    ),
    "macro output in a loop": (
        BIG + "{% macro m() %}{% for i in range(100000) %}{{ big }}{% endfor %}{% endmacro %}"
        "{{ m() | length }}"
    ),
    "text of a list of shared strings": BIG + "{{ ([big] * 10000) | string | length }}",
    "tojson of a list of shared strings": BIG + "{{ ([big] * 10000) | tojson | length }}",
    "upper of a list of shared strings": BIG + "{{ ([big] * 10000) | upper | length }}",
    "sum of lists": "{{ ([['x'] * 5000] * 5000) | sum(start=[]) | length }}",
    "wordwrap with a large wrapstring": (
        "{{ ('a b ' * 20000) | wordwrap(1, wrapstring='y' * 100000) }}"
    ),
    "str.translate": "{{ ('x' * 200000).translate({120: 'y' * 200000}) }}",
    "str.expandtabs": "{{ ('\\t' * 200000).expandtabs(200000) }}",
    "int.to_bytes": "{{ (1).to_bytes(1000000000, 'big') }}",
    "tojson indent": "{{ ([[1, 2, 3]] * 100) | tojson(indent=100000) }}",
    "a shared nested list": (
        "{% set ns = namespace(x=[]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}"
        "{% endfor %}{{ ns.x }}"
    ),
    "work in a loop": (
        "{% for i in range(100000) %}{% set c = ('x' * 250000) | upper %}{% endfor %}"
    ),
    "self-calling block": "{% block a %}{{ self.a() }}{% endblock %}",
}


@pytest.mark.parametrize("template", ATTACKS.values(), ids=ATTACKS.keys())
def test_attacks_fail_the_render_with_one_line(template: str) -> None:
    with pytest.raises(TemplateRenderError) as info:
        render_value({"command": ["run", template]}, {}, "batch")
    assert info.value.path == "batch.command[1]"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (
            "{{ 'x' * 1000000 }}",
            f"* would make a string of 1000000 characters (limit {MAX_STRING})",
        ),
        ("{{ [0] * 10001 }}", f"* would make 10001 items (limit {MAX_LIST_ITEMS})"),
        (SQUARE_LOOP, f"* would make an integer larger than {MAX_INTEGER}"),
        ("{{ 2 ** 100 }}", f"** would make an integer larger than {MAX_INTEGER}"),
        ("{{ range(100001) | list }}", f"range of 100001 numbers (limit {MAX_LOOP_ITERATIONS})"),
        (ATTACKS["nested loops"], f"more than {MAX_LOOP_ITERATIONS} loop iterations"),
        (ATTACKS["macro recursion"], f"calls nested more than {MAX_CALL_DEPTH} deep (f)"),
        (ATTACKS["join with a large separator"], "join would make a string of"),
        (ATTACKS["replace with a large replacement"], "replace would make a string of"),
    ],
)
def test_the_reason_names_the_limit(template: str, reason: str) -> None:
    with pytest.raises(TemplateRenderError) as info:
        render_string(template, {}, "emit.detail.x")
    assert str(info.value).startswith("emit.detail.x: over a template limit: ")
    assert reason in str(info.value)


def test_the_integer_bound_lets_ordinary_arithmetic_through() -> None:
    assert render_string("{{ 2 ** 63 * 2 }} {{ 3 ** 40 }} {{ 10 ** 19 }}", {}) == (
        f"{2**64} {3**40} {10**19}"
    )
    assert render_string("{{ 2.0 ** 100 > 1 }}", {}) == "True"


def test_values_at_the_limits_are_allowed() -> None:
    assert len(render_string(f"{{{{ 'x' * {MAX_STRING} }}}}", {})) == MAX_STRING
    assert render_string(f"{{{{ ([0] * {MAX_LIST_ITEMS}) | length }}}}", {}) == "10000"
    assert render_string("{{ 'a' | center(250000) | length }}", {}) == "250000"


class _Exploding(Mapping[str, Any]):
    """A context value whose lookup runs the process out of memory or stack."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __getitem__(self, key: str) -> Any:
        raise self.error()

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("error", "reason"), [(MemoryError, "ran out of memory"), (RecursionError, "nested too deeply")]
)
def test_memory_and_recursion_errors_fail_the_template(
    error: type[BaseException], reason: str
) -> None:
    with pytest.raises(TemplateRenderError, match=reason) as info:
        render_string("{{ boom.x }}", {"boom": _Exploding(error)}, "lambda.payload")
    assert info.value.path == "lambda.payload"


def test_deeply_nested_expressions_are_a_syntax_problem() -> None:
    text = "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}"
    with pytest.raises(TemplateSyntaxProblem, match="nested too deeply"):
        check_template(text)
    with pytest.raises(TemplateRenderError, match="nested too deeply"):
        render_string(text, {}, "batch.command[0]")


def test_any_other_error_is_a_render_error() -> None:
    with pytest.raises(TemplateRenderError, match="AttributeError"):
        render_string("{{ (1000) | wordwrap(1) }}", {})


def test_predictions_match_what_python_makes() -> None:
    for text, old, new, count in [
        ("abcabc", "b", "xyz", None),
        ("aaa", "", "-", 2),
        ("", "", "x", -1),
    ]:
        made = text.replace(old, new, -1 if count is None else count)
        assert replaced_size(text, old, new, count) == len(made)
    fmt, values = "%5s|%-3d|%%", ("abcdefg", 7)
    assert percent_size(fmt, values) >= len(fmt % values)
    assert measure("x" * 10) == 10
    assert measure(["ab", "cd"]) >= len(str(["ab", "cd"]))
    shared = ["x" * 1000] * 10_000
    assert measure(shared) > MAX_STRING  # stops counting early; never builds the text


# --- the templates the examples use render as plain Jinja2 renders them ---------------------


def _reference(text: str, context: Mapping[str, Any]) -> str:
    """Plain Jinja, printing data as skydag documents it: a mapping or list as JSON."""

    def data_as_json(value: Any) -> Any:
        if isinstance(value, dict | list | tuple):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return value

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=data_as_json,
    )
    return env.from_string(text).render(dict(context))


EXAMPLE_CONTEXT: dict[str, Any] = {
    "dag": "example",
    "run": {
        "id": "manual__2026-01-01T00:00:00+00:00",
        "type": "manual",
        "logical_date": "2026-01-01T00:00:00+00:00",
        "data_interval_start": "2025-12-31T00:00:00+00:00",
        "data_interval_end": "2026-01-01T00:00:00+00:00",
        "conf": {},
    },
    "trigger": {
        "detail": {
            "model_uri": "s3://models/42",
            "bucket": {"name": "my-data"},
            "object": {"key": "incoming/2026-11-22.csv", "size": 8},
            # A "DagRun State Change" (after_etl_daily.yaml).
            "run_id": "scheduled__2026-11-21T01:00:00+00:00",
        }
    },
    "signal": {"detail": {"model_uri": "s3://models/43"}},
    "task": {"id": "score_3", "try_number": 2},
    "state": {"watermark": "2025-12-30T00:00:00+00:00"},
    "outputs": {"score": {"score": 0.97}, "stage": {"rows": 3, "path": "s3://b/stage"}},
}


def _example_templates() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        spec = load_dag_file(path)
        params = {**spec.params, "model": "m-1", "rows": 1000, "shards": 4}
        for task_id, task in spec.tasks.items():
            for field, text in template_strings(task):
                if "{{" in text or "{%" in text:
                    context = {**EXAMPLE_CONTEXT, "dag": spec.dag, "params": params}
                    if task.for_each is not None:  # an instance of a mapped task
                        task_context = {**EXAMPLE_CONTEXT["task"], "map_index": 0}
                        context.update(item="s-00", task=task_context)
                    found.append((f"{path.name}:{task_id}.{field}", text, context))
    return found


EXAMPLE_TEMPLATES = _example_templates()


def test_the_examples_have_templates() -> None:
    assert len(EXAMPLE_TEMPLATES) >= 10


@pytest.mark.parametrize(
    ("text", "context"),
    [(text, context) for _, text, context in EXAMPLE_TEMPLATES],
    ids=[where for where, _, _ in EXAMPLE_TEMPLATES],
)
def test_example_templates_render_as_jinja_does(text: str, context: dict[str, Any]) -> None:
    assert render_string(text, context) == _reference(text, context)


@pytest.mark.parametrize(
    "text",
    [
        "{{ params.names | join(',') }} {{ params.names | map('upper') | list }}",
        "{% for n in params.names %}{{ loop.index }}:{{ n }}{% if not loop.last %},{% endif %}"
        "{% endfor %}",
        "{{ '%05.1f|%-4s|%d' | format(3.14159, 'ab', 7) }} {{ '{:>6}|{:.2f}'.format('x', 2.5) }}",
        "{{ 'a-b-c' | replace('-', '_') }} {{ 'x\\ny' | indent(2, first=true) }}",
        "{{ params | tojson }} {{ params | dictsort | first }} {{ 'hello world' | title }}",
        "{% macro tag(k, v) %}{{ k }}={{ v }}{% endmacro %}{{ tag('a', 1) }} {{ tag('b', 2) }}",
        "{% set s %}{{ dag }}-{{ task.id }}{% endset %}{{ s | upper }} {{ 'ab' ~ 3 ~ none }}",
        "{{ (params.names + ['c']) | length }} {{ [1, 2] * 3 }} {{ 'ab' * 3 }} {{ 7 % 3 }}",
        "{{ range(3) | sum }} {{ [[1], [2]] | sum(start=[]) }} {{ 'a b c' | wordwrap(3) }}",
        "{{ 'x' | center(5) }}|{{ 'abcdef' | truncate(5, true, '') }}|{{ 'a\\tb'.expandtabs(4) }}",
    ],
)
def test_ordinary_templates_render_as_jinja_does(text: str) -> None:
    context = {**EXAMPLE_CONTEXT, "params": {"names": ["a", "b"], "n": 3}}
    assert render_string(text, context) == _reference(text, context)
