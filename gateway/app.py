"""create_app(config): wiring only."""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from . import keys
from .auth import handlers
from .auth.authenticate import Authenticator
from .auth.login import Logins
from .auth.passwords import Passwords
from .auth.sessions import Sessions
from .auth.sms import make_sender
from .auth.tokens import TokenService
from .auth.user_status import UserStatusCache
from .config import Config
from .errors import MethodNotAllowed
from .forward_auth import forward_auth
from .ids import IdWorker
from .middleware import render_errors, set_server_header
from .pipeline import defer_continue, proxy
from .proxy.forward import Forwarder
from .proxy.health import HealthChecker
from .proxy.headers import RequestIds
from .proxy.route import resolve_all
from .ratelimit import RateLimits
from .routing import RouteTable
from .stores.codes import MemoryCodeStore, RedisCodeStore
from .stores.kv import MemoryKV, connect_redis
from .stores.limits import Limiter, redis_storage
from .stores.revocation import MemoryRevocations, RedisRevocations
from .stores.users import open_user_store

log = logging.getLogger("gateway")


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[render_errors], handler_args={"max_field_size": 16384})
    app[keys.CONFIG] = config
    app[keys.TOKENS] = TokenService(config.jwt)
    app[keys.IDS] = IdWorker(config.ids.datacenter_id, config.ids.worker_id)
    app[keys.SMS] = make_sender(config.sms.sender)
    app[keys.REQUEST_IDS] = RequestIds()
    app.cleanup_ctx.extend([_redis, _database, _services, _upstreams])
    app.on_response_prepare.append(set_server_header)
    _add_own(app, "/v1_0/sms/codes/{mobile}", {"GET": handlers.send_code})
    _add_own(app, "/v1_0/authorizations", {"POST": handlers.login, "PUT": handlers.refresh, "DELETE": handlers.logout})
    _add_own(app, "/.well-known/jwks.json", {"GET": handlers.jwks})
    app.router.add_route("*", "/_gateway/auth{path:(/.*)?}", forward_auth)
    app.router.add_route("*", "/{path:.*}", proxy, expect_handler=defer_continue)
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
    config = app[keys.CONFIG]
    max_ttl = config.jwt.refresh_ttl
    if config.redis.embedded:
        app[keys.KV] = MemoryKV()
        app[keys.CODES] = MemoryCodeStore()
        app[keys.RATE_LIMITS] = RateLimits(Limiter(), config.limits)
        app[keys.REVOCATIONS] = MemoryRevocations(max_ttl)
        yield
        return
    primary, replica = connect_redis(config.redis)
    revocations = RedisRevocations(primary, max_ttl)
    app[keys.KV] = primary
    app[keys.CODES] = RedisCodeStore(primary, replica)
    app[keys.RATE_LIMITS] = RateLimits(Limiter(redis_storage(primary)), config.limits)
    app[keys.REVOCATIONS] = revocations
    listener = asyncio.create_task(revocations.listen())
    await revocations.wait_until_fresh(timeout=5)
    try:
        yield
    finally:
        revocations.stop()
        listener.cancel()
        # redis-py can swallow a cancellation that lands mid-connect; do not wait on it for long.
        await asyncio.wait([listener], timeout=2)
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


async def _services(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    revocations = app[keys.REVOCATIONS]
    status = UserStatusCache(app[keys.USERS], config.revocation.user_status_cache_ttl)
    revocations.on_status_change(status.forget)
    app[keys.AUTHENTICATOR] = Authenticator(app[keys.TOKENS], revocations, status,
                                            fail_open=config.revocation.on_redis_down == "allow")
    app[keys.LOGINS] = Logins(app[keys.USERS], app[keys.CODES], Passwords(), app[keys.RATE_LIMITS],
                              app[keys.IDS], config.sms)
    app[keys.SESSIONS] = Sessions(app[keys.TOKENS], revocations, app[keys.KV], config.jwt)
    yield


async def _upstreams(app: web.Application) -> AsyncIterator[None]:
    upstreams = app[keys.CONFIG].upstreams
    session = Forwarder.make_session(upstreams)
    forwarder = Forwarder(session, upstreams)
    app[keys.FORWARDER] = forwarder
    app[keys.ROUTES] = RouteTable(resolve_all(app[keys.CONFIG].routes, forwarder.upstreams))
    checks = [asyncio.create_task(HealthChecker(u.name, u.targets, u.config.health_check, session).run())
              for u in forwarder.upstreams.values() if u.config.health_check is not None]
    try:
        yield
    finally:
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        forwarder.close()
        await session.close()
