"""okome.Okome.take / settle and their okome.aio twins: OKOME.TAKE and
OKOME.SETTLE as typed replies, all or nothing, reservations settled (refund,
excess, retry), errors as okome's exceptions, and a take across cluster
slots composed from per-slot reservations."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
from redis.cluster import RedisCluster

import okome
import okome.aio
from okome import Limit, LimitState, SettleReply, TakeReply
from okome._commands import COMPOSE_RESERVE_MS


@pytest.fixture(params=[{}, {"decode_responses": True}], ids=["bytes", "decoded"])
def ok(request, server) -> okome.Okome:
    return okome.Okome(server.client(**request.param))


def peek(ok: okome.Okome, lim: Limit) -> int:
    """What ``lim``'s window still admits (``OKOME.RATE ... COST 0``)."""
    return ok.rate(lim.subject, lim.limit, lim.window_s, cost=0, name=lim.name).remaining


def test_replies_are_typed(ok, server):
    rpm, tpm = Limit("gpt-4o", "rpm", 500, 60, 1), Limit("gpt-4o", "tpm", 30000, 60, 25000)
    reply = ok.take([rpm, tpm])
    assert reply == TakeReply(
        allowed=True,
        retry_after_ms=0,
        reservation=None,
        limits=(LimitState(499, 0, 60000), LimitState(5000, 0, 60000)),
    )
    assert reply.retry_after == 0 and reply.limits[0].retry_after == 0
    assert sorted(server.client(decode_responses=True).keys("*")) == [
        "okome:budget:rate:{gpt-4o}:rpm",
        "okome:budget:rate:{gpt-4o}:tpm",
    ]
    assert okome._keys.rate_key("gpt-4o", "tpm") == "okome:budget:rate:{gpt-4o}:tpm"
    assert okome._keys.rate_key("a b", "default") == ok.key("rate", "a b")
    # A plain tuple is a Limit too; the name "default" is OKOME.RATE's window.
    dflt = ok.take([("gpt-4o", "default", 10, 60, 3)])
    assert dflt.allowed and ok.rate("gpt-4o", 10, 60, cost=0).remaining == 7


def test_all_or_nothing(ok):
    rpm, tpm = Limit("m", "rpm", 500, 60, 1), Limit("m", "tpm", 30000, 60, 25000)
    assert ok.take([rpm, tpm]).allowed
    refused = ok.take([rpm, Limit("m", "tpm", 30000, 60, 8000)])
    assert not refused.allowed and refused.reservation is None
    assert 59000 < refused.retry_after_ms <= 60000 and refused.retry_after == 60
    assert refused.limits[0] == LimitState(499, 0, refused.limits[0].reset_after_ms)
    assert refused.limits[1].remaining == 5000 and refused.limits[1].retry_after == 60
    # Neither window was charged.
    assert peek(ok, rpm) == 499 and peek(ok, tpm) == 5000


def test_reserve_then_settle_refund_and_excess(ok, server):
    tpm = Limit("tenant-3", "tpm", 1000, 60, 800)
    reply = ok.take([tpm], reserve_ms=60000)
    assert reply.allowed and reply.limits == (LimitState(200, 0, 60000),)
    rid = reply.reservation
    assert isinstance(rid, str) and rid.startswith("{tenant-3}:") and len(rid) == 11 + 32
    assert 0 < server.client().pttl(f"okome:budget:resv:{rid}") <= 60000
    # Less than reserved: the difference is given back now.
    settled = ok.settle(rid, [300])
    assert isinstance(settled, SettleReply) and settled.settled
    assert settled.limits[0].remaining == 700 and peek(ok, tpm) == 700
    # More than reserved: the excess is charged, beyond the limit if need be.
    big = ok.take([Limit("tenant-3", "tpm", 1000, 60, 600)], reserve_ms=1000)
    assert big.allowed and big.limits[0].remaining == 100
    over = ok.settle(big.reservation, [900])
    assert over.limits[0].remaining == 0
    later = ok.take([Limit("tenant-3", "tpm", 1000, 60, 1)])
    assert not later.allowed and later.retry_after_ms > 0
    # All zeros cancel.
    rpm = Limit("tenant-4", "rpm", 10, 60, 4)
    r = ok.take([rpm], reserve_ms=5000)
    assert peek(ok, rpm) == 6
    assert ok.settle(r.reservation, [0]).limits[0].remaining == 10
    assert peek(ok, rpm) == 10


def test_settle_again_replies_the_same(ok):
    lims = [Limit("agent-7", "rpm", 10, 60, 1), Limit("agent-7", "tpm", 1000, 60, 500)]
    rid = ok.take(lims, reserve_ms=30000).reservation
    first = ok.settle(rid, [1, 120])
    assert ok.settle(rid, [1, 120]) == first
    assert ok.settle(rid.encode(), (1, 120)) == first
    with pytest.raises(okome.ReservationError, match="already settled with other costs"):
        ok.settle(rid, [1, 121])
    assert peek(ok, lims[1]) == 880


def test_errors(ok, server):
    with pytest.raises(okome.ReservationError, match="unknown or expired reservation"):
        ok.settle("{x}:0123456789abcdef0123456789abcdef", [1])
    with pytest.raises(okome.KeyFormatError, match="is not an okome reservation id"):
        ok.settle("nope", [1])
    with pytest.raises(okome.ArgumentError, match="is not an okome reservation id"):
        ok.settle("{a}:x;{b}:y@0", [1, 2])
    with pytest.raises(okome.OutOfRangeError, match="cost 6 is out of range"):
        ok.take([Limit("a", "rpm", 5, 60, 6)])
    with pytest.raises(okome.OutOfRangeError, match="ttl_ms 10 is out of range"):
        ok.take([Limit("a", "rpm", 5, 60, 1)], reserve_ms=10)
    with pytest.raises(okome.ArgumentError, match="same window"):
        ok.take([Limit("a", "rpm", 5, 60, 1), Limit("a", "rpm", 5, 60, 1)])
    with pytest.raises(okome.ArgumentError, match="NAME lock is reserved"):
        ok.take([Limit("a", "lock", 5, 60, 1)])
    with pytest.raises(okome.ArgumentError, match="wrong number of arguments"):
        ok.take([])
    rid = ok.take([Limit("a", "rpm", 5, 60, 1)], reserve_ms=5000).reservation
    with pytest.raises(okome.ArgumentError, match="has 1 limits, got 2 costs"):
        ok.settle(rid, [1, 2])
    server.client().rpush("okome:budget:rate:{b}:rpm", "x")
    with pytest.raises(okome.WrongTypeError):
        ok.take([Limit("b", "rpm", 5, 60, 1)])
    assert peek(ok, Limit("a", "rpm", 5, 60)) == 4


def test_asyncio_twin(server):
    async def main() -> None:
        ok = okome.aio.Okome(aredis.Redis(port=server.port))
        lims = [Limit("m", "rpm", 2, 60, 1), Limit("m", "tpm", 100, 60, 60)]
        reply = await ok.take(lims, reserve_ms=10000)
        assert reply.allowed and reply.limits[1] == LimitState(40, 0, 60000)
        settled = await ok.settle(reply.reservation, [1, 10])
        assert settled.limits[1].remaining == 90
        assert await ok.settle(reply.reservation, [1, 10]) == settled
        refused = await ok.take([lims[0], Limit("m", "tpm", 100, 60, 95)])
        assert not refused.allowed and refused.retry_after == 60
        with pytest.raises(okome.ReservationError):
            await ok.settle("{m}:0123456789abcdef0123456789abcdef", [0, 0])
        await ok.client.aclose()

    asyncio.run(main())


# -- Redis Cluster -------------------------------------------------------------


def subjects_on_two_nodes(cluster, prefix: str) -> tuple[str, str]:
    """Two subjects whose windows are served by two different primaries."""
    first = f"{prefix}-0"
    node = cluster.owner(okome._keys.rate_key(first))
    for i in itertools.count(1):
        other = f"{prefix}-{i}"
        if cluster.owner(okome._keys.rate_key(other)) is not node:
            return first, other
    raise AssertionError


def cluster_ok(cluster) -> okome.Okome:
    return okome.Okome(RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port))


def take_calls(cluster) -> list[int]:
    return [c.get("okome.take", 0) for c in cluster.commands()]


def test_cluster_one_slot_is_one_take(cluster):
    cluster.flush()
    ok = cluster_ok(cluster)
    model = "gpt-4o"
    before = take_calls(cluster)
    reply = ok.take([Limit(model, "rpm", 10, 60, 1), Limit(model, "tpm", 100, 60, 30)])
    assert reply.allowed and reply.limits[1].remaining == 70
    after = take_calls(cluster)
    owner = cluster.nodes.index(cluster.owner(okome._keys.rate_key(model)))
    assert [a - b for a, b in zip(after, before)] == [int(i == owner) for i in range(3)]
    rid = ok.take([Limit(model, "tpm", 100, 60, 50)], reserve_ms=5000).reservation
    assert ";" not in rid
    assert ok.settle(rid, [10]).limits[0].remaining == 60


def test_cluster_across_slots_refused_charges_nothing(cluster):
    cluster.flush()
    ok = cluster_ok(cluster)
    model, tenant = subjects_on_two_nodes(cluster, "cross")
    rpm = Limit(model, "rpm", 10, 60, 1)
    tpm = Limit(model, "tpm", 1000, 60, 100)
    usd = Limit(tenant, "usd", 500, 86400, 400)
    assert ok.take([usd]).allowed  # 100 left
    before = cluster.commands()
    refused = ok.take([rpm, tpm, Limit(tenant, "usd", 500, 86400, 200)])
    assert not refused.allowed and refused.reservation is None
    assert 86_390_000 < refused.retry_after_ms <= 86_400_000
    assert refused.retry_after == 86400
    # The model's slot admitted and was cancelled: its limits as they are now.
    assert refused.limits[:2] == (LimitState(10, 0, 0), LimitState(1000, 0, 0))
    assert refused.limits[2].remaining == 100
    after = cluster.commands()
    sent = [
        {k: a[k] - b.get(k, 0) for k in a if k.startswith("okome.") and a[k] != b.get(k, 0)}
        for b, a in zip(before, after)
    ]
    m = cluster.nodes.index(cluster.owner(okome._keys.rate_key(model)))
    t = cluster.nodes.index(cluster.owner(okome._keys.rate_key(tenant)))
    assert sent[m] == {"okome.take": 1, "okome.settle": 1}
    assert sent[t] == {"okome.take": 1}
    # Nothing charged anywhere.
    assert peek(ok, rpm) == 10 and peek(ok, tpm) == 1000 and peek(ok, usd) == 100
    # The refusal of the first slot: the other one is cancelled too.
    model_full = ok.take([Limit(model, "rpm", 10, 60, 10)])
    assert model_full.allowed
    again = ok.take([rpm, Limit(tenant, "usd", 500, 86400, 50)])
    assert not again.allowed and 59000 < again.retry_after_ms <= 60000
    assert peek(ok, usd) == 100
    # The largest wait of the refusing slots.
    both = ok.take([rpm, Limit(tenant, "usd", 500, 86400, 200)])
    assert not both.allowed and both.retry_after_ms > 86_000_000


def test_cluster_across_slots_admitted(cluster):
    cluster.flush()
    ok = cluster_ok(cluster)
    model, tenant = subjects_on_two_nodes(cluster, "llm")
    lims = [
        Limit(model, "rpm", 30000, 60, 1),
        Limit(tenant, "usd", 10**9, 86400, 5000),
        Limit(model, "tpm", 150_000_000, 60, 4000),
    ]
    # Without reserve_ms: ordinary charges, no reservation to settle.
    plain = ok.take(lims)
    assert plain.allowed and plain.reservation is None
    assert [s.remaining for s in plain.limits] == [29999, 10**9 - 5000, 150_000_000 - 4000]
    assert [peek(ok, lim) for lim in lims] == [29999, 10**9 - 5000, 150_000_000 - 4000]
    # The per-slot records expire by themselves (short RESERVE).
    records = [
        (n, k)
        for n in cluster.nodes
        for k in n.client(decode_responses=True).keys("okome:budget:resv:*")
    ]
    assert len(records) == 2
    for n, k in records:
        assert 0 < n.client().pttl(k) <= COMPOSE_RESERVE_MS
    # With reserve_ms: a composite reservation, settled part by part in take's order.
    reply = ok.take(lims, reserve_ms=120_000)
    assert reply.allowed and reply.reservation.count(";") == 1
    assert [s.remaining for s in reply.limits] == [29998, 10**9 - 10000, 150_000_000 - 8000]
    settled = ok.settle(reply.reservation, [1, 1234, 100])
    assert settled.settled
    assert [s.remaining for s in settled.limits] == [29998, 10**9 - 6234, 150_000_000 - 4100]
    assert ok.settle(reply.reservation, [1, 1234, 100]) == settled
    with pytest.raises(okome.ArgumentError, match="has 3 limits, got 2 costs"):
        ok.settle(reply.reservation, [1, 2])
    with pytest.raises(okome.ReservationError):
        ok.settle(reply.reservation, [1, 1234, 101])


def test_cluster_across_slots_error_cancels(cluster):
    cluster.flush()
    ok = cluster_ok(cluster)
    a, b = subjects_on_two_nodes(cluster, "err")
    cluster.owner(okome._keys.rate_key(b, "rpm")).client().rpush(
        okome._keys.rate_key(b, "rpm"), "x"
    )
    with pytest.raises(okome.WrongTypeError):
        ok.take([Limit(a, "rpm", 5, 60, 2), Limit(b, "rpm", 5, 60, 1)], reserve_ms=5000)
    assert peek(ok, Limit(a, "rpm", 5, 60)) == 5


def test_asyncio_cluster_across_slots(cluster):
    cluster.flush()
    model, tenant = subjects_on_two_nodes(cluster, "aio")

    async def main() -> None:
        rc = acluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        ok = okome.aio.Okome(rc)
        lims = [Limit(model, "rpm", 5, 60, 1), Limit(tenant, "usd", 100, 3600, 60)]
        reply = await ok.take(lims, reserve_ms=10000)
        assert reply.allowed and ";" in reply.reservation
        settled = await ok.settle(reply.reservation, [1, 20])
        assert [s.remaining for s in settled.limits] == [4, 80]
        refused = await ok.take([lims[0], Limit(tenant, "usd", 100, 3600, 90)])
        assert not refused.allowed and refused.retry_after == 3600
        assert refused.limits[0].remaining == 4
        await rc.aclose()

    asyncio.run(main())
    sync = cluster_ok(cluster)
    assert peek(sync, Limit(model, "rpm", 5, 60)) == 4
    assert peek(sync, Limit(tenant, "usd", 100, 3600)) == 80


def test_plain_client_on_a_cluster_is_crossslot(cluster):
    cluster.flush()
    a, b = subjects_on_two_nodes(cluster, "plain")
    node = cluster.owner(okome._keys.rate_key(a))
    ok = okome.Okome(redis.Redis(port=node.port))
    with pytest.raises(okome.CrossSlotError):
        ok.take([Limit(a, "rpm", 5, 60, 1), Limit(b, "rpm", 5, 60, 1)])
