"""`server.workers: N`: N worker processes on one listening socket, kept alive.

The supervisor runs no app itself. It makes the listening socket and the
workers' table (listener.py), starts the workers with both, restarts one that
dies, passes SIGHUP (reload) and SIGTERM (drain and stop) on to all of them,
and exits when they have stopped. Connections that arrive while a worker
restarts wait in the shared queue for the others.

With `admin`, the admin listener is the supervisor's: /metrics adds up the
workers' metrics (admin/shared.py), and /readyz asks Redis and the database
itself and reads the upstreams' health from what the workers report.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import AsyncIterator, Callable

from redis.asyncio import Redis

from ..admin.readiness import Probe, Readiness
from ..admin.server import AdminServer
from ..admin.shared import WorkerSnapshots
from ..config import Config, ConfigError, load_config
from ..metrics import Snapshot
from ..stores.databases import open_user_store
from ..stores.kv import AnyRedis, RedisKV, connect_redis
from ..stores.users import UserStore
from .listener import WorkerTable
from .serving import bind

log = logging.getLogger("gateway.supervisor")
RESTART_DELAY = 1.0
POLL = 0.1


class Supervisor:
    def __init__(self, config: Config, *, dev: bool) -> None:
        self.config = config
        self.env = dict(os.environ)
        if config.jwt.generated:  # every worker must sign with the same made-up secret
            self.env["GATEWAY_JWT_SECRET"] = config.jwt.signing_key.signing
        self.dev = dev
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = asyncio.Event()
        self.sock = bind(config.server.host, config.server.port)  # the first worker that can serve listens
        self.table = WorkerTable.create(config.server.workers)
        self.metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-") if config.admin is not None else None
        self.snapshots = WorkerSnapshots(self.metrics_dir) if self.metrics_dir is not None else None
        self.probes = _SupervisorProbes(config, self._total)
        self._reloading: asyncio.Future[None] | None = None  # held: the loop keeps only a weak reference
        self.readiness = Readiness(self.probes.probes, config.admin.probe_timeout if config.admin else 1.0)

    def command(self, index: int) -> list[str]:
        args = [sys.executable, "-m", "gateway", "run", "--config", self.config.source, "--worker", str(index),
                "--listen-fd", str(self.sock.fileno()), "--table-fd", str(self.table.fd)]
        if self.metrics_dir is not None:
            args += ["--metrics-dir", self.metrics_dir]
        return args + (["--dev"] if self.dev else [])

    def start(self, index: int) -> None:
        if self.stopping.is_set():  # SIGTERM came first: a worker started now would never be told to stop
            return
        self.table.clear(index)  # until the worker serves, the others take every connection
        self.workers[index] = subprocess.Popen(self.command(index), env=self.env,
                                               pass_fds=(self.sock.fileno(), self.table.fd))
        log.info("worker %d started (pid %d)", index, self.workers[index].pid)

    def signal_all(self, signum: int) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def live_pids(self) -> list[int]:
        return [proc.pid for proc in self.workers.values() if proc.poll() is None]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        loop.add_signal_handler(signal.SIGTERM, self._stop)
        loop.add_signal_handler(signal.SIGINT, self._stop)
        try:
            async with self._admin():
                for index in range(self.config.server.workers):
                    self.start(index)
                await self._watch()
                await self._wait_for_workers()
        finally:
            self.sock.close()
            self.table.close()
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        log.info("all workers stopped")
        return 0

    async def _watch(self) -> None:
        while not self.stopping.is_set():
            for index, proc in list(self.workers.items()):
                if proc.poll() is not None and not self.stopping.is_set():
                    log.error("worker %d exited with %s; restarting it", index, proc.returncode)
                    self.table.clear(index)
                    if self.snapshots is not None:
                        self.snapshots.exited(proc.pid)
                    await asyncio.sleep(RESTART_DELAY)
                    if not self.stopping.is_set():
                        self.start(index)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), POLL)

    async def _wait_for_workers(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.server.shutdown_timeout + 10
        while any(proc.poll() is None for proc in self.workers.values()) and loop.time() < deadline:
            await asyncio.sleep(POLL)
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _stop(self) -> None:
        self.stopping.set()
        self.readiness.draining = True  # from now on /readyz sends traffic elsewhere
        self.signal_all(signal.SIGTERM)

    def _reload(self) -> None:
        """SIGHUP: the workers reload gateway.yaml; so do the supervisor's readiness probes (its upstreams,
        Redis and database). The admin listener itself stays where it is until a restart."""
        self.signal_all(signal.SIGHUP)
        try:
            config = load_config(self.config.source, dev=self.dev)
        except ConfigError:
            return  # the workers log every problem; the running configuration stays
        self.config = config
        self._reloading = asyncio.ensure_future(self.probes.use(config))

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[None]:
        admin = self.config.admin
        if admin is None:
            yield
            return
        server = AdminServer(admin, self._total, self.readiness)
        await server.start()
        log.info("admin listener on http://%s:%d", admin.host, server.port)
        try:
            yield
        finally:
            self.readiness.draining = True
            await server.stop()
            await self.probes.close()

    def _total(self) -> Snapshot:
        """Every worker's counts: those that exited (whether or not replaced yet) are kept as they last wrote
        them, so that no sum goes down while workers stop or restart."""
        assert self.snapshots is not None
        for proc in self.workers.values():
            if proc.poll() is not None:
                self.snapshots.exited(proc.pid)
        return self.snapshots.total(self.live_pids())


class _SupervisorProbes:
    """/readyz in the supervisor: its own small connections to Redis and the database, opened on first use
    (either may be down when the gateway starts) and again after a reload, and the upstreams' health as the
    workers last reported it."""

    def __init__(self, config: Config, total: Callable[[], Snapshot]) -> None:
        self._config = config
        self._total = total
        self._opening = asyncio.Lock()  # two /readyz at once open one connection, not two
        self._redis_clients: tuple[AnyRedis, Redis | None] | None = None
        self._users: UserStore | None = None

    async def use(self, config: Config) -> None:
        """A reloaded configuration: its upstreams, and connections to its Redis and database."""
        async with self._opening:
            await self._close()
            self._config = config

    async def close(self) -> None:
        async with self._opening:
            await self._close()

    async def _close(self) -> None:
        clients, self._redis_clients = self._redis_clients, None
        users, self._users = self._users, None
        if clients is not None:
            for client in clients:
                if client is not None:
                    await client.aclose()
        if users is not None:
            await users.close()

    def probes(self) -> dict[str, Probe]:
        probes: dict[str, Probe] = {"redis": self._redis, "database": self._database}
        for name in self._config.upstreams:
            probes[f"upstream {name}"] = self._upstream(name)
        return probes

    async def _redis(self) -> None:
        async with self._opening:
            if self._redis_clients is None:
                self._redis_clients = connect_redis(self._config.redis)
            primary = self._redis_clients[0]
        await RedisKV(primary).ping()

    async def _database(self) -> None:
        async with self._opening:
            if self._users is None:
                self._users = await open_user_store(self._config.database.url, 1)
            users = self._users
        await users.ping()

    def _upstream(self, name: str) -> Probe:
        async def probe() -> None:
            healthy = self._total().gauges.get("gateway_upstream_target_healthy", [])
            if not any(key[0] == name and value for key, value in healthy):
                raise LookupError(f"no worker reports a healthy target of upstream {name}")
        return probe
