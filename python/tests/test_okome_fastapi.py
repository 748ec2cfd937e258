"""okome.fastapi over real HTTP: apps under uvicorn (in a thread), real
requests with httpx, a real redis-server with the module (and one without)."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aredis
from conftest import REDIS_SERVER, free_port
from fastapi import Depends, FastAPI, Request
from uvicorn_support import serve

import okome
import okome.aio
import okome.aio._config
import okome.aio.budget
import okome.fastapi
from okome import PlannerError, RateReply, TakeReply
from okome.fastapi import AGENT_REMAINING, REMAINING, Limits, RateLimit, client_host

A = {"X-OKOME-Agent": "agent-a"}
B = {"X-OKOME-Agent": "agent-b"}


@pytest.fixture(autouse=True)
def _forget_aio_default():
    okome.aio._config.reset()
    yield
    okome.aio._config.reset()


def installed(server: Any, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """An app installed on ``server`` (through ``OKOME_REDIS_URL``: the
    client is install's, closed at shutdown)."""
    monkeypatch.setenv("OKOME_REDIS_URL", f"redis://127.0.0.1:{server.port}/0")
    app = FastAPI()
    okome.fastapi.install(app)
    return app


def app_for(server: Any, monkeypatch: pytest.MonkeyPatch, **routes_deps: Any) -> FastAPI:
    """An app installed on ``server``; one ``GET /<name>`` per keyword, with
    that dependency, answering the dependency's value."""
    app = installed(server, monkeypatch)
    for name, dep in routes_deps.items():

        def route(value: Any = Depends(dep)) -> Any:
            return {"allowed": value.allowed}

        app.get(f"/{name}")(route)
    return app


def retry_after(r: httpx.Response, window_s: int) -> int:
    value = int(r.headers["Retry-After"])
    # The window's first charge was a moment ago: the wait is the window,
    # rounded up to whole seconds, less that moment.
    assert window_s - 1 <= value <= window_s, value
    return value


def test_per_agent_limit(server, monkeypatch):
    app = app_for(server, monkeypatch, tools=RateLimit(3, 60))
    with serve(app) as url, httpx.Client(base_url=url) as http:
        got = [http.get("/tools", headers=A) for _ in range(3)]
        assert [r.status_code for r in got] == [200, 200, 200]
        assert [r.headers[AGENT_REMAINING] for r in got] == ["2", "1", "0"]
        assert [r.json() for r in got] == [{"allowed": True}] * 3
        refused = http.get("/tools", headers=A)
        assert refused.status_code == 429
        assert refused.headers[AGENT_REMAINING] == "0"
        retry_after(refused, 60)
        assert refused.json() == {
            "detail": f"rate limit exceeded: retry after {refused.headers['Retry-After']} s"
        }
        # Another agent has its own window.
        other = http.get("/tools", headers=B)
        assert other.status_code == 200 and other.headers[AGENT_REMAINING] == "2"
        # No agent: 400, nothing charged.
        missing = http.get("/tools")
        assert missing.status_code == 400
        assert missing.json() == {"detail": "the X-OKOME-Agent header is required"}
        assert http.get("/tools", headers={"X-OKOME-Agent": ""}).status_code == 400
    r = server.client(decode_responses=True)
    # The agent's OKOME.RATE window, as okome.budget.allow_rate's.
    assert sorted(r.keys("okome:budget:*")) == [
        "okome:budget:rate:{agent-a}",
        "okome:budget:rate:{agent-b}",
    ]
    assert okome.Okome(server.client()).rate("agent-a", 3, 60, cost=0).remaining == 0
    assert server.calls("okome.rate") == 5 + 1  # 5 requests with an agent, 1 peek


def test_per_ip_limit_with_name_cost_and_async_key(server, monkeypatch):
    async def api_key(request: Request) -> str | None:
        return request.headers.get("X-Api-Key")

    app = app_for(
        server,
        monkeypatch,
        ip=RateLimit(5, 60, key=client_host, name="ip", cost=2),
        key=RateLimit(1, 60, key=api_key, name="apikey", header="X-Key-Left"),
    )
    with serve(app) as url, httpx.Client(base_url=url) as http:
        got = [http.get("/ip") for _ in range(3)]
        assert [r.status_code for r in got] == [200, 200, 429]
        assert [r.headers[REMAINING] for r in got] == ["3", "1", "0"]
        assert AGENT_REMAINING not in got[0].headers
        retry_after(got[2], 60)

        k = http.get("/key", headers={"X-Api-Key": "k1"})
        assert k.status_code == 200 and k.headers["X-Key-Left"] == "0"
        assert REMAINING not in k.headers
        k2 = http.get("/key", headers={"X-Api-Key": "k1"})
        assert k2.status_code == 429 and k2.headers["X-Key-Left"] == "0"
        nokey = http.get("/key")
        assert nokey.status_code == 400
        assert nokey.json()["detail"].startswith("no rate-limit key for this request (RateLimit(")
    r = server.client(decode_responses=True)
    assert sorted(r.keys("okome:budget:*")) == [
        "okome:budget:rate:{127.0.0.1}:ip",
        "okome:budget:rate:{k1}:apikey",
    ]


def test_two_limits_on_one_route_report_the_smaller_remaining(server, monkeypatch):
    app = installed(server, monkeypatch)
    loose = RateLimit(10, 60, header="X-Left")
    tight = RateLimit(2, 60, key=client_host, name="ip", header="X-Left")

    @app.get("/both", dependencies=[Depends(loose), Depends(tight)])
    def both() -> str:
        return "ok"

    @app.get("/reply")
    def reply(value: RateReply = Depends(RateLimit(10, 60, name="r"))) -> dict[str, int]:
        return {"remaining": value.remaining, "retry_after_ms": value.retry_after_ms}

    with serve(app) as url, httpx.Client(base_url=url) as http:
        assert [http.get("/both", headers=A).headers["X-Left"] for _ in range(2)] == ["1", "0"]
        third = http.get("/both", headers=A)
        assert third.status_code == 429 and third.headers["X-Left"] == "0"
        assert http.get("/reply", headers=A).json() == {"remaining": 9, "retry_after_ms": 0}
    # Two dependencies, two OKOME.RATE, not atomic: the loose one was charged
    # by the refused request too (Limits charges all or nothing).
    ok = okome.Okome(server.client())
    assert ok.rate("agent-a", 10, 60, cost=0).remaining == 7


def test_limits_take_all_or_nothing(server, monkeypatch):
    both = Limits(RateLimit(3, 60), RateLimit(2, 60, key=client_host, name="ip"))
    app = installed(server, monkeypatch)

    @app.get("/take")
    def take(value: TakeReply = Depends(both)) -> list[int]:
        return [s.remaining for s in value.limits]

    with serve(app) as url, httpx.Client(base_url=url) as http:
        first = http.get("/take", headers=A)
        assert first.status_code == 200 and first.json() == [2, 1]
        assert first.headers[AGENT_REMAINING] == "2" and first.headers[REMAINING] == "1"
        second = http.get("/take", headers=B)
        assert second.json() == [2, 0]
        # The IP limit refuses: 429, its header 0; agent-a is not charged.
        third = http.get("/take", headers=A)
        assert third.status_code == 429
        assert third.headers[REMAINING] == "0" and AGENT_REMAINING not in third.headers
        retry_after(third, 60)
        assert http.get("/take").status_code == 400
    assert server.calls("okome.take") == 3
    ok = okome.Okome(server.client())
    assert ok.rate("agent-a", 3, 60, cost=0).remaining == 2  # one charge, not two
    assert ok.rate("127.0.0.1", 2, 60, cost=0, name="ip").remaining == 0
    with pytest.raises(ValueError, match="at least one"):
        Limits()
    with pytest.raises(ValueError, match="must be >= 1"):
        RateLimit(0, 60)


class Teapot(PlannerError):
    """A PlannerError subclass install() has never heard of (as ComputeFailed)."""

    status_code = 418


def test_install_maps_okome_exceptions(server, monkeypatch):
    app = installed(server, monkeypatch)
    ok = app.state.okome
    assert isinstance(ok, okome.aio.Okome)
    planner = okome.aio.Planner(ok, limit=1, window=60, wait_ms=200)

    @app.get("/plan/{prompt}")
    async def plan(prompt: str) -> Any:
        r = await planner.get_or_compute("m", prompt, "v1", "repo", lambda: {"p": 1}, agent="x")
        return r.plan

    @app.get("/lease")
    async def lease() -> str:
        async with ok.lease("gpu", 1, 5000):
            return "held"

    @app.get("/teapot")
    async def teapot() -> str:
        raise Teapot("short and stout", key=None, headers={"X-Tea": "earl grey"})

    @app.get("/argument")
    async def argument() -> str:
        await ok.rate("a", 0, 60)  # the server refuses: an okome bug is a 500
        return "unreachable"

    sync = okome.Okome(server.client())
    with serve(app) as url, httpx.Client(base_url=url) as http:
        assert http.get("/plan/one").json() == {"p": 1}
        limited = http.get("/plan/one")  # okome.RateLimited
        assert limited.status_code == 429
        assert limited.headers["X-OKOME-Agent-Rate-Remaining"] == "0"
        retry_after(limited, 60)
        assert limited.json()["detail"].startswith("rate limit exceeded for agent 'x'")

        key = okome.planner_key("m", "locked", "v1", "repo")
        assert sync.lock(key, ttl_ms=9000) is not None  # someone else computes it
        planner.options = planner.options.merge(limit=100)
        locked = http.get("/plan/locked")  # okome.PlanLocked after WAIT 200
        assert locked.status_code == 503
        assert locked.headers["X-OKOME-Cache-Key"] == key
        assert 8 <= int(locked.headers["Retry-After"]) <= 9

        held = sync.lease_acquire("gpu", 1, 10_000)
        assert held.lease is not None
        busy = http.get("/lease")  # okome.LeaseUnavailable
        assert busy.status_code == 503
        assert 9 <= int(busy.headers["Retry-After"]) <= 10
        assert busy.json()["detail"].startswith("no lease of 'gpu' is free (1 in use)")
        assert sync.lease_release(held.lease)
        assert http.get("/lease").json() == "held"

        tea = http.get("/teapot")
        assert tea.status_code == 418 and tea.headers["X-Tea"] == "earl grey"
        assert tea.json() == {"detail": "short and stout"}

        bug = http.get("/argument")  # okome.ArgumentError: not mapped, a 500
        assert bug.status_code == 500 and bug.text == "Internal Server Error"


def test_redis_unreachable_is_503(start_server, monkeypatch):
    server = start_server()
    app = app_for(server, monkeypatch, tools=RateLimit(3, 60))
    with serve(app) as url, httpx.Client(base_url=url) as http:
        assert http.get("/tools", headers=A).status_code == 200
        server.kill()
        down = http.get("/tools", headers=A)
        assert down.status_code == 503
        assert down.headers["Retry-After"] == "1"
        assert down.json()["detail"].startswith("Redis is unavailable: ConnectionError")


def test_install_default_client_and_the_aio_drop_ins(server, monkeypatch, caplog):
    monkeypatch.setenv("OKOME_REDIS_URL", server.url + "?client_name=okome-app")
    app = FastAPI()
    ok = okome.fastapi.install(app)  # from OKOME_REDIS_URL
    assert app.state.okome is ok and isinstance(ok, okome.aio.Okome)

    @app.get("/budget")
    async def budget() -> list[Any]:
        return list(await okome.aio.budget.allow_rate("drop-in", 2, 60))

    caplog.set_level(logging.INFO, logger="okome.fastapi")
    with serve(app) as url, httpx.Client(base_url=url) as http:
        assert okome.aio._config._configured is ok  # the drop-ins use the app's client
        assert [http.get("/budget").json() for _ in range(3)] == [
            [True, 1],
            [True, 0],
            [False, 0],
        ]
        names = [c["name"] for c in server.client(decode_responses=True).client_list()]
        assert "okome-app" in names
    assert caplog.records == []  # the module is loaded: nothing to say
    assert okome.aio._config._configured is None  # given back at shutdown
    assert server.calls("okome.key") == 1  # the startup check
    # The client install made is closed at shutdown.
    names = [c["name"] for c in server.client(decode_responses=True).client_list()]
    assert "okome-app" not in names


def test_install_given_client_is_used_and_left_open(server, monkeypatch):
    monkeypatch.setenv("OKOME_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    app = FastAPI()
    client = aredis.Redis(host="127.0.0.1", port=server.port)
    okome.fastapi.install(app, client)

    @app.get("/budget")
    async def budget() -> list[Any]:
        return list(await okome.aio.budget.allow_rate("given", 1, 60))

    # The app's own shutdown, after install's: the client is still open.
    pings: list[bool] = []
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            yield state
        pings.append(bool(await client.ping()))
        await client.aclose()

    app.router.lifespan_context = lifespan
    with serve(app) as url, httpx.Client(base_url=url) as http:
        assert http.get("/budget").json() == [True, 0]
    assert pings == [True]


def plain_redis(tmp_path: Any) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    c = redis.Redis(port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            c.ping()
            return proc, port
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.02)


def test_module_not_loaded(tmp_path, caplog, monkeypatch):
    proc, port = plain_redis(tmp_path)
    monkeypatch.setenv("OKOME_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    try:
        app = FastAPI()
        okome.fastapi.install(app)

        @app.get("/health")
        def health() -> str:
            return "up"

        app.get("/tools", dependencies=[Depends(RateLimit(3, 60))])(health)
        caplog.set_level(logging.INFO, logger="okome.fastapi")
        with serve(app) as url, httpx.Client(base_url=url) as http:
            # The app started, and said why okome will not work.
            [record] = caplog.records
            assert record.levelno == logging.ERROR and record.name == "okome.fastapi"
            message = record.getMessage()
            assert message.startswith(
                f"okome: the Redis server at 127.0.0.1:{port} does not have the okome "
                "module loaded (unknown command 'OKOME.KEY'"
            )
            assert "load libokome.so (redis-server --loadmodule /path/to/libokome.so" in message
            assert http.get("/health").json() == "up"
            r = http.get("/tools", headers=A)
            assert r.status_code == 503
            detail = r.json()["detail"]
            assert detail.startswith("unknown command 'OKOME.RATE'")
            assert detail.endswith(
                "(the okome module is not loaded on this server: load libokome.so (redis-server "
                "--loadmodule /path/to/libokome.so, or MODULE LOAD /path/to/libokome.so))"
            )
    finally:
        proc.kill()
        proc.wait()


def test_redis_down_at_startup_is_logged(caplog, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("OKOME_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    app = FastAPI()
    okome.fastapi.install(app)

    @app.get("/health")
    def health() -> str:
        return "up"

    caplog.set_level(logging.INFO, logger="okome.fastapi")
    with serve(app) as url, httpx.Client(base_url=url) as http:
        [record] = caplog.records
        assert record.levelno == logging.ERROR
        assert record.getMessage().startswith(
            f"okome: cannot reach the Redis server at 127.0.0.1:{port} (Error 111 connecting"
        )
        assert "libokome.so" in record.getMessage()
        assert http.get("/health").json() == "up"


def test_startup_check_refused_by_acl_is_logged(server, monkeypatch, caplog):
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-okome.key")
    monkeypatch.setenv("OKOME_REDIS_URL", f"redis://app:pw@127.0.0.1:{server.port}/0")
    app = FastAPI()
    okome.fastapi.install(app)
    app.get("/tools", dependencies=[Depends(RateLimit(3, 60))])(lambda: "ok")
    caplog.set_level(logging.INFO, logger="okome.fastapi")
    with serve(app) as url, httpx.Client(base_url=url) as http:
        [record] = caplog.records
        assert record.levelno == logging.ERROR
        message = record.getMessage()
        assert message.startswith(
            f"okome: could not check that the Redis server at 127.0.0.1:{server.port} has "
            "libokome.so loaded: PermissionDeniedError: "
        )
        # Redis 7.0 says "this user", Valkey "User app".
        assert message.endswith(" has no permissions to run the 'okome.key' command")
        assert http.get("/tools", headers=A).json() == "ok"  # okome works all the same
