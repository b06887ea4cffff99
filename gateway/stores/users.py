"""Users in the toutiao tables `user_basic` and `user_profile`.

One interface, `UserStore`, with MySQL (users_mysql.py, aiomysql) and SQLite
(users_sqlite.py, aiosqlite) beside it; `databases.open_user_store(url)`
picks one. Handlers never see SQL.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, Sequence

STATUS_DISABLED = 0
STATUS_ENABLED = 1


@dataclass(frozen=True)
class User:
    user_id: int
    mobile: str
    name: str
    status: int
    account: str | None = None
    password: str | None = field(default=None, repr=False)  # an argon2id hash, never the password

    @property
    def enabled(self) -> bool:
        return self.status == STATUS_ENABLED


class UserStore(Protocol):
    async def migrate(self) -> None: ...
    async def get_by_id(self, user_id: int) -> User | None: ...
    async def get_by_mobile(self, mobile: str) -> User | None: ...
    async def get_by_account(self, account: str) -> User | None: ...
    async def register(self, user_id: int, mobile: str) -> User:
        """Create the user (and an empty profile) unless the mobile exists; return whichever won."""
    async def touch_logins(self, user_ids: Sequence[int]) -> None:
        """Set last_login to now for these users."""
    async def set_status(self, user_id: int, status: int) -> None: ...
    async def set_password(self, user_id: int, password_hash: str) -> None: ...
    async def ping(self) -> None:
        """A round trip to the database (for /readyz); StoreUnavailable when it does not answer."""
    async def close(self) -> None: ...


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


USER_COLUMNS = "user_id, mobile, user_name, status, account, password"


def user_from_row(row: tuple[Any, ...] | None) -> User | None:
    if row is None:
        return None
    user_id, mobile, name, status, account, password = row
    return User(int(user_id), str(mobile), str(name), int(status), account, password)


class UserLookups:
    """The get_by_* methods of both stores, over each one's query for one user by one column."""

    async def _one(self, column: str, value: object) -> User | None:
        raise NotImplementedError

    async def get_by_id(self, user_id: int) -> User | None:
        return await self._one("user_id", user_id)

    async def get_by_mobile(self, mobile: str) -> User | None:
        return await self._one("mobile", mobile)

    async def get_by_account(self, account: str) -> User | None:
        return await self._one("account", account)
