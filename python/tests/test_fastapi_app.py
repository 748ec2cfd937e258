"""examples/fastapi/app.py (okome.fastapi) under a real uvicorn, in a
subprocess, against a real server (OKOME_REDIS_URL): the seed's
verification over HTTP, its per-agent and per-IP limits, a stampede, Redis
going away, a server without the module; and the app is what python/README
shows, in under 15 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_okome_fastapi import plain_redis
from uvicorn_support import UvicornProcess

import okome

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "fastapi"
APP = EXAMPLES / "app.py"
README = ROOT / "python" / "README.md"
HEADERS = {"X-OKOME-Agent": "test-agent", "X-Repo-Hash": "abc123"}
BODY = {"model": "gpt-4", "prompt": "test"}
KEY = okome.planner_key("gpt-4", "test", "v1", "abc123")
PLAN = {"model": "gpt-4", "steps": ["understand: test", "plan", "apply"]}


@pytest.fixture
def example(server, tmp_path) -> Iterator[UvicornProcess]:
    app = UvicornProcess(EXAMPLES, "app:app", {"OKOME_REDIS_URL": server.url}, tmp_path / "uv.log")
    yield app
    app.stop()


def test_seed_verification_over_http(example, server):
    with httpx.Client(base_url=example.url) as http:
        r = http.post("/api/planner", json=BODY, headers=HEADERS)
        assert r.status_code == 200, r.text
        assert r.json() == PLAN
        assert r.headers["X-OKOME-Cache"] == "MISS"
        assert r.headers["X-OKOME-Cache-Key"] == KEY
        assert r.headers["X-OKOME-Cache-Write"] == "STORED"
        assert r.headers["X-OKOME-Agent-Rate-Remaining"] == "59"
        assert r.headers["X-OKOME-Rate-Remaining"] == "599"  # the per-IP limit
        r2 = http.post("/api/planner", json=BODY, headers=HEADERS)
        assert r2.status_code == 200 and r2.json() == PLAN
        assert r2.headers["X-OKOME-Cache"] == "HIT" and r2.headers["X-OKOME-Cache-Key"] == KEY
        assert r2.headers["X-OKOME-Agent-Rate-Remaining"] == "58"
        assert "X-OKOME-Cache-Write" not in r2.headers

        # "Make 61 requests in 60 seconds": the 61st is rate limited.
        remaining = []
        for _ in range(3, 61):
            resp = http.post("/api/planner", json=BODY, headers=HEADERS)
            assert resp.status_code == 200
            remaining.append(int(resp.headers["X-OKOME-Agent-Rate-Remaining"]))
        assert remaining == list(range(57, -1, -1))
        limited = http.post("/api/planner", json=BODY, headers=HEADERS)
        assert limited.status_code == 429
        assert limited.headers["X-OKOME-Agent-Rate-Remaining"] == "0"
        assert 59 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.headers["X-OKOME-Cache-Key"] == KEY
        detail = limited.json()["detail"]
        assert detail.startswith("rate limit exceeded for agent 'test-agent': retry after ")
        assert detail.endswith(" ms")

        # The seed's headers are required (FastAPI: 422).
        no_agent = http.post("/api/planner", json=BODY, headers={"X-Repo-Hash": "abc123"})
        assert no_agent.status_code == 422
        assert no_agent.json()["detail"][0]["loc"] == ["header", "X-OKOME-Agent"]
        no_repo = http.post("/api/planner", json=BODY, headers={"X-OKOME-Agent": "a"})
        assert no_repo.status_code == 422
        assert no_repo.json()["detail"][0]["loc"] == ["header", "X-Repo-Hash"]

    # "Check Redis Keys".
    r = server.client(decode_responses=True)
    assert r.keys("okome:planner:*") == [KEY]
    assert sorted(r.keys("okome:budget:*")) == [
        "okome:budget:keys:{test-agent}",
        "okome:budget:rate:{127.0.0.1}:ip",
        "okome:budget:rate:{test-agent}",
        "okome:budget:write:{test-agent}",
    ]
    assert r.keys("*:lock") == []
    stats = okome.Okome(server.client()).stats()
    assert (stats["okome_planner_misses"], stats["okome_planner_hits"]) == (1, 59)
    assert stats["okome_planner_limited"] == 1
    # The per-IP limit saw every request, the 61 with both headers and the 2
    # without one (FastAPI runs a route's dependencies before it answers 422).
    peek = okome.Okome(server.client()).rate("127.0.0.1", 600, 60, cost=0, name="ip")
    assert peek.remaining == 600 - 63


def test_per_ip_limit(example, server):
    ok = okome.Okome(server.client())
    # 598 of the loopback address's 600 a minute are spent already.
    assert ok.rate("127.0.0.1", 600, 60, cost=598, name="ip").remaining == 2
    with httpx.Client(base_url=example.url) as http:
        got = [
            http.post("/api/planner", json=BODY, headers={**HEADERS, "X-OKOME-Agent": f"a{i}"})
            for i in range(3)
        ]
    assert [r.status_code for r in got] == [200, 200, 429]
    assert [r.headers["X-OKOME-Rate-Remaining"] for r in got] == ["1", "0", "0"]
    assert 59 <= int(got[2].headers["Retry-After"]) <= 60
    assert "X-OKOME-Cache" not in got[2].headers  # refused before the planner
    # The refused request charged no agent.
    assert ok.rate("a2", 60, 60, cost=0).remaining == 60
    assert ok.rate("a1", 60, 60, cost=0).remaining == 59


def test_concurrent_cold_requests_compute_once(example, server):
    def post(i: int) -> httpx.Response:
        return httpx.post(
            example.url + "/api/planner",
            json={"model": "gpt-4", "prompt": "concurrent"},
            headers={"X-OKOME-Agent": f"a{i}", "X-Repo-Hash": "abc123"},
            timeout=30,
        )

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert sorted(r.headers["X-OKOME-Cache"] for r in responses) == ["HIT"] * 19 + ["MISS"]
    stats = okome.Okome(server.client()).stats()
    assert stats["okome_plans_stored"] == 1 and stats["okome_planner_misses"] == 1


def test_redis_going_away_is_503(start_server, tmp_path):
    server = start_server()
    app = UvicornProcess(EXAMPLES, "app:app", {"OKOME_REDIS_URL": server.url}, tmp_path / "uv.log")
    try:
        with httpx.Client(base_url=app.url) as http:
            assert http.post("/api/planner", json=BODY, headers=HEADERS).status_code == 200
            server.kill()
            down = http.post("/api/planner", json=BODY, headers=HEADERS)
            assert down.status_code == 503
            assert down.headers["Retry-After"] == "1"
            assert down.json()["detail"].startswith("Redis is unavailable: ConnectionError")
    finally:
        app.stop()
    assert "Traceback" not in app.output()


def test_module_not_loaded(tmp_path):
    proc, port = plain_redis(tmp_path)
    env = {"OKOME_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    app = UvicornProcess(EXAMPLES, "app:app", env, tmp_path / "uv.log")
    try:
        # It started, having said what is wrong.
        assert (
            f"okome: the Redis server at 127.0.0.1:{port} does not have the okome module loaded"
            in app.output()
        )
        assert "load libokome.so (redis-server --loadmodule /path/to/libokome.so" in app.output()
        r = httpx.post(app.url + "/api/planner", json=BODY, headers=HEADERS)
        assert r.status_code == 503
        assert r.json()["detail"].endswith(
            "(the okome module is not loaded on this server: load libokome.so (redis-server "
            "--loadmodule /path/to/libokome.so, or MODULE LOAD /path/to/libokome.so))"
        )
    finally:
        app.stop()
        proc.kill()
        proc.wait()


def code_lines(source: str) -> list[str]:
    """The app's lines of code: not the docstring, the imports, blank lines
    or comments."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        ):
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        assert node.end_lineno is not None
        for line in lines[start - 1 : node.end_lineno]:
            if line.strip() and not line.strip().startswith("#"):
                out.append(line)
    return out


def test_the_app_is_under_15_lines_and_in_the_readme():
    source = APP.read_text()
    assert len(code_lines(source)) == 14
    # python/README shows the app as it is, imports included.
    body = source.split('"""\n', 1)[1].lstrip("\n")
    assert f"```python\n{body}```" in README.read_text()
