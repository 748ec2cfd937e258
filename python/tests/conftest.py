"""Real servers for the tests: each test gets its own redis-server with okome
loaded, on a free loopback port, killed by pid when the test ends; the
cluster tests share one 3-primary cluster per module.

The conventions are the workspace's test harness's (the ``okome-testkit``
crate, ``testkit/src/lib.rs``, documents them): ``OKOME_MODULE`` selects the
library (default: the debug build, ``target/debug/libokome.so`` or under
``CARGO_TARGET_DIR``, built by ``cargo build -p okome``: ``make python-test``
does), ``REDIS_SERVER`` the server binary; ports are free loopback ports in
20000..55535 whose cluster bus port (+10000) is free too, and a server that
does not come up is started again on another port (5 attempts); each server
has its own directory (under pytest's ``tmp_path``) and is killed by pid
with SIGKILL.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
MODULE = os.environ.get("OKOME_MODULE") or str(TARGET / "debug" / "libokome.so")
REDIS_SERVER = os.environ.get("REDIS_SERVER") or "redis-server"


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_used: set[int] = set()

# As in okome-testkit: PORTS_FROM, PORTS_BELOW, BUS_OFFSET.
PORTS_FROM, PORTS_BELOW, BUS_OFFSET = 20000, 55535, 10000
START_ATTEMPTS = 5


def free_port() -> int:
    """A free loopback port below 55535 (its cluster bus port, +10000, is free too)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(1000):
        port = rng.randrange(PORTS_FROM, PORTS_BELOW)
        if port not in _used and _bindable(port) and _bindable(port + BUS_OFFSET):
            _used.add(port)
            return port
    raise RuntimeError("no free port")


class Server:
    """One redis-server with okome loaded."""

    def __init__(
        self, workdir: Path, module_args: tuple[str, ...] = (), extra: tuple[str, ...] = ()
    ):
        if not Path(MODULE).exists():
            raise RuntimeError(f"{MODULE} does not exist: run `cargo build -p okome` first")
        for attempt in range(START_ATTEMPTS):
            if self._start(workdir, module_args, extra):
                return
            # Another process took the port, say: try another one.
            if attempt == START_ATTEMPTS - 1:
                raise RuntimeError(f"redis-server did not start: {self._log_tail()}")

    def _start(self, workdir: Path, module_args: tuple[str, ...], extra: tuple[str, ...]) -> bool:
        self.port = free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.log = self.dir / "server.log"
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log),
            *extra,
            "--loadmodule", MODULE, *module_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        probe = redis.Redis(port=self.port, socket_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                # Not up yet; or, while it starts, another process on the
                # port answered something redis-py cannot read (seen once
                # as an AttributeError from the RESP3 handshake): try again.
                # If the port was another's, our server exits (poll above)
                # and the start is tried on another port.
                except (redis.exceptions.RedisError, AttributeError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    return False
                time.sleep(0.02)
        finally:
            probe.close()

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return "(no log)"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)  # type: ignore[arg-type]

    def calls(self, command: str) -> int:
        """How many times ``command`` ran (``INFO commandstats``)."""
        stats = self.client().info("commandstats")
        entry = stats.get(f"cmdstat_{command.lower()}")
        return int(entry["calls"]) if entry else 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """A factory: ``start_server("lock-ttl-min", "100")`` starts a server
    with those module arguments; all are killed when the test ends."""
    servers: list[Server] = []

    def start(*module_args: str, extra: tuple[str, ...] = ()) -> Server:
        s = Server(tmp_path, tuple(module_args), extra)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.kill()


@pytest.fixture
def server(start_server) -> Server:  # type: ignore[no-untyped-def]
    return start_server()


class Cluster:
    """Three primaries on loopback, slots split in three, okome on each."""

    RANGES = ((0, 5460), (5461, 10922), (10923, 16383))

    def __init__(self, workdir: Path):
        extra = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "5000",
        )  # fmt: skip
        self.nodes = [Server(workdir, (), extra) for _ in range(3)]
        try:
            first = self.nodes[0].client()
            for node, (lo, hi) in zip(self.nodes, self.RANGES):
                node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            deadline = time.monotonic() + 30
            while not (all(self._ready(n) for n in self.nodes) and self.settled()):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster never became ok")
                time.sleep(0.05)
        except BaseException:
            self.kill()
            raise

    @staticmethod
    def _ready(node: Server) -> bool:
        c = node.client(decode_responses=True)
        info = c.execute_command("CLUSTER", "INFO")
        text = info if isinstance(info, str) else str(info)
        if "cluster_state:ok" not in text:
            return False
        return len(c.execute_command("CLUSTER", "SLOTS")) == 3

    def settled(self) -> bool:
        """Whether the nodes' config epochs are distinct and every node sees
        the same ones. Nodes made primaries by hand start with epoch 0 each,
        and resolve the collision over the next second or so; a slot moved
        meanwhile (SETSLOT NODE bumps the new owner's epoch from what it
        knows) may go back to its old owner on some nodes only, which then
        answer MOVED to each other."""
        views = []
        for n in self.nodes:
            text = n.client(decode_responses=True).execute_command("CLUSTER", "NODES")
            views.append({f[0]: f[6] for f in (line.split() for line in str(text).splitlines())})
        return all(v == views[0] for v in views) and len(set(views[0].values())) == len(views)

    def owner(self, key: str | bytes) -> Server:
        c = self.nodes[0].client()
        slot = c.execute_command("CLUSTER", "KEYSLOT", key)
        for node, (lo, hi) in zip(self.nodes, self.RANGES):
            if lo <= slot <= hi:
                return node
        raise AssertionError(slot)

    def node_id(self, node: Server) -> str:
        return str(node.client(decode_responses=True).execute_command("CLUSTER", "MYID"))

    def commands(self) -> list[dict[str, int]]:
        """Per node: calls of each command (``INFO commandstats``), but INFO
        (the counting itself), EXISTS (which okome calls inside the server,
        in cluster mode, to check that the keys of a follower woken from
        WAIT, or of an agent's ledger, are served there) and CLIENT SETINFO
        (redis-py's connection setup, which Valkey counts and Redis 7.0
        refuses)."""
        if not hasattr(self, "_stat_clients"):
            self._stat_clients = [n.client() for n in self.nodes]
        out = []
        for c in self._stat_clients:
            stats = c.info("commandstats")
            out.append(
                {
                    k[len("cmdstat_") :]: int(v["calls"])
                    for k, v in stats.items()
                    if k not in ("cmdstat_info", "cmdstat_exists", "cmdstat_client|setinfo")
                }
            )
        return out

    def flush(self) -> None:
        for n in self.nodes:
            n.client().flushall()
            n.client().config_resetstat()

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.kill()
