"""SMS codes, login and refresh through the real HTTP interface, on both store kinds."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from gateway.stores.users import STATUS_DISABLED
from tests.factories import MOBILE, SECRET, bearer, make_token


async def test_sms_code_is_six_digits_and_answered_with_the_mobile(gateway: TestClient, sms_codes: Any) -> None:
    resp = await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    assert resp.status == 200
    assert await resp.json() == {"mobile": MOBILE}
    code = sms_codes(MOBILE)
    assert len(code) == 6 and code.isdigit()


async def test_sms_code_is_stored_at_the_seed_key_with_its_ttl(make_gateway: Any, real_redis_url: str,
                                                              sms_codes: Any, tmp_path: Any) -> None:
    import redis as sync_redis

    gateway = await make_gateway(redis_url=real_redis_url, database_url=f"sqlite:///{tmp_path}/u.db")
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    kv = sync_redis.Redis.from_url(real_redis_url, decode_responses=True)
    assert kv.get(f"app:code:{MOBILE}") == sms_codes(MOBILE)
    assert 295 <= kv.ttl(f"app:code:{MOBILE}") <= 300


@pytest.mark.parametrize("mobile", ["12911111111", "1391111111", "139111111111", "abc", "+8713911111111", "10911111111"])
async def test_sms_code_rejects_bad_mobiles(gateway: TestClient, mobile: str) -> None:
    resp = await gateway.get(f"/v1_0/sms/codes/{mobile}")
    assert resp.status == 400
    assert (await resp.json())["message"] == "mobile is not a valid mobile number."


async def test_the_code_never_appears_in_a_response(gateway: TestClient, sms_codes: Any) -> None:
    resp = await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    assert sms_codes(MOBILE) not in await resp.text()


async def test_login_registers_a_new_user_and_issues_both_tokens(gateway: TestClient, login: Any) -> None:
    body = await login()
    access = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    refresh = jwt.decode(body["refresh_token"], SECRET, algorithms=["HS256"])
    assert access["refresh"] is False and refresh["refresh"] is True
    user = await gateway.server.gateway.users.get_by_mobile(MOBILE)
    assert user is not None and user.user_id == access["user_id"] == refresh["user_id"]
    assert user.name == MOBILE and user.enabled


async def test_second_login_finds_the_same_user(gateway: TestClient, login: Any) -> None:
    first = jwt.decode((await login())["token"], SECRET, algorithms=["HS256"])
    second = jwt.decode((await login())["token"], SECRET, algorithms=["HS256"])
    assert first["user_id"] == second["user_id"]


async def test_a_code_is_consumed_once(gateway: TestClient, sms_codes: Any) -> None:
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    body = {"mobile": MOBILE, "code": sms_codes(MOBILE)}
    assert (await gateway.post("/v1_0/authorizations", json=body)).status == 201
    resp = await gateway.post("/v1_0/authorizations", json=body)
    assert resp.status == 400 and await resp.json() == {"message": "Invalid code."}


async def test_wrong_and_never_sent_codes(gateway: TestClient, sms_codes: Any) -> None:
    resp = await gateway.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": "123456"})
    assert resp.status == 400 and await resp.json() == {"message": "Invalid code."}
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    wrong = f"{(int(sms_codes(MOBILE)) + 1) % 1_000_000:06d}"
    resp = await gateway.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": wrong})
    assert resp.status == 400 and await resp.json() == {"message": "Invalid code."}


async def test_two_concurrent_logins_with_one_code_give_exactly_one_201(gateway: TestClient, sms_codes: Any) -> None:
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    body = {"mobile": MOBILE, "code": sms_codes(MOBILE)}
    statuses = sorted([r.status for r in await asyncio.gather(
        *(gateway.post("/v1_0/authorizations", json=body) for _ in range(2)))])
    assert statuses == [201, 400]


async def test_twenty_concurrent_first_logins_make_exactly_one_user(gateway: TestClient, sms_codes: Any) -> None:
    """Twenty clients race for one new mobile: one code wins, and the store creates one user."""
    mobile = "13822222222"
    await gateway.get(f"/v1_0/sms/codes/{mobile}")
    body = {"mobile": mobile, "code": sms_codes(mobile)}
    responses = await asyncio.gather(*(gateway.post("/v1_0/authorizations", json=body) for _ in range(20)))
    assert sorted(r.status for r in responses) == [201] + [400] * 19
    users = gateway.server.gateway.users
    ids = gateway.server.gateway.ids
    registered = await asyncio.gather(*(users.register(ids.next_id(), mobile) for _ in range(20)))
    assert len({u.user_id for u in registered}) == 1


@pytest.mark.parametrize(
    "body, message",
    [
        ({"code": "123456"}, "mobile is required."),
        ({"mobile": MOBILE}, "code is required."),
        ({"mobile": "12345", "code": "123456"}, "mobile must be a valid mobile number."),
        ({"mobile": MOBILE, "code": "12345"}, "code must be 6 digits."),
        ({"mobile": MOBILE, "code": 123456}, "code must be 6 digits."),
        ({"mobile": MOBILE, "code": "12345a"}, "code must be 6 digits."),
        ([MOBILE, "123456"], "Request body must be a JSON object."),
    ],
)
async def test_malformed_login_bodies_name_the_field(gateway: TestClient, body: Any, message: str) -> None:
    resp = await gateway.post("/v1_0/authorizations", json=body)
    assert resp.status == 400
    assert await resp.json() == {"message": message}


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"null", b"x" * 20000])
async def test_unparseable_login_bodies(gateway: TestClient, raw: bytes) -> None:
    resp = await gateway.post("/v1_0/authorizations", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert "message" in await resp.json()


async def test_a_disabled_user_cannot_log_in(gateway: TestClient, login: Any, sms_codes: Any) -> None:
    tokens = await login()
    user_id = jwt.decode(tokens["token"], SECRET, algorithms=["HS256"])["user_id"]
    await gateway.server.gateway.users.set_status(user_id, STATUS_DISABLED)
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    resp = await gateway.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)})
    assert resp.status == 403 and await resp.json() == {"message": "Invalid user."}


async def test_refresh_gives_a_new_access_token(gateway: TestClient, login: Any) -> None:
    tokens = await login()
    resp = await gateway.put("/v1_0/authorizations", headers=bearer(tokens["refresh_token"]))
    assert resp.status == 201
    body = await resp.json()
    assert set(body) == {"token"}
    payload = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert payload["refresh"] is False
    resp = await gateway.get("/v1_0/user/profile", headers=bearer(body["token"]))
    assert resp.status == 200 and (await resp.json())["user_id"] == str(payload["user_id"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        bearer(make_token(refresh=True, ttl=-5)),
        bearer(make_token(refresh=True, secret="x" * 70)),
        bearer(make_token(refresh=False)),
    ],
    ids=["missing", "malformed", "not-bearer", "expired", "bad-signature", "access-token"],
)
async def test_refresh_refuses_everything_but_a_live_refresh_token(gateway: TestClient, headers: dict[str, str]) -> None:
    resp = await gateway.put("/v1_0/authorizations", headers=headers)
    assert resp.status == 403
    assert await resp.json() == {"message": "Wrong refresh token."}


async def test_refresh_with_a_real_access_token_is_refused(gateway: TestClient, login: Any) -> None:
    tokens = await login()
    resp = await gateway.put("/v1_0/authorizations", headers=bearer(tokens["token"]))
    assert resp.status == 403 and await resp.json() == {"message": "Wrong refresh token."}


async def test_a_disabled_user_cannot_refresh(gateway: TestClient, login: Any) -> None:
    tokens = await login()
    user_id = jwt.decode(tokens["token"], SECRET, algorithms=["HS256"])["user_id"]
    await gateway.server.gateway.users.set_status(user_id, STATUS_DISABLED)
    resp = await gateway.put("/v1_0/authorizations", headers=bearer(tokens["refresh_token"]))
    assert resp.status == 403 and await resp.json() == {"message": "User denied."}


async def test_an_unknown_user_cannot_refresh(gateway: TestClient) -> None:
    resp = await gateway.put("/v1_0/authorizations", headers=bearer(make_token(user_id=987654321, refresh=True)))
    assert resp.status == 403 and await resp.json() == {"message": "User denied."}


async def test_other_methods_on_authorizations_are_not_proxied(gateway: TestClient) -> None:
    resp = await gateway.get("/v1_0/authorizations")
    assert resp.status == 405
    assert await resp.json() == {"message": "Method not allowed."}


async def test_tokens_and_codes_never_reach_the_log(
    gateway: TestClient, login: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = await login()
    await gateway.put("/v1_0/authorizations", headers=bearer(tokens["refresh_token"]))
    await gateway.get("/v1_0/user/profile", headers=bearer(tokens["token"]))
    outside_sender = [r.getMessage() for r in caplog.records if r.name != "gateway.sms"]
    for message in outside_sender:
        assert tokens["token"] not in message and tokens["refresh_token"] not in message


async def test_codes_expire_after_code_ttl(make_gateway: Any, sms_codes: Any) -> None:
    client = await make_gateway(sms={"code_ttl": 1})
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    await asyncio.sleep(2.1)  # past the one-second lifetime, on either store
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": sms_codes(MOBILE)})
    assert resp.status == 400 and await resp.json() == {"message": "Invalid code."}


async def test_a_new_code_replaces_the_old_one(gateway: TestClient, sms_codes: Any) -> None:
    old = None
    for _ in range(5):  # two draws can be equal by chance; five in a row cannot plausibly all be
        await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
        old = old or sms_codes(MOBILE)
        if sms_codes(MOBILE) != old:
            break
    new = sms_codes(MOBILE)
    assert new != old
    resp = await gateway.post("/v1_0/authorizations", json={"mobile": MOBILE, "code": old})
    assert resp.status == 400


async def test_registration_writes_one_basic_and_one_profile_row(gateway: TestClient,
                                                                 store_urls: dict[str, str]) -> None:
    await asyncio.gather(*(gateway.server.gateway.users.register(gateway.server.gateway.ids.next_id(), MOBILE)
                           for _ in range(20)))
    rows = await count_rows(store_urls["database_url"])
    assert rows == {"user_basic": 1, "user_profile": 1}
    user = await gateway.server.gateway.users.get_by_mobile(MOBILE)
    assert user is not None and user.name == MOBILE and user.enabled


async def test_a_login_writes_last_login_behind_it(gateway: TestClient, login: Any,
                                                  store_urls: dict[str, str]) -> None:
    await login()
    database = store_urls["database_url"]
    await run_sql(database, "UPDATE user_basic SET last_login = '2000-01-01 00:00:00'")
    await login()
    for _ in range(100):  # written within a second or so
        (last,), = (await run_sql(database, "SELECT last_login FROM user_basic")).values()
        if not str(last).startswith("2000"):
            break
        await asyncio.sleep(0.05)
    assert not str(last).startswith("2000"), last


async def count_rows(database_url: str) -> dict[str, int]:
    queries = {"user_basic": "SELECT COUNT(*) FROM user_basic WHERE last_login IS NOT NULL",
               "user_profile": "SELECT COUNT(*) FROM user_profile"}
    counts = {}
    for table, query in queries.items():
        counts[table] = int((await run_sql(database_url, query))[query][0])
    return counts


async def run_sql(database_url: str, *queries: str) -> dict[str, Any]:
    """Each query's first row (None for a statement), committed."""
    results: dict[str, Any] = {}
    if database_url.startswith("sqlite"):
        import aiosqlite

        from gateway.stores.users_sqlite import sqlite_path

        async with aiosqlite.connect(sqlite_path(database_url)) as db:
            for query in queries:
                async with db.execute(query) as cur:
                    results[query] = await cur.fetchone()
            await db.commit()
        return results
    import pymysql
    from yarl import URL

    url = URL(database_url)
    conn = pymysql.connect(host=url.host, port=url.port, user=url.user, database=url.path.lstrip("/"), autocommit=True)
    with conn.cursor() as cur:
        for query in queries:
            cur.execute(query)
            results[query] = cur.fetchone()
    conn.close()
    return results
