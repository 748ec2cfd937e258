"""Redis Cluster: every call goes straight to the node serving its key, in
one round trip (counted per node with INFO commandstats), and MOVED / ASK /
TRYAGAIN during a resharding are followed (test_reshard.py: under load)."""

from __future__ import annotations

import asyncio
import threading
import time

import redis
import redis.asyncio.cluster as acluster
from redis.cluster import RedisCluster

import okome
import okome._config
import okome.aio
import okome.budget
from okome import PlanStatus

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"


def diff(before: list[dict[str, int]], after: list[dict[str, int]]) -> list[dict[str, int]]:
    return [
        {k: v - b.get(k, 0) for k, v in a.items() if v != b.get(k, 0)}
        for b, a in zip(before, after)
    ]


def owner_index(cluster, key: str) -> int:
    """The node serving ``key``'s slot now (from CLUSTER SLOTS of each node)."""
    c = cluster.nodes[0].client()
    slot = c.execute_command("CLUSTER", "KEYSLOT", key)
    for lo, hi, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
        if lo <= slot <= hi:
            return [n.port for n in cluster.nodes].index(int(primary[1]))
    raise AssertionError(slot)


def cluster_client(cluster, **kw) -> RedisCluster:
    """A cluster client with a connection to every primary already open, so
    that the counts below are of requests, not of connection handshakes."""
    rc = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, **kw)
    for node in rc.get_primaries():
        rc.get_redis_connection(node).ping()
    cluster.commands()  # the counting connections, opened too
    return rc


def test_keys_computed_locally_match_the_module(cluster):
    ok = okome.Okome(cluster_client(cluster))
    for prompt in ["plan the login page", "ünïcode: {braces} [x] *?", "a" * 5000]:
        assert ok.key("planner", "llama3:8b", prompt, "v1.2", "r:1") == okome.planner_key(
            "llama3:8b", prompt, "v1.2", "r:1"
        )


def test_hit_is_one_round_trip_on_the_owner(cluster):
    cluster.flush()
    ok = okome.Okome(cluster_client(cluster, decode_responses=True))
    prompt = "plan the login page"
    key = okome.planner_key(MODEL, prompt, TOOLSET, REPO)
    owner = owner_index(cluster, key)

    before = cluster.commands()
    miss = ok.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True)
    assert miss.status is PlanStatus.MISS and miss.key == key
    assert ok.plan_set(key, {"steps": [1]}, token=miss.token).stored
    after = cluster.commands()
    expected = [{} for _ in range(3)]
    expected[owner] = {"okome.plan.lookup": 1, "okome.plan.set": 1}
    assert diff(before, after) == expected

    before = cluster.commands()
    hit = ok.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True)
    assert hit.status is PlanStatus.HIT and hit.plan == {"steps": [1]}
    expected[owner] = {"okome.plan.lookup": 1}
    assert diff(before, cluster.commands()) == expected
    # The keys are where they belong: the plan on its owner, nothing elsewhere.
    for i, n in enumerate(cluster.nodes):
        assert n.client().dbsize() == (1 if i == owner else 0)


def test_agents_are_charged_on_their_own_node(cluster):
    cluster.flush()
    ok = okome.Okome(cluster_client(cluster))
    prompt = "agents"
    key = okome.planner_key(MODEL, prompt, TOOLSET, REPO)
    agent = next(
        f"agent-{i}"
        for i in range(100)
        if owner_index(cluster, f"okome:budget:rate:{{agent-{i}}}") != owner_index(cluster, key)
    )
    agent_node = owner_index(cluster, f"okome:budget:rate:{{{agent}}}")
    plan_node = owner_index(cluster, key)

    before = cluster.commands()
    r = ok.rate(agent, 5, 60)
    assert r.allowed and r.remaining == 4
    expected = [{} for _ in range(3)]
    expected[agent_node] = {"okome.rate": 1}
    assert diff(before, cluster.commands()) == expected

    planner = okome.Planner(cluster_client(cluster), limit=5, window=60, write_limit=2)
    first = planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: {"p": 1}, agent=agent)
    assert first.computed and first.rate_remaining == 3 and first.headers["X-OKOME-Cache"] == "MISS"
    before = cluster.commands()
    second = planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: {"p": 2}, agent=agent)
    assert (
        second.status is PlanStatus.HIT and second.plan == {"p": 1} and second.rate_remaining == 2
    )
    expected = [{} for _ in range(3)]
    expected[agent_node] = {"okome.rate": 1}
    expected[plan_node] = {"okome.plan.lookup": 1}
    assert diff(before, cluster.commands()) == expected
    # Over the limit: LIMITED, and no lookup at all.
    for _ in range(2):
        planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: {}, agent=agent)
    try:
        planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: {}, agent=agent)
        raise AssertionError("not limited")
    except okome.RateLimited as e:
        assert e.retry_after == 60
    # A write budget in another slot: WBUDGET on the agent's node, then PLAN.SET.
    m = ok.plan_get(MODEL, "wb", TOOLSET, REPO, lock=True)
    writer = next(
        f"writer-{i}"
        for i in range(100)
        if owner_index(cluster, f"okome:budget:write:{{writer-{i}}}") != owner_index(cluster, m.key)
    )
    stored = ok.plan_set(m.key, {}, token=m.token, agent=writer, write_limit=1)
    assert stored == okome.PlanSetReply(okome.StoreStatus.STORED, 600_000, 0, True)
    token = ok.lock(m.key)
    assert token is not None
    skipped = ok.plan_set(m.key, {"x": 1}, token=token, agent=writer, write_limit=1)
    assert skipped == okome.PlanSetReply(okome.StoreStatus.SKIPPED, None, 0, True)


def test_a_waiting_lookup_is_never_sent_with_a_charge(cluster):
    """An agent whose window shares the plan's slot is charged inside the
    lookup (one round trip), unless the lookup may wait: a follower woken
    after its slot moved is answered TRYAGAIN and sent again, which must not
    charge it twice, so okome charges it with OKOME.RATE first."""
    cluster.flush()
    ok = okome.Okome(cluster_client(cluster))
    key = okome.planner_key(MODEL, "same slot", TOOLSET, REPO)
    node = owner_index(cluster, key)
    agent = next(
        f"same-{i}"
        for i in range(200_000)
        if okome._keys.slot(f"okome:budget:rate:{{same-{i}}}") == okome._keys.slot(key)
    )
    before = cluster.commands()
    assert ok.plan_get(
        MODEL, "same slot", TOOLSET, REPO, agent=agent, limit=5, window=60, lock=True
    ).token
    assert diff(before, cluster.commands())[node] == {"okome.plan.lookup": 1}
    before = cluster.commands()
    r = ok.plan_get(
        MODEL, "same slot", TOOLSET, REPO, agent=agent, limit=5, window=60, wait_ms=50, lock=True
    )
    assert r.status is PlanStatus.LOCKED and r.rate_remaining == 3
    assert diff(before, cluster.commands())[node] == {"okome.rate": 1, "okome.plan.lookup": 1}


def _setslot(cluster, slot: int, *args: object, nodes=None) -> None:
    for n in nodes or cluster.nodes:
        n.client().execute_command("CLUSTER", "SETSLOT", slot, *args)
    if args[0] == "NODE":
        # Wait until every node agrees on the new owner.
        port = next(n.port for n in cluster.nodes if cluster.node_id(n) == args[1])
        deadline = time.monotonic() + 10
        while not (all(_owner_port(n, slot) == port for n in cluster.nodes) and cluster.settled()):
            assert time.monotonic() < deadline, "the nodes never agreed on the slot's owner"
            time.sleep(0.02)


def _owner_port(node, slot: int) -> int | None:
    for lo, hi, primary, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
        if lo <= slot <= hi:
            return int(primary[1])
    return None


def _move(cluster, slot: int, src: int, dst: int, keys: list[str]) -> None:
    a, b = cluster.nodes[src], cluster.nodes[dst]
    _setslot(cluster, slot, "IMPORTING", cluster.node_id(a), nodes=[b])
    _setslot(cluster, slot, "MIGRATING", cluster.node_id(b), nodes=[a])
    present = [k for k in keys if a.client().exists(k)]
    if present:
        a.client().execute_command("MIGRATE", "127.0.0.1", b.port, "", 0, 5000, "KEYS", *present)
    _setslot(cluster, slot, "NODE", cluster.node_id(b))


def test_moved_and_ask_are_followed(cluster):
    cluster.flush()
    rc = cluster_client(cluster)
    ok = okome.Okome(rc)
    prompt = "resharding"
    key = okome.planner_key(MODEL, prompt, TOOLSET, REPO)
    slot = okome._keys.slot(key)
    src = owner_index(cluster, key)
    dst = (src + 1) % 3
    m = ok.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True)
    ok.plan_set(key, {"v": 1}, token=m.token)
    assert ok.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True).status is PlanStatus.HIT

    # ASK: the slot is migrating and the plan already moved. A lookup that
    # takes no lock declares the plan's key and its failure record
    # (key:failed): with both moved, the source answers ASK, the target
    # serves it after ASKING. (A failure record beside a stored plan changes
    # nothing: a lookup that finds the plan gets it.)
    token = ok.lock(key)
    assert token is not None and ok.unlock(key, token, failed_ms=60_000, message="m")
    assert ok.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True).status is PlanStatus.HIT
    a, b = cluster.nodes[src], cluster.nodes[dst]
    stale = okome.Okome(cluster_client(cluster))  # its slot map says src
    _setslot(cluster, slot, "IMPORTING", cluster.node_id(a), nodes=[b])
    _setslot(cluster, slot, "MIGRATING", cluster.node_id(b), nodes=[a])
    a.client().execute_command(
        "MIGRATE", "127.0.0.1", b.port, "", 0, 5000, "KEYS", key, f"{key}:failed"
    )
    before = cluster.commands()
    hit = ok.plan_lookup(key, nolock=True)
    assert hit.status is PlanStatus.HIT and hit.plan == {"v": 1}
    d = diff(before, cluster.commands())
    assert d[dst] == {"asking": 1, "okome.plan.lookup": 1}

    # TRYAGAIN: a lookup that may take the lock declares the lock's key too,
    # which neither node has: ASK from the source, TRYAGAIN from the target
    # (a call of several keys, some missing), again and again, until the
    # slot has moved: then the source answers MOVED, and the target serves it.
    done = threading.Timer(0.2, _setslot, (cluster, slot, "NODE", cluster.node_id(b)))
    done.start()
    before = cluster.commands()
    hit = ok.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True)
    done.join()
    assert hit.status is PlanStatus.HIT and hit.plan == {"v": 1}
    # (The timer's own CLUSTER calls aside.)
    d = [
        {k: v for k, v in n.items() if not k.startswith(("cluster", "hello"))}
        for n in diff(before, cluster.commands())
    ]
    assert d[dst]["asking"] >= 1 and d[dst]["okome.plan.lookup"] == 1, d
    assert d[src] == {}, d  # redirected, never run there
    assert cluster.nodes[dst].client().info("errorstats")["errorstat_TRYAGAIN"]["count"] >= 1

    # MOVED: the slot now belongs to dst, the client's map still says src.
    hit = stale.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True)
    assert hit.status is PlanStatus.HIT and hit.plan == {"v": 1}
    before = cluster.commands()
    assert stale.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True).status is PlanStatus.HIT
    expected = [{} for _ in range(3)]
    expected[dst] = {"okome.plan.lookup": 1}
    assert diff(before, cluster.commands()) == expected  # the map was updated

    # A blocking call is redirected too.
    w = ok.plan_get(MODEL, "other", TOOLSET, REPO, wait_ms=1000, lock=True)
    assert w.status is PlanStatus.MISS

    _move(cluster, slot, dst, src, [key, f"{key}:failed"])
    assert ok.plan_get(MODEL, prompt, TOOLSET, REPO, lock=True).plan == {"v": 1}


def test_asyncio_cluster(cluster):
    cluster.flush()

    async def main() -> None:
        rc = acluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        ok = okome.aio.Okome(rc)
        prompt = "async cluster"
        key = okome.planner_key(MODEL, prompt, TOOLSET, REPO)
        owner = owner_index(cluster, key)
        planner = okome.aio.Planner(ok)
        first = await planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: {"a": 1})
        assert first.computed
        before = cluster.commands()
        hit = await planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, lambda: {"a": 2})
        assert hit.status is PlanStatus.HIT and hit.plan == {"a": 1}
        expected = [{} for _ in range(3)]
        expected[owner] = {"okome.plan.lookup": 1}
        assert diff(before, cluster.commands()) == expected
        # MOVED, followed.
        slot = okome._keys.slot(key)
        dst = (owner + 1) % 3
        _move(cluster, slot, owner, dst, [key])
        assert (await ok.plan_lookup(key, lock=True)).plan == {"a": 1}
        _move(cluster, slot, dst, owner, [key])
        assert (await ok.plan_lookup(key, lock=True)).plan == {"a": 1}
        assert (await ok.rate("async-agent", 2, 60)).remaining == 1
        await rc.aclose()

    asyncio.run(main())


def test_plan_get_on_another_node_is_moved(cluster):
    """okome declares the keys a call touches (the plan key PLAN.GET derives
    from the prompt included), so a node that does not serve them answers
    MOVED, before anything runs; through a plain redis.Redis that is
    okome.WrongSlotError, also redis-py's MovedError, naming the owner."""
    cluster.flush()
    key = okome.planner_key(MODEL, "x", TOOLSET, REPO)
    owner = cluster.nodes[owner_index(cluster, key)]
    other = cluster.nodes[(owner_index(cluster, key) + 1) % 3]
    try:
        okome.Okome(other.client()).plan_get(MODEL, "x", TOOLSET, REPO, lock=True)
        raise AssertionError("not refused")
    except okome.WrongSlotError as e:
        assert isinstance(e, redis.exceptions.MovedError) and e.code == "MOVED"
        assert (e.slot_id, e.host, e.port) == (okome._keys.slot(key), "127.0.0.1", owner.port)
    assert other.client().dbsize() == 0


def test_crossslot_is_redis_own(cluster):
    """A call whose declared keys span two slots (a lookup charging an agent
    of another slot, sent to one node without okome's split) is refused by
    Redis itself with CROSSSLOT: okome.CrossSlotError, nothing written."""
    cluster.flush()
    key = okome.planner_key(MODEL, "cross", TOOLSET, REPO)
    agent = next(
        f"cross-{i}"
        for i in range(100)
        if okome._keys.slot(f"okome:budget:rate:{{cross-{i}}}") != okome._keys.slot(key)
    )
    owner = cluster.nodes[owner_index(cluster, key)]
    try:
        okome.Okome(owner.client()).plan_lookup(key, agent=agent, limit=5, window=60, lock=True)
        raise AssertionError("not refused")
    except okome.CrossSlotError as e:
        assert e.code == "CROSSSLOT" and isinstance(e, redis.exceptions.ClusterCrossSlotError)
        assert "same slot" in str(e), str(e)  # Redis's text
    assert all(n.client().dbsize() == 0 for n in cluster.nodes)


def test_agent_ledger_across_slots(cluster):
    """With the plan and the agent's ledger in different slots, the client
    stores on the plan's node (reading its expiry in the same round trip) and
    records it on the agent's node with PXAT, as the module's README says."""
    cluster.flush()
    ok = okome.Okome(cluster_client(cluster))
    m = ok.plan_get(MODEL, "ledger", TOOLSET, REPO, lock=True)
    plan_node = owner_index(cluster, m.key)
    agent = next(
        f"ledger-agent-{i}"
        for i in range(100)
        if owner_index(cluster, f"okome:budget:keys:{{ledger-agent-{i}}}") != plan_node
    )
    agent_node = owner_index(cluster, f"okome:budget:keys:{{{agent}}}")
    before = cluster.commands()
    stored = ok.plan_set(m.key, {"v": 1}, token=m.token, agent=agent, write_limit=5)
    assert stored.stored and stored.wbudget_remaining == 4 and stored.lock_released
    expected = [{} for _ in range(3)]
    expected[agent_node] = {"okome.wbudget": 1, "okome.agent.record": 1}
    expected[plan_node] = {"okome.plan.set": 1, "pexpiretime": 1}
    assert diff(before, cluster.commands()) == expected
    expiry = cluster.nodes[plan_node].client().pexpiretime(m.key)
    ledger = cluster.nodes[agent_node].client(decode_responses=True)
    assert ledger.zrange(f"okome:budget:keys:{{{agent}}}", 0, -1, withscores=True) == [
        (m.key, float(expiry))
    ]
    (entry,) = ok.agent_keys(agent).entries
    assert entry.key == m.key and entry.state is okome.LedgerState.ELSEWHERE

    # cache_set with an agent, and the seed's record_agent_key, across slots too.
    tools_key = ok.key("tools", "vX")
    ok.cache_set("tools", "vX", value={"t": 1}, agent=agent)
    other = next(
        f"rag-{i}"
        for i in range(100)
        if owner_index(cluster, f"okome:rag:{{rag-{i}}}:c") != agent_node
    )
    ok.cache_set("rag", other, "c", value={"r": 1})
    okome.configure(ok)
    try:
        okome.budget.record_agent_key(agent, f"okome:rag:{{{other}}}:c")
    finally:
        okome._config.reset()
    keys = {e.key for e in ok.iter_agent_keys(agent)}
    assert keys == {m.key, f"okome:rag:{{{other}}}:c", tools_key}
    purged = ok.agent_purge(agent)
    assert purged.remaining == 0
    # Keys other nodes serve come back with their recorded expiry.
    assert dict(purged.elsewhere)[m.key] == expiry
