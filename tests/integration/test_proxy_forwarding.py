"""What the upstream receives and what the client gets back, through real sockets."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

import upstream_stub
from tests.factories import make_config, make_token, raw_request
from tests.servers import free_port
from upstream_stub.app import RECEIVED
from upstream_stub.testing import DOWNLOAD_GATE, GZIP_BODY, UPLOAD_FIRST_CHUNK

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


def seen_headers(body: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def raw(gateway: TestClient, head: str) -> tuple[int, dict[str, str], bytes]:
    return await raw_request(gateway.server.host, gateway.server.port, head.encode("latin-1"))


async def test_forwarded_headers_and_request_id(gateway: TestClient) -> None:
    resp = await gateway.get("/v1_0/echo/public", headers={"X-Forwarded-For": "203.0.113.9", "Host": "news.example"})
    seen = seen_headers(await resp.json())
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["news.example"]
    made = seen["x-request-id"][0]
    assert len(made) == 32 and resp.headers["X-Request-Id"] == made
    resp = await gateway.get("/v1_0/echo/public", headers={"X-Request-Id": "trace-abc-1"})
    assert seen_headers(await resp.json())["x-request-id"] == ["trace-abc-1"]
    assert resp.headers["X-Request-Id"] == "trace-abc-1"


async def test_hop_by_hop_and_connection_named_headers_never_reach_the_upstream(gateway: TestClient) -> None:
    status, _, body = await raw(gateway, (
        "GET /v1_0/echo/public HTTP/1.1\r\nHost: gw\r\nConnection: close, X-Private\r\nX-Private: secret\r\n"
        "Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Kept: yes\r\n"
        "X-User-Id: 1\r\nx-user-id: 2\r\nX_User_Id: 3\r\n\r\n"))
    assert status == 200
    seen = seen_headers(json.loads(body))
    for name in ("x-private", "keep-alive", "te", "proxy-authorization", "x-user-id", "x_user_id"):
        assert name not in seen
    assert seen["x-kept"] == ["yes"]


@pytest.mark.parametrize(
    "target, upstream_path",
    [
        ("/v1_0//echo/./public/%61b", "/v1_0/echo/public/ab"),
        ("/v1_0/echo/public/x/../y?q=%20&a=1", "/v1_0/echo/public/y?q=%20&a=1"),
        ("/v1_0/echo/public/%e4%b8%ad", "/v1_0/echo/public/%E4%B8%AD"),
    ],
)
async def test_the_normalized_path_is_the_forwarded_path(gateway: TestClient, target: str, upstream_path: str) -> None:
    status, _, body = await raw(gateway, f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status == 200
    assert json.loads(body)["path"] == upstream_path


@pytest.mark.parametrize(
    "target",
    ["/v1_0/echo/public/../required", "/v1_0/echo/public/%2e%2e/required", "/v1_0/echo/public/%2E%2E/%2E%2E/echo/required"],
)
async def test_dot_segments_cannot_escape_a_public_route(gateway: TestClient, upstream: TestServer, target: str) -> None:
    status, headers, body = await raw(gateway, f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status == 401
    assert json.loads(body) == {"message": "User must be authorized."}
    assert upstream.app[RECEIVED] == []


@pytest.mark.parametrize(
    "target", ["/v1_0/echo/public%2F..%2Frequired", "/v1_0/echo/public/a%5Cb", "/v1_0/echo/public/a%00", "/../x",
               "/v1_0/echo/public/a\\b"],
)
async def test_dangerous_paths_are_400(gateway: TestClient, upstream: TestServer, target: str) -> None:
    status, headers, body = await raw(gateway, f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status == 400
    assert json.loads(body)["message"].startswith("Invalid path")
    assert upstream.app[RECEIVED] == []


async def test_download_is_streamed(gateway: TestClient, upstream: TestServer) -> None:
    resp = await gateway.get("/_stub/download")
    first = await asyncio.wait_for(resp.content.readexactly(len(b"first-part;")), timeout=10)
    assert first == b"first-part;"
    upstream.app[DOWNLOAD_GATE].set()  # the stub sends the rest only now
    assert await resp.content.read() == b"second-part"


async def test_upload_is_streamed(gateway: TestClient, upstream: TestServer) -> None:
    seen_first = upstream.app[UPLOAD_FIRST_CHUNK]

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await asyncio.wait_for(seen_first.wait(), timeout=10)  # the upstream has it before we send more
        yield b"b" * 5000

    resp = await gateway.post("/_stub/upload", data=body())
    assert resp.status == 200
    assert (await resp.json())["total"] == 6000


@pytest.mark.parametrize("chunked", [False, True])
async def test_request_bodies_arrive_whole(gateway: TestClient, chunked: bool) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 65536):
            yield payload[i:i + 65536]

    data: Any = chunks() if chunked else payload
    resp = await gateway.post("/v1_0/echo/public", data=data)
    body = await resp.json()
    assert body["body_length"] == len(payload)
    seen = seen_headers(body)
    if chunked:
        assert "content-length" not in seen
    else:
        assert seen["content-length"] == [str(len(payload))]


async def test_redirects_are_passed_back_not_followed(gateway: TestClient, upstream: TestServer) -> None:
    resp = await gateway.get("/_stub/redirect", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/v1_0/channels"
    assert upstream.app[RECEIVED] == [("GET", "/_stub/redirect")]


async def test_compressed_bodies_pass_untouched(gateway: TestClient) -> None:
    resp = await gateway.get("/_stub/gzip", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert await resp.read() == GZIP_BODY
    resp = await gateway.get("/v1_0/echo/public", skip_auto_headers=["Accept-Encoding"])
    assert "accept-encoding" not in seen_headers(await resp.json())


async def test_cookies_pass_both_ways_and_are_never_kept_by_the_gateway(gateway: TestClient) -> None:
    resp = await gateway.get("/_stub/cookies")
    assert len(resp.headers.getall("Set-Cookie")) == 2
    fresh = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    async with fresh:
        async with fresh.get(gateway.make_url("/_stub/cookies")) as again:
            assert (await again.json())["cookie"] is None


async def test_server_header_names_no_version(gateway: TestClient) -> None:
    for resp in [await gateway.get("/v1_0/channels"), await gateway.get("/v1_0/echo/required"),
                 await gateway.get(f"/v1_0/sms/codes/{13911111111}")]:
        assert resp.headers["Server"] == "toutiao-gateway"


async def test_round_robin_over_targets(make_gateway: Any, aiohttp_server: Any) -> None:
    stubs = [await aiohttp_server(upstream_stub.create_app()) for _ in range(2)]
    config = make_config([str(s.make_url("")).rstrip("/") for s in stubs])
    client = await make_gateway(config)
    for _ in range(4):
        assert (await client.get("/v1_0/channels")).status == 200
    assert [len(s.app[RECEIVED]) for s in stubs] == [2, 2]


async def test_refused_connection_is_502(make_gateway: Any) -> None:
    client = await make_gateway(make_config(f"http://127.0.0.1:{free_port()}"))
    resp = await client.get("/v1_0/channels")
    assert resp.status == 502
    assert await resp.json() == {"message": "Upstream news is unavailable.", "upstream": "news"}


async def test_read_timeout_is_504(make_gateway: Any, upstream: TestServer) -> None:
    url = str(upstream.make_url("")).rstrip("/")
    config = make_config(url, upstreams={"news": {"targets": [url], "timeouts": {"connect": "1s", "read": "200ms"}}})
    client = await make_gateway(config)
    resp = await client.get("/_stub/slow?seconds=3")
    assert resp.status == 504
    assert await resp.json() == {"message": "Upstream news timed out.", "upstream": "news"}


async def test_a_kept_alive_connection_closed_by_the_upstream_is_not_an_error(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    stub = await aiohttp_server(upstream_stub.create_app(), keepalive_timeout=0.2)
    client = await make_gateway(make_config(str(stub.make_url("")).rstrip("/")))
    await client.server.gateway.users.register(42, "13900000042")
    token = {"Authorization": f"Bearer {make_token(42)}"}
    for _ in range(3):
        assert (await client.get("/v1_0/echo/x", headers=token)).status == 200
        assert (await client.post("/v1_0/echo/x", headers=token, data=b"body")).status == 200
        await asyncio.sleep(0.4)  # the stub closes its idle keep-alive connections meanwhile
