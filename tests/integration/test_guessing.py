"""Guessing one-time codes and passwords: bounded attempts, identical answers."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient

from gateway.stores.users import STATUS_DISABLED
from tests.factories import MOBILE, config_dict
from tests.processes import set_account, users_command

INVALID_CODE = {"message": "Invalid code."}
INVALID_PASSWORD = {"message": "Invalid account or password."}


def wrong(code: str, n: int = 1) -> str:
    return f"{(int(code) + n) % 1_000_000:06d}"


async def attempt(client: TestClient, code: str, mobile: str = MOBILE) -> Any:
    return await client.post("/v1_0/authorizations", json={"mobile": mobile, "code": code})


async def test_the_fifth_wrong_guess_kills_the_code(gateway: TestClient, sms_codes: Any) -> None:
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    code = sms_codes()
    for n in range(1, 6):
        resp = await attempt(gateway, wrong(code, n))
        assert resp.status == 400 and await resp.json() == INVALID_CODE
    resp = await attempt(gateway, code)
    assert resp.status == 400 and await resp.json() == INVALID_CODE


async def test_four_wrong_guesses_leave_the_right_one_working(gateway: TestClient, sms_codes: Any) -> None:
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    code = sms_codes()
    for n in range(1, 5):
        assert (await attempt(gateway, wrong(code, n))).status == 400
    assert (await attempt(gateway, code)).status == 201


async def test_attempts_per_code_are_configurable(make_gateway: Any, sms_codes: Any) -> None:
    client = await make_gateway(sms={"max_attempts": 1})
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    assert (await attempt(client, wrong(sms_codes()))).status == 400
    assert (await attempt(client, sms_codes())).status == 400


async def test_a_new_code_starts_a_new_count(gateway: TestClient, sms_codes: Any) -> None:
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    for n in range(1, 6):
        await attempt(gateway, wrong(sms_codes(), n))
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    assert (await attempt(gateway, sms_codes())).status == 201


async def test_a_hundred_failures_a_day_then_429(gateway: TestClient, sms_codes: Any) -> None:
    """NIST SP 800-63B §5.2.2: the 101st attempt is refused before it is checked, even with the right code."""
    for _ in range(100):
        assert (await attempt(gateway, "000000")).status == 400
    await gateway.get(f"/v1_0/sms/codes/{MOBILE}")
    resp = await attempt(gateway, sms_codes())
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 3600
    assert (await attempt(gateway, "000000", mobile="13922222222")).status == 400  # other mobiles unaffected


async def test_registered_and_unregistered_mobiles_get_the_same_answers(gateway: TestClient, login: Any) -> None:
    await login()
    answers = []
    for mobile in (MOBILE, "13922222222"):
        resp = await attempt(gateway, "000000", mobile)
        answers.append((resp.status, await resp.json(), sorted(resp.headers.keys())))
    assert answers[0] == answers[1]


async def with_password(gateway: TestClient, login: Any, store_urls: dict[str, str], tmp_path: Path,
                        password: str = "correct horse battery") -> int:
    """Registers MOBILE by SMS login, then sets a password through the real command line."""
    import jwt

    user_id = int(jwt.decode((await login())["token"], options={"verify_signature": False})["user_id"])
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(config_dict(**store_urls)))
    result = await asyncio.to_thread(users_command, config, "set-password", MOBILE, stdin=password + "\n")
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    return user_id


async def test_password_login_by_mobile_and_by_account(gateway: TestClient, login: Any, store_urls: dict[str, str],
                                                       tmp_path: Path) -> None:
    user_id = await with_password(gateway, login, store_urls, tmp_path)
    resp = await gateway.post("/v1_0/authorizations", json={"mobile": MOBILE, "password": "correct horse battery"})
    assert resp.status == 201 and set(await resp.json()) == {"token", "refresh_token"}
    resp = await gateway.post("/v1_0/authorizations", json={"account": MOBILE, "password": "correct horse battery"})
    assert resp.status == 201
    await set_account(store_urls["database_url"], user_id, "reader01")
    resp = await gateway.post("/v1_0/authorizations", json={"account": "reader01", "password": "correct horse battery"})
    assert resp.status == 201


async def test_unknown_account_and_wrong_password_look_the_same(gateway: TestClient, login: Any,
                                                                store_urls: dict[str, str], tmp_path: Path) -> None:
    await with_password(gateway, login, store_urls, tmp_path)
    answers = []
    for body in ({"mobile": MOBILE, "password": "wrong password!"},
                 {"mobile": "13922222222", "password": "wrong password!"},
                 {"account": "nobody", "password": "wrong password!"}):
        resp = await gateway.post("/v1_0/authorizations", json=body)
        answers.append((resp.status, await resp.json()))
    assert answers == [(400, INVALID_PASSWORD)] * 3


async def test_password_failures_count_against_the_daily_limit(make_gateway: Any, sms_codes: Any,
                                                               store_urls: dict[str, str], tmp_path: Path) -> None:
    client = await make_gateway(limits={"sms": [], "login_failures": "3/day"})

    async def login(mobile: str = MOBILE, client: TestClient = client) -> dict[str, str]:
        await client.get(f"/v1_0/sms/codes/{mobile}")
        return dict(await (await attempt(client, sms_codes(mobile), mobile)).json())

    await with_password(client, login, store_urls, tmp_path)
    for _ in range(3):
        assert (await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "password": "nope-nope"})).status == 400
    resp = await client.post("/v1_0/authorizations", json={"mobile": MOBILE, "password": "correct horse battery"})
    assert resp.status == 429


async def test_a_disabled_user_cannot_log_in_with_a_password(gateway: TestClient, login: Any,
                                                             store_urls: dict[str, str], tmp_path: Path) -> None:
    user_id = await with_password(gateway, login, store_urls, tmp_path)
    await gateway.server.gateway.users.set_status(user_id, STATUS_DISABLED)
    resp = await gateway.post("/v1_0/authorizations", json={"mobile": MOBILE, "password": "correct horse battery"})
    assert resp.status == 403 and await resp.json() == {"message": "Invalid user."}


async def test_malformed_password_logins(gateway: TestClient) -> None:
    cases = [
        ({"password": "x" * 10}, "Give either account or mobile with password."),
        ({"account": "a", "mobile": MOBILE, "password": "x" * 10}, "Give either account or mobile with password."),
        ({"account": "a", "password": ""}, "password must be a non-empty string of at most 1024 bytes."),
        ({"account": "a", "password": "x" * 2000}, "password must be a non-empty string of at most 1024 bytes."),
        ({"account": 5, "password": "x" * 10}, "account must be a non-empty string of at most 64 bytes."),
    ]
    for body, message in cases:
        resp = await gateway.post("/v1_0/authorizations", json=body)
        assert (resp.status, await resp.json()) == (400, {"message": message})


async def test_set_password_refuses_unknown_users(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(config_dict(database_url=f"sqlite:///{tmp_path}/u.db")))
    result = await asyncio.to_thread(users_command, config, "set-password", "13999999999", stdin="long enough pw\n")
    assert result.returncode == 1 and "no user '13999999999'" in result.stderr


async def test_set_password_refuses_a_short_password(gateway: TestClient, login: Any, store_urls: dict[str, str],
                                                     tmp_path: Path) -> None:
    await login()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(config_dict(**store_urls)))
    result = await asyncio.to_thread(users_command, config, "set-password", MOBILE, stdin="short\n")
    assert result.returncode == 1 and "a password has 8 to 1024 bytes" in result.stderr


async def test_concurrent_wrong_codes_cannot_outrun_the_failure_limit(make_gateway: Any, sms_codes: Any) -> None:
    """The failure count is read and written in the same step as the code check: of ten guesses sent at
    once, the limit's three are judged and the rest refused, not all ten judged before any is counted."""
    client = await make_gateway(limits={"sms": [], "login_failures": "3/day"}, sms={"max_attempts": 20})
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    code = sms_codes()
    answers = await asyncio.gather(*(attempt(client, wrong(code, n)) for n in range(1, 11)))
    assert sorted(resp.status for resp in answers) == [400] * 3 + [429] * 7
    refused = await (await attempt(client, code)).json()  # the right code, too late
    assert refused["message"] == "Too many requests."


async def test_the_right_code_does_not_count_as_a_failure(make_gateway: Any, sms_codes: Any) -> None:
    client = await make_gateway(limits={"sms": [], "login_failures": "2/day"})
    for _ in range(4):
        await client.get(f"/v1_0/sms/codes/{MOBILE}")
        assert (await attempt(client, sms_codes())).status == 201
    await client.get(f"/v1_0/sms/codes/{MOBILE}")
    assert (await attempt(client, wrong(sms_codes()))).status == 400
    assert (await attempt(client, sms_codes())).status == 201
