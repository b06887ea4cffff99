"""The WebSocket tunnel's two limits (`upstreams.NAME.websocket`): a message's size from the client, and
how long a tunnel may stay silent.

The tunnel passes frames as they are; `MessageSizes` reads only their heads
(RFC 6455 §5.2) as the client's bytes go by, to add up each message's
payload (a data frame and its continuations) without holding any of it.
"""
from __future__ import annotations

import struct

CLOSE_TOO_BIG = 1009  # RFC 6455 §7.4.1: a message too big to process
CLOSE_GOING_AWAY = 1001  # the gateway ends an idle tunnel


def close_frame(code: int, reason: bytes) -> bytes:
    """A close frame from the server's side (unmasked, RFC 6455 §5.1)."""
    payload = struct.pack("!H", code) + reason[:123]
    return bytes((0x88, len(payload))) + payload


class MessageSizes:
    """Fed the client's bytes in order; `feed` answers False once a message has grown past `limit`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._head = b""  # the frame head being read
        self._skip = 0  # payload bytes of the current frame still to pass
        self._message = 0  # payload bytes of the current data message so far

    def feed(self, data: bytes) -> bool:
        at, end = 0, len(data)
        while at < end:
            if self._skip:  # payload: passed over
                taken = min(self._skip, end - at)
                self._skip -= taken
                at += taken
                continue
            take = min(self._need() - len(self._head), end - at)
            self._head += data[at:at + take]
            at += take
            # a head's length is known once its first two bytes are; the rest may come in a later feed
            if len(self._head) >= 2 and len(self._head) == self._need() and not self._frame():
                return False
        return True

    def _need(self) -> int:
        """How long the head being read is, as far as its bytes so far tell."""
        if len(self._head) < 2:
            return 2
        size = self._head[1] & 0x7F
        extended = 2 if size == 126 else 8 if size == 127 else 0
        return 2 + extended + (4 if self._head[1] & 0x80 else 0)

    def _frame(self) -> bool:
        head, self._head = self._head, b""
        opcode, size = head[0] & 0x0F, head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", head[2:4])[0]
        elif size == 127:
            size = struct.unpack("!Q", head[2:10])[0]
        self._skip = size
        if opcode >= 0x8:  # a control frame (close, ping, pong): within a message, not part of it
            return True
        self._message = size if opcode != 0x0 else self._message + size
        return self._message <= self._limit
