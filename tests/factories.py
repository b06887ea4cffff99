"""Test factories: configs, tokens and small helpers, like mitmproxy's tflow()."""
from __future__ import annotations

import asyncio
import copy
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt

from gateway.config import Config, parse_config

SECRET = "test-secret-that-is-long-enough-for-every-hmac-algorithm-0123456789"
MOBILE = "13911111111"

DEFAULT_ROUTES = [
    {"path": "/v1_0/channels", "upstream": "news", "auth": "public"},
    {"path": "/v1_0/articles", "upstream": "news", "auth": "optional"},
    {"path": "/v1_0/user/channels", "upstream": "news", "auth": {"GET": "optional", "*": "required"}},
    {"path": "/v1_0/echo/public", "upstream": "news", "auth": "public"},
    {"path": "/v1_0/echo/optional", "upstream": "news", "auth": "optional"},
    {"path": "/v1_0/echo/mixed", "upstream": "news", "auth": {"GET": "optional", "*": "required"}},
    {"path": "/v1_0/echo/with-auth", "upstream": "news", "auth": "required", "forward_authorization": True},
    {"path": "/_stub", "upstream": "news", "auth": "public"},
    {"path": "/", "upstream": "news", "auth": "required"},
]


def config_dict(
    upstream_url: str | list[str] = "http://127.0.0.1:9",
    *,
    redis_url: str = "memory://",
    database_url: str = "sqlite:///:memory:",
    **sections: Any,
) -> dict[str, Any]:
    targets = upstream_url if isinstance(upstream_url, list) else [upstream_url]
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "jwt": {"secret": SECRET, "algorithm": "HS256", "access_ttl": "2h", "refresh_ttl": "14d"},
        "redis": {"url": redis_url},
        "database": {"url": database_url},
        "sms": {"sender": "log", "code_ttl": 300},
        "limits": {"sms": []},  # the default 1/minute per mobile would slow most tests; limit tests set their own
        "upstreams": {"news": {"targets": targets, "timeouts": {"connect": "2s", "read": "5s"}}},
        "routes": copy.deepcopy(DEFAULT_ROUTES),
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(name), dict):
            raw[name] = {**raw[name], **value}
        else:
            raw[name] = value
    return raw


def make_config(upstream_url: str | list[str] = "http://127.0.0.1:9", **kwargs: Any) -> Config:
    return parse_config(config_dict(upstream_url, **kwargs), env={})


def make_token(
    user_id: Any = 42,
    *,
    refresh: Any = False,
    secret: str = SECRET,
    algorithm: str = "HS256",
    ttl: float = 3600,
    drop: tuple[str, ...] = (),
    headers: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"user_id": user_id, "refresh": refresh, "exp": now + ttl, "iat": now, "jti": "t"}
    payload.update(extra)
    for key in drop:
        payload.pop(key, None)
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def seed_pair(user_id: int, *, secret: str = SECRET, age: timedelta = timedelta(0), access_hours: float = 2,
              refresh_days: float = 14) -> dict[str, str]:
    """Tokens exactly as the toutiao backend's `_generate_tokens` makes them with `generate_jwt`:
    `{'exp': expiry}` updated with the payload, HS256, no kid, jti, sid or iat; issued `age` ago."""
    now = datetime.now(timezone.utc).replace(tzinfo=None) - age  # the backend's datetime.utcnow()

    def generate_jwt(payload: dict[str, Any], expiry: datetime) -> str:
        _payload: dict[str, Any] = {"exp": expiry}
        _payload.update(payload)
        return jwt.encode(_payload, secret, algorithm="HS256")

    return {
        "token": generate_jwt({"user_id": user_id, "refresh": False}, now + timedelta(hours=access_hours)),
        "refresh_token": generate_jwt({"user_id": user_id, "refresh": True}, now + timedelta(days=refresh_days)),
    }


def payload_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def raw_request(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as written (no client-side path cleaning); read a Connection: close reply."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def jwt_config(env: dict[str, str] | None = None, **jwt: Any) -> Any:
    """A JwtConfig from a `jwt:` section (the single-secret form unless `keys` is given)."""
    section: dict[str, Any] = {"secret": SECRET} if "keys" not in jwt else {}
    section.update(jwt)
    return parse_config(config_dict(jwt=None) | {"jwt": section}, env=env or {}).jwt


def pem_keys(folder: Any) -> dict[str, Any]:
    """Fresh RS256, ES256 and EdDSA key pairs written as PEM files: {alg: (private_path, public_path, key)}."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    made = {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    out = {}
    for alg, key in made.items():
        private = folder / f"{alg}.key.pem"
        public = folder / f"{alg}.pub.pem"
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
        out[alg] = (str(private), str(public), key)
    return out


async def gateway_for(make_gateway: Any, targets: list[Any], routes: list[dict[str, Any]] | None = None,
                      **news: Any) -> Any:
    """A gateway (through the make_gateway fixture) whose upstream `news` has these targets."""
    raw = config_dict()
    raw["upstreams"] = {"news": {"targets": targets, "timeouts": {"connect": "1s", "read": "5s"}, **news}}
    if routes is not None:
        raw["routes"] = routes
    return await make_gateway(parse_config(raw, env={}))


class Heard:
    """A status listener that writes down what it is told: a user's id, or "all"."""

    def __init__(self) -> None:
        self.heard: list[object] = []

    def forget(self, user_id: int) -> None:
        self.heard.append(user_id)

    def forget_all(self) -> None:
        self.heard.append("all")


class Conn:
    """A raw client connection to a server (a TestClient's): bytes sent exactly as written, answers read one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client: Any) -> Conn:
        return cls(*await asyncio.open_connection(client.server.host, client.server.port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """One answer framed by Content-Length (or none) or chunks."""
        head = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        status = int(lines[0].split()[1])
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int((await self.reader.readline()).strip(), 16):
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            await self.reader.readexactly(2)
        else:
            body = b""
        return status, headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    def close(self) -> None:
        self.writer.close()


def property_settings(examples: int) -> dict[str, Any]:
    """Hypothesis settings: `examples` cases, the same ones every run (so a failure repeats), or, in the long
    suites (scripts/test-long sets GATEWAY_PROPERTY_SCALE), that many times more, new ones each run."""
    import os

    scale = int(os.environ.get("GATEWAY_PROPERTY_SCALE", "1"))
    return {"max_examples": examples * scale, "derandomize": scale == 1, "deadline": None}
