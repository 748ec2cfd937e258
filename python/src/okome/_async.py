"""How a :class:`~okome._commands.Call` reaches a server, for ``redis.asyncio``
clients: the twin of :mod:`okome._sync`, whose I/O-free parts it shares
(:class:`~okome._sync.Redirects`, :func:`~okome._sync.settle`, ...)."""

from __future__ import annotations

import asyncio
import inspect
from contextlib import suppress
from typing import Any, Callable

import redis.asyncio as aredis
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster

from . import _gate, errors
from ._commands import Call
from ._sync import (
    Redirects,
    _needs_command_name,
    commands,
    known_node,
    owner,
    packed,
    pipeline,
    read_timeout,
    settle,
)


async def get_connection(pool: Any) -> Any:
    """As :func:`okome._sync.get_connection`, from a ``redis.asyncio`` pool."""
    if _needs_command_name(pool.get_connection):
        return await pool.get_connection("OKOME")
    return await pool.get_connection()


async def _blocking(conn: Any, call: Call, asking: bool) -> Any:
    """Send ``call`` (and what is pipelined with it) on ``conn`` and read the
    replies, the first with a timeout above its wait. Raises a ``ResponseError``
    only once every reply is read; raises anything else with ``conn`` possibly
    holding an unread reply: the caller must then disconnect it."""
    await conn.send_packed_command(conn.pack_commands(commands(call, asking)))
    replies: list[Any] = []
    for i in range(1 + len(call.more)):
        if asking:
            with suppress(rex.ResponseError):  # if refused, the command's reply says why
                await conn.read_response()
        try:
            if i == 0 and call.wait_ms is not None:
                replies.append(await _timed_read(conn, call))
            else:
                replies.append(await conn.read_response())
        except rex.ResponseError as e:
            replies.append(e)
    return settle(call, replies)


async def _timed_read(conn: Any, call: Call) -> Any:
    """The reply of ``call`` (with ``WAIT``) on ``conn``, read with a timeout
    above its wait: ``TimeoutError`` past it (redis-py 8 answers ``None`` to
    a read that timed out, leaving the reply to come unread)."""
    assert call.wait_ms is not None
    timeout = read_timeout(conn.socket_timeout, call.wait_ms)
    reply = await conn.read_response(timeout=timeout)
    if reply is None:
        raise rex.TimeoutError(f"okome: no reply to {call.args[0]} within {timeout:g} s")
    return reply


async def _on_own(conn: Any, call: Call, asking: bool, release: Callable[[Any], Any]) -> Any:
    """:func:`_blocking` on ``conn``, checked out for this call, then
    ``release(conn)``; ``conn`` is disconnected first if it may still hold
    an unread reply (it must not be reused)."""
    clean = False
    try:
        reply = await _blocking(conn, call, asking)
        clean = True
        return reply
    except rex.ResponseError:
        clean = True
        raise
    finally:
        if not clean:
            await conn.disconnect()
        released = release(conn)
        if inspect.isawaitable(released):
            await released


async def call_on(client: aredis.Redis, call: Call) -> Any:
    """As :func:`okome._sync.call_on`, on a ``redis.asyncio`` standalone client
    (within the pool's :mod:`~okome._gate` if it is bounded)."""
    if getattr(client, "connection", None) is not None:
        return await _call_on(client, call)
    pool = client.connection_pool
    bounded = _gate.async_gate(pool)
    if bounded is None:
        if call.wait_ms is not None and not call.more:
            return await _wait_on(pool, call)
        return await _call_on(client, call)
    waiting = bounded.enter_now(call)
    if waiting is None:
        call, waiting = await bounded.enter(call)
    try:
        if call.wait_ms is not None and not call.more:
            return await _wait_on(pool, call)
        return await _call_on(client, call)
    finally:
        bounded.leave(True, waiting)


async def _call_on(client: aredis.Redis, call: Call) -> Any:
    if call.wait_ms is None and not call.more:
        return await client.execute_command(*call.args)
    pipe = pipeline(client, call, False)
    if pipe is not None:
        return settle(call, await pipe.execute(raise_on_error=False))
    pool = client.connection_pool
    if not call.more:
        return await _wait_on(pool, call)
    return await _on_own(await get_connection(pool), call, False, pool.release)


async def _wait_on(pool: Any, call: Call) -> Any:
    """One blocking command (a planner lookup with ``WAIT``: the hit path
    too, as a hit is answered before anything blocks) on a connection of its
    own, read with a timeout above its wait; the connection is closed if its
    reply may still come. In one coroutine: it is the hit path."""
    assert call.wait_ms is not None
    get = pool.get_connection
    conn = await (get("OKOME") if _needs_command_name(get) else get())
    clean = False
    try:
        await conn.send_packed_command(packed(conn, call))
        timeout = read_timeout(conn.socket_timeout, call.wait_ms)
        reply = await conn.read_response(timeout=timeout)
        if reply is None:  # redis-py's answer to a read past its timeout
            raise rex.TimeoutError(f"okome: no reply to {call.args[0]} within {timeout:g} s")
        clean = True
        return reply
    except rex.ResponseError:
        clean = True
        raise
    finally:
        if not clean:
            await conn.disconnect()
        released = pool.release(conn)
        if inspect.isawaitable(released):
            await released


async def call_on_node(node: Any, call: Call, asking: bool) -> Any:
    """Run ``call`` on one node of a ``redis.asyncio`` cluster client
    (``ASKING`` first if ``asking``), on a connection of its own if it blocks,
    is redirected or is pipelined."""
    if call.wait_ms is None and not asking and not call.more:
        return await node.execute_command(*call.args)
    release = getattr(node, "release", None)
    if release is None:
        release = node._free.append
    return await _on_own(node.acquire_connection(), call, asking, release)


class Standalone:
    cluster = False

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client

    async def execute(self, call: Call) -> Any:
        try:
            raw = await call_on(self.client, call)
        except rex.ResponseError as e:
            raise errors.translate(e) from None
        return call.parse(raw)


class Node:
    """One node of a ``redis.asyncio`` cluster client, as a transport (for
    calls meant for that node whatever their slot: ``check``)."""

    cluster = False

    def __init__(self, node: Any) -> None:
        self.node = node

    async def execute(self, call: Call) -> Any:
        try:
            raw = await call_on_node(self.node, call, False)
        except rex.ResponseError as e:
            raise errors.translate(e) from None
        return call.parse(raw)


class Cluster:
    """As :class:`okome._sync.Cluster`, for ``redis.asyncio.cluster.RedisCluster``."""

    cluster = True

    def __init__(self, client: RedisCluster) -> None:
        self.client = client

    async def _node(self, host: str, port: int) -> Any:
        node = self.client.get_node(host=host, port=port)
        if node is None:
            await self.client.nodes_manager.initialize()
            node = known_node(self.client, host, port)
        return node

    async def execute(self, call: Call) -> Any:
        """As :meth:`okome._sync.Cluster.execute` (see :class:`okome._sync.Redirects`)."""
        rc = self.client
        await rc.initialize()  # once; a no-op afterwards
        node, asking = owner(rc, call), False
        redirects = Redirects(call)
        while True:
            try:
                raw = await call_on_node(node, call, asking)
            except rex.ResponseError as e:
                step = redirects.follow(e)
            else:
                return call.parse(raw)
            if step.pause:
                await asyncio.sleep(step.pause)
            manager = rc.nodes_manager
            if step.refresh:
                with suppress(rex.RedisError, rex.RedisClusterException):
                    await manager.initialize()  # no node answers: the next attempt says so
            if step.moved is not None:
                move = getattr(manager, "move_slot", None)
                if move is not None:
                    moved = move(step.moved)
                    if inspect.isawaitable(moved):
                        await moved
            if step.node is not None:
                node = await self._node(*step.node)
            else:
                with suppress(rex.SlotNotCoveredError):  # no owner in the map: the same node
                    node = owner(rc, call)
            asking = step.asking


def transport(client: Any) -> Standalone | Cluster:
    if isinstance(client, RedisCluster):
        return Cluster(client)
    if isinstance(client, aredis.Redis):
        return Standalone(client)
    raise TypeError(
        "okome.aio.Okome needs a redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster, "
        f"got {type(client).__name__} (for sync clients use okome.Okome)"
    )
