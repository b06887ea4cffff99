"""WebSockets: authenticated at the handshake like any request, then relayed frame by frame.

The upstream handshake is made first; only when the upstream accepts does
the client's connection switch protocols. An upgrade the upstream refuses is
answered as an ordinary HTTP error, so the client's connection stays plain
HTTP and its next request is authenticated afresh: no tunnel is ever opened
that later requests could ride through unchecked. Close codes are passed on
in both directions.
"""
from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ..errors import BadGateway, GatewayTimeout, NoHealthyUpstream
from .route import Route

log = logging.getLogger("gateway.proxy.websocket")


def is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket" and request.method == "GET"


async def relay_websocket(request: web.Request, session: aiohttp.ClientSession, route: Route, path_qs: str,
                          headers: CIMultiDict[str]) -> web.StreamResponse:
    upstream = route.upstream
    target = upstream.balancer.pick()
    if target is None:
        raise NoHealthyUpstream(extra=upstream.errors())
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    forwarded = CIMultiDict((k, v) for k, v in headers.items() if not k.lower().startswith("sec-websocket-"))
    timeouts = route.timeouts
    try:
        async with asyncio.timeout(timeouts.connect + (timeouts.first_byte or timeouts.read)):  # the handshake
            upstream_ws = await session.ws_connect(
                URL(target.url + path_qs, encoded=True), headers=forwarded, protocols=protocols, autoclose=False,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeouts.read),
            )
    except aiohttp.WSServerHandshakeError as exc:
        log.info("upstream %s refused a WebSocket upgrade with %s", upstream.name, exc.status)
        raise BadGateway(f"Upstream {upstream.name} refused the WebSocket upgrade.",
                         extra={**upstream.errors(), "upstream_status": str(exc.status)}) from None
    except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
        raise GatewayTimeout(f"Upstream {upstream.name} timed out.", extra=upstream.errors()) from None
    except aiohttp.ClientError:
        target.failed()
        raise BadGateway(f"Upstream {upstream.name} is unavailable.", extra=upstream.errors()) from None
    target.active += 1
    try:
        client_ws = web.WebSocketResponse(protocols=[upstream_ws.protocol] if upstream_ws.protocol else (),
                                          autoclose=False)
        await client_ws.prepare(request)
        await _pump_both(client_ws, upstream_ws)
        return client_ws
    finally:
        target.active -= 1
        await upstream_ws.close()


async def _pump_both(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Relay until either side closes, then close the other with the same code.

    Only the pumps read; closing waits until both have stopped, because an
    aiohttp close() racing a receive() in another task loses its code.
    """
    to_upstream = asyncio.create_task(_pump(client, upstream))
    to_client = asyncio.create_task(_pump(upstream, client))
    done, pending = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    finished = done.pop()
    code = finished.result() if finished.exception() is None else aiohttp.WSCloseCode.INTERNAL_ERROR
    first, second = (upstream, client) if finished is to_upstream else (client, upstream)
    await first.close(code=code)
    await second.close(code=code)


async def _pump(source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> int:
    """Forward messages until the source closes; its close code."""
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type == aiohttp.WSMsgType.ERROR:
            return aiohttp.WSCloseCode.INTERNAL_ERROR
    return source.close_code or aiohttp.WSCloseCode.OK
