"""The README's first command: scripts/demo starts everything and its walkthrough works as printed."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.servers import free_port, require_binary

ROOT = Path(__file__).parents[2]


def test_the_printed_walkthrough_works_as_written() -> None:
    require_binary("curl", "curl")
    # scripts/test has just installed the project into .venv; installing it again under the running tests is
    # needless (the install step itself is the one scripts/test runs).
    env = {**os.environ, "DEMO_PORT": str(free_port()), "DEMO_STUB_PORT": str(free_port()),
           "DEMO_ADMIN_PORT": str(free_port()), "DEMO_SKIP_INSTALL": "1"}
    demo = subprocess.Popen(["scripts/demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert demo.stdout is not None
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        printed = "".join(lines)
        assert "Press Ctrl-C" in printed, printed
        walkthrough = printed.split("Paste these into another terminal", 1)[1].split("Press Ctrl-C")[0]
        walkthrough = walkthrough.split("\n", 1)[1]
        result = subprocess.run(["bash", "-e", "-c", walkthrough], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(20)
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert '{"mobile": "13911111111"}  -> 200' in out
    assert '"refresh_token"' in out
    assert "HTTP/1.1 401 Unauthorized" in out and '{"message": "User must be authorized."}' in out
    assert re.search(r'"name": "user \d+"}  -> 200', out)
    assert '{"message": "Do not use refresh token."}  -> 403' in out
    assert re.search(r'\{"token": "[^"]+"}  -> 201', out)  # the refresh
    assert "\n204\n" in out and '{"message": "Wrong refresh token."}  -> 403' in out
    assert '{"message": "User must be authorized."}  -> 401\n' in out  # logged out
    assert '{"status": "ready"}  -> 200' in out
    # the walkthrough's own requests, counted: one login by SMS code, one refresh, and on the protected
    # route one ok, one missing token, one refresh token and one revoked (and the public route the demo
    # called to see that the gateway was up)
    counted = dict(line.rsplit(" ", 1) for line in out.splitlines() if line.startswith("gateway_"))
    assert counted == {
        'gateway_auth_decisions_total{result="anonymous"}': "1.0",
        'gateway_auth_decisions_total{result="ok"}': "1.0",
        'gateway_auth_decisions_total{result="missing"}': "1.0",
        'gateway_auth_decisions_total{result="refresh_token"}': "1.0",
        'gateway_auth_decisions_total{result="revoked"}': "1.0",
        'gateway_logins_total{method="sms",result="ok"}': "1.0",
        'gateway_refreshes_total{result="ok"}': "1.0",
        'gateway_refreshes_total{result="invalid"}': "1.0",
    }
