"""An upstream: its targets, the balancer that picks one, and a connection pool per target."""
from __future__ import annotations

from yarl import URL

from ..config import ConfigError, UpstreamConfig
from ..config.model import UpstreamTls
from ..config.tls import upstream_context
from ..errors import BadGateway, GatewayTimeout, NoHealthyUpstream
from ..metrics import Counter
from .balancer import BALANCERS, make_targets
from .transport import Limit, Pool


class Upstream:
    def __init__(self, config: UpstreamConfig, outcomes: Counter) -> None:
        """`outcomes`: gateway_upstream_requests_total, counted here (ok, refused, timeout, retried,
        no_healthy), where each outcome's error is made."""
        self.name = config.name
        self._outcomes = outcomes
        self._ok, self._retried = (config.name, "ok"), (config.name, "retried")
        self.config = config
        self.targets = make_targets(config.targets, config.passive)
        self.balancer = BALANCERS[config.balance](self.targets)
        limit = Limit(config.max_connections)
        self.pools = {target: _pool(config.name, target.url, limit, config.tls) for target in self.targets}

    # The errors that end a request at this upstream: the one home of their messages. They name the
    # upstream, never a target's address.
    def errors(self) -> dict[str, str]:
        return {"upstream": self.name}

    def timed_out(self) -> GatewayTimeout:
        self._outcomes[(self.name, "timeout")] += 1
        return GatewayTimeout(f"Upstream {self.name} timed out.", extra=self.errors())

    def unavailable(self, **extra: str) -> BadGateway:
        self._outcomes[(self.name, "refused")] += 1
        return BadGateway(f"Upstream {self.name} is unavailable.", extra={**self.errors(), **extra})

    def refused_upgrade(self, status: int) -> BadGateway:
        return BadGateway(f"Upstream {self.name} refused the WebSocket upgrade.",
                          extra={**self.errors(), "upstream_status": str(status)})

    def no_healthy_target(self) -> NoHealthyUpstream:
        self._outcomes[(self.name, "no_healthy")] += 1
        return NoHealthyUpstream(extra=self.errors())

    async def any_available(self) -> None:
        """For /readyz: raises unless a target may be picked."""
        if not any(target.available() for target in self.targets):
            raise LookupError(f"upstream {self.name} has no healthy target")

    def answered(self) -> None:
        """A target answered (any status: the upstream's own errors are its answer)."""
        self._outcomes[self._ok] += 1

    def retried(self) -> None:
        self._outcomes[self._retried] += 1

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def _pool(name: str, url: str, limit: Limit, tls: UpstreamTls) -> Pool:
    parsed = URL(url)
    assert parsed.host is not None and parsed.port is not None
    if parsed.scheme != "https":
        return Pool(parsed.host, parsed.port, limit)
    try:  # the files were read when the configuration was; one may have changed since
        context = upstream_context(tls)  # a context per target: the TLS session it resumes is that target's
    except (OSError, ValueError) as exc:
        raise ConfigError([f"upstreams.{name}.tls: the CA file, certificate or key does not load: {exc}"]) from None
    return Pool(parsed.host, parsed.port, limit, tls=context, server_name=tls.server_name)
