"""Templates render in a sandbox with size limits: what works, and what is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skydag.spec.models import TaskSpec
from skydag.spec.templates import (
    MAX_LOOP_ITERATIONS,
    MAX_TEMPLATE_OUTPUT,
    MAX_TEMPLATE_SOURCE,
    TemplateRenderError,
    TemplateSyntaxProblem,
    check_template,
    render_value,
    template_strings,
)

CONTEXT: dict[str, Any] = {
    "dag": "ml",
    "run": {"id": "manual__2026-01-01", "logical_date": "2026-01-01T00:00:00+00:00", "conf": {}},
    "params": {"threshold": 0.9, "rows": 2_000_000, "names": ["a", "b"]},
    "trigger": {"detail": {"model_uri": "s3://models/42"}},
    "signal": {},
    "task": {"id": "evaluate", "try_number": 2},
    "state": {"watermark": "2026-01-01"},
    "outputs": {},
}


def test_render_nested_values() -> None:
    value = {
        "command": ["python", "eval.py", "--model", "{{ trigger.detail.model_uri }}"],
        "environment": {"TRY": "{{ task.try_number }}", "PLAIN": "no markup here"},
        "array_size": 3,
        "nested": [{"x": "{{ params.names | join(',') }}"}, None, True],
    }
    assert render_value(value, CONTEXT) == {
        "command": ["python", "eval.py", "--model", "s3://models/42"],
        "environment": {"TRY": "2", "PLAIN": "no markup here"},
        "array_size": 3,
        "nested": [{"x": "a,b"}, None, True],
    }


def test_plain_strings_are_returned_as_is() -> None:
    text = "no {braces} here"
    assert render_value(text, {}) is text


def test_keys_are_not_templates() -> None:
    assert render_value({"{{ dag }}": "{{ dag }}"}, CONTEXT) == {"{{ dag }}": "ml"}


def test_filters_defaults_and_large_numbers_work() -> None:
    assert render_value("{{ state.missing | default('none') }}", CONTEXT) == "none"
    assert render_value("{{ params.rows + 1 }}", CONTEXT) == "2000001"
    assert render_value("{{ '%d' | format(params.rows) }}", CONTEXT) == "2000000"
    assert render_value("{{ params | tojson }}", CONTEXT).startswith('{"names"')
    assert render_value("{% for i in params.names %}{{ loop.index }}{% endfor %}", CONTEXT) == (
        "12"
    )


DATA_CONTEXT: dict[str, Any] = {
    **CONTEXT,
    "run": {"id": "r1", "conf": {"pages": 3, "done": True, "next": None, "city": "Zürich"}},
    "outputs": {"list_shards": {"shards": ["s-00", "s-01"]}, "count": {"rows": 3}},
    "state": {"checkpoint": {"pages": [1, 2]}},
}


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("{{ run.conf }}", '{"pages":3,"done":true,"next":null,"city":"Zürich"}'),
        ("{{ outputs.list_shards.shards }}", '["s-00","s-01"]'),
        ("{{ outputs.list_shards }}", '{"shards":["s-00","s-01"]}'),
        ("--checkpoint={{ state.checkpoint }}", '--checkpoint={"pages":[1,2]}'),
        ("{{ 'conf=' ~ run.conf }}", 'conf={"pages":3,"done":true,"next":null,"city":"Zürich"}'),
        ("{{ outputs.list_shards.shards[1:] }}", '["s-01"]'),
        (
            "{{ run.conf.items() | list }}",
            '[["pages",3],["done",true],["next",null],["city","Zürich"]]',
        ),
        ("{{ {} }}{{ [] }}", "{}[]"),
    ],
)
def test_mappings_and_lists_render_as_compact_json(template: str, rendered: str) -> None:
    assert render_value(template, DATA_CONTEXT) == rendered


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("{{ outputs.count.rows }}", "3"),  # a value inside the data is itself
        ("{{ outputs.list_shards.shards[0] }}", "s-00"),  # a string is not quoted
        ("{{ run.conf.done }}", "True"),  # a bare boolean or null prints as Jinja prints it
        ("{{ run.conf.next }}", "None"),
        ("{{ run.conf.done | tojson }}", "true"),  # ... and as JSON when asked to
        ("{{ run.conf | string }}", str(DATA_CONTEXT["run"]["conf"])),  # an explicit str()
    ],
)
def test_scalars_render_as_before(template: str, rendered: str) -> None:
    assert render_value(template, DATA_CONTEXT) == rendered


def test_rendered_data_parses_back_as_the_same_json() -> None:
    rendered = render_value(["--conf", "{{ run.conf }}"], DATA_CONTEXT, "batch.command")
    assert json.loads(rendered[1]) == DATA_CONTEXT["run"]["conf"]


def test_data_rendered_as_json_stays_within_the_output_limit() -> None:
    context = {**CONTEXT, "outputs": {"big": {"rows": ["x" * 1000] * 300}}}
    with pytest.raises(TemplateRenderError) as info:
        render_value("{{ outputs.big }}", context, "batch.command[0]")
    assert str(info.value).startswith("batch.command[0]: over a template limit: ")


def test_undefined_variable_error_names_the_path() -> None:
    with pytest.raises(TemplateRenderError) as info:
        render_value({"command": ["python", "{{ nope }}"]}, CONTEXT, "batch")
    assert info.value.path == "batch.command[1]"
    assert str(info.value) == "batch.command[1]: undefined: 'nope' is undefined"


def test_undefined_attribute_error_names_the_path() -> None:
    with pytest.raises(TemplateRenderError) as info:
        render_value({"detail": {"uri": "{{ signal.detail.uri }}"}}, CONTEXT, "emit")
    assert info.value.path == "emit.detail.uri"
    assert "has no attribute 'detail'" in str(info.value)


def test_output_size_limit() -> None:
    big = "{% for i in range(300) %}" + "x" * 1000 + "{% endfor %}"
    with pytest.raises(TemplateRenderError) as info:
        render_value(big, CONTEXT, "local.command[0]")
    assert str(info.value) == (
        f"local.command[0]: rendered output is larger than {MAX_TEMPLATE_OUTPUT} characters"
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ 'x' | center(1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ '{:>1000000000}'.format('x') }}",
        "{{ '%1000000000s' % 'x' }}",
        "{{ 9 ** 9999999 }}",
        "{% set a = 'x' * 200000 %}{% set b = a ~ a %}{{ b | length }}",
        "{{ [1] | batch(1000000000, 'x') | list }}",
    ],
)
def test_size_bombs_are_refused_before_they_allocate(template: str) -> None:
    with pytest.raises(TemplateRenderError, match="over a template limit"):
        render_value(template, CONTEXT)


def test_loop_iterations_are_bounded() -> None:
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateRenderError) as info:
        render_value(template, CONTEXT)
    assert f"more than {MAX_LOOP_ITERATIONS} loop iterations" in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ params.update({'threshold': 0}) }}",
        "{{ params.names.append('c') }}",
    ],
)
def test_sandbox_blocks_escapes_and_mutation(template: str) -> None:
    with pytest.raises(TemplateRenderError, match="not allowed in a template"):
        render_value(template, CONTEXT, "batch.command[0]")
    assert CONTEXT["params"]["threshold"] == 0.9
    assert CONTEXT["params"]["names"] == ["a", "b"]


def test_check_template_reports_message_and_line() -> None:
    check_template("{{ run.id }} and plain text")
    with pytest.raises(TemplateSyntaxProblem) as info:
        check_template("first line\n{{ run.id }\n")
    assert info.value.message == "unexpected '}'"
    assert info.value.lineno == 2


def test_check_template_refuses_huge_templates() -> None:
    with pytest.raises(TemplateSyntaxProblem, match="limit is"):
        check_template("x" * (MAX_TEMPLATE_SOURCE + 1))


def test_syntax_error_at_render_names_the_path() -> None:
    with pytest.raises(TemplateRenderError) as info:
        render_value(["{% if %}"], CONTEXT, "local.command")
    assert info.value.path == "local.command[0]"
    assert "template syntax error" in str(info.value)


def test_template_strings_cover_the_target_and_local_blocks_only() -> None:
    task = TaskSpec.model_validate(
        {
            "description": "{{ not a target string }}",
            "emit": {"detail-type": "done", "detail": {"run": "{{ run.id }}", "n": 1}},
            "local": {"command": ["python", "x.py", "{{ dag }}"], "environment": {"A": "b"}},
        }
    )
    strings = dict(template_strings(task))
    assert strings["emit.detail-type"] == "done"
    assert strings["emit.detail.run"] == "{{ run.id }}"
    assert strings["local.command[2]"] == "{{ dag }}"
    assert strings["local.environment.A"] == "b"
    assert "description" not in strings
    assert "emit.detail.n" not in strings  # not a string


def test_template_strings_use_the_lambda_alias() -> None:
    task = TaskSpec.model_validate({"lambda": {"function_name": "f-{{ dag }}"}})
    assert dict(template_strings(task))["lambda.function_name"] == "f-{{ dag }}"
