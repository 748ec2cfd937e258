"""okome over ``redis.asyncio``: :class:`Okome` and :class:`Planner`, the
asyncio twins of :class:`okome.Okome` and :class:`okome.Planner`, sending
exactly the same commands.

The layout mirrors the sync side's: :mod:`okome.aio.client` (the commands),
:mod:`okome.aio.planner` (the planner) and :mod:`okome._async` (the
transport), each sharing what is not I/O with its sync twin
(:mod:`okome.client`, :mod:`okome.planner`, :mod:`okome._sync`).

:mod:`okome.aio.cache` and :mod:`okome.aio.budget` are the seed's drop-ins
as coroutines; :func:`configure` gives them their client (else they make one from
``OKOME_REDIS_URL``, which :func:`close_default` closes).
"""

from __future__ import annotations

from ..decorators import AsyncCached as Cached
from ..planner import PlanEvent, PlanResult
from ._config import close_default, configure
from .client import Okome
from .planner import Planner

__all__ = ["Cached", "Okome", "PlanEvent", "PlanResult", "Planner", "close_default", "configure"]
