"""The upstream transport: pooled keep-alive connections, responses parsed by httptools (llhttp).

aiohttp's ClientSession spends most of a proxied request's CPU on work a
proxy does not need (cookie jars, redirects, auto headers, a timer per read).
Here a request leaves in one `transport.write` (head and a small body
together), the response is parsed by llhttp, and its body is handed on with
flow control: reading from the upstream pauses while the client is slow to
take what was read.

Errors, by what was sent (pipeline/forward.py decides on retries from them):

    UpstreamError
     ├── ConnectFailed       nothing was sent: refused, unreachable
     │    └── ConnectTimeout  nor did it connect in time
     ├── Disconnected        the upstream closed or broke the connection;
     │                       `stale` when a pooled connection was closed
     │                       before any byte of an answer came back
     ├── ReadTimeout         no byte for `read` seconds, or no answer within `first_byte`
     │                       (or the upstream took none of a request body for `read` seconds)
     ├── QueueTimeout        no connection under `max_connections` within `connect`
     └── BadResponse         llhttp could not parse the answer
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from typing import Any

import httptools

from ..config.tls import ResumingContext

HIGH_WATER = 256 * 1024  # buffered response bytes at which reading from the upstream pauses
LOW_WATER = 64 * 1024
KEEPALIVE = 15.0  # seconds an idle pooled connection is kept


class UpstreamError(Exception):
    pass


class ConnectFailed(UpstreamError):
    pass


class ConnectTimeout(ConnectFailed):
    pass


class Disconnected(UpstreamError):
    """`stale`: a pooled connection the upstream closed before any byte of an answer came back;
    `nothing_sent`: it was found closed before the request was written to it; `unanswered`: no byte of an
    answer came back on it (on a new connection too: a target that died with the request in flight)."""

    MESSAGE = "the upstream closed the connection"

    def __init__(self, message: str = MESSAGE, *, stale: bool = False,
                 nothing_sent: bool = False, unanswered: bool = False) -> None:
        super().__init__(message)
        self.stale = stale or nothing_sent
        self.nothing_sent = nothing_sent
        self.unanswered = unanswered or self.stale


class QueueTimeout(UpstreamError):
    """No connection to the upstream could be had under its `max_connections` in time: not the target's fault."""


class ReadTimeout(UpstreamError):
    pass


class BadResponse(UpstreamError):
    pass


class ResponseHead:
    __slots__ = ("status", "reason", "headers")

    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers


class Connection(asyncio.Protocol):
    """One connection to a target; one exchange at a time (requests are never pipelined)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.used = 0  # exchanges started on this connection
        self.idle_since = 0.0
        self._parser: Any = None
        self._head_only = False  # a HEAD request: the answer has no body whatever its headers say
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[ResponseHead] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self.paused = False  # reading from the upstream waits for the client to take what was read
        self._until_close = False  # the answer's body ends when the connection does
        self._keep_alive = False  # the answer allows another request on this connection
        self._head_done = False  # the current message's head has been parsed: later fields are trailers
        self._sent = 0  # bytes of the current request written
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._active = False  # an exchange is under way
        self.complete = False  # the current answer has been read to its end
        self.received = False  # a byte of the current answer has come back
        self.closed = False
        self.last_read = 0.0
        # The read and first-byte timeouts, watched by one timer per connection that is moved on lazily
        # when it fires (not reset per read, nor made per exchange).
        self._read_timeout = 0.0
        self._first_byte_due = float("inf")
        self._watching = False  # the request is sent: the upstream's time to answer runs
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = float("inf")

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.last_read = self._loop.time()
        if not self._active:
            self.abort()  # bytes from the upstream while no request is under way: the connection is unusable
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101 to a request that asked for no upgrade
            self._fail(BadResponse("an upgrade nobody asked for"))
            self.abort()
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"unparseable answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self._until_close and not self.complete and exc is None:
            self._finish()  # a body with neither a length nor chunks ends with the connection (RFC 9112 §6.3)
        if not self.complete:
            stale = not self.received and self.used > 1
            why = f"the upstream closed the connection ({exc})" if exc is not None else Disconnected.MESSAGE
            self._fail(Disconnected(why, stale=stale, unanswered=not self.received))
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)  # drain() then finds the connection closed

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- llhttp callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._head_done = False
        if not self._active:  # a second answer in the bytes after the first: the upstream is confused
            self._fail(BadResponse("more than one answer to one request"))
            self.abort()

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer of a chunked answer: not a header of the answer
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): wait for the real one
            self._headers = []
            return
        self._head_done = True
        head = ResponseHead(status, self._reason, self._headers)
        self._keep_alive = self._parser.should_keep_alive()
        if not self._keep_alive:
            names = {name.lower() for name, _ in self._headers}
            self._until_close = b"content-length" not in names and b"transfer-encoding" not in names
        if self._head is not None and not self._head.done():
            self._head.set_result(head)
        if self._head_only:
            self._finish()
            self._parser = None  # the next exchange starts a fresh parser: llhttp would wait for a body

    def on_body(self, body: bytes) -> None:
        if not body:
            return
        if self._head_only or not self._active:
            # Bytes where no body may be (after the head of a HEAD answer): never the client's. The
            # connection cannot be trusted with another exchange.
            self._error = self._error or BadResponse("a body where none may be")
            self.abort()
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._head is not None and self._head.done():
            self._finish()

    # -- an exchange -----------------------------------------------------------------------------
    def begin(self, head_only: bool) -> None:
        self.used += 1
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._headers = []
        self._head = self._loop.create_future()
        self._until_close = self._keep_alive = False
        self._head_done = False
        self._sent = 0
        self._chunks.clear()
        self._buffered = 0
        self._active = True
        self.complete = self.received = False
        self._watching = False  # watch() starts the clock once the request is sent

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise Disconnected(nothing_sent=self.used > 1 and self._sent == 0, unanswered=True)
        self._sent += len(data)
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait while the upstream is not taking what was written; ReadTimeout past `timeout`."""
        if self._drain is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._drain)
            except TimeoutError:
                raise ReadTimeout("the upstream took none of the request body in time") from None
        if self.closed:
            raise Disconnected()

    @property
    def head(self) -> asyncio.Future[ResponseHead]:
        assert self._head is not None
        return self._head

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self.paused and self._buffered < LOW_WATER:
            self._resume()
        return chunk

    def read_nowait(self) -> bytes:
        """Whatever of the body has already arrived, at once."""
        if not self._chunks:
            return b""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self.paused:
            self._resume()
        return data

    def _resume(self) -> None:
        self.paused = False
        self.last_read = self._loop.time()  # the read timeout starts afresh: the wait was the client's
        if self.transport is not None:
            self.transport.resume_reading()

    def watch(self, read: float, first_byte: float | None) -> None:
        """The request is sent: from now on the upstream has `first_byte` seconds to begin its answer and
        `read` seconds for each next piece. Time the client makes it wait (reading paused) does not count,
        nor does the time an upload takes."""
        now = self.last_read = self._loop.time()
        self._read_timeout = read
        self._first_byte_due = now + first_byte if first_byte is not None else float("inf")
        self._watching = True
        due = min(now + read, self._first_byte_due)
        if due < self._timer_due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_at(due, self._check_deadlines)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = float("inf")

    def _check_deadlines(self) -> None:
        self._timer = None
        self._timer_due = float("inf")
        if not self._active or self.closed or not self._watching:
            return  # idle, or the request is still being sent: watch() arms the timer again
        now = self._loop.time()
        if self.paused:
            self.last_read = now
        if not self.received and now >= self._first_byte_due:
            self.time_out("first byte")
        elif now - self.last_read >= self._read_timeout:
            self.time_out("read")
        else:
            due = self.last_read + self._read_timeout
            self._arm(due if self.received else min(due, self._first_byte_due))

    def time_out(self, why: str) -> None:
        self._fail(ReadTimeout(why))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def keep_session(self, context: ResumingContext) -> None:
        """Offer this connection's TLS session to the next one (TLS 1.3 sends it after the handshake, so it is
        taken once an answer has come back)."""
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport is not None else None
        if ssl_object is not None and ssl_object.session is not None:
            context.session = ssl_object.session

    def reusable(self) -> bool:
        """Only a connection whose answer was read to its end and handed on whole serves another request:
        a byte of this answer left behind would go to the next client."""
        return (self.complete and not self.closed and self._error is None and not self._chunks
                and not self.paused and self._keep_alive)

    def _finish(self) -> None:
        self.complete = True
        self._active = False
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
            head.exception()  # whoever awaits it still gets the error; an exchange already over does not
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Pool:
    """Idle keep-alive connections to one target, newest first. Opening one takes a place in the upstream's
    `Limit`; when there is none, the request waits for a connection handed back or a place given up."""

    def __init__(self, host: str, port: int, limit: Limit, *, tls: ResumingContext | None = None,
                 server_name: str | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls  # https: each connection offers the TLS session of the last one
        self.server_name = (server_name or host) if tls else None  # sent as SNI, and the name checked
        name = self.server_name or host  # the upstream is asked for the name its certificate is checked for
        self.host_header = (name if port == (443 if tls else 80) else f"{name}:{port}").encode("idna")
        self._limit = limit
        self._idle: list[Connection] = []
        limit.pools.append(self)

    def idle(self) -> Connection | None:
        """A pooled connection still fit to use, at once; None when there is none (then `acquire`)."""
        if not self._idle:
            return None
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE:
                return conn
            self._close(conn)
        return None

    async def acquire(self, connect_timeout: float | None) -> Connection:
        conn = self.idle()
        if conn is not None:
            return conn
        limit = self._limit
        if limit.free == 0 and not limit.waiters:
            limit.reclaim_idle()  # an idle connection to another target gives up its place
        if limit.free > 0 and not limit.waiters:
            limit.free -= 1
        else:
            try:
                async with asyncio.timeout(connect_timeout):
                    handed = await self._wait()
            except TimeoutError:
                raise QueueTimeout("no connection could be had under max_connections in time") from None
            if handed is not None:
                return handed
        try:
            return await self._connect(connect_timeout)
        except BaseException:
            limit.give()
            raise

    async def _wait(self) -> Connection | None:
        """A connection of this pool handed back, or None: a place to open a new one."""
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        entry = (self, waiter)
        self._limit.waiters.append(entry)
        try:
            return await waiter
        except BaseException:
            if not waiter.done() or waiter.cancelled():
                with contextlib.suppress(ValueError):  # give() may have dropped it already
                    self._limit.waiters.remove(entry)
            elif (handed := waiter.result()) is not None:
                self.release(handed)
            else:
                self._limit.give()
            raise

    def release(self, conn: Connection) -> None:
        if self.tls is not None and conn.used == 1:
            conn.keep_session(self.tls)
        if not conn.reusable():
            self._close(conn)
            return
        waiters = self._limit.waiters
        for entry in waiters:
            pool, waiter = entry
            if pool is self and not waiter.done():
                waiters.remove(entry)
                waiter.set_result(conn)
                return
        if waiters:
            self._close(conn)  # its place goes to a request waiting for another target
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        for conn in self._idle:
            self._close(conn)
        self._idle.clear()

    def drop_oldest_idle(self) -> bool:
        if not self._idle:
            return False
        self._close(self._idle.pop(0))
        return True

    def _close(self, conn: Connection) -> None:
        conn.abort()
        self._limit.give()

    async def _connect(self, timeout: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: Connection(loop), self.host, self.port, ssl=self.tls,
                                                       server_hostname=self.server_name)
        except TimeoutError:
            raise ConnectTimeout("connect timed out") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(f"TLS: the upstream's certificate was refused: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise ConnectFailed(exc.strerror or type(exc).__name__) from None
        return conn


class Limit:
    """At most `free` more open connections to one upstream's targets."""

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[tuple[Pool, asyncio.Future[Connection | None]]] = collections.deque()
        self.pools: list[Pool] = []

    def reclaim_idle(self) -> None:
        """Close the oldest idle connection of any target, so that a request for another can connect."""
        for pool in self.pools:
            if pool.drop_oldest_idle():
                return

    def give(self) -> None:
        """A connection closed: its place goes to the first request waiting, else back to the count."""
        while self.waiters:
            _, waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1
