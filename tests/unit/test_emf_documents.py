"""handlers/_runtime.py: an invocation's metrics in as few EMF documents (log lines) as
CloudWatch reads the same."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skydag.handlers import _runtime as runtime


def emf(values: dict[str, Any], dimensions: list[list[str]], *metrics: str) -> dict[str, Any]:
    directive = {
        "Namespace": "skydag",
        "Dimensions": dimensions,
        "Metrics": [{"Name": name, "Unit": "Count"} for name in metrics],
    }
    return {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [directive]}, **values}


def test_documents_whose_keys_agree_are_merged_and_others_kept_apart() -> None:
    invocation = emf({"EventsReceived": [1.0]}, [[]], "EventsReceived")
    success = emf({"state": "success", "service": "skydag", "TaskOutcomes": [2]}, [["state"]])
    success["_aws"]["CloudWatchMetrics"][0]["Metrics"] = [{"Name": "TaskOutcomes"}]
    failed = emf({"state": "failed", "service": "skydag", "TaskOutcomes": [1]}, [["state"]])
    failed["_aws"]["CloudWatchMetrics"][0]["Metrics"] = [{"Name": "TaskOutcomes"}]
    started = emf({"state": "success", "RunsFinished": [1]}, [["state"]], "RunsFinished")

    merged = runtime.merged_emf([invocation, success, failed, started])

    # The invocation's own metrics take the first count and the run's end (same state);
    # the count in another state cannot share its ``state`` key, nor TaskOutcomes' value.
    assert len(merged) == 2
    first, second = merged
    assert [m["Name"] for d in first["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]] == [
        "EventsReceived",
        "TaskOutcomes",
        "RunsFinished",
    ]
    assert (first["state"], first["TaskOutcomes"], first["RunsFinished"]) == ("success", [2], [1])
    assert (second["state"], second["TaskOutcomes"]) == ("failed", [1])
    # The documents given are left as they were.
    assert len(invocation["_aws"]["CloudWatchMetrics"]) == 1


def test_an_invocation_prints_its_metrics_and_counts_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "skydag")
    runtime.count("EventsReceived")
    runtime.count_by("TaskOutcomes", "state", "success")
    runtime.count_by("TaskOutcomes", "state", "success")
    runtime.flush_dimensioned()

    (line,) = capsys.readouterr().out.splitlines()
    document = json.loads(line)
    directives = document["_aws"]["CloudWatchMetrics"]
    assert [d["Metrics"][0]["Name"] for d in directives] == ["EventsReceived", "TaskOutcomes"]
    assert directives[1]["Dimensions"] == [["state", "service"]]
    assert (document["state"], document["service"], document["TaskOutcomes"]) == (
        "success",
        "skydag",
        [2],
    )
    runtime.flush_dimensioned()  # nothing left to publish: no line
    assert capsys.readouterr().out == ""
