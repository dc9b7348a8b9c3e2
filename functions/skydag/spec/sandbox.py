"""The budgeted Jinja2 sandbox that renders task templates.

Templates are user input rendered inside the shared scheduler: one DAG's template must
not take the memory or the CPU other DAGs' runs need. Jinja2's immutable sandbox stops
escapes (``__class__``) and mutation; this module adds budgets. Every operation whose
result can be much larger than its inputs (``*``, ``**``, ``%``, ``+``, ``~``, the
``replace``, ``join``, ``indent``, ``center``, ``format``, ``wordwrap`` filters, str
methods such as ``ljust`` or ``translate``, ``str.format``, and the text a block or a
macro captures) predicts the size of its result from its inputs and is refused *before*
it allocates; what can only be a small multiple of its inputs is checked right after.
Loop iterations, calls, call nesting, the work of one render and its CPU time are
counted too. A breach raises :class:`TemplateLimitExceeded`.
"""

from __future__ import annotations

import functools
import json
import re
import time
import types
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    ValuesView,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from string import Formatter
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import (
    FILTERS,
    do_format,
    do_indent,
    do_wordwrap,
    make_attrgetter,
    sync_do_join,
    sync_do_sum,
)
from jinja2.nodes import Call, Concat, EnvironmentAttribute, For
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import EscapeFormatter, Markup

if TYPE_CHECKING:
    from jinja2 import Environment
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

MAX_TEMPLATE_OUTPUT = 256 * 1024
"""Largest rendered string (characters), as an EventBridge event: parameters, not data."""
MAX_STRING = 256 * 1024
"""Largest string (or bytes) any operation, filter or method in a template may make."""
MAX_LIST_ITEMS = 10_000
"""Most items a list, tuple, dict or set made in a template may hold (as ``for_each``)."""
MAX_LOOP_ITERATIONS = 100_000
"""Loop iterations in one render, across all loops; also the largest ``range()``."""
MAX_CALLS = 100_000
"""Calls (macros, methods, ``range``, ``loop()``) in one render."""
MAX_CALL_DEPTH = 50
"""Calls nested in one another: macro recursion, recursive loops."""
MAX_INTEGER = 2**64
"""Largest magnitude of an integer made by ``*`` or ``**``."""
MAX_RENDER_WORK = 16 * 1024 * 1024
"""Characters and items one render may make or inspect, all operations together."""
MAX_RENDER_CPU_SECONDS = 1.0
"""CPU time of one render: the backstop for work no other budget meters (comparisons)."""
MAX_JSON_INDENT = 8
"""Largest ``tojson(indent=...)``: the indentation repeats on every line."""


class TemplateLimitExceeded(Exception):
    """A template went over one of the budgets above; the message says which, in one line.

    Deliberately not a ValueError or TypeError: filters that swallow those (``int``)
    must not swallow this.
    """


# --- the budget of one render ----------------------------------------------------------------


@dataclass
class RenderBudget:
    """What one render (every string of a task's block) has used so far."""

    iterations: int = 0
    calls: int = 0
    depth: int = 0
    work: int = 0
    deadline: float = field(default_factory=lambda: time.thread_time() + MAX_RENDER_CPU_SECONDS)

    def tick(self) -> None:
        if time.thread_time() > self.deadline:
            raise TemplateLimitExceeded(
                f"rendering used more than {MAX_RENDER_CPU_SECONDS:g} s of CPU"
            )

    def charge(self, amount: int) -> None:
        self.work += amount
        if self.work > MAX_RENDER_WORK:
            raise TemplateLimitExceeded(
                f"rendering made or inspected more than {MAX_RENDER_WORK} characters in all"
            )

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise TemplateLimitExceeded(f"more than {MAX_LOOP_ITERATIONS} loop iterations")
        self.tick()

    def enter_call(self, what: str) -> None:
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise TemplateLimitExceeded(f"more than {MAX_CALLS} calls")
        if self.depth >= MAX_CALL_DEPTH:
            raise TemplateLimitExceeded(f"calls nested more than {MAX_CALL_DEPTH} deep ({what})")
        self.depth += 1
        self.tick()


_BUDGET: ContextVar[RenderBudget | None] = ContextVar("skydag_template_budget", default=None)


def current_budget() -> RenderBudget:
    """The active render's budget; outside a render (Jinja folding constants while it
    compiles) each operation gets a fresh one, so its own limits still apply."""
    return _BUDGET.get() or RenderBudget()


class render_budget:  # noqa: N801 (used as a context manager, like contextlib's)
    """Give the renders inside one budget; nested uses share the outer one."""

    def __enter__(self) -> RenderBudget:
        active = _BUDGET.get()
        self._token = None if active is not None else _BUDGET.set(RenderBudget())
        return current_budget()

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _BUDGET.reset(self._token)


# --- sizes -----------------------------------------------------------------------------------

_ITEM_OVERHEAD = 4  # quotes and ", " around an item of a list shown as text


def measure(value: Any, limit: int = MAX_STRING) -> int:
    """About how many characters ``str(value)`` has, found without building it.

    Counts items of containers (shared ones each time they appear, as text does) and
    stops once past ``limit``, so a list holding one large string ten thousand times
    costs little to refuse. Escapes in ``repr`` can make the text a few times longer:
    results are checked again once made.
    """
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    total = 0
    visited = 0
    stack: list[Any] = [value]
    while stack and total <= limit:
        item = stack.pop()
        visited += 1
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + _ITEM_OVERHEAD
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Mapping):
            total += 2
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, Namespace):
            stack.append(item._Namespace__attrs)
        elif isinstance(item, list | tuple | set | frozenset | KeysView | ValuesView | ItemsView):
            total += 2 + _ITEM_OVERHEAD * len(item)
            stack.extend(item)
        else:
            total += 80  # a range, a macro, a loop: short reprs
    current_budget().charge(visited)
    return total


def need_string(size: int, what: str) -> None:
    """Refuse ``what`` before it makes a string of ``size`` characters, if too long."""
    if size > MAX_STRING:
        raise TemplateLimitExceeded(
            f"{what} would make a string of {size} characters (limit {MAX_STRING})"
        )


def need_items(count: int, what: str) -> None:
    if count > MAX_LIST_ITEMS:
        raise TemplateLimitExceeded(f"{what} would make {count} items (limit {MAX_LIST_ITEMS})")


def need_width(width: Any, what: str) -> None:
    """A width, length or count argument that sets the size of a string."""
    if isinstance(width, int) and width > MAX_STRING:
        raise TemplateLimitExceeded(f"{what} with a size of {width} (limit {MAX_STRING})")


def need_text(value: Any, what: str) -> None:
    """Refuse turning ``value`` into text when that text would be too long."""
    if isinstance(value, bool | int | float) or value is None:
        return
    need_string(measure(value), what)


def check_made(value: Any, what: str) -> Any:
    """Check a value just made: its size is charged to the render, and must be in bounds."""
    if isinstance(value, str | bytes | bytearray):
        need_string(len(value), what)
        current_budget().charge(len(value))
    elif isinstance(value, list | tuple | dict | set | frozenset):
        need_items(len(value), what)
        current_budget().charge(len(value))
    return value


def bounded_list(values: Any, limit: int, what: str) -> list[Any]:
    """``list(values)``, refused as soon as it would pass ``limit`` items."""
    try:
        size = len(values)
    except TypeError:
        size = None
    if size is not None and size > limit:
        raise TemplateLimitExceeded(f"{what} would make {size} items (limit {limit})")
    items: list[Any] = []
    for item in values:
        if len(items) >= limit:
            raise TemplateLimitExceeded(f"{what} would make more than {limit} items")
        items.append(item)
    current_budget().charge(len(items))
    return items


def replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """Length of ``text.replace(old, new, count)``, computed without making it."""
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0 +\-]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?"
    r"[hlL]?(?P<conversion>.?)",
    re.DOTALL,
)
_NUMBER_TEXT = 330  # the longest float in %f, with room for sign and exponent


def percent_size(fmt: str, values: Any) -> int:
    """An upper bound on ``len(fmt % values)``, refused as soon as it passes the limit.

    Each conversion takes the larger of its width and its value's text (its precision
    for numbers), so ``'%(a)s' * 9999 % {'a': big}`` counts ``big`` 9999 times.
    """
    mapping = values if isinstance(values, Mapping) else None
    positional = iter(values if isinstance(values, tuple) else (values,))
    total = len(fmt)
    for spec in _PERCENT_SPEC.finditer(fmt):
        conversion = spec["conversion"]
        if conversion in ("", "%"):
            continue
        width = _star_or_number(spec["width"], positional)
        precision = _star_or_number(spec["precision"], positional)
        if spec["key"] is not None and mapping is not None:
            value = mapping.get(spec["key"])
        else:
            value = next(positional, None)
        if conversion in "sra":
            text = measure(value) + (2 if conversion != "s" else 0)
            if conversion == "s" and spec["precision"] is not None:
                text = min(text, precision)
        elif conversion == "c":
            text = 1
        else:
            digits = value.bit_length() * 3 // 10 if isinstance(value, int) else 0
            text = _NUMBER_TEXT + digits + precision
        total += max(width, text)
        need_string(total, "a % format")
    return total


def _star_or_number(text: str | None, positional: Iterator[Any]) -> int:
    if not text:
        return 0
    value = next(positional, 0) if text == "*" else int(text)
    return value if isinstance(value, int) else 0


_SPEC_NUMBERS = re.compile(r"\d+")


class _BudgetedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, each field measured before it is formatted."""

    _made = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._made = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            need_text(value, "str.format")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        # Width and precision are the numbers of the spec (a fill digit counts too).
        padding = sum(int(number) for number in _SPEC_NUMBERS.findall(format_spec))
        self._made += measure(value) + padding
        need_string(self._made, "str.format")
        return super().format_field(value, format_spec)


class _BudgetedEscapeFormatter(_BudgetedFormatter, EscapeFormatter):
    """The same for the ``format`` method of a Markup string (``tojson``'s output)."""


# --- filters ---------------------------------------------------------------------------------

# Filters that never turn their arguments into text; every other filter may, so its
# arguments are measured first (``biglist | upper`` would build the list's text).
_STRUCTURAL_FILTERS = frozenset(
    {
        "abs",
        "attr",
        "batch",
        "count",
        "d",
        "default",
        "filesizeformat",
        "first",
        "float",
        "int",
        "items",
        "last",
        "length",
        "list",
        "map",
        "random",
        "reject",
        "rejectattr",
        "reverse",
        "round",
        "select",
        "selectattr",
        "slice",
        "sum",
    }
)
# HTML helpers with no use in a DAG; urlize repeats its target= on every link.
_DROPPED_FILTERS = frozenset({"urlize"})


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: Any = None) -> Any:
    need_string(replaced_size(str(s), str(old), str(new), count), "replace")
    return FILTERS["replace"](eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Any, d: Any = "", attribute: Any = None) -> str:
    items = bounded_list(value, MAX_LOOP_ITERATIONS, "join")
    if attribute is not None:
        items = [make_attrgetter(eval_ctx.environment, attribute)(item) for item in items]
    size = sum(measure(item) for item in items) + measure(d) * max(len(items) - 1, 0)
    need_string(size, "join")
    return sync_do_join(eval_ctx, items, d)


def _indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    prefix = len(width) if isinstance(width, str) else width
    need_width(prefix, "indent")
    text = str(s)
    lines = len(text.splitlines()) + 1
    need_string(len(text) + 1 + lines * max(prefix, 0), "indent")
    return do_indent(s, width, first, blank)


def _center(value: Any, width: Any = 80) -> Any:
    need_width(width, "center")
    return FILTERS["center"](value, width)


def _truncate_length(env: Environment, s: Any, length: Any = 255, *args: Any, **kw: Any) -> Any:
    need_width(length, "truncate")
    return FILTERS["truncate"](env, s, length, *args, **kw)


@pass_environment
def _wordwrap(  # noqa: PLR0917 (Jinja's signature: templates pass these by position)
    environment: Environment,
    s: Any,
    width: Any = 79,
    break_long_words: bool = True,
    wrapstring: Any = None,
    break_on_hyphens: bool = True,
) -> str:
    # Wrap with one-character joins, count the lines, then join with the real string.
    need_width(width, "wordwrap")
    joiner = environment.newline_sequence if wrapstring is None else str(wrapstring)
    wrapped = do_wordwrap(environment, s, width, break_long_words, "\n", break_on_hyphens)
    lines = wrapped.split("\n")
    need_string(len(wrapped) + (len(lines) - 1) * (len(joiner) - 1), "wordwrap")
    return joiner.join(lines)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    if not (args and kwargs):  # both at once: do_format says what is wrong
        percent_size(str(value), kwargs or args)
    return do_format(value, *args, **kwargs)


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> Any:
    need_items(linecount if isinstance(linecount, int) else 0, "batch")
    return FILTERS["batch"](value, linecount, fill_with)


def _slice(value: Any, slices: Any, fill_with: Any = None) -> Any:
    need_items(slices if isinstance(slices, int) else 0, "slice")
    return FILTERS["slice"](value, slices, fill_with)


def _list(value: Any) -> list[Any]:
    return bounded_list(value, MAX_LIST_ITEMS, "list")


@pass_environment
def _sum(environment: Environment, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    if isinstance(start, bool | int | float):
        return sync_do_sum(environment, iterable, attribute, start)
    # Adding lists or tuples: their lengths add up, so count them first.
    items = bounded_list(iterable, MAX_LOOP_ITERATIONS, "sum")
    if attribute is not None:
        items = [make_attrgetter(environment, attribute)(item) for item in items]
    sized = [start, *items]
    need_items(sum(len(item) for item in sized if isinstance(item, Sequence)), "sum")
    return sync_do_sum(environment, items, None, start)


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: Any = None) -> Markup:
    size = len(indent) if isinstance(indent, str) else indent
    if isinstance(size, int) and size > MAX_JSON_INDENT:
        raise TemplateLimitExceeded(f"tojson with an indent of {size} (limit {MAX_JSON_INDENT})")
    result: Markup = FILTERS["tojson"](eval_ctx, value, indent)
    return result


_CHECKED_FILTERS: dict[str, Callable[..., Any]] = {
    "replace": _replace,
    "join": _join,
    "indent": _indent,
    "center": _center,
    "truncate": pass_environment(_truncate_length),
    "wordwrap": _wordwrap,
    "format": _format,
    "batch": _batch,
    "slice": _slice,
    "list": _list,
    "sum": _sum,
    "tojson": _tojson,
}


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter: its arguments measured first (unless it never makes text of them),
    its result checked and charged after."""
    # Filters marked pass_context/pass_eval_context/pass_environment get that first.
    first = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    measured = name not in _STRUCTURAL_FILTERS
    what = f"the {name} filter"

    @functools.wraps(func)  # keeps jinja_pass_arg, so such filters are still called right
    def budgeted(*args: Any, **kwargs: Any) -> Any:
        current_budget().tick()
        if measured:
            for value in (*args[first:], *kwargs.values()):
                need_text(value, what)
        return check_made(func(*args, **kwargs), what)

    return budgeted


# --- methods of values ----------------------------------------------------------------------


def _check_text_method(
    owner: str | bytes, name: str, args: Sequence[Any], kw: Mapping[str, Any]
) -> None:
    """Predict the size of a str or bytes method's result from its arguments."""
    what = f"{type(owner).__name__}.{name}"
    if name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        kind = str if isinstance(owner, str) else bytes
        if isinstance(old, kind) and isinstance(new, kind):  # else the method raises
            count = args[2] if len(args) > 2 else kw.get("count", -1)
            need_string(replaced_size(owner, old, new, count), what)
    elif name == "expandtabs":
        tabsize = args[0] if args else kw.get("tabsize", 8)
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
        need_string(len(owner) + tabs * max(tabsize if isinstance(tabsize, int) else 0, 0), what)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((measure(v) for v in args[0].values() if v is not None), default=1)
        need_string(len(owner) * longest, what)
    else:  # widths and counts: center, ljust, rjust, zfill, to_bytes, ...
        for value in (*args, *kw.values()):
            need_width(value, what)


def _join_method(owner: str | bytes, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``sep.join(items)``: the items listed (within bounds) and their total measured."""
    items = bounded_list(args[0], MAX_LOOP_ITERATIONS, "join")
    size = sum(measure(item) for item in items) + len(owner) * max(len(items) - 1, 0)
    need_string(size, f"{type(owner).__name__}.join")
    return (items, *args[1:])


# --- the environment -------------------------------------------------------------------------


def guarded_iter(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` (and every ``loop()`` of a recursive one) loops through this."""
    budget = current_budget()
    for item in iterable:
        budget.iterate()
        yield item


def guarded_join(parts: Sequence[Any]) -> str:
    """The ``~`` operator: the parts measured before any is turned into text, each part
    as ``{{ }}`` would print it (a mapping or list as JSON)."""
    need_string(sum(measure(part) for part in parts), "~")
    text = "".join(as_text(part) for part in parts)
    check_made(text, "~")
    return text


def as_text(value: Any) -> Any:
    """How a value is printed into a template's text: a mapping, list or tuple as compact
    JSON (``{"pages":3}``, not Python's ``{'pages': 3}``), so a job can parse what it is
    given; anything else as Jinja prints it (strings as they are, ``True``, ``None``)."""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return value if isinstance(value, str) else str(value)


def _json_default(value: Any) -> Any:
    """What JSON has no type for: a set as a list, anything else (a Jinja namespace, a
    date) as its text."""
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def guarded_concat(parts: Iterable[str]) -> str:
    """Joins what a block, a ``{% set %}`` block, a macro or a loop captured."""
    pieces = parts if isinstance(parts, list) else bounded_list(parts, MAX_CALLS, "a block")
    need_string(sum(len(piece) for piece in pieces), "a captured block")
    text = "".join(pieces)
    check_made(text, "a captured block")
    return text


def guarded_range(*args: Any) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_LOOP_ITERATIONS:
        raise TemplateLimitExceeded(
            f"range of {len(numbers)} numbers (limit {MAX_LOOP_ITERATIONS})"
        )
    return numbers


def finalize_output(value: Any) -> Any:
    """Every ``{{ expression }}``: measured before it is turned into text, and a mapping
    or list printed as JSON (``as_text``)."""
    need_text(value, "the expression's text")
    if isinstance(value, Mapping | list | tuple):
        return check_made(as_text(value), "the expression's text")
    return value


class _BudgetedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a measured join and makes every loop count its iterations."""

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


def _is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_product(left: Any, right: Any) -> None:
    if _is_number(left) and _is_number(right):
        if left.bit_length() + right.bit_length() > MAX_INTEGER.bit_length() + 1:
            raise TemplateLimitExceeded(f"* would make an integer larger than {MAX_INTEGER}")
        return
    for seq, count in ((left, right), (right, left)):
        if isinstance(count, int) and count > 0:
            if isinstance(seq, str | bytes):
                need_string(len(seq) * count, "*")
            elif isinstance(seq, list | tuple):
                need_items(len(seq) * count, "*")


def _check_power(left: Any, right: Any) -> None:
    # |left| >= 2 ** (bits - 1), so the result has at least (bits - 1) * right bits.
    numbers = _is_number(left) and _is_number(right) and right > 0 and abs(left) > 1
    if numbers and (left.bit_length() - 1) * right > MAX_INTEGER.bit_length():
        raise TemplateLimitExceeded(f"** would make an integer larger than {MAX_INTEGER}")


def _check_sum(left: Any, right: Any) -> None:
    if isinstance(left, str) and isinstance(right, str):
        need_string(len(left) + len(right), "+")
    elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
        need_items(len(left) + len(right), "+")


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, every size-changing operation within the budgets."""

    code_generator_class = _BudgetedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self) -> None:
        # Rendered values are command arguments and JSON payloads, not HTML.
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            auto_reload=False,
            finalize=finalize_output,
        )
        filters = {**self.filters, **_CHECKED_FILTERS}
        self.filters = {
            name: _budgeted_filter(name, func)
            for name, func in filters.items()
            if name not in _DROPPED_FILTERS
        }
        # lipsum() makes text out of nothing; a DAG has no use for it.
        del self.globals["lipsum"]
        self.globals["range"] = guarded_range
        self.guarded_join = guarded_join
        self.guarded_iter = guarded_iter
        self.concat = guarded_concat  # type: ignore[method-assign]

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        current_budget().tick()
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            percent_size(left, right)
        elif operator == "+":
            _check_sum(left, right)
        result = super().call_binop(context, operator, left, right)
        if operator in ("*", "**") and _is_number(result) and abs(result) > MAX_INTEGER:
            raise TemplateLimitExceeded(
                f"{operator} would make an integer larger than {MAX_INTEGER}"
            )
        return check_made(result, operator)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = current_budget()
        name = getattr(__obj, "__name__", None) or getattr(__obj, "name", None) or "a call"
        owner = getattr(__obj, "__self__", None)
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
            name = "loop"
            args = (guarded_iter(args[0]), *args[1:])
        elif isinstance(owner, str | bytes) and name == "join" and args:
            args = _join_method(owner, args)
        elif isinstance(owner, str | bytes):
            _check_text_method(owner, name, args, kwargs)
        elif isinstance(owner, int | float):
            for value in (*args, *kwargs.values()):  # (1).to_bytes(10**9)
                need_width(value, f"{type(owner).__name__}.{name}")
        budget.enter_call(name)
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        return check_made(result, f"{name}()")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``format_map``, as Jinja's sandbox does, with each field
        measured before it is formatted."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        if value.__name__ not in ("format", "format_map"):
            return None
        owner: Any = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: Formatter = (
            _BudgetedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _BudgetedFormatter(self)
        )
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            return type(owner)(formatter.vformat(owner, args, kwargs))

        return functools.update_wrapper(wrapper, value)
