"""WebSockets through the gateway: authenticated handshakes, frames both ways, close codes, refusals."""
from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.factories import bearer, make_token
from upstream_stub.testing import WS_CLOSE_CODES

USER = 4242


pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


@pytest.fixture
async def gateway(make_gateway: Any) -> TestClient:
    client = await make_gateway()
    await client.server.gateway.users.register(USER, "13900004242")
    return client


async def test_handshake_is_authenticated_and_identity_injected(gateway: TestClient) -> None:
    headers = {**bearer(make_token(USER)), "X-User-Id": "1"}
    async with gateway.ws_connect("/v1_0/ws/echo", headers=headers, protocols=["chat"]) as ws:
        hello = await ws.receive_json()
        assert hello == {"user_id": str(USER), "protocol": "chat"}
        assert ws.protocol == "chat"
        await ws.send_str("news")
        assert (await ws.receive()).data == "news"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive()).data == b"\x00\x01"


@pytest.mark.parametrize("headers, status", [({}, 401), (bearer(make_token(USER, refresh=True)), 403),
                                             ({"Authorization": "Bearer junk"}, 401)])
async def test_refused_handshakes(gateway: TestClient, headers: dict[str, str], status: int) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gateway.ws_connect("/v1_0/ws/echo", headers=headers)
    assert info.value.status == status


async def test_close_codes_pass_both_ways(gateway: TestClient, upstream: TestServer) -> None:
    async with gateway.ws_connect("/v1_0/ws/echo", headers=bearer(make_token(USER))) as ws:
        await ws.receive_json()
        await ws.send_str("close:4001")
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4001
    ws = await gateway.ws_connect("/v1_0/ws/echo", headers=bearer(make_token(USER)))
    await ws.receive_json()
    await ws.close(code=4002)
    for _ in range(100):
        if 4002 in upstream.app[WS_CLOSE_CODES]:
            break
        await asyncio.sleep(0.02)
    assert 4002 in upstream.app[WS_CLOSE_CODES]


async def test_an_upgrade_the_upstream_refuses_leaves_plain_http(gateway: TestClient) -> None:
    reader, writer = await asyncio.open_connection(gateway.server.host, gateway.server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /v1_0/ws/echo?refuse=1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {make_token(USER)}\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 502")
    length = int([line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0].split(b":")[1])
    assert b"refused the WebSocket upgrade" in await reader.readexactly(length)
    # The same connection, no token: the next request is judged on its own.
    writer.write(b"GET /v1_0/user/profile HTTP/1.1\r\nHost: gw\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 401")
    writer.close()


async def test_the_handshake_keeps_the_routes_own_timeouts(make_gateway: Any) -> None:
    """An upstream that accepts the connection and never answers the handshake: 504 at the route's timeout."""
    from gateway.config import parse_config
    from tests.factories import config_dict

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    raw = config_dict(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    raw["upstreams"]["news"]["timeouts"] = {"connect": "5s", "read": "60s"}
    raw["routes"] = [{"path": "/", "upstream": "news", "auth": "public",
                      "timeouts": {"connect": "1s", "first_byte": "300ms"}}]
    client = await make_gateway(parse_config(raw, env={}))
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await asyncio.wait_for(client.ws_connect("/v1_0/ws/echo"), timeout=30)
        assert info.value.status == 504
        assert asyncio.get_running_loop().time() - started < 30  # the upstream's 60 s read timeout was not used
    finally:
        server.close()
