"""``Okome.plan_get`` / ``plan_lookup`` take the plan's lock only when told
to (issue 23: a REPL user's "get" blocked the next real call for 9 s)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aredis
from conftest import ROOT

import okome
import okome.aio
from okome import PlanStatus

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"


def test_a_get_takes_no_lock_by_default(server):
    ok = okome.Okome(server.client())
    got = ok.plan_get(MODEL, "repl", TOOLSET, REPO)
    assert got.status is PlanStatus.MISS and got.token is None and got.lock_ttl_ms is None
    assert server.client().keys("*:lock") == []
    assert ok.plan_lookup(got.key).token is None and server.client().keys("*:lock") == []
    # So the next real call leads at once, instead of waiting for the lock.
    planner = okome.Planner(server.client())
    t0 = time.monotonic()
    result = planner.get_or_compute(MODEL, "repl", TOOLSET, REPO, lambda: {"v": 1})
    assert result.status is PlanStatus.MISS and result.computed
    assert time.monotonic() - t0 < 1.0
    assert ok.stats()["okome_lock_acquired"] == 1  # the planner's, and no other


def test_lock_true_takes_it(server):
    ok = okome.Okome(server.client())
    held = ok.plan_get(MODEL, "held", TOOLSET, REPO, lock=True, lock_ttl_ms=8000)
    assert held.status is PlanStatus.MISS and held.token and held.lock_ttl_ms == 8000
    assert server.client().keys("*:lock") == [f"{held.key}:lock".encode()]
    assert 7000 < server.client().pttl(f"{held.key}:lock") <= 8000
    # A lookup without the lock does not wait for it: MISS, no token (LOCKED
    # is for the callers that would take it).
    assert ok.plan_lookup(held.key).status is PlanStatus.MISS
    assert ok.plan_lookup(held.key, lock=True).status is PlanStatus.LOCKED
    assert ok.plan_set(held.key, {"v": 2}, token=held.token).lock_released
    assert ok.plan_get(MODEL, "held", TOOLSET, REPO).plan == {"v": 2}


def test_what_needs_the_lock_says_so(server):
    ok = okome.Okome(server.client())
    for kw in ({"wait_ms": 100}, {"lock_ttl_ms": 8000}, {"refresh_ahead_ms": 1000}):
        name = next(iter(kw))
        with pytest.raises(ValueError, match=f"^{name} needs lock=True"):
            ok.plan_get(MODEL, "p", TOOLSET, REPO, **kw)
        with pytest.raises(ValueError, match=f"^{name} needs lock=True"):
            ok.plan_lookup(okome.planner_key(MODEL, "p", TOOLSET, REPO), **kw)
    with pytest.raises(ValueError, match="lock=True and nolock=True exclude each other"):
        ok.plan_get(MODEL, "p", TOOLSET, REPO, lock=True, nolock=True)
    # refresh_ahead_ms=0 (off) needs no lock; nolock=True is the default, kept.
    assert ok.plan_get(MODEL, "p", TOOLSET, REPO, refresh_ahead_ms=0).token is None
    assert ok.plan_get(MODEL, "p", TOOLSET, REPO, nolock=True).token is None
    assert server.client().keys("*") == []  # nothing was sent that wrote


def test_aio_the_same(server):
    async def main() -> None:
        ok = okome.aio.Okome(aredis.Redis(port=server.port))
        got = await ok.plan_get(MODEL, "aio", TOOLSET, REPO)
        assert got.status is PlanStatus.MISS and got.token is None
        assert (await ok.plan_lookup(got.key)).token is None
        assert await ok.client.keys("*:lock") == []
        with pytest.raises(ValueError, match="^wait_ms needs lock=True"):
            await ok.plan_get(MODEL, "aio", TOOLSET, REPO, wait_ms=100)
        held = await ok.plan_get(MODEL, "aio", TOOLSET, REPO, lock=True)
        assert held.token and await ok.client.exists(f"{held.key}:lock") == 1
        await ok.client.aclose()

    asyncio.run(main())


def test_the_readme_block_runs(server):
    text = (ROOT / "python" / "README.md").read_text()
    at = text.index("**`plan_get` and `plan_lookup` take no lock unless told to**")
    start = text.index("```python\n", at) + len("```python\n")
    code = text[start : text.index("```", start)]
    ok = okome.Okome(server.client())
    ns = {"ok": ok, "okome": okome, "prompt": "readme", "repo": REPO, "compute": lambda: [1]}
    exec(compile(code, "README.md", "exec", dont_inherit=True), ns)
    assert ok.plan_get(MODEL, "readme", TOOLSET, REPO).plan == [1]
    assert server.client().keys("*:lock") == []
