"""The seed's usage snippets (Phase 3, Parts A and B), run verbatim against
okome.cache and okome.budget, finding the server through OKOME_REDIS_URL."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

import okome
import okome._config
import okome.budget
import okome.cache

# Verbatim from the seed (shared/seed/000_428f0f7ee4a1cf2c.txt), Part A "Usage".
PART_A = """\
from okome.cache import key_planner, get_json, set_json, with_lock, release_lock

# Generate cache key
cache_key = key_planner(
    model="gpt-4",
    prompt="Create a plan for...",
    toolset_version="v1.2.3",
    repo_hash="abc123"
)

# Check cache
cached = get_json(cache_key)
if cached:
    return cached

# Compute and cache
plan = compute_plan(...)
set_json(cache_key, plan, ttl_seconds=600)
"""

# Verbatim from the seed, Part B "Usage".
PART_B = """\
from okome.budget import allow_rate, allow_cache_write, record_agent_key

# Rate limit check
allowed, remaining = allow_rate(agent_id="agent-123", limit=60, window_seconds=60)
if not allowed:
    raise HTTPException(status_code=429, detail="Rate limit exceeded")

# Cache write budget
allowed_w, remaining_w = allow_cache_write(agent_id="agent-123", write_limit=30)
if allowed_w:
    set_json(cache_key, plan, ttl_seconds=600)
"""

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "000_428f0f7ee4a1cf2c.txt"


class HTTPException(Exception):
    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code


@pytest.fixture
def seed_env(server, monkeypatch):
    monkeypatch.setenv("OKOME_REDIS_URL", server.url)
    okome._config.reset()
    yield server
    okome._config.reset()


def handler(snippet: str, namespace: dict) -> object:
    """Runs a snippet as the body of a request handler (Part A returns)."""
    exec("def handler():\n" + textwrap.indent(snippet, "    ") + "\n    return locals()", namespace)
    return namespace["handler"]()


def test_snippets_are_the_seeds():
    if not SEED.exists():
        # CI always has shared/ beside the clone: there, a missing seed fails.
        if os.environ.get("CI"):
            pytest.fail(f"the seed is not at {SEED}")
        pytest.skip("the seed is not beside this checkout")
    text = SEED.read_text()
    assert PART_A in text and PART_B in text


def test_part_a_then_b(seed_env):
    computed = []

    def compute_plan(*_args: object) -> dict:
        computed.append(1)
        return {"steps": ["open login.tsx", "add form"]}

    ns: dict = {"compute_plan": compute_plan, "HTTPException": HTTPException}
    first = handler(PART_A, ns)
    assert isinstance(first, dict) and first["cached"] is None and computed == [1]
    key = okome.planner_key("gpt-4", "Create a plan for...", "v1.2.3", "abc123")
    assert first["cache_key"] == key
    r = seed_env.client(decode_responses=True)
    assert r.ttl(key) == 600
    assert handler(PART_A, ns) == {"steps": ["open login.tsx", "add form"]}  # returned cached
    assert computed == [1]

    # Part B, in the same handler scope as Part A's names.
    state = {"compute_plan": compute_plan, "HTTPException": HTTPException}
    body_b = "from okome.cache import set_json\ncache_key = CACHE_KEY\nplan = PLAN\n" + PART_B
    state.update(CACHE_KEY=key, PLAN={"steps": ["v2"]})
    for i in range(60):
        out = handler(body_b, state)
        assert out["allowed"] and out["remaining"] == 59 - i
        assert out["allowed_w"] == (i < 30) and out["remaining_w"] == max(29 - i, 0)
    with pytest.raises(HTTPException) as e:
        handler(body_b, state)
    assert e.value.status_code == 429
    assert sorted(r.keys("okome:budget:*")) == [
        "okome:budget:rate:{agent-123}",
        "okome:budget:write:{agent-123}",
    ]


def test_locks_and_json_helpers(seed_env):
    from okome.cache import get_json, key_planner, release_lock, set_json, with_lock

    key = key_planner("llama3:8b", "p", "v1", "abc123")
    token = with_lock(key)
    assert token and with_lock(key) is None
    assert release_lock(key, token) and not release_lock(key, token)
    with with_lock(key, ttl_ms=8000) as t:
        assert t and seed_env.client().pttl(key + ":lock") > 7000
    assert seed_env.client().exists(key + ":lock") == 0

    assert get_json("okome:tools:{v7}") is None
    assert set_json("okome:tools:{v7}", {"tools": ["grep"]}, ttl_seconds=600)
    assert get_json("okome:tools:{v7}") == {"tools": ["grep"]}
    assert set_json("okome:rag:{myrepo}:chunk-1", {"t": 1}) and get_json(
        "okome:rag:{myrepo}:chunk-1"
    )
    # The hard rule, client-side too: only okome cache keys.
    with pytest.raises(okome.KeyFormatError):
        set_json("git:ops", {})
    with pytest.raises(okome.KeyFormatError):
        set_json("okome:budget:rate:{a}", {})
    with pytest.raises(okome.OutOfRangeError):
        set_json(key, {}, ttl_seconds=60)  # outside the planner standard (300-900 s)


def test_record_agent_key_is_the_modules_ledger(seed_env):
    from okome.budget import agent_keys, record_agent_key
    from okome.cache import key_planner, set_json

    plan_key = key_planner("gpt-4", "p", "v1", "abc123")
    set_json(plan_key, {"steps": []}, ttl_seconds=600)
    set_json("okome:tools:{v7}", {"tools": []})
    record_agent_key("agent-123", plan_key)
    record_agent_key("agent-123", "okome:tools:{v7}")
    assert agent_keys("agent-123") == {plan_key, "okome:tools:{v7}"}
    ledger = "okome:budget:keys:{agent-123}"
    assert seed_env.client().type(ledger) == b"zset"
    assert 590 < seed_env.client().ttl(ledger) <= 600  # expires with its latest key
    with pytest.raises(okome.OkomeError):
        record_agent_key("agent-123", "okome:tools:{absent}")  # not written: refused


def test_configure_wins_over_the_url(server, monkeypatch):
    monkeypatch.setenv("OKOME_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    okome.configure(server.client())
    try:
        assert okome.budget.allow_rate("cfg", 1, 60) == (True, 0)
    finally:
        okome._config.reset()
