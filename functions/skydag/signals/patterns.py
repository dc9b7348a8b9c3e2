"""EventBridge event-pattern matching (pure Python, no AWS calls).

Implements the content-filtering grammar documented in "Creating event patterns" and
"Content filtering in Amazon EventBridge event patterns", with validation modelled on
the rule compiler EventBridge uses (aws/event-ruler ``JsonRuleCompiler``):

* a pattern is a non-empty object; nested objects recurse; every leaf is a non-empty
  array whose elements are ORed; fields are ANDed;
* leaf elements are exact values (string, number, ``true``/``false``, ``null``) or a
  single-key operator object: ``prefix``, ``suffix`` (each optionally wrapping
  ``equals-ignore-case``), ``equals-ignore-case``, ``wildcard``, ``anything-but``,
  ``numeric``, ``exists`` and ``cidr``;
* ``"$or": [pattern, pattern, ...]`` may appear at any object level.

Event-side rules: a field is *present* when it holds at least one leaf value (a scalar,
or a scalar inside an array); an object is not a leaf, so ``exists`` never matches one.
When the event holds an array, a leaf condition matches if any element matches, and a
nested sub-pattern matches if any object element satisfies the whole sub-pattern.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Final

from skydag.limits import MAX_JSON_DEPTH, json_depth

__all__ = ["PatternError", "matches", "validate_pattern"]


class PatternError(ValueError):
    """An event pattern that EventBridge would reject; the message names the path."""


OR_KEY: Final = "$or"
ROOT: Final = "(root)"
IGNORE_CASE: Final = "equals-ignore-case"
MAX_PATTERN_CHARS: Final = 4096
"""A pattern's compact JSON: EventBridge's own maximum for a rule's event pattern."""
MAX_PATTERN_DEPTH: Final = MAX_JSON_DEPTH

_NUMERIC_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_LOWER_BOUNDS: Final = frozenset({">", ">="})
_UPPER_BOUNDS: Final = frozenset({"<", "<="})
# Field names EventBridge refuses inside a $or alternative (event-ruler's reserved list).
_RESERVED_IN_OR: Final = frozenset(
    {
        "equals",
        IGNORE_CASE,
        "prefix",
        "suffix",
        "anything-but",
        "exists",
        "wildcard",
        "numeric",
        "cidr",
        *_NUMERIC_OPS,
    }
)


# --- small shared helpers ------------------------------------------------------------------


def _error(path: str, message: str) -> PatternError:
    return PatternError(f"{path or ROOT}: {message}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_array(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _is_number(value: Any) -> bool:
    """A JSON number: bool is an int subclass in Python but is not a number in JSON."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_finite_number(value)


def _single_item(expression: Mapping[str, Any]) -> tuple[str, Any]:
    ((key, value),) = expression.items()
    return key, value


def _strings(operand: Any) -> list[str] | None:
    """``operand`` as a list of strings (a lone string counts), or None if it is not one."""
    if isinstance(operand, str):
        return [operand]
    if _is_array(operand) and all(isinstance(item, str) for item in operand):
        return list(operand)
    return None


# --- wildcard and CIDR parsing (shared by validation and matching) -------------------------


def _wildcard_segments(pattern: str) -> tuple[str, ...]:
    """The literal text between an EventBridge wildcard's stars; raise ValueError when AWS
    would reject it.

    ``*`` matches zero or more characters, ``\\*`` is a literal star and ``\\\\`` a literal
    backslash; any other escape, a trailing backslash and ``**`` are errors. A pattern
    without a star is one segment.
    """
    segments: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        nxt = pattern[index + 1] if index + 1 < len(pattern) else ""
        if char == "*":
            if nxt == "*":
                raise ValueError(f"consecutive wildcard characters at position {index}")
            segments.append("".join(current))
            current = []
        elif char == "\\":
            if nxt not in ("*", "\\"):
                raise ValueError(f"invalid escape character at position {index}")
            current.append(nxt)
            index += 1
        else:
            current.append(char)
        index += 1
    segments.append("".join(current))
    return tuple(segments)


@lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> tuple[str, ...] | None:
    try:
        return _wildcard_segments(pattern)
    except ValueError:
        return None


def _wildcard_matches(segments: tuple[str, ...], value: str) -> bool:
    """Greedy segment matching, linear in ``len(value)`` (no backtracking).

    The first segment must start the value and the last end it; each middle segment is
    taken at its leftmost place after the previous one. Leftmost is always right: it
    leaves the most room for the segments after it, whatever a star swallows.
    """
    if len(segments) == 1:
        return value == segments[0]
    first, *middle, last = segments
    if len(value) < len(first) + len(last) or not value.startswith(first):
        return False
    if not value.endswith(last):
        return False
    position, end = len(first), len(value) - len(last)
    for segment in middle:
        found = value.find(segment, position, end)
        if found < 0:
            return False
        position = found + len(segment)
    return True


def _parse_cidr(cidr: str) -> tuple[int, int, int]:
    """(version, low, high) of a CIDR block; raise ValueError as EventBridge would.

    Like event-ruler, the block runs from the address as written up to the address with
    every host bit set, and the mask must be below the address width (< 32 for IPv4).
    """
    address, slash, bits = cidr.partition("/")
    if not slash or "/" in bits:
        raise ValueError("malformed CIDR, one '/' required")
    if not bits.isascii() or not bits.isdigit():
        raise ValueError("malformed CIDR, mask bits must be a non-negative integer")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"invalid IP address {address!r}") from None
    mask = int(bits)
    if mask >= ip.max_prefixlen:
        raise ValueError(f"IPv{ip.version} mask bits must be < {ip.max_prefixlen}")
    low = int(ip)
    return ip.version, low, low | ((1 << (ip.max_prefixlen - mask)) - 1)


@lru_cache(maxsize=1024)
def _cidr_range(cidr: str) -> tuple[int, int, int] | None:
    try:
        return _parse_cidr(cidr)
    except ValueError:
        return None


# --- validation ----------------------------------------------------------------------------


def validate_pattern(pattern: Any) -> None:
    """Raise PatternError naming the offending path when ``pattern`` is not valid."""
    if not isinstance(pattern, Mapping) or not pattern:
        raise _error(ROOT, "an event pattern must be a non-empty object")
    _validate_size(pattern)
    _validate_object(pattern, "", in_or=False)


def _validate_size(pattern: Mapping[Any, Any]) -> None:
    """Bound the work every match does: depth first (counted without recursion), then size."""
    if json_depth(pattern, MAX_PATTERN_DEPTH) > MAX_PATTERN_DEPTH:
        raise _error(ROOT, f"an event pattern is nested more than {MAX_PATTERN_DEPTH} levels deep")
    try:
        size = len(json.dumps(pattern, separators=(",", ":"), ensure_ascii=False))
    except (TypeError, ValueError):
        return  # not JSON: the checks below say where
    if size > MAX_PATTERN_CHARS:
        raise _error(
            ROOT,
            f"an event pattern is {size} characters as JSON, over EventBridge's "
            f"{MAX_PATTERN_CHARS}",
        )


def _validate_object(obj: Mapping[Any, Any], path: str, *, in_or: bool) -> None:
    if not obj:
        raise _error(path, "empty objects are not allowed")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _error(path, f"field names must be strings, got {key!r}")
        if key == OR_KEY:
            _validate_or(value, _join(path, key))
            continue
        child = _join(path, key)
        if in_or and key in _RESERVED_IN_OR:
            raise _error(child, f"{key!r} is a reserved keyword and cannot be a field in $or")
        if isinstance(value, Mapping):
            _validate_object(value, child, in_or=in_or)
        elif _is_array(value):
            _validate_leaf(value, child)
        else:
            raise _error(child, "must be an object or an array")


def _validate_or(alternatives: Any, path: str) -> None:
    if not _is_array(alternatives):
        raise _error(path, "$or must be an array of objects")
    if len(alternatives) < 2:
        raise _error(path, "$or needs at least 2 alternatives")
    for index, alternative in enumerate(alternatives):
        where = f"{path}[{index}]"
        if not isinstance(alternative, Mapping):
            raise _error(where, "only objects are allowed in $or")
        _validate_object(alternative, where, in_or=True)


def _validate_leaf(values: Any, path: str) -> None:
    if not values:
        raise _error(path, "empty arrays are not allowed")
    for value in values:
        if isinstance(value, Mapping):
            _validate_expression(value, path)
        elif not _is_scalar(value):
            raise _error(path, "match values must be a string, number, true, false or null")


def _validate_expression(expression: Mapping[Any, Any], path: str) -> None:
    if not expression:
        raise _error(path, "a match expression needs an operator")
    if len(expression) > 1:
        raise _error(path, "only one operator is allowed in a match expression")
    name, operand = _single_item(expression)
    validator = _VALIDATORS.get(name)
    if validator is None:
        raise _error(path, f"unknown operator {name!r}")
    validator(operand, path)


def _validate_affix(name: str) -> Callable[[Any, str], None]:
    def validate(operand: Any, path: str) -> None:
        if isinstance(operand, str):
            return
        if isinstance(operand, Mapping):
            if len(operand) != 1 or IGNORE_CASE not in operand:
                raise _error(path, f"{name} only supports a nested {IGNORE_CASE}")
            if not isinstance(operand[IGNORE_CASE], str):
                raise _error(path, f"{name}/{IGNORE_CASE} needs a string")
            return
        raise _error(path, f"{name} needs a string")

    return validate


def _validate_string(name: str) -> Callable[[Any, str], None]:
    def validate(operand: Any, path: str) -> None:
        if not isinstance(operand, str):
            raise _error(path, f"{name} needs a string")

    return validate


def _validate_wildcard(operand: Any, path: str) -> None:
    if not isinstance(operand, str):
        raise _error(path, "wildcard needs a string")
    try:
        _wildcard_segments(operand)
    except ValueError as exc:
        raise _error(path, f"wildcard {operand!r}: {exc}") from None


def _validate_exists(operand: Any, path: str) -> None:
    if not isinstance(operand, bool):
        raise _error(path, "exists needs true or false")


def _validate_cidr(operand: Any, path: str) -> None:
    if not isinstance(operand, str):
        raise _error(path, "cidr needs a string")
    try:
        _parse_cidr(operand)
    except ValueError as exc:
        raise _error(path, f"cidr {operand!r}: {exc}") from None


def _validate_numeric(operand: Any, path: str) -> None:
    if not _is_array(operand) or len(operand) not in (2, 4):
        if _is_array(operand) and len(operand) > 4:
            raise _error(path, "too many terms in numeric expression")
        raise _error(path, "numeric needs an operator and a number")
    terms = list(operand)
    for op, number in zip(terms[::2], terms[1::2], strict=True):
        if not isinstance(op, str) or op not in _NUMERIC_OPS:
            raise _error(path, f"unknown numeric operator {op!r}")
        if not _is_finite_number(number):
            raise _error(path, f"numeric {op} needs a number, got {number!r}")
    if len(terms) == 4:
        _validate_numeric_range(terms, path)


def _validate_numeric_range(terms: list[Any], path: str) -> None:
    low_op, low, high_op, high = terms
    if low_op not in _LOWER_BOUNDS or high_op not in _UPPER_BOUNDS:
        raise _error(path, "a numeric range is '>' or '>=' a number, then '<' or '<=' a number")
    if not low < high:
        raise _error(path, f"numeric range bottom {low!r} must be less than top {high!r}")


def _validate_anything_but(operand: Any, path: str) -> None:
    if isinstance(operand, Mapping):
        _validate_anything_but_expression(operand, path)
    elif _is_array(operand):
        _validate_anything_but_list(operand, path)
    elif not (isinstance(operand, str) or _is_finite_number(operand)):
        raise _error(
            path,
            "anything-but needs a string, a number, an array of them, or an object with "
            "prefix, suffix, equals-ignore-case or wildcard",
        )


def _validate_anything_but_list(values: Any, path: str) -> None:
    all_strings = all(isinstance(value, str) for value in values)
    all_numbers = all(_is_finite_number(value) for value in values)
    if not values or not (all_strings or all_numbers):
        raise _error(path, "anything-but array must be all strings or all numbers (not empty)")


_ANYTHING_BUT_NESTED: Final = ("prefix", "suffix", IGNORE_CASE, "wildcard")


def _validate_anything_but_expression(expression: Mapping[Any, Any], path: str) -> None:
    if len(expression) != 1:
        raise _error(path, "anything-but takes exactly one nested operator")
    name, operand = _single_item(expression)
    if name not in _ANYTHING_BUT_NESTED:
        raise _error(path, f"unsupported anything-but operator {name!r}")
    values = _strings(operand)
    if not values:
        raise _error(path, f"anything-but/{name} needs a string or a non-empty array of strings")
    for value in values:
        if name == "wildcard":
            _validate_wildcard(value, path)
        elif name in ("prefix", "suffix") and not value:
            raise _error(path, f"anything-but/{name} cannot be empty")


_VALIDATORS: Final[dict[str, Callable[[Any, str], None]]] = {
    "prefix": _validate_affix("prefix"),
    "suffix": _validate_affix("suffix"),
    IGNORE_CASE: _validate_string(IGNORE_CASE),
    "wildcard": _validate_wildcard,
    "anything-but": _validate_anything_but,
    "numeric": _validate_numeric,
    "exists": _validate_exists,
    "cidr": _validate_cidr,
}


# --- matching ------------------------------------------------------------------------------


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """True when ``event`` matches ``pattern`` under EventBridge's content-filtering rules.

    ``pattern`` is expected to have passed :func:`validate_pattern`; constructs it would
    reject never match here rather than raise. The work is about linear in the event's
    size: each leaf's conditions are compiled once per call (:class:`_Leaf`).
    """
    return _match_node(pattern, event, {})


# A leaf's conditions compiled, by the id of its list (alive for the whole call).
_Leaves = dict[int, "_Leaf"]


def _match_node(pattern: Mapping[str, Any], node: Any, leaves: _Leaves) -> bool:
    """Match an object pattern against whatever the event holds at this point."""
    if isinstance(node, Mapping):
        return _match_fields(pattern, node, leaves)
    if _is_array(node):
        objects = [item for item in _flatten(node) if isinstance(item, Mapping)]
        if objects:
            return any(_match_fields(pattern, item, leaves) for item in objects)
    # A scalar, an absent field or an array without objects: every nested field is absent.
    return _match_fields(pattern, {}, leaves)


def _match_fields(pattern: Mapping[str, Any], obj: Mapping[str, Any], leaves: _Leaves) -> bool:
    for key, rule in pattern.items():
        if key == OR_KEY:
            ok = _is_array(rule) and any(
                isinstance(alt, Mapping) and _match_node(alt, obj, leaves) for alt in rule
            )
        elif isinstance(rule, Mapping):
            ok = _match_node(rule, obj.get(key), leaves)
        elif _is_array(rule):
            leaf = leaves.get(id(rule))
            if leaf is None:
                leaf = leaves[id(rule)] = _Leaf(rule)
            ok = leaf.matches(_leaf_values(obj, key))
        else:
            ok = False
        if not ok:
            return False
    return True


def _flatten(values: Any) -> Iterator[Any]:
    """The non-array items of nested arrays, in order, without recursion (events are
    untrusted: their nesting must not reach Python's recursion limit)."""
    stack = [iter(values)]
    while stack:
        for value in stack[-1]:
            if _is_array(value):
                stack.append(iter(value))
                break
            yield value
        else:
            stack.pop()


def _leaf_values(obj: Mapping[str, Any], key: str) -> list[Any]:
    """The leaf values of ``obj[key]``: objects are not leaves and arrays are flattened."""
    if key not in obj:
        return []
    value = obj[key]
    candidates = list(_flatten(value)) if _is_array(value) else [value]
    return [item for item in candidates if not isinstance(item, Mapping)]


def _value_key(value: Any) -> tuple[str, Any] | None:
    """A JSON scalar as a set member: 5 and 5.0 are one number, never equal to true."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if _is_number(value):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return None


class _Affixes:
    """Prefixes (or suffixes) grouped by length: one slice and set lookup per length."""

    def __init__(self) -> None:
        self.by_length: dict[int, set[str]] = {}

    def add(self, text: str) -> None:
        self.by_length.setdefault(len(text), set()).add(text)

    def starts_any(self, values: list[str]) -> bool:
        return any(
            value[:size] in group for size, group in self.by_length.items() for value in values
        )

    def ends_any(self, values: list[str]) -> bool:
        return any(
            len(value) >= size and value[len(value) - size :] in group
            for size, group in self.by_length.items()
            for value in values
        )


# (low, low included, high, high included): a numeric condition as one interval.
_Interval = tuple[float, bool, float, bool]


def _numeric_interval(terms: Any) -> _Interval | None:
    """The numbers ``terms`` admit (their comparisons ANDed), or None when malformed."""
    if not _is_array(terms) or not terms or len(terms) % 2:
        return None
    low, low_in, high, high_in = -math.inf, True, math.inf, True
    for op, number in zip(terms[::2], terms[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_finite_number(number):
            return None
        if op in (">", ">=", "=") and (number > low or (number == low and op == ">")):
            low, low_in = number, op != ">"
        if op in ("<", "<=", "=") and (number < high or (number == high and op == "<")):
            high, high_in = number, op != "<"
    return low, low_in, high, high_in


def _any_in(interval: _Interval, ordered: list[Any]) -> bool:
    """Whether any of the sorted numbers lies in the interval: a binary search."""
    low, low_in, high, high_in = interval
    at = bisect.bisect_left(ordered, low) if low_in else bisect.bisect_right(ordered, low)
    if at == len(ordered):
        return False
    first = ordered[at]
    return bool(first < high or (high_in and first == high))


class _Leaf:
    """A leaf's conditions compiled once per match, so its cost is about one pass over the
    event's distinct values per kind of condition, not one per (condition, value) pair:
    exact values, anything-but lists and equals-ignore-case are sets, plain prefixes and
    suffixes are grouped by length, numeric ranges are binary searches."""

    def __init__(self, conditions: Any) -> None:
        self.exact: set[tuple[str, Any]] = set()
        self.ignore_case: set[str] = set()
        self.affixes = {kind: _Affixes() for kind in ("prefix", "suffix", "iprefix", "isuffix")}
        self.intervals: list[_Interval] = []
        self.excluded: list[frozenset[tuple[str, Any]]] = []  # anything-but lists
        self.others: list[tuple[str, Any]] = []
        for condition in conditions if _is_array(conditions) else ():
            self._add(condition)

    def _add(self, condition: Any) -> None:
        if not isinstance(condition, Mapping):
            key = _value_key(condition)
            if key is not None:
                self.exact.add(key)
            return
        if len(condition) != 1:
            return
        name, operand = _single_item(condition)
        if name in ("prefix", "suffix"):
            if isinstance(operand, str):
                self.affixes[name].add(operand)
            elif isinstance(operand, Mapping) and isinstance(operand.get(IGNORE_CASE), str):
                self.affixes[f"i{name}"].add(operand[IGNORE_CASE].lower())
        elif name == IGNORE_CASE and isinstance(operand, str):
            self.ignore_case.add(operand.lower())
        elif name == "numeric":
            interval = _numeric_interval(operand)
            if interval is not None:
                self.intervals.append(interval)
        elif name == "anything-but" and not isinstance(operand, Mapping):
            items = list(operand) if _is_array(operand) else [operand]
            self.excluded.append(frozenset(filter(None, map(_value_key, items))))
        else:
            self.others.append((name, operand))

    def matches(self, values: list[Any]) -> bool:
        distinct = {key: value for value in values if (key := _value_key(value)) is not None}
        if not self.exact.isdisjoint(distinct):
            return True
        if any(any(key not in excluded for key in distinct) for excluded in self.excluded):
            return True
        strings = [value for kind, value in distinct if kind == "string"]
        if strings and self._match_strings(strings):
            return True
        if self.intervals:
            numbers = sorted(v for k, v in distinct if k == "number" and not _is_nan(v))
            if numbers and any(_any_in(interval, numbers) for interval in self.intervals):
                return True
        return any(
            self._match_other(name, operand, values, distinct) for name, operand in self.others
        )

    def _match_strings(self, strings: list[str]) -> bool:
        affixes = self.affixes
        if affixes["prefix"].starts_any(strings) or affixes["suffix"].ends_any(strings):
            return True
        if not (self.ignore_case or affixes["iprefix"].by_length or affixes["isuffix"].by_length):
            return False
        lowered = list({value.lower() for value in strings})
        return (
            not self.ignore_case.isdisjoint(lowered)
            or affixes["iprefix"].starts_any(lowered)
            or affixes["isuffix"].ends_any(lowered)
        )

    @staticmethod
    def _match_other(
        name: str, operand: Any, values: list[Any], distinct: dict[tuple[str, Any], Any]
    ) -> bool:
        if name == "exists":
            return isinstance(operand, bool) and bool(values) == operand
        matcher = _MATCHERS.get(name)
        return matcher is not None and any(matcher(operand, value) for value in distinct.values())


def _equals(expected: Any, value: Any) -> bool:
    """Exact match; numbers compare numerically (5 matches 5.0), never across JSON types."""
    if expected is None or isinstance(expected, bool):
        return value is expected
    if _is_number(expected):
        return _is_number(value) and value == expected
    return isinstance(expected, str) and isinstance(value, str) and value == expected


def _starts_with(prefix: str, value: Any) -> bool:
    return isinstance(value, str) and value.startswith(prefix)


def _ends_with(suffix: str, value: Any) -> bool:
    return isinstance(value, str) and value.endswith(suffix)


def _equals_ignore_case(expected: Any, value: Any) -> bool:
    return (
        isinstance(expected, str) and isinstance(value, str) and value.lower() == expected.lower()
    )


def _starts_with_ignore_case(prefix: Any, value: Any) -> bool:
    return isinstance(prefix, str) and _starts_with(prefix.lower(), _lower(value))


def _ends_with_ignore_case(suffix: Any, value: Any) -> bool:
    return isinstance(suffix, str) and _ends_with(suffix.lower(), _lower(value))


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _match_affix(
    plain: Callable[[str, Any], bool], ignore_case: Callable[[Any, Any], bool]
) -> Callable[[Any, Any], bool]:
    def match(operand: Any, value: Any) -> bool:
        if isinstance(operand, Mapping):
            return ignore_case(operand.get(IGNORE_CASE), value)
        return isinstance(operand, str) and plain(operand, value)

    return match


def _match_wildcard(pattern: Any, value: Any) -> bool:
    if not isinstance(pattern, str) or not isinstance(value, str):
        return False
    segments = _wildcard(pattern)
    return segments is not None and _wildcard_matches(segments, value)


def _match_numeric(terms: Any, value: Any) -> bool:
    if not _is_number(value) or not _is_array(terms) or len(terms) % 2:
        return False
    for op, number in zip(terms[::2], terms[1::2], strict=True):
        compare = _NUMERIC_OPS.get(op) if isinstance(op, str) else None
        if compare is None or not _is_number(number) or not compare(value, number):
            return False
    return True


def _match_cidr(cidr: Any, value: Any) -> bool:
    block = _cidr_range(cidr) if isinstance(cidr, str) else None
    if block is None or not isinstance(value, str):
        return False
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    version, low, high = block
    return ip.version == version and low <= int(ip) <= high


_ANYTHING_BUT_MATCHERS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "prefix": _starts_with,
    "suffix": _ends_with,
    IGNORE_CASE: _equals_ignore_case,
    "wildcard": _match_wildcard,
}


def _match_anything_but(operand: Any, value: Any) -> bool:
    """The field is present (``value`` is one of its leaves) and ``operand`` excludes it not."""
    if isinstance(operand, Mapping):
        if len(operand) != 1:
            return False
        name, excluded = _single_item(operand)
        matcher = _ANYTHING_BUT_MATCHERS.get(name)
        values = _strings(excluded)
        return (
            matcher is not None
            and values is not None
            and not any(matcher(item, value) for item in values)
        )
    excluded_values = list(operand) if _is_array(operand) else [operand]
    return not any(_equals(item, value) for item in excluded_values)


_MATCHERS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "prefix": _match_affix(_starts_with, _starts_with_ignore_case),
    "suffix": _match_affix(_ends_with, _ends_with_ignore_case),
    IGNORE_CASE: _equals_ignore_case,
    "wildcard": _match_wildcard,
    "anything-but": _match_anything_but,
    "numeric": _match_numeric,
    "cidr": _match_cidr,
}
