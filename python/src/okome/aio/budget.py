"""The seed's ``budget.py`` as coroutines, for ``async def`` code: the
asyncio twin of :mod:`okome.budget`, over :class:`okome.aio.Okome`.

::

    from okome.aio.budget import allow_rate, allow_cache_write, record_agent_key

    allowed, remaining = await allow_rate(agent_id="agent-123", limit=60, window_seconds=60)

The same names, arguments, commands and results as :mod:`okome.budget`
(``allow_rate`` and ``allow_cache_write`` an exact sliding window each,
``record_agent_key`` the module's agent ledger), with the client of
:mod:`okome.aio.cache`.
"""

from __future__ import annotations

from ..budget import agent_keys_key
from . import _config

__all__ = [
    "agent_keys",
    "agent_keys_key",
    "allow_cache_write",
    "allow_rate",
    "record_agent_key",
]


async def allow_rate(agent_id: str, limit: int, window_seconds: int) -> tuple[bool, int]:
    """Charge one request to the agent: ``(allowed, remaining)`` (``OKOME.RATE``)."""
    r = await _config.default().rate(agent_id, limit, window_seconds)
    return r.allowed, r.remaining


async def allow_cache_write(
    agent_id: str, write_limit: int, window_seconds: int | None = None
) -> tuple[bool, int]:
    """Charge one cache write to the agent: ``(allowed, remaining)``
    (``OKOME.WBUDGET``; the window defaults to the module's 60 s)."""
    r = await _config.default().wbudget(agent_id, write_limit, window=window_seconds)
    return r.allowed, r.remaining


async def record_agent_key(agent_id: str, key: str) -> None:
    """Record that ``agent_id`` wrote ``key`` in the agent's ledger
    (``OKOME.AGENT.RECORD``); see :func:`okome.budget.record_agent_key`."""
    await _config.default().agent_record(agent_id, key)


async def agent_keys(agent_id: str) -> set[str]:
    """The keys in the agent's ledger (``OKOME.AGENT.KEYS``, every page)."""
    return {e.key async for e in _config.default().iter_agent_keys(agent_id)}
