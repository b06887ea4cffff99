"""Rate limits through the real HTTP interface, on both store kinds, and shared between instances."""
from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.config import parse_config
from tests.factories import MOBILE, bearer, config_dict, make_config
from upstream_stub.app import RECEIVED

TOO_MANY = {"message": "Too many requests."}


async def assert_limited(resp: Any) -> None:
    assert resp.status == 429
    assert await resp.json() == TOO_MANY
    assert int(resp.headers["Retry-After"]) >= 1


def gateway_config(upstream: TestServer, store_urls: dict[str, str], **sections: Any) -> Any:
    raw = config_dict(str(upstream.make_url("")).rstrip("/"), **store_urls, **sections)
    if "limits" not in sections:
        del raw["limits"]  # the shipped defaults
    return parse_config(raw, env={})


async def test_default_sms_limit_is_one_per_mobile_per_minute(make_gateway: Any, upstream: TestServer,
                                                             store_urls: dict[str, str]) -> None:
    client = await make_gateway(gateway_config(upstream, store_urls))
    assert (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status == 200
    await assert_limited(await client.get(f"/v1_0/sms/codes/{MOBILE}"))
    assert (await client.get("/v1_0/sms/codes/13922222222")).status == 200


@pytest.mark.parametrize("variant", ["+86 139 1111 1111", "8613911111111", "１３９１１１１１１１１", "139-1111-1111"])
async def test_mobile_variants_share_one_limit(make_gateway: Any, upstream: TestServer, store_urls: dict[str, str],
                                               variant: str) -> None:
    client = await make_gateway(gateway_config(upstream, store_urls))
    assert (await client.get(f"/v1_0/sms/codes/{MOBILE}")).status == 200
    await assert_limited(await client.get(f"/v1_0/sms/codes/{variant}"))


async def test_sms_limit_per_ip_hits_exactly_at_the_count(make_gateway: Any) -> None:
    client = await make_gateway(limits={"sms": [{"rate": "3/hour", "key": "ip"}]})
    for i in range(3):
        assert (await client.get(f"/v1_0/sms/codes/1390000000{i}")).status == 200
    await assert_limited(await client.get("/v1_0/sms/codes/13900000009"))


async def test_forged_forwarded_for_from_an_untrusted_peer_changes_no_key(make_gateway: Any) -> None:
    client = await make_gateway(limits={"sms": [{"rate": "1/hour", "key": "ip"}]})
    assert (await client.get("/v1_0/sms/codes/13900000001", headers={"X-Forwarded-For": "203.0.113.1"})).status == 200
    await assert_limited(await client.get("/v1_0/sms/codes/13900000002", headers={"X-Forwarded-For": "203.0.113.2"}))


async def test_a_trusted_proxy_forwarded_for_names_the_client(make_gateway: Any) -> None:
    client = await make_gateway(limits={"sms": [{"rate": "1/hour", "key": "ip"}]},
                                server={"trusted_proxies": ["127.0.0.0/8"]})
    for n, ip in enumerate(["203.0.113.1", "203.0.113.2"]):
        headers = {"X-Forwarded-For": f"198.51.100.7, {ip}"}
        assert (await client.get(f"/v1_0/sms/codes/1390000000{n}", headers=headers)).status == 200
    await assert_limited(await client.get("/v1_0/sms/codes/13900000009", headers={"X-Forwarded-For": "203.0.113.1"}))


async def test_login_limit_by_ip(make_gateway: Any) -> None:
    client = await make_gateway(limits={"sms": [], "login": [{"rate": "2/minute", "key": "ip"}]})
    for _ in range(2):
        resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": "000000"})
        assert resp.status == 400
    await assert_limited(await client.post("/v1_0/authorizations", json={"mobile": "13922222222", "code": "000000"}))


async def test_refresh_limit_by_user(make_gateway: Any, sms_codes: Any) -> None:
    client = await make_gateway(limits={"sms": [], "refresh": [{"rate": "2/minute", "key": "user"}]})
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    tokens = await (await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes()})).json()
    for _ in range(2):
        resp = await client.put("/v1_0/authorizations", headers=bearer(tokens["refresh_token"]))
        assert resp.status == 201, await resp.text()
    await assert_limited(await client.put("/v1_0/authorizations", headers=bearer(tokens["refresh_token"])))


async def test_route_limits_by_user_and_by_ip(make_gateway: Any, upstream: TestServer, login: Any) -> None:
    routes = [{"path": "/v1_0/echo/public", "upstream": "news", "auth": "public",
               "limits": [{"rate": "2/minute", "key": "ip"}]},
              {"path": "/v1_0/user", "upstream": "news", "auth": "required",
               "limits": [{"rate": "2/minute", "key": "user"}]}]
    client = await make_gateway(routes=routes)
    for _ in range(2):
        assert (await client.get("/v1_0/echo/public")).status == 200
    await assert_limited(await client.get("/v1_0/echo/public"))
    first, second = await login(client=client), await login("13922222222", client=client)
    for _ in range(2):
        assert (await client.get("/v1_0/user/profile", headers=bearer(first["token"]))).status == 200
    await assert_limited(await client.get("/v1_0/user/profile", headers=bearer(first["token"])))
    assert (await client.get("/v1_0/user/profile", headers=bearer(second["token"]))).status == 200
    assert len(upstream.app[RECEIVED]) == 5  # the refused ones never reached it


async def test_two_instances_share_one_limit(aiohttp_client: Any, upstream: TestServer, real_redis_url: str,
                                             tmp_path: Any) -> None:
    from tests.servers import GatewayServer

    config = make_config(str(upstream.make_url("")).rstrip("/"), redis_url=real_redis_url,
                         database_url=f"sqlite:///{tmp_path}/gw.db", limits={"sms": [{"rate": "2/hour", "key": "ip"}]})
    one = await aiohttp_client(GatewayServer(config))
    two = await aiohttp_client(GatewayServer(config))
    assert (await one.get("/v1_0/sms/codes/13900000001")).status == 200
    assert (await two.get("/v1_0/sms/codes/13900000002")).status == 200
    await assert_limited(await one.get("/v1_0/sms/codes/13900000003"))
    await assert_limited(await two.get("/v1_0/sms/codes/13900000004"))
