"""The path attack matrix: request-targets, override fields and methods, sent as raw bytes with no token.

The gateway's routes make /public public, /public/secret (under it) required, and everything else required.
Every case gets either a JSON refusal (400, 401, 404 or 501) and the upstream receives nothing, or a 200 with
the upstream (a raw one that keeps every byte) having received exactly one request for the normalized path
that was authorized as public, with the method that was authorized, and no field that names another.

Sources: RFC 3986 §2.4 (no double decoding), §3.3 (path parameters), §5.2.4 (dot segments), §6.2.2
(normalization); RFC 9112 §3.2 (request-target forms); RFC 9110 §9 (methods); CVE-2019-9901 (Envoy, paths
not normalized before routing), CVE-2021-29492 (Envoy, escaped slashes), CVE-2021-21291 (oauth2-proxy, a
suffix match where a boundary was meant), CVE-2020-11053 (oauth2-proxy, backslashes and //), CVE-2021-32779
(Envoy, a fragment taken as part of the path), CVE-2000-0884 and CVE-2008-2938 (overlong UTF-8 dots, IIS and
Tomcat), Orange Tsai's "Breaking Parser Logic" (Black Hat 2018: Tomcat's ..;/), CVE-2018-14773 (Symfony,
X-Original-URL and X-Rewrite-URL), OWASP WSTG-CONF-06 (HTTP methods, TRACE and method overrides).

TRACE and CONNECT get 501 on every route, token or none, and never reach an upstream: CONNECT asks for a
tunnel (RFC 9110 §9.3.6), and a 2xx to it would make the pooled upstream connection one (RFC 9112 §6.3); TRACE
has the upstream reflect what it received (RFC 9110 §9.3.8), X-User-Id and, on a route that forwards it, the
bearer token included. A method llhttp does not know (FOO), or one in lower case, is a 400 from the parser.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import pytest

from gateway.config import parse_config
from tests.factories import Conn, config_dict
from tests.servers import ByteUpstream, GatewayServer

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
ROUTES = [{"path": "/public", "upstream": "news", "auth": "public"},
          {"path": "/public/secret", "upstream": "news", "auth": "required"},
          {"path": "/v1_0/channels", "upstream": "news", "auth": "public"},
          {"path": "/", "upstream": "news", "auth": "required"}]
MUST = {"message": "User must be authorized."}


@pytest.fixture
async def gateway(aiohttp_client: Any) -> AsyncIterator[tuple[Any, ByteUpstream]]:
    upstream = ByteUpstream(lambda request: OK)
    raw = config_dict(await upstream.start())
    raw["routes"] = ROUTES
    client = await aiohttp_client(GatewayServer(parse_config(raw, env={})))
    yield client, upstream
    await upstream.stop()


async def exchange(client: Any, request: bytes, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    conn = await Conn.open(client)
    conn.send(request)
    try:
        if head_only:  # an answer to HEAD: a head, whatever length it names
            head = (await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
            return int(head.split()[1]), {}, b""
        return await conn.answer()
    finally:
        conn.close()


def check_refused(answer: tuple[int, dict[str, str], bytes], status: int, upstream: ByteUpstream) -> None:
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"].startswith("application/json") and "message" in json.loads(body)
    assert upstream.received == b""


def forwarded_one(upstream: ByteUpstream) -> tuple[bytes, list[bytes]]:
    """The one request the upstream received, and nothing beside it: its request line and field names."""
    assert len(upstream.requests) == 1 and upstream.received == upstream.requests[0], upstream.streams
    lines = upstream.requests[0].partition(b"\r\n\r\n")[0].split(b"\r\n")
    return lines[0], [line.partition(b":")[0].lower() for line in lines[1:]]


# (request-target as sent, what it must get: a refusal's status, or the path the upstream must receive)
PATHS = [
    pytest.param(b"/public/../private", 401, id="dot-dot-RFC3986-5.2.4"),
    pytest.param(b"/public/a/../b", "/public/b", id="dot-dot-inside-the-route-RFC3986-5.2.4"),
    pytest.param(b"/public/%2e%2e/private", 401, id="encoded-dot-dot-CVE-2019-9901"),
    pytest.param(b"/public/%2E%2e/private", 401, id="encoded-dot-dot-mixed-case-RFC3986-6.2.2.1"),
    pytest.param(b"/public/.%2e/private", 401, id="half-encoded-dot-dot-RFC3986-6.2.2.2"),
    pytest.param(b"/public/%2e", "/public/", id="encoded-dot-RFC3986-6.2.2.2"),
    pytest.param(b"/../private", 400, id="above-the-root-RFC3986-5.2.4"),
    pytest.param(b"/public%2f..%2fprivate", 400, id="encoded-slash-CVE-2021-29492"),
    pytest.param(b"/public%2F..%2Fprivate", 400, id="encoded-slash-upper-CVE-2021-29492"),
    pytest.param(b"/public%5c..%5cprivate", 400, id="encoded-backslash-CVE-2021-29492"),
    pytest.param(b"/public\\..\\private", 400, id="backslash-CVE-2020-11053"),
    pytest.param(b"/public;/../private", 400, id="path-parameter-RFC3986-3.3"),
    pytest.param(b"/public/..;/private", 400, id="dot-dot-with-parameter-Tomcat-BlackHat-2018"),
    pytest.param(b"/public/secret;x", 400, id="parameter-on-a-protected-child-Tomcat-BlackHat-2018"),
    pytest.param(b"/public/..%3b/private", 400, id="encoded-parameter-Spring-StrictHttpFirewall"),
    pytest.param(b"/public/secret%3Bx", 400, id="encoded-parameter-upper-Spring-StrictHttpFirewall"),
    pytest.param(b"//public/../private", 401, id="double-slash-first-CVE-2020-11053"),
    pytest.param(b"//private", 401, id="double-slash-RFC3986-6.2.2"),
    pytest.param(b"/public//x", "/public/x", id="double-slash-merged-RFC3986-6.2.2"),
    pytest.param(b"/public\x00/../private", 400, id="NUL-RFC9112-3.2"),
    pytest.param(b"/public%00/../private", 400, id="encoded-NUL-RFC3986-7.3"),
    pytest.param(b"/public/%c0%ae%c0%ae/private", "/public/%C0%AE%C0%AE/private", id="overlong-dot-CVE-2008-2938"),
    pytest.param(b"/public/..%c0%afprivate", "/public/..%C0%AFprivate", id="overlong-slash-CVE-2000-0884"),
    pytest.param(b"/public/%e0%80%ae%e0%80%ae/private", "/public/%E0%80%AE%E0%80%AE/private",
                 id="overlong-3-byte-dot-CVE-2000-0884"),
    pytest.param(b"/public/%252e%252e/private", "/public/%252e%252e/private", id="double-encoding-RFC3986-2.4"),
    pytest.param(b"/public/%u002e%u002e/private", 400, id="IIS-u-escape-RFC3986-2.1"),
    pytest.param(b"http://other/private", 401, id="absolute-form-RFC9112-3.2.2"),
    pytest.param(b"http://other/public/../private", 401, id="absolute-form-dot-dot-RFC9112-3.2.2"),
    pytest.param(b"http://other", 401, id="absolute-form-no-path-RFC9112-3.2.2"),
    pytest.param(b"http://user:pw@other/public", "/public", id="absolute-form-userinfo-RFC9110-4.2.4"),
    pytest.param(b"https://other/public", "/public", id="absolute-form-https-RFC9112-3.2.2"),
    pytest.param(b"ftp://other/public", 400, id="absolute-form-other-scheme-RFC9112-3.2.2"),
    pytest.param(b"other/public", 400, id="no-leading-slash-RFC9112-3.2"),
    pytest.param(b"*", 400, id="asterisk-form-RFC9112-3.2.4"),
    pytest.param(b"/private?x=/public", 401, id="public-path-in-the-query-RFC3986-3.4"),
    pytest.param(b"/public?x=/../private", "/public?x=/../private", id="dot-dot-in-the-query-RFC3986-3.4"),
    pytest.param(b"/private#/public", 400, id="fragment-CVE-2021-32779"),
    pytest.param(b"/public#/../private", 400, id="fragment-dot-dot-CVE-2021-32779"),
    pytest.param(b"/public/secret#x", 400, id="fragment-on-a-protected-child-CVE-2021-32779"),
    pytest.param(b"/public/secret%23x", "/public/secret%23x", id="encoded-hash-stays-encoded-RFC3986-2.2"),
    pytest.param(b"/PUBLIC", 401, id="case-RFC3986-6.2.2.1"),
    pytest.param(b"/publicX", 401, id="segment-boundary-CVE-2021-21291"),
    pytest.param(b"/public/secret", 401, id="protected-child-RFC3986-3.3"),
    pytest.param(b"/public\t/../private", 400, id="tab-RFC9112-3.2"),
    pytest.param(b"/public\xc3\xa9/../../private", 400, id="raw-non-ASCII-RFC3986-2"),
]


@pytest.mark.parametrize("target, expected", PATHS)
async def test_a_request_target_reaches_the_upstream_only_as_the_authorized_path(
        gateway: tuple[Any, ByteUpstream], target: bytes, expected: int | str) -> None:
    client, upstream = gateway
    answer = await exchange(client, b"GET %s HTTP/1.1\r\nHost: gw\r\n\r\n" % target)
    await asyncio.sleep(0.05)  # anything sent beside the request has arrived by now
    if isinstance(expected, int):
        check_refused(answer, expected, upstream)
        if expected == 401:
            assert json.loads(answer[2]) == MUST
        return
    assert answer[0] == 200 and answer[2] == b"ok"
    line, _ = forwarded_one(upstream)
    assert line == b"GET %s HTTP/1.1" % expected.encode()


# Fields that some frameworks let override the path or method of the request line (IIS, Symfony, Zend,
# Spring, ASP.NET, method-override middleware): the upstream must act on what was authorized.
OVERRIDES = [
    pytest.param(b"X-Original-URL: /private", id="X-Original-URL-CVE-2018-14773"),
    pytest.param(b"X-Rewrite-URL: /private", id="X-Rewrite-URL-CVE-2018-14773"),
    pytest.param(b"X-Original-URI: /private", id="X-Original-URI-nginx-auth_request"),
    pytest.param(b"X-Forwarded-Prefix: /private", id="X-Forwarded-Prefix-Spring-ASP.NET"),
    pytest.param(b"X_Original_URL: /private", id="X_Original_URL-underscore-CVE-2018-14773"),
    pytest.param(b"x-original-url: /private", id="x-original-url-lower-case-RFC9110-5.1"),
    pytest.param(b"X-HTTP-Method-Override: DELETE", id="X-HTTP-Method-Override-OWASP-WSTG-CONF-06"),
    pytest.param(b"X-HTTP-Method: DELETE", id="X-HTTP-Method-OWASP-WSTG-CONF-06"),
    pytest.param(b"X-Method-Override: DELETE", id="X-Method-Override-OWASP-WSTG-CONF-06"),
]


@pytest.mark.parametrize("field", OVERRIDES)
async def test_fields_naming_another_path_or_method_never_reach_the_upstream(gateway: tuple[Any, ByteUpstream],
                                                                              field: bytes) -> None:
    client, upstream = gateway
    status, _, _ = await exchange(client, b"GET /public HTTP/1.1\r\nHost: gw\r\n%s\r\nX-Kept: 1\r\n\r\n" % field)
    await asyncio.sleep(0.05)
    assert status == 200
    line, names = forwarded_one(upstream)
    assert line == b"GET /public HTTP/1.1"
    assert b"x-kept" in names  # the other fields pass: this is about the override alone
    name = field.partition(b":")[0].lower()
    assert name not in names and name.replace(b"_", b"-") not in names


# method -> what it gets on the public route and on a required one, with no token: the path it is forwarded
# to, or the status of the refusal
METHODS = [
    pytest.param(b"GET", "/public/m", 401, id="GET-RFC9110-9.3.1"),
    pytest.param(b"HEAD", "/public/m", 401, id="HEAD-RFC9110-9.3.2"),
    pytest.param(b"POST", "/public/m", 401, id="POST-RFC9110-9.3.3"),
    pytest.param(b"PUT", "/public/m", 401, id="PUT-RFC9110-9.3.4"),
    pytest.param(b"DELETE", "/public/m", 401, id="DELETE-RFC9110-9.3.5"),
    pytest.param(b"PATCH", "/public/m", 401, id="PATCH-RFC5789"),
    pytest.param(b"OPTIONS", "/public/m", 401, id="OPTIONS-RFC9110-9.3.7"),
    pytest.param(b"PROPFIND", "/public/m", 401, id="PROPFIND-RFC4918"),
    pytest.param(b"TRACE", 501, 501, id="TRACE-RFC9110-9.3.8-OWASP-WSTG-CONF-06"),
    pytest.param(b"CONNECT", 501, 501, id="CONNECT-RFC9110-9.3.6"),
    pytest.param(b"FOO", 400, 400, id="unknown-method-RFC9110-9.1"),
    pytest.param(b"get", 400, 400, id="lower-case-method-RFC9110-9.1"),
]


@pytest.mark.parametrize("route", ["public", "required"])
@pytest.mark.parametrize("method, public, required", METHODS)
async def test_every_method_on_a_public_and_a_required_route(gateway: tuple[Any, ByteUpstream], route: str,
                                                             method: bytes, public: str | int,
                                                             required: int) -> None:
    client, upstream = gateway
    path = b"/public/m" if route == "public" else b"/private/m"
    expected = public if route == "public" else required
    head = method == b"HEAD"
    answer = await exchange(client, b"%s %s HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n" % (method, path),
                            head_only=head)
    await asyncio.sleep(0.05)
    if isinstance(expected, int):
        if head:  # an answer to HEAD has no body (RFC 9110 §9.3.2): its status says it
            assert answer[0] == expected and upstream.received == b""
        else:
            check_refused(answer, expected, upstream)
        return
    assert answer[0] == 200
    line, _ = forwarded_one(upstream)
    assert line == b"%s %s HTTP/1.1" % (method, expected.encode())


@pytest.mark.parametrize("method", [b"TRACE", b"CONNECT"])
async def test_trace_and_connect_get_501_with_a_valid_token_too(gateway: tuple[Any, ByteUpstream],
                                                                method: bytes) -> None:
    from tests.factories import make_token

    client, upstream = gateway
    await client.server.gateway.users.register(42, "13900000042")
    token = make_token(42).encode()
    answer = await exchange(client, b"%s /private HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n"
                            % (method, token))
    await asyncio.sleep(0.05)
    check_refused(answer, 501, upstream)
    assert token not in answer[2]


async def test_bytes_after_a_refused_connect_are_requests_checked_afresh(gateway: tuple[Any, ByteUpstream]) -> None:
    """What a client meant as tunnel data after CONNECT is read as HTTP once the CONNECT is refused: each
    request in it is authenticated on its own, and nothing reaches the upstream unchecked."""
    client, upstream = gateway
    conn = await Conn.open(client)
    conn.send(b"CONNECT /public HTTP/1.1\r\nHost: gw\r\n\r\nGET /private HTTP/1.1\r\nHost: gw\r\n\r\n")
    first = await conn.answer()
    try:
        second: tuple[int, dict[str, str], bytes] | None = await conn.answer()
    except (asyncio.IncompleteReadError, ConnectionError):
        second = None  # or the connection closes after the refusal
    conn.close()
    await asyncio.sleep(0.05)
    assert first[0] == 501
    assert second is None or (second[0], json.loads(second[2])) == (401, MUST)
    assert upstream.received == b""
