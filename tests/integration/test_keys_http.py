"""Keys through HTTP: the JWKS endpoint, key rotation, and kid/algorithm attacks on a protected route."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import parse_config
from tests.factories import SECRET, bearer, config_dict, make_token, pem_keys
from upstream_stub.app import RECEIVED

OLD_SECRET = "an-old-secret-that-was-rotated-out-but-still-verifies-0123456789"


pytestmark = pytest.mark.stores("embedded")  # store-independent: once is enough


@pytest.fixture
async def keyed(make_gateway: Any, upstream: TestServer, tmp_path: Path) -> tuple[TestClient, dict[str, Any]]:
    pems = pem_keys(tmp_path)
    raw = config_dict(str(upstream.make_url("")).rstrip("/"), database_url=f"sqlite:///{tmp_path}/gateway.db")
    raw["jwt"] = {"keys": [
        {"kid": "es-2026", "algorithm": "ES256", "private_key_file": pems["ES256"][0]},
        {"kid": "ed-old", "algorithm": "EdDSA", "public_key_file": pems["EdDSA"][1]},
        {"kid": "hs-old", "algorithm": "HS256", "secret": OLD_SECRET},
    ]}
    config = parse_config(raw, env={})
    client = await make_gateway(config)
    await client.server.gateway.users.register(42, "13900000042")
    return client, pems


async def test_jwks_serves_the_public_keys_only(keyed: tuple[TestClient, dict[str, Any]]) -> None:
    client, pems = keyed
    resp = await client.get("/.well-known/jwks.json")
    assert resp.status == 200 and "max-age" in resp.headers["Cache-Control"]
    keyset = (await resp.json())["keys"]
    assert [(k["kid"], k["alg"], k["kty"]) for k in keyset] == [("es-2026", "ES256", "EC"), ("ed-old", "EdDSA", "OKP")]
    assert all("d" not in k for k in keyset)
    token = client.server.gateway.tokens.issue_pair(42).token
    public = jwt.PyJWK(keyset[0])  # an upstream verifies on its own with the published key
    assert jwt.decode(token, public.key, algorithms=["ES256"])["user_id"] == 42


async def test_jwks_is_empty_for_shared_secrets(gateway: TestClient) -> None:
    resp = await gateway.get("/.well-known/jwks.json")
    assert await resp.json() == {"keys": []}
    assert (await gateway.post("/.well-known/jwks.json")).status == 405


async def test_tokens_of_rotated_out_keys_still_work(keyed: tuple[TestClient, dict[str, Any]],
                                                     upstream: TestServer) -> None:
    client, pems = keyed
    old_hs = make_token(42, secret=OLD_SECRET, headers={"kid": "hs-old"})
    old_ed = jwt.encode({"user_id": 42, "refresh": False, "exp": 4_000_000_000}, pems["EdDSA"][2],
                        algorithm="EdDSA", headers={"kid": "ed-old"})
    for token in (old_hs, old_ed):
        resp = await client.get("/v1_0/user/profile", headers=bearer(token))
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("attack", ["unknown-kid", "no-kid", "alg-swap", "none", "jku", "secret-of-other-key"])
async def test_key_attacks_get_401_and_never_reach_the_upstream(keyed: tuple[TestClient, dict[str, Any]],
                                                                upstream: TestServer, attack: str) -> None:
    client, pems = keyed
    body = {"user_id": 42, "refresh": False, "exp": 4_000_000_000}
    token = {
        "unknown-kid": lambda: make_token(42, secret=OLD_SECRET, headers={"kid": "nobody"}),
        "no-kid": lambda: make_token(42, secret=OLD_SECRET),
        "alg-swap": lambda: jwt.encode(body, OLD_SECRET + "x" * 10, algorithm="HS512", headers={"kid": "hs-old"}),
        "none": lambda: jwt.encode(body, None, algorithm="none", headers={"kid": "es-2026"}),
        "jku": lambda: make_token(42, secret=OLD_SECRET, headers={"kid": "hs-old", "jku": "http://127.0.0.1:1/"}),
        "secret-of-other-key": lambda: make_token(42, secret=SECRET, headers={"kid": "hs-old"}),
    }[attack]()
    resp = await client.get("/v1_0/user/profile", headers=bearer(token))
    assert resp.status == 401 and await resp.json() == {"message": "User must be authorized."}
    assert upstream.app[RECEIVED] == []
