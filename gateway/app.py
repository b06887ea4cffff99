"""The gateway for one configuration: its stores and stages, built once and handed to each other.

`open_gateway(config)` creates every app-wide resource in order and disposes
of them in reverse, also when creating a later one fails. `Gateway.handle`
is the request handler the HTTP server calls: the gateway's own endpoints
first, then the proxy pipeline.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator

import aiohttp

from .admin.readiness import Probe
from .auth.last_login import LastLogins
from .auth.login import Logins
from .auth.passwords import Passwords
from .auth.sessions import Sessions
from .auth.sms import make_sender
from .auth.tokens import TokenService
from .auth.user_status import UserStatusCache
from .client_ip import ClientIp
from .config import Config
from .endpoints.auth import AuthEndpoints
from .endpoints.own import OwnEndpoints
from .http.reply import Reply
from .http.request import Request
from .ids import IdWorker
from .logs import REQUEST_ID
from .metrics import GaugeValues, Metrics
from .paths import normalize_path, origin_path
from .pipeline.authenticate import Authenticator
from .pipeline.cors import Cors
from .pipeline.forward import Forwarder
from .pipeline.forward_auth import ForwardAuth
from .pipeline.match import Route, RouteTable, resolve_all
from .pipeline.mutate import RequestIds
from .pipeline.observe import RequestObserver
from .pipeline.stages import Pipeline
from .proxy.health import HealthChecker
from .ratelimit import RateLimits
from .stores.codes import CodeStore, MemoryCodeStore, RedisCodeStore
from .stores.databases import open_user_store
from .stores.failures import LoginFailures, MemoryFailures, RedisFailures
from .stores.kv import KeyValue, MemoryKV, RedisKV, connect_redis
from .stores.limits import Limiter, redis_storage
from .stores.revocation import MemoryRevocations, RedisRevocations, Revocations
from .stores.users import UserStore

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, own: OwnEndpoints, pipeline: Pipeline, *, users: UserStore, tokens: TokenService,
                 ids: IdWorker, authenticator: Authenticator, forwarder: Forwarder, kv: KeyValue | None,
                 observe: RequestObserver | None, cors: Cors | None = None) -> None:
        self._own = own
        self._pipeline = pipeline
        self._cors = cors
        self._forwarder = forwarder
        self._kv = kv  # the shared Redis; None on memory://
        self.observe = observe  # None: no metrics and no access log, nothing to tell once a request is over
        # for the tests, which reach the stores and the token service of a gateway they started
        self.users = users
        self.tokens = tokens
        self.ids = ids
        self.authenticator = authenticator

    def probes(self) -> dict[str, Probe]:
        """What /readyz asks: Redis (unless embedded), the database, and each upstream (a healthy target)."""
        probes: dict[str, Probe] = {}
        if self._kv is not None:
            probes["redis"] = self._kv.ping
        probes["database"] = self.users.ping
        for name, upstream in self._forwarder.upstreams.items():
            probes[f"upstream {name}"] = upstream.any_available
        return probes

    def gauges(self) -> GaugeValues:
        return {
            "gateway_upstream_target_healthy": [
                ((name, target.url), float(target.available()))
                for name, upstream in self._forwarder.upstreams.items() for target in upstream.targets],
            "gateway_revocation_in_sync": [((), float(self.authenticator.revocations.fresh))],
            "gateway_token_cache_size": [((), float(self.tokens.cache_size))],
        }

    async def handle(self, request: Request, reply: Reply) -> None:
        """The stores turn their drivers' errors into StoreUnavailable (503), which fails closed like any
        GatewayError: nothing here needs to know which driver a store uses."""
        REQUEST_ID.set(None)  # until the pipeline gives this request its id
        path = normalize_path(origin_path(request.path))
        own = self._own.match(path)
        if self._cors is not None and (own is None or own.cors):
            answers = self._cors.answers(path, own=own is not None)
            if answers is not None:  # None: CORS is off on this route, its upstream's to answer
                origin = request.headers.get("Origin")
                asked = request.headers.get("Access-Control-Request-Method") if request.method == "OPTIONS" else None
                if origin is not None and asked is not None:  # a preflight: answered here, never forwarded
                    reply.send(answers.preflight(origin, asked, request.headers.get("Access-Control-Request-Headers")))
                    return
                reply.extra = answers.fields(origin)
        if own is not None:
            if request.note is not None:
                request.note.route = own.route  # forward-auth: until the route it checks is matched
            reply.send(await own.endpoint(request.method)(request))
        else:
            await self._pipeline.proxy(request, reply, path)


@dataclass
class _KeyValueStores:
    kv: KeyValue  # plain keys for sessions: on the Redis primary, or memory://
    codes: CodeStore
    limits: RateLimits
    failures: LoginFailures
    revocations: Revocations


class EmbeddedStores:
    """The state of `redis.url: memory://`, made once per process and kept across reloads: a reload must
    not forget a logout, a code sent, a limit's count or a spent refresh token."""

    def __init__(self, max_ttl: float) -> None:
        self.kv = MemoryKV()
        self.failures = MemoryFailures()
        self.codes = MemoryCodeStore(self.failures)
        self.limiter = Limiter()
        self.revocations = MemoryRevocations(max_ttl)


@contextlib.asynccontextmanager
async def open_gateway(config: Config, embedded: EmbeddedStores | None = None, metrics: Metrics | None = None
                       ) -> AsyncIterator[Gateway]:
    """`embedded`: the process's memory:// state, when the configuration uses it (a new one otherwise);
    `metrics`: the process's, which outlive a generation (new ones otherwise)."""
    metrics = metrics or Metrics(enabled=config.admin is not None)
    async with contextlib.AsyncExitStack() as stack:
        stores = await stack.enter_async_context(_key_value_stores(config, embedded))
        users = await stack.enter_async_context(_user_store(config))
        last_logins = await stack.enter_async_context(_last_logins(users))
        forwarder, routes = await stack.enter_async_context(_upstreams(config, metrics))
        tokens = TokenService(config.jwt)
        ids = IdWorker(config.ids.datacenter_id, config.ids.worker_id)
        client_ip = ClientIp(config.server.trusted_proxies)
        status = UserStatusCache(users, config.revocation.user_status_cache_ttl)
        stores.revocations.on_status_change(status)
        stack.callback(stores.revocations.off_status_change, status)  # the store may outlive this generation
        authenticator = Authenticator(tokens, stores.revocations, status, decisions=metrics.auth_decisions,
                                      fail_open=config.revocation.on_redis_down == "allow")
        logins = Logins(users, stores.codes, Passwords(), stores.limits, stores.failures, last_logins, ids, config.sms,
                        config.limits)
        sessions = Sessions(tokens, stores.revocations, stores.kv, config.jwt)
        auth = AuthEndpoints(config, tokens=tokens, logins=logins, sessions=sessions, authenticator=authenticator,
                             users=users, codes=stores.codes, sms=make_sender(config.sms.sender),
                             limits=stores.limits, client_ip=client_ip, metrics=metrics)
        pipeline = Pipeline(routes, authenticator, stores.limits, client_ip, RequestIds(), forwarder)
        own = OwnEndpoints(auth, ForwardAuth(pipeline, client_ip))
        yield Gateway(own, pipeline, users=users, tokens=tokens, ids=ids, authenticator=authenticator,
                      forwarder=forwarder, kv=None if config.redis.embedded else stores.kv,
                      cors=Cors(config.cors, routes) if config.cors is not None else None,
                      observe=RequestObserver(metrics, log_access=config.server.access_log)
                      if metrics.enabled or config.server.access_log else None)


@contextlib.asynccontextmanager
async def _key_value_stores(config: Config, embedded: EmbeddedStores | None) -> AsyncIterator[_KeyValueStores]:
    max_ttl = config.jwt.refresh_ttl
    if config.redis.embedded:
        kept = embedded or EmbeddedStores(max_ttl)
        yield _KeyValueStores(kept.kv, kept.codes, RateLimits(kept.limiter, config.limits), kept.failures,
                              kept.revocations)
        return
    failures = MemoryFailures()
    primary, replica = connect_redis(config.redis)
    revocations = RedisRevocations(primary, max_ttl)
    listener = asyncio.create_task(revocations.listen())
    limiter = Limiter(redis_storage(primary, config.redis))
    try:
        await revocations.wait_until_fresh(timeout=5)
        yield _KeyValueStores(RedisKV(primary), RedisCodeStore(primary, replica, failures),
                              RateLimits(limiter, config.limits),
                              RedisFailures(primary, failures, replica), revocations)
    finally:
        await limiter.close()
        revocations.stop()
        listener.cancel()
        # redis-py can swallow a cancellation that lands mid-connect; do not wait on it for long.
        await asyncio.wait([listener], timeout=2)
        await primary.aclose()
        if replica is not None:
            await replica.aclose()


@contextlib.asynccontextmanager
async def _user_store(config: Config) -> AsyncIterator[UserStore]:
    users = await open_user_store(config.database.url, config.database.pool_size)
    try:
        yield users
    finally:
        await users.close()


@contextlib.asynccontextmanager
async def _last_logins(users: UserStore) -> AsyncIterator[LastLogins]:
    last_logins = LastLogins(users)
    writer = asyncio.create_task(last_logins.run())
    try:
        yield last_logins
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await last_logins.flush()


@contextlib.asynccontextmanager
async def _upstreams(config: Config, metrics: Metrics) -> AsyncIterator[tuple[Forwarder, RouteTable[Route]]]:
    forwarder = Forwarder(config.upstreams, metrics.upstream_requests)
    routes = RouteTable(resolve_all(config.routes, forwarder.upstreams))
    connector = aiohttp.TCPConnector(limit=len(forwarder.upstreams) * 4 or 4, enable_cleanup_closed=True)
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())  # health checks
    checks = [asyncio.create_task(HealthChecker(u, u.config.health_check, session).run())
              for u in forwarder.upstreams.values() if u.config.health_check is not None]
    try:
        yield forwarder, routes
    finally:
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        forwarder.close()
        await session.close()
