"""Serving one process: SIGHUP reloads gateway.yaml, SIGTERM drains and stops.

The listening socket is made once and never closed while the process lives;
each generation of the app serves on a duplicate of it. A reload starts the
new generation on the same socket before the old one stops accepting, then
lets the old one finish its requests in flight on the configuration they
started with. Nothing waiting in the accept queue is lost between the two.
A file with errors is refused: the errors are logged and the old
configuration keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from dataclasses import replace

from ..admin.readiness import Probe, Readiness
from ..admin.server import AdminServer
from ..admin.shared import SnapshotWriter
from ..app import EmbeddedStores, Gateway, open_gateway
from ..config import Config, ConfigError, load_config
from ..http.protocol import Connections, HttpProtocol
from ..metrics import Metrics
from .listener import BEAT, ConnectionLimit, Listener, WorkerTable

log = logging.getLogger("gateway.server")


def bind(host: str, port: int) -> socket.socket:
    """Bound, not yet listening: the port answers once the gateway can serve."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def _listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


class Generation:
    """One configuration, serving."""

    def __init__(self, config: Config, table: WorkerTable | None = None, embedded: EmbeddedStores | None = None,
                 metrics: Metrics | None = None, limit: ConnectionLimit | None = None) -> None:
        """`limit`: the process's connection count, shared with the generation before (a new one otherwise)."""
        self.config = config
        self._limit = limit or ConnectionLimit(config.server.max_connections)
        self._table = table  # one of several workers: connections are taken as the table allows
        self._embedded = embedded  # the process's memory:// state, which outlives a generation
        self._metrics = metrics  # the process's, likewise
        self._resources = contextlib.AsyncExitStack()
        self._connections = Connections(on_close=self._released)
        self._listener: Listener | None = None
        self.gateway: Gateway | None = None

    def _released(self) -> None:
        """A client connection has closed: the worker table's count and the listener's go down."""
        if self._table is not None:
            self._table.closed()
        self._limit.released()

    async def start(self, sock: socket.socket) -> None:
        # the gateway's start-up: stores, pools, the revocation list
        self.gateway = gateway = await self._resources.enter_async_context(
            open_gateway(self.config, self._embedded, self._metrics))
        if not _listening(sock):
            sock.listen(1024)
        connections, server = self._connections, self.config.server
        # A reload makes a new context from the files: new connections get the new certificate.
        context = server.tls.context if server.tls is not None else None

        def protocol() -> HttpProtocol:
            return HttpProtocol(gateway.handle, connections, scheme=server.scheme,
                                keepalive_timeout=server.keepalive_timeout, header_timeout=server.header_timeout,
                                client_timeout=server.client_timeout,
                                observe=gateway.observe)

        self._limit.most = server.max_connections  # this configuration's, from now on
        self._listener = Listener(sock, protocol, table=self._table, tls=context,
                                  handshake_timeout=server.client_timeout, limit=self._limit)
        self._listener.start()

    async def stop(self) -> None:
        """Stop accepting, let the requests in flight finish (up to shutdown_timeout), then close the stores."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.server.shutdown_timeout
        if self._listener is not None:
            self._listener.close()
            try:  # a connection still in its TLS handshake is served too, not dropped
                await asyncio.wait_for(self._listener.settled(), self.config.server.shutdown_timeout)
            except TimeoutError:
                pass
        await self._connections.drain(max(0.0, deadline - loop.time()))
        await self._resources.aclose()


class Server:
    def __init__(self, config: Config, *, dev: bool = False, worker: int = 0, table: WorkerTable | None = None,
                 metrics_dir: str | None = None) -> None:
        """`metrics_dir`: a worker's, where the supervisor reads its metrics (admin/shared.py)."""
        self.config = config
        self.dev = dev
        self.worker = worker
        self._table = table
        self._embedded = EmbeddedStores(config.jwt.refresh_ttl)
        self._limit = ConnectionLimit(config.server.max_connections)  # counted across reloads
        # counted only where someone can read them: this process's admin listener, or the supervisor's
        self.metrics = Metrics(enabled=config.admin is not None or metrics_dir is not None)
        self._snapshots = SnapshotWriter(metrics_dir, self.metrics) if metrics_dir is not None else None
        self._readiness = Readiness(self._probes, config.admin.probe_timeout if config.admin else 1.0)
        self.admin: AdminServer | None = None
        self._current: Generation | None = None
        self._stopped = asyncio.Event()
        self._reloading = asyncio.Lock()

    def _probes(self) -> dict[str, Probe]:
        gateway = self._current.gateway if self._current is not None else None
        return gateway.probes() if gateway is not None else {"starting": _starting}

    def _serving_now(self) -> Generation:
        assert self._current is not None, "serving starts before signals are handled"
        return self._current

    def _serving(self, generation: Generation) -> None:
        self._current = generation
        assert generation.gateway is not None
        self.metrics.gauges = generation.gateway.gauges

    async def run(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        admin = self.config.admin
        if admin is not None and self._table is None:  # with workers, the supervisor serves it
            # First: /healthz answers while the stores open, and /readyz says "starting" until the gateway serves
            self.admin = AdminServer(admin, self.metrics.snapshot, self._readiness)
            await self.admin.start()
            log.info("admin listener on http://%s:%d", admin.host, self.admin.port)
        current = Generation(self.config, self._table, self._embedded, self.metrics, self._limit)
        await current.start(sock)
        self._serving(current)
        snapshots = asyncio.create_task(self._snapshots.run()) if self._snapshots is not None else None
        beating = asyncio.create_task(self._beat()) if self._table is not None else None
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload(sock)))
        loop.add_signal_handler(signal.SIGTERM, self._stopped.set)
        loop.add_signal_handler(signal.SIGINT, self._stopped.set)
        # Everything made so far (modules, configuration, pools) lives as long as the process: out of the
        # cyclic collector's sight, a full collection no longer walks it and stalls requests for milliseconds.
        gc.freeze()
        log.info("listening on %s://%s:%d", self.config.server.scheme, *sock.getsockname()[:2])
        await self._stopped.wait()
        log.info("stopping: draining requests in flight for up to %.0fs", self.config.server.shutdown_timeout)
        self._readiness.draining = True
        if beating is not None:
            beating.cancel()
            assert self._table is not None
            self._table.leave()  # no longer accepting: the other workers take every new connection
        async with self._reloading:
            await self._serving_now().stop()
        if snapshots is not None and self._snapshots is not None:
            snapshots.cancel()
            self._snapshots.write()  # the last counts, for the supervisor
        if self.admin is not None:
            await self.admin.stop()
        log.info("stopped")

    async def _reload(self, sock: socket.socket) -> None:
        async with self._reloading:
            try:
                config = load_config(self.config.source, dev=self.dev)
            except ConfigError as exc:
                _refused(exc)
                return
            config = with_worker_id(config, self.worker)
            if not self.worker:
                for warning in config.warnings:
                    log.warning("%s", warning)
            fresh = Generation(config, self._table, self._embedded, self.metrics, self._limit)
            try:
                await fresh.start(sock)
            except ConfigError as exc:  # a file read at start (a certificate) changed since it was checked
                await fresh.stop()
                _refused(exc)
                return
            except Exception:
                log.exception("reload failed while starting; the running configuration stays")
                await fresh.stop()
                return
            old, self.config = self._serving_now(), config
            self._serving(fresh)
            log.info("reloaded %s", config.source)
            await old.stop()


    async def _beat(self) -> None:
        """Tell the other workers, through the table, that this one is serving."""
        assert self._table is not None
        while True:
            self._table.beat()
            await asyncio.sleep(BEAT)


async def _starting() -> None:
    raise LookupError("the gateway is starting: its stores are not open yet")


def _refused(exc: ConfigError) -> None:
    log.error("reload refused, the running configuration stays: %d problem(s)", len(exc.problems))
    for problem in exc.problems:
        log.error("  %s", problem)


def with_worker_id(config: Config, worker: int) -> Config:
    """Each worker process gets its own snowflake worker id: ids.worker_id + its index."""
    if worker == 0:
        return config
    return replace(config, ids=replace(config.ids, worker_id=config.ids.worker_id + worker))
