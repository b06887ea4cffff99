from __future__ import annotations

import pytest

from gateway.ids import EPOCH_MS, IdWorker


def parts(snowflake: int) -> tuple[int, int, int, int]:
    """toutiao's layout: 41 bits of milliseconds since EPOCH_MS, 5 of datacenter, 5 of worker, 12 of sequence."""
    return (snowflake >> 22) + EPOCH_MS, (snowflake >> 17) & 31, (snowflake >> 12) & 31, snowflake & 4095


def test_layout() -> None:
    worker = IdWorker(3, 17, clock_ms=lambda: EPOCH_MS + 12345)
    first, second = worker.next_id(), worker.next_id()
    assert parts(first) == (EPOCH_MS + 12345, 3, 17, 0)
    assert parts(second) == (EPOCH_MS + 12345, 3, 17, 1)
    assert first == (12345 << 22) | (3 << 17) | (17 << 12)


def test_a_clock_stepping_back_never_repeats_an_id() -> None:
    clock = [EPOCH_MS + 10_000]
    worker = IdWorker(0, 0, clock_ms=lambda: clock[0])
    seen = {worker.next_id() for _ in range(10)}
    clock[0] -= 5_000
    seen |= {worker.next_id() for _ in range(10)}
    assert len(seen) == 20
    assert sorted(seen) == sorted(seen, key=lambda x: x)


def test_sequence_overflow_moves_to_the_next_millisecond() -> None:
    worker = IdWorker(1, 1, clock_ms=lambda: EPOCH_MS + 50)
    ids = [worker.next_id() for _ in range(4096 * 2 + 5)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert parts(ids[-1])[0] == EPOCH_MS + 52


def test_real_clock_ids_are_unique_and_increasing() -> None:
    worker = IdWorker(0, 1)
    ids = [worker.next_id() for _ in range(20000)]
    assert len(set(ids)) == 20000 and ids == sorted(ids)


@pytest.mark.parametrize("dc, w", [(32, 0), (0, 32), (-1, 0)])
def test_node_bits_are_checked(dc: int, w: int) -> None:
    with pytest.raises(ValueError):
        IdWorker(dc, w)
