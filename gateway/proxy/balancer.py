"""Choosing a target: weighted round robin, least connections, or the power of two random choices.

A target is available while the active health check calls it healthy and no
passive ejection is running. Every balancer takes the targets to avoid (the
ones a retry has already tried).
"""
from __future__ import annotations

import random
import time
from typing import Callable, Collection, Sequence

from ..config.model import Balance, PassiveConfig, TargetConfig


class Target:
    def __init__(self, config: TargetConfig, passive: PassiveConfig, clock: Callable[[], float]) -> None:
        self.url = config.url
        self.weight = config.weight
        self.healthy = True  # set by the active health check
        self.active = 0  # requests under way
        self._passive = passive
        self._clock = clock
        self._failures = 0
        self._ejected_until = 0.0

    def available(self) -> bool:
        return self.healthy and self._clock() >= self._ejected_until

    def failed(self) -> bool:
        """Count a failed connection; True when this one ejects the target."""
        self._failures += 1
        if self._failures >= self._passive.consecutive_failures:
            self._failures = 0
            self._ejected_until = self._clock() + self._passive.cooldown
            return True
        return False

    def succeeded(self) -> None:
        self._failures = 0


class Balancer:
    def __init__(self, targets: Sequence[Target]) -> None:
        if not targets:
            raise ValueError("an upstream needs at least one target")
        self.targets = tuple(targets)

    def candidates(self, avoid: Collection[Target]) -> list[Target]:
        return [t for t in self.targets if t not in avoid and t.available()]

    def pick(self, avoid: Collection[Target] = ()) -> Target | None:
        raise NotImplementedError


class RoundRobin(Balancer):
    """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c."""

    def __init__(self, targets: Sequence[Target]) -> None:
        super().__init__(targets)
        self._current = {target: 0 for target in self.targets}  # each target's running weight

    def pick(self, avoid: Collection[Target] = ()) -> Target | None:
        if len(self.targets) == 1:  # the common sidecar case, without building a list per request
            only = self.targets[0]
            return only if only not in avoid and only.available() else None
        candidates = self.candidates(avoid)
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        current = self._current
        total = 0
        for target in candidates:
            current[target] += target.weight
            total += target.weight
        best = max(candidates, key=current.__getitem__)
        current[best] -= total
        return best


class LeastConnections(Balancer):
    def __init__(self, targets: Sequence[Target]) -> None:
        super().__init__(targets)
        self._tiebreak = RoundRobin(targets)

    def pick(self, avoid: Collection[Target] = ()) -> Target | None:
        candidates = self.candidates(avoid)
        if not candidates:
            return None
        fewest = min(t.active / t.weight for t in candidates)
        tied = [t for t in candidates if t.active / t.weight == fewest]
        return tied[0] if len(tied) == 1 else self._tiebreak.pick([t for t in candidates if t not in tied])


class RandomTwoChoices(Balancer):
    def __init__(self, targets: Sequence[Target], rng: random.Random | None = None) -> None:
        super().__init__(targets)
        self._rng = rng or random.Random()

    def pick(self, avoid: Collection[Target] = ()) -> Target | None:
        candidates = self.candidates(avoid)
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        weights = [t.weight for t in candidates]
        first, second = self._rng.choices(candidates, weights=weights, k=2)
        return first if first.active / first.weight <= second.active / second.weight else second


BALANCERS: dict[Balance, Callable[[Sequence[Target]], Balancer]] = {
    Balance.ROUND_ROBIN: RoundRobin,
    Balance.LEAST_CONNECTIONS: LeastConnections,
    Balance.RANDOM_TWO_CHOICES: RandomTwoChoices,
}


def make_targets(configs: Sequence[TargetConfig], passive: PassiveConfig,
                 clock: Callable[[], float] = time.monotonic) -> list[Target]:
    return [Target(config, passive, clock) for config in configs]
