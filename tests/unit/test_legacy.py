"""Session keys of tokens made by the toutiao backend (no jti, no sid): pure, no I/O."""
from __future__ import annotations

import asyncio

import pytest

from gateway.auth import legacy
from gateway.auth.tokens import InvalidToken, TokenService
from gateway.stores.revocation import MemoryRevocations
from tests.factories import jwt_config, seed_pair


def test_each_legacy_refresh_token_is_its_own_session() -> None:
    tokens = TokenService(jwt_config())
    one, two, other_user = seed_pair(7), seed_pair(7, refresh_days=13), seed_pair(8)
    claims = [tokens.verify(pair["refresh_token"]) for pair in (one, two, other_user)]
    assert len({c.sid for c in claims}) == 3 and len({c.jti for c in claims}) == 3
    assert all(c.sid and c.jti for c in claims)
    assert [c.family for c in claims] == ["legacy:7", "legacy:7", "legacy:8"]
    again = TokenService(jwt_config()).verify(one["refresh_token"])  # another instance derives the same keys
    assert (again.sid, again.jti) == (claims[0].sid, claims[0].jti)


def test_legacy_access_tokens_share_their_users_access_session() -> None:
    tokens = TokenService(jwt_config())
    a, b = tokens.verify(seed_pair(7)["token"]), tokens.verify(seed_pair(7, access_hours=1)["token"])
    assert a.sid == b.sid == "legacy:7:access" and a.jti != b.jti
    assert tokens.verify(seed_pair(8)["token"]).sid == "legacy:8:access"


def test_minted_tokens_inherit_the_legacy_line() -> None:
    tokens = TokenService(jwt_config())
    parent = tokens.verify(seed_pair(7)["refresh_token"])
    child = tokens.verify(tokens.issue(7, refresh=False, sid=parent.sid))
    assert child.sid == parent.sid and child.family == "legacy:7" and child.jti != parent.jti


@pytest.mark.parametrize("sid, ended", [
    ("abc", ("abc",)),
    ("legacy:7:access", ("legacy:7",)),
    ("legacy:7:Zm9v", ("legacy:7:Zm9v", "legacy:7:access")),
])
def test_what_ending_a_session_revokes(sid: str, ended: tuple[str, ...]) -> None:
    assert legacy.sessions_ended_by(sid, 7) == ended


def test_turning_legacy_tokens_off() -> None:
    tokens = TokenService(jwt_config(accept_legacy_tokens=False))
    for token in seed_pair(7).values():
        with pytest.raises(InvalidToken):
            tokens.verify(token)
    assert tokens.verify(tokens.issue(7, refresh=False, sid="s")).user_id == 7


def test_no_token_is_issued_without_a_session() -> None:
    with pytest.raises(ValueError):
        TokenService(jwt_config()).issue(7, refresh=False, sid="")


def test_a_revocation_of_one_users_legacy_tokens_spares_everyone_else() -> None:
    tokens = TokenService(jwt_config())
    revocations = MemoryRevocations(3600)
    mine = [tokens.verify(t) for t in seed_pair(7).values()]
    theirs = [tokens.verify(t) for t in seed_pair(8).values()]
    gateway_born = tokens.verify(tokens.issue(7, refresh=False, sid="s1"))
    asyncio.run(revocations.revoke_sessions(*legacy.sessions_ended_by(mine[0].sid, 7)))
    assert all(revocations.is_revoked(c) for c in mine)
    assert not any(revocations.is_revoked(c) for c in [*theirs, gateway_born])
    with pytest.raises(ValueError):
        asyncio.run(revocations.revoke_sessions(""))


@pytest.mark.parametrize("jti", [None, ""])
def test_a_token_without_a_jti_is_legacy(jti: str | None) -> None:
    from tests.factories import make_token

    token = make_token(7, jti=jti) if jti is not None else make_token(7, drop=("jti",))
    assert TokenService(jwt_config()).verify(token).sid == "legacy:7:access"
    with pytest.raises(InvalidToken):
        TokenService(jwt_config(accept_legacy_tokens=False)).verify(token)


@pytest.mark.parametrize("jti", [123, ["x"]])
def test_a_jti_that_is_no_string_is_an_invalid_token(jti: object) -> None:
    from tests.factories import make_token

    with pytest.raises(InvalidToken):
        TokenService(jwt_config()).verify(make_token(7, jti=jti))
