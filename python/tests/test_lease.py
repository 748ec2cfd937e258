"""Concurrency leases: the raw methods' typed replies, the ``lease()`` context
manager (sync and asyncio) renewing itself while held and releasing on exit
or error, and routing on a cluster."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

import okome
import okome.aio
from okome import LeaseReply, LeaseUnavailable

LEASE_ID = re.compile(r"^\{[^}]+\}(:[^:]+)?:[0-9a-f]{32}$")


def pool_size(server, key: str) -> int:
    return int(server.client().zcard(key))


@pytest.mark.parametrize("decode", [False, True])
def test_raw_methods(server, decode):
    ok = okome.Okome(server.client(decode_responses=decode))
    a = ok.lease_acquire("agent:1", 2, 10_000)
    assert isinstance(a, LeaseReply) and a.acquired and (a.in_use, a.retry_after_ms) == (1, 0)
    assert a.lease is not None and LEASE_ID.match(a.lease) and a.lease.startswith("{agent%3A1}:")
    b = ok.lease_acquire("agent:1", 2, 10_000)
    full = ok.lease_acquire("agent:1", 2, 10_000)
    assert full.lease is None and full.in_use == 2 and 9_000 < full.retry_after_ms <= 10_000
    assert full.retry_after == 10
    assert ok.lease_renew(a.lease, 20_000) is True
    assert ok.lease_release(a.lease) is True
    assert ok.lease_release(a.lease) is False
    assert ok.lease_renew(a.lease, 1_000) is False
    named = ok.lease_acquire("agent:1", 1, 1_000, name="gpu")
    assert named.lease is not None and named.lease.startswith("{agent%3A1}:gpu:")
    assert pool_size(server, okome._keys.lease_key("agent:1", "gpu")) == 1
    assert b.lease is not None and ok.lease_release(b.lease)
    with pytest.raises(okome.OutOfRangeError):
        ok.lease_acquire("s", 0, 1_000)
    with pytest.raises(okome.KeyFormatError):
        ok.lease_release("not-a-lease")


def test_wait_gets_a_released_lease(server):
    ok = okome.Okome(server.client())
    held = ok.lease_acquire("w", 1, 60_000)
    assert held.lease is not None
    got: list[LeaseReply] = []
    t = threading.Thread(target=lambda: got.append(ok.lease_acquire("w", 1, 60_000, wait_ms=5_000)))
    t.start()
    time.sleep(0.2)
    assert ok.lease_release(held.lease)
    t.join(5)
    assert got and got[0].acquired and got[0].in_use == 1
    timed_out = ok.lease_acquire("w", 1, 60_000, wait_ms=100)
    assert timed_out.lease is None and timed_out.in_use == 1


def test_context_manager_renews_and_releases(server):
    ok = okome.Okome(server.client())
    key = okome._keys.lease_key("cm")
    with ok.lease("cm", 1, 300) as held:
        assert LEASE_ID.match(held.id)
        time.sleep(0.8)  # well past the 300 ms TTL: kept alive by renewals
        assert held.renewals >= 2 and not held.lost
        assert pool_size(server, key) == 1
        with pytest.raises(LeaseUnavailable) as e:
            with ok.lease("cm", 1, 300):
                pass
        assert e.value.in_use == 1 and e.value.headers["Retry-After"] == "1"
    assert pool_size(server, key) == 0, "released on exit"
    with pytest.raises(RuntimeError):
        with ok.lease("cm", 1, 5_000):
            raise RuntimeError("the model call failed")
    assert pool_size(server, key) == 0, "released on error"


def test_a_lost_lease_is_reported(server):
    ok = okome.Okome(server.client())
    with ok.lease("lost", 1, 300) as held:
        server.client().delete(okome._keys.lease_key("lost"))
        time.sleep(0.3)
        assert held.lost


def test_asyncio(server):
    async def main() -> None:
        client = aredis.Redis(host="127.0.0.1", port=server.port)
        ok = okome.aio.Okome(client)
        r = await ok.lease_acquire("aio", 1, 10_000)
        assert r.lease is not None
        assert await ok.lease_renew(r.lease, 10_000)
        waiter = asyncio.ensure_future(ok.lease_acquire("aio", 1, 10_000, wait_ms=5_000))
        await asyncio.sleep(0.2)
        assert await ok.lease_release(r.lease)
        w = await waiter
        assert w.acquired and w.lease is not None
        assert await ok.lease_release(w.lease)
        async with ok.lease("aio", 1, 300) as held:
            await asyncio.sleep(0.8)
            assert held.renewals >= 2 and not held.lost
            assert await client.zcard(okome._keys.lease_key("aio")) == 1
        assert await client.zcard(okome._keys.lease_key("aio")) == 0
        with pytest.raises(ValueError):
            async with ok.lease("aio", 1, 5_000):
                raise ValueError("boom")
        assert await client.zcard(okome._keys.lease_key("aio")) == 0
        await client.aclose()

    asyncio.run(main())


def test_cluster_routes_leases(cluster):
    """redis-py cannot route OKOME.LEASE.* (three-part names): the package
    sends each call to the node serving the pool's slot."""
    cluster.flush()
    ok = okome.Okome(RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port))
    for subject in ["a", "b", "c", "tenant:42"]:
        with ok.lease(subject, 2, 5_000, wait_ms=100, name="gpu") as held:
            key = okome._keys.lease_key(subject, "gpu")
            assert cluster.owner(key).client().zcard(key) == 1
            assert ok.lease_renew(held.id, 5_000)
        assert cluster.owner(key).client().zcard(key) == 0

    async def main() -> None:
        rc = AsyncRedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        aok = okome.aio.Okome(rc)
        for subject in ["x", "y", "z"]:
            async with aok.lease(subject, 1, 5_000):
                key = okome._keys.lease_key(subject)
                assert cluster.owner(key).client().zcard(key) == 1
        await rc.aclose()

    asyncio.run(main())
