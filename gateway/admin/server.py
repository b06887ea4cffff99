"""The admin listener: GET /metrics, /healthz and /readyz, JSON 404 for anything else.

It has its own port (`admin.port`), so that the public port's routes can
neither serve nor shadow these paths. It belongs to the process that owns
the metrics: the one process, or the supervisor of `server.workers: N`.
"""
from __future__ import annotations

import json
import logging
import socket
from typing import Any, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..config.model import AdminConfig
from ..metrics import Snapshot
from .exposition import CONTENT_TYPE, render
from .readiness import Readiness


class _ClientFaults(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, but a request it could not parse (a client's doing: CL.TE, a bad field) is
    one INFO line, not an ERROR with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.info("admin listener: unparseable request (%s)", type(exc_info).__name__)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


class AdminServer:
    def __init__(self, config: AdminConfig, snapshot: Callable[[], Snapshot], readiness: Readiness) -> None:
        self._config = config
        self._snapshot = snapshot
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self.port = config.port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=_ClientFaults())
        await self._runner.setup()
        host = self._config.host
        sock = socket.create_server((host, self._config.port),
                                    family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.port = sock.getsockname()[1]  # the one the system chose, for `port: 0`
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        paths = {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz}
        handler = paths.get(request.path)
        if handler is None:
            return _json({"message": "Not found."}, 404)
        if request.method not in ("GET", "HEAD"):
            return _json({"message": "Method not allowed."}, 405, headers={"Allow": "GET, HEAD"})
        return await handler()

    async def _metrics(self) -> web.Response:
        return web.Response(body=render(self._snapshot()), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def _readyz(self) -> web.Response:
        failing = await self._readiness.failing()
        if failing:
            return _json({"status": "not ready", "failing": failing}, 503)
        return _json({"status": "ready"}, 200)


def _json(data: object, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, headers={
        "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store", **(headers or {})})
