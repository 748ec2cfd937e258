"""How a :class:`~okome._commands.Call` reaches a server, for redis-py's sync
clients; and what :mod:`okome._async`, its asyncio twin, shares with it
(:class:`Redirects`, :func:`settle`, :func:`commands`, :func:`pipeline`, ...)."""

from __future__ import annotations

import inspect
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, NoReturn

import redis
from redis import exceptions as rex
from redis.cluster import RedisCluster

from . import _gate, errors
from ._commands import Call

MAX_REDIRECTS = 16  # as redis-py's RedisClusterRequestTTL
TRYAGAIN_PAUSE = 0.005  # the least pause before retrying after TRYAGAIN
CLUSTERDOWN_PAUSE = 0.25  # before re-reading the slot map after CLUSTERDOWN, as redis-py
CLUSTERDOWN_RETRIES = 3  # as redis-py's default retry count


def redirect_pause(attempt: int) -> float:
    """Seconds to wait before following redirection number ``attempt``: none
    for the first two (a resharding answers MOVED or ASK once), then a short,
    growing pause while the nodes agree on the slot's owner."""
    return 0.0 if attempt < 2 else min(0.025 * attempt, 0.25)


# The replies with which a cluster node refuses a call without running it.
REDIRECTIONS = (rex.AskError, rex.TryAgainError, rex.ClusterDownError)  # AskError: MOVED too


@dataclass(frozen=True)
class Redirect:
    """What the next attempt of a cluster call does: wait ``pause`` seconds;
    re-read the slot map (``refresh``) or patch it with a ``moved`` reply;
    then send to ``node`` (host, port), or, if ``None``, to the slot's owner
    per the client's map; with ``ASKING`` first if ``asking``."""

    pause: float
    node: tuple[str, int] | None
    asking: bool = False
    moved: rex.MovedError | None = None
    refresh: bool = False


class Redirects:
    """One cluster call's redirections, followed within ``MAX_REDIRECTS``
    attempts; the sync and the asyncio transport do the I/O.

    None of ``MOVED``, ``ASK``, ``TRYAGAIN`` and ``CLUSTERDOWN`` means the
    call ran, so sending it again is safe, a blocking one (``WAIT``)
    included:

    - Redis answers them *instead of* running the command, from the keys it
      declares (okome declares every key a call touches): a ``WAIT`` so
      answered never blocked, no waiter was registered, nothing was charged
      or locked. (Redis also unblocks with ``MOVED`` or ``CLUSTERDOWN`` a
      client blocked on keys whose slot moves, but okome's ``WAIT`` blocks
      with ``RM_BlockClient``, not on keys, and always gets okome's reply.)
    - okome answers ``TRYAGAIN`` itself, before writing anything, to a
      follower woken from ``WAIT`` whose slot moved meanwhile (a follower's
      lock is taken only by the reply that carries its token, and on a
      cluster a call with ``WAIT`` never carries an agent's charge: see
      ``_commands.plan_lookup``), and to ``AGENT.KEYS`` / ``AGENT.PURGE``
      when some of the ledger's keys have moved away. A follower sent again
      waits again, on the slot's new owner.

    What each makes the next attempt do:

    - ``MOVED``: the slot map is patched, the call goes to the new owner.
    - ``ASK``: the call goes to the importing node, with ``ASKING`` first.
    - ``TRYAGAIN``: the slot is being migrated and the call's keys are split
      between its two nodes (or missing on the importing node, for a call of
      several keys): after a short, growing pause the call goes again to
      the slot's owner per the map, without ``ASKING`` (the owner answers
      ``ASK`` again if the keys have moved meanwhile, or serves the call
      once the migration has ended). Out of attempts:
      :class:`~okome.errors.SlotMigratingError`.
    - ``CLUSTERDOWN`` (a failover under way, a slot not covered): as
      redis-py, a pause of ``CLUSTERDOWN_PAUSE``, the slot map re-read,
      then the call again; ``CLUSTERDOWN_RETRIES`` times at most, then the
      ``ClusterDownError`` is raised.
    """

    def __init__(self, call: Call) -> None:
        self.call = call
        self.attempt = 0
        self.tryagains = 0
        self.downs = 0

    def follow(self, e: rex.ResponseError) -> Redirect:
        """The next attempt after the error reply ``e``; raises the error to
        give the caller if ``e`` is not a redirection or the attempts are spent."""
        if not isinstance(e, REDIRECTIONS):
            raise errors.translate(e) from None
        self.attempt += 1
        pause = redirect_pause(self.attempt)
        if isinstance(e, rex.ClusterDownError):
            self.downs += 1
            if self.downs > CLUSTERDOWN_RETRIES or self.attempt >= MAX_REDIRECTS:
                raise e
            return Redirect(max(pause, CLUSTERDOWN_PAUSE), None, refresh=True)
        if isinstance(e, rex.TryAgainError):
            self.tryagains += 1
        if self.attempt >= MAX_REDIRECTS:
            self.exhausted(e)
        if isinstance(e, rex.MovedError):
            return Redirect(pause, (e.host, e.port), moved=e)
        if isinstance(e, rex.AskError):
            return Redirect(pause, (e.host, e.port), asking=True)
        return Redirect(max(pause, TRYAGAIN_PAUSE), None)

    def exhausted(self, e: rex.ResponseError) -> NoReturn:
        name = self.call.args[0]
        if self.tryagains:
            slot = "its slot" if self.call.route is None else f"slot {_slot(self.call.route)}"
            raise errors.SlotMigratingError(
                f"okome: {name} was answered TRYAGAIN {self.tryagains} times in "
                f"{MAX_REDIRECTS} attempts: {slot} is being migrated, and the keys the call "
                f"touches are not all on one of its two nodes; the call did not run: retry "
                f"it once the migration has ended (last reply: {e})",
                "TRYAGAIN",
            ) from e
        raise rex.ClusterError(f"okome: more than {MAX_REDIRECTS} redirections for {name}") from e


def settle(call: Call, replies: list[Any]) -> Any:
    """The reply of ``call`` from the replies of its commands (error replies
    as exceptions): raises the first error. A redirection of a command
    pipelined after a first one that ran must not be followed (the call
    would run twice): it is raised as a ``ClusterError``."""
    if isinstance(replies[0], Exception):
        raise replies[0]
    for i, reply in enumerate(replies[1:]):
        if isinstance(reply, REDIRECTIONS):
            raise rex.ClusterError(
                f"okome: {call.args[0]} ran, but {call.more[i][0]} pipelined after it was "
                f"refused with {type(reply).__name__} ({reply}); not sent again"
            ) from reply
        if isinstance(reply, Exception):
            raise reply
    return replies if call.more else replies[0]


def commands(call: Call, asking: bool) -> list[tuple[Any, ...]]:
    """What to send for ``call``: its command and those pipelined after it,
    each preceded by ``ASKING`` if ``asking`` (ASKING holds for one command)."""
    out: list[tuple[Any, ...]] = []
    for args in (call.args, *call.more):
        if asking:
            out.append(("ASKING",))
        out.append(args)
    return out


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


def pipeline(client: Any, call: Call, asking: bool) -> Any:
    """``call`` queued on a pipeline of ``client`` if the client has a single
    connection (``single_connection_client=True``), sync or asyncio; ``None``
    if it has a pool, from which the call takes a connection of its own.
    Raises ``ConfigurationError`` for a blocking call on a single connection."""
    if getattr(client, "connection", None) is None:
        return None
    if call.wait_ms is not None:
        raise errors.ConfigurationError(
            "okome: a WAIT blocks its connection until the plan is stored, so it needs a "
            "connection of its own; create the client without single_connection_client=True"
        )
    pipe = client.pipeline(transaction=False)
    for args in commands(call, asking):
        pipe.execute_command(*args)
    return pipe


def call_on(client: redis.Redis, call: Call, *, asking: bool = False) -> Any:
    """Run ``call`` on a standalone client (or one cluster node's client),
    within the pool's :mod:`~okome._gate` if it is bounded."""
    if getattr(client, "connection", None) is not None:
        return _call_on(client, call, asking)
    bounded = _gate.gate(client.connection_pool)
    if bounded is None:
        return _call_on(client, call, asking)
    sent, waiting = bounded.enter(call)
    try:
        return _call_on(client, sent, asking)
    finally:
        bounded.leave(True, waiting)


def _call_on(client: redis.Redis, call: Call, asking: bool) -> Any:
    """Run ``call`` on a standalone client (or one cluster node's client).

    A call that does not block goes through redis-py as usual. A blocking
    call (``WAIT``) gets a connection of its own for the call, a read timeout
    above the wait, and is never retried: redis-py's retry would send the
    blocking command again after a socket timeout, and the server would
    treat it as a new caller.
    """
    if call.wait_ms is None and not asking and not call.more:
        return client.execute_command(*call.args)
    pipe = pipeline(client, call, asking)
    if pipe is not None:
        results = pipe.execute(raise_on_error=False)
        return settle(call, results[1::2] if asking else results)
    pool = client.connection_pool
    conn = get_connection(pool)
    if not asking and not call.more:
        return _wait_on(pool, conn, call)
    clean = False
    try:
        conn.send_packed_command(conn.pack_commands(commands(call, asking)))
        replies: list[Any] = []
        for i in range(1 + len(call.more)):
            if asking:
                with suppress(rex.ResponseError):  # if refused, the command's reply says why
                    conn.read_response()
            try:
                if i == 0 and call.wait_ms is not None:
                    replies.append(_read(conn, read_timeout(conn.socket_timeout, call.wait_ms)))
                else:
                    replies.append(conn.read_response())
            except rex.ResponseError as e:
                replies.append(e)
        clean = True
        return settle(call, replies)
    except rex.ResponseError:
        clean = True
        raise
    finally:
        if not clean:
            # The reply may still come: this connection must not be reused.
            conn.disconnect()
        pool.release(conn)


def packed(conn: Any, call: Call) -> Any:
    """``call``'s command packed for ``conn``; kept in the call's cache if it
    has one (a memoised planner lookup, whose arguments are all ``str``,
    ``bytes`` or ``int``), per connection class and encoding, which are all
    the packing depends on."""
    cache = call.packed
    if cache is None:
        return conn.pack_command(*call.args)
    try:
        encoder = conn.encoder
        kind = (type(conn), encoder.encoding, encoder.encoding_errors)
    except AttributeError:
        return conn.pack_command(*call.args)
    data = cache.get(kind)
    if data is None:
        if type(conn).pack_command in _STOCK_PACKERS:
            data = resp(call.args, encoder.encoding, encoder.encoding_errors)
        else:
            data = conn.pack_command(*call.args)
        cache[kind] = data
    return data


def resp(args: tuple[Any, ...], encoding: str, errors: str) -> list[bytes]:
    """``args`` (``str``, ``bytes`` and ``int`` only) packed as redis-py's own
    ``pack_command`` packs them (RESP, ``str`` encoded as its encoder does,
    ``int`` in decimal; the command name one word), in one piece (a list,
    as ``send_packed_command`` takes it)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is str:
            arg = arg.encode(encoding, errors)
        elif kind is int:
            arg = b"%d" % arg
        elif kind is not bytes:
            raise TypeError(f"okome: cannot pack {kind.__name__} {arg!r}")
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return [b"".join(out)]


def _stock_packers() -> frozenset[Any]:
    """redis-py's own ``pack_command`` (sync and asyncio): a connection class
    that overrides it packs for itself."""
    import redis.asyncio.connection
    import redis.connection

    found = set()
    for module in (redis.connection, redis.asyncio.connection):
        for name in ("AbstractConnection", "Connection"):
            fn = getattr(getattr(module, name, None), "pack_command", None)
            if fn is not None:
                found.add(fn)
    return frozenset(found)


_STOCK_PACKERS = _stock_packers()


def _wait_on(pool: Any, conn: Any, call: Call) -> Any:
    """The blocking path of :func:`_call_on` for one command (a planner
    lookup with ``WAIT``), on ``conn`` checked out of ``pool``: a hit is
    answered before anything blocks, so this is the hit path too."""
    assert call.wait_ms is not None
    clean = False
    try:
        conn.send_packed_command(packed(conn, call))
        reply = _read(conn, read_timeout(conn.socket_timeout, call.wait_ms))
        clean = True
        return reply
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
    locally; follows ``MOVED``, ``ASK``, ``TRYAGAIN`` and ``CLUSTERDOWN``
    itself (see :class:`Redirects`), so a blocking call is never re-sent by
    the cluster client's retry."""

    cluster = True

    def __init__(self, client: RedisCluster) -> None:
        self.client = client

    def _node(self, host: str, port: int) -> Any:
        node = self.client.get_node(host=host, port=port)
        if node is None:
            self.client.nodes_manager.initialize()
            node = known_node(self.client, host, port)
        return node

    def execute(self, call: Call) -> Any:
        rc = self.client
        node, asking = owner(rc, call), False
        redirects = Redirects(call)
        while True:
            try:
                raw = call_on(rc.get_redis_connection(node), call, asking=asking)
            except rex.ResponseError as e:
                step = redirects.follow(e)
            else:
                return call.parse(raw)
            if step.pause:
                time.sleep(step.pause)
            manager = rc.nodes_manager
            if step.refresh:
                with suppress(rex.RedisError, rex.RedisClusterException):
                    manager.initialize()  # no node answers: the next attempt says so
            if step.moved is not None:
                if hasattr(manager, "move_slot"):
                    manager.move_slot(step.moved)
                elif hasattr(manager, "update_moved_exception"):
                    manager.update_moved_exception(step.moved)
            if step.node is not None:
                node = self._node(*step.node)
            else:
                with suppress(rex.SlotNotCoveredError):  # no owner in the map: the same node
                    node = owner(rc, call)
            asking = step.asking


def owner(client: Any, call: Call) -> Any:
    """The node of a cluster client (sync or asyncio) that serves ``call``
    per its slot map (``SlotNotCoveredError`` if none does)."""
    if call.route is None:
        return client.get_default_node()
    return client.nodes_manager.get_node_from_slot(_slot(call.route))


def known_node(client: Any, host: str, port: int) -> Any:
    """The node ``host:port`` in a cluster client's map (sync or asyncio)."""
    node = client.get_node(host=host, port=port)
    if node is None:
        raise rex.ClusterError(f"okome: redirected to unknown node {host}:{port}")
    return node


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
