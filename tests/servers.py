"""Private redis-server and mariadbd processes on free loopback ports, for tests.

Each lives in its own temporary folder so that a test can stop and restart it.
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

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


# Ports for the tests' servers come from below the kernel's ephemeral range (32768-60999 on Linux): a port
# the kernel handed out for binding to port 0 may meanwhile become the local port of some outgoing
# connection (to Redis, say), and the server started on it later fails with "address already in use".
_PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback port nothing listens on or is bound to now, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


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


class RedisClusterProcesses:
    """A Redis Cluster of `size` primaries on loopback ports (redis-server --cluster-enabled yes), joined
    with `redis-cli --cluster create`; each node a RedisProcess-like server the test may stop and start."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.cli = require_binary("redis-cli", "redis-tools")
        self.folder = folder
        self.ports = [free_port() for _ in range(size)]
        self.bus_ports = {port: free_port() for port in self.ports}  # the default, port + 10000, may not exist
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start_node(self, port: int) -> None:
        node = self.folder / str(port)
        node.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-port", str(self.bus_ports[port]),
             "--cluster-config-file", str(node / "nodes.conf"), "--cluster-node-timeout", "1000",
             "--save", "", "--appendonly", "no", "--dir", str(node), "--logfile", str(node / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        subprocess.run([self.cli, "--cluster", "create", *self.nodes, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.command(port, "CLUSTER", "INFO") for port in self.ports if port in self.procs]
            if states and all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def command(self, port: int, *args: str) -> str:
        return subprocess.run([self.cli, "-p", str(port), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def owner(self, slot: int) -> int:
        """The port of the node that serves `slot`."""
        for line in self.command(self.ports[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if part[0] != "[" and int(low) <= slot <= int(high or low):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise LookupError(slot)

    def node_id(self, port: int) -> str:
        return self.command(port, "CLUSTER", "MYID").strip()

    def move_slot(self, slot: int, to_port: int) -> int:
        """Move `slot` and its keys to the node on `to_port`, as `redis-cli --cluster reshard` does it:
        importing, migrating, MIGRATE in batches, then the new owner told to every node. The keys moved."""
        source = self.owner(slot)
        target_id, source_id = self.node_id(to_port), self.node_id(source)
        self.command(to_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        self.command(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        moved = 0
        while keys := self.command(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
            self.command(source, "MIGRATE", "127.0.0.1", str(to_port), "", "0", "5000", "KEYS", *keys)
            moved += len(keys)
        for port in self.ports:
            self.command(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        return moved

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
            proc.wait(60)
        self.procs.clear()


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


Answer = Callable[[bytes], bytes | None]  # a request's bytes -> what to send back (None: close at once)


class RawUpstream:
    """Reads one request at a time (head, and a body by Content-Length or chunks) and sends `answer(request)`."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    return
                if reply.startswith(b"SLEEP "):
                    await asyncio.sleep(float(reply.split()[1]))
                    reply = reply.split(b"\n", 1)[1]
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open -= 1
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lowered = head.lower()
    if b"content-length:" in lowered:
        length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
        return head + await reader.readexactly(length)
    if b"transfer-encoding: chunked" in lowered:
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip(), 16)
            body += size_line + await reader.readexactly(size + 2)
            if size == 0:
                return head + body
    return head


class StubProcess:
    """upstream_stub as a process of its own on a fixed port, that a test may kill (SIGKILL: no goodbye, its
    connections reset) and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", "upstream_stub", "--port", str(self.port)],
                                     cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
            self.proc = None


class KeepAliveRequests:
    """A raw upstream that serves `limit` requests on a connection and then closes it, as nginx's
    `keepalive_requests` does (1000 there by default): `announce` says so on the last answer
    (`Connection: close`, as nginx does). Without it the connection stays open, unannounced, and the next
    request on it is read and left unanswered as the connection closes: the race of a keep-alive close
    meeting a request on its way. Every request's bytes are recorded: those answered per connection, the
    others in `unanswered`."""

    def __init__(self, limit: int, *, announce: bool = True) -> None:
        self.limit = limit
        self.announce = announce
        self.connections: list[list[bytes]] = []
        self.unanswered: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    @property
    def requests(self) -> list[bytes]:
        return [request for connection in self.connections for request in connection] + self.unanswered

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def _answer(self, request: bytes, last: bool) -> bytes:
        body = b"%d" % len(request.partition(b"\r\n\r\n")[2])  # the length of the body it got
        close = b"Connection: close\r\n" if last and self.announce else b""
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), close)
        return head if request.startswith(b"HEAD ") else head + body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: list[bytes] = []
        self.connections.append(seen)
        try:
            while len(seen) < self.limit:
                request = await _read_request(reader)
                if request is None:
                    return
                seen.append(request)
                writer.write(self._answer(request, last=len(seen) == self.limit))
                await writer.drain()
            if not self.announce:
                request = await asyncio.wait_for(_read_request(reader), 5)
                if request is not None:
                    self.unanswered.append(request)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            return
        finally:
            writer.close()


class HungUpstream:
    """Accepts connections and reads what comes, and never answers a byte."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.AbstractServer | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        for writer in self._held:
            writer.close()
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._held.append(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            return


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is `pid` (a supervisor's workers)."""
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(p) for p in result.stdout.split()}


def established(port: int, pid: int) -> int:
    """Client connections to `port` that process `pid` holds open, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = fd.readlink().name
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


class ByteUpstream(RawUpstream):
    """A RawUpstream that also keeps every byte each connection brought (`streams`), whether it made a request
    or not: a test compares them with `requests` to see that nothing came beside the requests read."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        super().__init__(answer, close_after)
        self.streams: list[bytearray] = []

    @property
    def received(self) -> bytes:
        return b"".join(self.streams)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = bytearray()
        self.streams.append(stream)
        inner = asyncio.StreamReader()

        async def pump() -> None:
            try:
                while chunk := await reader.read(65536):
                    stream.extend(chunk)
                    inner.feed_data(chunk)
            except ConnectionError:
                pass
            inner.feed_eof()

        pumping = asyncio.ensure_future(pump())
        try:
            await super()._serve(inner, writer)
        finally:
            pumping.cancel()


class Tap:
    """A TCP relay on a loopback port in front of `target` that keeps every byte each way, per connection: what
    a gateway sent its upstream and what the upstream answered. It runs on threads, so that it can outlive one
    test's event loop (a gateway or stub process in front of or behind it lives for a whole module)."""

    def __init__(self, target: int) -> None:
        import threading

        self.target = target
        self.exchanges: list[tuple[bytearray, bytearray]] = []  # (sent, answered), one per connection
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # so that the accepting thread sees `close` soon
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mark(self) -> list[tuple[int, int]]:
        """How many bytes each connection has carried each way so far."""
        return [(len(sent), len(answered)) for sent, answered in list(self.exchanges)]

    def since(self, mark: list[tuple[int, int]]) -> list[tuple[bytes, bytes]]:
        """What each connection carried after `mark` (sent, answered), for those that carried anything."""
        moved = []
        for index, (sent, answered) in enumerate(list(self.exchanges)):
            sent_before, answered_before = mark[index] if index < len(mark) else (0, 0)
            if len(sent) > sent_before or len(answered) > answered_before:
                moved.append((bytes(sent[sent_before:]), bytes(answered[answered_before:])))
        return moved

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in self._sockets:
            _shut(sock)

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            sent, answered = bytearray(), bytearray()
            self.exchanges.append((sent, answered))
            self._sockets += [client, upstream]
            for source, sink, kept in ((client, upstream, sent), (upstream, client, answered)):
                threading.Thread(target=_relay, args=(source, sink, kept), daemon=True).start()


def _relay(source: socket.socket, sink: socket.socket, kept: bytearray) -> None:
    """One direction of a Tap's connection, until either end closes; then both are closed."""
    try:
        while data := source.recv(65536):
            kept.extend(data)
            sink.sendall(data)
    except OSError:
        pass
    _shut(source)
    _shut(sink)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
