"""The bench keeps working: every case for a second, with small counts. No timing is asserted."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import require_binary

ROOT = Path(__file__).parents[2]
SYSTEMS = ("haproxy", "nginx", "gateway public", "gateway required", "gateway required, 2 workers",
           "gateway required, metrics on", "gateway required, access log on",
           "gateway login", "seed login (Flask, gunicorn)", "10 routes", "100 routes", "1 token", "100 tokens")

pytestmark = pytest.mark.stores("embedded")  # the bench starts its own servers


def test_the_bench_measures_every_case_and_writes_its_report(tmp_path: Path) -> None:
    for binary, package in (("wrk", "wrk"), ("haproxy", "haproxy"), ("nginx", "nginx-light"),
                            ("redis-server", "redis-server"), ("mariadbd", "mariadb-server")):
        require_binary(binary, package)
    out = tmp_path / "PERFORMANCE.md"
    result = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--seconds", "1", "--rounds", "1",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    for heading in ("## Targets", "### Data path", "### The cost of metrics", "### p99 latency", "### Login",
                    "### Growth", "### Idle"):
        assert heading in text
    for system in SYSTEMS:  # each measured: a row with a positive figure
        row = re.search(rf"^\| {re.escape(system)} \| ([\d,]+) \|", text, re.MULTILINE)
        assert row and int(row.group(1).replace(",", "")) > 0, system
    assert len(re.findall(r"\| (?:yes|\*\*no\*\*) \|$", text, re.MULTILINE)) == 9
    assert (tmp_path / "performance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
