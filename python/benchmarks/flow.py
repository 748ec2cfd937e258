"""What a planner request costs from Python: round trips and latency of a
miss and a hit, okome (``okome.Planner``, and the bare commands through
redis-py) against the seed's client-side cache.py + budget.py flow.

    target/venv/bin/python python/benchmarks/flow.py [--url redis://127.0.0.1:6379/0] [-n 2000]

Without ``--url`` it starts its own ``redis-server`` (``REDIS_SERVER``) with
``OKOME_MODULE`` (default target/release/libokome.so, else target/debug)
on a free loopback port. One client, sequential requests, the flows
interleaved request by request; round trips are the server's command counts
(``INFO commandstats``) per request.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

import okome

ROOT = Path(__file__).resolve().parents[2]
PLAN = {"steps": ["open login.tsx", "add the form", "wire the submit"], "model": "gpt-4"}
PLAN_JSON = '{"steps":["open login.tsx","add the form","wire the submit"],"model":"gpt-4"}'


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    module = os.environ.get("OKOME_MODULE") or next(
        str(p)
        for p in (ROOT / "target/release/libokome.so", ROOT / "target/debug/libokome.so")
        if p.exists()
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="okome-flow-")
    args = [os.environ.get("REDIS_SERVER", "redis-server"), "--port", str(port)]
    args += ["--bind", "127.0.0.1", "--save", "", "--dir", workdir, "--loadmodule", module]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            client.ping()
            return proc, url
        except redis.exceptions.ConnectionError:
            time.sleep(0.01)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def total_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def seed_allow(r: redis.Redis, key: str, limit: int, window: int) -> tuple[bool, int]:
    """budget.py as the seed wrote it: INCR, then EXPIRE on the first hit."""
    n = int(r.incr(key))
    if n == 1:
        r.expire(key, window)
    return n <= limit, max(limit - n, 0)


def seed_request(r: redis.Redis, prompt: str, compute: Callable[[], Any]) -> tuple[str, Any]:
    """One planner request with the seed's cache.py + budget.py, one command per round trip."""
    prompt_hash = hashlib.sha256(prompt.encode()).hexdigest()
    key = f"seed:planner:gpt-4:{prompt_hash}:v1.2.3:abc123"
    allowed, _ = seed_allow(r, "seed:budget:rate:agent-1", 100_000, 60)
    assert allowed
    cached = r.get(key)
    if cached is not None:
        return "HIT", okome.replies.decode_json(cached.decode())
    assert r.set(f"{key}:lock", "1", nx=True, px=9000)
    plan = compute()
    allowed_w, _ = seed_allow(r, "seed:budget:write:agent-1", 100_000, 60)
    if allowed_w:
        r.set(key, okome.replies.encode_json(plan), ex=600)
    r.delete(f"{key}:lock")
    return "MISS", plan


def raw_request(r: redis.Redis, prompt: str, compute: Callable[[], Any]) -> tuple[str, Any]:
    """okome's commands through bare redis-py (no okome package)."""
    status, key, value, _ms, token, _rem = r.execute_command(
        "OKOME.PLAN.GET", "gpt-4", prompt, "v1.2.3", "abc123",
        "AGENT", "agent-1", "LIMIT", 100_000, "WINDOW", 60,
    )  # fmt: skip
    if status == b"HIT":
        return "HIT", okome.replies.decode_json(value.decode())
    plan = compute()
    r.execute_command(
        "OKOME.PLAN.SET", key, okome.replies.encode_json(plan), "TTL", 600,
        "TOKEN", token, "AGENT", "agent-1", "WLIMIT", 100_000,
    )  # fmt: skip
    return "MISS", plan


def round_trips(r: redis.Redis, request: Callable[[str], tuple[str, Any]]) -> tuple[int, int]:
    """Commands the server ran for one miss and for one hit (INFO excluded)."""
    prompt = f"count {time.time_ns()}: create a plan for the login page"
    before = total_calls(r)
    assert request(prompt)[0] == "MISS"
    miss = total_calls(r) - before
    before = total_calls(r)
    assert request(prompt)[0] == "HIT"
    return miss, total_calls(r) - before


def measure(
    r: redis.Redis, flows: list[tuple[str, Callable[[str], tuple[str, Any]]]], n: int
) -> list[dict[str, Any]]:
    """``n`` misses and hits per flow, the flows interleaved request by
    request, so that whatever else the machine does weighs on all alike."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _ in flows}
    for i in range(n):
        for name, request in flows:
            prompt = f"{name} {time.time_ns()} prompt {i}: create a plan for the login page"
            miss, hit = times[name]
            t = time.perf_counter()
            status, plan = request(prompt)
            miss.append(time.perf_counter() - t)
            assert status == "MISS" and plan == PLAN, status
            t = time.perf_counter()
            status, plan = request(prompt)
            hit.append(time.perf_counter() - t)
            assert status == "HIT" and plan == PLAN, status
    rows = []
    for name, request in flows:
        miss, hit = times[name]
        miss_rt, hit_rt = round_trips(r, request)
        rows.append(
            {
                "name": name,
                "miss_rt": miss_rt,
                "hit_rt": hit_rt,
                "miss_p50": statistics.median(miss) * 1e6,
                "miss_p99": sorted(miss)[int(len(miss) * 0.99) - 1] * 1e6,
                "hit_p50": statistics.median(hit) * 1e6,
                "hit_p99": sorted(hit)[int(len(hit) * 0.99) - 1] * 1e6,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server with okome loaded (default: start one)")
    parser.add_argument("-n", type=int, default=2000, help="misses (and as many hits) per flow")
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        r = redis.Redis.from_url(url)
        planner = okome.Planner(redis.Redis.from_url(url), limit=100_000, write_limit=100_000)

        def planner_request(prompt: str) -> tuple[str, Any]:
            res = planner.get_or_compute(
                "gpt-4", prompt, "v1.2.3", "abc123", lambda: PLAN, agent="agent-1"
            )
            return res.cache, res.plan

        flows = [
            ("okome.Planner", planner_request),
            ("okome, bare redis-py", lambda p: raw_request(r, p, lambda: PLAN)),
            ("seed cache.py + budget.py", lambda p: seed_request(r, p, lambda: PLAN)),
        ]
        measure(r, flows, 50)  # warm up
        rows = measure(r, flows, args.n)
        print(f"{args.n} misses and {args.n} hits per flow, one client, sequential, {url}\n")
        print("| flow | miss round trips | miss p50 µs | miss p99 µs | hit round trips "
              "| hit p50 µs | hit p99 µs |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print(
                f"| {row['name']} | {row['miss_rt']} | {row['miss_p50']:.0f} | "
                f"{row['miss_p99']:.0f} | {row['hit_rt']} | {row['hit_p50']:.0f} | "
                f"{row['hit_p99']:.0f} |"
            )
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
