"""``okome.Planner``: README's "Leader and followers" protocol in one call;
and what :mod:`okome.aio.planner`, its asyncio twin, shares with it
(:class:`PlanResult`, :class:`Options`, :class:`PlannerBase`, ...)."""

from __future__ import annotations

import contextvars
import inspect
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Generic,
    Literal,
    TypedDict,
    TypeVar,
    Union,
)

import redis
from redis import exceptions as rex
from redis.cluster import RedisCluster

from ._keys import planner_key
from ._marks import is_never_cache, refuse_never_cache
from .client import Okome
from .errors import (
    ComputeFailed,
    ComputeTimeout,
    OkomeUnavailable,
    PlanLocked,
    PlannerError,
    RateLimited,
    timeout_message,
)
from .replies import PlanReply, PlanStatus, RawJSON, StoreStatus, encode_json

if TYPE_CHECKING:
    from typing_extensions import TypeVar as DefaultTypeVar
    from typing_extensions import Unpack

    from .decorators import Cached

    T = DefaultTypeVar("T", default=Any)
    """The plan's type: what ``compute`` returns and the decoder gives (``Any``,
    a JSON value, with the default decoder; a type checker takes ``Planner``
    and ``PlanResult`` without a parameter as ``[Any]``)."""
else:
    T = TypeVar("T")

log = logging.getLogger("okome")

C = TypeVar("C")
R = TypeVar("R")

SyncClient = Union[redis.Redis, RedisCluster, Okome]
"""What :class:`Planner` takes: a ``redis.Redis``, a
``redis.cluster.RedisCluster`` or an :class:`okome.Okome`."""


@dataclass(frozen=True)
class PlanResult(Generic[T]):
    """What a planner request answers with."""

    plan: T
    """The plan, as the planner's decoder makes it from the plan's JSON text:
    on a ``MISS`` too (``decoder(encoder(compute()))``), so a plan has the
    same type and value whether this call computed it or not."""
    status: PlanStatus
    """``HIT``, ``REFRESH`` (served from the cache, recomputing in the
    background), ``SHARED`` (handed over by a leader whose write budget was
    spent, not stored) or ``MISS`` (this call computed it)."""
    key: str
    """The planner key."""
    rate_remaining: int | None
    """The agent's remaining rate, ``None`` without an agent."""
    computed: bool
    """Whether this call ran ``compute``."""
    stored: StoreStatus | None = None
    """For a computed plan: ``STORED``, ``SKIPPED`` (the write budget is
    spent; the waiting callers got it as ``SHARED``) or ``FENCED`` (a
    refresh whose lock had expired: not stored); ``None`` when bypassed."""
    ttl_ms: int | None = None
    """For a plan served from the cache: its remaining TTL."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """``X-OKOME-Cache`` (``HIT``/``MISS``; ``BYPASS`` when computed without
    the cache), ``X-OKOME-Cache-Key``, ``X-OKOME-Agent-Rate-Remaining`` (with
    an agent), ``X-OKOME-Cache-Write`` (``STORED``/``SKIPPED``, for a
    computed plan)."""
    bypassed: bool = False
    """Redis was unreachable and the planner (``fail_open=True``) computed
    without the cache: nothing stored, no lock, no rate charged."""

    @property
    def cache(self) -> str:
        """``HIT``, ``MISS`` or ``BYPASS``, as ``X-OKOME-Cache`` says."""
        if self.bypassed:
            return "BYPASS"
        return "MISS" if self.status is PlanStatus.MISS else "HIT"


def make_headers(
    status: PlanStatus, key: str, rate_remaining: int | None, stored: StoreStatus | None
) -> dict[str, str]:
    """A result's headers: ``X-OKOME-Cache`` is ``MISS`` for a computed plan,
    ``HIT`` for one served without computing (``HIT``, ``REFRESH``, ``SHARED``)."""
    headers = {
        "X-OKOME-Cache": "MISS" if status is PlanStatus.MISS else "HIT",
        "X-OKOME-Cache-Key": key,
    }
    if rate_remaining is not None:
        headers["X-OKOME-Agent-Rate-Remaining"] = str(rate_remaining)
    if stored is not None:
        headers["X-OKOME-Cache-Write"] = stored.value
    return headers


def served(reply: PlanReply, plan: T) -> PlanResult[T]:
    return PlanResult(
        plan=plan,
        status=reply.status,
        key=reply.key,
        rate_remaining=reply.rate_remaining,
        computed=False,
        ttl_ms=reply.ttl_ms,
        headers=make_headers(reply.status, reply.key, reply.rate_remaining, None),
    )


def computed(reply: PlanReply, plan: T, stored: StoreStatus | None) -> PlanResult[T]:
    return PlanResult(
        plan=plan,
        status=PlanStatus.MISS,
        key=reply.key,
        rate_remaining=reply.rate_remaining,
        computed=True,
        stored=stored,
        headers=make_headers(PlanStatus.MISS, reply.key, reply.rate_remaining, stored),
    )


def bypassed(key: str, plan: T) -> PlanResult[T]:
    """A plan computed without the cache (``fail_open``, Redis unreachable)."""
    return PlanResult(
        plan=plan,
        status=PlanStatus.MISS,
        key=key,
        rate_remaining=None,
        computed=True,
        headers={"X-OKOME-Cache": "BYPASS", "X-OKOME-Cache-Key": key},
        bypassed=True,
    )


def refused(reply: PlanReply, agent: Any) -> PlannerError:
    """The exception for a ``LIMITED``, ``LOCKED`` or ``FAILED`` reply."""
    if reply.status is PlanStatus.LIMITED:
        return RateLimited(reply.retry_after_ms or 0, key=reply.key, agent=_agent_text(agent))
    if reply.status is PlanStatus.FAILED:
        return ComputeFailed(
            reply.message,
            key=reply.key,
            retry_after_ms=reply.retry_after_ms or 0,
            rate_remaining=reply.rate_remaining,
        )
    return PlanLocked(reply.lock_ttl_ms, key=reply.key, rate_remaining=reply.rate_remaining)


UNREACHABLE = (rex.ConnectionError, rex.TimeoutError)
"""redis-py's errors of a server that cannot be reached (refused, lost, timed
out, still loading its data): :class:`okome.OkomeUnavailable` for a planner."""

MAX_MESSAGE = 1024
"""The longest failure message a leader publishes (characters)."""


def failure_message(e: BaseException) -> str:
    """What a failed leader publishes to its waiters: ``"TypeName: message"``."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


class Late(Exception):
    """``compute()`` ran past ``max_compute_ms`` (becomes :class:`ComputeTimeout`)."""


def timed_out(reply: PlanReply, o: Options) -> ComputeTimeout:
    assert o.max_compute_ms is not None
    return ComputeTimeout(
        o.max_compute_ms,
        key=reply.key,
        retry_after_ms=o.failure_ttl_ms,
        rate_remaining=reply.rate_remaining,
    )


def run_with_deadline(compute: Callable[[], Any], max_compute_ms: int | None, key: str) -> Any:
    """``compute()`` (sync): in this thread without a deadline; with one, in a
    daemon thread (with this thread's ``contextvars``) that this thread stops
    waiting for at the deadline (:class:`Late`); Python cannot stop a thread,
    so it runs on to its end and its result is dropped (logged)."""
    if max_compute_ms is None:
        return compute()
    box: dict[str, Any] = {}
    done = threading.Event()
    abandoned = threading.Event()
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = ctx.run(compute)
        except BaseException as e:  # handed to the caller (or logged if it gave up)
            box["error"] = e
        finally:
            done.set()
            if abandoned.is_set():
                log.warning(
                    "okome: compute() of %s ended after its deadline (max_compute_ms=%d): "
                    "its result is dropped",
                    key,
                    max_compute_ms,
                )

    thread = threading.Thread(target=target, name=f"okome-compute {key}", daemon=True)
    thread.start()
    if not done.wait(max_compute_ms / 1000.0):
        abandoned.set()
        raise Late()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _agent_text(agent: Any) -> str | None:
    if agent is None:
        return None
    return agent.decode("utf-8", "replace") if isinstance(agent, bytes) else str(agent)


def heartbeat_interval(lock_ttl_ms: int | None, heartbeat_ms: int | None) -> float:
    """Seconds between lock extensions: a third of the lock's TTL by default."""
    if heartbeat_ms is not None:
        return max(heartbeat_ms, 1) / 1000.0
    return max(lock_ttl_ms or 9000, 30) / 3000.0


def plan_json(plan: Any, encoder: Callable[[Any], str | bytes] | None = None) -> bytes | RawJSON:
    """The JSON text a leader stores for ``plan``: ``encoder(plan)``, or by
    default :func:`okome.replies.encode_json` (``json.dumps``; ``RawJSON``
    and bytes as they are). Raises if ``plan`` cannot be encoded (call it
    while holding the lock)."""
    value = encode_json(plan) if encoder is None else encoder(plan)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value if isinstance(value, RawJSON) else RawJSON(value)
    raise TypeError(
        f"the planner's encoder must return JSON text (str or bytes), got {type(value).__name__}"
    )


def json_text(value: bytes | str) -> str:
    """Stored JSON text as ``str`` (what a decoder is given)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


EventStatus = Literal[
    "HIT", "MISS", "REFRESH", "SHARED", "FAILED", "LOCKED", "LIMITED", "BYPASS", "UNAVAILABLE",
    "ERROR",
]  # fmt: skip
""":attr:`PlanEvent.status`."""


@dataclass(frozen=True)
class PlanEvent:
    """What ``Planner(..., on_result=hook)`` is called with, once per
    ``get_or_compute`` (and per call of a ``@planner.cached`` function) that
    returns or raises an ``Exception``."""

    status: EventStatus
    """``HIT``, ``REFRESH``, ``SHARED``, ``MISS`` (this call computed and
    stored it, or tried to: see ``result.stored``) or ``BYPASS`` (computed
    without the cache, ``fail_open``) for a plan returned; for an exception
    raised: ``LIMITED`` (:class:`okome.RateLimited`), ``LOCKED``
    (:class:`okome.PlanLocked`), ``FAILED`` (:class:`okome.ComputeFailed`,
    :class:`okome.ComputeTimeout`, or this call's own ``compute()`` or
    encoding raised), ``UNAVAILABLE`` (:class:`okome.OkomeUnavailable`) or
    ``ERROR`` (anything else: a server error, the decoder refusing a cached
    plan, ...)."""
    latency: float
    """Seconds from the call to its result (or exception), ``compute()`` included."""
    key: str
    """The planner key."""
    computed: bool
    """Whether this call ran ``compute()`` (``MISS``, ``BYPASS``, and
    ``FAILED`` when its own computation failed)."""
    label: str | None = None
    """The caller's ``label=`` (a route, say), for metrics per label;
    a ``@planner.cached`` function's ``label`` (by default its qualified name)."""
    agent: str | None = None
    """The request's agent, ``None`` without one."""
    error: BaseException | None = None
    """The exception raised, for ``LIMITED``, ``LOCKED``, ``FAILED``,
    ``UNAVAILABLE`` and ``ERROR``."""


def result_event(
    result: PlanResult[Any], latency: float, label: str | None, agent: Any
) -> PlanEvent:
    status: EventStatus = "BYPASS" if result.bypassed else result.status.value
    return PlanEvent(status, latency, result.key, result.computed, label, _agent_text(agent))


def error_event(
    e: BaseException, latency: float, key: str, ran: bool, label: str | None, agent: Any
) -> PlanEvent:
    """The event of a call that raised ``e`` (``ran``: whether it ran ``compute()``)."""
    status: EventStatus
    if isinstance(e, RateLimited):
        status = "LIMITED"
    elif isinstance(e, PlanLocked):
        status = "LOCKED"
    elif isinstance(e, ComputeFailed):
        status = "FAILED"
    elif isinstance(e, OkomeUnavailable):
        status = "UNAVAILABLE"
    else:
        status = "FAILED" if ran else "ERROR"
    return PlanEvent(status, latency, key, ran, label, _agent_text(agent), e)


class Lookup(TypedDict):
    """The keywords of a planner request's ``plan_get``."""

    agent: str | bytes | None
    limit: int | None
    window: int | None
    lock: bool
    lock_ttl_ms: int | None
    wait_ms: int | None
    refresh_ahead_ms: int | None


class Overrides(TypedDict, total=False):
    """The settings a ``get_or_compute`` call (or ``@planner.cached``) may
    override (see :class:`Options`)."""

    limit: int | None
    window: int | None
    write_limit: int | None
    write_window: int | None
    wait_ms: int | None
    refresh_ahead_ms: int | None
    ttl: int | None
    lock_ttl_ms: int | None
    heartbeat_ms: int | None
    failure_ttl_ms: int | None
    max_compute_ms: int | None


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
    failure_ttl_ms: int = 5000
    max_compute_ms: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.failure_ttl_ms <= 60_000:
            raise ValueError(f"failure_ttl_ms {self.failure_ttl_ms} is out of range: 0 to 60000")
        if self.max_compute_ms is not None and self.max_compute_ms <= 0:
            raise ValueError(f"max_compute_ms {self.max_compute_ms} must be positive (or None)")

    def merge(self, **overrides: Any) -> Options:
        values = {k: v for k, v in overrides.items() if v is not None}
        if not values:
            return self  # the hit path (issue 23): no new Options per request
        return Options(**{**self.__dict__, **values})

    def lookup(self, agent: str | bytes | None) -> Lookup:
        """A request's ``plan_get`` keywords (the agent's rate only with an agent)."""
        return Lookup(
            agent=agent,
            limit=self.limit if agent is not None else None,
            window=self.window if agent is not None else None,
            lock=True,
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


class PlannerBase(Generic[C, R, T]):
    """What :class:`Planner` and :class:`okome.aio.Planner` share: the client
    (``okome``, of type ``C``, made from a client of type ``R``), the settings
    (``options``) they are made with, the plan's encoding (a plan of type
    ``T``) and the ``on_result`` hook."""

    okome: C

    def __init__(
        self,
        client: R,
        *,
        encoder: Callable[[T], str | bytes] | None = None,
        decoder: Callable[[str], T] | None = None,
        on_result: Callable[[PlanEvent], object] | None = None,
        limit: int = 60,
        window: int = 60,
        write_limit: int | None = 30,
        write_window: int | None = None,
        wait_ms: int = 10_000,
        refresh_ahead_ms: int = 60_000,
        ttl: int | None = None,
        lock_ttl_ms: int | None = None,
        heartbeat_ms: int | None = None,
        failure_ttl_ms: int = 5000,
        max_compute_ms: int | None = None,
        fail_open: bool = False,
        outage_probe_ms: int = 1000,
    ) -> None:
        self.okome = self._wrap(client)
        if on_result is not None and (
            inspect.iscoroutinefunction(on_result)
            or inspect.iscoroutinefunction(type(on_result).__call__)
        ):
            raise TypeError(
                "on_result must be a plain function (it is called inline with each result; "
                "from it, start a task if you need to await something)"
            )
        self.encoder = encoder
        """``plan -> JSON text`` (``None``: ``json.dumps``)."""
        self.decoder = decoder
        """``JSON text -> plan`` (``None``: ``json.loads``)."""
        self.on_result = on_result
        """Called with a :class:`PlanEvent` once per request (``None``: none)."""
        self.fail_open = fail_open
        self.bypassed = 0
        """Requests computed without the cache because Redis was unreachable."""
        self.unavailable = 0
        """Requests that found Redis unreachable (raised or bypassed)."""
        self.outage_probe_ms = outage_probe_ms
        self._outage = False
        self._outage_error: BaseException | None = None
        self._outage_lock = threading.Lock()
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
            failure_ttl_ms=failure_ttl_ms,
            max_compute_ms=max_compute_ms,
        )
        self._start()

    def _wrap(self, client: R) -> C:
        """``client`` as the planner's okome client (``okome`` itself if it is one)."""
        raise NotImplementedError

    def _decode(self, text: str) -> T:
        """A plan from its JSON text, by the decoder."""
        if self.decoder is None:
            plan: T = json.loads(text)
            return plan
        return self.decoder(text)

    def _served(self, reply: PlanReply) -> PlanResult[T]:
        """The result of a plan served from the cache (or handed over)."""
        if self.decoder is None:
            return served(reply, reply.plan)  # json.loads'd by the reply's parser
        assert reply.raw is not None
        return served(reply, self.decoder(reply.raw))

    def _encode(self, plan: T) -> tuple[bytes | RawJSON, T]:
        """The JSON text to store for a computed ``plan``, and the plan as a
        ``HIT`` will give it (decoded from that text): raises if either
        fails (call it while holding the lock, before storing)."""
        value = plan_json(plan, self.encoder)
        return value, self._decode(json_text(value))

    def _emit(self, event: PlanEvent) -> None:
        """Call the ``on_result`` hook; an exception it raises is logged, not raised."""
        assert self.on_result is not None
        try:
            self.on_result(event)
        except Exception:
            log.exception("okome: the on_result hook raised (ignored) for %s", event)

    def _emit_error(
        self,
        e: Exception,
        started: float,
        parts: tuple[Any, Any, Any, Any],
        computed: bool,
        label: str | None,
        agent: Any,
    ) -> None:
        """Call the ``on_result`` hook for a request (of the planner key's
        ``parts``, begun at ``started``) that raised ``e``."""
        key = getattr(e, "key", None) if isinstance(e, PlannerError) else None
        if not isinstance(key, str):
            key = planner_key(*parts)
        self._emit(error_event(e, time.perf_counter() - started, key, computed, label, agent))

    def _start(self) -> None:
        """Set up what runs the background work (after ``okome`` and ``options``)."""

    @property
    def outage(self) -> bool:
        """Whether Redis is unreachable as far as this planner knows: a request
        found it so and the background probe has not reached it since."""
        return self._outage

    def _skip(self, key: str) -> bool:
        """During an outage (until the background probe reaches Redis again),
        whether this request skips Redis: then it raises
        :class:`okome.OkomeUnavailable` at once, or with ``fail_open``
        returns ``True`` (compute without the cache)."""
        error = self._outage_error
        if error is None:
            return False
        self._unreachable(error, key)
        return True

    def _start_probe(self) -> None:
        """Start the background probe of an outage (``PING`` every
        ``outage_probe_ms`` until Redis answers, then :meth:`_reachable`)."""
        raise NotImplementedError

    def _probed(self, error: BaseException | None) -> bool:
        """A probe's outcome (``None``: answered): whether the outage is over."""
        if error is None or not isinstance(error, UNREACHABLE):
            self._reachable()  # an error reply (NOPERM, ...) is an answer too
            return True
        return False

    def _unreachable(self, e: BaseException, key: str) -> None:
        """Count a request that found Redis unreachable; raise
        :class:`okome.OkomeUnavailable` unless ``fail_open``. Logged once per
        outage (until a call reaches Redis again)."""
        with self._outage_lock:
            self.unavailable += 1
            if self.fail_open:
                self.bypassed += 1
            first, self._outage = not self._outage, True
            self._outage_error = e
        if first:
            self._start_probe()
            log.warning(
                "okome: Redis is unreachable (%s: %s): %s until it is back",
                type(e).__name__,
                e,
                "computing plans without the cache (fail_open)"
                if self.fail_open
                else "planner requests raise OkomeUnavailable (503)",
            )
        if not self.fail_open:
            raise OkomeUnavailable(
                e, key=key, retry_after_ms=max(self.outage_probe_ms, 1000)
            ) from e

    def _reachable(self) -> None:
        """Redis answered: the outage, if any, is over (logged)."""
        if self._outage:
            with self._outage_lock:
                was, self._outage = self._outage, False
                self._outage_error = None
                n, b = self.unavailable, self.bypassed
            if was:
                log.warning(
                    "okome: Redis is reachable again (%d requests found it unreachable so "
                    "far, %d computed without the cache)",
                    n,
                    b,
                )


class Planner(PlannerBase[Okome, SyncClient, T]):
    """The planner protocol over a sync client (a ``redis.Redis``, a
    ``redis.cluster.RedisCluster`` or an :class:`okome.Okome`).

    ``get_or_compute`` makes one ``PLAN.GET ... WAIT ... REFRESHAHEAD ...``
    per request and then:

    - ``HIT``: returns the cached plan;
    - ``MISS`` with a token (this call leads): runs ``compute()`` while a
      heartbeat thread extends the lock every third of its TTL (``OKOME.LOCK key TTL ms
      TOKEN t``), then one ``PLAN.SET key plan TOKEN t AGENT a WLIMIT n``,
      which answers every waiting follower at once (if the write budget is
      spent, ``SKIPPED``, they still get the plan, as ``SHARED``). If
      ``compute`` raises, ``OKOME.UNLOCK key t FAILED failure_ttl_ms
      message`` answers the waiters ``FAILED`` at once (they raise
      :class:`okome.ComputeFailed`), and so are lookups for
      ``failure_ttl_ms``; the leader's own exception propagates
      (``failure_ttl_ms=0``: a plain ``UNLOCK``, the longest-waiting
      follower takes over). Past ``max_compute_ms`` the lock is released as
      failed and the leader raises :class:`okome.ComputeTimeout`;
    - ``SHARED``: returns the plan a leader handed over without storing it;
    - ``REFRESH``: returns the cached plan and recomputes it in a background
      thread (exactly one caller gets ``REFRESH``), stored ``FENCED`` (not
      if its lock expired meanwhile); see :meth:`wait_background`;
    - ``LIMITED``: raises :class:`okome.RateLimited` (``429``, ``Retry-After``);
    - ``LOCKED`` (the wait timed out): raises :class:`okome.PlanLocked` (``503``);
    - ``FAILED``: raises :class:`okome.ComputeFailed` (``503``, ``Retry-After``).

    Redis unreachable: :class:`okome.OkomeUnavailable` (``503``), or with
    ``fail_open=True`` ``compute()`` without the cache (see :attr:`bypassed`).

    Plans are stored as ``encoder(plan)`` (default ``json.dumps``) and
    returned as ``decoder(text)`` (default ``json.loads``), a computed one
    too: a ``Planner(r, encoder=Plan.model_dump_json,
    decoder=Plan.model_validate_json)`` is a ``Planner[Plan]`` whose results
    are ``PlanResult[Plan]``. ``on_result`` is called with a
    :class:`PlanEvent` per request.
    """

    def _wrap(self, client: SyncClient) -> Okome:
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
        compute: Callable[[], T],
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
        """The plan for ``(model, prompt, toolset_version, repo_hash)``: from the
        cache, from the caller computing it right now, or from ``compute()``.
        ``label`` (a route, say) is passed on to the ``on_result`` hook."""
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
            return self._get(model, prompt, toolset_version, repo_hash, compute, agent, o)
        t0 = time.perf_counter()
        ran = False

        def tracked() -> T:
            nonlocal ran
            ran = True
            return compute()

        tracked.__wrapped__ = compute  # type: ignore[attr-defined]  # okome.never_cache sees it
        try:
            result = self._get(model, prompt, toolset_version, repo_hash, tracked, agent, o)
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
    ) -> Callable[[Callable[..., T]], Cached[T]]:
        """A decorator: the function of the prompt it decorates, cached on
        this planner (see :mod:`okome.decorators`)::

            @planner.cached(model="llama3:8b", toolset_version="v1")
            def make_plan(prompt: str) -> Plan: ...

            plan = make_plan(prompt, repo_hash=repo, agent="agent-1")
            result = make_plan.result(prompt, repo_hash=repo)    # a PlanResult

        The function takes ``prompt`` and any other key part (``model``,
        ``toolset_version``, ``repo_hash``) it needs, nothing else; the parts
        given here are the defaults of its calls. ``agent``: the agent
        charged when a call gives none; ``label``: the ``on_result`` events'
        (default: the function's qualified name); ``options``: settings of
        ``get_or_compute`` (``ttl``, ``wait_ms``, ...). Raises
        :class:`okome.UncacheableFunctionError` for what it must not cache
        (marked :func:`okome.never_cache`, a generator, ``-> None``, a
        parameter that is not a key part), ``TypeError`` for a coroutine
        function (use :class:`okome.aio.Planner`)."""
        from .decorators import Cached

        self.options.merge(**options)  # refuse a bad setting now
        parts = {"model": model, "toolset_version": toolset_version, "repo_hash": repo_hash}

        def decorate(fn: Callable[..., T]) -> Cached[T]:
            return Cached(self, fn, parts, agent, label, options)

        return decorate

    def _get(
        self,
        model: str,
        prompt: str,
        toolset_version: str,
        repo_hash: str,
        compute: Callable[[], T],
        agent: str | None,
        o: Options,
    ) -> PlanResult[T]:
        if self._outage and self._skip(
            key := self.okome.planner_key(model, prompt, toolset_version, repo_hash)
        ):
            return self._bypass(key, compute, o)
        try:
            reply = self.okome.plan_get(
                model, prompt, toolset_version, repo_hash, **o.lookup(agent)
            )
        except UNREACHABLE as e:
            key = self.okome.planner_key(model, prompt, toolset_version, repo_hash)
            self._unreachable(e, key)
            return self._bypass(key, compute, o)
        self._reachable()
        if reply.status in (PlanStatus.HIT, PlanStatus.SHARED):
            return self._served(reply)
        if reply.token is not None and is_never_cache(compute):
            self._release(reply.key, reply.token)
            refuse_never_cache(compute)
        if reply.status is PlanStatus.REFRESH:
            result = self._served(reply)
            self._refresh_in_background(reply, compute, agent, o)
            return result
        if reply.status is PlanStatus.MISS:
            return self._lead(reply, compute, agent, o)
        raise refused(reply, agent)

    def _start_probe(self) -> None:
        def probe() -> None:
            while True:
                time.sleep(self.outage_probe_ms / 1000.0)
                try:
                    self.okome.client.ping()
                except Exception as e:
                    if self._probed(e):
                        return
                else:
                    self._probed(None)
                    return

        threading.Thread(target=probe, name="okome-outage-probe", daemon=True).start()

    def _bypass(self, key: str, compute: Callable[[], T], o: Options) -> PlanResult[T]:
        refuse_never_cache(compute)
        try:
            plan = run_with_deadline(compute, o.max_compute_ms, key)
        except Late:
            assert o.max_compute_ms is not None
            raise ComputeTimeout(o.max_compute_ms, key=key, retry_after_ms=1000) from None
        return bypassed(key, self._encode(plan)[1])

    def _lead(
        self,
        reply: PlanReply,
        compute: Callable[[], T],
        agent: Any,
        o: Options,
        refresh: bool = False,
    ) -> PlanResult[T]:
        """Compute under the lock ``reply`` granted, then store and release it."""
        token = reply.token
        lease = None
        if token is not None:
            lock_ttl = reply.lock_ttl_ms or o.lock_ttl_ms  # REFRESH carries the plan's TTL
            interval = heartbeat_interval(lock_ttl, o.heartbeat_ms)
            lease = self._heartbeats.add(reply.key, token, lock_ttl, interval)
        try:
            try:
                # Encode, and decode as a HIT will, while we hold the lock: a
                # plan that does not make the round trip is a failure, not stored.
                value, plan = self._encode(run_with_deadline(compute, o.max_compute_ms, reply.key))
            finally:
                if lease is not None:
                    self._heartbeats.remove(lease)
        except Late:
            assert o.max_compute_ms is not None
            if token is not None:
                self._release(reply.key, token, o.failure_ttl_ms, timeout_message(o.max_compute_ms))
            raise timed_out(reply, o) from None
        except Exception as e:
            if token is not None:
                self._fail(reply.key, token, e, o)
            raise
        except BaseException:
            if token is not None:
                self._release(reply.key, token)
            raise
        try:
            set_reply = self.okome.plan_set(
                reply.key, value, **o.store(token, agent), fenced=refresh and token is not None
            )
        except UNREACHABLE as e:
            self._unreachable(e, reply.key)
            return bypassed(reply.key, plan)
        except Exception as e:
            if token is not None:
                self._fail(reply.key, token, e, o)
            raise
        except BaseException:
            if token is not None:
                self._release(reply.key, token)
            raise
        return computed(reply, plan, set_reply.status)

    def _fail(self, key: str, token: str, e: BaseException, o: Options) -> None:
        """Release the lock of a computation that raised ``e``: as failed
        with ``failure_ttl_ms``, or (0) for the next waiter to take over."""
        if o.failure_ttl_ms > 0:
            self._release(key, token, o.failure_ttl_ms, failure_message(e))
        else:
            self._release(key, token)

    def _release(
        self, key: str, token: str, failed_ms: int | None = None, message: str | None = None
    ) -> None:
        try:
            if failed_ms is None:
                self.okome.unlock(key, token)
            else:
                self.okome.unlock(key, token, failed_ms=failed_ms, message=message)
        except UNREACHABLE as e:
            log.warning("okome: could not release the lock of %s: %s", key, e)
        except Exception:
            log.exception("okome: could not release the lock of %s", key)

    def _refresh_in_background(
        self, reply: PlanReply, compute: Callable[[], T], agent: Any, o: Options
    ) -> None:
        def run() -> None:
            try:
                result = self._lead(reply, compute, agent, o, refresh=True)
                if result.stored is StoreStatus.FENCED:
                    log.info(
                        "okome: the refresh of %s was not stored (FENCED): its lock expired "
                        "meanwhile; the plan served stays",
                        reply.key,
                    )
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
