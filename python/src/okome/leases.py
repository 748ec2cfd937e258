"""A held concurrency lease, renewed in the background while its block runs:
what :meth:`okome.Okome.lease` and :meth:`okome.aio.Okome.lease` yield.

::

    with ok.lease("gpt-4o", 8, 30_000, wait_ms=5_000) as held:
        call_the_model()          # at most 8 of these at once, cluster-wide

The lease is taken on entry (:class:`~okome.errors.LeaseUnavailable` if none
was free, at once or at the end of ``wait_ms``), renewed every third of its
TTL by a daemon thread (an asyncio task), and released on exit, also when
the block raises. A holder that dies stops renewing: its lease expires by
itself after ``ttl_ms``. If a renewal finds the lease gone (it expired:
the process stalled longer than its TTL), :attr:`HeldLease.lost` is set and
renewing stops; the block may check it before work that must not overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions as rex

from .errors import LeaseUnavailable
from .replies import LeaseReply


@dataclass
class HeldLease:
    """A lease held by a ``with`` block."""

    id: str
    """The lease id (``OKOME.LEASE.RENEW`` / ``RELEASE`` take it)."""
    ttl_ms: int
    acquired: LeaseReply
    """The reply that gave it."""
    lost: bool = False
    """A renewal found the lease gone: another caller may hold its slot now."""
    renewals: int = 0
    """Renewals made so far."""
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def renew_every_s(self) -> float:
        """A third of the TTL: two renewals may fail before the lease expires."""
        return self.ttl_ms / 3000.0

    def renewed(self, ok: bool) -> bool:
        """Records a renewal's answer; whether to keep renewing."""
        if ok:
            self.renewals += 1
        else:
            self.lost = True
        return ok


def taken(subject: Any, ttl_ms: int, reply: LeaseReply) -> HeldLease:
    """The held lease of an acquisition, or :class:`LeaseUnavailable`."""
    if reply.lease is None:
        raise LeaseUnavailable(subject, reply.in_use, reply.retry_after_ms)
    return HeldLease(id=reply.lease, ttl_ms=ttl_ms, acquired=reply)


def _renew_loop(held: HeldLease, renew: Callable[[], bool]) -> None:
    while not held._stop.wait(held.renew_every_s):
        try:
            if not held.renewed(renew()):
                return
        except rex.RedisError:
            continue  # a blip: the next renewal may succeed before the TTL ends


@contextlib.contextmanager
def hold(
    held: HeldLease, renew: Callable[[], bool], release: Callable[[], bool]
) -> Iterator[HeldLease]:
    """Runs the block with ``held``, renewed by a daemon thread, released on exit."""
    thread = threading.Thread(
        target=_renew_loop, args=(held, renew), name=f"okome-lease-{held.id}", daemon=True
    )
    thread.start()
    failed = False
    try:
        yield held
    except BaseException:
        failed = True
        raise
    finally:
        held._stop.set()
        thread.join()
        try:
            release()
        except rex.RedisError:
            if not failed:
                raise  # else the block's own error goes on; the lease expires by itself


async def _renew_task(held: HeldLease, renew: Callable[[], Awaitable[bool]]) -> None:
    while True:
        await asyncio.sleep(held.renew_every_s)
        try:
            if not held.renewed(await renew()):
                return
        except rex.RedisError:
            continue


@contextlib.asynccontextmanager
async def hold_async(
    held: HeldLease,
    renew: Callable[[], Awaitable[bool]],
    release: Callable[[], Awaitable[bool]],
) -> AsyncIterator[HeldLease]:
    """:func:`hold` over asyncio: renewed by a task, released on exit."""
    task = asyncio.ensure_future(_renew_task(held, renew))
    failed = False
    try:
        yield held
    except BaseException:
        failed = True
        raise
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await release()
        except rex.RedisError:
            if not failed:
                raise
