"""benchmarks/compare.py, run small against a real server it starts itself:
every step runs, the tables have their rows, and okome's own numbers are
the ones its README promises (one round trip per hit, one computation in a
stampede, exactly 60 admitted across a window's edge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import MODULE, REDIS_SERVER

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"


def test_compare_runs_small(tmp_path):
    out = tmp_path / "compare.json"
    args = [sys.executable, str(SCRIPT), "-n", "3", "--stampede", "8", "--procs", "2"]
    args += ["--delay", "0.1", "--edge-window", "4", "--big", "200", "--json", str(out)]
    env = {**os.environ, "OKOME_MODULE": MODULE, "REDIS_SERVER": REDIS_SERVER}
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout
    for heading in ("A planner request", "A cold stampede", "A window's edge", "Bytes per"):
        assert f"**{heading}" in text
    data = json.loads(out.read_text())
    lat = {row["name"]: row for row in data["latency"]}
    assert len(lat) == 8 and all(row["hit_p50"] > 0 for row in lat.values())
    assert lat["okome.aio.Planner"]["hit_rt"] == 1 == lat["okome.aio.Planner"]["hit_cmds"]
    assert lat["okome.aio.Planner"]["miss_rt"] == 2
    stamp = {row["name"]: row for row in data["stampede"]}
    assert len(stamp) == 7 and stamp["okome.aio.Planner"]["computed"] == 1
    assert all(row["n_errors"] == 0 for row in stamp.values())
    edge = {row["name"].split(" ")[0] + " " + row["kind"]: row for row in data["edge"]}
    assert len(edge) == 6
    assert edge["okome exact sliding window"]["span"] == 60
    assert edge["limits fixed window"]["span"] == 119
    assert all(row["bytes"] > 0 and row["bytes_big"] > 0 for row in data["bytes"])
    assert [row["A"] for row in data["ids"]] == [[40, 40], [40, 40]]
