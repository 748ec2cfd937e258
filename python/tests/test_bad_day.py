"""The planner when things go wrong (issue 22), on real servers: bounded
pools, failing and hung computations, a spent write budget, a refresher
whose lock expired, a restart of redis-server, a server without okome."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from conftest import REDIS_SERVER, Server, free_port
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from test_planner import Counter

import okome
import okome.aio
from okome import PlanStatus, StoreStatus

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"
FAILURE = "RuntimeError: the model is down"


def concurrently(n: int, request: Any) -> tuple[list[Any], float]:
    """``request(i)`` in ``n`` threads released at once: the outcomes (a
    result or the exception) and the slowest request's seconds."""
    barrier = threading.Barrier(n)
    slowest = [0.0]
    lock = threading.Lock()

    def one(i: int) -> Any:
        barrier.wait()
        t0 = time.monotonic()
        try:
            return request(i)
        except Exception as e:
            return e
        finally:
            with lock:
                slowest[0] = max(slowest[0], time.monotonic() - t0)

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(one, range(n)))
    return outcomes, slowest[0]


def no_retry(**kw: Any) -> dict[str, Any]:
    """Client settings that let an outage show at once (redis-py's default
    retry backs off for seconds before raising)."""
    return {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 1, **kw}


# -- bounded pools -------------------------------------------------------------


@pytest.mark.parametrize("n", [11, 30])
@pytest.mark.parametrize("blocking", [True, False])
def test_a_pool_of_ten_computes_once(server, n, blocking):
    kind = redis.BlockingConnectionPool if blocking else redis.ConnectionPool
    pool = kind(host="127.0.0.1", port=server.port, max_connections=10)
    planner = okome.Planner(redis.Redis(connection_pool=pool))
    compute = Counter(delay=0.5)
    outcomes, slowest = concurrently(
        n,
        lambda i: planner.get_or_compute(
            MODEL, f"pool {n}", TOOLSET, REPO, compute, agent=f"agent-{i}"
        ),
    )
    assert [o for o in outcomes if isinstance(o, Exception)] == []
    assert compute.calls == 1
    assert sorted(o.status.value for o in outcomes) == ["HIT"] * (n - 1) + ["MISS"]
    assert all(o.plan == compute.plan for o in outcomes)
    assert server.calls("okome.plan.set") == 1
    assert slowest < 2.5
    assert len(pool._connections if blocking else pool._available_connections) <= 10


@pytest.mark.parametrize("n", [11, 30])
def test_an_asyncio_client_of_ten_computes_once(server, n):
    async def run() -> tuple[list[Any], float, int]:
        client = aredis.Redis(host="127.0.0.1", port=server.port, max_connections=10)
        planner = okome.aio.Planner(client)
        calls = 0

        async def compute() -> object:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.5)
            return {"steps": ["async"]}

        async def one(i: int) -> tuple[Any, float]:
            t0 = time.monotonic()
            try:
                r: Any = await planner.get_or_compute(
                    MODEL, f"aio pool {n}", TOOLSET, REPO, compute, agent=f"agent-{i}"
                )
            except Exception as e:
                r = e
            return r, time.monotonic() - t0

        done = await asyncio.gather(*(one(i) for i in range(n)))
        await client.aclose()
        return [r for r, _ in done], max(t for _, t in done), calls

    outcomes, slowest, calls = asyncio.run(run())
    assert [o for o in outcomes if isinstance(o, Exception)] == []
    assert calls == 1
    assert sorted(o.status.value for o in outcomes) == ["HIT"] * (n - 1) + ["MISS"]
    assert all(o.plan == {"steps": ["async"]} for o in outcomes)
    assert server.calls("okome.plan.set") == 1
    assert slowest < 2.5


def test_a_pool_of_one_never_blocks_in_the_server(server):
    pool = redis.BlockingConnectionPool(host="127.0.0.1", port=server.port, max_connections=1)
    ok = okome.Okome(redis.Redis(connection_pool=pool))
    held = ok.plan_get(MODEL, "one", TOOLSET, REPO, lock=True)
    t0 = time.monotonic()
    reply = ok.plan_get(MODEL, "one", TOOLSET, REPO, wait_ms=5000, lock=True)
    assert reply.status is PlanStatus.LOCKED and reply.key == held.key
    assert time.monotonic() - t0 < 0.5  # sent without WAIT: no waiting slot in a pool of one


def test_waiters_queue_for_a_slot_within_their_wait(server):
    """A pool of 5 has 4 waiting slots: a fifth caller queues in the client
    (for at most its wait) and then blocks in the server for what is left."""
    pool = redis.BlockingConnectionPool(host="127.0.0.1", port=server.port, max_connections=5)
    ok = okome.Okome(redis.Redis(connection_pool=pool))
    held = ok.plan_get(MODEL, "queue", TOOLSET, REPO, lock=True)
    assert held.token is not None
    outcomes, slowest = concurrently(
        5, lambda _: ok.plan_get(MODEL, "queue", TOOLSET, REPO, wait_ms=600, lock=True)
    )
    assert [o.status for o in outcomes] == [PlanStatus.LOCKED] * 5
    assert 0.55 < slowest < 1.0  # nobody waited much more than its 600 ms
    # Stored while 4 wait in the server and a fifth queues in the client.
    held = ok.plan_get(MODEL, "queue 2", TOOLSET, REPO, lock=True)
    store = threading.Timer(0.3, ok.plan_set, (held.key, {"v": 1}), {"token": held.token})
    store.start()
    blocked = ok.stats()["okome_wait_blocked"]
    outcomes, slowest = concurrently(
        5, lambda _: ok.plan_get(MODEL, "queue 2", TOOLSET, REPO, wait_ms=5000, lock=True)
    )
    store.join()
    assert [o.status for o in outcomes] == [PlanStatus.HIT] * 5
    assert [o.plan for o in outcomes] == [{"v": 1}] * 5
    assert slowest < 0.6
    assert ok.stats()["okome_wait_blocked"] - blocked == 4  # the fifth found the plan


# -- failing computations ------------------------------------------------------


def _requests_in_a_process(
    port: int, n: int, barrier: Any, computations: Any, out: Any, prompt: str
) -> None:
    """``n`` concurrent requests from one process, whose compute fails after 0.3 s."""
    planner = okome.Planner(redis.Redis(port=port), failure_ttl_ms=5000)

    def failing() -> object:
        with computations.get_lock():
            computations.value += 1
        time.sleep(0.3)
        raise RuntimeError("the model is down")

    def one() -> None:
        barrier.wait()
        t0 = time.monotonic()
        try:
            planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, failing)
            outcome: tuple[Any, ...] = ("plan", None, None)
        except okome.ComputeFailed as e:
            outcome = ("ComputeFailed", e.message, e.headers["Retry-After"], e.status_code)
        except RuntimeError as e:
            outcome = ("RuntimeError", str(e), None, None)
        out.put((*outcome, time.monotonic() - t0))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_failure_is_shared_by_twenty_waiters_in_four_processes(server):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(20)
    computations = ctx.Value("i", 0)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_requests_in_a_process,
            args=(server.port, 5, barrier, computations, out, "fails"),
        )
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = [out.get(timeout=60) for _ in range(20)]
    for p in procs:
        p.join(30)
    assert computations.value == 1
    kinds = sorted(o[:4] for o in outcomes)
    assert kinds == [("ComputeFailed", FAILURE, "5", 503)] * 19 + [
        ("RuntimeError", "the model is down", None, None)
    ]
    assert max(o[4] for o in outcomes) < 1.3  # the 0.3 s computation, once
    stats = okome.Okome(server.client()).stats()
    assert stats["okome_plans_failed"] == 1
    key = okome.planner_key(MODEL, "fails", TOOLSET, REPO)
    assert sorted(server.client().keys("*")) == [f"{key}:failed".encode()]  # no plan, no lock


def test_callers_within_the_failure_window_raise_and_then_compute_again(server):
    planner = okome.Planner(server.client(), failure_ttl_ms=700)
    failing = Counter(fail=True)
    with pytest.raises(RuntimeError, match="the model is down"):
        planner.get_or_compute(MODEL, "window", TOOLSET, REPO, failing, agent="a")
    with pytest.raises(okome.ComputeFailed) as e:
        planner.get_or_compute(MODEL, "window", TOOLSET, REPO, failing, agent="a")
    key = okome.planner_key(MODEL, "window", TOOLSET, REPO)
    assert e.value.key == key and e.value.message == FAILURE
    assert 0 < e.value.retry_after_ms <= 700 and e.value.status_code == 503
    assert e.value.headers == {
        "Retry-After": "1",
        "X-OKOME-Cache-Key": key,
        "X-OKOME-Agent-Rate-Remaining": "58",
    }
    assert failing.calls == 1
    time.sleep(0.8)
    fixed = Counter(plan={"fixed": True})
    result = planner.get_or_compute(MODEL, "window", TOOLSET, REPO, fixed, agent="a")
    assert result.status is PlanStatus.MISS and result.plan == {"fixed": True}
    assert fixed.calls == 1


def test_an_asyncio_failure_is_shared(server):
    async def run() -> tuple[list[Any], int]:
        planner = okome.aio.Planner(aredis.Redis(port=server.port))
        calls = 0

        async def failing() -> object:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.3)
            raise RuntimeError("the model is down")

        async def one() -> Any:
            try:
                return await planner.get_or_compute(MODEL, "aio fails", TOOLSET, REPO, failing)
            except Exception as e:
                return e

        return list(await asyncio.gather(*(one() for _ in range(10)))), calls

    t0 = time.monotonic()
    outcomes, calls = asyncio.run(run())
    assert calls == 1 and time.monotonic() - t0 < 1.3
    assert sorted(type(o).__name__ for o in outcomes) == ["ComputeFailed"] * 9 + ["RuntimeError"]
    assert {o.message for o in outcomes if isinstance(o, okome.ComputeFailed)} == {FAILURE}


def test_unlock_failed_by_hand(server):
    ok = okome.Okome(server.client())
    held = ok.plan_get(MODEL, "by hand", TOOLSET, REPO, lock=True)
    assert held.token is not None
    assert ok.unlock(held.key, "not-the-token", failed_ms=1000, message="x") is False
    assert ok.unlock(held.key, held.token, failed_ms=1000, message="boom") is True
    reply = ok.plan_get(MODEL, "by hand", TOOLSET, REPO, wait_ms=5000, lock=True)
    assert reply.status is PlanStatus.FAILED and reply.message == "boom"
    assert reply.plan is None and reply.raw is None and reply.token is None
    assert 0 < reply.retry_after_ms <= 1000 and reply.retry_after == 1
    with pytest.raises(ValueError):
        ok.unlock(held.key, held.token, message="a message needs failed_ms")


# -- a spent write budget --------------------------------------------------------


def test_a_spent_write_budget_still_serves_the_waiters(server):
    planner = okome.Planner(server.client(), write_limit=2)
    for prompt in ("first", "second"):
        r = planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, Counter(), agent="agent-1")
        assert r.stored is StoreStatus.STORED
    compute = Counter(delay=0.5, plan={"shared": True})
    outcomes, slowest = concurrently(
        5,
        lambda _: planner.get_or_compute(MODEL, "spent", TOOLSET, REPO, compute, agent="agent-1"),
    )
    assert compute.calls == 1
    assert sorted(o.status.value for o in outcomes) == ["MISS"] + ["SHARED"] * 4
    leader = next(o for o in outcomes if o.computed)
    assert leader.stored is StoreStatus.SKIPPED
    assert leader.headers["X-OKOME-Cache-Write"] == "SKIPPED"
    for o in outcomes:
        assert o.plan == {"shared": True}
        if not o.computed:
            assert o.headers["X-OKOME-Cache"] == "HIT" and o.ttl_ms is None
            assert o.stored is None and o.cache == "HIT"
    assert slowest < 1.5
    ok = okome.Okome(server.client())
    assert ok.plan_lookup(leader.key, nolock=True).status is PlanStatus.MISS  # not stored
    assert ok.stats()["okome_plans_shared"] == 4


# -- fenced refreshes ------------------------------------------------------------


def test_a_refresh_whose_lock_expired_does_not_overwrite(start_server, caplog):
    server = start_server("lock-ttl-min", "300", "lock-ttl-default", "300", "lock-ttl-max", "1000")
    planner = okome.Planner(server.client(), refresh_ahead_ms=900_000, heartbeat_ms=60_000)
    assert planner.get_or_compute(MODEL, "fence", TOOLSET, REPO, Counter(plan={"v": 1})).computed
    slow = Counter(delay=1.0, plan={"v": 2})
    with caplog.at_level(logging.INFO, logger="okome"):
        served = planner.get_or_compute(MODEL, "fence", TOOLSET, REPO, slow)
        assert served.status is PlanStatus.REFRESH and served.plan == {"v": 1}
        time.sleep(0.5)  # the refresh's 300 ms lock has expired
        ok = okome.Okome(server.client())
        assert ok.plan_set(served.key, {"v": 3}).status is StoreStatus.STORED
        assert planner.wait_background(10)
    assert slow.calls == 1
    assert ok.plan_lookup(served.key, nolock=True).plan == {"v": 3}
    assert ok.stats()["okome_plans_fenced"] == 1
    assert [r.getMessage() for r in caplog.records if "FENCED" in r.getMessage()] == [
        f"okome: the refresh of {served.key} was not stored (FENCED): its lock expired "
        "meanwhile; the plan served stays"
    ]


def test_plan_set_fenced_by_hand(server):
    ok = okome.Okome(server.client())
    held = ok.plan_get(MODEL, "fenced", TOOLSET, REPO, lock=True)
    assert held.token is not None
    assert ok.unlock(held.key, held.token)
    reply = ok.plan_set(held.key, {"late": True}, token=held.token, fenced=True)
    assert reply.status is StoreStatus.FENCED and not reply.stored
    assert (reply.ttl_ms, reply.wbudget_remaining, reply.lock_released) == (None, None, False)
    assert ok.plan_lookup(held.key, nolock=True).status is PlanStatus.MISS
    again = ok.plan_get(MODEL, "fenced", TOOLSET, REPO, lock=True)
    stored = ok.plan_set(again.key, {"v": 1}, token=again.token, fenced=True)
    assert stored.status is StoreStatus.STORED and stored.lock_released
    with pytest.raises(ValueError):
        ok.plan_set(held.key, {"v": 1}, fenced=True)  # FENCED needs a token


# -- a compute deadline ----------------------------------------------------------


def test_max_compute_ms_releases_the_lock_as_failed(server):
    planner = okome.Planner(server.client(), max_compute_ms=400, failure_ttl_ms=2000)
    hung = Counter(delay=2.0, plan={"late": True})
    started = threading.Event()

    def lead() -> object:
        started.set()
        return hung()

    leader: list[BaseException] = []

    def run() -> None:
        try:
            planner.get_or_compute(MODEL, "hung", TOOLSET, REPO, lead)
        except BaseException as e:
            leader.append(e)

    t0 = time.monotonic()
    t = threading.Thread(target=run)
    t.start()
    assert started.wait(5)
    outcomes, slowest = concurrently(
        3, lambda _: planner.get_or_compute(MODEL, "hung", TOOLSET, REPO, Counter())
    )
    t.join()
    key = okome.planner_key(MODEL, "hung", TOOLSET, REPO)
    assert time.monotonic() - t0 < 1.0  # nobody waited for the 2 s computation
    assert len(leader) == 1 and type(leader[0]) is okome.ComputeTimeout
    e = leader[0]
    assert isinstance(e, okome.ComputeTimeout)
    assert e.max_compute_ms == 400 and e.retry_after_ms == 2000 and e.status_code == 503
    assert e.headers == {"Retry-After": "2", "X-OKOME-Cache-Key": key}
    assert [type(o) for o in outcomes] == [okome.ComputeFailed] * 3
    assert {o.message for o in outcomes} == {
        "ComputeTimeout: compute() ran past max_compute_ms=400"
    }
    assert server.client().exists(key + ":lock") == 0
    time.sleep(2.0)  # the late result is dropped, not stored
    assert hung.calls == 1
    ok = okome.Okome(server.client())
    assert ok.plan_lookup(key, nolock=True).status is PlanStatus.MISS


def test_a_deadline_without_a_failure_window(server):
    """failure_ttl_ms=0: the waiters of a leader past its deadline still raise
    ComputeFailed at once (UNLOCK ... FAILED 0), and the next request computes."""
    planner = okome.Planner(server.client(), max_compute_ms=300, failure_ttl_ms=0)
    hung = Counter(delay=1.0)
    outcomes, slowest = concurrently(
        3, lambda _: planner.get_or_compute(MODEL, "no window", TOOLSET, REPO, hung)
    )
    assert sorted(type(o).__name__ for o in outcomes) == [
        "ComputeFailed",
        "ComputeFailed",
        "ComputeTimeout",
    ]
    assert slowest < 0.8 and hung.calls == 1
    timeout = next(o for o in outcomes if isinstance(o, okome.ComputeTimeout))
    assert timeout.retry_after_ms == 0 and timeout.headers["Retry-After"] == "1"
    fresh = Counter(plan={"v": "fresh"})
    result = planner.get_or_compute(MODEL, "no window", TOOLSET, REPO, fresh)
    assert result.status is PlanStatus.MISS and fresh.calls == 1


def test_planner_options_are_checked(server):
    with pytest.raises(ValueError, match="failure_ttl_ms 60001 is out of range: 0 to 60000"):
        okome.Planner(server.client(), failure_ttl_ms=60_001)
    planner = okome.Planner(server.client())
    with pytest.raises(ValueError, match="max_compute_ms 0 must be positive"):
        planner.get_or_compute(MODEL, "options", TOOLSET, REPO, Counter(), max_compute_ms=0)


def test_max_compute_ms_cancels_an_asyncio_computation(server):
    async def run() -> tuple[BaseException | None, bool, PlanStatus]:
        planner = okome.aio.Planner(aredis.Redis(port=server.port), max_compute_ms=300)
        cancelled = False

        async def hung() -> object:
            nonlocal cancelled
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled = True
                raise
            return {"late": True}

        caught: BaseException | None = None
        try:
            await planner.get_or_compute(MODEL, "aio hung", TOOLSET, REPO, hung)
        except okome.ComputeTimeout as e:
            caught = e
        await asyncio.sleep(0.05)
        follower = await planner.okome.plan_get(
            MODEL, "aio hung", TOOLSET, REPO, wait_ms=1000, lock=True
        )
        return caught, cancelled, follower.status

    t0 = time.monotonic()
    caught, cancelled, status = asyncio.run(run())
    assert time.monotonic() - t0 < 1.5
    assert isinstance(caught, okome.ComputeTimeout) and cancelled
    assert status is PlanStatus.FAILED


# -- outages -------------------------------------------------------------------


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def restart(server: Server) -> None:
    """Start ``server`` again on its port (SIGKILLed first if it runs)."""
    server.kill()
    server.proc = subprocess.Popen(
        server.proc.args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    probe = redis.Redis(port=server.port, socket_timeout=1)
    deadline = time.monotonic() + 15
    while True:
        try:
            if probe.ping():
                return
        except redis.exceptions.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_a_restart_mid_run(server, caplog):
    planner = okome.Planner(server.client(**no_retry()), outage_probe_ms=300)
    assert planner.get_or_compute(MODEL, "outage", TOOLSET, REPO, Counter()).computed
    key = okome.planner_key(MODEL, "outage", TOOLSET, REPO)
    server.kill()
    causes = []
    with caplog.at_level(logging.WARNING, logger="okome"):
        for _ in range(3):
            with pytest.raises(okome.OkomeUnavailable) as e:
                planner.get_or_compute(MODEL, "outage", TOOLSET, REPO, Counter())
            assert e.value.status_code == 503 and e.value.key == key
            assert e.value.headers == {"Retry-After": "1", "X-OKOME-Cache-Key": key}
            assert isinstance(e.value.__cause__, redis.ConnectionError)
            causes.append(e.value.__cause__)
        # The first tried Redis; the next two, within outage_probe_ms, did not.
        assert causes[1] is causes[0] and causes[2] is causes[0]
        assert planner.outage
        restart(server)
        wait_until(lambda: not planner.outage)  # the probe reached it
        after = planner.get_or_compute(MODEL, "outage", TOOLSET, REPO, Counter())
    assert after.status is PlanStatus.MISS and after.computed  # an empty server: computed again
    assert (planner.unavailable, planner.bypassed) == (3, 0)
    messages = [m for m in (r.getMessage() for r in caplog.records) if m.startswith("okome: Redis")]
    assert len(messages) == 2
    assert messages[0].startswith("okome: Redis is unreachable (ConnectionError: ")
    assert messages[0].endswith(": planner requests raise OkomeUnavailable (503) until it is back")
    assert messages[1] == (
        "okome: Redis is reachable again (3 requests found it unreachable so far, "
        "0 computed without the cache)"
    )


def test_a_waiting_follower_when_the_server_goes_away(server):
    ok = okome.Okome(server.client())
    held = ok.plan_get(MODEL, "gone", TOOLSET, REPO, lock=True)
    assert held.token is not None  # held, never stored
    planner = okome.Planner(server.client(**no_retry()))
    outcome: list[BaseException] = []
    started = time.monotonic()

    def follow() -> None:
        try:
            planner.get_or_compute(MODEL, "gone", TOOLSET, REPO, Counter(), wait_ms=10_000)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.3)
    server.kill()
    t.join(5)
    assert [type(e) for e in outcome] == [okome.OkomeUnavailable]
    assert time.monotonic() - started < 1.5


def test_fail_open_computes_without_the_cache(server, caplog):
    planner = okome.Planner(server.client(**no_retry()), fail_open=True, outage_probe_ms=300)
    server.kill()
    compute = Counter(plan={"open": True})
    with caplog.at_level(logging.WARNING, logger="okome"):
        results = [
            planner.get_or_compute(MODEL, "open", TOOLSET, REPO, compute, agent="a")
            for _ in range(3)
        ]
        assert planner.outage
        restart(server)
        wait_until(lambda: not planner.outage)
        back = planner.get_or_compute(MODEL, "open", TOOLSET, REPO, compute, agent="a")
    key = okome.planner_key(MODEL, "open", TOOLSET, REPO)
    for r in results:
        assert r.plan == {"open": True} and r.computed and r.bypassed and r.cache == "BYPASS"
        assert r.status is PlanStatus.MISS and r.stored is None and r.rate_remaining is None
        assert r.headers == {"X-OKOME-Cache": "BYPASS", "X-OKOME-Cache-Key": key}
    assert back.status is PlanStatus.MISS and not back.bypassed
    assert back.stored is StoreStatus.STORED
    assert compute.calls == 4 and (planner.unavailable, planner.bypassed) == (3, 3)
    messages = [m for m in (r.getMessage() for r in caplog.records) if m.startswith("okome: Redis")]
    assert len(messages) == 2
    assert messages[0].endswith(": computing plans without the cache (fail_open) until it is back")
    assert messages[1] == (
        "okome: Redis is reachable again (3 requests found it unreachable so far, "
        "3 computed without the cache)"
    )


def test_asyncio_outage_and_fail_open(server):
    async def run() -> tuple[type[BaseException], okome.PlanResult]:
        strict = okome.aio.Planner(aredis.Redis(port=server.port, **no_retry()))
        lenient = okome.aio.Planner(aredis.Redis(port=server.port, **no_retry()), fail_open=True)
        await strict.get_or_compute(MODEL, "aio outage", TOOLSET, REPO, lambda: {"v": 1})
        server.kill()
        try:
            await strict.get_or_compute(MODEL, "aio outage", TOOLSET, REPO, lambda: {"v": 1})
        except Exception as e:
            raised: type[BaseException] = type(e)
        result = await lenient.get_or_compute(MODEL, "aio outage", TOOLSET, REPO, lambda: {"v": 2})
        return raised, result

    raised, result = asyncio.run(run())
    assert raised is okome.OkomeUnavailable
    assert result.bypassed and result.plan == {"v": 2} and result.cache == "BYPASS"


# -- a server without okome ------------------------------------------------------


@pytest.fixture
def plain_server(tmp_path: Path) -> Any:
    """A redis-server without okome."""
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    c = redis.Redis(port=port)
    for _ in range(500):
        try:
            c.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)
    yield port
    proc.kill()
    proc.wait()


HINT = (
    "load libokome.so (redis-server --loadmodule /path/to/libokome.so, "
    "or MODULE LOAD /path/to/libokome.so)"
)


def _found(port: int) -> str:
    """The server as ``INFO server`` names it: Valkey says ``server_name:valkey``
    and ``valkey_version`` (its ``redis_version`` is a compatibility number);
    Redis 7.0 has no ``server_name``."""
    info = redis.Redis(port=port).info("server")
    name = info.get("server_name", "redis")
    return f"{name} {info[f'{name}_version']}"


def _modules(port: int) -> str:
    """What ``MODULE LIST`` holds, as the error names it (Valkey 9 lists its
    ``lua`` engine as a module; Redis 7.0 lists nothing)."""
    listed = redis.Redis(port=port, protocol=2).execute_command("MODULE", "LIST")
    entries = [dict(zip(m[::2], m[1::2])) for m in listed]
    pairs = sorted((e[b"name"].decode(), e[b"ver"]) for e in entries)
    return "modules: " + ", ".join(f"{n} {v}" for n, v in pairs) if pairs else "no modules"


def test_check_and_stats_on_a_server_without_okome(plain_server):
    ok = okome.Okome(redis.Redis(port=plain_server))
    expected = (
        f"the okome module is not loaded: found {_found(plain_server)} "
        f"with {_modules(plain_server)}; {HINT}"
    )
    with pytest.raises(okome.ModuleNotLoadedError) as e:
        ok.check()
    assert str(e.value) == expected
    with pytest.raises(okome.ModuleNotLoadedError) as e:
        ok.stats()
    assert str(e.value) == expected
    planner = okome.Planner(redis.Redis(port=plain_server))
    with pytest.raises(okome.ModuleNotLoadedError) as e:
        planner.get_or_compute(MODEL, "no module", TOOLSET, REPO, Counter())
    assert "load libokome.so" in str(e.value)
    assert str(e.value).startswith("unknown command 'OKOME.PLAN.GET'")

    async def aio() -> str:
        with pytest.raises(okome.ModuleNotLoadedError) as e:
            await okome.aio.Okome(aredis.Redis(port=plain_server)).check()
        with pytest.raises(okome.ModuleNotLoadedError):
            await okome.aio.Okome(aredis.Redis(port=plain_server)).stats()
        return str(e.value)

    assert asyncio.run(aio()) == expected


def test_check_on_a_server_with_okome(server):
    found = okome.Okome(server.client()).check()
    assert found == okome.ModuleCheck(server=_found(server.port), module_version=1)

    async def aio() -> okome.ModuleCheck:
        return await okome.aio.Okome(aredis.Redis(port=server.port)).check()

    assert asyncio.run(aio()) == found


def test_check_when_an_acl_refuses_module_list(server):
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-module")
    ok = okome.Okome(server.client(username="app", password="pw"))
    found = ok.check()
    assert found == okome.ModuleCheck(server=_found(server.port), module_version=None)


def test_check_on_every_primary_of_a_cluster(cluster):
    port = cluster.nodes[0].port
    expected = okome.ModuleCheck(server=_found(port), module_version=1)
    assert okome.Okome(RedisCluster(host="127.0.0.1", port=port)).check() == expected

    async def aio() -> okome.ModuleCheck:
        rc = AsyncCluster(host="127.0.0.1", port=port)
        try:
            return await okome.aio.Okome(rc).check()
        finally:
            await rc.aclose()

    assert asyncio.run(aio()) == expected
