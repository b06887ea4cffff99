"""The answer to one request, written to the client's connection.

A complete answer leaves in one write (`send`); a streamed one writes its
head with the first piece of its body when that is at hand (`start`), then
pieces with flow control (`write`, `drain`), then `end`. The framing is the
server's: the fields given never carry Connection or Transfer-Encoding.
"""
from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from .request import Request
from .response import REASONS, SERVER, Response

_SERVER_LINE = f"Server: {SERVER}\r\n".encode()
_NO_BODY = frozenset({204, 304})


class ClientGone(ConnectionResetError):
    """The client's connection closed before its answer was written: nobody is left to answer."""


class _Connections(Protocol):
    @property
    def closing(self) -> bool: ...

    def date(self) -> bytes: ...


class Connection(Protocol):
    """What a reply needs of the client connection it answers on (protocol.py's HttpProtocol)."""

    @property
    def connections(self) -> _Connections: ...

    def write(self, data: bytes) -> None: ...
    def drain(self) -> Awaitable[None]: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...
    def pause_for_tunnel(self, on: bool) -> None: ...
    def tunnel(self, received: Callable[[bytes], None], closed: Callable[[], None],
               paused: Callable[[bool], None]) -> bytes: ...


class Reply:
    __slots__ = ("_protocol", "_request", "status", "sent", "started", "finished", "keep_alive", "_chunked",
                 "_no_body", "took_over", "extra")

    def __init__(self, protocol: Connection, request: Request) -> None:
        self._protocol = protocol
        self._request = request
        self.status = 0
        self.sent = 0  # body bytes written
        self.started = False  # the head has been written
        self.finished = False
        self.keep_alive = False  # decided when the head is written
        self._chunked = False
        self._no_body = False
        self.took_over = False  # the connection left HTTP (a tunnel)
        self.extra = b""  # header lines every answer to this request carries, whoever makes it (CORS)

    def send(self, response: Response) -> None:
        """A complete answer made by the gateway, in one write."""
        fields = b"".join(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                          for name, value in response.headers.items())
        fields += b"Date: %s\r\n" % self.date()
        self.start(response.status, REASONS.get(response.status, b"Unknown"), fields,
                   length=len(response.body), first=response.body)
        self.end()

    def start(self, status: int, reason: bytes, fields: bytes, *, length: int | None, first: bytes = b"",
              framed: bool = False) -> None:
        """The head, and `first` with it. `length`: the body's length, when known and not in `fields`;
        `framed`: `fields` carries the upstream's own Content-Length."""
        request = self._request
        self._no_body = request.method == "HEAD" or status in _NO_BODY or status < 200
        self.keep_alive = (request.keep_alive and request.body.complete and not self._protocol.connections.closing
                           and status != 101)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason), _SERVER_LINE, fields, self.extra]
        if not framed and not self._no_body:
            if length is not None:
                head.append(b"Content-Length: %d\r\n" % length)
            elif request.version == "1.1":
                self._chunked = True
                head.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # an HTTP/1.0 client reads to the end of the connection
        if status != 101:  # a switch of protocols carries the upstream's Connection: Upgrade
            if not self.keep_alive:
                head.append(b"Connection: close\r\n")
            elif request.version == "1.0":
                head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        self.status = status
        self.started = True
        if first and not self._no_body:
            head.append(self._frame(first))
            self.sent += len(first)
        self._protocol.write(b"".join(head))

    def write(self, data: bytes) -> None:
        if data and not self._no_body:
            self.sent += len(data)
            self._protocol.write(self._frame(data))

    async def drain(self) -> None:
        await self._protocol.drain()

    def date(self) -> bytes:
        return self._protocol.connections.date()

    def end(self) -> None:
        if self._chunked:
            self._protocol.write(b"0\r\n\r\n")
        self.finished = True

    def cut(self) -> None:
        """Too late for an error status: close the connection, so that the client sees a short body."""
        self.keep_alive = False
        self._protocol.abort()

    def take_over(self, received: Callable[[bytes], None], closed: Callable[[], None],
                  paused: Callable[[bool], None]) -> bytes:
        """After a 101: the connection is no longer HTTP. Bytes from the client go to `received`; `closed` is
        called when it ends; `paused(True/False)` when its writes back up and clear. Returns the bytes that
        came after the request."""
        self.took_over = True
        self.finished = True
        return self._protocol.tunnel(received, closed, paused)

    def pause_reading(self, pause: bool) -> None:
        self._protocol.pause_for_tunnel(pause)

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are, for a tunnel."""
        self._protocol.write(data)

    def close(self) -> None:
        """Close the connection once what was written has left."""
        self._protocol.close()

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data
