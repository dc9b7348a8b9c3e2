"""Task templates: every string in a task's target and ``local`` blocks is Jinja2.

Templates are user input rendered inside the shared scheduler, so they run in a budgeted
sandbox (``skydag.spec.sandbox``): Jinja2's immutable sandbox (no ``__class__``-style
escapes, no mutation of the context) plus limits on every size a template can make,
checked before the value is made, and on loops, calls, nesting, work and CPU time. A
template that breaks a limit, or runs the process out of memory or stack, fails its
task's try with a one-line reason naming the field; the scheduler carries on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jinja2 import Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from skydag.spec.sandbox import (
    MAX_CALL_DEPTH,
    MAX_CALLS,
    MAX_INTEGER,
    MAX_LIST_ITEMS,
    MAX_LOOP_ITERATIONS,
    MAX_RENDER_CPU_SECONDS,
    MAX_RENDER_WORK,
    MAX_STRING,
    MAX_TEMPLATE_OUTPUT,
    BudgetedSandbox,
    TemplateLimitExceeded,
    current_budget,
    render_budget,
)

if TYPE_CHECKING:
    from skydag.spec.models import TaskSpec

__all__ = [
    "MAX_CALLS",
    "MAX_CALL_DEPTH",
    "MAX_INTEGER",
    "MAX_LIST_ITEMS",
    "MAX_LOOP_ITERATIONS",
    "MAX_RENDER_CPU_SECONDS",
    "MAX_RENDER_WORK",
    "MAX_STRING",
    "MAX_TEMPLATE_OUTPUT",
    "MAX_TEMPLATE_SOURCE",
    "TemplateRenderError",
    "TemplateSyntaxProblem",
    "check_template",
    "format_path",
    "has_template",
    "iter_template_paths",
    "join_path",
    "render_string",
    "render_value",
    "template_blocks",
    "template_strings",
]

MAX_TEMPLATE_SOURCE = 64 * 1024
"""Largest template text accepted (characters); DAG strings are far smaller."""
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
# The context variables a template sees (documented in docs/dag-file.md).
CONTEXT_VARIABLES: tuple[str, ...] = (
    "dag",
    "run",
    "params",
    "trigger",
    "signal",
    "task",
    "state",
    "outputs",
)


class TemplateSyntaxProblem(ValueError):
    """A template that does not compile; ``lineno`` is the line inside the template."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.lineno = lineno


class TemplateRenderError(ValueError):
    """A template that failed to render; ``path`` names the field (``batch.command[2]``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def has_template(text: str) -> bool:
    """True when ``text`` holds Jinja markup; plain strings skip the template engine."""
    return any(marker in text for marker in _TEMPLATE_MARKERS)


ENVIRONMENT = BudgetedSandbox()


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> Template:
    # DAGs are re-rendered on every dispatch: compile each distinct string once.
    return ENVIRONMENT.from_string(text)


# --- public API ------------------------------------------------------------------------------


def check_template(text: str) -> None:
    """Raise TemplateSyntaxProblem when ``text`` is too long or does not compile."""
    if len(text) > MAX_TEMPLATE_SOURCE:
        raise TemplateSyntaxProblem(
            f"template is {len(text)} characters long; the limit is {MAX_TEMPLATE_SOURCE}"
        )
    if not has_template(text):
        return
    try:
        with render_budget():  # Jinja folds constant expressions while it compiles
            _compile(text)
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxProblem(exc.message or str(exc), exc.lineno) from None
    except RecursionError:
        raise TemplateSyntaxProblem("expressions nested too deeply") from None


def render_string(text: str, context: Mapping[str, Any], path: str = "") -> str:
    """Render one template within the render's budgets (see ``skydag.spec.sandbox``).

    Every failure is a TemplateRenderError with a one-line reason, the process's own
    limits included: running out of memory or stack fails the template, not the caller.
    """
    if not has_template(text):
        return text
    try:
        check_template(text)
    except TemplateSyntaxProblem as exc:
        raise TemplateRenderError(path, f"template syntax error: {exc}") from None
    try:
        with render_budget():
            return _generate(_compile(text), context, path)
    except TemplateRenderError:
        raise
    except TemplateLimitExceeded as exc:
        raise TemplateRenderError(path, f"over a template limit: {exc}") from None
    except UndefinedError as exc:
        raise TemplateRenderError(path, f"undefined: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateRenderError(path, f"not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateRenderError(path, _one_line(str(exc))) from None
    except RecursionError:
        raise TemplateRenderError(path, "over a template limit: nested too deeply") from None
    except MemoryError:
        raise TemplateRenderError(path, "over a template limit: ran out of memory") from None
    except Exception as exc:  # any template's failure fails only its own try
        raise TemplateRenderError(path, _one_line(f"{type(exc).__name__}: {exc}")) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _generate(template: Template, context: Mapping[str, Any], path: str) -> str:
    chunks: list[str] = []
    size = 0
    budget = current_budget()
    for chunk in template.generate(dict(context)):
        size += len(chunk)
        if size > MAX_TEMPLATE_OUTPUT:
            raise TemplateRenderError(
                path, f"rendered output is larger than {MAX_TEMPLATE_OUTPUT} characters"
            )
        budget.charge(len(chunk))
        chunks.append(chunk)
    return "".join(chunks)


def render_value(value: Any, context: Mapping[str, Any], path: str = "") -> Any:
    """Render every string inside nested dicts and lists; keys and non-strings stay as-is.

    ``path`` prefixes the field named in errors (``batch`` gives ``batch.command[2]``).
    All the strings share one budget of loops, calls, work and CPU time.
    """
    with render_budget():
        return _render_value(value, context, path)


def _render_value(value: Any, context: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, str):
        return render_string(value, context, path)
    if isinstance(value, Mapping):
        return {
            key: _render_value(item, context, join_path(path, key)) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_render_value(item, context, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def join_path(path: str, key: object) -> str:
    """``batch`` + ``command`` -> ``batch.command``; ``x`` + 2 -> ``x[2]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def format_path(parts: Sequence[str | int]) -> str:
    """A field path as users read it: ``("batch", "command", 2)`` -> ``batch.command[2]``."""
    path = ""
    for part in parts:
        path = join_path(path, part)
    return path


def template_blocks(task: TaskSpec) -> dict[str, Any]:
    """The blocks whose strings are templates: the target block and ``local``, by alias."""
    dumped = task.model_dump(by_alias=True, mode="json")
    blocks = {task.target_kind: dumped[task.target_kind]}
    if dumped.get("local") is not None:
        blocks["local"] = dumped["local"]
    return blocks


def iter_template_paths(task: TaskSpec) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path parts, string) for every string in the task's target and local blocks."""

    def walk(
        value: Any, parts: tuple[str | int, ...]
    ) -> Iterator[tuple[tuple[str | int, ...], str]]:
        if isinstance(value, str):
            yield parts, value
        elif isinstance(value, Mapping):
            for key, item in value.items():
                yield from walk(item, (*parts, str(key)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, (*parts, i))

    for key, block in template_blocks(task).items():
        yield from walk(block, (key,))


def template_strings(task: TaskSpec) -> Iterator[tuple[str, str]]:
    """(field path like ``batch.command[2]``, string) for every template string of a task."""
    for parts, text in iter_template_paths(task):
        yield format_path(parts), text
