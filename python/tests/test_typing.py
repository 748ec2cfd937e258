"""The package's types as a user's ``mypy --strict`` sees them (issue 23):
a planner refuses what is not a client, and a typed plan flows from the
decoder to ``PlanResult[T]`` and through ``@planner.cached``. One mypy run
(this venv's) over a snippet; the errors and revealed types are compared
exactly."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

SNIPPET = """
import asyncio
from typing import Any

import pydantic
import redis
import redis.asyncio as aredis
from redis.cluster import RedisCluster

import okome
import okome.aio


class Plan(pydantic.BaseModel):
    steps: list[str]


okome.aio.Planner("not a client")  # E1
okome.Planner("x")  # E2
okome.Okome(aredis.Redis())  # E3
okome.aio.Okome(redis.Redis())  # E4
okome.Planner(aredis.Redis())  # E5

okome.Planner(redis.Redis())
okome.Planner(RedisCluster(host="127.0.0.1"))
okome.Planner(okome.Okome(redis.Redis()))
okome.aio.Planner(aredis.Redis())
okome.aio.Planner(okome.aio.Okome(aredis.Redis()))

untyped = okome.Planner(redis.Redis())
reveal_type(untyped)  # R1
reveal_type(untyped.get_or_compute("m", "p", "t", "r", lambda: (1, 2)))  # R2

typed = okome.Planner(
    redis.Redis(), encoder=Plan.model_dump_json, decoder=Plan.model_validate_json
)
reveal_type(typed.get_or_compute("m", "p", "t", "r", lambda: Plan(steps=[])).plan)  # R3
typed.get_or_compute("m", "p", "t", "r", lambda: {"steps": []})  # E6


async def main() -> None:
    codec = okome.pydantic_codec(Plan)
    planner = okome.aio.Planner(aredis.Redis(), encoder=codec.encode, decoder=codec.decode)

    async def compute() -> Plan:
        return Plan(steps=[])

    reveal_type(await planner.get_or_compute("m", "p", "t", "r", compute))  # R4

    @planner.cached(model="m", toolset_version="t")
    async def make_plan(prompt: str) -> Plan:
        return Plan(steps=[prompt])

    reveal_type(await make_plan("p", repo_hash="r"))  # R5
    reveal_type(await make_plan.result("p", repo_hash="r", agent="a"))  # R6
    await make_plan("p", repo="r")  # E7


def route(r: okome.PlanResult, p: okome.Planner) -> Any:  # bare: [Any], no error
    return r.plan
"""

ERRORS = {
    "E1": [
        'Argument 1 to "Planner" has incompatible type "str"; expected '
        '"Redis | RedisCluster | Okome"  [arg-type]'
    ],
    "E2": [
        'Argument 1 to "Planner" has incompatible type "str"; expected '
        '"Redis | RedisCluster | Okome"  [arg-type]'
    ],
    "E3": [
        'Argument 1 to "Okome" has incompatible type "redis.asyncio.client.Redis"; expected '
        '"redis.client.Redis | RedisCluster"  [arg-type]'
    ],
    "E4": [
        'Argument 1 to "Okome" has incompatible type "redis.client.Redis"; expected '
        '"redis.asyncio.client.Redis | RedisCluster"  [arg-type]'
    ],
    "E5": [
        'Argument 1 to "Planner" has incompatible type "redis.asyncio.client.Redis"; expected '
        '"redis.client.Redis | RedisCluster | Okome"  [arg-type]'
    ],
    "E6": [
        'Argument 5 to "get_or_compute" of "Planner" has incompatible type '
        '"Callable[[], dict[str, list[Never]]]"; expected "Callable[[], Plan]"  [arg-type]',
        'Incompatible return value type (got "dict[str, list[Never]]", expected "Plan")  '
        "[return-value]",
    ],
    "E7": [
        'Unexpected keyword argument "repo" for "__call__" of "AsyncCached"  [call-arg]',
        'note: "__call__" defined in "okome.decorators"',
    ],
}
CONFIG = """
[mypy]
strict = True
python_version = 3.10

[mypy-okome.*]
# The package is checked by make python-lint with its own settings; here it
# is what an installed package is to its user: its types, not its errors.
ignore_errors = True
"""
REVEALED = {
    "R1": "okome.planner.Planner[Any]",
    "R2": "okome.planner.PlanResult[Any]",
    "R3": "snippet.Plan",
    "R4": "okome.planner.PlanResult[snippet.Plan]",
    "R5": "snippet.Plan",
    "R6": "okome.planner.PlanResult[snippet.Plan]",
}


def test_mypy_strict_sees_the_types(tmp_path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(SNIPPET))
    lines = snippet.read_text().splitlines()
    tag_of = {
        i + 1: m.group(1) for i, line in enumerate(lines) if (m := re.search(r"# ([ER]\d)", line))
    }
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG)
    args = ["--config-file", str(config), "--cache-dir", str(tmp_path / "cache")]
    args += ["--no-error-summary", "--show-error-codes", "--hide-error-context"]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", *args, "--no-color-output", str(snippet)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"MYPYPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    errors: dict[str, list[str]] = {}
    revealed: dict[str, str] = {}
    other: list[str] = []
    for out in proc.stdout.splitlines():
        m = re.match(r".*snippet\.py:(\d+): (error|note): (.*)$", out)
        if m is None or int(m.group(1)) not in tag_of:
            other.append(out)
            continue
        tag, kind, text = tag_of[int(m.group(1))], m.group(2), m.group(3)
        if kind == "note" and text.startswith("Revealed type is "):
            revealed[tag] = text[len('Revealed type is "') : -1]
        else:
            errors.setdefault(tag, []).append(text if kind == "error" else f"note: {text}")
    assert other == [], proc.stdout + proc.stderr
    assert revealed == REVEALED
    assert errors == ERRORS
