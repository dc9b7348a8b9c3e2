"""Serving the console on 127.0.0.1 (never another interface: it acts with the person's
own AWS credentials), in a thread (`dev up`) or in the foreground (`skydag ui`)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skydag.cli.remote import Remote

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
STARTUP_TIMEOUT = 10.0


@dataclass
class RunningConsole:
    url: str
    server: Any  # uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _listen(port: int) -> socket.socket:
    """The listening socket, bound before the server starts so port 0 names its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    sock.listen(64)
    return sock


class ConsoleUnavailable(Exception):
    """The console's web server is not installed (the ``console`` extra)."""


def start(remote: Remote, port: int = DEFAULT_PORT) -> RunningConsole:
    """The console in a daemon thread; OSError when the port is taken."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise ConsoleUnavailable(
            f"the web console needs {error.name}: pip install 'skydag[console]'"
        ) from error

    from skydag.console.app import create_app

    remote.bind_tables()  # before the first request, not in the middle of other work
    sock = _listen(port)
    config = uvicorn.Config(create_app(remote), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="skydag-console", daemon=True
    )
    thread.start()
    started = threading.Event()

    def wait_started() -> None:
        while not server.started and thread.is_alive():
            started.wait(0.05)

    waiter = threading.Thread(target=wait_started, daemon=True)
    waiter.start()
    waiter.join(STARTUP_TIMEOUT)
    return RunningConsole(f"http://{HOST}:{sock.getsockname()[1]}/", server, thread)
