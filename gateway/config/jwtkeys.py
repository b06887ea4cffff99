"""Reading `jwt.secret` or `jwt.keys` into JwtKey objects, PEM files included.

Everything about a key is checked here, once, at start-up: its algorithm,
the length of a secret (RFC 7518 §3.2), and that a PEM file holds the kind
of key its algorithm needs.
"""
from __future__ import annotations

import re
import secrets
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .model import JwtKey
from .reader import Reader

HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
ASYMMETRIC: dict[str, tuple[tuple[type, ...], tuple[type, ...], Any]] = {
    "RS256": ((rsa.RSAPrivateKey,), (rsa.RSAPublicKey,), RSAAlgorithm),
    "ES256": ((ec.EllipticCurvePrivateKey,), (ec.EllipticCurvePublicKey,), ECAlgorithm),
    "EdDSA": ((ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey),
              (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey), OKPAlgorithm),
}
ALGORITHMS = (*HMAC_MIN_BYTES, *ASYMMETRIC)
KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
LEGACY_KID = "default"


def read_keys(reader: Reader, block: dict[str, Any], dev: bool) -> tuple[tuple[JwtKey, ...], bool, bool]:
    """(keys, generated, kidless_legacy)."""
    if "keys" in block:
        if "secret" in block or "algorithm" in block:
            reader.problem("jwt.keys", "use either jwt.keys or jwt.secret with jwt.algorithm, not both")
        return _key_list(reader, block["keys"]), False, False
    algorithm = reader.choice(block, "algorithm", "jwt", tuple(HMAC_MIN_BYTES))
    secret = reader.string(block, "secret", "jwt", "") or ""
    generated = False
    if not secret and dev:
        secret, generated = secrets.token_urlsafe(64), True
    elif not secret:
        reader.problem("jwt.secret", "is required (set GATEWAY_JWT_SECRET, or run with --dev)")
        return (), False, True
    key = _hmac(reader, "jwt", LEGACY_KID, algorithm, secret, "secret")
    return ((key,) if key else ()), generated, True


def _key_list(reader: Reader, raw: Any) -> tuple[JwtKey, ...]:
    specs = reader.items(raw, "jwt.keys")
    if not specs:
        reader.problem("jwt.keys", "must list at least one key")
    keys: list[JwtKey] = []
    for i, spec in enumerate(specs):
        key = _key(reader, f"jwt.keys[{i}]", spec)
        if key is None:
            continue
        if any(k.kid == key.kid for k in keys):
            reader.problem(f"jwt.keys[{i}].kid", f"duplicates kid {key.kid!r}")
        keys.append(key)
    if keys and len(keys) == len(specs) and keys[0].signing is None:
        reader.problem("jwt.keys[0]", "signs new tokens, so it needs a secret or a private_key_file")
    return tuple(keys)


def _key(reader: Reader, where: str, raw: Any) -> JwtKey | None:
    block = reader.section(raw, where, {"kid", "algorithm", "secret", "private_key_file", "public_key_file"})
    kid = reader.string(block, "kid", where, None)
    if kid is None or not KID.fullmatch(kid):
        reader.problem(f"{where}.kid", "must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
        return None
    algorithm = block.get("algorithm")
    if algorithm not in ALGORITHMS:
        reader.problem(f"{where}.algorithm", f"must be one of {', '.join(ALGORITHMS)}")
        return None
    if algorithm in HMAC_MIN_BYTES:
        secret = reader.string(block, "secret", where, None)
        if not secret:
            reader.problem(f"{where}.secret", f"is required for {algorithm}")
            return None
        return _hmac(reader, where, kid, algorithm, secret, "secret")
    return _asymmetric(reader, where, kid, algorithm, block)


def _hmac(reader: Reader, where: str, kid: str, algorithm: str, secret: str, field: str) -> JwtKey | None:
    if len(secret.encode()) < HMAC_MIN_BYTES[algorithm]:
        reader.problem(f"{where}.{field}", f"must be at least {HMAC_MIN_BYTES[algorithm]} bytes for {algorithm}")
        return None
    return JwtKey(kid=kid, algorithm=algorithm, signing=secret, verifying=secret)


def _asymmetric(reader: Reader, where: str, kid: str, algorithm: str, block: dict[str, Any]) -> JwtKey | None:
    private_types, public_types, jwk_algorithm = ASYMMETRIC[algorithm]
    private_file, public_file = block.get("private_key_file"), block.get("public_key_file")
    path = str(private_file or public_file)
    if bool(private_file) == bool(public_file):
        reader.problem(where, f"{algorithm} needs exactly one of private_key_file or public_key_file")
        return None
    field = "private_key_file" if private_file else "public_key_file"
    try:
        with open(path, "rb") as fh:
            pem = fh.read()
        loaded: Any = (serialization.load_pem_private_key(pem, password=None) if private_file
                       else serialization.load_pem_public_key(pem))
    except OSError as exc:
        reader.problem(f"{where}.{field}", f"cannot read: {exc.strerror}")
        return None
    except (ValueError, TypeError):
        reader.problem(f"{where}.{field}", "is not an unencrypted PEM key")
        return None
    if not isinstance(loaded, private_types if private_file else public_types):
        reader.problem(f"{where}.{field}", f"does not hold a key for {algorithm}")
        return None
    key: Any = loaded  # the isinstance check above narrows too far for mypy
    public: Any = key.public_key() if private_file else key
    if algorithm == "RS256" and public.key_size < 2048:
        reader.problem(f"{where}.{field}", "RSA keys must be at least 2048 bits")
        return None
    if algorithm == "ES256" and not isinstance(public.curve, ec.SECP256R1):
        reader.problem(f"{where}.{field}", "ES256 needs a P-256 key")
        return None
    jwk = {**jwk_algorithm.to_jwk(public, as_dict=True), "kid": kid, "alg": algorithm, "use": "sig"}
    return JwtKey(kid=kid, algorithm=algorithm, signing=loaded if private_file else None,
                  verifying=public, public_jwk=jwk)
