"""``okome.aio.Planner``: the twin of :class:`okome.Planner` over
``redis.asyncio``; its settings, results and errors are
:mod:`okome.planner`'s."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Callable, Union

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

from .._marks import is_never_cache, refuse_never_cache
from ..decorators import AsyncCached
from ..errors import ComputeTimeout, timeout_message
from ..planner import (
    UNREACHABLE,
    Late,
    Options,
    Overrides,
    PlannerBase,
    PlanResult,
    T,
    bypassed,
    computed,
    failure_message,
    heartbeat_interval,
    log,
    refused,
    result_event,
    timed_out,
)
from ..replies import PlanReply, PlanStatus, StoreStatus
from .client import Okome

if TYPE_CHECKING:
    from typing_extensions import Unpack

AsyncClient = Union[aredis.Redis, RedisCluster, Okome]
"""What :class:`Planner` takes: a ``redis.asyncio.Redis``, a
``redis.asyncio.cluster.RedisCluster`` or an :class:`okome.aio.Okome`."""


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome (no "never retrieved" warning)."""
    if not task.cancelled():
        task.exception()


async def _run_with_deadline(
    compute: Callable[[], T | Awaitable[T]], max_compute_ms: int | None
) -> T:
    """``compute()`` (awaited if awaitable); with a deadline, the awaitable is
    cancelled past it and :class:`~okome.planner.Late` raised (a plain
    function's result is computed inline, before any deadline can apply)."""
    if max_compute_ms is None:
        value: T = await _maybe_await(compute())
        return value
    task = asyncio.ensure_future(_maybe_await(compute()))
    try:
        done, _ = await asyncio.wait({task}, timeout=max_compute_ms / 1000.0)
    except BaseException:
        task.cancel()
        task.add_done_callback(_forget)
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_forget)
        raise Late()
    result: T = task.result()
    return result


class Planner(PlannerBase[Okome, AsyncClient, T]):
    """The planner protocol over ``redis.asyncio`` (a ``redis.asyncio.Redis``,
    a ``redis.asyncio.cluster.RedisCluster`` or an :class:`okome.aio.Okome`);
    see :class:`okome.Planner`.

    ``compute`` may be a coroutine function or a plain function (whose result
    is awaited if it is awaitable). The heartbeat is a task; a ``REFRESH``
    recomputes in a task (see :meth:`wait_background`). A cancelled leader
    (say, the HTTP client went away) releases its lock for the next waiter
    to take over; a leader whose ``compute`` raises releases it as failed
    (``failure_ttl_ms``). Past ``max_compute_ms`` the computation is
    cancelled and the leader raises :class:`okome.ComputeTimeout` (only an
    awaitable can be: a plain function runs to its end first). ``on_result``
    is a plain function, called inline (not awaited) with each result.
    """

    def _wrap(self, client: AsyncClient) -> Okome:
        return client if isinstance(client, Okome) else Okome(client)

    def _start(self) -> None:
        self._background: set[asyncio.Task[None]] = set()
        self._probe: asyncio.Future[None] | None = None

    async def get_or_compute(
        self,
        model: str,
        prompt: str,
        toolset_version: str,
        repo_hash: str,
        compute: Callable[[], T | Awaitable[T]],
        *,
        agent: str | None = None,
        label: str | None = None,
        limit: int | None = None,
        window: int | None = None,
        write_limit: int | None = None,
        write_window: int | None = None,
        wait_ms: int | None = None,
        refresh_ahead_ms: int | None = None,
        ttl: int | None = None,
        lock_ttl_ms: int | None = None,
        heartbeat_ms: int | None = None,
        failure_ttl_ms: int | None = None,
        max_compute_ms: int | None = None,
    ) -> PlanResult[T]:
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
            failure_ttl_ms=failure_ttl_ms,
            max_compute_ms=max_compute_ms,
        )
        if self.on_result is None:
            return await self._get(model, prompt, toolset_version, repo_hash, compute, agent, o)
        t0 = time.perf_counter()
        ran = False

        def tracked() -> T | Awaitable[T]:
            nonlocal ran
            ran = True
            return compute()

        tracked.__wrapped__ = compute  # type: ignore[attr-defined]  # okome.never_cache sees it
        try:
            result = await self._get(model, prompt, toolset_version, repo_hash, tracked, agent, o)
        except Exception as e:
            self._emit_error(e, t0, (model, prompt, toolset_version, repo_hash), ran, label, agent)
            raise
        self._emit(result_event(result, time.perf_counter() - t0, label, agent))
        return result

    def cached(
        self,
        *,
        model: str | None = None,
        toolset_version: str | None = None,
        repo_hash: str | None = None,
        agent: str | None = None,
        label: str | None = None,
        **options: Unpack[Overrides],
    ) -> Callable[[Callable[..., T | Awaitable[T]]], AsyncCached[T]]:
        """See :meth:`okome.Planner.cached`: the same, for a coroutine function
        (or a plain one); the decorated function is a coroutine function
        (``await make_plan(prompt, ...)``, ``await make_plan.result(prompt, ...)``)."""
        self.options.merge(**options)  # refuse a bad setting now
        parts = {"model": model, "toolset_version": toolset_version, "repo_hash": repo_hash}

        def decorate(fn: Callable[..., T | Awaitable[T]]) -> AsyncCached[T]:
            return AsyncCached(self, fn, parts, agent, label, options)

        return decorate

    async def _get(
        self,
        model: str,
        prompt: str,
        toolset_version: str,
        repo_hash: str,
        compute: Callable[[], T | Awaitable[T]],
        agent: str | None,
        o: Options,
    ) -> PlanResult[T]:
        if self._outage and self._skip(
            key := self.okome.planner_key(model, prompt, toolset_version, repo_hash)
        ):
            return await self._bypass(key, compute, o)
        try:
            reply = await self.okome.plan_get(
                model, prompt, toolset_version, repo_hash, **o.lookup(agent)
            )
        except UNREACHABLE as e:
            key = self.okome.planner_key(model, prompt, toolset_version, repo_hash)
            self._unreachable(e, key)
            return await self._bypass(key, compute, o)
        self._reachable()
        if reply.status in (PlanStatus.HIT, PlanStatus.SHARED):
            return self._served(reply)
        if reply.token is not None and is_never_cache(compute):
            await self._release(reply.key, reply.token)
            refuse_never_cache(compute)
        if reply.status is PlanStatus.REFRESH:
            result = self._served(reply)
            task = asyncio.ensure_future(self._refresh(reply, compute, agent, o))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return result
        if reply.status is PlanStatus.MISS:
            return await self._lead(reply, compute, agent, o)
        raise refused(reply, agent)

    def _start_probe(self) -> None:
        async def probe() -> None:
            while True:
                await asyncio.sleep(self.outage_probe_ms / 1000.0)
                try:
                    await self.okome.client.ping()
                except Exception as e:
                    if self._probed(e):
                        return
                else:
                    self._probed(None)
                    return

        self._probe = asyncio.ensure_future(probe())

    async def _bypass(
        self, key: str, compute: Callable[[], T | Awaitable[T]], o: Options
    ) -> PlanResult[T]:
        refuse_never_cache(compute)
        try:
            plan = await _run_with_deadline(compute, o.max_compute_ms)
        except Late:
            assert o.max_compute_ms is not None
            raise ComputeTimeout(o.max_compute_ms, key=key, retry_after_ms=1000) from None
        return bypassed(key, self._encode(plan)[1])

    async def _lead(
        self,
        reply: PlanReply,
        compute: Callable[[], T | Awaitable[T]],
        agent: Any,
        o: Options,
        refresh: bool = False,
    ) -> PlanResult[T]:
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
                # Encode, and decode as a HIT will, while we hold the lock (as the sync twin).
                value, plan = self._encode(await _run_with_deadline(compute, o.max_compute_ms))
            finally:
                if beat is not None:
                    beat.cancel()
                    await asyncio.gather(beat, return_exceptions=True)
        except Late:
            assert o.max_compute_ms is not None
            if token is not None:
                await asyncio.shield(
                    self._release(
                        reply.key, token, o.failure_ttl_ms, timeout_message(o.max_compute_ms)
                    )
                )
            raise timed_out(reply, o) from None
        except Exception as e:
            if token is not None:
                await asyncio.shield(self._fail(reply.key, token, e, o))
            raise
        except BaseException:
            if token is not None:
                # Hand the lock over now, even if this task is being cancelled.
                await asyncio.shield(self._release(reply.key, token))
            raise
        try:
            set_reply = await self.okome.plan_set(
                reply.key, value, **o.store(token, agent), fenced=refresh and token is not None
            )
        except UNREACHABLE as e:
            self._unreachable(e, reply.key)
            return bypassed(reply.key, plan)
        except Exception as e:
            if token is not None:
                await asyncio.shield(self._fail(reply.key, token, e, o))
            raise
        except BaseException:
            if token is not None:
                await asyncio.shield(self._release(reply.key, token))
            raise
        return computed(reply, plan, set_reply.status)

    async def _fail(self, key: str, token: str, e: BaseException, o: Options) -> None:
        """As :meth:`okome.Planner._fail`."""
        if o.failure_ttl_ms > 0:
            await self._release(key, token, o.failure_ttl_ms, failure_message(e))
        else:
            await self._release(key, token)

    async def _release(
        self, key: str, token: str, failed_ms: int | None = None, message: str | None = None
    ) -> None:
        try:
            if failed_ms is None:
                await self.okome.unlock(key, token)
            else:
                await self.okome.unlock(key, token, failed_ms=failed_ms, message=message)
        except UNREACHABLE as e:
            log.warning("okome: could not release the lock of %s: %s", key, e)
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
        self, reply: PlanReply, compute: Callable[[], T | Awaitable[T]], agent: Any, o: Options
    ) -> None:
        try:
            result = await self._lead(reply, compute, agent, o, refresh=True)
            if result.stored is StoreStatus.FENCED:
                log.info(
                    "okome: the refresh of %s was not stored (FENCED): its lock expired "
                    "meanwhile; the plan served stays",
                    reply.key,
                )
        except Exception:
            log.exception("okome: background refresh of %s failed", reply.key)

    async def wait_background(self, timeout: float | None = None) -> bool:
        """Wait for the background refreshes started so far; ``True`` if all ended."""
        tasks = list(self._background)
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending
