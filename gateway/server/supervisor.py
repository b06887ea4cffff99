"""`server.workers: N`: N worker processes on one listening socket, kept alive.

The supervisor runs no app itself. It makes the listening socket and the
workers' table (listener.py), starts the workers with both, restarts one that
dies, passes SIGHUP (reload) and SIGTERM (drain and stop) on to all of them,
and exits when they have stopped. Connections that arrive while a worker
restarts wait in the shared queue for the others.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from ..config import Config
from .listener import WorkerTable
from .serving import bind

log = logging.getLogger("gateway.supervisor")
RESTART_DELAY = 1.0


class Supervisor:
    def __init__(self, config: Config, *, dev: bool) -> None:
        self.config = config
        self.env = dict(os.environ)
        if config.jwt.generated:  # every worker must sign with the same made-up secret
            self.env["GATEWAY_JWT_SECRET"] = config.jwt.signing_key.signing
        self.dev = dev
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.sock = bind(config.server.host, config.server.port)  # the first worker that can serve listens
        self.table = WorkerTable.create(config.server.workers)

    def command(self, index: int) -> list[str]:
        args = [sys.executable, "-m", "gateway", "run", "--config", self.config.source, "--worker", str(index),
                "--listen-fd", str(self.sock.fileno()), "--table-fd", str(self.table.fd)]
        return args + (["--dev"] if self.dev else [])

    def start(self, index: int) -> None:
        self.table.clear(index)  # until the worker serves, the others take every connection
        self.workers[index] = subprocess.Popen(self.command(index), env=self.env,
                                               pass_fds=(self.sock.fileno(), self.table.fd))
        log.info("worker %d started (pid %d)", index, self.workers[index].pid)

    def signal_all(self, signum: int) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGHUP, lambda *_: self.signal_all(signal.SIGHUP))
        signal.signal(signal.SIGTERM, lambda *_: self._stop())
        signal.signal(signal.SIGINT, lambda *_: self._stop())
        for index in range(self.config.server.workers):
            self.start(index)
        while not self.stopping:
            for index, proc in list(self.workers.items()):
                if proc.poll() is not None and not self.stopping:
                    log.error("worker %d exited with %s; restarting it", index, proc.returncode)
                    self.table.clear(index)
                    time.sleep(RESTART_DELAY)
                    self.start(index)
            time.sleep(0.1)
        deadline = time.monotonic() + self.config.server.shutdown_timeout + 10
        for proc in self.workers.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        self.sock.close()
        self.table.close()
        log.info("all workers stopped")
        return 0

    def _stop(self) -> None:
        self.stopping = True
        self.signal_all(signal.SIGTERM)
