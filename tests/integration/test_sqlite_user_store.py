"""The SQLite user store (the embedded database) on a real file. Registrations that arrive together share one
transaction (users_sqlite.py): each still gets its own user and profile, whenever it arrives; one that goes
away does not take the others with it; a transaction that fails reaches all its registrations and leaves
nothing half written; a transaction cancelled before it began does not stop the next; and a store closed
with registrations under way answers each or fails it as unavailable (503), nothing else."""
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
    # a mobile taken under a new id: the user who has it; the same new id twice in one crowd: one user
    assert (await store.register(500, mobile(42))).user_id == 42
    pair = await asyncio.gather(store.register(600, mobile(600)), store.register(600, mobile(600)))
    assert pair[0] == pair[1] and pair[0].user_id == 600
    assert counts(tmp_path / "users.db") == (11, 11)


async def test_registrations_arriving_while_a_transaction_is_written_are_all_written(store: SQLiteUserStore,
                                                                                     tmp_path: Path) -> None:
    # five new registrations every turn of the loop, for 60 turns, beside other writes (status changes and
    # last_login updates take the same lock): each arrives at some stage of the transaction before it
    first = await store.register(10_000, mobile(10_000))
    tasks: list[asyncio.Future[object]] = []
    for turn in range(60):
        tasks += [asyncio.ensure_future(store.register(n, mobile(n))) for n in range(5 * turn + 1, 5 * turn + 6)]
        tasks.append(asyncio.ensure_future(store.set_status(first.user_id, turn % 2)))
        tasks.append(asyncio.ensure_future(store.touch_logins([first.user_id])))
        await asyncio.sleep(0.002)  # a hop to aiosqlite's thread takes about this long
    await asyncio.gather(*tasks)
    assert counts(tmp_path / "users.db") == (301, 301)
    for n in range(1, 301):
        found = await store.get_by_mobile(mobile(n))
        assert found is not None and found.user_id == n


async def test_a_transaction_cancelled_before_it_began_leaves_the_store_working(store: SQLiteUserStore) -> None:
    # the loop's teardown can cancel the task writing a batch while it waits for the lock (held here, as a
    # status change would hold it): the registrations after it must not wait on that dead task
    async with store._write:
        waiting = asyncio.ensure_future(store.register(1, mobile(1)))
        await asyncio.sleep(0)
        assert store._batch is not None
        store._batch.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    user = await asyncio.wait_for(store.register(2, mobile(2)), 5)
    assert user.user_id == 2
    assert await store.get_by_mobile(mobile(1)) is not None  # the row the cancelled task left went with it


async def test_closing_with_registrations_under_way_answers_each_one_or_fails_it_as_unavailable(
        tmp_path: Path) -> None:
    store = await SQLiteUserStore.open(f"sqlite:///{tmp_path}/users.db")
    tasks = [asyncio.ensure_future(store.register(n, mobile(n))) for n in range(1, 101)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(store.close())
    later = [asyncio.ensure_future(store.register(n, mobile(n))) for n in range(101, 111)]
    results = await asyncio.gather(*tasks, *later, return_exceptions=True)
    await closing
    assert all(r.mobile == mobile(n) if not isinstance(r, BaseException) else isinstance(r, StoreUnavailable)
               for n, r in enumerate(results, start=1)), [type(r) for r in results if isinstance(r, BaseException)]
    assert sum(isinstance(r, StoreUnavailable) for r in results) >= 10  # at least those that came after close
    assert counts(tmp_path / "users.db")[0] == sum(not isinstance(r, BaseException) for r in results)


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
    # rolled back, not half written: the store's own connection (which would see its open transaction)
    # finds none of them, nor does another
    assert [await store.get_by_mobile(mobile(n)) for n in range(1, 11)] == [None] * 10
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM user_basic").fetchone()[0] == 0
        db.execute("ALTER TABLE user_profile_copy RENAME TO user_profile")
    user = await store.register(11, mobile(11))  # the store works again, with no restart
    assert user.user_id == 11 and counts(path) == (1, 1)
