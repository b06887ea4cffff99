"""Throughput of the gateway against HAProxy and nginx, measured in one run on this machine.

    .venv/bin/python bench/run.py [--seconds 8] [--rounds 3] [--connections 32]

Starts, on free loopback ports: nginx as the backend (`return 200`), nginx and
HAProxy as plain proxies in front of it, and the gateway (one worker,
embedded stores) with a public and a required route. wrk then loads each in
turn, round after round, so that the machine's noise falls on all of them
alike; the table gives requests per second and the gateway's ratio to
HAProxy and to nginx. Needs wrk, nginx and haproxy (Debian packages wrk,
nginx-light, haproxy). Every load is bounded by --seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, wait_for_port  # noqa: E402

SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        sys.exit(f"bench: {binary} is missing: apt-get install {package}")
    return path


def nginx_conf(folder: Path, backend: int, proxy: int) -> Path:
    conf = folder / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx.err;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy; fastcgi_temp_path {folder}/fcgi;
  uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{ listen 127.0.0.1:{backend}; location / {{ add_header X-Seen-User-Id $http_x_user_id; return 200 '{{"ok":true}}'; }} }}
  server {{ listen 127.0.0.1:{proxy};
           location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
}}""")
    return conf


def haproxy_conf(folder: Path, backend: int, port: int) -> Path:
    """HAProxy doing the gateway's job on a required route: HS256 jwt_verify, the exp check, the client's
    X-User-Id removed and X-User-Id set from the payload, 401 JSON otherwise."""
    deny = "http-request return status 401 content-type application/json string '{\"message\":\"denied\"}'"
    conf = folder / "haproxy.cfg"
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
    return conf


def gateway_conf(folder: Path, backend: int, port: int) -> Path:
    conf = folder / "gateway.yaml"
    conf.write_text(f"""
server: {{host: 127.0.0.1, port: {port}}}
jwt: {{secret: "{SECRET}"}}
redis: {{url: "memory://"}}
database: {{url: "sqlite:///{folder}/gateway.db"}}
upstreams: {{news: {{targets: ["http://127.0.0.1:{backend}"]}}}}
routes:
  - {{path: /public, upstream: news, auth: public}}
  - {{path: /, upstream: news, auth: required}}
""")
    return conf


def token_for(conf: Path) -> str:
    from gateway.auth.tokens import TokenService
    from gateway.config import load_config
    from gateway.stores.users_sqlite import SQLiteUserStore

    config = load_config(str(conf), env={})

    async def register() -> None:
        store = await SQLiteUserStore.open(config.database.url)
        await store.register(42, "13900000042")
        await store.close()

    asyncio.run(register())
    return TokenService(config.jwt).issue(42, refresh=False, sid="bench")


def wrk(url: str, seconds: int, connections: int, headers: list[str]) -> float:
    args = [need("wrk", "wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", *headers, url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    nginx, haproxy = need("nginx", "nginx-light"), need("haproxy", "haproxy")
    backend, nginx_port, haproxy_port, gateway_port = (free_port() for _ in range(4))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        procs = [
            subprocess.Popen([nginx, "-c", str(nginx_conf(folder, backend, nginx_port)), "-p", tmp,
                              "-g", "daemon off;"]),
            subprocess.Popen([haproxy, "-f", str(haproxy_conf(folder, backend, haproxy_port))]),
        ]
        conf = gateway_conf(folder, backend, gateway_port)
        token = token_for(conf)
        procs.append(subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(conf)], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            for port in (backend, nginx_port, haproxy_port, gateway_port):
                wait_for_port(port)
            targets = {
                "haproxy": (f"http://127.0.0.1:{haproxy_port}/x", ["-H", f"Authorization: Bearer {token}"]),
                "nginx": (f"http://127.0.0.1:{nginx_port}/x", []),
                "gateway public": (f"http://127.0.0.1:{gateway_port}/public/x", []),
                "gateway required": (f"http://127.0.0.1:{gateway_port}/x", ["-H", f"Authorization: Bearer {token}"]),
            }
            check(targets, token)
            results: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (url, headers) in targets.items():
                    results[name].append(wrk(url, args.seconds, args.connections, headers))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(20)
    report(results)


def check(targets: dict[str, tuple[str, list[str]]], token: str) -> None:
    """Each system first proves it does the job: 200 and X-User-Id 42 with the token, 401 with a bad one."""
    import urllib.error
    import urllib.request

    def status(url: str, auth: str | None) -> tuple[int, str | None]:
        req = urllib.request.Request(url, headers={"Authorization": auth, "X-User-Id": "7"} if auth else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.headers.get("X-Seen-User-Id")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    for name, (url, _) in targets.items():
        if name in ("nginx", "gateway public"):
            if status(url, None)[0] != 200:
                sys.exit(f"bench: {name} does not answer 200")
            continue
        seen = status(url, f"Bearer {token}")
        if seen != (200, "42") or status(url, f"Bearer {token[:-2]}xx")[0] != 401:
            sys.exit(f"bench: {name} does not do the job: a valid token gave {seen}")


def report(results: dict[str, list[float]]) -> None:
    haproxy, nginx = statistics.median(results["haproxy"]), statistics.median(results["nginx"])
    print(f"{'target':<18}{'median req/s':>14}{'vs haproxy':>12}{'vs nginx':>10}   rounds")
    for name, values in results.items():
        median = statistics.median(values)
        rounds = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:<18}{median:>14.0f}{median / haproxy:>12.3f}{median / nginx:>10.3f}   {rounds}")


if __name__ == "__main__":
    main()
