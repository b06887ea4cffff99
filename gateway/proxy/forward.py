"""The forward stage: one shared connection pool, bodies streamed both ways.

`Forwarder.forward` is the one interface the pipeline uses. It picks a target
(balancer.py), sends the request, and relays the answer as it arrives.
Upstream redirects are passed back and compressed bodies pass untouched.

Retries (RFC 9110 §9.2.2): a request whose connection failed before any byte
of it was sent is tried once more on another target when its method is
idempotent (`retry_methods`) or the route allows it. A pooled keep-alive
connection that the upstream closed under us is retried whatever the method,
as long as none of the body has been sent. Nothing is retried once the
upstream has started answering.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ..config import RouteConfig, UpstreamConfig
from ..config.model import Timeouts
from ..errors import BadGateway, GatewayTimeout, NoHealthyUpstream, PayloadTooLarge
from .balancer import BALANCERS, Target, make_targets
from .headers import client_response_headers

log = logging.getLogger("gateway.proxy")
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Content-Type")
_REFUSED = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)  # nothing was sent
_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_TIMEOUT = (aiohttp.ServerTimeoutError, asyncio.TimeoutError)


class Upstream:
    def __init__(self, config: UpstreamConfig) -> None:
        self.name = config.name
        self.config = config
        self.targets = make_targets(config.targets, config.passive)
        self.balancer = BALANCERS[config.balance](self.targets)

    def errors(self) -> dict[str, str]:
        return {"upstream": self.name}


@dataclass(frozen=True)
class _Plan:
    """A route's proxy settings, the upstream's filled in: worked out once per route, not per request."""

    timeouts: Timeouts
    client_timeout: aiohttp.ClientTimeout
    body_limit: int | None
    retry_non_idempotent: bool

    @classmethod
    def of(cls, route: RouteConfig, upstream: UpstreamConfig) -> _Plan:
        timeouts = route.timeouts or upstream.timeouts
        return cls(
            timeouts=timeouts,
            client_timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=timeouts.read),
            body_limit=route.max_body_size or upstream.max_body_size,
            retry_non_idempotent=route.retry_non_idempotent,
        )


class Forwarder:
    def __init__(self, session: aiohttp.ClientSession, upstreams: Mapping[str, UpstreamConfig]) -> None:
        self.session = session
        self.upstreams = {name: Upstream(cfg) for name, cfg in upstreams.items()}
        self._plans: dict[int, _Plan] = {}  # by id(route): routes live as long as this forwarder's config

    def plan(self, route: RouteConfig) -> _Plan:
        plan = self._plans.get(id(route))
        if plan is None:
            plan = self._plans[id(route)] = _Plan.of(route, self.upstreams[route.upstream].config)
        return plan

    @staticmethod
    def make_session(upstreams: Mapping[str, UpstreamConfig]) -> aiohttp.ClientSession:
        limit = sum(u.max_connections for u in upstreams.values()) or 100
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=15, enable_cleanup_closed=True)
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
        )

    def body_limit(self, route: RouteConfig) -> int | None:
        return self.plan(route).body_limit

    async def forward(self, request: web.Request, route: RouteConfig, path_qs: str, headers: CIMultiDict[str],
                      req_id: str) -> web.StreamResponse:
        upstream = self.upstreams[route.upstream]
        exchange = _Exchange(self.session, upstream, request, self.plan(route), headers)
        total = exchange.timeouts.total
        response: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(total) if total else contextlib.nullcontext():  # type: ignore[attr-defined]
                upstream_response, target = await exchange.send(path_qs)
                try:
                    response = _response_for(upstream_response, req_id)
                    return await _relay(request, upstream_response, response)
                finally:
                    upstream_response.release()
                    target.active -= 1
        except TimeoutError:
            if response is None or not response.prepared:
                raise GatewayTimeout(f"Upstream {upstream.name} timed out.", extra=upstream.errors()) from None
            _cut(request, "the route's total timeout")
            return response


class _Exchange:
    """One request's attempts at one upstream."""

    def __init__(self, session: aiohttp.ClientSession, upstream: Upstream, request: web.Request, plan: _Plan,
                 headers: CIMultiDict[str]) -> None:
        self.session = session
        self.upstream = upstream
        self.request = request
        self.headers = headers
        self.timeouts = plan.timeouts
        self.limit = plan.body_limit
        self.may_retry = plan.retry_non_idempotent or request.method in upstream.config.retry_methods
        self.client_timeout = plan.client_timeout

    async def send(self, path_qs: str) -> tuple[aiohttp.ClientResponse, Target]:
        balancer = self.upstream.balancer
        tried: list[Target] = []
        same_target_ok = False
        while True:
            target = balancer.pick(tried) or (balancer.pick() if same_target_ok else None)
            if target is None:
                raise NoHealthyUpstream(extra=self.upstream.errors())
            tried.append(target)
            body = _Body(self.request.content, self.limit) if self.request.body_exists else None
            target.active += 1
            try:
                response = await self._attempt(target, path_qs, body)
            except BaseException as exc:
                target.active -= 1
                retry = self._retry(exc, target, body, attempts=len(tried))
                if retry is None or (retry == "other" and not balancer.candidates(tried)):
                    raise self._error(exc, body) from None
                same_target_ok = retry == "same"
                continue
            target.succeeded()
            return response, target

    async def _attempt(self, target: Target, path_qs: str, body: _Body | None) -> aiohttp.ClientResponse:
        first_byte = self.timeouts.first_byte
        deadline = asyncio.timeout(first_byte) if first_byte else contextlib.nullcontext()
        async with deadline:  # type: ignore[attr-defined]
            return await self.session.request(
                self.request.method, URL(target.url + path_qs, encoded=True), headers=self.headers,
                data=body.chunks() if body else None, allow_redirects=False, timeout=self.client_timeout,
            )

    def _retry(self, exc: BaseException, target: Target, body: _Body | None, attempts: int) -> str | None:
        """None: give up; "other": try another target; "same": any target will do."""
        if attempts >= 2 or (body is not None and (body.started or body.too_large)):
            self._count_failure(exc, target)
            return None
        if isinstance(exc, _REFUSED):
            self._count_failure(exc, target)
            return "other" if self.may_retry else None
        if isinstance(exc, _STALE) and not isinstance(exc, _TIMEOUT):
            return "same"  # a kept-alive connection closed under us: the target itself is fine
        self._count_failure(exc, target)
        return None

    def _count_failure(self, exc: BaseException, target: Target) -> None:
        if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError)) and target.failed():
            log.warning("upstream %s: target ejected after repeated failures (%s)", self.upstream.name,
                        type(exc).__name__)

    def _error(self, exc: BaseException, body: _Body | None) -> BaseException:
        extra = self.upstream.errors()
        if body is not None and body.too_large:
            return PayloadTooLarge()
        if isinstance(exc, _TIMEOUT):
            return GatewayTimeout(f"Upstream {self.upstream.name} timed out.", extra=extra)
        if isinstance(exc, aiohttp.ClientError):
            log.warning("upstream %s failed: %s", self.upstream.name, type(exc).__name__)
            return BadGateway(f"Upstream {self.upstream.name} is unavailable.", extra=extra)
        return exc


class _BodyTooLarge(Exception):
    pass


class _Body:
    def __init__(self, content: aiohttp.StreamReader, limit: int | None) -> None:
        self._content = content
        self._limit = limit
        self.started = False
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._content.iter_any():
            seen += len(chunk)
            if self._limit is not None and seen > self._limit:
                self.too_large = True
                raise _BodyTooLarge()
            self.started = True
            yield chunk


def _response_for(upstream: aiohttp.ClientResponse, req_id: str) -> web.StreamResponse:
    return web.StreamResponse(status=upstream.status, reason=upstream.reason,
                              headers=client_response_headers(upstream.headers, req_id))


def _cut(request: web.Request, why: str) -> None:
    """Too late for an error status: close the client's connection so it sees a truncated body."""
    log.warning("response cut off: %s", why)
    if request.transport is not None:
        request.transport.close()


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse,
                 response: web.StreamResponse) -> web.StreamResponse:
    content = upstream.content
    first = content.read_nowait()  # what has already arrived; never waits
    complete = content.at_eof()
    # When body bytes are already here, the headers leave in the same write as
    # they do (aiohttp's web.Response does the same); otherwise at once, so a
    # slow or streaming upstream's client sees the status without delay.
    response._send_headers_immediately = not (first or complete)
    await response.prepare(request)
    if complete:
        await response.write_eof(first)
        return response
    try:
        if first:
            await response.write(first)
        async for chunk in content.iter_any():
            await response.write(chunk)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        _cut(request, f"the upstream broke off ({type(exc).__name__})")
        return response
    await response.write_eof()
    return response
