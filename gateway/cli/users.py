"""`python -m gateway users ...`: set-password, revoke, disable, enable.

USER is a mobile, an account or a user id. Passwords are read from a prompt,
or from standard input when it is not a terminal, never from the arguments.
"""
from __future__ import annotations

import getpass
import sys
from typing import Awaitable, Callable, TextIO

from ..auth.mobile import normalize_mobile
from ..auth.passwords import MAX_PASSWORD_BYTES, Passwords
from ..config import Config
from ..errors import ServiceUnavailable
from ..stores.databases import open_user_store
from ..stores.kv import open_redis
from ..stores.revocation import RedisRevocations
from ..stores.users import STATUS_DISABLED, STATUS_ENABLED, User, UserStore

MIN_PASSWORD_LENGTH = 8  # NIST SP 800-63B §5.1.1.2


class CommandError(Exception):
    pass


async def find_user(users: UserStore, text: str) -> User:
    mobile = normalize_mobile(text)
    user = await users.get_by_mobile(mobile) if mobile else None
    if user is None and text.isdigit():
        user = await users.get_by_id(int(text))
    if user is None:
        user = await users.get_by_account(text)
    if user is None:
        raise CommandError(f"no user {text!r} (give a mobile, an account or a user id)")
    return user


def read_password(stdin: TextIO) -> str:
    if stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the two passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_LENGTH or len(password.encode()) > MAX_PASSWORD_BYTES:
        raise CommandError(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_BYTES} bytes")
    return password


async def run_users_command(config: Config, action: str, who: str, stdin: TextIO = sys.stdin) -> int:
    try:
        users = await open_user_store(config.database.url, 1)
    except ServiceUnavailable as exc:
        print(f"users {action}: database unavailable: {exc}", file=sys.stderr)
        return 1
    try:
        message = await _act(config, users, action, who, stdin)
    except CommandError as exc:
        print(f"users {action}: {exc}", file=sys.stderr)
        return 1
    except ServiceUnavailable:
        print(f"users {action}: a store is unavailable", file=sys.stderr)
        return 1
    finally:
        await users.close()
    print(f"users {action}: {message}")
    return 0


async def _act(config: Config, users: UserStore, action: str, who: str, stdin: TextIO) -> str:
    user = await find_user(users, who)
    if action == "set-password":
        await users.set_password(user.user_id, Passwords().hash(read_password(stdin)))
        return f"password set for user {user.user_id}"
    if action in ("disable", "enable"):
        await users.set_status(user.user_id, STATUS_DISABLED if action == "disable" else STATUS_ENABLED)
        if not config.redis.embedded:
            await _publish(config, lambda r: r.status_changed(user.user_id))
        return f"user {user.user_id} {action}d"
    if config.redis.embedded:
        raise CommandError("needs a shared Redis: with redis.url memory:// sessions live inside the gateway process")
    await _publish(config, lambda r: r.revoke_user(user.user_id))
    return f"every session of user {user.user_id} ended"


async def _publish(config: Config, act: Callable[[RedisRevocations], Awaitable[None]]) -> None:
    async with open_redis(config.redis) as (redis, _):
        await act(RedisRevocations(redis, config.jwt.refresh_ttl))
