"""`server.workers: N`: the workers' metrics, added up by the supervisor.

Each worker writes a snapshot of its metrics to a file of its own
(`<pid>.json` in a directory the supervisor made) once a second and when it
stops; the file is replaced whole (write, then rename), so a reader never
sees half of one. The supervisor adds up the files when /metrics is asked:
counters and histograms over every worker that ever ran (a worker that
exited leaves its last counts behind, so no sum goes down), gauges over the
workers alive now. The numbers are at most a second old, and a worker that
is killed outright loses what it counted in its last second.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from ..metrics import Metrics, Snapshot, merge

log = logging.getLogger("gateway.admin")
FLUSH = 1.0  # seconds between a worker's snapshots
STALE = 5.0  # a live worker whose snapshot is older than this is not serving as it should


class SnapshotWriter:
    """In a worker."""

    def __init__(self, directory: str, metrics: Metrics) -> None:
        self._path = Path(directory) / f"{os.getpid()}.json"
        self._metrics = metrics

    def write(self) -> None:
        data = json.dumps(self._metrics.snapshot().to_json())
        partial = self._path.with_suffix(".partial")
        try:
            partial.write_text(data)
            os.replace(partial, self._path)
        except OSError as exc:  # the supervisor is gone, or the disk is full: the next write tries again
            log.warning("could not write the metrics for the supervisor: %s", exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH)
            self.write()


class WorkerSnapshots:
    """In the supervisor: the snapshots of its workers, alive and exited."""

    def __init__(self, directory: str) -> None:
        self._directory = Path(directory)
        self._exited = Snapshot({}, {}, {})  # what exited workers counted, added up

    def _read(self, pid: int) -> tuple[Snapshot, float] | None:
        path = self._directory / f"{pid}.json"
        try:
            data = json.loads(path.read_text())
            return Snapshot.from_json(data), path.stat().st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, AssertionError) as exc:
            log.warning("the metrics of worker pid %d are unreadable: %s", pid, exc)
            return None

    def exited(self, pid: int) -> None:
        """Keep what an exited worker counted; its gauges go with it."""
        read = self._read(pid)
        if read is not None:
            self._exited = merge([self._exited, read[0]], gauges_from=[])
        (self._directory / f"{pid}.json").unlink(missing_ok=True)

    def live(self, pids: list[int]) -> tuple[list[Snapshot], list[Snapshot]]:
        """The snapshots of the workers alive now, and those of them written in the last STALE seconds."""
        now, every, fresh = time.time(), [], []
        for pid in pids:
            read = self._read(pid)
            if read is not None:
                every.append(read[0])
                if now - read[1] < STALE:
                    fresh.append(read[0])
        return every, fresh

    def total(self, pids: list[int]) -> Snapshot:
        """Counters of every worker, exited ones included; gauges of the live workers' fresh snapshots."""
        every, fresh = self.live(pids)
        return merge([self._exited, *every], gauges_from=fresh)
