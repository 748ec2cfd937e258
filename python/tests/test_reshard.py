"""Resharding under load: the hot slots move back and forth between the
nodes of a 3-primary cluster (by hand, as ``redis-cli --cluster reshard``
does: SETSLOT IMPORTING/MIGRATING, MIGRATE ... KEYS one key at a time,
SETSLOT NODE on every node) while threads (sync) or tasks (asyncio) use them
through okome, following MOVED, ASK and TRYAGAIN:

- an agent's rate window (limit 10 in 600 s) admits exactly 10 calls in all,
  whichever node served each call;
- a plan key has one leader at a time (the planner API in the sync test,
  raw ``PLAN.LOOKUP`` + ``UNLOCK`` in the asyncio one), and a leader's lock
  moves with its slot (its unlock still finds it);
- a value cached (and a plan stored) before the resharding is read back on
  every call, never ``None``, never a miss;
- every migration completes: each MIGRATE answers OK (or NOKEY, for a lock
  released meanwhile), never BUSYKEY (no okome key is created on one node
  while its slot is half moved), and the source holds no key of the slot
  when it gives the slot away.

The servers count the redirections they answer (INFO errorstats): the load
did meet ASK, TRYAGAIN and MOVED.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable

import pytest
import redis
import redis.asyncio.cluster as acluster
from redis.cluster import RedisCluster

import okome
import okome.aio
from okome import PlanStatus
from okome._keys import slot

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"
LIMIT, WINDOW = 10, 600
ROUNDS = 5  # each hot slot goes there and back ROUNDS times
STEP = 0.01  # seconds between two steps of a migration: calls meet every state of it
LOCK_TTL_MS = 9000


def _in_slot(
    target: int, n: int, name: Callable[[int], str], key: Callable[[str], str]
) -> list[str]:
    """The first ``n`` of ``name(1), name(2), ...`` whose ``key`` is in slot ``target``."""
    names = (name(i) for i in itertools.count(1))
    return list(itertools.islice((x for x in names if slot(key(x)) == target), n))


def agent_slot_names() -> tuple[int, list[str]]:
    """Slot A: four agents' rate windows, and the cached values (``rag``
    keys tagged with the first agent's id)."""
    first = "reshard-agent-0"
    a = slot(okome._keys.agent_key("rate", first))
    more = _in_slot(a, 3, "reshard-agent-{}".format, lambda x: okome._keys.agent_key("rate", x))
    return a, [first, *more]


def plan_slot_prompts() -> tuple[int, list[str]]:
    """Slot B: three plans (two led over and over, one stored before)."""
    first = "reshard plan 0"
    b = slot(okome.planner_key(MODEL, first, TOOLSET, REPO))
    more = _in_slot(
        b, 2, "reshard plan {}".format, lambda x: okome.planner_key(MODEL, x, TOOLSET, REPO)
    )
    return b, [first, *more]


class Mover(threading.Thread):
    """Moves each hot slot to another node and back, ``ROUNDS`` times, one
    slot at a time; ``moves`` counts the migrations completed."""

    def __init__(self, cluster: Any, slots: list[int]) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.slots = slots
        self.clients = [n.client() for n in cluster.nodes]
        self.ids = [cluster.node_id(n) for n in cluster.nodes]
        self.moves = 0
        self.migrated = 0  # MIGRATE calls answered OK
        self.error: BaseException | None = None
        self.done = threading.Event()

    def owner(self, s: int) -> int:
        for lo, hi, primary, *_ in self.clients[0].execute_command("CLUSTER", "SLOTS"):
            if lo <= s <= hi:
                return [n.port for n in self.cluster.nodes].index(int(primary[1]))
        raise AssertionError(f"slot {s} not served")

    def move(self, s: int, src: int, dst: int) -> None:
        self.begin(s, src, dst)
        time.sleep(STEP)  # every key still on the source
        while keys := self.clients[src].execute_command("CLUSTER", "GETKEYSINSLOT", s, 1):
            self.migrate(src, dst, keys)
            time.sleep(STEP)  # the slot's keys split between the two nodes
        self.finish(s, src, dst)

    def begin(self, s: int, src: int, dst: int) -> None:
        self.clients[dst].execute_command("CLUSTER", "SETSLOT", s, "IMPORTING", self.ids[src])
        self.clients[src].execute_command("CLUSTER", "SETSLOT", s, "MIGRATING", self.ids[dst])

    def migrate(self, src: int, dst: int, keys: list[bytes]) -> None:
        # OK, or NOKEY: the key was deleted meanwhile (a lock released on the
        # source, which had all the keys of that UNLOCK). BUSYKEY (the target
        # has the key already) raises.
        port = self.cluster.nodes[dst].port
        reply = self.clients[src].execute_command(
            "MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys
        )
        assert reply in (b"OK", b"NOKEY"), f"MIGRATE {keys} answered {reply!r}"
        self.migrated += reply == b"OK"

    def finish(self, s: int, src: int, dst: int) -> None:
        """SETSLOT NODE as redis-cli: on the target first, then the source
        (which refuses if it still holds a key of the slot), then the others."""
        others = [i for i in range(len(self.clients)) if i not in (src, dst)]
        for i in (dst, src, *others):
            self.clients[i].execute_command("CLUSTER", "SETSLOT", s, "NODE", self.ids[dst])
        deadline = time.monotonic() + 10
        while not (
            all(self._owner_port(c, s) == self.cluster.nodes[dst].port for c in self.clients)
            and self.cluster.settled()  # the new owner's epoch known to all
        ):
            assert time.monotonic() < deadline, "the nodes never agreed on the slot's owner"
            time.sleep(0.005)

    @staticmethod
    def _owner_port(c: redis.Redis, s: int) -> int | None:
        for lo, hi, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if lo <= s <= hi:
                return int(primary[1])
        return None

    def run(self) -> None:
        try:
            home = {s: self.owner(s) for s in self.slots}
            for _ in range(ROUNDS):
                for s in self.slots:
                    away = (home[s] + 1) % len(self.clients)
                    self.move(s, home[s], away)
                    self.moves += 1
                    time.sleep(STEP)  # settled: MOVED for stale slot maps
                    self.move(s, away, home[s])
                    self.moves += 1
                    time.sleep(STEP)
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.done.set()


def redirections(cluster: Any) -> Counter[str]:
    """Error replies the nodes answered, by code (INFO errorstats)."""
    total: Counter[str] = Counter()
    for n in cluster.nodes:
        for k, v in n.client().info("errorstats").items():
            total[k.removeprefix("errorstat_")] += int(v["count"])
    return total


class Load:
    """What the workers saw, checked by :meth:`check`."""

    def __init__(self, agents: list[str], mover: Mover) -> None:
        self.agents = agents
        self.mover = mover
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.admitted: Counter[str] = Counter()
        self.leading: Counter[str] = Counter()
        self.leaders: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self.reads = 0
        self.errors: list[BaseException] = []

    def agent(self) -> str:
        """The agent charged now: a fresh one every few migrations, so that
        every agent's 10 admissions happen while slots are moving."""
        per = max(1, 2 * ROUNDS * len(self.mover.slots) // len(self.agents))
        return self.agents[min(self.mover.moves // per, len(self.agents) - 1)]

    def charged(self, agent: str, allowed: bool) -> None:
        with self.lock:
            self.calls[agent] += 1
            self.admitted[agent] += allowed

    def lead(self, key: str) -> None:
        with self.lock:
            if self.leading[key]:
                self.overlaps.append(key)
            self.leading[key] += 1
            self.leaders[key] += 1

    def unlead(self, key: str) -> None:
        with self.lock:
            self.leading[key] -= 1

    def check(self, cluster: Any, before: Counter[str]) -> None:
        m = self.mover
        assert m.error is None, f"a migration failed: {m.error!r}"
        assert m.moves == 2 * ROUNDS * len(m.slots) and m.migrated >= m.moves
        assert not self.errors, f"{len(self.errors)} calls failed, first: {self.errors[0]!r}"
        for agent in self.agents:
            assert self.calls[agent] > LIMIT, (agent, self.calls[agent])
            assert self.admitted[agent] == LIMIT, (agent, self.admitted[agent])
        assert not self.overlaps, f"two leaders at once for {self.overlaps}"
        assert all(n >= 2 for n in self.leaders.values()) and len(self.leaders) == 2, self.leaders
        assert self.reads > 0
        seen = redirections(cluster) - before
        assert seen["ASK"] and seen["TRYAGAIN"] and seen["MOVED"], seen


class Handover(Exception):
    """A leader that gives the lock back on purpose, so that the next caller leads."""


def prepare(cluster: Any, ok: okome.Okome) -> tuple[list[int], list[str], list[str], str]:
    """The hot slots and their keys; the values read during the resharding
    are stored now."""
    cluster.flush()
    a, agents = agent_slot_names()
    b, prompts = plan_slot_prompts()
    assert a != b
    for i in range(3):
        ok.cache_set("rag", agents[0], f"chunk-{i}", value={"i": i})
    stored = okome.planner_key(MODEL, prompts[2], TOOLSET, REPO)
    miss = ok.plan_get(MODEL, prompts[2], TOOLSET, REPO, lock=True)
    assert ok.plan_set(stored, {"stored": True}, token=miss.token).stored
    return [a, b], agents, prompts[:2], stored


def test_sync_load_during_resharding(cluster, caplog):
    rc = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    ok = okome.Okome(rc)
    slots, agents, leading, stored = prepare(cluster, ok)
    # failure_ttl_ms=0: a Handover gives the lock to the next caller (not shared as FAILED).
    planner = okome.Planner(ok, wait_ms=200, lock_ttl_ms=LOCK_TTL_MS, failure_ttl_ms=0)
    mover = Mover(cluster, slots)
    load = Load(agents, mover)
    before = redirections(cluster)
    # The planner logs a lock it could not release or lost: there must be none.
    caplog.set_level(logging.WARNING, logger="okome")
    unlock = ok.unlock

    def checked_unlock(key: str, token: str) -> bool:
        released = unlock(key, token)
        if not released:  # the lock moved with its slot: still ours
            load.errors.append(AssertionError(f"the lock of {key} was lost"))
        return released

    ok.unlock = checked_unlock  # type: ignore[method-assign]

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                while not mover.done.is_set():
                    fn()
            except BaseException as e:
                load.errors.append(e)

        return run

    def charge() -> None:
        agent = load.agent()
        load.charged(agent, ok.rate(agent, LIMIT, WINDOW).allowed)
        time.sleep(0.002)

    def lead(prompt: str) -> Any:
        key = okome.planner_key(MODEL, prompt, TOOLSET, REPO)

        def compute() -> object:
            load.lead(key)
            time.sleep(0.01)
            load.unlead(key)
            raise Handover

        def once() -> None:
            try:
                planner.get_or_compute(MODEL, prompt, TOOLSET, REPO, compute)
                raise AssertionError("a plan was stored")
            except (Handover, okome.PlanLocked):
                pass

        return once

    def read() -> None:
        for i in range(3):
            entry = ok.cache_get("rag", agents[0], f"chunk-{i}")
            assert entry is not None and entry.value == {"i": i}, (i, entry)
        hit = ok.plan_lookup(stored, nolock=True)
        assert hit.status is PlanStatus.HIT and hit.plan == {"stored": True}, hit
        load.reads += 1

    workers = [guarded(charge), guarded(charge), guarded(read)]
    workers += [guarded(lead(p)) for p in leading for _ in range(2)]
    threads = [threading.Thread(target=w, daemon=True) for w in workers]
    started = time.monotonic()
    mover.start()
    for t in threads:
        t.start()
    mover.join(45)
    for t in threads:
        t.join(15)
    assert mover.done.is_set() and not any(t.is_alive() for t in threads)
    assert time.monotonic() - started < 40
    load.check(cluster, before)
    assert not [r for r in caplog.records if r.name == "okome"], caplog.text
    rc.close()


def test_asyncio_load_during_resharding(cluster):
    async def main() -> None:
        rc = acluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        ok = okome.aio.Okome(rc)
        # prepare() is sync: store through a sync client, read through the async one.
        sync_rc = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        slots, agents, leading, stored = prepare(cluster, okome.Okome(sync_rc))
        sync_rc.close()
        mover = Mover(cluster, slots)
        load = Load(agents, mover)
        before = redirections(cluster)

        async def guarded(fn: Any) -> None:
            try:
                while not mover.done.is_set():
                    await fn()
            except BaseException as e:
                load.errors.append(e)

        async def charge() -> None:
            agent = load.agent()
            load.charged(agent, (await ok.rate(agent, LIMIT, WINDOW)).allowed)
            await asyncio.sleep(0.002)

        def lead(prompt: str) -> Any:
            key = okome.planner_key(MODEL, prompt, TOOLSET, REPO)

            async def once() -> None:
                r = await ok.plan_lookup(key, wait_ms=200, lock_ttl_ms=LOCK_TTL_MS, lock=True)
                if r.status is PlanStatus.LOCKED:
                    return
                assert r.status is PlanStatus.MISS and r.token is not None, r
                load.lead(key)
                await asyncio.sleep(0.01)
                load.unlead(key)
                # The lock moved with its slot, if it did: still ours.
                assert await ok.unlock(key, r.token), f"the lock of {key} was lost"

            return once

        async def read() -> None:
            for i in range(3):
                entry = await ok.cache_get("rag", agents[0], f"chunk-{i}")
                assert entry is not None and entry.value == {"i": i}, (i, entry)
            hit = await ok.plan_lookup(stored, nolock=True)
            assert hit.status is PlanStatus.HIT and hit.plan == {"stored": True}, hit
            load.reads += 1

        tasks = [guarded(charge), guarded(charge), guarded(read)]
        tasks += [guarded(lead(p)) for p in leading for _ in range(2)]
        started = time.monotonic()
        mover.start()
        await asyncio.wait_for(asyncio.gather(*tasks), 45)
        mover.join(15)
        assert mover.done.is_set()
        assert time.monotonic() - started < 40
        load.check(cluster, before)
        await rc.aclose()

    asyncio.run(main())


def test_tryagain_outlasting_the_budget(cluster):
    """A slot left half moved: a lookup that may take the lock (declaring the
    plan's key and its lock's) gets ASK, then TRYAGAIN, over and over; once
    okome's redirections are spent it raises okome.SlotMigratingError (also
    redis-py's TryAgainError), having written nothing; after the migration
    ends, the same call is served."""
    cluster.flush()
    rc = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    ok = okome.Okome(rc)
    key = okome.planner_key(MODEL, "half moved", TOOLSET, REPO)
    miss = ok.plan_get(MODEL, "half moved", TOOLSET, REPO, lock=True)
    assert ok.plan_set(key, {"v": 1}, token=miss.token).stored
    s = slot(key)
    mover = Mover(cluster, [s])
    src = mover.owner(s)
    dst = (src + 1) % 3
    mover.begin(s, src, dst)
    try:
        mover.migrate(src, dst, [key.encode()])

        def check(e: okome.SlotMigratingError, elapsed: float) -> None:
            assert isinstance(e, redis.exceptions.TryAgainError) and e.code == "TRYAGAIN"
            assert f"slot {s} is being migrated" in str(e), str(e)
            assert 0.5 < elapsed < 15, elapsed  # redirect_pause's growing pauses

        started = time.monotonic()
        with pytest.raises(okome.SlotMigratingError) as sync_error:
            ok.plan_get(MODEL, "half moved", TOOLSET, REPO, lock=True)
        check(sync_error.value, time.monotonic() - started)

        async def aio() -> None:
            arc = acluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
            started = time.monotonic()
            with pytest.raises(okome.SlotMigratingError) as aio_error:
                await okome.aio.Okome(arc).plan_get(MODEL, "half moved", TOOLSET, REPO, lock=True)
            check(aio_error.value, time.monotonic() - started)
            await arc.aclose()

        asyncio.run(aio())
        # Nothing written: the plan on the target, no lock anywhere.
        keys = [c.execute_command("CLUSTER", "GETKEYSINSLOT", s, 10) for c in mover.clients]
        assert keys == [[key.encode()] if i == dst else [] for i in range(3)], keys
    finally:
        mover.finish(s, src, dst)
    hit = ok.plan_get(MODEL, "half moved", TOOLSET, REPO, lock=True)
    assert hit.status is PlanStatus.HIT and hit.plan == {"v": 1}
    mover.move(s, dst, src)
    rc.close()


def test_clusterdown_is_waited_out(cluster):
    """A slot no node serves for a moment (as during a failover): the nodes
    answer CLUSTERDOWN; okome pauses, re-reads the slot map and sends the
    call again, so a call made during the outage is served once it ends."""
    cluster.flush()
    agent = "clusterdown-agent"
    s = slot(okome._keys.agent_key("rate", agent))
    mover = Mover(cluster, [s])
    owner = mover.owner(s)
    rc = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    ok = okome.Okome(rc)
    assert ok.rate(agent, 5, 60).remaining == 4  # connected before the outage
    replies: list[Any] = []
    ready, outage = threading.Event(), threading.Event()

    def aio_call() -> None:
        async def main() -> None:
            arc = acluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
            aok = okome.aio.Okome(arc)
            assert (await aok.rate(agent, 5, 60)).remaining == 3
            ready.set()
            await asyncio.to_thread(outage.wait, 10)
            replies.append(await aok.rate(agent, 5, 60))
            await arc.aclose()

        asyncio.run(main())

    calls = [
        threading.Thread(target=aio_call),
        threading.Thread(target=lambda: replies.append(ok.rate(agent, 5, 60))),
    ]
    calls[0].start()
    assert ready.wait(10)
    before = redirections(cluster)["CLUSTERDOWN"]
    for c in mover.clients:
        c.execute_command("CLUSTER", "DELSLOTS", s)
    try:
        outage.set()
        calls[1].start()
        deadline = time.monotonic() + 5
        while redirections(cluster)["CLUSTERDOWN"] < before + 2:  # both calls refused
            assert time.monotonic() < deadline, "no CLUSTERDOWN seen"
            time.sleep(0.002)
    finally:
        outage.set()
        for i, c in enumerate(mover.clients):
            if i == owner:
                c.execute_command("CLUSTER", "ADDSLOTS", s)
            else:
                c.execute_command("CLUSTER", "SETSLOT", s, "NODE", mover.ids[owner])
        deadline = time.monotonic() + 10
        while not all(
            b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in mover.clients
        ):
            assert time.monotonic() < deadline, "the cluster never came back"
            time.sleep(0.01)
    for t in calls:
        t.join(10)
    assert sorted(r.remaining for r in replies) == [1, 2], replies
    assert all(r.allowed for r in replies)
    rc.close()
