"""Redis through Sentinel: a real primary, replica and Sentinel; the primary dies; logins come back."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from aiohttp.test_utils import TestServer

from tests.factories import MOBILE, make_config
from tests.servers import RedisProcess, SentinelProcess

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


@pytest.fixture
def redis_with_sentinel(tmp_path: Path, redis_pair: tuple[RedisProcess, RedisProcess]) -> Any:
    primary, replica = redis_pair
    sentinel = SentinelProcess(tmp_path / "sentinel", primary.port)
    sentinel.start()
    yield primary, replica, sentinel
    sentinel.stop()


async def try_login(client: Any, sms_codes: Any) -> int:
    if (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status != 200:
        return 0
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes()})
    return resp.status


async def test_logins_work_again_after_failover(make_gateway: Any, upstream: TestServer, tmp_path: Path,
                                                redis_with_sentinel: Any, sms_codes: Any) -> None:
    primary, replica, sentinel = redis_with_sentinel
    config = make_config(str(upstream.make_url("")).rstrip("/"), database_url=f"sqlite:///{tmp_path}/gw.db",
                         redis={"sentinel": {"hosts": [f"127.0.0.1:{sentinel.port}"], "service": "mymaster"}})
    client = await make_gateway(config)
    assert (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status == 200
    assert sync_redis.Redis(port=primary.port).exists(f"app:code:{MOBILE}") == 1  # Sentinel led us to the primary
    assert await try_login(client, sms_codes) == 201
    primary.stop()
    deadline = time.monotonic() + 30
    status = 0
    while time.monotonic() < deadline:
        status = await try_login(client, sms_codes)
        if status == 201:
            break
        await asyncio.sleep(0.2)
    assert status == 201
    role = sync_redis.Redis(port=replica.port).role()
    assert role[0] in (b"master", "master")  # the replica was promoted, and the gateway followed it
