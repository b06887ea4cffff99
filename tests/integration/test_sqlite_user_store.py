"""The SQLite user store (the embedded database) on a real file: registrations that arrive together share one
transaction (users_sqlite.py), each still gets its own user and profile, one that goes away does not take
the others with it, and a transaction that fails reaches all its registrations and leaves nothing half written."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import pytest

from gateway.stores import StoreUnavailable
from gateway.stores.users_sqlite import SQLiteUserStore

PROFILE = "CREATE TABLE user_profile_copy AS SELECT * FROM user_profile WHERE 0"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteUserStore]:
    opened = await SQLiteUserStore.open(f"sqlite:///{tmp_path}/users.db")
    yield opened
    await opened.close()


def counts(path: Path) -> tuple[int, int]:
    """user_basic and user_profile rows, read by a connection of its own: what was committed."""
    with sqlite3.connect(path) as db:
        return (db.execute("SELECT COUNT(*) FROM user_basic").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM user_profile").fetchone()[0])


def mobile(n: int) -> str:
    return f"137{n:08d}"


async def test_a_crowd_of_first_logins_each_gets_its_own_user_and_profile(store: SQLiteUserStore,
                                                                          tmp_path: Path) -> None:
    # 300 mobiles, each registered twice at once (two devices of one user): 300 users, 300 profiles
    ids = iter(range(1, 10_000))
    users = await asyncio.gather(*(store.register(next(ids), mobile(n % 300)) for n in range(600)))
    assert counts(tmp_path / "users.db") == (300, 300)
    by_mobile = {u.mobile: u.user_id for u in users}
    assert len(by_mobile) == 300 and all(by_mobile[u.mobile] == u.user_id for u in users)  # both saw the winner
    for u in users[:300]:
        found = await store.get_by_mobile(u.mobile)
        assert found is not None and found.user_id == u.user_id and found.name == u.mobile and found.enabled


async def test_a_user_registered_again_is_the_same_user_with_one_profile(store: SQLiteUserStore,
                                                                         tmp_path: Path) -> None:
    # the same id and mobile once more (two gateways seeding one file, an operator's script run twice), alone
    # and inside a crowd of new registrations
    first = await store.register(42, mobile(42))
    again = await store.register(42, mobile(42))
    crowd = await asyncio.gather(store.register(42, mobile(42)), *(store.register(n, mobile(n)) for n in range(1, 10)))
    assert first == again == crowd[0] and first.user_id == 42
    assert counts(tmp_path / "users.db") == (10, 10)


async def test_a_registration_that_goes_away_leaves_the_others_registered(store: SQLiteUserStore) -> None:
    # the first one starts the transaction the others join; its caller is cancelled (a client gone)
    first = asyncio.ensure_future(store.register(1, mobile(1)))
    others = [asyncio.ensure_future(store.register(n, mobile(n))) for n in range(2, 21)]
    await asyncio.sleep(0)
    first.cancel()
    users = await asyncio.gather(*others)
    assert [u.user_id for u in users] == list(range(2, 21))
    assert first.cancelled()


async def test_a_failed_transaction_fails_all_its_registrations_and_writes_none(store: SQLiteUserStore,
                                                                                tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    with sqlite3.connect(path) as db:  # another process takes user_profile away: the second insert fails
        db.execute(PROFILE)
        db.execute("DROP TABLE user_profile")
    results = await asyncio.gather(*(store.register(n, mobile(n)) for n in range(1, 11)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM user_basic").fetchone()[0] == 0  # rolled back, not half written
        db.execute("ALTER TABLE user_profile_copy RENAME TO user_profile")
    user = await store.register(11, mobile(11))  # the store works again, with no restart
    assert user.user_id == 11 and counts(path) == (1, 1)
