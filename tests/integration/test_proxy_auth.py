"""The auth matrix: path × token state × method → status, message, and what the upstream saw."""
from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.factories import make_token
from upstream_stub.app import RECEIVED

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


USER_ID = 4242


@pytest.fixture(autouse=True)
async def registered_user(gateway: TestClient) -> None:
    """Tokens below name this user; the gateway refuses tokens of users it does not know."""
    await gateway.server.gateway.users.register(USER_ID, "13900004242")
TOKENS: dict[str, str | None] = {
    "none": None,
    "access": f"Bearer {make_token(USER_ID)}",
    "refresh": f"Bearer {make_token(USER_ID, refresh=True)}",
    "expired": f"Bearer {make_token(USER_ID, ttl=-1)}",
    "bad-signature": f"Bearer {make_token(USER_ID, secret='s' * 70)}",
    "malformed": "Bearer not.a.jwt",
    "not-bearer": "Basic dXNlcjpwYXNz",
    "two-spaces": f"Bearer  {make_token(USER_ID)}",
}
ANON = (200, None)
USER = (200, str(USER_ID))
REFRESH = (403, "Do not use refresh token.")
MUST = (401, "User must be authorized.")
ERRORS = (401, "Token has some errors.")

EXPECT = {
    "public": {state: ANON for state in TOKENS},
    "optional": {"none": ANON, "access": USER, "refresh": REFRESH, "expired": ERRORS, "bad-signature": ERRORS,
                 "malformed": ERRORS, "not-bearer": ERRORS, "two-spaces": ERRORS},
    "required": {"none": MUST, "access": USER, "refresh": REFRESH, "expired": MUST, "bad-signature": MUST,
                 "malformed": MUST, "not-bearer": MUST, "two-spaces": MUST},
}
CASES = [
    (method, path, mode, state)
    for path, modes in [
        ("/v1_0/echo/public", {"GET": "public", "POST": "public"}),
        ("/v1_0/echo/optional", {"GET": "optional", "DELETE": "optional"}),
        ("/v1_0/echo/required", {"GET": "required", "PUT": "required"}),
        ("/v1_0/echo/mixed/1", {"GET": "optional", "HEAD": "optional", "POST": "required", "PATCH": "required"}),
    ]
    for method, mode in modes.items()
    for state in TOKENS
]


@pytest.mark.parametrize("method, path, mode, state", CASES)
async def test_auth_matrix(gateway: TestClient, upstream: TestServer, method: str, path: str, mode: str,
                           state: str) -> None:
    headers = {"X-User-Id": "1", "x_user_id": "2"}
    if TOKENS[state] is not None:
        headers["Authorization"] = TOKENS[state]  # type: ignore[assignment]
    resp = await gateway.request(method, path, headers=headers, data=b"payload" if method != "HEAD" else None)
    status, detail = EXPECT[mode][state]
    assert resp.status == status
    received = upstream.app[RECEIVED]
    if status != 200:
        if method != "HEAD":
            assert await resp.json() == {"message": detail}
        assert received == []  # refused before anything reached the upstream
        if status == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        return
    assert received == [(method, path)]
    if method == "HEAD":
        return
    seen = dict((k.lower(), v) for k, v in (await resp.json())["headers"])
    assert seen.get("x-user-id") == detail
    assert "x_user_id" not in seen and "authorization" not in seen


async def test_no_route_is_a_json_404(make_gateway: Any, upstream: TestServer) -> None:
    from tests.factories import make_config

    config = make_config(str(upstream.make_url("")).rstrip("/"),
                         routes=[{"path": "/v1_0/channels", "upstream": "news", "auth": "public"}])
    client = await make_gateway(config)
    resp = await client.get("/v1_0/nothing")
    assert resp.status == 404 and await resp.json() == {"message": "No route matches this path."}
    assert upstream.app[RECEIVED] == []


async def test_a_refused_request_body_is_not_read(gateway: TestClient, upstream: TestServer) -> None:
    """Headers announce 10 MB, none is sent: the 401 must come back without waiting for it."""
    import asyncio

    host, port = gateway.server.host, gateway.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1_0/echo/required HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 401")
    assert upstream.app[RECEIVED] == []


async def test_authorization_is_forwarded_only_where_the_route_says(gateway: TestClient) -> None:
    token = make_token(USER_ID)
    resp = await gateway.get("/v1_0/echo/with-auth", headers={"Authorization": f"Bearer {token}"})
    seen = dict((await resp.json())["headers"])
    assert seen["Authorization"] == f"Bearer {token}" and seen["X-User-Id"] == str(USER_ID)


async def test_real_login_token_reaches_the_profile_service(gateway: TestClient, login: Any) -> None:
    tokens = await login()
    resp = await gateway.get("/v1_0/user/profile", headers={"Authorization": f"Bearer {tokens['token']}"})
    assert resp.status == 200
    resp = await gateway.get("/v1_0/articles?channel_id=2", headers={"Authorization": f"Bearer {tokens['token']}"})
    body = await resp.json()
    assert body["personalised"] is True and [a["art_id"] for a in body["results"]] == [2, 3]
    resp = await gateway.get("/v1_0/articles?channel_id=2")
    assert (await resp.json())["personalised"] is False
