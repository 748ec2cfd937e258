"""okome against the libraries a FastAPI team would otherwise use: cashews,
aiocache, limits and fastapi-limiter, and the seed's client-side flow, on
one server (the okome module loaded, so every library shares it).

    target/venv/bin/pip install -r python/benchmarks/requirements.txt
    target/venv/bin/python python/benchmarks/compare.py [--url redis://...] [-n 1000] [--write]

Without ``--url`` it starts its own ``redis-server`` (``REDIS_SERVER``) with
``OKOME_MODULE`` (default target/release/libokome.so, else target/debug) on
a free loopback port. It measures, all over asyncio:

1. a planner-like cached call with the agent's rate limit (okome charges it
   in the same ``OKOME.PLAN.GET``; the caches need ``limits`` in a call of
   their own): miss and hit latency, the flows interleaved request by request;
2. round trips (the server's read events) and commands (``INFO
   commandstats``, those run inside a Lua script included) per miss and hit;
3. computations under a cold stampede: ``--stampede`` requests for one key
   from ``--procs`` processes, each with asyncio concurrency;
4. window exactness across a window's edge: a limit of 60 per
   ``--edge-window`` seconds (60: the real minute, so this step waits a
   minute), one request at the window's start, 59 just before its end and
   60 just after it;
5. bytes per full window: ``MEMORY USAGE`` of the keys a limiter holds for
   one identifier after 60 requests;
6. fastapi-limiter's per-identifier behaviour as its README sets it up.

``--write`` puts the tables into python/README.md between the
``<!-- compare:begin -->`` and ``<!-- compare:end -->`` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import platform
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aredis
from flow import start_server

import okome
import okome.aio

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "python" / "README.md"
PLAN = {"steps": ["open login.tsx", "add the form", "wire the submit"], "model": "gpt-4"}
MODEL, TOOLSET, REPO = "gpt-4", "v1.2.3", "abc123"
LIMIT, WINDOW = 60, 60  # the agent's rate in every flow: 60 per minute
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Limited(Exception):
    """A flow's rate limit refused the request (never expected while measuring)."""


# --------------------------------------------------------------------------
# The flows: one planner request each, the agent's rate limit included.


@dataclass
class Flow:
    """A planner-like cached call; ``request`` returns (computed, plan)."""

    name: str
    includes: str
    url: str
    delay: float = 0.0  # how long compute() takes
    computed: int = 0
    clients: list[Any] = field(default_factory=list)

    async def setup(self) -> None:
        pass

    async def compute(self) -> dict[str, Any]:
        self.computed += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return PLAN

    async def request(self, prompt: str, agent: str) -> tuple[bool, Any]:
        before = self.computed
        plan = await self.call(prompt, agent)
        return self.computed > before, plan

    async def call(self, prompt: str, agent: str) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()


class OkomePlanner(Flow):
    async def setup(self) -> None:
        client = aredis.Redis.from_url(self.url)
        self.clients.append(client)
        self.planner = okome.aio.Planner(client, limit=LIMIT, window=WINDOW)

    async def call(self, prompt: str, agent: str) -> Any:
        r = await self.planner.get_or_compute(
            MODEL, prompt, TOOLSET, REPO, self.compute, agent=agent
        )
        return r.plan


class OkomeBare(Flow):
    """okome's commands sent through bare redis.asyncio (no okome package)."""

    async def setup(self) -> None:
        self.r = aredis.Redis.from_url(self.url)
        self.clients.append(self.r)

    async def call(self, prompt: str, agent: str) -> Any:
        status, key, value, _ms, token, _rem = await self.r.execute_command(
            "OKOME.PLAN.GET", MODEL, sha(prompt), TOOLSET, REPO, "HASHED",
            "AGENT", agent, "LIMIT", LIMIT, "WINDOW", WINDOW,
        )  # fmt: skip
        if status == b"HIT":
            return json.loads(value)
        if status != b"MISS":
            raise Limited(status)
        plan = await self.compute()
        await self.r.execute_command(
            "OKOME.PLAN.SET", key, json.dumps(plan), "TTL", 600,
            "TOKEN", token, "AGENT", agent, "WLIMIT", 30,
        )  # fmt: skip
        return plan


def limits_storage(url: str) -> Any:
    from limits.aio.storage import RedisStorage

    # redis-py, which the app has already (limits' default for async is coredis: a
    # moving window's hit took about 100 µs longer through it, on this machine).
    return RedisStorage("async+" + url, implementation="redispy")


def limits_item(window: int, limit: int = LIMIT) -> Any:
    from limits import RateLimitItemPerMinute, RateLimitItemPerSecond

    return RateLimitItemPerMinute(limit) if window == 60 else RateLimitItemPerSecond(limit, window)


class WithLimits(Flow):
    """A cache decorator, after a ``limits`` moving window's hit for the agent."""

    async def setup(self) -> None:
        from limits.aio.strategies import MovingWindowRateLimiter

        self.item = limits_item(WINDOW)
        self.limiter = MovingWindowRateLimiter(limits_storage(self.url))
        self.cached = self.decorate()

    def decorate(self) -> Callable[..., Awaitable[Any]]:
        raise NotImplementedError

    async def call(self, prompt: str, agent: str) -> Any:
        if not await self.limiter.hit(self.item, agent):
            raise Limited(agent)
        return await self.cached(MODEL, prompt, TOOLSET, REPO)


class Cashews(WithLimits):
    kind = "lock"

    def decorate(self) -> Callable[..., Awaitable[Any]]:
        from cashews import Cache

        self.cache = Cache()
        self.cache.setup(self.url)
        flow = self
        key = (
            "cashews-" + self.kind + ":{model}:{prompt:hash(sha256)}:{toolset_version}:{repo_hash}"
        )
        if self.kind == "early":  # refresh-ahead: recomputed in the background after 7 min
            decorator = self.cache.early(ttl="10m", early_ttl="7m", key=key)
        else:
            decorator = self.cache(ttl="10m", lock=self.kind == "lock", key=key)

        @decorator
        async def plan(model: str, prompt: str, toolset_version: str, repo_hash: str) -> Any:
            return await flow.compute()

        return plan

    async def close(self) -> None:
        await self.cache.close()


class CashewsNoLock(Cashews):
    kind = "plain"


class CashewsEarly(Cashews):
    kind = "early"


class Aiocache(WithLimits):
    stampede = True

    def decorate(self) -> Callable[..., Awaitable[Any]]:
        from aiocache import Cache, cached, cached_stampede  # type: ignore[import-untyped]
        from aiocache.serializers import JsonSerializer  # type: ignore[import-untyped]

        m = re.match(r"redis://([^:/]+):(\d+)/(\d+)", self.url)
        assert m, self.url
        host, port, db = m.group(1), int(m.group(2)), int(m.group(3))
        name = "aiocache-stampede" if self.stampede else "aiocache"

        def key(_f: Any, model: str, prompt: str, toolset_version: str, repo_hash: str) -> str:
            return f"{name}:{model}:{sha(prompt)}:{toolset_version}:{repo_hash}"

        opts: dict[str, Any] = {
            "ttl": 600,
            "cache": Cache.REDIS,
            "endpoint": host,
            "port": port,
            "db": db,
            "serializer": JsonSerializer(),
            "key_builder": key,
        }
        decorator = cached_stampede(lease=2, **opts) if self.stampede else cached(**opts)
        flow = self

        @decorator  # type: ignore[untyped-decorator]
        async def plan(model: str, prompt: str, toolset_version: str, repo_hash: str) -> Any:
            return await flow.compute()

        self.decorator = decorator
        return plan  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self.decorator.cache is not None:
            await self.decorator.cache.close()


class AiocacheNoLock(Aiocache):
    stampede = False


class Seed(Flow):
    """The seed's cache.py + budget.py, client side: INCR (+ EXPIRE on the
    first) for the rate, GET, SET NX PX of ``key:lock``, compute, INCR (+
    EXPIRE) for the write budget, SET EX, DEL the lock. The seed does not
    say what a request that finds the lock taken does: here it polls GET
    every 50 ms for up to 10 s (the lock's TTL), then computes anyway."""

    async def setup(self) -> None:
        self.r = aredis.Redis.from_url(self.url)
        self.clients.append(self.r)

    async def allow(self, key: str, limit: int, window: int) -> bool:
        n = int(await self.r.incr(key))
        if n == 1:
            await self.r.expire(key, window)
        return n <= limit

    async def call(self, prompt: str, agent: str) -> Any:
        key = f"seed:planner:{MODEL}:{sha(prompt)}:{TOOLSET}:{REPO}"
        if not await self.allow(f"seed:budget:rate:{agent}", LIMIT, WINDOW):
            raise Limited(agent)
        cached = await self.r.get(key)
        if cached is not None:
            return json.loads(cached)
        if not await self.r.set(f"{key}:lock", "1", nx=True, px=10_000):
            for _ in range(200):
                await asyncio.sleep(0.05)
                cached = await self.r.get(key)
                if cached is not None:
                    return json.loads(cached)
        plan = await self.compute()
        if await self.allow(f"seed:budget:write:{agent}", 30, WINDOW):
            await self.r.set(key, json.dumps(plan), ex=600)
        await self.r.delete(f"{key}:lock")
        return plan


FLOWS: dict[str, tuple[type[Flow], str]] = {
    "okome.aio.Planner": (
        OkomePlanner,
        "`PLAN.GET` (the agent's rate, the lookup, on a miss the lock; a follower waits in "
        "it); miss: + `PLAN.SET` (write budget, ledger, answers the waiters)",
    ),
    "okome, bare redis.asyncio": (
        OkomeBare,
        "the same two commands, without the package (no follower wait, no heartbeat)",
    ),
    "cashews `@cache(lock=True)` + limits": (
        Cashews,
        "`limits` moving-window hit (a script); lock (`SET NX`), `GET`, unlock (a script), "
        "hits included; miss: + `SET`",
    ),
    "cashews `@cache` + limits": (
        CashewsNoLock,
        "`limits` hit; `GET`; miss: + `SET`; concurrent misses share a computation only "
        "within a process",
    ),
    "cashews `@cache.early` + limits": (
        CashewsEarly,
        "`limits` hit; `GET`; miss: + `SET`; as `@cache`, and a hit after `early_ttl` takes a "
        "lock and recomputes in the background",
    ),
    "aiocache `@cached_stampede` + limits": (
        Aiocache,
        "`limits` hit; `GET`; miss: + lock (`SET NX`), `GET` again, `SET`, unlock (a script)",
    ),
    "aiocache `@cached` + limits": (
        AiocacheNoLock,
        "`limits` hit; `GET`; miss: + `SET`; no lock",
    ),
    "seed cache.py + budget.py": (
        Seed,
        "fixed-window `INCR`, `GET`; miss: + lock (`SET NX`), the write budget's `INCR`, `SET`, "
        "`DEL` (+ `EXPIRE` after an `INCR` that opens a window)",
    ),
}


def make_flow(name: str, url: str, delay: float = 0.0) -> Flow:
    cls, includes = FLOWS[name]
    return cls(name=name, includes=includes, url=url, delay=delay)


# --------------------------------------------------------------------------
# 1 and 2: latency, round trips and commands.


# A new connection's handshake, and the INFO that reads the counters: not counted.
UNCOUNTED = {"cmdstat_info", "cmdstat_hello", "cmdstat_client|setinfo", "cmdstat_select"}


async def counters(r: aredis.Redis) -> tuple[int, int]:
    """(read events, commands) so far."""
    info = await r.info("stats", "commandstats")
    calls = sum(
        int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_") and k not in UNCOUNTED
    )
    return int(info["total_reads_processed"]), calls


async def count(r: aredis.Redis, coro: Awaitable[Any]) -> tuple[Any, int, int]:
    reads0, calls0 = await counters(r)
    result = await coro
    reads1, calls1 = await counters(r)
    return result, reads1 - reads0 - 1, calls1 - calls0  # the INFO of `counters` is one read


async def latency(url: str, n: int, quick: bool) -> list[dict[str, Any]]:
    flows = [make_flow(name, url) for name in FLOWS]
    for f in flows:
        await f.setup()
    r = aredis.Redis.from_url(url)
    agents = max(10, n // 10)  # each agent: about 20 requests, well inside 60 a minute
    times: dict[str, tuple[list[float], list[float]]] = {f.name: ([], []) for f in flows}
    stamp = time.time_ns()

    async def rounds(tag: str, count_: int) -> None:
        for i in range(count_):
            for j, f in enumerate(flows):
                prompt = f"{tag} {stamp} {j} {i}: create a plan for the login page"
                agent = f"{tag}-{j}-{i % agents}"
                miss, hit = times[f.name]
                t = time.perf_counter()
                computed, plan = await f.request(prompt, agent)
                miss.append(time.perf_counter() - t)
                assert computed and plan == PLAN, (f.name, computed, plan)
                t = time.perf_counter()
                computed, plan = await f.request(prompt, agent)
                hit.append(time.perf_counter() - t)
                assert not computed and plan == PLAN, (f.name, computed, plan)

    await rounds("warm", 5 if quick else 50)
    for miss, hit in times.values():
        miss.clear()
        hit.clear()
    await rounds("lat", n)
    rows = []
    k = 3 if quick else 20
    for j, f in enumerate(flows):
        m_reads = m_calls = h_reads = h_calls = 0
        for i in range(k):
            prompt = f"count {stamp} {j} {i}: create a plan for the login page"
            agent = f"lat-{j}-{i % agents}"  # a window already open, as in the runs
            (computed, _), reads, calls = await count(r, f.request(prompt, agent))
            assert computed
            m_reads, m_calls = m_reads + reads, m_calls + calls
            (computed, _), reads, calls = await count(r, f.request(prompt, agent))
            assert not computed
            h_reads, h_calls = h_reads + reads, h_calls + calls
        miss, hit = times[f.name]
        rows.append(
            {
                "name": f.name,
                "includes": f.includes,
                "miss_p50": statistics.median(miss) * 1e6,
                "miss_p99": percentile(miss, 0.99) * 1e6,
                "hit_p50": statistics.median(hit) * 1e6,
                "hit_p99": percentile(hit, 0.99) * 1e6,
                "miss_rt": m_reads / k,
                "miss_cmds": m_calls / k,
                "hit_rt": h_reads / k,
                "hit_cmds": h_calls / k,
            }
        )
    for f in flows:
        await f.close()
    await r.aclose()
    return rows


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(len(s) * q) - 1))]


# --------------------------------------------------------------------------
# 3: a cold stampede across processes.


def stampede_worker(
    name: str, url: str, prompt: str, n: int, delay: float, barrier: Any, proc: int
) -> tuple[int, list[float], list[str]]:
    async def run() -> tuple[int, list[float], list[str]]:
        f = make_flow(name, url, delay)
        await f.setup()
        # Each request its own agent: the rate limit is not what is measured here.
        agents = [f"stampede-{time.time_ns()}-{proc}-{i}" for i in range(n)]
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        t0 = time.perf_counter()

        async def one(agent: str) -> float:
            _, plan = await f.request(prompt, agent)
            assert plan == PLAN
            return time.perf_counter() - t0

        results = await asyncio.gather(*(one(a) for a in agents), return_exceptions=True)
        await f.close()
        done = [x for x in results if isinstance(x, float)]
        errors = [repr(x) for x in results if not isinstance(x, float)]
        return f.computed, done, errors

    return asyncio.run(run())


def stampede(url: str, requests: int, procs: int, delay: float) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    r = redis.Redis.from_url(url)
    rows = []
    per = [requests // procs + (1 if i < requests % procs else 0) for i in range(procs)]
    with ctx.Pool(procs) as pool, ctx.Manager() as manager:
        for name in FLOWS:
            if name.startswith("okome, bare"):
                continue  # no follower protocol in the bare commands
            barrier = manager.Barrier(procs)
            prompt = f"stampede {name} {time.time_ns()}: create a plan for the login page"
            reads0, calls0 = asyncio.run(_counters_once(url))
            results = pool.starmap(
                stampede_worker,
                [(name, url, prompt, per[i], delay, barrier, i) for i in range(procs)],
            )
            reads1, calls1 = asyncio.run(_counters_once(url))
            computed = sum(c for c, _, _ in results)
            times = [t for _, ts, _ in results for t in ts]
            errors = [e for _, _, es in results for e in es]
            rows.append(
                {
                    "name": name,
                    "computed": computed,
                    "commands": calls1 - calls0,
                    "p50_ms": statistics.median(times) * 1e3 if times else float("nan"),
                    "max_ms": max(times) * 1e3 if times else float("nan"),
                    "errors": errors[:3],
                    "n_errors": len(errors),
                }
            )
    r.close()
    return rows


async def _counters_once(url: str) -> tuple[int, int]:
    r = aredis.Redis.from_url(url)
    try:
        return await counters(r)
    finally:
        await r.aclose()


# --------------------------------------------------------------------------
# 4 and 5: rate limiters: a window's edge, bytes per window.

Allow = Callable[[str], Awaitable[bool]]


async def limiters(
    url: str, window: int, limit: int = LIMIT
) -> tuple[dict[str, tuple[Allow, str]], list[Any]]:
    """Each limiter as ``allow(identifier)``, a limit of ``limit`` per ``window`` s."""
    from limits.aio.strategies import (
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )

    r = aredis.Redis.from_url(url)
    ok = okome.aio.Okome(r)
    item = limits_item(window, limit)
    storage = limits_storage(url)
    moving = MovingWindowRateLimiter(storage)
    counter = SlidingWindowCounterRateLimiter(storage)
    fixed = FixedWindowRateLimiter(storage)
    app = await fastapi_app(url, window, f"fastapi-limiter-{time.time_ns()}", limit)

    async def okome_rate(agent: str) -> bool:
        return (await ok.rate(agent, limit, window)).allowed

    async def seed_rate(agent: str) -> bool:
        n = int(await r.incr(f"seed:budget:rate:{agent}"))
        if n == 1:
            await r.expire(f"seed:budget:rate:{agent}", window)
        return n <= limit

    async def limiter_fn(strategy: Any, agent: str) -> bool:
        return bool(await strategy.hit(item, agent))

    async def fastapi_limiter(agent: str) -> bool:
        resp = await app.get("/redis", headers={"X-Agent": agent})
        return bool(resp.status_code == 200)

    found: dict[str, tuple[Allow, str]] = {
        "okome `OKOME.RATE` (and `PLAN.GET ... AGENT`)": (okome_rate, "exact sliding window"),
        "limits moving window": (lambda a: limiter_fn(moving, a), "sliding log (a list)"),
        "limits sliding window counter": (
            lambda a: limiter_fn(counter, a),
            "two fixed windows, weighted",
        ),
        "limits fixed window": (lambda a: limiter_fn(fixed, a), "fixed window"),
        "seed budget.py": (seed_rate, "fixed window (`INCR`, `EXPIRE` on the first)"),
        "fastapi-limiter, pyrate-limiter `RedisBucket`": (
            fastapi_limiter,
            "sliding log (a sorted set)",
        ),
    }
    return found, [r, app]


async def fastapi_app(url: str, window: int, bucket_key: str, limit: int = LIMIT) -> Any:
    """A FastAPI app with fastapi-limiter's ``RateLimiter`` dependency: on
    ``/memory`` as its README sets it up (pyrate-limiter's default bucket,
    in this process's memory), on ``/redis`` with pyrate-limiter's
    ``RedisBucket`` on the shared server; the identifier is the
    ``X-Agent`` header (the README's "override it such as userid"). Driven
    through httpx's ASGI transport (no socket: the app is what is measured)."""
    import httpx
    from fastapi import Depends, FastAPI, Request
    from fastapi_limiter.depends import RateLimiter
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

    async def by_agent(request: Request) -> str:
        return request.headers["X-Agent"]

    rate = Rate(limit, Duration.SECOND * window)
    bucket = await RedisBucket.init([rate], aredis.Redis.from_url(url), bucket_key)
    app = FastAPI()

    @app.get("/memory", dependencies=[Depends(RateLimiter(Limiter(rate), identifier=by_agent))])
    async def memory() -> dict[str, str]:
        return {"ok": "memory"}

    @app.get("/redis", dependencies=[Depends(RateLimiter(Limiter(bucket), identifier=by_agent))])
    async def in_redis() -> dict[str, str]:
        return {"ok": "redis"}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def close_all(objs: list[Any]) -> None:
    for o in objs:
        await o.aclose()


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


async def window_edge(url: str, window: int) -> list[dict[str, Any]]:
    """One request at t0, 59 just before t0 + window, 60 just after it:
    a fixed window admits all 120, 119 of them within about 2 s."""
    found, objs = await limiters(url, window)
    stamp = time.time_ns()
    agent = {name: f"edge-{stamp}-{i}" for i, name in enumerate(found)}
    first: dict[str, int] = {}
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    t0 = time.monotonic()
    for name, (allow, _) in found.items():
        first[name] = int(await allow(agent[name]))
    margin = min(1.0, window / 4)
    await sleep_until(t0 + window - margin)
    for name, (allow, _) in found.items():
        before[name] = sum([int(await allow(agent[name])) for _ in range(LIMIT - 1)])
    took = time.monotonic() - (t0 + window - margin)
    assert took < margin, f"the requests before the edge took {took:.2f} s"
    await sleep_until(t0 + window + margin / 2)
    for name, (allow, _) in found.items():
        after[name] = sum([int(await allow(agent[name])) for _ in range(LIMIT)])
    await close_all(objs)
    return [
        {
            "name": name,
            "kind": kind,
            "first": first[name],
            "before": before[name],
            "after": after[name],
            "span": before[name] + after[name],
        }
        for name, (_, kind) in found.items()
    ]


async def window_bytes(url: str, big: int) -> list[dict[str, Any]]:
    """For a limit of 60 a minute and of ``big``: the keys' bytes once full."""
    rows: dict[str, dict[str, Any]] = {}
    r = aredis.Redis.from_url(url)
    for limit in (LIMIT, big):
        found, objs = await limiters(url, WINDOW, limit)
        for i, (name, (allow, _)) in enumerate(found.items()):
            agent = f"bytes-{time.time_ns()}-{i}"
            keys0 = {k async for k in r.scan_iter(count=1000)}
            allowed = sum([int(await allow(agent)) for _ in range(limit)])
            assert allowed == limit, (name, allowed)
            keys = sorted({k async for k in r.scan_iter(count=1000)} - keys0)
            sizes = [int(await r.memory_usage(k, samples=0) or 0) for k in keys]
            row = rows.setdefault(name, {"name": name})
            row["bytes" if limit == LIMIT else "bytes_big"] = sum(sizes)
            row.setdefault(
                "keys",
                [
                    re.sub(r"^fastapi-limiter-\d+$", "<the bucket's key>", k.decode()).replace(
                        agent, "<id>"
                    )
                    for k in keys
                ],
            )
        await close_all(objs)
    await r.aclose()
    return list(rows.values())


# --------------------------------------------------------------------------
# 6: fastapi-limiter's identifiers.


async def fastapi_identifiers(url: str) -> list[dict[str, Any]]:
    """Agents A and B, a per-agent limit of 60 per minute, the identifier
    function returning the agent: A sends 40 requests, then B sends 60."""
    app = await fastapi_app(url, WINDOW, f"fastapi-limiter-{time.time_ns()}")
    rows = []
    for path, setup in (
        ("/memory", "as its README sets it up (`Limiter(Rate(60, Duration.MINUTE))`)"),
        ("/redis", "with pyrate-limiter's `RedisBucket` (`Limiter(bucket)`)"),
    ):
        stamp = time.time_ns()
        got = {}
        for agent, sent in (("A", 40), ("B", 60)):
            codes = [
                (await app.get(path, headers={"X-Agent": f"{agent}-{stamp}"})).status_code
                for _ in range(sent)
            ]
            got[agent] = (codes.count(200), sent)
        rows.append({"setup": setup, "A": got["A"], "B": got["B"]})
    await app.aclose()
    return rows


# --------------------------------------------------------------------------
# Output.


def versions() -> str:
    names = ["cashews", "aiocache", "limits", "fastapi-limiter", "pyrate-limiter"]
    names += ["redis", "fastapi"]
    return ", ".join(f"{n} {version(n)}" for n in names)


def report(
    url: str,
    n: int,
    lat: list[dict[str, Any]],
    stamp: list[dict[str, Any]],
    edge: list[dict[str, Any]],
    size: list[dict[str, Any]],
    ids: list[dict[str, Any]],
    args: argparse.Namespace,
) -> str:
    server = redis.Redis.from_url(url).info("server")
    module = os.environ.get("OKOME_MODULE") or str(ROOT / "target/release/libokome.so")
    build = "debug" if "/debug/" in module else "release"
    out = [
        f"One run of `python benchmarks/compare.py -n {n}` on {time.strftime('%Y-%m-%d')}: "
        f"{os.cpu_count()} cores ({platform.machine()}, shared with other work), loopback, "
        f"Redis {server['redis_version']}, a {build} build of the module, Python "
        f"{platform.python_version()}, {versions()}, no hiredis.",
        "",
        f"**A planner request**: {n} misses and {n} hits per flow, one client, sequential, "
        "the flows interleaved request by request; each request charges its agent's limit "
        "of 60 per minute. Round trips: the server's read events (`total_reads_processed`); "
        "commands: `INFO commandstats` (those a Lua script runs included, a new connection's "
        "handshake not), per request; in parentheses, the hit's p50 over `okome.aio.Planner`'s.",
        "",
        "| flow | what one request does | hit p50 µs | hit p99 µs | miss p50 µs "
        "| miss p99 µs | hit: round trips / commands | miss: round trips / commands |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = lat[0]["hit_p50"]
    for x in lat:
        ratio = "" if x is lat[0] else f" ({x['hit_p50'] / base:.2f}×)"
        out.append(
            f"| {x['name']} | {x['includes']} | {x['hit_p50']:.0f}{ratio} | {x['hit_p99']:.0f} "
            f"| {x['miss_p50']:.0f} | {x['miss_p99']:.0f} | {num(x['hit_rt'])} / "
            f"{num(x['hit_cmds'])} | {num(x['miss_rt'])} / {num(x['miss_cmds'])} |"
        )
    out += [
        "",
        f"**A cold stampede**: {args.stampede} requests for one new key from {args.procs} "
        f"processes at once (asyncio concurrency in each), the computation taking "
        f"{args.delay * 1000:.0f} ms. Commands: all the server ran meanwhile (handshakes not "
        "counted); times include opening each concurrent request's connection.",
        "",
        "| flow | computations | commands | p50 ms | slowest ms |",
        "|---|---|---|---|---|",
    ]
    for x in stamp:
        err = f" ({x['n_errors']} errors: {x['errors'][0]})" if x["n_errors"] else ""
        out.append(
            f"| {x['name']} | {x['computed']}{err} | {x['commands']} | {x['p50_ms']:.0f} "
            f"| {x['max_ms']:.0f} |"
        )
    w = args.edge_window
    margin = min(1.0, w / 4)
    out += [
        "",
        f"**A window's edge**: a limit of 60 per {w} s, one identifier; 1 request at the "
        f"window's start (t0), 59 at t0 + {w - margin:g} s, 60 at t0 + {w + margin / 2:g} s.",
        "",
        "| limiter | window | admitted at t0 | before the edge | after the edge "
        f"| admitted within {1.5 * margin:g} s (limit 60) |",
        "|---|---|---|---|---|---|",
    ]
    for x in edge:
        out.append(
            f"| {x['name']} | {x['kind']} | {x['first']} of 1 | {x['before']} of 59 "
            f"| {x['after']} of 60 | **{x['span']}** |"
        )
    out += [
        "",
        "**Bytes per full window**: `MEMORY USAGE` of the keys one identifier's limit holds "
        f"once full: 60 per minute after 60 requests, {args.big:,} per minute after "
        f"{args.big:,} (sent one after another, as fast as one client does).",
        "",
        f"| limiter | keys | bytes, 60 a minute | bytes, {args.big:,} a minute |",
        "|---|---|---|---|",
    ]
    for x in size:
        keys = ", ".join(f"`{k}`" for k in x["keys"])
        out.append(f"| {x['name']} | {keys} | {x['bytes']:,} | {x['bytes_big']:,} |")
    out += [
        "",
        "**fastapi-limiter's identifiers**: `RateLimiter(limiter, identifier=<the agent's "
        "header>)`, a per-agent limit of 60 per minute; agent A sends 40 requests, then "
        "agent B 60.",
        "",
        "| setup | A admitted | B admitted |",
        "|---|---|---|",
    ]
    for x in ids:
        out.append(f"| {x['setup']} | {x['A'][0]} of {x['A'][1]} | {x['B'][0]} of {x['B'][1]} |")
    return "\n".join(out) + "\n"


def num(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def write_readme(text: str) -> None:
    readme = README.read_text()
    begin, end = readme.index(BEGIN), readme.index(END)
    README.write_text(readme[: begin + len(BEGIN)] + "\n\n" + text + "\n" + readme[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", help="a server with okome loaded (default: start one)")
    parser.add_argument("-n", type=int, default=1000, help="misses (and as many hits) per flow")
    parser.add_argument("--stampede", type=int, default=100, help="requests in the stampede")
    parser.add_argument("--procs", type=int, default=4, help="processes of the stampede")
    parser.add_argument("--delay", type=float, default=0.2, help="the computation's seconds")
    parser.add_argument("--big", type=int, default=1000, help="the larger limit's bytes")
    parser.add_argument("--edge-window", type=int, default=60, help="seconds (60: a minute)")
    parser.add_argument("--write", action="store_true", help="write the tables into README")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        quick = args.n < 100
        lat = asyncio.run(latency(url, args.n, quick))
        stamp = stampede(url, args.stampede, args.procs, args.delay)
        size = asyncio.run(window_bytes(url, args.big))
        ids = asyncio.run(fastapi_identifiers(url))
        edge = asyncio.run(window_edge(url, args.edge_window))
        text = report(url, args.n, lat, stamp, edge, size, ids, args)
        print(text)
        if args.json:
            data = {"latency": lat, "stampede": stamp, "edge": edge, "bytes": size, "ids": ids}
            Path(args.json).write_text(json.dumps(data, indent=1))
        if args.write:
            write_readme(text)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
