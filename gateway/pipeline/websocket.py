"""WebSockets: authenticated at the handshake like any request, then a byte tunnel.

The upstream handshake is made first, on a connection of its own; only when
the upstream answers 101 does the client's connection switch protocols, and
from then on bytes pass both ways as they are (frames, close codes and
extensions are the two ends' business), with flow control each way. An
upgrade the upstream refuses is answered as an ordinary HTTP error, so the
client's connection stays plain HTTP and its next request is authenticated
afresh: no tunnel is ever opened that later requests could ride through
unchecked.

Two limits hold (`websocket` of the upstream or the route): a client's
message larger than `max_message_size` closes the tunnel with 1009, and a
tunnel with no byte either way for `idle_timeout` is closed with 1001; the
client gets the close frame, the upstream its connection closed.
"""
from __future__ import annotations

import asyncio
import logging

import httptools

from ..http.reply import ClientGone, Reply
from ..http.request import Request
from .frames import CLOSE_GOING_AWAY, CLOSE_TOO_BIG, MessageSizes, close_frame
from .match import Route
from .mutate import RESPONSE_DROP_RAW, RawFields

log = logging.getLogger("gateway.proxy.websocket")


def is_upgrade(request: Request) -> bool:
    return request.upgrade and request.method == "GET" and \
        (request.headers.get("Upgrade") or "").lower() == "websocket"


async def relay_websocket(request: Request, reply: Reply, route: Route, path_qs: str, fields: bytes) -> None:
    upstream = route.upstream
    target = upstream.balancer.pick()
    if target is None:
        raise upstream.no_healthy_target()
    pool = upstream.pools[target]
    head = b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n%s\r\n" % (
        path_qs.encode("utf-8", "surrogateescape"), pool.host_header, fields)
    loop = asyncio.get_running_loop()
    side = _UpstreamSide(loop)
    timeouts = route.timeouts
    try:
        async with asyncio.timeout(timeouts.connect + (timeouts.first_byte or timeouts.read)):  # the handshake
            await loop.create_connection(lambda: side, pool.host, pool.port, ssl=pool.tls,  # wss to an https target
                                         server_hostname=pool.server_name)
            side.write(head)
            status = await side.status
        upstream.answered()
    except TimeoutError:
        side.close()
        raise upstream.timed_out() from None
    except (OSError, _Broken) as exc:
        side.close()
        target.failed()
        log.warning("upstream %s: the WebSocket handshake failed: %s %s", upstream.name, type(exc).__name__, exc)
        raise upstream.unavailable() from None
    if status != 101:
        side.close()
        log.info("upstream %s refused a WebSocket upgrade with %s", upstream.name, status)
        raise upstream.refused_upgrade(status)
    target.active += 1
    limits = route.websocket
    sizes = MessageSizes(limits.max_message_size)

    def from_client(data: bytes) -> None:
        side.seen = loop.time()
        if sizes.feed(data):
            side.write(data)
        else:
            log.info("upstream %s: a WebSocket message over %d bytes: closed (1009)", upstream.name,
                     limits.max_message_size)
            _end_tunnel(reply, side, CLOSE_TOO_BIG, b"message too big")

    try:
        lines = b"".join(b"%s: %s\r\n" % (name, value) for name, value in side.fields
                         if name.lower() not in RESPONSE_DROP_RAW)
        reply.start(101, b"Switching Protocols", b"Connection: Upgrade\r\nUpgrade: websocket\r\n" + lines,
                    length=None, framed=True)
        early = reply.take_over(from_client, side.close, side.pause_reading)
        side.join(reply)
        if early:
            from_client(early)
        while not side.done.done():  # the idle timeout, looked at when it would run out
            left = side.seen + limits.idle_timeout - loop.time()
            if left <= 0:
                log.info("upstream %s: a WebSocket idle for %gs: closed (1001)", upstream.name, limits.idle_timeout)
                _end_tunnel(reply, side, CLOSE_GOING_AWAY, b"idle")
                break
            await asyncio.wait([side.done], timeout=left)
    finally:
        target.active -= 1
        side.close()


def _end_tunnel(reply: Reply, side: _UpstreamSide, code: int, reason: bytes) -> None:
    """The client gets a close frame with `code`, the upstream its connection closed."""
    try:
        reply.send_raw(close_frame(code, reason))
        reply.close()
    except ClientGone:
        pass
    side.close()


class _Broken(Exception):
    """The upstream's answer to the handshake could not be parsed, or the connection ended first."""


class _UpstreamSide(asyncio.Protocol):
    """The upstream's end of a tunnel: parses the handshake answer, then passes bytes to the client."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.status: asyncio.Future[int] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.fields: RawFields = []
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: Reply | None = None
        self._early = b""  # bytes the upstream sent after its 101, before the client joined
        self.seen = loop.time()  # when a byte last went through, either way (the idle timeout)
        self._loop = loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.seen = self._loop.time()
        if self._parser is not None:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                self._parser = None
                self._early = data[exc.args[0]:]
            except httptools.HttpParserError:
                self._end(_Broken())
            return
        if self._client is None:
            self._early += data
            return
        try:
            self._client.send_raw(data)
        except ClientGone:
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            self.fields = []  # an interim answer: the real one follows
        elif not self.status.done():
            self.status.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(_Broken())
        if self._client is not None:
            self._client.close()

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.pause_reading(True)

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.pause_reading(False)

    # -- the client's side ----------------------------------------------------------------------------
    def join(self, client: Reply) -> None:
        self._client = client
        early, self._early = self._early, b""
        if early:
            client.send_raw(early)

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def pause_reading(self, pause: bool) -> None:
        """The client is slow to take what the upstream sends."""
        if self._transport is not None and not self._transport.is_closing():
            if pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._end(_Broken())

    def _end(self, error: Exception) -> None:
        if not self.status.done():
            self.status.set_exception(error)
            self.status.exception()  # retrieved: nobody may be waiting any more
        if not self.done.done():
            self.done.set_result(None)
