"""The gateway's own HTTP/1.1 server, spoken to byte by byte: framing, pipelining, Expect, limits, keep-alive."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.config import parse_config
from tests.factories import Conn, config_dict, raw_request
from upstream_stub.app import RECEIVED

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


def echo_headers(body: bytes) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(body)["headers"]}


async def test_pipelined_requests_are_answered_in_order(gateway: TestClient) -> None:
    conn = await Conn.open(gateway)
    conn.send(b"GET /v1_0/echo/public/1 HTTP/1.1\r\nHost: gw\r\n\r\n"
              b"POST /v1_0/echo/public/2 HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
              b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n\r\n")
    first, second, third = [await conn.answer() for _ in range(3)]
    conn.close()
    assert json.loads(first[2])["path"] == "/v1_0/echo/public/1"
    assert json.loads(second[2])["path"] == "/v1_0/echo/public/2" and json.loads(second[2])["body_length"] == 5
    assert third[0] == 200 and "channels" in json.loads(third[2])


async def test_the_upstream_gets_no_field_the_client_did_not_send(gateway: TestClient) -> None:
    status, _, body = await raw_request(gateway.server.host, gateway.server.port,
                                        b"GET /v1_0/echo/public HTTP/1.1\r\nHost: gw\r\nX-Mine: 1\r\nConnection: close\r\n\r\n")
    assert status == 200
    seen = set(echo_headers(body))
    gateway_own = {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
    assert seen == gateway_own | {"x-mine"}, seen  # no Accept, User-Agent or Accept-Encoding made up


@pytest.mark.parametrize("request_bytes, status, message", [
    (b"POST /v1_0/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     400, "Transfer-Encoding other than chunked is not supported."),
    (b"POST /v1_0/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
     "Transfer-Encoding other than chunked is not supported."),
    (b"POST /v1_0/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400,
     "Bad request."),
    (b"POST /v1_0/echo HTTP/1.1\r\nHost: gw\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\nhello", 417,
     "Only Expect: 100-continue is supported."),
    (b"GET /v1_0/echo HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431,
     "Request header fields too large."),
    (b"GET /v1_0/echo HTTP/1.1\r\nHost: gw\r\n" + b"X-Many: aaaaaaaaaaaaaaaaaaaa\r\n" * 3000 + b"\r\n", 431,
     "Request header fields too large."),
    (b"GET /v1_0/" + b"a" * 17000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 414, "Request target too long."),
    (b"GET * HTTP/1.1\r\nHost: gw\r\n\r\n", 400, "Invalid request target."),
])
async def test_requests_refused_by_the_server(gateway: TestClient, upstream: Any, request_bytes: bytes, status: int,
                                              message: str) -> None:
    conn = await Conn.open(gateway)
    conn.send(request_bytes)
    answer = await conn.answer()
    assert answer[0] == status
    assert json.loads(answer[2]) == {"message": message}
    assert answer[1]["server"] == "toutiao-gateway" and answer[1]["content-type"].startswith("application/json")
    if status != 400 or message != "Invalid request target.":
        assert await conn.closed()
    conn.close()
    assert not [path for _, path in upstream.app[RECEIVED] if path.startswith("/v1_0/echo")]


async def test_content_length_reaches_the_upstream_in_canonical_form(gateway: TestClient) -> None:
    conn = await Conn.open(gateway)
    conn.send(b"POST /v1_0/echo/public HTTP/1.1\r\nHost: gw\r\nContent-Length: 005\r\n\r\nhello")
    status, _, body = await conn.answer()
    conn.close()
    assert status == 200 and echo_headers(body)["content-length"] == "5" and json.loads(body)["body_length"] == 5


async def test_expect_100_continue_is_answered_once_the_request_is_allowed(gateway: TestClient) -> None:
    conn = await Conn.open(gateway)
    conn.send(b"POST /v1_0/echo/public HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"hello")
    status, _, body = await conn.answer()
    conn.close()
    assert status == 200 and json.loads(body)["body_length"] == 5


async def test_an_absolute_form_target_is_its_path(gateway: TestClient, upstream: Any) -> None:
    status, _, body = await raw_request(gateway.server.host, gateway.server.port,
                                        b"GET http://elsewhere.example/v1_0/echo/public/abs?q=1 HTTP/1.1\r\nHost: gw\r\n"
                                        b"Connection: close\r\n\r\n")
    assert status == 200 and json.loads(body)["path"] == "/v1_0/echo/public/abs?q=1"
    assert ("GET", "/v1_0/echo/public/abs?q=1") in upstream.app[RECEIVED]


async def test_http_1_0_clients(gateway: TestClient) -> None:
    status, headers, body = await raw_request(gateway.server.host, gateway.server.port,
                                              b"GET /v1_0/channels HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close" and "channels" in json.loads(body)
    conn = await Conn.open(gateway)
    conn.send(b"GET /v1_0/channels HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = await conn.answer()
    assert status == 200 and headers["connection"] == "keep-alive"
    conn.send(b"GET /v1_0/channels HTTP/1.0\r\n\r\n")
    assert (await conn.answer())[0] == 200
    assert await conn.closed()
    conn.close()


async def test_idle_connections_close_after_the_keepalive_timeout(make_gateway: Any, upstream: Any) -> None:
    raw = config_dict(str(upstream.make_url("")).rstrip("/"))
    raw["server"] = {"keepalive_timeout": "300ms", "header_timeout": "300ms"}
    client = await make_gateway(parse_config(raw, env={}))
    conn = await Conn.open(client)
    conn.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert (await conn.answer())[0] == 200
    assert await conn.closed()  # idle: closed after 300 ms
    slow = await Conn.open(client)
    slow.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n")  # never finishes its head
    status, _, body = await slow.answer()
    assert status == 408 and json.loads(body) == {"message": "Request header timed out."}
    assert await slow.closed()
    conn.close()
    slow.close()


# -- defects an independent review found in the first version of the server, each reproduced here --------


async def test_an_upgrade_request_with_a_body_is_refused_not_smuggled(gateway: TestClient, upstream: Any) -> None:
    """llhttp skips the body of a request that asks to switch protocols: were it accepted, its bytes would be
    read as the next request once the switch was refused (a Content-Length desync behind a front proxy)."""
    smuggled = b"GET /v1_0/echo/public/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
    for upgrade in (b"websocket", b"foo"):
        conn = await Conn.open(gateway)
        conn.send(b"GET /v1_0/echo/public/ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: " + upgrade +
                  b"\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        status, _, body = await conn.answer()
        assert status == 400 and b"may not have a body" in body
        assert await conn.closed()
        conn.close()
    assert not [path for _, path in upstream.app[RECEIVED] if "SMUGGLED" in path]


async def test_request_trailers_are_not_fields_of_the_request(gateway: TestClient) -> None:
    conn = await Conn.open(gateway)
    conn.send(b"POST /v1_0/echo/public HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n0\r\nX-From-Trailer: yes\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
              b"GET /v1_0/echo/public/next HTTP/1.1\r\nHost: gw\r\n\r\n")
    first, second = await conn.answer(), await conn.answer()
    conn.close()
    for status, _, body in (first, second):
        seen = echo_headers(body)
        assert status == 200 and "x-from-trailer" not in seen and "6.6.6.6" not in seen["x-forwarded-for"]


async def test_a_field_that_never_ends_is_refused_early(gateway: TestClient) -> None:
    conn = await Conn.open(gateway)
    conn.send(b"GET /v1_0/echo/public HTTP/1.1\r\nHost: gw\r\nX-Endless: ")
    for _ in range(16):  # up to 1 MiB, 64 KiB at a time, never a line end
        try:
            conn.send(b"a" * 65536)
            await conn.writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.01)
    answered = await conn.answer()
    conn.close()
    assert answered[0] == 431


async def test_a_client_that_does_not_read_stops_being_served(gateway: TestClient) -> None:
    """Pipelined requests whose answers are never read: the server stops reading once its writes back up,
    instead of answering into an ever-growing buffer."""
    conn = await Conn.open(gateway)
    flood = b"GET /v1_0/nothing-here HTTP/1.1\r\nHost: gw\r\n\r\n" * 2000
    sent = 0
    try:
        for _ in range(100):  # up to 9 MB, while the gateway still takes it
            await asyncio.wait_for(conn.writer.drain(), 2)
            conn.send(flood)
            sent += len(flood)
    except (TimeoutError, ConnectionError):
        pass
    conn.close()
    assert sent < 100 * len(flood)  # our sending backed up: the gateway stopped reading


async def test_a_half_closed_client_still_gets_its_answer(gateway: TestClient) -> None:
    reader, writer = await asyncio.open_connection(gateway.server.host, gateway.server.port)
    writer.write(b"GET /_stub/slow?seconds=0.2 HTTP/1.1\r\nHost: gw\r\n\r\n")
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200")


async def test_a_refused_body_left_unread_does_not_stall_the_connection(make_gateway: Any, upstream: Any) -> None:
    raw = config_dict(str(upstream.make_url("")).rstrip("/"))
    raw["server"] = {"keepalive_timeout": "10s"}
    client = await make_gateway(parse_config(raw, env={}))
    conn = await Conn.open(client)
    body = b"x" * 300_000  # more than the server buffers before it pauses reading
    conn.send(b"POST /v1_0/user/profile HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await asyncio.sleep(0.3)  # the whole body has arrived before the answer is written
    status, headers, _ = await conn.answer()
    assert status == 401
    if headers.get("connection") != "close":
        conn.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (await conn.answer())[0] == 200
    conn.close()


async def test_a_client_that_stops_sending_its_body_gets_408_and_frees_the_upstream(make_gateway: Any,
                                                                                   upstream: Any) -> None:
    raw = config_dict(str(upstream.make_url("")).rstrip("/"))
    raw["server"] = {"client_timeout": "500ms"}
    raw["upstreams"]["news"]["max_connections"] = 1
    client = await make_gateway(parse_config(raw, env={}))
    stalled = await Conn.open(client)
    stalled.send(b"POST /v1_0/echo/public HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n")  # and then nothing
    status, _, body = await stalled.answer()
    assert status == 408 and json.loads(body) == {"message": "Request body timed out."}
    stalled.close()
    assert (await client.get("/v1_0/channels")).status == 200  # the one upstream connection is free again


async def test_a_non_ascii_token_is_a_401_not_a_500(gateway: TestClient) -> None:
    for target in (b"GET /v1_0/user/profile", b"PUT /v1_0/authorizations"):
        conn = await Conn.open(gateway)
        conn.send(target + b" HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer \xff\xfe\r\nContent-Length: 0\r\n\r\n")
        status, _, _ = await conn.answer()
        conn.close()
        assert status in (401, 403)
