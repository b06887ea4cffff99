"""Logout, revocation (also across instances), disabled users, and refresh-token rotation."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.stores.users import STATUS_DISABLED
from tests.factories import MOBILE, bearer, make_config
from tests.processes import users_command, write_config
from tests.servers import GatewayServer, RedisProcess

WRONG_REFRESH = {"message": "Wrong refresh token."}
MUST_AUTHORIZE = {"message": "User must be authorized."}


async def profile(client: TestClient, token: str) -> Any:
    return await client.get("/v1_0/user/profile", headers=bearer(token))


async def refresh(client: TestClient, token: str) -> Any:
    return await client.put("/v1_0/authorizations", headers=bearer(token))


@pytest.mark.parametrize("which", ["refresh_token", "token"])
async def test_logout_ends_the_session(gateway: TestClient, login: Any, which: str) -> None:
    tokens = await login()
    other = await login()  # a second session of the same user is untouched
    refreshed = (await (await refresh(gateway, tokens["refresh_token"])).json())["token"]
    resp = await gateway.delete("/v1_0/authorizations", headers=bearer(tokens[which]))
    assert resp.status == 204 and await resp.read() == b""
    resp = await refresh(gateway, tokens["refresh_token"])
    assert resp.status == 403 and await resp.json() == WRONG_REFRESH
    for token in (tokens["token"], refreshed):
        resp = await profile(gateway, token)
        assert resp.status == 401 and await resp.json() == MUST_AUTHORIZE
    assert (await profile(gateway, other["token"])).status == 200
    assert (await gateway.delete("/v1_0/authorizations", headers=bearer(tokens[which]))).status == 204


async def test_logout_needs_a_token(gateway: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer junk"}):
        resp = await gateway.delete("/v1_0/authorizations", headers=headers)
        assert resp.status == 401 and await resp.json() == MUST_AUTHORIZE


async def test_users_revoke_ends_every_session(make_gateway: Any, real_redis_url: str, tmp_path: Path,
                                               sms_codes: Any, login: Any) -> None:
    stores = {"redis_url": real_redis_url, "database_url": f"sqlite:///{tmp_path}/u.db"}
    client = await make_gateway(**stores)
    sessions = [await login(client=client) for _ in range(2)]
    result = await asyncio.to_thread(users_command, write_config(tmp_path, stores), "revoke", MOBILE)
    assert result.returncode == 0, result.stderr
    for tokens in sessions:
        assert (await profile(client, tokens["token"])).status == 401
        assert (await refresh(client, tokens["refresh_token"])).status == 403
    fresh = await login(client=client)
    assert (await profile(client, fresh["token"])).status == 200


async def test_users_revoke_needs_a_shared_redis(tmp_path: Path, login: Any, store_urls: dict[str, str]) -> None:
    await login()
    result = await asyncio.to_thread(users_command, write_config(tmp_path, {**store_urls, "redis_url": "memory://"}),
                                     "revoke", MOBILE)
    assert result.returncode == 1 and "needs a shared Redis" in result.stderr


async def test_users_disable_and_enable(make_gateway: Any, store_urls: dict[str, str], tmp_path: Path,
                                        sms_codes: Any, login: Any) -> None:
    client = await make_gateway(revocation={"user_status_cache_ttl": 1})
    tokens = await login(client=client)
    assert (await profile(client, tokens["token"])).status == 200  # the status is now cached
    result = await asyncio.to_thread(users_command, write_config(tmp_path, store_urls), "disable", MOBILE)
    assert result.returncode == 0, result.stderr
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes()})
    assert resp.status == 403 and await resp.json() == {"message": "Invalid user."}
    resp = await refresh(client, tokens["refresh_token"])
    assert resp.status == 403 and await resp.json() == {"message": "User denied."}
    await asyncio.sleep(1.1)  # past user_status_cache_ttl (with Redis the change is also published at once)
    resp = await profile(client, tokens["token"])
    assert resp.status == 403 and await resp.json() == {"message": "User denied."}
    result = await asyncio.to_thread(users_command, write_config(tmp_path, store_urls), "enable", MOBILE)
    assert result.returncode == 0, result.stderr
    await asyncio.sleep(1.1)
    assert (await profile(client, tokens["token"])).status == 200


async def test_disabling_is_seen_at_once_with_redis(make_gateway: Any, real_redis_url: str, tmp_path: Path,
                                                    login: Any) -> None:
    stores = {"redis_url": real_redis_url, "database_url": f"sqlite:///{tmp_path}/u.db"}
    client = await make_gateway(**stores)  # default cache ttl: 60 s
    tokens = await login(client=client)
    assert (await profile(client, tokens["token"])).status == 200
    result = await asyncio.to_thread(users_command, write_config(tmp_path, stores), "disable", MOBILE)
    assert result.returncode == 0, result.stderr
    assert await eventually(lambda: profile(client, tokens["token"]), 403, within=5)


async def eventually(request: Any, status: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await request()).status == status:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_second_instance_sees_a_logout_within_five_seconds(
    aiohttp_client: Any, upstream: TestServer, real_redis_url: str, real_mysql_url: str, sms_codes: Any,
    login: Any,
) -> None:
    config = make_config(str(upstream.make_url("")).rstrip("/"), redis_url=real_redis_url,
                         database_url=real_mysql_url)
    one = await aiohttp_client(GatewayServer(config))
    two = await aiohttp_client(GatewayServer(config))
    tokens = await login(client=one)
    assert (await profile(two, tokens["token"])).status == 200  # verified and cached on the second instance
    resp = await refresh(two, tokens["refresh_token"])  # and refresh works on the other instance
    assert resp.status == 201
    assert (await one.delete("/v1_0/authorizations", headers=bearer(tokens["token"]))).status == 204
    started = time.monotonic()
    assert await eventually(lambda: profile(two, tokens["token"]), 401, within=5)
    assert time.monotonic() - started < 5
    assert (await refresh(two, tokens["refresh_token"])).status == 403


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("on_redis_down, expected", [("reject", 503), ("allow", 200)])
async def test_redis_down_rejects_authenticated_requests_by_default(
    make_gateway: Any, own_redis: RedisProcess, tmp_path: Path, login: Any, on_redis_down: str, expected: int,
) -> None:
    client = await make_gateway(redis_url=own_redis.url, database_url=f"sqlite:///{tmp_path}/u.db",
                                revocation={"on_redis_down": on_redis_down})
    tokens = await login(client=client)
    own_redis.stop()
    assert await eventually(lambda: profile(client, tokens["token"]), expected, within=5)
    assert (await client.get("/v1_0/channels")).status == 200  # public routes need no revocation list
    own_redis.start()
    assert await eventually(lambda: profile(client, tokens["token"]), 200, within=10)


# -- rotation ------------------------------------------------------------------------------


async def test_without_rotation_the_seed_contract_stands(gateway: TestClient, login: Any) -> None:
    tokens = await login()
    for _ in range(2):
        resp = await refresh(gateway, tokens["refresh_token"])
        assert resp.status == 201 and set(await resp.json()) == {"token"}


async def test_rotation_spends_the_old_refresh_token(make_gateway: Any, login: Any) -> None:
    client = await make_gateway(jwt={"rotate_refresh_tokens": True, "rotation_grace": "500ms"})
    first = await login(client=client)
    resp = await refresh(client, first["refresh_token"])
    assert resp.status == 201
    second = await resp.json()
    assert set(second) == {"token", "refresh_token"} and second["refresh_token"] != first["refresh_token"]
    third = await (await refresh(client, second["refresh_token"])).json()
    await asyncio.sleep(0.7)  # past the grace window
    resp = await refresh(client, first["refresh_token"])  # replay of a spent token
    assert resp.status == 403 and await resp.json() == WRONG_REFRESH
    assert (await refresh(client, third["refresh_token"])).status == 403  # the family's newest dies too
    assert (await profile(client, third["token"])).status == 401


async def test_concurrent_refreshes_inside_the_grace_window_share_one_successor(make_gateway: Any,
                                                                               login: Any) -> None:
    client = await make_gateway(jwt={"rotate_refresh_tokens": True})
    tokens = await login(client=client)
    responses = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(5)))
    assert [r.status for r in responses] == [201] * 5
    bodies = [await r.json() for r in responses]
    assert all(body == bodies[0] for body in bodies)
    assert (await refresh(client, bodies[0]["refresh_token"])).status == 201  # the family lives on
    await asyncio.sleep(0.1)
    again = await refresh(client, tokens["refresh_token"])  # still inside the 10 s grace
    assert again.status == 201 and await again.json() == bodies[0]


async def test_a_refresh_outside_the_grace_window_kills_the_family(make_gateway: Any, login: Any) -> None:
    client = await make_gateway(jwt={"rotate_refresh_tokens": True, "rotation_grace": 0})
    tokens = await login(client=client)
    successor = await (await refresh(client, tokens["refresh_token"])).json()
    await asyncio.sleep(0.05)
    assert (await refresh(client, tokens["refresh_token"])).status == 403
    assert (await refresh(client, successor["refresh_token"])).status == 403


async def test_disabled_users_are_denied_on_protected_routes(gateway: TestClient, login: Any) -> None:
    import jwt

    tokens = await login()
    user_id = jwt.decode(tokens["token"], options={"verify_signature": False})["user_id"]
    await gateway.server.gateway.users.set_status(user_id, STATUS_DISABLED)
    gateway.server.gateway.authenticator.status.forget(user_id)
    resp = await profile(gateway, tokens["token"])
    assert resp.status == 403 and await resp.json() == {"message": "User denied."}
    resp = await gateway.get("/v1_0/articles", headers=bearer(tokens["token"]))
    assert resp.status == 403


async def test_users_commands_take_an_id_or_an_account(gateway: TestClient, login: Any, store_urls: dict[str, str],
                                                       tmp_path: Path) -> None:
    import jwt

    from tests.processes import set_account

    user_id = jwt.decode((await login())["token"], options={"verify_signature": False})["user_id"]
    await set_account(store_urls["database_url"], user_id, "reader01")
    config = write_config(tmp_path, store_urls)
    users = gateway.server.gateway.users
    result = await asyncio.to_thread(users_command, config, "disable", str(user_id))
    assert result.returncode == 0, result.stderr
    assert not (await users.get_by_id(user_id)).enabled  # type: ignore[union-attr]
    result = await asyncio.to_thread(users_command, config, "enable", "reader01")
    assert result.returncode == 0, result.stderr
    assert (await users.get_by_id(user_id)).enabled  # type: ignore[union-attr]
    result = await asyncio.to_thread(users_command, config, "enable", "nobody-here")
    assert result.returncode == 1 and "no user 'nobody-here'" in result.stderr


async def test_two_instances_one_redis_one_database(aiohttp_client: Any, upstream: TestServer, real_redis_url: str,
                                                    real_mysql_url: str, login: Any) -> None:
    """Scale-out: log in on one instance, refresh on the other, and spend one limit shared by both."""
    config = make_config(str(upstream.make_url("")).rstrip("/"), redis_url=real_redis_url,
                         database_url=real_mysql_url, limits={"sms": [], "refresh": [{"rate": "3/minute",
                                                                                        "key": "user"}]})
    one = await aiohttp_client(GatewayServer(config))
    two = await aiohttp_client(GatewayServer(config))
    tokens = await login(client=one)
    statuses = [(await refresh(client, tokens["refresh_token"])).status for client in (two, one, two, one)]
    assert statuses == [201, 201, 201, 429]
    fresh = await (await refresh(two, tokens["refresh_token"])).json()
    assert fresh == {"message": "Too many requests."}
    assert (await profile(one, tokens["token"])).status == 200
    assert (await profile(two, tokens["token"])).status == 200
