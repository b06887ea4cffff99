from __future__ import annotations

import random
from collections import Counter

from gateway.config.model import PassiveConfig, TargetConfig
from gateway.proxy.balancer import LeastConnections, RandomTwoChoices, RoundRobin, make_targets


def targets(*weights: int, clock: list[float] | None = None, passive: PassiveConfig = PassiveConfig()) -> list:
    now = clock if clock is not None else [0.0]
    return make_targets([TargetConfig(f"http://t{i}", w) for i, w in enumerate(weights)], passive, lambda: now[0])


def test_smooth_weighted_round_robin() -> None:
    pool = targets(5, 1, 1)
    balancer = RoundRobin(pool)
    picks = [balancer.pick().url for _ in range(7)]
    assert picks == ["http://t0", "http://t0", "http://t1", "http://t0", "http://t2", "http://t0", "http://t0"]


def test_round_robin_skips_unavailable_and_avoided_targets() -> None:
    pool = targets(1, 1, 1)
    pool[1].healthy = False
    balancer = RoundRobin(pool)
    assert {balancer.pick().url for _ in range(6)} == {"http://t0", "http://t2"}
    assert balancer.pick(avoid=[pool[0], pool[2]]) is None


def test_least_connections_prefers_the_idlest_per_weight() -> None:
    pool = targets(1, 2, 1)
    pool[0].active, pool[1].active, pool[2].active = 3, 4, 1
    assert LeastConnections(pool).pick() is pool[2]
    pool[2].active = 5
    assert LeastConnections(pool).pick() is pool[1]  # 4/2 = 2 < 3


def test_least_connections_rotates_among_ties() -> None:
    pool = targets(1, 1, 1)
    balancer = LeastConnections(pool)
    assert Counter(balancer.pick().url for _ in range(9)) == {"http://t0": 3, "http://t1": 3, "http://t2": 3}


def test_random_two_choices_picks_the_less_loaded_of_two() -> None:
    pool = targets(1, 1)
    pool[0].active = 10
    balancer = RandomTwoChoices(pool, rng=random.Random(7))
    picks = Counter(balancer.pick().url for _ in range(1000))
    assert picks["http://t1"] > 700  # t0 wins only when both draws land on it


def test_passive_ejection_and_return_after_cooldown() -> None:
    clock = [100.0]
    pool = targets(1, 1, clock=clock, passive=PassiveConfig(consecutive_failures=2, cooldown=30))
    assert pool[0].failed() is False
    pool[0].succeeded()  # a success in between resets the count
    assert pool[0].failed() is False
    assert pool[0].failed() is True
    balancer = RoundRobin(pool)
    assert {balancer.pick().url for _ in range(4)} == {"http://t1"}
    clock[0] += 30
    assert {balancer.pick().url for _ in range(4)} == {"http://t0", "http://t1"}

def test_every_balance_has_a_balancer() -> None:
    from gateway.config.model import Balance
    from gateway.proxy.balancer import BALANCERS

    assert set(BALANCERS) == set(Balance)
