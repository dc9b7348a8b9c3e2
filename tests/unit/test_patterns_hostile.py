"""Event patterns and events built to be slow: every answer is right and comes at once.

Wildcards used to be translated into a backtracking regex, so ``*a*a*a*a*a*a*a*a*b``
against 3,000 ``a`` took longer than 45 s; a signal could stall the scheduler's batch.
Other operators are checked at the largest sizes EventBridge allows (a 4,096-character
pattern, a 256 KB event). The tests assert correctness, and one generous time bound for
the case that used to hang.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skydag.signals.patterns import (
    MAX_PATTERN_CHARS,
    MAX_PATTERN_DEPTH,
    PatternError,
    matches,
    validate_pattern,
)

STARS = "*a*a*a*a*a*a*a*a*b"


def test_a_backtracking_wildcard_answers_at_once() -> None:
    pattern = {"detail": {"key": [{"wildcard": STARS}]}}
    validate_pattern(pattern)
    started = time.perf_counter()
    assert not matches(pattern, {"detail": {"key": "a" * 3000}})
    assert time.perf_counter() - started < 1.0  # was > 45 s
    assert matches(pattern, {"detail": {"key": "a" * 3000 + "b"}})


@pytest.mark.parametrize(
    ("wildcard", "value", "expected"),
    [
        (STARS, "a" * 20_000, False),
        (STARS, "ab" * 10_000, True),
        ("*a" * 1000 + "*b", "a" * 20_000, False),
        ("x*" + "a*" * 500 + "y", "x" + "a" * 20_000 + "y", True),
        ("*", "", True),
        ("a*", "a", True),
        ("*a*a", "a", False),  # the segments may not overlap
        ("ab*ba", "aba", False),
        ("ab*ba", "abba", True),
        ("\\**\\*", "**", True),
        ("\\**\\*", "*", False),
    ],
)
def test_wildcards_at_size(wildcard: str, value: str, expected: bool) -> None:
    pattern = {"k": [{"wildcard": wildcard}]}
    validate_pattern(pattern)
    assert matches(pattern, {"k": value}) is expected
    excluded = {"k": [{"anything-but": {"wildcard": wildcard}}]}
    assert matches(excluded, {"k": value}) is not expected


def _regex_of(wildcard: str) -> re.Pattern[str]:
    """The reference: the backtracking translation the matcher used to run."""
    parts = []
    index = 0
    while index < len(wildcard):
        char = wildcard[index]
        if char == "*":
            parts.append(".*")
        elif char == "\\":
            index += 1
            parts.append(re.escape(wildcard[index]))
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


_PIECES = st.lists(st.sampled_from(["a", "b", "ab", "*", "\\*", "\\\\"]), max_size=8)


@settings(max_examples=400, deadline=None)
@given(pieces=_PIECES, value=st.text(alphabet="ab*\\", max_size=12))
def test_wildcards_agree_with_the_regex_reference(pieces: list[str], value: str) -> None:
    wildcard = "".join(pieces)
    try:
        validate_pattern({"k": [{"wildcard": wildcard}]})
    except PatternError:
        return  # ** and the like: refused, never matched
    expected = _regex_of(wildcard).fullmatch(value) is not None
    assert matches({"k": [{"wildcard": wildcard}]}, {"k": value}) is expected


_NUMERIC_TERMS = st.one_of(
    st.tuples(st.sampled_from(["=", ">", ">=", "<", "<="]), st.integers(-3, 3)).map(list),
    st.tuples(
        st.sampled_from([">", ">="]),
        st.integers(-3, 0),
        st.sampled_from(["<", "<="]),
        st.integers(1, 3),
    ).map(list),
)


@settings(max_examples=300, deadline=None)
@given(terms=_NUMERIC_TERMS, values=st.lists(st.integers(-4, 4) | st.floats(-4, 4), max_size=5))
def test_numeric_ranges_agree_with_comparing_each_value(
    terms: list[Any], values: list[Any]
) -> None:
    ops = {
        "=": lambda a, b: a == b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }
    expected = any(
        all(ops[op](value, number) for op, number in zip(terms[::2], terms[1::2], strict=True))
        for value in values
    )
    assert matches({"k": [{"numeric": terms}]}, {"k": values}) is expected


# --- the largest pattern against the largest event ------------------------------------------

MANY = 60_000  # one-character values: about 240 KB of event


@pytest.mark.parametrize(
    ("conditions", "values", "expected"),
    [
        ([f"b{i}" for i in range(550)], ["a"] * MANY, False),
        ([f"b{i}" for i in range(550)], [*(["a"] * MANY), "b549"], True),
        ([{"prefix": f"b{i}"} for i in range(220)], ["a"] * MANY, False),
        ([{"suffix": f"b{i}"} for i in range(220)], [f"{i}" for i in range(MANY)], False),
        ([{"suffix": f"{i}9"} for i in range(10)], [f"x{i}" for i in range(MANY)], True),
        ([{"prefix": {"equals-ignore-case": f"B{i}"}} for i in range(100)], ["A"] * MANY, False),
        ([{"equals-ignore-case": f"B{i}"} for i in range(130)], ["b129"], True),
        ([{"numeric": [">", i, "<", i + 0.5]} for i in range(100)], list(range(MANY)), False),
        ([{"numeric": ["=", 59_999]}], list(range(MANY)), True),
        ([{"anything-but": [f"b{i}" for i in range(550)]}], ["b549"] * MANY, False),
        ([{"anything-but": [f"b{i}" for i in range(550)]}], ["b549", "c"], True),
    ],
)
def test_many_conditions_against_many_values(
    conditions: list[Any], values: list[Any], expected: bool
) -> None:
    pattern = {"k": conditions}
    validate_pattern(pattern)
    assert matches(pattern, {"k": values}) is expected


def test_many_event_objects_share_one_compiled_leaf() -> None:
    pattern = {"items": {"k": [f"b{i}" for i in range(550)]}}
    validate_pattern(pattern)
    assert not matches(pattern, {"items": [{"k": i} for i in range(30_000)]})
    assert matches(pattern, {"items": [*({"k": i} for i in range(30_000)), {"k": "b7"}]})


def test_deeply_nested_event_arrays_do_not_recurse() -> None:
    deep: Any = "x"
    for _ in range(50_000):
        deep = [deep]
    assert matches({"k": ["x"]}, {"k": deep})
    assert not matches({"k": ["y"]}, {"k": deep})


# --- limits on the pattern itself ------------------------------------------------------------


def test_a_pattern_over_eventbridges_size_is_refused() -> None:
    pattern = {"k": [f"value-{i}" for i in range(MAX_PATTERN_CHARS // 8)]}
    with pytest.raises(PatternError, match=r"^\(root\): an event pattern is \d+ characters"):
        validate_pattern(pattern)


def test_a_pattern_nested_too_deep_is_refused() -> None:
    pattern: dict[str, Any] = {"k": ["x"]}
    for _ in range(MAX_PATTERN_DEPTH):
        pattern = {"k": pattern}
    with pytest.raises(PatternError, match=f"nested more than {MAX_PATTERN_DEPTH} levels"):
        validate_pattern(pattern)


def test_an_over_limit_pattern_is_an_error_when_the_dag_is_validated() -> None:
    from skydag.spec.loader import DagFileError, load_dag_bytes

    values = ", ".join(f'"value-{i}"' for i in range(600))
    text = f"dag: d\non:\n  - detail: {{k: [{values}]}}\ntasks:\n  a: {{noop: {{}}}}\n"
    with pytest.raises(DagFileError) as caught:
        load_dag_bytes(text.encode(), "d.yaml")
    [problem] = caught.value.problems
    assert "characters as JSON, over EventBridge's 4096" in str(problem)
    assert problem.field == "on[0]"
