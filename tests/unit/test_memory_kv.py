from gateway.stores.kv import MemoryKV


async def test_memory_kv_expires_like_redis() -> None:
    now = [100.0]
    kv = MemoryKV(clock=lambda: now[0])
    await kv.set("a", "1", ex=10)
    await kv.set("b", "2")
    now[0] += 9.9
    assert await kv.get("a") == "1"
    now[0] += 0.1
    assert await kv.get("a") is None and await kv.get("b") == "2"  # "b" never expires
    assert await kv.set("b", "x", nx=True) is None and await kv.get("b") == "2"
    assert await kv.incr("n") == 1 and await kv.expire("n", 1) and not await kv.expire("missing", 1)
    now[0] += 1
    assert await kv.get("n") is None
    await kv.set("c", "3", ex=5)
    assert await kv.delete("c", "missing") == 1


async def test_keys_nobody_reads_again_are_swept() -> None:
    from gateway.stores.kv import SWEEP_EVERY

    now = [0.0]
    kv = MemoryKV(clock=lambda: now[0])
    for i in range(SWEEP_EVERY - 1):
        await kv.set(f"spent:{i}", "1", ex=10)
    await kv.set("forever", "1")
    now[0] = 11
    for i in range(SWEEP_EVERY):
        await kv.set(f"fresh:{i}", "1", ex=10)
    assert len(kv._data) <= SWEEP_EVERY + 1
    assert await kv.get("forever") == "1"


async def test_memory_codes_that_expire_unread_are_swept() -> None:
    from gateway.stores.codes import SWEEP_AT, MemoryCodeStore
    from gateway.stores.failures import MemoryFailures

    now = [0.0]
    codes = MemoryCodeStore(MemoryFailures(), clock=lambda: now[0])
    for i in range(SWEEP_AT):
        await codes.put(f"1390000{i:04d}", "123456", 300)
    now[0] = 301
    await codes.put("13911111111", "654321", 300)
    assert len(codes._codes) == 1
    assert (await codes.check("13911111111", "654321", 5, None)).ok


async def test_memory_failures_slide() -> None:
    from gateway.stores.failures import MemoryFailures, Window

    now = [1000.0]
    failures = MemoryFailures(clock=lambda: now[0])
    window = Window(limit=2, seconds=60)
    await failures.record("13900000001", window)
    now[0] += 30
    await failures.record("13900000001", window)
    assert await failures.exhausted("13900000001", window) == 30  # the first leaves the window in 30 s
    assert await failures.exhausted("13900000002", window) is None  # per subject
    now[0] += 30
    assert await failures.exhausted("13900000001", window) is None
