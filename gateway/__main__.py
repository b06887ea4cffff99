"""python -m gateway: the command line (cli/main.py)."""
from __future__ import annotations

from .cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
