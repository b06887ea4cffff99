from __future__ import annotations

import ipaddress

import pytest

from gateway.auth.mobile import normalize_mobile
from gateway.client_ip import client_ip

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


@pytest.mark.parametrize(
    "peer, forwarded, expected",
    [
        ("203.0.113.5", ["1.2.3.4"], "203.0.113.5"),             # untrusted peer: its XFF is ignored
        ("10.0.0.1", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2"], "1.2.3.4"),  # right to left, skipping our proxies
        ("10.0.0.1", ["6.6.6.6", "1.2.3.4"], "1.2.3.4"),          # several headers are one list
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["garbage, 1.2.3.4"], "1.2.3.4"),
        ("10.0.0.1", ["1.2.3.4, garbage"], "10.0.0.1"),
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
        ("127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_client_ip(peer: str, forwarded: list[str], expected: str) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_ip("10.0.0.1", ["1.2.3.4"], ()) == "10.0.0.1"


@pytest.mark.parametrize(
    "raw, expected",
    [("13911111111", "13911111111"), ("+86 139 1111 1111", "13911111111"), ("+8613911111111", "13911111111"),
     ("008613911111111", "13911111111"), ("8613911111111", "13911111111"), ("139-1111-1111", "13911111111"),
     ("１３９１１１１１１１１", "13911111111"), ("＋８６１３９１１１１１１１１", "13911111111"),
     ("12911111111", None), ("1391111111", None), ("+8713911111111", None), ("١٣٩١١١١١١١١", None), ("", None)],
)
def test_normalize_mobile(raw: str, expected: str | None) -> None:
    assert normalize_mobile(raw) == expected
