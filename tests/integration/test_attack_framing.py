"""The framing attack matrix: request smuggling families, sent as raw bytes, against three upstreams.

Every case is one client write. Either the gateway answers it itself (a JSON 400, and the upstream receives
nothing), or the upstream receives exactly one well-formed request in the gateway's own framing (one
canonical Content-Length, or chunked; never both, never the client's framing bytes as written) and nothing
beside it. The same table runs against

- a raw upstream that keeps every byte it receives (`ByteUpstream`),
- upstream_stub as a process, once parsing with llhttp (aiohttp's C parser) and once with aiohttp's
  pure-Python parser (AIOHTTP_NO_EXTENSIONS=1): a second, different parser must read the one request the
  gateway meant (method, path, body length through /v1_0/echo), and answer exactly once,
- the gateway itself as a process started with AIOHTTP_NO_EXTENSIONS=1 (its admin listener is aiohttp's),
  in front of the pure-Python stub.

Between the gateway and each stub a `Tap` keeps the bytes both ways, so that "no extra request" is what the
stub was sent and what it answered, not what it chose to tell.

Sources: RFC 9112 §2.2 (line ends), §5.1-5.2 (field syntax, obs-fold), §6.1 (Transfer-Encoding), §6.3
(message body length), §7.1 (chunked), §11.2 (request smuggling); PortSwigger's request smuggling families
(CL.TE, TE.CL, TE.TE); CVE-2019-18277 (HAProxy, vertical tab before chunked), CVE-2020-7238 (Netty,
whitespace before the colon), CVE-2021-43797 (Netty, control characters in field names), CVE-2023-25950
(HAProxy smuggling), CVE-2023-37276 (aiohttp/llhttp, bare CR), CVE-2023-47627 and CVE-2024-23829
(aiohttp's pure-Python parser, lenient fields and separators).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from gateway.config import parse_config
from tests.factories import Conn, config_dict
from tests.processes import Running
from tests.servers import ByteUpstream, GatewayServer, StubProcess, Tap, free_port

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough

PUBLIC = "/v1_0/echo/public"  # public in the default routes; everything else under "/" is required
PRIVATE = "/v1_0/echo/private"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HELLO = b"5\r\nhello\r\n0\r\n\r\n"
SMUGGLED = b"GET /v1_0/echo/private/SMUGGLED HTTP/1.1\r\nHost: gw\r\n\r\n"


def post(fields: bytes, body: bytes = b"", *, path: str = PUBLIC, version: bytes = b"1.1") -> bytes:
    return b"POST %s HTTP/%s\r\nHost: gw\r\n%s\r\n%s" % (path.encode(), version, fields, body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


@dataclass(frozen=True)
class Sent:
    """The one request the upstream must receive: its method, path, body, and the gateway's framing of it
    ("length", "chunked", or None for no body)."""

    method: str
    path: str
    body: bytes
    framing: str | None


HELLO_CHUNKED = Sent("POST", PUBLIC, b"hello", "chunked")
HELLO_LENGTH = Sent("POST", PUBLIC, b"hello", "length")
REFUSED = ((400,), None)

# (request, the statuses of the answers in order, the one request forwarded or None), id naming its source
CASES = [
    # -- the controls: plain framings pass, reframed by the gateway -----------------------------------------
    pytest.param(post(b"Content-Length: 5\r\n", b"hello"), (200,), HELLO_LENGTH, id="control-length-RFC9112-6.2"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", HELLO), (200,), HELLO_CHUNKED, id="control-chunked-RFC9112-7.1"),
    # -- CL.TE and TE.CL: both framings in one request --------------------------------------------------------
    pytest.param(post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG"), *REFUSED,
                 id="CL.TE-PortSwigger-RFC9112-6.3"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n"), *REFUSED,
                 id="TE.CL-PortSwigger-RFC9112-6.3"),
    pytest.param(post(b"Content-Length: 5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", HELLO), *REFUSED,
                 id="CL.CL.TE-RFC9112-6.3"),
    # -- TE.TE: obfuscated Transfer-Encoding ------------------------------------------------------------------
    pytest.param(post(b"Transfer-Encoding: xchunked\r\n", HELLO), *REFUSED, id="TE.TE-xchunked-PortSwigger"),
    pytest.param(post(b"Transfer-Encoding:  chunked\r\n", HELLO), (200,), HELLO_CHUNKED,
                 id="TE.TE-leading-space-is-OWS-RFC9112-5.1"),
    pytest.param(post(b"Transfer-Encoding: chunked \r\n", HELLO), (200,), HELLO_CHUNKED,
                 id="TE.TE-trailing-space-is-OWS-RFC9112-5.1"),
    pytest.param(post(b"Transfer-Encoding:\tchunked\r\n", HELLO), (200,), HELLO_CHUNKED,
                 id="TE.TE-tab-is-OWS-RFC9112-5.1"),
    pytest.param(post(b"Transfer-Encoding: CHUNKED\r\n", HELLO), (200,), HELLO_CHUNKED,
                 id="TE.TE-upper-case-RFC9112-7"),
    pytest.param(post(b"Transfer-Encoding: identity, chunked\r\n", HELLO), *REFUSED,
                 id="TE.TE-identity-chunked-RFC9112-6.1"),
    pytest.param(post(b"Transfer-Encoding: chunked, identity\r\n", HELLO), *REFUSED,
                 id="TE.TE-chunked-not-last-RFC9112-6.3"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", HELLO), *REFUSED,
                 id="TE.TE-two-fields-PortSwigger"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", HELLO), *REFUSED,
                 id="TE.TE-two-fields-differing-PortSwigger"),
    pytest.param(post(b"Transfer-Encoding : chunked\r\n", HELLO), *REFUSED,
                 id="TE.TE-space-before-colon-CVE-2020-7238-RFC9112-5.1"),
    pytest.param(post(b"Transfer-Encoding: \x0bchunked\r\n", HELLO), *REFUSED, id="TE.TE-vertical-tab-CVE-2019-18277"),
    pytest.param(post(b"Transfer-Encoding\x0b: chunked\r\n", HELLO), *REFUSED,
                 id="TE.TE-control-char-in-name-CVE-2021-43797"),
    pytest.param(post(b" Transfer-Encoding: chunked\r\n", HELLO), *REFUSED,
                 id="TE.TE-line-starts-with-space-obs-fold-RFC9112-5.2"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", HELLO, version=b"1.0"), *REFUSED,
                 id="TE-in-HTTP-1.0-RFC9112-6.1"),
    # -- Content-Length: duplicates, signs, bases, spaces -----------------------------------------------------
    pytest.param(post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), *REFUSED,
                 id="CL-duplicate-same-RFC9110-8.6"),
    pytest.param(post(b"Content-Length: 5, 5\r\n", b"hello"), *REFUSED, id="CL-list-RFC9110-8.6"),
    pytest.param(post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), *REFUSED,
                 id="CL-duplicate-differing-RFC9112-6.3"),
    pytest.param(post(b"Content-Length: +5\r\n", b"hello"), *REFUSED, id="CL-plus-sign-CVE-2023-47627"),
    pytest.param(post(b"Content-Length: -5\r\n", b"hello"), *REFUSED, id="CL-minus-sign-RFC9110-8.6"),
    pytest.param(post(b"Content-Length: 05\r\n", b"hello"), (200,), HELLO_LENGTH,
                 id="CL-leading-zero-forwarded-canonical-RFC9110-8.6"),
    pytest.param(post(b"Content-Length: 0x5\r\n", b"hello"), *REFUSED, id="CL-hex-RFC9110-8.6"),
    pytest.param(post(b"Content-Length: 1 5\r\n", b"hello"), *REFUSED, id="CL-space-inside-RFC9110-8.6"),
    pytest.param(post(b"Content-Length:  5 \r\n", b"hello"), (200,), HELLO_LENGTH, id="CL-OWS-around-RFC9112-5.1"),
    pytest.param(post(b"Content-Length: 5_0\r\n", b"hello"), *REFUSED, id="CL-underscore-CVE-2024-23829"),
    pytest.param(post("Content-Length: \u0665\r\n".encode(), b"hello"), *REFUSED,
                 id="CL-non-ASCII-digit-CVE-2023-47627"),
    pytest.param(post(b"Content-Length: 99999999999999999999999\r\n", b"hello"), *REFUSED,
                 id="CL-overflow-RFC9110-8.6"),
    # -- field syntax: obs-fold, bare LF, bare CR -------------------------------------------------------------
    pytest.param(post(b"X-A: a\r\n b\r\nContent-Length: 5\r\n", b"hello"), *REFUSED, id="obs-fold-RFC9112-5.2"),
    pytest.param(post(b"Content-Length:\r\n 5\r\n", b"hello"), *REFUSED, id="obs-fold-of-CL-RFC9112-5.2"),
    pytest.param(b"POST " + PUBLIC.encode() + b" HTTP/1.1\nHost: gw\nContent-Length: 5\n\nhello", *REFUSED,
                 id="bare-LF-RFC9112-2.2"),
    pytest.param(post(b"X-A: 1\rContent-Length: 5\r\n", b"hello"), *REFUSED, id="bare-CR-RFC9112-2.2"),
    pytest.param(post(b"X-Abc: \rxTransfer-Encoding: chunked\r\n", HELLO), *REFUSED, id="bare-CR-CVE-2023-37276"),
    # -- chunks -----------------------------------------------------------------------------------------------
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"5;ext=1\r\nhello\r\n0\r\n\r\n"), (200,), HELLO_CHUNKED,
                 id="chunk-extension-dropped-RFC9112-7.1.1"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"), (200,),
                 HELLO_CHUNKED, id="trailer-dropped-RFC9112-7.1.2"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), *REFUSED,
                 id="chunk-size-overflow-RFC9112-7.1"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b" 5\r\nhello\r\n0\r\n\r\n"), *REFUSED,
                 id="chunk-size-leading-space-RFC9112-7.1"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"), *REFUSED,
                 id="chunk-size-0x-RFC9112-7.1"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"+5\r\nhello\r\n0\r\n\r\n"), *REFUSED,
                 id="chunk-size-plus-CVE-2024-23829"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n"), *REFUSED, id="chunk-bare-LF-RFC9112-7.1"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n"), *REFUSED,
                 id="chunk-longer-than-its-size-RFC9112-7.1"),
    # -- a request hidden in a body, and pipelining -----------------------------------------------------------
    pytest.param(post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED, path=PRIVATE), (401,), None,
                 id="hidden-in-the-body-of-a-401-RFC9112-11.2"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", chunk(SMUGGLED), path=PRIVATE), (401,), None,
                 id="hidden-in-the-chunked-body-of-a-401-RFC9112-11.2"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", chunk(SMUGGLED)), (200,),
                 Sent("POST", PUBLIC, SMUGGLED, "chunked"), id="hidden-in-a-chunked-body-is-body-RFC9112-11.2"),
    pytest.param(post(b"Content-Length: 5\r\n", b"hello" + SMUGGLED), (200, 401), HELLO_LENGTH,
                 id="pipelined-second-needs-a-token-RFC9112-9.3.2"),
    pytest.param(b"GET " + PUBLIC.encode() + b" HTTP/1.1\r\nHost: gw\r\n\r\n" +
                 post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG"), (200, 400),
                 Sent("GET", PUBLIC, b"", None), id="pipelined-second-is-CL.TE-PortSwigger"),
    pytest.param(b"GET " + PUBLIC.encode() + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello", (200,),
                 Sent("GET", PUBLIC, b"hello", "length"), id="GET-with-a-body-RFC9110-9.3.1"),
]

FIELD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+: [\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


def check_one_request(data: bytes, sent: Sent) -> None:
    """`data` is exactly one well-formed request, in the gateway's framing, and nothing else."""
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, data
    lines = head.split(b"\r\n")
    assert lines[0] == b"%s %s HTTP/1.1" % (sent.method.encode(), sent.path.encode()), lines[0]
    framing = []
    for line in lines[1:]:
        assert FIELD.fullmatch(line), line  # no obs-fold, no stray CR or LF, no space before a colon
        name, _, value = line.partition(b": ")
        if name.lower() in (b"content-length", b"transfer-encoding"):
            framing.append(line)
    if sent.framing is None:
        assert framing == [] and body == b""
    elif sent.framing == "length":
        assert framing == [b"Content-Length: %d" % len(sent.body)] and body == sent.body
    else:
        assert framing == [b"Transfer-Encoding: chunked"]
        assert dechunk(body) == sent.body


def dechunk(body: bytes) -> bytes:
    """The data of a canonical chunked body: hex sizes, no extensions, no trailers, nothing after the end."""
    data = b""
    for _ in range(10000):
        size_line, separator, body = body.partition(b"\r\n")
        assert separator and re.fullmatch(rb"[0-9a-f]+", size_line), size_line
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", body
            return data
        assert body[size:size + 2] == b"\r\n"
        data, body = data + body[:size], body[size + 2:]
    raise AssertionError("too many chunks")


def one_answer(data: bytes) -> bytes:
    """`data` is exactly one HTTP/1.1 answer framed by Content-Length (as aiohttp frames its JSON): its body."""
    head, separator, rest = data.partition(b"\r\n\r\n")
    assert separator and head.startswith(b"HTTP/1.1 "), data
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert len(lengths) == 1 and len(rest) == lengths[0], data  # one answer, no second one after it
    return rest


SENTINEL = b"GET /v1_0/echo/private/sentinel HTTP/1.1\r\nHost: gw\r\n\r\n"  # answered 401 by the gateway


async def answers(port: int, request: bytes, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Send `request` in one write and read `count` answers; then no other answer comes: the connection is
    closed, or the next answer on it is the one to a sentinel request sent after them."""
    conn = Conn(*await asyncio.open_connection("127.0.0.1", port))
    conn.send(request)
    try:
        got = [await conn.answer() for _ in range(count)]
        try:
            conn.send(SENTINEL)
            status, _, body = await conn.answer()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # closed after the answers
        else:
            assert (status, json.loads(body)) == (401, {"message": "User must be authorized."}), body
    finally:
        conn.close()
    for status, headers, body in got:
        assert headers["server"] == "toutiao-gateway"
        if status >= 400:
            assert headers["content-type"].startswith("application/json") and "message" in json.loads(body)
    return got


def check_echo(body: bytes, sent: Sent) -> None:
    """What upstream_stub's /v1_0/echo read: the gateway's request, and its framing, as a second parser saw it."""
    echo = json.loads(body)
    assert (echo["method"], echo["path"], echo["body_length"]) == (sent.method, sent.path, len(sent.body))
    names = [name.lower() for name, _ in echo["headers"]]
    framing = [name for name in names if name in ("content-length", "transfer-encoding")]
    assert framing == {"length": ["content-length"], "chunked": ["transfer-encoding"], None: []}[sent.framing]


# -- the raw upstream ---------------------------------------------------------------------------------------


@pytest.fixture
async def raw_upstream() -> AsyncIterator[tuple[ByteUpstream, str]]:
    upstream = ByteUpstream(lambda request: OK)
    yield upstream, await upstream.start()
    await upstream.stop()


async def gateway_before(aiohttp_client: Any, url: str) -> Any:
    return await aiohttp_client(GatewayServer(parse_config(config_dict(url), env={})))


@pytest.mark.parametrize("request_bytes, statuses, sent", CASES)
async def test_the_upstream_gets_one_canonical_request_or_nothing(aiohttp_client: Any,
                                                                  raw_upstream: tuple[ByteUpstream, str],
                                                                  request_bytes: bytes, statuses: tuple[int, ...],
                                                                  sent: Sent | None) -> None:
    upstream, url = raw_upstream
    client = await gateway_before(aiohttp_client, url)
    got = await answers(client.server.port, request_bytes, len(statuses))
    assert tuple(status for status, _, _ in got) == statuses
    await asyncio.sleep(0.05)  # anything sent beside the request has arrived by now
    if sent is None:
        assert upstream.received == b""
        return
    assert len(upstream.requests) == 1 and upstream.received == upstream.requests[0]
    check_one_request(upstream.requests[0], sent)


# -- upstream_stub, a second parser, with and without aiohttp's C extensions, behind gateway processes ----


def pure_python(env: dict[str, str]) -> bool:
    """Whether aiohttp, imported under `env`, parses requests with its pure-Python parser."""
    probe = "import aiohttp.http_parser as p; print(p.HttpRequestParser is p.HttpRequestParserPy)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    return out.stdout.strip() == "True"


@dataclass(frozen=True)
class Tapped:
    gateway: Running
    tap: Tap  # between the gateway and the stub
    admin_port: int


def start_process(env: pytest.MonkeyPatch, no_extensions: bool, start: Any) -> Any:
    """Start a process with AIOHTTP_NO_EXTENSIONS=1 or without it (a process takes the environment as it
    is when it starts); first make sure the variable does what it says."""
    if no_extensions:
        env.setenv("AIOHTTP_NO_EXTENSIONS", "1")
    else:
        env.delenv("AIOHTTP_NO_EXTENSIONS", raising=False)
    assert pure_python(dict(os.environ)) == no_extensions
    return start()


# (the stub's parser, the gateway's aiohttp parser): the gateway's own server is llhttp (httptools) in both
PARSERS = {"stub-llhttp": (False, False), "stub-pure-python": (True, False), "all-pure-python": (True, True)}


@pytest.fixture(scope="module", params=list(PARSERS))
def tapped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tapped]:
    """upstream_stub as a process behind a Tap behind a gateway process with an admin listener (aiohttp's)."""
    stub_pure, gateway_pure = PARSERS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    stub = StubProcess()
    with pytest.MonkeyPatch.context() as env:
        start_process(env, stub_pure, stub.start)
        tap = Tap(stub.port)
        raw = config_dict(tap.url, database_url=f"sqlite:///{folder}/gw.db")
        raw["server"]["port"] = free_port()
        raw["admin"] = {"host": "127.0.0.1", "port": free_port()}
        running = start_process(env, gateway_pure, lambda: Running(folder, raw))
    environ = Path(f"/proc/{running.proc.pid}/environ").read_bytes().split(b"\0")
    assert (b"AIOHTTP_NO_EXTENSIONS=1" in environ) == gateway_pure
    yield Tapped(running, tap, raw["admin"]["port"])
    running.stop()
    tap.close()
    stub.kill()


def errors_logged(running: Running) -> list[str]:
    """The gateway's ERROR records and tracebacks so far."""
    return [line for line in running.log.read_text().splitlines()
            if "Traceback" in line or json.loads(line).get("level") in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize("request_bytes, statuses, sent", CASES)
async def test_a_second_parser_reads_the_request_the_gateway_meant(tapped: Tapped, request_bytes: bytes,
                                                                   statuses: tuple[int, ...],
                                                                   sent: Sent | None) -> None:
    tap = tapped.tap
    mark = tap.mark()
    got = await answers(tapped.gateway.port, request_bytes, len(statuses))
    assert tuple(status for status, _, _ in got) == statuses
    await asyncio.sleep(0.05)
    moved = tap.since(mark)
    if sent is None:
        assert moved == []
        return
    assert len(moved) == 1, moved  # one connection carried this case's bytes
    to_stub, from_stub = moved[0]
    check_one_request(to_stub, sent)
    echoed = one_answer(from_stub)  # the stub answered once: it read no second request
    check_echo(echoed, sent)
    assert [body for status, _, body in got if status == 200] == [echoed]


async def test_the_admin_listener_refuses_smuggling_and_logs_no_error(tapped: Tapped) -> None:
    """The gateway's one aiohttp server (its C parser, or the pure-Python one): a CL.TE request is refused,
    the request hidden in it is never answered, and aiohttp's ERROR for it is an INFO line."""
    conn = Conn(*await asyncio.open_connection("127.0.0.1", tapped.admin_port))
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    status, _, body = await conn.answer()
    assert status == 200, body
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n"
    conn.send(b"POST /healthz HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\n\r\n%s" % (len(smuggled) + 5, smuggled))
    status, _, _ = await conn.answer()
    assert status == 400
    assert await conn.closed()  # and no answer to the hidden GET /metrics
    conn.close()
    assert errors_logged(tapped.gateway) == []


async def test_no_case_made_the_gateway_log_an_error(tapped: Tapped) -> None:
    """After the whole table (this runs after the tests above, in the same gateway process)."""
    assert errors_logged(tapped.gateway) == []
