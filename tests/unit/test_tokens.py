from __future__ import annotations

import time

import jwt
import pytest

from gateway.auth.tokens import InvalidToken, TokenService, bearer_token
from tests.factories import SECRET, jwt_config, make_token


def service(**kwargs: object) -> TokenService:
    return TokenService(jwt_config(**kwargs))


def test_issued_tokens_carry_the_seed_payload() -> None:
    tokens = service()
    pair = tokens.issue_pair(7)
    access = jwt.decode(pair.token, SECRET, algorithms=["HS256"])
    refresh = jwt.decode(pair.refresh_token, SECRET, algorithms=["HS256"])
    assert set(access) == {"user_id", "refresh", "exp", "iat", "jti", "sid"}
    assert access["sid"] == refresh["sid"]
    assert jwt.get_unverified_header(pair.token)["kid"] == "default"
    assert access["user_id"] == 7 and access["refresh"] is False
    assert refresh["refresh"] is True
    assert 7199 < access["exp"] - access["iat"] <= 7200
    assert 14 * 86400 - 1 < refresh["exp"] - refresh["iat"] <= 14 * 86400
    assert access["jti"] != refresh["jti"]


def test_lifetimes_come_from_config() -> None:
    tokens = service(access_ttl=60, refresh_ttl=120)
    payload = jwt.decode(tokens.issue(1, refresh=False, sid="s"), SECRET, algorithms=["HS256"])
    assert 59 < payload["exp"] - payload["iat"] <= 60


def test_verify_round_trip() -> None:
    tokens = service()
    claims = tokens.verify(tokens.issue(9, refresh=True, sid="s1"))
    assert claims.user_id == 9 and claims.refresh is True and claims.sid == "s1"


@pytest.mark.parametrize(
    "token",
    [
        make_token(ttl=-1),
        make_token(secret="another-secret-that-is-long-enough-for-every-hmac-algorithm-xxxxxxxx"),
        make_token(algorithm="HS512"),
        make_token(drop=("exp",)),
        make_token(exp="9999999999"),
        make_token(exp=True),
        make_token(user_id="42"),
        make_token(user_id=0),
        make_token(user_id=-3),
        make_token(user_id=True),
        make_token(user_id=4.2),
        make_token(drop=("user_id",)),
        make_token(refresh="false"),
        make_token(refresh=0),
        make_token(drop=("refresh",)),
        "not-a-jwt",
        "",
    ],
)
def test_invalid_tokens(token: str) -> None:
    with pytest.raises(InvalidToken):
        service().verify(token)


def test_alg_none_is_rejected() -> None:
    payload = {"user_id": 1, "refresh": False, "exp": int(time.time()) + 60}
    token = jwt.encode(payload, None, algorithm="none")
    with pytest.raises(InvalidToken):
        service().verify(token)


def test_cache_never_serves_past_exp() -> None:
    now = [1_000_000.0]
    tokens = TokenService(jwt_config(access_ttl=10, refresh_ttl=20), clock=lambda: now[0])
    token = tokens.issue(5, refresh=False, sid="s")
    assert tokens.verify(token).user_id == 5
    now[0] += 9
    assert tokens.verify(token).user_id == 5
    now[0] += 1
    with pytest.raises(InvalidToken):
        tokens.verify(token)


def test_cache_is_bounded() -> None:
    tokens = service(cache_size=3)
    issued = [tokens.issue(i, refresh=False, sid="s") for i in range(1, 8)]
    for token in issued:
        tokens.verify(token)
    assert len(tokens._cache) <= 3
    assert tokens.verify(issued[0]).user_id == 1  # evicted entries are verified again, not refused


def test_a_full_cache_drops_its_oldest_tenth_at_once() -> None:
    """Not one entry per token verified: the scan of the whole cache is paid once per tenth of it."""
    tokens = service(cache_size=100)
    issued = [tokens.issue(i, refresh=False, sid="s") for i in range(1, 102)]
    for token in issued:
        tokens.verify(token)
    assert len(tokens._cache) == 91
    assert issued[9] not in tokens._cache and issued[10] in tokens._cache and issued[100] in tokens._cache


@pytest.mark.parametrize(
    "header, token",
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("Bearer  abc", None),
        ("bearer abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearer abc def", None),
        (None, None),
    ],
)
def test_bearer_header_format(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_a_token_verified_the_instant_it_is_issued_is_not_from_the_future() -> None:
    tokens = TokenService(jwt_config(), clock=lambda: 1_900_000_000.9996)
    assert tokens.verify(tokens.issue(1, refresh=False, sid="s")).iat <= 1_900_000_000.9996


def test_expired_entries_leave_the_cache_without_being_asked_for_again() -> None:
    """README, jwt.cache_size: each entry is dropped at its exp, not only when its token comes back or the cache
    is full (found by bench.soak: the gateway's RSS grew with every token verified once and never again)."""
    now = [1_000_000.0]
    tokens = TokenService(jwt_config(access_ttl=8, refresh_ttl=20), clock=lambda: now[0])  # swept every 2 s
    for user_id in range(1, 51):
        tokens.verify(tokens.issue(user_id, refresh=False, sid="s"))
    now[0] += 9  # all 50 expired, none looked up again
    tokens.verify(tokens.issue(99, refresh=False, sid="s"))
    assert tokens.cache_size == 1
