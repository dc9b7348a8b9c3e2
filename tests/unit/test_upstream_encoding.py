"""Upstream reports are stored as one number each; the encoding must round-trip and order."""

from __future__ import annotations

import pytest

from skydag.engine.models import UpstreamReport
from skydag.engine.states import TaskState
from skydag.store.repositories import _decode_report, _encode_report


@pytest.mark.parametrize("state", list(TaskState))
@pytest.mark.parametrize("version", [0, 1, 7, 123_456])
def test_every_state_and_version_round_trips(state: TaskState, version: int) -> None:
    report = UpstreamReport(state, version)
    assert _decode_report(_encode_report(report)) == report


@pytest.mark.parametrize("older", list(TaskState))
@pytest.mark.parametrize("newer", list(TaskState))
def test_any_report_of_an_older_version_sorts_below_the_newer_floor(
    older: TaskState, newer: TaskState
) -> None:
    # The store refuses a report unless the stored one is below version * 16.
    assert (
        _encode_report(UpstreamReport(older, 4))
        < 5 * 16
        <= _encode_report(UpstreamReport(newer, 5))
    )
