"""/readyz: may this instance take traffic? Each probe answers within `timeout` or counts as failing."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("gateway.admin")
Probe = Callable[[], Awaitable[None]]  # raises (or takes too long) when what it probes does not answer


class Readiness:
    def __init__(self, probes: Callable[[], dict[str, Probe]], timeout: float) -> None:
        """`probes`: asked anew each time, so that the probes are those of the configuration serving now."""
        self._probes = probes
        self._timeout = timeout
        self.draining = False  # set once the process stops accepting: a load balancer should look elsewhere

    async def failing(self) -> list[str]:
        """The names of what does not answer, in the probes' order; empty when ready."""
        if self.draining:
            return ["draining"]
        probes = self._probes()
        answers = await asyncio.gather(*(self._answers(name, probe) for name, probe in probes.items()))
        return [name for name, ok in zip(probes, answers, strict=True) if not ok]

    async def _answers(self, name: str, probe: Probe) -> bool:
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except TimeoutError:
            log.warning("readiness: %s did not answer within %gs", name, self._timeout)
            return False
        except Exception as exc:
            log.warning("readiness: %s is failing: %s", name, exc or type(exc).__name__)
            return False
        return True
