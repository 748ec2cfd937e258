"""``okome.aio.Okome``: one coroutine per okome command, over ``redis.asyncio``;
the twin of :class:`okome.Okome`, driving the same command builders
(:mod:`okome._commands`), so both send exactly the same commands."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

from .. import _commands as cmd
from .._async import Cluster, Node, Standalone, transport
from .._commands import One, Steps, T
from ..client import ClientBase, _nolock, parse_info
from ..leases import HeldLease, hold_async, taken
from ..limits import Limit
from ..replies import (
    CacheEntry,
    LeaseReply,
    LedgerEntry,
    LedgerPage,
    LedgerRecord,
    ModuleCheck,
    PlanReply,
    PlanSetReply,
    PurgeReply,
    RateReply,
    SettleReply,
    TakeReply,
    ThrottleReply,
)


class Okome(ClientBase["Standalone | Cluster"]):  # quoted: no X | Y at run time on 3.9
    """okome's commands over ``redis.asyncio``: the same methods, arguments and
    replies as :class:`okome.Okome`, as coroutines."""

    def __init__(self, client: aredis.Redis | RedisCluster) -> None:
        super().__init__(client)

    def _connect(self, client: Any) -> Standalone | Cluster:
        return transport(client)

    async def _drive(
        self, steps: Steps[T] | One[T], on: Standalone | Cluster | Node | None = None
    ) -> T:
        transport = self._transport if on is None else on
        if type(steps) is One:
            one: T = await transport.execute(steps.call)
            return one
        assert not isinstance(steps, One)
        try:
            call = next(steps)
            while True:
                try:
                    answer = await transport.execute(call)
                except Exception as e:
                    # The builder may undo what its earlier calls did (take
                    # across cluster slots cancels its reservations), then
                    # re-raises.
                    call = steps.throw(e)
                else:
                    call = steps.send(answer)
        except StopIteration as done:
            result: T = done.value
            return result

    # -- the planner ---------------------------------------------------------

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
        lock: bool = False,
        lock_ttl_ms: int | None = None,
        wait_ms: int | None = None,
        refresh_ahead_ms: int | None = None,
        nolock: bool = False,
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
                nolock=_nolock(lock, nolock, lock_ttl_ms, wait_ms, refresh_ahead_ms),
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
        lock: bool = False,
        lock_ttl_ms: int | None = None,
        wait_ms: int | None = None,
        refresh_ahead_ms: int | None = None,
        nolock: bool = False,
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
                nolock=_nolock(lock, nolock, lock_ttl_ms, wait_ms, refresh_ahead_ms),
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
        fenced: bool = False,
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
                fenced=fenced,
            )
        )

    # -- locks -----------------------------------------------------------------

    async def lock(self, key: str, *, ttl_ms: int | None = None) -> str | None:
        """See :meth:`okome.Okome.lock`."""
        return await self._drive(cmd.lock(key, ttl_ms))

    async def extend_lock(self, key: str, token: str, *, ttl_ms: int | None = None) -> bool:
        """See :meth:`okome.Okome.extend_lock`."""
        return await self._drive(cmd.extend_lock(key, token, ttl_ms))

    async def unlock(
        self, key: str, token: str, *, failed_ms: int | None = None, message: str | None = None
    ) -> bool:
        """``OKOME.UNLOCK key token [FAILED ms [message]]``: release if held with
        ``token``. With ``failed_ms`` the computation failed: every caller
        waiting for the plan is answered ``FAILED`` (with ``message``) at once,
        and lookups that find no plan are answered ``FAILED`` for ``failed_ms``
        more (0 to 60000)."""
        return await self._drive(cmd.unlock(key, token, failed_ms, message))

    # -- budgets ---------------------------------------------------------------

    async def rate(
        self,
        agent: str | bytes,
        limit: int,
        window: int,
        *,
        cost: int | None = None,
        name: str | bytes | None = None,
    ) -> RateReply:
        """See :meth:`okome.Okome.rate`."""
        return await self._drive(cmd.rate(agent, limit, window, cost, name))

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

    # -- concurrency leases ------------------------------------------------------

    async def lease_acquire(
        self,
        subject: str | bytes,
        max: int,
        ttl_ms: int,
        *,
        wait_ms: int | None = None,
        name: str | bytes | None = None,
    ) -> LeaseReply:
        """See :meth:`okome.Okome.lease_acquire`."""
        return await self._drive(cmd.lease_acquire(subject, max, ttl_ms, wait_ms, name))

    async def lease_renew(self, lease: str, ttl_ms: int) -> bool:
        """See :meth:`okome.Okome.lease_renew`."""
        return await self._drive(cmd.lease_renew(lease, ttl_ms))

    async def lease_release(self, lease: str) -> bool:
        """See :meth:`okome.Okome.lease_release`."""
        return await self._drive(cmd.lease_release(lease))

    def lease(
        self,
        subject: str | bytes,
        max: int,
        ttl_ms: int,
        *,
        wait_ms: int | None = None,
        name: str | bytes | None = None,
    ) -> AbstractAsyncContextManager[HeldLease]:
        """``async with ok.lease(...) as held``: see :meth:`okome.Okome.lease`;
        renewed by an asyncio task."""
        return _LeaseBlock(self, subject, max, ttl_ms, wait_ms, name)

    async def throttle(
        self,
        subject: str | bytes,
        rate: int,
        period_s: int,
        burst: int,
        *,
        cost: int = 1,
        name: str | bytes | None = None,
    ) -> ThrottleReply:
        """See :meth:`okome.Okome.throttle`."""
        return await self._drive(cmd.throttle(subject, rate, period_s, burst, cost, name))

    # -- several limits, all or nothing ------------------------------------------

    async def take(self, limits: Sequence[Limit], reserve_ms: int | None = None) -> TakeReply:
        """See :meth:`okome.Okome.take`."""
        return await self._drive(cmd.take(self.is_cluster, limits, reserve_ms))

    async def settle(self, reservation: str, costs: Sequence[int]) -> SettleReply:
        """See :meth:`okome.Okome.settle`."""
        return await self._drive(cmd.settle(reservation, costs))

    # -- other caches ----------------------------------------------------------

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

    # -- the agent ledger ------------------------------------------------------

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

    # -- keys and counters -----------------------------------------------------

    async def key(self, kind: str, *parts: str | bytes) -> str:
        """See :meth:`okome.Okome.key`."""
        return await self._drive(cmd.key(kind, parts))

    async def stats(self) -> dict[str, Any]:
        """``INFO okome``; see :meth:`okome.Okome.stats`."""
        info = parse_info(await self._drive(cmd.info()))
        if not info:
            await self.check()
        return info

    async def check(self) -> ModuleCheck:
        """See :meth:`okome.Okome.check`."""
        if not self.is_cluster:
            return await self._drive(cmd.check())
        await self.client.initialize()
        found: ModuleCheck | None = None
        for node in self.client.get_primaries():
            found = await self._drive(cmd.check(f"{node.host}:{node.port}"), Node(node))
        assert found is not None, "a cluster without primaries"
        return found


class _LeaseBlock:
    """``async with``: acquires on entry (awaiting), then holds as :func:`hold_async`."""

    def __init__(
        self, ok: Okome, subject: Any, max: int, ttl_ms: int, wait_ms: int | None, name: Any
    ) -> None:
        self._ok, self._subject, self._max, self._ttl = ok, subject, max, ttl_ms
        self._wait, self._name = wait_ms, name
        self._inner: AbstractAsyncContextManager[HeldLease] | None = None

    async def __aenter__(self) -> HeldLease:
        reply = await self._ok.lease_acquire(
            self._subject, self._max, self._ttl, wait_ms=self._wait, name=self._name
        )
        held = taken(self._subject, self._ttl, reply)
        ok, ttl = self._ok, self._ttl
        self._inner = hold_async(
            held, lambda: ok.lease_renew(held.id, ttl), lambda: ok.lease_release(held.id)
        )
        return await self._inner.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._inner is not None
        return await self._inner.__aexit__(*exc)
