"""Snowflake ids in toutiao's layout.

41 bits of milliseconds since 1288834974657 | 5 bits datacenter | 5 bits worker | 12 bits sequence.
The timestamp used never goes backwards: when the clock steps back, ids keep
counting from the last timestamp issued, so no id is ever repeated.
"""
from __future__ import annotations

import time
from typing import Callable

EPOCH_MS = 1288834974657
WORKER_BITS = DATACENTER_BITS = 5
SEQUENCE_BITS = 12
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
WORKER_SHIFT = SEQUENCE_BITS
DATACENTER_SHIFT = SEQUENCE_BITS + WORKER_BITS
TIMESTAMP_SHIFT = SEQUENCE_BITS + WORKER_BITS + DATACENTER_BITS


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class IdWorker:
    def __init__(self, datacenter_id: int, worker_id: int, *, clock_ms: Callable[[], int] = _now_ms) -> None:
        if not 0 <= datacenter_id < 1 << DATACENTER_BITS or not 0 <= worker_id < 1 << WORKER_BITS:
            raise ValueError("datacenter_id and worker_id must be between 0 and 31")
        self._node = (datacenter_id << DATACENTER_SHIFT) | (worker_id << WORKER_SHIFT)
        self._clock_ms = clock_ms
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        now = max(self._clock_ms(), self._last_ms)
        if now == self._last_ms:
            self._sequence = (self._sequence + 1) & MAX_SEQUENCE
            if self._sequence == 0:
                now += 1  # sequence exhausted in this millisecond: borrow the next one
        else:
            self._sequence = 0
        self._last_ms = now
        return ((now - EPOCH_MS) << TIMESTAMP_SHIFT) | self._node | self._sequence
