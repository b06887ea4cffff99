"""The two ways in: mobile + SMS code (the seed's), and account or mobile + password.

Both answer a registered and an unregistered mobile alike until the secret
is proven, and both count failures against the same per-subject limit.
"""
from __future__ import annotations

from ..config import LimitsConfig, SmsConfig
from ..errors import BadRequest, TooManyRequests, UserDisabled
from ..ids import IdWorker
from ..ratelimit import RateLimits
from ..stores.codes import CodeStore
from ..stores.failures import LoginFailures, Window
from ..stores.users import User, UserStore
from .last_login import LastLogins
from .mobile import normalize_mobile
from .passwords import Passwords


class Logins:
    def __init__(self, users: UserStore, codes: CodeStore, passwords: Passwords, limits: RateLimits,
                 failures: LoginFailures, last_logins: LastLogins, ids: IdWorker, sms: SmsConfig,
                 limits_config: LimitsConfig) -> None:
        self._users = users
        self._codes = codes
        self._passwords = passwords
        self._limits = limits
        self._failures = failures
        self._last_logins = last_logins
        self._ids = ids
        self._max_attempts = sms.max_attempts
        self._window = Window.of(limits_config.login_failures)

    async def with_code(self, ip: str, mobile: str, code: str) -> User:
        await self._limits.login(ip, mobile)
        checked = await self._codes.check(mobile, code, self._max_attempts, self._window)
        if checked.retry_after is not None:
            raise TooManyRequests(checked.retry_after)
        if not checked.ok:
            raise BadRequest("Invalid code.")
        user = await self._users.get_by_mobile(mobile)
        if user is None:
            return await self._users.register(self._ids.next_id(), mobile)
        if not user.enabled:
            raise UserDisabled("Invalid user.")
        self._last_logins.note(user.user_id)
        return user

    async def with_password(self, ip: str, subject: str, password: str) -> User:
        """`subject` is a normalized mobile or `account:<name>`."""
        await self._limits.login(ip, subject)
        if self._window is not None and (wait := await self._failures.exhausted(subject, self._window)) is not None:
            raise TooManyRequests(wait)
        user = await self._find(subject)
        if not await self._passwords.verify(user.password if user else None, password):
            if self._window is not None:
                await self._failures.record(subject, self._window)
            raise BadRequest("Invalid account or password.")
        assert user is not None and user.password is not None
        if not user.enabled:
            raise UserDisabled("Invalid user.")
        if self._passwords.needs_rehash(user.password):
            await self._users.set_password(user.user_id, self._passwords.hash(password))
        self._last_logins.note(user.user_id)
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
