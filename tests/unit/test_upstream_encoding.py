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


@pytest.mark.parametrize("version", [0, 1, 7, 123_456])
def test_a_tombstone_round_trips(version: int) -> None:
    tombstone = UpstreamReport.tombstone(version)
    assert (tombstone.state, tombstone.cleared) == (TaskState.PENDING, True)
    assert _decode_report(_encode_report(tombstone)) == tombstone


@pytest.mark.parametrize("state", list(TaskState))
def test_a_tombstone_sorts_between_its_version_and_the_next(state: TaskState) -> None:
    # A clear at version 4 refuses every report of version 4 (the store accepts a report
    # only below its version * 16) and yields to any report of version 5.
    tombstone = _encode_report(UpstreamReport.tombstone(4))
    assert _encode_report(UpstreamReport(state, 4)) < tombstone
    assert not tombstone < 4 * 16
    assert tombstone < 5 * 16 <= _encode_report(UpstreamReport(state, 5))
