"""The forward stage: pooled upstream connections (proxy/transport.py), bodies streamed both ways.

`Forwarder.forward` is the one interface the pipeline uses. It picks a target
(proxy/balancer.py), sends the request, and relays the answer as it arrives.
Upstream redirects are passed back and compressed bodies pass untouched.
The request's framing is the gateway's: a canonical `Content-Length`, or
chunked when the client's length is unknown.

Retries (RFC 9110 §9.2.2): a request whose connection failed before any byte
of it was sent, or broke before any byte of an answer came, is tried once
more on another target when its method is idempotent (`retry_methods`) or
the route allows it. A pooled keep-alive
connection that the upstream closed under us is retried whatever the method,
as long as none of the body has been sent. Nothing is retried once the
upstream has started answering.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from ..config import UpstreamConfig
from ..errors import PayloadTooLarge
from ..http.body import BodyIncomplete, RequestBody
from ..http.reply import Reply
from ..http.request import Request
from ..metrics import Counter
from ..proxy.balancer import Target
from ..proxy.transport import (
    ConnectFailed,
    Connection,
    ConnectTimeout,
    Disconnected,
    Pool,
    QueueTimeout,
    ReadTimeout,
    ResponseHead,
    UpstreamError,
)
from ..proxy.upstream import Upstream
from .match import Route
from .mutate import client_response_fields

log = logging.getLogger("gateway.proxy")
SMALL_BODY = 64 * 1024  # a body of known length up to this size is read first and sent with the head


class Forwarder:
    def __init__(self, upstreams: Mapping[str, UpstreamConfig], outcomes: Counter) -> None:
        self.upstreams = {name: Upstream(cfg, outcomes) for name, cfg in upstreams.items()}

    def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()

    async def forward(self, request: Request, reply: Reply, route: Route, path_qs: str, fields: bytes,
                      req_id: str) -> None:
        exchange = _Exchange(route, request, fields, path_qs)
        total = exchange.timeouts.total
        if not total:
            return await _run(exchange, reply, req_id)
        try:
            async with asyncio.timeout(total):
                await _run(exchange, reply, req_id)
        except TimeoutError:
            upstream = route.upstream
            if not reply.started:
                raise upstream.timed_out() from None
            _cut(reply, "the route's total timeout")


async def _run(exchange: _Exchange, reply: Reply, req_id: str) -> None:
    try:
        head = await exchange.send()
        if not _relay_whole(reply, exchange, head, req_id):
            await _relay_rest(reply, exchange)
    finally:
        exchange.finish()


class _Exchange:
    """One request's attempts at one upstream, and the connection that answered."""

    def __init__(self, route: Route, request: Request, fields: bytes, path_qs: str) -> None:
        self.upstream = route.upstream
        self.request = request
        self.timeouts = route.timeouts
        self._route = route
        self.cors = route.cors is not None  # the gateway answers CORS here: the upstream's own fields go
        self.body = _Body(request.body, route.body_limit)
        self._fields = fields  # without the client's framing: see _Body.framing
        self._path_qs = path_qs
        self.conn: Connection | None = None
        self._pool: Pool | None = None
        self._target: Target | None = None
        self._sender: asyncio.Task[None] | None = None

    async def send(self) -> ResponseHead:
        balancer = self.upstream.balancer
        tried: list[Target] = []
        same_target_ok = False
        if self.body.exists:
            await self.body.read_small()  # before taking a connection: a slow client holds none
        while True:
            target = balancer.pick(tried) or (balancer.pick() if same_target_ok else None)
            if target is None:
                raise self.upstream.no_healthy_target()
            if self.request.note is not None:
                self.request.note.target = target.url
            tried.append(target)
            target.active += 1
            try:
                head = await self._attempt(target)
            except BaseException as exc:
                target.active -= 1
                self.finish()
                retry = self._retry(exc, target, attempts=len(tried))
                if retry is None or (retry == "other" and not balancer.candidates(tried)):
                    raise self._error(exc) from None
                same_target_ok = retry == "same"
                self.upstream.retried()
                continue
            target.succeeded()
            self.upstream.answered()
            self._target = target
            return head

    async def _attempt(self, target: Target) -> ResponseHead:
        pool = self._pool = self.upstream.pools[target]
        conn = self.conn = pool.idle() or await pool.acquire(self.timeouts.connect)
        conn.begin(head_only=self.request.method == "HEAD")
        head = _request_head(self.request.method, self._path_qs, pool, self._fields, self.body.framing)
        whole = self.body.whole
        conn.write(head + whole if whole else head)
        if whole is None:
            self._sender = asyncio.ensure_future(self.body.stream_to(conn, self.timeouts.read))
            self._sender.add_done_callback(self._body_sent)
            either: list[asyncio.Future[Any]] = [self._sender, conn.head]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if self._sender.done() and (error := self._sender.exception()) is not None:
                raise error
            if not self._sender.done():  # the upstream answers before it has the whole body: its time runs
                conn.watch(self.timeouts.read, self.timeouts.first_byte)
        else:
            conn.watch(self.timeouts.read, self.timeouts.first_byte)
        return await conn.head

    def _body_sent(self, sender: asyncio.Future[None]) -> None:
        if self.conn is not None and not sender.cancelled() and sender.exception() is None:
            self.conn.watch(self.timeouts.read, self.timeouts.first_byte)

    def finish(self) -> None:
        """Give the connection back to its pool (or close it); the exchange is over."""
        sender, self._sender = self._sender, None
        if sender is not None and (not sender.done() or sender.cancelled() or sender.exception() is not None):
            # The upstream answered before taking the whole body, or sending it failed: part of a request
            # is on this connection, so it serves no other.
            sender.cancel()
            if self.conn is not None:
                self.conn.abort()
        conn, self.conn = self.conn, None
        if conn is not None and self._pool is not None:
            self._pool.release(conn)
        if self._target is not None:
            self._target.active -= 1
            self._target = None

    def _retry(self, exc: BaseException, target: Target, attempts: int) -> str | None:
        """None: give up; "other": try another target; "same": any target will do.

        A pooled connection the upstream closed under us is no failure of the target. The request goes
        again on a fresh connection when nothing of it was written, or when it has no body or a method
        that may be retried (a request with a body was sent whole, and may have been acted on)."""
        if isinstance(exc, (_BodyTooLarge, QueueTimeout)):
            return None  # the client's doing, or the gateway's own limit: never the target's
        if isinstance(exc, Disconnected) and exc.stale and attempts < 2 and self.body.replayable():
            if exc.nothing_sent or self._may_retry() or not self.body.exists:
                return "same"
            return None
        self._count_failure(exc, target)
        if attempts >= 2 or not self.body.replayable():
            return None
        # A target that broke the connection before any byte of its answer (it died with the request in
        # flight) has answered nothing: a request that may be retried goes to another, as nginx's
        # proxy_next_upstream `error` does.
        if isinstance(exc, ConnectFailed) or (isinstance(exc, Disconnected) and exc.unanswered):
            return "other" if self._may_retry() else None
        return None

    def _may_retry(self) -> bool:
        return self._route.may_retry(self.request.method)

    def _count_failure(self, exc: BaseException, target: Target) -> None:
        if isinstance(exc, (UpstreamError, asyncio.TimeoutError)) and target.failed():
            log.warning("upstream %s: target ejected after repeated failures (%s)", self.upstream.name,
                        type(exc).__name__)

    def _error(self, exc: BaseException) -> BaseException:
        if self.body.too_large:
            return PayloadTooLarge()
        if isinstance(exc, (ConnectTimeout, ReadTimeout, QueueTimeout, asyncio.TimeoutError)):
            return self.upstream.timed_out()
        if isinstance(exc, (UpstreamError, OSError)):
            log.warning("upstream %s failed: %s: %s", self.upstream.name, type(exc).__name__, exc)
            return self.upstream.unavailable()
        return exc


class _BodyTooLarge(Exception):
    """The client's streamed body passed the route's limit: 413, and no fault of the upstream."""


class _Body:
    """The client's request body: read whole when small (so it can be sent again), else streamed."""

    def __init__(self, body: RequestBody, limit: int | None) -> None:
        self._body = body
        self._limit = limit
        self.length = body.length
        self.exists = body.exists
        self.started = False  # a byte of a streamed body that is no longer held here has been sent
        self.too_large = False
        # The whole body, when it has none or a small one that read_small() read: it goes with the head
        # and again on a retry. None: it is streamed.
        self.whole: bytes | None = None if self.exists else b""
        # Of a streamed body: its first piece, read before the head is sent and held until the second is read,
        # so that a request that meets a stale pooled connection can still be sent again whole.
        self._first: bytes | None = None
        if self.length is not None:
            self.framing = b"Content-Length: %d\r\n" % self.length
        else:
            self.framing = b"Transfer-Encoding: chunked\r\n" if self.exists else b""

    def replayable(self) -> bool:
        return not self.started and not self.too_large

    async def read_small(self) -> None:
        """Read the body into `whole` when its length is known and small, else its first piece: a body the
        client got wrong from its first bytes (a chunk size llhttp refuses, say) is then refused before any
        of the request reaches an upstream, which might act on a head whose body never comes."""
        if self.length is not None and self.length <= SMALL_BODY:
            data = await self._body.read_all(self.length)
            if len(data) != self.length:
                raise BodyIncomplete()
            self.whole = data
        else:
            self._first = await self._body.read()
            if self._body.failed:  # what came with the first piece already ends badly
                raise BodyIncomplete()

    async def stream_to(self, conn: Connection, send_timeout: float) -> None:
        chunked = self.length is None
        seen = 0
        chunk = self._first if self._first is not None else await self._body.read()
        while chunk:
            seen += len(chunk)
            if self._limit is not None and seen > self._limit:
                self.too_large = True
                raise _BodyTooLarge()
            if chunk is not self._first:  # past what is held: this attempt is the only one now
                self._first = None
                self.started = True
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain(send_timeout)
            chunk = await self._body.read()
        if chunked:
            conn.write(b"0\r\n\r\n")


def _request_head(method: str, path_qs: str, pool: Pool, fields: bytes, framing: bytes) -> bytes:
    # path_qs is the normalized path (ASCII) and the query as sent, decoded as UTF-8 with surrogateescape.
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (
        method.encode(), path_qs.encode("utf-8", "surrogateescape"), pool.host_header, fields, framing)


def _cut(reply: Reply, why: str) -> None:
    """Too late for an error status: close the client's connection so it sees a truncated body."""
    log.warning("response cut off: %s", why)
    reply.cut()


def _relay_whole(reply: Reply, exchange: _Exchange, head: ResponseHead, req_id: str) -> bool:
    """Write the head and what of the body has arrived; True when that was the whole answer."""
    conn = exchange.conn
    assert conn is not None
    fields, framed = client_response_fields(head.headers, req_id, reply.date(), cors=exchange.cors)
    first = conn.read_nowait()  # what has already arrived; never waits
    reason = head.reason or b"-"
    if conn.complete:  # the whole answer is here: one write, with a length when the upstream gave none
        reply.start(head.status, reason, fields, length=None if framed else len(first), first=first, framed=framed)
        reply.end()
        return True
    # A streamed answer: the head leaves at once (with what body is here), so that a slow or streaming
    # upstream's client sees the status without delay.
    reply.start(head.status, reason, fields, length=None, first=first, framed=framed)
    return False


async def _relay_rest(reply: Reply, exchange: _Exchange) -> None:
    conn = exchange.conn
    assert conn is not None
    try:
        while chunk := await conn.read():
            reply.write(chunk)
            await reply.drain()
    except UpstreamError as exc:
        _cut(reply, f"the upstream broke off ({type(exc).__name__})")
        return
    reply.end()
