"""Active health checks: each target of an upstream is probed every `interval`.

A target turns unhealthy after `unhealthy_threshold` failed probes in a row
and healthy again after `healthy_threshold` good ones (any status below 500).
Targets start healthy, so a gateway serves at once.
"""
from __future__ import annotations

import asyncio
import logging

import aiohttp

from ..config.model import HealthCheckConfig
from .balancer import Target
from .upstream import Upstream

log = logging.getLogger("gateway.proxy.health")


class HealthChecker:
    def __init__(self, upstream: Upstream, config: HealthCheckConfig, session: aiohttp.ClientSession) -> None:
        self._upstream = upstream.name
        self._targets = upstream.targets
        self._pools = upstream.pools  # an https target is probed with the TLS settings its requests use
        self._config = config
        self._session = session
        self._streaks = {id(t): 0 for t in self._targets}  # > 0: good probes in a row, < 0: bad ones

    async def run(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(target) for target in self._targets))
            await asyncio.sleep(self._config.interval)

    async def probe(self, target: Target) -> None:
        good = await self._ok(target)
        streak = self._streaks[id(target)]
        streak = max(streak, 0) + 1 if good else min(streak, 0) - 1
        self._streaks[id(target)] = streak
        if target.healthy and streak <= -self._config.unhealthy_threshold:
            target.healthy = False
            log.warning("upstream %s: a target failed %d health checks and is out", self._upstream, -streak)
        elif not target.healthy and streak >= self._config.healthy_threshold:
            target.healthy = True
            log.warning("upstream %s: a target passed %d health checks and is back", self._upstream, streak)

    async def _ok(self, target: Target) -> bool:
        timeout = aiohttp.ClientTimeout(total=self._config.timeout)
        pool = self._pools[target]
        try:
            async with self._session.get(target.url + self._config.path, timeout=timeout, allow_redirects=False,
                                         ssl=pool.tls or True, server_hostname=pool.server_name) as response:
                return response.status < 500
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False
