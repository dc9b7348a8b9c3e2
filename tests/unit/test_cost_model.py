"""The cost model (benchmarks/cost.py) cannot drift silently: AWS's billing units and
rounding, and a known sequence of calls priced to a known number."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_cost() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cost", ROOT / "benchmarks" / "cost.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cost", module)
    spec.loader.exec_module(module)
    return module


cost = _load_cost()


@pytest.mark.parametrize(
    ("item", "size"),
    [
        ({"pk": {"S": "abc"}}, 2 + 3),
        ({"n": {"N": "12345"}}, 1 + 3 + 1),  # 5 digits -> 3 bytes, +1
        ({"n": {"N": "-0.0012300"}}, 1 + 2 + 1),  # 123: zeros trimmed
        ({"b": {"BOOL": True}, "z": {"NULL": True}}, 1 + 1 + 1 + 1),
        ({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}, 1 + 3 + (1 + 2) + (1 + 2)),
        ({"m": {"M": {"k": {"S": "v"}}}}, 1 + 3 + 1 + 1 + 1),
        ({"s": {"SS": ["a", "bc"]}}, 1 + 3),
        ({"é": {"S": "é"}}, 2 + 2),  # UTF-8 bytes
    ],
)
def test_item_sizes_follow_dynamodb_rules(item: dict[str, dict[str, object]], size: int) -> None:
    assert cost.item_size(item) == size


def test_units_round_up_per_request() -> None:
    assert cost.write_units(0) == 1
    assert cost.write_units(1024) == 1
    assert cost.write_units(1025) == 2
    assert cost.write_units(1025, transactional=True) == 4
    assert cost.read_units(4096, consistent=True) == 1
    assert cost.read_units(4097, consistent=True) == 2
    assert cost.read_units(4097, consistent=False) == 1
    assert cost.read_units(10, consistent=False) == 0.5
    assert cost.chunks_64k(1) == 1
    assert cost.chunks_64k(64 * 1024 + 1) == 2


def test_event_entry_size_counts_what_eventbridge_counts() -> None:
    entry = {"Source": "skydag", "DetailType": "x", "Detail": "{}", "Resources": ["arn:a"]}
    assert cost.event_entry_size(entry) == 6 + 1 + 2 + 5
    assert cost.event_entry_size({**entry, "Time": "2026-01-01T00:00:00Z"}) == 14 + 14


def test_a_known_sequence_of_calls_prices_to_a_known_number() -> None:
    usage = cost.Usage()
    # A task: 3 writes of a 1.5 KB item and a projected index entry, 2 strongly consistent
    # reads, 1 event, 2 SQS requests, 2 invocations of 100 ms at 512 MB, 10 KB of logs.
    for _ in range(3):
        usage.add("dynamodb.wru", cost.write_units(1536), "StreamProcessor", "c", "UpdateItem")
    usage.add("dynamodb.wru", 1, "StreamProcessor", "c", "UpdateItem", "GSI")
    usage.add("dynamodb.rru", 2 * cost.read_units(1536, consistent=True), "Scheduler", "c")
    usage.add("events.custom", 1, "StreamProcessor", "c", "PutEvents")
    usage.add("sqs.requests", 2, "Scheduler", "c")
    usage.add("lambda.requests", 2, "Scheduler", "c")
    usage.add("lambda.gb_s", 2 * 0.1 * 0.5, "Scheduler", "c")
    usage.add("logs.gb", 10_000 / 1e9, "Scheduler", "c")
    usage.add("xray.traces", 2 * cost.XRAY_SAMPLED, "Scheduler", "c")
    expected = (
        7 * 0.625  # write units
        + 2 * 0.125  # read units
        + 1 * 1.00  # custom event
        + 2 * 0.40  # SQS
        + 2 * 0.20  # Lambda requests
        + 0.1 * 13.3334  # GB-seconds: 0.1 GB-s at $0.0000133334
        + 10 * 0.50  # 10 KB of logs per task: 10 GB per million tasks
        + 0.1 * 5.00  # traces
    )
    assert cost.per_million(usage.dollars(), 1) == pytest.approx(expected)
    assert cost.per_million(usage.dollars(), 1) == pytest.approx(13.6583, abs=1e-4)
    components = usage.by(depth=0)
    assert components[("DynamoDB",)] == pytest.approx((7 * 0.625 + 0.25) / 1e6)


def test_alternatives() -> None:
    assert cost.step_functions_per_million("chain", 50) == pytest.approx(25.0)
    assert cost.step_functions_per_million("diamond", 100, runs=20) == pytest.approx(30.0)
    assert cost.mwaa_per_million() == pytest.approx(1176.0)


def test_unknown_meters_are_refused() -> None:
    with pytest.raises(KeyError):
        cost.Usage().add("dynamodb.wcu", 1)


def test_path_latency_adds_the_hops_and_their_cpu() -> None:
    hops = [cost.Hop("sqs", 3, 0, cpu_ms=40.0), cost.Hop("stream", 2, 1, cpu_ms=7.5)]
    table = {name: ms for name, (ms, _) in cost.LATENCY_P50_MS.items()}
    expected = (
        table["eventbridge_to_sqs"]
        + table["sqs_to_lambda"]
        + 1000
        + table["stream_to_lambda"]
        + 2 * table["lambda_invoke"]
        + 47.5
        + 5 * table["dynamodb_call"]
        + table["other_call"]
    )
    assert cost.path_latency_ms(hops, 1.0) == pytest.approx(expected)


def test_cpu_on_aws_stretches_to_the_functions_share() -> None:
    # 10 ms on a full core takes 1769/512 times as long at 512 MB; no faster above 1769.
    assert cost.cpu_on_aws_ms(0.010, 512) == pytest.approx(10 * 1769 / 512)
    assert cost.cpu_on_aws_ms(0.010, 3008) == pytest.approx(10.0)


def test_billed_duration_stretches_cpu_to_the_functions_share_and_adds_each_call() -> None:
    # 10 ms of CPU on a full core at 512 MB (512/1769 of a vCPU), 3 DynamoDB calls at 6 ms
    # and one other call at 25 ms, waited for in turn.
    billed = cost.lambda_billed_seconds(0.010, 512, dynamodb_calls=3, other_calls=1)
    assert billed == pytest.approx(0.010 * 1769 / 512 + 0.018 + 0.025)
    # From 1,769 MB a function has a whole vCPU: more memory does not make it faster.
    assert cost.lambda_billed_seconds(0.010, 3538, dynamodb_calls=0, other_calls=0) == (
        pytest.approx(0.010)
    )


def test_lambdas_own_log_lines_are_priced_at_the_stacks_system_log_level() -> None:
    from skydag.wiring import SYSTEM_LOG_LEVEL_BY_DEFAULT

    expected = 0 if SYSTEM_LOG_LEVEL_BY_DEFAULT == "WARN" else cost.PLATFORM_LOG_BYTES_AT_INFO
    assert expected == cost.PLATFORM_LOG_BYTES


def test_an_invocation_is_billed_to_the_millisecond_up_and_one_at_least() -> None:
    assert cost.billed_gb_seconds(0.0001, 512) == pytest.approx(0.001 * 0.5)
    assert cost.billed_gb_seconds(0.0104, 1024) == pytest.approx(0.011)
    assert cost.billed_gb_seconds(0.010, 2048) == pytest.approx(0.020)


def test_below_a_full_vcpu_only_the_waits_cost_in_proportion_to_memory() -> None:
    """What the bench's memory table rests on: CPU time stretches with the CPU share, so
    its GB-seconds do not change with the size; each call's wait costs with it."""

    def gb_s(memory: int, *, cpu: float, calls: int) -> float:
        seconds = cost.lambda_billed_seconds(cpu, memory, dynamodb_calls=calls, other_calls=0)
        return float(cost.billed_gb_seconds(seconds, memory))

    cpu_only = [gb_s(m, cpu=0.05, calls=0) for m in (256, 512, 1024)]
    assert cpu_only == pytest.approx([cpu_only[0]] * 3, rel=0.02)
    waits = [gb_s(m, cpu=0.0, calls=10) for m in (256, 512, 1024)]
    assert waits == pytest.approx([waits[0], 2 * waits[0], 4 * waits[0]], rel=0.02)
    assert max(cost.MEMORY_CHOICES_MB) == cost.FULL_VCPU_MB
