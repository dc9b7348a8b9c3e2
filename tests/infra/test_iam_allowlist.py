"""The template grants exactly the reviewed permissions in ``iam_allowlist.json``.

A widened permission fails here until someone reviews it into the file; a narrowed one
fails too, so the file never claims more than the stack holds.
"""

from __future__ import annotations

import json
import os

import pytest
from iam_grants import WRITE_VARIABLE, Grant, load_allowlist, role_grants, write_allowlist
from infra_synth import Synthesized


def _lines(grants: dict[str, list[Grant]]) -> set[str]:
    return {
        f"{role}: {json.dumps(grant, sort_keys=True)}"
        for role, role_grants_ in grants.items()
        for grant in role_grants_
    }


def test_the_template_grants_exactly_the_reviewed_permissions(synth: Synthesized) -> None:
    granted = role_grants(synth.stack, synth.json)
    if os.environ.get(WRITE_VARIABLE) == "1":
        write_allowlist(granted)
        pytest.skip(f"{WRITE_VARIABLE}=1: iam_allowlist.json rewritten; review its diff")
    reviewed = load_allowlist()

    assert sorted(granted) == sorted(reviewed), "roles differ from iam_allowlist.json"
    widened = sorted(_lines(granted) - _lines(reviewed))
    narrowed = sorted(_lines(reviewed) - _lines(granted))
    assert not widened, (
        "granted but not reviewed (review, then rewrite the allowlist with "
        f"{WRITE_VARIABLE}=1):\n" + "\n".join(widened)
    )
    assert not narrowed, (
        f"reviewed but no longer granted (rewrite the allowlist with {WRITE_VARIABLE}=1):\n"
        + "\n".join(narrowed)
    )


def test_no_grant_is_listed_twice(synth: Synthesized) -> None:
    for role, grants in role_grants(synth.stack, synth.json).items():
        lines = [json.dumps(grant, sort_keys=True) for grant in grants]
        assert len(lines) == len(set(lines)), role
