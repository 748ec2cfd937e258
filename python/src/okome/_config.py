"""The client the seed's drop-in functions (``okome.cache``, ``okome.budget``) use."""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

from .client import Okome

DEFAULT_URL = "redis://127.0.0.1:6379/0"

_lock = threading.Lock()
_okome: Okome | None = None


def redis_url() -> str:
    """``OKOME_REDIS_URL``, or ``redis://127.0.0.1:6379/0``."""
    return os.environ.get("OKOME_REDIS_URL") or DEFAULT_URL


def configure(client: Any) -> Okome:
    """Use ``client`` (a ``redis.Redis``, a ``redis.cluster.RedisCluster`` or an
    :class:`okome.Okome`) for ``okome.cache`` and ``okome.budget``."""
    global _okome
    ok = client if isinstance(client, Okome) else Okome(client)
    with _lock:
        _okome = ok
    return ok


def default() -> Okome:
    """The configured client, else one made from :func:`redis_url` on first use."""
    global _okome
    ok = _okome
    if ok is None:
        with _lock:
            if _okome is None:
                _okome = Okome(redis.Redis.from_url(redis_url()))
            ok = _okome
    return ok


def reset() -> None:
    """Forget the configured client (the next call makes one from the URL again)."""
    global _okome
    with _lock:
        _okome = None
