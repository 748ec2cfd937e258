"""okome.aio: the same methods and protocol over redis.asyncio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, Callable

import pytest
import redis.asyncio as aredis

import okome
import okome.aio
from okome import PlanStatus, StoreStatus

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(fn())


def aclient(server, **kw) -> aredis.Redis:
    return aredis.Redis(host="127.0.0.1", port=server.port, **kw)


class Counter:
    def __init__(self, delay: float = 0.0, plan: object = None, fail: bool = False):
        self.calls, self.delay, self.fail = 0, delay, fail
        self.plan = plan if plan is not None else {"steps": ["a"]}

    async def __call__(self) -> object:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the model is down")
        return self.plan


@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "decoded"])
def test_every_method(server, decode):
    async def main() -> None:
        c = aclient(server, decode_responses=decode)
        ok = okome.aio.Okome(c)
        key = okome.planner_key(MODEL, "p", TOOLSET, REPO)
        miss = await ok.plan_get(
            MODEL, "p", TOOLSET, REPO, agent="a", limit=5, window=60, lock=True
        )
        assert miss.status is PlanStatus.MISS and miss.key == key and miss.rate_remaining == 4
        assert await ok.key("planner", MODEL, "p", TOOLSET, REPO) == key
        s = await ok.plan_set(key, {"x": 1}, token=miss.token, agent="a", write_limit=3)
        assert s == okome.PlanSetReply(StoreStatus.STORED, 600_000, 2, True)
        hit = await ok.plan_lookup(key, lock=True)
        assert hit.status is PlanStatus.HIT and hit.plan == {"x": 1}
        lk = ok.key("tools", "v1")
        tools_key = await lk
        token = await ok.lock(tools_key)
        assert token and await ok.lock(tools_key) is None
        assert await ok.extend_lock(tools_key, token, ttl_ms=9000)
        assert await ok.unlock(tools_key, token)
        assert await ok.rate("ag", 2, 60) == okome.RateReply(True, 1, 0, 60_000)
        named = await ok.rate("ag", 10**15, 60, cost=10**15, name="tokens")
        assert named == okome.RateReply(True, 0, 0, 60_000)
        assert (await ok.rate("ag", 2, 60, name="default")).remaining == 0
        assert (await ok.wbudget("ag", 2, window=30)).remaining == 1
        assert await ok.cache_set("health", "node-1", value={"ok": True}) == 30_000
        entry = await ok.cache_get("health", "node-1")
        assert entry is not None and entry.value == {"ok": True}
        assert (await ok.stats())["okome_planner_hits"] == 1
        assert (await ok.agent_record("a", key)).ledger_size == 1  # PLAN.SET AGENT recorded it
        await ok.cache_set("tools", "v2", value=[1], agent="a")
        assert {e.key async for e in ok.iter_agent_keys("a", count=1)} == {key, "okome:tools:{v2}"}
        assert (await ok.agent_keys("a")).cursor is None
        assert (await ok.agent_purge("a")).deleted == 2
        with pytest.raises(okome.NotCacheableError):
            await ok.cache_set("builds", "x", value={})
        await c.aclose()

    run(main)


def test_forty_concurrent_cold_requests_compute_once(server):
    async def main() -> None:
        c = aclient(server)
        planner = okome.aio.Planner(c)
        compute = Counter(delay=0.3)
        results = await asyncio.gather(
            *(
                planner.get_or_compute(MODEL, "cold", TOOLSET, REPO, compute, agent=f"a{i}")
                for i in range(40)
            )
        )
        assert compute.calls == 1
        assert sorted(r.status.value for r in results) == ["HIT"] * 39 + ["MISS"]
        assert all(r.plan == compute.plan for r in results)
        await c.aclose()

    run(main)


def test_raising_compute_hands_over_at_once(server):
    async def main() -> None:
        c = aclient(server)
        planner = okome.aio.Planner(c, failure_ttl_ms=0)  # not shared: the next waiter takes over
        failing = Counter(delay=0.3, fail=True)
        lead = asyncio.ensure_future(planner.get_or_compute(MODEL, "h", TOOLSET, REPO, failing))
        await asyncio.sleep(0.05)
        follower = Counter(plan={"by": "follower"})
        t0 = time.monotonic()
        res = await planner.get_or_compute(MODEL, "h", TOOLSET, REPO, follower, wait_ms=10_000)
        assert res.computed and res.plan == {"by": "follower"} and time.monotonic() - t0 < 2
        with pytest.raises(RuntimeError, match="the model is down"):
            await lead
        await c.aclose()

    run(main)


def test_cancelled_leader_hands_over(server):
    async def main() -> None:
        c = aclient(server)
        planner = okome.aio.Planner(c)
        lead = asyncio.ensure_future(
            planner.get_or_compute(MODEL, "cancel", TOOLSET, REPO, Counter(delay=30))
        )
        await asyncio.sleep(0.1)
        follower = asyncio.ensure_future(
            planner.get_or_compute(
                MODEL, "cancel", TOOLSET, REPO, Counter(plan=[2]), wait_ms=10_000
            )
        )
        await asyncio.sleep(0.1)
        lead.cancel()
        res = await asyncio.wait_for(follower, 2)
        assert res.computed and res.plan == [2]
        await c.aclose()

    run(main)


def test_long_compute_keeps_its_lock_by_heartbeats(start_server):
    server = start_server("lock-ttl-min", "300", "lock-ttl-default", "600", "lock-ttl-max", "1000")

    async def main() -> None:
        c = aclient(server)
        planner = okome.aio.Planner(c)
        slow = Counter(delay=2.0, plan={"slow": True})
        lead = asyncio.ensure_future(planner.get_or_compute(MODEL, "slow", TOOLSET, REPO, slow))
        await asyncio.sleep(0.1)
        follower = Counter(plan={"no": 1})
        res = await planner.get_or_compute(MODEL, "slow", TOOLSET, REPO, follower, wait_ms=5000)
        assert res.status is PlanStatus.HIT and res.plan == {"slow": True}
        assert (await lead).computed and slow.calls == 1 and follower.calls == 0
        assert (await okome.aio.Okome(c).stats())["okome_lock_extended"] >= 4
        await c.aclose()

    run(main)


def test_refresh_recomputes_once_in_background(server):
    async def main() -> None:
        c = aclient(server)
        planner = okome.aio.Planner(c, refresh_ahead_ms=900_000)
        await planner.get_or_compute(MODEL, "r", TOOLSET, REPO, Counter(plan={"v": 1}))
        second = Counter(delay=0.5, plan={"v": 2})
        results = await asyncio.gather(
            *(planner.get_or_compute(MODEL, "r", TOOLSET, REPO, second) for _ in range(20))
        )
        assert all(r.plan == {"v": 1} for r in results)
        assert [r.status for r in results].count(PlanStatus.REFRESH) == 1
        assert await planner.wait_background(10)
        assert second.calls == 1
        assert (await okome.aio.Okome(c).plan_lookup(results[0].key, lock=True)).plan == {"v": 2}
        await c.aclose()

    run(main)


def test_rate_limited_and_locked(server):
    async def main() -> None:
        c = aclient(server)
        planner = okome.aio.Planner(c, limit=1, window=60, wait_ms=200)
        await planner.get_or_compute(MODEL, "l", TOOLSET, REPO, Counter(), agent="a")
        with pytest.raises(okome.RateLimited) as e:
            await planner.get_or_compute(MODEL, "l", TOOLSET, REPO, Counter(), agent="a")
        assert e.value.headers["Retry-After"] == "60"
        await okome.aio.Okome(c).plan_get(MODEL, "held", TOOLSET, REPO, lock=True)
        with pytest.raises(okome.PlanLocked):
            await planner.get_or_compute(MODEL, "held", TOOLSET, REPO, Counter())
        await c.aclose()

    run(main)


def test_wait_retry_trap(server):
    async def main() -> None:
        c = aclient(server)
        ok = okome.aio.Okome(c)
        lead = await ok.plan_get(MODEL, "trap", TOOLSET, REPO, lock=True)

        async def store_later() -> None:
            await asyncio.sleep(2.5)
            await ok.plan_set(lead.key, {"v": "trap"}, token=lead.token)

        task = asyncio.ensure_future(store_later())
        follower = okome.aio.Okome(aclient(server, socket_timeout=1))
        t0 = time.monotonic()
        got = await follower.plan_get(MODEL, "trap", TOOLSET, REPO, wait_ms=5000, lock=True)
        assert got.status is PlanStatus.HIT and 2.0 < time.monotonic() - t0 < 4.0
        await task
        assert server.calls("okome.plan.get") == 2
        assert (await ok.stats())["okome_wait_blocked"] == 1
        await c.aclose()
        await follower.client.aclose()

    run(main)


def test_wrong_client_type(server):
    with pytest.raises(TypeError, match="okome.Okome"):
        okome.aio.Okome(server.client())
