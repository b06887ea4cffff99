"""The command line, run as a user runs it: real processes, real exit codes."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.factories import SECRET, config_dict
from tests.servers import MariaDBProcess, free_port, wait_for_port

ROOT = Path(__file__).parents[2]


def gateway(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def write(tmp_path: Path, raw: dict[str, object]) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_check_config_accepts_the_shipped_file() -> None:
    result = gateway("check-config", "--config", "gateway.yaml", env={"GATEWAY_JWT_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("order", ["before", "after"])
def test_dev_is_accepted_before_or_after_the_subcommand(tmp_path: Path, order: str) -> None:
    raw = config_dict()
    del raw["jwt"]
    config = write(tmp_path, raw)
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_JWT_SECRET"}
    args = ["--dev", "check-config", "--config", config] if order == "before" else \
        ["check-config", "--config", config, "--dev"]
    result = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=60)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    without = subprocess.run([sys.executable, "-m", "gateway", "check-config", "--config", config],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert without.returncode == 2 and "jwt.secret: is required" in without.stderr


def test_check_config_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    raw = config_dict()
    raw["routes"][2]["upstream"] = "nwes"
    raw["jwt"]["secret"] = "short"
    raw["sms"]["sender"] = "carrier-pigeon"
    result = gateway("check-config", "--config", write(tmp_path, raw))
    assert result.returncode == 2
    assert "routes[2].upstream: unknown upstream 'nwes'" in result.stderr
    assert "jwt.secret: must be at least 32 bytes for HS256" in result.stderr
    assert "sms.sender: must be one of log" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_config_never_starts_the_server(tmp_path: Path) -> None:
    raw = config_dict()
    raw["routes"][0]["upstream"] = "missing"
    result = gateway("--config", write(tmp_path, raw), timeout=30)
    assert result.returncode == 2 and "unknown upstream 'missing'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_secret_is_never_printed(tmp_path: Path) -> None:
    raw = config_dict()
    raw["routes"][0]["upstream"] = "missing"
    result = gateway("check-config", "--config", write(tmp_path, raw))
    assert SECRET not in result.stderr + result.stdout


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    result = gateway("check-config", env={"GATEWAY_CONFIG": write(tmp_path, config_dict())})
    assert result.returncode == 0, result.stderr


def test_migrate_sqlite_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    config = write(tmp_path, config_dict(database_url=f"sqlite:///{db}"))
    for _ in range(2):
        result = gateway("migrate", "--config", config)
        assert result.returncode == 0, result.stderr
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"user_basic", "user_profile"} <= tables


def test_migrate_mysql_is_idempotent(tmp_path: Path, mysql_server: MariaDBProcess) -> None:
    if mysql_server.proc is None:
        mysql_server.start()
    mysql_server.execute("CREATE DATABASE IF NOT EXISTS migrate_test")
    raw = config_dict(database_url=mysql_server.url("migrate_test"))
    del raw["jwt"]  # migrate touches the database alone: no secret needed
    config = write(tmp_path, raw)
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "gateway", "migrate", "--config", config], capture_output=True,
                                text=True, cwd=ROOT, timeout=60,
                                env={k: v for k, v in os.environ.items() if k != "GATEWAY_JWT_SECRET"})
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # quiet when the tables exist: no driver warnings
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=mysql_server.port, user="root", database="migrate_test")
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert {r[0] for r in cur.fetchall()} == {"user_basic", "user_profile"}
    conn.close()


def test_migrate_reports_an_unreachable_database(tmp_path: Path) -> None:
    config = write(tmp_path, config_dict(database_url=f"mysql://root@127.0.0.1:{free_port()}/x"))
    result = gateway("migrate", "--config", config)
    assert result.returncode == 1 and "database unavailable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("entry", [[sys.executable, "-m", "gateway"], [str(Path(sys.executable).parent / "toutiao-gateway")]])
def test_run_serves_until_sigterm(tmp_path: Path, entry: list[str]) -> None:
    port, stub_port = free_port(), free_port()
    raw = config_dict(f"http://127.0.0.1:{stub_port}", database_url=f"sqlite:///{tmp_path}/gw.db")
    del raw["jwt"]["secret"]
    raw["server"]["port"] = port
    stub = subprocess.Popen([sys.executable, "-m", "upstream_stub", "--port", str(stub_port)], cwd=ROOT)
    proc = subprocess.Popen([*entry, "--config", write(tmp_path, raw), "--dev"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(stub_port)
        wait_for_port(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1_0/channels", timeout=5) as resp:
            assert resp.status == 200 and resp.headers["Server"] == "toutiao-gateway"
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
        stub.terminate()
        stub.wait(10)
    assert "DEVELOPMENT MODE" in output and "will NOT survive a restart" in output
    assert proc.returncode == 0
