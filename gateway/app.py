"""create_app(config): wiring only."""
from __future__ import annotations

import logging
from typing import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from . import keys
from .auth import handlers
from .auth.sms import make_sender
from .auth.tokens import TokenService
from .config import Config
from .errors import MethodNotAllowed
from .ids import IdWorker
from .middleware import render_errors, set_server_header
from .pipeline import proxy
from .proxy.forward import Forwarder
from .proxy.headers import RequestIds
from .routing import RouteTable
from .stores.codes import CodeStore
from .stores.kv import connect
from .stores.users import open_user_store

log = logging.getLogger("gateway")


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[render_errors], handler_args={"max_field_size": 16384})
    app[keys.CONFIG] = config
    app[keys.TOKENS] = TokenService(config.jwt)
    app[keys.ROUTES] = RouteTable(config.routes)
    app[keys.IDS] = IdWorker(config.ids.datacenter_id, config.ids.worker_id)
    app[keys.SMS] = make_sender(config.sms.sender)
    app[keys.REQUEST_IDS] = RequestIds()
    app.cleanup_ctx.extend([_redis, _database, _upstreams])
    app.on_response_prepare.append(set_server_header)
    _add_own(app, "/v1_0/sms/codes/{mobile}", {"GET": handlers.send_code})
    _add_own(app, "/v1_0/authorizations", {"POST": handlers.login, "PUT": handlers.refresh})
    app.router.add_route("*", "/{path:.*}", proxy)
    return app


def _add_own(app: web.Application, path: str, methods: dict[str, Handler]) -> None:
    """The gateway's own endpoints: never proxied, whatever the method."""
    resource = app.router.add_resource(path)
    for method, handler in methods.items():
        resource.add_route(method, handler)
    allow = ", ".join(methods)

    async def not_allowed(request: web.Request) -> web.StreamResponse:
        raise MethodNotAllowed(headers={"Allow": allow})

    resource.add_route("*", not_allowed)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG].redis
    primary = connect(config.url)
    replica = connect(config.replica_url) if config.replica_url else None
    app[keys.CODES] = CodeStore(primary, replica)
    try:
        yield
    finally:
        await primary.aclose()  # type: ignore[attr-defined]
        if replica is not None:
            await replica.aclose()  # type: ignore[attr-defined]


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG].database
    users = await open_user_store(config.url, config.pool_size)
    app[keys.USERS] = users
    try:
        yield
    finally:
        await users.close()


async def _upstreams(app: web.Application) -> AsyncIterator[None]:
    upstreams = app[keys.CONFIG].upstreams
    session = Forwarder.session(upstreams)
    app[keys.FORWARDER] = Forwarder(session, upstreams)
    try:
        yield
    finally:
        await session.close()
