#!/usr/bin/env python3
"""okome's benchmark: redis-benchmark against one release-build server,
okome commands side by side with the built-ins and the Lua scripts users
write today, interleaved over several rounds, medians reported as ratios.

Usage: bench/bench.py [--rounds N] [--requests N] [--out bench/RESULTS.md]
       bench/bench.py --only ledger [--rounds N] [--requests N]
$REDIS_SERVER selects the server binary (default: redis-server on the PATH),
as in the tests. `--only ledger` runs just the agent-ledger part (the cost of
recording on OKOME.PLAN.SET) and prints it, writing no file.
"""
import argparse, csv, hashlib, io, os, platform, random, socket, statistics, struct, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "target", "release", "libokome.so")
# The module API's own ceiling (bench/rmw): loaded next to okome, never shipped.
RMW = os.path.join(ROOT, "target", "release", "libokome_bench_rmw.so")
SERVER = os.environ.get("REDIS_SERVER", "redis-server")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def start_server(modules, extra=(), ready="PONG"):
    """A redis-server on a free loopback port with `modules` loaded, once it
    answers PING (or, for a replica, once its link is up)."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="okome-bench-")
    args = [SERVER, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", d, *extra]
    for m in modules:
        args += ["--loadmodule", m]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if ready == "PONG" and cli(port, "PING") == "PONG":
                break
            if ready == "link" and "master_link_status:up" in cli(port, "INFO", "replication"):
                break
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.05)
    return proc, port


def stop(proc):
    proc.terminate()
    proc.wait()


def bench(port, requests, pipeline, args):
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(requests),
         "-P", str(pipeline), "-r", "100000", "--csv", *args],
        check=True, capture_output=True, text=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[-1][1])


# A planner key per random number: the prompt hash is 52 fixed hex digits
# and the 12 digits redis-benchmark puts for __rand_int__.
BENCH_PLAN_KEY = "okome:planner:m:{" + "a" * 52 + "__rand_int__}:t:r"
BENCH_PLAN = '{"steps":["' + "x" * 480 + '"]}'


def ledger_cost(port, requests, rounds):
    """What recording in the agent ledger costs OKOME.PLAN.SET: the same
    write without AGENT, with AGENT over 100 000 agents (small ledgers),
    and with one agent whose ledger is full (okome.ledger-max-keys, 1000 by
    default), so that every write also drops the soonest-expiring entry.
    Interleaved rounds on one server, medians; returns the markdown lines."""
    cases = {
        "OKOME.PLAN.SET (no AGENT)": ["OKOME.PLAN.SET", BENCH_PLAN_KEY, BENCH_PLAN],
        "OKOME.PLAN.SET ... AGENT, 100 000 agents": [
            "OKOME.PLAN.SET", BENCH_PLAN_KEY, BENCH_PLAN, "AGENT", "agent-__rand_int__"],
        "OKOME.PLAN.SET ... AGENT, one agent, full ledger": [
            "OKOME.PLAN.SET", BENCH_PLAN_KEY, BENCH_PLAN, "AGENT", "hot-agent"],
    }
    # Fill the hot agent's ledger before measuring.
    fill = subprocess.run(["redis-cli", "-p", str(port)], check=True, capture_output=True,
                          text=True, input="".join(
                              f"OKOME.PLAN.SET okome:planner:m:{{{'b' * 52}{i:012d}}}:t:r {{}} AGENT hot-agent\n"
                              for i in range(1000)))
    assert "ERR" not in fill.stdout, fill.stdout[:500]
    full = int(cli(port, "ZCARD", "okome:budget:keys:{hot-agent}"))
    results = {}
    for pipeline in (1, 16):
        for r in range(rounds):
            for name, args in cases.items():
                results.setdefault((pipeline, name), []).append(
                    bench(port, requests, pipeline, args))
    med = {k: statistics.median(v) for k, v in results.items()}
    lines = ["", "Cost of recording in the agent ledger on OKOME.PLAN.SET (500-byte plan; "
             f"same server, {rounds} interleaved rounds, medians; the hot agent's ledger "
             f"held {full} entries):", "",
             "| command | -P | ops/s (median) | vs no AGENT |", "|---|---|---|---|"]
    for pipeline in (1, 16):
        base = med[(pipeline, "OKOME.PLAN.SET (no AGENT)")]
        for name in cases:
            v = med[(pipeline, name)]
            lines.append(f"| {name} | {pipeline} | {v:,.0f} | {v / base:.2f}x |")
    return lines


# ---------------------------------------------------------------- windows
# Issue 14: windows of any limit at constant cost. 100 agents whose
# `limit 100000` windows hold about 60 000 live entries (one per ms over the
# last minute), written directly in okome's stored form, then charged.

BIG_AGENTS = 100
BIG_SPAN_MS = 59_900


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def window_bytes(now, n, dead, version):
    """A window of `n` single-unit entries one ms apart ending at `now`:
    version 2 (with `dead` already-dropped entries before its head, as a
    window between two compactions holds), or version 1 (before issue 14)."""
    first = now - n + 1
    if version == 1:
        return bytes([1]) + first.to_bytes(8, "little", signed=True) + b"\x01" + b"\x01\x01" * (n - 1)
    # Dense entries take a byte: 0GGGGUUU (gap 0-15 ms, units UUU + 1).
    body = b"\x08" * dead
    head = 1 + len(body)
    entries = b"\x00" + b"\x08" * (n - 1)
    last = head + len(entries) - 1
    trailer = struct.pack("<IIqqQ", head, last, first, now, n)
    return bytes([2]) + body + entries + trailer


def live_entries(value, now, window_ms=60_000):
    """Live entries of a stored window (either version), by walking it."""
    def varints(b, i, k):
        vals = []
        for _ in range(k):
            v = shift = 0
            while True:
                c = b[i]
                i += 1
                v |= (c & 0x7F) << shift
                shift += 7
                if c < 0x80:
                    break
            vals.append(v)
        return vals, i

    def entries(b, i, end):
        """Version 1: LEB128 (gap, units) pairs."""
        while i < end:
            vals, i = varints(b, i, 2)
            yield vals

    def entries_v2(b, i, end):
        while i < end:
            h = b[i]
            i += 1
            if h < 0x80:
                yield h >> 3, (h & 7) + 1
            elif h & 0x40 == 0:
                (gap,), i = varints(b, i, 1)
                yield gap, (h & 0x3F) + 1
            else:
                (gap, units), i = varints(b, i, 2)
                yield gap, units
    if value[0] == 1:
        at = int.from_bytes(value[1:9], "little", signed=True)
        times, i = [at], 9
        # skip the first entry's units
        while value[i] >= 0x80:
            i += 1
        for gap, _ in entries(value, i + 1, len(value)):
            at += gap
            times.append(at)
    else:
        head, _last, base, _newest, _total = struct.unpack("<IIqqQ", value[-32:])
        times, at = [], base
        for gap, _ in entries_v2(value, head, len(value) - 32):
            at += gap
            times.append(at)
    horizon = max(now, times[-1]) - window_ms
    return sum(1 for t in times if t > horizon)


def send_all(port, commands):
    """Pipelines RESP commands (lists of bytes) over one connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    out = bytearray()
    for args in commands:
        out += b"*%d\r\n" % len(args)
        for a in args:
            out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    buf = b""
    while buf.count(b"\r\n") < len(commands):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    sock.close()
    assert b"-" not in buf[:1], buf[:200]


def big_key(i):
    return f"okome:budget:rate:{{big%3A{i:012d}}}"


def server_ms(port):
    s, us = cli(port, "TIME").split()
    return int(s) * 1000 + int(us) // 1000


def prefill(port, version, seed=14):
    """Writes the 100 large windows (a random dead prefix each, so that
    compactions fall due as in a steady state)."""
    rnd = random.Random(seed)
    now = server_ms(port)
    cmds = []
    for i in range(BIG_AGENTS):
        dead = rnd.randrange(BIG_SPAN_MS) if version == 2 else 0
        value = window_bytes(now, BIG_SPAN_MS, dead, version)
        cmds.append([b"SET", big_key(i).encode(), value, b"PXAT", b"%d" % (now + 60_000)])
    send_all(port, cmds)


def info_fields(port, section):
    return dict(l.split(":", 1) for l in cli(port, "INFO", section).splitlines() if ":" in l)


def slow_calls(port):
    """(count, slowest µs) of the okome (or RMW) calls the slow log kept
    (>= 100 µs)."""
    out = cli(port, "EVAL", "local r = {} for _, e in ipairs(redis.call('SLOWLOG','GET','100000')) do "
              "local c = string.lower(e[4][1]) if string.find(c, '^okome') or string.find(c, '^rmw') "
              "then r[#r+1] = e[3] end end return r", "0")
    durations = [int(x) for x in out.split()] if out else []
    return len(durations), max(durations, default=0)


def windows_phase(module, requests, rounds, version, replica=False):
    """limit 60 (100 000 random agents) and limit 100 000 (100 agents with
    ~60 000 live entries each), interleaved; ops/s, the server's own
    latency, and with a replica the replication bytes per admitted call."""
    srv, port = start_server([module, RMW], ["--repl-diskless-sync-delay", "0"])
    rep = None
    try:
        if replica:
            rep, _ = start_server([module, RMW], ["--replicaof", "127.0.0.1", str(port)],
                                  ready="link")
        prefill(port, version)
        cli(port, "CONFIG", "SET", "slowlog-log-slower-than", "100")
        cli(port, "CONFIG", "SET", "slowlog-max-len", "100000")
        cases = {
            "limit 60": ["OKOME.RATE", "agent:__rand_int__", "60", "60"],
            "limit 100000": ["OKOME.RATE", "big:__rand_int__", "100000", "60"],
            # The same 100 agents' worth of keys, windows empty at the start.
            "limit 100000, fresh": ["OKOME.RATE", "fresh:__rand_int__", "100000", "60"],
            # No okome code at all: this machine's own latency outliers.
            "control": ["RMW.INCREXD", "big:__rand_int__", "60000"],
        }
        res = {}
        for _ in range(rounds):
            for name, args in cases.items():
                cli(port, "CONFIG", "RESETSTAT")
                cli(port, "SLOWLOG", "RESET")
                off0 = int(info_fields(port, "replication")["master_repl_offset"])
                allowed0 = int(info_fields(port, "okome")["okome_rate_allowed"])
                rng = "100000" if name == "limit 60" else "100"
                out = subprocess.run(
                    ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(requests),
                     "-P", "16", "-r", rng, "--csv", *args],
                    check=True, capture_output=True, text=True).stdout
                ops = float(list(csv.reader(io.StringIO(out)))[-1][1])
                off1 = int(info_fields(port, "replication")["master_repl_offset"])
                allowed = int(info_fields(port, "okome")["okome_rate_allowed"]) - allowed0
                if name == "control":
                    allowed = requests
                cmd = args[0].lower()
                lat = info_fields(port, "latencystats").get(f"latency_percentiles_usec_{cmd}", "")
                pct = dict(kv.split("=") for kv in lat.split(",") if "=" in kv)
                n_slow, slowest = slow_calls(port)
                r = res.setdefault(name, {"ops": [], "bytes": [], "p99": [], "p999": [],
                                          "slow": 0, "slowest": 0, "allowed": 0, "calls": 0})
                r["ops"].append(ops)
                r["bytes"].append((off1 - off0) / max(allowed, 1))
                r["p99"].append(float(pct.get("p99", "nan")))
                r["p999"].append(float(pct.get("p99.9", "nan")))
                r["slow"] += n_slow
                r["slowest"] = max(r["slowest"], slowest)
                r["allowed"] += allowed
                r["calls"] += requests
        now = server_ms(port)
        live = []
        for i in range(BIG_AGENTS):
            live.append(live_entries(get_bytes(port, big_key(i)), now))
        for r in res.values():
            for k in ("ops", "bytes", "p99", "p999"):
                r[k] = statistics.median(r[k])
        res["live"] = (min(live), statistics.median(live))
        return res
    finally:
        if rep:
            stop(rep)
        stop(srv)


# ------------------------------------------------------- limits of any size
# Version 2: limits up to 10^15 at the cost of limit 60, and a window's
# memory bounded whatever its window (entries in buckets of
# ceil((window_ms - 1) / 65535) ms, so at most 65 536 of them).

def grain_ms(window_ms):
    return max(1, -(-(window_ms - 1) // 65535))


def entry(gap, units):
    """okome's version 2 entry (see core/src/limiter/window/v2.rs)."""
    if gap <= 15 and 1 <= units <= 8:
        return bytes([(gap << 3) | (units - 1)])
    if 1 <= units <= 64:
        return bytes([0x80 | (units - 1)]) + varint(gap)
    return b"\xc0" + varint(gap) + varint(units)


def busy_window(now, window_s, per_s=1000):
    """The stored form of a window charged `per_s` times a second (a unit a
    call) for the whole window until `now`: calls within one bucket merge
    into one entry at the latest one's time, so one entry per bucket, at
    its last millisecond, holding the bucket's units. (What the core test
    `memory_per_window_at_1000_calls_a_second` charges through the limiter.)"""
    window_ms = window_s * 1000
    g = grain_ms(window_ms)
    units = max(1, g * per_s // 1000)
    ends = [now - i * g for i in range((window_ms - 1) // g, -1, -1)]
    ends = [t for t in ends if t > now - window_ms]
    body = entry(0, units)
    last = 1
    for prev, t in zip(ends, ends[1:]):
        last = 1 + len(body)
        body += entry(t - prev, units)
    trailer = struct.pack("<IIqqQ", 1, last, ends[0], ends[-1], units * len(ends))
    return bytes([2]) + body + trailer, len(ends)


def rate_sizes(requests, rounds, module=None):
    """OKOME.RATE at limit 10^12 vs limit 60 (ops/s, interleaved), and
    MEMORY USAGE of a window of 1 s, 1 min, 1 h and 30 days at 1 000 calls
    a second; then that 1 h window after 2 s of calls on the server."""
    srv, port = start_server([module or MODULE])
    try:
        cases = {
            "limit 60": ["OKOME.RATE", "agent:__rand_int__", "60", "60"],
            "limit 10^12": ["OKOME.RATE", "tok:__rand_int__", "1000000000000", "60", "COST", "1000"],
            "limit 10^12, NAME": ["OKOME.RATE", "tok:__rand_int__", "1000000000000", "60",
                                  "COST", "1000", "NAME", "tpm"],
        }
        res = {}
        for pipeline in (1, 16):
            for _ in range(rounds):
                for name, args in cases.items():
                    res.setdefault((pipeline, name), []).append(bench(port, requests, pipeline, args))
        med = {k: statistics.median(v) for k, v in res.items()}
        lines = ["", "## Limits of any size", "",
                 f"`OKOME.RATE` at `limit 10^12` (`COST 1000`, a model's tokens) against `limit 60`, "
                 f"100 000 random subjects, {rounds} interleaved rounds of {requests:,} calls, medians:",
                 "", "| case | -P | ops/s (median) | vs limit 60 |", "|---|---|---|---|"]
        for pipeline in (1, 16):
            base = med[(pipeline, "limit 60")]
            for name in cases:
                v = med[(pipeline, name)]
                lines.append(f"| {name} | {pipeline} | {v:,.0f} | {v / base:.2f}x |")
        now = server_ms(port)
        lines += ["", "Memory per window at 1 000 calls a second (one unit a call), the window "
                  "full: its stored value (`STRLEN`), and `MEMORY USAGE` of the key as `SET` "
                  "writes it (a window rewritten whole) and after Redis grew it by appends "
                  "(`SETRANGE` doubles a string's room below 1 MB):", "",
                  "| window | bucket | entries | bytes | bytes per entry | MEMORY USAGE | grown by appends |",
                  "|---|---|---|---|---|---|---|"]
        for label, window_s in (("1 s", 1), ("1 min", 60), ("1 h", 3600), ("30 days", 30 * 86400)):
            value, n = busy_window(now, window_s)
            key = f"okome:budget:rate:{{mem-{window_s}}}"
            send_all(port, [[b"SET", key.encode(), value, b"PXAT", str(now + window_s * 1000).encode()]])
            mem = int(cli(port, "MEMORY", "USAGE", key))
            # A few admissions appended by the module (SETRANGE), as a live
            # window grows between compactions.
            for i in range(3):
                cli(port, "OKOME.RATE", f"mem-{window_s}", "1000000000000", str(window_s))
            grown = int(cli(port, "MEMORY", "USAGE", key))
            lines.append(f"| {label} | {grain_ms(window_s * 1000)} ms | {n:,} | {len(value):,} | "
                         f"{(len(value) - 33) / n:.2f} | {mem:,} | {grown:,} |")
        return lines
    finally:
        stop(srv)


def get_bytes(port, key):
    """GET over a raw socket (binary-safe)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key.encode()))
    buf = b""
    while b"\r\n" not in buf:
        buf += sock.recv(65536)
    head, rest = buf.split(b"\r\n", 1)
    n = int(head[1:])
    while len(rest) < n + 2:
        rest += sock.recv(1 << 20)
    sock.close()
    return rest[:n]


def timed_call(port, *args):
    """The server's own time for one command, µs (SLOWLOG at threshold 0)."""
    cli(port, "SLOWLOG", "RESET")
    cli(port, *args)
    out = cli(port, "EVAL", "local e = redis.call('SLOWLOG','GET','10') for _, x in ipairs(e) do "
              "if string.lower(x[4][1]) ~= 'slowlog' then return x[3] end end return -1", "0")
    return int(out)


def worst_calls(module, trials=30, version=2):
    """The most expensive okome calls on a large window, each timed alone on
    an idle server: what one call costs the main thread, without the
    machine's scheduling noise of a loaded run."""
    srv, port = start_server([module, RMW])
    try:
        cli(port, "CONFIG", "SET", "slowlog-log-slower-than", "0")
        results = {}
        for live in (60_000, 100_000):
            # (call, dropped entries before the head, limit, window s, cost,
            # a first tail before the timed call)
            kinds = [
                ("compaction", live + 5, 100_000, 200, 1, False),
                ("first tail after a rewrite", 0, 100_000, 200, 1, False),
                ("tail", live // 2, 100_000, 200, 1, True),
                ("refused, COST 1", live // 2, live, 200, 1, False),
                ("refused, COST = limit", live // 2, live, 200, live, False),
                ("after a pause: all but the last second's entries leave", 0, 100_000, 1, 1,
                 False),
            ]
            for kind, dead, limit, window_s, cost, warm in kinds:
                times = []
                for t in range(trials):
                    now = server_ms(port)
                    key = f"okome:budget:rate:{{w{t}}}"
                    value = window_bytes(now, live, dead if version == 2 else 0, version)
                    send_all(port, [[b"SET", key.encode(), value, b"PXAT", b"%d" % (now + 200_000)]])
                    if warm:
                        cli(port, "OKOME.RATE", f"w{t}", str(limit), str(window_s))
                    times.append(timed_call(port, "OKOME.RATE", f"w{t}", str(limit), str(window_s),
                                            "COST", str(cost)))
                    cli(port, "DEL", key)
                times.sort()
                results[(live, kind)] = (times[len(times) // 2], times[-1])
        control = sorted(timed_call(port, "RMW.INCREXD", f"c{t}", "60000") for t in range(trials))
        return results, (control[len(control) // 2], control[-1])
    finally:
        stop(srv)


def worst_lines(results, control, trials=30):
    lines = ["", "The most expensive calls on one large window (entries one ms apart, `limit "
             "100000`, or the live entries for the refusals; a 200 s window, 1 s after a pause), "
             f"each timed alone on an idle server (`SLOWLOG` at 0 µs), {trials} trials, µs "
             "(median / max):", "",
             "| call | 60 000 live entries | 100 000 live entries |", "|---|---|---|"]
    kinds = []
    for (_, kind) in results:
        if kind not in kinds:
            kinds.append(kind)
    for kind in kinds:
        row = " | ".join(f"{results[(live, kind)][0]} / {results[(live, kind)][1]}"
                         for live in (60_000, 100_000))
        lines.append(f"| {kind} | {row} |")
    lines.append(f"| control: `RMW.INCREXD` (8-byte value) | {control[0]} / {control[1]} | |")
    return lines


def big_windows(requests, rounds, module=None, version=2):
    """The windows section: markdown lines and the measures."""
    module = module or MODULE
    plain = windows_phase(module, requests, rounds, version)
    repl = windows_phase(module, requests, rounds, version, replica=True)
    l60 = plain["limit 60"]
    lines = ["", "Windows of any limit (`-P 16`, interleaved rounds, medians): `limit 60` over "
             "100 000 random agents, and `limit 100000` over 100 agents whose windows held "
             f"about 60 000 live entries each ({plain['live'][0]:,} at least, "
             f"{plain['live'][1]:,.0f} median, at the end of the runs; written in the stored "
             "form, with dropped entries before each head so that compactions fall due as in "
             "a steady state). Every call was admitted. Latency is the server's own "
             "(`INFO latencystats`, and every call of 100 µs or more in `SLOWLOG`); the "
             "control row, a module command with no okome code, shows what this machine "
             "adds by itself (a descheduled server thread counts as a slow call). "
             "Replication bytes: `master_repl_offset` growth per admitted call, with a "
             "replica attached.", "",
             "| windows | ops/s | vs limit 60 | p99 µs | p99.9 µs | calls ≥ 100 µs | slowest µs "
             "| replication bytes per call | with a replica, ops/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, label in (("limit 60", "`limit 60`, 100 000 agents"),
                        ("limit 100000", "`limit 100000`, 100 agents, ~60 000 live entries each"),
                        ("limit 100000, fresh", "`limit 100000`, 100 agents, empty at the start"),
                        ("control", "control: `RMW.INCREXD` (no okome code), 100 keys")):
        r, rr = plain[name], repl[name]
        lines.append(f"| {label} | {r['ops']:,.0f} | {r['ops'] / l60['ops']:.2f}x | {r['p99']:.1f} "
                     f"| {r['p999']:.1f} | {r['slow'] + rr['slow']} of {r['calls'] + rr['calls']:,} "
                     f"| {max(r['slowest'], rr['slowest'])} | {rr['bytes']:.0f} | {rr['ops']:,.0f} |")
    return lines, {"plain": plain, "repl": repl}


def targets(med, wins):
    """The targets (issues 14 and 21) against this run's measures."""
    rate = med[(16, "OKOME.RATE")]
    ceiling = med[(16, "Ceiling: RMW.INCREXD, that key derived from the id")]
    lua = med[(16, "Lua fixed window")]
    get = med[(16, "GET of a plan's key")]
    lease = med[(16, "OKOME.LEASE.ACQUIRE")]
    throttle = med[(16, "OKOME.THROTTLE")]
    take = med[(16, "OKOME.TAKE, three limits")]
    incr = med[(16, "INCR")]
    setnx = med[(16, "SET NX PX (a plain lock)")]
    plain, repl = wins["plain"], wins["repl"]
    l60, big = plain["limit 60"], plain["limit 100000"]
    rb60, rbig = repl["limit 60"]["bytes"], repl["limit 100000"]["bytes"]
    slowest = max(plain["limit 100000"]["slowest"], repl["limit 100000"]["slowest"])
    hashed = {n: med[(16, n)] / get for (p, n) in med
              if p == 16 and n.startswith("OKOME.PLAN.GET hit, HASHED")}
    plain_1k = med[(16, "OKOME.PLAN.GET hit, 1 KB prompt")] / get
    rows = [
        ("`OKOME.RATE` vs `RMW.INCREXD`, `-P 16`", ">= 0.9x", f"{rate / ceiling:.2f}x",
         rate / ceiling >= 0.9),
        ("`OKOME.RATE` vs the Lua fixed window, `-P 16`", ">= 1.0x", f"{rate / lua:.2f}x",
         rate / lua >= 1.0),
        ("`limit 100000` (~60 000 live entries) vs `limit 60`, ops/s", ">= 0.8x",
         f"{big['ops'] / l60['ops']:.2f}x", big["ops"] / l60["ops"] >= 0.8),
        ("replication bytes per admitted call, `limit 100000` vs `limit 60`", "<= 2x",
         f"{rbig:.0f} vs {rb60:.0f} bytes: {rbig / rb60:.2f}x", rbig / rb60 <= 2),
        ("`PLAN.GET ... HASHED` hit vs `GET` of the plan's key, `-P 16`, every prompt size",
         ">= 0.8x", ", ".join(f"{v:.2f}x" for v in hashed.values()),
         min(hashed.values()) >= 0.8),
        ("`OKOME.LEASE.ACQUIRE` vs `SET NX PX`, `-P 16`", ">= 0.4x",
         f"{lease / setnx:.2f}x", lease / setnx >= 0.4),
        ("`OKOME.THROTTLE` vs `INCR`, `-P 16`", ">= 0.45x", f"{throttle / incr:.2f}x",
         throttle / incr >= 0.45),
        ("`OKOME.THROTTLE` vs `RMW.INCREXD`, `-P 16`", ">= 0.9x",
         f"{throttle / ceiling:.2f}x", throttle / ceiling >= 0.9),
        ("`OKOME.TAKE` of three limits vs one `OKOME.RATE`, `-P 16`", ">= 0.5x",
         f"{take / rate:.2f}x", take / rate >= 0.5),
        ("`PLAN.GET` hit, plain form, 1 KB prompt vs `GET` of the plan's key", "report",
         f"{plain_1k:.2f}x", None),
        ("the most expensive `OKOME.RATE` on a large window, timed alone (server time)",
         "<= 100 µs", f"{wins['worst'][0]} µs median, {wins['worst'][1]} µs max (control "
         f"{wins['worst'][2][0]} / {wins['worst'][2][1]})", wins["worst"][0] <= 100),
        ("slowest `OKOME.RATE` at `limit 100000` under load (`SLOWLOG`; the control's "
         f"slowest: {max(plain['control']['slowest'], repl['control']['slowest'])} µs)",
         "<= 100 µs", f"{slowest} µs" if slowest else "none >= 100 µs", slowest < 100),
    ]
    lines = ["", "The targets, from this run:", "",
             "| target | wanted | measured | met |", "|---|---|---|---|"]
    for what, want, got, ok in rows:
        lines.append(f"| {what} | {want} | {got} | {'-' if ok is None else 'yes' if ok else 'no'} |")
    return lines


def reproduce(out):
    """The command that writes `out` again."""
    default = os.path.join(ROOT, "bench", "RESULTS.md")
    if SERVER == "redis-server" and os.path.abspath(out) == default:
        return "make bench"
    cmd = f"python3 bench/bench.py --out {os.path.relpath(out, ROOT)}"
    if SERVER != "redis-server":
        cmd = f"REDIS_SERVER=<path to {os.path.basename(SERVER)}> {cmd}"
    return cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--only", choices=["ledger", "windows", "rate-sizes"],
                    help="run one part only and print it")
    ap.add_argument("--module", help="with --only windows: another build of okome (a path)")
    ap.add_argument("--before-module", help="also run the windows section against an earlier "
                    "build (a path), writing version 1 windows (before issue 14), for comparison")
    ap.add_argument("--window-version", type=int, choices=[1, 2], default=2,
                    help="with --only windows: the stored form to prefill (1: before issue 14)")
    a = ap.parse_args()
    load_at_start = os.getloadavg()[0]

    if a.only == "windows":
        lines, _ = big_windows(a.requests, a.rounds, a.module, a.window_version)
        results, control = worst_calls(a.module or MODULE, version=a.window_version)
        print("\n".join(lines + worst_lines(results, control)))
        return 0

    if a.only == "rate-sizes":
        print("\n".join(rate_sizes(a.requests, a.rounds, a.module)))
        return 0

    if a.only == "ledger":
        srv, port = start_server([MODULE])
        try:
            print("\n".join(ledger_cost(port, a.requests, a.rounds)))
        finally:
            stop(srv)
        return 0

    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "okome-bench-rmw"],
                   cwd=ROOT, check=True)
    srv, port = start_server([MODULE, RMW])
    try:
        fixed = cli(port, "SCRIPT", "LOAD", open(os.path.join(ROOT, "bench", "lua_fixed_window.lua")).read())
        sliding = cli(port, "SCRIPT", "LOAD", open(os.path.join(ROOT, "bench", "lua_sliding_log.lua")).read())
        prompt_1k = "p" * 1024
        prompt_16k = "p" * 16384
        plan = '{"steps":["' + "x" * 480 + '"]}'
        for prompt in (prompt_1k, prompt_16k):
            key = cli(port, "OKOME.KEY", "planner", "llama3:8b", prompt, "v1", "repo")
            cli(port, "OKOME.PLAN.SET", key, plan, "TTL", "900")
        plan_key_1k = key = cli(port, "OKOME.KEY", "planner", "llama3:8b", prompt_1k, "v1", "repo")
        # Client-hashed prompts (HASHED): the hash travels, whatever the size.
        hashed = {}
        for size in (1024, 16384, 1 << 20):
            h = hashlib.sha256(b"q" * size).hexdigest()
            key = cli(port, "OKOME.KEY", "planner", "llama3:8b", h, "v1", "repo", "HASHED")
            cli(port, "OKOME.PLAN.SET", key, plan, "TTL", "900")
            hashed[size] = h
        cli(port, "SET", "plainplan", plan)
        # Rate windows: limit 60 per 60 s over 100 000 random agents, a few
        # calls per agent per round, so every call is admitted and writes
        # (the write path; a refused call writes nothing and is cheaper).
        cases = {
            "INCR": ["INCR", "ctr:__rand_int__"],
            "OKOME.RATE": ["OKOME.RATE", "agent:__rand_int__", "60", "60"],
            # GCRA, nginx's rate=20r/s burst=60: every call admitted and written.
            "OKOME.THROTTLE": ["OKOME.THROTTLE", "ip:__rand_int__", "20", "1", "60"],
            # Three limits at once (requests, tokens, dollars), all admitted.
            "OKOME.TAKE, three limits": [
                "OKOME.TAKE", "3",
                "tk:__rand_int__", "rpm", "1000000", "60", "1",
                "tk:__rand_int__", "tpm", "1000000000000", "60", "1000",
                "tk:__rand_int__", "usd", "1000000000", "86400", "5"],
            "Lua fixed window": ["EVALSHA", fixed, "1", "fw:__rand_int__", "60", "60000"],
            "Lua sliding log": ["EVALSHA", sliding, "1", "sl:__rand_int__", "60", "60000"],
            # The API's ceiling: a bare read-modify-write module command, then
            # the same with what an expiring, effect-replicated window must
            # add (absolute expiry + SET ... PXAT), then that on a key name
            # of the same shape as OKOME.RATE's window for agent:<n>
            # (okome:budget:rate:{agent%3A<n>}), then that key derived from
            # the id inside the command, as OKOME.RATE derives it (the
            # server sees no key argument; Valkey 8+ prefetches declared
            # keys of pipelined commands, never derived ones).
            "Ceiling: RMW.INCR (module read-modify-write)": ["RMW.INCR", "rmw:__rand_int__"],
            "Ceiling: RMW.INCREX (+ expiry + replication)": ["RMW.INCREX", "rmx:__rand_int__", "60000"],
            "Ceiling: RMW.INCREX on a window-shaped key": [
                "RMW.INCREX", "okome:budget:ceil:{agent%3A__rand_int__}", "60000"],
            "Ceiling: RMW.INCREXD, that key derived from the id": [
                "RMW.INCREXD", "agent:__rand_int__", "60000"],
            # A concurrency lease against the plain lock it replaces (SET NX
            # PX: one slot, no count, no renewal, no waiting).
            "SET NX PX (a plain lock)": ["SET", "lk:__rand_int__", "x", "NX", "PX", "60000"],
            "OKOME.LEASE.ACQUIRE": ["OKOME.LEASE.ACQUIRE", "subject:__rand_int__", "100", "60000"],
            "GET (plan-sized value)": ["GET", "plainplan"],
            "OKOME.PLAN.GET hit, 1 KB prompt": ["OKOME.PLAN.GET", "llama3:8b", prompt_1k, "v1", "repo"],
            "OKOME.PLAN.GET hit, 16 KB prompt": ["OKOME.PLAN.GET", "llama3:8b", prompt_16k, "v1", "repo"],
            "GET of a plan's key": ["GET", plan_key_1k],
            "OKOME.PLAN.GET hit, HASHED, 1 KB prompt": [
                "OKOME.PLAN.GET", "llama3:8b", hashed[1024], "v1", "repo", "HASHED"],
            "OKOME.PLAN.GET hit, HASHED, 16 KB prompt": [
                "OKOME.PLAN.GET", "llama3:8b", hashed[16384], "v1", "repo", "HASHED"],
            "OKOME.PLAN.GET hit, HASHED, 1 MB prompt": [
                "OKOME.PLAN.GET", "llama3:8b", hashed[1 << 20], "v1", "repo", "HASHED"],
        }
        results = {}
        for pipeline in (1, 16):
            for r in range(a.rounds):
                for name, args in cases.items():
                    results.setdefault((pipeline, name), []).append(
                        bench(port, a.requests, pipeline, args))
                # Keep memory flat between rounds.
                cli(port, "EVAL", "for _,k in ipairs(redis.call('KEYS','ctr:*')) do redis.call('DEL',k) end", "0")
        med = {k: statistics.median(v) for k, v in results.items()}
        # Counters on versus compiled out, interleaved on two fresh servers
        # (the first server's keyspace has grown by now: a fair pair starts
        # from the same state).
        subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "okome", "--features",
                        "no-stats", "--target-dir", os.path.join(ROOT, "target", "nostats")],
                       cwd=ROOT, check=True)
        withs, wport = start_server([MODULE])
        nos, nport = start_server([os.path.join(ROOT, "target", "nostats", "release", "libokome.so")])
        try:
            for p in (wport, nport):
                key = cli(p, "OKOME.KEY", "planner", "llama3:8b", prompt_1k, "v1", "repo")
                cli(p, "OKOME.PLAN.SET", key, plan, "TTL", "900")
            pairs = {}
            for r in range(a.rounds):
                for name in ("OKOME.RATE", "OKOME.PLAN.GET hit, 1 KB prompt"):
                    w = bench(wport, a.requests, 16, cases[name])
                    wo = bench(nport, a.requests, 16, cases[name])
                    pairs.setdefault(name, ([], []))
                    pairs[name][0].append(w)
                    pairs[name][1].append(wo)
            counters = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in pairs.items()}
        finally:
            stop(withs)
            stop(nos)
        info = dict(l.split(":", 1) for l in cli(port, "INFO", "server").splitlines() if ":" in l)
        version = (f"Valkey {info['valkey_version']}" if "valkey_version" in info
                   else f"Redis {info['redis_version']}")
        # The same with a replica attached: every write is also propagated.
        rep, _ = start_server([MODULE], ["--replicaof", "127.0.0.1", str(port)], ready="link")
        try:
            replicated = {}
            for r in range(a.rounds):
                for name in ("INCR", "OKOME.RATE", "Lua fixed window",
                             "Ceiling: RMW.INCREXD, that key derived from the id"):
                    replicated.setdefault(name, []).append(bench(port, a.requests, 16, cases[name]))
            rmed = {k: statistics.median(v) for k, v in replicated.items()}
        finally:
            stop(rep)
    finally:
        stop(srv)
    # The agent ledger on its own fresh server.
    lsrv, lport = start_server([MODULE])
    try:
        ledger_lines = ledger_cost(lport, a.requests, a.rounds)
    finally:
        stop(lsrv)
    # Windows of any limit, on fresh servers.
    window_lines, wins = big_windows(a.requests, a.rounds)
    if a.before_module:
        # An O(live entries) build takes milliseconds a call: fewer calls.
        before, _ = big_windows(max(a.requests // 10, 1000), 1, a.before_module, version=1)
        window_lines += ["", f"The same with an earlier build (`{os.path.basename(a.before_module)}`, "
                         "windows in the version 1 form, rewritten and replicated whole at each "
                         f"admission; one round of {max(a.requests // 10, 1000):,} calls per row):",
                         ""]
        window_lines += [l for l in before if l.startswith("|")]
    results, control = worst_calls(MODULE)
    window_lines += worst_lines(results, control)
    wins["worst"] = (max(v[0] for v in results.values()), max(v[1] for v in results.values()),
                     control)
    if a.before_module:
        before_calls, before_control = worst_calls(a.before_module, trials=10, version=1)
        window_lines += ["", "The same calls with the earlier build (version 1 windows; 10 trials):",
                         ""]
        window_lines += [l for l in worst_lines(before_calls, before_control, 10)
                         if l.startswith("|")]

    lines = ["# okome benchmark results", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
             f"{version}; redis-benchmark -c 50 -n {a.requests} -r 100000; "
             f"{a.rounds} interleaved rounds, medians. The machine is shared: load average "
             f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.", "",
             f"Reproduce: `{reproduce(a.out)}`"
             + (" (the earlier build's rows: add `--before-module <its libokome.so>`, run "
                "with `python3 bench/bench.py`)" if a.before_module else "") + ".", "",
             "| command | -P | ops/s (median) | vs INCR | vs GET |",
             "|---|---|---|---|---|"]
    for pipeline in (1, 16):
        incr = med[(pipeline, "INCR")]
        get = med[(pipeline, "GET (plan-sized value)")]
        for name in cases:
            v = med[(pipeline, name)]
            lines.append(f"| {name} | {pipeline} | {v:,.0f} | {v / incr:.2f}x | {v / get:.2f}x |")
    rate16 = med[(16, "OKOME.RATE")]
    incr16 = med[(16, "INCR")]
    derived16 = med[(16, "Ceiling: RMW.INCREXD, that key derived from the id")]
    declared16 = med[(16, "Ceiling: RMW.INCREX on a window-shaped key")]
    bare16 = med[(16, "Ceiling: RMW.INCR (module read-modify-write)")]
    lines += ["", f"At -P 16, OKOME.RATE runs at {rate16 / incr16:.2f}x INCR. The smallest module "
              "command that does what OKOME.RATE must do for an exact, expiring, "
              "effect-replicated window (derive the key from the id, read-modify-write it, set "
              "an absolute expiry, replicate `SET ... PXAT`), with no parsing, decoding, ACL "
              f"check or limiter, runs at {derived16 / incr16:.2f}x INCR (RMW.INCREXD): "
              f"OKOME.RATE reaches {rate16 / derived16:.0%} of that ceiling. With the key "
              f"passed as an argument instead it runs at {declared16 / incr16:.2f}x; the bare "
              f"read-modify-write without expiry or replication at {bare16 / incr16:.2f}x.",
              "", f"OKOME.THROTTLE (GCRA, one 25-byte state written whole as `SET ... PXAT`) "
              f"runs at {med[(16, 'OKOME.THROTTLE')] / incr16:.2f}x INCR at -P 16."]
    lines += ["", "With a replica attached (-P 16, same rounds):", "",
              "| command | ops/s (median) | vs INCR |", "|---|---|---|"]
    for name, v in rmed.items():
        lines.append(f"| {name} | {v:,.0f} | {v / rmed['INCR']:.2f}x |")
    lines += ["", "Cost of the INFO counters: the same release build with the counters compiled",
              "out (`--features no-stats`), on a second server, interleaved (-P 16):", "",
              "| command | with counters | without | ratio |", "|---|---|---|---|"]
    for name, (w, wo) in counters.items():
        lines.append(f"| {name} | {w:,.0f} | {wo:,.0f} | {w / wo:.2f} |")
    lines += window_lines
    lines += targets(med, wins)
    lines += ledger_lines
    lines += rate_sizes(a.requests, a.rounds)
    flow = subprocess.run(["cargo", "bench", "--quiet", "--bench", "flow"], cwd=ROOT,
                          env={**os.environ, "OKOME_MODULE": MODULE},
                          check=True, capture_output=True, text=True).stdout
    lines += ["", flow.strip()]
    text = "\n".join(lines) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
