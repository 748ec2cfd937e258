"""okome's key scheme, computed locally exactly as the module computes it.

Used to route commands on Redis Cluster (the slot of a planner key is the
CRC16 of its prompt hash) and by the seed's ``key_planner``. The module stays
the authority: every key computed here is one ``OKOME.KEY`` returns (the tests
compare them).
"""

from __future__ import annotations

import hashlib
import re
from typing import Union

from redis.crc import key_slot

Part = Union[str, bytes]

PREFIX = "okome"
LOCK_SUFFIX = ":lock"

# kind name -> (path after "okome:", component names, index of the hash-tagged component)
KINDS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "planner": ("planner", ("model", "prompt_hash", "toolset_version", "repo_hash"), 1),
    "model_meta": ("model_meta", ("model",), 0),
    "rag": ("rag", ("repo", "chunk_hash"), 0),
    "tools": ("tools", ("tool_version",), 0),
    "health": ("health", ("node",), 0),
    "rate": ("budget:rate", ("agent",), 0),
    "write": ("budget:write", ("agent",), 0),
    "ledger": ("budget:keys", ("agent",), 0),
    "gcra": ("budget:gcra", ("subject",), 0),
}
CACHE_KINDS = ("model_meta", "rag", "tools", "health")

_UNSAFE = re.compile(rb"[^A-Za-z0-9._/+@=\-]")


def to_bytes(part: Part | int) -> bytes:
    """A command argument as bytes (str as UTF-8)."""
    if isinstance(part, bytes):
        return part
    if isinstance(part, (bytearray, memoryview)):
        return bytes(part)
    return str(part).encode("utf-8")


def escape(part: Part) -> str:
    """A key component as okome writes it: bytes outside ``[A-Za-z0-9._/+@=-]``
    become ``%XX`` (uppercase hex)."""
    escaped = _UNSAFE.sub(lambda m: b"%%%02X" % m.group(0)[0], to_bytes(part))
    return escaped.decode("ascii")


def unescape(segment: str) -> bytes:
    """The inverse of :func:`escape`."""
    return re.sub(
        rb"%([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), segment.encode("ascii")
    )


def prompt_hash(prompt: Part) -> str:
    """Lowercase hex SHA-256 of the prompt's bytes (UTF-8 for a str)."""
    return hashlib.sha256(to_bytes(prompt)).hexdigest()


def build(kind: str, parts: tuple[Part, ...]) -> str:
    """The key of ``kind`` from its components (for ``planner``, the prompt
    *hash* is the second component: use :func:`planner_key` for a prompt)."""
    try:
        path, names, tagged = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown okome key kind {kind!r}") from None
    if len(parts) != len(names):
        count = "1 part" if len(names) == 1 else f"{len(names)} parts"
        raise ValueError(f"kind {kind!r} takes {count} ({', '.join(names)}), got {len(parts)}")
    out = [PREFIX, path]
    for i, (part, name) in enumerate(zip(parts, names)):
        if not to_bytes(part):
            raise ValueError(f"{name} must not be empty")
        seg = escape(part)
        out.append("{" + seg + "}" if i == tagged else seg)
    return ":".join(out)


def planner_key(model: Part, prompt: Part, toolset_version: Part, repo_hash: Part) -> str:
    """``okome:planner:<model>:{<sha256(prompt)>}:<toolset_version>:<repo_hash>``,
    the key ``OKOME.PLAN.GET`` derives, computed without a round trip."""
    if not to_bytes(prompt):
        raise ValueError("prompt must not be empty")
    return build("planner", (model, prompt_hash(prompt), toolset_version, repo_hash))


def agent_key(kind: str, agent: Part) -> str:
    """``okome:budget:rate:{<agent>}`` (kind ``rate``), ``okome:budget:write:{<agent>}``
    (``write``) or ``okome:budget:keys:{<agent>}`` (``ledger``): all in the agent's slot."""
    return build(kind, (agent,))


def lease_key(subject: Part, name: Part | None = None) -> str:
    """``okome:budget:lease:{<subject>}``, or ``...:{<subject>}:<name>`` (the
    name ``default`` is the unnamed pool): the pool ``OKOME.LEASE.ACQUIRE``
    takes a lease of, in the subject's slot."""
    if not to_bytes(subject):
        raise ValueError("subject must not be empty")
    key = f"{PREFIX}:budget:lease:{{{escape(subject)}}}"
    if name is not None and to_bytes(name).lower() != b"default":
        if not to_bytes(name):
            raise ValueError("name must not be empty")
        key += ":" + escape(name)
    return key


def rate_key(subject: Part, name: Part | None = None) -> str:
    """``okome:budget:rate:{<subject>}``, or ``...:{<subject>}:<name>`` with a
    name other than ``default``: the window ``OKOME.RATE ... NAME name`` and
    ``OKOME.TAKE`` charge (the name ``lock`` is refused, as the module does)."""
    if not to_bytes(subject):
        raise ValueError("agent must not be empty")
    key = build("rate", (subject,))
    if name is None or to_bytes(name) == b"default":
        return key
    if not to_bytes(name):
        raise ValueError("name must not be empty")
    if to_bytes(name) == b"lock":
        raise ValueError("syntax error: NAME lock is reserved; pick another name")
    return f"{key}:{escape(name)}"


def gcra_key(subject: Part, name: Part | None = None) -> str:
    """``okome:budget:gcra:{<subject>}``, or ``...:{<subject>}:<name>`` with a
    name other than ``default``: the key ``OKOME.THROTTLE`` charges."""
    key = build("gcra", (subject,))
    if name is None or to_bytes(name) == b"default":
        return key
    if not to_bytes(name):
        raise ValueError("name must not be empty")
    return f"{key}:{escape(name)}"


def parse(key: str) -> tuple[str, tuple[bytes, ...]]:
    """The kind and components of a well-formed okome key; ``ValueError`` otherwise."""
    if not key.startswith(PREFIX + ":"):
        raise ValueError(f"{key!r} is not an okome key: it must start with 'okome:'")
    rest = key[len(PREFIX) + 1 :]
    for kind, (path, names, tagged) in KINDS.items():
        if not rest.startswith(path + ":"):
            continue
        segments = rest[len(path) + 1 :].split(":")
        if len(segments) != len(names):
            break
        parts = []
        for i, seg in enumerate(segments):
            if i == tagged:
                if not (seg.startswith("{") and seg.endswith("}")):
                    break
                seg = seg[1:-1]
            if not seg or escape(unescape(seg)) != seg:
                break
            parts.append(unescape(seg))
        else:
            return kind, tuple(parts)
        break
    raise ValueError(f"{key!r} is not a well-formed okome key")


def slot(key: Part) -> int:
    """The Redis Cluster hash slot of ``key``."""
    return int(key_slot(to_bytes(key)))
