"""The planner on a bad day (issue 22): each scenario's computations, slowest
request and errors (as the HTTP status a FastAPI app would answer: a
``PlannerError``'s ``status_code``, 500 for anything else).

    target/venv/bin/python python/benchmarks/bad_day.py --json after.json
    PYTHONPATH=<old checkout>/python/src OKOME_MODULE=<old libokome.so> \\
        target/venv/bin/python python/benchmarks/bad_day.py --json before.json
    target/venv/bin/python python/benchmarks/bad_day.py --compare before.json after.json

It starts its own ``redis-server`` (``REDIS_SERVER``) with ``OKOME_MODULE``
(default target/debug/libokome.so) on free loopback ports, and runs with
whichever ``okome`` package is importable: options the package does not
have (``fail_open``, ``max_compute_ms``, ``check()``) are left out, so the
same script measures the package before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import multiprocessing
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aredis

import okome
import okome.aio

ROOT = Path(__file__).resolve().parents[2]
MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"
PLAN = {"steps": ["open login.tsx", "add the form"]}
NEW = hasattr(okome, "ComputeFailed")
PLANNER_OPTIONS = set(inspect.signature(okome.Planner.__init__).parameters)


def status(e: BaseException) -> int:
    """The HTTP status an app answers ``e`` with."""
    code = getattr(e, "status_code", None)
    return code if isinstance(code, int) and isinstance(e, okome.PlannerError) else 500


def planner_options(**kw: Any) -> dict[str, Any]:
    """The options this package's ``Planner`` has."""
    return {k: v for k, v in kw.items() if k in PLANNER_OPTIONS}


class Server:
    """A redis-server with okome (or without: ``module=False``) on a free port."""

    def __init__(self, module: bool = True, port: int | None = None) -> None:
        self.module = module
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.workdir = tempfile.mkdtemp(prefix="okome-bad-day-")
        self.start()

    def start(self) -> None:
        args = [os.environ.get("REDIS_SERVER", "redis-server"), "--port", str(self.port)]
        args += ["--bind", "127.0.0.1", "--save", "", "--dir", self.workdir]
        if self.module:
            lib = os.environ.get("OKOME_MODULE") or str(ROOT / "target/debug/libokome.so")
            args += ["--loadmodule", lib]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port)
        for _ in range(500):
            try:
                probe.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(port=self.port, **kw)


class Compute:
    """A compute function that counts its calls; sleeps, then fails or returns."""

    def __init__(self, delay: float, fail: bool = False) -> None:
        self.calls, self.delay, self.fail = 0, delay, fail
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the model is down")
        return PLAN


def row(computations: int | str, slowest: float, errors: Counter[int], **notes: Any) -> dict:
    return {
        "computations": computations,
        "slowest_s": round(slowest, 2),
        "errors": {str(k): v for k, v in sorted(errors.items())},
        **notes,
    }


def concurrently(n: int, request: Callable[[int], Any]) -> tuple[list[Any], float]:
    """``request(i)`` in ``n`` threads at once: outcomes (results or exceptions), slowest s."""
    barrier = threading.Barrier(n)
    times: list[float] = []

    def one(i: int) -> Any:
        barrier.wait()
        t0 = time.monotonic()
        try:
            return request(i)
        except Exception as e:
            return e
        finally:
            times.append(time.monotonic() - t0)

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(one, range(n)))
    return outcomes, max(times)


def errors_of(outcomes: list[Any]) -> Counter[int]:
    return Counter(status(o) for o in outcomes if isinstance(o, BaseException))


# -- the scenarios -----------------------------------------------------------


def failing_5(server: Server) -> dict:
    planner = okome.Planner(server.client())
    compute = Compute(0.2, fail=True)
    outcomes, slowest = concurrently(
        5, lambda _: planner.get_or_compute(MODEL, "failing 5", TOOLSET, REPO, compute)
    )
    return row(compute.calls, slowest, errors_of(outcomes))


def _process(port: int, n: int, barrier: Any, calls: Any, out: Any) -> None:
    planner = okome.Planner(redis.Redis(port=port))

    def failing() -> Any:
        with calls.get_lock():
            calls.value += 1
        time.sleep(0.2)
        raise RuntimeError("the model is down")

    def one() -> None:
        barrier.wait()
        t0 = time.monotonic()
        try:
            planner.get_or_compute(MODEL, "failing 20", TOOLSET, REPO, failing)
            code = 200
        except Exception as e:
            code = status(e)
        out.put((code, time.monotonic() - t0))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def failing_20_in_4_processes(server: Server) -> dict:
    ctx = multiprocessing.get_context("spawn")
    barrier, calls, out = ctx.Barrier(20), ctx.Value("i", 0), ctx.Queue()
    procs = [
        ctx.Process(target=_process, args=(server.port, 5, barrier, calls, out)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(20)]
    for p in procs:
        p.join()
    errors = Counter(code for code, _ in results if code != 200)
    return row(calls.value, max(t for _, t in results), errors)


def spent_budget(server: Server) -> dict:
    planner = okome.Planner(server.client(), write_limit=2)
    for prompt in ("first", "second"):  # the agent's 2 writes of the window
        planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, Compute(0), agent="agent-1")
    compute = Compute(0.2)
    outcomes, slowest = concurrently(
        5,
        lambda _: planner.get_or_compute(MODEL, "spent", TOOLSET, REPO, compute, agent="agent-1"),
    )
    served = sorted(str(o.status) for o in outcomes if not isinstance(o, BaseException))
    return row(compute.calls, slowest, errors_of(outcomes), statuses=" ".join(served))


def fenced_refresh(_: Server) -> dict:
    # A lock of 300 ms, a refresh of 1 s whose heartbeat comes too late; a
    # newer plan stored meanwhile.
    server = ServerWithArgs(("lock-ttl-min", "300", "lock-ttl-default", "300"))
    try:
        planner = okome.Planner(server.client(), refresh_ahead_ms=900_000, heartbeat_ms=60_000)
        planner.get_or_compute(MODEL, "fence", TOOLSET, REPO, lambda: {"v": 1})
        slow = Compute(1.0)
        t0 = time.monotonic()
        served = planner.get_or_compute(MODEL, "fence", TOOLSET, REPO, slow)
        time.sleep(0.5)
        ok = okome.Okome(server.client())
        ok.plan_set(served.key, {"v": 3})  # the newer plan
        planner.wait_background(10)
        slowest = time.monotonic() - t0
        after = ok.plan_lookup(served.key, nolock=True).plan
        overwritten = after != {"v": 3}
        return row(slow.calls, slowest, Counter(), newer_plan_overwritten=overwritten)
    finally:
        server.kill()


class ServerWithArgs(Server):
    def __init__(self, module_args: tuple[str, ...]) -> None:
        self.module_args = module_args
        super().__init__()

    def start(self) -> None:
        args = [os.environ.get("REDIS_SERVER", "redis-server"), "--port", str(self.port)]
        args += ["--bind", "127.0.0.1", "--save", "", "--dir", self.workdir]
        lib = os.environ.get("OKOME_MODULE") or str(ROOT / "target/debug/libokome.so")
        args += ["--loadmodule", lib, *self.module_args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port)
        for _ in range(500):
            try:
                probe.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError("redis-server did not start")


def blocking_pool(n: int) -> Callable[[Server], dict]:
    def run(server: Server) -> dict:
        pool = redis.BlockingConnectionPool(port=server.port, max_connections=10)
        planner = okome.Planner(redis.Redis(connection_pool=pool))
        compute = Compute(0.5)
        outcomes, slowest = concurrently(
            n,
            lambda i: planner.get_or_compute(
                MODEL, f"pool {n}", TOOLSET, REPO, compute, agent=f"agent-{i}"
            ),
        )
        return row(compute.calls, slowest, errors_of(outcomes))

    return run


def asyncio_pool(n: int) -> Callable[[Server], dict]:
    def run(server: Server) -> dict:
        async def main() -> dict:
            client = aredis.Redis(port=server.port, max_connections=10)
            planner = okome.aio.Planner(client)
            calls = 0

            async def compute() -> Any:
                nonlocal calls
                calls += 1
                await asyncio.sleep(0.5)
                return PLAN

            async def one(i: int) -> tuple[Any, float]:
                t0 = time.monotonic()
                try:
                    r: Any = await planner.get_or_compute(
                        MODEL, f"aio {n}", TOOLSET, REPO, compute, agent=f"agent-{i}"
                    )
                except Exception as e:
                    r = e
                return r, time.monotonic() - t0

            done = await asyncio.gather(*(one(i) for i in range(n)))
            await client.aclose()
            outcomes = [r for r, _ in done]
            return row(calls, max(t for _, t in done), errors_of(outcomes))

        return asyncio.run(main())

    return run


def hung(server: Server) -> dict:
    """A computation that takes 8 s ("hung"), 5 callers: when does everyone have an answer?"""
    planner = okome.Planner(server.client(), **planner_options(max_compute_ms=1000))
    compute = Compute(8.0)
    outcomes, slowest = concurrently(
        5, lambda _: planner.get_or_compute(MODEL, "hung", TOOLSET, REPO, compute)
    )
    return row(compute.calls, slowest, errors_of(outcomes))


def restart(fail_open: bool) -> Callable[[Server], dict]:
    """4 threads of requests for 7 s; redis-server killed at 1 s, back at 5 s
    (redis-py's default retry: a call to a server that is down fails after
    about 4 s)."""

    def run(_: Server) -> dict:
        server = Server()
        try:
            options = planner_options(fail_open=fail_open)
            if fail_open and not options:
                return {"skipped": "no fail_open in this package"}
            planner = okome.Planner(server.client(), **options)
            compute = Compute(0.02)
            stop = time.monotonic() + 7.0
            lock = threading.Lock()
            codes: Counter[int] = Counter()
            bypassed = [0]
            times: list[float] = []

            def loop(t: int) -> None:
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    t0 = time.monotonic()
                    try:
                        r = planner.get_or_compute(MODEL, f"r{t}-{i % 5}", TOOLSET, REPO, compute)
                        code = 200
                        by = int(bool(getattr(r, "bypassed", False)))
                    except Exception as e:
                        code, by = status(e), 0
                    with lock:
                        codes[code] += 1
                        bypassed[0] += by
                        times.append(time.monotonic() - t0)
                    time.sleep(0.01)

            threads = [threading.Thread(target=loop, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            server.kill()
            time.sleep(4.0)
            server.start()
            for t in threads:
                t.join()
            errors = Counter({k: v for k, v in codes.items() if k != 200})
            return row(
                compute.calls,
                max(times),
                errors,
                requests=sum(codes.values()),
                stalled_over_1s=sum(t > 1.0 for t in times),
                computed_without_cache=bypassed[0],
            )
        finally:
            server.kill()

    return run


def follower_when_server_goes(_: Server) -> dict:
    server = Server()
    try:
        okome.Okome(server.client()).plan_get(MODEL, "gone", TOOLSET, REPO, lock=True)  # held
        planner = okome.Planner(server.client())
        out: list[Any] = []
        t0 = time.monotonic()

        def follow() -> None:
            try:
                out.append(planner.get_or_compute(MODEL, "gone", TOOLSET, REPO, Compute(0)))
            except Exception as e:
                out.append(e)

        t = threading.Thread(target=follow)
        t.start()
        time.sleep(0.3)
        server.kill()
        t.join()
        return row(0, time.monotonic() - t0, errors_of(out))
    finally:
        server.kill()


def no_module(_: Server) -> dict:
    server = Server(module=False)
    try:
        ok = okome.Okome(server.client())
        notes: dict[str, Any] = {}
        try:
            stats = ok.stats()
            notes["stats"] = f"returned {stats!r}"
        except Exception as e:
            notes["stats"] = f"raised {type(e).__name__}"
        check = getattr(ok, "check", None)
        if check is None:
            notes["check"] = "none"
        else:
            try:
                check()
                notes["check"] = "passed"
            except Exception as e:
                notes["check"] = f"raised {type(e).__name__}"
        planner = okome.Planner(server.client())
        try:
            planner.get_or_compute(MODEL, "no module", TOOLSET, REPO, Compute(0))
            code, says = 200, False
        except Exception as e:
            code, says = status(e), "libokome.so" in str(e)
        notes["first request says to load libokome.so"] = says
        return row(0, 0.0, Counter({code: 1}) if code != 200 else Counter(), **notes)
    finally:
        server.kill()


SCENARIOS: list[tuple[str, Callable[[Server], dict]]] = [
    ("failing compute, 5 concurrent requests", failing_5),
    ("failing compute, 20 requests in 4 processes", failing_20_in_4_processes),
    ("spent write budget (write_limit=2), 5 concurrent requests of one agent", spent_budget),
    ("refresh whose lock expired, a newer plan stored meanwhile", fenced_refresh),
    ("BlockingConnectionPool(max_connections=10), 11 concurrent cold requests", blocking_pool(11)),
    ("BlockingConnectionPool(max_connections=10), 30 concurrent cold requests", blocking_pool(30)),
    ("redis.asyncio.Redis(max_connections=10), 30 concurrent cold requests", asyncio_pool(30)),
    ("hung computation (8 s), 5 requests (after: max_compute_ms=1000)", hung),
    ("redis-server restarted mid-run (down 4 s), 4 threads of requests for 7 s", restart(False)),
    ("the same with Planner(fail_open=True)", restart(True)),
    ("a follower waiting when redis-server goes away", follower_when_server_goes),
    ("a server without the module", no_module),
]


def measure(only: str | None) -> dict[str, dict]:
    server = Server()
    out: dict[str, dict] = {}
    try:
        for name, run in SCENARIOS:
            if only and only not in name:
                continue
            server.client().flushall()
            t0 = time.monotonic()
            out[name] = run(server)
            print(f"{time.monotonic() - t0:6.1f} s  {name}: {out[name]}", flush=True)
    finally:
        server.kill()
    return out


def cell(r: dict) -> tuple[str, str, str]:
    if "skipped" in r:
        return "n/a", "", ""
    errors = ", ".join(f"{v} × {k}" for k, v in r["errors"].items()) or "none"
    notes = [
        f"{k.replace('_', ' ')}: {v}"
        for k, v in r.items()
        if k not in ("computations", "slowest_s", "errors")
    ]
    return str(r["computations"]), f"{r['slowest_s']} s", "; ".join([errors, *notes])


def compare(before: dict[str, dict], after: dict[str, dict]) -> str:
    lines = [
        "| scenario | before: computations | slowest | errors | after: computations "
        "| slowest | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _ in SCENARIOS:
        b = cell(before.get(name, {"skipped": 1}))
        a = cell(after.get(name, {"skipped": 1}))
        lines.append(f"| {name} | {' | '.join(b)} | {' | '.join(a)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--only", help="run the scenarios whose name contains this")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        print(compare(before, after))
        return
    print(f"okome package {'with' if NEW else 'without'} issue 22 ({okome.__file__})")
    results = measure(args.only)
    if args.json:
        out = Path(args.json)
        if args.only and out.exists():  # some scenarios again: keep the others
            results = {**json.loads(out.read_text()), **results}
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
