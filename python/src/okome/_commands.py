"""What each okome method sends, independent of I/O.

Each builder is a generator: it yields the :class:`Call` objects to run (one
for almost every method; two where Redis Cluster must split an agent charge
from a plan in another slot) and returns the method's result. The sync and
the asyncio client drive the same builders, so both send exactly the same
commands.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from redis import exceptions as rex

from . import _keys
from .errors import ArgumentError, ModuleNotLoadedError
from .limits import Limit
from .replies import (
    CacheEntry,
    LeaseReply,
    LedgerPage,
    LedgerRecord,
    LimitState,
    ModuleCheck,
    PlanReply,
    PlanSetReply,
    PlanStatus,
    PurgeReply,
    RateReply,
    SettleReply,
    StoreStatus,
    TakeReply,
    ThrottleReply,
    encode_json,
    parse_bool,
    parse_cache_get,
    parse_info,
    parse_int,
    parse_lease,
    parse_ledger_page,
    parse_ledger_record,
    parse_modules,
    parse_opt_text,
    parse_plan,
    parse_plan_set,
    parse_purge,
    parse_rate,
    parse_settle,
    parse_take,
    parse_text,
    parse_throttle,
    server_name,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One command: its arguments, how to parse the reply, the key whose slot
    serves it on a cluster (``None``: any node), how long it may block in the
    server (``WAIT``), and commands pipelined after it in the same round trip
    (then ``parse`` gets the list of all replies)."""

    args: tuple[Any, ...]
    parse: Callable[[Any], Any]
    route: str | None = None
    wait_ms: int | None = None
    more: tuple[tuple[Any, ...], ...] = ()
    wait_at: int | None = None
    """Where ``"WAIT"`` is in ``args`` (its milliseconds follow), for :meth:`waiting`."""
    packed: dict[Any, Any] | None = field(default=None, compare=False, repr=False)
    """For a call sent again and again (a memoised planner lookup): its
    command as packed for the wire, per kind of connection (see
    :func:`okome._sync.packed`); ``None``: packed on each send."""

    def waiting(self, ms: int | None) -> Call:
        """This call blocking at most ``ms`` (``None``: not at all, ``WAIT``
        dropped); for a caller that queued in the client for part of its wait."""
        if self.wait_at is None or self.wait_ms is None:
            return self
        at = self.wait_at
        if ms is None:
            args = (*self.args[:at], *self.args[at + 2 :])
            return dataclasses.replace(self, args=args, wait_ms=None, wait_at=None, packed=None)
        args = (*self.args[: at + 1], ms, *self.args[at + 2 :])
        return dataclasses.replace(self, args=args, wait_ms=ms, packed=None)


def _blocking(
    args: tuple[Any, ...], parse: Callable[[Any], Any], route: str | None, wait_ms: int | None
) -> Call:
    """A call that may block ``wait_ms`` (``WAIT`` is the last ``"WAIT"`` in
    ``args`` that is followed by ``wait_ms``, as the builders put it)."""
    if not wait_ms:
        return Call(args, parse, route)
    at = max(i for i in range(len(args) - 1) if args[i] == "WAIT" and args[i + 1] == wait_ms)
    return Call(args, parse, route, wait_ms, wait_at=at)


Steps = Generator[Call, Any, T]


class One(Generic[T]):
    """A builder's only call, handed over as it is rather than yielded by a
    generator (a planner lookup off a cluster: the hit path); its parsed
    reply is the method's result."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call


def _one(call: Call) -> Steps[Any]:
    result = yield call
    return result


def _local(fn: Callable[[], T]) -> T:
    """A key computed locally; its errors read like the server's."""
    try:
        return fn()
    except ValueError as e:
        raise ArgumentError(str(e)) from None


def _charge_options(agent: Any, limit: int | None, window: int | None) -> list[Any]:
    if agent is None:
        if limit is not None or window is not None:
            raise ValueError("limit and window need an agent")
        return []
    if limit is None or window is None:
        raise ValueError("agent needs limit and window (AGENT id LIMIT n WINDOW s)")
    return ["AGENT", agent, "LIMIT", limit, "WINDOW", window]


def _lookup_options(
    lock_ttl_ms: int | None, nolock: bool, wait_ms: int | None, refresh_ahead_ms: int | None
) -> list[Any]:
    out: list[Any] = []
    if nolock:
        if lock_ttl_ms is not None:
            raise ValueError("lock_ttl_ms and nolock exclude each other")
        out.append("NOLOCK")
    elif lock_ttl_ms is not None:
        out += ["LOCKTTL", lock_ttl_ms]
    if wait_ms:
        out += ["WAIT", wait_ms]
    if refresh_ahead_ms is not None:
        out += ["REFRESHAHEAD", refresh_ahead_ms]
    return out


def _same_slot(a: str, b: str) -> bool:
    return _keys.slot(a) == _keys.slot(b)


def _prompt_hash(prompt: Any) -> str:
    """The prompt's SHA-256, sent with ``HASHED``: the prompt itself never
    travels to Redis, nor is hashed on its single thread."""
    if not _keys.to_bytes(prompt):
        raise ValueError("prompt must not be empty")
    return _keys.prompt_hash(prompt)


def plan_get(
    cluster: bool,
    model: Any,
    prompt: Any,
    toolset_version: Any,
    repo_hash: Any,
    *,
    agent: Any,
    limit: int | None,
    window: int | None,
    lock_ttl_ms: int | None,
    nolock: bool,
    wait_ms: int | None,
    refresh_ahead_ms: int | None,
) -> Steps[PlanReply] | One[PlanReply]:
    if cluster:
        # No client can route the argument form; the key is computed here
        # (as the module does) and looked up on the node that serves it.
        key = _local(lambda: _keys.planner_key(model, prompt, toolset_version, repo_hash))
        return plan_lookup(
            True,
            key,
            agent=agent,
            limit=limit,
            window=window,
            lock_ttl_ms=lock_ttl_ms,
            nolock=nolock,
            wait_ms=wait_ms,
            refresh_ahead_ms=refresh_ahead_ms,
        )
    memo = (
        model,
        prompt,
        toolset_version,
        repo_hash,
        agent,
        limit,
        window,
        lock_ttl_ms,
        1 if nolock else 0,
        wait_ms,
        refresh_ahead_ms,
    )
    plain = _PLAIN.issuperset(map(type, memo))  # hashable too
    if plain:
        one = _LOOKUPS.get(memo)
        if one is not None:
            return one
    kept = plain and len(prompt) <= MEMO_PROMPT_MAX
    one = One(
        plan_get_call(
            model,
            prompt,
            toolset_version,
            repo_hash,
            agent,
            limit,
            window,
            lock_ttl_ms,
            nolock,
            wait_ms,
            refresh_ahead_ms,
            {} if plain else None,
        )
    )
    if kept:
        # Kept from its second time on: a lookup seen once costs no more
        # than one never memoised (keeping one costs a little, and so does
        # letting it go).
        if memo in _SEEN:
            _SEEN.discard(memo)
            if len(_LOOKUPS) >= MEMO_SIZE:
                _LOOKUPS.clear()
            _LOOKUPS[memo] = one
        else:
            if len(_SEEN) >= MEMO_SIZE:
                _SEEN.clear()
            _SEEN.add(memo)
    return one


MEMO_SIZE = 1024
"""How many planner lookups (``plan_get`` off a cluster) are kept built,
with their packed command, once asked twice (the memo, and the set of those
asked once, are cleared when full)."""
MEMO_PROMPT_MAX = 4096
"""The longest prompt (characters or bytes) whose lookup is memoised."""
_LOOKUPS: dict[tuple[Any, ...], One[PlanReply]] = {}
_SEEN: set[tuple[Any, ...]] = set()
_PLAIN = frozenset({str, bytes, int, type(None)})
"""The argument types a memoised lookup may have, so that equal memo keys
are the same command (``1 == 1.0 == True``, and a ``str`` subclass equals
its ``str``; redis-py refuses a ``bool``): other lookups are built each time."""


def plan_get_call(
    model: Any,
    prompt: Any,
    toolset_version: Any,
    repo_hash: Any,
    agent: Any,
    limit: int | None,
    window: int | None,
    lock_ttl_ms: int | None,
    nolock: bool,
    wait_ms: int | None,
    refresh_ahead_ms: int | None,
    packed: dict[Any, Any] | None = None,
) -> Call:
    """The ``OKOME.PLAN.GET ... HASHED`` call of :func:`plan_get` off a
    cluster: a planner's hit path, so built without intermediate lists
    (``packed``: see :attr:`Call.packed`)."""
    if type(prompt) is str and prompt:
        digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    else:
        digest = _local(lambda: _prompt_hash(prompt))
    head: tuple[Any, ...] = ("OKOME.PLAN.GET", model, digest, toolset_version, repo_hash, "HASHED")
    if agent is not None or limit is not None or window is not None:
        head += tuple(_charge_options(agent, limit, window))
    if nolock or lock_ttl_ms is not None:
        head += tuple(_lookup_options(lock_ttl_ms, nolock, None, None))
    if not wait_ms:
        if refresh_ahead_ms is None:
            return Call(head, parse_plan, packed=packed)
        return Call((*head, "REFRESHAHEAD", refresh_ahead_ms), parse_plan, packed=packed)
    at = len(head)
    if refresh_ahead_ms is None:
        args: tuple[Any, ...] = (*head, "WAIT", wait_ms)
    else:
        args = (*head, "WAIT", wait_ms, "REFRESHAHEAD", refresh_ahead_ms)
    return Call(args, parse_plan, None, wait_ms, wait_at=at, packed=packed)


def plan_lookup(
    cluster: bool,
    key: str,
    *,
    agent: Any,
    limit: int | None,
    window: int | None,
    lock_ttl_ms: int | None,
    nolock: bool,
    wait_ms: int | None,
    refresh_ahead_ms: int | None,
) -> Steps[PlanReply]:
    charge = _charge_options(agent, limit, window)
    options = _lookup_options(lock_ttl_ms, nolock, wait_ms, refresh_ahead_ms)
    # On a cluster the agent is charged by a call of its own, first, when its
    # window lives in another slot (one command cannot touch both: CROSSSLOT),
    # and also when the lookup may wait: a follower woken after its slot moved
    # away is answered TRYAGAIN and sent again (see _sync.Redirects), which
    # must not charge the agent a second time.
    split = (
        cluster
        and agent is not None
        and (bool(wait_ms) or not _same_slot(_local(lambda: _keys.agent_key("rate", agent)), key))
    )
    if not split:
        result: PlanReply = yield _blocking(
            ("OKOME.PLAN.LOOKUP", key, *charge, *options), parse_plan, key, wait_ms
        )
        return result
    assert limit is not None and window is not None
    rate: RateReply = yield from _rate(agent, limit, window, None)
    if not rate.allowed:
        return PlanReply(
            status=PlanStatus.LIMITED,
            key=key,
            plan=None,
            raw=None,
            ttl_ms=None,
            lock_ttl_ms=None,
            retry_after_ms=rate.retry_after_ms,
            token=None,
            rate_remaining=rate.remaining,
        )
    reply: PlanReply = yield _blocking(
        ("OKOME.PLAN.LOOKUP", key, *options), parse_plan, key, wait_ms
    )
    return dataclasses.replace(reply, rate_remaining=rate.remaining)


def plan_set(
    cluster: bool,
    key: str,
    plan: Any,
    *,
    ttl: int | None,
    token: str | None,
    agent: Any,
    write_limit: int | None,
    write_window: int | None,
    fenced: bool = False,
) -> Steps[PlanSetReply]:
    if fenced and token is None:
        raise ValueError("fenced needs a token (PLAN.SET ... TOKEN t FENCED)")
    value = encode_json(plan)
    base: list[Any] = ["OKOME.PLAN.SET", key, value]
    if ttl is not None:
        base += ["TTL", ttl]
    if token is not None:
        base += ["TOKEN", token]
    if fenced:
        base.append("FENCED")
    if agent is None and (write_limit is not None or write_window is not None):
        raise ValueError("write_limit and write_window need an agent")
    if write_window is not None and write_limit is None:
        raise ValueError("write_window needs write_limit")
    split = (
        cluster
        and agent is not None
        and not _same_slot(_local(lambda: _keys.agent_key("ledger", agent)), key)
    )
    if not split:
        if agent is not None:
            base += ["AGENT", agent]
            if write_limit is not None:
                base += ["WLIMIT", write_limit]
            if write_window is not None:
                base += ["WWINDOW", write_window]
        result: PlanSetReply = yield Call(tuple(base), parse_plan_set, key)
        return result
    # The agent's write budget and ledger live in another slot than the plan:
    # one command cannot touch both (CROSSSLOT). As README's "Redis Cluster"
    # under OKOME.AGENT.* says: charge on the agent's node, store (reading the
    # plan's absolute expiry in the same round trip) on the plan's node, then
    # record it in the agent's ledger with PXAT.
    remaining = None
    if write_limit is not None:
        budget: RateReply = yield from _wbudget(agent, write_limit, write_window, None)
        if not budget.allowed:
            released = False
            if token is not None:
                released = yield Call(("OKOME.UNLOCK", key, token), parse_bool, key)
            return PlanSetReply(StoreStatus.SKIPPED, None, budget.remaining, released)
        remaining = budget.remaining
    stored: PlanSetReply
    stored, expiry = yield Call(
        tuple(base), _with_expiry(parse_plan_set), key, None, (("PEXPIRETIME", key),)
    )
    if stored.stored:
        yield from _record_at(agent, key, expiry)
    return dataclasses.replace(stored, wbudget_remaining=remaining)


def _with_expiry(parse: Callable[[Any], T]) -> Callable[[Any], tuple[T, int]]:
    """Parses ``[reply, PEXPIRETIME reply]``."""

    def both(replies: Any) -> tuple[T, int]:
        return parse(replies[0]), int(replies[1])

    return both


def _record_at(agent: Any, key: str, expiry: int) -> Steps[LedgerRecord]:
    ledger = _local(lambda: _keys.agent_key("ledger", agent))
    args = ("OKOME.AGENT.RECORD", agent, key, "PXAT", expiry)
    result: LedgerRecord = yield Call(args, parse_ledger_record, ledger)
    return result


def agent_record(cluster: bool, agent: Any, key: str, pxat: int | None) -> Steps[LedgerRecord]:
    ledger = _local(lambda: _keys.agent_key("ledger", agent))
    if pxat is None and cluster and not _same_slot(ledger, key):
        # The agent's node cannot read a key another node serves: read its
        # absolute expiry there first.
        expiry = yield Call(("PEXPIRETIME", key), parse_int, key)
        if expiry < 0:
            raise ArgumentError(f"'{key}' does not exist or has no TTL: nothing to record")
        pxat = expiry
    extra: tuple[Any, ...] = () if pxat is None else ("PXAT", pxat)
    result: LedgerRecord = yield Call(
        ("OKOME.AGENT.RECORD", agent, key, *extra), parse_ledger_record, ledger
    )
    return result


def agent_keys(agent: Any, count: int | None, cursor: str | None) -> Steps[LedgerPage]:
    ledger = _local(lambda: _keys.agent_key("ledger", agent))
    extra: list[Any] = []
    if count is not None:
        extra += ["COUNT", count]
    if cursor is not None:
        extra += ["CURSOR", cursor]
    return _one(Call(("OKOME.AGENT.KEYS", agent, *extra), parse_ledger_page, ledger))


def agent_purge(agent: Any, count: int | None) -> Steps[PurgeReply]:
    ledger = _local(lambda: _keys.agent_key("ledger", agent))
    extra: tuple[Any, ...] = () if count is None else ("COUNT", count)
    return _one(Call(("OKOME.AGENT.PURGE", agent, *extra), parse_purge, ledger))


def lock(key: str, ttl_ms: int | None) -> Steps[str | None]:
    args: tuple[Any, ...] = (
        ("OKOME.LOCK", key) if ttl_ms is None else ("OKOME.LOCK", key, "TTL", ttl_ms)
    )
    return _one(Call(args, parse_opt_text, key))


def extend_lock(key: str, token: str, ttl_ms: int | None) -> Steps[bool]:
    ttl: tuple[Any, ...] = () if ttl_ms is None else ("TTL", ttl_ms)
    return _one(Call(("OKOME.LOCK", key, *ttl, "TOKEN", token), parse_bool, key))


def unlock(
    key: str, token: str, failed_ms: int | None = None, message: str | None = None
) -> Steps[bool]:
    if failed_ms is None:
        if message is not None:
            raise ValueError("message needs failed_ms (UNLOCK key token FAILED ms [message])")
        return _one(Call(("OKOME.UNLOCK", key, token), parse_bool, key))
    extra: tuple[Any, ...] = () if message is None else (message,)
    return _one(Call(("OKOME.UNLOCK", key, token, "FAILED", failed_ms, *extra), parse_bool, key))


def _rate(
    agent: Any, limit: int, window: int, cost: int | None, name: Any = None
) -> Steps[RateReply]:
    # Every window of an agent (named or not) shares its hash tag: routed
    # as the unnamed one.
    route = _local(lambda: _keys.agent_key("rate", agent))
    extra: list[Any] = []
    if cost is not None:
        extra += ["COST", cost]
    if name is not None:
        extra += ["NAME", name]
    return _one(Call(("OKOME.RATE", agent, limit, window, *extra), parse_rate, route))


def _wbudget(
    agent: Any, write_limit: int, window: int | None, cost: int | None
) -> Steps[RateReply]:
    route = _local(lambda: _keys.agent_key("write", agent))
    extra: list[Any] = []
    if window is not None:
        extra += ["WINDOW", window]
    if cost is not None:
        extra += ["COST", cost]
    return _one(Call(("OKOME.WBUDGET", agent, write_limit, *extra), parse_rate, route))


rate = _rate
wbudget = _wbudget


def lease_acquire(
    subject: Any, max: int, ttl_ms: int, wait_ms: int | None, name: Any
) -> Steps[LeaseReply]:
    """Routed by the pool's key (a cluster client cannot route the subject)."""
    try:
        route: str | None = _keys.lease_key(subject, name)
    except ValueError:
        route = None  # let the server say what is wrong with it
    extra: list[Any] = []
    if wait_ms:
        extra += ["WAIT", wait_ms]
    if name is not None:
        extra += ["NAME", name]
    args = ("OKOME.LEASE.ACQUIRE", subject, max, ttl_ms, *extra)
    return _one(_blocking(args, parse_lease, route, wait_ms))


def lease_renew(lease: str, ttl_ms: int) -> Steps[bool]:
    """Routed by the lease id: its ``{subject}`` is the pool's hash tag."""
    return _one(Call(("OKOME.LEASE.RENEW", lease, ttl_ms), parse_bool, lease))


def lease_release(lease: str) -> Steps[bool]:
    return _one(Call(("OKOME.LEASE.RELEASE", lease), parse_bool, lease))


def throttle(
    subject: Any, rate: int, period_s: int, burst: int, cost: int, name: Any | None
) -> Steps[ThrottleReply]:
    route = _local(lambda: _keys.gcra_key(subject, name))
    extra: list[Any] = []
    if cost != 1:
        extra += ["COST", cost]
    if name is not None:
        extra += ["NAME", name]
    args = ("OKOME.THROTTLE", subject, rate, period_s, burst, *extra)
    return _one(Call(args, parse_throttle, route))


# -- several limits, all or nothing -------------------------------------------

COMPOSE_RESERVE_MS = 10_000
"""The ``RESERVE`` of each slot's ``OKOME.TAKE`` when :func:`take` composes
one across slots without ``reserve_ms``: long enough to cancel it after the
other slots have answered. A reserved charge is an ordinary charge of its
windows (a reservation never settled keeps its costs), so nothing needs to
settle it; its record expires after this."""

PART_SEP = ";"
"""Between the parts of a composite reservation id (never in a reservation
id: a subject's ``;`` is escaped as ``%3B``)."""
INDEX_SEP = "@"
"""Between a part's reservation id and the indexes of its limits (after the
id's 32 hex digits: the last ``@`` of a part)."""


def _as_limit(limit: Any) -> Limit:
    return limit if isinstance(limit, Limit) else Limit(*limit)


def _take_route(limit: Limit) -> str | None:
    try:
        return _keys.rate_key(limit.subject, limit.name)
    except ValueError:
        return None  # let the server say what is wrong with it


def _take_call(limits: Sequence[Limit], reserve_ms: int | None, route: str | None) -> Call:
    args: list[Any] = ["OKOME.TAKE", len(limits)]
    for lim in limits:
        args += [lim.subject, lim.name, lim.limit, lim.window_s, lim.cost]
    if reserve_ms is not None:
        args += ["RESERVE", reserve_ms]
    return Call(tuple(args), parse_take, route)


def _cancel_call(reservation: str, n: int) -> Call:
    return Call(("OKOME.SETTLE", reservation, *([0] * n)), parse_settle, reservation)


def take(cluster: bool, limits: Iterable[Any], reserve_ms: int | None) -> Steps[TakeReply]:
    """``OKOME.TAKE``, routed by the first limit's window. On a cluster, limits
    whose windows are in several slots are composed from reservations: one
    ``OKOME.TAKE ... RESERVE`` per slot; if any slot refuses, every granted
    one is cancelled (``OKOME.SETTLE id 0 ...``), so nothing stays charged."""
    lims = [_as_limit(lim) for lim in limits]
    routes = [_take_route(lim) for lim in lims]
    groups: dict[int, list[int]] = {}
    if cluster and None not in routes:
        for i, route in enumerate(routes):
            groups.setdefault(_keys.slot(route or ""), []).append(i)
    if len(groups) < 2:
        first = next((r for r in routes if r is not None), None)
        result: TakeReply = yield _take_call(lims, reserve_ms, first)
        return result
    reply: TakeReply = yield from _take_across(lims, routes, list(groups.values()), reserve_ms)
    return reply


def _take_across(
    lims: list[Limit], routes: list[str | None], groups: list[list[int]], reserve_ms: int | None
) -> Steps[TakeReply]:
    ttl = COMPOSE_RESERVE_MS if reserve_ms is None else reserve_ms
    taken: list[tuple[list[int], TakeReply]] = []
    try:
        for idx in groups:
            one: TakeReply = yield _take_call([lims[i] for i in idx], ttl, routes[idx[0]])
            taken.append((idx, one))
    except Exception:
        # An error on one slot (the others may have admitted): undo them all.
        yield from _cancel(taken)
        raise
    states: list[LimitState | None] = [None] * len(lims)
    if all(r.allowed for _, r in taken):
        for idx, r in taken:
            for i, state in zip(idx, r.limits):
                states[i] = state
        reservation = None
        if reserve_ms is not None:
            reservation = PART_SEP.join(
                f"{r.reservation}{INDEX_SEP}{','.join(map(str, idx))}" for idx, r in taken
            )
        return TakeReply(True, 0, reservation, _complete(states))
    after = yield from _cancel(taken)
    for (idx, r), cancelled in zip(taken, after):
        for i, state in zip(idx, r.limits if cancelled is None else cancelled.limits):
            states[i] = state
    retry = max(r.retry_after_ms for _, r in taken if not r.allowed)
    return TakeReply(False, retry, None, _complete(states))


def _complete(states: list[LimitState | None]) -> tuple[LimitState, ...]:
    out = tuple(s for s in states if s is not None)
    assert len(out) == len(states)
    return out


def _cancel(taken: list[tuple[list[int], TakeReply]]) -> Steps[list[SettleReply | None]]:
    """Cancels every granted reservation of ``taken``; for each, the
    settlement's reply, or ``None`` (refused, or the cancel failed: then the
    reservation keeps its costs, so the windows count more than was
    admitted, never less)."""
    out: list[SettleReply | None] = []
    for idx, r in taken:
        if r.reservation is None:
            out.append(None)
            continue
        try:
            settled: SettleReply = yield _cancel_call(r.reservation, len(idx))
        except Exception:
            out.append(None)
        else:
            out.append(settled)
    return out


def _composite(reservation: str) -> list[tuple[str, list[int]]] | None:
    """The parts of a composite reservation id (``None`` for a plain one)."""
    if PART_SEP not in reservation:
        return None
    parts: list[tuple[str, list[int]]] = []
    seen: list[int] = []
    try:
        for part in reservation.split(PART_SEP):
            rid, sep, indexes = part.rpartition(INDEX_SEP)
            if not sep or not rid:
                raise ValueError(part)
            idx = [int(i) for i in indexes.split(",")]
            parts.append((rid, idx))
            seen += idx
    except ValueError:
        seen = []
    if not seen or sorted(seen) != list(range(len(seen))):
        raise ArgumentError(
            f"'{reservation}' is not an okome reservation id ({{subject}}:<32 hex digits>, "
            "or several joined by okome.take across cluster slots)",
            "ERR",
        )
    return parts


def settle(reservation: Any, costs: Iterable[int]) -> Steps[SettleReply]:
    """``OKOME.SETTLE``, routed by the reservation id (its ``{subject}``); a
    composite id (from :func:`take` across slots) is settled part by part."""
    rid = reservation if isinstance(reservation, str) else parse_text(reservation)
    amounts = list(costs)
    parts = _composite(rid)
    if parts is None:
        result: SettleReply = yield Call(("OKOME.SETTLE", rid, *amounts), parse_settle, rid)
        return result
    total = sum(len(idx) for _, idx in parts)
    if len(amounts) != total:
        raise ArgumentError(
            f"syntax error: the reservation has {total} limits, got {len(amounts)} costs "
            "(one per limit, in OKOME.TAKE's order)",
            "ERR",
        )
    states: list[LimitState | None] = [None] * total
    settled = True
    error: Exception | None = None
    # Every part is settled even if one fails (each settles once: settling
    # the whole id again, with the same costs, is safe); then the first error.
    for part, idx in parts:
        try:
            one: SettleReply = yield Call(
                ("OKOME.SETTLE", part, *(amounts[i] for i in idx)), parse_settle, part
            )
        except Exception as e:
            error = error or e
            continue
        settled = settled and one.settled
        for i, state in zip(idx, one.limits):
            states[i] = state
    if error is not None:
        raise error
    return SettleReply(settled, _complete(states))


def _cache_route(kind: Any, parts: tuple[Any, ...]) -> str | None:
    try:
        return _keys.build(_keys.to_bytes(kind).decode("utf-8", "replace").lower(), parts)
    except ValueError:
        return None  # let the server say what is wrong with it


def cache_get(kind: Any, parts: tuple[Any, ...]) -> Steps[CacheEntry | None]:
    return _one(Call(("OKOME.CACHE.GET", kind, *parts), parse_cache_get, _cache_route(kind, parts)))


def cache_set(
    cluster: bool, kind: Any, parts: tuple[Any, ...], value: Any, ttl: int | None, agent: Any
) -> Steps[int]:
    extra: tuple[Any, ...] = () if ttl is None else ("TTL", ttl)
    args = ("OKOME.CACHE.SET", kind, *parts, encode_json(value), *extra)
    route = _cache_route(kind, parts)
    if agent is None:
        result: int = yield Call(args, parse_int, route)
        return result
    ledger = _local(lambda: _keys.agent_key("ledger", agent))
    if not cluster or route is None or _same_slot(ledger, route):
        result = yield Call((*args, "AGENT", agent), parse_int, route)
        return result
    # As plan_set: store and read the expiry on the key's node, record on the agent's.
    ttl_ms, expiry = yield Call(
        args, _with_expiry(parse_int), route, None, (("PEXPIRETIME", route),)
    )
    yield from _record_at(agent, route, expiry)
    return int(ttl_ms)


def key(kind: Any, parts: tuple[Any, ...]) -> Steps[str]:
    if _keys.to_bytes(kind).lower() == b"planner" and len(parts) == 4:
        model, prompt, toolset_version, repo_hash = parts
        parts = (model, _local(lambda: _prompt_hash(prompt)), toolset_version, repo_hash, "HASHED")
    return _one(Call(("OKOME.KEY", kind, *parts), parse_text, None))


def info() -> Steps[Any]:
    return _one(Call(("INFO", "okome"), lambda r: r, None))


def _raw(reply: Any) -> Any:
    return reply


def not_loaded(server: str, found: str, where: str = "") -> ModuleNotLoadedError:
    """The error of a server without okome: what it found, what to do."""
    at = f" on {where}" if where else ""
    return ModuleNotLoadedError(
        f"the okome module is not loaded{at}: found {server} with {found}; load "
        "libokome.so (redis-server --loadmodule /path/to/libokome.so, or "
        "MODULE LOAD /path/to/libokome.so)"
    )


def check(where: str = "") -> Steps[ModuleCheck]:
    """``INFO server``, then ``MODULE LIST`` (or, if an ACL refuses it,
    ``COMMAND INFO OKOME.PLAN.GET``): okome's version, or
    :class:`ModuleNotLoadedError` saying what was found."""
    server = server_name(parse_info((yield Call(("INFO", "server"), _raw, None))))
    try:
        modules = parse_modules((yield Call(("MODULE", "LIST"), _raw, None)))
    except rex.ResponseError as e:
        refused = f"MODULE LIST refused ({e})"
    else:
        if "okome" in modules:
            return ModuleCheck(server=server, module_version=modules["okome"])
        names = ", ".join(f"{n} {v}" for n, v in sorted(modules.items(), key=lambda m: m[0]))
        raise not_loaded(server, f"modules: {names}" if names else "no modules", where)
    commands = yield Call(("COMMAND", "INFO", "OKOME.PLAN.GET"), _raw, None)
    found = commands.values() if isinstance(commands, dict) else commands
    known = bool(commands) and any(c for c in found)
    if known:
        return ModuleCheck(server=server, module_version=None)
    raise not_loaded(server, f"no OKOME.PLAN.GET command ({refused})", where)
