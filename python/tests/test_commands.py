"""Every okome.Okome method against a real server's replies, with and
without decode_responses, and the module's errors as okome exceptions."""

from __future__ import annotations

import json
import time

import pytest
import redis
import redis.asyncio

import okome
from okome import PlanStatus, StoreStatus

MODEL, PROMPT, TOOLSET, REPO = "llama3:8b", "Create a plan for the login page", "v1.2.3", "abc123"


@pytest.fixture(
    params=[{}, {"decode_responses": True}, {"protocol": 3}],
    ids=["bytes", "decoded", "resp3"],
)
def ok(request, server) -> okome.Okome:
    return okome.Okome(server.client(**request.param))


def test_plan_get_miss_set_hit(ok, server):
    key = okome.planner_key(MODEL, PROMPT, TOOLSET, REPO)
    miss = ok.plan_get(
        MODEL, PROMPT, TOOLSET, REPO, agent="agent-123", limit=60, window=60, lock=True
    )
    assert miss.status is PlanStatus.MISS and miss.status == "MISS" and str(miss.status) == "MISS"
    assert miss.key == key == ok.key("planner", MODEL, PROMPT, TOOLSET, REPO)
    assert (miss.plan, miss.raw, miss.ttl_ms, miss.retry_after_ms) == (None, None, None, None)
    assert miss.lock_ttl_ms == 9000 and isinstance(miss.token, str) and len(miss.token) == 32
    assert miss.rate_remaining == 59 and not miss.found

    other = ok.plan_get(
        MODEL, PROMPT, TOOLSET, REPO, agent="agent-456", limit=60, window=60, lock=True
    )
    assert other.status is PlanStatus.LOCKED and other.token is None
    assert 0 < other.lock_ttl_ms <= 9000 and other.rate_remaining == 59

    plan = {"steps": ["open login.tsx", "add form"], "note": "é"}
    stored = ok.plan_set(
        miss.key, plan, ttl=600, token=miss.token, agent="agent-123", write_limit=30
    )
    assert stored == okome.PlanSetReply(StoreStatus.STORED, 600_000, 29, True)
    assert stored.stored

    hit = ok.plan_get(
        MODEL, PROMPT, TOOLSET, REPO, agent="agent-123", limit=60, window=60, lock=True
    )
    assert hit.status is PlanStatus.HIT and hit.found
    assert hit.plan == plan and json.loads(hit.raw) == plan
    assert 590_000 < hit.ttl_ms <= 600_000 and hit.lock_ttl_ms is None
    assert hit.rate_remaining == 58 and hit.token is None
    assert server.client().ttl(key) == 600

    looked = ok.plan_lookup(key, lock=True)
    assert looked.status is PlanStatus.HIT and looked.plan == plan and looked.rate_remaining is None


def test_prompts_are_sent_hashed(ok, server):
    """The prompt never reaches Redis: PLAN.GET and KEY planner send its
    SHA-256 with HASHED (what the server logged shows it)."""
    admin = server.client()
    admin.config_set("slowlog-log-slower-than", 0)
    try:
        admin.slowlog_reset()
        prompt = "a long prompt with retrieved context " * 200
        digest = okome.prompt_hash(prompt)
        got = ok.plan_get(MODEL, prompt, TOOLSET, REPO, nolock=True)
        assert got.key == okome.planner_key(MODEL, prompt, TOOLSET, REPO)
        assert ok.key("planner", MODEL, prompt, TOOLSET, REPO) == got.key
        logged = [
            c.decode() if isinstance(c, bytes) else str(c)
            for c in (e["command"] for e in admin.slowlog_get(10))
        ]
        sent = [c for c in logged if c.upper().startswith(("OKOME.PLAN.GET", "OKOME.KEY"))]
        assert len(sent) == 2, logged
        for c in sent:
            assert digest in c and "HASHED" in c, c
            assert "retrieved context" not in c, c
    finally:
        admin.config_set("slowlog-log-slower-than", 10000)
    with pytest.raises(okome.ArgumentError, match="prompt must not be empty"):
        ok.plan_get(MODEL, "", TOOLSET, REPO, lock=True)


def test_plan_options(ok):
    nolock = ok.plan_get(MODEL, "p-nolock", TOOLSET, REPO, nolock=True)
    assert nolock.status is PlanStatus.MISS and nolock.token is None and nolock.lock_ttl_ms is None
    m = ok.plan_get(MODEL, "p-lockttl", TOOLSET, REPO, lock_ttl_ms=8000, lock=True)
    assert m.lock_ttl_ms == 8000
    # A stored plan with REFRESHAHEAD above its TTL: one REFRESH, then HITs.
    ok.plan_set(m.key, [1, 2], token=m.token)
    r = ok.plan_lookup(m.key, refresh_ahead_ms=900_000, lock=True)
    assert r.status is PlanStatus.REFRESH and r.plan == [1, 2] and r.token and r.ttl_ms > 0
    again = ok.plan_lookup(m.key, refresh_ahead_ms=900_000, lock=True)
    assert again.status is PlanStatus.HIT
    assert ok.plan_set(m.key, RawJSON := okome.RawJSON('{"v":2}'), token=r.token).lock_released
    assert ok.plan_lookup(m.key, lock=True).raw == RawJSON
    # WAIT on a free key returns at once.
    w = ok.plan_get(MODEL, "p-wait", TOOLSET, REPO, wait_ms=1000, lock=True)
    assert w.status is PlanStatus.MISS


def test_limited(ok):
    for i in range(3):
        r = ok.plan_get(
            MODEL, "p-limit", TOOLSET, REPO, agent="lim", limit=3, window=60, nolock=True
        )
        assert r.rate_remaining == 2 - i
    r = ok.plan_get(MODEL, "p-limit", TOOLSET, REPO, agent="lim", limit=3, window=60, lock=True)
    assert r.status is PlanStatus.LIMITED
    assert 59_000 < r.retry_after_ms <= 60_000 and r.retry_after == 60 and r.rate_remaining == 0


def test_plan_set_budget_spent(ok):
    m = ok.plan_get(MODEL, "p-budget", TOOLSET, REPO, lock=True)
    assert ok.plan_set(m.key, {}, agent="w", write_limit=1).status is StoreStatus.STORED
    s = ok.plan_set(m.key, {"x": 1}, token=m.token, agent="w", write_limit=1)
    assert s == okome.PlanSetReply(StoreStatus.SKIPPED, None, 0, True) and not s.stored


def test_locks(ok):
    key = ok.key("tools", "v7")
    assert key == "okome:tools:{v7}"
    token = ok.lock(key)
    assert isinstance(token, str) and len(token) == 32
    assert ok.lock(key) is None
    assert ok.extend_lock(key, token, ttl_ms=10_000) is True
    assert ok.extend_lock(key, "wrong") is False
    assert ok.unlock(key, "wrong") is False
    assert ok.unlock(key, token) is True
    assert ok.lock(key, ttl_ms=8000) is not None


def test_rate_and_wbudget(ok):
    assert ok.rate("agent-9", 2, 60) == okome.RateReply(True, 1, 0, 60_000)
    assert ok.rate("agent-9", 2, 60).remaining == 0
    refused = ok.rate("agent-9", 2, 60)
    assert not refused.allowed and 59_000 < refused.retry_after_ms <= 60_000
    assert refused.retry_after == 60
    assert ok.rate("agent-9", 2, 60, cost=0).remaining == 0
    w = ok.wbudget("agent-9", 30)
    assert w.allowed and w.remaining == 29 and w.reset_after_ms == 60_000
    w = ok.wbudget("agent-9", 30, window=10, cost=5)
    assert w.allowed and w.remaining == 24 and w.retry_after == 0


def test_rate_named_windows_and_large_limits(ok, server):
    assert ok.rate("gpt-4o", 150_000_000, 60, cost=12_000, name="tpm") == okome.RateReply(
        True, 149_988_000, 0, 60_000
    )
    assert ok.rate("gpt-4o", 2, 60, name="default").remaining == 1
    assert ok.rate("gpt-4o", 2, 60).remaining == 0, "default is the unnamed window"
    big = ok.rate("tenant", 10**15, 2_592_000, cost=10**15, name=b"usd")
    assert big == okome.RateReply(True, 0, 0, 2_592_000_000)
    assert not ok.rate("tenant", 10**15, 2_592_000, name=b"usd").allowed
    assert sorted(server.client().keys("okome:budget:rate:*")) == [
        b"okome:budget:rate:{gpt-4o}",
        b"okome:budget:rate:{gpt-4o}:tpm",
        b"okome:budget:rate:{tenant}:usd",
    ]


def test_cache(ok):
    ttl = ok.cache_set("rag", "myrepo", "chunk-1f2e", value={"text": "fn main() {}"})
    assert ttl == 3_600_000
    entry = ok.cache_get("rag", "myrepo", "chunk-1f2e")
    assert entry is not None and entry.value == {"text": "fn main() {}"}
    assert entry.raw == '{"text":"fn main() {}"}' and 3_590_000 < entry.ttl_ms <= 3_600_000
    assert ok.cache_get("rag", "myrepo", "nope") is None
    assert ok.cache_set("model_meta", "llama3:8b", value={"ctx": 8192}) == 86_400_000
    assert ok.cache_set("rag", "r", "c", value=[1], ttl=1800) == 1_800_000
    assert ok.key("model_meta", "llama3:8b") == "okome:model_meta:{llama3%3A8b}"


def test_stats(ok):
    ok.plan_get(MODEL, "p-stats", TOOLSET, REPO, nolock=True)
    stats = ok.stats()
    assert stats["okome_planner_misses"] == 1


def test_errors_keep_the_server_message(ok, server):
    with pytest.raises(okome.NotCacheableError) as e:
        ok.cache_set("git_ops", "x", value={})
    assert "is not cacheable" in str(e.value) and "git operations" in e.value.message
    assert e.value.server_message.startswith("ERR kind 'git_ops' is not cacheable")
    assert isinstance(e.value, redis.exceptions.ResponseError)

    with pytest.raises(okome.OutOfRangeError, match="ttl 5 is out of range"):
        ok.plan_set(okome.planner_key("m", "p", "t", "r"), {}, ttl=5)
    with pytest.raises(okome.InvalidJSONError) as j:
        ok.plan_set(okome.planner_key("m", "p", "t", "r"), okome.RawJSON("{nope"))
    assert j.value.server_message == "ERR plan_json is not valid JSON (at byte 2)"
    with pytest.raises(okome.KeyFormatError, match="is not an okome key"):
        ok.plan_set("okome:tools:v1", {})
    # A part that is an option keyword is refused, never stored as okome:tools:{TTL}.
    with pytest.raises(okome.ArgumentError) as p:
        ok.cache_set("tools", "TTL", value={})
    assert p.value.server_message.startswith("ERR syntax error: tool_version cannot be 'TTL'")
    with pytest.raises(redis.exceptions.ResponseError) as k:
        server.client().execute_command("OKOME.KEY", "lock", "x")
    assert isinstance(okome.errors.translate(k.value), okome.ArgumentError)
    assert "OKOME.KEY takes planner, model_meta" in str(k.value)
    with pytest.raises(okome.ArgumentError, match="must not be empty"):
        ok.plan_get("m", "p", "t", "", lock=True)
    with pytest.raises(okome.ArgumentError):
        ok.rate("a", 0, 60)
    server.client().set(ok.key("tools", "str"), "x")
    server.client().lpush("okome:tools:{wrongtype}", "x")
    with pytest.raises(okome.WrongTypeError) as wt:
        ok.cache_get("tools", "wrongtype")
    assert wt.value.code == "WRONGTYPE"
    # Nothing was written by any refused call.
    assert sorted(server.client(decode_responses=True).keys("*")) == [
        "okome:tools:{str}",
        "okome:tools:{wrongtype}",
    ]


def test_argument_checks_before_sending(ok):
    with pytest.raises(ValueError, match="agent needs limit and window"):
        ok.plan_get("m", "p", "t", "r", agent="a", lock=True)
    with pytest.raises(ValueError, match="need an agent"):
        ok.plan_get("m", "p", "t", "r", limit=5, lock=True)
    with pytest.raises(TypeError):
        ok.plan_set(okome.planner_key("m", "p", "t", "r"), {1, 2})  # not JSON


def test_module_not_loaded(tmp_path):
    from conftest import REDIS_SERVER, free_port  # noqa: I001
    import subprocess
    import time

    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        c = redis.Redis(port=port)
        for _ in range(200):
            try:
                c.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        with pytest.raises(okome.ModuleNotLoadedError):
            okome.Okome(c).rate("a", 1, 1)
    finally:
        proc.kill()
        proc.wait()


def test_single_connection_client_refuses_wait(server):
    ok = okome.Okome(server.client(single_connection_client=True))
    assert ok.plan_get("m", "p", "t", "r", lock=True).status is PlanStatus.MISS  # no WAIT: fine
    with pytest.raises(okome.ConfigurationError, match="connection of its own"):
        ok.plan_get("m", "p", "t", "r", wait_ms=100, lock=True)


def test_wrong_client_type():
    with pytest.raises(TypeError, match="okome.aio.Okome"):
        okome.Okome(redis.asyncio.Redis())


def test_agent_ledger(ok, server):
    m = ok.plan_get(MODEL, "ledger-1", TOOLSET, REPO, lock=True)
    s = ok.plan_set(m.key, {"bad": 1}, token=m.token, agent="agent-bad")  # ledger, no budget
    assert s.stored and s.wbudget_remaining is None
    assert ok.cache_set("tools", "v9", value={"t": 1}, agent="agent-bad") == 600_000
    m2 = ok.plan_get(MODEL, "ledger-2", TOOLSET, REPO, lock=True)
    ok.plan_set(m2.key, {"ok": 1}, token=m2.token)
    rec = ok.agent_record("agent-bad", m2.key)
    assert rec.ledger_size == 3 and 590_000 < rec.ttl_ms <= 600_000
    page = ok.agent_keys("agent-bad", count=2)
    assert len(page.entries) == 2 and page.cursor is not None
    rest = ok.agent_keys("agent-bad", count=2, cursor=page.cursor)
    assert len(rest.entries) == 1 and rest.cursor is None
    entries = list(ok.iter_agent_keys("agent-bad", count=1))
    assert {e.key for e in entries} == {m.key, m2.key, "okome:tools:{v9}"}
    assert all(e.state is okome.LedgerState.CURRENT for e in entries)
    # Another agent rewrites one: the purge leaves it, deletes the others. (A
    # rewrite is told apart by its new expiry: not in the same millisecond.)
    time.sleep(0.005)
    ok.plan_set(m2.key, {"ok": 2}, agent="agent-good")
    states = {e.key: e.state for e in ok.iter_agent_keys("agent-bad")}
    assert states[m2.key] == "rewritten"
    purged = ok.agent_purge("agent-bad")
    assert purged == okome.PurgeReply(deleted=2, left=1, gone=0, remaining=0, elsewhere=[])
    assert ok.plan_lookup(m2.key, nolock=True).plan == {"ok": 2}
    assert ok.plan_lookup(m.key, nolock=True).status is PlanStatus.MISS
    assert ok.key("ledger", "agent-bad") == "okome:budget:keys:{agent-bad}"
    assert server.client().exists("okome:budget:keys:{agent-bad}") == 0
