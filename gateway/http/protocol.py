"""One client connection: HTTP/1.1 parsed by llhttp, one request handled at a time.

Pipelined requests wait their turn (reading pauses meanwhile). A request
that llhttp refuses, or whose head is too large, gets its JSON error once
the requests before it are answered, and the connection closes. A
kept-alive connection idle for `keepalive_timeout` is closed. A request
head must arrive whole within `header_timeout` of its first byte (a new
connection's first head, of the accept): one that is late gets 408, and a
new connection that sends nothing in that time is closed (slowloris). Closing after an answer whose request body was not
read lingers: the write side is shut and what the client still sends is
read and dropped for a moment, so that its unread bytes do not turn into a
reset that destroys the answer before the client reads it.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from email.utils import formatdate
from typing import Awaitable, Callable

import httptools

from ..errors import (BadRequest, ExpectationFailed, GatewayError, HeadersTooLarge, InternalError, RequestTimeout,
                      UriTooLong)
from ..logs import REQUEST_ID
from .body import RequestBody
from .reply import ClientGone, Reply
from .request import Headers, RawFields, Request, RequestNote
from .response import error_response

log = logging.getLogger("gateway")

Handler = Callable[[Request, Reply], Awaitable[None]]
# Told of every request once it is over: its answer, the error that ended it (if one did), and whether the
# client went away before it was answered. The access log and the metrics (pipeline/observe.py).
Observer = Callable[[Request, Reply, "GatewayError | None", bool], None]
LINGER = 2.0  # seconds to read and drop what a client still sends after its answer
FIRST_REQUEST_GRACE = 1.0  # seconds a new connection has to send its first request once draining began
MAX_FIELD = 16 * 1024  # one header field, or the request-target
MAX_HEAD = 64 * 1024  # the whole head
MAX_FIELDS = 100  # field lines in a head, as Apache's LimitRequestFields and Envoy's max_headers_count
# A second line of one of these is refused: RFC 9112 §3.2 (Host), RFC 9110 §11.6.2 (one credential). With two,
# an upstream may act on the one the gateway did not check.
_SINGLETONS = {b"authorization": "Only one Authorization field is allowed.", b"host": "Only one Host field is allowed."}


class _Refused(Exception):
    """Raised from an llhttp callback, which llhttp turns into a parse error: the request is refused
    with the error set beside it (`HttpProtocol._refused`)."""


class Connections:
    """The open connections of one server, for draining, and the Date field, made once a second."""

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self.open: set[HttpProtocol] = set()
        self._on_close = on_close  # told of each connection that closes (the worker table's count)
        self.closing = False  # draining: no request after the one under way
        self.drained = False  # the drain is over
        self._second = -1
        self._date = b""
        self._empty: asyncio.Event | None = None

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, formatdate(now, usegmt=True).encode()
        return self._date

    def closed(self, conn: HttpProtocol) -> None:
        if conn in self.open:
            self.open.remove(conn)
            if self._on_close is not None:
                self._on_close()
        if not self.open and self._empty is not None:
            self._empty.set()

    async def drain(self, timeout: float) -> None:
        """Idle connections close now, busy ones after their answer; those left after `timeout` are cut."""
        self.closing = True
        self._empty = asyncio.Event()
        for conn in list(self.open):
            conn.shutdown()
        if self.open:
            try:
                await asyncio.wait_for(self._empty.wait(), timeout)
            except TimeoutError:
                pass
        self.drained = True
        for conn in list(self.open):
            conn.abort()


class HttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, connections: Connections, *, scheme: str = "http",
                 keepalive_timeout: float = 75.0, header_timeout: float = 10.0, client_timeout: float = 60.0,
                 observe: Observer | None = None) -> None:
        self._handler = handler
        self.connections = connections
        self._scheme = scheme
        self._keepalive_timeout = keepalive_timeout
        self._header_timeout = header_timeout
        self._client_timeout = client_timeout  # a client that sends none of its body, or takes none of its answer
        self._observe = observe
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._peer = ""
        self._tls = False
        self._parser: httptools.HttpRequestParser | None = None
        self._url: list[bytes] = []
        self._fields: RawFields = []
        self._first: dict[bytes, bytes] = {}  # the first value of each field, by lowercase name
        self._head_size = 0  # of the fields
        self._length: int | None = None
        self._chunked = False
        self._expect: bytes | None = None
        self._refusal: GatewayError | None = None
        self._in_head = False  # reading a request head (trailers after a body are not fields of it)
        self._url_size = 0
        self._progressed = False  # llhttp called back during the current feed
        self._stalled = 0  # bytes fed in a row with no callback: one field still arriving
        self._peer_done = False  # the client shut its sending side: answer what it sent, then close
        self._next_when_drained = False  # the client is not taking our answers: serve no more until it does
        self._body: RequestBody | None = None  # the body being parsed
        self._queue: collections.deque[Request | GatewayError] = collections.deque()
        self._busy = False  # a request is being handled
        self._started = 0  # requests begun on this connection
        # One task per connection serves its requests in turn (a task per request costs more than the
        # rest of the server's work for one): it waits on `_waiter` for the next when there is none.
        self._task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[Request] | None = None
        self._pending: Request | None = None
        self._after_upgrade: bytes | None = None  # bytes after a request that asked to switch protocols
        self._last: Request | None = None  # the request parsed last
        self._upgrading: Request | None = None  # the request after which llhttp stopped: it asked to upgrade
        self._tunnel: tuple[Callable[[bytes], None], Callable[[], None], Callable[[bool], None]] | None = None
        # why reading from the client is paused, a bit each: 1 body buffer full, 2 requests queued, 4 an upgrade
        # pending, 8 the tunnel's other end backed up, 16 the client not taking its answers (0xFF: all)
        self._paused = 0
        self._drain: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # when the connection began to wait for a request head
        self._head_since: float | None = None  # when the first byte of a head not yet whole arrived
        self.closed = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        self._parser = httptools.HttpRequestParser(self)
        # Requests without a body share these (nothing in them changes): one fewer object per request.
        self._no_body = RequestBody(length=None, exists=False, pause=self._pause_for_body)
        self._empty_body = RequestBody(length=0, exists=False, pause=self._pause_for_body)
        self.connections.open.add(self)
        self._tls = transport.get_extra_info("ssl_object") is not None
        if self.connections.drained:
            # Its TLS handshake ended after this generation had drained and let go of its stores: there is
            # nothing to serve it with. (One that ends while the drain is under way is served one request.)
            self._parser = None
            self._close(lingering=False)
            return
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel[0](data)
        elif self._after_upgrade is not None:
            self._after_upgrade += data
        elif self._parser is not None:
            self._feed(data)
        # else: lingering before close, or after a refusal: dropped

    def eof_received(self) -> bool | None:
        if self._tunnel is not None:
            self._tunnel[1]()
            return None
        if (self._busy or self._queue) and not self._tls:
            self._peer_done = True  # a client may shut its side once it has sent: it still gets its answer
            return True
        return None  # close (TLS has no half-closed state: close_notify ends the connection)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.closed(self)
        self._cancel_timer()
        if self._body is not None:
            self._body.fail()
        for queued in self._queue:
            if isinstance(queued, Request):
                queued.body.fail()
        self._queue.clear()
        if self._tunnel is not None:
            self._tunnel[1]()
        self._wake_writer()
        if self._waiter is not None:
            self._waiter.cancel()  # the connection's task ends

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self._loop.create_future()
        if self._tunnel is not None:
            self._tunnel[2](True)

    def resume_writing(self) -> None:
        self._wake_writer()
        if self._tunnel is not None:
            self._tunnel[2](False)
        if self._next_when_drained:
            self._next_when_drained = False
            self._pause(16, False)
            if not self._busy:
                self._next()

    # -- parsing ------------------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        assert self._parser is not None
        self._progressed = False
        try:
            self._parser.feed_data(data)
            # llhttp calls back only once a field is whole: bytes of a field that never ends would pile up
            # in the parser (at a quadratic cost) without ever reaching the size checks of the callbacks.
            self._stalled = 0 if self._progressed else self._stalled + len(data)
            if self._stalled > MAX_HEAD and self._parser is not None:
                self._refuse(HeadersTooLarge())
            elif self._in_head and self._head_since is None and self._parser is not None:
                self._head_arriving()
        except httptools.HttpParserUpgrade as exc:
            self._parser = None
            self._after_upgrade = data[exc.args[0]:]
            self._upgrading = self._last
            self._pause(4, True)
        except httptools.HttpParserError as exc:
            refusal, self._refusal = self._refusal, None
            log.info("unparseable request from %s: %s", self._peer,
                     type(refusal).__name__ if refusal is not None else type(exc).__name__)
            self._refuse(refusal or BadRequest())

    def on_message_begin(self) -> None:
        self._progressed = True
        self._in_head = True
        self._url_size = 0
        self._url = []
        self._fields = []
        self._first = {}
        self._head_size = 0
        self._length = None
        self._chunked = False
        self._expect = None

    def on_url(self, url: bytes) -> None:
        self._progressed = True
        self._url.append(url)
        self._url_size += len(url)
        if self._url_size > MAX_FIELD:
            raise self._refused(UriTooLong())

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progressed = True
        if not self._in_head:
            return  # a trailer of a chunked body: never a field of the request
        size = len(name) + len(value)
        self._head_size += size
        if size > MAX_FIELD or self._head_size > MAX_HEAD or len(self._fields) >= MAX_FIELDS:
            raise self._refused(HeadersTooLarge())  # the count too: a field of one byte costs a line upstream
        self._fields.append((name, value))
        lowered = name.lower()
        if lowered in self._first and lowered in _SINGLETONS:
            raise self._refused(BadRequest(_SINGLETONS[lowered]))
        self._first.setdefault(lowered, value)
        if lowered == b"content-length":
            try:
                self._length = int(value)  # llhttp refuses two that differ, and forwarded is this number
            except ValueError:
                raise self._refused(BadRequest("Invalid Content-Length.")) from None
        elif lowered == b"transfer-encoding":
            # RFC 9112 §6.1: chunked is the one coding a request body may have, and it comes last; a
            # value the gateway would read one way and an upstream another is refused.
            if value.strip().lower() != b"chunked":
                raise self._refused(BadRequest("Transfer-Encoding other than chunked is not supported."))
            self._chunked = True
        elif lowered == b"expect":
            self._expect = value.strip().lower()

    def _refused(self, error: GatewayError) -> _Refused:
        self._refusal = error
        return _Refused()

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        self._progressed = True
        self._in_head = False
        self._waiting_since = self._head_since = None
        version = parser.get_http_version()
        if self._chunked and version == "1.0":
            # RFC 9112 §6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is faulty (a 1.0 hop
            # may have passed the chunks on as they were): refused, and the connection closed.
            raise self._refused(BadRequest("Transfer-Encoding is not allowed in HTTP/1.0."))
        exists = self._chunked or bool(self._length)
        upgrade = parser.should_upgrade()
        if exists and upgrade:
            # llhttp skips the body of a request that asks to switch protocols: its bytes would be read as
            # the next request when the switch is refused. A body there has no use; refuse it.
            raise self._refused(BadRequest("A request that asks to upgrade may not have a body."))
        go_on = None
        if self._expect is not None:
            if self._expect != b"100-continue":
                raise self._refused(ExpectationFailed())
            if version == "1.1" and exists:
                go_on = self._continue
        if exists:
            body = RequestBody(length=None if self._chunked else self._length, exists=True,
                               pause=self._pause_for_body, go_on=go_on, timeout=self._client_timeout)
        else:
            body = self._no_body if self._length is None else self._empty_body
        self._body = body
        request = Request(parser.get_method().decode("ascii"),
                          b"".join(self._url).decode("utf-8", "surrogateescape"), version,
                          Headers(self._fields, self._first), self._peer, self._scheme, body,
                          RequestNote(time.monotonic(), self._peer) if self._observe is not None else None,
                          keep_alive=parser.should_keep_alive(), upgrade=upgrade)
        self._last = request
        if self._busy:
            self._queue.append(request)
            self._pause(2, True)
        else:
            self._start(request)

    def on_body(self, body: bytes) -> None:
        self._progressed = True
        if self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        self._progressed = True
        if self._body is not None:
            self._body.end()
            self._body = None

    def _refuse(self, error: GatewayError) -> None:
        """Stop reading requests; answer `error` once the requests before it are answered, then close."""
        self._parser = None
        if self._body is not None:
            self._body.fail()
            self._body = None
        if self._busy:
            self._queue.append(error)
        else:
            self._answer_refusal(error)

    def _answer_refusal(self, error: GatewayError) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        # no request could be read: its method and path are "-" wherever they are shown
        request = Request("-", "-", "1.1", Headers([]), self._peer, self._scheme, self._no_body,
                          RequestNote(time.monotonic(), self._peer), keep_alive=False, upgrade=False)
        REQUEST_ID.set(None)  # queued behind a pipelined request, this runs in its task: not its id
        reply = Reply(self, request)
        reply.send(error_response(error))
        if self._observe is not None:
            self._observe(request, reply, error, False)
        self._close(lingering=True)

    # -- handling -----------------------------------------------------------------------------------
    def _start(self, request: Request) -> None:
        self._busy = True
        self._started += 1
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(request)
            return
        self._pending = request
        if self._task is None:
            self._task = self._loop.create_task(self._serve())

    async def _serve(self) -> None:
        while not self.closed:
            request, self._pending = self._pending, None
            if request is None:
                self._waiter = self._loop.create_future()
                try:
                    request = await self._waiter
                except asyncio.CancelledError:
                    return
            reply = Reply(self, request)
            error: GatewayError | None = None
            gone = False
            try:
                await self._handler(request, reply)
            except ClientGone:
                log.debug("client went away during %s %s", request.method, request.path)
                gone = True
            except GatewayError as exc:
                error = exc
                self._fail(reply, exc)
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path)
                error = InternalError()
                self._fail(reply, error)
            finally:
                if self._observe is not None:
                    self._observe(request, reply, error, gone or self.closed and not reply.finished)
                self._done(request, reply)

    def _fail(self, reply: Reply, error: GatewayError) -> None:
        if log.isEnabledFor(logging.DEBUG):  # why a request was refused: server.log_level DEBUG answers it
            log.debug("answered %d: %s%s", error.status, error.message,
                      f" ({error.reason})" if error.reason else "")
        if self.closed:
            return
        if reply.started:
            reply.cut()
        else:
            reply.send(error_response(error))

    def _done(self, request: Request, reply: Reply) -> None:
        self._busy = False
        if reply.took_over or self.closed:
            return
        if not reply.finished:
            reply.cut()  # a handler that neither answered nor failed: the answer is unusable
            return
        if not reply.keep_alive or self._peer_done and not self._queue:
            self._close(lingering=not request.body.complete)
            return
        request.body.discard()  # what the handler left unread: its buffer, and the pause it may hold
        if request is self._upgrading:  # the upgrade was not made: the connection stays HTTP
            leftover, self._after_upgrade, self._upgrading = self._after_upgrade or b"", None, None
            self._parser = httptools.HttpRequestParser(self)
            self._pause(4, False)
            if leftover:
                self._feed(leftover)
            if self._busy:
                return
        self._next()

    def _next(self) -> None:
        if self._drain is not None:  # the client is not reading its answers: read and serve no more for now
            self._next_when_drained = True
            self._pause(16, True)
            self._idle()
            return
        while self._queue:
            queued = self._queue.popleft()
            if isinstance(queued, GatewayError):
                self._answer_refusal(queued)
                return
            if not self._queue:
                self._pause(2, False)
            self._start(queued)
            return
        if self.connections.closing:
            self._close(lingering=False)
        else:
            self._idle()

    def _close(self, *, lingering: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._parser = None
        self._after_upgrade = None
        self._cancel_timer()
        if lingering and transport.can_write_eof():
            transport.write_eof()
            self._pause(0xFF, False)
            self._timer = self._loop.call_later(LINGER, transport.close)
        else:
            transport.close()  # once what was written has left; a client that takes none of it is cut off:
            self._timer = self._loop.call_later(self._client_timeout, transport.abort)

    # -- timers and flow control --------------------------------------------------------------------
    def _idle(self) -> None:
        """Wait for the next request head. One timer per connection, moved on lazily when it fires (a
        timer per request costs more than the rest of a request's bookkeeping)."""
        self._waiting_since = now = self._loop.time()
        if self._head_since is not None:  # the next head began to arrive while this request was served
            self._rearm()
        elif self._timer is None:
            wait = self._header_timeout if self._started == 0 else self._keepalive_timeout
            self._timer = self._loop.call_at(now + wait, self._check_idle)

    def _deadline(self) -> float | None:
        """When waiting for the next request head ends; None while a request is being handled. A new
        connection's first head is due `header_timeout` after the accept, a later head that long after its
        first byte (or after the answer before it, for one that began while that was being served)."""
        since = self._waiting_since
        if since is None:
            return None
        if self._started == 0:
            return since + self._header_timeout
        if self._head_since is not None:
            return max(since, self._head_since) + self._header_timeout
        return since + self._keepalive_timeout

    def _head_arriving(self) -> None:
        """A head came in part (rare: most arrive in one read): its deadline may be before the timer's."""
        self._head_since = self._loop.time()
        self._rearm()

    def _rearm(self) -> None:
        deadline = self._deadline()
        if deadline is not None and (self._timer is None or self._timer.when() > deadline):
            self._cancel_timer()
            self._timer = self._loop.call_at(deadline, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        deadline = self._deadline()
        if deadline is None:  # a request is being handled: wait for it and for the next head
            self._timer = self._loop.call_later(self._keepalive_timeout, self._check_idle)
        elif self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check_idle)
        elif self._head_since is not None and self._parser is not None:
            log.info("request head from %s not whole within %ss", self._peer, self._header_timeout)
            self._refuse(RequestTimeout("Request header timed out."))
        else:
            self._close(lingering=False)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pause(self, reason: int, on: bool) -> None:
        before = self._paused
        self._paused = before | reason if on else before & ~reason
        if self.transport is None or self.transport.is_closing() or bool(before) == bool(self._paused):
            return
        if self._paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _pause_for_body(self, on: bool) -> None:
        self._pause(1, on)

    def pause_for_tunnel(self, on: bool) -> None:
        self._pause(8, on)

    def _continue(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- for Reply --------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise ClientGone()
        transport.write(data)

    async def drain(self) -> None:
        if self._drain is not None:
            try:
                async with asyncio.timeout(self._client_timeout):
                    await asyncio.shield(self._drain)
            except TimeoutError:
                self.abort()  # the client took none of its answer in time: it holds an upstream connection
                raise ClientGone() from None
        if self.closed:
            raise ClientGone()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """Draining (`connections.closing` is set): close when idle, else after the answer under way. A
        connection that has not sent its first request yet (it may be on its way) has FIRST_REQUEST_GRACE to
        send it: a client retries a request on a kept-alive connection that closed, seldom on a new one."""
        if self._busy:
            return
        if self._drain is not None:
            self.abort()  # the client takes none of what was written: there is no closing cleanly
        elif self._started == 0 and not self._queue:
            self._loop.call_later(FIRST_REQUEST_GRACE, self._close_if_idle)
        else:
            self._close(lingering=False)  # requests queued behind none in flight: the client sends them again

    def _close_if_idle(self) -> None:
        if not self._busy and not self._queue:
            self._close(lingering=False)

    def tunnel(self, received: Callable[[bytes], None], closed: Callable[[], None],
               paused: Callable[[bool], None]) -> bytes:
        self._tunnel = (received, closed, paused)
        leftover, self._after_upgrade, self._upgrading = self._after_upgrade or b"", None, None
        self._pause(4, False)
        return leftover

    def _wake_writer(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
