"""`skydag dev up`: the local cloud (``skydag.localcloud``) as a long-running endpoint.

Everything is in the local cloud: the stack's resources from ``skydag.wiring`` on a moto
server, the production handlers fed as AWS feeds them, and the six services played so
that any DAG runs unchanged. This module only starts it, prints where things are and
what to try, uploads a folder of DAGs, and steps it until asked to stop.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from skydag.localcloud.cloud import IDLE_SLEEP, LocalCloud, LocalCloudOptions
from skydag.wiring import COMMAND_SOURCE

if TYPE_CHECKING:
    from skydag.console.server import RunningConsole

# 4566 is LocalStack's port: a different default lets both run on one machine.
DEFAULT_PORT = 5555


def info(cloud: LocalCloud) -> dict[str, Any]:
    """The JSON `skydag info --output json` prints for this endpoint."""
    settings = cloud.settings
    return {
        "region": settings.region,
        "endpoint_url": settings.endpoint_url,
        "dag_bucket": settings.dag_bucket,
        "dag_prefix": settings.dag_prefix,
        "event_bus": settings.event_bus,
        "tables": settings.tables.model_dump(),
    }


def serve(
    stop: threading.Event,
    *,
    port: int = DEFAULT_PORT,
    dags_dir: Path | None = None,
    out: TextIO | None = None,
    log: TextIO | None = None,
    log_dir: Path | None = None,
    on_ready: Callable[[LocalCloud], None] | None = None,
    console_port: int | None = None,
) -> None:
    """Run `dev up` until ``stop`` is set.

    ``out`` gets where things are (JSON) and what to try; ``log`` one line per event,
    state change and job. ``port`` 0 takes a free port (tests). ``on_ready`` is called once
    the stack exists. ``console_port``: serve the web console there too (0: a free port).
    """
    out = out or sys.stdout
    log = log or sys.stderr
    options = LocalCloudOptions(port=port, log=log, log_dir=log_dir)
    with LocalCloud(options) as cloud:
        if dags_dir is not None:
            upload_dags(cloud, dags_dir, log)
        console = _start_console(cloud, console_port, log)
        print(json.dumps(info(cloud), indent=2), file=out)
        print(usage(cloud), file=out, flush=True)
        if console is not None:
            print(f"web console: {console.url}", file=out, flush=True)
        if on_ready is not None:
            on_ready(cloud)
        try:
            _step_until(stop, cloud, log)
        finally:
            if console is not None:
                console.stop()


def _start_console(cloud: LocalCloud, port: int | None, log: TextIO) -> RunningConsole | None:
    """The web console on this local cloud; a taken port costs the console, not `dev up`."""
    if port is None:
        return None
    from skydag.cli.remote import Remote
    from skydag.console.server import ConsoleUnavailable, start

    try:
        return start(Remote.at(cloud.settings, f"dev up at {cloud.endpoint_url}"), port)
    except ConsoleUnavailable as error:
        print(f"dev up: no web console: {error}", file=log)
    except OSError as error:
        print(f"dev up: no web console: 127.0.0.1:{port}: {error.strerror}", file=log)
    return None


def _step_until(stop: threading.Event, cloud: LocalCloud, log: TextIO) -> None:
    while not stop.is_set():
        try:
            done = cloud.step()
        except Exception as error:  # one bad pass must not end the environment
            print(f"dev up: pass failed: {type(error).__name__}: {error}", file=log)
            done = 0
            time.sleep(1.0)
        if not done:
            stop.wait(IDLE_SLEEP)


def upload_dags(cloud: LocalCloud, dags_dir: Path, log: TextIO) -> None:
    """Put every DAG file of ``dags_dir`` in the bucket: the loader takes it from there."""
    settings = cloud.settings
    s3 = cloud.client("s3")
    for path in sorted(dags_dir.iterdir()):
        if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
            key = f"{settings.dag_prefix}{path.name}"
            s3.put_object(Bucket=settings.dag_bucket, Key=key, Body=path.read_bytes())
            print(f"uploaded {path} to s3://{settings.dag_bucket}/{key}", file=log)


def usage(cloud: LocalCloud) -> str:
    url, settings = cloud.endpoint_url, cloud.settings
    trigger = json.dumps(
        [
            {
                "Source": COMMAND_SOURCE,
                "DetailType": "Trigger DAG",
                "Detail": json.dumps({"dag": "my_dag"}),
                "EventBusName": settings.event_bus,
            }
        ]
    )
    return f"""
skydag dev up is serving {url} (Ctrl-C stops it; everything is forgotten then).
Any values work as credentials: export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
Every task kind runs here: its `local:` block, or a stand-in that succeeds at once.

  aws --endpoint-url {url} s3 cp dag.yaml s3://{settings.dag_bucket}/{settings.dag_prefix}
  skydag dags list --endpoint-url {url}
  skydag trigger my_dag --wait --endpoint-url {url}
  aws --endpoint-url {url} events put-events --entries '{trigger}'
  skydag runs show my_dag RUN --endpoint-url {url}
  skydag logs my_dag RUN TASK --endpoint-url {url}
(or export AWS_ENDPOINT_URL={url} and leave out --endpoint-url)
"""


__all__ = ["DEFAULT_PORT", "info", "serve", "upload_dags", "usage"]
