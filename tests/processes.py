"""The gateway as its own process, the way an operator runs it: for the tests that signal, restart or
command it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.factories import config_dict
from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).parents[1]


class Running:
    def __init__(self, tmp_path: Path, raw: dict[str, Any]) -> None:
        self.path = tmp_path / "gateway.yaml"
        self.port = raw["server"]["port"]
        self.write(raw)
        self.log = tmp_path / "gateway.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(self.path)], cwd=ROOT,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, raw: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(raw))

    def records(self) -> list[dict[str, Any]]:
        """The log, record by record (the gateway writes JSON lines by default)."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def gateway_raw(stub: str, tmp_path: Path, channels: str = "public", **server: Any) -> dict[str, Any]:
    raw = config_dict(stub, database_url=f"sqlite:///{tmp_path}/gw.db")
    raw["server"].update({"port": free_port(), "shutdown_timeout": "10s", **server})
    raw["routes"] = [{"path": "/v1_0/channels", "upstream": "news", "auth": channels},
                     {"path": "/_stub", "upstream": "news", "auth": "public"},
                     {"path": "/", "upstream": "news", "auth": "required"}]
    return raw


def users_command(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m gateway users ...`, as an operator types it (`stdin`: what it reads, a password say)."""
    return subprocess.run([sys.executable, "-m", "gateway", "users", *args, "--config", str(config)],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, env=os.environ, timeout=60)


def write_config(tmp_path: Path, store_urls: dict[str, str]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config_dict(**store_urls)))
    return path


async def set_account(database_url: str, user_id: int, account: str) -> None:
    if database_url.startswith("sqlite"):
        import aiosqlite

        from gateway.stores.users_sqlite import sqlite_path

        async with aiosqlite.connect(sqlite_path(database_url)) as db:
            await db.execute("UPDATE user_basic SET account = ? WHERE user_id = ?", (account, user_id))
            await db.commit()
        return
    import pymysql
    from yarl import URL

    url = URL(database_url)
    conn = pymysql.connect(host=url.host, port=url.port, user=url.user, database=url.path.lstrip("/"),
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute("UPDATE user_basic SET account = %s WHERE user_id = %s", (account, user_id))
    conn.close()
