"""Keys computed locally (to route on a cluster, and for the seed's
key_planner) are exactly the module's: compared with OKOME.KEY."""

from __future__ import annotations

import random

import pytest

import okome
from okome import _keys

AWKWARD = [
    "llama3:8b",
    "gpt-4",
    "a b\tc\nd",
    "{tag}",
    "100%",
    "ünïcödé ✓",
    "*?[]",
    "._/+@=-",
    "~!#$^&()'\"`,;<>\\|",
    "\x00\x01\xff".encode("latin-1"),
]


def test_planner_keys_match(server):
    ok = okome.Okome(server.client())
    rng = random.Random(7)
    cases = [(m, p, t, r) for m in AWKWARD[:5] for p in AWKWARD for t, r in [("v1", "abc123")]]
    cases += [(m, m, m, m) for m in AWKWARD]
    for _ in range(50):
        cases.append(
            tuple(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))) for _ in range(4))
        )
    for case in cases:
        assert okome.planner_key(*case) == ok.key("planner", *case), case


@pytest.mark.parametrize("kind", ["model_meta", "tools", "health", "rate", "write"])
def test_one_part_keys_match(server, kind):
    ok = okome.Okome(server.client())
    for part in AWKWARD:
        assert _keys.build(kind, (part,)) == ok.key(kind, part)


def test_rag_keys_and_parse(server):
    ok = okome.Okome(server.client())
    for repo in AWKWARD:
        key = ok.key("rag", repo, "chunk:1")
        assert _keys.build("rag", (repo, "chunk:1")) == key
        assert _keys.parse(key) == ("rag", (_keys.to_bytes(repo), b"chunk:1"))


def test_parse_refuses_what_the_module_would():
    for bad in [
        "okome:tools:v1",
        "okome:tools:{}",
        "okome:tools:{a:b}",
        "okome:nope:{x}",
        "x",
        "okome:tools:{%3a}",
    ]:
        with pytest.raises(ValueError):
            _keys.parse(bad)
    assert _keys.parse("okome:planner:m:{h}:t:r") == ("planner", (b"m", b"h", b"t", b"r"))


def test_slot_is_the_prompt_hash_tag():
    key = okome.planner_key("m", "some prompt", "t", "r")
    assert _keys.slot(key) == _keys.slot(okome.prompt_hash("some prompt"))
    assert _keys.slot(key) == _keys.slot(key + ":lock")
