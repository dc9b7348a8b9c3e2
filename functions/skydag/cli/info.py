"""`skydag info`: where skydag's bucket, bus and tables are, for the AWS CLI and boto3.

The JSON is the contract's, key for key: scripts read it (``jq -r .event_bus``). It is
printed only once the endpoint has answered and every resource in it was found, so a zero
exit status means "skydag is there"; each check is one cheap call that gives up within
seconds (``remote.FAIL_FAST_CONFIG``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Any

from skydag.cli import remote
from skydag.cli.remote import EXIT_OK, CliError, Remote, format_table, print_json

# Error codes meaning "no such resource" (HeadBucket has no body: its code is the status).
_BUCKET_MISSING = frozenset({"404", "NoSuchBucket", "NotFound"})
_NOT_FOUND = frozenset({"ResourceNotFoundException"})


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "info",
        parents=[remote.location_options(), remote.output_options()],
        help="where skydag's bucket, bus and tables are",
        description="Show the region, endpoint, DAG bucket and prefix, event bus and tables "
        "the other commands use (read from the stack outputs or the environment), once "
        "the endpoint has answered and each of them was found there.",
    )
    parser.set_defaults(handler=remote.handler("info", info_command, fail_fast=True))


def info_json(skydag: Remote) -> dict[str, Any]:
    settings = skydag.settings
    return {
        "region": settings.region,
        "endpoint_url": settings.endpoint_url,
        "dag_bucket": settings.dag_bucket,
        "dag_prefix": settings.dag_prefix,
        "event_bus": settings.event_bus,
        "tables": settings.tables.model_dump(),
    }


def missing_resources(skydag: Remote) -> list[str]:
    """What of the bucket, the bus and the tables does not exist ("table skydag-runs").
    A connection failure or any other AWS error is raised (the handler words it)."""
    from botocore.exceptions import ClientError

    settings = skydag.settings
    s3, events, dynamodb = (skydag.client(s) for s in ("s3", "events", "dynamodb"))
    checks: list[tuple[str, Callable[[], object], frozenset[str]]] = [
        (
            f"bucket {settings.dag_bucket}",
            partial(s3.head_bucket, Bucket=settings.dag_bucket),
            _BUCKET_MISSING,
        ),
        (
            f"event bus {settings.event_bus}",
            partial(events.describe_event_bus, Name=settings.event_bus),
            _NOT_FOUND,
        ),
        *(
            (f"table {table}", partial(dynamodb.describe_table, TableName=table), _NOT_FOUND)
            for table in settings.tables.model_dump().values()
        ),
    ]
    missing: list[str] = []
    for what, call, missing_codes in checks:
        try:
            call()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in missing_codes:
                raise
            missing.append(what)
    return missing


def check_resources(skydag: Remote) -> None:
    """CliError naming every missing resource, and where it was looked for."""
    missing = missing_resources(skydag)
    if not missing:
        return
    settings = skydag.settings
    where = f"at {settings.endpoint_url}" if settings.endpoint_url else f"in {settings.region}"
    origin = skydag.location.origin
    names_from = "" if origin.startswith("endpoint") else f" (names from {origin})"
    raise CliError(f"{', '.join(missing)} not found {where}{names_from}")


def info_command(args: argparse.Namespace, skydag: Remote) -> int:
    check_resources(skydag)
    info = info_json(skydag)
    if args.output == "json":
        print_json(info)
        return EXIT_OK
    rows = [
        ("from", skydag.location.origin),
        *((key, str(value or "-")) for key, value in info.items() if key != "tables"),
        *((f"table {name}", table) for name, table in info["tables"].items()),
    ]
    print(format_table(("WHAT", "WHERE"), rows))
    return EXIT_OK
