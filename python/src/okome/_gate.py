"""A bounded pool's connections, shared between okome's blocking and
non-blocking calls so that waiters cannot starve a leader.

A follower's ``WAIT`` holds its connection until the leader stores; the
leader's ``PLAN.SET`` (and its heartbeats, its ``UNLOCK``) then needs
another one. With a pool of ``max_connections`` and more concurrent cold
requests than that, the waiters would hold every connection: the store
waits for one (``BlockingConnectionPool``) or fails (``MaxConnectionsError``),
the waits time out and followers take over one after another.

So okome counts its own calls on each bounded pool (``max_connections``
below :data:`UNBOUNDED`): at most ``max_connections`` at once (further
calls queue in the client instead of failing in the pool), of which at most
:func:`waiters` may block in the server; the rest (``reserve``, a fifth of
the pool, at least one) is kept for calls that do not block. A call with
``wait_ms`` that finds every waiting slot taken queues for one, for at most
its ``wait_ms``, and then blocks in the server for what is left of it; if
none frees in time it is sent without ``WAIT`` (a last look: the plan if
stored meanwhile, else ``LOCKED``). A pool of one connection has no waiting
slot: its calls never block in the server.

Only okome's calls are counted: other users of the same client's pool
take connections okome does not know about.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from ._commands import Call

UNBOUNDED = 1 << 24
"""A pool at least this large is not gated (redis-py 5's default is 2**31)."""


def waiters(size: int) -> int:
    """How many of a pool's ``size`` connections okome lets block in ``WAIT``."""
    return size - max(1, size // 5)


def _bound(pool: Any) -> int | None:
    size = getattr(pool, "max_connections", None)
    if isinstance(size, int) and 0 < size < UNBOUNDED:
        return size
    return None


def _remaining(call: Call, started: float) -> Call:
    """``call`` with what is left of its wait after queueing since ``started``."""
    assert call.wait_ms is not None
    left = call.wait_ms - int((time.monotonic() - started) * 1000)
    return call.waiting(left if left >= 1 else None)


class Gate:
    """okome's calls over one bounded sync pool (see the module's doc)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiters = waiters(size)
        self._all = threading.BoundedSemaphore(size)
        self._waits = threading.BoundedSemaphore(max(self.waiters, 1))

    @contextmanager
    def enter(self, call: Call) -> Iterator[Call]:
        """Hold a slot for ``call``; yields it as it may now be sent."""
        waiting = False
        wait_ms = call.wait_ms
        if wait_ms is not None:
            if self.waiters == 0:
                call = call.waiting(None)
            else:
                started = time.monotonic()
                waiting = self._waits.acquire(timeout=wait_ms / 1000.0)
                call = _remaining(call, started) if waiting else call.waiting(None)
        try:
            with self._all:
                yield call
        finally:
            if waiting:
                self._waits.release()


_LOCK = threading.Lock()


def gate(pool: Any) -> Gate | None:
    """The gate of a sync redis-py pool, ``None`` if it is unbounded."""
    size = _bound(pool)
    if size is None:
        return None
    found: Gate | None = getattr(pool, "_okome_gate", None)
    if found is None or found.size != size:
        with _LOCK:
            found = getattr(pool, "_okome_gate", None)
            if found is None or found.size != size:
                found = Gate(size)
                pool._okome_gate = found
    return found


class AsyncGate:
    """The twin of :class:`Gate` for a ``redis.asyncio`` pool (one event loop)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiters = waiters(size)
        self._all = asyncio.Semaphore(size)
        self._waits = asyncio.Semaphore(max(self.waiters, 1))

    @asynccontextmanager
    async def enter(self, call: Call) -> AsyncIterator[Call]:
        waiting = False
        wait_ms = call.wait_ms
        if wait_ms is not None:
            if self.waiters == 0:
                call = call.waiting(None)
            else:
                started = time.monotonic()
                waiting = await _acquire(self._waits, wait_ms / 1000.0)
                call = _remaining(call, started) if waiting else call.waiting(None)
        try:
            async with self._all:
                yield call
        finally:
            if waiting:
                self._waits.release()


async def _acquire(sem: asyncio.Semaphore, timeout: float) -> bool:
    """``sem`` acquired within ``timeout`` seconds? (Never left acquired
    otherwise, even if this task is cancelled meanwhile.)"""
    task = asyncio.ensure_future(sem.acquire())
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        _abandon(task, sem)
        raise
    if done:
        return True
    _abandon(task, sem)
    return False


def _abandon(task: asyncio.Future[Any], sem: asyncio.Semaphore) -> None:
    task.cancel()

    def undo(t: asyncio.Future[Any]) -> None:
        if not t.cancelled() and t.exception() is None:
            sem.release()  # acquired after all: give it back

    task.add_done_callback(undo)


def async_gate(pool: Any) -> AsyncGate | None:
    """The gate of a ``redis.asyncio`` pool, ``None`` if it is unbounded."""
    size = _bound(pool)
    if size is None:
        return None
    found: AsyncGate | None = getattr(pool, "_okome_gate", None)
    if found is None or found.size != size:
        found = AsyncGate(size)
        pool._okome_gate = found
    return found
