"""The seed's ``cache.py`` as coroutines, for ``async def`` code: the asyncio
twin of :mod:`okome.cache`, over :class:`okome.aio.Okome`.

::

    from okome.aio.cache import key_planner, get_json, set_json, with_lock, release_lock

    cache_key = key_planner(model="gpt-4", prompt="...", toolset_version="v1.2.3",
                            repo_hash="abc123")        # no I/O: a plain function
    cached = await get_json(cache_key)
    await set_json(cache_key, plan, ttl_seconds=600)

The same names, arguments, commands and results as :mod:`okome.cache`; each
function that talks to Redis is a coroutine, so calling it from a request
handler does not block the event loop. They use the client given to
:func:`okome.aio.configure` (``okome.fastapi.install`` gives its own), or one
made from ``OKOME_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) for the
running event loop.
"""

from __future__ import annotations

from typing import Any

from .. import _keys
from ..cache import _kind, key_planner
from ..errors import KeyFormatError
from . import _config

__all__ = ["LockToken", "get_json", "key_planner", "release_lock", "set_json", "with_lock"]


class LockToken(str):
    """A lock token from :func:`with_lock`; also an async context manager
    that releases the lock on exit (``async with await with_lock(key) as
    token: ...``)."""

    key: str

    def __new__(cls, token: str, key: str) -> LockToken:
        obj = super().__new__(cls, token)
        obj.key = key
        return obj

    async def __aenter__(self) -> LockToken:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await release_lock(self.key, self)


async def get_json(key: str) -> Any:
    """The cached value of ``key`` (decoded JSON), or ``None``; see
    :func:`okome.cache.get_json` (a planner key is read with
    ``OKOME.PLAN.LOOKUP key NOLOCK``, other kinds with ``OKOME.CACHE.GET``)."""
    kind, parts = _kind(key)
    ok = _config.default()
    if kind == "planner":
        return (await ok.plan_lookup(key, nolock=True)).plan
    if kind in _keys.CACHE_KINDS:
        entry = await ok.cache_get(kind, *parts)
        return None if entry is None else entry.value
    raise KeyFormatError(f"'{key}' is a {kind} budget key, not a cache key")


async def set_json(key: str, value: Any, ttl_seconds: int | None = None) -> bool:
    """Cache ``value`` (as JSON) under ``key``; see :func:`okome.cache.set_json`.
    Returns whether it was stored."""
    kind, parts = _kind(key)
    ok = _config.default()
    if kind == "planner":
        return (await ok.plan_set(key, value, ttl=ttl_seconds)).stored
    if kind in _keys.CACHE_KINDS:
        await ok.cache_set(kind, *parts, value=value, ttl=ttl_seconds)
        return True
    raise KeyFormatError(f"'{key}' is a {kind} budget key, not a cache key")


async def with_lock(key: str, ttl_ms: int | None = None) -> LockToken | None:
    """Take the stampede lock of ``key`` (``OKOME.LOCK``; TTL within 8-10 s,
    default 9 s): a token, or ``None`` if someone else holds it. The token is
    also an async context manager that releases the lock."""
    token = await _config.default().lock(key, ttl_ms=ttl_ms)
    return None if token is None else LockToken(token, key)


async def release_lock(key: str, token: str) -> bool:
    """Release the lock of ``key`` if it is still held with ``token``."""
    return await _config.default().unlock(key, str(token))
