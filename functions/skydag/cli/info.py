"""`skydag info`: where skydag's bucket, bus and tables are, for the AWS CLI and boto3.

The JSON is the contract's, key for key: scripts read it (``jq -r .event_bus``).
"""

from __future__ import annotations

import argparse
from typing import Any

from skydag.cli import remote
from skydag.cli.remote import EXIT_OK, Remote, format_table, print_json


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "info",
        parents=[remote.location_options(), remote.output_options()],
        help="where skydag's bucket, bus and tables are",
        description="Show the region, endpoint, DAG bucket and prefix, event bus and tables "
        "the other commands use (read from the stack outputs or the environment).",
    )
    parser.set_defaults(handler=remote.handler("info", info_command))


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


def info_command(args: argparse.Namespace, skydag: Remote) -> int:
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
