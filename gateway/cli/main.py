"""Command line: run (the default), check-config, migrate, users."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import socket
import sys

from .. import logs
from ..config import Config, ConfigError, load_config

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "token" and args.token is None and len(extra) == 1 and extra[0][:1] != "-":
        args.token, extra = extra[0], []  # TOKEN after the options: `token inspect --config F TOKEN`
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # migrate touches the database alone: it needs no JWT secret
    dev = getattr(args, "dev", False) or args.command == "migrate"
    try:
        config = load_config(args.config, dev=dev)
    except ConfigError as exc:
        _print_problems(args.config, exc)
        return EXIT_CONFIG
    command = args.command or "run"
    if command == "check-config":
        print(f"{args.config}: ok ({len(config.routes)} routes, {len(config.upstreams)} upstreams)")
        for warning in config.warnings:
            print(f"  warning: {warning}")
        return 0
    if command == "migrate":
        return asyncio.run(_migrate(config))
    if command == "users":
        from .users import run_users_command

        return asyncio.run(run_users_command(config, args.action, args.user))
    if command == "routes":
        from .inspect import routes_command

        return routes_command(config)
    if command == "token":
        from .inspect import token_command

        return token_command(config, args.token)
    return _run(config, dev=dev, worker=getattr(args, "worker", None), listen_fd=getattr(args, "listen_fd", None),
                table_fd=getattr(args, "table_fd", None), metrics_dir=getattr(args, "metrics_dir", None))


def _print_problems(source: str, exc: ConfigError) -> None:
    print(f"{source}: configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    default_config = os.environ.get("GATEWAY_CONFIG", "gateway.yaml")
    parser = argparse.ArgumentParser(prog="toutiao-gateway", description="Authentication gateway for toutiao.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="path to gateway.yaml (env GATEWAY_CONFIG)")
    # accepted before the subcommand or after it: `--dev check-config` and `check-config --dev` alike
    common.add_argument("--dev", action="store_true", default=argparse.SUPPRESS,
                        help="development mode: make up a random JWT secret when none is configured")
    parser.add_argument("--config", default=default_config, help="path to gateway.yaml (env GATEWAY_CONFIG)")
    parser.add_argument("--dev", action="store_true",
                        help="development mode: make up a random JWT secret when none is configured")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", parents=[common], help="serve (the default)")
    # set by the supervisor for its workers: their index, the shared listening socket and the workers' table
    run.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--table-fd", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--metrics-dir", default=None, help=argparse.SUPPRESS)
    sub.add_parser("check-config", parents=[common], help="validate the configuration and exit")
    sub.add_parser("migrate", parents=[common], help="create the user tables (idempotent)")
    users = sub.add_parser("users", parents=[common], help="set-password, revoke, disable or enable a user")
    users.add_argument("action", choices=["set-password", "revoke", "disable", "enable"])
    users.add_argument("user", metavar="USER", help="a mobile, an account or a user id")
    sub.add_parser("routes", parents=[common], help="the route table, in the order the gateway tries it")
    token = sub.add_parser("token", parents=[common], help="inspect: is a token valid here, and if not, why")
    token.add_argument("action", choices=["inspect"])
    token.add_argument("token", nargs="?", metavar="TOKEN", help="the token (read from stdin when absent)")
    return parser


def _run(config: Config, *, dev: bool, worker: int | None, listen_fd: int | None = None,
         table_fd: int | None = None, metrics_dir: str | None = None) -> int:
    logs.configure(config.server.log_level, config.server.log_format)
    log = logging.getLogger("gateway")
    if config.jwt.generated and not worker:
        log.warning("=" * 72)
        log.warning("DEVELOPMENT MODE: jwt.secret was not set, so a random one was made up.")
        log.warning("Tokens issued now will NOT survive a restart. Never run like this in production.")
        log.warning("=" * 72)
    if worker is None:  # the supervisor, or the one process: once, not once per worker
        for warning in config.warnings:
            log.warning("%s", warning)
        _raise_descriptor_limit(config.server.max_connections, log)  # the workers inherit it
    workers = config.server.workers
    if workers > 1 and worker is None:
        from ..server.supervisor import Supervisor

        with asyncio.Runner(loop_factory=_new_event_loop) as runner:
            return runner.run(Supervisor(config, dev=dev).run())
    from ..server.listener import WorkerTable
    from ..server.serving import Server, bind, with_worker_id

    if listen_fd is not None and table_fd is not None and worker is not None:  # a worker of the supervisor
        sock = socket.socket(fileno=listen_fd)
        table: WorkerTable | None = WorkerTable(table_fd, worker)
    else:
        sock, table = bind(config.server.host, config.server.port), None
    server = Server(with_worker_id(config, worker or 0), dev=dev, worker=worker or 0, table=table,
                    metrics_dir=metrics_dir)
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        try:
            runner.run(server.run(sock))
        except ConfigError as exc:  # a file read at start (a certificate) changed since it was checked
            _print_problems(config.source, exc)
            return EXIT_CONFIG
    return 0


def _raise_descriptor_limit(max_connections: int, log: logging.Logger) -> None:
    """Each client connection may hold an upstream connection too: the soft limit on open files goes up to
    what `max_connections` needs, as far as the hard limit allows (as Go's runtime and nginx's
    worker_rlimit_nofile do)."""
    needed = 2 * max_connections + 256  # and the stores, the listeners, the logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # over the kernel's fs.nr_open, say, with no hard limit
            wanted = soft
        if wanted < needed:
            log.warning("server.max_connections %d needs about %d open files; the limit is %d (raise it: "
                        "ulimit -n, or LimitNOFILE= in a systemd unit)", max_connections, needed, wanted)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop does not build everywhere; the stdlib loop is correct, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _migrate(config: Config) -> int:
    from ..errors import ServiceUnavailable
    from ..stores.databases import open_user_store

    try:
        users = await open_user_store(config.database.url, 1)
        try:
            await users.migrate()
        finally:
            await users.close()
    except (ServiceUnavailable, OSError) as exc:
        print(f"migrate: database unavailable: {exc}", file=sys.stderr)
        return 1
    print("migrate: user_basic and user_profile are in place")
    return 0
