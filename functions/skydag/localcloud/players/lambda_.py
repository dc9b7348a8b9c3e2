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
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from skydag import joblogs
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
# ``qualifier: N`` makes the stand-in publish versions 1..N: bounded.
MAX_STAND_IN_VERSION = 100
# A function's log stream holds at most this much of an invocation's output.
MAX_LOG_BYTES = 256 * 1024
# How the invoke wrapper hands the request id it chose to the response (never sent).
_REQUEST_ID_HEADER = "x-skydag-request-id"
# An invocation whose token no try claims is dropped after this long: the try's row
# may not be readable yet when the invocation's first poll comes.
CLAIM_GRACE_SECONDS = 1.0
_ABSENT = object()


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
    invoked_at: float = field(default_factory=time.monotonic)

    @property
    def invoked_arn(self) -> str:
        return f"{self.function_arn}:{self.qualifier}"


@dataclass
class _Played:
    invocation: _Invocation
    plan: LocalPlan


class _Patches:
    """Class attributes replaced on moto, and how to put the originals back."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, Any]] = []

    def replace(self, owner: type, name: str, value: Any) -> None:
        self._saved.append((owner, name, owner.__dict__.get(name, _ABSENT)))
        setattr(owner, name, value)

    def restore(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


class LambdaPlayer:
    """Plays AWS Lambda's asynchronous invocations for the local cloud (see the module
    docstring)."""

    kind = KIND

    def __init__(self, *, claim_grace: float = CLAIM_GRACE_SECONDS) -> None:
        self._claim_grace = claim_grace
        self._context: PlayerContext | None = None
        self._runner: Any = None
        self._patches = _Patches()
        self._lock = threading.Lock()
        # Filled on moto's request threads, drained by poll().
        self._invoked: list[_Invocation] = []
        self._exits: list[tuple[str, JobExit]] = []
        # poll()'s own, keyed by request id.
        self._played: dict[str, _Played] = {}

    # --- install ----------------------------------------------------------------------------

    def install(self, context: PlayerContext, runner: Any) -> None:
        from moto.awslambda.responses import LambdaResponse

        self._context, self._runner = context, runner
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
        with self._lock:
            self._invoked.append(invocation)
        return invocation

    def uninstall(self) -> None:
        self._patches.restore()

    def _on_exit(self, request_id: str) -> Callable[[JobExit], None]:
        def record(exit_: JobExit) -> None:
            with self._lock:
                self._exits.append((request_id, exit_))

        return record

    # --- poll ---------------------------------------------------------------------------

    def poll(self) -> int:
        context = self._require_context()
        with self._lock:
            invoked, self._invoked = self._invoked, []
        done = 0
        for invocation in invoked:
            plan = context.plan_for(KIND, invocation.token)
            if plan is None and time.monotonic() - invocation.invoked_at < self._claim_grace:
                with self._lock:  # asked again on the next poll
                    self._invoked.append(invocation)
                continue
            if plan is None:
                # Not a try's (a stale token): nothing runs, as nothing would have in moto.
                continue
            self._played[invocation.request_id] = _Played(invocation, plan)
            context.say(
                KIND, f"{invocation.function_name} invoked (request {invocation.request_id})"
            )
            key = f"{KIND}:{invocation.request_id}"
            self._runner.start(key, plan, self._on_exit(invocation.request_id))
            done += 1
        self._runner.poll()
        with self._lock:
            exits, self._exits = self._exits, []
        for request_id, exit_ in exits:
            played = self._played.pop(request_id, None)
            if played is not None:
                self._finish(played, exit_)
                done += 1
        return done

    def _finish(self, played: _Played, exit_: JobExit) -> None:
        context = self._require_context()
        invocation = played.invocation
        ended = exit_.ended_at or datetime.now(UTC)
        succeeded = exit_.exit_code == 0 and exit_.stopped is None
        error = None if succeeded else _error(invocation, exit_)
        stream = self._write_logs(played, exit_, error)
        detail = {
            "version": "1.0",
            "timestamp": _iso(ended),
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
        context = self._require_context()
        invocation = played.invocation
        text = _output_text(exit_)
        who = played.plan.identity
        local = joblogs.local_stream(who.dag_id, who.run_id, who.task_id, who.try_number)
        context.write_log(joblogs.LOCAL_LOG_GROUP, local, text)
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
        function = _plain(target.get("function_name"))
        if function is None:
            return []
        name, qualifier = _name_and_qualifier(function)
        qualifier = _plain(target.get("qualifier")) or qualifier
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
        role = self._ensure_role(created)
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

    def _ensure_role(self, created: list[str]) -> str:
        iam = self._client("iam")
        try:
            return str(iam.get_role(RoleName=STAND_IN_ROLE)["Role"]["Arn"])
        except iam.exceptions.NoSuchEntityException:
            pass
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = iam.create_role(RoleName=STAND_IN_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
        created.append(f"iam role {STAND_IN_ROLE} (Lambda execution role)")
        return str(role["Role"]["Arn"])

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
        if wanted > MAX_STAND_IN_VERSION:
            line = (
                f"lambda version {name}:{wanted} not created: stand-ins publish versions up "
                f"to {MAX_STAND_IN_VERSION} only"
            )
            self._require_context().say(KIND, line)
            return [line]
        versions = client.list_versions_by_function(FunctionName=name)["Versions"]
        have = max((int(v["Version"]) for v in versions if v["Version"].isdigit()), default=0)
        if have >= wanted:
            return []
        for number in range(have + 1, wanted + 1):
            # Lambda publishes a new version only for changed code.
            client.update_function_code(FunctionName=name, ZipFile=_stand_in_code(number))
            client.publish_version(FunctionName=name)
        numbers = f"{have + 1}" if wanted == have + 1 else f"{have + 1}-{wanted}"
        return [f"lambda function {name} (version {numbers})"]

    # --- helpers ------------------------------------------------------------------------

    def _require_context(self) -> PlayerContext:
        if self._context is None:
            raise RuntimeError("the Lambda player is not installed")
        return self._context

    def _client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        context = self._require_context()
        return boto3.client(
            service,
            region_name=context.region,
            endpoint_url=context.endpoint_url,
            config=Config(account_id_endpoint_mode="disabled"),
        )


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


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> str | None:
    """A target value the stand-ins can use: set and fully rendered."""
    if value is None or value == "":
        return None
    text = str(value)
    return None if "{{" in text else text


def _output_text(exit_: JobExit) -> str:
    """The invocation's captured output (a stand-in's: one line saying so)."""
    if exit_.log_path is None or not Path(exit_.log_path).exists():
        seconds = 0.0
        if exit_.started_at and exit_.ended_at:
            seconds = (exit_.ended_at - exit_.started_at).total_seconds()
        return f"stand-in: exited {exit_.exit_code} after {seconds:.1f} s"
    with Path(exit_.log_path).open("rb") as stream:
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(max(0, size - MAX_LOG_BYTES))
        text = stream.read().decode("utf-8", "replace").rstrip("\n")
    if size > MAX_LOG_BYTES:
        text = f"[first {size - MAX_LOG_BYTES} bytes left out; all of it: {exit_.log_path}]\n{text}"
    return text if text.strip() else "(no output)"
