"""``okome.Planner``: README's "Leader and followers" protocol in one call;
and what :mod:`okome.aio.planner`, its asyncio twin, shares with it
(:class:`PlanResult`, :class:`Options`, :class:`PlannerBase`, ...)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypedDict, TypeVar

from .client import Okome
from .errors import PlanLocked, RateLimited
from .replies import PlanReply, PlanStatus, RawJSON, StoreStatus, encode_json

log = logging.getLogger("okome")

C = TypeVar("C")


@dataclass(frozen=True)
class PlanResult:
    """What a planner request answers with."""

    plan: Any
    """The plan (decoded JSON when served from the cache, as computed otherwise)."""
    status: PlanStatus
    """``HIT``, ``REFRESH`` (served from the cache, recomputing in the
    background) or ``MISS`` (this call computed it)."""
    key: str
    """The planner key."""
    rate_remaining: int | None
    """The agent's remaining rate, ``None`` without an agent."""
    computed: bool
    """Whether this call ran ``compute``."""
    stored: StoreStatus | None = None
    """For a computed plan: ``STORED``, or ``SKIPPED`` (the write budget is spent)."""
    ttl_ms: int | None = None
    """For a served plan: its remaining TTL."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """``X-OKOME-Cache`` (``HIT``/``MISS``), ``X-OKOME-Cache-Key``,
    ``X-OKOME-Agent-Rate-Remaining`` (with an agent), ``X-OKOME-Cache-Write``
    (``STORED``/``SKIPPED``, for a computed plan)."""

    @property
    def cache(self) -> str:
        """``HIT`` or ``MISS``, as ``X-OKOME-Cache`` says."""
        return "MISS" if self.status is PlanStatus.MISS else "HIT"


def make_headers(
    status: PlanStatus, key: str, rate_remaining: int | None, stored: StoreStatus | None
) -> dict[str, str]:
    headers = {
        "X-OKOME-Cache": "MISS" if status is PlanStatus.MISS else "HIT",
        "X-OKOME-Cache-Key": key,
    }
    if rate_remaining is not None:
        headers["X-OKOME-Agent-Rate-Remaining"] = str(rate_remaining)
    if stored is not None:
        headers["X-OKOME-Cache-Write"] = stored.value
    return headers


def served(reply: PlanReply) -> PlanResult:
    return PlanResult(
        plan=reply.plan,
        status=reply.status,
        key=reply.key,
        rate_remaining=reply.rate_remaining,
        computed=False,
        ttl_ms=reply.ttl_ms,
        headers=make_headers(reply.status, reply.key, reply.rate_remaining, None),
    )


def computed(reply: PlanReply, plan: Any, stored: StoreStatus) -> PlanResult:
    return PlanResult(
        plan=plan,
        status=PlanStatus.MISS,
        key=reply.key,
        rate_remaining=reply.rate_remaining,
        computed=True,
        stored=stored,
        headers=make_headers(PlanStatus.MISS, reply.key, reply.rate_remaining, stored),
    )


def refused(reply: PlanReply, agent: Any) -> Exception:
    """The exception for a ``LIMITED`` or ``LOCKED`` reply."""
    if reply.status is PlanStatus.LIMITED:
        return RateLimited(reply.retry_after_ms or 0, key=reply.key, agent=_agent_text(agent))
    return PlanLocked(reply.lock_ttl_ms, key=reply.key, rate_remaining=reply.rate_remaining)


def _agent_text(agent: Any) -> str | None:
    if agent is None:
        return None
    return agent.decode("utf-8", "replace") if isinstance(agent, bytes) else str(agent)


def heartbeat_interval(lock_ttl_ms: int | None, heartbeat_ms: int | None) -> float:
    """Seconds between lock extensions: a third of the lock's TTL by default."""
    if heartbeat_ms is not None:
        return max(heartbeat_ms, 1) / 1000.0
    return max(lock_ttl_ms or 9000, 30) / 3000.0


def plan_json(plan: Any) -> bytes | RawJSON:
    """The JSON text a leader stores for ``plan``; raises if ``plan`` cannot
    be encoded (call it while holding the lock)."""
    value = encode_json(plan)
    return value if isinstance(value, bytes) else RawJSON(value)


class Lookup(TypedDict):
    """The keywords of a planner request's ``plan_get``."""

    agent: str | bytes | None
    limit: int | None
    window: int | None
    lock_ttl_ms: int | None
    wait_ms: int | None
    refresh_ahead_ms: int | None


class Store(TypedDict):
    """The keywords of a leader's ``plan_set``."""

    ttl: int | None
    token: str | None
    agent: str | bytes | None
    write_limit: int | None
    write_window: int | None


@dataclass(frozen=True)
class Options:
    """A planner's settings (every ``get_or_compute`` keyword that is ``None``
    takes the planner's value)."""

    limit: int = 60
    window: int = 60
    write_limit: int | None = 30
    write_window: int | None = None
    wait_ms: int = 10_000
    refresh_ahead_ms: int = 60_000
    ttl: int | None = None
    lock_ttl_ms: int | None = None
    heartbeat_ms: int | None = None

    def merge(self, **overrides: Any) -> Options:
        values = {k: v for k, v in overrides.items() if v is not None}
        return Options(**{**self.__dict__, **values})

    def lookup(self, agent: str | bytes | None) -> Lookup:
        """A request's ``plan_get`` keywords (the agent's rate only with an agent)."""
        return Lookup(
            agent=agent,
            limit=self.limit if agent is not None else None,
            window=self.window if agent is not None else None,
            lock_ttl_ms=self.lock_ttl_ms,
            wait_ms=self.wait_ms or None,
            refresh_ahead_ms=self.refresh_ahead_ms,
        )

    def store(self, token: str | None, agent: str | bytes | None) -> Store:
        """A leader's ``plan_set`` keywords (the agent's write budget only with
        an agent and a ``write_limit``)."""
        return Store(
            ttl=self.ttl,
            token=token,
            agent=agent if self.write_limit is not None else None,
            write_limit=self.write_limit if agent is not None else None,
            write_window=self.write_window if agent is not None else None,
        )


class PlannerBase(Generic[C]):
    """What :class:`Planner` and :class:`okome.aio.Planner` share: the client
    (``okome``) and the settings (``options``) they are made with."""

    okome: C

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
        self.okome = self._wrap(client)
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
        self._start()

    def _wrap(self, client: Any) -> C:
        """``client`` as the planner's okome client (``okome`` itself if it is one)."""
        raise NotImplementedError

    def _start(self) -> None:
        """Set up what runs the background work (after ``okome`` and ``options``)."""


class Planner(PlannerBase[Okome]):
    """The planner protocol over a sync client.

    ``get_or_compute`` makes one ``PLAN.GET ... WAIT ... REFRESHAHEAD ...``
    per request and then:

    - ``HIT``: returns the cached plan;
    - ``MISS`` with a token (this call leads): runs ``compute()`` while a
      heartbeat thread extends the lock every third of its TTL (``OKOME.LOCK key TTL ms
      TOKEN t``), then one ``PLAN.SET key plan TOKEN t AGENT a WLIMIT n``,
      which answers every waiting follower at once. If ``compute`` raises,
      ``OKOME.UNLOCK`` hands the lock to the longest-waiting follower at once
      and the exception propagates;
    - ``REFRESH``: returns the cached plan and recomputes it in a background
      thread (exactly one caller gets ``REFRESH``); see :meth:`wait_background`;
    - ``LIMITED``: raises :class:`okome.RateLimited` (``429``, ``Retry-After``);
    - ``LOCKED`` (the wait timed out): raises :class:`okome.PlanLocked` (``503``).
    """

    def _wrap(self, client: Any) -> Okome:
        return client if isinstance(client, Okome) else Okome(client)

    def _start(self) -> None:
        self._background: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._heartbeats = _Heartbeats(self.okome)

    def get_or_compute(
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
        """The plan for ``(model, prompt, toolset_version, repo_hash)``: from the
        cache, from the caller computing it right now, or from ``compute()``."""
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
        reply = self.okome.plan_get(model, prompt, toolset_version, repo_hash, **o.lookup(agent))
        if reply.status is PlanStatus.HIT:
            return served(reply)
        if reply.status is PlanStatus.REFRESH:
            self._refresh_in_background(reply, compute, agent, o)
            return served(reply)
        if reply.status is PlanStatus.MISS:
            plan, stored = self._lead(reply, compute, agent, o)
            return computed(reply, plan, stored)
        raise refused(reply, agent)

    def _lead(
        self, reply: PlanReply, compute: Callable[[], Any], agent: Any, o: Options
    ) -> tuple[Any, StoreStatus]:
        """Compute under the lock ``reply`` granted, then store and release it."""
        token = reply.token
        lease = None
        if token is not None:
            lock_ttl = reply.lock_ttl_ms or o.lock_ttl_ms  # REFRESH carries the plan's TTL
            interval = heartbeat_interval(lock_ttl, o.heartbeat_ms)
            lease = self._heartbeats.add(reply.key, token, lock_ttl, interval)
        try:
            try:
                plan = compute()
                value = plan_json(plan)  # refuse an unencodable plan while we hold the lock
            finally:
                if lease is not None:
                    self._heartbeats.remove(lease)
            set_reply = self.okome.plan_set(reply.key, value, **o.store(token, agent))
        except BaseException:
            if token is not None:
                self._release(reply.key, token)
            raise
        return plan, set_reply.status

    def _release(self, key: str, token: str) -> None:
        try:
            self.okome.unlock(key, token)
        except Exception:
            log.exception("okome: could not release the lock of %s", key)

    def _refresh_in_background(
        self, reply: PlanReply, compute: Callable[[], Any], agent: Any, o: Options
    ) -> None:
        def run() -> None:
            try:
                self._lead(reply, compute, agent, o)
            except Exception:
                log.exception("okome: background refresh of %s failed", reply.key)
            finally:
                with self._lock:
                    self._background.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"okome-refresh {reply.key}", daemon=True)
        with self._lock:
            self._background.add(thread)
        thread.start()

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait for the background refreshes started so far; ``True`` if all ended."""
        with self._lock:
            threads = list(self._background)
        for t in threads:
            t.join(timeout)
        return not any(t.is_alive() for t in threads)


class _Lease:
    """A lock being kept alive."""

    def __init__(self, key: str, token: str, ttl_ms: int | None, interval: float) -> None:
        self.key, self.token, self.ttl_ms, self.interval = key, token, ttl_ms, interval
        self.due = time.monotonic() + interval
        self.active = True


class _Heartbeats:
    """One thread per planner extends every lock whose computation is still
    running (``OKOME.LOCK key TTL ms TOKEN t`` every ``interval``); starting
    a thread per miss would cost more than the miss's two round trips."""

    def __init__(self, okome: Okome) -> None:
        self.okome = okome
        self._cond = threading.Condition()
        self._leases: set[_Lease] = set()
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None  # when the thread wakes next; None: when told

    def add(self, key: str, token: str, ttl_ms: int | None, interval: float) -> _Lease:
        lease = _Lease(key, token, ttl_ms, interval)
        with self._cond:
            self._leases.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="okome-heartbeat", daemon=True
                )
                self._thread.start()
            if self._deadline is None or lease.due < self._deadline:
                # Only then: waking the thread on every miss would cost more
                # than the miss (a wake up and a GIL hand-off).
                self._cond.notify()
        return lease

    def remove(self, lease: _Lease) -> None:
        with self._cond:
            lease.active = False
            self._leases.discard(lease)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [lease for lease in self._leases if lease.due <= now]
                if not due:
                    self._deadline = min((lease.due for lease in self._leases), default=None)
                    self._cond.wait(None if self._deadline is None else self._deadline - now)
                    continue
                for lease in due:
                    lease.due = now + lease.interval
            for lease in due:
                self._extend(lease)

    def _extend(self, lease: _Lease) -> None:
        try:
            held = self.okome.extend_lock(lease.key, lease.token, ttl_ms=lease.ttl_ms)
        except Exception:
            log.exception("okome: heartbeat of %s failed", lease.key)
            return
        if not held and lease.active:
            log.warning("okome: lost the lock of %s while computing", lease.key)
            self.remove(lease)
