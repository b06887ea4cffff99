"""The operator's look-only commands: `routes` and `token inspect`, run as processes."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.factories import SECRET, config_dict, make_token
from tests.processes import ROOT, users_command


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_routes_lists_the_table_in_the_order_it_is_tried(tmp_path: Path) -> None:
    raw = config_dict("http://127.0.0.1:9000")
    raw["routes"] = [{"path": "/", "upstream": "news", "auth": "required"},
                     {"path": "/v1_0/articles", "upstream": "news", "auth": {"GET": "optional", "*": "required"},
                      "limits": [{"rate": "10/minute", "key": "ip"}], "timeouts": {"total": "9s"}},
                     {"path": "/v1_0", "upstream": "news", "auth": "public"}]
    result = subprocess.run([*_gateway(), "routes", "--config", str(write(tmp_path, raw))], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines[1:]] == ["/v1_0/articles", "/v1_0", "/"]  # longest prefix first
    assert "GET optional, others required" in lines[1] and "10 per 1 minute by ip" in lines[1]
    assert "total 9s" in lines[1] and "http://127.0.0.1:9000" in lines[1]
    assert "all public" in lines[2] and "all required" in lines[3]


def _gateway() -> list[str]:
    return [sys.executable, "-m", "gateway"]


def inspect(config: Path, token: str, *, stdin: bool = False) -> Any:
    args = [*_gateway(), "token", "inspect", "--config", str(config)] + ([] if stdin else [token])
    return subprocess.run(args, input=f"Bearer {token}\n" if stdin else "", capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


async def test_token_inspect_says_exactly_why_a_token_is_refused(tmp_path: Path, store_urls: dict[str, str]
                                                                  ) -> None:
    from gateway.stores.databases import open_user_store

    config = write(tmp_path, config_dict(**store_urls))
    users = await open_user_store(store_urls["database_url"], 1)
    try:
        await users.register(4242, "13900004242")
    finally:
        await users.close()
    good = make_token(4242, jti="a-session-id", sid="a-session-id")
    result = await asyncio.to_thread(inspect, config, good, stdin=True)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("valid: yes"), result.stdout + result.stderr
    assert '"user_id": 4242' in result.stdout and "time left: 59m" in result.stdout
    assert good.split(".")[2] not in result.stdout + result.stderr  # never the signature
    cases = [
        (make_token(4242, ttl=-120), "expired:", "valid: no"),
        (make_token(4242, secret=SECRET[::-1]), "valid: no: bad signature", ""),
        (make_token(4242, refresh=True), "valid: no: a refresh token", ""),
        (make_token(77), "valid: no: user 77 does not exist", ""),
        ("not-a-token", "valid: no: malformed", ""),
        (make_token(4242, headers={"jku": "http://127.0.0.1:9/keys"}), "valid: no: refused header", ""),
    ]
    for token, expected, also in cases:
        result = await asyncio.to_thread(inspect, config, token)
        assert result.returncode == 1 and expected in result.stdout and also in result.stdout, \
            (expected, result.stdout, result.stderr)
    await asyncio.to_thread(users_command, config, "disable", "4242")
    result = await asyncio.to_thread(inspect, config, good)
    assert result.returncode == 1 and "valid: no: user 4242 is disabled" in result.stdout
    if store_urls["redis_url"] == "memory://":
        assert "revocation: not checked" in result.stdout
        return
    await asyncio.to_thread(users_command, config, "enable", "4242")
    await asyncio.to_thread(users_command, config, "revoke", "4242")
    result = await asyncio.to_thread(inspect, config, good)
    assert result.returncode == 1 and "valid: no: revoked" in result.stdout, result.stdout + result.stderr
