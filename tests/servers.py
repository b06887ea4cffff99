"""Private redis-server and mariadbd processes on free loopback ports, for tests.

Each lives in its own temporary folder so that a test can stop and restart it.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer
from aiohttp.web_runner import BaseRunner
from yarl import URL

import upstream_stub
from gateway.app import Gateway
from gateway.config import Config
from gateway.server.serving import Generation, bind
from upstream_stub.app import RECEIVED


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        message = f"{name} is not installed: apt-get install {package}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def nginx_private_files(folder: Path) -> str:
    """The global and http-level lines that keep an nginx run entirely inside `folder` (pid, logs, temp files).
    The caller closes the http block."""
    return f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy; fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
"""


class _Process:
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)
            self.proc = None


class RedisProcess(_Process):
    def __init__(self, folder: Path, *, replica_of: int | None = None) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.folder = folder
        self.port = free_port()
        self.replica_of = replica_of
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        if self.replica_of:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)


class MariaDBProcess(_Process):
    def __init__(self, folder: Path) -> None:
        self.binary = require_binary("mariadbd", "mariadb-server")
        self.install = require_binary("mariadb-install-db", "mariadb-server")
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [self.install, "--no-defaults", f"--datadir={folder / 'data'}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def url(self, database: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--no-defaults", f"--datadir={self.folder / 'data'}", "--user=root",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.folder / 'mysqld.sock'}",
             "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             f"--pid-file={self.folder / 'mysqld.pid'}", f"--log-error={self.folder / 'error.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=60)

    def execute(self, sql: str) -> None:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()


class SentinelProcess(_Process):
    """A Redis Sentinel (redis-server --sentinel) watching one primary, quick to fail over."""

    def __init__(self, folder: Path, primary_port: int, service: str = "mymaster") -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.folder = folder
        self.port = free_port()
        self.service = service
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
            f"sentinel down-after-milliseconds {service} 500\n"
            f"sentinel failover-timeout {service} 2000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, str(self.folder / "sentinel.conf"), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)


class GatewayServer(BaseTestServer):
    """A gateway listening on a free loopback port, as `gateway run` serves it, for aiohttp's TestClient."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self._generation: Generation | None = None

    @property
    def gateway(self) -> Gateway:
        assert self._generation is not None and self._generation.gateway is not None
        return self._generation.gateway

    @property
    def started(self) -> bool:
        return self._generation is not None

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        if self._generation is not None:
            return
        sock = bind(self.host, 0)
        self.port = sock.getsockname()[1]
        generation = Generation(self.config)
        try:
            await generation.start(sock)
        except BaseException:
            await generation.stop()
            raise
        finally:
            sock.close()  # the generation serves on its own duplicate
        self._generation = generation
        self.scheme = self.config.server.scheme
        self._root = URL(f"{self.scheme}://{self.host}:{self.port}")

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        raise NotImplementedError("the gateway serves with its own server")

    async def close(self) -> None:
        if self._generation is not None and not self._closed:
            await self._generation.stop()
            self._closed = True


class Stub:
    """An upstream_stub on a fixed port that a test can stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.app = upstream_stub.create_app()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Any]:
        return self.app[RECEIVED]

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
