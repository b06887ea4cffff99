"""The login case: the gateway's SMS-code login against the seed's, on the same Redis and MariaDB.

Both log in the same pre-registered users, each with a code already in Redis
at `app:code:{mobile}` (set again before every run, since a login spends it).
The seed peer runs under gunicorn with one sync worker; the gateway with one
worker.
"""
from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pymysql
import redis as sync_redis

from tests.servers import MariaDBProcess, RedisProcess, free_port

from . import load
from .systems import ROOT, SECRET, Stack, need

if TYPE_CHECKING:
    from .run import Results, Settings

CODE = "123456"
DATABASE = "toutiao_bench"


def redis(stack: Stack) -> str:
    need("redis-server", "redis-server")
    server = RedisProcess(stack.folder / "redis")
    server.start()
    stack.closers.append(server.stop)
    return server.url


def mysql(stack: Stack, users: int) -> str:
    need("mariadbd", "mariadb-server")
    server = MariaDBProcess(stack.folder / "mariadb")
    server.start()
    stack.closers.append(server.stop)
    server.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
    from gateway.stores import schema

    conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", database=DATABASE, autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement in schema.MYSQL:
                cur.execute(statement)
            rows = [(1000 + i, mobile(i), mobile(i)) for i in range(users)]
            cur.executemany("INSERT INTO user_basic (user_id, mobile, user_name) VALUES (%s, %s, %s)", rows)
            cur.executemany("INSERT INTO user_profile (user_id) VALUES (%s)", [(row[0],) for row in rows])
    finally:
        conn.close()
    return server.url(DATABASE)


def mobile(i: int) -> str:
    return f"139{i:08d}"


def put_codes(redis_url: str, users: int) -> None:
    client = sync_redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for i in range(users):
        pipe.set(f"app:code:{mobile(i)}", CODE, ex=600)
        pipe.delete(f"app:code:{mobile(i)}:attempts")
    pipe.execute()
    client.close()


def logs_in(url: str) -> bool:
    body = json.dumps({"mobile": mobile(0), "code": CODE}).encode()
    request = urllib.request.Request(url + "/v1_0/authorizations", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status == 201 and "refresh_token" in json.load(resp)
    except urllib.error.HTTPError:
        return False


def seed_peer(stack: Stack, redis_url: str, mysql_url: str) -> int:
    port = free_port()
    env = {**os.environ, "SEED_MYSQL_URL": mysql_url.replace("mysql://", "mysql+pymysql://"),
           "SEED_REDIS_URL": redis_url, "SEED_JWT_SECRET": SECRET}
    stack.start([sys.executable, "-m", "gunicorn", "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}",
                 "--log-level", "warning", "bench.seed_peer:app"], port, cwd=ROOT, env=env)
    return port


def compare(stack: Stack, settings: Settings, results: Results, folder: Path) -> None:
    redis_url = redis(stack)
    mysql_url = mysql(stack, settings.users)
    backend, _ = stack.nginx()
    _, gateway = stack.gateway("login", backend, redis_url=redis_url, database_url=mysql_url)
    peer = seed_peer(stack, redis_url, mysql_url)
    systems = {"gateway login": f"http://127.0.0.1:{gateway}", "seed login (Flask, gunicorn)": f"http://127.0.0.1:{peer}"}
    for name, url in systems.items():
        put_codes(redis_url, 1)
        if not logs_in(url):
            logs = "".join(p.read_text(errors="replace")[-3000:] for p in stack.folder.glob("*.log"))
            sys.exit(f"bench: {name} does not log in a registered user with the right code\n{logs}")
    script = folder / "login.lua"
    script.write_text(load.LOGIN)
    for _ in range(settings.rounds):
        for name, url in systems.items():
            put_codes(redis_url, settings.users)
            result = load.wrk(url + "/v1_0/authorizations", settings.seconds, settings.connections, script=script,
                              script_args=["0", str(settings.users), CODE])
            results.add(results.logins, name, result)
