"""Real Redis and MariaDB going away: the replica fallback, and failing closed with 503."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from tests.factories import MOBILE, Heard, make_config
from tests.servers import MariaDBProcess, RedisProcess

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


async def wait_for_key(url: str, key: str) -> None:
    client = aioredis.from_url(url)
    try:
        for _ in range(200):
            if await client.get(key) is not None:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{key} never reached {url}")
    finally:
        await client.aclose()


async def test_login_reads_the_code_from_the_replica_when_the_primary_refuses(
    make_gateway: Any, upstream: TestServer, redis_pair: Any, tmp_path: Path, sms_codes: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, replica = redis_pair
    config = make_config(str(upstream.make_url("")).rstrip("/"), redis_url=primary.url,
                         database_url=f"sqlite:///{tmp_path}/gw.db", redis={"replica_url": replica.url})
    client = await make_gateway(config)
    assert (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status == 200
    await wait_for_key(replica.url, f"app:code:{MOBILE}")
    primary.stop()
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)})
    assert resp.status == 201
    assert any("primary unavailable" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_redis_down_fails_closed_with_503(make_gateway: Any, redis_server: RedisProcess,
                                                real_redis_url: str, tmp_path: Path, upstream: TestServer) -> None:
    config = make_config(str(upstream.make_url("")).rstrip("/"), redis_url=real_redis_url,
                         database_url=f"sqlite:///{tmp_path}/gw.db")
    client = await make_gateway(config)
    redis_server.stop()
    try:
        resp = await client.get(f"/v1_0/sms/codes/{MOBILE}")
        assert resp.status == 503 and await resp.json() == {"message": "Service unavailable."}
        resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": "123456"})
        assert resp.status == 503 and await resp.json() == {"message": "Service unavailable."}
    finally:
        redis_server.start()
    assert (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status == 200  # and it recovers


async def test_database_down_fails_closed_with_503(make_gateway: Any, mysql_server: MariaDBProcess,
                                                   real_mysql_url: str, upstream: TestServer,
                                                   sms_codes: Any) -> None:
    config = make_config(str(upstream.make_url("")).rstrip("/"), database_url=real_mysql_url)
    client = await make_gateway(config)
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    mysql_server.stop()
    try:
        resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)})
        assert resp.status == 503 and await resp.json() == {"message": "Service unavailable."}
    finally:
        mysql_server.start()
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)})
    assert resp.status == 201  # the pool reconnects once the database is back


async def test_route_limits_hold_per_instance_while_redis_is_down(make_gateway: Any, upstream: TestServer,
                                                                  tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    try:
        routes = [{"path": "/v1_0/channels", "upstream": "news", "auth": "public",
                   "limits": [{"rate": "3/minute", "key": "ip"}]}]
        client = await make_gateway(make_config(str(upstream.make_url("")).rstrip("/"), redis_url=redis.url,
                                                database_url=f"sqlite:///{tmp_path}/gw.db", routes=routes))
        assert (await client.get("/v1_0/channels")).status == 200
        redis.stop()
        statuses = [(await client.get("/v1_0/channels")).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # this instance's own window, not no limit at all
    finally:
        redis.stop()


async def test_a_revocation_list_loaded_from_redis_tells_listeners_to_forget_every_status(
        real_redis_url: str) -> None:
    """What was cached about users may be older than the list just loaded (after a lost subscription)."""
    from gateway.stores.revocation import RedisRevocations

    listener = Heard()
    heard = listener.heard

    client = aioredis.from_url(real_redis_url, decode_responses=True)
    await client.publish("gw:events", "status:nope")  # nobody listens yet
    revocations = RedisRevocations(client, 3600)
    revocations.on_status_change(listener)
    listening = asyncio.create_task(revocations.listen())
    try:
        assert await revocations.wait_until_fresh(timeout=5)
        assert heard == ["all"]
        await client.publish("gw:events", "status:nope")  # unreadable: ignored, the subscription lives on
        await client.publish("gw:events", "status:42")
        for _ in range(50):
            if heard[-1] == 42:
                break
            await asyncio.sleep(0.05)
        assert heard == ["all", 42] and revocations.fresh
    finally:
        revocations.stop()
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await client.aclose()
