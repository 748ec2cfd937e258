"""okome for Python: the okome Redis module's commands, typed; the planner's
leader/follower protocol in one call; the seed's ``cache`` and ``budget``
helpers as drop-ins.

::

    import redis, okome

    planner = okome.Planner(redis.Redis())
    result = planner.get_or_compute("llama3:8b", prompt, "v1", repo, compute, agent="agent-1")
    result.plan, result.headers   # {"X-OKOME-Cache": "MISS", "X-OKOME-Cache-Key": ..., ...}

Plans can be typed values (``Planner(r, encoder=Plan.model_dump_json,
decoder=Plan.model_validate_json)``, or :func:`json_codec` /
:func:`pydantic_codec`), a function of the prompt cached with
``@planner.cached(model=..., toolset_version=...)`` (:func:`never_cache`
marks what must never be), and ``Planner(..., on_result=hook)`` gets a
:class:`PlanEvent` per request.

``okome.aio`` has the same over ``redis.asyncio``.
"""

from __future__ import annotations

from ._config import configure, redis_url
from ._keys import planner_key, prompt_hash
from ._marks import never_cache
from .client import Okome
from .codecs import Codec, json_codec, pydantic_codec
from .decorators import Cached
from .errors import (
    ArgumentError,
    ComputeFailed,
    ComputeTimeout,
    ConfigurationError,
    CrossSlotError,
    InternalError,
    InvalidJSONError,
    KeyFormatError,
    LeaseUnavailable,
    ModuleNotLoadedError,
    NotCacheableError,
    OkomeError,
    OkomeUnavailable,
    OOMError,
    OutOfRangeError,
    PermissionDeniedError,
    PlanLocked,
    PlannerError,
    RateLimited,
    ReservationError,
    SlotMigratingError,
    TooLargeError,
    UncacheableFunctionError,
    WrongSlotError,
    WrongTypeError,
)
from .leases import HeldLease
from .limits import Limit
from .planner import PlanEvent, Planner, PlanResult
from .replies import (
    CacheEntry,
    LeaseReply,
    LedgerEntry,
    LedgerPage,
    LedgerRecord,
    LedgerState,
    LimitState,
    ModuleCheck,
    PlanReply,
    PlanSetReply,
    PlanStatus,
    PurgeReply,
    RateReply,
    RawJSON,
    SettleReply,
    StoreStatus,
    TakeReply,
    ThrottleReply,
)

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "CacheEntry",
    "Cached",
    "Codec",
    "ComputeFailed",
    "ComputeTimeout",
    "ConfigurationError",
    "CrossSlotError",
    "InternalError",
    "InvalidJSONError",
    "HeldLease",
    "KeyFormatError",
    "LeaseReply",
    "LeaseUnavailable",
    "LedgerEntry",
    "LedgerPage",
    "LedgerRecord",
    "LedgerState",
    "Limit",
    "LimitState",
    "ModuleCheck",
    "ModuleNotLoadedError",
    "NotCacheableError",
    "OOMError",
    "Okome",
    "OkomeError",
    "OkomeUnavailable",
    "OutOfRangeError",
    "PermissionDeniedError",
    "PlanEvent",
    "PlanLocked",
    "PlanReply",
    "PlanResult",
    "PlanSetReply",
    "PlanStatus",
    "Planner",
    "PlannerError",
    "PurgeReply",
    "RateLimited",
    "RateReply",
    "RawJSON",
    "ReservationError",
    "SettleReply",
    "SlotMigratingError",
    "StoreStatus",
    "TakeReply",
    "ThrottleReply",
    "TooLargeError",
    "UncacheableFunctionError",
    "WrongSlotError",
    "WrongTypeError",
    "configure",
    "json_codec",
    "never_cache",
    "planner_key",
    "prompt_hash",
    "pydantic_codec",
    "redis_url",
]
