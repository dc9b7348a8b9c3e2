"""The console's routes: four pages, their JSON, and the actions.

Pages render with Jinja; ``?fragment=1`` gives only a page's live region, which the page's
script fetches every second and swaps in when it changed (live updates without a build
step or a socket). Actions are POSTs answered in JSON; they must carry the
``X-Skydag-Console`` header, which a cross-site form cannot send, and every request must
name this machine as its host (no DNS rebinding): a web page the person visits cannot
make the console act for it.

AWS is reached through one ``Remote`` shared by all requests, one request at a time (a
lock): boto3's default session is not safe to use from several threads, and a person's
console needs no more.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from skydag.cli.remote import CliError, UsageError, describe_aws_error
from skydag.console import actions, views

if TYPE_CHECKING:
    from skydag.cli.remote import Remote

HERE = Path(__file__).parent
ACTION_HEADER = "x-skydag-console"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "testserver"})
RUN_STATES = tuple(state.value for state in views.RunState)


class Console:
    """The app's state: where skydag is, and the templates."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.lock = threading.Lock()
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(
            mark=views.STATE_MARK,
            duration=views.duration,
            short_time=_short_time,
            run_states=RUN_STATES,
            grid_rows=views.grid_rows_html,
        )
        self.templates.filters["tojson_pretty"] = _pretty_json

    def read(self, function: Callable[..., Any], *args: Any) -> Any:
        with self.lock:
            return function(self.remote, *args)

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        template = self.templates.get_template(name)
        context.update(request=request, where=self.remote.location.origin)
        if request.query_params.get("fragment") and "live" in template.blocks:
            body = "".join(template.blocks["live"](template.new_context(context)))
        else:
            body = template.render(context)
        return HTMLResponse(body, status_code=status)


def _short_time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty_json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


# --- errors ----------------------------------------------------------------------------------


def _problem(console: Console, error: Exception) -> tuple[str, int] | None:
    """An error a person can act on, and its HTTP status; None for a bug (re-raised)."""
    if isinstance(error, CliError):
        return str(error), 400 if error.exit_code == 2 else 404 if "not found" in str(
            error
        ) else 409
    message = describe_aws_error(error, console.remote)
    return (message, 502) if message is not None else None


def _guarded_page(
    console: Console, render: Callable[[Request], Response]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(render, request)
        except Exception as error:
            problem = _problem(console, error)
            if problem is None:
                raise
            message, status = problem
            return console.page(request, "error.html", status, message=message)

    return endpoint


def _guarded_json(
    console: Console, answer: Callable[[Request, Mapping[str, str]], Any]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        form: dict[str, str] = {}
        if request.method == "POST":
            if request.headers.get(ACTION_HEADER) != "1":
                return JSONResponse(
                    {"error": f"actions need the {ACTION_HEADER} header (sent by the page)"},
                    status_code=403,
                )
            # The page sends forms urlencoded; read here, no multipart parser needed.
            body = (await request.body()).decode("utf-8", errors="replace")
            form = dict(parse_qsl(body, keep_blank_values=True))
        try:
            result = await run_in_threadpool(answer, request, form)
        except Exception as error:
            problem = _problem(console, error)
            if problem is None:
                raise
            message, status = problem
            return JSONResponse({"error": message}, status_code=status)
        if isinstance(result, actions.Done):
            return JSONResponse(result.as_json())
        return JSONResponse(result)

    return endpoint


class LocalHostOnly(BaseHTTPMiddleware):
    """Refuse requests that name another host (a DNS-rebinding page)."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in LOCAL_HOSTS and host != "::1":
            return Response(f"host {host!r} refused: open the console at 127.0.0.1", 421)
        return await call_next(request)


# --- pages -----------------------------------------------------------------------------------


def _grid_filter(request: Request) -> views.GridFilter:
    query = request.query_params

    def day(name: str) -> date | None:
        text = query.get(name, "").strip()
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise UsageError(f"{name}: not a date (YYYY-MM-DD): {text!r}") from None

    states = frozenset(s for s in query.getlist("state") if s)
    unknown = states - set(RUN_STATES)
    if unknown:
        raise UsageError(
            f"state: unknown run state {', '.join(sorted(unknown))} "
            f"(one of {', '.join(RUN_STATES)})"
        )
    limit_text = query.get("limit", "").strip() or str(views.DEFAULT_GRID_RUNS)
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= views.MAX_GRID_RUNS:
        raise UsageError(f"limit: a whole number from 1 to {views.MAX_GRID_RUNS}")
    return views.GridFilter(states, day("since"), day("until"), int(limit_text))


def create_app(remote: Remote) -> Starlette:
    """The console for the skydag ``remote`` points at."""
    console = Console(remote)
    routes = [
        *_page_routes(console),
        *_json_routes(console),
        *_action_routes(console),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(LocalHostOnly)])


TASK_PATH = "/dags/{dag}/runs/{run}/tasks/{task}"


def _page_routes(console: Console) -> list[Route]:
    def dags_page(request: Request) -> Response:
        rows = console.read(views.dags_view, datetime.now(UTC))
        return console.page(request, "dags.html", rows=rows)

    def grid_page(request: Request) -> Response:
        dag = request.path_params["dag"]
        wanted = _grid_filter(request)
        grid, spec = console.read(views.grid_view, dag, wanted)
        head = console.read(lambda r, d: r.repos.dags.find(d), dag)
        return console.page(
            request, "grid.html", dag=dag, grid=grid, spec=spec, head=head, wanted=wanted
        )

    def graph_page(request: Request) -> Response:
        dag = request.path_params["dag"]
        view = console.read(views.graph_view, dag, request.query_params.get("run") or None)
        return console.page(request, "graph.html", dag=dag, view=view)

    def task_page(request: Request) -> Response:
        p = request.path_params
        wanted = request.query_params.get("try", "").strip()
        if wanted and not wanted.isdigit():
            raise UsageError(f"try: a whole number, not {wanted!r}")
        detail = console.read(
            views.task_view, p["dag"], p["run"], p["task"], int(wanted) if wanted else None
        )
        return console.page(request, "task.html", dag=p["dag"], detail=detail)

    return [
        Route("/", _guarded_page(console, dags_page)),
        Route("/dags/{dag}", _guarded_page(console, grid_page)),
        Route("/dags/{dag}/graph", _guarded_page(console, graph_page)),
        Route(TASK_PATH, _guarded_page(console, task_page)),
    ]


def _json_routes(console: Console) -> list[Route]:
    def dags_json(request: Request, form: Mapping[str, str]) -> Any:
        from skydag.cli.render import iso, run_to_json

        return [
            {
                "dag": row.dag,
                "version": row.version,
                "paused": row.paused,
                "source": row.source,
                "import_error": row.import_error,
                "schedule": row.schedule,
                "next_tick": iso(row.next_tick),
                "signals": list(row.signals),
                "last_runs": [run_to_json(run) for run in row.last_runs],
            }
            for row in console.read(views.dags_view, datetime.now(UTC))
        ]

    def grid_json(request: Request, form: Mapping[str, str]) -> Any:
        grid, _ = console.read(views.grid_view, request.path_params["dag"], _grid_filter(request))
        return {
            "dag": grid.dag,
            "runs": [{"run_id": run.run_id, "state": run.state.value} for run in grid.runs],
            "tasks": [
                {
                    "task": row.task,
                    "cells": [
                        None if cell is None else {"state": cell.state, "counts": dict(cell.counts)}
                        for cell in row.cells
                    ],
                }
                for row in grid.rows
            ],
        }

    def run_json(request: Request, form: Mapping[str, str]) -> Any:
        from skydag.cli.render import run_to_json
        from skydag.cli.runs import get_run, run_tasks

        p = request.path_params

        def read(remote: Remote) -> Any:
            run = get_run(remote, p["dag"], p["run"])
            return run_to_json(run, run_tasks(remote, run))

        return console.read(read)

    def log_json(request: Request, form: Mapping[str, str]) -> Any:
        from skydag.cli.logs import find_try, read_log

        p = request.path_params
        wanted = request.query_params.get("try", "")
        number = int(wanted) if wanted.isdigit() else None
        return console.read(
            lambda r: read_log(r, find_try(r, p["dag"], p["run"], p["task"], number))
        )

    return [
        Route("/api/dags", _guarded_json(console, dags_json)),
        Route("/api/dags/{dag}/grid", _guarded_json(console, grid_json)),
        Route("/api/dags/{dag}/runs/{run}", _guarded_json(console, run_json)),
        Route(f"/api{TASK_PATH}/log", _guarded_json(console, log_json)),
    ]


def _action_routes(console: Console) -> list[Route]:
    def act(request: Request, form: Mapping[str, str]) -> actions.Done:
        p = request.path_params
        action = p["action"]
        if action == "trigger":
            return console.read(actions.trigger, p["dag"], form)  # type: ignore[no-any-return]
        if action in ("pause", "unpause"):
            return console.read(  # type: ignore[no-any-return]
                lambda r: actions.pause(r, p["dag"], paused=action == "pause")
            )
        if action == "backfill":
            return console.read(actions.backfill, p["dag"], form)  # type: ignore[no-any-return]
        raise UsageError(f"unknown DAG action {action!r}")

    def act_on_run(request: Request, form: Mapping[str, str]) -> actions.Done:
        p = request.path_params
        return console.read(actions.cancel, p["dag"], p["run"], form)  # type: ignore[no-any-return]

    def act_on_task(request: Request, form: Mapping[str, str]) -> actions.Done:
        p = request.path_params
        chosen = {"clear": actions.clear, "mark": actions.mark}.get(p["action"])
        if chosen is None:
            raise UsageError(f"unknown task action {p['action']!r}")
        return console.read(chosen, p["dag"], p["run"], p["task"], form)  # type: ignore[no-any-return]

    return [
        Route("/api/dags/{dag}/{action}", _guarded_json(console, act), methods=["POST"]),
        Route(
            "/api/dags/{dag}/runs/{run}/cancel",
            _guarded_json(console, act_on_run),
            methods=["POST"],
        ),
        Route(f"/api{TASK_PATH}/{{action}}", _guarded_json(console, act_on_task), methods=["POST"]),
    ]
