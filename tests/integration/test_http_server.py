"""The gateway's own HTTP/1.1 server, spoken to byte by byte: framing, pipelining, Expect, limits, keep-alive."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.config import parse_config
from tests.factories import config_dict, raw_request
from upstream_stub.app import RECEIVED

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client: TestClient) -> Conn:
        return cls(*await asyncio.open_connection(client.server.host, client.server.port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """One answer framed by Content-Length (or none) or chunks."""
        head = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        status = int(lines[0].split()[1])
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int((await self.reader.readline()).strip(), 16):
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            await self.reader.readexactly(2)
        else:
            body = b""
        return status, headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    def close(self) -> None:
        self.writer.close()


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
    raw["server"] = {"keepalive_timeout": "300ms"}
    client = await make_gateway(parse_config(raw, env={}))
    conn = await Conn.open(client)
    conn.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert (await conn.answer())[0] == 200
    assert await conn.closed()  # idle: closed after 300 ms
    slow = await Conn.open(client)
    slow.send(b"GET /v1_0/channels HTTP/1.1\r\nHost: gw\r\n")  # never finishes its head
    assert await slow.closed()
    conn.close()
    slow.close()
