"""jwt.keys: several keys with kids, asymmetric algorithms, and the attacks on key selection."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.auth.tokens import InvalidToken, TokenService
from gateway.config import ConfigError
from tests.factories import SECRET, jwt_config, pem_keys

OLD_SECRET = "an-old-secret-that-was-rotated-out-but-still-verifies-0123456789"


def payload(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"user_id": 7, "refresh": False, "exp": now + 600, "iat": now, "jti": "j", "sid": "s", **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], body: dict[str, Any], key: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return pem_keys(tmp_path_factory.mktemp("keys"))


def hs_keys() -> list[dict[str, str]]:
    return [{"kid": "new", "algorithm": "HS256", "secret": SECRET},
            {"kid": "old", "algorithm": "HS512", "secret": OLD_SECRET}]


def test_the_first_key_signs_and_every_key_verifies() -> None:
    tokens = TokenService(jwt_config(keys=hs_keys()))
    issued = tokens.issue(7, refresh=False, sid="s")
    assert jwt.get_unverified_header(issued) == {"alg": "HS256", "kid": "new", "typ": "JWT"}
    old = jwt.encode(payload(), OLD_SECRET, algorithm="HS512", headers={"kid": "old"})
    assert tokens.verify(old).user_id == 7


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_keys_sign_verify_and_publish_only_public_parts(pems: dict[str, Any], alg: str) -> None:
    private, public, _ = pems[alg]
    config = jwt_config(keys=[{"kid": f"k-{alg}", "algorithm": alg, "private_key_file": private}])
    tokens = TokenService(config)
    assert tokens.verify(tokens.issue(3, refresh=True, sid="s")).refresh is True
    jwk = dict(config.keys[0].public_jwk)
    assert jwk["kid"] == f"k-{alg}" and jwk["alg"] == alg and jwk["use"] == "sig"
    assert "d" not in jwk and "p" not in jwk
    verify_only = TokenService(jwt_config(keys=[
        {"kid": "signer", "algorithm": "HS256", "secret": SECRET},
        {"kid": f"k-{alg}", "algorithm": alg, "public_key_file": public}]))
    assert verify_only.verify(tokens.issue(3, refresh=False, sid="s")).user_id == 3


def test_unknown_missing_or_odd_kids_are_invalid() -> None:
    tokens = TokenService(jwt_config(keys=hs_keys()))
    for headers in ({"kid": "nope"}, {"kid": "../../etc/passwd"}, {"kid": 1}, {"kid": None}, {}):
        token = hand_signed({"alg": "HS256", "typ": "JWT", **headers}, payload(), SECRET.encode())
        with pytest.raises(InvalidToken):
            tokens.verify(token)
    assert tokens.verify(hand_signed({"alg": "HS256", "kid": "new"}, payload(), SECRET.encode())).user_id == 7


def test_a_kidless_token_is_accepted_only_in_the_single_secret_form() -> None:
    token = jwt.encode(payload(), SECRET, algorithm="HS256")
    assert TokenService(jwt_config()).verify(token).user_id == 7


def test_algorithm_confusion_is_rejected(pems: dict[str, Any]) -> None:
    """An HS256 token keyed with the RSA public key's PEM must not verify against the RSA key."""
    private, public, _ = pems["RS256"]
    tokens = TokenService(jwt_config(keys=[{"kid": "rs", "algorithm": "RS256", "private_key_file": private}]))
    forged = hand_signed({"alg": "HS256", "kid": "rs", "typ": "JWT"}, payload(), Path(public).read_bytes())
    with pytest.raises(InvalidToken):
        tokens.verify(forged)
    swapped = jwt.encode(payload(), SECRET, algorithm="HS512", headers={"kid": "new"})
    with pytest.raises(InvalidToken):
        TokenService(jwt_config(keys=hs_keys())).verify(swapped)


def test_alg_none_is_rejected_even_with_a_known_kid() -> None:
    token = jwt.encode(payload(), None, algorithm="none", headers={"kid": "new"})
    with pytest.raises(InvalidToken):
        TokenService(jwt_config(keys=hs_keys())).verify(token)


@pytest.mark.parametrize("header", [{"jku": "http://127.0.0.1:1/keys"}, {"x5u": "http://127.0.0.1:1/c"},
                                    {"jwk": {"kty": "oct", "k": "AA"}}, {"x5c": ["AA"]}])
def test_key_locating_headers_are_refused_never_fetched(header: dict[str, Any]) -> None:
    token = jwt.encode(payload(), SECRET, algorithm="HS256", headers={"kid": "new", **header})
    with pytest.raises(InvalidToken):
        TokenService(jwt_config(keys=hs_keys())).verify(token)


def test_issuer_and_audience_are_issued_and_matched_exactly() -> None:
    tokens = TokenService(jwt_config(issuer="toutiao", audience="news"))
    issued = jwt.decode(tokens.issue(1, refresh=False, sid="s"), SECRET, algorithms=["HS256"], audience="news")
    assert issued["iss"] == "toutiao" and issued["aud"] == "news"
    for claims in ({}, {"iss": "toutiao"}, {"aud": "news"}, {"iss": "toutia", "aud": "news"},
                   {"iss": "toutiao", "aud": "new"}, {"iss": "toutiao", "aud": ["news", "ads"]}):
        with pytest.raises(InvalidToken):
            tokens.verify(jwt.encode(payload(**claims), SECRET, algorithm="HS256"))
    assert tokens.verify(jwt.encode(payload(iss="toutiao", aud="news"), SECRET, algorithm="HS256")).user_id == 7


@pytest.mark.parametrize(
    "claims, leeway, valid",
    [
        ({"nbf": 30}, 0, False), ({"nbf": 30}, 60, True), ({"nbf": -5}, 0, True),
        ({"iat": 30}, 0, False), ({"iat": 30}, 60, True), ({"iat": "now"}, 60, False),
        ({"exp": -10}, 0, False), ({"exp": -10}, 60, True),
    ],
)
def test_time_claims_with_leeway(claims: dict[str, int], leeway: int, valid: bool) -> None:
    now = time.time()
    body = payload(**{k: (int(now) + v if isinstance(v, int) else v) for k, v in claims.items()})
    tokens = TokenService(jwt_config(leeway=leeway))
    token = jwt.encode(body, SECRET, algorithm="HS256")
    if valid:
        assert tokens.verify(token).user_id == 7
    else:
        with pytest.raises(InvalidToken):
            tokens.verify(token)


def problems(tmp_path: Path, keys: Any, **jwt: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        jwt_config(keys=keys, **jwt)
    return info.value.problems


def test_key_configuration_errors(tmp_path: Path, pems: dict[str, Any]) -> None:
    rsa_private, rsa_public, _ = pems["RS256"]
    found = problems(tmp_path, [
        {"kid": "pub", "algorithm": "ES256", "public_key_file": pems["ES256"][1]},
        {"kid": "a b", "algorithm": "HS256", "secret": SECRET},
        {"kid": "ec", "algorithm": "ES256", "private_key_file": rsa_private},
        {"kid": "gone", "algorithm": "RS256", "private_key_file": str(tmp_path / "missing.pem")},
        {"kid": "short", "algorithm": "HS384", "secret": "x" * 40},
        {"kid": "pub", "algorithm": "HS256", "secret": SECRET},
        {"kid": "both", "algorithm": "RS256", "private_key_file": rsa_private, "public_key_file": rsa_public},
        {"kid": "what", "algorithm": "PS256", "secret": SECRET},
    ])
    assert "jwt.keys[1].kid: must be 1 to 64 characters of A-Z a-z 0-9 . _ -" in found
    assert "jwt.keys[2].private_key_file: does not hold a key for ES256" in found
    assert "jwt.keys[3].private_key_file: cannot read: No such file or directory" in found
    assert "jwt.keys[4].secret: must be at least 48 bytes for HS384" in found
    assert "jwt.keys[5].kid: duplicates kid 'pub'" in found
    assert "jwt.keys[6]: RS256 needs exactly one of private_key_file or public_key_file" in found
    assert any(p.startswith("jwt.keys[7].algorithm: must be one of") for p in found)


def test_the_signing_key_must_be_able_to_sign(tmp_path: Path, pems: dict[str, Any]) -> None:
    found = problems(tmp_path, [{"kid": "pub", "algorithm": "ES256", "public_key_file": pems["ES256"][1]}])
    assert found == ["jwt.keys[0]: signs new tokens, so it needs a secret or a private_key_file"]


def test_secret_and_keys_together_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, hs_keys(), secret=SECRET)
    assert "jwt.keys: use either jwt.keys or jwt.secret with jwt.algorithm, not both" in found
