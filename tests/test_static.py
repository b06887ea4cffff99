"""The type checker and the linter, as part of the test command."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_mypy_finds_no_type_errors() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", "gateway", "upstream_stub", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_security_and_reliability_docs_name_tests_that_exist() -> None:
    """docs/SECURITY.md and docs/RELIABILITY.md prove each promise by naming its test: every module and
    test function they name must exist, so that a renamed or deleted test cannot leave a promise unproven."""
    import re

    named = 0
    for doc in ("SECURITY.md", "RELIABILITY.md"):
        text = (ROOT / "docs" / doc).read_text()
        module = None
        for match in re.finditer(r"`(?:tests/(?:unit|integration)/)?(test_\w+\.py)?(?:::)?(test_\w+)?`|`::(test_\w+)`",
                                 text):
            file, function, sibling = match.groups()
            if file:
                found = list(ROOT.glob(f"tests/**/{file}"))
                assert found, f"{doc} names {file}, which does not exist"
                module = found[0].read_text()
            name = function or sibling
            if name:
                assert module is not None and re.search(rf"^(async )?def {name}\(", module, re.M), \
                    f"{doc} names {name}, which its module does not define"
            named += 1
    assert named > 100
