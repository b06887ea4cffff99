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


def limited(**websocket: Any) -> list[dict[str, Any]]:
    return [{"path": "/", "upstream": "news", "auth": "public", "websocket": websocket}]


async def test_a_message_over_the_limit_closes_the_tunnel_with_1009(make_gateway: Any) -> None:
    client = await make_gateway(routes=limited(max_message_size="1k"))
    async with client.ws_connect("/v1_0/ws/echo") as ws:
        await ws.receive_json()
        await ws.send_str("x" * 1024)  # at the limit: passes
        assert (await ws.receive()).data == "x" * 1024
        await ws.send_str("y" * 1025)
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1009


async def raw_handshake(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /v1_0/ws/echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    length = bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
    return bytes([(0x80 if fin else 0) | opcode]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame (unmasked); (-1, b"") when the connection has ended."""
    try:
        head = await asyncio.wait_for(reader.readexactly(2), timeout=10)
    except asyncio.IncompleteReadError:
        return -1, b""
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    return head[0] & 0x0F, await reader.readexactly(size)


async def test_a_fragmented_message_counts_as_one_and_pings_between_do_not(make_gateway: Any) -> None:
    client = await make_gateway(routes=limited(max_message_size="1k"))
    reader, writer = await raw_handshake(client.server.port)
    assert (await read_frame(reader))[0] == 0x1  # the stub's hello
    writer.write(masked(0x1, b"a" * 600, fin=False) + masked(0x9, b"ping") + masked(0x0, b"b" * 400, fin=False))
    writer.write(masked(0x0, b"c" * 24))  # 1024 in all: at the limit
    seen = [await read_frame(reader), await read_frame(reader)]  # the pong and the echo, in either order
    assert (0x1, b"a" * 600 + b"b" * 400 + b"c" * 24) in seen and (0xA, b"ping") in seen
    writer.write(masked(0x1, b"d" * 600, fin=False))
    writer.write(masked(0x0, b"e" * 300, fin=False) + masked(0x0, b"f" * 200))  # 1100: over
    frames = [await read_frame(reader)]
    while frames[-1][0] != -1:
        frames.append(await read_frame(reader))
    writer.close()
    assert frames[:-1] == [(0x8, (1009).to_bytes(2, "big") + b"message too big")]  # no echo of it: never whole


async def test_an_idle_tunnel_is_closed_with_1001_and_traffic_keeps_it_open(make_gateway: Any) -> None:
    client = await make_gateway(routes=limited(idle_timeout="1s"))
    async with client.ws_connect("/v1_0/ws/echo", autoping=False) as ws:
        await ws.receive_json()
        for i in range(5):  # 2 seconds of traffic, never a second of silence
            await ws.send_str(f"tick {i}")
            assert (await ws.receive(timeout=5)).data == f"tick {i}"
            await asyncio.sleep(0.4)
        message = await ws.receive(timeout=10)  # then silence
        assert message.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1001


def test_websocket_limits_are_read_and_checked() -> None:
    from gateway.config import ConfigError, parse_config
    from tests.factories import config_dict

    raw = config_dict(upstreams={"news": {"targets": ["http://127.0.0.1:9"],
                                          "websocket": {"idle_timeout": "2m", "max_message_size": "64k"}}})
    raw["routes"] = [{"path": "/chat", "upstream": "news", "websocket": {"idle_timeout": "10s"}},
                     {"path": "/", "upstream": "news"}]
    config = parse_config(raw, env={})
    assert config.upstreams["news"].websocket.idle_timeout == 120
    chat = config.routes[0].websocket
    assert chat is not None and (chat.idle_timeout, chat.max_message_size) == (10, 64 * 1024)  # the rest inherited
    assert config.routes[1].websocket is None  # the upstream's
    raw["routes"][0]["websocket"] = {"max_message_size": "lots", "bogus": 1}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={})
    assert set(caught.value.problems) == {"routes[0].websocket.bogus: unknown key",
                                          "routes[0].websocket.max_message_size: must be a size such as 512k, 10m "
                                          "or 1g, got 'lots'"}
