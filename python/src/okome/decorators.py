"""``@planner.cached(...)``: a function of the prompt, cached on the planner
protocol; and :func:`never_cache`, the mark of a function never to cache.

::

    planner = okome.Planner(redis.Redis(), limit=60, window=60)

    @planner.cached(model="llama3:8b", toolset_version="v1")
    def make_plan(prompt: str) -> dict[str, Any]: ...        # your (slow) planner

    make_plan("Create a plan", repo_hash=repo, agent="agent-1")           # the plan
    make_plan.result("Create a plan", repo_hash=repo).headers             # a PlanResult

The function's parameters must be parts of the planner key (``prompt``,
and any of ``model``, ``toolset_version``, ``repo_hash``); each call gets the
key parts it takes, from the call or from ``cached(...)``. Every call goes
through :meth:`okome.Planner.get_or_compute`: one computation per key
across callers and processes, refresh-ahead, the agent's rate, the
``X-OKOME-Cache`` headers (on :meth:`Cached.result`'s result).

The seed's hard rule (cache only read-only data, deterministic and
recomputable results; never file writes, git operations, builds, agent
memory or tool execution results) is checked where okome can know, at
decoration time: :class:`okome.UncacheableFunctionError` for a function
marked :func:`never_cache` (or wrapping one), a generator (a stream, not a
value) and a function annotated ``-> None`` (run for its side effects).
Anything else okome cannot know: what the function does is the caller's
responsibility.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, cast

from ._marks import never_cache, refuse_never_cache
from .errors import UncacheableFunctionError
from .planner import Overrides, PlanResult, T

if TYPE_CHECKING:
    from .aio.planner import Planner as AsyncPlanner
    from .planner import Planner

__all__ = ["AsyncCached", "Cached", "never_cache"]

PARTS = ("model", "prompt", "toolset_version", "repo_hash")
"""The planner key's parts, in ``get_or_compute``'s order."""

NOTHING = ("None", "NoReturn", "Never", "typing.NoReturn", "typing.Never")


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def check(fn: Callable[..., Any], asynchronous: bool) -> tuple[tuple[str, bool], ...]:
    """Refuse what ``@planner.cached`` must not decorate; return the key
    parts ``fn`` takes, each with whether it is positional-only."""
    name = _name(fn)
    if not callable(fn):
        raise TypeError(f"@planner.cached decorates a function, got {fn!r}")
    refuse_never_cache(fn)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise UncacheableFunctionError(
            f"{name} is a generator: it streams values, okome caches one value per key"
        )
    if inspect.iscoroutinefunction(fn) and not asynchronous:
        raise TypeError(
            f"{name} is a coroutine function: decorate it with an okome.aio.Planner's cached"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise TypeError(f"@planner.cached cannot read the signature of {name}: {e}") from None
    ret = sig.return_annotation
    if ret is None or ret is type(None) or (isinstance(ret, str) and ret.strip() in NOTHING):
        raise UncacheableFunctionError(
            f"{name} is annotated -> {ret if isinstance(ret, str) else 'None'}: a function that "
            "returns nothing is run for its side effects, which okome never caches"
        )
    if repr(ret) in ("typing.NoReturn", "typing.Never", "typing_extensions.Never"):
        raise UncacheableFunctionError(f"{name} never returns: nothing to cache")
    takes: list[tuple[str, bool]] = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name not in PARTS:
            raise UncacheableFunctionError(
                f"{name} takes {p.name!r}: a cached function takes only parts of the planner key "
                f"({', '.join(PARTS)}), so that calls with other arguments cannot share a plan"
            )
        takes.append((p.name, p.kind is p.POSITIONAL_ONLY))
    if "prompt" not in {n for n, _ in takes}:
        raise UncacheableFunctionError(f"{name} does not take the prompt: a plan is of a prompt")
    return tuple(takes)


class _Base:
    """What :class:`Cached` and :class:`AsyncCached` share."""

    def __init__(
        self,
        fn: Callable[..., Any],
        takes: tuple[tuple[str, bool], ...],
        parts: dict[str, str | None],
        agent: str | None,
        label: str | None,
        options: Overrides,
    ) -> None:
        functools.update_wrapper(cast(Any, self), fn)
        self._fn = fn
        self._takes = takes
        self._parts = parts
        self.agent = agent
        """The agent charged when a call gives none (``None``: no charge)."""
        self.label = label if label is not None else _name(fn)
        """The ``label`` of the ``on_result`` events (default: the function's qualified name)."""
        self._options = options

    def __repr__(self) -> str:
        return f"<okome cached {self.label}>"

    def _key(
        self, prompt: str, model: str | None, toolset_version: str | None, repo_hash: str | None
    ) -> tuple[str, str, str, str]:
        given = {"model": model, "toolset_version": toolset_version, "repo_hash": repo_hash}
        given["prompt"] = prompt
        values = [given[p] if given[p] is not None else self._parts.get(p) for p in PARTS]
        missing = [part for part, v in zip(PARTS, values) if v is None]
        if missing:
            raise TypeError(
                f"{self.label}: no {' and no '.join(missing)}: give "
                f"{', '.join(m + '=' for m in missing)} to the call or to @planner.cached(...)"
            )
        m, p, t, r = values
        assert m is not None and p is not None and t is not None and r is not None
        return m, p, t, r

    def _compute(self, key: tuple[str, str, str, str]) -> Callable[[], Any]:
        values = dict(zip(PARTS, key))
        args = [values[n] for n, positional in self._takes if positional]
        kwargs = {n: values[n] for n, positional in self._takes if not positional}
        fn = self._fn
        return lambda: fn(*args, **kwargs)


class Cached(_Base, Generic[T]):
    """A function cached by a sync :class:`okome.Planner` (``@planner.cached(...)``).

    ``f(prompt, ...)`` returns the plan; ``f.result(prompt, ...)`` the
    :class:`okome.PlanResult` (its ``headers``, ``status``, ...). Keyword
    arguments: the key parts (``model``, ``toolset_version``,
    ``repo_hash``) not given to ``cached(...)``, or to use instead of
    those, and the ``agent`` to charge. ``f.__wrapped__`` is the function.
    """

    def __init__(
        self,
        planner: Planner[T],
        fn: Callable[..., T],
        parts: dict[str, str | None],
        agent: str | None,
        label: str | None,
        options: Overrides,
    ) -> None:
        super().__init__(fn, check(fn, asynchronous=False), parts, agent, label, options)
        self.planner = planner

    def __call__(
        self,
        prompt: str,
        *,
        model: str | None = None,
        toolset_version: str | None = None,
        repo_hash: str | None = None,
        agent: str | None = None,
    ) -> T:
        return self.result(
            prompt, model=model, toolset_version=toolset_version, repo_hash=repo_hash, agent=agent
        ).plan

    def result(
        self,
        prompt: str,
        *,
        model: str | None = None,
        toolset_version: str | None = None,
        repo_hash: str | None = None,
        agent: str | None = None,
    ) -> PlanResult[T]:
        """The :class:`okome.PlanResult` (with its ``headers``) of the call."""
        key = self._key(prompt, model, toolset_version, repo_hash)
        return self.planner.get_or_compute(
            *key,
            self._compute(key),
            agent=agent if agent is not None else self.agent,
            label=self.label,
            **self._options,
        )


class AsyncCached(_Base, Generic[T]):
    """A function cached by an :class:`okome.aio.Planner`: as :class:`Cached`,
    with coroutines (``await f(prompt, ...)``, ``await f.result(prompt, ...)``);
    the function may be a coroutine function or a plain one."""

    def __init__(
        self,
        planner: AsyncPlanner[T],
        fn: Callable[..., T | Awaitable[T]],
        parts: dict[str, str | None],
        agent: str | None,
        label: str | None,
        options: Overrides,
    ) -> None:
        super().__init__(fn, check(fn, asynchronous=True), parts, agent, label, options)
        self.planner = planner

    async def __call__(
        self,
        prompt: str,
        *,
        model: str | None = None,
        toolset_version: str | None = None,
        repo_hash: str | None = None,
        agent: str | None = None,
    ) -> T:
        result = await self.result(
            prompt, model=model, toolset_version=toolset_version, repo_hash=repo_hash, agent=agent
        )
        return result.plan

    async def result(
        self,
        prompt: str,
        *,
        model: str | None = None,
        toolset_version: str | None = None,
        repo_hash: str | None = None,
        agent: str | None = None,
    ) -> PlanResult[T]:
        """The :class:`okome.PlanResult` (with its ``headers``) of the call."""
        key = self._key(prompt, model, toolset_version, repo_hash)
        return await self.planner.get_or_compute(
            *key,
            self._compute(key),
            agent=agent if agent is not None else self.agent,
            label=self.label,
            **self._options,
        )
