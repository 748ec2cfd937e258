"""How a :class:`~okome._commands.Call` reaches a server, for redis-py's sync clients."""

from __future__ import annotations

import inspect
import time
from typing import Any

import redis
from redis import exceptions as rex
from redis.cluster import RedisCluster

from . import errors
from ._commands import Call

MAX_REDIRECTS = 16  # as redis-py's RedisClusterRequestTTL


def redirect_pause(attempt: int) -> float:
    """Seconds to wait before following redirection number ``attempt``: none
    for the first two (a resharding answers MOVED or ASK once), then a short,
    growing pause while the nodes agree on the slot's owner."""
    return 0.0 if attempt < 2 else min(0.025 * attempt, 0.25)


def read_timeout(socket_timeout: float | None, wait_ms: int) -> float:
    """A read timeout for a call that may block ``wait_ms`` in the server:
    the wait plus the connection's own socket timeout (30 s without one)."""
    margin = float(socket_timeout) if socket_timeout else 30.0
    return wait_ms / 1000.0 + max(margin, 1.0)


_SIGNATURES: dict[Any, frozenset[str]] = {}


def _accepts(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes a parameter ``name`` (cached per function)."""
    target = getattr(fn, "__func__", fn)
    params = _SIGNATURES.get(target)
    if params is None:
        try:
            params = frozenset(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            params = frozenset()
        _SIGNATURES[target] = params
    return name in params


def get_connection(pool: Any) -> Any:
    """A connection checked out of a redis-py pool (redis-py 5.0 wants a
    command name there; 5.3+ warns when given one)."""
    if _needs_command_name(pool.get_connection):
        return pool.get_connection("OKOME")
    return pool.get_connection()


def _needs_command_name(fn: Any) -> bool:
    target = getattr(fn, "__func__", fn)
    cached = _NEEDS_NAME.get(target)
    if cached is None:
        try:
            param = inspect.signature(target).parameters.get("command_name")
            cached = param is not None and param.default is inspect.Parameter.empty
        except (TypeError, ValueError):
            cached = False
        _NEEDS_NAME[target] = cached
    return cached


_NEEDS_NAME: dict[Any, bool] = {}


def _read(conn: Any, timeout: float) -> Any:
    if _accepts(conn.read_response, "timeout"):
        return conn.read_response(timeout=timeout)
    # redis-py without per-read timeouts: set it on the socket for this read.
    sock = getattr(conn, "_sock", None)
    if sock is None:
        raise errors.ConfigurationError(
            "okome: this redis-py connection offers no per-call read timeout, so a "
            "WAIT longer than its socket_timeout cannot be made safe; upgrade redis-py"
        )
    sock.settimeout(timeout)
    try:
        return conn.read_response()
    finally:
        if conn._sock is not None:
            conn._sock.settimeout(conn.socket_timeout)


def call_on(client: redis.Redis, call: Call, *, asking: bool = False) -> Any:
    """Run ``call`` on a standalone client (or one cluster node's client).

    A call that does not block goes through redis-py as usual. A blocking
    call (``WAIT``) gets a connection of its own for the call, a read timeout
    above the wait, and is never retried: redis-py's retry would send the
    blocking command again after a socket timeout, and the server would
    treat it as a new caller.
    """
    if call.wait_ms is None and not asking and not call.more:
        return client.execute_command(*call.args)
    if getattr(client, "connection", None) is not None and call.wait_ms is None:
        pipe = client.pipeline(transaction=False)
        for args in (call.args, *call.more):
            pipe.execute_command(*args)
        return pipe.execute()
    if getattr(client, "connection", None) is not None:
        raise errors.ConfigurationError(
            "okome: a WAIT blocks its connection until the plan is stored, so it needs a "
            "connection of its own; create the client without single_connection_client=True"
        )
    pool = client.connection_pool
    conn = get_connection(pool)
    clean = False
    try:
        commands = [call.args, *call.more]
        if asking:
            commands.insert(0, ("ASKING",))
        conn.send_packed_command(conn.pack_commands(commands))
        if asking:
            conn.read_response()
        replies, error = [], None
        for i in range(1 + len(call.more)):
            try:
                if i == 0 and call.wait_ms is not None:
                    replies.append(_read(conn, read_timeout(conn.socket_timeout, call.wait_ms)))
                else:
                    replies.append(conn.read_response())
            except rex.ResponseError as e:
                replies.append(e)
                error = error or e
        clean = True
        if error is not None:
            raise error
        return replies if call.more else replies[0]
    except rex.ResponseError:
        clean = True
        raise
    finally:
        if not clean:
            # The reply may still come: this connection must not be reused.
            conn.disconnect()
        pool.release(conn)


class Standalone:
    cluster = False

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def execute(self, call: Call) -> Any:
        try:
            raw = call_on(self.client, call)
        except rex.ResponseError as e:
            raise errors.translate(e) from None
        return call.parse(raw)


class Cluster:
    """Routes each call to the primary serving its key's slot, computed
    locally; follows ``MOVED`` and ``ASK`` itself (so a blocking call is never
    re-sent by the cluster client's retry)."""

    cluster = True

    def __init__(self, client: RedisCluster) -> None:
        self.client = client

    def _node(self, host: str, port: int) -> Any:
        node = self.client.get_node(host=host, port=port)
        if node is None:
            self.client.nodes_manager.initialize()
            node = self.client.get_node(host=host, port=port)
        if node is None:
            raise rex.ClusterError(f"okome: redirected to unknown node {host}:{port}")
        return node

    def execute(self, call: Call) -> Any:
        rc = self.client
        if call.route is None:
            node = rc.get_default_node()
        else:
            node = rc.nodes_manager.get_node_from_slot(_slot(call.route))
        asking = False
        for attempt in range(MAX_REDIRECTS):
            if redirect_pause(attempt):
                time.sleep(redirect_pause(attempt))
            try:
                raw = call_on(rc.get_redis_connection(node), call, asking=asking)
                return call.parse(raw)
            except rex.MovedError as e:
                manager = rc.nodes_manager
                if hasattr(manager, "move_slot"):
                    manager.move_slot(e)
                elif hasattr(manager, "update_moved_exception"):
                    manager.update_moved_exception(e)
                node, asking = self._node(e.host, e.port), False
            except rex.AskError as e:
                node, asking = self._node(e.host, e.port), True
            except rex.ResponseError as e:
                raise errors.translate(e) from None
        raise rex.ClusterError(f"okome: more than {MAX_REDIRECTS} redirections for {call.args[0]}")


def _slot(key: str) -> int:
    from ._keys import slot

    return slot(key)


def transport(client: Any) -> Standalone | Cluster:
    if isinstance(client, RedisCluster):
        return Cluster(client)
    if isinstance(client, redis.Redis):
        return Standalone(client)
    raise TypeError(
        "okome.Okome needs a redis.Redis or redis.cluster.RedisCluster, "
        f"got {type(client).__name__}"
        " (for redis.asyncio clients use okome.aio.Okome)"
    )
