"""Choosing a target of an upstream."""
from __future__ import annotations

from typing import Sequence


class RoundRobin:
    def __init__(self, targets: Sequence[str]) -> None:
        if not targets:
            raise ValueError("an upstream needs at least one target")
        self._targets = tuple(targets)
        self._next = 0

    def pick(self) -> str:
        target = self._targets[self._next]
        self._next = (self._next + 1) % len(self._targets)
        return target
