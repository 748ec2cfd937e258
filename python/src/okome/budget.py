"""The seed's ``budget.py``, unchanged for its callers, on okome.

::

    from okome.budget import allow_rate, allow_cache_write, record_agent_key

``allow_rate`` and ``allow_cache_write`` are one okome command each (an
exact sliding window, where the seed's INCR + EXPIRE let twice the limit
through at a window edge). They use the client given to
:func:`okome.configure`, or one made from ``OKOME_REDIS_URL``.
"""

from __future__ import annotations

from . import _config, _keys

AGENT_KEYS_TTL_S = 86_400
"""How long :func:`record_agent_key`'s ledger of an agent lives after its last entry."""


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


def agent_keys_key(agent_id: str) -> str:
    """``okome:budget:keys:{<agent>}``: the ledger :func:`record_agent_key` writes."""
    return f"okome:budget:keys:{{{_keys.escape(agent_id)}}}"


def record_agent_key(agent_id: str, key: str) -> None:
    """Record that ``agent_id`` wrote ``key``.

    CLIENT-SIDE, NOT A MODULE COMMAND: okome has no agent ledger yet, so this
    does what the seed's helper did, in one round trip: ``SADD`` of the key
    to a set ``okome:budget:keys:{<agent>}`` (the agent's hash tag, so it
    shares the slot of the agent's budgets) and ``EXPIRE`` of the set
    (24 h after the last entry), as a ``MULTI``/``EXEC`` transaction (a plain
    pipeline on a cluster).
    """
    ok = _config.default()
    ledger = agent_keys_key(agent_id)
    pipe = ok.client.pipeline(transaction=not ok.is_cluster)
    pipe.sadd(ledger, key)
    pipe.expire(ledger, AGENT_KEYS_TTL_S)
    pipe.execute()


def agent_keys(agent_id: str) -> set[str]:
    """The keys :func:`record_agent_key` recorded for ``agent_id``."""
    members = _config.default().client.smembers(agent_keys_key(agent_id))
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}
