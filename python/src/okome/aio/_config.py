"""The client :mod:`okome.aio.cache` and :mod:`okome.aio.budget` use: the
asyncio twin of :mod:`okome._config`."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aredis

from .._config import redis_url
from .client import Okome

_configured: Okome | None = None
# The client made from the URL, with the event loop it was made in: a
# redis.asyncio connection serves only the loop that opened it, so a call
# from another loop (a second asyncio.run, a test's own loop) makes its own.
_made: tuple[asyncio.AbstractEventLoop, Okome] | None = None


def configure(client: Any) -> Okome:
    """Use ``client`` (a ``redis.asyncio.Redis``, a
    ``redis.asyncio.cluster.RedisCluster`` or an :class:`okome.aio.Okome`)
    for ``okome.aio.cache`` and ``okome.aio.budget``."""
    global _configured
    ok = client if isinstance(client, Okome) else Okome(client)
    _configured = ok
    return ok


def default() -> Okome:
    """The configured client, else one made from ``OKOME_REDIS_URL`` for the
    running event loop (on first use in that loop)."""
    global _made
    if _configured is not None:
        return _configured
    loop = asyncio.get_running_loop()
    made = _made
    if made is None or made[0] is not loop:
        made = (loop, Okome(aredis.Redis.from_url(redis_url())))
        _made = made
    return made[1]


async def close_default() -> None:
    """Close the client made from the URL for the running event loop (a
    configured client is yours to close), and forget it: the next call makes
    another. Call it before the loop ends (an app's shutdown, the end of an
    ``asyncio.run``) so its connections are not left open."""
    global _made
    made = _made
    if made is not None and made[0] is asyncio.get_running_loop():
        _made = None
        await made[1].client.aclose()


def reset() -> None:
    """Forget the configured client and the one made from the URL (neither is
    closed: close what you configured yourself)."""
    global _configured, _made
    _configured = None
    _made = None
