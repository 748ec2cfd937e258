"""examples/fastapi/planner_example.py passes the seed's verification,
through FastAPI's test client, against a real server (OKOME_REDIS_URL)."""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi" / "planner_example.py"
HEADERS = {"X-OKOME-Agent": "test-agent", "X-Repo-Hash": "abc123"}
BODY = {"model": "gpt-4", "prompt": "test"}


def load_example():
    spec = importlib.util.spec_from_file_location("planner_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["planner_example"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def client(server, monkeypatch):
    monkeypatch.setenv("OKOME_REDIS_URL", server.url)
    example = load_example()
    with TestClient(example.app) as c:
        yield c


def test_seed_verification(client, server):
    # "Should be MISS first time", then HIT, with the key.
    r = client.post("/api/planner", json=BODY, headers=HEADERS)
    assert r.status_code == 200, r.text
    assert r.headers["X-OKOME-Cache"] == "MISS"
    key = r.headers["X-OKOME-Cache-Key"]
    assert key.startswith("okome:planner:gpt-4:{") and key.endswith("}:v1:abc123")
    assert r.headers["X-OKOME-Agent-Rate-Remaining"] == "59"
    plan = r.json()
    r2 = client.post("/api/planner", json=BODY, headers=HEADERS)
    assert r2.headers["X-OKOME-Cache"] == "HIT" and r2.headers["X-OKOME-Cache-Key"] == key
    assert r2.json() == plan
    assert r2.headers["X-OKOME-Agent-Rate-Remaining"] == "58"

    # "Make 61 requests in 60 seconds": the 61st is rate limited.
    remaining = [58]
    limited_at = None
    for i in range(3, 62):
        resp = client.post("/api/planner", json=BODY, headers=HEADERS)
        if resp.status_code == 429:
            limited_at = i
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
            assert resp.headers["X-OKOME-Agent-Rate-Remaining"] == "0"
            break
        remaining.append(int(resp.headers["X-OKOME-Agent-Rate-Remaining"]))
    assert limited_at == 61
    assert remaining == list(range(58, -1, -1))  # counting down to 0

    # "Check Redis Keys".
    r = server.client(decode_responses=True)
    assert r.keys("okome:planner:*") == [key]
    assert sorted(r.keys("okome:budget:*")) == [
        "okome:budget:keys:{test-agent}",  # the agent's ledger: the plan it wrote
        "okome:budget:rate:{test-agent}",
        "okome:budget:write:{test-agent}",
    ]
    assert r.zrange("okome:budget:keys:{test-agent}", 0, -1) == [key]
    assert r.keys("*:lock") == []


def test_concurrent_cold_requests_compute_once(client, monkeypatch):
    example = sys.modules["planner_example"]
    calls = []
    original = example.compute_plan

    async def counting(*args):
        calls.append(args)
        return await original(*args)

    monkeypatch.setattr(example, "COMPUTE_DELAY_MS", 300)
    monkeypatch.setattr(example, "compute_plan", counting)
    body = {"model": "gpt-4", "prompt": "concurrent"}

    def post(i: int):
        return client.post(
            "/api/planner", json=body, headers={"X-OKOME-Agent": f"a{i}", "X-Repo-Hash": "abc123"}
        )

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(post, range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert sorted(r.headers["X-OKOME-Cache"] for r in responses) == ["HIT"] * 9 + ["MISS"]
    assert len(calls) == 1


def test_missing_headers(client):
    assert client.post("/api/planner", json=BODY).status_code == 400
    assert client.post("/api/planner", json={"model": "x"}, headers=HEADERS).status_code == 422
