"""Who may feed skydag: the bus policy by source, the queue policies by sender."""

from __future__ import annotations

from typing import Any

import pytest
from infra_synth import OPERATORS, Synthesized
from skydag_infra.construct import ENGINE_FUNCTIONS, _principal_arns

from skydag import wiring
from skydag.sources import COMMAND_SOURCE, DAG_SOURCE_PREFIX, SCHEDULER_SOURCE, SKYDAG_SOURCE


def _arn(synth: Synthesized, construct: Any) -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def _bus_denials(synth: Synthesized) -> dict[str, dict[str, Any]]:
    """Source pattern -> the Deny statement that keeps it to its senders."""
    policy = synth.resource(synth.skydag.event_bus)["Properties"]["Policy"]
    denials: dict[str, dict[str, Any]] = {}
    for statement in policy["Statement"]:
        if statement["Effect"] == "Deny":
            assert statement["Principal"] == {"AWS": "*"}
            assert statement["Action"] == "events:PutEvents"
            source = statement["Condition"]["StringLike"]["events:source"]
            assert source not in denials, source
            denials[source] = statement
    return denials


def _exempt(statement: dict[str, Any]) -> list[Any]:
    return list(statement["Condition"].get("ArnNotLike", {}).get("aws:PrincipalArn", []))


def test_every_source_of_skydag_is_kept_to_its_senders(synth: Synthesized) -> None:
    skydag = synth.skydag
    roles = {name: _arn(synth, role) for name, role in skydag.roles.items()}
    engine = [roles[name] for name in ENGINE_FUNCTIONS]
    loader = roles[wiring.DAG_LOADER.id]
    expected = {
        SKYDAG_SOURCE: [loader, *engine],
        SCHEDULER_SOURCE: [_arn(synth, skydag.scheduler_role), loader],
        f"{DAG_SOURCE_PREFIX}*": engine,
        COMMAND_SOURCE: OPERATORS,
    }

    denials = _bus_denials(synth)

    assert sorted(denials) == sorted(expected)
    for source, senders in expected.items():
        assert _exempt(denials[source]) == senders, source


def test_no_function_may_send_commands(synth: Synthesized) -> None:
    exempt = _exempt(_bus_denials(synth)[COMMAND_SOURCE])
    for role in (*synth.skydag.roles.values(), synth.skydag.scheduler_role):
        assert _arn(synth, role) not in exempt


def test_the_account_may_put_any_other_event(synth: Synthesized) -> None:
    policy = synth.resource(synth.skydag.event_bus)["Properties"]["Policy"]
    (allow,) = (s for s in policy["Statement"] if s["Effect"] == "Allow")
    assert allow["Sid"] == "AccountMayPutEvents"
    assert allow["Action"] == "events:PutEvents"
    assert "Condition" not in allow


def _queue_denial(synth: Synthesized, queue_id: str) -> dict[str, Any]:
    queue = synth.skydag.queues[queue_id]
    (policy,) = (
        p["Properties"]["PolicyDocument"]
        for p in synth.resources("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": synth.logical_id(queue)}]
    )
    (denial,) = (s for s in policy["Statement"] if s.get("Sid") == "OnlySkydagSends")
    assert denial["Effect"] == "Deny"
    assert denial["Principal"] == {"AWS": "*"}
    assert denial["Action"] == "sqs:SendMessage"
    return denial


def _expected_queue_senders(synth: Synthesized) -> dict[str, tuple[list[Any], list[Any]]]:
    """From skydag.wiring, independently of the construct's own derivation."""
    skydag = synth.skydag
    rule = {spec_id: _arn(synth, r) for spec_id, r in skydag.rules.items()}
    role = {name: _arn(synth, r) for name, r in skydag.roles.items()}
    to_queue = [
        rule[spec.id]
        for spec in skydag.rule_specs.values()
        if spec.target.resource == wiring.SCHEDULER_QUEUE
    ]
    # Job state changes and Lambda results invoke the scheduler: their rules put what they
    # failed to deliver in the same dead-letter queue.
    to_scheduler = [
        rule[spec.id]
        for spec in skydag.rule_specs.values()
        if spec.target.resource in (wiring.SCHEDULER_QUEUE, wiring.SCHEDULER)
    ]
    # The dag loader's forwarding rules (made at run time) deliver there too: AWS events
    # on the default bus (rule/<name>), skydag's on the skydag bus (rule/<bus>/<name>).
    forwarding = [
        synth.stack.resolve(
            synth.stack.format_arn(service="events", resource="rule", resource_name=name)
        )
        for name in (
            *wiring.aws_event_rule_names("skydag"),
            *(f"skydag/{name}" for name in wiring.skydag_event_rule_names("skydag")),
        )
    ]
    return {
        wiring.SCHEDULER_QUEUE.id: ([*to_queue, *forwarding], OPERATORS),
        wiring.EVENT_DELIVERY_DLQ.id: ([*to_scheduler, *forwarding], []),
        wiring.JOB_EVENTS_DLQ.id: ([], [role[wiring.SCHEDULER.id]]),
        wiring.DAG_LOADER_DLQ.id: ([rule["DagFilesRule"]], [role[wiring.DAG_LOADER.id]]),
        wiring.RECONCILER_DLQ.id: ([rule["ReconcileRule"]], [role[wiring.RECONCILER.id]]),
        wiring.STREAM_DLQ.id: ([], [role[wiring.STREAM_PROCESSOR.id]]),
        wiring.SCHEDULER_DLQ.id: ([_arn(synth, skydag.scheduler_queue)], []),
    }


@pytest.mark.parametrize("queue_id", [spec.id for spec in wiring.QUEUES])
def test_only_the_stacks_rules_and_roles_send_to_a_queue(synth: Synthesized, queue_id: str) -> None:
    sources, principals = _expected_queue_senders(synth)[queue_id]

    condition = _queue_denial(synth, queue_id)["Condition"]

    assert condition.get("ArnNotEquals", {}).get("aws:SourceArn", []) == sources
    if principals:
        assert condition["ArnNotLike"] == {"aws:PrincipalArn": principals}
    else:  # every IAM principal is denied
        assert condition["Null"] == {"aws:PrincipalArn": "false"}


def test_every_queue_is_covered() -> None:
    assert {spec.id for spec in wiring.QUEUES} == {
        wiring.SCHEDULER_QUEUE.id,
        *(spec.id for spec in wiring.DEAD_LETTER_QUEUES),
    }


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:sts::111122223333:assumed-role/admin/alice",  # a session, not the role
        "arn:aws:sqs:us-east-1:111122223333:queue",
        "admin",
    ],
)
def test_operators_must_be_iam_roles_or_users(arn: str) -> None:
    with pytest.raises(ValueError, match="operators"):
        _principal_arns([arn])
