"""skydag's own notifications in the local cloud (as ``dev run`` and ``dev up`` run it):
they reach the scheduler only through the skydag-bus rules the dag loader keeps for the
DAGs that subscribe to them, exactly those events, and none when no DAG listens."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from skydag import wiring
from skydag.localcloud.cloud import LocalCloud, LocalCloudOptions
from skydag.store.models import bind_models
from skydag.store.repositories import Repositories

OTHER = b"""
dag: other
tasks:
  first: {noop: {}}
  second: {depends_on: [first], noop: {}}
"""
AFTER_OTHER = b"""
dag: after_other
on:
  - source: [skydag]
    detail-type: [DagRun State Change]
    detail: {dag: [other], state: [success]}
tasks:
  notify: {noop: {}}
"""
# How the scheduler logs an event it handled: "<source> '<detail-type>' ...".
SKYDAG_EVENT_HANDLED = "scheduler              skydag '"


class PlumbingOnly(LocalCloud):
    """No service players: these tests need only noop tasks."""

    def _make_players(self) -> list[Any]:
        return []


@pytest.fixture
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def cloud(log: io.StringIO) -> Iterator[LocalCloud]:
    with PlumbingOnly(LocalCloudOptions(log=log)) as running:
        yield running


def load(cloud: LocalCloud, **files: bytes) -> Repositories:
    settings = cloud.settings
    for dag, text in files.items():
        cloud.client("s3").put_object(Bucket=settings.dag_bucket, Key=f"dags/{dag}.yaml", Body=text)
    bind_models(settings)
    repos = Repositories()

    def loaded() -> bool:
        heads = [repos.dags.find(dag) for dag in files]
        return all(head is not None and head.current_version is not None for head in heads)

    assert cloud.run_until(loaded, timeout=15)
    return repos


def run_other(cloud: LocalCloud, repos: Repositories) -> None:
    cloud.put_signal(
        {
            "Source": wiring.COMMAND_SOURCE,
            "DetailType": "Trigger DAG",
            "Detail": json.dumps({"dag": "other", "run_id": "r1"}),
        }
    )

    def finished() -> bool:
        run = repos.runs.find("other", "r1")
        return run is not None and run.state.value == "success"

    assert cloud.run_until(finished, timeout=20)


def scheduler_queue_empty(cloud: LocalCloud) -> bool:
    attributes = cloud.client("sqs").get_queue_attributes(
        QueueUrl=cloud.queue_urls[wiring.SCHEDULER_QUEUE.id],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(int(count) == 0 for count in attributes.values())


def skydag_events_handled(log: io.StringIO) -> list[str]:
    return [line for line in log.getvalue().splitlines() if SKYDAG_EVENT_HANDLED in line]


def test_a_dag_runs_when_the_dag_it_listens_to_succeeds(
    cloud: LocalCloud, log: io.StringIO
) -> None:
    repos = load(cloud, other=OTHER, after_other=AFTER_OTHER)

    run_other(cloud, repos)

    def triggered() -> bool:
        runs = repos.runs.list_for_dag("after_other")
        return len(runs) == 1 and runs[0].state.value == "success"

    assert cloud.run_until(triggered, timeout=20)
    # Of the many notifications the two runs put (each task's transitions, each run's),
    # the scheduler saw the one the rule forwards.
    (handled,) = skydag_events_handled(log)
    assert "skydag 'DagRun State Change' dag=other run_id=r1: handled" in handled


def test_no_skydag_event_reaches_the_scheduler_when_no_dag_listens(
    cloud: LocalCloud, log: io.StringIO
) -> None:
    repos = load(cloud, other=OTHER)

    run_other(cloud, repos)

    # Every notification of the run was put (the stream saw the run end) and none is on
    # its way to the scheduler: neither matched and undelivered nor in its queue.
    assert cloud.run_until(
        lambda: (
            "run other/r1: running -> success" in log.getvalue()
            and cloud.bridge.pending() == 0
            and scheduler_queue_empty(cloud)
        ),
        timeout=20,
    )
    assert skydag_events_handled(log) == []
    skydag_bus_rules = cloud.client("events").list_rules(EventBusName=cloud.settings.event_bus)
    names = {rule["Name"] for rule in skydag_bus_rules["Rules"]}
    assert not names & set(wiring.skydag_event_rule_names(cloud.settings.event_bus))
