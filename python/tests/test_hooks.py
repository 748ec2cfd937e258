"""``Planner(..., on_result=hook)`` (issue 23): one PlanEvent per request,
sync and asyncio, on a real server (and one that goes away)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import types
from typing import Any, ClassVar

import pytest
import redis
import redis.asyncio as aredis
from conftest import ROOT
from redis.backoff import NoBackoff
from redis.retry import Retry

import okome
import okome.aio
from okome import PlanEvent

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"


def key(prompt: str) -> str:
    return okome.planner_key(MODEL, prompt, TOOLSET, REPO)


def strip(e: PlanEvent) -> tuple[Any, ...]:
    """An event without its latency and error (checked apart)."""
    return (e.status, e.key, e.computed, e.label, e.agent)


def test_sync_events(server):
    events: list[PlanEvent] = []
    planner = okome.Planner(server.client(), on_result=events.append, limit=2, window=60)

    def slow() -> dict[str, int]:
        time.sleep(0.2)
        return {"v": 1}

    planner.get_or_compute(MODEL, "p", TOOLSET, REPO, slow, agent="a", label="/plan")
    planner.get_or_compute(MODEL, "p", TOOLSET, REPO, slow, agent="a", label="/plan")
    with pytest.raises(okome.RateLimited):
        planner.get_or_compute(MODEL, "p", TOOLSET, REPO, slow, agent="a", label="/plan")
    planner.get_or_compute(MODEL, "p", TOOLSET, REPO, slow)
    assert [strip(e) for e in events] == [
        ("MISS", key("p"), True, "/plan", "a"),
        ("HIT", key("p"), False, "/plan", "a"),
        ("LIMITED", key("p"), False, "/plan", "a"),
        ("HIT", key("p"), False, None, None),
    ]
    assert 0.2 <= events[0].latency < 2.0 and 0 < events[1].latency < 0.2
    assert events[0].error is None and events[1].error is None
    assert isinstance(events[2].error, okome.RateLimited)


def test_failures_locks_and_refreshes(server):
    events: list[PlanEvent] = []
    planner = okome.Planner(server.client(), on_result=events.append, wait_ms=5000)
    boom = RuntimeError("the model is down")

    def fail() -> Any:
        time.sleep(0.3)
        raise boom

    follower: list[BaseException] = []

    def follow() -> None:
        try:
            planner.get_or_compute(MODEL, "f", TOOLSET, REPO, fail, label="follower")
        except okome.ComputeFailed as e:
            follower.append(e)

    with pytest.raises(RuntimeError):
        t = threading.Timer(0.1, follow)
        t.start()
        planner.get_or_compute(MODEL, "f", TOOLSET, REPO, fail, label="leader")
    t.join()
    assert len(follower) == 1
    by_label = {e.label: e for e in events}
    assert strip(by_label["leader"]) == ("FAILED", key("f"), True, "leader", None)
    assert by_label["leader"].error is boom
    assert strip(by_label["follower"]) == ("FAILED", key("f"), False, "follower", None)
    assert by_label["follower"].error is follower[0]
    # A held lock: LOCKED after the wait.
    held = okome.Okome(server.client()).plan_get(MODEL, "held", TOOLSET, REPO, lock=True)
    with pytest.raises(okome.PlanLocked):
        planner.get_or_compute(MODEL, "held", TOOLSET, REPO, fail, wait_ms=200)
    assert strip(events[-1]) == ("LOCKED", held.key, False, None, None)
    # REFRESH: served (the background recompute is not a request: no event).
    planner.get_or_compute(MODEL, "r", TOOLSET, REPO, lambda: 1)
    r = planner.get_or_compute(MODEL, "r", TOOLSET, REPO, lambda: 2, refresh_ahead_ms=900_000)
    assert planner.wait_background(5)
    assert r.status.value == "REFRESH"
    assert [strip(e) for e in events[-2:]] == [
        ("MISS", key("r"), True, None, None),
        ("REFRESH", key("r"), False, None, None),
    ]
    assert len(events) == 5


def test_a_hook_that_raises_breaks_nothing(server, caplog):
    def hook(event: PlanEvent) -> None:
        raise ValueError("metrics are down")

    planner = okome.Planner(server.client(), on_result=hook)
    with caplog.at_level(logging.ERROR, logger="okome"):
        r = planner.get_or_compute(MODEL, "p", TOOLSET, REPO, lambda: [1])
    assert r.plan == [1] and r.computed
    [record] = [r for r in caplog.records if "on_result hook raised" in r.getMessage()]
    assert record.exc_info is not None and str(record.exc_info[1]) == "metrics are down"


def test_outages_bypass_and_unavailable(start_server):
    server = start_server()
    events: list[PlanEvent] = []
    client = server.client(retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)
    planner = okome.Planner(client, on_result=events.append, fail_open=True)
    strict = okome.Planner(client, on_result=events.append)
    server.kill()
    assert planner.get_or_compute(MODEL, "down", TOOLSET, REPO, lambda: 3).plan == 3
    with pytest.raises(okome.OkomeUnavailable):
        strict.get_or_compute(MODEL, "down", TOOLSET, REPO, lambda: 3)
    assert [strip(e) for e in events] == [
        ("BYPASS", key("down"), True, None, None),
        ("UNAVAILABLE", key("down"), False, None, None),
    ]
    assert isinstance(events[1].error, okome.OkomeUnavailable)


def test_aio_events(server):
    events: list[PlanEvent] = []

    async def main() -> None:
        planner = okome.aio.Planner(aredis.Redis(port=server.port), on_result=events.append)

        async def compute() -> str:
            await asyncio.sleep(0.1)
            return "plan"

        await asyncio.gather(
            *(
                planner.get_or_compute(MODEL, "a", TOOLSET, REPO, compute, label="x")
                for _ in range(5)
            )
        )

        @planner.cached(model=MODEL, toolset_version=TOOLSET, repo_hash=REPO, label="/cached")
        async def make_plan(prompt: str) -> str:
            return prompt

        await make_plan("a", agent="agent-1")
        with pytest.raises(ZeroDivisionError):
            await planner.get_or_compute(MODEL, "z", TOOLSET, REPO, lambda: 1 / 0)
        await planner.okome.client.aclose()

    asyncio.run(main())
    assert sorted(strip(e) for e in events[:5]) == [("HIT", key("a"), False, "x", None)] * 4 + [
        ("MISS", key("a"), True, "x", None)
    ]
    assert strip(events[5]) == ("HIT", key("a"), False, "/cached", "agent-1")
    assert strip(events[6]) == ("FAILED", key("z"), True, None, None)
    assert isinstance(events[6].error, ZeroDivisionError) and len(events) == 7


def test_a_coroutine_hook_is_refused(server):
    async def hook(event: PlanEvent) -> None:
        pass

    with pytest.raises(TypeError, match="on_result must be a plain function"):
        okome.aio.Planner(aredis.Redis(port=server.port), on_result=hook)


class FakeMetric:
    """prometheus_client's Counter and Histogram, as far as the README uses them."""

    made: ClassVar[dict[str, FakeMetric]] = {}

    def __init__(self, name: str, doc: str, labelnames: list[str]) -> None:
        self.values: dict[tuple[str, ...], list[float]] = {}
        self._labels: tuple[str, ...] = ()
        FakeMetric.made[name] = self

    def labels(self, *values: str) -> FakeMetric:
        self._labels = values
        return self

    def inc(self) -> None:
        self.values.setdefault(self._labels, []).append(1)

    def observe(self, value: float) -> None:
        self.values.setdefault(self._labels, []).append(value)


def test_the_readme_prometheus_block_runs(server, monkeypatch):
    """python/README's hook for prometheus_client (not installed here: a
    stand-in with its Counter and Histogram), as it is."""
    fake = types.ModuleType("prometheus_client")
    fake.Counter = fake.Histogram = FakeMetric  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prometheus_client", fake)
    real = redis.Redis

    class Local(real):  # type: ignore[misc,valid-type]
        """``redis.Redis()`` of the README: the test's server."""

        def __init__(self) -> None:
            super().__init__(port=server.port)

    monkeypatch.setattr(redis, "Redis", Local)
    text = (ROOT / "python" / "README.md").read_text()
    start = text.index("```python\n", text.index("With `prometheus_client` (not a dependency")) + 10
    code = text[start : text.index("```", start)]
    ns: dict[str, Any] = {"__name__": "readme", "model": MODEL, "prompt": "prom", "repo": REPO}
    ns.update(compute=lambda: {"v": 1}, agent="agent-1")
    exec(compile(code, "README.md", "exec", dont_inherit=True), ns)
    exec(compile(code.split("\n\n\n")[-1], "README.md", "exec", dont_inherit=True), ns)
    requests = FakeMetric.made["okome_planner_requests"].values
    assert requests == {("/api/planner", "MISS"): [1], ("/api/planner", "HIT"): [1]}
    latency = FakeMetric.made["okome_planner_seconds"].values
    assert sorted(latency) == [("/api/planner", "HIT"), ("/api/planner", "MISS")]
    assert ns["result"].status.value == "HIT"
