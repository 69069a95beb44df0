"""The daemon's HTTP side (Starlette on uvicorn, imported only when serving): health,
readiness from cached state, Prometheus metrics, and JSON views of workflows, runs, tasks and
logs. Every JSON answer passes through the daemon's secret redactor; a bearer token guards
everything but the health probes when one is configured."""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..exceptions import BackendUnavailable, NotFound
from ..metrics import CONTENT_TYPE
from ..plain import plain
from ..tail import names_file

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from ._core import Daemon

__all__ = ["build_app", "start_http"]

log = logging.getLogger(__name__)

_LOG_LIMIT = 1 << 20
_OPEN_PATHS = ("/healthz", "/readyz")


def _json(daemon: Daemon, value: Any, status: int = 200) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(daemon.redactor.redact_obj(plain(value)), status_code=status)


def build_app(daemon: Daemon) -> Starlette:
    """The ASGI app for ``daemon``."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from ._core import paused_info

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        return PlainTextResponse("ready\n" if daemon.ready else "starting\n",
                                 status_code=200 if daemon.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(daemon.metrics.render(), media_type=CONTENT_TYPE)

    async def workflows(request: Request) -> Response:
        return _json(daemon, [
            {"name": s.name, "description": s.description, "schedule": s.schedule,
             "timezone": s.timezone, "overlap": s.overlap, "tasks": [t.name for t in s.tasks],
             "paused": paused_info(daemon.store, s.name),
             "scheduler": daemon.store.get_value("scheduler", s.name)}
            for s in daemon.project.workflows.values()
        ])

    async def runs(request: Request) -> Response:
        q = request.query_params
        states = [s for s in q.get("state", "").split(",") if s]
        limit = min(int(q.get("limit", "50")), 1000) if q.get("limit", "50").isdigit() else 50
        found = await anyio.to_thread.run_sync(
            lambda: daemon.store.list_runs(q.get("workflow"), states=states, limit=limit))
        return _json(daemon, found)

    async def run(request: Request) -> Response:
        with _not_found(daemon) as answer:
            record = daemon.store.get_run(daemon.store.resolve_run(request.path_params["run_id"]))
            return _json(daemon, {**plain(record),
                                  "events": plain(daemon.store.events(record.run_id))})
        return answer[0]

    async def logs(request: Request) -> Response:
        with _not_found(daemon) as answer:
            return _log_text(daemon, request)
        return answer[0]

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
              Route("/api/workflows", workflows), Route("/api/runs", runs),
              Route("/api/runs/{run_id}", run),
              Route("/api/runs/{run_id}/tasks/{task}/logs", logs)]
    app = Starlette(routes=routes)
    if daemon.options.token:
        app.add_middleware(_TokenMiddleware, token=daemon.options.token)
    return app


@contextmanager
def _not_found(daemon: Daemon) -> Iterator[list[Response]]:
    answer: list[Response] = []
    try:
        yield answer
    except NotFound as exc:
        answer.append(_json(daemon, {"error": str(exc)}, status=404))


def _log_text(daemon: Daemon, request: Request) -> Response:
    from starlette.responses import PlainTextResponse

    run_id = daemon.store.resolve_run(request.path_params["run_id"])
    name = request.path_params["task"]
    task = next((t for t in daemon.store.tasks(run_id) if t.name == name), None)
    if task is None:
        raise NotFound(f"run {run_id} has no task {name!r}")
    wanted = request.query_params.get("attempt")
    attempts = [a for a in task.attempts if wanted is None or str(a.number) == wanted]
    if not attempts or not attempts[-1].log_path:
        raise NotFound(f"no log for task {name!r} of run {run_id}")
    path = Path(attempts[-1].log_path)
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - _LOG_LIMIT))
            text = f.read().decode("utf-8", "replace")
            if not names_file(path, os.fstat(f.fileno()).st_ino):
                text = ""  # it ended silent meanwhile: what was read is the next attempt's
    except FileNotFoundError:  # an attempt that wrote nothing has no log file
        text = ""
    except OSError as exc:
        raise NotFound(f"cannot read the log of task {name!r}: {exc.strerror}") from None
    return PlainTextResponse(daemon.redactor.redact(text))


class _TokenMiddleware:
    """Requires ``Authorization: Bearer <token>`` on everything but the health probes."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in _OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                from starlette.responses import PlainTextResponse

                response = PlainTextResponse("missing or wrong bearer token\n", status_code=401,
                                             headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def start_http(daemon: Daemon, *,
                     task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the API with uvicorn until ``server.should_exit``; reports the server once
    listening. The daemon owns signal handling, so uvicorn installs none."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(build_app(daemon), host=daemon.options.host,
                            port=daemon.options.port, log_level="warning", lifespan="off",
                            access_log=False)
    server = _Server(config)
    where = f"{daemon.options.host}:{daemon.options.port}"

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind
            server.should_exit = True
        finally:
            daemon.http_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        while not server.started:
            if server.should_exit:
                raise BackendUnavailable(f"the daemon cannot listen on {where} (port in use?)")
            await anyio.sleep(0.02)
        task_status.started(server)
