"""TLS on both sides, through real listeners: HTTPS clients (and mTLS), HTTPS upstreams (and mTLS to them)."""
from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import warnings
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

import upstream_stub
from gateway.config import Config
from tests.certs import Authority, Pem
from tests.factories import MOBILE, make_config, make_token
from tests.processes import Running, gateway_raw
from tests.servers import GatewayServer
from upstream_stub.app import RECEIVED

Client = Callable[..., Awaitable[TestClient]]
pytestmark = pytest.mark.stores("embedded")  # TLS is the same whatever the stores


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "ca")


@pytest.fixture
def server_pem(ca: Authority) -> Pem:
    return ca.issue("gateway")


def tls_config(upstream: str, store_urls: dict[str, str], **server_tls: Any) -> Config:
    return make_config(upstream, **store_urls, server={"tls": server_tls})


async def https_stub(aiohttp_server: Callable[..., Awaitable[TestServer]], pem: Pem,
                     client_ca: str | None = None) -> TestServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem.cert, pem.key)
    if client_ca:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return await aiohttp_server(upstream_stub.create_app(), ssl=context)


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in echo["headers"] if key.lower() == name.lower()]


# -- the public listener -----------------------------------------------------------------------------------


async def test_an_https_client_logs_in_and_calls_a_protected_route(
        aiohttp_client: Client, upstream: TestServer, store_urls: dict[str, str], ca: Authority, server_pem: Pem,
        sms_codes: Callable[[str], str]) -> None:
    config = tls_config(str(upstream.make_url("")).rstrip("/"), store_urls, cert_file=server_pem.cert,
                        key_file=server_pem.key)
    client = await aiohttp_client(GatewayServer(config))
    assert str(client.make_url("/")).startswith("https://")
    context = ca.client_context()
    resp = await client.get(f"/v1_0/sms/codes/{MOBILE}", ssl=context)
    assert resp.status == 200
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)},
                             ssl=context)
    assert resp.status == 201
    token = (await resp.json())["token"]
    resp = await client.get("/v1_0/echo/mixed", headers={"Authorization": f"Bearer {token}"}, ssl=context)
    assert resp.status == 200
    echo = await resp.json()
    assert header(echo, "X-Forwarded-Proto") == ["https"]
    assert len(header(echo, "X-User-Id")) == 1
    resp = await client.get("/v1_0/echo/mixed", ssl=context)
    assert resp.status == 200 and header(await resp.json(), "X-User-Id") == []  # optional for GET: anonymous
    resp = await client.post("/v1_0/echo/mixed", headers={"Authorization": "Bearer nope"}, ssl=context)
    assert resp.status == 401


async def test_client_certificates_required_refuse_a_client_without_one_at_the_handshake(
        aiohttp_client: Client, upstream: TestServer, store_urls: dict[str, str], ca: Authority,
        server_pem: Pem) -> None:
    config = tls_config(str(upstream.make_url("")).rstrip("/"), store_urls, cert_file=server_pem.cert,
                        key_file=server_pem.key, client_ca_file=ca.ca_file, client_auth="required")
    client = await aiohttp_client(GatewayServer(config))
    with pytest.raises(aiohttp.ClientError):  # the handshake (TLS 1.3: its first read) fails
        resp = await client.get("/v1_0/channels", ssl=ca.client_context())
        await resp.read()
    stranger = Authority(ca.folder.parent / "other", "Other CA").issue("stranger", names=("stranger",), client=True)
    with pytest.raises(aiohttp.ClientError):  # a certificate of a CA the gateway does not trust
        resp = await client.get("/v1_0/channels", ssl=ca.client_context(stranger))
        await resp.read()
    known = ca.issue("app", names=("app",), client=True)
    resp = await client.get("/v1_0/channels", ssl=ca.client_context(known))
    assert resp.status == 200


def _old_tls_client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():  # deprecated, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def test_tls_1_0_and_1_1_are_refused(aiohttp_client: Client, upstream: TestServer,
                                           store_urls: dict[str, str], server_pem: Pem) -> None:
    config = tls_config(str(upstream.make_url("")).rstrip("/"), store_urls, cert_file=server_pem.cert,
                        key_file=server_pem.key)
    client = await aiohttp_client(GatewayServer(config))
    loop = asyncio.get_running_loop()
    # The same client does speak TLS 1.1 to a server that allows it: a refusal below is the gateway's.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.load_cert_chain(server_pem.cert, server_pem.key)
    permissive.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    other = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=permissive)
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", other.sockets[0].getsockname()[1],
                                                ssl=_old_tls_client())
    assert transport.get_extra_info("ssl_object").version() in ("TLSv1", "TLSv1.1")
    transport.close()
    other.close()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await loop.create_connection(asyncio.Protocol, "127.0.0.1", client.port, ssl=_old_tls_client())
    # min_version 1.3: a client that stops at TLS 1.2 is refused, one that speaks 1.3 is not
    config = tls_config(str(upstream.make_url("")).rstrip("/"), store_urls, cert_file=server_pem.cert,
                        key_file=server_pem.key, min_version="1.3")
    strict = await aiohttp_client(GatewayServer(config))
    tls12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls12.check_hostname, tls12.verify_mode = False, ssl.CERT_NONE
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", client.port, ssl=tls12)
    assert transport.get_extra_info("ssl_object").version() == "TLSv1.2"  # the default gateway takes 1.2
    transport.close()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await loop.create_connection(asyncio.Protocol, "127.0.0.1", strict.port, ssl=tls12)
    resp = await strict.get("/v1_0/channels", ssl=False)
    assert resp.status == 200  # over TLS 1.3


async def test_plain_http_to_the_tls_port_is_closed_quietly(
        aiohttp_client: Client, upstream: TestServer, store_urls: dict[str, str], server_pem: Pem,
        caplog: pytest.LogCaptureFixture) -> None:
    config = tls_config(str(upstream.make_url("")).rstrip("/"), store_urls, cert_file=server_pem.cert,
                        key_file=server_pem.key)
    client = await aiohttp_client(GatewayServer(config))
    caplog.set_level(logging.DEBUG)
    for request in (b"GET /v1_0/channels HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05garbage"):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(request)
        try:
            answer = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed: no answer in the clear, no TLS alert mistaken for one
        writer.close()
    resp = await client.get("/v1_0/channels", ssl=False)
    assert resp.status == 200  # the listener still serves
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- upstreams over TLS ----------------------------------------------------------------------------------------


async def test_an_https_upstream_with_a_private_ca_and_resumed_sessions(
        aiohttp_client: Client, aiohttp_server: Callable[..., Awaitable[TestServer]], store_urls: dict[str, str],
        ca: Authority) -> None:
    news = await https_stub(aiohttp_server, ca.issue("news", names=("news.internal",)))
    config = make_config(f"https://127.0.0.1:{news.port}", **store_urls,
                         upstreams={"news": {"targets": [f"https://127.0.0.1:{news.port}"],
                                             "tls": {"ca_file": ca.ca_file, "server_name": "news.internal"}}})
    client = await aiohttp_client(GatewayServer(config))
    # three at once: three connections to the upstream, the later ones resuming the first one's session
    first = await client.get("/v1_0/echo/public")
    assert first.status == 200
    echoes = [await (await client.get("/v1_0/echo/public")).json() for _ in range(2)]
    answers = await asyncio.gather(*(client.get("/v1_0/echo/public") for _ in range(3)))
    echoes += [await r.json() for r in answers]
    assert {e["tls"]["version"] for e in echoes} <= {"TLSv1.2", "TLSv1.3"}
    assert any(e["tls"]["resumed"] for e in echoes)
    assert header(echoes[0], "Host") == [f"news.internal:{news.port}"]  # the name the certificate is for


@pytest.mark.parametrize("case, reason", [
    ("wrong name", "Hostname mismatch"),
    ("unknown CA", "self-signed certificate in certificate chain"),  # the system's CAs know ours not
])
async def test_an_upstream_certificate_that_fails_verification_gives_502_and_a_logged_reason(
        aiohttp_client: Client, aiohttp_server: Callable[..., Awaitable[TestServer]], store_urls: dict[str, str],
        ca: Authority, case: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    news = await https_stub(aiohttp_server, ca.issue("news", names=("news.internal",)))
    tls = {"ca_file": ca.ca_file, "server_name": "elsewhere.internal"} if case == "wrong name" else {}
    target = f"https://127.0.0.1:{news.port}"
    config = make_config(target, **store_urls, upstreams={"news": {"targets": [target], "tls": tls}})
    client = await aiohttp_client(GatewayServer(config))
    resp = await client.get("/v1_0/channels")
    assert resp.status == 502
    assert (await resp.json())["message"] == "Upstream news is unavailable."
    assert any(reason in r.getMessage() for r in caplog.records if r.name == "gateway.proxy")
    assert news.app[RECEIVED] == []


async def test_an_upstream_that_requires_a_client_certificate_receives_ours(
        aiohttp_client: Client, aiohttp_server: Callable[..., Awaitable[TestServer]], store_urls: dict[str, str],
        ca: Authority) -> None:
    news = await https_stub(aiohttp_server, ca.issue("news"), client_ca=ca.ca_file)
    ours = ca.issue("gateway-client", names=("gateway-client",), client=True)
    target = f"https://127.0.0.1:{news.port}"
    without = make_config(target, **store_urls,
                          upstreams={"news": {"targets": [target], "tls": {"ca_file": ca.ca_file}}})
    client = await aiohttp_client(GatewayServer(without))
    assert (await client.get("/v1_0/echo/public")).status == 502
    with_cert = make_config(target, **store_urls, upstreams={"news": {"targets": [target], "tls": {
        "ca_file": ca.ca_file, "cert_file": ours.cert, "key_file": ours.key}}})
    client = await aiohttp_client(GatewayServer(with_cert))
    resp = await client.get("/v1_0/echo/public")
    assert resp.status == 200
    assert (await resp.json())["tls"]["client_cert"] == "gateway-client"


async def test_retries_and_health_checks_use_the_tls_settings(
        aiohttp_client: Client, aiohttp_server: Callable[..., Awaitable[TestServer]], store_urls: dict[str, str],
        ca: Authority) -> None:
    news = await https_stub(aiohttp_server, ca.issue("news"))
    # The first target's certificate is of a CA the gateway does not trust: its handshake fails before any
    # byte of a request is sent, so a GET goes on to the other target.
    impostor = await https_stub(aiohttp_server, Authority(ca.folder.parent / "impostor", "Impostor").issue("x"))
    targets = [f"https://127.0.0.1:{impostor.port}", f"https://127.0.0.1:{news.port}"]
    config = make_config(targets, **store_urls, upstreams={"news": {
        "targets": targets, "balance": "round_robin", "tls": {"ca_file": ca.ca_file}}})
    client = await aiohttp_client(GatewayServer(config))
    assert {(await client.get("/v1_0/channels")).status for _ in range(4)} == {200}  # the refused one retried
    assert len(news.app[RECEIVED]) == 4 and impostor.app[RECEIVED] == []
    # A health check that trusts another CA finds the target unhealthy: 503, not a 502 per request.
    other = Authority(ca.folder.parent / "other", "Other CA")
    target = f"https://127.0.0.1:{news.port}"
    config = make_config(target, **store_urls, upstreams={"news": {
        "targets": [target], "tls": {"ca_file": other.ca_file},
        "health_check": {"path": "/_stub/health", "interval": "0.1s", "unhealthy_threshold": 1}}})
    client = await aiohttp_client(GatewayServer(config))
    for _ in range(50):
        resp = await client.get("/v1_0/channels")
        if resp.status == 503:
            break
        await asyncio.sleep(0.1)
    assert resp.status == 503 and (await resp.json())["message"] == "No healthy upstream."
    # and one that trusts the right CA keeps it healthy
    config = make_config(target, **store_urls, upstreams={"news": {
        "targets": [target], "tls": {"ca_file": ca.ca_file},
        "health_check": {"path": "/_stub/health", "interval": "0.1s", "unhealthy_threshold": 1}}})
    client = await aiohttp_client(GatewayServer(config))
    await asyncio.sleep(0.5)
    assert (await client.get("/v1_0/channels")).status == 200


async def test_websockets_to_an_https_upstream_use_wss(
        aiohttp_client: Client, aiohttp_server: Callable[..., Awaitable[TestServer]], store_urls: dict[str, str],
        ca: Authority) -> None:
    news = await https_stub(aiohttp_server, ca.issue("news"))
    target = f"https://127.0.0.1:{news.port}"
    config = make_config(target, **store_urls, upstreams={"news": {"targets": [target],
                                                                    "tls": {"ca_file": ca.ca_file}}})
    client = await aiohttp_client(GatewayServer(config))
    await client.server.gateway.users.register(42, "13900004242")
    async with client.ws_connect("/v1_0/ws/echo", headers={"Authorization": f"Bearer {make_token(42)}"}) as ws:
        assert (await ws.receive_json())["user_id"] == "42"
        await ws.send_str("over tls")
        assert (await ws.receive()).data == "over tls"


# -- certificate rotation, in a running gateway ----------------------------------------------------------------


async def _fingerprint(port: int, context: ssl.SSLContext) -> bytes:
    """The certificate a new connection is served, after one request answered on it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    cert = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.write(b"GET /v1_0/channels HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    return bytes(cert)


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_rotates_the_certificate_under_load_and_a_bad_one_keeps_the_old(
        tmp_path: Path, stub: str, ca: Authority, workers: int, request: pytest.FixtureRequest) -> None:
    first, second = ca.issue("first", days=10.5), ca.issue("second", days=5.5)  # both near their end: warnings
    live = Pem(str(tmp_path / "live.crt"), str(tmp_path / "live.key"))
    for source, target in ((first.cert, live.cert), (first.key, live.key)):
        Path(target).write_bytes(Path(source).read_bytes())
    raw = gateway_raw(stub, tmp_path, workers=workers, tls={"cert_file": live.cert, "key_file": live.key})
    if workers > 1:
        raw["redis"] = {"url": request.getfixturevalue("real_redis_url")}
    gateway = Running(tmp_path, raw)
    context = ca.client_context()
    try:
        before = await _fingerprint(gateway.port, context)
        failures: list[BaseException] = []
        statuses: list[int] = []
        stop = asyncio.Event()

        async def load() -> None:
            connector = aiohttp.TCPConnector(ssl=context, force_close=True)  # a handshake per request
            async with aiohttp.ClientSession(connector=connector) as session:
                while not stop.is_set():
                    try:
                        async with session.get(f"https://localhost:{gateway.port}/v1_0/channels") as resp:
                            await resp.read()
                            statuses.append(resp.status)
                    except aiohttp.ClientError as exc:
                        failures.append(exc)

        loads = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(0.5)
        for source, target in ((second.cert, live.cert), (second.key, live.key)):
            Path(target).write_bytes(Path(source).read_bytes())
        gateway.signal(signal.SIGHUP)
        after = before
        for _ in range(100):
            after = await _fingerprint(gateway.port, context)
            if after != before:
                break
            await asyncio.sleep(0.1)
        assert after != before  # new connections get the new certificate
        Path(live.key).write_bytes(Path(first.key).read_bytes())  # a key that does not match: refused
        gateway.signal(signal.SIGHUP)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*loads)
        assert failures == [] and len(statuses) > 20 and set(statuses) == {200}
        # every worker serves the second certificate still
        assert {await _fingerprint(gateway.port, context) for _ in range(20)} == {after}
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /v1_0/channels HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to the TLS port
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""
        except ConnectionResetError:
            pass
        writer.close()
    finally:
        gateway.stop()
    records = gateway.records()
    assert any(r["message"].startswith("reload refused") for r in records)
    assert any("KEY_VALUES_MISMATCH" in r["message"] for r in records)
    assert not [r for r in records if "exception" in r]
    errors = [r["message"] for r in records if r["level"] == "ERROR"]
    assert errors and all(m.startswith(("reload refused", "  server.tls")) for m in errors), errors
    # a WARNING at start and on the reload that took, once each (not once per worker)
    warned = [(r["logger"], r["message"].split(" day(s)")[0]) for r in records if r["level"] == "WARNING"]
    assert warned.count(("gateway", "server.tls.cert_file: the certificate expires in 10")) == 1
    assert warned.count(("gateway.server", "server.tls.cert_file: the certificate expires in 5")) == 1


async def test_timeouts_and_forward_auth_behave_the_same_over_tls(
        aiohttp_client: Client, aiohttp_server: Callable[..., Awaitable[TestServer]], store_urls: dict[str, str],
        ca: Authority, server_pem: Pem) -> None:
    news = await https_stub(aiohttp_server, ca.issue("news"))
    target = f"https://127.0.0.1:{news.port}"
    config = make_config(target, **store_urls, upstreams={"news": {"targets": [target], "tls": {"ca_file": ca.ca_file}}},
                         server={"tls": {"cert_file": server_pem.cert, "key_file": server_pem.key},
                                 "trusted_proxies": ["127.0.0.1"]},
                         routes=[{"path": "/_stub/slow", "upstream": "news", "auth": "public",
                                  "timeouts": {"first_byte": "300ms"}},
                                 {"path": "/", "upstream": "news", "auth": "required"}])
    client = await aiohttp_client(GatewayServer(config))
    context = ca.client_context()
    resp = await client.get("/_stub/slow?seconds=2", ssl=context)
    assert resp.status == 504 and (await resp.json())["message"] == "Upstream news timed out."
    await client.server.gateway.users.register(42, "13900004242")
    asked = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1_0/user/profile"}
    resp = await client.get("/_gateway/auth", headers={**asked, "Authorization": f"Bearer {make_token(42)}"},
                            ssl=context)
    assert resp.status == 200 and resp.headers["X-User-Id"] == "42"
    resp = await client.get("/_gateway/auth", headers=asked, ssl=context)
    assert resp.status == 401


async def test_x_forwarded_proto_is_believed_from_a_trusted_proxy_alone(
        aiohttp_client: Client, upstream: TestServer, store_urls: dict[str, str]) -> None:
    """A load balancer that terminated TLS tells the upstream so; a client cannot."""
    url = str(upstream.make_url("")).rstrip("/")
    behind = await aiohttp_client(GatewayServer(make_config(url, **store_urls,
                                                            server={"trusted_proxies": ["127.0.0.1"]})))
    exposed = await aiohttp_client(GatewayServer(make_config(url, **store_urls)))
    for client, expected in ((behind, ["https"]), (exposed, ["http"])):
        resp = await client.get("/v1_0/echo/public", headers={"X-Forwarded-Proto": "https"})
        assert header(await resp.json(), "X-Forwarded-Proto") == expected
    resp = await behind.get("/v1_0/echo/public", headers={"X-Forwarded-Proto": "gopher"})
    assert header(await resp.json(), "X-Forwarded-Proto") == ["http"]
