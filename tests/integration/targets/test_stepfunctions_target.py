"""Step Functions target against moto: executions named after the try, describe, stop.

moto keeps executions RUNNING (its state-machine interpreter is off here): finished
executions are described through the Stubber.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from skydag.engine.models import JobStatus
from skydag.spec.models import StepFunctionsTarget
from skydag.targets.aws import MalformedEvent, StepFunctionsExecutions
from skydag.targets.aws.stepfunctions import execution_arn_for, parse_event
from skydag.targets.base import DispatchError, DispatchRequest, JobRef

MakeRequest = Callable[..., DispatchRequest]
JobRefFor = Callable[[DispatchRequest, str | None], JobRef]
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:etl-extract"


def sfn_target(state_machine_arn: str, **keys: Any) -> dict[str, Any]:
    block = StepFunctionsTarget(state_machine_arn=state_machine_arn, **keys)
    return block.model_dump(by_alias=True, mode="json")


@pytest.fixture
def sfn(mocked_aws: None, aws_client: Callable[[str], Any]) -> Any:
    return aws_client("stepfunctions")


@pytest.fixture
def machine(sfn: Any, aws_client: Callable[[str], Any]) -> str:
    role = aws_client("iam").create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")
    definition = {"StartAt": "Extract", "States": {"Extract": {"Type": "Pass", "End": True}}}
    arn: str = sfn.create_state_machine(
        name="etl-extract", definition=json.dumps(definition), roleArn=role["Role"]["Arn"]
    )["stateMachineArn"]
    return arn


def executions_of(client: Any, machine: str) -> list[dict[str, Any]]:
    executions: list[dict[str, Any]] = client.list_executions(stateMachineArn=machine)["executions"]
    return executions


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({"date": "2026-11-22"}, '{"date": "2026-11-22"}'),
        ('{"raw": true}', '{"raw": true}'),
        (None, "{}"),
    ],
)
def test_dispatch_starts_one_execution_named_after_the_try(
    sfn: Any, machine: str, make_request: MakeRequest, given: Any, sent: str
) -> None:
    request = make_request("stepfunctions", sfn_target(machine, input=given))

    result = StepFunctionsExecutions(sfn).dispatch(request)

    [execution] = executions_of(sfn, machine)
    assert execution["name"] == request.job_name
    assert result.job_id == execution["executionArn"]
    assert result.job_id == execution_arn_for(machine, request.job_name)
    assert sfn.describe_execution(executionArn=result.job_id)["input"] == sent


def test_dispatch_again_with_the_same_token_reattaches(
    sfn: Any, machine: str, make_request: MakeRequest
) -> None:
    request = make_request("stepfunctions", sfn_target(machine))
    first = StepFunctionsExecutions(sfn).dispatch(request)

    second = StepFunctionsExecutions(sfn).dispatch(request)

    assert second.job_id == first.job_id
    assert len(executions_of(sfn, machine)) == 1


def test_an_existing_execution_is_found_by_its_arn(
    aws_client: Callable[[str], Any], make_request: MakeRequest
) -> None:
    # AWS answers ExecutionAlreadyExists when the execution closed or the input differs.
    client = aws_client("stepfunctions")
    request = make_request("stepfunctions", sfn_target(MACHINE))
    arn = execution_arn_for(MACHINE, request.job_name)
    with Stubber(client) as stubber:
        stubber.add_client_error("start_execution", "ExecutionAlreadyExists", "exists", 400)
        stubber.add_response(
            "describe_execution",
            {
                "executionArn": arn,
                "stateMachineArn": MACHINE,
                "status": "SUCCEEDED",
                "startDate": datetime(2026, 11, 22, tzinfo=UTC),
            },
            {"executionArn": arn},
        )

        result = StepFunctionsExecutions(client).dispatch(request)

    assert result.job_id == arn


def test_a_new_try_starts_a_new_execution(
    sfn: Any, machine: str, make_request: MakeRequest
) -> None:
    first = StepFunctionsExecutions(sfn).dispatch(
        make_request("stepfunctions", sfn_target(machine))
    )
    second = StepFunctionsExecutions(sfn).dispatch(
        make_request("stepfunctions", sfn_target(machine), try_number=2)
    )

    assert second.job_id != first.job_id
    assert len(executions_of(sfn, machine)) == 2


def test_describe_by_job_id_and_by_token(
    sfn: Any, machine: str, make_request: MakeRequest, job_ref: JobRefFor
) -> None:
    request = make_request("stepfunctions", sfn_target(machine))
    executions = StepFunctionsExecutions(sfn)
    job_id = executions.dispatch(request).job_id

    by_id = executions.describe(job_ref(request, job_id))
    by_token = executions.describe(job_ref(request, None), target=request.target)

    assert by_id is not None
    assert by_id.status is JobStatus.RUNNING
    assert by_token == by_id
    assert (
        executions.describe(job_ref(request, execution_arn_for(machine, "never-started"))) is None
    )


@pytest.mark.parametrize(
    ("fields", "status", "reason", "output"),
    [
        ({"status": "SUCCEEDED", "output": '{"rows": 3}'}, JobStatus.SUCCEEDED, None, {"rows": 3}),
        ({"status": "SUCCEEDED", "output": "not json"}, JobStatus.SUCCEEDED, None, "not json"),
        (
            {"status": "FAILED", "error": "States.TaskFailed", "cause": "locked"},
            JobStatus.FAILED,
            "States.TaskFailed: locked",
            None,
        ),
        ({"status": "TIMED_OUT"}, JobStatus.FAILED, "execution timed out", None),
        (
            {"status": "ABORTED", "error": "skydag.Cancelled", "cause": "run cancelled"},
            JobStatus.STOPPED,
            "skydag.Cancelled: run cancelled",
            None,
        ),
    ],
)
def test_describe_a_finished_execution(
    aws_client: Callable[[str], Any],
    make_request: MakeRequest,
    job_ref: JobRefFor,
    fields: dict[str, Any],
    status: JobStatus,
    reason: str | None,
    output: Any,
) -> None:
    client = aws_client("stepfunctions")
    arn = execution_arn_for(MACHINE, "skydag-etl-extract-0123456789abcdef0123456789abcdef")
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_execution",
            {
                "executionArn": arn,
                "stateMachineArn": MACHINE,
                "startDate": datetime(2026, 11, 22, tzinfo=UTC),
                "stopDate": datetime(2026, 11, 22, 0, 30, tzinfo=UTC),
                **fields,
            },
        )

        described = StepFunctionsExecutions(client).describe(
            job_ref(make_request("stepfunctions", sfn_target(MACHINE)), arn)
        )

    assert described is not None
    assert (described.status, described.reason, described.output) == (status, reason, output)
    assert described.at == datetime(2026, 11, 22, 0, 30, tzinfo=UTC)


def test_cancel_stops_a_running_execution_once(
    sfn: Any,
    machine: str,
    make_request: MakeRequest,
    job_ref: JobRefFor,
    recorder: Callable[[Any], Any],
) -> None:
    request = make_request("stepfunctions", sfn_target(machine))
    executions = StepFunctionsExecutions(sfn)
    job = job_ref(request, executions.dispatch(request).job_id)
    calls = recorder(sfn)

    executions.cancel(job, "run cancelled by alice")
    executions.cancel(job, "run cancelled by alice")  # already stopped: nothing to do

    [stop] = calls.of("StopExecution")
    assert stop["error"] == "skydag.Cancelled"
    assert stop["cause"] == "run cancelled by alice"
    described = executions.describe(job)
    assert described is not None
    assert described.status is JobStatus.STOPPED


def test_execution_arns_drop_a_version_or_alias_qualifier() -> None:
    assert execution_arn_for(f"{MACHINE}:PROD", "run-1") == (
        "arn:aws:states:us-east-1:123456789012:execution:etl-extract:run-1"
    )


def test_a_target_that_is_not_a_state_machine_arn_is_refused(
    sfn: Any, make_request: MakeRequest
) -> None:
    with pytest.raises(DispatchError, match="not a state machine ARN") as raised:
        StepFunctionsExecutions(sfn).dispatch(
            make_request("stepfunctions", sfn_target("arn:aws:lambda:us-east-1:1:function:f"))
        )

    assert not raised.value.retryable


def test_throttling_is_retryable(
    failing_client: Callable[..., tuple[Any, Stubber]], make_request: MakeRequest
) -> None:
    client, _ = failing_client("stepfunctions", "start_execution", "ThrottlingException", 400)

    with pytest.raises(DispatchError) as raised:
        StepFunctionsExecutions(client).dispatch(make_request("stepfunctions", sfn_target(MACHINE)))

    assert raised.value.retryable


def test_a_missing_state_machine_is_not_retryable(sfn: Any, make_request: MakeRequest) -> None:
    with pytest.raises(DispatchError, match="StateMachineDoesNotExist") as raised:
        StepFunctionsExecutions(sfn).dispatch(make_request("stepfunctions", sfn_target(MACHINE)))

    assert not raised.value.retryable
    assert "stepfunctions StartExecution" in raised.value.reason


@pytest.mark.parametrize(
    ("name", "status", "reason", "output"),
    [
        ("sfn_execution_running", JobStatus.RUNNING, None, None),
        (
            "sfn_execution_succeeded",
            JobStatus.SUCCEEDED,
            None,
            {"rows": 120934, "location": "s3://etl-data/extract/2026-11-22/"},
        ),
        (
            "sfn_execution_failed",
            JobStatus.FAILED,
            "States.TaskFailed: Table orders is locked by another loader",
            None,
        ),
        (
            "sfn_execution_aborted",
            JobStatus.STOPPED,
            "skydag.Cancelled: run cancelled by alice",
            None,
        ),
        ("sfn_execution_timed_out", JobStatus.FAILED, "execution timed out", None),
    ],
)
def test_parse_event(
    load_event: Callable[..., dict[str, Any]],
    name: str,
    status: JobStatus,
    reason: str | None,
    output: Any,
) -> None:
    token = "0123456789abcdef0123456789abcdef"

    event = parse_event(load_event(name, token=token))

    assert event is not None
    assert (event.kind, event.status, event.token) == ("stepfunctions", status, token)
    assert event.job_id == execution_arn_for(MACHINE, f"skydag-etl-extract-{token}")
    assert (event.reason, event.output) == (reason, output)


def test_other_events_are_not_step_functions(load_event: Callable[..., dict[str, Any]]) -> None:
    redrive = load_event("sfn_execution_running")
    redrive["detail"]["status"] = "PENDING_REDRIVE"

    assert parse_event(redrive) is None
    assert parse_event(load_event("lambda_invocation_success")) is None


def test_a_malformed_event_is_a_clear_error(
    load_event: Callable[..., dict[str, Any]],
    without: Callable[[dict[str, Any], str], dict[str, Any]],
) -> None:
    with pytest.raises(MalformedEvent, match=r"detail\.status"):
        parse_event(without(load_event("sfn_execution_failed"), "status"))
