"""The user store a `database.url` names: MySQL or SQLite."""
from __future__ import annotations

from .users import UserStore
from .users_mysql import MySQLUserStore
from .users_sqlite import SQLiteUserStore


async def open_user_store(url: str, pool_size: int = 10) -> UserStore:
    if url.startswith("mysql://"):
        return await MySQLUserStore.open(url, pool_size)
    if url.startswith("sqlite://"):
        return await SQLiteUserStore.open(url)
    raise ValueError(f"unsupported database url: {url.split('://', 1)[0]}")
