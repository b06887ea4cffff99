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
from typing import Any, Iterator, Sequence, TypeVar

import aiosqlite

from . import StoreUnavailable, schema, unavailable_on
from .users import USER_COLUMNS, User, UserLookups, user_from_row, utcnow


def sqlite_path(url: str) -> str:
    path = url[len("sqlite://"):]
    if path.startswith("/"):
        path = path[1:]  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
    return path or ":memory:"


DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, ValueError)  # ValueError: "Connection closed"
CHUNK = 500  # registrations per INSERT: 2,000 parameters, well under SQLite's 32,766
T = TypeVar("T")


def _chunks(items: list[T]) -> Iterator[list[T]]:
    """`items` CHUNK at a time: one statement's parameters each."""
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _retrieve(batch: asyncio.Task[dict[str, User]]) -> None:
    """A transaction's error reaches every registration in it; when every one of them has gone, it is
    retrieved here, so that asyncio does not log it as never retrieved."""
    if not batch.cancelled():
        batch.exception()


def _unavailable_on_error() -> contextlib.AbstractContextManager[None]:
    """SQLite's errors (a locked, full or unreadable file), and aiosqlite's for a connection closed at shutdown."""
    return unavailable_on(DRIVER_ERRORS, "database")


class SQLiteUserStore(UserLookups):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._write = asyncio.Lock()
        self._pending: list[tuple[int, str]] = []  # registrations not yet taken by a transaction
        self._batch: asyncio.Task[dict[str, User]] | None = None  # the transaction that will take them

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
        """Returns once a transaction holding this registration has committed: the user who has the mobile,
        read back by that transaction. The waiter that goes away (a client gone) leaves the transaction to
        finish for the others: it is shielded."""
        self._pending.append((user_id, mobile))
        if self._batch is None or self._batch.done():  # done: cancelled before it took its rows, which wait here
            self._batch = asyncio.ensure_future(self._insert_pending())
            self._batch.add_done_callback(_retrieve)
        with _unavailable_on_error():
            users = await asyncio.shield(self._batch)
        return users[mobile]

    async def _insert_pending(self) -> dict[str, User]:
        """Inserts the pending registrations, commits, and reads back the users who have their mobiles."""
        async with self._write:
            rows, self._pending, self._batch = self._pending, [], None  # who registers from now on: the next one
            now = utcnow().isoformat(sep=" ")
            try:
                # a mobile or an id taken (before, or by a row earlier in the batch): the row is ignored, and
                # RETURNING names only the rows inserted, each of which gets its empty profile
                inserted: list[Any] = []
                for chunk in _chunks(rows):
                    inserted += await self._db.execute_fetchall(
                        "INSERT OR IGNORE INTO user_basic (user_id, mobile, user_name, last_login, status) VALUES "
                        + ", ".join(["(?, ?, ?, ?, 1)"] * len(chunk)) + " RETURNING user_id",
                        [value for user_id, mobile in chunk for value in (user_id, mobile, mobile, now)])
                if inserted:
                    await self._db.executemany("INSERT INTO user_profile (user_id) VALUES (?)",
                                               [(row[0],) for row in inserted])
                await self._db.commit()
            except BaseException:
                with contextlib.suppress(*DRIVER_ERRORS):
                    await self._db.rollback()
                raise
            users: dict[str, User] = {}
            for wanted in _chunks(sorted({mobile for _, mobile in rows})):
                found = await self._db.execute_fetchall(
                    f"SELECT {USER_COLUMNS} FROM user_basic WHERE mobile IN ({', '.join('?' * len(wanted))})", wanted)
                for row in found:
                    user = user_from_row(row)  # type: ignore[arg-type]
                    if user is not None:
                        users[user.mobile] = user
            return users

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
        async with self._write:  # a transaction under way ends first; one still to come finds the store closed
            await self._db.close()
