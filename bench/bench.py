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
import argparse, csv, io, os, platform, socket, statistics, subprocess, sys, tempfile, time

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
    ap.add_argument("--only", choices=["ledger"], help="run one part only and print it")
    a = ap.parse_args()

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
        cli(port, "SET", "plainplan", plan)
        # Rate windows: limit 60 per 60 s over 100 000 random agents, a few
        # calls per agent per round, so every call is admitted and writes
        # (the write path; a refused call writes nothing and is cheaper).
        cases = {
            "INCR": ["INCR", "ctr:__rand_int__"],
            "OKOME.RATE": ["OKOME.RATE", "agent:__rand_int__", "60", "60"],
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
            "GET (plan-sized value)": ["GET", "plainplan"],
            "OKOME.PLAN.GET hit, 1 KB prompt": ["OKOME.PLAN.GET", "llama3:8b", prompt_1k, "v1", "repo"],
            "OKOME.PLAN.GET hit, 16 KB prompt": ["OKOME.PLAN.GET", "llama3:8b", prompt_16k, "v1", "repo"],
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

    lines = ["# okome benchmark results", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
             f"{version}; redis-benchmark -c 50 -n {a.requests} -r 100000; "
             f"{a.rounds} interleaved rounds, medians.", "",
             f"Reproduce: `{reproduce(a.out)}`.", "",
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
              f"read-modify-write without expiry or replication at {bare16 / incr16:.2f}x."]
    lines += ["", "With a replica attached (-P 16, same rounds):", "",
              "| command | ops/s (median) | vs INCR |", "|---|---|---|"]
    for name, v in rmed.items():
        lines.append(f"| {name} | {v:,.0f} | {v / rmed['INCR']:.2f}x |")
    lines += ["", "Cost of the INFO counters: the same release build with the counters compiled",
              "out (`--features no-stats`), on a second server, interleaved (-P 16):", "",
              "| command | with counters | without | ratio |", "|---|---|---|---|"]
    for name, (w, wo) in counters.items():
        lines.append(f"| {name} | {w:,.0f} | {wo:,.0f} | {w / wo:.2f} |")
    lines += ledger_lines
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
