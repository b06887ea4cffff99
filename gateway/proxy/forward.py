"""The forward stage: one shared connection pool, bodies streamed both ways.

`Forwarder.forward` is the one interface the pipeline uses. Upstream
redirects are passed back, compressed bodies pass untouched, and a pooled
keep-alive connection the upstream closed is retried on a fresh one while
no byte of the request body has been consumed.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ..config import UpstreamConfig
from ..errors import BadGateway, GatewayTimeout
from .balancer import RoundRobin
from .headers import client_response_headers

log = logging.getLogger("gateway.proxy")
_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Content-Type")


class Upstream:
    def __init__(self, config: UpstreamConfig) -> None:
        self.name = config.name
        self.balancer = RoundRobin(config.targets)
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )


class Forwarder:
    def __init__(self, session: aiohttp.ClientSession, upstreams: Mapping[str, UpstreamConfig]) -> None:
        self._session = session
        self._upstreams = {name: Upstream(cfg) for name, cfg in upstreams.items()}

    @staticmethod
    def session(upstreams: Mapping[str, UpstreamConfig]) -> aiohttp.ClientSession:
        limit = sum(u.max_connections for u in upstreams.values()) or 100
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=15, enable_cleanup_closed=True)
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
        )

    async def forward(
        self, request: web.Request, upstream_name: str, path_qs: str, headers: CIMultiDict[str], req_id: str
    ) -> web.StreamResponse:
        upstream = self._upstreams[upstream_name]
        upstream_response = await self._send(request, upstream, path_qs, headers)
        try:
            return await _relay(request, upstream_response, req_id)
        finally:
            upstream_response.release()

    async def _send(
        self, request: web.Request, upstream: Upstream, path_qs: str, headers: CIMultiDict[str]
    ) -> aiohttp.ClientResponse:
        url = URL(upstream.balancer.pick() + path_qs, encoded=True)
        for attempt in (1, 2):
            body = _Body(request.content) if request.body_exists else None
            try:
                return await self._session.request(
                    request.method, url, headers=headers, data=body.chunks() if body else None,
                    allow_redirects=False, timeout=upstream.timeout,
                )
            except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
                raise GatewayTimeout(f"Upstream {upstream.name} timed out.") from None
            except _STALE as exc:
                # A kept-alive connection the upstream closed under us: safe to retry
                # only while none of the request body has been sent.
                if attempt == 2 or (body is not None and body.started):
                    log.warning("upstream %s failed: %s", upstream.name, exc)
                    raise BadGateway(f"Upstream {upstream.name} is unavailable.") from None
            except aiohttp.ClientError as exc:
                log.warning("upstream %s failed: %s", upstream.name, exc)
                raise BadGateway(f"Upstream {upstream.name} is unavailable.") from None
        raise AssertionError("unreachable")


class _Body:
    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self.started = False

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._content.iter_any():
            self.started = True
            yield chunk


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse, req_id: str) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                  headers=client_response_headers(upstream.headers, req_id))
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
        # Too late for an error status: cut the client off so it sees a truncated body.
        log.warning("upstream response broke off: %s", exc)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
