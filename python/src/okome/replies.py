"""okome's replies as frozen dataclasses.

Every parser accepts what redis-py returns with or without
``decode_responses=True`` (``bytes`` or ``str``), over RESP2 or RESP3.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar


class PlanStatus(str, Enum):
    """Field 1 of ``OKOME.PLAN.GET`` / ``OKOME.PLAN.LOOKUP``."""

    HIT = "HIT"
    """The plan is cached: :attr:`PlanReply.plan` holds it."""
    REFRESH = "REFRESH"
    """Cached but about to expire: serve it, recompute with the token."""
    MISS = "MISS"
    """Not cached: with a token, this caller computes it (it holds the lock)."""
    LOCKED = "LOCKED"
    """Another caller holds the lock (and the wait, if any, timed out)."""
    LIMITED = "LIMITED"
    """The agent is over its rate limit; nothing else happened."""
    FAILED = "FAILED"
    """The leader's computation failed (``OKOME.UNLOCK key token FAILED ms
    [message]``): :attr:`PlanReply.message` holds its message and
    :attr:`PlanReply.retry_after_ms` the failure's remaining time. Waiters
    are answered so at once, and lookups of the key that find no plan for
    that long; no lock was taken."""
    SHARED = "SHARED"
    """A waiter given the plan of a leader whose store was ``SKIPPED`` (its
    write budget was spent): :attr:`PlanReply.plan` holds it; not stored."""

    def __str__(self) -> str:
        return self.value


class StoreStatus(str, Enum):
    """Field 1 of ``OKOME.PLAN.SET``."""

    STORED = "STORED"
    SKIPPED = "SKIPPED"
    """The agent's write budget is spent: the plan was not stored (the callers
    waiting for it still get it, as ``SHARED``)."""
    FENCED = "FENCED"
    """``PLAN.SET ... TOKEN t FENCED`` when ``t`` no longer held the lock:
    nothing was written, no budget charged."""

    def __str__(self) -> str:
        return self.value


class RawJSON(str):
    """JSON text to store as is (no ``json.dumps``)."""


def ceil_seconds(ms: int) -> int:
    """Milliseconds as whole seconds, rounded up (``Retry-After``), at least 1."""
    return max(1, math.ceil(ms / 1000))


@dataclass(frozen=True)
class PlanReply:
    """``OKOME.PLAN.GET`` / ``OKOME.PLAN.LOOKUP``:
    ``[status, key, value, ms, token, rate_remaining]``."""

    status: PlanStatus
    key: str
    """The planner key (``X-OKOME-Cache-Key``)."""
    plan: Any
    """The plan, decoded from JSON (``HIT``/``REFRESH``/``SHARED``), else ``None``."""
    raw: str | None
    """The plan's JSON text as stored (``HIT``/``REFRESH``/``SHARED``), else ``None``."""
    ttl_ms: int | None
    """``HIT``/``REFRESH``: the plan's remaining TTL."""
    lock_ttl_ms: int | None
    """``MISS``: the TTL of the lock just taken (``None`` with ``nolock``).
    ``LOCKED``: the lock's remaining TTL (``-2``: gone, not yet handed over)."""
    retry_after_ms: int | None
    """``LIMITED``: when the agent's next request fits. ``FAILED``: the
    failure's remaining time (a lookup then computes again)."""
    token: str | None
    """``MISS``/``REFRESH``: the lock token to store with (``plan_set(..., token=)``)."""
    rate_remaining: int | None
    """The agent's remaining rate (``X-OKOME-Agent-Rate-Remaining``); ``None`` without ``agent``."""
    message: str | None = None
    """``FAILED``: the message the leader published with its failure (``None`` if none)."""

    @property
    def found(self) -> bool:
        """Whether a plan was served (``HIT``, ``REFRESH`` or ``SHARED``)."""
        return self.status in (PlanStatus.HIT, PlanStatus.REFRESH, PlanStatus.SHARED)

    @property
    def retry_after(self) -> int | None:
        """``LIMITED``/``FAILED``: ``Retry-After`` in whole seconds, rounded up."""
        return None if self.retry_after_ms is None else ceil_seconds(self.retry_after_ms)


@dataclass(frozen=True)
class PlanSetReply:
    """``OKOME.PLAN.SET``: ``[status, ttl_ms, wbudget_remaining, lock_released]``."""

    status: StoreStatus
    ttl_ms: int | None
    """``STORED``: the TTL the plan was stored with."""
    wbudget_remaining: int | None
    """The agent's remaining write budget; ``None`` without ``agent``."""
    lock_released: bool
    """Whether the lock was still held with the token and is now released."""

    @property
    def stored(self) -> bool:
        return self.status is StoreStatus.STORED


@dataclass(frozen=True)
class RateReply:
    """``OKOME.RATE`` / ``OKOME.WBUDGET``:
    ``[allowed, remaining, retry_after_ms, reset_after_ms]``."""

    allowed: bool
    remaining: int
    """Units still admissible now (``X-OKOME-Agent-Rate-Remaining``)."""
    retry_after_ms: int
    """0 when allowed; else exactly when the cost will fit."""
    reset_after_ms: int
    """Until the window is empty."""

    @property
    def retry_after(self) -> int:
        """``Retry-After`` in whole seconds, rounded up (0 when allowed)."""
        return 0 if self.allowed else ceil_seconds(self.retry_after_ms)


@dataclass(frozen=True)
class LeaseReply:
    """``OKOME.LEASE.ACQUIRE``: ``[lease, in_use, retry_after_ms]``."""

    lease: str | None
    """The lease id (``{subject}:<32 hex digits>``), or ``None`` when no slot was free."""
    in_use: int
    """Leases live after the call."""
    retry_after_ms: int
    """0 when acquired; else until the soonest lease expires."""

    @property
    def acquired(self) -> bool:
        return self.lease is not None

    @property
    def retry_after(self) -> int:
        """``Retry-After`` in whole seconds, rounded up (0 when acquired)."""
        return 0 if self.acquired else ceil_seconds(self.retry_after_ms)


@dataclass(frozen=True)
class ThrottleReply(RateReply):
    """``OKOME.THROTTLE`` (GCRA): ``[allowed, remaining, retry_after_ms,
    reset_after_ms]``, as :class:`RateReply`: ``remaining`` is the units that
    could still pass now one by one (``X-RateLimit-Remaining``),
    ``reset_after_ms`` the time until the bucket is full again
    (``X-RateLimit-Reset``)."""


@dataclass(frozen=True)
class LimitState:
    """One limit of ``OKOME.TAKE`` / ``OKOME.SETTLE``: ``[remaining,
    retry_after_ms, reset_after_ms]``, as ``OKOME.RATE``'s fields (after the
    call's charge, if admitted)."""

    remaining: int
    """Units still admissible now."""
    retry_after_ms: int
    """0 when this limit admits its cost; else exactly when it will."""
    reset_after_ms: int
    """Until the window is empty."""

    @property
    def retry_after(self) -> int:
        """``Retry-After`` in whole seconds, rounded up (0 when it admits)."""
        return 0 if self.retry_after_ms == 0 else ceil_seconds(self.retry_after_ms)


@dataclass(frozen=True)
class TakeReply:
    """``OKOME.TAKE``: ``[allowed, retry_after_ms, reservation, limits]``."""

    allowed: bool
    """Whether every limit admitted its cost (if not, nothing was charged)."""
    retry_after_ms: int
    """0 when allowed; else the wait until every limit admits its cost (the
    longest of the refusing limits')."""
    reservation: str | None
    """With ``reserve_ms``, when allowed: the id to :meth:`~okome.Okome.settle`
    (``{subject}:<32 hex digits>``; a composite of such ids when the limits
    span several cluster slots); else ``None``."""
    limits: tuple[LimitState, ...]
    """One per limit, in the order given."""

    @property
    def retry_after(self) -> int:
        """``Retry-After`` in whole seconds, rounded up (0 when allowed)."""
        return 0 if self.allowed else ceil_seconds(self.retry_after_ms)


@dataclass(frozen=True)
class SettleReply:
    """``OKOME.SETTLE``: ``[settled, limits]``."""

    settled: bool
    limits: tuple[LimitState, ...]
    """One per limit, in ``take``'s order, after the settlement."""


class LedgerState(str, Enum):
    """What ``OKOME.AGENT.PURGE`` would do with a ledger entry."""

    CURRENT = "current"
    """The key still holds this agent's write: a purge deletes it."""
    REWRITTEN = "rewritten"
    """Written again since (by another agent or anyone): left alone."""
    GONE = "gone"
    """The key no longer exists."""
    ELSEWHERE = "elsewhere"
    """A slot another cluster node serves."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LedgerRecord:
    """``OKOME.AGENT.RECORD``: ``[ttl_ms, ledger_size]``."""

    ttl_ms: int
    """The recorded key's remaining TTL."""
    ledger_size: int
    """Entries in the agent's ledger now."""


@dataclass(frozen=True)
class LedgerEntry:
    """One entry of ``OKOME.AGENT.KEYS``: ``[key, ttl_ms, state]``."""

    key: str
    ttl_ms: int
    state: LedgerState


@dataclass(frozen=True)
class LedgerPage:
    """``OKOME.AGENT.KEYS``: ``[cursor, [[key, ttl_ms, state], ...]]``."""

    cursor: str | None
    """Pass as ``cursor=`` for the next page; ``None`` on the last page."""
    entries: list[LedgerEntry]
    """Live entries, latest-expiring first."""


@dataclass(frozen=True)
class PurgeReply:
    """``OKOME.AGENT.PURGE``: ``[deleted, left, gone, remaining, elsewhere]``."""

    deleted: int
    """Keys deleted (they still held the agent's write)."""
    left: int
    """Keys left alone (rewritten since)."""
    gone: int
    """Entries whose key was already gone."""
    remaining: int
    """Entries still in the ledger: while not 0, purge again."""
    elsewhere: list[tuple[str, int]]
    """``(key, expiry_ms)`` of keys another cluster node serves."""


@dataclass(frozen=True)
class CacheEntry:
    """``OKOME.CACHE.GET``: ``[value, ttl_ms]``."""

    value: Any
    """The value, decoded from JSON."""
    raw: str
    """The value's JSON text as stored."""
    ttl_ms: int


def text(x: Any) -> str:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).decode("utf-8", "surrogateescape")
    return str(x)


def opt_text(x: Any) -> str | None:
    return None if x is None else text(x)


def opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def decode_json(raw: str) -> Any:
    return json.loads(raw)


def encode_json(value: Any) -> str | bytes:
    """A value as the JSON text to store: :class:`RawJSON`, ``bytes`` and
    ``bytearray`` are sent as they are, anything else through ``json.dumps``."""
    if isinstance(value, RawJSON):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _list(reply: Any, n: int, what: str) -> list[Any]:
    if not isinstance(reply, (list, tuple)) or len(reply) != n:
        raise ValueError(f"unexpected reply to {what}: {reply!r}")
    return list(reply)


_STATUSES: dict[Any, PlanStatus] = {
    **{s.value: s for s in PlanStatus},
    **{s.value.encode(): s for s in PlanStatus},
}
_SERVED = (PlanStatus.HIT, PlanStatus.REFRESH, PlanStatus.SHARED)


def parse_plan(reply: Any) -> PlanReply:
    if type(reply) is list and len(reply) == 6:
        status_s, key, value, ms, token, remaining = reply
        if type(status_s) is bytes and type(key) is bytes and type(value) is bytes:
            status = _STATUSES.get(status_s)
            if status in _SERVED and token is None and type(ms) is int:
                return _served(status, key, value, ms, remaining)  # the hit path
    return _parse_plan(reply)


def _served(status: PlanStatus, key: bytes, value: bytes, ms: int, remaining: Any) -> PlanReply:
    """:func:`_parse_plan` of a plan served (``HIT``, ``SHARED``, ``REFRESH``
    without a token) as redis-py returns it without ``decode_responses``;
    the same reply, built without the frozen dataclass's per-field
    ``__setattr__`` (test_replies checks the two agree)."""
    raw = value.decode("utf-8", "surrogateescape")
    reply = object.__new__(PlanReply)
    reply.__dict__.update(
        status=status,
        key=key.decode("utf-8", "surrogateescape"),
        plan=decode_json(raw),
        raw=raw,
        ttl_ms=ms if status is not PlanStatus.SHARED else None,
        lock_ttl_ms=None,
        retry_after_ms=None,
        token=None,
        rate_remaining=None if remaining is None else int(remaining),
        message=None,
    )
    return reply


def _parse_plan(reply: Any) -> PlanReply:
    status_s, key, value, ms, token, remaining = _list(reply, 6, "OKOME.PLAN.GET")
    status = PlanStatus(text(status_s))
    failed = status is PlanStatus.FAILED
    raw = None if failed else opt_text(value)
    msv = opt_int(ms)
    return PlanReply(
        status=status,
        key=text(key),
        plan=None if raw is None else decode_json(raw),
        raw=raw,
        ttl_ms=msv if status in (PlanStatus.HIT, PlanStatus.REFRESH) else None,
        lock_ttl_ms=msv if status in (PlanStatus.MISS, PlanStatus.LOCKED) else None,
        retry_after_ms=msv if status in (PlanStatus.LIMITED, PlanStatus.FAILED) else None,
        token=opt_text(token),
        rate_remaining=opt_int(remaining),
        message=opt_text(value) if failed else None,
    )


def parse_plan_set(reply: Any) -> PlanSetReply:
    status, ttl_ms, remaining, released = _list(reply, 4, "OKOME.PLAN.SET")
    return PlanSetReply(
        status=StoreStatus(text(status)),
        ttl_ms=opt_int(ttl_ms),
        wbudget_remaining=opt_int(remaining),
        lock_released=bool(int(released)),
    )


R = TypeVar("R", bound=RateReply)


def _decision(reply: Any, cls: type[R], command: str) -> R:
    allowed, remaining, retry_ms, reset_ms = _list(reply, 4, command)
    return cls(
        allowed=bool(int(allowed)),
        remaining=int(remaining),
        retry_after_ms=int(retry_ms),
        reset_after_ms=int(reset_ms),
    )


def parse_lease(reply: Any) -> LeaseReply:
    lease, in_use, retry_ms = _list(reply, 3, "OKOME.LEASE.ACQUIRE")
    return LeaseReply(lease=opt_text(lease), in_use=int(in_use), retry_after_ms=int(retry_ms))


def parse_rate(reply: Any) -> RateReply:
    return _decision(reply, RateReply, "OKOME.RATE")


def parse_throttle(reply: Any) -> ThrottleReply:
    return _decision(reply, ThrottleReply, "OKOME.THROTTLE")


def _limit_states(reply: Any, command: str) -> tuple[LimitState, ...]:
    if not isinstance(reply, (list, tuple)):
        raise ValueError(f"unexpected limits in the reply to {command}: {reply!r}")
    out = []
    for one in reply:
        remaining, retry_ms, reset_ms = _list(one, 3, f"{command} limit")
        out.append(LimitState(int(remaining), int(retry_ms), int(reset_ms)))
    return tuple(out)


def parse_take(reply: Any) -> TakeReply:
    allowed, retry_ms, reservation, limits = _list(reply, 4, "OKOME.TAKE")
    return TakeReply(
        allowed=bool(int(allowed)),
        retry_after_ms=int(retry_ms),
        reservation=opt_text(reservation),
        limits=_limit_states(limits, "OKOME.TAKE"),
    )


def parse_settle(reply: Any) -> SettleReply:
    settled, limits = _list(reply, 2, "OKOME.SETTLE")
    return SettleReply(settled=bool(int(settled)), limits=_limit_states(limits, "OKOME.SETTLE"))


def parse_cache_get(reply: Any) -> CacheEntry | None:
    if reply is None:
        return None
    value, ttl_ms = _list(reply, 2, "OKOME.CACHE.GET")
    raw = text(value)
    return CacheEntry(value=decode_json(raw), raw=raw, ttl_ms=int(ttl_ms))


def parse_ledger_record(reply: Any) -> LedgerRecord:
    ttl_ms, size = _list(reply, 2, "OKOME.AGENT.RECORD")
    return LedgerRecord(ttl_ms=int(ttl_ms), ledger_size=int(size))


def parse_ledger_page(reply: Any) -> LedgerPage:
    cursor, entries = _list(reply, 2, "OKOME.AGENT.KEYS")
    c = text(cursor)
    return LedgerPage(
        cursor=None if c == "0" else c,
        entries=[
            LedgerEntry(key=text(k), ttl_ms=int(t), state=LedgerState(text(s)))
            for k, t, s in (_list(e, 3, "OKOME.AGENT.KEYS entry") for e in entries)
        ],
    )


def parse_purge(reply: Any) -> PurgeReply:
    deleted, left, gone, remaining, elsewhere = _list(reply, 5, "OKOME.AGENT.PURGE")
    return PurgeReply(
        deleted=int(deleted),
        left=int(left),
        gone=int(gone),
        remaining=int(remaining),
        elsewhere=[(text(k), int(at)) for k, at in (_list(e, 2, "elsewhere") for e in elsewhere)],
    )


def parse_bool(reply: Any) -> bool:
    return bool(int(reply))


def parse_int(reply: Any) -> int:
    return int(reply)


def parse_text(reply: Any) -> str:
    return text(reply)


def parse_opt_text(reply: Any) -> str | None:
    return opt_text(reply)


def parse_info(raw: Any) -> dict[str, Any]:
    """``INFO okome`` as a dict, with or without redis-py's INFO parsing."""
    if isinstance(raw, dict):
        return {str(k): v for k, v in raw.items()}
    out: dict[str, Any] = {}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            try:
                out[k] = int(v)
            except ValueError:
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
    return out


@dataclass(frozen=True)
class ModuleCheck:
    """:meth:`okome.Okome.check`: the server okome runs on."""

    server: str
    """The server and its version, from ``INFO server`` (``"redis 7.0.15"``)."""
    module_version: int | None
    """okome's version as ``MODULE LIST`` gives it; ``None`` if ``MODULE
    LIST`` was refused (say, by an ACL) and the commands were found with
    ``COMMAND INFO`` instead."""


def server_name(info: dict[str, Any]) -> str:
    """``"redis 7.0.15"`` / ``"valkey 9.0.0"`` from ``INFO server``."""
    name = str(info.get("server_name") or "redis")
    version = info.get(f"{name}_version") or info.get("redis_version") or "?"
    return f"{name} {version}"


def parse_modules(reply: Any) -> dict[str, int | None]:
    """``MODULE LIST`` as ``{name: version}``, whatever redis-py made of it
    (a list of dicts, or of flat name/value lists)."""
    out: dict[str, int | None] = {}
    for entry in reply or ():
        if isinstance(entry, dict):
            fields = {text(k): v for k, v in entry.items()}
        else:
            items = list(entry)
            fields = {text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
        if "name" in fields:
            try:
                out[text(fields["name"])] = opt_int(fields.get("ver"))
            except ValueError:
                out[text(fields["name"])] = None
    return out
