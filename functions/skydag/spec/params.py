"""A run's conf checked against the DAG's ``params`` (the console's trigger form).

``params`` are the defaults a run's conf overrides key by key (``merged_params``), so when
a DAG declares any, a conf key it does not declare is most likely a typo, and a value of
another JSON type than the default's would surprise the templates. A DAG without params
takes any conf. A null default takes any value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "null"


def conf_problems(params: Mapping[str, Any], conf: Mapping[str, Any]) -> list[str]:
    """One line per conf key the params do not allow; empty when the conf fits."""
    if not params:
        return []
    problems = []
    for key, value in conf.items():
        if key not in params:
            known = ", ".join(sorted(params))
            problems.append(f"conf.{key}: not a param of this DAG (its params: {known})")
            continue
        default = params[key]
        if default is None:
            continue
        wanted, given = _json_type(default), _json_type(value)
        if wanted != given:
            problems.append(
                f"conf.{key}: expected a {wanted} like the param's default "
                f"{default!r}, got a {given}"
            )
    return problems
