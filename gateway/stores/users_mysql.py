"""UserStore on MySQL/MariaDB through an aiomysql pool."""
from __future__ import annotations

import logging
import warnings
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

import aiomysql
import pymysql
from yarl import URL

from . import StoreUnavailable, schema
from .users import USER_COLUMNS, User, UserLookups, user_from_row, utcnow

log = logging.getLogger("gateway.stores.users")
ER_DUP_ENTRY = 1062
ER_LOCK_DEADLOCK = 1213


class MySQLUserStore(UserLookups):
    def __init__(self, pool: aiomysql.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, pool_size: int) -> MySQLUserStore:
        parsed = URL(url)
        pool = await aiomysql.create_pool(
            host=parsed.host or "127.0.0.1",
            port=parsed.port or 3306,
            user=parsed.user or "root",
            password=parsed.password or "",
            db=parsed.path.lstrip("/") or "toutiao",
            minsize=0,
            maxsize=pool_size,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=5,
            pool_recycle=3600,
        )
        return cls(pool)

    @asynccontextmanager
    async def _cursor(self, *, deadlocks: bool = False) -> AsyncIterator[Any]:
        """A cursor whose connection errors are StoreUnavailable; `deadlocks`: a deadlock is raised as it is,
        for a caller that tries again."""
        try:
            async with self._pool.acquire() as conn, conn.cursor() as cur:
                yield cur
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError) as exc:
            if deadlocks and isinstance(exc, pymysql.err.OperationalError) and exc.args[:1] == (ER_LOCK_DEADLOCK,):
                raise
            log.error("database unavailable: %s", exc)
            raise StoreUnavailable() from None

    async def migrate(self) -> None:
        with warnings.catch_warnings():  # "Table ... already exists" is what idempotent means here
            warnings.simplefilter("ignore", pymysql.Warning)
            async with self._cursor() as cur:
                for statement in schema.MYSQL:
                    await cur.execute(statement)

    async def _one(self, column: str, value: object) -> User | None:
        async with self._cursor() as cur:
            await cur.execute(f"SELECT {USER_COLUMNS} FROM user_basic WHERE {column} = %s", (value,))
            return user_from_row(await cur.fetchone())

    async def register(self, user_id: int, mobile: str) -> User:
        for _attempt in range(3):
            try:
                await self._insert(user_id, mobile)
                break
            except pymysql.err.IntegrityError as exc:
                if exc.args[0] != ER_DUP_ENTRY:
                    raise
                break  # someone else registered this mobile first: theirs stands
            except pymysql.err.OperationalError:  # a deadlock (_insert lets no other through): again
                continue
        else:
            log.error("registering a user deadlocked three times")
            raise StoreUnavailable()
        user = await self.get_by_mobile(mobile)
        if user is None:
            raise StoreUnavailable()
        return user

    async def _insert(self, user_id: int, mobile: str) -> None:
        async with self._cursor(deadlocks=True) as cur:
            conn = cur.connection
            await conn.begin()
            try:
                await cur.execute(
                    "INSERT INTO user_basic (user_id, mobile, user_name, last_login, status)"
                    " VALUES (%s, %s, %s, %s, 1)",
                    (user_id, mobile, mobile, utcnow()),
                )
                await cur.execute("INSERT INTO user_profile (user_id) VALUES (%s)", (user_id,))
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    async def touch_logins(self, user_ids: Sequence[int]) -> None:
        marks = ", ".join(["%s"] * len(user_ids))
        async with self._cursor() as cur:
            await cur.execute(f"UPDATE user_basic SET last_login = %s WHERE user_id IN ({marks})", (utcnow(), *user_ids))

    async def set_status(self, user_id: int, status: int) -> None:
        async with self._cursor() as cur:
            await cur.execute("UPDATE user_basic SET status = %s WHERE user_id = %s", (status, user_id))

    async def set_password(self, user_id: int, password_hash: str) -> None:
        async with self._cursor() as cur:
            await cur.execute("UPDATE user_basic SET password = %s WHERE user_id = %s", (password_hash, user_id))

    async def ping(self) -> None:
        async with self._cursor() as cur:
            await cur.execute("SELECT 1")

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()
