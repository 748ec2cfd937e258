""":func:`never_cache`: the mark of a function okome must never cache (the
seed's hard rule), checked by ``@planner.cached`` and ``get_or_compute``."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from .errors import UncacheableFunctionError

F = TypeVar("F", bound=Callable[..., Any])

MARK = "__okome_never_cache__"


def never_cache(fn: F) -> F:
    """Mark ``fn`` as never to be cached: ``@planner.cached`` refuses it
    (and any function that wraps it with ``functools.wraps``), and
    ``get_or_compute`` refuses to run it as ``compute`` (on a miss). For what the seed says
    never to cache, which okome cannot tell from the function itself: tool
    execution, file writes, git operations, builds, agent memory::

        @okome.never_cache
        def run_tool(name: str, args: dict[str, Any]) -> str: ...
    """
    try:
        setattr(fn, MARK, True)
    except (AttributeError, TypeError):
        raise TypeError(f"cannot mark {fn!r} (no attributes): wrap it in a function") from None
    return fn


def marked(fn: object) -> object | None:
    """``fn``, or the function it wraps (``__wrapped__``, ``functools.partial``,
    a bound method's function), that is marked :func:`never_cache`; ``None``
    if none is."""
    for _ in range(100):  # a __wrapped__ cycle ends here
        if fn is None:
            return None
        if getattr(fn, MARK, False) is True:
            return fn
        if isinstance(fn, functools.partial):
            fn = fn.func
        else:
            fn = getattr(fn, "__wrapped__", None)
    return None


def is_never_cache(fn: object) -> bool:
    """Whether ``fn`` (or a function it wraps) is marked :func:`never_cache`."""
    return marked(fn) is not None


def refuse_never_cache(fn: object) -> None:
    """:class:`okome.UncacheableFunctionError` if ``fn`` (or a function it
    wraps) is marked :func:`never_cache`."""
    found = marked(fn)
    if found is not None:
        what = _name(found) if found is fn else f"{_name(fn)} wraps {_name(found)}, which"
        raise UncacheableFunctionError(
            f"{what} is marked okome.never_cache: okome does not cache it "
            "(the seed's hard rule: no file writes, git operations, builds, agent memory "
            "or tool execution results)"
        )


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))
