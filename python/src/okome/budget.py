"""The seed's ``budget.py``, unchanged for its callers, on okome.

::

    from okome.budget import allow_rate, allow_cache_write, record_agent_key

Each is one okome command: ``allow_rate`` and ``allow_cache_write`` an exact
sliding window (where the seed's INCR + EXPIRE let twice the limit through
at a window edge), ``record_agent_key`` the module's agent ledger. They use
the client given to :func:`okome.configure`, or one made from
``OKOME_REDIS_URL``.
"""

from __future__ import annotations

from . import _config, _keys


def allow_rate(agent_id: str, limit: int, window_seconds: int) -> tuple[bool, int]:
    """Charge one request to the agent: ``(allowed, remaining)`` (``OKOME.RATE``)."""
    r = _config.default().rate(agent_id, limit, window_seconds)
    return r.allowed, r.remaining


def allow_cache_write(
    agent_id: str, write_limit: int, window_seconds: int | None = None
) -> tuple[bool, int]:
    """Charge one cache write to the agent: ``(allowed, remaining)``
    (``OKOME.WBUDGET``; the window defaults to the module's 60 s)."""
    r = _config.default().wbudget(agent_id, write_limit, window=window_seconds)
    return r.allowed, r.remaining


def record_agent_key(agent_id: str, key: str) -> None:
    """Record that ``agent_id`` wrote ``key`` (an okome cache key that exists
    with a TTL) in the agent's ledger, ``okome:budget:keys:{<agent>}``
    (``OKOME.AGENT.RECORD``), so that ``OKOME.AGENT.PURGE`` can take it back.

    Writes made with an agent (``Okome.plan_set(..., agent=)``,
    ``cache_set(..., agent=)``, ``okome.Planner``) are recorded by the server
    already, in the same atomic step."""
    _config.default().agent_record(agent_id, key)


def agent_keys(agent_id: str) -> set[str]:
    """The keys in the agent's ledger (``OKOME.AGENT.KEYS``, every page)."""
    return {e.key for e in _config.default().iter_agent_keys(agent_id)}


def agent_keys_key(agent_id: str) -> str:
    """``okome:budget:keys:{<agent>}``: the agent's ledger."""
    return _keys.agent_key("ledger", agent_id)
