"""``okome.aio.Planner``: the twin of :class:`okome.Planner` over
``redis.asyncio``; its settings, results and errors are
:mod:`okome.planner`'s."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from ..planner import (
    Options,
    PlannerBase,
    PlanResult,
    computed,
    heartbeat_interval,
    log,
    plan_json,
    refused,
    served,
)
from ..replies import PlanReply, PlanStatus, StoreStatus
from .client import Okome


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class Planner(PlannerBase[Okome]):
    """The planner protocol over ``redis.asyncio``; see :class:`okome.Planner`.

    ``compute`` may be a coroutine function or a plain function (whose result
    is awaited if it is awaitable). The heartbeat is a task; a ``REFRESH``
    recomputes in a task (see :meth:`wait_background`). A cancelled leader
    (say, the HTTP client went away) releases its lock like a failed one.
    """

    def _wrap(self, client: Any) -> Okome:
        return client if isinstance(client, Okome) else Okome(client)

    def _start(self) -> None:
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
            model, prompt, toolset_version, repo_hash, **o.lookup(agent)
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
                value = plan_json(plan)  # refuse an unencodable plan while we hold the lock
            finally:
                if beat is not None:
                    beat.cancel()
                    await asyncio.gather(beat, return_exceptions=True)
            set_reply = await self.okome.plan_set(reply.key, value, **o.store(token, agent))
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
