"""The one place errors become responses: always JSON `{"message": ...}`."""
from __future__ import annotations

import logging
import sqlite3

import pymysql

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from .errors import BY_STATUS, GatewayError, InternalError, ServiceUnavailable
from .proxy.headers import SERVER

log = logging.getLogger("gateway")
STORE_ERRORS = (RedisError, pymysql.err.OperationalError, pymysql.err.InterfaceError, sqlite3.Error)


def render(error: GatewayError) -> web.Response:
    response = web.json_response({"message": error.message, **error.extra}, status=error.status)
    response.headers.update(error.headers)
    return response


def _from_http_exception(exc: web.HTTPException) -> GatewayError:
    cls = BY_STATUS.get(exc.status)
    if cls is not None:
        return cls()
    error = GatewayError(exc.reason + ".")
    error.status = exc.status
    return error


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as error:
        return render(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        translated = _from_http_exception(exc)
        if exc.status == 405:
            translated.headers["Allow"] = exc.headers.get("Allow", "")
        return render(translated)
    except ConnectionResetError:
        # The client went away in the middle of its answer (wrk does, at the end of every run): there is no
        # one to answer and nothing went wrong here. aiohttp drops this response quietly when it cannot write.
        log.debug("client went away during %s %s", request.method, request.path)
        return web.Response(status=499)
    except STORE_ERRORS as exc:
        # A store the gateway needs is down: fail closed, whichever stage noticed.
        log.error("store unavailable on %s %s: %s", request.method, request.path, exc)
        return render(ServiceUnavailable())
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render(InternalError())


async def set_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER
