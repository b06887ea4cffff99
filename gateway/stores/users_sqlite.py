"""UserStore on SQLite through aiosqlite: the embedded store for one instance.

One connection; writes are serialized by a lock so that concurrent
registrations of one mobile cannot interleave inside a transaction.
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


def _unavailable_on_error() -> contextlib.AbstractContextManager[None]:
    """SQLite's errors: a locked, full or unreadable file."""
    return unavailable_on((sqlite3.Error,), "database")


class SQLiteUserStore(UserLookups):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._write = asyncio.Lock()

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
        with _unavailable_on_error():
            async with self._db.execute(f"SELECT {USER_COLUMNS} FROM user_basic WHERE {column} = ?", (value,)) as cur:
                return user_from_row(await cur.fetchone())  # type: ignore[arg-type]

    async def register(self, user_id: int, mobile: str) -> User:
        with _unavailable_on_error():
            await self._insert(user_id, mobile)
        user = await self.get_by_mobile(mobile)
        assert user is not None
        return user

    async def _insert(self, user_id: int, mobile: str) -> None:
        async with self._write:
            cur = await self._db.execute(
                "INSERT OR IGNORE INTO user_basic (user_id, mobile, user_name, last_login, status)"
                " VALUES (?, ?, ?, ?, 1)",
                (user_id, mobile, mobile, utcnow().isoformat(sep=" ")),
            )
            if cur.rowcount == 1:
                await self._db.execute("INSERT INTO user_profile (user_id) VALUES (?)", (user_id,))
            await self._db.commit()

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
