"""A request body: pushed by the server as llhttp parses it, pulled by whoever handles the request.

Reading from the client pauses while more than HIGH_WATER bytes wait here,
so a fast client and a slow upstream cost bounded memory. A client that
asked to `Expect: 100-continue` is told to go on at the first read, and only
then: a request refused before its body is read never has it sent.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Callable

from ..errors import BadRequest, RequestTimeout

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class BodyIncomplete(BadRequest):
    message = "Request body ended early."


class RequestBody:
    def __init__(self, *, length: int | None, exists: bool, pause: Callable[[bool], None],
                 go_on: Callable[[], None] | None = None, timeout: float = 60.0) -> None:
        self.length = length  # from Content-Length; None when chunked or absent
        self.exists = exists
        self.complete = not exists  # every byte of it has been received
        self._pause = pause  # pause(True) stops reading from the client, pause(False) resumes
        self._go_on = go_on  # sends 100 Continue
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout = timeout  # the longest wait for the client's next bytes

    # -- the server's side --------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._pause(True)
        self._wake()

    def end(self) -> None:
        self.complete = True
        self._wake()

    def fail(self) -> None:
        """The client's connection ended before the body did."""
        if not self.complete:
            self._error = BodyIncomplete()
            self._wake()

    @property
    def failed(self) -> bool:
        """The body will not end well (the client's chunks were malformed, or it went away)."""
        return self._error is not None

    # -- the handler's side -------------------------------------------------------------------------
    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        self._continue()
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._timeout):
                    await self._waiter
            except TimeoutError:
                raise RequestTimeout() from None
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._took(len(chunk))
        return chunk

    async def read_all(self, limit: int) -> bytes:
        """The body up to `limit` + 1 bytes, so that the caller can tell one over the limit."""
        parts, size = [], 0
        while size <= limit and (chunk := await self.read()):
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    def discard(self) -> None:
        """Drop what was received and not read (the handler answered without it)."""
        if self._chunks:
            self._chunks.clear()
            self._took(self._buffered)

    def _continue(self) -> None:
        go_on, self._go_on = self._go_on, None
        if go_on is not None and not self.complete:
            go_on()

    def _took(self, size: int) -> None:
        self._buffered -= size
        if self._paused and self._buffered < LOW_WATER:
            self._paused = False
            self._pause(False)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
