"""Redis Cluster: three primaries started here, joined with redis-cli, and two gateways sharing them.

Every piece of shared state is exercised across the cluster's slots: codes
(at the seed's key, written by the backend too), guesses and failed logins
(in one script, so in one slot), limits, sessions and rotation, revocations
published to the other instance, and a slot moved while logins run.
"""
from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.cluster import RedisCluster, key_slot

from gateway.stores.codes import attempts_key, code_key
from gateway.stores.failures import failures_key
from tests.processes import Running, gateway_raw
from tests.servers import RedisClusterProcesses, free_port

pytestmark = pytest.mark.stores("embedded")  # the stores are the cluster, made here


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    nodes = RedisClusterProcesses(tmp_path_factory.mktemp("cluster"))
    nodes.start()
    yield nodes
    nodes.stop()


def client_of(cluster: RedisClusterProcesses) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)


def gateway_on(cluster: RedisClusterProcesses, tmp_path: Path, stub: str, name: str, **jwt: Any) -> Running:
    folder = tmp_path / name
    folder.mkdir()
    raw = gateway_raw(stub, tmp_path)  # both instances share the SQLite file in tmp_path
    raw["redis"] = {"cluster": {"nodes": cluster.nodes}}
    raw["jwt"].update(jwt)
    raw["limits"] = {"sms": [{"rate": "3/minute", "key": "mobile"}], "login_failures": "4/hour"}
    raw["admin"] = {"port": free_port()}
    gateway = Running(folder, raw)
    gateway.admin = f"http://127.0.0.1:{raw['admin']['port']}"  # type: ignore[attr-defined]
    return gateway


def code_in(gateway: Running, mobile: str) -> str:
    return re.findall(rf"code for {mobile} is (\d{{6}})", gateway.log.read_text())[-1]


async def call(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None) if resp.content_length != 0 else None


def test_the_codes_keys_share_one_slot_and_the_seeds_key_is_kept() -> None:
    mobile = "13911112222"
    assert code_key(mobile) == "app:code:13911112222"  # the toutiao backend's own key
    assert key_slot(attempts_key(mobile).encode()) == key_slot(code_key(mobile).encode())
    assert key_slot(failures_key(mobile).encode()) == key_slot(code_key(mobile).encode())
    slots = {key_slot(code_key(f"1391111{i:04d}").encode()) for i in range(50)}
    assert len(slots) > 40  # different mobiles spread over the cluster


async def test_logins_limits_rotation_and_revocation_across_the_cluster(cluster: RedisClusterProcesses,
                                                                        tmp_path: Path, stub: str) -> None:
    direct = client_of(cluster)
    one = gateway_on(cluster, tmp_path, stub, "one", rotate_refresh_tokens=True)
    two = gateway_on(cluster, tmp_path, stub, "two", rotate_refresh_tokens=True)
    # mobiles whose codes live on each of the three nodes
    owners: dict[int, str] = {}
    for i in range(200):
        mobile = f"1380000{i:04d}"
        owners.setdefault(cluster.owner(key_slot(code_key(mobile).encode())), mobile)
    assert len(owners) == 3
    try:
        async with aiohttp.ClientSession() as session:
            for gateway in (one, two):  # /readyz asks the cluster for its state, not one node for PING
                deadline = time.monotonic() + 10
                ready: tuple[int, Any] = (0, None)
                while ready[0] != 200 and time.monotonic() < deadline:
                    ready = await call(session, "GET", f"{gateway.admin}/readyz")  # type: ignore[attr-defined]
                    await asyncio.sleep(0.1)
                assert ready == (200, {"status": "ready"})
            for mobile in owners.values():
                assert (await call(session, "GET", f"{one.url}/v1_0/sms/codes/{mobile}"))[0] == 200
                assert direct.get(code_key(mobile)) == code_in(one, mobile)  # at the seed's key
                # a wrong guess at one instance is counted where the other sees it
                status, body = await call(session, "POST", f"{two.url}/v1_0/authorizations",
                                          json={"mobile": mobile, "code": "000000"})
                assert (status, body) == (400, {"message": "Invalid code."})
                assert direct.get(attempts_key(mobile)) == "1"
                assert direct.zcard(failures_key(mobile)) == 1
                status, tokens = await call(session, "POST", f"{two.url}/v1_0/authorizations",
                                            json={"mobile": mobile, "code": code_in(one, mobile)})
                assert status == 201
                assert direct.get(code_key(mobile)) is None  # spent
            # a code the toutiao backend wrote (SETEX at the seed's key) logs in at the gateway
            backend_mobile = owners[cluster.ports[1]]
            direct.set(code_key(backend_mobile), "654321", ex=300)
            assert (await call(session, "POST", f"{one.url}/v1_0/authorizations",
                               json={"mobile": backend_mobile, "code": "654321"}))[0] == 201
            # the SMS limit (3 a minute per mobile) is shared: the fourth, at the other instance, is 429
            mobile = owners[cluster.ports[2]]
            for expected in (200, 200, 429):
                gateway = one if expected == 200 else two
                assert (await call(session, "GET", f"{gateway.url}/v1_0/sms/codes/{mobile}"))[0] == expected
            # failed logins (4 an hour) are shared too: 3 more wrong guesses, then 429 even for the right code
            for _ in range(3):
                assert (await call(session, "POST", f"{two.url}/v1_0/authorizations",
                                   json={"mobile": mobile, "code": "000000"}))[0] == 400
            status, _ = await call(session, "POST", f"{one.url}/v1_0/authorizations",
                                   json={"mobile": mobile, "code": code_in(one, mobile)})
            assert status == 429
            # rotation: the first refresh at one instance spends the token; a replay at the other, after the
            # grace window, is refused and ends the session everywhere
            refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
            status, fresh = await call(session, "PUT", f"{one.url}/v1_0/authorizations", headers=refresh)
            assert status == 201 and set(fresh) == {"token", "refresh_token"}
            status, same = await call(session, "PUT", f"{two.url}/v1_0/authorizations", headers=refresh)
            assert (status, same) == (201, fresh)  # inside the grace window: the same successor
            access = {"Authorization": f"Bearer {fresh['token']}"}
            assert (await call(session, "GET", f"{two.url}/v1_0/user/profile", headers=access))[0] == 200
            # logout at one instance: the other learns it through pub/sub on the cluster
            assert (await call(session, "DELETE", f"{one.url}/v1_0/authorizations", headers=access))[0] == 204
            deadline = time.monotonic() + 5
            status = 200
            while status != 401 and time.monotonic() < deadline:
                status = (await call(session, "GET", f"{two.url}/v1_0/user/profile", headers=access))[0]
                await asyncio.sleep(0.05)
            assert status == 401
    finally:
        one.stop()
        two.stop()
        direct.close()
    for gateway in (one, two):
        assert not [r for r in gateway.records() if r["level"] == "ERROR"]


async def test_a_slot_moves_while_logins_run(cluster: RedisClusterProcesses, tmp_path: Path, stub: str) -> None:
    """redis-py follows MOVED and ASK (and TRYAGAIN for the script whose keys are half moved): no login
    fails while the slot of their codes changes hands."""
    gateway = gateway_on(cluster, tmp_path, stub, "moving")
    slot = key_slot(code_key("13700000000").encode())
    in_slot = [m for m in (f"1370{i:07d}" for i in range(400_000)) if key_slot(code_key(m).encode()) == slot]
    mobiles, waiting = in_slot[:6], in_slot[6:9]  # waiting: codes sent before the move, used after it
    assert len(waiting) == 3
    source = cluster.owner(slot)
    target = next(port for port in cluster.ports if port != source)
    statuses: list[int] = []
    moved = 0
    try:
        async with aiohttp.ClientSession() as session:
            async def logins() -> None:
                for _ in range(3):  # the SMS limit here is 3 a minute per mobile
                    await asyncio.sleep(0.2)
                    for mobile in mobiles:
                        sent = (await call(session, "GET", f"{gateway.url}/v1_0/sms/codes/{mobile}"))[0]
                        statuses.append(sent)
                        if sent != 200:
                            continue
                        statuses.append((await call(session, "POST", f"{gateway.url}/v1_0/authorizations",
                                                    json={"mobile": mobile, "code": code_in(gateway, mobile)}))[0])

            async def move() -> None:
                nonlocal moved
                await asyncio.sleep(0.3)
                moved = await asyncio.to_thread(cluster.move_slot, slot, target)

            for mobile in waiting:  # keys in the slot, which move with it
                assert (await call(session, "GET", f"{gateway.url}/v1_0/sms/codes/{mobile}"))[0] == 200
                assert (await call(session, "POST", f"{gateway.url}/v1_0/authorizations",
                                   json={"mobile": mobile, "code": "000000"}))[0] == 400  # attempts, failures
            await asyncio.gather(logins(), move())
            for mobile in waiting:  # the codes moved with the slot, and so did their counts
                status, _ = await call(session, "POST", f"{gateway.url}/v1_0/authorizations",
                                       json={"mobile": mobile, "code": code_in(gateway, mobile)})
                statuses.append(status)
                assert status == 201
    finally:
        gateway.stop()
    assert cluster.owner(slot) == target
    assert moved >= len(waiting) * 3  # each waiting mobile's code, its attempts and its failures
    assert set(statuses) == {200, 201}, statuses
    assert statuses.count(201) == len(mobiles) * 3 + len(waiting)
    assert not [r for r in gateway.records() if r["level"] == "ERROR"]


def test_a_cluster_config_is_checked(tmp_path: Path) -> None:
    from gateway.config import ConfigError, parse_config
    from tests.factories import config_dict

    raw = config_dict(redis_url="redis://127.0.0.1:6379/0")
    raw["redis"]["cluster"] = {"nodes": ["127.0.0.1:7000", "nowhere"], "bogus": 1}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={})
    assert set(caught.value.problems) == {
        "redis.cluster.bogus: unknown key",
        "redis.cluster.nodes[1]: must be host:port, got 'nowhere'",
        "redis.cluster: replaces redis.url, redis.replica_url and redis.sentinel: give one of them",
    }
    config = parse_config(config_dict(redis={"cluster": {"nodes": ["127.0.0.1:7000", "127.0.0.1:7001"]}}), env={})
    assert config.redis.cluster is not None and config.redis.cluster.nodes == (("127.0.0.1", 7000),
                                                                               ("127.0.0.1", 7001))
    assert not config.redis.embedded
