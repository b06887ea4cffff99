"""The systems under load, each started on free loopback ports in one temporary folder.

nginx serves the backend (`return 200`, echoing the X-User-Id it received in
X-Seen-User-Id) and a plain `proxy_pass` in front of it; HAProxy does the
gateway's job (HS256 `jwt_verify`, the exp check, X-User-Id from the payload,
401 otherwise); the gateway runs as its own process with the configuration
given. Every process is stopped when the stack closes.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from tests.certs import Authority  # noqa: E402
from tests.servers import free_port, nginx_private_files, wait_for_port  # noqa: E402

SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
USER_ID = 42


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        sys.exit(f"bench: {binary} is missing: apt-get install {package}")
    return path


class Stack:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.closers: list[Callable[[], None]] = []  # servers started by others (Redis, MariaDB)
        self._ca: Authority | None = None

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        while self.closers:
            self.closers.pop()()

    def start(self, args: list[str], port: int, **kwargs: Any) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{Path(args[0]).name}-{port}.log", "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        log.close()
        self.procs.append(proc)
        wait_for_port(port, timeout=60)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        proc.wait(30)
        self.procs.remove(proc)

    def certificates(self) -> Authority:
        """A private CA, made once per stack, and a certificate it signs for 127.0.0.1 (`tls/server.*`)."""
        if self._ca is None:
            self._ca = Authority(self.folder / "tls", "Bench CA")
            self.server_pem = self._ca.issue("server")
        return self._ca

    def nginx(self) -> tuple[int, int]:
        """(backend port, proxy port). The backend also answers over HTTPS on `self.backend_tls`."""
        backend, proxy, self.backend_tls = free_port(), free_port(), free_port()
        self.certificates()
        folder = self.folder / "nginx"
        folder.mkdir(exist_ok=True)
        conf = folder / "nginx.conf"
        conf.write_text(nginx_private_files(folder) + f"""  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{ listen 127.0.0.1:{backend}; listen 127.0.0.1:{self.backend_tls} ssl;
           ssl_certificate {self.server_pem.cert}; ssl_certificate_key {self.server_pem.key};
           location / {{ add_header X-Seen-User-Id $http_x_user_id; return 200 '{{"ok":true}}'; }} }}
  server {{ listen 127.0.0.1:{proxy};
           location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
}}""")
        self.nginx_proc = self.start([need("nginx", "nginx-light"), "-c", str(conf), "-p", str(folder),
                                      "-g", "daemon off;"], backend)
        wait_for_port(proxy)
        return backend, proxy

    def haproxy(self, backend: int) -> int:
        port = free_port()
        deny = "http-request return status 401 content-type application/json string '{\"message\":\"denied\"}'"
        conf = self.folder / "haproxy.cfg"
        conf.write_text(f"""
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:{port}
  http-request del-header X-User-Id
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request set-var(txn.now) date()
  {deny} unless {{ var(txn.alg) -m str HS256 }}
  {deny} unless {{ var(txn.bearer),jwt_verify(txn.alg,"{SECRET}") -m int 1 }}
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  {deny} if {{ var(txn.exp),sub(txn.now) -m int lt 1 }}
  http-request set-header X-User-Id %[var(txn.bearer),jwt_payload_query('$.user_id','int')]
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:{backend}
""")
        self.start([need("haproxy", "haproxy"), "-f", str(conf)], port)
        return port

    def gateway(self, name: str, backend: int, *, workers: int = 1, redis_url: str = "memory://",
                database_url: str | None = None, extra_routes: int = 0, tls_listener: bool = False,
                tls_upstream: bool = False, admin_port: int | None = None, access_log: bool = False
                ) -> tuple[subprocess.Popen[bytes], int]:
        """`admin_port`: with the admin listener (and so with metrics counted); `access_log`: one line a request,
        to the log file."""
        port = free_port()
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        routes = [{"path": f"/r{i}", "upstream": "news", "auth": "public"} for i in range(extra_routes)]
        routes += [{"path": "/public", "upstream": "news", "auth": "public"},
                   {"path": "/", "upstream": "news", "auth": "required"}]
        config = {
            "server": {"host": "127.0.0.1", "port": port, "workers": workers, "log_level": "WARNING"},
            "jwt": {"secret": SECRET},
            "redis": {"url": redis_url},
            "database": {"url": database_url or f"sqlite:///{self.folder}/users.db"},
            "limits": {"sms": []},
            "upstreams": {"news": {"targets": [f"http://127.0.0.1:{backend}"], "max_connections": 256}},
            "routes": routes,
        }
        if admin_port is not None:
            config["admin"] = {"host": "127.0.0.1", "port": admin_port}
        if access_log:
            config["server"] |= {"access_log": True, "log_level": "INFO"}
        if tls_listener or tls_upstream:
            ca = self.certificates()
        if tls_listener:
            config["server"]["tls"] = {"cert_file": self.server_pem.cert, "key_file": self.server_pem.key}
        if tls_upstream:
            config["upstreams"]["news"] |= {"targets": [f"https://127.0.0.1:{self.backend_tls}"],
                                            "tls": {"ca_file": ca.ca_file}}
        (folder / "gateway.yaml").write_text(yaml.safe_dump(config))
        register(config["database"]["url"])
        proc = self.start([sys.executable, "-m", "gateway", "--config", str(folder / "gateway.yaml")], port,
                          cwd=ROOT)
        return proc, port

    def gateway_config(self, name: str) -> Path:
        return self.folder / name / "gateway.yaml"


def register(database_url: str) -> None:
    """The bench's user, in the store the gateway will read (once per store)."""
    from gateway.stores.databases import open_user_store

    async def run() -> None:
        store = await open_user_store(database_url, 1)
        try:
            if await store.get_by_id(USER_ID) is None:
                await store.register(USER_ID, "13900000042")
        finally:
            await store.close()

    asyncio.run(run())


def tokens(count: int) -> list[str]:
    """Distinct valid access tokens of the bench's user, as the gateway issues them."""
    from gateway.auth.tokens import TokenService
    from tests.factories import jwt_config

    service = TokenService(jwt_config(secret=SECRET))
    return [service.issue(USER_ID, refresh=False, sid=f"bench-{i}") for i in range(count)]


def rss(pid: int) -> int:
    """Resident memory of a process and its children (a supervisor's workers), in bytes."""
    total = 0
    for p in [pid, *_children(pid)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and its children so far, from /proc."""
    total = 0
    for p in [pid, *_children(pid)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    versions = {}
    for binary, flag in (("haproxy", "-v"), ("nginx", "-v"), ("wrk", "-v")):
        path = shutil.which(binary) or f"/usr/sbin/{binary}"
        try:
            out = subprocess.run([path, flag], capture_output=True, text=True, timeout=10)
            first = (out.stdout + out.stderr).strip().splitlines()[0]
            versions[binary] = first.split(" - ")[0].split(" Copyright")[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            versions[binary] = "missing"
    import aiohttp

    return {"cores": str(os.cpu_count()), "cpu": cpu, "python": sys.version.split()[0],
            "aiohttp": aiohttp.__version__, **versions}
