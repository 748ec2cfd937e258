"""Plans as typed values: an encoder and a decoder for ``Planner(...,
encoder=, decoder=)`` made from a type.

::

    codec = okome.json_codec(Plan)                  # a dataclass: no dependency
    planner = okome.Planner(r, encoder=codec.encode, decoder=codec.decode)   # a Planner[Plan]

- :func:`json_codec` (the standard library only): dataclasses, ``datetime``,
  ``date``, ``time``, enums, tuples, sets, ``Optional``, and lists and dicts
  of those, read back by the type's annotations.
- :func:`pydantic_codec` (needs ``pydantic``, which ``fastapi`` brings):
  anything pydantic's ``TypeAdapter`` takes (models, dataclasses,
  ``dict[str, datetime]``, ...). For one model,
  ``encoder=Plan.model_dump_json, decoder=Plan.model_validate_json`` is the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic

from .planner import T

__all__ = ["Codec", "json_codec", "pydantic_codec"]


@dataclass(frozen=True)
class Codec(Generic[T]):
    """An encoder (``value -> JSON text``) and a decoder (``JSON text ->
    value``) for ``Planner(..., encoder=codec.encode, decoder=codec.decode)``."""

    encode: Callable[[T], str | bytes]
    decode: Callable[[str], T]


def pydantic_codec(tp: type[T]) -> Codec[T]:
    """The codec of pydantic's ``TypeAdapter(tp)``: ``dump_json`` and
    ``validate_json``. ``ImportError`` without pydantic."""
    try:
        from pydantic import TypeAdapter
    except ImportError as e:  # pragma: no cover - pydantic comes with fastapi
        raise ImportError("okome.pydantic_codec needs pydantic: pip install pydantic") from e
    adapter: TypeAdapter[T] = TypeAdapter(tp)
    return Codec(adapter.dump_json, adapter.validate_json)


def json_codec(tp: type[T]) -> Codec[T]:
    """A codec for ``tp`` with the standard library's ``json``: encodes
    dataclasses as objects, ``datetime``/``date``/``time`` in ISO 8601,
    enums as their values, tuples and sets as arrays; decodes by ``tp``'s
    annotations (a dataclass's fields, ``list[X]``, ``tuple[X, ...]``,
    ``dict[str, X]``, ``X | None``, ...), so a plan comes back as the type it
    was computed as. A union of several types other than ``None`` is left as
    JSON gives it."""

    _resolve(tp, set())  # an annotation that does not resolve fails here, not on a MISS

    def encode(value: T) -> str:
        return json.dumps(_to_json(value), ensure_ascii=False, separators=(",", ":"))

    def decode(text: str) -> T:
        value: T = _from_json(tp, json.loads(text))
        return value

    return Codec(encode, decode)


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return _to_json(value.value)
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_json(v) for v in value]
    return value


_UNION_TYPES: tuple[Any, ...] = (typing.Union,)
if sys.version_info >= (3, 10):
    import types

    _UNION_TYPES += (types.UnionType,)

_hints: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    hints = _hints.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _hints[cls] = hints
    return hints


def _resolve(tp: Any, seen: set[Any]) -> None:
    """Resolve the annotations of the dataclasses ``tp`` is made of (``NameError``
    for one that names what its module does not define)."""
    try:
        if tp in seen:
            return
        seen.add(tp)
    except TypeError:  # unhashable (Annotated[X, {...}]): resolved when decoding
        return
    for arg in typing.get_args(tp):
        _resolve(arg, seen)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        for hint in _field_types(tp).values():
            _resolve(hint, seen)


def _from_json(tp: Any, value: Any) -> Any:
    if tp is Any or value is None and tp is type(None):
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in _UNION_TYPES:
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        return _from_json(others[0], value) if len(others) == 1 else value
    if origin is typing.Annotated:  # pragma: no cover - Annotated[X, ...] is X
        return _from_json(args[0], value)
    if origin is not None:
        if isinstance(value, list):
            if origin is tuple:
                if len(args) == 2 and args[1] is Ellipsis:
                    return tuple(_from_json(args[0], v) for v in value)
                if args:
                    return tuple(_from_json(a, v) for a, v in zip(args, value))
                return tuple(value)
            item = args[0] if args else Any
            items = [_from_json(item, v) for v in value]
            if origin in (set, frozenset):
                return origin(items)
            return items
        if isinstance(value, dict) and args and len(args) == 2:
            return {k: _from_json(args[1], v) for k, v in value.items()}
        return value
    if not isinstance(tp, type):
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = _field_types(tp)
        return tp(
            **{
                f.name: _from_json(hints.get(f.name, Any), value[f.name])
                for f in dataclasses.fields(tp)
                if f.init and f.name in value
            }
        )
    if isinstance(value, str):
        if issubclass(tp, dt.datetime):
            return tp.fromisoformat(value)
        if issubclass(tp, dt.date):
            return tp.fromisoformat(value)
        if issubclass(tp, dt.time):
            return tp.fromisoformat(value)
    if issubclass(tp, enum.Enum):
        return tp(value)
    if tp in (tuple, set, frozenset) and isinstance(value, list):
        return tp(value)
    return value
