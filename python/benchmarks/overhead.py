"""What the Python client adds to a planner hit: ``okome.Planner`` and
``okome.aio.Planner`` against the same ``OKOME.PLAN.GET`` sent bare through
redis-py (``redis.Redis.execute_command`` / ``redis.asyncio.Redis.execute_command``).

    target/venv/bin/python python/benchmarks/overhead.py [--url redis://...] [-n 5000]
        [--check 1.05]

Without ``--url`` it starts its own ``redis-server`` (``REDIS_SERVER``) with
``OKOME_MODULE`` (default target/release/libokome.so, else target/debug) on
a free loopback port. Every flow is a hit of a plan stored beforehand, on
one client, sequential; the flows are interleaved request by request (their
order reversed every other round), so whatever else the machine does weighs
on all alike; then p50 and p90 per flow and their ratios to the bare hit:

- ``bare redis-py``: what a hand-written hit does with redis-py alone: the
  prompt's SHA-256, ``execute_command`` with exactly the arguments the
  Planner sends (``OKOME.PLAN.GET model hash toolset repo HASHED WAIT 10000
  REFRESHAHEAD 60000``: checked against okome's own, below), ``json.loads``
  of the plan. The reference of the ratios.
- ``bare, command only``: the same ``execute_command`` with its arguments
  built once, nothing decoded: redis-py's floor for this command.
- ``Okome.plan_get``: the typed command (a :class:`okome.PlanReply`).
- ``Planner.get_or_compute``: the planner's hit (a :class:`okome.PlanResult`
  with its headers), the same request again and again.
- ``bare redis-py, many prompts`` and ``Planner, many prompts``: the same
  two over ``2 × okome._commands.MEMO_SIZE`` prompts in turn (plans stored
  beforehand), so that the client's memo of built lookups never holds the
  one asked: a hit on a plan this process has not looked up lately. The
  Planner's ratios there are to the bare flow over the same prompts.

``--check BOUND`` exits 1 if a Planner hit's p50 exceeds ``BOUND`` × the bare
hit's, sync or async.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import redis
import redis.asyncio as aredis
from flow import PLAN, start_server

import okome
import okome.aio
from okome import _commands

# The lookup's lock is explicit since issue 23 (`lock=True`); the package
# before it took one by default and has no such parameter.
LOCK: dict[str, bool] = (
    {"lock": True} if "lock" in inspect.signature(okome.Okome.plan_get).parameters else {}
)

MODEL, TOOLSET, REPO = "gpt-4", "v1.2.3", "abc123"
PROMPT = "create a plan for the login page"
WAIT_MS, REFRESH_AHEAD_MS = 10_000, 60_000  # the Planner's defaults
BARE = "bare redis-py"
BARE_MANY = "bare redis-py, many prompts"
FLOWS = (
    BARE,
    "bare, command only",
    "Okome.plan_get",
    "Planner.get_or_compute",
    BARE_MANY,
    "Planner, many prompts",
)
REFERENCE = {"Planner, many prompts": BARE_MANY, BARE_MANY: BARE_MANY}
"""Each flow's ratios are to the bare hit, those over many prompts to the
bare hit over the same prompts."""


def args_for(prompt: str) -> tuple[Any, ...]:
    """The command a Planner hit sends, spelled out."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    return ("OKOME.PLAN.GET", MODEL, digest, TOOLSET, REPO, "HASHED",
            "WAIT", WAIT_MS, "REFRESHAHEAD", REFRESH_AHEAD_MS)  # fmt: skip


def spy(client: Any) -> list[tuple[Any, ...]]:
    """Records the commands an okome client sends (until :func:`unspy`)."""
    sent: list[tuple[Any, ...]] = []
    transport = client._transport
    execute = transport.execute

    def recording(call: Any) -> Any:
        sent.append(call.args)
        return execute(call)

    transport.execute = recording
    return sent


def unspy(client: Any) -> None:
    del client._transport.execute


def cold_prompts() -> list[str]:
    memo = getattr(_commands, "MEMO_SIZE", 1024)  # (none before issue 23: still measurable)
    return [f"{PROMPT} #{i}" for i in range(2 * memo)]


def summarize(times: dict[str, list[float]]) -> list[dict[str, Any]]:
    def p90(xs: list[float]) -> float:
        return sorted(xs)[int(len(xs) * 0.9)]

    rows = []
    for name in FLOWS:
        xs = times[name]
        base = times[REFERENCE.get(name, BARE)]
        base50, base90 = statistics.median(base), p90(base)
        rows.append(
            {
                "name": name,
                "p50": statistics.median(xs) * 1e6,
                "p90": p90(xs) * 1e6,
                "ratio50": statistics.median(xs) / base50,
                "ratio90": p90(xs) / base90,
            }
        )
    return rows


def order(i: int) -> tuple[str, ...]:
    return FLOWS if i % 2 == 0 else FLOWS[::-1]


# -- sync ---------------------------------------------------------------------


def run_sync(url: str, n: int, warmup: int) -> list[dict[str, Any]]:
    r = redis.Redis.from_url(url)
    ok = okome.Okome(redis.Redis.from_url(url))
    planner = okome.Planner(redis.Redis.from_url(url))
    command = args_for(PROMPT)
    cold = cold_prompts()
    for prompt in [PROMPT, *cold]:  # store the plans (misses), then check a hit
        planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: PLAN)
    sent = spy(planner.okome)
    assert planner.get_or_compute(MODEL, PROMPT, TOOLSET, REPO, lambda: PLAN).cache == "HIT"
    unspy(planner.okome)
    assert sent == [command], sent  # the bare flows send exactly what the Planner sends

    def bare(prompt: str) -> Any:
        status, _key, value, _ms, _token, _rem = r.execute_command(*args_for(prompt))
        assert status == b"HIT"
        return json.loads(value)

    def command_only() -> Any:
        return r.execute_command(*command)

    def plan_get() -> Any:
        return ok.plan_get(
            MODEL, PROMPT, TOOLSET, REPO, wait_ms=WAIT_MS, refresh_ahead_ms=REFRESH_AHEAD_MS, **LOCK
        ).plan

    def planner_hit(prompt: str) -> Any:
        res = planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: PLAN)
        assert not res.computed
        return res.plan

    calls: dict[str, Callable[[int], Any]] = {
        BARE: lambda i: bare(PROMPT),
        "bare, command only": lambda i: command_only(),
        "Okome.plan_get": lambda i: plan_get(),
        "Planner.get_or_compute": lambda i: planner_hit(PROMPT),
        BARE_MANY: lambda i: bare(cold[i % len(cold)]),
        "Planner, many prompts": lambda i: planner_hit(cold[i % len(cold)]),
    }
    times: dict[str, list[float]] = {name: [] for name in FLOWS}
    clock = time.perf_counter
    for i in range(warmup + n):
        for name in order(i):
            call = calls[name]
            t = clock()
            call(i)
            elapsed = clock() - t
            if i >= warmup:
                times[name].append(elapsed)
    for c in (r, ok.client, planner.okome.client):
        c.close()
    return summarize(times)


# -- asyncio ----------------------------------------------------------------------


async def run_async(url: str, n: int, warmup: int) -> list[dict[str, Any]]:
    r = aredis.Redis.from_url(url)
    ok = okome.aio.Okome(aredis.Redis.from_url(url))
    planner = okome.aio.Planner(aredis.Redis.from_url(url))
    command = args_for(PROMPT)
    cold = cold_prompts()
    for prompt in [PROMPT, *cold]:
        await planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: PLAN)
    sent = spy(planner.okome)
    res = await planner.get_or_compute(MODEL, PROMPT, TOOLSET, REPO, lambda: PLAN)
    unspy(planner.okome)
    assert res.cache == "HIT" and sent == [command], sent

    async def bare(prompt: str) -> Any:
        status, _key, value, _ms, _token, _rem = await r.execute_command(*args_for(prompt))
        assert status == b"HIT"
        return json.loads(value)

    async def command_only() -> Any:
        return await r.execute_command(*command)

    async def plan_get() -> Any:
        reply = await ok.plan_get(
            MODEL, PROMPT, TOOLSET, REPO, wait_ms=WAIT_MS, refresh_ahead_ms=REFRESH_AHEAD_MS, **LOCK
        )
        return reply.plan

    async def planner_hit(prompt: str) -> Any:
        res = await planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: PLAN)
        assert not res.computed
        return res.plan

    calls: dict[str, Callable[[int], Awaitable[Any]]] = {
        BARE: lambda i: bare(PROMPT),
        "bare, command only": lambda i: command_only(),
        "Okome.plan_get": lambda i: plan_get(),
        "Planner.get_or_compute": lambda i: planner_hit(PROMPT),
        BARE_MANY: lambda i: bare(cold[i % len(cold)]),
        "Planner, many prompts": lambda i: planner_hit(cold[i % len(cold)]),
    }
    times: dict[str, list[float]] = {name: [] for name in FLOWS}
    clock = time.perf_counter
    for i in range(warmup + n):
        for name in order(i):
            call = calls[name]
            t = clock()
            await call(i)
            elapsed = clock() - t
            if i >= warmup:
                times[name].append(elapsed)
    for c in (r, ok.client, planner.okome.client):
        await c.aclose()
    return summarize(times)


# -- report -------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| flow | p50 µs | p90 µs | p50 ÷ bare | p90 ÷ bare |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['p50']:.0f} | {row['p90']:.0f} | "
            f"{row['ratio50']:.2f}× | {row['ratio90']:.2f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", help="a server with okome loaded (default: start one)")
    parser.add_argument("-n", type=int, default=5000, help="rounds (one hit per flow each)")
    parser.add_argument("--warmup", type=int, default=300, help="rounds not counted")
    parser.add_argument(
        "--check", type=float, metavar="BOUND",
        help="exit 1 if a Planner hit's p50 exceeds BOUND x the bare hit's (sync or async)",
    )  # fmt: skip
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        sync_rows = run_sync(url, args.n, args.warmup)
        async_rows = asyncio.run(run_async(url, args.n, args.warmup))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    hiredis = "with hiredis" if _has_hiredis() else "without hiredis"
    print(
        f"{args.n} rounds of one hit per flow, interleaved, one client, sequential, {url}; "
        f"Python {platform.python_version()}, redis-py {version('redis')} {hiredis}\n"
    )
    print("**sync** (`redis.Redis`, `okome.Planner`)\n")
    print(table(sync_rows))
    print("\n**asyncio** (`redis.asyncio.Redis`, `okome.aio.Planner`)\n")
    print(table(async_rows))
    if args.check is not None:
        worst = max(
            row["ratio50"]
            for row in (*sync_rows, *async_rows)
            if row["name"] == "Planner.get_or_compute"
        )
        verdict = "within" if worst <= args.check else "above"
        print(f"\nPlanner hit p50 ÷ bare: at most {worst:.3f}× ({verdict} {args.check}×)")
        if worst > args.check:
            sys.exit(1)


def _has_hiredis() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
