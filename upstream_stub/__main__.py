"""python -m upstream_stub --port 9000"""
from __future__ import annotations

import argparse
import ssl
from pathlib import Path

from aiohttp import web

from .app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="upstream_stub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM, chain included)")
    parser.add_argument("--tls-key", help="the certificate's key (PEM)")
    parser.add_argument("--tls-client-ca", help="require a client certificate signed by this CA (PEM)")
    parser.add_argument("--demo-log", type=Path,
                        help="demo mode: the gateway's log, whose development SMS codes the demo page shows")
    args = parser.parse_args()
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            context.load_verify_locations(cafile=args.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    web.run_app(create_app(args.demo_log), host=args.host, port=args.port, ssl_context=context, print=lambda *_: None)


if __name__ == "__main__":
    main()
