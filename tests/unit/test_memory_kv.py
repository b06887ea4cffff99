from gateway.stores.kv import MemoryKV


async def test_memory_kv_expires_like_redis() -> None:
    now = [100.0]
    kv = MemoryKV(clock=lambda: now[0])
    await kv.set("a", "1", ex=10)
    await kv.set("b", "2")
    assert await kv.get("a") == "1" and await kv.ttl("a") == 10 and await kv.ttl("b") == -1
    now[0] += 10
    assert await kv.get("a") is None and await kv.ttl("a") == -2
    assert await kv.getdel("b") == "2"
    assert await kv.getdel("b") is None
    await kv.set("c", "3", ex=5)
    assert await kv.delete("c", "missing") == 1
