"""A 1 GB upload and a 1 GB download through a gateway process, measuring its memory."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
import yaml

from tests.factories import config_dict
from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).parents[2]
GIB = 1024**3
LIMIT = 64 * 1024**2


def rss(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    port, stub_port = free_port(), free_port()
    raw = config_dict(f"http://127.0.0.1:{stub_port}", database_url=f"sqlite:///{tmp_path}/gw.db")
    raw["server"]["port"] = port
    raw["routes"] = [{"path": "/", "upstream": "news", "auth": "public"}]
    raw["upstreams"]["news"]["timeouts"] = {"connect": "5s", "read": "60s"}
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(raw))
    stub = subprocess.Popen([sys.executable, "-m", "upstream_stub", "--port", str(stub_port)], cwd=ROOT)
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(tmp_path / "gw.yaml")], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(stub_port)
    wait_for_port(port)
    return stub, gateway, f"http://127.0.0.1:{port}"


@pytest.mark.slow
async def test_one_gigabyte_each_way_in_bounded_memory(tmp_path: Path) -> None:
    stub, gateway, url = start(tmp_path)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            async with session.get(f"{url}/v1_0/channels") as resp:  # warm up: imports, pools, first request
                assert resp.status == 200
            baseline, hwm_before = rss(gateway.pid), rss(gateway.pid, "VmHWM")
            peak = [baseline]

            async def sample() -> None:
                while True:
                    peak[0] = max(peak[0], rss(gateway.pid))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            received = 0
            async with session.get(f"{url}/_stub/bytes?n={GIB}") as resp:
                assert resp.status == 200 and resp.content_length == GIB
                async for chunk in resp.content.iter_chunked(1 << 20):
                    received += len(chunk)
            assert received == GIB

            async def upload() -> AsyncIterator[bytes]:
                block = b"u" * (1 << 20)
                for _ in range(1024):
                    yield block

            async with session.post(f"{url}/v1_0/echo/upload", data=upload(),
                                    headers={"Content-Length": str(GIB)}) as resp:
                assert resp.status == 200 and (await resp.json())["body_length"] == GIB
            sampler.cancel()
        hwm_after = rss(gateway.pid, "VmHWM")
        # VmHWM also remembers start-up; it counts only if moving the bodies set a new high.
        highest = max(peak[0], hwm_after if hwm_after > hwm_before else 0)
        growth = highest - baseline
        print(f"gateway RSS {baseline / 2**20:.1f} MiB before; peak {highest / 2**20:.1f} MiB "
              f"(+{growth / 2**20:.1f} MiB) moving 1 GiB down and 1 GiB up")
        assert growth < LIMIT
    finally:
        for proc in (gateway, stub):
            proc.terminate()
            proc.wait(20)
