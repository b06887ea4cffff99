"""Odd and hostile input: always a clear JSON answer below 500, never a traceback."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.factories import MOBILE

pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough

AUTHORIZATIONS = ["Bearer " + "a" * 8000, "Bearer ÿÿÿ", "Bearer a.b.c", "Bearer eyJ.eyJ.sig",
                  "Basic", "Bearer", "bearer token", "Bearer a b", "Bearer ..", "Bearer e30.e30.", "Bearer  "]


@pytest.mark.parametrize("header", AUTHORIZATIONS)
@pytest.mark.parametrize("path", ["/v1_0/user/profile", "/v1_0/articles", "/v1_0/channels"])
async def test_odd_authorization_headers(gateway: TestClient, header: str, path: str) -> None:
    resp = await gateway.get(path, headers={"Authorization": header})
    assert resp.status < 500
    if resp.status >= 400:
        assert "message" in await resp.json()


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize("header", AUTHORIZATIONS)
async def test_odd_tokens_at_refresh_and_logout(gateway: TestClient, method: str, header: str) -> None:
    resp = await gateway.request(method, "/v1_0/authorizations", headers={"Authorization": header})
    assert resp.status in (401, 403)
    assert "message" in await resp.json()


@pytest.mark.parametrize("body", [
    b'{"mobile": null, "code": null}', b'{"mobile": 13911111111, "code": "123456"}', b'{"mobile": [], "code": {}}',
    b'{"mobile": "13911111111", "code": "\\u0661\\u0662\\u0663\\u0664\\u0665\\u0666"}', b'{"password": null}',
    b'{"account": "\\u0000", "password": "x"}', b'{"mobile": "13911111111", "password": 12345678}',
    b'[' * 5000, b'{"a": ' * 3000, "{\"mobile\": \"１３９１１１１１１１１\", \"code\": \"１２３４５６\"}".encode(),
])
async def test_odd_login_bodies(gateway: TestClient, body: bytes) -> None:
    resp = await gateway.post("/v1_0/authorizations", data=body, headers={"Content-Type": "application/json"})
    assert resp.status in (400, 403)
    assert "message" in await resp.json()


@pytest.mark.parametrize("mobile", ["%00", "%E4%B8%AD", "1" * 5000, "..", "+86%20139", "1391111111x"])
async def test_odd_mobiles_for_codes(gateway: TestClient, mobile: str) -> None:
    resp = await gateway.get(f"/v1_0/sms/codes/{mobile}")
    assert resp.status in (400, 401, 404)
    assert "message" in await resp.json()


async def test_many_requests_at_once_get_no_500(gateway: TestClient, login: Any) -> None:
    tokens = await login(MOBILE)
    calls = [gateway.get("/v1_0/user/profile", headers={"Authorization": f"Bearer {tokens['token']}"})
             for _ in range(50)]
    calls += [gateway.put("/v1_0/authorizations", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
              for _ in range(20)]
    statuses = {r.status for r in await asyncio.gather(*calls)}
    assert statuses <= {200, 201}
