"""Fixtures for real servers: redis, mysql (MariaDB), upstream (upstream_stub), gateway."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pymysql
import pytest
import redis as sync_redis
from aiohttp.test_utils import TestClient, TestServer

import upstream_stub
from gateway.config import Config
from gateway.stores import schema
from tests.factories import MOBILE, make_config
from tests.servers import GatewayServer, MariaDBProcess, RedisProcess, Stub, free_port, wait_for_port

MYSQL_DATABASE = "toutiao_test"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_pair(tmp_path: Any) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    """A private primary and its replica, for fault tests."""
    primary = RedisProcess(tmp_path / "primary")
    primary.start()
    replica = RedisProcess(tmp_path / "replica", replica_of=primary.port)
    replica.start()
    yield primary, replica
    replica.stop()
    primary.stop()


@pytest.fixture
def real_redis_url(request: pytest.FixtureRequest) -> str:
    """GATEWAY_TEST_REDIS_URL when set (flushed!), else the tests' own redis-server."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL") or _own_server(request, "redis_server").url
    sync_redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def mysql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBProcess]:
    server = MariaDBProcess(tmp_path_factory.mktemp("mariadb"))
    server.start()
    server.execute(f"CREATE DATABASE IF NOT EXISTS {MYSQL_DATABASE} CHARACTER SET utf8mb4")
    yield server
    server.stop()


@pytest.fixture
def real_mysql_url(request: pytest.FixtureRequest) -> str:
    """GATEWAY_TEST_MYSQL_URL when set (its user tables are emptied!), else the tests' own mariadbd."""
    url = os.environ.get("GATEWAY_TEST_MYSQL_URL") or _own_server(request, "mysql_server").url(MYSQL_DATABASE)
    _empty_user_tables(url)
    return url


def _own_server(request: pytest.FixtureRequest, fixture: str) -> Any:
    server = request.getfixturevalue(fixture)
    if server.proc is None:
        server.start()  # a fault test stopped it
    return server


def _empty_user_tables(url: str) -> None:
    from yarl import URL

    parsed = URL(url)
    conn = pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.user or "root",
                           password=parsed.password or "", database=parsed.path.lstrip("/"), autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement in schema.MYSQL:
                cur.execute(statement)
            for table in ("user_basic", "user_profile"):
                cur.execute(f"TRUNCATE TABLE {table}")
    finally:
        conn.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests run on both store kinds, unless their module says `pytestmark = pytest.mark.stores("embedded")`."""
    if "store_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        metafunc.parametrize("store_kind", marker.args if marker else ("embedded", "real"))


@pytest.fixture
def store_urls(store_kind: str, request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, str]:
    """memory:// + sqlite, or real Redis + MariaDB."""
    if store_kind == "embedded":
        return {"redis_url": "memory://", "database_url": f"sqlite:///{tmp_path}/gateway.db"}
    return {
        "redis_url": request.getfixturevalue("real_redis_url"),
        "database_url": request.getfixturevalue("real_mysql_url"),
    }


@pytest.fixture
async def stubs() -> Any:
    """Three upstream_stub servers in this process, each on a port of its own, that a test can stop and start."""
    made = [Stub() for _ in range(3)]
    for stub in made:
        await stub.start()
    yield made
    for stub in made:
        await stub.stop()


@pytest.fixture
def stub() -> Iterator[str]:
    """upstream_stub as its own process (for gateways run as processes): its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "upstream_stub", "--port", str(port)],
                            cwd=Path(__file__).parents[1])
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(upstream_stub.create_app())


GatewayFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    upstream: TestServer,
    store_urls: dict[str, str],
) -> GatewayFactory:
    """make_gateway(**config sections) -> a client of a real listening gateway."""

    async def make(config: Config | None = None, **sections: Any) -> TestClient:
        if config is None:
            kwargs = {**store_urls, **sections}
            config = make_config(str(upstream.make_url("")).rstrip("/"), **kwargs)
        return await aiohttp_client(GatewayServer(config))

    return make


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> TestClient:
    return await make_gateway()


@pytest.fixture
def sms_codes(caplog: pytest.LogCaptureFixture) -> Callable[[str], str]:
    """Reads the code the development `log` sender wrote for a mobile."""
    caplog.set_level(logging.WARNING, logger="gateway.sms")

    def last_code(mobile: str = MOBILE) -> str:
        for record in reversed(caplog.records):
            if record.name == "gateway.sms" and record.args and record.args[0] == mobile:
                return str(record.args[1])
        raise AssertionError(f"no code was sent to {mobile}")

    return last_code


@pytest.fixture
def login(gateway: TestClient, sms_codes: Callable[[str], str]) -> Callable[..., Awaitable[dict[str, str]]]:
    """login(mobile) -> {"token", "refresh_token"}, through the real endpoints."""

    async def do(mobile: str = MOBILE, client: TestClient | None = None) -> dict[str, str]:
        client = client or gateway
        resp = await client.get(f"/v1_0/sms/codes/{mobile}")
        assert resp.status == 200, await resp.text()
        resp = await client.post("/v1_0/authorizations", json={"mobile": mobile, "code": sms_codes(mobile)})
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())

    return do


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything the gateway logs, DEBUG up; at the end, no ERROR line and no traceback (what no client may
    cause). The attack-matrix modules use it for every test."""
    caplog.set_level(logging.DEBUG, logger="gateway")
    yield caplog
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
