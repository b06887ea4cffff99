"""The AppRunner the gateway serves with: protocol errors rendered like every other error.

aiohttp answers a request it cannot parse (a malformed request line, a header
line over the limit) before any handler or middleware runs, as text/plain
with a Server header naming its versions, and logs the offending bytes. Here
those answers are JSON with the gateway's Server header, and the log names
only the kind of error, since the offending bytes may hold a token.
"""
from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .errors import BY_STATUS, GatewayError
from .middleware import render
from .proxy.headers import SERVER

log = logging.getLogger("gateway")


class _Handler(RequestHandler):
    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        log.info("unparseable request from %s: %s", request.remote, type(exc).__name__ if exc else status)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        cls = BY_STATUS.get(status)
        error = cls() if cls is not None else GatewayError("Bad request.")
        error.status = status
        response = render(error)
        response.headers["Server"] = SERVER
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    async def _make_server(self) -> Any:
        server = await super()._make_server()
        server.__class__ = _Server  # same object and state; only the protocol class it makes differs
        return server
