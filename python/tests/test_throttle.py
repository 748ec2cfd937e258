"""okome.Okome.throttle and okome.aio.Okome.throttle: OKOME.THROTTLE (GCRA)
as a typed ThrottleReply, NAME keys computed as the server does, errors."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

import okome
import okome.aio
from okome import ThrottleReply


@pytest.fixture(params=[{}, {"decode_responses": True}], ids=["bytes", "decoded"])
def ok(request, server) -> okome.Okome:
    return okome.Okome(server.client(**request.param))


def test_burst_then_refused(ok, server):
    # nginx's rate=20r/s burst=60 nodelay: 61 at once.
    first = ok.throttle("203.0.113.7", 20, 1, 60)
    assert first == ThrottleReply(True, 60, 0, 50)
    assert first.retry_after == 0
    for _ in range(60):
        assert ok.throttle("203.0.113.7", 20, 1, 60).allowed
    refused = ok.throttle("203.0.113.7", 20, 1, 60)
    assert not refused.allowed and refused.remaining == 0
    assert 0 < refused.retry_after_ms <= 50 and refused.retry_after == 1
    assert refused.reset_after_ms - refused.retry_after_ms == 3000
    assert server.client().exists("okome:budget:gcra:{203.0.113.7}") == 1


def test_cost_name_and_peek(ok, server):
    assert ok.throttle("alice", 1, 60, 2, cost=0, name="login") == ThrottleReply(True, 3, 0, 0)
    assert server.client().keys("*") == []
    assert ok.throttle("alice", 1, 60, 2, cost=3, name="login") == ThrottleReply(
        True, 0, 0, 180_000
    )
    assert ok.throttle("alice", 1, 60, 2, name=b"default").remaining == 2
    key = okome._keys.gcra_key("alice", "login")
    assert key == "okome:budget:gcra:{alice}:login"
    assert sorted(server.client(decode_responses=True).keys("*")) == [
        ok.key("gcra", "alice"),
        key,
    ]
    assert okome._keys.gcra_key("a:b", "x y") == "okome:budget:gcra:{a%3Ab}:x%20y"


def test_errors(ok, server):
    with pytest.raises(okome.OutOfRangeError, match=r"cost 4 is out of range.*0 to burst \+ 1"):
        ok.throttle("bob", 1, 60, 2, cost=4)
    with pytest.raises(okome.OutOfRangeError, match="rate 0 is out of range"):
        ok.throttle("bob", 0, 60, 2)
    with pytest.raises(okome.ArgumentError, match="name must not be empty"):
        ok.throttle("bob", 1, 60, 2, name="")
    server.client().rpush("okome:budget:gcra:{bob}", "x")
    with pytest.raises(okome.WrongTypeError):
        ok.throttle("bob", 1, 60, 2)
    server.client().set("okome:budget:gcra:{carol}", "hello")
    with pytest.raises(okome.OkomeError, match="does not hold an okome GCRA state"):
        ok.throttle("carol", 1, 60, 2)


def test_async(server):
    async def main() -> None:
        c = aredis.Redis(host="127.0.0.1", port=server.port)
        ok = okome.aio.Okome(c)
        assert await ok.throttle("eve", 2, 1, 0) == ThrottleReply(True, 0, 0, 500)
        refused = await ok.throttle("eve", 2, 1, 0)
        assert not refused.allowed and 0 < refused.retry_after_ms <= 500
        peek = await ok.throttle("eve", 2, 1, 0, cost=0, name="other")
        assert peek == ThrottleReply(True, 1, 0, 0)
        await c.aclose()

    asyncio.run(main())
