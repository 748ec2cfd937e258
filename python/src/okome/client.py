"""``okome.Okome``: one method per okome command, over redis-py's sync clients;
and what :mod:`okome.aio.client`, its asyncio twin, shares with it
(:class:`ClientBase`, :func:`parse_info`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

import redis
from redis.cluster import RedisCluster

from . import _commands as cmd
from . import _keys
from ._commands import One, Steps, T
from ._sync import Cluster, Standalone, transport
from .leases import HeldLease, hold, taken
from .limits import Limit
from .replies import (
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
    parse_info,
)

__all__ = ["ClientBase", "Okome", "parse_info"]


class Transport(Protocol):
    """What a client's transport (:mod:`okome._sync`, :mod:`okome._async`) tells it."""

    cluster: bool


X = TypeVar("X", bound=Transport)


class ClientBase(Generic[X]):
    """What :class:`Okome` and :class:`okome.aio.Okome` share: the redis-py
    client, its transport, and what needs no round trip."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._transport = self._connect(client)

    def _connect(self, client: Any) -> X:
        """The transport for ``client`` (``TypeError`` if it cannot serve it)."""
        raise NotImplementedError

    @property
    def is_cluster(self) -> bool:
        return self._transport.cluster

    @staticmethod
    def planner_key(
        model: str | bytes,
        prompt: str | bytes,
        toolset_version: str | bytes,
        repo_hash: str | bytes,
    ) -> str:
        """The planner key, computed locally (no round trip), as ``OKOME.KEY planner`` does."""
        return _keys.planner_key(model, prompt, toolset_version, repo_hash)


def _nolock(
    lock: bool,
    nolock: bool,
    lock_ttl_ms: int | None,
    wait_ms: int | None,
    refresh_ahead_ms: int | None,
) -> bool:
    """Whether ``plan_get``/``plan_lookup`` send ``NOLOCK``: unless
    ``lock=True`` (``lock=False`` is the default), refusing what needs the
    lock; ``ValueError`` for ``lock=True`` with ``nolock=True``."""
    if lock and not nolock:
        return False
    if lock:
        raise ValueError("lock=True and nolock=True exclude each other")
    for name, value in (
        ("lock_ttl_ms", lock_ttl_ms),
        ("wait_ms", wait_ms),
        ("refresh_ahead_ms", refresh_ahead_ms or None),
    ):
        if value is not None:
            raise ValueError(
                f"{name} needs lock=True: without it a lookup takes no lock (NOLOCK), "
                "and neither waits for one nor refreshes (which take it)"
            )
    return True


class Okome(ClientBase["Standalone | Cluster"]):  # quoted: no X | Y at run time on 3.9
    """okome's commands over a ``redis.Redis`` or ``redis.cluster.RedisCluster``.

    >>> ok = Okome(redis.Redis())
    >>> ok.plan_get("llama3:8b", "Create a plan", "v1", "abc123")
    PlanReply(status=<PlanStatus.MISS: 'MISS'>, key='okome:planner:llama3%3A8b:{...}...', ...)

    Works with and without ``decode_responses=True``. On a cluster every call
    goes to the node that serves its key in one round trip (the planner key
    is computed locally, as the module computes it). Calls with ``wait_ms``
    block in the server; they get a connection of their own and a read
    timeout above the wait, and are never re-sent by redis-py's retry.
    """

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        super().__init__(client)

    def _connect(self, client: Any) -> Standalone | Cluster:
        return transport(client)

    def _drive(self, steps: Steps[T] | One[T], on: Standalone | Cluster | None = None) -> T:
        transport = self._transport if on is None else on
        if type(steps) is One:
            one: T = transport.execute(steps.call)
            return one
        assert not isinstance(steps, One)
        try:
            call = next(steps)
            while True:
                try:
                    answer = transport.execute(call)
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

    def plan_get(
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
        """``OKOME.PLAN.GET model prompt_hash toolset_version repo_hash HASHED
        [AGENT agent LIMIT limit WINDOW window] [LOCKTTL ms | NOLOCK] [WAIT ms]
        [REFRESHAHEAD ms]``: the prompt is hashed here (SHA-256), never sent.

        A lookup takes no lock unless told to: without ``lock=True`` it is
        sent with ``NOLOCK`` (a ``MISS`` has no token, and nothing blocks the
        next caller), and ``lock_ttl_ms``, ``wait_ms`` and ``refresh_ahead_ms``
        (which take or wait for the lock) raise ``ValueError``. With
        ``lock=True`` a ``MISS`` (or ``REFRESH``) takes the plan's lock
        (``LOCKTTL lock_ttl_ms``, default the server's): store with
        ``plan_set(key, plan, token=reply.token)`` or ``unlock`` it.
        (``nolock=True``, the default now, is kept for older code.)

        On a cluster: ``OKOME.PLAN.LOOKUP`` with the key computed locally, on
        the node serving it (and ``OKOME.RATE`` on the agent's node first when
        the agent's window is in another slot)."""
        return self._drive(
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

    def plan_lookup(
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
        """``OKOME.PLAN.LOOKUP key [options]``: :meth:`plan_get` by planner key."""
        return self._drive(
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

    def plan_set(
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
        """``OKOME.PLAN.SET key plan_json [TTL s] [TOKEN token] [AGENT agent
        WLIMIT write_limit [WWINDOW write_window]]``. ``plan`` is encoded with
        ``json.dumps`` (pass :class:`okome.RawJSON` or bytes to send JSON text as is).
        With ``agent``, the plan is recorded in the agent's ledger, and charged
        to its write budget with ``write_limit``. With ``fenced`` (needs
        ``token``): stored only while ``token`` holds the lock, else status
        ``FENCED`` and nothing written (``PLAN.SET ... TOKEN t FENCED``)."""
        return self._drive(
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

    def lock(self, key: str, *, ttl_ms: int | None = None) -> str | None:
        """``OKOME.LOCK key [TTL ms]``: a new token, or ``None`` if the lock is held."""
        return self._drive(cmd.lock(key, ttl_ms))

    def extend_lock(self, key: str, token: str, *, ttl_ms: int | None = None) -> bool:
        """``OKOME.LOCK key [TTL ms] TOKEN token``: extend a lock you hold (a heartbeat)."""
        return self._drive(cmd.extend_lock(key, token, ttl_ms))

    def unlock(
        self, key: str, token: str, *, failed_ms: int | None = None, message: str | None = None
    ) -> bool:
        """``OKOME.UNLOCK key token [FAILED ms [message]]``: release if held with
        ``token``. With ``failed_ms`` the computation failed: every caller
        waiting for the plan is answered ``FAILED`` (with ``message``) at once,
        and lookups that find no plan are answered ``FAILED`` for ``failed_ms``
        more (0 to 60000)."""
        return self._drive(cmd.unlock(key, token, failed_ms, message))

    # -- budgets ---------------------------------------------------------------

    def rate(
        self,
        agent: str | bytes,
        limit: int,
        window: int,
        *,
        cost: int | None = None,
        name: str | bytes | None = None,
    ) -> RateReply:
        """``OKOME.RATE agent limit window [COST n] [NAME name]``: sliding
        window; ``name`` picks one of the agent's named windows
        (``okome:budget:rate:{agent}:name``; ``"default"`` is the unnamed
        one). ``limit`` and ``cost`` go up to 10**15."""
        return self._drive(cmd.rate(agent, limit, window, cost, name))

    def wbudget(
        self,
        agent: str | bytes,
        write_limit: int,
        *,
        window: int | None = None,
        cost: int | None = None,
    ) -> RateReply:
        """``OKOME.WBUDGET agent write_limit [WINDOW s] [COST n]``."""
        return self._drive(cmd.wbudget(agent, write_limit, window, cost))

    # -- concurrency leases ------------------------------------------------------

    def lease_acquire(
        self,
        subject: str | bytes,
        max: int,
        ttl_ms: int,
        *,
        wait_ms: int | None = None,
        name: str | bytes | None = None,
    ) -> LeaseReply:
        """``OKOME.LEASE.ACQUIRE subject max ttl_ms [WAIT ms] [NAME name]``: at most
        ``max`` leases of ``subject`` at once; routed by the pool's key on a cluster."""
        return self._drive(cmd.lease_acquire(subject, max, ttl_ms, wait_ms, name))

    def lease_renew(self, lease: str, ttl_ms: int) -> bool:
        """``OKOME.LEASE.RENEW lease ttl_ms``: ``False`` if the lease is gone."""
        return self._drive(cmd.lease_renew(lease, ttl_ms))

    def lease_release(self, lease: str) -> bool:
        """``OKOME.LEASE.RELEASE lease``: ``False`` if it was gone."""
        return self._drive(cmd.lease_release(lease))

    def lease(
        self,
        subject: str | bytes,
        max: int,
        ttl_ms: int,
        *,
        wait_ms: int | None = None,
        name: str | bytes | None = None,
    ) -> AbstractContextManager[HeldLease]:
        """A lease for a ``with`` block: taken on entry
        (:class:`~okome.errors.LeaseUnavailable` if none was free), renewed every
        third of ``ttl_ms`` in the background, released on exit (see :mod:`okome.leases`)."""
        reply = self.lease_acquire(subject, max, ttl_ms, wait_ms=wait_ms, name=name)
        held = taken(subject, ttl_ms, reply)
        return hold(
            held,
            lambda: self.lease_renew(held.id, ttl_ms),
            lambda: self.lease_release(held.id),
        )

    def throttle(
        self,
        subject: str | bytes,
        rate: int,
        period_s: int,
        burst: int,
        *,
        cost: int = 1,
        name: str | bytes | None = None,
    ) -> ThrottleReply:
        """``OKOME.THROTTLE subject rate period_s burst [COST n] [NAME name]``:
        GCRA, ``rate`` per ``period_s`` on average and ``burst + 1`` at once from
        a full bucket (nginx's ``rate=20r/s burst=60 nodelay`` is ``20, 1, 60``)."""
        return self._drive(cmd.throttle(subject, rate, period_s, burst, cost, name))

    # -- several limits, all or nothing ------------------------------------------

    def take(self, limits: Sequence[Limit], reserve_ms: int | None = None) -> TakeReply:
        """``OKOME.TAKE n subject name limit window_s cost ... [RESERVE ttl_ms]``:
        every :class:`~okome.Limit` admits its cost, or none is charged.

        With ``reserve_ms`` (1000 to 3600000) the charge is a reservation:
        :meth:`settle` its ``reply.reservation`` with the actual costs once
        known; one never settled keeps its costs (its record expires after
        ``reserve_ms``).

        On a cluster, limits of subjects in one slot are one ``OKOME.TAKE``
        (routed by the first limit's window). Limits in several slots are
        composed: one ``OKOME.TAKE ... RESERVE`` per slot, and if any slot
        refuses (or fails), every granted one is cancelled: the reply is a
        refusal whose ``retry_after_ms`` is the longest, and nothing stays
        charged. Then ``reservation`` is a composite id (the slots' ids with
        the positions of their limits, joined by ``;``) that :meth:`settle`
        takes as it takes one id."""
        return self._drive(cmd.take(self.is_cluster, limits, reserve_ms))

    def settle(self, reservation: str, costs: Sequence[int]) -> SettleReply:
        """``OKOME.SETTLE reservation cost ...``: the actual cost of each limit,
        in :meth:`take`'s order. Less than reserved is given back, more is
        charged (beyond the limit if need be), all zeros cancel. Settling
        again with the same costs replies the same; with other costs, or
        once the reservation expired, :class:`~okome.ReservationError`."""
        return self._drive(cmd.settle(reservation, costs))

    # -- other caches ----------------------------------------------------------

    def cache_get(self, kind: str, *parts: str | bytes) -> CacheEntry | None:
        """``OKOME.CACHE.GET kind part...``: the entry, or ``None``."""
        return self._drive(cmd.cache_get(kind, parts))

    def cache_set(
        self,
        kind: str,
        *parts: str | bytes,
        value: Any,
        ttl: int | None = None,
        agent: str | bytes | None = None,
    ) -> int:
        """``OKOME.CACHE.SET kind part... value_json [TTL s] [AGENT agent]``: the
        TTL stored, in ms. With ``agent``, the key is recorded in its ledger."""
        return self._drive(cmd.cache_set(self.is_cluster, kind, parts, value, ttl, agent))

    # -- the agent ledger ------------------------------------------------------

    def agent_record(
        self, agent: str | bytes, key: str, *, pxat: int | None = None
    ) -> LedgerRecord:
        """``OKOME.AGENT.RECORD agent key [PXAT ms]``: record in the agent's
        ledger a write made some other way (on a cluster, with the key on
        another node, its expiry is read there first)."""
        return self._drive(cmd.agent_record(self.is_cluster, agent, key, pxat))

    def agent_keys(
        self, agent: str | bytes, *, count: int | None = None, cursor: str | None = None
    ) -> LedgerPage:
        """``OKOME.AGENT.KEYS agent [COUNT n] [CURSOR c]``: one page of the ledger."""
        return self._drive(cmd.agent_keys(agent, count, cursor))

    def iter_agent_keys(
        self, agent: str | bytes, *, count: int | None = None
    ) -> Iterator[LedgerEntry]:
        """Every live entry of the agent's ledger, page after page."""
        cursor: str | None = None
        while True:
            page = self.agent_keys(agent, count=count, cursor=cursor)
            yield from page.entries
            if page.cursor is None:
                return
            cursor = page.cursor

    def agent_purge(self, agent: str | bytes, *, count: int | None = None) -> PurgeReply:
        """``OKOME.AGENT.PURGE agent [COUNT n]``: delete the keys that still hold
        the agent's writes (call again while ``remaining`` is not 0)."""
        return self._drive(cmd.agent_purge(agent, count))

    # -- keys and counters -----------------------------------------------------

    def key(self, kind: str, *parts: str | bytes) -> str:
        """``OKOME.KEY kind part...``: the canonical key (for ``planner``: model,
        prompt, toolset_version, repo_hash)."""
        return self._drive(cmd.key(kind, parts))

    def stats(self) -> dict[str, Any]:
        """``INFO okome`` (on a cluster: of the default node). On a server
        without okome (``INFO okome`` empty): :class:`~okome.ModuleNotLoadedError`."""
        info = parse_info(self._drive(cmd.info()))
        if not info:
            self.check()
        return info

    def check(self) -> ModuleCheck:
        """Whether the server runs okome, for an app's startup or readiness
        probe: ``INFO server`` and ``MODULE LIST`` (``COMMAND INFO`` if an ACL
        refuses it); on a cluster, on every primary. Raises
        :class:`~okome.ModuleNotLoadedError` (saying to load ``libokome.so``
        and what the server runs) if okome is not loaded, and redis-py's
        ``ConnectionError`` if the server cannot be reached."""
        if not self.is_cluster:
            return self._drive(cmd.check())
        found: ModuleCheck | None = None
        for node in self.client.get_primaries():
            on = Standalone(self.client.get_redis_connection(node))
            found = self._drive(cmd.check(f"{node.host}:{node.port}"), on)
        assert found is not None, "a cluster without primaries"
        return found
