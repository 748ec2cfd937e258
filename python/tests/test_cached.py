"""``@planner.cached(...)`` (issue 23): a function of the prompt on the
planner protocol, sync and asyncio, on a real server; and what it refuses
to decorate (the seed's hard rule, where okome can know)."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import httpx
import pytest
import redis.asyncio as aredis
from conftest import ROOT
from uvicorn_support import serve

import okome
import okome.aio
import okome.aio._config
from okome import PlanStatus, UncacheableFunctionError

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"
README = ROOT / "python" / "README.md"


def test_sync_miss_then_hit_with_headers(server):
    planner = okome.Planner(server.client())
    calls: list[str] = []

    @planner.cached(model=MODEL, toolset_version=TOOLSET, repo_hash=REPO)
    def make_plan(prompt: str) -> dict[str, Any]:
        """Plan it."""
        calls.append(prompt)
        return {"steps": [prompt, "apply"]}

    assert make_plan("fix login") == {"steps": ["fix login", "apply"]}
    hit = make_plan.result("fix login", agent="agent-1")
    key = okome.planner_key(MODEL, "fix login", TOOLSET, REPO)
    assert hit.status is PlanStatus.HIT and hit.plan == {"steps": ["fix login", "apply"]}
    assert hit.headers == {
        "X-OKOME-Cache": "HIT",
        "X-OKOME-Cache-Key": key,
        "X-OKOME-Agent-Rate-Remaining": "59",
    }
    assert calls == ["fix login"]
    assert make_plan.__wrapped__("x") == {"steps": ["x", "apply"]}  # uncached
    assert make_plan.__name__ == "make_plan" and make_plan.__doc__ == "Plan it."
    assert make_plan.label == "test_sync_miss_then_hit_with_headers.<locals>.make_plan"
    assert server.calls("okome.plan.get") == 2 and server.calls("okome.plan.set") == 1


def test_sync_twenty_concurrent_calls_compute_once(server):
    planner = okome.Planner(server.client())
    calls: list[str] = []
    barrier = threading.Barrier(20)

    @planner.cached(model=MODEL, toolset_version=TOOLSET, repo_hash=REPO)
    def make_plan(prompt: str) -> list[str]:
        calls.append(prompt)
        time.sleep(0.3)
        return [prompt]

    def call(i: int) -> okome.PlanResult[list[str]]:
        barrier.wait()
        return make_plan.result("cold", agent=f"agent-{i}")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(call, range(20)))
    assert calls == ["cold"]
    assert sorted(r.status.value for r in results) == ["HIT"] * 19 + ["MISS"]
    assert all(r.plan == ["cold"] for r in results)


def test_key_parts_from_the_function_the_call_and_the_decorator(server):
    planner = okome.Planner(server.client())
    seen: list[tuple[str, str, str]] = []

    @planner.cached(toolset_version=TOOLSET)
    def make_plan(model: str, prompt: str, repo_hash: str) -> str:
        seen.append((model, prompt, repo_hash))
        return f"{model}/{prompt}/{repo_hash}"

    r = make_plan.result("p", model="m1", repo_hash="r1")
    assert r.plan == "m1/p/r1" and r.key == okome.planner_key("m1", "p", TOOLSET, "r1")
    assert make_plan("p", model="m2", repo_hash="r1") == "m2/p/r1"
    assert make_plan("p", model="m1", repo_hash="r1") == "m1/p/r1"  # a HIT
    # The call may key more finely than the function reads (say toolset_version).
    assert make_plan.result("p", model="m1", repo_hash="r1", toolset_version="v2").computed
    assert seen == [("m1", "p", "r1"), ("m2", "p", "r1"), ("m1", "p", "r1")]
    with pytest.raises(TypeError, match=r"^.*make_plan: no model and no repo_hash: give model="):
        make_plan("p")

    @planner.cached(model=MODEL, repo_hash=REPO, toolset_version=TOOLSET)
    def positional(prompt: str, /) -> str:
        return prompt.upper()

    assert positional("abc") == "ABC"


def test_decorator_settings_and_agent(server):
    planner = okome.Planner(server.client(), limit=5, window=60)

    @planner.cached(model=MODEL, toolset_version=TOOLSET, repo_hash=REPO, agent="svc", ttl=300)
    def make_plan(prompt: str) -> int:
        return len(prompt)

    first = make_plan.result("abcd")
    assert first.plan == 4 and first.rate_remaining == 4 and first.stored.value == "STORED"
    assert 299_000 < server.client().pttl(first.key) <= 300_000
    assert make_plan.result("abcd", agent="other").rate_remaining == 4  # the call's agent
    assert make_plan.result("abcd").rate_remaining == 3
    with pytest.raises(ValueError, match="failure_ttl_ms 70000 is out of range"):
        planner.cached(model=MODEL, failure_ttl_ms=70_000)


def test_typed_plans_through_the_decorator(server):
    codec = okome.json_codec(tuple[int, ...])
    planner = okome.Planner(server.client(), encoder=codec.encode, decoder=codec.decode)

    @planner.cached(model=MODEL, toolset_version=TOOLSET, repo_hash=REPO)
    def lengths(prompt: str) -> tuple[int, ...]:
        return tuple(len(w) for w in prompt.split())

    assert lengths("ab cde") == (2, 3) and lengths("ab cde") == (2, 3)
    assert lengths.result("ab cde").status is PlanStatus.HIT


def test_async_thirty_concurrent_calls_compute_once(server):
    calls: list[str] = []

    async def main() -> list[okome.PlanResult[dict[str, str]]]:
        planner = okome.aio.Planner(aredis.Redis(port=server.port))

        @planner.cached(model=MODEL, toolset_version=TOOLSET, repo_hash=REPO)
        async def make_plan(prompt: str) -> dict[str, str]:
            calls.append(prompt)
            await asyncio.sleep(0.3)
            return {"plan": prompt}

        results = await asyncio.gather(*(make_plan.result("cold") for _ in range(30)))
        assert await make_plan("cold") == {"plan": "cold"}
        await planner.okome.client.aclose()
        return list(results)

    results = asyncio.run(main())
    assert calls == ["cold"]
    assert sorted(r.status.value for r in results) == ["HIT"] * 29 + ["MISS"]
    assert {r.headers["X-OKOME-Cache"] for r in results} == {"HIT", "MISS"}


def test_async_planner_takes_a_plain_function_too(server):
    async def main() -> tuple[str, str]:
        planner = okome.aio.Planner(aredis.Redis(port=server.port))

        @planner.cached(model=MODEL, toolset_version=TOOLSET, repo_hash=REPO)
        def make_plan(prompt: str) -> str:
            return prompt[::-1]

        first = await make_plan.result("abc")
        second = await make_plan.result("abc")
        await planner.okome.client.aclose()
        return first.cache, second.cache

    assert asyncio.run(main()) == ("MISS", "HIT")


# -- what it refuses -------------------------------------------------------


@okome.never_cache
def run_tool(prompt: str) -> str:
    return f"ran {prompt}"


def refused(planner: Any, fn: Any) -> str:
    with pytest.raises(UncacheableFunctionError) as e:
        planner.cached(model=MODEL, toolset_version=TOOLSET, repo_hash=REPO)(fn)
    return str(e.value)


def test_refusals_at_decoration_time(server):
    planner = okome.Planner(server.client())

    def stream(prompt: str) -> Iterator[str]:
        yield prompt

    async def astream(prompt: str) -> AsyncIterator[str]:
        yield prompt

    def writes(prompt: str) -> None:
        pass

    def never(prompt: str) -> NoReturn:
        raise SystemExit

    def plain(prompt):  # type: ignore[no-untyped-def]  # no annotation: okome cannot tell
        return prompt

    plain.__annotations__["return"] = None  # -> None, not a string (no __future__ import)

    @functools.wraps(run_tool)
    def wrapper(prompt: str) -> str:
        return run_tool(prompt)

    def other(prompt: str, path: str) -> str:
        return path

    def varargs(prompt: str, **kw: str) -> str:
        return prompt

    def no_prompt(model: str) -> str:
        return model

    assert "is marked okome.never_cache" in refused(planner, run_tool)
    # functools.wraps copies the mark: the wrapper is refused as run_tool.
    assert refused(planner, wrapper).startswith("run_tool is marked okome.never_cache")
    assert "is a generator" in refused(planner, stream)
    assert "is a generator" in refused(okome.aio.Planner(aredis.Redis(port=server.port)), astream)
    assert "is annotated -> None" in refused(planner, writes)
    assert "is annotated -> None" in refused(planner, plain)
    assert "is annotated -> NoReturn" in refused(planner, never)
    assert "other takes 'path': a cached function takes only parts" in refused(planner, other)
    assert "varargs takes 'kw'" in refused(planner, varargs)
    assert "does not take the prompt" in refused(planner, no_prompt)

    async def coroutine(prompt: str) -> str:
        return prompt

    with pytest.raises(TypeError, match="is a coroutine function: decorate it with an okome.aio"):
        planner.cached(model=MODEL)(coroutine)
    assert issubclass(UncacheableFunctionError, TypeError)
    assert server.client().keys("*") == []  # nothing was sent


def test_get_or_compute_refuses_a_never_cache_compute(server):
    planner = okome.Planner(server.client())
    partial = functools.partial(run_tool, "x")
    with pytest.raises(
        UncacheableFunctionError, match=r"^functools.partial\(.*\) wraps run_tool, "
    ):
        planner.get_or_compute(MODEL, "tool", TOOLSET, REPO, partial)
    # The lock the lookup took is released (no failure recorded: nothing ran).
    key = okome.planner_key(MODEL, "tool", TOOLSET, REPO)
    assert server.client().keys("*") == []
    assert okome.Okome(server.client()).plan_lookup(key).status is PlanStatus.MISS

    async def main() -> None:
        aplanner = okome.aio.Planner(aredis.Redis(port=server.port))
        with pytest.raises(UncacheableFunctionError):
            await aplanner.get_or_compute(MODEL, "tool", TOOLSET, REPO, run_tool)  # type: ignore[arg-type]
        await aplanner.okome.client.aclose()

    asyncio.run(main())
    assert server.client().keys("*") == []
    with pytest.raises(TypeError, match="cannot mark"):
        okome.never_cache(len)


def readme_block(after: str) -> str:
    """The first ```python block of python/README after the line ``after``."""
    text = README.read_text()
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_readme_fastapi_endpoint_with_the_seed_headers(server, monkeypatch):
    """python/README's FastAPI example of the decorator, as it is, under uvicorn."""
    monkeypatch.setenv("OKOME_REDIS_URL", server.url)
    code = readme_block("In a FastAPI endpoint, with the seed's `X-OKOME-Cache` headers")
    assert "@planner.cached(toolset_version=" in code
    ns: dict[str, Any] = {"__name__": "readme_app"}
    exec(compile(code, "README.md", "exec", dont_inherit=True), ns)
    body = {"model": "gpt-4", "prompt": "test"}
    key = okome.planner_key("gpt-4", "test", "v1", "abc123")
    try:
        with serve(ns["app"]) as url, httpx.Client(base_url=url, timeout=30) as http:

            def post(agent: str) -> httpx.Response:
                headers = {"X-OKOME-Agent": agent, "X-Repo-Hash": "abc123"}
                return http.post("/api/planner", json=body, headers=headers)

            with ThreadPoolExecutor(10) as pool:
                first = list(pool.map(post, [f"agent-{i}" for i in range(10)]))
            second = post("agent-0")
    finally:
        okome.aio._config.reset()
    want = {"model": "gpt-4", "steps": ["understand: test", "plan", "apply"]}
    assert [r.status_code for r in first] == [200] * 10
    assert all(r.json() == want for r in first) and second.json() == want
    assert sorted(r.headers["X-OKOME-Cache"] for r in first) == ["HIT"] * 9 + ["MISS"]
    assert server.calls("okome.plan.set") == 1  # computed once
    assert {r.headers["X-OKOME-Cache-Key"] for r in first} == {key}
    assert second.headers["X-OKOME-Cache"] == "HIT"
    assert second.headers["X-OKOME-Cache-Key"] == key
    assert second.headers["X-OKOME-Agent-Rate-Remaining"] == "58"
