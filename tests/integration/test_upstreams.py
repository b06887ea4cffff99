"""Several real upstream_stub targets, stopped and started: balancing, health, ejection, retries, limits."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.factories import gateway_for
from tests.servers import Stub
from upstream_stub.testing import HEALTHY

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


PUBLIC = [{"path": "/", "upstream": "news", "auth": "public"}]


async def test_weights(make_gateway: Any, stubs: list[Stub]) -> None:
    client = await gateway_for(make_gateway, [{"url": stubs[0].url, "weight": 3}, stubs[1].url], PUBLIC)
    for _ in range(8):
        assert (await client.get("/v1_0/channels")).status == 200
    assert [len(s.received) for s in stubs[:2]] == [6, 2]


async def test_least_connections_sends_new_requests_to_the_idle_target(make_gateway: Any, stubs: list[Stub]) -> None:
    client = await gateway_for(make_gateway, [stubs[0].url, stubs[1].url], PUBLIC, balance="least_connections")
    slow = asyncio.create_task(client.get("/_stub/slow?seconds=1"))
    await asyncio.sleep(0.2)
    busy = [s for s in stubs[:2] if s.received]
    for _ in range(4):
        assert (await client.get("/v1_0/channels")).status == 200
    idle = [s for s in stubs[:2] if s is not busy[0]][0]
    assert len(idle.received) == 4 and len(busy[0].received) == 1
    assert (await slow).status == 200


async def test_random_two_choices_uses_every_target(make_gateway: Any, stubs: list[Stub]) -> None:
    client = await gateway_for(make_gateway, [s.url for s in stubs], PUBLIC, balance="random_two_choices")
    for _ in range(30):
        assert (await client.get("/v1_0/channels")).status == 200
    assert all(s.received for s in stubs) and sum(len(s.received) for s in stubs) == 30


async def test_active_health_checks_take_a_target_out_and_back(make_gateway: Any, stubs: list[Stub]) -> None:
    check = {"path": "/_stub/health", "interval": "100ms", "timeout": "500ms",
             "healthy_threshold": 2, "unhealthy_threshold": 2}
    client = await gateway_for(make_gateway, [stubs[0].url, stubs[1].url], PUBLIC, health_check=check)
    stubs[0].app[HEALTHY][0] = False
    await asyncio.sleep(0.6)
    for stub in stubs:
        stub.received.clear()
    for _ in range(4):
        assert (await client.get("/v1_0/channels")).status == 200
    assert [r for r in stubs[0].received if r[1] != "/_stub/health"] == []
    stubs[0].app[HEALTHY][0] = True
    await asyncio.sleep(0.6)
    for _ in range(4):
        await client.get("/v1_0/channels")
    assert [r for r in stubs[0].received if r[1] == "/v1_0/channels"]


async def test_passive_ejection_then_return_after_cooldown(make_gateway: Any, stubs: list[Stub]) -> None:
    client = await gateway_for(make_gateway, [stubs[0].url, stubs[1].url], PUBLIC,
                               passive={"consecutive_failures": 2, "cooldown": "1s"})
    await stubs[0].stop()
    statuses = [(await client.get("/v1_0/channels")).status for _ in range(6)]
    assert statuses == [200] * 6  # GETs that met the dead target were retried on the other one
    await stubs[0].start()
    stubs[0].received.clear()
    for _ in range(4):
        await client.get("/v1_0/channels")
    assert stubs[0].received == []  # still ejected
    await asyncio.sleep(1.1)
    for _ in range(4):
        await client.get("/v1_0/channels")
    assert stubs[0].received  # tried again after the cool-down


async def test_post_is_not_retried_unless_the_route_says_so(make_gateway: Any, stubs: list[Stub]) -> None:
    routes = [{"path": "/v1_0/echo/retry", "upstream": "news", "auth": "public", "retry_non_idempotent": True},
              {"path": "/", "upstream": "news", "auth": "public"}]
    client = await gateway_for(make_gateway, [stubs[0].url, stubs[1].url], routes,
                               passive={"consecutive_failures": 100, "cooldown": "1s"})
    await stubs[0].stop()
    posts = [(await client.post("/v1_0/echo/x", data=b"body")).status for _ in range(4)]
    assert sorted(posts) == [200, 200, 502, 502]
    retried = [(await client.post("/v1_0/echo/retry", data=b"body")).status for _ in range(4)]
    assert retried == [200] * 4
    gets = [(await client.get("/v1_0/echo/x")).status for _ in range(4)]
    assert gets == [200] * 4


async def test_all_targets_down_is_503_no_healthy_upstream(make_gateway: Any, stubs: list[Stub]) -> None:
    client = await gateway_for(make_gateway, [stubs[0].url, stubs[1].url], PUBLIC,
                               passive={"consecutive_failures": 1, "cooldown": "30s"})
    for stub in stubs[:2]:
        await stub.stop()
    first = await client.get("/v1_0/channels")
    assert first.status == 502 and await first.json() == {"message": "Upstream news is unavailable.",
                                                          "upstream": "news"}
    resp = await client.get("/v1_0/channels")
    assert resp.status == 503
    body = await resp.json()
    assert body == {"message": "No healthy upstream.", "upstream": "news"}
    assert "127.0.0.1" not in json.dumps(body)


async def test_per_route_timeouts(make_gateway: Any, stubs: list[Stub]) -> None:
    routes = [{"path": "/_stub/slow", "upstream": "news", "auth": "public", "timeouts": {"first_byte": "300ms"}},
              {"path": "/_stub/slow-body", "upstream": "news", "auth": "public", "timeouts": {"total": "700ms"}},
              {"path": "/", "upstream": "news", "auth": "public"}]
    client = await gateway_for(make_gateway, [stubs[0].url], routes)
    resp = await client.get("/_stub/slow?seconds=2")
    assert resp.status == 504 and (await resp.json())["message"] == "Upstream news timed out."
    resp = await client.get("/_stub/slow-body?chunks=5&interval=0.3")
    assert resp.status == 200  # the headers came in time; the body is cut at the total deadline
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_body_size_limit_is_413(make_gateway: Any, stubs: list[Stub]) -> None:
    routes = [{"path": "/v1_0/echo/small", "upstream": "news", "auth": "public", "max_body_size": "1k"},
              {"path": "/", "upstream": "news", "auth": "public"}]
    client = await gateway_for(make_gateway, [stubs[0].url], routes, max_body_size="64k")
    resp = await client.post("/v1_0/echo/small", data=b"x" * 2000)
    assert resp.status == 413 and await resp.json() == {"message": "Request body too large."}
    assert stubs[0].received == []

    async def chunks() -> Any:
        for _ in range(100):
            yield b"y" * 1000

    resp = await client.post("/v1_0/echo/big", data=chunks())
    assert resp.status == 413 and await resp.json() == {"message": "Request body too large."}
    resp = await client.post("/v1_0/echo/big", data=b"z" * 60000)
    assert resp.status == 200 and (await resp.json())["body_length"] == 60000


async def test_expect_100_continue(make_gateway: Any, stubs: list[Stub]) -> None:
    routes = [{"path": "/v1_0/echo/open", "upstream": "news", "auth": "public"},
              {"path": "/", "upstream": "news", "auth": "required"}]
    client = await gateway_for(make_gateway, [stubs[0].url], routes)
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1_0/echo/open HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 10) == b"HTTP/1.1 100 Continue\r\n"
    await reader.readline()
    writer.write(b"hello")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1_0/echo/closed HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    await writer.drain()
    first_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert first_line.startswith(b"HTTP/1.1 401")  # refused without asking for the body
    assert stubs[0].received == [("POST", "/v1_0/echo/open")]


@pytest.fixture
def blackhole() -> Any:
    """A port that accepts no more connections: its backlog is full and nothing accepts, so a connect hangs."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}"
    for sock in fillers + [server]:
        sock.close()


async def test_connect_timeout_is_504_and_a_get_moves_on(make_gateway: Any, stubs: list[Stub], blackhole: str) -> None:
    only_dead_config = {"timeouts": {"connect": "300ms", "read": "5s"}}
    only_dead = await gateway_for(make_gateway, [blackhole], PUBLIC, **only_dead_config)
    resp = await only_dead.get("/v1_0/channels")
    assert resp.status == 504 and (await resp.json())["message"] == "Upstream news timed out."
    both = await gateway_for(make_gateway, [blackhole, stubs[0].url], PUBLIC, **only_dead_config)
    assert [(await both.get("/v1_0/channels")).status for _ in range(2)] == [200, 200]
    resp = await both.post("/v1_0/echo/x", data=b"x")  # the round robin's turn for the dead target; no retry
    assert resp.status == 504
