"""okome.aio.cache and okome.aio.budget: the seed's drop-ins as coroutines.
The seed's snippets (Parts A and B) run with ``await`` before each call that
talks to Redis, and every check of test_seed.py holds for the twins."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aredis
from test_seed import PART_A, PART_B, HTTPException

import okome
import okome.aio
import okome.aio._config
import okome.aio.budget
import okome.aio.cache
import okome.budget
import okome.cache

CALLS = ("get_json", "set_json", "allow_rate", "allow_cache_write")


def awaiting(snippet: str) -> str:
    """A seed snippet for okome.aio: its imports from okome.aio, and ``await``
    before each call of a coroutine (``key_planner`` does no I/O and stays a
    plain function, as in okome.cache)."""
    out = snippet.replace("from okome.", "from okome.aio.")
    for name in CALLS:
        for before in ("= ", "\n", "    "):
            out = out.replace(f"{before}{name}(", f"{before}await {name}(")
    return out


def test_snippets_with_await():
    a = awaiting(PART_A)
    assert "from okome.aio.cache import key_planner, get_json," in a
    assert "cached = await get_json(cache_key)" in a
    assert "\nawait set_json(cache_key, plan, ttl_seconds=600)" in a
    assert "cache_key = key_planner(" in a
    b = awaiting(PART_B)
    assert "allowed, remaining = await allow_rate(agent_id=" in b
    assert "allowed_w, remaining_w = await allow_cache_write(agent_id=" in b
    assert "    await set_json(cache_key, plan, ttl_seconds=600)" in b


@pytest.fixture
def seed_env(server, monkeypatch):
    monkeypatch.setenv("OKOME_REDIS_URL", server.url)
    okome.aio._config.reset()
    yield server
    okome.aio._config.reset()


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    """``fn()`` in a new event loop, then the client it made from the URL closed."""

    async def main() -> Any:
        try:
            return await fn()
        finally:
            await okome.aio.close_default()

    return asyncio.run(main())


async def handler(snippet: str, namespace: dict) -> object:
    """Runs a snippet as the body of an ``async def`` request handler."""
    body = textwrap.indent(awaiting(snippet), "    ")
    exec("async def handler():\n" + body + "\n    return locals()", namespace)
    return await namespace["handler"]()


def test_part_a_then_b(seed_env):
    computed = []

    def compute_plan(*_args: object) -> dict:
        computed.append(1)
        return {"steps": ["open login.tsx", "add form"]}

    async def main() -> None:
        ns: dict = {"compute_plan": compute_plan, "HTTPException": HTTPException}
        first = await handler(PART_A, ns)
        assert isinstance(first, dict) and first["cached"] is None and computed == [1]
        key = okome.planner_key("gpt-4", "Create a plan for...", "v1.2.3", "abc123")
        assert first["cache_key"] == key
        assert await handler(PART_A, ns) == {"steps": ["open login.tsx", "add form"]}
        assert computed == [1]

        state = {"compute_plan": compute_plan, "HTTPException": HTTPException}
        body_b = "from okome.cache import set_json\ncache_key = CACHE_KEY\nplan = PLAN\n" + PART_B
        state.update(CACHE_KEY=key, PLAN={"steps": ["v2"]})
        for i in range(60):
            out = await handler(body_b, state)
            assert isinstance(out, dict)
            assert out["allowed"] and out["remaining"] == 59 - i
            assert out["allowed_w"] == (i < 30) and out["remaining_w"] == max(29 - i, 0)
        with pytest.raises(HTTPException) as e:
            await handler(body_b, state)
        assert e.value.status_code == 429

    run(main)
    r = seed_env.client(decode_responses=True)
    key = okome.planner_key("gpt-4", "Create a plan for...", "v1.2.3", "abc123")
    assert r.ttl(key) == 600
    assert r.get(key) == '{"steps":["v2"]}'  # the 30 writes the budget allowed
    assert sorted(r.keys("okome:budget:*")) == [
        "okome:budget:rate:{agent-123}",
        "okome:budget:write:{agent-123}",
    ]


def test_locks_and_json_helpers(seed_env):
    from okome.aio.cache import get_json, key_planner, release_lock, set_json, with_lock

    key = key_planner("llama3:8b", "p", "v1", "abc123")
    assert key == okome.cache.key_planner("llama3:8b", "p", "v1", "abc123")
    sync = seed_env.client()

    async def main() -> None:
        token = await with_lock(key)
        assert token and await with_lock(key) is None
        assert isinstance(token, okome.aio.cache.LockToken) and token.key == key
        assert await release_lock(key, token) and not await release_lock(key, token)
        async with await with_lock(key, ttl_ms=8000) as t:  # type: ignore[union-attr]
            assert t and sync.pttl(key + ":lock") > 7000
        assert sync.exists(key + ":lock") == 0

        assert await get_json("okome:tools:{v7}") is None
        assert await set_json("okome:tools:{v7}", {"tools": ["grep"]}, ttl_seconds=600)
        assert await get_json("okome:tools:{v7}") == {"tools": ["grep"]}
        assert await set_json("okome:rag:{myrepo}:chunk-1", {"t": 1})
        assert await get_json("okome:rag:{myrepo}:chunk-1") == {"t": 1}
        assert await get_json(key) is None
        assert await set_json(key, {"steps": [1]})
        assert await get_json(key) == {"steps": [1]}
        with pytest.raises(okome.KeyFormatError):
            await set_json("git:ops", {})
        with pytest.raises(okome.KeyFormatError):
            await set_json("okome:budget:rate:{a}", {})
        with pytest.raises(okome.KeyFormatError):
            await get_json("okome:budget:rate:{a}")
        with pytest.raises(okome.OutOfRangeError):
            await set_json(key, {}, ttl_seconds=60)  # outside the planner standard

    run(main)
    assert sync.ttl("okome:tools:{v7}") == 600
    assert sync.ttl("okome:rag:{myrepo}:chunk-1") == 3600
    assert sync.ttl(key) == 600


def test_record_agent_key_is_the_modules_ledger(seed_env):
    from okome.aio.budget import agent_keys, agent_keys_key, record_agent_key
    from okome.aio.cache import key_planner, set_json

    plan_key = key_planner("gpt-4", "p", "v1", "abc123")

    async def main() -> None:
        await set_json(plan_key, {"steps": []}, ttl_seconds=600)
        await set_json("okome:tools:{v7}", {"tools": []})
        await record_agent_key("agent-123", plan_key)
        await record_agent_key("agent-123", "okome:tools:{v7}")
        assert await agent_keys("agent-123") == {plan_key, "okome:tools:{v7}"}
        with pytest.raises(okome.OkomeError):
            await record_agent_key("agent-123", "okome:tools:{absent}")  # not written

    run(main)
    ledger = "okome:budget:keys:{agent-123}"
    assert agent_keys_key("agent-123") == ledger
    assert seed_env.client().type(ledger) == b"zset"
    assert 590 < seed_env.client().ttl(ledger) <= 600


def test_same_commands_as_the_sync_drop_ins(seed_env):
    # The twins send what okome.cache and okome.budget send: the same counts
    # per command for the same calls.
    okome.configure(seed_env.client())
    try:
        key = okome.cache.key_planner("m", "same", "v1", "abc123")
        seed_env.client().config_resetstat()
        okome.cache.set_json(key, {"a": 1})
        okome.cache.get_json(key)
        okome.budget.allow_rate("same", 5, 60)
        okome.budget.allow_cache_write("same", 5)
        sync_calls = {c: seed_env.calls(c) for c in ("okome.plan.set", "okome.plan.lookup")}
        sync_calls |= {c: seed_env.calls(c) for c in ("okome.rate", "okome.wbudget")}
    finally:
        okome._config.reset()
    seed_env.client().flushall()
    seed_env.client().config_resetstat()

    async def main() -> None:
        await okome.aio.cache.set_json(key, {"a": 1})
        assert await okome.aio.cache.get_json(key) == {"a": 1}
        assert await okome.aio.budget.allow_rate("same", 5, 60) == (True, 4)
        assert await okome.aio.budget.allow_cache_write("same", 5) == (True, 4)

    run(main)
    assert sync_calls == {c: seed_env.calls(c) for c in sync_calls}
    assert sync_calls == {
        "okome.plan.set": 1,
        "okome.plan.lookup": 1,
        "okome.rate": 1,
        "okome.wbudget": 1,
    }


def test_concurrent_calls_share_one_exact_window(seed_env):
    # 100 concurrent allow_rate on one loop (they do not block it): exactly
    # the limit is admitted, the remaining counts are each value once.
    async def main() -> list[tuple[bool, int]]:
        return await asyncio.gather(
            *(okome.aio.budget.allow_rate("burst", 60, 60) for _ in range(100))
        )

    results = run(main)
    assert sum(allowed for allowed, _ in results) == 60
    assert sorted(r for allowed, r in results if allowed) == list(range(60))
    assert [r for allowed, r in results if not allowed] == [0] * 40


def test_configure_wins_over_the_url(server, monkeypatch):
    monkeypatch.setenv("OKOME_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there

    async def main() -> None:
        client = aredis.Redis(port=server.port)
        ok = okome.aio.configure(client)
        assert isinstance(ok, okome.aio.Okome) and okome.aio.configure(ok) is ok
        try:
            assert await okome.aio.budget.allow_rate("cfg", 1, 60) == (True, 0)
            assert await okome.aio.budget.allow_rate("cfg", 1, 60) == (False, 0)
        finally:
            okome.aio._config.reset()
            await client.aclose()

    run(main)


def test_the_url_client_follows_the_event_loop(seed_env):
    # Each asyncio.run is a new loop; a redis.asyncio connection serves only
    # the loop that opened it, so each loop gets its own client.
    seen = []

    async def main() -> None:
        assert await okome.aio.budget.allow_rate("loops", 10, 60) == (True, 10 - 1 - len(seen))
        seen.append(okome.aio._config.default())
        assert okome.aio._config.default() is seen[-1]  # one per loop

    run(main)
    assert okome.aio._config._made is None  # closed and forgotten by close_default
    run(main)
    assert len(seen) == 2 and seen[0] is not seen[1]
