"""The planner hit's fast paths (issue 23) give what the general paths give:
the reply parsed without the dataclass's constructor, the lookup memoised
and packed by okome, the pool gate entered without queueing; and
benchmarks/overhead.py runs."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis
from redis import exceptions as rex

import okome
import okome.aio
from okome import _async, _commands, _gate, _sync
from okome.replies import PlanReply, PlanStatus, _parse_plan, parse_plan

KEY = b"okome:planner:m:{" + hashlib.sha256(b"p").hexdigest().encode() + b"}:v1:r"
PLAN = {"steps": ["a", "b"], "n": 1, "\u00e9": [1.5, None]}
RAW = json.dumps(PLAN, ensure_ascii=False).encode()


def fields(reply: PlanReply) -> dict[str, object]:
    return {f.name: getattr(reply, f.name) for f in dataclasses.fields(PlanReply)}


@pytest.mark.parametrize(
    "reply",
    [
        [b"HIT", KEY, RAW, 599_000, None, None],
        [b"HIT", KEY, RAW, 599_000, None, 41],
        [b"SHARED", KEY, RAW, 0, None, 7],
        [b"REFRESH", KEY, RAW, 1200, None, None],
        [b"HIT", KEY, b'"\xff"', 5, None, None],  # not UTF-8: surrogate-escaped, as text()
    ],
)
def test_parse_plan_fast_path_is_the_general_one(reply):
    fast, slow = parse_plan(reply), _parse_plan(reply)
    assert fields(fast) == fields(slow)
    assert fast == slow and repr(fast) == repr(slow) and hash(fast.status) == hash(slow.status)
    assert vars(fast).keys() == {f.name for f in dataclasses.fields(PlanReply)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.status = PlanStatus.MISS  # type: ignore[misc]


@pytest.mark.parametrize(
    "reply",
    [
        [b"MISS", KEY, None, 9000, b"tok", None],
        [b"REFRESH", KEY, RAW, 1200, b"tok", 3],
        [b"LOCKED", KEY, None, -2, None, None],
        [b"FAILED", KEY, b"boom", 400, None, None],
        ["HIT", KEY.decode(), RAW.decode(), 599_000, None, None],  # decode_responses=True
        (b"HIT", KEY, RAW, 599_000, None, None),
    ],
)
def test_other_replies_take_the_general_path(reply):
    assert fields(parse_plan(reply)) == fields(_parse_plan(reply))


def lookup(**kw):
    args = dict(agent=None, limit=None, window=None, lock_ttl_ms=None, nolock=False)
    args.update(wait_ms=10_000, refresh_ahead_ms=60_000)
    args.update(kw)
    model, prompt = args.pop("model", "m"), args.pop("prompt", "a prompt")
    return _commands.plan_get(False, model, prompt, "v1", "r", **args)


def memo_clear():
    _commands._LOOKUPS.clear()
    _commands._SEEN.clear()


def test_a_memoised_lookup_is_the_command_built():
    memo_clear()
    first = lookup(agent="ag", limit=5, window=60, lock_ttl_ms=3000)
    one = lookup(agent="ag", limit=5, window=60, lock_ttl_ms=3000)  # kept from its second time
    assert one is not first and first.call.args == one.call.args
    assert lookup(agent="ag", limit=5, window=60, lock_ttl_ms=3000) is one
    built = _commands.plan_get_call(
        "m", "a prompt", "v1", "r", "ag", 5, 60, 3000, False, 10_000, 60_000
    )
    assert one.call.args == built.args and one.call.wait_at == built.wait_at
    assert one.call.args[one.call.wait_at or 0] == "WAIT"
    # Equal but not the same command: never served from the memo.
    assert lookup(agent="ag", limit=True, window=60, lock_ttl_ms=3000).call.args[9] is True
    assert lookup(agent="ag", limit=5.0, window=60, lock_ttl_ms=3000).call.args[9] == 5.0

    class Text(str):
        pass

    lookup(), lookup()
    assert lookup(prompt=Text("a prompt")) is not lookup()
    lookup(nolock=True), lookup(nolock=True)
    assert lookup(nolock=True) is lookup(nolock=1)  # only its truth counts
    # Unhashable or long: built each time.
    assert lookup(model=bytearray(b"m")) is not lookup(model=bytearray(b"m"))
    long = "x" * (_commands.MEMO_PROMPT_MAX + 1)
    assert lookup(prompt=long) is not lookup(prompt=long) is not lookup(prompt=long)
    with pytest.raises(okome.ArgumentError):
        lookup(prompt="")
    with pytest.raises(ValueError, match="exclude"):
        lookup(nolock=True, lock_ttl_ms=5)


def test_the_memo_is_bounded_and_keeps_what_is_asked_again():
    memo_clear()
    for i in range(3 * _commands.MEMO_SIZE):
        lookup(prompt=f"once {i}")  # asked once: never kept
    assert not _commands._LOOKUPS and 0 < len(_commands._SEEN) <= _commands.MEMO_SIZE
    for i in range(_commands.MEMO_SIZE + 10):
        lookup(prompt=f"p{i}")
        lookup(prompt=f"p{i}")
    assert 0 < len(_commands._LOOKUPS) <= _commands.MEMO_SIZE


def test_the_lookup_is_the_one_built_before_memoisation():
    """plan_get_call sends what the generic builders sent before issue 23."""
    call = _commands.plan_get_call("m", "p", "v", "r", "a", 1, 2, None, True, 5, 6)
    digest = hashlib.sha256(b"p").hexdigest()
    assert call.args == (
        "OKOME.PLAN.GET", "m", digest, "v", "r", "HASHED",
        "AGENT", "a", "LIMIT", 1, "WINDOW", 2, "NOLOCK", "WAIT", 5, "REFRESHAHEAD", 6,
    )  # fmt: skip
    assert call.wait_ms == 5 and call.args[call.wait_at or 0] == "WAIT"
    nowait = _commands.plan_get_call("m", b"p", "v", "r", None, None, None, 7, False, 0, None)
    assert nowait.wait_ms is None and nowait.args == (
        "OKOME.PLAN.GET", "m", digest, "v", "r", "HASHED", "LOCKTTL", 7,
    )  # fmt: skip


def test_waiting_drops_the_packed_command():
    call = _commands.plan_get_call("m", "p", "v", "r", None, None, None, None, False, 500, 9, {})
    call.packed[("x",)] = [b"old"]  # type: ignore[index]
    shorter = call.waiting(200)
    assert shorter.packed is None and shorter.args[-3] == 200
    assert call.waiting(None).packed is None


@pytest.mark.parametrize("connection", [redis.Connection, aredis.Connection])
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_okome_packs_as_redis_py(connection, encoding):
    conn = connection(encoding=encoding)
    for args in [
        ("OKOME.PLAN.GET", "m\u00e9", "h", "v", "r", "HASHED", "WAIT", 10_000),
        ("OKOME.PLAN.GET", b"\x00\xff", "", -1, 0, 2**70, "x" * 7000),
    ]:
        ours = _sync.resp(args, conn.encoder.encoding, conn.encoder.encoding_errors)
        assert b"".join(ours) == b"".join(conn.pack_command(*args))
    call = _commands.plan_get_call("m", "p", "v", "r", None, None, None, None, False, 5, None, {})
    first = _sync.packed(conn, call)
    assert _sync.packed(conn, call) is first and b"".join(first) == b"".join(
        conn.pack_command(*call.args)
    )
    assert type(conn).pack_command in _sync._STOCK_PACKERS


def test_a_connection_that_packs_for_itself_is_asked():
    class Traced(redis.Connection):
        def pack_command(self, *args):
            return [b"traced"]

    call = _commands.plan_get_call("m", "p", "v", "r", None, None, None, None, False, 5, None, {})
    assert _sync.packed(Traced(), call) == [b"traced"]


def test_sync_gate_queues_only_when_full():
    gate = _gate.Gate(5)  # 4 may wait, 1 kept for calls that do not
    assert gate.waiters == 4
    call = _commands.plan_get_call("m", "p", "v", "r", None, None, None, None, False, 300, None)
    entered = [gate.enter(call) for _ in range(4)]
    assert all(sent is call and waiting for sent, waiting in entered)
    started = time.monotonic()
    sent, waiting = gate.enter(call)  # no waiting slot frees: sent without WAIT
    assert not waiting and sent.wait_ms is None and "WAIT" not in sent.args
    assert time.monotonic() - started >= 0.25
    # Every slot taken: the next call queues until one is given back.
    got = []
    t = threading.Thread(target=lambda: got.append(gate.enter(call)))
    t.start()
    time.sleep(0.1)
    assert not got
    gate.leave(True, True)
    t.join(5)
    sent, waiting = got[0]
    assert waiting and sent.wait_ms is not None and 0 < sent.wait_ms <= 300


def test_async_gate_queues_only_when_full():
    async def main():
        gate = _gate.AsyncGate(5)
        call = _commands.plan_get_call("m", "p", "v", "r", None, None, None, None, False, 300, None)
        assert [gate.enter_now(call) for _ in range(4)] == [True] * 4
        assert gate.enter_now(call) is None  # no waiting slot
        plain = dataclasses.replace(call, args=("PING",), wait_ms=None, wait_at=None)
        assert gate.enter_now(plain) is False  # the last slot, for a call that does not wait
        assert gate.enter_now(plain) is None
        queued = asyncio.ensure_future(gate.enter(call))
        cancelled = asyncio.ensure_future(gate.enter(plain))
        await asyncio.sleep(0.05)
        assert not queued.done()
        cancelled.cancel()
        gate.leave(True, True)  # a waiting slot and a slot: handed to `queued`
        sent, waiting = await asyncio.wait_for(queued, 1)
        assert waiting and 0 < (sent.wait_ms or 0) <= 300
        assert cancelled.cancelled()
        gate.leave(True, False)
        assert gate.enter_now(plain) is False  # the cancelled one did not keep it

    asyncio.run(main())


def test_async_slots_hand_over_in_order_and_never_leak():
    async def main():
        slots = _gate._Slots(1)
        assert slots.take_now() and not slots.take_now()
        order = []

        async def taker(name, timeout=None):
            if await slots.take(timeout):
                order.append(name)
                return True
            return False

        a = asyncio.ensure_future(taker("a"))
        b = asyncio.ensure_future(taker("b"))
        late = asyncio.ensure_future(taker("late", 0.05))
        await asyncio.sleep(0.1)
        assert late.done() and late.result() is False
        slots.give()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert order == ["a"]
        b.cancel()
        await asyncio.sleep(0)
        slots.give()  # b gave up: nobody waits, the slot is free again
        assert slots.free == 1 and slots.take_now()
        await a

    asyncio.run(main())


class _Conn:
    socket_timeout = None

    def __init__(self, reply):
        self.reply = reply
        self.disconnected = False
        self.encoder = redis.Connection().encoder

    def pack_command(self, *args):
        return [b"x"]

    async def send_packed_command(self, data):
        pass

    async def read_response(self, timeout=None):
        return self.reply

    async def disconnect(self):
        self.disconnected = True


class _Pool:
    max_connections = 2**31

    def __init__(self, conn):
        self.conn = conn
        self.released = []

    async def get_connection(self):
        return self.conn

    async def release(self, conn):
        self.released.append(conn)


class _Client:
    connection = None

    def __init__(self, pool):
        self.connection_pool = pool


def test_an_async_wait_read_that_times_out_closes_its_connection():
    """redis-py's asyncio read_response answers None to a read past its
    timeout: the reply may still come, so the connection must not be reused."""
    call = _commands.plan_get_call("m", "p", "v", "r", None, None, None, None, False, 5, None)

    async def main(reply):
        conn = _Conn(reply)
        pool = _Pool(conn)
        try:
            return await _async.call_on(_Client(pool), call)  # type: ignore[arg-type]
        finally:
            assert pool.released == [conn]
            assert conn.disconnected is (reply is None)

    with pytest.raises(rex.TimeoutError):
        asyncio.run(main(None))
    assert asyncio.run(main([b"HIT"])) == [b"HIT"]


def test_planner_hits_through_the_fast_paths(server):
    for client in (
        server.client(),
        redis.Redis(host="127.0.0.1", port=server.port, max_connections=3),
    ):
        planner = okome.Planner(client)
        prompt = f"fast {client.connection_pool.max_connections}"
        first = planner.get_or_compute("m", prompt, "v", "r", lambda: PLAN)
        hits = [planner.get_or_compute("m", prompt, "v", "r", lambda: PLAN) for _ in range(3)]
        assert first.computed and all(h.status is PlanStatus.HIT and h.plan == PLAN for h in hits)
        assert hits[0].headers == hits[2].headers and hits[0].key == first.key

    async def main():
        for kw in ({}, {"max_connections": 3}):
            planner = okome.aio.Planner(aredis.Redis(host="127.0.0.1", port=server.port, **kw))
            prompt = f"fast async {kw}"
            first = await planner.get_or_compute("m", prompt, "v", "r", lambda: PLAN)
            hits = [
                await planner.get_or_compute("m", prompt, "v", "r", lambda: PLAN) for _ in range(3)
            ]
            assert first.computed and all(h.status is PlanStatus.HIT for h in hits)
            assert all(h.plan == PLAN for h in hits)
            await planner.okome.client.aclose()

    asyncio.run(main())


def test_overhead_benchmark_runs(tmp_path):
    from conftest import MODULE, REDIS_SERVER

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "overhead.py"
    env = {**os.environ, "OKOME_MODULE": MODULE, "REDIS_SERVER": REDIS_SERVER}
    run = subprocess.run(
        [sys.executable, str(script), "-n", "20", "--warmup", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for flow in (
        "bare redis-py",
        "Okome.plan_get",
        "Planner.get_or_compute",
        "Planner, many prompts",
    ):
        assert run.stdout.count(f"| {flow} |") == 2, run.stdout
