"""Read a DAG file safely and report every problem in it with a file, task, field and line.

The same loader serves ``skydag validate``, ``skydag dev run`` and the dag-loader Lambda,
so a file is judged the same way everywhere. It reads untrusted bytes: the size is checked
before parsing, YAML is read with a safe loader that refuses alias bombs and deep nesting,
and duplicate keys (which YAML silently resolves to the last one) are errors.

YAML is read with YAML 1.2 scalars: ``on``/``off``/``yes``/``no`` are strings (so a DAG's
``on:`` key stays ``on``), ``010`` is a string, and dates stay strings for Pydantic to parse.
"""

from __future__ import annotations

import difflib
import gc
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from skydag.limits import dag_size_problems
from skydag.signals.patterns import PatternError
from skydag.spec import graph
from skydag.spec.emit_sources import is_literal, source_problem
from skydag.spec.models import ID_PATTERN, TARGET_KEYS, DagSpec
from skydag.spec.schedule import ScheduleError, parse_schedule, validate_timezone
from skydag.spec.templates import TemplateSyntaxProblem, check_template, format_path

MAX_DAG_FILE_BYTES = 1_048_576
MAX_YAML_ALIASES = 100
"""Aliases (and, separately, anchors) one file may use; DAGs need a handful at most."""
MAX_YAML_NODES = 100_000
"""Values aliases may add to a document once followed: the alias-bomb bound."""
MAX_YAML_DEPTH = 50
"""Nesting levels, aliases followed; keeps every recursive walk far from Python's limit."""
MAX_REPORTED_PROBLEMS = 100
"""Problems listed per file; the rest are counted (an import-error event must stay small)."""

Key = Any  # a YAML mapping key as constructed: usually str, sometimes int, bool or None
Loc = tuple[str | int, ...]

_ID_HINT = "a lowercase letter, then up to 63 lowercase letters, digits, '_' or '-'"
_SIGNAL_FIELDS = frozenset({"on", "start_on", "restart_on", "stop_on"})
_MERGE_TAG = "tag:yaml.org,2002:merge"


# --- problems ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a DAG file, located as precisely as the file allows."""

    source: str
    message: str
    task: str | None = None
    field: str | None = None
    line: int | None = None

    def location(self) -> str:
        """``task 'x', field 'batch.job_queue' (line 12)``, or ``line 3``, or ``""``."""
        parts = []
        if self.task is not None:
            parts.append(f"task '{self.task}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        where = ", ".join(parts)
        if self.line is not None:
            where = f"{where} (line {self.line})" if where else f"line {self.line}"
        return where

    def __str__(self) -> str:
        where = self.location()
        detail = f"{where}: {self.message}" if where else self.message
        return f"{self.source}: error: {detail}"

    def to_dict(self) -> dict[str, Any]:
        """The ``--output json`` form (the file is given once, beside the list)."""
        return {"message": self.message, "task": self.task, "field": self.field, "line": self.line}


class DagFileError(Exception):
    """A DAG file that cannot be used; ``problems`` lists everything found, in file order."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _FatalError(Exception):
    """A problem after which the file cannot be read any further."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# --- public API -------------------------------------------------------------------------------


def load_dag_file(path: str | Path) -> DagSpec:
    """Read and validate a DAG file; raise DagFileError listing every problem."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DAG_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DagFileError(source, [Problem(source, f"cannot read file: {reason}")]) from None
    return load_dag_bytes(data, source)


def load_dag_bytes(data: bytes, source: str) -> DagSpec:
    """Validate a DAG file's bytes; ``source`` names it in every problem."""
    with _cyclic_gc_paused():
        try:
            document = _read_document(data)
        except _FatalError as exc:
            raise DagFileError(source, [Problem(source, exc.message, line=exc.line)]) from None
        spec, problems = _check_document(document)
    if problems or spec is None:
        shown = [replace(p, source=source) for p in _in_file_order(problems)]
        if len(shown) > MAX_REPORTED_PROBLEMS:
            more = len(shown) - MAX_REPORTED_PROBLEMS
            shown = [
                *shown[:MAX_REPORTED_PROBLEMS],
                Problem(source, f"... and {more} more problems"),
            ]
        raise DagFileError(source, shown)
    return spec


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Validating a big file allocates a few hundred thousand objects that all stay alive
    until it ends: each allocation burst made the cyclic collector walk the whole heap
    again (a third of the time of a 10,000-task file). Reference counting still frees
    as usual; cycles made meanwhile are collected once the collector is back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_yaml(data: bytes, source: str) -> Any:
    """The file's data as the loader reads it (YAML 1.2 scalars, same limits), unvalidated.

    For tools that need the raw mapping, such as checking a file against the JSON Schema.
    """
    try:
        document = _read_document(data)
    except _FatalError as exc:
        raise DagFileError(source, [Problem(source, exc.message, line=exc.line)]) from None
    if document.problems:
        raise DagFileError(source, [replace(p, source=source) for p in document.problems])
    return document.data


# --- bytes and YAML ---------------------------------------------------------------------------


@dataclass
class _Document:
    """The file's data plus, for every key and list item, the line it starts on."""

    data: Any
    lines: dict[tuple[Key, ...], int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    indexed: set[int] = field(default_factory=set)  # ids of composed nodes already walked

    def line_of(self, path: Sequence[Key]) -> int | None:
        """The line of ``path``, or of its deepest part that is in the file."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _read_document(data: bytes) -> _Document:
    if len(data) > MAX_DAG_FILE_BYTES:
        raise _FatalError(
            f"file is larger than 1 MiB ({MAX_DAG_FILE_BYTES} bytes); DAG files are small"
        )
    text = _decode(data)
    try:
        loader = _LOADER(text)  # the reader checks the characters right away
    except yaml.YAMLError as exc:
        raise _yaml_fatal(exc, text) from None
    try:
        return _load(loader)
    except yaml.YAMLError as exc:
        raise _yaml_fatal(exc, text) from None
    finally:
        loader.dispose()


def _load(loader: _Checks) -> _Document:
    """Compose, check the limits, index lines and duplicates, then construct."""
    root = loader.get_single_node()
    if root is None or (root.tag == "tag:yaml.org,2002:null" and isinstance(root, ScalarNode)):
        raise _FatalError("file is empty: expected a mapping with 'dag:' and 'tasks:'")
    _check_expansion(root)
    document = _Document(data=None)
    _index(loader, root, (), document)
    document.data = loader.construct_document(root)
    if not isinstance(document.data, Mapping):
        kind = _kind(document.data)
        raise _FatalError(
            f"the top level must be a mapping with 'dag:' and 'tasks:', not {kind}", 1
        )
    return document


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise _FatalError(
            f"not UTF-8: invalid byte 0x{bad} at byte offset {exc.start} (line {line})", line
        ) from None


def _yaml12_resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    """SafeLoader's implicit types minus YAML 1.1's surprises (on/off/yes/no, octal, dates)."""
    dropped = {
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:timestamp",
    }
    resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {
        first: [(tag, regexp) for tag, regexp in entries if tag not in dropped]
        for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    implicit = (
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        (
            "tag:yaml.org,2002:int",
            r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$",
            "-+0123456789",
        ),
        (
            "tag:yaml.org,2002:float",
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+)"
            r"(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
            "-+0123456789.",
        ),
    )
    for tag, pattern, firsts in implicit:
        regexp = re.compile(pattern)
        for first in firsts:
            resolvers.setdefault(first, []).append((tag, regexp))
    return resolvers


class _Checks(Composer, SafeConstructor, Resolver):
    """Composing and constructing with limits: aliases, anchors, depth, bad values.

    The parser (events) comes from the concrete loader below: libyaml's when available,
    5x faster on big files, else PyYAML's. Composing stays in Python so it can be counted.
    """

    yaml_implicit_resolvers = _yaml12_resolvers()

    def __init__(self) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.aliases = 0
        self.anchors_seen = 0
        self.depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]  # from the parser base
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, AliasEvent):
            self.aliases += 1
        elif isinstance(event, ScalarEvent | CollectionStartEvent) and event.anchor is not None:
            self.anchors_seen += 1
        if max(self.aliases, self.anchors_seen) > MAX_YAML_ALIASES:
            raise _FatalError(
                f"too many YAML aliases (alias bomb?): more than {MAX_YAML_ALIASES}", line
            )
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise _FatalError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep", line)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. `!!int abc`
            raise ConstructorError(
                None, None, f"cannot read value: {exc}", node.start_mark
            ) from None

    def dispose(self) -> None:
        """Free the parser's state; each concrete loader names its parser's."""
        raise NotImplementedError


class _PyLoader(Reader, Scanner, Parser, _Checks):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Checks.__init__(self)

    def dispose(self) -> None:
        Parser.dispose(self)


def _loader_class() -> Callable[[str], _Checks]:
    try:
        from yaml._yaml import CParser
    except ImportError:  # PyYAML built without libyaml
        return _PyLoader

    class _CLoader(_Checks, CParser):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _Checks.__init__(self)

        def dispose(self) -> None:
            CParser.dispose(self)

    return _CLoader


_LOADER = _loader_class()


def _yaml_fatal(exc: yaml.YAMLError, text: str) -> _FatalError:
    """A YAML error as one line with its line and column."""
    if isinstance(exc, ReaderError):
        # libyaml counts bytes, PyYAML characters: the line is right either way for ASCII.
        at = text.count("\n", 0, exc.position) + 1
        return _FatalError(f"invalid YAML: {exc.reason} (character #x{exc.character:04x})", at)
    if not isinstance(exc, yaml.MarkedYAMLError):
        return _FatalError(f"invalid YAML: {exc}")
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    what = exc.problem or exc.context or "syntax error"
    if what == "but found another document":
        return _FatalError(
            "more than one YAML document ('---'): a DAG file holds exactly one", line
        )
    tag = re.match(r"could not determine a constructor for the tag '(.*)'", what)
    if tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return _FatalError(f"unsupported YAML tag '{name}': DAG files are plain YAML", line)
    if exc.context and exc.problem and exc.context_mark:
        what += f" ({exc.context} on line {exc.context_mark.line + 1})"
    if mark is None:
        return _FatalError(f"invalid YAML: {what}")
    return _FatalError(f"invalid YAML at column {mark.column + 1}: {what}", line)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: Node) -> None:
    """Refuse documents whose aliases expand to too many nodes, too deep, or into a loop.

    Composed nodes are shared between an anchor and its aliases, so this costs one visit per
    distinct node; the sizes are what every later walk would pay with aliases followed.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)
    active: set[int] = set()

    def measure(node: Node) -> tuple[int, int]:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in active:
            raise _FatalError("a YAML alias refers to its own anchor (recursive data)", _line(node))
        active.add(key)
        count, depth = 1, 0
        for child in _children(node):
            child_count, child_depth = measure(child)
            count += child_count
            depth = max(depth, child_depth)
        active.discard(key)
        if depth + 1 > MAX_YAML_DEPTH:
            raise _FatalError(
                f"YAML nested more than {MAX_YAML_DEPTH} levels deep (aliases followed)"
            )
        sizes[key] = (count, depth + 1)
        return sizes[key]

    expanded, _ = measure(root)
    if expanded - len(sizes) > MAX_YAML_NODES:  # what aliases add on top of what is written
        raise _FatalError(
            f"too many YAML aliases (alias bomb?): they expand to over {MAX_YAML_NODES} values"
        )


def _line(node: Node) -> int | None:
    return node.start_mark.line + 1 if node.start_mark is not None else None


def _index(loader: _Checks, node: Node, path: tuple[Key, ...], doc: _Document) -> None:
    """Record each key's and item's line, and report duplicate keys.

    Runs before construction, which flattens ``<<`` merges into the mapping; an alias's
    target is indexed once, where its anchor is (later uses fall back to the alias's key).
    """
    if id(node) in doc.indexed:
        return
    doc.indexed.add(id(node))
    if isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _set_line(doc, (*path, i), item)
            _index(loader, item, (*path, i), doc)
    elif isinstance(node, MappingNode):
        first_seen: dict[Key, int | None] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                seen = key in first_seen
            except TypeError:  # unhashable: construction reports it
                continue
            if seen:
                doc.problems.append(_duplicate(path, key, first_seen[key], _line(key_node)))
            else:
                first_seen[key] = _line(key_node)
            # Like YAML, the data keeps the last value of a repeated key: so do the lines.
            _set_line(doc, (*path, key), key_node)
            _index(loader, value_node, (*path, key), doc)


def _set_line(doc: _Document, path: tuple[Key, ...], node: Node) -> None:
    line = _line(node)
    if line is not None:
        doc.lines[path] = line


def _duplicate(path: tuple[Key, ...], key: Key, first: int | None, line: int | None) -> Problem:
    also = f" (first on line {first})" if first is not None else ""
    if path == ("tasks",):
        return Problem(
            "", f"duplicate key '{key}': task ids must be unique{also}", None, "tasks", line
        )
    task, where = _split_task(tuple(path))
    message = f"duplicate key '{key}'{also}"
    return Problem("", message, task, format_path(where) if where else None, line)


# --- the model ------------------------------------------------------------------------------


def _check_document(doc: _Document) -> tuple[DagSpec | None, list[Problem]]:
    problems = list(doc.problems)
    try:
        spec: DagSpec | None = DagSpec.model_validate(doc.data)
    except ValidationError as exc:
        spec = None
        problems += _model_problems(exc.errors(include_url=False), doc)
        # The DAG-wide checks run only on a valid model; run them on the data as well so
        # one pass reports everything. (Their model-level twins are skipped above.)
        problems += _graph_problems(doc)
        problems += _schedule_problems(doc)
        problems += _target_problems(doc)
    problems += _template_problems(doc)
    problems += _emit_source_problems(doc)
    if spec is not None:
        problems += _size_problems(spec, doc)
    return spec, _unique(problems)


def _size_problems(spec: DagSpec, doc: _Document) -> list[Problem]:
    """A valid DAG too large for the items that grow with it (``skydag.limits``)."""
    upstream = {task_id: task.depends_on for task_id, task in spec.tasks.items()}
    found = dag_size_problems(
        upstream,
        spec.topological_order(),
        spec.max_active_tasks,
        slots_bind=spec.task_slots_bind(),
    )
    return [
        Problem(
            "",
            message,
            task,
            "depends_on" if task else None,
            doc.line_of(("tasks", task, "depends_on") if task else ("tasks",)),
        )
        for task, message in found
    ]


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _split_task(loc: Sequence[Key]) -> tuple[str | None, Loc]:
    """``("tasks", "x", "batch", "job_queue")`` -> ``("x", ("batch", "job_queue"))``."""
    if len(loc) >= 2 and loc[0] == "tasks":
        return str(loc[1]), tuple(loc[2:])
    return None, tuple(loc)


@dataclass
class _Located:
    loc: list[str | int]  # the error's path with union tags and "[key]" removed
    raw: list[Key]  # the part of it that exists in the file
    key_error: bool  # the error is about a mapping key itself, not its value
    tagged: bool  # Pydantic tried several types (a union): messages are alternatives


def _locate(err: ErrorDetails, data: Any) -> _Located:
    """Follow the error's loc through the file's data, dropping what is not a place in it."""
    parts = list(err["loc"])
    found = _Located([], [], key_error=parts[-1:] == ["[key]"], tagged=False)
    if found.key_error:
        parts.pop()
    node, missing = data, False
    for i, part in enumerate(parts):
        if missing:
            found.loc.append(part)
        elif _has(node, part):
            node = node[part]
            found.loc.append(part)
            found.raw.append(part)
        elif isinstance(node, Mapping) and isinstance(part, int):
            continue  # `on: {...}` is a one-pattern list: Pydantic says on[0]
        elif err["type"] == "missing" and i == len(parts) - 1 and isinstance(node, Mapping | None):
            found.loc.append(part)
            missing = True
        else:
            found.tagged = True  # a union member's name, e.g. 'dict[str,any]'
    return found


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, Mapping):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _model_problems(errors: list[ErrorDetails], doc: _Document) -> list[Problem]:
    problems: list[Problem] = []
    alternatives: dict[tuple[str | None, str | None, int | None], list[str]] = {}
    explained = _misspelled(errors)
    for err in errors:
        if _is_dag_wide(err) or (err["type"] == "missing" and err["loc"] in explained):
            continue
        where = _locate(err, doc.data)
        task, inner = _split_task(where.loc)
        if where.key_error and len(where.loc) == 2 and where.loc[0] == "tasks":
            task, inner = None, ("tasks",)  # a bad task id: the key itself is wrong
        message = _message(err, where)
        line = doc.line_of(where.raw)
        name = format_path(inner) if inner else None
        if where.tagged:
            alternatives.setdefault((task, name, line), []).append(message)
        else:
            problems.append(Problem("", message, task, name, line))
    for (task, name, line), messages in alternatives.items():
        problems.append(Problem("", _merge_alternatives(messages), task, name, line))
    return problems


def _misspelled(errors: list[ErrorDetails]) -> set[tuple[str | int, ...]]:
    """Required keys that an unknown key is a typo of: the typo's message says it all."""
    missing = {err["loc"] for err in errors if err["type"] == "missing"}
    explained: set[tuple[str | int, ...]] = set()
    for err in errors:
        if err["type"] == "extra_forbidden" and err["loc"]:
            parent, key = err["loc"][:-1], str(err["loc"][-1])
            allowed = [k for k in _allowed_keys(parent) if (*parent, k) in missing]
            explained.update((*parent, k) for k in difflib.get_close_matches(key, allowed, 1, 0.6))
    return explained


def _is_dag_wide(err: ErrorDetails) -> bool:
    """Model-validator checks that only run on otherwise valid data; the raw-data checks
    (_graph_problems, _schedule_problems, _target_problems) report them instead."""
    if err["type"] != "value_error":
        return False
    cause = err.get("ctx", {}).get("error")
    if not err["loc"]:
        return isinstance(cause, graph.GraphError | ScheduleError) or "start_date" in str(cause)
    return len(err["loc"]) == 2 and err["loc"][0] == "tasks" and "target key" in str(cause)


def _merge_alternatives(messages: list[str]) -> str:
    """'expected a mapping, got a list' + 'expected a string, got a list' -> one message."""
    unique = list(dict.fromkeys(messages))
    parsed = [re.fullmatch(r"expected (.+), got (.+)", m) for m in unique]
    if all(parsed) and len({m.group(2) for m in parsed if m}) == 1:
        got = parsed[0].group(2) if parsed[0] else ""
        return f"expected {' or '.join(m.group(1) for m in parsed if m)}, got {got}"
    return "; or ".join(unique)


# --- messages ---------------------------------------------------------------------------------


def _message(err: ErrorDetails, where: _Located) -> str:
    """Pydantic's error in plain words, naming what the user wrote."""
    handler = _MESSAGES.get(err["type"])
    if handler is not None:
        return handler(err, where)
    if err["type"] in _MAPPING_TYPES:
        return f"expected a mapping (key: value), got {_kind(err.get('input'))}"
    text = err["msg"].replace("Input should be", "must be")
    return f"{text[:1].lower()}{text[1:]} (got {_short(err.get('input'))})"


def _last(where: _Located) -> str | int | None:
    return where.loc[-1] if where.loc else None


def _missing(err: ErrorDetails, where: _Located) -> str:
    return "field required"


def _extra(err: ErrorDetails, where: _Located) -> str:
    return _unknown_key(str(_last(where)), where.loc[:-1])


def _pattern_mismatch(err: ErrorDetails, where: _Located) -> str:
    return _bad_id(where, err.get("input"), str(err.get("ctx", {}).get("pattern", "")))


def _value_error(err: ErrorDetails, where: _Located) -> str:
    cause = err.get("ctx", {}).get("error")
    text = str(cause) if cause is not None else err["msg"]
    return f"invalid event pattern: {text}" if isinstance(cause, PatternError) else text


def _choice(err: ErrorDetails, where: _Located) -> str:
    last = _last(where)
    label = last.replace("_", " ") if isinstance(last, str) else "value"
    expected = err.get("ctx", {}).get("expected", "")
    return f"invalid {label} {_short(err.get('input'))}: expected {expected}"


def _list_type(err: ErrorDetails, where: _Located) -> str:
    got = _kind(err.get("input"))
    if _last(where) in _SIGNAL_FIELDS:
        return f"expected an event pattern or a list of them, got {got}"
    return f"expected a list, got {got}"


def _string_type(err: ErrorDetails, where: _Located) -> str:
    return f"expected a string, got {_kind(err.get('input'))}"


def _too_short(err: ErrorDetails, where: _Located) -> str:
    if _last(where) == "tasks":
        return "a DAG needs at least one task"
    least = err.get("ctx", {}).get("min_length", 1)
    value = err.get("input")
    got = len(value) if isinstance(value, Sized) else 0
    return f"needs at least {least} item{'' if least == 1 else 's'}, got {got}"


_MESSAGES: dict[str, Callable[[ErrorDetails, _Located], str]] = {
    "missing": _missing,
    "extra_forbidden": _extra,
    "string_pattern_mismatch": _pattern_mismatch,
    "value_error": _value_error,
    "assertion_error": _value_error,
    "enum": _choice,
    "literal_error": _choice,
    "list_type": _list_type,
    "string_type": _string_type,
    "too_short": _too_short,
}
_MAPPING_TYPES = frozenset({"model_type", "dict_type", "model_attributes_type"})


def _bad_id(where: _Located, value: Any, pattern: str) -> str:
    if where.key_error and where.loc[:1] == ["tasks"] and len(where.loc) == 2:
        return f"task id {_short(value)} must match {ID_PATTERN} ({_ID_HINT})"
    if where.loc == ["dag"]:
        return f"dag id {_short(value)} must match {ID_PATTERN} ({_ID_HINT})"
    if "depends_on" in where.loc:
        return f"{_short(value)} is not a valid task id (must match {ID_PATTERN})"
    return f"{_short(value)} does not match {pattern}"


def _unknown_key(key: str, parent: Sequence[str | int]) -> str:
    allowed = _allowed_keys(parent)
    if not allowed:
        return f"unknown key '{key}'"
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key '{key}' ({hint}allowed: {', '.join(allowed)})"


def _allowed_keys(parent: Sequence[str | int]) -> list[str]:
    model = _model_at(parent)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` (for its allowed keys)."""
    current: Any = DagSpec
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {info.alias or name: info for name, info in current.model_fields.items()}
            info = fields.get(str(part)) or current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _kind(value: Any) -> str:
    """What the user wrote, in YAML words: 'a list', 'a number (5)'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    names = ((Mapping, "a mapping"), (list | tuple, "a list"))
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- DAG-wide checks on the raw data ----------------------------------------------------------


@dataclass(frozen=True)
class _Deps:
    depends_on: list[str]


def _raw_dependencies(tasks: Mapping[Key, Any]) -> Iterator[tuple[str, int, str]]:
    """(task, index, dependency) for each well-formed depends_on item."""
    for task_id, task in tasks.items():
        deps = task.get("depends_on") if isinstance(task, Mapping) else None
        if isinstance(task_id, str) and isinstance(deps, list):
            for i, dep in enumerate(deps):
                if isinstance(dep, str) and re.match(ID_PATTERN, dep):
                    yield task_id, i, dep


def _graph_problems(doc: _Document) -> list[Problem]:
    """Self, unknown and cyclic dependencies: all of them, not just the first."""
    tasks = doc.data.get("tasks")
    if not isinstance(tasks, Mapping):
        return []
    problems: list[Problem] = []
    edges: dict[str, list[str]] = {t: [] for t in tasks if isinstance(t, str)}
    for task_id, i, dep in _raw_dependencies(tasks):
        line = doc.line_of(("tasks", task_id, "depends_on", i))
        if dep == task_id:
            problems.append(
                Problem("", "a task cannot depend on itself", task_id, f"depends_on[{i}]", line)
            )
        elif dep not in edges:
            problems.append(
                Problem(
                    "", _unknown_task(dep, task_id, list(edges)), task_id, f"depends_on[{i}]", line
                )
            )
        else:
            edges[task_id].append(dep)
    cycle = graph.find_cycle({t: _Deps(deps) for t, deps in edges.items()})
    if cycle:
        problems.append(Problem("", "dependency cycle: " + " -> ".join(cycle)))
    return problems


def _raw_tasks(doc: _Document) -> Iterator[tuple[Any, Mapping[str, Any]]]:
    """The file's tasks as parsed, skipping malformed ones (the model reports those)."""
    tasks = doc.data.get("tasks")
    if not isinstance(tasks, Mapping):
        return
    for task_id, task in tasks.items():
        if isinstance(task, Mapping):
            yield task_id, task


def _target_problems(doc: _Document) -> list[Problem]:
    """Exactly one target key per task, checked even when the task has other errors."""
    problems: list[Problem] = []
    for task_id, task in _raw_tasks(doc):
        # `batch:` with no value is no target; `noop:` with no value is the noop shorthand.
        given = [k for k in TARGET_KEYS if k in task and (task[k] is not None or k == "noop")]
        if len(given) == 1:
            continue
        if given:
            message = f"has {len(given)} target keys ({', '.join(given)}); give exactly one"
        else:
            message = f"needs exactly one target key, one of: {', '.join(TARGET_KEYS)}"
        problems.append(Problem("", message, str(task_id), None, doc.line_of(("tasks", task_id))))
    return problems


def _unknown_task(dep: str, task_id: str, known: list[str]) -> str:
    others = [t for t in known if t != task_id]  # never suggest depending on itself
    close = difflib.get_close_matches(dep, others, n=1, cutoff=0.6)
    if close:
        return f"depends on unknown task '{dep}' (did you mean '{close[0]}'?)"
    listed = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
    return f"depends on unknown task '{dep}' (tasks: {listed or 'none'})"


def _schedule_problems(doc: _Document) -> list[Problem]:
    """The schedule, its time zone and start_date, each reported at its own key."""
    raw = doc.data
    expression, zone = raw.get("schedule"), raw.get("timezone", "UTC")
    if not isinstance(expression, str) or not isinstance(zone, str):
        return []  # wrong types: the model's errors say so
    problems: list[Problem] = []
    try:
        validate_timezone(zone)
    except ScheduleError as exc:
        problems.append(Problem("", str(exc), None, "timezone", doc.line_of(("timezone",))))
        zone = "UTC"  # still check the expression itself
    anchor: datetime | None = None
    if raw.get("start_date") is None:
        message = "required when schedule is set (when the first interval starts)"
        problems.append(Problem("", message, None, "start_date", doc.line_of(("schedule",))))
    else:
        try:
            anchor = TypeAdapter(datetime).validate_python(raw["start_date"])
        except ValidationError:
            anchor = None  # the model reports the bad start_date
    try:
        parse_schedule(expression, zone, anchor)
    except ScheduleError as exc:
        problems.append(Problem("", str(exc), None, "schedule", doc.line_of(("schedule",))))
    return problems


def _template_problems(doc: _Document) -> list[Problem]:
    """Compile every template of every task, valid or not, so one pass finds them all.

    Walks the file's data rather than the model so a task with other errors still gets
    its templates checked; the strings are the ones ``templates.template_strings`` yields.
    """
    problems: list[Problem] = []
    for task_id, task in _raw_tasks(doc):
        for key in (*TARGET_KEYS, "local", "when"):
            for parts, text in _strings(task.get(key), (key,)):
                problem = _template_problem(text)
                if problem:
                    line = doc.line_of(("tasks", task_id, *parts))
                    problems.append(Problem("", problem, str(task_id), format_path(parts), line))
    return problems


def _emit_source_problems(doc: _Document) -> list[Problem]:
    """An emit source written out in the file must be the DAG's own or under a prefix it
    declares (templated sources are checked once rendered, at dispatch)."""
    dag_id = doc.data.get("dag")
    declared = doc.data.get("emit_sources") or []
    if not isinstance(dag_id, str) or not isinstance(declared, list):
        return []
    prefixes = [prefix for prefix in declared if isinstance(prefix, str)]
    problems: list[Problem] = []
    for task_id, task in _raw_tasks(doc):
        emit = task.get("emit")
        source = emit.get("source") if isinstance(emit, Mapping) else None
        if not isinstance(source, str) or not is_literal(source):
            continue
        problem = source_problem(source, dag_id, prefixes)
        if problem:
            line = doc.line_of(("tasks", task_id, "emit", "source"))
            problems.append(Problem("", problem, str(task_id), "emit.source", line))
    return problems


def _strings(value: Any, parts: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield parts, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, (*parts, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*parts, i))


def _template_problem(text: str) -> str | None:
    try:
        check_template(text)
    except TemplateSyntaxProblem as exc:
        where = f" (template line {exc.lineno})" if exc.lineno and "\n" in text else ""
        return f"template syntax error: {exc.message}{where}"
    return None
