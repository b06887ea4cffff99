"""Tokens made by the toutiao backend before the switch: accepted, and each in a session of its own.

Every token here is made exactly as the seed's `generate_jwt` makes it (tests/factories.py: seed_pair),
for users who exist in `user_basic`, and used through the gateway's real HTTP interface.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from tests.factories import bearer, payload_of, seed_pair
from tests.processes import set_account, users_command, write_config

A, B = "13911111111", "13922222222"
PROFILE = "/v1_0/user/profile"
AUTH = "/v1_0/authorizations"

Check = Callable[[str], Awaitable[int]]


class Holder:
    """One user's tokens: a gateway session, two devices still on backend tokens, and what refreshing made."""

    def __init__(self, user_id: int, new: dict[str, str]) -> None:
        self.user_id = user_id
        self.tokens = {
            "new access": new["token"], "new refresh": new["refresh_token"],
            **_named("legacy", seed_pair(user_id)),
            **_named("other device legacy", seed_pair(user_id, age=timedelta(minutes=30))),
        }

    async def mint(self, client: TestClient) -> None:
        """Refresh each device's legacy refresh token at the gateway once: `minted` and `other device minted`."""
        for device in ("legacy", "other device legacy"):
            resp = await client.put(AUTH, headers=bearer(self.tokens[f"{device} refresh"]))
            assert resp.status == 201, await resp.text()
            self.tokens[device.replace("legacy", "minted") + " access"] = (await resp.json())["token"]


def _named(prefix: str, pair: dict[str, str]) -> dict[str, str]:
    return {f"{prefix} access": pair["token"], f"{prefix} refresh": pair["refresh_token"]}


@pytest.fixture
def holders(login: Any) -> Callable[..., Awaitable[dict[str, Holder]]]:
    """Users A and B, registered through the gateway (as the backend's users are, in user_basic)."""

    async def make(client: TestClient) -> dict[str, Holder]:
        found = {}
        for name, mobile in (("A", A), ("B", B)):
            new = await login(mobile, client=client)
            found[name] = Holder(payload_of(new["token"])["user_id"], new)
        return found

    return make


async def status_of(client: TestClient, name: str, token: str) -> int:
    """An access token on a protected route, a refresh token at the refresh endpoint."""
    if name.endswith("refresh"):
        return (await client.put(AUTH, headers=bearer(token))).status
    return (await client.get(PROFILE, headers=bearer(token))).status


def alive(name: str) -> int:
    return 201 if name.endswith("refresh") else 200


def dead(name: str) -> int:
    return 403 if name.endswith("refresh") else 401


@pytest.mark.parametrize("token, method, path, status, body", [
    ("legacy access", "GET", PROFILE, 200, None),
    ("legacy refresh", "PUT", AUTH, 201, None),
    ("legacy refresh", "GET", PROFILE, 403, {"message": "Do not use refresh token."}),
    ("legacy access", "PUT", AUTH, 403, {"message": "Wrong refresh token."}),
    ("legacy access", "DELETE", AUTH, 204, None),
    ("legacy refresh", "DELETE", AUTH, 204, None),
])
async def test_legacy_tokens_keep_working_across_the_switch(gateway: TestClient, holders: Any, token: str,
                                                            method: str, path: str, status: int,
                                                            body: dict[str, str] | None) -> None:
    a = (await holders(gateway))["A"]
    resp = await gateway.request(method, path, headers=bearer(a.tokens[token]))
    assert resp.status == status, await resp.text()
    if body is not None:
        assert await resp.json() == body
    elif status == 200:
        assert await resp.json() == {"user_id": str(a.user_id), "name": f"user {a.user_id}"}  # X-User-Id sent
    elif status == 201:
        minted = payload_of((await resp.json())["token"])
        assert minted["user_id"] == a.user_id and minted["sid"] and minted["jti"]


LOGOUT_WITH = ["legacy refresh", "legacy access", "minted access", "new access", "new refresh"]


@pytest.mark.parametrize("logout_with", LOGOUT_WITH)
async def test_one_users_logout_leaves_every_other_user_working(gateway: TestClient, holders: Any,
                                                                logout_with: str) -> None:
    users = await holders(gateway)
    for holder in users.values():
        await holder.mint(gateway)
    a, b = users["A"], users["B"]
    resp = await gateway.delete(AUTH, headers=bearer(a.tokens[logout_with]))
    assert resp.status == 204
    assert await status_of(gateway, logout_with, a.tokens[logout_with]) == dead(logout_with)
    statuses = {name: await status_of(gateway, name, token) for name, token in b.tokens.items()}
    assert statuses == {name: alive(name) for name in b.tokens}


# What a logout with each of A's tokens ends among A's own tokens. A backend access token cannot be traced
# to its refresh token, so ending a pre-switch session ends A's pre-switch access tokens too (a device that
# loses one refreshes with its own refresh token), and a logout with such an access token ends everything
# A holds from before the switch. Sessions begun at the gateway are untouched either way.
ENDS = {
    "legacy refresh": {"legacy access", "legacy refresh", "minted access", "other device legacy access"},
    "minted access": {"legacy access", "legacy refresh", "minted access", "other device legacy access"},
    "legacy access": {"legacy access", "legacy refresh", "minted access", "other device legacy access",
                      "other device legacy refresh", "other device minted access"},
    "new access": {"new access", "new refresh"},
    "new refresh": {"new access", "new refresh"},
}


@pytest.mark.parametrize("logout_with", LOGOUT_WITH)
async def test_what_a_logout_ends_of_the_same_users_tokens(gateway: TestClient, holders: Any,
                                                           logout_with: str) -> None:
    a = (await holders(gateway))["A"]
    await a.mint(gateway)
    assert (await gateway.delete(AUTH, headers=bearer(a.tokens[logout_with]))).status == 204
    accesses = {name: token for name, token in a.tokens.items() if name.endswith("access")}
    refreshes = {name: token for name, token in a.tokens.items() if name.endswith("refresh")}
    statuses = {}
    for name, token in [*accesses.items(), *refreshes.items()]:  # refreshing last: it mints, changing nothing
        statuses[name] = await status_of(gateway, name, token)
    assert statuses == {name: dead(name) if name in ENDS[logout_with] else alive(name) for name in a.tokens}


async def test_a_logout_with_a_minted_token_ends_it(gateway: TestClient, holders: Any) -> None:
    a = (await holders(gateway))["A"]
    resp = await gateway.put(AUTH, headers=bearer(a.tokens["legacy refresh"]))
    minted = (await resp.json())["token"]
    assert payload_of(minted)["sid"]
    assert (await gateway.get(PROFILE, headers=bearer(minted))).status == 200
    assert (await gateway.delete(AUTH, headers=bearer(minted))).status == 204
    resp = await gateway.get(PROFILE, headers=bearer(minted))
    assert resp.status == 401 and await resp.json() == {"message": "User must be authorized."}
    resp = await gateway.put(AUTH, headers=bearer(a.tokens["legacy refresh"]))
    assert resp.status == 403 and await resp.json() == {"message": "Wrong refresh token."}


@pytest.mark.stores("real")
async def test_users_revoke_ends_legacy_tokens(gateway: TestClient, holders: Any, store_urls: dict[str, str],
                                               tmp_path: Path) -> None:
    users = await holders(gateway)
    for holder in users.values():
        await holder.mint(gateway)
    result = await asyncio.to_thread(users_command, write_config(tmp_path, store_urls), "revoke", A)
    assert result.returncode == 0, result.stderr
    a, b = users["A"], users["B"]
    for name, token in a.tokens.items():
        assert await status_of(gateway, name, token) == dead(name), name
    for name, token in b.tokens.items():
        assert await status_of(gateway, name, token) == alive(name), name


@pytest.mark.parametrize("token, method, path, status, message", [
    ("legacy access", "GET", PROFILE, 401, "User must be authorized."),
    ("legacy access", "GET", "/v1_0/articles", 401, "Token has some errors."),
    ("legacy refresh", "PUT", AUTH, 403, "Wrong refresh token."),
    ("legacy refresh", "DELETE", AUTH, 401, "User must be authorized."),
    ("legacy access", "DELETE", AUTH, 401, "User must be authorized."),
])
async def test_accept_legacy_tokens_off_refuses_them(make_gateway: Any, holders: Any, token: str, method: str,
                                                     path: str, status: int, message: str) -> None:
    client = await make_gateway(jwt={"accept_legacy_tokens": False})
    a = (await holders(client))["A"]
    resp = await client.request(method, path, headers=bearer(a.tokens[token]))
    assert resp.status == status and await resp.json() == {"message": message}
    assert (await client.get(PROFILE, headers=bearer(a.tokens["new access"]))).status == 200


async def test_rotation_gives_each_legacy_refresh_token_its_own_line(make_gateway: Any, holders: Any) -> None:
    client = await make_gateway(jwt={"rotate_refresh_tokens": True, "rotation_grace": 0})
    users = await holders(client)
    successors = {}
    for name, holder in users.items():  # one user's refresh must not spend another's token
        resp = await client.put(AUTH, headers=bearer(holder.tokens["legacy refresh"]))
        assert resp.status == 201, await resp.text()
        successors[name] = await resp.json()
        assert payload_of(successors[name]["refresh_token"])["sid"]
    await asyncio.sleep(0.05)
    resp = await client.put(AUTH, headers=bearer(users["A"].tokens["legacy refresh"]))  # a replay: A's line ends
    assert resp.status == 403 and await resp.json() == {"message": "Wrong refresh token."}
    assert await status_of(client, "refresh", successors["A"]["refresh_token"]) == 403
    assert await status_of(client, "access", successors["A"]["token"]) == 401
    assert await status_of(client, "access", successors["B"]["token"]) == 200
    assert await status_of(client, "refresh", successors["B"]["refresh_token"]) == 201


@pytest.mark.parametrize("rotate", [False, True])
async def test_every_issued_token_names_its_session(make_gateway: Any, holders: Any, store_urls: dict[str, str],
                                                    rotate: bool) -> None:
    client = await make_gateway(jwt={"rotate_refresh_tokens": rotate})
    a = (await holders(client))["A"]
    issued = [a.tokens["new access"], a.tokens["new refresh"]]
    await set_account(store_urls["database_url"], a.user_id, "reader01")
    await a_password(client, store_urls, a.user_id)
    resp = await client.post(AUTH, json={"account": "reader01", "password": "correct horse battery"})
    assert resp.status == 201
    issued += (await resp.json()).values()
    for refresh_token in (a.tokens["new refresh"], a.tokens["legacy refresh"]):
        resp = await client.put(AUTH, headers=bearer(refresh_token))
        assert resp.status == 201
        issued += (await resp.json()).values()
    assert len(issued) == (8 if rotate else 6)
    for token in issued:
        payload = payload_of(token)
        assert isinstance(payload["sid"], str) and payload["sid"], payload
        assert isinstance(payload["jti"], str) and payload["jti"], payload


async def a_password(client: TestClient, store_urls: dict[str, str], user_id: int) -> None:
    from gateway.auth.passwords import Passwords
    from gateway.stores.databases import open_user_store

    users = await open_user_store(store_urls["database_url"], 1)
    try:
        await users.set_password(user_id, Passwords().hash("correct horse battery"))
    finally:
        await users.close()


@pytest.mark.stores("real")
async def test_a_code_the_backend_wrote_logs_in_at_the_gateway(gateway: TestClient, store_urls: dict[str, str]) -> None:
    import redis

    kv = redis.Redis.from_url(store_urls["redis_url"])
    kv.execute_command("SETEX", f"app:code:{A}", 300, "246810")  # as the backend stores a code it sent
    resp = await gateway.post(AUTH, json={"mobile": A, "code": "246810"})
    assert resp.status == 201, await resp.text()
    assert kv.exists(f"app:code:{A}") == 0  # spent, as the backend spends it
    resp = await gateway.post(AUTH, json={"mobile": A, "code": "246810"})
    assert resp.status == 400 and await resp.json() == {"message": "Invalid code."}
