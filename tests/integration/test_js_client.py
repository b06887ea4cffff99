"""clients/js under Node's own test runner, against real gateways that its tests start (clients/js/test/)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import require_binary

pytestmark = pytest.mark.stores("embedded")  # the Node tests start their own gateways, on memory://
ROOT = Path(__file__).parents[2]


def test_the_js_client_passes_its_node_tests() -> None:
    node = require_binary("node", "nodejs")
    result = subprocess.run([node, "--test", "clients/js/test/"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "GATEWAY_PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 9 and "# fail 0" in result.stdout
