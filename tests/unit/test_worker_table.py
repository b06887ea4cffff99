"""The workers' table (server/listener.py): who may take the next connection."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from gateway.server import listener as balance
from gateway.server.listener import WorkerTable


@pytest.fixture
def tables() -> Iterator[list[WorkerTable]]:
    """Three workers' views of one table, as three processes would map it."""
    shared = WorkerTable.create(3)
    views = [WorkerTable(shared.fd, index) for index in range(3)]
    for view in views:
        view.beat()
    yield views
    for view in views:
        view.close()
    shared.close()
    os.close(shared.fd)


def test_only_the_least_loaded_live_workers_accept(tables: list[WorkerTable]) -> None:
    a, b, c = tables
    assert [t.may_accept() for t in tables] == [True, True, True]  # all hold none
    a.opened()
    assert [t.may_accept() for t in tables] == [False, True, True]
    b.opened()
    c.opened()
    assert [t.may_accept() for t in tables] == [True, True, True]
    c.closed()
    assert [t.may_accept() for t in tables] == [False, False, True]
    assert [a.connections(i) for i in range(3)] == [1, 1, 0]


def test_a_worker_that_left_or_stopped_beating_takes_no_part(tables: list[WorkerTable],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = tables
    a.opened()
    b.opened()
    c.leave()  # c drains: it holds none but accepts none, so the others must not wait for it
    assert a.may_accept() and b.may_accept()
    c.beat()
    assert not a.may_accept()
    later = balance._now_ms() + balance.STALE_MS + 1
    monkeypatch.setattr(balance, "_now_ms", lambda: later)  # c's loop is stuck: its heartbeat is stale
    assert a.may_accept()


def test_the_supervisor_clears_a_dead_workers_slot(tables: list[WorkerTable]) -> None:
    a, b, c = tables
    a.opened()
    b.opened()
    b.opened()
    c.opened()
    supervisor = WorkerTable(a.fd)
    supervisor.clear(1)  # b died holding two
    assert a.connections(1) == 0
    assert a.may_accept() and c.may_accept()  # b's slot is out until its successor beats
    supervisor.close()


def test_a_worker_sizes_the_table_by_the_table_not_by_its_own_reading(tables: list[WorkerTable]) -> None:
    assert WorkerTable(tables[0].fd, 2).workers == 3
    with pytest.raises(ValueError):
        WorkerTable(tables[0].fd, 3)  # gateway.yaml now says 4 workers: index 3 has no slot
