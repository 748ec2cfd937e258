"""okome's exceptions.

Error replies from the module become :class:`OkomeError` subclasses that keep
the server's message (``str(e)`` is the message without its code, as in
redis-py; ``e.server_message`` is the reply as sent, code included). Each
also subclasses redis-py's ``ResponseError`` (and, where redis-py has a more
specific class, that class too), so existing ``except`` clauses keep working.

The planner's outcomes that are not errors of the server (``429``, a wait
that timed out) are :class:`PlannerError` subclasses carrying the HTTP
headers to answer with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from redis import exceptions as rex


class OkomeError(rex.ResponseError):
    """An error reply from an okome command."""

    code: str
    message: str

    def __init__(self, message: str, code: str = "ERR") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def server_message(self) -> str:
        """The error reply as the server sent it, code first (``ERR ...``)."""
        return f"{self.code} {self.message}"


class ArgumentError(OkomeError):
    """An argument was refused: syntax, arity, a non-integer, a value out of
    range, an empty component or token. Nothing was written."""


class OutOfRangeError(ArgumentError):
    """An integer outside its allowed range (a TTL outside the standard, ...)."""


class InvalidJSONError(ArgumentError):
    """A value that must be JSON is not."""


class TooLargeError(ArgumentError):
    """A prompt or value larger than ``okome.max-prompt-bytes`` / ``max-value-bytes``."""


class KeyFormatError(ArgumentError):
    """A key argument that is not a well-formed okome key of the expected kind."""


class NotCacheableError(ArgumentError):
    """The seed's hard rule: okome caches only planner, model_meta, rag, tools
    and health data; never file writes, git operations, builds, agent memory
    or tool execution results."""


class WrongTypeError(OkomeError):
    """The key holds a value of another Redis type (``WRONGTYPE``)."""


class WrongSlotError(OkomeError, rex.MovedError):
    """A call sent with a plain ``redis.Redis`` to a cluster node that does not
    serve its keys' slot: the node answered ``MOVED`` (``str(e)`` is ``"<slot>
    <host>:<port>"``, as redis-py's ``MovedError``, which this also is). Use a
    ``RedisCluster`` client, with which okome follows ``MOVED`` itself."""


class CrossSlotError(OkomeError, rex.ClusterCrossSlotError):
    """Redis's ``CROSSSLOT``: the keys one call touches are in two slots (say
    ``AGENT`` with a plan in another slot, sent to a single node; on a
    ``RedisCluster`` okome splits such calls itself)."""


class SlotMigratingError(OkomeError, rex.TryAgainError):
    """A cluster call refused with ``TRYAGAIN`` until okome's redirection
    budget was spent: its slot is being migrated and the keys it touches are
    split between the two nodes (or, for a call of several keys, missing on
    the importing one). The call did not run; retry it once the migration
    has ended. Also a redis-py ``TryAgainError``. Its message is the
    client's (the call, the slot, the number of ``TRYAGAIN``), ending with
    the last reply."""


class PermissionDeniedError(OkomeError, rex.NoPermissionError):
    """The ACL user may not touch a key okome derives (``NOPERM``)."""


class OOMError(OkomeError, rex.OutOfMemoryError):
    """Memory is full and the call had to write (``OOM``)."""


class ReservationError(OkomeError):
    """``OKOME.SETTLE`` of a reservation that is unknown (never issued, or past
    its ``RESERVE`` TTL: ``ERR unknown or expired reservation``), or that was
    settled before with other costs. Nothing was done."""


class ModuleNotLoadedError(OkomeError):
    """The server does not know the okome commands (an okome command was
    answered ``unknown command``, or :meth:`okome.Okome.check` /
    :meth:`okome.Okome.stats` found no okome module loaded): load
    ``libokome.so`` (``--loadmodule /path/to/libokome.so``)."""


class InternalError(OkomeError):
    """``ERR okome internal error``: a bug in the module, reported as an error reply."""


class ConfigurationError(ValueError):
    """A client configuration okome refuses to run a call on, with the reason."""


NOT_LOADED_HINT = (
    "the okome module is not loaded on this server: load libokome.so "
    "(redis-server --loadmodule /path/to/libokome.so, or MODULE LOAD /path/to/libokome.so)"
)


def translate(e: rex.ResponseError) -> Exception:
    """The okome exception for an error reply redis-py raised."""
    if isinstance(e, OkomeError) or type(e) not in _TRANSLATED:
        return e  # ASK, TRYAGAIN, READONLY, ...: redis-py's own classes
    text = str(e.args[0]) if e.args else str(e)
    code = getattr(e, "status_code", None)
    cls: type[OkomeError] = OkomeError
    if isinstance(e, rex.NoPermissionError):
        code, cls = "NOPERM", PermissionDeniedError
    elif isinstance(e, rex.OutOfMemoryError):
        code, cls = "OOM", OOMError
    elif isinstance(e, rex.MovedError):
        code, cls = "MOVED", WrongSlotError
    elif isinstance(e, rex.ClusterCrossSlotError):
        code, cls = "CROSSSLOT", CrossSlotError
    elif text.startswith("WRONGTYPE "):
        code, text, cls = "WRONGTYPE", text[len("WRONGTYPE ") :], WrongTypeError
    elif text.startswith("CROSSSLOT "):
        code, text, cls = "CROSSSLOT", text[len("CROSSSLOT ") :], CrossSlotError
    else:
        cls = _classify(text)
    if cls is ModuleNotLoadedError:
        text += f" ({NOT_LOADED_HINT})"
    out = cls(text, code if isinstance(code, str) and code else "ERR")
    out.__cause__ = e
    return out


_TRANSLATED = (
    rex.ResponseError,
    rex.MovedError,
    rex.NoPermissionError,
    rex.OutOfMemoryError,
    rex.ClusterCrossSlotError,
)


def _classify(text: str) -> type[OkomeError]:
    low = text.lower()
    if low.startswith("unknown command") and "okome." in low:
        return ModuleNotLoadedError
    if low.startswith("okome internal error"):
        return InternalError
    if low.startswith("kind ") and ("not cacheable" in low or "is read with" in low):
        return NotCacheableError
    if low == "unknown or expired reservation" or "already settled with other costs" in low:
        return ReservationError
    if " is not valid json (" in low:
        return InvalidJSONError
    if "is out of range" in low:
        return OutOfRangeError
    if "bytes, larger than the" in low:
        return TooLargeError
    if (
        "is not an okome key" in low
        or "is not an okome lease id" in low
        or "is not an okome reservation id" in low
        or ("' is a " in low and (" key, not a " in low or "budget key;" in low))
    ):
        return KeyFormatError
    if (
        low.startswith("syntax error")
        or low.startswith("wrong number of arguments")
        or "is not a kind of okome key" in low
        or "is not an integer" in low
        or "must not be empty" in low
    ):
        return ArgumentError
    return OkomeError


def _ceil_s(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


class PlannerError(Exception):
    """A planner request that did not produce a plan, with the HTTP answer."""

    status_code: int = 503

    def __init__(self, message: str, *, key: str | None, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.key = key
        self.headers: dict[str, str] = dict(headers)


class RateLimited(PlannerError):
    """The agent is over its rate limit (``LIMITED``): answer ``429`` with
    :attr:`headers` (``Retry-After`` in whole seconds, rounded up)."""

    status_code = 429

    def __init__(
        self, retry_after_ms: int, *, key: str | None = None, agent: str | None = None
    ) -> None:
        self.retry_after_ms = retry_after_ms
        self.retry_after = _ceil_s(retry_after_ms)
        self.agent = agent
        headers = {"Retry-After": str(self.retry_after), "X-OKOME-Agent-Rate-Remaining": "0"}
        if key is not None:
            headers["X-OKOME-Cache-Key"] = key
        super().__init__(
            f"rate limit exceeded for agent {agent!r}: retry after {retry_after_ms} ms",
            key=key,
            headers=headers,
        )


class PlanLocked(PlannerError):
    """Another caller holds the plan's lock and the wait timed out
    (``LOCKED``): answer ``503`` with ``Retry-After``."""

    status_code = 503

    def __init__(self, lock_ttl_ms: int | None, *, key: str, rate_remaining: int | None) -> None:
        self.lock_ttl_ms = lock_ttl_ms
        self.retry_after = _ceil_s(lock_ttl_ms if lock_ttl_ms and lock_ttl_ms > 0 else 1000)
        headers = {"Retry-After": str(self.retry_after), "X-OKOME-Cache-Key": key}
        if rate_remaining is not None:
            headers["X-OKOME-Agent-Rate-Remaining"] = str(rate_remaining)
        super().__init__(
            f"the plan {key!r} is being computed by another caller (lock TTL {lock_ttl_ms} ms)",
            key=key,
            headers=headers,
        )


class ComputeFailed(PlannerError):
    """The plan's computation failed and the failure is shared: this caller
    was waiting for the leader whose ``compute()`` raised (or ran past
    ``max_compute_ms``), or looked the plan up within the failure's time
    (``failure_ttl_ms``), and got ``FAILED`` instead of computing again.
    Answer ``503`` with :attr:`headers` (``Retry-After``: when a request
    computes again). :attr:`message` is the leader's (``"TypeName:
    message"`` of its exception), ``None`` if it published none. The leader
    itself gets its own exception, not this one."""

    status_code = 503

    def __init__(
        self,
        message: str | None,
        *,
        key: str,
        retry_after_ms: int,
        rate_remaining: int | None = None,
        text: str | None = None,
    ) -> None:
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.retry_after = _ceil_s(retry_after_ms if retry_after_ms > 0 else 1000)
        headers = {"Retry-After": str(self.retry_after), "X-OKOME-Cache-Key": key}
        if rate_remaining is not None:
            headers["X-OKOME-Agent-Rate-Remaining"] = str(rate_remaining)
        super().__init__(
            text
            or f"the computation of the plan {key!r} failed: {message or '(no message)'} "
            f"(retry after {retry_after_ms} ms)",
            key=key,
            headers=headers,
        )


class ComputeTimeout(ComputeFailed):
    """This caller led and its ``compute()`` ran past the planner's
    ``max_compute_ms``: the lock was released as failed (its waiters got
    :class:`ComputeFailed` at once) and the late result, if any, is dropped.
    A sync ``compute`` goes on in its thread until it returns (Python cannot
    stop a thread); an asyncio one is cancelled."""

    def __init__(
        self,
        max_compute_ms: int,
        *,
        key: str,
        retry_after_ms: int,
        rate_remaining: int | None = None,
    ) -> None:
        self.max_compute_ms = max_compute_ms
        super().__init__(
            timeout_message(max_compute_ms),
            key=key,
            retry_after_ms=retry_after_ms,
            rate_remaining=rate_remaining,
            text=f"the computation of the plan {key!r} ran past max_compute_ms="
            f"{max_compute_ms}: the lock was released as failed, the result is dropped",
        )


def timeout_message(max_compute_ms: int) -> str:
    """The failure message a leader past its deadline publishes."""
    return f"ComputeTimeout: compute() ran past max_compute_ms={max_compute_ms}"


class OkomeUnavailable(PlannerError):
    """Redis cannot be reached (a refused or lost connection, a timeout, a
    server still loading its data), for a planner request, a follower's wait
    included: answer ``503`` with :attr:`headers` (``Retry-After``). The
    redis-py error (``ConnectionError``, ``TimeoutError``) is ``__cause__``. With
    ``Planner(..., fail_open=True)`` the planner computes without the cache
    instead of raising this."""

    status_code = 503

    def __init__(
        self, cause: BaseException, *, key: str | None, retry_after_ms: int = 1000
    ) -> None:
        self.retry_after_ms = retry_after_ms
        self.retry_after = _ceil_s(retry_after_ms)
        headers = {"Retry-After": str(self.retry_after)}
        if key is not None:
            headers["X-OKOME-Cache-Key"] = key
        super().__init__(
            f"okome: Redis is unavailable ({type(cause).__name__}: {cause})",
            key=key,
            headers=headers,
        )


class LeaseUnavailable(Exception):
    """No lease was free (``OKOME.LEASE.ACQUIRE`` replied nil, at once or at
    the end of its ``WAIT``): answer ``503`` with ``Retry-After``."""

    status_code = 503

    def __init__(self, subject: str | bytes, in_use: int, retry_after_ms: int) -> None:
        self.subject = subject
        self.in_use = in_use
        self.retry_after_ms = retry_after_ms
        self.retry_after = _ceil_s(retry_after_ms if retry_after_ms > 0 else 1000)
        self.headers = {"Retry-After": str(self.retry_after)}
        super().__init__(
            f"no lease of {subject!r} is free ({in_use} in use): retry after {retry_after_ms} ms"
        )


class UncacheableFunctionError(TypeError):
    """``@planner.cached`` refused to decorate a function (at decoration
    time): one the seed's hard rule says never to cache, as far as okome can
    tell from the function itself (marked :func:`okome.never_cache`, a
    generator, annotated ``-> None``), or one whose calls the planner key
    cannot tell apart (a parameter other than ``model``, ``prompt``,
    ``toolset_version`` and ``repo_hash``). okome cannot know what a function
    does otherwise: caching one that writes files, runs git or a tool is a
    bug it does not catch."""
