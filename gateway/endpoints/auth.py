"""The endpoints the gateway serves itself: SMS code, login, refresh, logout, JWKS."""
from __future__ import annotations

import contextlib
import json
import re
import secrets
from typing import Any, Callable, Iterator
from urllib.parse import unquote

from ..auth.login import Logins
from ..auth.mobile import normalize_mobile
from ..auth.passwords import MAX_PASSWORD_BYTES
from ..auth.sessions import Sessions, wrong_refresh_token
from ..auth.sms import SmsSender
from ..auth.tokens import TokenService
from ..claims import Claims
from ..client_ip import ClientIp
from ..config import Config
from ..errors import BadRequest, UserDisabled
from ..http.request import Request
from ..http.response import Response, json_response
from ..metrics import Counter, Metrics, result_of
from ..pipeline.authenticate import Authenticator, must_authorize
from ..ratelimit import RateLimits
from ..stores.codes import CodeStore
from ..stores.users import UserStore

CODE = re.compile(r"\d{6}")
MAX_JSON_BODY = 16 * 1024


class AuthEndpoints:
    def __init__(self, config: Config, *, tokens: TokenService, logins: Logins, sessions: Sessions,
                 authenticator: Authenticator, users: UserStore, codes: CodeStore, sms: SmsSender,
                 limits: RateLimits, client_ip: ClientIp, metrics: Metrics) -> None:
        self._code_ttl = config.sms.code_ttl
        self._metrics = metrics
        self._jwks = json_response({"keys": [dict(key.public_jwk) for key in config.jwt.keys
                                             if key.public_jwk is not None]},
                                   headers={"Cache-Control": "public, max-age=300"})
        self._tokens = tokens
        self._logins = logins
        self._sessions = sessions
        self._authenticator = authenticator
        self._users = users
        self._codes = codes
        self._sms = sms
        self._limits = limits
        self._client_ip = client_ip

    async def send_code(self, request: Request, mobile_segment: str) -> Response:
        with _counted(self._metrics.sms_codes, ()):
            return await self._send_code(request, mobile_segment)

    async def _send_code(self, request: Request, mobile_segment: str) -> Response:
        mobile = normalize_mobile(unquote(mobile_segment))
        if mobile is None:
            raise BadRequest("mobile is not a valid mobile number.")
        await self._limits.sms(self._client_ip(request), mobile)
        code = f"{secrets.randbelow(1_000_000):06d}"
        await self._codes.put(mobile, code, self._code_ttl)
        await self._sms.send(mobile, code)
        return json_response({"mobile": mobile})

    async def login(self, request: Request) -> Response:
        method = ["sms"]  # until the body says password
        with _counted(self._metrics.logins, method):
            return await self._login(request, method)

    async def _login(self, request: Request, method: list[str]) -> Response:
        body = await read_json(request)
        ip = self._client_ip(request)
        if "password" in body:
            method[0] = "password"
            password = text_field(body, "password", MAX_PASSWORD_BYTES)
            user = await self._logins.with_password(ip, login_subject(body), password)
        else:
            mobile = mobile_field(body)
            code = body.get("code")
            if code is None:
                raise BadRequest("code is required.")
            if not isinstance(code, str) or not CODE.fullmatch(code):
                raise BadRequest("code must be 6 digits.")
            user = await self._logins.with_code(ip, mobile, code)
        pair = self._tokens.issue_pair(user.user_id)
        return json_response({"token": pair.token, "refresh_token": pair.refresh_token}, status=201)

    async def refresh(self, request: Request) -> Response:
        with _counted(self._metrics.refreshes, ()):
            return await self._refresh(request)

    async def _refresh(self, request: Request) -> Response:
        claims = self._claims_or(request, wrong_refresh_token)
        if not claims.refresh or self._authenticator.revoked_or_stale(claims):
            raise wrong_refresh_token()
        user = await self._users.get_by_id(claims.user_id)
        if user is None or not user.enabled:
            raise UserDisabled("User denied.")
        await self._limits.refresh(self._client_ip(request), claims.user_id)
        return json_response(await self._sessions.refresh(claims), status=201)

    async def logout(self, request: Request) -> Response:
        """Ends the session of the refresh or access token presented; ending an ended one is not an error."""
        claims = self._claims_or(request, must_authorize)
        await self._sessions.end(claims)
        return Response(204)

    async def jwks(self, request: Request) -> Response:
        return self._jwks

    def _claims_or(self, request: Request, error: Callable[[], Exception]) -> Claims:
        claims = self._authenticator.claims_of(request.headers.get("Authorization"))
        if claims is None:
            raise error()
        return claims


@contextlib.contextmanager
def _counted(counter: Counter, labels: list[str] | tuple[()]) -> Iterator[None]:
    """Count the block's result under `labels` (read once the block is over) and the result label."""
    try:
        yield
    except Exception as exc:
        counter[(*labels, result_of(exc))] += 1
        raise
    counter[(*labels, "ok")] += 1


async def read_json(request: Request) -> dict[str, Any]:
    if request.body.length is not None and request.body.length > MAX_JSON_BODY:
        raise BadRequest("Request body is too large.")
    raw = await request.body.read_all(MAX_JSON_BODY)
    if len(raw) > MAX_JSON_BODY:
        raise BadRequest("Request body is too large.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest("Request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.")
    return body


def mobile_field(body: dict[str, Any]) -> str:
    value = body.get("mobile")
    if value is None:
        raise BadRequest("mobile is required.")
    mobile = normalize_mobile(value) if isinstance(value, str) else None
    if mobile is None:
        raise BadRequest("mobile must be a valid mobile number.")
    return mobile


def text_field(body: dict[str, Any], name: str, max_bytes: int) -> str:
    value = body.get(name)
    if value is None:
        raise BadRequest(f"{name} is required.")
    if not isinstance(value, str) or not value or len(value.encode()) > max_bytes:
        raise BadRequest(f"{name} must be a non-empty string of at most {max_bytes} bytes.")
    return value


def login_subject(body: dict[str, Any]) -> str:
    """What a password login names: a normalized mobile, or `account:<name>`."""
    if ("account" in body) == ("mobile" in body):
        raise BadRequest("Give either account or mobile with password.")
    if "mobile" in body:
        return mobile_field(body)
    return "account:" + text_field(body, "account", 64)
