"""The attack matrix, headers: identity fields sent by the client, hop-by-hop tricks, h2c upgrades, control
characters and oversized heads, sent byte by byte to a real gateway in front of an upstream that records
every byte it receives (RawUpstream). The promise: the upstream gets exactly one X-User-Id, the one of the
token the gateway verified, or none; a head the gateway refuses gets JSON and reaches no upstream.

Sources: RFC 9110 (§5.1 names, §5.5 values, §7.6.1 Connection, §7.8 Upgrade), RFC 9112 (§2.2, §3.2, §5),
RFC 9113 §3.1, RFC 6585 §5, and the CVEs named in the cases' ids: Envoy CVE-2021-32777 (ext_authz passed on
one of several values), Apache httpd CVE-2022-31813 and F5 CVE-2022-1388 (fields named in Connection
dropped), Bishop Fox's h2c smuggling (2020).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.config import parse_config
from gateway.http.protocol import MAX_FIELD, MAX_FIELDS, MAX_HEAD
from tests.factories import Conn, config_dict, make_token
from tests.servers import RawUpstream

pytestmark = [pytest.mark.stores("embedded"),  # what the head carries does not depend on the stores
              pytest.mark.usefixtures("logs")]

USER = 4242
SPOOF = b"31337"  # every forged identity below says this: it may appear nowhere upstream
TOKEN = make_token(USER).encode()
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
ROUTES = [
    {"path": "/v1_0/pub", "upstream": "news", "auth": "public"},
    {"path": "/v1_0/opt", "upstream": "news", "auth": "optional"},
    {"path": "/v1_0/with-auth", "upstream": "news", "auth": "required", "forward_authorization": True},
    {"path": "/", "upstream": "news", "auth": "required"},
]
PATHS = {"public": "/v1_0/pub", "optional": "/v1_0/opt", "required": "/v1_0/req"}
Fields = list[tuple[bytes, bytes]]


class Front:
    """A gateway and the raw upstream behind it."""

    def __init__(self, client: TestClient, upstream: RawUpstream) -> None:
        self.client, self.upstream = client, upstream

    async def send(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = await Conn.open(self.client)
        conn.send(data)
        answer = await conn.answer()
        conn.close()
        return answer

    def heads(self) -> list[Fields]:
        """The field lines of each request the upstream received, as sent."""
        out = []
        for request in self.upstream.requests:
            lines = request.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
            out.append([(n, v.strip()) for n, _, v in (line.partition(b":") for line in lines)])
        return out

    def only_head(self) -> Fields:
        heads = self.heads()
        assert len(heads) == 1, self.upstream.requests
        return heads[0]


def values(fields: Fields, name: bytes) -> list[bytes]:
    """Every value of `name`, in any case, and in any spelling a server might fold into it (_ for -)."""
    wanted = name.lower().replace(b"_", b"-")
    return [v for n, v in fields if n.strip().lower().replace(b"_", b"-") == wanted]


async def front(make_gateway: Any, *, trusted: bool = False, answer: Any = None) -> Any:
    upstream = RawUpstream(answer or (lambda request: OK))
    raw = config_dict(await upstream.start())
    raw["routes"] = ROUTES
    if trusted:
        raw["server"] = {"trusted_proxies": ["127.0.0.1"]}
    client = await make_gateway(parse_config(raw, env={}))
    await client.server.gateway.users.register(USER, "13900004242")
    return Front(client, upstream)


@pytest.fixture
async def gw(make_gateway: Any) -> Any:
    """Clients are not trusted proxies here: nothing they say about themselves is believed."""
    made = await front(make_gateway)
    yield made
    await made.upstream.stop()


@pytest.fixture
async def proxy_gw(make_gateway: Any) -> Any:
    """127.0.0.1 is a trusted proxy: forward-auth answers it."""
    made = await front(make_gateway, trusted=True)
    yield made
    await made.upstream.stop()


def request(path: str, *fields: bytes, method: bytes = b"GET") -> bytes:
    return method + b" " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + b"".join(f + b"\r\n" for f in fields) + \
        b"Connection: close\r\n\r\n"


# -- X-User-Id from the client, in every spelling, on every mode -----------------------------------------------

SPOOFS = [
    pytest.param([b"X-User-Id: 31337"], id="canonical-RFC9110-5.1"),
    pytest.param([b"x-user-id: 31337"], id="lower-case-RFC9110-5.1"),
    pytest.param([b"X-USER-ID: 31337"], id="upper-case-RFC9110-5.1"),
    pytest.param([b"X-User-ID: 31337"], id="X-User-ID-RFC9110-5.1"),
    pytest.param([b"X_User_Id: 31337"], id="underscores-PEP3333-HTTP_X_USER_ID"),
    pytest.param([b"x_user_id: 31337"], id="underscores-lower-PEP3333-HTTP_X_USER_ID"),
    pytest.param([b"X-User_Id: 31337"], id="one-underscore-PEP3333-HTTP_X_USER_ID"),
    pytest.param([b"X-User-Id: 31337", b"X-User-Id: 31337"], id="duplicated-RFC9110-5.3-CVE-2021-32777"),
    pytest.param([b"X-User-Id: 31337", b"x_user_id: 31337"], id="dash-and-underscore-CVE-2021-32777"),
    pytest.param([b"X-User-Id: 31337, 4242"], id="list-value-RFC9110-5.3"),
    pytest.param([b"X-User-Id:"], id="empty-value-RFC9110-5.5"),
    pytest.param([b"X-User-Id: 4242"], id="the-users-own-id-once-more-RFC9110-5.3"),
    pytest.param([b"X-User-Id: 31337", b"Connection: X-User-Id"], id="named-in-Connection-CVE-2022-31813"),
]
ANON: list[bytes] = []
ONE = [str(USER).encode()]
# (mode, token?) -> the status and the X-User-Id values the upstream (or forward-auth's answer) carries
EXPECT = {
    ("public", False): (200, ANON), ("public", True): (200, ANON),
    ("optional", False): (200, ANON), ("optional", True): (200, ONE),
    ("required", False): (401, ANON), ("required", True): (200, ONE),
}


def with_token(fields: list[bytes], token: bool) -> list[bytes]:
    return [*fields, b"Authorization: Bearer " + TOKEN] if token else fields


@pytest.mark.parametrize("spoof", SPOOFS)
async def test_the_upstream_gets_one_x_user_id_or_none(gw: Front, spoof: list[bytes]) -> None:
    """Each spelling on each mode (public, optional, required), with no token and with a valid one."""
    for (mode, token), (status, expected) in EXPECT.items():
        gw.upstream.requests.clear()
        answer = await gw.send(request(PATHS[mode], *with_token(spoof, token)))
        assert answer[0] == status, (mode, token, answer)
        if status != 200:
            assert json.loads(answer[2]) == {"message": "User must be authorized."}
            assert gw.upstream.requests == [], (mode, token)
            continue
        assert values(gw.only_head(), b"X-User-Id") == expected, (mode, token)
        assert SPOOF not in gw.upstream.requests[0], (mode, token)


@pytest.mark.parametrize("spoof", SPOOFS)
async def test_forward_auth_answers_one_x_user_id_or_none(proxy_gw: Front, spoof: list[bytes]) -> None:
    """Forward-auth mode (endpoints/own.py): the proxy in front copies the answer's X-User-Id upstream, so
    the answer may carry only the gateway's own."""
    for (mode, token), (status, expected) in EXPECT.items():
        fields = [b"X-Forwarded-Method: GET", b"X-Forwarded-Uri: " + PATHS[mode].encode(), *spoof]
        conn = await Conn.open(proxy_gw.client)
        conn.send(request("/_gateway/auth", *with_token(fields, token)))
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
        conn.close()
        answer = [(n, v.strip()) for n, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)]
        assert int(head.split(b" ")[1]) == status, (mode, token, head)
        assert values(answer, b"X-User-Id") == expected, (mode, token)
        assert SPOOF not in head, (mode, token)
    assert proxy_gw.upstream.requests == []  # forward-auth never proxies


# -- the other fields the gateway sets (pipeline/mutate.py `_OWN`) ----------------------------------------------

def last_hop(fields: Fields) -> bytes:
    forwarded = values(fields, b"X-Forwarded-For")
    assert len(forwarded) == 1, forwarded
    return forwarded[0].split(b",")[-1].strip()


@pytest.mark.parametrize("sent, check", [
    pytest.param([b"X-Forwarded-For: 6.6.6.6"], lambda h: last_hop(h) == b"127.0.0.1",
                 id="X-Forwarded-For-last-hop-is-the-peer-CVE-2022-31813"),
    pytest.param([b"X_Forwarded_For: 6.6.6.6"], lambda h: values(h, b"X-Forwarded-For") == [b"127.0.0.1"],
                 id="X_Forwarded_For-underscores-PEP3333"),
    pytest.param([b"X-Forwarded-Proto: https"], lambda h: values(h, b"X-Forwarded-Proto") == [b"http"],
                 id="X-Forwarded-Proto-RFC7239-5.4"),
    pytest.param([b"X_Forwarded_Proto: https"], lambda h: values(h, b"X-Forwarded-Proto") == [b"http"],
                 id="X_Forwarded_Proto-underscores-PEP3333"),
    pytest.param([b"X-Forwarded-Host: evil.example"], lambda h: values(h, b"X-Forwarded-Host") == [b"gw"],
                 id="X-Forwarded-Host-RFC7239-5.3"),
    pytest.param([b"X-Forwarded-Host: evil.example", b"X-Forwarded-Host: evil.example"],
                 lambda h: values(h, b"X-Forwarded-Host") == [b"gw"], id="X-Forwarded-Host-twice-RFC9110-5.3"),
    pytest.param([b"X-Request-Id: not sane {}"], lambda h: len(values(h, b"X-Request-Id")) == 1 and
                 b"sane" not in values(h, b"X-Request-Id")[0], id="X-Request-Id-insane-replaced"),
    pytest.param([b"X-Request-Id: trace-1", b"X-Request-Id: trace-2"],
                 lambda h: values(h, b"X-Request-Id") == [b"trace-1"], id="X-Request-Id-twice-RFC9110-5.3"),
    pytest.param([b"X_Request_Id: trace-3"], lambda h: values(h, b"X-Request-Id") != [b"trace-3"] and
                 len(values(h, b"X-Request-Id")) == 1, id="X_Request_Id-underscores-PEP3333"),
    pytest.param([b"Expect: 100-continue"], lambda h: values(h, b"Expect") == [], id="Expect-RFC9110-10.1.1"),
    pytest.param([b"Forwarded: for=6.6.6.6;proto=https"], lambda h: values(h, b"Forwarded") == [],
                 id="Forwarded-RFC7239-4-client-naming-itself"),
    pytest.param([b"X-Real-IP: 6.6.6.6"], lambda h: values(h, b"X-Real-IP") == [], id="X-Real-IP-nginx-realip"),
    pytest.param([b"True-Client-IP: 6.6.6.6", b"CF-Connecting-IP: 6.6.6.6", b"X-Client-IP: 6.6.6.6"],
                 lambda h: not any(values(h, n) for n in (b"True-Client-IP", b"CF-Connecting-IP", b"X-Client-IP")),
                 id="CDN-client-ip-fields-OWASP-WSTG-INPV-17"),
    pytest.param([b"X-Forwarded-Port: 443", b"X-Forwarded-Ssl: on", b"X-Forwarded-Scheme: https"],
                 lambda h: not any(values(h, n) for n in (b"X-Forwarded-Port", b"X-Forwarded-Ssl",
                                                          b"X-Forwarded-Scheme")),
                 id="scheme-and-port-fields-RFC7239-5.4"),
    pytest.param([b"Host_: evil.example"], lambda h: values(h, b"Host") == values(h, b"Host")[:1] and
                 b"evil.example" not in b"".join(values(h, b"Host")), id="Host_-underscore-RFC9112-3.2"),
])
async def test_fields_the_gateway_sets_are_the_gateways(gw: Front, sent: list[bytes], check: Any) -> None:
    status, _, _ = await gw.send(request("/v1_0/req", *sent, b"Authorization: Bearer " + TOKEN))
    assert status == 200
    head = gw.only_head()
    assert check(head), head
    assert values(head, b"X-User-Id") == [str(USER).encode()]
    assert len(values(head, b"Host")) == 1


async def test_a_second_host_is_refused(gw: Front) -> None:
    """RFC 9112 §3.2: more than one Host is a 400; an upstream could route by the other one."""
    status, _, body = await gw.send(b"GET /v1_0/pub HTTP/1.1\r\nHost: gw\r\nHost: evil.example\r\n\r\n")
    assert (status, json.loads(body)) == (400, {"message": "Only one Host field is allowed."})
    assert gw.upstream.requests == []


# -- Connection naming the fields the gateway sets (RFC 9110 §7.6.1) ------------------------------------------

@pytest.mark.parametrize("named", [
    pytest.param(b"X-User-Id", id="X-User-Id-CVE-2022-1388"),
    pytest.param(b"X-Forwarded-For", id="X-Forwarded-For-CVE-2022-31813"),
    pytest.param(b"X-Request-Id", id="X-Request-Id-RFC9110-7.6.1"),
    pytest.param(b"Authorization", id="Authorization-CVE-2022-1388"),
    pytest.param(b"X-Forwarded-Proto, X-Forwarded-Host, Host", id="the-rest-CVE-2022-31813"),
    pytest.param(b"close, X-User-Id, X-Forwarded-For", id="after-close-RFC9110-7.6.1"),
    pytest.param(b"keep-alive, x-user-id, X-REQUEST-ID, authorization", id="any-case-RFC9110-5.1"),
])
@pytest.mark.parametrize("path", ["/v1_0/req", "/v1_0/with-auth"])
async def test_connection_cannot_remove_what_the_gateway_sets(gw: Front, named: bytes, path: str) -> None:
    status, _, _ = await gw.send(request(path, b"Authorization: Bearer " + TOKEN, b"Connection: " + named))
    assert status == 200
    head = gw.only_head()
    assert values(head, b"X-User-Id") == [str(USER).encode()]
    assert last_hop(head) == b"127.0.0.1"
    assert len(values(head, b"X-Request-Id")) == 1 and values(head, b"X-Forwarded-Proto") == [b"http"]
    assert values(head, b"X-Forwarded-Host") == [b"gw"] and len(values(head, b"Host")) == 1
    assert values(head, b"Connection") == []  # hop-by-hop: never forwarded
    assert len(values(head, b"Authorization")) <= 1  # the client asked this hop to keep it; never two


async def test_connection_naming_the_framing_does_not_change_it(gw: Front) -> None:
    """Content-Length and Transfer-Encoding named in Connection: the upstream still gets the body framed
    once, by the gateway (a desync otherwise)."""
    data = b"POST /v1_0/req HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + TOKEN + \
        b"\r\nContent-Length: 5\r\nConnection: Content-Length, Transfer-Encoding\r\n\r\nhello"
    status, _, _ = await gw.send(data)
    assert status == 200
    head = gw.only_head()
    assert values(head, b"Content-Length") == [b"5"] and values(head, b"Transfer-Encoding") == []
    assert gw.upstream.requests[0].endswith(b"\r\n\r\nhello")


# -- h2c: never a tunnel, never a 101 without authentication (RFC 9113 §3.1, RFC 9110 §7.8) -------------------

H2C = [b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]
H2C_BARE = [b"Connection: Upgrade", b"Upgrade: h2c"]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def open_request(path: str, *fields: bytes) -> bytes:
    """A request that keeps the connection open (h2c smuggling needs the connection after the answer)."""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


@pytest.mark.parametrize("upgrade", [pytest.param(H2C, id="with-HTTP2-Settings-Bishop-Fox-h2c-smuggling"),
                                     pytest.param(H2C_BARE, id="without-HTTP2-Settings-RFC9113-3.1")])
async def test_h2c_without_a_token_is_401_and_the_connection_stays_http_1(gw: Front, upgrade: list[bytes]) -> None:
    conn = await Conn.open(gw.client)
    conn.send(open_request("/v1_0/req", *upgrade) + PREFACE)
    first = await conn.answer()
    second = await conn.answer()
    conn.close()
    assert (first[0], json.loads(first[2])) == (401, {"message": "User must be authorized."})
    assert second[0] == 400 and json.loads(second[2]) == {"message": "Bad request."}  # the preface: not HTTP/1.1
    assert gw.upstream.requests == []


@pytest.mark.parametrize("upgrade", [pytest.param(H2C, id="with-HTTP2-Settings-Bishop-Fox-h2c-smuggling"),
                                     pytest.param(H2C_BARE, id="without-HTTP2-Settings-RFC9113-3.1")])
@pytest.mark.parametrize("path, token", [("/v1_0/pub", False), ("/v1_0/opt", False), ("/v1_0/req", True)],
                         ids=["public", "optional", "required-with-token"])
async def test_h2c_is_forwarded_as_plain_http_1_1_and_the_next_request_is_checked(
        gw: Front, upgrade: list[bytes], path: str, token: bool) -> None:
    """Where the request may pass, it goes on without its upgrade fields: the upstream cannot answer 101, so
    no tunnel opens whose later requests (the h2 preface, another request) skip the gateway's checks."""
    fields = [*upgrade, b"Authorization: Bearer " + TOKEN] if token else upgrade
    conn = await Conn.open(gw.client)
    conn.send(open_request(path, *fields) + open_request("/v1_0/req") + PREFACE)
    answers = [await conn.answer() for _ in range(3)]
    conn.close()
    assert [a[0] for a in answers] == [200, 401, 400]
    head = gw.only_head()
    assert values(head, b"Upgrade") == values(head, b"HTTP2-Settings") == values(head, b"Connection") == []
    assert not any(PREFACE in r for r in gw.upstream.requests)


async def test_an_upstream_101_to_a_plain_request_is_a_502(make_gateway: Any) -> None:
    """An upstream that switches protocols on a request that never asked (the gateway strips Upgrade): its
    101 does not reach the client, who would then hold a tunnel past the gateway."""
    made = await front(make_gateway, answer=lambda request: b"HTTP/1.1 101 Switching Protocols\r\n"
                                                            b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    try:
        status, _, body = await made.send(request("/v1_0/pub", *H2C))
        assert status == 502 and "message" in json.loads(body)
    finally:
        await made.upstream.stop()


# -- CR, LF and NUL, and other malformed field lines (RFC 9110 §5.5, RFC 9112 §5) -----------------------------

MALFORMED = [
    pytest.param(b"X-A: a\rb", id="CR-in-value-RFC9110-5.5"),
    pytest.param(b"X-A: a\nX-User-Id: 31337", id="LF-in-value-injects-a-field-RFC9110-5.5"),
    pytest.param(b"X-A: a\r\rX-User-Id: 31337", id="CR-CR-in-value-RFC9112-2.2"),
    pytest.param(b"X-A: a\x00b", id="NUL-in-value-RFC9110-5.5"),
    pytest.param(b"X-User-Id: 4242\x0031337", id="NUL-in-X-User-Id-RFC9110-5.5"),
    pytest.param(b"X-\x00A: b", id="NUL-in-name-RFC9110-5.1"),
    pytest.param(b"X-User-Id\x00: 31337", id="NUL-before-colon-RFC9110-5.1"),
    pytest.param(b"X-\rA: b", id="CR-in-name-RFC9110-5.1"),
    pytest.param(b"X-\nA: b", id="LF-in-name-RFC9110-5.1"),
    pytest.param(b"X-User-Id : 31337", id="space-before-colon-RFC9112-5.1"),
    pytest.param(b"X-User-Id\t: 31337", id="tab-before-colon-RFC9112-5.1"),
    pytest.param(b"X User Id: 31337", id="space-in-name-RFC9110-5.1"),
    pytest.param(b"X-A: a\r\n X-User-Id: 31337", id="obs-fold-RFC9112-5.2"),
    pytest.param(b"X-A: a\r\n\tX-User-Id: 31337", id="obs-fold-tab-RFC9112-5.2"),
    pytest.param(b": 31337", id="empty-name-RFC9110-5.1"),
    pytest.param(b"X-User-Id", id="no-colon-RFC9112-5"),
]


@pytest.mark.parametrize("line", MALFORMED)
@pytest.mark.parametrize("path", ["/v1_0/pub", "/v1_0/req"])
async def test_malformed_field_lines_are_400_and_reach_no_upstream(gw: Front, line: bytes, path: str) -> None:
    conn = await Conn.open(gw.client)
    conn.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + line + b"\r\nAuthorization: Bearer " +
              TOKEN + b"\r\n\r\n")
    status, headers, body = await conn.answer()
    assert (status, json.loads(body)) == (400, {"message": "Bad request."})
    assert headers["content-type"].startswith("application/json") and await conn.closed()
    conn.close()
    assert gw.upstream.requests == []


@pytest.mark.parametrize("data", [
    pytest.param(b"GET /v1_0/pub HTTP/1.1\r\n X-User-Id: 31337\r\nHost: gw\r\n\r\n",
                 id="whitespace-before-the-first-field-RFC9112-2.2"),
    pytest.param(b"GET /v1_0/pub HTTP/1.1\nHost: gw\nX-User-Id: 31337\n\n", id="bare-LF-line-ends-RFC9112-2.2"),
    pytest.param(b"GET /v1_0/pub HTTP/1.1\rHost: gw\r\n\r\n", id="bare-CR-after-the-request-line-RFC9112-2.2"),
    pytest.param(b"GET /v1_0/pub\x00 HTTP/1.1\r\nHost: gw\r\n\r\n", id="NUL-in-the-target-RFC9112-3.2"),
])
async def test_malformed_heads_are_400_and_reach_no_upstream(gw: Front, data: bytes) -> None:
    status, _, body = await gw.send(data)
    assert (status, json.loads(body)) == (400, {"message": "Bad request."})
    assert gw.upstream.requests == []


async def test_well_formed_odd_fields_still_pass(gw: Front) -> None:
    """The control for the tables above: tabs and obs-text inside a value, a token-character name."""
    status, _, _ = await gw.send(request("/v1_0/pub", b"X-A: a\tb", b"X-B: caf\xc3\xa9", b"X-!#$%&'*+.^`|~: v"))
    assert status == 200
    head = gw.only_head()
    assert values(head, b"X-A") == [b"a\tb"] and values(head, b"X-B") == [b"caf\xc3\xa9"]


# -- sizes (RFC 6585 §5, RFC 9110 §5.4) -------------------------------------------------------------------------

def padded(count: int) -> list[bytes]:
    return [b"X-F%d: v" % i for i in range(count)]


@pytest.mark.parametrize("fields, status", [
    pytest.param([b"X-Big: " + b"a" * (MAX_FIELD - len(b"X-Big"))], 200, id="one-field-at-the-limit-passes"),
    pytest.param([b"X-Big: " + b"a" * (MAX_FIELD - len(b"X-Big") + 1)], 431, id="one-byte-over-RFC6585-5"),
    pytest.param([b"X-" + b"n" * MAX_FIELD + b": v"], 431, id="oversized-name-RFC6585-5"),
    pytest.param([b"Authorization: Bearer " + b"a" * MAX_FIELD], 431, id="oversized-Authorization-RFC6585-5"),
    pytest.param([b"X-Part%d: " % i + b"a" * (MAX_FIELD - 16) for i in range(MAX_HEAD // MAX_FIELD + 1)], 431,
                 id="head-over-64-KiB-in-fields-under-16-KiB-RFC6585-5"),
    pytest.param(padded(MAX_FIELDS - 2), 200, id="fields-at-the-limit-pass"),  # with Host and Connection
    pytest.param(padded(MAX_FIELDS - 1), 431, id="one-field-too-many-RFC6585-5"),
    pytest.param([b"a:"] * 20_000, 431, id="20000-one-byte-fields-RFC6585-5"),
    pytest.param([b"X-User-Id: 31337"] * 5_000, 431, id="5000-X-User-Id-RFC6585-5"),
])
async def test_oversized_heads_are_431_never_500(gw: Front, fields: list[bytes], status: int) -> None:
    answer = await gw.send(request("/v1_0/pub", *fields))
    assert answer[0] == status, answer
    if status == 431:
        assert json.loads(answer[2]) == {"message": "Request header fields too large."}
        assert answer[1]["content-type"].startswith("application/json")
        assert gw.upstream.requests == []
    else:
        assert len(gw.upstream.requests) == 1 and SPOOF not in gw.upstream.requests[0]
