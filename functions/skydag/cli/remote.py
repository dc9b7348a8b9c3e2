"""What the commands that act on a deployed skydag (or on `dev up`) share: where things
are, how a command reaches the scheduler, how AWS errors read, and how output looks.

Where things are, first rule that applies:

1. ``--stack NAME`` or ``SKYDAG_STACK``: that CloudFormation stack's outputs (at
   ``--endpoint-url`` when one is given: moto serves CloudFormation too);
2. ``--endpoint-url`` or ``AWS_ENDPOINT_URL`` (`dev up`): the names ``Settings.from_env``
   gives, i.e. the ``SKYDAG_*`` variables or the defaults `dev up` creates;
3. any ``SKYDAG_*`` location variable set (the functions' own environment, a job's):
   ``Settings.from_env``;
4. otherwise the outputs of the stack ``Skydag`` that ``cdk deploy`` creates.

People act through command events (design principle 1): the CLI never writes run or task
state, it puts a ``skydag.command`` event on the bus and the scheduler decides. Reads go
straight to the tables through the repositories.

Only the standard library is imported at module level: boto3, PynamoDB and the store load
when a command runs, so ``skydag --help`` and ``skydag validate`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from skydag import sources

if TYPE_CHECKING:
    from skydag.engine.models import DagRecord
    from skydag.settings import Settings
    from skydag.store.dag_files import DagFileRepository
    from skydag.store.repositories import Repositories

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# The stack ``cdk deploy`` creates (infra/skydag_infra/app.py) and the variable naming
# another. CloudFormation stack names are case-sensitive.
DEFAULT_STACK = "Skydag"
STACK_VARIABLE = "SKYDAG_STACK"

# Stack outputs the CLI reads (infra/skydag_infra/stack.py ``_outputs``); their names are
# part of the contract between the CDK app and the CLI.
OUTPUT_REGION = "Region"
OUTPUT_DAG_BUCKET = "DagBucket"
OUTPUT_DAG_PREFIX = "DagPrefix"
OUTPUT_EVENT_BUS = "EventBus"
OUTPUT_EVENT_BUS_ARN = "EventBusArn"
OUTPUT_SCHEDULE_GROUP = "ScheduleGroup"
# ``TableNames`` field -> output (``TableSpec.output_name`` in infra/skydag_infra/tables.py).
TABLE_OUTPUTS: dict[str, str] = {
    "dags": "DagsTable",
    "dag_versions": "DagVersionsTable",
    "runs": "RunsTable",
    "task_instances": "TaskInstancesTable",
    "task_state": "TaskStateTable",
}
REQUIRED_OUTPUTS = (OUTPUT_DAG_BUCKET, OUTPUT_EVENT_BUS, *TABLE_OUTPUTS.values())

# The variables ``Settings.from_env`` reads for locations; any of them set means "the
# environment says where things are" (rule 3).
LOCATION_VARIABLES = (
    "SKYDAG_TABLE_PREFIX",
    *(f"SKYDAG_{field.upper()}_TABLE" for field in TABLE_OUTPUTS),
    "SKYDAG_DAG_BUCKET",
    "SKYDAG_DAG_PREFIX",
    "SKYDAG_EVENT_BUS",
    "SKYDAG_EVENT_BUS_ARN",
    "SKYDAG_SCHEDULE_GROUP",
)

# The commands the router takes (skydag/service/router.py ``COMMANDS``), repeated so that
# sending a command does not import the scheduler; a test keeps the two equal.
COMMAND_SOURCE = sources.COMMAND_SOURCE
TRIGGER_DAG = "Trigger DAG"
BACKFILL_DAG = "Backfill DAG"
CLEAR_TASK = "Clear Task"
MARK_TASK = "Mark Task"
CANCEL_RUN = "Cancel Run"
PAUSE_DAG = "Pause DAG"
UNPAUSE_DAG = "Unpause DAG"
DELETE_DAG = "Delete DAG"
COMMAND_DETAIL_TYPES = (
    TRIGGER_DAG,
    BACKFILL_DAG,
    CLEAR_TASK,
    MARK_TASK,
    CANCEL_RUN,
    PAUSE_DAG,
    UNPAUSE_DAG,
    DELETE_DAG,
)

# botocore client settings for a command that must answer quickly whether skydag is there
# (``skydag info``): a refused or silent endpoint fails within seconds, not after retries.
# ``total_max_attempts`` counts the first attempt (botocore's ``max_attempts`` does not).
FAIL_FAST_CONFIG: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"total_max_attempts": 1},
}


class CliError(Exception):
    """A problem reported on stderr as ``skydag <command>: error: <message>``."""

    exit_code = EXIT_FAILED


class UsageError(CliError):
    """Bad command-line input (a flag's value): exit code 2."""

    exit_code = EXIT_USAGE


# --- options -----------------------------------------------------------------------------


def location_options() -> argparse.ArgumentParser:
    """``--stack``, ``--region`` and ``--endpoint-url``, for ``parents=[...]``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("where skydag is")
    group.add_argument(
        "--stack",
        default=None,
        help=f"the CloudFormation stack to read (env {STACK_VARIABLE}; default {DEFAULT_STACK})",
    )
    group.add_argument("--region", default=None, help="AWS region (default: AWS_REGION, profile)")
    group.add_argument(
        "--endpoint-url",
        default=None,
        help="an AWS endpoint such as `skydag dev up`'s (env AWS_ENDPOINT_URL)",
    )
    return parent


def output_options() -> argparse.ArgumentParser:
    """``--output text|json``, for ``parents=[...]``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--output", choices=("text", "json"), default="text")
    return parent


# --- where things are --------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    settings: Settings
    origin: str  # how it was found, for people: "stack Skydag", "environment", ...


def resolve_location(
    *,
    stack: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    fail_fast: bool = False,
) -> Location:
    """Where skydag's bucket, bus and tables are (see the module's docstring).
    ``fail_fast``: a stack lookup uses ``FAIL_FAST_CONFIG``."""
    from skydag.settings import Settings

    env = dict(os.environ if environ is None else environ)
    endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL") or None
    stack_name = stack or env.get(STACK_VARIABLE) or None
    if stack_name is not None:
        settings = _stack_settings(stack_name, region, endpoint, fail_fast=fail_fast)
        return Location(settings, f"stack {stack_name}")
    if endpoint is not None or any(env.get(name) for name in LOCATION_VARIABLES):
        settings = Settings.from_env(env)
        updates: dict[str, Any] = {"endpoint_url": endpoint}
        if region:
            updates["region"] = region
        origin = f"endpoint {endpoint}" if endpoint else "environment (SKYDAG_* variables)"
        return Location(settings.model_copy(update=updates), origin)
    settings = _stack_settings(DEFAULT_STACK, region, None, fail_fast=fail_fast)
    return Location(settings, f"stack {DEFAULT_STACK}")


def stack_outputs(
    stack_name: str, region: str | None, endpoint_url: str | None, *, fail_fast: bool = False
) -> dict[str, str]:
    """A stack's outputs by key; CliError when there is no such stack."""
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client(
        "cloudformation",
        region_name=region,
        endpoint_url=endpoint_url,
        config=client_config(fail_fast=fail_fast),
    )
    try:
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", "")
        if "does not exist" in message:
            raise CliError(
                f"stack '{stack_name}' not found in {client.meta.region_name}: deploy it "
                f"(`make deploy`), or name another with --stack or {STACK_VARIABLE}, "
                "or use --endpoint-url for `skydag dev up`"
            ) from error
        raise
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
    if missing:
        raise CliError(
            f"stack '{stack_name}' ({stack.get('StackStatus', 'unknown status')}) lacks the "
            f"outputs {', '.join(missing)}: is it a skydag stack, fully deployed?"
        )
    outputs.setdefault(OUTPUT_REGION, client.meta.region_name)
    return outputs


def _stack_settings(
    stack_name: str, region: str | None, endpoint_url: str | None, *, fail_fast: bool
) -> Settings:
    from skydag.settings import Settings, TableNames

    outputs = stack_outputs(stack_name, region, endpoint_url, fail_fast=fail_fast)
    defaults = Settings()
    return Settings(
        region=outputs[OUTPUT_REGION],
        endpoint_url=endpoint_url,
        tables=TableNames(**{field: outputs[key] for field, key in TABLE_OUTPUTS.items()}),
        dag_bucket=outputs[OUTPUT_DAG_BUCKET],
        dag_prefix=outputs.get(OUTPUT_DAG_PREFIX, defaults.dag_prefix),
        event_bus=outputs[OUTPUT_EVENT_BUS],
        event_bus_arn=outputs.get(OUTPUT_EVENT_BUS_ARN),
        schedule_group=outputs.get(OUTPUT_SCHEDULE_GROUP, defaults.schedule_group),
    )


# --- talking to skydag -------------------------------------------------------------------


def client_config(*, fail_fast: bool) -> Any:
    """``FAIL_FAST_CONFIG`` as a botocore Config, or None (botocore's defaults)."""
    if not fail_fast:
        return None
    from botocore.config import Config

    return Config(**FAIL_FAST_CONFIG)


class Remote:
    """One command's connection to skydag, opened on first use.

    Resolving the location is lazy so that a command checks its own input (a bad --conf,
    an invalid DAG file) before anything is looked up in AWS. ``fail_fast``: every client
    (the stack lookup's too) uses ``FAIL_FAST_CONFIG``.
    """

    def __init__(self, args: argparse.Namespace, *, fail_fast: bool = False) -> None:
        self._args = args
        self.fail_fast = fail_fast

    @classmethod
    def at(cls, settings: Settings, origin: str) -> Remote:
        """A connection to a skydag whose location is known already (`dev up`'s own)."""
        found = cls(argparse.Namespace())
        found.__dict__["location"] = Location(settings, origin)
        return found

    @cached_property
    def location(self) -> Location:
        return resolve_location(
            stack=getattr(self._args, "stack", None),
            region=getattr(self._args, "region", None),
            endpoint_url=getattr(self._args, "endpoint_url", None),
            fail_fast=self.fail_fast,
        )

    @property
    def settings(self) -> Settings:
        return self.location.settings

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint in use, known even before (or without) the location."""
        if "location" in vars(self):
            return self.location.settings.endpoint_url
        requested = getattr(self._args, "endpoint_url", None)
        return requested or os.environ.get("AWS_ENDPOINT_URL") or None

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            config=client_config(fail_fast=self.fail_fast),
        )

    @cached_property
    def repos(self) -> Repositories:
        """The store's repositories, bound to this skydag's tables (reads only)."""
        from skydag.store.repositories import Repositories

        self.bind_tables()
        return Repositories()

    @cached_property
    def dag_files(self) -> DagFileRepository:
        """The DAG loader's per-file records (in the dags table)."""
        from skydag.store.dag_files import DagFileRepository

        self.bind_tables()
        return DagFileRepository()

    def bind_tables(self) -> None:
        """Point the store's models at this skydag's tables."""
        bind_store(self.settings)

    def put_event(
        self,
        source: str,
        detail_type: str,
        detail: Mapping[str, Any],
        *,
        resources: Sequence[str] = (),
    ) -> str:
        """PutEvents one event on the skydag bus; returns its id, or raises CliError with
        EventBridge's reason when the entry was refused."""
        entry: dict[str, Any] = {
            "Source": source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, separators=(",", ":")),
            "EventBusName": self.settings.event_bus,
            "Time": datetime.now(UTC),
        }
        if resources:
            entry["Resources"] = list(resources)
        response = self.client("events").put_events(Entries=[entry])
        result = response["Entries"][0] if response.get("Entries") else {}
        if response.get("FailedEntryCount") or "EventId" not in result:
            code = result.get("ErrorCode", "unknown error")
            reason = result.get("ErrorMessage", "no reason given")
            raise CliError(
                f"EventBridge refused the event for bus '{self.settings.event_bus}': "
                f"{code}: {reason}"
            )
        event_id: str = result["EventId"]
        return event_id

    def send_command(self, detail_type: str, detail: Mapping[str, Any]) -> str:
        """Ask the scheduler to act: a ``skydag.command`` event; returns the event id."""
        assert detail_type in COMMAND_DETAIL_TYPES, detail_type
        return self.put_event(COMMAND_SOURCE, detail_type, detail)


# The binding ``bind_store`` last made and the models' Meta right after it.
_last_binding: dict[str, Any] = {}


def bind_store(settings: Settings) -> None:
    """Point the store's models (global in PynamoDB) at ``settings``' tables.

    Binding resets each model's connection (a new botocore client, then a DescribeTable on
    first use), so it is skipped when the models still point where this process last
    pointed them: several commands in one process (scripts calling ``main``, the tests)
    share the connections.
    """
    from skydag.store.dag_files import DagFileModel, bind_dag_files
    from skydag.store.models import ALL_MODELS, SignalSubscriptionModel, bind_models

    models: tuple[Any, ...] = (*ALL_MODELS, SignalSubscriptionModel, DagFileModel)

    def metas() -> list[tuple[Any, ...]]:
        return [(m.Meta.table_name, m.Meta.region, getattr(m.Meta, "host", None)) for m in models]

    if _last_binding.get("settings") == settings and _last_binding.get("metas") == metas():
        return
    bind_models(settings)
    bind_dag_files(settings)
    _last_binding.update(settings=settings, metas=metas())


def command_sent(remote: Remote, detail_type: str, detail: Mapping[str, Any]) -> dict[str, Any]:
    """Send a command; what was sent, as the ``--output json`` of a command."""
    event_id = remote.send_command(detail_type, detail)
    return {"command": detail_type, "event_id": event_id, "detail": dict(detail)}


Handler = Callable[[argparse.Namespace, Remote], int]


def handler(
    name: str, function: Handler, *, fail_fast: bool = False
) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: CliError and AWS errors become one stderr line and an exit code.
    ``fail_fast``: the command's clients give up quickly (``FAIL_FAST_CONFIG``)."""

    def run(args: argparse.Namespace) -> int:
        remote = Remote(args, fail_fast=fail_fast)
        try:
            return function(args, remote)
        except CliError as error:
            return report(name, str(error), error.exit_code)
        except Exception as error:
            message = describe_aws_error(error, remote)
            if message is None:
                raise
            return report(name, message, EXIT_FAILED)

    return run


def report(name: str, message: str, exit_code: int) -> int:
    print(f"skydag {name}: error: {message}", file=sys.stderr)
    return exit_code


_TABLE_IN_MESSAGE = re.compile(r"on table \(([^)]+)\)")


def describe_aws_error(error: Exception, remote: Remote) -> str | None:
    """AWS and PynamoDB errors in plain words; None for anything else (a bug: re-raised)."""
    if type(error).__module__.split(".")[0] not in ("botocore", "boto3", "pynamodb"):
        return None
    from botocore.exceptions import BotoCoreError, ClientError
    from pynamodb.exceptions import PynamoDBException

    if isinstance(error, PynamoDBException):
        return _dynamodb_error(error, remote)
    if isinstance(error, ClientError):
        return _client_error(error, remote)
    if isinstance(error, BotoCoreError):
        return _botocore_error(error, remote)
    return None


def _botocore_error(error: Exception, remote: Remote) -> str:
    """Errors before any answer from AWS: no setup, or nothing answering."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, NoCredentialsError, NoRegionError

    if isinstance(error, NoCredentialsError):
        return (
            "no AWS credentials found (configure a profile or AWS_* variables; "
            "for `skydag dev up` any values work, e.g. AWS_ACCESS_KEY_ID=testing)"
        )
    if isinstance(error, NoRegionError):
        return "no AWS region: pass --region or set AWS_REGION"
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return _unreachable(error, remote)
    return f"{error}{_where(remote)}"


def _dynamodb_error(error: Any, remote: Remote) -> str:
    if error.cause_response_code == "ResourceNotFoundException":
        found = _TABLE_IN_MESSAGE.search(str(error))
        table = f"'{found.group(1)}'" if found else "of skydag"
        return (
            f"DynamoDB table {table} not found{_where(remote)}; `skydag info` shows the names used"
        )
    return f"DynamoDB: {error}"


def _client_error(error: Any, remote: Remote) -> str:
    code = error.response.get("Error", {}).get("Code", "Error")
    text = error.response.get("Error", {}).get("Message", str(error))
    if code == "NoSuchBucket":
        return f"bucket '{remote.settings.dag_bucket}' not found{_where(remote)}"
    operation = getattr(error, "operation_name", "AWS")
    return f"{operation}: {code}: {text}{_where(remote)}"


def _unreachable(error: Any, remote: Remote) -> str:
    """Nothing (or nothing that answers) at the endpoint: say where, and why if known."""
    reason = _connection_failure(error)
    if remote.endpoint_url:
        return f"nothing answers at {remote.endpoint_url} ({reason}); start it with: skydag dev up"
    url = urlsplit(str(error.kwargs.get("endpoint_url", "")))
    where = f"{url.scheme}://{url.netloc}" if url.netloc else "AWS"
    return f"cannot reach {where} ({reason}); check your network and --region"


def _connection_failure(error: Exception) -> str:
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    if isinstance(error, ConnectTimeoutError):
        return "connection timed out"
    if isinstance(error, ReadTimeoutError):
        return "connected, but no answer in time"
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    return f"could not connect: {error}"


def _where(remote: Remote) -> str:
    """`` (region us-east-1, endpoint ...)`` once the location is known."""
    if "location" not in vars(remote):
        return ""  # not resolved (or resolving it failed): do not ask AWS again
    settings = remote.location.settings
    endpoint = f", endpoint {settings.endpoint_url}" if settings.endpoint_url else ""
    return f" (region {settings.region}{endpoint})"


def pause(seconds: float) -> None:
    """The wait between two polls of a ``--wait``. One function, so the tests can drive the
    embedded scheduler here instead of sleeping."""
    time.sleep(seconds)


# --- input --------------------------------------------------------------------------------


def parse_json_object(text: str, flag: str) -> dict[str, Any]:
    """A flag's JSON object value; UsageError naming the flag otherwise."""
    from skydag.limits import LimitError, loads_bounded

    try:
        value = loads_bounded(text, flag)  # size and nesting first: the decoder recurses
    except LimitError as error:
        raise UsageError(str(error)) from error
    except json.JSONDecodeError as error:
        raise UsageError(f"{flag} is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value


def require_dag(remote: Remote, dag_id: str) -> DagRecord:
    """The DAG's head; CliError unless the DAG is loaded (has a current version)."""
    head = remote.repos.dags.find(dag_id)
    if head is None or head.current_version is None:
        raise CliError(f"DAG '{dag_id}' not found (`skydag dags list` shows the loaded DAGs)")
    return head


# --- output -------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, no trailing blanks."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def short_time(moment: datetime | None) -> str:
    """``2026-11-22 08:15:00`` (UTC) for tables; ``-`` when unknown."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
