"""okome.Planner (sync): README's leader/follower protocol on a real server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

import okome
from okome import PlanStatus

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"


class Counter:
    """A compute function that counts its calls."""

    def __init__(self, delay: float = 0.0, plan: object = None, fail: bool = False):
        self.calls = 0
        self.delay = delay
        self.plan = plan if plan is not None else {"steps": ["a", "b"]}
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self) -> object:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the model is down")
        return self.plan


def test_miss_then_hit_with_headers(server):
    planner = okome.Planner(server.client())
    compute = Counter()
    first = planner.get_or_compute(MODEL, "plan X", TOOLSET, REPO, compute, agent="agent-123")
    key = okome.planner_key(MODEL, "plan X", TOOLSET, REPO)
    assert first.status is PlanStatus.MISS and first.computed and first.cache == "MISS"
    assert first.plan == compute.plan and first.key == key and first.rate_remaining == 59
    assert first.stored is okome.StoreStatus.STORED
    assert first.headers == {
        "X-OKOME-Cache": "MISS",
        "X-OKOME-Cache-Key": key,
        "X-OKOME-Agent-Rate-Remaining": "59",
        "X-OKOME-Cache-Write": "STORED",
    }
    second = planner.get_or_compute(MODEL, "plan X", TOOLSET, REPO, compute, agent="agent-123")
    assert second.status is PlanStatus.HIT and not second.computed and second.plan == compute.plan
    assert second.headers == {
        "X-OKOME-Cache": "HIT",
        "X-OKOME-Cache-Key": key,
        "X-OKOME-Agent-Rate-Remaining": "58",
    }
    assert compute.calls == 1
    # Without an agent: no rate header, no charge.
    third = planner.get_or_compute(MODEL, "plan X", TOOLSET, REPO, compute)
    assert third.rate_remaining is None and "X-OKOME-Agent-Rate-Remaining" not in third.headers
    # A hit is one round trip; a miss two.
    assert server.calls("okome.plan.get") == 3 and server.calls("okome.plan.set") == 1


def test_forty_concurrent_cold_requests_compute_once(server):
    planner = okome.Planner(server.client())
    compute = Counter(delay=0.3)
    barrier = threading.Barrier(40)

    def request(i: int) -> okome.PlanResult:
        barrier.wait()
        return planner.get_or_compute(MODEL, "cold", TOOLSET, REPO, compute, agent=f"agent-{i}")

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(request, range(40)))
    assert compute.calls == 1
    assert [r.computed for r in results].count(True) == 1
    assert all(r.plan == compute.plan for r in results)
    assert sorted(r.status.value for r in results) == ["HIT"] * 39 + ["MISS"]
    assert server.calls("okome.plan.set") == 1


def test_raising_compute_hands_over_at_once(server):
    """With failure_ttl_ms=0 a failure is not shared: the next waiter takes over
    (test_bad_day.py has the shared failures)."""
    planner = okome.Planner(server.client(), failure_ttl_ms=0)
    leader_started = threading.Event()

    def failing() -> object:
        leader_started.set()
        time.sleep(0.3)
        raise RuntimeError("the model is down")

    errors: list[BaseException] = []

    def lead() -> None:
        try:
            planner.get_or_compute(MODEL, "handover", TOOLSET, REPO, failing)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=lead)
    t.start()
    assert leader_started.wait(5)
    follower = Counter(plan={"by": "follower"})
    t0 = time.monotonic()
    result = planner.get_or_compute(MODEL, "handover", TOOLSET, REPO, follower, wait_ms=10_000)
    elapsed = time.monotonic() - t0
    t.join()
    assert len(errors) == 1 and str(errors[0]) == "the model is down"
    # The follower became the leader when the lock was released, not at its 9 s expiry.
    assert result.computed and result.plan == {"by": "follower"} and elapsed < 2.0
    assert follower.calls == 1
    assert server.client().exists(result.key + ":lock") == 0


def test_long_compute_keeps_its_lock_by_heartbeats(start_server):
    # A lock standard of 300-1000 ms, so a 2.5 s computation outlives the lock 3 times over.
    server = start_server("lock-ttl-min", "300", "lock-ttl-default", "600", "lock-ttl-max", "1000")
    planner = okome.Planner(server.client())
    compute = Counter(delay=2.5, plan={"slow": True})
    key = okome.planner_key(MODEL, "slow", TOOLSET, REPO)
    leader = threading.Thread(
        target=planner.get_or_compute, args=(MODEL, "slow", TOOLSET, REPO, compute)
    )
    leader.start()
    time.sleep(0.2)
    follower = Counter(plan={"slow": "follower"})
    results = []
    f = threading.Thread(
        target=lambda: results.append(
            planner.get_or_compute(MODEL, "slow", TOOLSET, REPO, follower, wait_ms=5000)
        )
    )
    f.start()
    time.sleep(1.5)
    assert 0 < server.client().pttl(key + ":lock") <= 600  # still held, by heartbeats
    leader.join()
    f.join()
    assert compute.calls == 1 and follower.calls == 0
    assert results[0].status is PlanStatus.HIT and results[0].plan == {"slow": True}
    stats = okome.Okome(server.client()).stats()
    assert stats["okome_lock_extended"] >= 5


def test_refresh_serves_the_old_plan_and_recomputes_once(server):
    planner = okome.Planner(server.client(), refresh_ahead_ms=900_000)
    first = Counter(plan={"v": 1})
    assert planner.get_or_compute(MODEL, "refresh", TOOLSET, REPO, first).computed
    second = Counter(delay=0.5, plan={"v": 2})
    barrier = threading.Barrier(20)

    def request(_: int) -> okome.PlanResult:
        barrier.wait()
        return planner.get_or_compute(MODEL, "refresh", TOOLSET, REPO, second)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(request, range(20)))
    assert all(r.plan == {"v": 1} and not r.computed for r in results)
    assert [r.status for r in results].count(PlanStatus.REFRESH) == 1
    assert all(r.headers["X-OKOME-Cache"] == "HIT" for r in results)
    assert planner.wait_background(10)
    assert second.calls == 1
    ok = okome.Okome(server.client())
    assert ok.plan_lookup(results[0].key, lock=True).plan == {"v": 2}


def test_rate_limited(server):
    planner = okome.Planner(server.client(), limit=2, window=60)
    compute = Counter()
    for _ in range(2):
        planner.get_or_compute(MODEL, "limited", TOOLSET, REPO, compute, agent="a")
    with pytest.raises(okome.RateLimited) as e:
        planner.get_or_compute(MODEL, "limited", TOOLSET, REPO, compute, agent="a")
    assert e.value.status_code == 429 and 59_000 < e.value.retry_after_ms <= 60_000
    assert e.value.retry_after == 60 and e.value.headers["Retry-After"] == "60"
    assert e.value.headers["X-OKOME-Agent-Rate-Remaining"] == "0"
    assert e.value.key == okome.planner_key(MODEL, "limited", TOOLSET, REPO)


def test_locked_after_wait(server):
    ok = okome.Okome(server.client())
    held = ok.plan_get(MODEL, "locked", TOOLSET, REPO, lock=True)
    planner = okome.Planner(server.client(), wait_ms=200)
    with pytest.raises(okome.PlanLocked) as e:
        planner.get_or_compute(MODEL, "locked", TOOLSET, REPO, Counter())
    assert e.value.status_code == 503 and e.value.headers["X-OKOME-Cache-Key"] == held.key
    assert 1 <= int(e.value.headers["Retry-After"]) <= 9


def test_unencodable_plan_releases_the_lock(server):
    planner = okome.Planner(server.client())
    with pytest.raises(TypeError):
        planner.get_or_compute(MODEL, "bad", TOOLSET, REPO, lambda: {1, 2})
    assert server.client().keys("*:lock") == []


def test_wait_retry_trap(server):
    """redis-py with socket_timeout=1 and its default retry: a WAIT of 5 s
    must block once, for as long as the leader needs, and not be re-sent."""
    ok = okome.Okome(server.client())
    lead = ok.plan_get(MODEL, "trap", TOOLSET, REPO, lock=True)

    def store_later() -> None:
        time.sleep(2.5)
        ok.plan_set(lead.key, {"v": "trap"}, token=lead.token)

    threading.Thread(target=store_later).start()
    follower = okome.Okome(server.client(socket_timeout=1))
    t0 = time.monotonic()
    got = follower.plan_get(MODEL, "trap", TOOLSET, REPO, wait_ms=5000, lock=True)
    assert got.status is PlanStatus.HIT and got.plan == {"v": "trap"}
    assert 2.0 < time.monotonic() - t0 < 4.0
    assert server.calls("okome.plan.get") == 2  # the leader's and the follower's, once
    assert ok.stats()["okome_wait_blocked"] == 1  # blocked once, never re-sent
    # The planner too: with socket_timeout=1 a follower waits out a 2 s leader.
    planner = okome.Planner(server.client(socket_timeout=1), wait_ms=5000)
    slow = Counter(delay=2.0)
    t = threading.Thread(target=planner.get_or_compute, args=(MODEL, "trap2", TOOLSET, REPO, slow))
    t.start()
    time.sleep(0.2)
    res = planner.get_or_compute(MODEL, "trap2", TOOLSET, REPO, Counter(plan={"no": 1}))
    t.join()
    assert res.status is PlanStatus.HIT and slow.calls == 1


def test_the_trap_is_real_without_okome(server):
    """What the client protects against: raw redis-py re-sends the blocking call."""
    ok = okome.Okome(server.client())
    lead = ok.plan_get(MODEL, "raw", TOOLSET, REPO, lock=True)
    threading.Timer(2.5, lambda: ok.plan_set(lead.key, {}, token=lead.token)).start()
    raw = server.client(socket_timeout=1)
    timed_out = False
    try:
        raw.execute_command("OKOME.PLAN.GET", MODEL, "raw", TOOLSET, REPO, "WAIT", 5000)
    except redis.exceptions.TimeoutError:
        timed_out = True
    time.sleep(2.6)
    # Cut at 1 s (redis-py 5), or sent again by redis-py's retry (6 and later).
    assert timed_out or ok.stats()["okome_wait_blocked"] > 1
