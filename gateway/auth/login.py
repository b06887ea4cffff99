"""The two ways in: mobile + SMS code (the seed's), and account or mobile + password.

Both answer a registered and an unregistered mobile alike until the secret
is proven, and both count failures against the same per-subject limit.
"""
from __future__ import annotations

from ..config import SmsConfig
from ..errors import BadRequest, Forbidden
from ..ids import IdWorker
from ..ratelimit import RateLimits
from ..stores.codes import CodeStore
from ..stores.users import User, UserStore
from .mobile import normalize_mobile
from .passwords import Passwords


class Logins:
    def __init__(self, users: UserStore, codes: CodeStore, passwords: Passwords, limits: RateLimits,
                 ids: IdWorker, sms: SmsConfig) -> None:
        self._users = users
        self._codes = codes
        self._passwords = passwords
        self._limits = limits
        self._ids = ids
        self._max_attempts = sms.max_attempts

    async def with_code(self, ip: str, mobile: str, code: str) -> User:
        await self._limits.login(ip, mobile)
        if not await self._codes.check(mobile, code, self._max_attempts):
            await self._limits.login_failed(mobile)
            raise BadRequest("Invalid code.")
        user = await self._users.get_by_mobile(mobile)
        if user is None:
            return await self._users.register(self._ids.next_id(), mobile)
        if not user.enabled:
            raise Forbidden("Invalid user.")
        await self._users.touch_login(user.user_id)
        return user

    async def with_password(self, ip: str, subject: str, password: str) -> User:
        """`subject` is a normalized mobile or `account:<name>`."""
        await self._limits.login(ip, subject)
        user = await self._find(subject)
        if not await self._passwords.verify(user.password if user else None, password):
            await self._limits.login_failed(subject)
            raise BadRequest("Invalid account or password.")
        assert user is not None and user.password is not None
        if not user.enabled:
            raise Forbidden("Invalid user.")
        if self._passwords.needs_rehash(user.password):
            await self._users.set_password(user.user_id, self._passwords.hash(password))
        await self._users.touch_login(user.user_id)
        return user

    async def _find(self, subject: str) -> User | None:
        if subject.startswith("account:"):
            account = subject[len("account:"):]
            user = await self._users.get_by_account(account)
            mobile = normalize_mobile(account)
            if user is None and mobile is not None:
                user = await self._users.get_by_mobile(mobile)
            return user
        return await self._users.get_by_mobile(subject)
