"""UserStore on SQLite through aiosqlite: the embedded store for one instance.

One connection, so one statement at a time: each await on it is a hop to
aiosqlite's thread and back, and a hop waits for the event loop to come round,
which under load is milliseconds. Writes are serialized by a lock so that no
two transactions interleave. Registrations are written as a group: those that
arrive while the writer is busy share its next transaction (a group commit),
so a crowd of first logins costs a few hops per crowd, not per login, and
does not queue for seconds behind the lock.
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Sequence

import aiosqlite

from . import StoreUnavailable, schema, unavailable_on
from .users import USER_COLUMNS, User, UserLookups, user_from_row, utcnow


def sqlite_path(url: str) -> str:
    path = url[len("sqlite://"):]
    if path.startswith("/"):
        path = path[1:]  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
    return path or ":memory:"


def _retrieve(batch: asyncio.Task[None]) -> None:
    """A transaction's error reaches every registration in it; when every one of them has gone, it is
    retrieved here, so that asyncio does not log it as never retrieved."""
    if not batch.cancelled():
        batch.exception()


def _unavailable_on_error() -> contextlib.AbstractContextManager[None]:
    """SQLite's errors: a locked, full or unreadable file."""
    return unavailable_on((sqlite3.Error,), "database")


class SQLiteUserStore(UserLookups):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._write = asyncio.Lock()
        self._pending: list[tuple[int, str]] = []  # registrations not yet taken by a transaction
        self._batch: asyncio.Task[None] | None = None  # the transaction that will take them

    @classmethod
    async def open(cls, url: str) -> SQLiteUserStore:
        try:
            db = await aiosqlite.connect(sqlite_path(url))
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"Cannot open the database: {exc}") from None
        store = cls(db)
        await store.migrate()  # embedded mode: the schema comes with the file
        return store

    async def migrate(self) -> None:
        with _unavailable_on_error():
            async with self._write:
                for statement in schema.SQLITE:
                    await self._db.execute(statement)
                await self._db.commit()

    async def _one(self, column: str, value: object) -> User | None:
        with _unavailable_on_error():  # one hop: the statement, its row and the cursor's close
            rows = await self._db.execute_fetchall(f"SELECT {USER_COLUMNS} FROM user_basic WHERE {column} = ?",
                                                   (value,))
        return user_from_row(next(iter(rows), None))  # type: ignore[arg-type]

    async def register(self, user_id: int, mobile: str) -> User:
        with _unavailable_on_error():
            await self._registered(user_id, mobile)
        user = await self.get_by_mobile(mobile)
        assert user is not None
        return user

    async def _registered(self, user_id: int, mobile: str) -> None:
        """Returns once a transaction holding this registration has committed. The waiter that goes away
        (a client gone) leaves the transaction to finish for the others: it is shielded."""
        self._pending.append((user_id, mobile))
        if self._batch is None:
            self._batch = asyncio.ensure_future(self._insert_pending())
            self._batch.add_done_callback(_retrieve)
        await asyncio.shield(self._batch)

    async def _insert_pending(self) -> None:
        async with self._write:
            rows, self._pending, self._batch = self._pending, [], None  # who registers from now on: the next one
            now = utcnow().isoformat(sep=" ")
            try:
                # a mobile twice (two devices at once): the first row wins, the others are ignored
                await self._db.executemany(
                    "INSERT OR IGNORE INTO user_basic (user_id, mobile, user_name, last_login, status)"
                    " VALUES (?, ?, ?, ?, 1)", [(user_id, mobile, mobile, now) for user_id, mobile in rows])
                # a profile for each user of the batch that has none: the rows just inserted (an id whose
                # mobile was taken was not inserted, and finds no user); an id registered before keeps its own
                await self._db.executemany(
                    "INSERT OR IGNORE INTO user_profile (user_id) SELECT user_id FROM user_basic WHERE user_id = ?",
                    [(user_id,) for user_id, _ in rows])
                await self._db.commit()
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.rollback()
                raise

    async def _update(self, sql: str, args: tuple[object, ...]) -> None:
        with _unavailable_on_error():
            async with self._write:
                await self._db.execute(sql, args)
                await self._db.commit()

    async def touch_logins(self, user_ids: Sequence[int]) -> None:
        marks = ", ".join("?" * len(user_ids))
        await self._update(f"UPDATE user_basic SET last_login = ? WHERE user_id IN ({marks})",
                           (utcnow().isoformat(sep=" "), *user_ids))

    async def set_status(self, user_id: int, status: int) -> None:
        await self._update("UPDATE user_basic SET status = ? WHERE user_id = ?", (status, user_id))

    async def set_password(self, user_id: int, password_hash: str) -> None:
        await self._update("UPDATE user_basic SET password = ? WHERE user_id = ?", (password_hash, user_id))

    async def ping(self) -> None:
        with _unavailable_on_error():
            await self._db.execute("SELECT 1")

    async def close(self) -> None:
        await self._db.close()
