"""What ``OKOME.TAKE`` charges: :class:`Limit`, one sliding window and its cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Subject = Union[str, bytes]


@dataclass(frozen=True)
class Limit:
    """One limit of :meth:`okome.Okome.take`: ``cost`` units of ``subject``'s
    window ``name``, which admits ``limit`` units per ``window_s`` seconds.

    The window is ``okome:budget:rate:{<subject>}:<name>`` (that of
    ``OKOME.RATE subject ... NAME name``); the name ``"default"`` is the
    subject's ``OKOME.RATE`` window without ``NAME``. ``cost`` 0 peeks.
    """

    subject: Subject
    name: Subject
    limit: int
    window_s: int
    cost: int = 1
