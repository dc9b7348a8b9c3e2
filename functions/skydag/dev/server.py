"""Dev mode's AWS endpoint: moto as a server on a loopback port.

The in-process mock (``embedded_aws``) patches botocore inside this process only. A job
that the local target starts is another process, so the only AWS it can reach is an
endpoint: with this server, jobs read and write the very tables the scheduler uses (task
state, through ``skydag.taskstate`` or ``skydag state``). Never use both at once: while the
in-process mock is active it intercepts every call, including the ones meant for the server.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOOPBACK = "127.0.0.1"

# Fake credentials and a fixed region: nothing in dev mode can reach a real account.
_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # botocore routes DynamoDB (Streams) calls to account-based endpoints moto does not serve.
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
}
# Settings that would send a client elsewhere than the server (a profile's endpoint, a
# per-service endpoint variable, or an instruction to ignore endpoint variables).
_REMOVED_PREFIXES = ("AWS_ENDPOINT_URL_",)
_REMOVED = ("AWS_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


@contextmanager
def moto_server(host: str = LOOPBACK, *, port: int = 0) -> Iterator[str]:
    """Start moto's server on ``host:port`` (0: a free port); yield its endpoint URL.

    moto's state is process-wide (shared with any in-process mock): the server starts
    from an empty account and leaves one behind, as ``mock_aws`` does. AWS Batch runs
    without Docker, and an item an UpdateItem creates streams one record, as on AWS
    (``localcloud.stream_inserts``).
    """
    from moto.core.models import botocore_stubber
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from skydag.localcloud.stream_inserts import one_insert_per_created_item

    if botocore_stubber.enabled:
        raise RuntimeError(
            "moto's in-process mock (mock_aws, embedded_aws) is active: it would answer the "
            "calls meant for the server; use one or the other"
        )

    # werkzeug logs every request at INFO on stderr, burying dev run's progress lines.
    werkzeug_log = logging.getLogger("werkzeug")
    saved_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    # Port 0: the OS picks a free port at bind time, so two servers can never collide.
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        bound_host, port = server.get_host_and_port()
        _moto_api(bound_host, port, "reset")
        saved_config = _moto_api(bound_host, port, "config", method="GET")
        _moto_api(bound_host, port, "config", {"batch": {"use_docker": False}})
        try:
            with one_insert_per_created_item():
                yield f"http://{bound_host}:{port}"
        finally:
            _moto_api(bound_host, port, "reset")
            _moto_api(bound_host, port, "config", saved_config)
    finally:
        werkzeug_log.setLevel(saved_level)
        # Stopping waits for werkzeug's 0.5 s poll interval. Nothing needs to wait for it:
        # the port is this server's alone and moto's state is already reset, so the
        # (daemon) server thread winds down on its own.
        threading.Thread(target=server.stop, name="moto-server-stop", daemon=True).start()


@contextmanager
def aws_environment(endpoint_url: str) -> Iterator[None]:
    """Point this process, and every process it starts, at ``endpoint_url``.

    Jobs inherit ``os.environ`` (the local target passes it on), so this is how they find
    the server. It changes the whole process's environment: meant for one-shot commands
    and tests; everything is restored on exit.
    """
    names = {
        *_FAKE_AWS,
        *_REMOVED,
        "AWS_ENDPOINT_URL",
        *(name for name in os.environ if name.startswith(_REMOVED_PREFIXES)),
    }
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.pop(name, None)
    os.environ.update(_FAKE_AWS)
    os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _moto_api(host: str, port: int, path: str, body: Any = None, *, method: str = "POST") -> Any:
    """Call moto's own API (``/moto-api/<path>``) on the server; returns its JSON answer."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        payload = b"" if body is None else json.dumps(body).encode()
        connection.request(
            method,
            f"/moto-api/{path}",
            body=payload if method == "POST" else None,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"moto server {method} /moto-api/{path}: HTTP {response.status}")
        return json.loads(data) if data else None
    finally:
        connection.close()


__all__ = ["LOOPBACK", "aws_environment", "moto_server"]
