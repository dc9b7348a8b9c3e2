"""Task templates: every string in a task's target and ``local`` blocks is Jinja2.

Templates are user input rendered inside the scheduler, so they run in Jinja2's immutable
sandbox (no ``__class__``-style escapes, no mutation of the context) with limits on the
template's size and on the size of what it produces. Besides the final output, the
operations that can blow up memory in a single step (``*``, ``**``, ``%``, ``+``, ``~``,
huge numeric arguments to filters and methods such as ``center(10**9)``) are checked
before they run, so a hostile template fails with an error instead of exhausting the
scheduler's memory.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import Call, Concat, EnvironmentAttribute, For
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from jinja2.runtime import Context

    from skydag.spec.models import TaskSpec

MAX_TEMPLATE_SOURCE = 64 * 1024
"""Largest template text accepted (characters); DAG strings are far smaller."""
MAX_TEMPLATE_OUTPUT = 256 * 1024
"""Largest rendered string (characters): a target's parameters, not a data channel."""
MAX_LOOP_ITERATIONS = 100_000
"""Loop iterations allowed in one render, across all loops: bounds the CPU a template uses."""
_MAX_POWER_BITS = 64 * 1024
_iterations: ContextVar[int] = ContextVar("skydag_template_iterations", default=0)
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
# Widths written inside a format string: "%1000000000s", "{:>1000000000}".
_FORMAT_WIDTH = re.compile(r"%[#0 +\-]*(\d+)|\{[^{}]*:[^{}\d]*(\d+)")
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


# --- the guarded sandbox ---------------------------------------------------------------------


def _too_large(what: str) -> SecurityError:
    return SecurityError(f"{what} would exceed the template output limit ({MAX_TEMPLATE_OUTPUT})")


def _check_number(value: Any) -> None:
    # bool is an int; huge counts and widths are what amplify a small template.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TEMPLATE_OUTPUT:
        raise _too_large(f"the number {value}")


def _check_numbers(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        _check_number(value)


def _check_format(fmt: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse format strings whose widths, literal or passed as arguments, are huge."""
    if not isinstance(fmt, str):
        return
    for match in _FORMAT_WIDTH.finditer(fmt):
        width = match.group(1) or match.group(2)
        if width and int(width) > MAX_TEMPLATE_OUTPUT:
            raise _too_large(f"the format width {width}")
    if "*" in fmt or ":{" in fmt:  # widths taken from the arguments
        _check_numbers(args, kwargs)


def _check_size(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple) and len(value) > MAX_TEMPLATE_OUTPUT:
        raise _too_large("a value")
    return value


def _check_repeat(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        sized = isinstance(seq, str | bytes | list | tuple) and isinstance(count, int)
        if sized and len(seq) * max(count, 0) > MAX_TEMPLATE_OUTPUT:
            raise _too_large("repeating a value")


def _check_power(left: Any, right: Any) -> None:
    numbers = isinstance(left, int) and isinstance(right, int) and right > 0
    if numbers and max(abs(left), 2).bit_length() * right > _MAX_POWER_BITS:
        raise _too_large(f"{left} ** {right}")


def _check_joinable(value: Any) -> None:
    if isinstance(value, list | tuple) and sum(len(str(i)) for i in value) > MAX_TEMPLATE_OUTPUT:
        raise _too_large("joining a list")


def guarded_join(parts: Sequence[Any]) -> str:
    """The ``~`` operator: check the total before building the string."""
    texts = [str(part) for part in parts]
    if sum(len(text) for text in texts) > MAX_TEMPLATE_OUTPUT:
        raise _too_large("joining strings with ~")
    return "".join(texts)


# Filters whose numeric arguments are sizes: center(10**9), batch(10**9, 'x'), ...
_SIZING_FILTERS = frozenset({"center", "indent", "batch", "slice", "wordwrap", "truncate"})


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter so its sizing arguments and its result stay within the limits."""
    # Filters marked pass_context/pass_eval_context/pass_environment get that first.
    first = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg, so such filters are still called right
    def guarded(*args: Any, **kwargs: Any) -> Any:
        value, params = (args[first], args[first + 1 :]) if len(args) > first else (None, ())
        if name in _SIZING_FILTERS:
            _check_numbers(params, kwargs)
        elif name == "format":
            _check_format(value, params, kwargs)
        elif name == "join":
            _check_joinable(value)
        return _check_size(func(*args, **kwargs))

    return guarded


def guarded_iter(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` loops through this: count iterations against the render's budget."""
    for item in iterable:
        count = _iterations.get() + 1
        if count > MAX_LOOP_ITERATIONS:
            raise SecurityError(f"more than {MAX_LOOP_ITERATIONS} loop iterations in one template")
        _iterations.set(count)
        yield item


class _GuardedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a size-checked join and makes every loop count its iterations."""

    def visit_For(self, node: For, frame: Frame) -> None:  # noqa: N802 (Jinja's name)
        counted = Call(EnvironmentAttribute("guarded_iter"), [node.iter], [], None, None)
        counted.set_lineno(node.lineno)
        loop = For(node.target, counted, node.body, node.else_, node.test, node.recursive)
        loop.set_lineno(node.lineno)
        super().visit_For(loop, frame)

    def visit_Concat(self, node: Concat, frame: Frame) -> None:  # noqa: N802 (Jinja's name)
        self.write("environment.guarded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GuardedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox plus checks on the operations that amplify size."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self) -> None:
        # Rendered values are command arguments and JSON payloads, not HTML.
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.filters = {name: _guard_filter(name, func) for name, func in self.filters.items()}
        # lipsum() makes text out of nothing; a DAG has no use for it.
        del self.globals["lipsum"]
        self.guarded_join = guarded_join
        self.guarded_iter = guarded_iter

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%":
            _check_format(left, right if isinstance(right, tuple) else (right,), {})
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # str methods (ljust, center, zfill, expandtabs) take sizes.
        if isinstance(getattr(__obj, "__self__", None), str | bytes):
            _check_numbers(args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt = value.__self__
        plain = wrapper

        def guarded(*args: Any, **kwargs: Any) -> str:
            values = list(args[0].values()) if args and isinstance(args[0], Mapping) else args
            _check_format(fmt, values, kwargs)
            result: str = _check_size(plain(*args, **kwargs))
            return result

        return guarded


ENVIRONMENT = _GuardedSandbox()


@functools.lru_cache(maxsize=2048)
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
        _compile(text)
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxProblem(exc.message or str(exc), exc.lineno) from None


def render_string(text: str, context: Mapping[str, Any], path: str = "") -> str:
    """Render one template, stopping as soon as the output passes the size limit."""
    if not has_template(text):
        return text
    try:
        check_template(text)
    except TemplateSyntaxProblem as exc:
        raise TemplateRenderError(path, f"template syntax error: {exc}") from None
    budget = _iterations.set(0)
    try:
        return _generate(_compile(text), context, path)
    except TemplateRenderError:
        raise
    except UndefinedError as exc:
        raise TemplateRenderError(path, f"undefined: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateRenderError(path, f"not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateRenderError(path, str(exc)) from None
    except RecursionError:
        raise TemplateRenderError(path, "recursion too deep") from None
    except (ArithmeticError, TypeError, LookupError, ValueError) as exc:  # e.g. 1/0, int('x')
        raise TemplateRenderError(path, f"{type(exc).__name__}: {exc}") from None
    finally:
        _iterations.reset(budget)


def _generate(template: Template, context: Mapping[str, Any], path: str) -> str:
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(dict(context)):
        size += len(chunk)
        if size > MAX_TEMPLATE_OUTPUT:
            raise TemplateRenderError(
                path, f"rendered output is larger than {MAX_TEMPLATE_OUTPUT} characters"
            )
        chunks.append(chunk)
    return "".join(chunks)


def render_value(value: Any, context: Mapping[str, Any], path: str = "") -> Any:
    """Render every string inside nested dicts and lists; keys and non-strings stay as-is.

    ``path`` prefixes the field named in errors (``batch`` gives ``batch.command[2]``).
    """
    if isinstance(value, str):
        return render_string(value, context, path)
    if isinstance(value, Mapping):
        return {
            key: render_value(item, context, join_path(path, key)) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [render_value(item, context, f"{path}[{i}]") for i, item in enumerate(value)]
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
