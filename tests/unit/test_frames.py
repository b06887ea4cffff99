"""The WebSocket message-size watcher: frame heads read across any split of the client's bytes."""
from __future__ import annotations

import os
import struct

import pytest

from gateway.pipeline.frames import MessageSizes, close_frame


def frame(opcode: int, size: int, *, fin: bool = True, mask: bool = True) -> bytes:
    first = bytes([(0x80 if fin else 0) | opcode])
    flag = 0x80 if mask else 0
    if size < 126:
        length = bytes([flag | size])
    elif size < 65536:
        length = bytes([flag | 126]) + struct.pack("!H", size)
    else:
        length = bytes([flag | 127]) + struct.pack("!Q", size)
    return first + length + (os.urandom(4) if mask else b"") + b"z" * size


@pytest.mark.parametrize("split", [1, 3, 7, 1000, 10**9])
def test_sizes_add_up_over_continuations_whatever_the_split(split: int) -> None:
    stream = (frame(0x1, 100, fin=False) + frame(0x9, 10) + frame(0x0, 200, fin=False) + frame(0x0, 70000)
              + frame(0x2, 5))
    sizes = MessageSizes(100 + 200 + 70000)
    assert all(sizes.feed(stream[i:i + split]) for i in range(0, len(stream), split))
    over = MessageSizes(100 + 200 + 70000 - 1)
    results = [over.feed(stream[i:i + split]) for i in range(0, len(stream), split)]
    assert False in results  # told as soon as the head of the frame that passes the limit is read


def test_a_new_message_starts_the_count_again_and_control_frames_never_count() -> None:
    sizes = MessageSizes(300)
    assert sizes.feed(frame(0x1, 300) + frame(0x2, 300) + frame(0x8, 125) + frame(0xA, 125))
    assert not sizes.feed(frame(0x1, 301))


def test_the_close_frame_is_a_servers() -> None:
    assert close_frame(1009, b"message too big") == b"\x88\x11\x03\xf1message too big"
