"""contrib/okome-prometheus-exporter.lua under the real redis_exporter
(Debian's ``prometheus-redis-exporter``, installed by ``make deps``):
okome's counters reach ``/metrics``, scraped over HTTP, with their values."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import REDIS_SERVER, free_port

import okome
from okome import PlanStatus

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "contrib" / "okome-prometheus-exporter.lua"
VALUE = re.compile(r'^redis_script_values\{key="([^"]+)"\} (\S+)$', re.M)


def exporter_binary() -> str:
    """``REDIS_EXPORTER``, else Debian's ``prometheus-redis-exporter``, else
    upstream's ``redis_exporter``."""
    for name in (os.environ.get("REDIS_EXPORTER"), "prometheus-redis-exporter", "redis_exporter"):
        if name and shutil.which(name):
            return name
    raise RuntimeError("no redis_exporter: run `make deps` (prometheus-redis-exporter)")


class Exporter:
    """One redis_exporter with the okome script (or ``script``), on a free
    loopback port."""

    def __init__(self, redis_port: int, log: Path, script: Path = SCRIPT) -> None:
        self.port = free_port()
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    exporter_binary(),
                    "-redis.addr", f"redis://127.0.0.1:{redis_port}",
                    "-web.listen-address", f"127.0.0.1:{self.port}",
                    "-script", str(script),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis_exporter exited: {log.read_text()}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.kill()
                    log_text = log.read_text()
                    raise RuntimeError(f"redis_exporter never listened: {log_text}") from None
                time.sleep(0.05)

    def scrape(self) -> str:
        r = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10)
        assert r.status_code == 200
        return r.text

    def values(self) -> dict[str, str]:
        """``redis_script_values{key="..."}`` of one scrape, as text."""
        return dict(VALUE.findall(self.scrape()))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def exporter(server, tmp_path) -> Iterator[Exporter]:
    e = Exporter(server.port, tmp_path / "exporter.log")
    yield e
    e.kill()


def test_script_is_named_for_the_exporter():
    # The convention: a collector's file name says what runs it.
    assert SCRIPT.is_file() and "prometheus" in SCRIPT.name and "exporter" in SCRIPT.name


def test_okome_counters_are_scraped(server, exporter):
    ok = okome.Okome(server.client())
    # One planner miss (takes the lock), its store (releases it), one hit.
    miss = ok.plan_get("gpt-4", "test", "v1", "abc123", lock=True)
    assert miss.status is PlanStatus.MISS
    assert ok.plan_set(miss.key, {"steps": ["a"]}, token=miss.token).stored
    assert ok.plan_get("gpt-4", "test", "v1", "abc123", lock=True).status is PlanStatus.HIT
    # Three rate calls, a limit of 2: two admitted, one limited.
    assert [ok.rate("agent-1", 2, 60).allowed for _ in range(3)] == [True, True, False]
    # One write budget of 1, charged twice.
    assert [ok.wbudget("agent-1", 1).allowed for _ in range(2)] == [True, False]
    # A cache miss, a store, a hit.
    assert ok.cache_get("tools", "v7") is None
    ok.cache_set("tools", "v7", value={"tools": ["grep"]})
    assert ok.cache_get("tools", "v7") is not None

    values = exporter.values()
    expected = {
        "okome_loaded": "1",
        "okome_planner_hits": "1",
        "okome_planner_misses": "1",
        "okome_planner_refreshes": "0",
        "okome_planner_hit_ratio": "0.5",
        "okome_lock_acquired": "1",
        "okome_lock_released": "1",
        "okome_plans_stored": "1",
        "okome_plans_skipped": "0",
        "okome_rate_allowed": "2",
        "okome_rate_limited": "1",
        "okome_wbudget_allowed": "1",
        "okome_wbudget_refused": "1",
        "okome_cache_hits": "1",
        "okome_cache_misses": "1",
        "okome_cache_stored": "1",
        "okome_errors": "0",
        "okome_waiting_clients": "0",
    }
    assert {k: values.get(k) for k in expected} == expected
    # Every numeric field of INFO okome is published, each with its value,
    # and nothing else (but okome_loaded).
    stats = ok.stats()
    assert set(values) == set(stats) | {"okome_loaded"}
    assert {k: float(v) for k, v in values.items() if k != "okome_loaded"} == {
        k: float(v) for k, v in stats.items()
    }

    # The next scrape sees the next call: a gauge per scrape, read live.
    ok.rate("agent-1", 2, 60)
    assert exporter.values()["okome_rate_limited"] == "2"
    # The exporter's own health: the script ran without error.
    text = exporter.scrape()
    assert 'redis_exporter_last_scrape_error{err=""} 0' in text.splitlines()
    assert "redis_up 1" in text.splitlines()


def test_fields_that_are_not_numbers_are_left_out(server, tmp_path):
    # redis_exporter fails the whole scrape on a value that is not a float
    # (redis_up 0). INFO okome has numbers only; the same script on INFO
    # server, which has text too, still scrapes cleanly, publishing the
    # numeric fields only.
    script = tmp_path / "server-exporter.lua"
    text = SCRIPT.read_text()
    assert text.count("redis.call('INFO', 'okome')") == 1
    script.write_text(text.replace("redis.call('INFO', 'okome')", "redis.call('INFO', 'server')"))
    e = Exporter(server.port, tmp_path / "exporter.log", script)
    try:
        text = e.scrape()
        values = dict(VALUE.findall(text))
    finally:
        e.kill()
    assert "redis_up 1" in text.splitlines()
    assert 'redis_exporter_last_scrape_error{err=""} 0' in text.splitlines()
    assert values["tcp_port"] == str(server.port)
    assert values["okome_loaded"] == "1"
    info = server.client().info("server")
    text_fields = {k for k, v in info.items() if isinstance(v, str)}
    assert {"redis_version", "os", "executable"} <= text_fields
    assert not text_fields & set(values)


def test_without_the_module(tmp_path):
    # A server without okome: the script still runs, and says so.
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        c = redis.Redis(port=port)
        deadline = time.monotonic() + 15
        while True:
            try:
                c.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        e = Exporter(port, tmp_path / "exporter.log")
        try:
            assert e.values() == {"okome_loaded": "0"}
        finally:
            e.kill()
    finally:
        proc.kill()
        proc.wait()
