"""The revocation list's entries and this instance's copy of them."""
from __future__ import annotations

import asyncio

from gateway.claims import Claims
from gateway.stores.revocation import Entry, MemoryRevocations, RevocationList
from tests.factories import Heard


def claims(user_id: int = 7, sid: str = "s1", iat: float = 100.0, family: str = "") -> Claims:
    return Claims(user_id=user_id, refresh=False, exp=iat + 7200, iat=iat, jti="j", sid=sid, family=family or sid)


def test_entries_survive_the_trip_through_redis_members() -> None:
    for entry in (Entry.session("abc:def", 500.0), Entry.user(7, 123.5, 500.0)):
        assert Entry.parse(entry.member(), entry.drop_at) == entry
    for unknown in ("colour:blue", "user:None:0.0", "user:7:soon", "sid:"):  # left out, never raised
        assert Entry.parse(unknown, 1.0) is None


def test_the_list_keeps_the_latest_not_before_and_drops_what_no_longer_matters() -> None:
    now = [1000.0]
    revoked = RevocationList(lambda: now[0])
    revoked.add(Entry.user(7, 150.0, 2000.0))
    revoked.add(Entry.user(7, 120.0, 1500.0))  # an older one changes nothing
    assert revoked.is_revoked(claims(iat=150.0)) and not revoked.is_revoked(claims(iat=151.0))
    revoked.add(Entry.session("s9", 1200.0))
    assert revoked.is_revoked(claims(sid="s9", iat=999.0))
    assert revoked.is_revoked(claims(sid="other", family="s9", iat=999.0))  # a legacy token's family
    now[0] = 1300.0
    revoked.add(Entry.session("s10", 3000.0))  # adding prunes: s9 can no longer matter
    assert not revoked.is_revoked(claims(sid="s9", iat=999.0))


def test_status_listeners_hear_of_one_user_until_they_leave() -> None:
    listener = Heard()
    revocations = MemoryRevocations(3600)
    revocations.on_status_change(listener)
    asyncio.run(revocations.status_changed(7))
    revocations.off_status_change(listener)
    asyncio.run(revocations.status_changed(8))
    assert listener.heard == [7]


def test_entries_leave_when_due_whatever_order_they_came_in() -> None:
    """Pruning takes what is due from a heap: an entry renewed to a later time stays, one renewed to an
    earlier time goes then, and sessions and users due at the same moment live side by side."""
    now = [1000.0]
    revoked = RevocationList(lambda: now[0])
    revoked.add(Entry.session("renewed-later", 1100.0))
    revoked.add(Entry.session("renewed-later", 1300.0))
    revoked.add(Entry.session("renewed-earlier", 1300.0))
    revoked.add(Entry.session("renewed-earlier", 1100.0))
    revoked.add(Entry.session("same-moment", 1200.0))
    revoked.add(Entry.user(7, 150.0, 1200.0))
    revoked.add(Entry.user(8, 150.0, 1100.0))
    revoked.add(Entry.user(8, 160.0, 1400.0))  # a later not-before keeps user 8 until 1400
    assert len(revoked) == 5
    now[0] = 1150.0
    revoked.add(Entry.session("trigger", 5000.0))
    assert not revoked.is_revoked(claims(user_id=99, sid="renewed-earlier"))
    assert revoked.is_revoked(claims(user_id=99, sid="renewed-later")) and revoked.is_revoked(claims(user_id=8, iat=155.0))
    now[0] = 1250.0
    revoked.add(Entry.session("trigger", 5000.0))
    assert not revoked.is_revoked(claims(user_id=99, sid="same-moment")) and not revoked.is_revoked(claims(user_id=7, iat=1.0))
    assert len(revoked) == 3  # renewed-later, user 8, trigger
    now[0] = 1500.0
    revoked.add(Entry.session("trigger", 5000.0))
    assert len(revoked) == 1 and revoked.is_revoked(claims(user_id=99, sid="trigger"))


def test_a_hundred_thousand_entries_are_pruned_as_they_fall_due() -> None:
    now = [0.0]
    revoked = RevocationList(lambda: now[0])
    for i in range(100_000):
        now[0] = float(i)
        revoked.add(Entry.session(f"s{i}", i + 1000.0))  # each lives 1000 s
    assert len(revoked) == 1000
    assert len(revoked._due) <= 1001  # what is due has left the heap too: it does not grow with every add
