"""`server.workers: N`: client connections spread evenly over the worker processes.

The supervisor makes one listening socket, shared by every worker, and a
small table in shared memory with a slot per worker: how many client
connections the worker holds, and when it last showed that it is alive.
A worker takes a connection from the shared queue only while it holds no
more than the least loaded live worker; otherwise it leaves the connection
to that one, for five milliseconds at most. So while the workers keep up,
their counts differ by one at most, however the clients connect (Envoy
calls this an exact balance).

The kernel's SO_REUSEPORT, which this replaces, hashes each connection to
a worker. A few long-lived connections (a load balancer's pool, a
benchmark's) then often land unevenly, leaving one worker idle while the
other is saturated; and the connections queued for a worker that dies are
reset. In one shared queue they wait for the workers that are left.
"""
from __future__ import annotations

import asyncio
import logging
import mmap
import os
import socket
import ssl
import time
from typing import Callable

log = logging.getLogger("gateway.server")
SLOT = 2  # int64s per worker: connections held, heartbeat (monotonic milliseconds; 0: not serving)
BEAT = 0.25  # seconds between a worker's heartbeats
STALE_MS = 2000  # a worker whose heartbeat is older is left out of the balance (it may be stuck or gone)
HEAD_START = 0.005  # seconds a connection is left to a less loaded worker before any worker takes it
LOOK_GAP = 0.001  # looks further apart than this are at different connections
RETRY = 0.1  # seconds before accepting again after accept() failed (out of descriptors)
ACCEPT_BATCH = 64  # connections taken at most per wake-up, so that accepting does not starve requests
FULL_LOG_EVERY = 60.0  # seconds between warnings that the connection limit holds new connections back


def _now_ms() -> int:
    return int(time.monotonic() * 1000)  # CLOCK_MONOTONIC: one clock for every process of the machine


class WorkerTable:
    """The shared slots. Each worker writes only its own; the supervisor clears a dead worker's."""

    def __init__(self, fd: int, index: int | None = None) -> None:
        self.fd = fd
        # The size is the table's own, as the supervisor made it (a restarted worker that reads an edited
        # gateway.yaml may see another `server.workers`).
        self.workers = os.fstat(fd).st_size // (SLOT * 8)
        if index is not None and not 0 <= index < self.workers:
            raise ValueError(f"worker {index} has no slot in a table of {self.workers}")
        self.index = index
        self._map = mmap.mmap(fd, SLOT * 8 * self.workers)
        self._cells = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, workers: int) -> WorkerTable:
        """In the supervisor: a table the workers it starts inherit (by the descriptor's number)."""
        fd = os.memfd_create("gateway-workers", 0)  # not close-on-exec: passed to the workers
        os.ftruncate(fd, SLOT * 8 * workers)
        return cls(fd)

    def connections(self, worker: int) -> int:
        return self._cells[worker * SLOT]

    def opened(self) -> None:
        assert self.index is not None
        self._cells[self.index * SLOT] += 1

    def closed(self) -> None:
        assert self.index is not None
        self._cells[self.index * SLOT] -= 1

    def beat(self) -> None:
        assert self.index is not None
        self._cells[self.index * SLOT + 1] = _now_ms()

    def leave(self) -> None:
        """This worker stops accepting (it drains): it takes no more part in the balance."""
        assert self.index is not None
        self._cells[self.index * SLOT + 1] = 0

    def clear(self, worker: int) -> None:
        """The worker is gone (or not yet serving): it holds nothing and takes no part."""
        self._cells[worker * SLOT + 1] = 0
        self._cells[worker * SLOT] = 0

    def may_accept(self) -> bool:
        """True when no live worker holds fewer connections than this one."""
        cells, mine = self._cells, self._cells[self.index * SLOT] if self.index is not None else 0
        fresh = _now_ms() - STALE_MS
        for worker in range(self.workers):
            if worker != self.index and cells[worker * SLOT] < mine and cells[worker * SLOT + 1] > fresh:
                return False
        return True

    def close(self) -> None:
        self._cells.release()
        self._map.close()


class ConnectionLimit:
    """`server.max_connections`: the client connections this process holds, counted across its generations
    (a reload's old generation drains while the new one accepts). A listener that finds the limit reached
    stops accepting and waits here to be told when a connection closes."""

    def __init__(self, most: int) -> None:
        self.most = most  # a reload may change it
        self.held = 0
        self._waiting: set[Listener] = set()

    def full(self, listener: Listener) -> bool:
        if self.held < self.most:
            return False
        self._waiting.add(listener)
        return True

    def taken(self) -> None:
        self.held += 1

    def released(self) -> None:
        self.held -= 1
        if self._waiting and self.held < self.most:
            waiting, self._waiting = self._waiting, set()
            for listener in waiting:
                listener.start()


class Listener:
    """Accepts connections for one generation: from the process's own socket, or, with `table`, from the
    socket the workers share, as the table allows.

    Every worker watching the socket is woken for each new connection. One that holds more than the least
    loaded live worker leaves the connection to that one, which was woken too and takes it within its next
    turn of the loop. The socket stays readable meanwhile, so the worker that left it looks again on each of
    its own turns; a connection still waiting after HEAD_START (the least loaded worker is busy) is taken
    by the first worker to look, so that no connection waits on the balance for long. (Not watching and
    looking again on a timer instead, libuv's timers being whole milliseconds, cost about a third of the
    requests of clients that open a connection per request, in a measurement on two workers.)

    At `limit` (`server.max_connections`, for the whole process) it stops accepting, as HAProxy's maxconn
    does: new connections wait in the kernel's accept queue until one closes, rather than being taken and
    dropped."""

    def __init__(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol], *,
                 limit: ConnectionLimit, table: WorkerTable | None = None, tls: ssl.SSLContext | None = None,
                 handshake_timeout: float = 60.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock.dup()  # a generation's own: closing it leaves the shared socket open
        self._sock.setblocking(False)
        self._table = table
        self._factory = protocol_factory
        self._tls = tls
        self._handshake_timeout = handshake_timeout if tls is not None else None
        self._left_since = 0.0  # when this worker began to leave a waiting connection to another
        self._left_last = 0.0  # when it last did
        self._retry: asyncio.TimerHandle | None = None
        self._limit = limit
        self._watching = False
        self._full_logged = -FULL_LOG_EVERY
        self._closed = False
        self._setting_up: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references

    def start(self) -> None:
        if not self._watching and not self._closed and self._retry is None:
            self._watching = True
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def _stop_watching(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._sock.fileno())

    def close(self) -> None:
        """Stop accepting; connections taken so far are served by their generation."""
        if not self._closed:
            if self._retry is not None:
                self._retry.cancel()
            self._stop_watching()
            self._closed = True
            self._sock.close()

    def _full(self) -> bool:
        if not self._limit.full(self):
            return False
        self._stop_watching()
        now = self._loop.time()
        if now - self._full_logged >= FULL_LOG_EVERY:
            self._full_logged = now
            log.warning("%d client connections held (server.max_connections): new ones wait to be accepted",
                        self._limit.held)
        return True

    async def settled(self) -> None:
        """Once every connection taken has been set up (its TLS handshake done or failed), so that a
        draining generation serves it rather than letting go of its stores first."""
        while self._setting_up:
            await asyncio.wait(list(self._setting_up))

    def _resume(self) -> None:
        self._retry = None
        if not self._full():
            self.start()

    def _leave_to_another(self) -> bool:
        """True while the connection waiting should be left to a less loaded worker."""
        if self._table is None or self._table.may_accept():
            return False
        now = self._loop.time()
        if now - self._left_last > LOOK_GAP:  # not looked at on the turn before: a connection newly waiting
            self._left_since = now
        self._left_last = now
        return now - self._left_since < HEAD_START

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if self._full() or self._leave_to_another():
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # another worker took it, or the client gave up while queued
            except OSError as exc:  # out of descriptors, say: the connection waits in the queue a moment
                log.warning("accepting a connection failed: %s", exc)
                self._stop_watching()
                self._retry = self._loop.call_later(RETRY, self._resume)
                return
            self._left_last = 0.0
            self._limit.taken()
            if self._table is not None:
                self._table.opened()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._serve(conn))
            self._setting_up.add(task)
            task.add_done_callback(self._setting_up.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._tls,
                                                     ssl_handshake_timeout=self._handshake_timeout)
        except OSError as exc:  # the client went away, or its TLS handshake failed
            log.info("a connection closed before it was set up: %s", exc)
            if self._table is not None:
                self._table.closed()  # the protocol never saw it: the counts go back down here
            self._limit.released()
            conn.close()
