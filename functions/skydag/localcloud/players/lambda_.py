"""AWS Lambda, played: skydag's asynchronous invocations run locally and report through
the destination events Lambda would put on the skydag bus.

moto runs an invocation in Docker (or, configured without Docker, echoes the payload)
and has no asynchronous destinations. The player takes over every ``InvocationType=Event``
invocation whose payload carries ``skydag.token`` (the hook on moto's Invoke response):
moto answers 202 at once without running anything, and the invoke's request id (the
adapter's job id) is one the player chose. On ``poll()`` the try's ``local:`` block runs
through the runner; its end becomes "Lambda Function Invocation Result - Success" (the
response payload: the stand-in's ``local.output``) or "- Failure" on
``context.event_bus``, and the function's log group gets the START/END/REPORT lines
Lambda writes. Lambda has no RUNNING event, and an invocation cannot be stopped.
"""

from __future__ import annotations

import io
import json
import math
import time
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from skydag import joblogs
from skydag.localcloud.players._common import (
    MAX_STAND_IN_REVISION,
    HeldJobsPlayer,
    Stop,
    ensure_role,
    iso_milliseconds,
    numbers,
    output_text,
    rendered,
    write_local_log,
)
from skydag.localcloud.players.base import JobExit, LocalPlan, PlayerContext
from skydag.localcloud.players.runner import output_tail
from skydag.targets.aws.lambda_ import FAILURE, SOURCE, SUCCESS

KIND = "lambda"
LATEST = "$LATEST"
# The runtime's error when a function's process exits, as Lambda reports it.
EXIT_ERROR = "Runtime.ExitError"
STAND_IN_ROLE = "skydag-local-lambda"
STAND_IN_RUNTIME = "python3.12"
STAND_IN_HANDLER = "index.handler"
# How the invoke wrapper hands the request id it chose to the response (never sent).
_REQUEST_ID_HEADER = "x-skydag-request-id"


@dataclass(frozen=True)
class _Invocation:
    """An asynchronous invocation of a try's function, as the request thread saw it."""

    request_id: str
    token: str
    payload: Any
    function_name: str
    # The unqualified ARN, the qualifier invoked, the version that runs.
    function_arn: str
    qualifier: str
    version: str
    memory_mb: int
    held_at: float = field(default_factory=time.monotonic)
    # Lambda's results are found by their token (the payload names no map index).
    task_key: None = None

    @property
    def job_id(self) -> str:
        return self.request_id

    @property
    def invoked_arn(self) -> str:
        return f"{self.function_arn}:{self.qualifier}"


@dataclass
class _Played:
    invocation: _Invocation
    plan: LocalPlan


class LambdaPlayer(HeldJobsPlayer[_Invocation, Stop, _Played]):
    """Plays AWS Lambda's asynchronous invocations for the local cloud (see the module
    docstring); its jobs' ids are the invocations' request ids. An invocation cannot be
    stopped: no stop is ever recorded, and one no try claims is dropped (nothing to hand
    back to moto)."""

    kind = KIND
    title = "the Lambda player"

    # --- install ----------------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.awslambda.responses import LambdaResponse

        self._attach(context, runner)
        invoke = LambdaResponse.invoke
        call_action = LambdaResponse.call_action

        def invoke_for_tries(response: Any) -> Any:
            payload, token = _try_payload(response.body, response.headers)
            if token is None:
                return invoke(response)
            # moto's own invoke loses the Qualifier (it reads a lower-case parameter).
            qualifier = (response.querystring.get("Qualifier") or [None])[0]
            name, named = _name_and_qualifier(unquote(response.path.rsplit("/", 2)[-2]))
            qualifier = qualifier or named
            # An unknown function or qualifier fails as moto fails it.
            function = response.backend.get_function(name, qualifier)
            invocation = self._record(function, qualifier, payload, token)
            headers = {
                "status": 202,
                "content-type": "application/json",
                _REQUEST_ID_HEADER: invocation.request_id,
            }
            return 202, headers, b""

        def call_action_with_request_id(response: Any) -> Any:
            status, headers, body = call_action(response)
            # moto sets a random request id after the invoke returned; a played invocation
            # answers with the one the player recorded.
            request_id = headers.pop(_REQUEST_ID_HEADER, None)
            if request_id is not None:
                headers["x-amzn-requestid"] = request_id
            return status, headers, body

        self._patches.replace(LambdaResponse, "invoke", invoke_for_tries)
        self._patches.replace(LambdaResponse, "call_action", call_action_with_request_id)

    def _record(
        self, function: Any, qualifier: str | None, payload: Any, token: str
    ) -> _Invocation:
        invocation = _Invocation(
            request_id=str(uuid.uuid4()),
            token=token,
            payload=payload,
            function_name=str(function.function_name),
            function_arn=":".join(str(function.function_arn).split(":")[:7]),
            qualifier=qualifier or LATEST,
            version=str(function.version),
            memory_mb=int(getattr(function, "memory_size", 128) or 128),
        )
        self._hold(invocation)
        return invocation

    # --- poll ---------------------------------------------------------------------------

    def _play(self, held: _Invocation, plan: LocalPlan, stop: Stop | None) -> int:
        self._played[held.request_id] = _Played(held, plan)
        self._say(f"{held.function_name} invoked (request {held.request_id})")
        self._run(held.request_id, plan)
        return 1

    def _end(self, played: _Played, exit_: JobExit) -> None:
        context = self.context
        invocation = played.invocation
        ended = exit_.ended_at or datetime.now(UTC)
        succeeded = exit_.exit_code == 0 and exit_.stopped is None
        error = None if succeeded else _error(invocation, exit_)
        stream = self._write_logs(played, exit_, error)
        detail = {
            "version": "1.0",
            "timestamp": iso_milliseconds(ended),
            "requestContext": {
                "requestId": invocation.request_id,
                "functionArn": invocation.invoked_arn,
                "condition": "Success" if succeeded else "RetriesExhausted",
                # The player runs an invocation once; Lambda's retries are not played.
                "approximateInvokeCount": 1,
            },
            "requestPayload": invocation.payload,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": invocation.version,
                **({} if succeeded else {"functionError": "Unhandled"}),
            },
            "responsePayload": exit_.output if succeeded else error,
        }
        context.put_event(
            SOURCE,
            SUCCESS if succeeded else FAILURE,
            detail,
            resources=[_bus_arn(context), invocation.invoked_arn],
            time=ended,
            bus=context.event_bus,
        )
        name = f"{invocation.function_name} (request {invocation.request_id})"
        if error is None:
            context.say(KIND, f"{name} succeeded")
            return
        where = str(exit_.log_path) if exit_.log_path else f"{stream[0]} {stream[1]}"
        context.say(
            KIND,
            f"{name} failed: {error['errorType']}: {error['errorMessage']}; "
            f"exit code {exit_.exit_code}; log {where}",
        )

    def _write_logs(
        self, played: _Played, exit_: JobExit, error: Mapping[str, Any] | None
    ) -> tuple[str, str]:
        """The output in the local stream, and in the function's log group framed as
        Lambda frames an invocation; returns that (group, stream)."""
        context = self.context
        invocation = played.invocation
        # Without its last newline: the lines below frame the output.
        text = output_text(exit_).rstrip("\n")
        write_local_log(context, played.plan, text)
        started = exit_.started_at or datetime.now(UTC)
        ended = exit_.ended_at or started
        milliseconds = (ended - started).total_seconds() * 1000
        rid = invocation.request_id
        lines = [f"START RequestId: {rid} Version: {invocation.version}", text]
        if error is not None:
            lines.append(f"RequestId: {rid} Error: {error['errorMessage']}\n{error['errorType']}")
        lines += [
            f"END RequestId: {rid}",
            f"REPORT RequestId: {rid}\tDuration: {milliseconds:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(milliseconds))} ms\t"
            f"Memory Size: {invocation.memory_mb} MB",
        ]
        group = joblogs.lambda_log_group(invocation.function_name)
        stream = f"{started:%Y/%m/%d}/[{invocation.version}]{uuid.uuid4().hex}"
        context.write_log(group, stream, "\n".join(lines))
        return group, stream

    # --- stand-ins ----------------------------------------------------------------------

    def ensure_resources(self, target: Mapping[str, Any]) -> list[str]:
        function = rendered(target.get("function_name"))
        if function is None:
            return []
        name, qualifier = _name_and_qualifier(function)
        qualifier = rendered(target.get("qualifier")) or qualifier
        created = self._ensure_function(name)
        if qualifier and qualifier != LATEST:
            created += self._ensure_qualifier(name, qualifier)
        return created

    def _ensure_function(self, name: str) -> list[str]:
        client = self._client("lambda")
        try:
            client.get_function(FunctionName=name)
        except client.exceptions.ResourceNotFoundException:
            pass
        else:
            return []
        created: list[str] = []
        role = ensure_role(
            self.context, STAND_IN_ROLE, "lambda.amazonaws.com", "Lambda execution role", created
        )
        client.create_function(
            FunctionName=name,
            Runtime=STAND_IN_RUNTIME,
            Role=role,
            Handler=STAND_IN_HANDLER,
            Code={"ZipFile": _stand_in_code(0)},
            Description="skydag local stand-in: its invocations run the task's local: block",
        )
        created.append(f"lambda function {name} ({STAND_IN_RUNTIME} stand-in)")
        return created

    def _ensure_qualifier(self, name: str, qualifier: str) -> list[str]:
        client = self._client("lambda")
        if not qualifier.isdigit():
            try:
                client.get_alias(FunctionName=name, Name=qualifier)
            except client.exceptions.ResourceNotFoundException:
                client.create_alias(FunctionName=name, Name=qualifier, FunctionVersion=LATEST)
                return [f"lambda alias {name}:{qualifier} (to {LATEST})"]
            return []
        wanted = int(qualifier)
        if wanted > MAX_STAND_IN_REVISION:
            line = (
                f"lambda version {name}:{wanted} not created: stand-ins publish versions up "
                f"to {MAX_STAND_IN_REVISION} only"
            )
            self._say(line)
            return [line]
        versions = client.list_versions_by_function(FunctionName=name)["Versions"]
        have = max((int(v["Version"]) for v in versions if v["Version"].isdigit()), default=0)
        if have >= wanted:
            return []
        for number in range(have + 1, wanted + 1):
            # Lambda publishes a new version only for changed code.
            client.update_function_code(FunctionName=name, ZipFile=_stand_in_code(number))
            client.publish_version(FunctionName=name)
        return [f"lambda function {name} (version {numbers(have + 1, wanted)})"]


def _try_payload(body: Any, headers: Any) -> tuple[Any, str | None]:
    """(payload, token) of an asynchronous invocation made for a try; token None for any
    other invocation."""
    invocation_type = next(
        (value for key, value in headers.items() if str(key).lower() == "x-amz-invocation-type"),
        "RequestResponse",
    )
    if invocation_type != "Event" or not body:
        return None, None
    try:
        payload = json.loads(body)
    except ValueError:
        return None, None
    identity = payload.get("skydag") if isinstance(payload, dict) else None
    token = identity.get("token") if isinstance(identity, dict) else None
    return payload, token if isinstance(token, str) and token else None


def _error(invocation: _Invocation, exit_: JobExit) -> dict[str, Any]:
    """The failure's response payload, as Lambda gives it when the runtime exits."""
    if exit_.stopped is not None:
        message = f"Invocation stopped: {exit_.stopped}"
    else:
        message = f"Runtime exited with error: exit status {exit_.exit_code}"
        tail = output_tail(exit_.log_path)
        if tail:
            message = f"{message}: {tail}"
    return {
        "errorMessage": message,
        "errorType": EXIT_ERROR,
        "requestId": invocation.request_id,
        "stackTrace": [],
    }


def _bus_arn(context: PlayerContext) -> str:
    bus = context.event_bus
    if bus.startswith("arn:"):
        return bus
    return f"arn:aws:events:{context.region}:{context.account_id}:event-bus/{bus}"


def _name_and_qualifier(function: str) -> tuple[str, str | None]:
    """A function name, ``name:qualifier`` or (qualified) ARN, as name and qualifier."""
    parts = function.split(":")
    if function.startswith("arn:"):
        return parts[6], parts[7] if len(parts) > 7 else None
    return parts[0], parts[1] if len(parts) > 1 else None


def _stand_in_code(revision: int) -> bytes:
    """A zip with a handler that returns its event (never run: the player plays it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "index.py",
            f"# skydag local stand-in, revision {revision}\n"
            "def handler(event, context):\n    return event\n",
        )
    return buffer.getvalue()
