"""okome for FastAPI (``pip install ./python[fastapi]``): rate limits as
dependencies, and one call that wires an app to okome.

::

    from fastapi import Depends, FastAPI
    import okome.fastapi
    from okome.fastapi import RateLimit, client_host

    app = FastAPI()
    okome.fastapi.install(app)            # OKOME_REDIS_URL; okome's errors as answers

    @app.get("/api/tools", dependencies=[Depends(RateLimit(60, 60)),  # per X-OKOME-Agent
                                         Depends(RateLimit(600, 60, key=client_host, name="ip"))])
    async def tools() -> list[str]: ...

- :class:`RateLimit`: one ``OKOME.RATE`` per request (an exact sliding
  window); ``429`` with ``Retry-After`` when refused, the remaining count in a
  header when admitted.
- :class:`Limits`: several :class:`RateLimit` in one ``OKOME.TAKE``, all or
  nothing.
- :func:`install`: the client (``app.state.okome``), the exception handlers
  (:class:`okome.PlannerError` and :class:`okome.LeaseUnavailable` with their
  own status and headers; Redis unreachable: ``503``; the module not loaded:
  ``503``), and a check at startup that the module is loaded.

This module evaluates its annotations at run time (FastAPI reads the
signature of a dependency's ``__call__``), so it spells ``Optional``.
"""

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Callable, Optional, Union

import redis.asyncio as aredis
from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from redis import exceptions as rex

from ._config import redis_url
from .aio import _config as aio_config
from .aio.client import Okome
from .errors import LeaseUnavailable, ModuleNotLoadedError, PlannerError
from .limits import Limit
from .replies import RateReply, TakeReply

__all__ = [
    "AGENT_HEADER",
    "Agent",
    "RepoHash",
    "AGENT_REMAINING",
    "REMAINING",
    "Limits",
    "RateLimit",
    "agent",
    "check_module",
    "client_host",
    "install",
    "okome_client",
]

log = logging.getLogger("okome.fastapi")

AGENT_HEADER = "X-OKOME-Agent"
"""The seed's agent header: the default key of a :class:`RateLimit`."""
AGENT_REMAINING = "X-OKOME-Agent-Rate-Remaining"
"""The seed's header for what is left of the agent's rate."""
REMAINING = "X-OKOME-Rate-Remaining"
"""What is left of a :class:`RateLimit` keyed by anything but the agent."""
UNAVAILABLE_RETRY_AFTER = 1
"""``Retry-After`` (seconds) of the ``503`` answered when Redis is unreachable."""

Agent = Annotated[str, Header(alias=AGENT_HEADER)]
"""An endpoint parameter of type ``Agent`` is the ``X-OKOME-Agent`` header
(required: FastAPI answers ``422`` without it)."""
RepoHash = Annotated[str, Header(alias="X-Repo-Hash")]
"""The seed's ``X-Repo-Hash`` header (required), part of a planner key."""

KeyFunc = Callable[[Request], Union[Optional[str], Awaitable[Optional[str]]]]
_DEFAULT: Any = object()


def agent(request: Request) -> Optional[str]:
    """The ``X-OKOME-Agent`` header (``None`` if absent or empty): the
    default key of a :class:`RateLimit`."""
    return request.headers.get(AGENT_HEADER) or None


def client_host(request: Request) -> Optional[str]:
    """The client's address (``request.client.host``; ``None`` without one),
    for a per-IP limit. Behind a proxy, run uvicorn with ``--proxy-headers``
    and ``--forwarded-allow-ips`` so that this is the caller's, not the
    proxy's."""
    return request.client.host if request.client is not None else None


def okome_client(app: Any) -> Okome:
    """The app's client (``app.state.okome``, set by :func:`install`), else
    the one of :mod:`okome.aio.cache` (:func:`okome.aio.configure`, or one
    made from ``OKOME_REDIS_URL``)."""
    ok = getattr(app.state, "okome", None)
    return ok if isinstance(ok, Okome) else aio_config.default()


class RateLimit:
    """A rate limit as a FastAPI dependency: ``Depends(RateLimit(60, 60))``.

    Each request charges ``cost`` units to the window ``name`` of its key
    (``OKOME.RATE key limit window [COST cost] [NAME name]``: at most
    ``limit`` units in any ``window`` seconds). Refused: ``HTTPException``
    ``429`` with ``Retry-After`` (whole seconds, rounded up) and ``header:
    0``; nothing is charged. Admitted: ``header`` carries the remaining
    count on the response (the smallest, if several limits of a route set
    the same header); the dependency's value is the :class:`okome.RateReply`.

    ``key`` is a function of the request (plain or ``async``) giving the
    subject: by default the ``X-OKOME-Agent`` header (:func:`agent`); for a
    per-IP limit, :func:`client_host`. A request for which it gives ``None``
    or ``""`` (no agent header, say) is answered ``400``.

    ``name`` picks the subject's window: ``None`` is the subject's
    ``OKOME.RATE`` window, the one ``okome.budget.allow_rate`` and the
    planner's agent rate (``Planner(limit=..., window=...)``) charge, so a
    per-agent ``RateLimit`` and the planner share the agent's budget. Give
    limits on other kinds of subject a name (``name="ip"``), so that an IP
    and an agent of the same spelling do not share a window.

    ``header`` defaults to ``X-OKOME-Agent-Rate-Remaining`` for the agent
    key and ``X-OKOME-Rate-Remaining`` for any other; ``None`` sets none.
    FastAPI adds a dependency's headers only to the response it makes from
    the endpoint's return value: an endpoint that returns a ``Response`` of
    its own answers without them.

    The client is ``client`` if given, else the app's (:func:`okome_client`).
    """

    def __init__(
        self,
        limit: int,
        window: int,
        *,
        key: Optional[KeyFunc] = None,
        cost: int = 1,
        name: Optional[str] = None,
        header: Optional[str] = _DEFAULT,
        client: Optional[Okome] = None,
    ) -> None:
        if limit < 1 or window < 1 or cost < 0:
            raise ValueError(f"limit ({limit}) and window ({window}) must be >= 1, cost >= 0")
        self.limit, self.window, self.cost, self.name = limit, window, cost, name
        self.key: KeyFunc = key if key is not None else agent
        if header is _DEFAULT:
            header = AGENT_REMAINING if key is None else REMAINING
        self.header: Optional[str] = header
        self.client = client

    def __repr__(self) -> str:
        return (
            f"RateLimit({self.limit}, {self.window}, key={getattr(self.key, '__name__', self.key)}"
            f", cost={self.cost}, name={self.name!r})"
        )

    async def subject(self, request: Request) -> str:
        """The request's key; ``HTTPException`` ``400`` if it has none."""
        value = self.key(request)
        if inspect.isawaitable(value):
            value = await value
        if not value:
            if self.key is agent:
                detail = f"the {AGENT_HEADER} header is required"
            else:
                detail = f"no rate-limit key for this request ({self!r})"
            raise HTTPException(status_code=400, detail=detail)
        return str(value)

    def as_limit(self, subject: str) -> Limit:
        """This limit of ``subject`` for ``OKOME.TAKE``."""
        return Limit(subject, self.name or "default", self.limit, self.window, self.cost)

    async def __call__(self, request: Request, response: Response) -> RateReply:
        subject = await self.subject(request)
        ok = self.client if self.client is not None else okome_client(request.app)
        cost = None if self.cost == 1 else self.cost
        reply = await ok.rate(subject, self.limit, self.window, cost=cost, name=self.name)
        if not reply.allowed:
            raise _too_many(reply.retry_after, [self.header])
        _set_remaining(response, self.header, reply.remaining)
        return reply


class Limits:
    """Several :class:`RateLimit` as one dependency, charged all or nothing
    with one ``OKOME.TAKE`` (one round trip; on a cluster, limits in several
    slots are composed from reservations, see python/README):
    ``Depends(Limits(RateLimit(60, 60), RateLimit(600, 60, key=client_host,
    name="ip")))``.

    Refused (by any limit): ``429`` with ``Retry-After`` (the longest wait
    among the refusing limits), each refusing limit's header ``0``, and
    nothing charged anywhere. Admitted: each limit's header its remaining
    count (the smallest, where limits share a header); the dependency's value
    is the :class:`okome.TakeReply` (``limits`` in the order given).
    """

    def __init__(self, *limits: RateLimit, client: Optional[Okome] = None) -> None:
        if not limits:
            raise ValueError("Limits needs at least one RateLimit")
        self.limits: Sequence[RateLimit] = limits
        self.client = client

    async def __call__(self, request: Request, response: Response) -> TakeReply:
        subjects = [await limit.subject(request) for limit in self.limits]
        ok = self.client if self.client is not None else okome_client(request.app)
        reply = await ok.take([lim.as_limit(s) for lim, s in zip(self.limits, subjects)])
        if not reply.allowed:
            refusing = [
                lim.header
                for lim, state in zip(self.limits, reply.limits)
                if state.retry_after_ms > 0
            ]
            raise _too_many(reply.retry_after, refusing)
        for lim, state in zip(self.limits, reply.limits):
            _set_remaining(response, lim.header, state.remaining)
        return reply


def _too_many(retry_after: int, headers: Sequence[Optional[str]]) -> HTTPException:
    out = {"Retry-After": str(retry_after)}
    out.update({h: "0" for h in headers if h is not None})
    return HTTPException(
        status_code=429, detail=f"rate limit exceeded: retry after {retry_after} s", headers=out
    )


def _set_remaining(response: Response, header: Optional[str], remaining: int) -> None:
    if header is None:
        return
    current = response.headers.get(header)
    if current is not None and current.isdigit() and int(current) <= remaining:
        return
    response.headers[header] = str(remaining)


# -- install ---------------------------------------------------------------


def install(app: FastAPI, client: Any = None) -> Okome:
    """Wire ``app`` to okome; returns its :class:`okome.aio.Okome`.

    - The client: ``client`` (a ``redis.asyncio.Redis``, a
      ``redis.asyncio.cluster.RedisCluster`` or an :class:`okome.aio.Okome`),
      else one made from ``OKOME_REDIS_URL`` (closed at shutdown); kept in
      ``app.state.okome``, used by :class:`RateLimit` and :class:`Limits`,
      and given to :mod:`okome.aio.cache` and :mod:`okome.aio.budget`
      (:func:`okome.aio.configure`) while the app runs.
    - Exception handlers: an :class:`okome.PlannerError` (``RateLimited``
      429, ``PlanLocked`` 503, ...) or :class:`okome.LeaseUnavailable`
      answers its ``status_code`` with its ``headers``; a Redis connection
      error or timeout ``503`` with ``Retry-After: 1``; an
      :class:`okome.ModuleNotLoadedError` ``503`` saying to load
      ``libokome.so``. The body is FastAPI's ``{"detail": message}``.
    - At startup, one ``OKOME.KEY`` checks that the module is loaded
      (:func:`check_module`); if it is not (or Redis cannot be reached, or
      the check is refused), an error is logged on the ``okome.fastapi``
      logger (naming ``libokome.so``), and the app starts all the same.
    """
    owned = client is None
    if client is None:
        client = aredis.Redis.from_url(redis_url())
    ok = client if isinstance(client, Okome) else Okome(client)
    app.state.okome = ok
    aio_config.configure(ok)
    app.add_exception_handler(PlannerError, _planner_error)
    app.add_exception_handler(LeaseUnavailable, _planner_error)
    app.add_exception_handler(ModuleNotLoadedError, _module_not_loaded)
    app.add_exception_handler(rex.ConnectionError, _unavailable)
    app.add_exception_handler(rex.TimeoutError, _unavailable)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        aio_config.configure(ok)
        await check_module(ok)
        try:
            async with inner(a) as state:
                yield state
        finally:
            if aio_config._configured is ok:
                aio_config.reset()
            if owned:
                await ok.client.aclose()

    app.router.lifespan_context = lifespan
    return ok


def _where(ok: Okome) -> str:
    """The server the client talks to, for a log line (no password)."""
    c = ok.client
    try:
        kw = c.get_connection_kwargs()
        if "path" in kw:
            return f"unix:{kw['path']}"
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"
    except Exception:
        return type(c).__name__


async def check_module(ok: Okome) -> bool:
    """Whether the server has okome loaded (one ``OKOME.KEY``, which touches
    no data); if not, or if it cannot be reached or the check is refused (an
    ACL without ``OKOME.KEY``), logs an error and returns ``False``."""
    where = _where(ok)
    try:
        await ok.key("tools", "okome-fastapi-startup-check")
    except ModuleNotLoadedError as e:
        log.error(
            "okome: the Redis server at %s does not have the okome module loaded (%s): "
            "load libokome.so (redis-server --loadmodule /path/to/libokome.so, or "
            "`loadmodule /path/to/libokome.so` in redis.conf); until then the requests "
            "that use okome answer 503",
            where,
            e,
        )
        return False
    except (rex.ConnectionError, rex.TimeoutError) as e:
        log.error(
            "okome: cannot reach the Redis server at %s (%s); the requests that use okome "
            "answer 503 until it is up (with libokome.so loaded)",
            where,
            e,
        )
        return False
    except rex.RedisError as e:  # say, NOPERM: the ACL user may not run OKOME.KEY
        log.error(
            "okome: could not check that the Redis server at %s has libokome.so loaded: %s: %s",
            where,
            type(e).__name__,
            e,
        )
        return False
    return True


def _answer(status: int, message: str, headers: Optional[Mapping[str, str]]) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _planner_error(_request: Request, e: Exception) -> JSONResponse:
    status = getattr(e, "status_code", 503)
    headers = getattr(e, "headers", None)
    return _answer(int(status), str(e), headers)


async def _module_not_loaded(_request: Request, e: Exception) -> JSONResponse:
    # The error says what was not found, and to load libokome.so.
    return _answer(503, str(e), None)


async def _unavailable(request: Request, e: Exception) -> JSONResponse:
    if isinstance(e, (PlannerError, LeaseUnavailable)):  # say, one that is both
        return await _planner_error(request, e)
    return _answer(
        503,
        f"Redis is unavailable: {type(e).__name__}: {e}",
        {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )
