"""Plans as typed values (issue 23): ``Planner(..., encoder=, decoder=)``,
the same Python types on MISS, HIT and SHARED, okome.json_codec and
okome.pydantic_codec, on a real server."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import pydantic
import pytest
import redis.asyncio as aredis
from conftest import ROOT

import okome
import okome.aio
from okome import PlanStatus, StoreStatus

MODEL, TOOLSET, REPO = "llama3:8b", "v1", "abc123"
WHEN = dt.datetime(2026, 1, 24, 9, 30, 15, 123456, tzinfo=dt.timezone.utc)


class Kind(enum.Enum):
    EDIT = "edit"
    READ = "read"


@dataclass(frozen=True)
class Step:
    kind: Kind
    path: str
    lines: tuple[int, int]


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    created: dt.datetime
    day: dt.date
    tags: frozenset[str]
    notes: str | None = None
    by_file: dict[str, list[int]] | None = None


PLAN = Plan(
    steps=(Step(Kind.READ, "login.tsx", (1, 20)), Step(Kind.EDIT, "form.tsx", (3, 4))),
    created=WHEN,
    day=WHEN.date(),
    tags=frozenset({"ui", "auth"}),
    by_file={"login.tsx": [1, 2]},
)


class PStep(pydantic.BaseModel):
    path: str
    at: dt.datetime


class PPlan(pydantic.BaseModel):
    steps: list[PStep]
    span: tuple[int, int]


PPLAN = PPlan(steps=[PStep(path="a.py", at=WHEN)], span=(1, 2))


def test_default_json_a_tuple_is_a_list_on_miss_and_hit(server):
    """Today's default encoding (json.dumps / json.loads): a MISS returns
    what a HIT will, decoder(encoder(value)), so a tuple is a list on both."""
    planner = okome.Planner(server.client())
    miss = planner.get_or_compute(MODEL, "tuple", TOOLSET, REPO, lambda: (1, ("a", 2)))
    hit = planner.get_or_compute(MODEL, "tuple", TOOLSET, REPO, lambda: (9, 9))
    assert miss.status is PlanStatus.MISS and hit.status is PlanStatus.HIT
    assert miss.plan == [1, ["a", 2]] and hit.plan == [1, ["a", 2]]
    assert type(miss.plan) is list and type(miss.plan[1]) is list and type(hit.plan) is list
    # RawJSON and bytes are stored as they are and come back decoded, MISS too.
    raw = planner.get_or_compute(MODEL, "raw", TOOLSET, REPO, lambda: okome.RawJSON('{"a": [1]}'))
    assert raw.plan == {"a": [1]} and type(raw.plan) is dict
    assert planner.get_or_compute(MODEL, "b", TOOLSET, REPO, lambda: b'["x"]').plan == ["x"]
    stored = okome.Okome(server.client()).plan_lookup(raw.key)
    assert stored.raw == '{"a": [1]}'


def test_json_codec_dataclass_round_trip(server):
    codec = okome.json_codec(Plan)
    planner = okome.Planner(server.client(), encoder=codec.encode, decoder=codec.decode)
    calls = []

    def compute() -> Plan:
        calls.append(1)
        return PLAN

    miss = planner.get_or_compute(MODEL, "dataclass", TOOLSET, REPO, compute)
    hit = planner.get_or_compute(MODEL, "dataclass", TOOLSET, REPO, compute)
    assert miss.status is PlanStatus.MISS and hit.status is PlanStatus.HIT and calls == [1]
    for r in (miss, hit):
        assert r.plan == PLAN and type(r.plan) is Plan
        assert type(r.plan.steps) is tuple and type(r.plan.steps[0]) is Step
        assert r.plan.steps[0].kind is Kind.READ and r.plan.steps[0].lines == (1, 20)
        assert type(r.plan.created) is dt.datetime and r.plan.created == WHEN
        assert r.plan.created.tzinfo == dt.timezone.utc and type(r.plan.day) is dt.date
        assert r.plan.tags == frozenset({"ui", "auth"}) and type(r.plan.tags) is frozenset
    assert miss.plan is not PLAN  # decoded from the stored text, as a HIT is
    # What is stored is plain JSON (any client can read it).
    stored = json.loads(okome.Okome(server.client()).plan_lookup(miss.key).raw)
    assert stored["created"] == "2026-01-24T09:30:15.123456+00:00"
    assert stored["steps"][0] == {"kind": "read", "path": "login.tsx", "lines": [1, 20]}
    assert stored["notes"] is None and sorted(stored["tags"]) == ["auth", "ui"]


def test_json_codec_other_types():
    c = okome.json_codec(dict[str, tuple[dt.date, Optional[int]]])
    value = {"a": (dt.date(2026, 1, 2), None), "b": (dt.date(2026, 1, 3), 4)}
    assert c.encode(value) == '{"a":["2026-01-02",null],"b":["2026-01-03",4]}'
    assert c.decode(c.encode(value)) == value
    t = okome.json_codec(tuple[str, ...])
    assert t.decode(t.encode(("x", "y"))) == ("x", "y")
    assert okome.json_codec(dt.datetime).decode('"2026-01-24T09:30:15+00:00"') == WHEN.replace(
        microsecond=0
    )


def test_json_codec_resolves_annotations_at_once():
    @dataclass
    class Local:
        inner: Later  # noqa: F821  (defined nowhere: the codec says so at once)

    with pytest.raises(NameError, match="Later"):
        okome.json_codec(Local)
    with pytest.raises(NameError, match="Later"):
        okome.json_codec(list[Local])


def test_pydantic_model_one_liner(server):
    planner = okome.Planner(
        server.client(), encoder=PPlan.model_dump_json, decoder=PPlan.model_validate_json
    )
    miss = planner.get_or_compute(MODEL, "pydantic", TOOLSET, REPO, lambda: PPLAN)
    hit = planner.get_or_compute(MODEL, "pydantic", TOOLSET, REPO, lambda: PPLAN)
    assert (miss.status, hit.status) == (PlanStatus.MISS, PlanStatus.HIT)
    for r in (miss, hit):
        assert r.plan == PPLAN and type(r.plan) is PPlan and r.plan.steps[0].at == WHEN
        assert r.plan.span == (1, 2)


def test_pydantic_codec_and_datetimes(server):
    codec = okome.pydantic_codec(dict[str, dt.datetime])
    planner = okome.Planner(server.client(), encoder=codec.encode, decoder=codec.decode)
    miss = planner.get_or_compute(MODEL, "dates", TOOLSET, REPO, lambda: {"due": WHEN})
    hit = planner.get_or_compute(MODEL, "dates", TOOLSET, REPO, lambda: {})
    assert miss.plan == hit.plan == {"due": WHEN}
    assert type(miss.plan["due"]) is dt.datetime and type(hit.plan["due"]) is dt.datetime
    models = okome.pydantic_codec(PPlan)
    assert models.decode(models.encode(PPLAN)) == PPLAN


def test_aio_planner_typed(server):
    async def run() -> tuple[okome.PlanResult[Plan], okome.PlanResult[Plan]]:
        codec = okome.json_codec(Plan)
        planner = okome.aio.Planner(
            aredis.Redis(port=server.port), encoder=codec.encode, decoder=codec.decode
        )

        async def compute() -> Plan:
            return PLAN

        return (
            await planner.get_or_compute(MODEL, "aio", TOOLSET, REPO, compute),
            await planner.get_or_compute(MODEL, "aio", TOOLSET, REPO, compute),
        )

    miss, hit = asyncio.run(run())
    assert (miss.status, hit.status) == (PlanStatus.MISS, PlanStatus.HIT)
    assert miss.plan == hit.plan == PLAN and type(miss.plan) is type(hit.plan) is Plan


def test_shared_plans_are_decoded_too(server):
    """A follower handed the plan of a leader whose write budget is spent
    (SHARED) gets the decoder's value, as a HIT would."""
    codec = okome.json_codec(Plan)
    planner = okome.Planner(
        server.client(), encoder=codec.encode, decoder=codec.decode, write_limit=1
    )
    planner.get_or_compute(MODEL, "spend", TOOLSET, REPO, lambda: PLAN, agent="a")  # budget: 0
    started = threading.Event()

    def slow() -> Plan:
        started.set()
        time.sleep(0.5)
        return PLAN

    box: dict[str, okome.PlanResult[Plan]] = {}
    leader = threading.Thread(
        target=lambda: box.update(
            lead=planner.get_or_compute(MODEL, "shared", TOOLSET, REPO, slow, agent="a")
        )
    )
    leader.start()
    started.wait(5)
    follower = planner.get_or_compute(MODEL, "shared", TOOLSET, REPO, slow, agent="b")
    leader.join()
    assert box["lead"].status is PlanStatus.MISS and box["lead"].stored is StoreStatus.SKIPPED
    assert follower.status is PlanStatus.SHARED and not follower.computed
    assert follower.plan == PLAN and type(follower.plan) is Plan
    assert type(box["lead"].plan) is Plan


def test_an_encoder_that_does_not_return_text_fails_the_computation(server):
    planner = okome.Planner(server.client(), encoder=lambda v: v)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="encoder must return JSON text"):
        planner.get_or_compute(MODEL, "no text", TOOLSET, REPO, lambda: {"a": 1})
    assert server.client().keys("*:lock") == []
    looked = okome.Okome(server.client()).plan_lookup(
        okome.planner_key(MODEL, "no text", TOOLSET, REPO)
    )
    assert looked.status is PlanStatus.FAILED and looked.message.startswith("TypeError: ")


def test_a_codec_that_does_not_round_trip_is_not_stored(server):
    """The leader decodes the text it is about to store, holding the lock:
    a decoder that refuses it fails the computation (published FAILED) and
    nothing is stored, rather than a plan every HIT would fail on."""

    def decoder(text: str) -> Any:
        raise ValueError(f"cannot read {text}")

    planner = okome.Planner(server.client(), decoder=decoder)
    with pytest.raises(ValueError, match='cannot read {"a":1}'):
        planner.get_or_compute(MODEL, "one way", TOOLSET, REPO, lambda: {"a": 1})
    key = okome.planner_key(MODEL, "one way", TOOLSET, REPO)
    looked = okome.Okome(server.client()).plan_lookup(key)
    assert looked.status is PlanStatus.FAILED and looked.raw is None
    assert looked.message == 'ValueError: cannot read {"a":1}'
    assert server.client().exists(key) == 0 and server.client().keys("*:lock") == []


def test_the_readme_block_runs(server):
    """python/README's "Plans as typed values" block, as it is."""
    text = (ROOT / "python" / "README.md").read_text()
    start = text.index("```python\n", text.index("### Plans as typed values")) + 10
    code = text[start : text.index("```", start)]
    ns: dict[str, Any] = {"__name__": "readme"}
    ns.update(r=server.client(), model=MODEL, prompt="typed", repo=REPO, now=WHEN)
    exec(compile(code, "README.md", "exec", dont_inherit=True), ns)
    assert type(ns["result"].plan) is ns["Plan"] and ns["result"].plan.created == WHEN
    hit = ns["planner"].get_or_compute(MODEL, "d", TOOLSET, REPO, lambda: {"due": WHEN})
    again = ns["planner"].get_or_compute(MODEL, "d", TOOLSET, REPO, lambda: {})
    assert hit.plan == again.plan == {"due": WHEN} and again.status is PlanStatus.HIT
    steps = ns["steps"]
    value = [ns["Step"]("a.py", (1, 2), dt.date(2026, 1, 24))]
    assert steps.decode(steps.encode(value)) == value
