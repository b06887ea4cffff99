"""The attack matrix, tokens: forged, confused, key-locating, ill-typed, misplaced and oversized JWTs, each sent
through a real gateway to a protected route. Every refused case gets its JSON answer without the upstream
seeing anything; each table also holds the valid tokens that must pass, so that it can fail both ways.

Sources: RFC 7515 (JWS), RFC 7518 (JWA), RFC 7519 (JWT), RFC 8725 (JWT best current practices), RFC 6750
(bearer tokens), the OWASP JSON Web Token Cheat Sheet, and the CVEs named in the cases' ids: CVE-2015-9235 and
CVE-2016-10555 (HS/RS confusion), CVE-2022-29217 (PyJWT: an EdDSA public key as the HMAC secret),
CVE-2018-0114 (an embedded jwk trusted), CVE-2022-21449 (ECDSA r=s=0 accepted), CVE-2021-32777 (Envoy passed
on one of several values of a field).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.config import parse_config
from tests.factories import SECRET, Conn, bearer, config_dict, pem_keys
from upstream_stub.app import RECEIVED

pytestmark = [pytest.mark.stores("embedded"),  # what a token is does not depend on the stores
              pytest.mark.usefixtures("logs")]

USER = 4242
OTHER = 4343
REQUIRED = "/v1_0/echo/required"  # the catch-all route "/": auth required
MUST = {"message": "User must be authorized."}
Signer = Callable[[bytes], bytes]


# -- making tokens by hand: PyJWT refuses to make most of these, and warns on short HMAC keys ----------------

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def hs(key: bytes | str, digest: Any = hashlib.sha256) -> Signer:
    raw = key.encode() if isinstance(key, str) else key
    return lambda message: hmac.new(raw, message, digest).digest()


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Signer | bytes = b"") -> str:
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = sign(signing_input.encode()) if callable(sign) else sign
    return f"{signing_input}.{b64(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    """The gateway's own access-token payload for USER; a change to `...` drops that claim."""
    now = int(time.time())
    payload: dict[str, Any] = {"user_id": USER, "refresh": False, "exp": now + 3600, "iat": now, "jti": "attack",
                               "sid": "attack"}
    for name, value in changes.items():
        if value is ...:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def valid(**changes: Any) -> str:
    """A correctly signed HS256 token of the shared-secret gateway."""
    return forge({"alg": "HS256", "typ": "JWT"}, claims(**changes), hs(SECRET))


def parts(token: str) -> list[str]:
    return token.split(".")


def resigned_payload(token: str, **changes: Any) -> str:
    """The token with its payload edited and its old signature kept."""
    header, _, signature = parts(token)
    return f"{header}.{segment(claims(**changes))}.{signature}"


# -- fixtures: the two gateways, a registered user, and log capture -----------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The keyed gateway's RS256, ES256 and EdDSA pairs (made once: RSA key generation is slow)."""
    return dict(pem_keys(tmp_path_factory.mktemp("keys")))


@pytest.fixture(scope="module")
def attacker_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def assert_not_logged(caplog: pytest.LogCaptureFixture, *tokens: str) -> None:
    text = caplog.text + "".join(str(getattr(r, "access", "")) for r in caplog.records)
    for token in tokens:
        for piece in {token, *[p for p in parts(token) if len(p) >= 8]}:  # a signature alone is a secret too
            assert piece not in text


async def shared_gateway(make_gateway: Any, upstream: TestServer, store_urls: dict[str, str]) -> TestClient:
    """The single-secret form (HS256, `jwt.secret`), as the toutiao backend signs; the access log on."""
    config = parse_config(config_dict(str(upstream.make_url("")).rstrip("/"), server={"access_log": True},
                                      **store_urls), env={})
    client = await make_gateway(config)
    await client.server.gateway.users.register(USER, "13900004242")
    await client.server.gateway.users.register(OTHER, "13900004343")
    return client


async def keyed_gateway(make_gateway: Any, upstream: TestServer, store_urls: dict[str, str],
                        keys: dict[str, Any]) -> TestClient:
    """`jwt.keys` with RS256 (signing), EdDSA and ES256 keys, and no shared secret at all."""
    raw = config_dict(str(upstream.make_url("")).rstrip("/"), **store_urls)
    raw["jwt"] = {"keys": [
        {"kid": "rs", "algorithm": "RS256", "private_key_file": keys["RS256"][0]},
        {"kid": "ed", "algorithm": "EdDSA", "private_key_file": keys["EdDSA"][0]},
        {"kid": "es", "algorithm": "ES256", "private_key_file": keys["ES256"][0]},
    ]}
    client = await make_gateway(parse_config(raw, env={}))
    await client.server.gateway.users.register(USER, "13900004242")
    return client


@pytest.fixture
async def shared(make_gateway: Any, upstream: TestServer, store_urls: dict[str, str]) -> TestClient:
    return await shared_gateway(make_gateway, upstream, store_urls)


@pytest.fixture
async def keyed(make_gateway: Any, upstream: TestServer, store_urls: dict[str, str],
                keys: dict[str, Any]) -> TestClient:
    return await keyed_gateway(make_gateway, upstream, store_urls, keys)


@pytest.fixture(params=["shared", "keyed"])
async def either(request: pytest.FixtureRequest, make_gateway: Any, upstream: TestServer,
                 store_urls: dict[str, str], keys: dict[str, Any]) -> TestClient:
    """Each of the two gateways in turn."""
    if request.param == "shared":
        return await shared_gateway(make_gateway, upstream, store_urls)
    return await keyed_gateway(make_gateway, upstream, store_urls, keys)


async def refused(client: TestClient, upstream: TestServer, token: str, *, status: int = 401,
                  body: dict[str, str] = MUST, path: str = REQUIRED, method: str = "GET") -> None:
    resp = await client.request(method, path, headers=bearer(token))
    assert (resp.status, await resp.json()) == (status, body)
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="toutiao-gateway"')
    assert upstream.app[RECEIVED] == []


async def passes(client: TestClient, upstream: TestServer, token: str, user: int = USER) -> None:
    resp = await client.get(REQUIRED, headers=bearer(token))
    assert resp.status == 200, await resp.text()
    seen = [value for name, value in (await resp.json())["headers"] if name.lower() == "x-user-id"]
    assert seen == [str(user)]
    assert upstream.app[RECEIVED] == [("GET", REQUIRED)]


# -- alg none, signatures, edited claims: the shared-secret gateway -----------------------------------------

GOOD = valid()
GOOD_SIGNATURE = parts(GOOD)[2]

SIGNATURE_CASES = [
    pytest.param(forge({"alg": "none", "typ": "JWT"}, claims()), id="alg-none-RFC8725-2.1-RFC7518-3.6"),
    pytest.param(forge({"alg": "None", "typ": "JWT"}, claims()), id="alg-None-OWASP-none-hashing"),
    pytest.param(forge({"alg": "NONE", "typ": "JWT"}, claims()), id="alg-NONE-OWASP-none-hashing"),
    pytest.param(forge({"alg": "nOnE", "typ": "JWT"}, claims()), id="alg-nOnE-OWASP-none-hashing"),
    pytest.param(forge({"alg": "none", "typ": "JWT"}, claims(), hs(SECRET)), id="alg-none-with-a-signature-RFC7518-3.6"),
    pytest.param(f"{segment({'alg': 'none'})}.{parts(GOOD)[1]}.{GOOD_SIGNATURE}", id="alg-none-old-signature-RFC8725-3.1"),
    pytest.param(forge({"typ": "JWT"}, claims(), hs(SECRET)), id="no-alg-RFC7515-4.1.1"),
    pytest.param(forge({"alg": "", "typ": "JWT"}, claims()), id="empty-alg-RFC7515-4.1.1"),
    pytest.param(forge({"alg": ["HS256"], "typ": "JWT"}, claims(), hs(SECRET)), id="alg-as-list-RFC7515-4.1.1"),
    pytest.param(forge({"alg": "HS256"}, claims()), id="empty-signature-RFC7515-5.2"),
    pytest.param(GOOD.rpartition(".")[0], id="no-signature-segment-RFC7515-7.1"),
    pytest.param(GOOD[:-4], id="truncated-signature-RFC7515-5.2"),
    pytest.param(GOOD[:-1], id="signature-one-char-short-RFC7515-5.2"),
    pytest.param(GOOD + "AA", id="signature-with-bytes-added-RFC7515-5.2"),
    pytest.param(GOOD + ".", id="four-segments-RFC7515-7.1"),
    pytest.param(resigned_payload(GOOD, user_id=OTHER), id="edited-user_id-old-signature-RFC7515-5.2"),
    pytest.param(resigned_payload(GOOD, exp=int(time.time()) + 10**8), id="edited-exp-old-signature-RFC7515-5.2"),
    pytest.param(resigned_payload(GOOD, refresh=True), id="edited-refresh-old-signature-RFC7515-5.2"),
    pytest.param(forge({"alg": "HS384", "typ": "JWT"}, claims(), hs(SECRET, hashlib.sha384)),
                 id="other-hmac-same-secret-RFC8725-3.1"),
    pytest.param(forge({"alg": "HS256", "typ": "JWT"}, claims(), hs(SECRET[:-1])),
                 id="secret-one-char-short-RFC7518-3.2"),
    pytest.param(forge({"alg": "HS256", "typ": "JWT"}, claims(), hs("")), id="empty-secret-RFC7518-3.2"),
]


@pytest.mark.parametrize("token", SIGNATURE_CASES)
async def test_forged_signatures_are_refused(shared: TestClient, upstream: TestServer, logs: Any,
                                             token: str) -> None:
    await refused(shared, upstream, token)
    assert_not_logged(logs, token)


@pytest.mark.parametrize("token", [
    pytest.param(GOOD, id="the-gateways-own-form"),
    pytest.param(valid(jti=..., sid=...), id="toutiao-backend-form-no-jti"),
    pytest.param(forge({"alg": "HS256", "kid": "default"}, claims(), hs(SECRET)), id="kid-default"),
])
async def test_valid_tokens_still_pass(shared: TestClient, upstream: TestServer, logs: Any, token: str) -> None:
    await passes(shared, upstream, token)
    assert_not_logged(logs, token)


# -- claims: types, ranges, times (RFC 7519 §4.1; the seed's user_id and refresh) ---------------------------

NOW = int(time.time())
CLAIM_CASES = [
    pytest.param(valid(exp=...), id="exp-missing-RFC7519-4.1.4"),
    pytest.param(valid(exp=str(NOW + 3600)), id="exp-string-RFC7519-4.1.4-NumericDate"),
    pytest.param(valid(exp=None), id="exp-null-RFC7519-4.1.4"),
    pytest.param(valid(exp=True), id="exp-boolean-RFC7519-4.1.4"),
    pytest.param(valid(exp=[NOW + 3600]), id="exp-list-RFC7519-4.1.4"),
    pytest.param(valid(exp=NOW - 1), id="exp-past-RFC7519-4.1.4"),
    pytest.param(valid(user_id=...), id="user_id-missing-seed"),
    pytest.param(valid(user_id=None), id="user_id-null-seed"),
    pytest.param(valid(user_id=str(USER)), id="user_id-string-seed"),
    pytest.param(valid(user_id=-USER), id="user_id-negative-seed"),
    pytest.param(valid(user_id=0), id="user_id-zero-seed"),
    pytest.param(valid(user_id=[USER]), id="user_id-list-seed"),
    pytest.param(valid(user_id={"id": USER}), id="user_id-object-seed"),
    pytest.param(valid(user_id=float(USER)), id="user_id-float-seed"),
    pytest.param(valid(user_id=True), id="user_id-boolean-seed"),
    pytest.param(valid(user_id=2**64), id="user_id-2**64-past-BIGINT-UNSIGNED"),
    pytest.param(valid(user_id=2**63), id="user_id-2**63-past-signed-64-bit"),
    pytest.param(valid(user_id=10**400), id="user_id-huge-integer"),
    pytest.param(valid(refresh="false"), id="refresh-string-false-seed"),
    pytest.param(valid(refresh=0), id="refresh-zero-seed"),
    pytest.param(valid(refresh=None), id="refresh-null-seed"),
    pytest.param(valid(refresh=...), id="refresh-missing-seed"),
    pytest.param(valid(iat=NOW + 3600), id="iat-future-RFC7519-4.1.6"),
    pytest.param(valid(nbf=NOW + 3600), id="nbf-future-RFC7519-4.1.5"),
    pytest.param(valid(nbf="0"), id="nbf-string-RFC7519-4.1.5"),
    pytest.param(valid(iat="0"), id="iat-string-RFC7519-4.1.6"),
]


@pytest.mark.parametrize("token", CLAIM_CASES)
async def test_ill_typed_or_untimely_claims_are_refused(shared: TestClient, upstream: TestServer, logs: Any,
                                                        token: str) -> None:
    await refused(shared, upstream, token)
    assert_not_logged(logs, token)


@pytest.mark.stores("embedded", "real")  # the id reaches the user store when the token lets it: both kinds
@pytest.mark.parametrize("user_id", [2**63 - 1, 2**64 - 1, 2**64])
async def test_out_of_range_user_ids_never_reach_a_500(shared: TestClient, upstream: TestServer,
                                                       user_id: int) -> None:
    """A signed token with an id no user can have (BIGINT UNSIGNED, SQLite's signed 64 bits): refused, never
    a driver's overflow error."""
    resp = await shared.get(REQUIRED, headers=bearer(valid(user_id=user_id)))
    assert resp.status in (401, 403) and "message" in await resp.json()
    assert upstream.app[RECEIVED] == []


@pytest.mark.parametrize("token", [
    pytest.param(valid(nbf=NOW - 60, iat=NOW - 60), id="nbf-and-iat-past"),
    pytest.param(valid(exp=NOW + 3600.5), id="exp-fractional-RFC7519-2-NumericDate"),
])
async def test_well_timed_claims_pass(shared: TestClient, upstream: TestServer, token: str) -> None:
    await passes(shared, upstream, token)


@pytest.mark.parametrize("token", [
    pytest.param(valid(refresh="false"), id="refresh-string-false"),
    pytest.param(valid(refresh=0), id="refresh-zero"),
    pytest.param(valid(refresh="true"), id="refresh-string-true"),
    pytest.param(valid(refresh=1), id="refresh-one"),
    pytest.param(valid(refresh=False), id="an-access-token"),
])
async def test_refresh_endpoint_wants_a_real_refresh_token(shared: TestClient, upstream: TestServer, logs: Any,
                                                           token: str) -> None:
    resp = await shared.put("/v1_0/authorizations", headers=bearer(token))
    assert (resp.status, await resp.json()) == (403, {"message": "Wrong refresh token."})
    assert upstream.app[RECEIVED] == []
    assert_not_logged(logs, token)


async def test_refresh_endpoint_takes_a_real_refresh_token(shared: TestClient, logs: Any) -> None:
    token = valid(refresh=True)
    resp = await shared.put("/v1_0/authorizations", headers=bearer(token))
    assert resp.status == 201 and set(await resp.json()) >= {"token"}
    assert_not_logged(logs, token)


async def test_a_refresh_token_on_a_route_is_403(shared: TestClient, upstream: TestServer) -> None:
    await refused(shared, upstream, valid(refresh=True), status=403, body={"message": "Do not use refresh token."})


# -- crit (RFC 7515 §4.1.11) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    pytest.param({"alg": "HS256", "crit": ["urn:example:unknown"], "urn:example:unknown": True},
                 id="crit-unknown-extension-RFC7515-4.1.11"),
    pytest.param({"alg": "HS256", "crit": ["exp"]}, id="crit-naming-a-registered-name-RFC7515-4.1.11"),
    pytest.param({"alg": "HS256", "crit": []}, id="crit-empty-list-RFC7515-4.1.11"),
    pytest.param({"alg": "HS256", "crit": "urn:example:unknown"}, id="crit-not-a-list-RFC7515-4.1.11"),
    pytest.param({"alg": "HS256", "crit": ["b64"], "b64": False}, id="crit-b64-false-RFC7797-3"),
])
async def test_critical_extensions_the_gateway_does_not_know_are_refused(shared: TestClient, upstream: TestServer,
                                                                         header: dict[str, Any]) -> None:
    await refused(shared, upstream, forge(header, claims(), hs(SECRET)))


# -- kid payloads (RFC 7515 §4.1.4; OWASP; RFC 8725 §3.10) --------------------------------------------------

KID_CASES = [
    pytest.param("../../../../../../dev/null", b"", id="kid-path-traversal-dev-null-OWASP-WSTG-JWT"),
    pytest.param("/dev/null", b"", id="kid-absolute-path-OWASP-WSTG-JWT"),
    pytest.param("..\\..\\..\\windows\\win.ini", b"", id="kid-backslash-traversal-OWASP-WSTG-JWT"),
    pytest.param("' OR 1=1 --", b"1", id="kid-sql-injection-RFC8725-3.10"),
    pytest.param("x' UNION SELECT 'attacker-key", b"attacker-key", id="kid-sql-union-key-RFC8725-3.10"),
    pytest.param("rs; id", b"attacker", id="kid-command-semicolon-RFC8725-3.10"),
    pytest.param("`id`", b"attacker", id="kid-command-backticks-RFC8725-3.10"),
    pytest.param("$(id)", b"attacker", id="kid-command-substitution-RFC8725-3.10"),
    pytest.param("http://127.0.0.1:1/key", b"attacker", id="kid-as-url-RFC8725-3.10"),
    pytest.param("", SECRET.encode(), id="kid-empty-RFC7515-4.1.4"),
    pytest.param("k" * 10_000, SECRET.encode(), id="kid-very-long-RFC7515-4.1.4"),
    pytest.param("default\x00", SECRET.encode(), id="kid-with-NUL-RFC7515-4.1.4"),
    pytest.param("DEFAULT", SECRET.encode(), id="kid-case-changed-RFC7515-4.1.4"),
    pytest.param(7, SECRET.encode(), id="kid-number-RFC7515-4.1.4"),
    pytest.param(["default"], SECRET.encode(), id="kid-list-RFC7515-4.1.4"),
    pytest.param({"kid": "default"}, SECRET.encode(), id="kid-object-RFC7515-4.1.4"),
    pytest.param(None, b"attacker", id="kid-null-attacker-key-RFC7515-4.1.4"),
    pytest.param(None, SECRET.encode(), id="kid-null-gateway-secret-RFC7515-4.1.4"),
]


@pytest.mark.parametrize("kid, key", KID_CASES)
async def test_kid_payloads_are_refused(either: TestClient, upstream: TestServer, logs: Any, kid: Any,
                                        key: bytes) -> None:
    token = forge({"alg": "HS256", "typ": "JWT", "kid": kid}, claims(), hs(key))
    await refused(either, upstream, token)
    assert_not_logged(logs, token)


# -- algorithm confusion: HS256 signed with a public key (keyed gateway) ------------------------------------

def public_forms(public: Any, jwk: dict[str, Any]) -> dict[str, bytes]:
    """The ways a public key is published, each tried as the HMAC secret."""
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    forms = {
        "pem": pem,
        "pem-no-final-newline": pem.rstrip(b"\n"),
        "der": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "jwk-json": json.dumps(jwk).encode(),
        "jwk-json-compact": json.dumps(jwk, separators=(",", ":")).encode(),
        "openssh": public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    }
    if isinstance(public, rsa.RSAPublicKey):
        forms["pkcs1-pem"] = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    return forms


CONFUSION = [
    pytest.param("rs", "RS256", id="HS256-with-RS256-public-key-CVE-2015-9235-CVE-2016-10555"),
    pytest.param("ed", "EdDSA", id="HS256-with-EdDSA-public-key-CVE-2022-29217"),
    pytest.param("es", "ES256", id="HS256-with-ES256-public-key-RFC8725-3.1"),
]


@pytest.mark.parametrize("kid, algorithm", CONFUSION)
async def test_public_keys_as_hmac_secrets_are_refused(keyed: TestClient, upstream: TestServer, keys: dict[str, Any],
                                                       kid: str, algorithm: str) -> None:
    """The public key exactly as the gateway publishes it (its JWKS) and in every PEM/SSH form, as the HMAC
    secret of HS256/384/512, with the key's kid, with none, and with the kid of another key."""
    jwks = {k["kid"]: k for k in (await (await keyed.get("/.well-known/jwks.json")).json())["keys"]}
    public = keys[algorithm][2].public_key()
    attempts = 0
    for form, secret in public_forms(public, jwks[kid]).items():
        for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)):
            for header_kid in (kid, None, "rs" if kid != "rs" else "ed"):
                header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
                if header_kid is not None:
                    header["kid"] = header_kid
                token = forge(header, claims(), hs(secret, digest))
                resp = await keyed.get(REQUIRED, headers=bearer(token))
                assert (resp.status, await resp.json()) == (401, MUST), (form, alg, header_kid)
                attempts += 1
    assert attempts >= 54 and upstream.app[RECEIVED] == []


@pytest.mark.parametrize("kid, algorithm, signer", [
    pytest.param("rs", "RS256", RSAAlgorithm(RSAAlgorithm.SHA256), id="RS256"),
    pytest.param("ed", "EdDSA", OKPAlgorithm(), id="EdDSA"),
    pytest.param("es", "ES256", ECAlgorithm(ECAlgorithm.SHA256), id="ES256"),
])
async def test_each_configured_key_still_verifies_its_own_tokens(keyed: TestClient, upstream: TestServer,
                                                                 keys: dict[str, Any], kid: str, algorithm: str,
                                                                 signer: Any) -> None:
    private = keys[algorithm][2]
    await passes(keyed, upstream, forge({"alg": algorithm, "kid": kid}, claims(),
                                        lambda message: signer.sign(message, private)))


async def test_a_keyed_token_with_the_algorithm_of_another_key_is_refused(keyed: TestClient, upstream: TestServer,
                                                                          keys: dict[str, Any]) -> None:
    """Signed correctly by the EdDSA key but naming the RS256 key's kid (RFC 8725 §3.1: the key pins its
    algorithm, the header does not choose it)."""
    private = keys["EdDSA"][2]
    token = forge({"alg": "EdDSA", "kid": "rs"}, claims(), lambda message: OKPAlgorithm().sign(message, private))
    await refused(keyed, upstream, token)


# -- ES256 psychic signatures (CVE-2022-21449) --------------------------------------------------------------

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize("signature", [
    pytest.param(bytes(64), id="r=s=0-raw-CVE-2022-21449-RFC8725-3.4"),
    pytest.param(bytes.fromhex("3006020100020100"), id="r=s=0-DER-CVE-2022-21449"),
    pytest.param(P256_ORDER.to_bytes(32, "big") * 2, id="r=s=n-CVE-2022-21449"),
    pytest.param(bytes(32) + (1).to_bytes(32, "big"), id="r=0-s=1-CVE-2022-21449"),
    pytest.param(b"", id="empty-RFC7518-3.4"),
    pytest.param(bytes(63), id="63-bytes-RFC7518-3.4"),
])
async def test_es256_psychic_signatures_are_refused(keyed: TestClient, upstream: TestServer,
                                                    signature: bytes) -> None:
    await refused(keyed, upstream, forge({"alg": "ES256", "kid": "es"}, claims(), signature))


# -- key-locating headers: jku, x5u, jwk, x5c (RFC 8725 §3.10, RFC 7515 §4.1.2-4.1.6, CVE-2018-0114) -------

class Listener:
    """A loopback server that counts the connections it is offered and keeps what they send."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/keys.json"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.received += await asyncio.wait_for(reader.read(4096), 2)
        except TimeoutError:
            pass
        writer.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def listener() -> Any:
    made = Listener()
    url = await made.start()
    yield made, url
    made.stop()


def attacker_certificate(key: rsa.RSAPrivateKey, url: str) -> bytes:
    """A self-signed certificate for the attacker's key whose issuer and CRL are fetched from `url`."""
    import datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "toutiao-gateway")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))]), critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(url)], None, None, None)]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def key_locating_tokens(url: str, attacker: rsa.RSAPrivateKey, real: dict[str, Any]) -> dict[str, str]:
    """Tokens whose header says where to find the key: at `url`, or embedded (the attacker's own key). Those
    signed with a key the gateway does hold would pass but for the header."""
    jwk = RSAAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    cert = base64.b64encode(attacker_certificate(attacker, url)).decode()  # x5c is base64, not base64url
    attacker_sign = lambda message: RSAAlgorithm(RSAAlgorithm.SHA256).sign(message, attacker)  # noqa: E731
    real_sign = lambda message: RSAAlgorithm(RSAAlgorithm.SHA256).sign(message, real["RS256"][2])  # noqa: E731
    rs = {"alg": "RS256", "kid": "rs"}
    return {
        "jku-hs256-gateway-secret-RFC8725-3.10": forge({"alg": "HS256", "jku": url}, claims(), hs(SECRET)),
        "x5u-hs256-gateway-secret-RFC8725-3.10": forge({"alg": "HS256", "x5u": url}, claims(), hs(SECRET)),
        "jku-rs256-gateway-key-RFC7515-4.1.2": forge({**rs, "jku": url}, claims(), real_sign),
        "x5u-rs256-gateway-key-RFC7515-4.1.5": forge({**rs, "x5u": url}, claims(), real_sign),
        "jku-attacker-key-RFC7515-4.1.2": forge({**rs, "jku": url}, claims(), attacker_sign),
        "jwk-embedded-CVE-2018-0114": forge({**rs, "jwk": jwk}, claims(), attacker_sign),
        "jwk-embedded-no-kid-CVE-2018-0114": forge({"alg": "RS256", "jwk": jwk}, claims(), attacker_sign),
        "jwk-with-x5u-RFC7517-4.6": forge({**rs, "jwk": {**jwk, "x5u": url}}, claims(), attacker_sign),
        "x5c-self-signed-with-aia-url-RFC7515-4.1.6": forge({**rs, "x5c": [cert]}, claims(), attacker_sign),
        "x5c-rs256-gateway-key-RFC7515-4.1.6": forge({**rs, "x5c": [cert]}, claims(), real_sign),
        "jku-null-RFC7515-4.1.2": forge({**rs, "jku": None}, claims(), real_sign),
    }


KEY_LOCATING = ["jku-hs256-gateway-secret-RFC8725-3.10", "x5u-hs256-gateway-secret-RFC8725-3.10",
                "jku-rs256-gateway-key-RFC7515-4.1.2", "x5u-rs256-gateway-key-RFC7515-4.1.5",
                "jku-attacker-key-RFC7515-4.1.2", "jwk-embedded-CVE-2018-0114", "jwk-embedded-no-kid-CVE-2018-0114",
                "jwk-with-x5u-RFC7517-4.6", "x5c-self-signed-with-aia-url-RFC7515-4.1.6",
                "x5c-rs256-gateway-key-RFC7515-4.1.6", "jku-null-RFC7515-4.1.2"]


@pytest.mark.parametrize("case", KEY_LOCATING)
async def test_key_locating_headers_are_refused_and_nothing_is_fetched(
        either: TestClient, upstream: TestServer, listener: tuple[Listener, str], keys: dict[str, Any],
        attacker_rsa: rsa.RSAPrivateKey, logs: Any, case: str) -> None:
    server, url = listener
    token = key_locating_tokens(url, attacker_rsa, keys)[case]
    await refused(either, upstream, token)
    await asyncio.sleep(0.05)  # room for a fetch made in the background, were there one
    assert (server.connections, server.received) == (0, b"")
    assert_not_logged(logs, token)


async def test_the_same_tokens_without_the_header_pass(keyed: TestClient, shared: TestClient, upstream: TestServer,
                                                       keys: dict[str, Any]) -> None:
    """The control for the table above: the header alone made the difference."""
    real = keys["RS256"][2]
    await passes(keyed, upstream, forge({"alg": "RS256", "kid": "rs"}, claims(),
                                        lambda message: RSAAlgorithm(RSAAlgorithm.SHA256).sign(message, real)))
    upstream.app[RECEIVED].clear()
    await passes(shared, upstream, forge({"alg": "HS256"}, claims(), hs(SECRET)))


# -- where the token comes from: one Authorization field, nothing else (RFC 6750 §2, RFC 9110 §5.3) ----------

def raw_get(path: str, *fields: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


@pytest.mark.parametrize("first, second", [
    pytest.param(b"Authorization: valid", b"Authorization: garbage", id="valid-then-garbage-RFC9110-11.6.2"),
    pytest.param(b"Authorization: garbage", b"Authorization: valid", id="garbage-then-valid-RFC9110-11.6.2-CVE-2021-32777"),
    pytest.param(b"Authorization: valid", b"Authorization: other-user", id="two-users-RFC9110-11.6.2-CVE-2021-32777"),
    pytest.param(b"Authorization: valid", b"Authorization: empty", id="valid-then-empty-RFC9110-11.6.2"),
    pytest.param(b"Authorization: empty", b"Authorization: empty", id="empty-twice-RFC9110-11.6.2"),
    pytest.param(b"Authorization: valid", b"Authorization: valid", id="the-same-token-twice-RFC9110-5.3"),
    pytest.param(b"Authorization: valid", b"authorization: other-user", id="second-in-lower-case-RFC9110-5.1"),
])
@pytest.mark.parametrize("path", [REQUIRED, "/v1_0/echo/with-auth", "/v1_0/echo/public"])
async def test_two_authorization_fields_are_refused(shared: TestClient, upstream: TestServer, logs: Any,
                                                    path: str, first: bytes, second: bytes) -> None:
    """Authorization holds one credential: with two, an upstream that reads the other one (the last, say)
    would act on a token the gateway never checked."""
    values = {b"valid": b"Bearer " + GOOD.encode(), b"garbage": b"Bearer not.a.token", b"empty": b"",
              b"other-user": b"Bearer " + valid(user_id=OTHER).encode()}
    fields = [line.split(b": ")[0] + b": " + values[line.split(b": ")[1]] for line in (first, second)]
    conn = await Conn.open(shared)
    conn.send(raw_get(path, *fields))
    status, headers, body = await conn.answer()
    assert (status, json.loads(body)) == (400, {"message": "Only one Authorization field is allowed."})
    assert headers["content-type"].startswith("application/json") and await conn.closed()
    conn.close()
    assert upstream.app[RECEIVED] == []
    assert_not_logged(logs, GOOD)


async def test_one_authorization_field_on_a_raw_connection_passes(shared: TestClient, upstream: TestServer) -> None:
    """The control for the table above, over the same raw connection."""
    conn = await Conn.open(shared)
    conn.send(raw_get(REQUIRED, b"Authorization: Bearer " + GOOD.encode(), b"X-Other: 1"))
    status, _, body = await conn.answer()
    conn.close()
    assert status == 200 and [v for n, v in json.loads(body)["headers"] if n.lower() == "x-user-id"] == [str(USER)]


@pytest.mark.parametrize("where", [
    pytest.param("query-token", id="query-token-RFC6750-2.3-OWASP-token-sidejacking"),
    pytest.param("query-access_token", id="query-access_token-RFC6750-2.3"),
    pytest.param("query-jwt", id="query-jwt-RFC6750-2.3"),
    pytest.param("cookie-token", id="cookie-token-OWASP-token-storage"),
    pytest.param("cookie-access_token", id="cookie-access_token-OWASP-token-storage"),
    pytest.param("cookie-Authorization", id="cookie-Authorization-OWASP-token-storage"),
    pytest.param("form-access_token", id="form-body-access_token-RFC6750-2.2"),
    pytest.param("x-access-token", id="x-access-token-header-RFC6750-2.1"),
    pytest.param("proxy-authorization", id="proxy-authorization-RFC9110-11.7.2"),
])
async def test_a_token_anywhere_but_authorization_is_never_accepted(shared: TestClient, upstream: TestServer,
                                                                    logs: Any, where: str) -> None:
    token = valid()
    path, headers, data = REQUIRED, {}, None
    kind, _, name = where.partition("-")
    if kind == "query":
        path = f"{REQUIRED}?{name}={token}"
    elif kind == "cookie":
        headers["Cookie"] = f"{name}={'Bearer%20' if name == 'Authorization' else ''}{token}"
    elif kind == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        data = f"access_token={token}".encode()
    elif where == "x-access-token":
        headers["X-Access-Token"] = token
    else:
        headers["Proxy-Authorization"] = f"Bearer {token}"
    resp = await shared.request("POST" if data else "GET", path, headers=headers, data=data)
    assert (resp.status, await resp.json()) == (401, MUST)
    assert upstream.app[RECEIVED] == []
    assert_not_logged(logs, token)  # the access log is on: its path never carries the query


# -- sizes ----------------------------------------------------------------------------------------------------

async def test_an_8_kib_valid_token_passes(shared: TestClient, upstream: TestServer, logs: Any) -> None:
    token = valid(padding="p" * 8000)
    assert 8 * 1024 <= len(token) < 16 * 1024
    await passes(shared, upstream, token)
    assert_not_logged(logs, token)


@pytest.mark.parametrize("token", [
    pytest.param(valid(padding="p" * 8000, user_id=OTHER)[:-2] + "xx", id="8-KiB-bad-signature-RFC7515-5.2"),
    pytest.param("a" * 8192, id="8-KiB-garbage-RFC7515-7.1"),
    pytest.param(f"{segment({'alg': 'HS256'})}.{'A' * 8200}.{GOOD_SIGNATURE}", id="8-KiB-payload-of-noise-RFC7515-7.1"),
])
async def test_8_kib_invalid_tokens_are_401(shared: TestClient, upstream: TestServer, token: str) -> None:
    await refused(shared, upstream, token)


@pytest.mark.parametrize("token", [
    pytest.param(valid(padding="p" * 48_000), id="64-KiB-valid-RFC6585-5"),
    pytest.param("a" * 65_536, id="64-KiB-garbage-RFC6585-5"),
    pytest.param(valid(padding="p" * 12_500), id="16-KiB-valid-over-one-field-RFC6585-5"),
])
async def test_oversized_tokens_are_431_or_401_never_500(shared: TestClient, upstream: TestServer, logs: Any,
                                                         token: str) -> None:
    conn = await Conn.open(shared)
    conn.send(raw_get(REQUIRED, b"Authorization: Bearer " + token.encode()))
    status, headers, body = await conn.answer()
    conn.close()
    assert status in (401, 431) and json.loads(body)["message"], body
    assert headers["content-type"].startswith("application/json")
    assert upstream.app[RECEIVED] == []
    assert_not_logged(logs, token)


@pytest.mark.parametrize("state", ["absent", "valid"])
async def test_nothing_of_a_token_is_logged_on_the_way_through(shared: TestClient, logs: Any, state: str) -> None:
    """Logins, refreshes and proxied calls at DEBUG with the access log on: no token text in any record."""
    pair = shared.server.gateway.tokens.issue_pair(USER)
    resp = await shared.get(REQUIRED, headers=bearer(pair.token) if state == "valid" else {})
    assert resp.status == (200 if state == "valid" else 401)
    resp = await shared.put("/v1_0/authorizations", headers=bearer(pair.refresh_token))
    fresh = await resp.json()
    assert resp.status == 201
    resp = await shared.delete("/v1_0/authorizations", headers=bearer(pair.refresh_token))
    assert resp.status == 204
    assert any(getattr(r, "access", None) for r in logs.records)  # the access log did write
    assert_not_logged(logs, pair.token, pair.refresh_token, *fresh.values())

