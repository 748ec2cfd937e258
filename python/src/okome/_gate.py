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
from collections import deque
from contextlib import suppress
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
    """okome's calls over one bounded sync pool (see the module's doc).

    Two counters under one lock: the free slots and the free waiting slots.
    A call that finds what it needs free takes it without waiting (the hit
    path: one lock taken twice, no clock read); only a call that must queue
    waits on a condition."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiters = waiters(size)
        self._lock = threading.Lock()
        self._free = size
        self._free_waits = max(self.waiters, 1)
        self._slot_freed = threading.Condition(self._lock)
        self._wait_freed = threading.Condition(self._lock)
        self._queued = 0  # threads waiting on _slot_freed
        self._queued_waits = 0  # threads waiting on _wait_freed

    def enter(self, call: Call) -> tuple[Call, bool]:
        """Take a slot for ``call`` (queueing if none is free): ``call`` as
        it may now be sent, and whether it holds a waiting slot. Give the
        slot back with :meth:`leave`."""
        with self._lock:
            if self._free > 0 and not self._queued:
                if call.wait_ms is None:
                    self._free -= 1
                    return call, False
                if self.waiters and self._free_waits > 0 and not self._queued_waits:
                    self._free -= 1
                    self._free_waits -= 1
                    return call, True
        return self._queue(call)

    def _queue(self, call: Call) -> tuple[Call, bool]:
        waiting = False
        wait_ms = call.wait_ms
        if wait_ms is not None:
            if self.waiters == 0:
                call = call.waiting(None)
            else:
                started = time.monotonic()
                with self._lock:
                    self._queued_waits += 1
                    try:
                        waiting = self._wait_freed.wait_for(
                            lambda: self._free_waits > 0, wait_ms / 1000.0
                        )
                        if waiting:
                            self._free_waits -= 1
                    finally:
                        self._queued_waits -= 1
                call = _remaining(call, started) if waiting else call.waiting(None)
        try:
            with self._lock:
                self._queued += 1
                try:
                    self._slot_freed.wait_for(lambda: self._free > 0)
                    self._free -= 1
                finally:
                    self._queued -= 1
        except BaseException:
            if waiting:
                self.leave(False, True)
            raise
        return call, waiting

    def leave(self, slot: bool, waiting: bool) -> None:
        """Give back what :meth:`enter` took: the slot, and the waiting slot
        if ``waiting``."""
        with self._lock:
            if slot:
                self._free += 1
                if self._queued:
                    self._slot_freed.notify()
            if waiting:
                self._free_waits += 1
                if self._queued_waits:
                    self._wait_freed.notify()


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


class _Slots:
    """A FIFO semaphore for one event loop, whose uncontended take neither
    suspends nor allocates (:meth:`take_now`); a freed slot is handed to the
    longest-waiting taker."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._queue: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        """A slot taken if one is free and nobody queues for one."""
        if self.free > 0 and not self._queue:
            self.free -= 1
            return True
        return False

    async def take(self, timeout: float | None = None) -> bool:
        """A slot taken, queueing for at most ``timeout`` seconds (``None``:
        until one frees). Never left taken if this task is cancelled."""
        if self.take_now():
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        try:
            if timeout is None:
                await fut
            else:
                await asyncio.wait({fut}, timeout=timeout)
        except BaseException:
            self._drop(fut)
            raise
        if fut.done() and not fut.cancelled():
            return True
        self._drop(fut)
        return False

    def _drop(self, fut: asyncio.Future[None]) -> None:
        """A taker gives up: a slot handed to it meanwhile passes on."""
        if fut.done() and not fut.cancelled():
            self.give()
            return
        fut.cancel()
        with suppress(ValueError):
            self._queue.remove(fut)

    def give(self) -> None:
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


class AsyncGate:
    """The twin of :class:`Gate` for a ``redis.asyncio`` pool (one event loop):
    a call that finds what it needs free enters without suspending
    (:meth:`enter_now`), others queue (:meth:`enter`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiters = waiters(size)
        self._all = _Slots(size)
        self._waits = _Slots(max(self.waiters, 1))

    def enter_now(self, call: Call) -> bool | None:
        """Enter without queueing if what ``call`` needs is free: whether it
        holds a waiting slot; ``None`` if it must queue (:meth:`enter`)."""
        if not self._all.take_now():
            return None
        if call.wait_ms is None:
            return False
        if self.waiters and self._waits.take_now():
            return True
        self._all.give()  # nobody queues for it: back to free
        return None

    async def enter(self, call: Call) -> tuple[Call, bool]:
        """As :meth:`Gate.enter`; give the slot back with :meth:`leave`."""
        waiting = self.enter_now(call)
        if waiting is not None:
            return call, waiting
        wait_ms = call.wait_ms
        if wait_ms is not None:
            if self.waiters == 0:
                call = call.waiting(None)
            else:
                started = time.monotonic()
                waiting = await self._waits.take(wait_ms / 1000.0)
                call = _remaining(call, started) if waiting else call.waiting(None)
        try:
            await self._all.take()
        except BaseException:
            if waiting:
                self._waits.give()
            raise
        return call, bool(waiting)

    def leave(self, slot: bool, waiting: bool) -> None:
        """As :meth:`Gate.leave`."""
        if slot:
            self._all.give()
        if waiting:
            self._waits.give()


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
