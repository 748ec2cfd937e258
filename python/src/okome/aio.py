"""okome over ``redis.asyncio``: :class:`Okome` and :class:`Planner`, the
asyncio twins of :class:`okome.Okome` and :class:`okome.Planner`, sending
exactly the same commands."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any, Callable

import redis.asyncio as aredis
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster

from . import _commands as cmd
from . import _keys, errors
from ._commands import Call, Steps, T
from ._sync import Redirects, _needs_command_name, commands, read_timeout, settle
from .client import parse_info
from .planner import (
    Options,
    PlanResult,
    computed,
    heartbeat_interval,
    refused,
    served,
)
from .replies import (
    CacheEntry,
    LedgerEntry,
    LedgerPage,
    LedgerRecord,
    PlanReply,
    PlanSetReply,
    PlanStatus,
    PurgeReply,
    RateReply,
    RawJSON,
    StoreStatus,
)
from .replies import encode_json as _encode_json

log = logging.getLogger("okome")

__all__ = ["Okome", "PlanResult", "Planner"]


async def _get_connection(pool: Any) -> Any:
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
                timeout = read_timeout(conn.socket_timeout, call.wait_ms)
                replies.append(await conn.read_response(timeout=timeout))
            else:
                replies.append(await conn.read_response())
        except rex.ResponseError as e:
            replies.append(e)
    return settle(call, replies)


async def _call_on(client: aredis.Redis, call: Call) -> Any:
    if call.wait_ms is None and not call.more:
        return await client.execute_command(*call.args)
    if getattr(client, "connection", None) is not None and call.wait_ms is None:
        pipe = client.pipeline(transaction=False)
        for args in commands(call, False):
            pipe.execute_command(*args)
        return settle(call, await pipe.execute(raise_on_error=False))
    if getattr(client, "connection", None) is not None:
        raise errors.ConfigurationError(
            "okome: a WAIT blocks its connection until the plan is stored, so it needs a "
            "connection of its own; create the client without single_connection_client=True"
        )
    pool = client.connection_pool
    conn = await _get_connection(pool)
    clean = False
    try:
        reply = await _blocking(conn, call, False)
        clean = True
        return reply
    except rex.ResponseError:
        clean = True
        raise
    finally:
        if not clean:
            await conn.disconnect()
        await pool.release(conn)


async def _call_on_node(node: Any, call: Call, asking: bool) -> Any:
    if call.wait_ms is None and not asking and not call.more:
        return await node.execute_command(*call.args)
    conn = node.acquire_connection()
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
        release = getattr(node, "release", None)
        if release is not None:
            release(conn)
        else:
            node._free.append(conn)


class _Standalone:
    cluster = False

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client

    async def execute(self, call: Call) -> Any:
        try:
            raw = await _call_on(self.client, call)
        except rex.ResponseError as e:
            raise errors.translate(e) from None
        return call.parse(raw)


class _Cluster:
    cluster = True

    def __init__(self, client: RedisCluster) -> None:
        self.client = client

    async def _node(self, host: str, port: int) -> Any:
        node = self.client.get_node(host=host, port=port)
        if node is None:
            await self.client.nodes_manager.initialize()
            node = self.client.get_node(host=host, port=port)
        if node is None:
            raise rex.ClusterError(f"okome: redirected to unknown node {host}:{port}")
        return node

    def _owner(self, call: Call) -> Any:
        if call.route is None:
            return self.client.get_default_node()
        return self.client.nodes_manager.get_node_from_slot(_keys.slot(call.route))

    async def execute(self, call: Call) -> Any:
        """As :meth:`okome._sync.Cluster.execute` (see :class:`okome._sync.Redirects`)."""
        rc = self.client
        await rc.initialize()  # once; a no-op afterwards
        node, asking = self._owner(call), False
        redirects = Redirects(call)
        while True:
            try:
                raw = await _call_on_node(node, call, asking)
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
                    node = self._owner(call)
            asking = step.asking


def _transport(client: Any) -> _Standalone | _Cluster:
    if isinstance(client, RedisCluster):
        return _Cluster(client)
    if isinstance(client, aredis.Redis):
        return _Standalone(client)
    raise TypeError(
        "okome.aio.Okome needs a redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster, "
        f"got {type(client).__name__} (for sync clients use okome.Okome)"
    )


class Okome:
    """okome's commands over ``redis.asyncio``: the same methods, arguments and
    replies as :class:`okome.Okome`, as coroutines."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._transport = _transport(client)

    @property
    def is_cluster(self) -> bool:
        return self._transport.cluster

    async def _drive(self, steps: Steps[T]) -> T:
        try:
            call = next(steps)
            while True:
                call = steps.send(await self._transport.execute(call))
        except StopIteration as done:
            result: T = done.value
            return result

    async def plan_get(
        self,
        model: str | bytes,
        prompt: str | bytes,
        toolset_version: str | bytes,
        repo_hash: str | bytes,
        *,
        agent: str | bytes | None = None,
        limit: int | None = None,
        window: int | None = None,
        lock_ttl_ms: int | None = None,
        nolock: bool = False,
        wait_ms: int | None = None,
        refresh_ahead_ms: int | None = None,
    ) -> PlanReply:
        """See :meth:`okome.Okome.plan_get`."""
        return await self._drive(
            cmd.plan_get(
                self.is_cluster,
                model,
                prompt,
                toolset_version,
                repo_hash,
                agent=agent,
                limit=limit,
                window=window,
                lock_ttl_ms=lock_ttl_ms,
                nolock=nolock,
                wait_ms=wait_ms,
                refresh_ahead_ms=refresh_ahead_ms,
            )
        )

    async def plan_lookup(
        self,
        key: str,
        *,
        agent: str | bytes | None = None,
        limit: int | None = None,
        window: int | None = None,
        lock_ttl_ms: int | None = None,
        nolock: bool = False,
        wait_ms: int | None = None,
        refresh_ahead_ms: int | None = None,
    ) -> PlanReply:
        """See :meth:`okome.Okome.plan_lookup`."""
        return await self._drive(
            cmd.plan_lookup(
                self.is_cluster,
                key,
                agent=agent,
                limit=limit,
                window=window,
                lock_ttl_ms=lock_ttl_ms,
                nolock=nolock,
                wait_ms=wait_ms,
                refresh_ahead_ms=refresh_ahead_ms,
            )
        )

    async def plan_set(
        self,
        key: str,
        plan: Any,
        *,
        ttl: int | None = None,
        token: str | None = None,
        agent: str | bytes | None = None,
        write_limit: int | None = None,
        write_window: int | None = None,
    ) -> PlanSetReply:
        """See :meth:`okome.Okome.plan_set`."""
        return await self._drive(
            cmd.plan_set(
                self.is_cluster,
                key,
                plan,
                ttl=ttl,
                token=token,
                agent=agent,
                write_limit=write_limit,
                write_window=write_window,
            )
        )

    async def lock(self, key: str, *, ttl_ms: int | None = None) -> str | None:
        """See :meth:`okome.Okome.lock`."""
        return await self._drive(cmd.lock(key, ttl_ms))

    async def extend_lock(self, key: str, token: str, *, ttl_ms: int | None = None) -> bool:
        """See :meth:`okome.Okome.extend_lock`."""
        return await self._drive(cmd.extend_lock(key, token, ttl_ms))

    async def unlock(self, key: str, token: str) -> bool:
        """See :meth:`okome.Okome.unlock`."""
        return await self._drive(cmd.unlock(key, token))

    async def rate(
        self, agent: str | bytes, limit: int, window: int, *, cost: int | None = None
    ) -> RateReply:
        """See :meth:`okome.Okome.rate`."""
        return await self._drive(cmd.rate(agent, limit, window, cost))

    async def wbudget(
        self,
        agent: str | bytes,
        write_limit: int,
        *,
        window: int | None = None,
        cost: int | None = None,
    ) -> RateReply:
        """See :meth:`okome.Okome.wbudget`."""
        return await self._drive(cmd.wbudget(agent, write_limit, window, cost))

    async def cache_get(self, kind: str, *parts: str | bytes) -> CacheEntry | None:
        """See :meth:`okome.Okome.cache_get`."""
        return await self._drive(cmd.cache_get(kind, parts))

    async def cache_set(
        self,
        kind: str,
        *parts: str | bytes,
        value: Any,
        ttl: int | None = None,
        agent: str | bytes | None = None,
    ) -> int:
        """See :meth:`okome.Okome.cache_set`."""
        return await self._drive(cmd.cache_set(self.is_cluster, kind, parts, value, ttl, agent))

    async def agent_record(
        self, agent: str | bytes, key: str, *, pxat: int | None = None
    ) -> LedgerRecord:
        """See :meth:`okome.Okome.agent_record`."""
        return await self._drive(cmd.agent_record(self.is_cluster, agent, key, pxat))

    async def agent_keys(
        self, agent: str | bytes, *, count: int | None = None, cursor: str | None = None
    ) -> LedgerPage:
        """See :meth:`okome.Okome.agent_keys`."""
        return await self._drive(cmd.agent_keys(agent, count, cursor))

    async def iter_agent_keys(
        self, agent: str | bytes, *, count: int | None = None
    ) -> AsyncIterator[LedgerEntry]:
        """See :meth:`okome.Okome.iter_agent_keys`."""
        cursor: str | None = None
        while True:
            page = await self.agent_keys(agent, count=count, cursor=cursor)
            for entry in page.entries:
                yield entry
            if page.cursor is None:
                return
            cursor = page.cursor

    async def agent_purge(self, agent: str | bytes, *, count: int | None = None) -> PurgeReply:
        """See :meth:`okome.Okome.agent_purge`."""
        return await self._drive(cmd.agent_purge(agent, count))

    async def key(self, kind: str, *parts: str | bytes) -> str:
        """See :meth:`okome.Okome.key`."""
        return await self._drive(cmd.key(kind, parts))

    @staticmethod
    def planner_key(
        model: str | bytes,
        prompt: str | bytes,
        toolset_version: str | bytes,
        repo_hash: str | bytes,
    ) -> str:
        """The planner key, computed locally (no round trip)."""
        return _keys.planner_key(model, prompt, toolset_version, repo_hash)

    async def stats(self) -> dict[str, Any]:
        """``INFO okome``."""
        return parse_info(await self._drive(cmd.info()))


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class Planner:
    """The planner protocol over ``redis.asyncio``; see :class:`okome.Planner`.

    ``compute`` may be a coroutine function or a plain function (whose result
    is awaited if it is awaitable). The heartbeat is a task; a ``REFRESH``
    recomputes in a task (see :meth:`wait_background`). A cancelled leader
    (say, the HTTP client went away) releases its lock like a failed one.
    """

    def __init__(
        self,
        client: Any,
        *,
        limit: int = 60,
        window: int = 60,
        write_limit: int | None = 30,
        write_window: int | None = None,
        wait_ms: int = 10_000,
        refresh_ahead_ms: int = 60_000,
        ttl: int | None = None,
        lock_ttl_ms: int | None = None,
        heartbeat_ms: int | None = None,
    ) -> None:
        self.okome = client if isinstance(client, Okome) else Okome(client)
        self.options = Options(
            limit=limit,
            window=window,
            write_limit=write_limit,
            write_window=write_window,
            wait_ms=wait_ms,
            refresh_ahead_ms=refresh_ahead_ms,
            ttl=ttl,
            lock_ttl_ms=lock_ttl_ms,
            heartbeat_ms=heartbeat_ms,
        )
        self._background: set[asyncio.Task[None]] = set()

    async def get_or_compute(
        self,
        model: str,
        prompt: str,
        toolset_version: str,
        repo_hash: str,
        compute: Callable[[], Any],
        *,
        agent: str | None = None,
        limit: int | None = None,
        window: int | None = None,
        write_limit: int | None = None,
        write_window: int | None = None,
        wait_ms: int | None = None,
        refresh_ahead_ms: int | None = None,
        ttl: int | None = None,
        lock_ttl_ms: int | None = None,
        heartbeat_ms: int | None = None,
    ) -> PlanResult:
        """See :meth:`okome.Planner.get_or_compute`."""
        o = self.options.merge(
            limit=limit,
            window=window,
            write_limit=write_limit,
            write_window=write_window,
            wait_ms=wait_ms,
            refresh_ahead_ms=refresh_ahead_ms,
            ttl=ttl,
            lock_ttl_ms=lock_ttl_ms,
            heartbeat_ms=heartbeat_ms,
        )
        reply = await self.okome.plan_get(
            model,
            prompt,
            toolset_version,
            repo_hash,
            agent=agent,
            limit=o.limit if agent is not None else None,
            window=o.window if agent is not None else None,
            lock_ttl_ms=o.lock_ttl_ms,
            wait_ms=o.wait_ms or None,
            refresh_ahead_ms=o.refresh_ahead_ms,
        )
        if reply.status is PlanStatus.HIT:
            return served(reply)
        if reply.status is PlanStatus.REFRESH:
            task = asyncio.ensure_future(self._refresh(reply, compute, agent, o))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return served(reply)
        if reply.status is PlanStatus.MISS:
            plan, stored = await self._lead(reply, compute, agent, o)
            return computed(reply, plan, stored)
        raise refused(reply, agent)

    async def _lead(
        self, reply: PlanReply, compute: Callable[[], Any], agent: Any, o: Options
    ) -> tuple[Any, StoreStatus]:
        token = reply.token
        beat: asyncio.Task[None] | None = None
        if token is not None:
            lock_ttl = reply.lock_ttl_ms or o.lock_ttl_ms
            beat = asyncio.ensure_future(
                self._heartbeat(
                    reply.key, token, lock_ttl, heartbeat_interval(lock_ttl, o.heartbeat_ms)
                )
            )
        try:
            try:
                plan = await _maybe_await(compute())
                value = _encode_json(plan)  # refuse an unencodable plan while we hold the lock
            finally:
                if beat is not None:
                    beat.cancel()
                    await asyncio.gather(beat, return_exceptions=True)
            set_reply = await self.okome.plan_set(
                reply.key,
                value if isinstance(value, bytes) else RawJSON(value),
                ttl=o.ttl,
                token=token,
                agent=agent if o.write_limit is not None else None,
                write_limit=o.write_limit if agent is not None else None,
                write_window=o.write_window if agent is not None else None,
            )
        except BaseException:
            if token is not None:
                # Hand the lock over now, even if this task is being cancelled.
                await asyncio.shield(self._release(reply.key, token))
            raise
        return plan, set_reply.status

    async def _release(self, key: str, token: str) -> None:
        try:
            await self.okome.unlock(key, token)
        except Exception:
            log.exception("okome: could not release the lock of %s", key)

    async def _heartbeat(self, key: str, token: str, ttl_ms: int | None, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self.okome.extend_lock(key, token, ttl_ms=ttl_ms)
            except Exception:
                log.exception("okome: heartbeat of %s failed", key)
                continue
            if not held:
                log.warning("okome: lost the lock of %s while computing", key)
                return

    async def _refresh(
        self, reply: PlanReply, compute: Callable[[], Any], agent: Any, o: Options
    ) -> None:
        try:
            await self._lead(reply, compute, agent, o)
        except Exception:
            log.exception("okome: background refresh of %s failed", reply.key)

    async def wait_background(self, timeout: float | None = None) -> bool:
        """Wait for the background refreshes started so far; ``True`` if all ended."""
        tasks = list(self._background)
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending
