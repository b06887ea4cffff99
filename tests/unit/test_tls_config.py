"""`server.tls` and `upstreams.NAME.tls`: every problem reported at once, warnings for what is risky."""
from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.config import parse_config
from tests.certs import Authority
from tests.factories import config_dict
from tests.unit.test_config import problems


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


def test_server_tls_makes_a_context_that_refuses_old_versions(ca: Authority) -> None:
    pem = ca.issue("gw")
    config = parse_config(config_dict(server={"tls": {"cert_file": pem.cert, "key_file": pem.key}}), env={})
    tls = config.server.tls
    assert tls is not None and config.server.scheme == "https"
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.context.verify_mode == ssl.CERT_NONE
    assert config.warnings == ()
    config = parse_config(config_dict(server={"tls": {
        "cert_file": pem.cert, "key_file": pem.key, "min_version": 1.3, "client_ca_file": ca.ca_file,
        "client_auth": "optional"}}), env={})
    assert config.server.tls is not None
    assert config.server.tls.context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert config.server.tls.context.verify_mode == ssl.CERT_OPTIONAL


def test_every_server_tls_problem_at_once(ca: Authority, tmp_path: Path) -> None:
    found = problems(config_dict(server={"tls": {"cert_file": "", "min_version": "1.1", "client_auth": "required",
                                                 "ciphers": 3, "color": "blue"}}))
    assert "server.tls.color: unknown key" in found
    assert "server.tls.cert_file: is required: a PEM file" in found
    assert "server.tls.key_file: is required: a PEM file" in found
    assert any(p.startswith("server.tls.min_version: must be 1.2 or 1.3") for p in found)
    assert any(p.startswith("server.tls.client_auth: required needs client_ca_file") for p in found)
    assert "server.tls.ciphers: OpenSSL knows no cipher in '3'" in found
    assert len(found) == 6
    one, other = ca.issue("one"), ca.issue("other")
    mismatched = problems(config_dict(server={"tls": {"cert_file": one.cert, "key_file": other.key}}))
    assert mismatched == ["server.tls: the certificate, key or CA file does not load: KEY_VALUES_MISMATCH"]
    missing = problems(config_dict(server={"tls": {"cert_file": str(tmp_path / "nope.pem"), "key_file": one.key}}))
    assert missing[0].startswith("server.tls: the certificate, key or CA file does not load:")
    assert "No such file or directory" in missing[0]
    lonely_ca = problems(config_dict(server={"tls": {"cert_file": one.cert, "key_file": one.key,
                                                     "client_ca_file": ca.ca_file}}))
    assert lonely_ca == ["server.tls.client_ca_file: is set, but client_auth is none: set it to optional or required"]


@pytest.mark.parametrize("days, expired, warned", [(90, False, None), (5, False, "expires in 4 day(s)"),
                                                   (0, True, "EXPIRED")])
def test_a_certificate_near_its_end_is_a_warning(ca: Authority, days: int, expired: bool, warned: str | None
                                                 ) -> None:
    pem = ca.issue("gw", days=days, expired=expired)
    config = parse_config(config_dict(server={"tls": {"cert_file": pem.cert, "key_file": pem.key}}), env={})
    if warned is None:
        assert config.warnings == ()
    else:
        assert len(config.warnings) == 1
        assert config.warnings[0].startswith("server.tls.cert_file: the certificate") and warned in config.warnings[0]


def test_upstream_tls(ca: Authority) -> None:
    client = ca.issue("client", client=True)
    raw = config_dict("https://news.internal:8443", upstreams={"news": {
        "targets": ["https://news.internal:8443", "http://127.0.0.1:9000"],
        "tls": {"ca_file": ca.ca_file, "server_name": "news", "cert_file": client.cert, "key_file": client.key}}})
    tls = parse_config(raw, env={}).upstreams["news"].tls
    assert (tls.ca_file, tls.server_name, tls.verify, tls.cert_file) == (ca.ca_file, "news", True, client.cert)
    unverified = parse_config(config_dict(upstreams={"news": {"targets": ["https://x:1"], "tls": {"verify": False}}}),
                              env={})
    assert [w.split(":")[0] for w in unverified.warnings] == ["upstreams.news.tls.verify is off"]
    assert parse_config(config_dict(upstreams={"news": {"targets": ["https://x"]}}), env={}).warnings == ()


def test_every_upstream_tls_problem_at_once(ca: Authority, tmp_path: Path) -> None:
    client = ca.issue("client", client=True)
    found = problems(config_dict(upstreams={
        "plain": {"targets": ["http://127.0.0.1:1"], "tls": {"ca_file": ca.ca_file}},
        "half": {"targets": ["https://x:1"], "tls": {"cert_file": client.cert}},
        "broken": {"targets": ["https://x:1"], "tls": {"ca_file": str(tmp_path / "missing.pem")}},
        "odd": {"targets": ["ftp://x:1"], "tls": {"verify": "sometimes", "pin": 1}},
    }, routes=[]))
    assert "upstreams.plain.tls: is set, but no target is https://" in found
    assert "upstreams.half.tls: cert_file and key_file go together: a client certificate and its key" in found
    assert any(p.startswith("upstreams.broken.tls: the CA file, certificate or key does not load") for p in found)
    assert "upstreams.odd.targets[0]: must be http://host:port or https://host:port, got 'ftp://x:1'" in found
    assert "upstreams.odd.tls.pin: unknown key" in found
    assert any(p.startswith("upstreams.odd.tls.verify:") for p in found)


def test_an_encrypted_key_or_unknown_ciphers_are_problems_not_a_prompt(ca: Authority, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = ca.issue("gw")
    key = serialization.load_pem_private_key(Path(pem.key).read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    found = problems(config_dict(server={"tls": {"cert_file": pem.cert, "key_file": str(locked)}}))
    assert len(found) == 1 and "the key is encrypted" in found[0]
    found = problems(config_dict(server={"tls": {"cert_file": pem.cert, "key_file": pem.key, "ciphers": "NOPE-NONE"}}))
    assert found == ["server.tls.ciphers: OpenSSL knows no cipher in 'NOPE-NONE'"]
