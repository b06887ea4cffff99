"""python -m upstream_stub --port 9000"""
from __future__ import annotations

import argparse

from aiohttp import web

from .app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="upstream_stub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port, print=lambda *_: None)


if __name__ == "__main__":
    main()
