"""`skydag ui [--port N] [--open]`: the web console (``skydag.console``) on 127.0.0.1.

It reads the tables the other commands read and acts through the same command events,
with the person's own AWS credentials, against a deployed stack or `skydag dev up`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from skydag.cli import remote
from skydag.cli.remote import EXIT_OK, CliError, Remote


def register(commands: Any) -> None:
    from skydag.console.server import DEFAULT_PORT

    ui: argparse.ArgumentParser = commands.add_parser(
        "ui",
        parents=[remote.location_options()],
        help="serve the web console on 127.0.0.1 (until Ctrl-C)",
        description="Serve the web console (DAGs, grid, graph, task detail, actions) on "
        "127.0.0.1; it uses your AWS credentials, against a deployed stack or `dev up`.",
    )
    ui.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the port (default {DEFAULT_PORT})"
    )
    ui.add_argument("--open", action="store_true", help="open the console in a web browser")
    ui.set_defaults(handler=remote.handler("ui", ui_command, fail_fast=True))


def ui_command(args: argparse.Namespace, skydag: Remote) -> int:
    import signal

    from skydag.console.server import ConsoleUnavailable, start

    # skydag answers now, or the command fails with the CLI's one line.
    skydag.client("dynamodb").describe_table(TableName=skydag.settings.tables.dags)
    # The console's own reads may wait for AWS as long as botocore's defaults allow.
    console_remote = Remote(args)
    try:
        running = start(console_remote, args.port)
    except ConsoleUnavailable as error:
        raise CliError(str(error)) from error
    except OSError as error:
        raise CliError(f"cannot listen on 127.0.0.1:{args.port}: {error.strerror}") from error
    print(f"skydag console: {running.url} ({skydag.location.origin}); Ctrl-C stops it", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(running.url)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.is_set() and running.thread.is_alive():
        stop.wait(0.5)
    running.stop()
    print("skydag console: stopped", file=sys.stderr)
    return EXIT_OK
