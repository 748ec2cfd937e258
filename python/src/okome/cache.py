"""The seed's ``cache.py``, unchanged for its callers, on okome.

::

    from okome.cache import key_planner, get_json, set_json, with_lock, release_lock

Every function uses the client given to :func:`okome.configure`, or one
made from ``OKOME_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
Keys are okome's (``okome:planner:<model>:{<prompt_hash>}:...``); the server
enforces the TTL standards and the seed's hard rule (only planner,
model_meta, rag, tools and health data are cached).
"""

from __future__ import annotations

from typing import Any

from . import _config, _keys
from .errors import KeyFormatError


class LockToken(str):
    """A lock token from :func:`with_lock`; also a context manager that
    releases the lock on exit (``with with_lock(key) as token: ...``)."""

    key: str

    def __new__(cls, token: str, key: str) -> LockToken:
        obj = super().__new__(cls, token)
        obj.key = key
        return obj

    def __enter__(self) -> LockToken:
        return self

    def __exit__(self, *exc: object) -> None:
        release_lock(self.key, self)


def key_planner(model: str, prompt: str, toolset_version: str, repo_hash: str) -> str:
    """The planner key of a request, computed locally exactly as the module
    computes it (SHA-256 of the prompt as the hash-tagged component)."""
    return _keys.planner_key(model, prompt, toolset_version, repo_hash)


def _kind(key: str) -> tuple[str, tuple[bytes, ...]]:
    try:
        return _keys.parse(key)
    except ValueError as e:
        raise KeyFormatError(f"{e}; okome caches only okome keys (see key_planner)") from None


def get_json(key: str) -> Any:
    """The cached value of ``key`` (decoded JSON), or ``None``.

    A planner key is read with ``OKOME.PLAN.LOOKUP key NOLOCK`` (counted in
    ``INFO okome``, takes no lock); other kinds with ``OKOME.CACHE.GET``."""
    kind, parts = _kind(key)
    ok = _config.default()
    if kind == "planner":
        return ok.plan_lookup(key, nolock=True).plan
    if kind in _keys.CACHE_KINDS:
        entry = ok.cache_get(kind, *parts)
        return None if entry is None else entry.value
    raise KeyFormatError(f"'{key}' is a {kind} budget key, not a cache key")


def set_json(key: str, value: Any, ttl_seconds: int | None = None) -> bool:
    """Cache ``value`` (as JSON) under ``key`` for ``ttl_seconds`` (default:
    the kind's standard). The server refuses a TTL outside the standard.
    Returns whether it was stored."""
    kind, parts = _kind(key)
    ok = _config.default()
    if kind == "planner":
        return ok.plan_set(key, value, ttl=ttl_seconds).stored
    if kind in _keys.CACHE_KINDS:
        ok.cache_set(kind, *parts, value=value, ttl=ttl_seconds)
        return True
    raise KeyFormatError(f"'{key}' is a {kind} budget key, not a cache key")


def with_lock(key: str, ttl_ms: int | None = None) -> LockToken | None:
    """Take the stampede lock of ``key`` (``OKOME.LOCK``; TTL within 8-10 s,
    default 9 s): a token, or ``None`` if someone else holds it. The token is
    also a context manager that releases the lock."""
    token = _config.default().lock(key, ttl_ms=ttl_ms)
    return None if token is None else LockToken(token, key)


def release_lock(key: str, token: str) -> bool:
    """Release the lock of ``key`` if it is still held with ``token``."""
    return _config.default().unlock(key, str(token))
