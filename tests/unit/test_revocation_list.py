"""The revocation list's entries and this instance's copy of them."""
from __future__ import annotations

import asyncio

from gateway.claims import Claims
from gateway.stores.revocation import Entry, MemoryRevocations, RevocationList


def claims(user_id: int = 7, sid: str = "s1", iat: float = 100.0, family: str = "") -> Claims:
    return Claims(user_id=user_id, refresh=False, exp=iat + 7200, iat=iat, jti="j", sid=sid, family=family or sid)


def test_entries_survive_the_trip_through_redis_members() -> None:
    for entry in (Entry(500.0, sid="abc:def"), Entry(500.0, user_id=7, not_before=123.5)):
        assert Entry.parse(entry.member(), entry.drop_at) == entry
    assert Entry.parse("colour:blue", 1.0) is None


def test_the_list_keeps_the_latest_not_before_and_drops_what_no_longer_matters() -> None:
    now = [1000.0]
    revoked = RevocationList(lambda: now[0])
    revoked.add(Entry(2000.0, user_id=7, not_before=150.0))
    revoked.add(Entry(1500.0, user_id=7, not_before=120.0))  # an older one changes nothing
    assert revoked.is_revoked(claims(iat=150.0)) and not revoked.is_revoked(claims(iat=151.0))
    revoked.add(Entry(1200.0, sid="s9"))
    assert revoked.is_revoked(claims(sid="s9", iat=999.0))
    assert revoked.is_revoked(claims(sid="other", family="s9", iat=999.0))  # a legacy token's family
    now[0] = 1300.0
    revoked.add(Entry(3000.0, sid="s10"))  # adding prunes: s9 can no longer matter
    assert not revoked.is_revoked(claims(sid="s9", iat=999.0))


def test_status_listeners_hear_of_one_user_or_of_all() -> None:
    heard: list[object] = []

    class Listener:
        def forget(self, user_id: int) -> None:
            heard.append(user_id)

        def forget_all(self) -> None:
            heard.append("all")

    revocations = MemoryRevocations(3600)
    revocations.on_status_change(Listener())
    asyncio.run(revocations.status_changed(7))
    assert heard == [7]
