"""The fault-injection simulator: its own parts, then a quick sweep of seeds.

The quick sweep runs four seeds (each: the oracle and the faulty run, side by side in
two processes) with the ``full`` fault profile, as the soak does (``make soak``), and
asserts that every invariant held. (The ``quick`` profile, which spares the paths of
findings while they are open, is there for diagnosis; every finding so far is fixed.)
More seeds run here with ``SKYDAG_RELIABILITY_SEEDS=N`` (seeds 1..N;
``SKYDAG_RELIABILITY_PROFILE=quick`` for the quick profile, ``full`` by default).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from skydag.localcloud.eventbridge import LocalRule, Matched
from skydag.localcloud.hooks import Deliveries, Delivery
from skydag.localcloud.sources import Invoker, StreamSource
from skydag.spec.models import TriggerRule

from .faults import (
    MAX_CALL_INDEX,
    CallStatus,
    FaultInjector,
    FaultRates,
    StaleReads,
    best_effort_rules,
    botocore_hook,
    throttle_code,
    throttle_codes,
    throttle_error,
)
from .invariants import check_outcome, compare, dispatch_token
from .recorder import JobCalls, dispatch_tokens
from .scenario import acts_of, build_scenario
from .simulator import Outcome, route_held_stream_records
from .sweep import Plan, SeedResult, run_seeds

# Seeds of the quick sweep (the rotating scenario: 3 and 24 play the shape DAGs, 55 ops,
# 5 svc): together they inject every kind of fault, cover every trigger rule and every
# service (checked below).
QUICK_SEEDS = (3, 5, 24, 55)
MORE_SEEDS = int(os.environ.get("SKYDAG_RELIABILITY_SEEDS") or 0)


# --------------------------------------------------------------------------- the parts


def test_a_seed_always_builds_the_same_scenario() -> None:
    first, again = build_scenario(11), build_scenario(11)
    assert first.dags == again.dags
    assert first.scripts == again.scripts
    assert build_scenario(12).dags != first.dags


def test_scenarios_cover_every_trigger_rule_shape_and_service() -> None:
    rules: set[str] = set()
    kinds: set[str] = set()
    dags: set[str] = set()
    for seed in range(1, 21):
        scenario = build_scenario(seed)
        rules |= scenario.rules
        kinds |= set(scenario.kinds.values())
        dags |= set(scenario.dags)
        assert scenario.max_active_runs[next(iter(scenario.dags))] == 1
    assert rules == {rule.value for rule in TriggerRule}
    assert {"batch", "ecs", "lambda", "stepfunctions", "emr", "emr_serverless", "wait"} <= kinds
    assert dags == {"chain", "fan", "diamond", "ops", "svc"}


def test_the_rotating_scenario_plays_one_act_a_seed_and_covers_everything_across_seeds() -> None:
    rules: set[str] = set()
    kinds: set[str] = set()
    dags: set[str] = set()
    for seed in range(1, 31):
        scenario = build_scenario(seed, shapes=1, size="rotate")
        rules |= scenario.rules
        kinds |= set(scenario.kinds.values())
        dags |= set(scenario.dags)
        act = acts_of(seed, "rotate")
        assert len(act) == 1
        assert (act == ("ops",)) == ("ops" in scenario.dags)
        assert (act == ("svc",)) == ("svc" in scenario.dags)
    assert rules == {rule.value for rule in TriggerRule}
    assert {"batch", "ecs", "lambda", "stepfunctions", "emr", "emr_serverless", "wait"} <= kinds
    assert dags == {"chain", "fan", "diamond", "ops", "svc"}


def _matched(rule: str, detail_type: str, detail: dict[str, Any]) -> Delivery:
    event = {"source": "aws.test", "detail-type": detail_type, "detail": detail, "id": "x"}
    return Delivery(f"rule:{rule}", Matched(LocalRule(rule, "default", {}, "q"), event))


def test_a_delivery_meets_the_same_fate_whatever_the_order() -> None:
    rates = FaultRates(
        duplicate={"rule": 0.5},
        delay={"rule": 0.5},
        max_delay=1.0,
        drop_best_effort=0.5,
        crash=0.0,
        throttle=0.0,
    )
    rule = sorted(best_effort_rules())[0]
    deliveries = [
        _matched(rule, "State Change", {"name": f"skydag-x-{n}", "state": "COMPLETED"})
        for n in range(20)
    ]

    def fates(order: Sequence[Delivery], seed: int = 5) -> dict[str, list[float]]:
        injector = FaultInjector(rates, seed=seed)
        injector.arm()
        return {
            d.payload.event["detail"]["name"]: [delay for delay, _ in injector.tap(d)]
            for d in order
        }

    forward = fates(deliveries)
    assert forward == fates(list(reversed(deliveries)))
    assert {len(f) for f in forward.values()} == {0, 1, 2}  # dropped, once, twice
    assert forward != fates(deliveries, seed=6)


def test_nothing_is_injected_before_the_injector_is_armed() -> None:
    rates = FaultRates({"rule": 1.0}, {"rule": 1.0}, 1.0, 1.0, 1.0, 0.0)
    injector = FaultInjector(rates, seed=1)
    delivery = _matched(sorted(best_effort_rules())[0], "x", {})
    assert injector.tap(delivery) == [(0.0, delivery)]
    assert injector.plan("Scheduler", {"Records": [{"messageId": "m", "body": "{}"}]}) is None
    assert not injector.counts


def test_a_delivery_takes_at_most_its_fault_budget() -> None:
    rates = FaultRates({}, {}, 1.0, 0.0, crash=1.0, throttle=0.0, max_faults_per_delivery=2)
    injector = FaultInjector(rates, seed=1)
    injector.arm()
    event = {"Records": [{"messageId": "m1", "body": '{"detail-type": "x"}'}]}
    plans = [injector.plan("Scheduler", event) for _ in range(4)]
    assert [plan is not None for plan in plans] == [True, True, False, False]


def _item(task: str, version: int) -> dict[str, Any]:
    return {"run_key": {"S": "d#r"}, "task_id": {"S": task}, "version": {"N": str(version)}}


def _batch_get(tasks: Sequence[str], consistent: bool) -> dict[str, Any]:
    keys = [{"run_key": {"S": "d#r"}, "task_id": {"S": task}} for task in tasks]
    return {"RequestItems": {"tis": {"Keys": keys, "ConsistentRead": consistent}}}


def test_an_eventually_consistent_read_may_be_served_an_earlier_version_never_a_strong_one() -> (
    None
):
    counts: Counter[str] = Counter()
    stale = StaleReads(1.0, seed=7, count=lambda kind: counts.update([kind]))
    stale.armed = True
    # Seen: "a" missing, then at versions 1 and 2 (a read, then an update's new image).
    stale.after_call("BatchGetItem", _batch_get(["a"], True), {"Responses": {"tis": []}})
    stale.after_call(
        "BatchGetItem", _batch_get(["a"], True), {"Responses": {"tis": [_item("a", 1)]}}
    )
    key = {"run_key": {"S": "d#r"}, "task_id": {"S": "a"}}
    update = {"TableName": "tis", "Key": key, "ReturnValues": "ALL_NEW"}
    stale.after_call("UpdateItem", update, {"Attributes": _item("a", 2)})
    # A strong read gets what the table holds.
    strong = {"Responses": {"tis": [_item("a", 3)]}}
    stale.after_call("BatchGetItem", _batch_get(["a"], True), strong)
    assert strong == {"Responses": {"tis": [_item("a", 3)]}}
    assert not counts
    # An eventually consistent one, at rate 1, an earlier version (or none: it was missing).
    served: set[int | None] = set()
    for _ in range(40):
        response = {"Responses": {"tis": [_item("a", 3)]}}
        stale.after_call("BatchGetItem", _batch_get(["a"], False), response)
        items = response["Responses"]["tis"]
        served.add(int(items[0]["version"]["N"]) if items else None)
        single = {"Item": _item("a", 3)}
        stale.after_call("GetItem", {"TableName": "tis", "Key": key}, single)
        served.add(int(single["Item"]["version"]["N"]) if "Item" in single else None)
    assert served == {None, 1, 2}
    assert counts == {"stale:tis": 80}
    # Nothing earlier is known of an item seen once: it is served as it is.
    fresh = {"Responses": {"tis": [_item("b", 1)]}}
    stale.after_call("BatchGetItem", _batch_get(["b"], False), fresh)
    assert fresh == {"Responses": {"tis": [_item("b", 1)]}}


def test_throttles_include_every_dynamodb_kind_and_are_counted_by_code() -> None:
    rolls = [n / 12 for n in range(12)]
    write = {throttle_code("dynamodb", "UpdateItem", roll) for roll in rolls}
    assert write == {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "TransactionConflictException",
    }
    read = {throttle_code("dynamodb", "GetItem", roll) for roll in rolls}
    assert read == {"ProvisionedThroughputExceededException", "ThrottlingException"}
    assert "TransactionCanceledException" in throttle_codes("dynamodb", "TransactWriteItems")
    cancelled = throttle_error("TransactionCanceledException", "TransactWriteItems")
    assert cancelled["CancellationReasons"][0]["Code"] == "TransactionConflict"
    assert throttle_codes("lambda", "Invoke") == ("TooManyRequestsException",)
    # Through the injector, each throttle is counted by function and error code.
    rates = FaultRates({}, {}, 1.0, 0.0, crash=0.0, throttle=1.0, max_faults_per_delivery=99)
    injector = FaultInjector(rates, seed=3)
    injector.arm()
    codes: Counter[str] = Counter()
    for n in range(60):
        event = {"Records": [{"messageId": f"m{n}", "body": f'{{"detail-type": "{n}"}}'}]}
        assert injector.plan("Scheduler", event) is None  # a throttle, not a crash
        for _ in range(MAX_CALL_INDEX):
            code = injector.throttle_now("dynamodb", "UpdateItem")
            if code is not None:
                codes[code] += 1
    assert set(codes) == write
    assert {f"throttle:Scheduler:{code}": n for code, n in codes.items()} == dict(injector.counts)


def test_the_botocore_hook_refuses_a_call_with_the_code_given() -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",  # never reached: the hook refuses first
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}),
    )
    status = CallStatus()
    refuse = botocore_hook(lambda service, operation: "TransactionConflictException", status)
    with refuse, pytest.raises(ClientError) as refused:
        client.update_item(TableName="t", Key={"pk": {"S": "k"}})
    assert refused.value.response["Error"]["Code"] == "TransactionConflictException"
    assert status.last == 400


def test_jobs_are_counted_by_the_dispatch_token_in_their_name_or_payload() -> None:
    token = "0123456789abcdef0123456789abcdef"
    name = f"skydag-etl-load-{token}"
    calls = {
        ("batch", "SubmitJob"): {"jobName": name},
        ("ecs", "RunTask"): {"startedBy": name},
        ("states", "StartExecution"): {"name": name},
        ("lambda", "Invoke"): {"skydag": {"token": token}},
        ("elasticmapreduce", "AddJobFlowSteps"): {"Steps": [{"Name": name}]},
        ("emr-serverless", "StartJobRun"): {"name": name},
    }
    for (service, operation), body in calls.items():
        assert dispatch_tokens(service, operation, body) == [token], operation
    assert dispatch_tokens("batch", "ListJobs", {"jobName": name}) == []
    status = CallStatus()
    recorder = JobCalls(status)
    status.set(200, {"executionArn": "arn:1"})
    recorder("states", "StartExecution", {"name": name})
    status.set(200, {"executionArn": "arn:1"})  # the running execution, answered again
    recorder("states", "StartExecution", {"name": name})
    status.set(400, {"Error": {"Code": "ExecutionAlreadyExists"}})  # refused: no job
    recorder("states", "StartExecution", {"name": name})
    assert recorder.jobs == {token: {"arn:1"}}
    status.set(200, {"jobId": "job-2"})  # a second Batch job for the same try
    recorder("batch", "SubmitJob", {"jobName": name})
    assert recorder.jobs == {token: {"arn:1", "job-2"}}


def _outcome(faulty: bool, **fields: Any) -> Outcome:
    outcome = Outcome(seed=1, faulty=faulty)
    for name, value in fields.items():
        setattr(outcome, name, value)
    return outcome


def test_the_invariants_catch_a_second_job_a_stuck_task_and_a_different_end() -> None:
    scenario = build_scenario(1)
    dag_id, task_id = next(key for key, kind in scenario.kinds.items() if kind == "batch")
    run_id = next(run for dag, run in scenario.runs if dag == dag_id)
    key = f"{dag_id}/{run_id}/{task_id}"
    token = dispatch_token(dag_id, run_id, task_id, 1)
    good = _outcome(
        False,
        runs={f"{dag_id}/{run_id}": "success"},
        tasks={key: ("success", 1)},
        tries={key: [(1, "success", "job-1", None)]},
        jobs={token: 1},
        restarts={"/".join(k): n for k, n in scenario.restarts.items()},
    )
    assert check_outcome(scenario, good) == ([], 0)
    bad = _outcome(
        True,
        runs={f"{dag_id}/{run_id}": "running"},
        tasks={key: ("running", 1)},
        tries={key: [(1, "running", "job-1", None)]},
        jobs={token: 2},
        restarts={"/".join(k): n for k, n in scenario.restarts.items()},
        jobs_left=1,
    )
    found = {violation.invariant for violation in check_outcome(scenario, bad)[0]}
    assert found == {
        "one job per try",
        "every run finished",
        "no task stuck",
        "no orphaned job",
    }
    assert {v.invariant for v in compare(good, bad)} == {"same final states as the oracle"}
    # A second Invoke after a crash right after the first is Lambda's documented behaviour.
    lambda_retry = dataclasses.replace(good, jobs={token: 2}, crashed_invokes={token: 1})
    assert check_outcome(scenario, lambda_retry) == ([], 1)


class _Streams:
    """DynamoDB Streams with one shard per stream and the records given."""

    def __init__(self, records: dict[str, list[dict[str, Any]]]) -> None:
        self.records = records

    def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
        return {"StreamDescription": {"Shards": [{"ShardId": "shard-1"}]}}

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        return {"ShardIterator": kwargs["StreamArn"]}

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        arn = kwargs["ShardIterator"]
        return {"Records": self.records.pop(arn, []), "NextShardIterator": arn}


def _two_streams_with_delayed_records(route: bool) -> list[str]:
    """One record on each of two streams, both delayed by the tap; the items handled."""
    arns = [
        "arn:aws:dynamodb:us-east-1:1:table/runs/stream/1",
        "arn:aws:dynamodb:us-east-1:1:table/tis/stream/1",
    ]
    records = {
        arn: [
            {
                "eventID": arn,
                "eventName": "MODIFY",
                "dynamodb": {"SequenceNumber": "1", "ApproximateCreationDateTime": time.time()},
            }
        ]
        for arn in arns
    }
    clock = [0.0]
    deliveries = Deliveries(lambda delivery: [(1.0, delivery)], clock=lambda: clock[0])
    handled: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        handled.extend(record["eventSourceARN"] for record in event["Records"])
        return {"batchItemFailures": []}

    source = StreamSource(
        function="StreamProcessor",
        handler=handler,
        streams=_Streams(records),
        stream_arns=arns,
        batch_size=25,
        bisect_on_error=True,
        retry_attempts=5,
        max_record_age=21600.0,
        timeout=120.0,
        invoker=Invoker("123456789012", "us-east-1"),
        deliveries=deliveries,
        on_failure=lambda message: None,
    )
    if route:
        route_held_stream_records(source, deliveries)
    source.poll()  # both records read, both held by the tap
    clock[0] = 2.0
    source.poll()
    source.poll()
    return sorted(handled)


@pytest.mark.xfail(
    strict=True,
    reason="local cloud bug: StreamSource._fetch drains the held records of every shard "
    "and keeps only its own (simulator.route_held_stream_records works around it)",
)
def test_a_delayed_stream_record_reaches_its_own_shard() -> None:
    assert len(_two_streams_with_delayed_records(route=False)) == 2


def test_the_simulator_routes_delayed_stream_records_to_their_shard() -> None:
    assert len(_two_streams_with_delayed_records(route=True)) == 2


# --------------------------------------------------------------------------- the sweeps


def _failures(results: Sequence[SeedResult]) -> str:
    return "\n".join(v.describe() for result in results for v in result.violations)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each run's local cloud log goes (the evidence of a failure)."""
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def quick_sweep(logs: Path) -> dict[int, SeedResult]:
    plan = Plan(profile="full", log_dir=logs)
    return {result.seed: result for result in run_seeds(QUICK_SEEDS, jobs=2, plan=plan)}


@pytest.mark.parametrize("seed", QUICK_SEEDS)
def test_a_seed_keeps_every_invariant(
    quick_sweep: dict[int, SeedResult], logs: Path, seed: int
) -> None:
    result = quick_sweep[seed]
    assert result.ok, (
        f"rerun: python -m tests.reliability --profile quick --seed {seed}; "
        f"logs: {logs}/seed-{seed}-*.log\n{_failures([result])}"
    )


def test_the_quick_sweep_injects_every_kind_of_fault_and_covers_every_rule(
    quick_sweep: dict[int, SeedResult],
) -> None:
    faults: Counter[str] = Counter()
    rules: set[str] = set()
    for result in quick_sweep.values():
        faults.update(result.faults)
        rules |= result.rules
    kinds = {name.split(":")[0] for name, count in faults.items() if count}
    assert kinds == {"duplicate", "delay", "drop", "crash", "throttle", "stale"}, faults
    channels = {name for name in faults if name.startswith(("duplicate:", "delay:"))}
    # Every task's events: rules, the scheduler invoked with a job's end, the streams.
    per_task = ("rule", "invoke", "stream")
    assert {f"{fault}:{c}" for fault in ("duplicate", "delay") for c in per_task} <= channels
    # The queue carries a run's commands and signals: fewer deliveries, faulted too.
    assert {"duplicate:sqs", "delay:sqs"} & channels
    assert rules == {rule.value for rule in TriggerRule}


@pytest.mark.skipif(not MORE_SEEDS, reason="set SKYDAG_RELIABILITY_SEEDS=N to run seeds 1..N")
def test_more_seeds_keep_every_invariant(logs: Path) -> None:
    profile = os.environ.get("SKYDAG_RELIABILITY_PROFILE", "full")
    plan = Plan(profile=profile, log_dir=logs)
    results = list(run_seeds(range(1, MORE_SEEDS + 1), jobs=2, plan=plan))
    assert all(result.ok for result in results), f"logs: {logs}\n{_failures(results)}"


def test_a_soak_stopped_early_summarizes_the_seeds_done_and_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from . import soak

    def two_seeds_then_ctrl_c(seeds: Sequence[int], **_: Any) -> Any:
        for seed in list(seeds)[:2]:
            yield SeedResult(seed, faults=Counter({"crash:Scheduler": 3}), aws_calls=100)
        raise KeyboardInterrupt

    monkeypatch.setattr(soak, "run_seeds", two_seeds_then_ctrl_c)
    code = soak.main(["--seeds", "10", "--first", "41", "--logs", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 130
    assert "seeds run: 2 (41-42)" in out
    assert "crash:Scheduler" in out
    assert "invariant violations: 0" in out
    assert (
        "stopped early after 2 of 10 seeds; resume with: "
        "python -m tests.reliability --seeds 8 --first 43"
    ) in out
