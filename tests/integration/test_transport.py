"""The upstream transport against an upstream that answers exact bytes and records what it receives."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.config import parse_config
from tests.factories import config_dict, raw_request
from tests.servers import Answer, RawUpstream

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def public_gateway(make_gateway: Any, targets: str | list[str], **news: Any) -> Any:
    """A gateway whose one route is public, in front of `targets`, with `news` over the upstream's settings."""
    raw = config_dict(targets)
    raw["upstreams"]["news"].update(news)
    raw["routes"] = [{"path": "/", "upstream": "news", "auth": "public"}]
    return await make_gateway(parse_config(raw, env={}))


def address(server: asyncio.AbstractServer) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def raw_gateway(make_gateway: Any) -> Any:
    made: list[RawUpstream] = []

    async def make(answer: Answer, *, close_after: bool = False, **news: Any) -> Any:
        upstream = RawUpstream(answer, close_after)
        made.append(upstream)
        return upstream, await public_gateway(make_gateway, await upstream.start(), **news)

    yield make
    for upstream in made:
        await upstream.stop()


async def test_connections_are_kept_alive_and_reused(raw_gateway: Any) -> None:
    upstream, client = await raw_gateway(lambda request: OK)
    for _ in range(5):
        resp = await client.get("/a")
        assert resp.status == 200 and await resp.read() == b"ok"
    assert upstream.connections == 1 and len(upstream.requests) == 5


async def test_the_upstream_gets_the_clients_headers_and_the_gateways_nothing_else(raw_gateway: Any) -> None:
    upstream, client = await raw_gateway(lambda request: OK)
    port = client.server.port
    status, _, _ = await raw_request("127.0.0.1", port, b"POST /a?q=1 HTTP/1.1\r\nHost: gw\r\nX-Custom: v\r\n"
                                     b"Content-Length: 05\r\nConnection: close\r\n\r\nhello")
    assert status == 200
    head, _, body = upstream.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /a?q=1 HTTP/1.1" and body == b"hello"
    names = [line.split(b":")[0].lower() for line in lines[1:]]
    assert sorted(names) == sorted([b"host", b"x-custom", b"x-forwarded-for", b"x-forwarded-proto",
                                    b"x-forwarded-host", b"x-request-id", b"content-length"])
    assert b"Content-Length: 5" in lines  # canonical, never the client's "05"


async def test_a_chunked_request_body_goes_chunked(raw_gateway: Any) -> None:
    upstream, client = await raw_gateway(lambda request: OK)

    async def body() -> Any:
        yield b"abc"
        yield b"defg"

    resp = await client.post("/a", data=body())
    assert resp.status == 200
    head, _, chunks = upstream.requests[0].partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower() and b"content-length" not in head.lower()
    assert chunks.endswith(b"0\r\n\r\n") and b"abc" in chunks and b"defg" in chunks


async def test_head_answers_have_no_body_and_the_connection_serves_on(raw_gateway: Any) -> None:
    def answer(request: bytes) -> bytes:
        if request.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        return OK

    upstream, client = await raw_gateway(answer)
    resp = await client.head("/a")
    assert resp.status == 200 and resp.headers["Content-Length"] == "1000"
    resp = await client.get("/a")
    assert resp.status == 200 and await resp.read() == b"ok"
    assert upstream.connections == 1


async def test_interim_answers_are_skipped(raw_gateway: Any) -> None:
    _, client = await raw_gateway(lambda request: b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK)
    resp = await client.get("/a")
    assert resp.status == 200 and await resp.read() == b"ok"


async def test_a_body_that_ends_with_the_connection(raw_gateway: Any) -> None:
    _, client = await raw_gateway(lambda request: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
                                  close_after=True)
    for _ in range(2):
        resp = await client.get("/a")
        assert resp.status == 200 and await resp.read() == b"until close"


@pytest.mark.parametrize("answer", [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"])
async def test_an_unparseable_answer_is_502(raw_gateway: Any, answer: bytes) -> None:
    _, client = await raw_gateway(lambda request: answer, close_after=True)
    resp = await client.get("/a")
    assert resp.status == 502 and await resp.json() == {"message": "Upstream news is unavailable.",
                                                        "upstream": "news"}


async def test_an_answer_cut_short_closes_the_clients_connection(raw_gateway: Any) -> None:
    _, client = await raw_gateway(lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
                                  close_after=True)
    port = client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), timeout=10)  # returns at EOF: the gateway closed
    writer.close()
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"partial")


async def test_the_connection_limit_makes_requests_wait_their_turn(raw_gateway: Any) -> None:
    upstream, client = await raw_gateway(lambda request: b"SLEEP 0.2\n" + OK, max_connections=1)
    responses = await asyncio.gather(*(client.get(f"/{i}") for i in range(4)))
    assert [r.status for r in responses] == [200] * 4
    assert upstream.most_open == 1 and len(upstream.requests) == 4


async def test_an_upstream_that_answers_before_taking_the_body(make_gateway: Any) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Too Big\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    client = await public_gateway(make_gateway, address(server))

    async def body() -> Any:
        for _ in range(40):
            yield b"x" * 65536
            await asyncio.sleep(0.01)

    try:
        resp = await client.post("/a", data=body())
        assert resp.status == 413 and await resp.read() == b"too big!"
    finally:
        server.close()


# -- the review's cases: nothing of one exchange may reach another; nothing a client does ejects a target --


async def test_a_connection_with_unread_answer_bytes_serves_no_other_request() -> None:
    from gateway.proxy.transport import Limit, Pool

    body = b"x" * 200_000
    upstream = RawUpstream(lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    url = await upstream.start()
    pool = Pool("127.0.0.1", int(url.rsplit(":", 1)[1]), Limit(10))
    try:
        conn = await pool.acquire(5)
        conn.begin(head_only=False)
        conn.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await conn.head
        for _ in range(100):
            if conn.complete:
                break
            await asyncio.sleep(0.02)
        assert conn.complete and not conn.reusable()  # the whole answer came, but is not handed on yet
        read = conn.read_nowait()
        while chunk := await conn.read():
            read += chunk
        assert read == body and conn.reusable()
        pool.release(conn)
    finally:
        pool.close()
        await upstream.stop()


async def test_a_half_sent_body_never_shares_a_connection_with_the_next_request(make_gateway: Any) -> None:
    """The upstream answers after the head and ends its answer later; meanwhile the client's chunked body
    passes the route's limit. The next request must not follow the partial body on that connection."""
    received: list[bytearray] = []  # what each connection has brought, as it arrives

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = bytearray()
        received.append(data)

        async def answer() -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no")
            await asyncio.sleep(1.0)
            writer.write(b"k")

        try:
            while chunk := await reader.read(65536):
                if not data:
                    asyncio.ensure_future(answer())
                data += chunk
        finally:
            writer.close()

    server = await asyncio.start_server(early, "127.0.0.1", 0)
    client = await public_gateway(make_gateway, address(server), max_connections=1, max_body_size="100k")

    async def body() -> Any:
        for _ in range(10):  # 16 KiB at a time, so that some of it is sent before the limit is passed
            yield b"y" * 16384
            await asyncio.sleep(0.05)

    try:
        await client.post("/upload", data=body())
        victim = await client.get("/victim")
        assert victim.status == 200 and await victim.read() == b"ok"
        assert any(b"/upload" in data and len(data) > 16384 for data in received)  # part of the body went
        assert not any(b"/upload" in data and b"/victim" in data for data in received)
    finally:
        server.close()


async def test_bodies_over_the_limit_do_not_eject_the_target(make_gateway: Any, upstream: Any) -> None:
    client = await public_gateway(make_gateway, str(upstream.make_url("")).rstrip("/"), max_body_size="100k")

    async def body() -> Any:
        for _ in range(10):
            yield b"z" * 16384

    for _ in range(5):
        assert (await client.post("/v1_0/echo", data=body())).status == 413
    assert (await client.get("/v1_0/channels")).status == 200


async def test_a_slow_upload_is_not_the_upstreams_read_timeout(make_gateway: Any, upstream: Any) -> None:
    client = await public_gateway(make_gateway, str(upstream.make_url("")).rstrip("/"),
                                  timeouts={"connect": "1s", "read": "500ms"})

    async def body() -> Any:
        for _ in range(6):
            yield b"w" * 40000
            await asyncio.sleep(0.3)

    resp = await client.post("/v1_0/echo", data=body())
    assert resp.status == 200 and (await resp.json())["body_length"] == 240000


async def test_an_idle_connection_to_one_target_gives_way_to_a_request_for_another(make_gateway: Any) -> None:
    upstreams = [RawUpstream(lambda request: OK) for _ in range(2)]
    urls = [await u.start() for u in upstreams]
    client = await public_gateway(make_gateway, urls, max_connections=1)
    try:
        for _ in range(4):  # round robin: A, B, A, B, each needing the one place
            resp = await asyncio.wait_for(client.get("/a"), timeout=5)
            assert resp.status == 200
        assert [len(u.requests) for u in upstreams] == [2, 2]
    finally:
        for u in upstreams:
            await u.stop()


async def test_bytes_after_the_head_of_a_head_answer_reach_no_client(raw_gateway: Any) -> None:
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"

    def answer(request: bytes) -> bytes:
        if request.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
        return OK

    _, client = await raw_gateway(answer)
    resp = await client.head("/a")
    assert resp.status == 200
    for _ in range(3):
        resp = await client.get("/a")
        assert resp.status == 200 and await resp.read() == b"ok"


@pytest.mark.parametrize("method, body, status, sent", [("GET", None, 200, 2), ("POST", b"data", 502, 1)])
async def test_a_request_sent_on_a_connection_closed_under_it(raw_gateway: Any, method: str, body: bytes | None,
                                                              status: int, sent: int) -> None:
    """The second request on a kept-alive connection is read and the connection closed unanswered: a GET
    goes again on a fresh connection; a POST with a body may have been acted on, so it is not sent twice."""
    seen: dict[str, int] = {}

    def answer(request: bytes) -> bytes | None:
        name = request.split(b" ")[1].decode()
        seen[name] = seen.get(name, 0) + 1
        return None if name == "/second" and seen[name] == 1 else OK

    upstream, client = await raw_gateway(answer)
    assert (await client.get("/first")).status == 200
    resp = await client.request(method, "/second", data=body)
    assert resp.status == status
    assert seen["/second"] == sent


async def test_trailers_are_not_answer_headers(raw_gateway: Any) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n"
               b"2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n")
    _, client = await raw_gateway(lambda request: chunked)
    resp = await client.get("/a")
    assert resp.status == 200 and await resp.read() == b"ok"
    assert "X-Trailer" not in resp.headers
