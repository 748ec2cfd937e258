//! The whole planner request, end to end from a client: okome's round trips
//! (hit: one PLAN.GET; miss: PLAN.GET + PLAN.SET) against the seed's
//! client-side sequence (rate INCR/EXPIRE, GET, SET NX PX lock, budget
//! INCR/EXPIRE, SET EX, DEL lock), over loopback and through a proxy that
//! adds 0.5 ms each way (1 ms per round trip), as a network would.
//! Also: memory per rate window and plan, server memory for 100 000 agents,
//! and a load run of 200 clients over 10 000 agents.
//!
//! Run with `make bench` (which builds the release module first and puts
//! this output at the end of bench/RESULTS.md), or alone with
//! `OKOME_MODULE=target/release/libokome.so cargo bench --bench flow`.
//! Prints a Markdown section on stdout.

// The integration tests' helpers; the benchmark uses a few of them.
#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const PLAN: &str = r#"{"steps":["read the ticket","open login.tsx","add the form","write tests"],"pad":"................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................"}"#;

/// A TCP proxy that delays every chunk by `delay` in each direction.
fn delay_proxy(target: u16, delay: Duration, stop: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in l.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            client.set_nodelay(true).ok();
            server.set_nodelay(true).ok();
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                            Ok(n) => {
                                std::thread::sleep(delay);
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    port
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Flow {
    hit_us: Vec<f64>,
    miss_us: Vec<f64>,
}

/// `[status, key, value, ms, token, rate_remaining]` of `OKOME.PLAN.GET`.
type PlanReply = (
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// The flow's lookup: `OKOME.PLAN.GET` for `prompt`, charging agent-1.
fn plan_get(c: &mut redis::Connection, prompt: &str) -> PlanReply {
    redis::cmd("OKOME.PLAN.GET")
        .arg(&[
            "gpt-4", prompt, "v1.2.3", "abc123", "AGENT", "agent-1", "LIMIT", "100000", "WINDOW",
            "60",
        ])
        .query(c)
        .unwrap()
}

fn okome_flow(c: &mut redis::Connection, n: usize, tag: &str) -> Flow {
    let mut f = Flow {
        hit_us: vec![],
        miss_us: vec![],
    };
    for i in 0..n {
        let prompt = format!("{tag} prompt {i}");
        let t = Instant::now();
        let (status, key, _v, _ms, token, _r) = plan_get(c, &prompt);
        assert_eq!(status, "MISS");
        let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
            .arg(&[
                &key,
                PLAN,
                "TTL",
                "600",
                "TOKEN",
                &token.unwrap(),
                "AGENT",
                "agent-1",
                "WLIMIT",
                "100000",
            ])
            .query(c)
            .unwrap();
        f.miss_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let (status, ..) = plan_get(c, &prompt);
        assert_eq!(status, "HIT");
        f.hit_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    f
}

/// The seed's cache.py + budget.py sequence, one command per round trip.
fn seed_flow(c: &mut redis::Connection, n: usize, tag: &str) -> Flow {
    use sha2::Digest;
    let mut f = Flow {
        hit_us: vec![],
        miss_us: vec![],
    };
    let allow = |c: &mut redis::Connection, key: &str, limit: i64, window: i64| -> bool {
        let n: i64 = redis::cmd("INCR").arg(key).query(c).unwrap();
        if n == 1 {
            let _: i64 = redis::cmd("EXPIRE")
                .arg(&[key, &window.to_string()])
                .query(c)
                .unwrap();
        }
        n <= limit
    };
    for i in 0..n {
        let prompt = format!("{tag} prompt {i}");
        let t = Instant::now();
        let hash = hex::encode(sha2::Sha256::digest(prompt.as_bytes()));
        let key = format!("seed:planner:gpt-4:{hash}:v1.2.3:abc123");
        assert!(allow(c, "seed:budget:rate:agent-1", 100_000, 60));
        let v: Option<String> = redis::cmd("GET").arg(&key).query(c).unwrap();
        assert!(v.is_none());
        let locked: Option<String> = redis::cmd("SET")
            .arg(&[&format!("{key}:lock"), "1", "NX", "PX", "9000"])
            .query(c)
            .unwrap();
        assert!(locked.is_some());
        assert!(allow(c, "seed:budget:write:agent-1", 100_000, 60));
        let _: () = redis::cmd("SET")
            .arg(&[&key, PLAN, "EX", "600"])
            .query(c)
            .unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{key}:lock"))
            .query(c)
            .unwrap();
        f.miss_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let hash = hex::encode(sha2::Sha256::digest(prompt.as_bytes()));
        let key = format!("seed:planner:gpt-4:{hash}:v1.2.3:abc123");
        assert!(allow(c, "seed:budget:rate:agent-1", 100_000, 60));
        let v: Option<String> = redis::cmd("GET").arg(&key).query(c).unwrap();
        assert!(v.is_some());
        f.hit_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    f
}

fn memory_usage(c: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("MEMORY").arg(&["USAGE", key]).query(c).unwrap()
}

fn used_memory(c: &mut redis::Connection) -> i64 {
    common::info_i64(c, "memory", "used_memory")
}

/// `OKOME.LEASE.ACQUIRE ... WAIT` hand-over on an idle server: a caller
/// waits (blocked, seen in `waiting_clients`) on a pool of one; the holder
/// releases; the time from sending `RELEASE` until the waiter has read its
/// lease. The two swap roles each round. Microseconds, sorted.
fn lease_handover(port: u16, rounds: usize) -> Vec<f64> {
    use common::RawConn;
    let t = Duration::from_secs(10);
    let acquire = [
        "OKOME.LEASE.ACQUIRE",
        "handover",
        "1",
        "60000",
        "WAIT",
        "10000",
    ];
    let mut conns = [RawConn::connect(port), RawConn::connect(port)];
    let mut look = RawConn::connect(port);
    let lease_of = |r: &common::Resp| match r {
        common::Resp::Array(Some(v)) => v[0].text().expect("a lease"),
        other => panic!("ACQUIRE: {other:?}"),
    };
    let mut lease = lease_of(&conns[0].call(&acquire, t));
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let (h, w) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        conns[w].send(&acquire);
        let info = |c: &mut RawConn| c.call(&["INFO", "okome"], t).text().unwrap_or_default();
        while !info(&mut look).contains("waiting_clients:1") {
            std::thread::sleep(Duration::from_micros(200));
        }
        let t0 = Instant::now();
        conns[h].send(&["OKOME.LEASE.RELEASE", lease.as_str()]);
        let got = conns[w].read(t).expect("the waiter's lease");
        out.push(t0.elapsed().as_secs_f64() * 1e6);
        assert_eq!(conns[h].read(t).expect("RELEASE").int(), Some(1));
        lease = lease_of(&got);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

fn main() {
    let s = Server::start();
    let mut c = s.conn();
    let n = 2000;
    println!("## The whole planner request, end to end\n");
    println!("One client, sequential requests, {n} misses then {n} hits per flow (okome: miss = PLAN.GET + PLAN.SET, hit = PLAN.GET; seed: miss = 7 round trips, hit = 2).\n");
    println!("| path | flow | miss p50 µs | miss p99 µs | hit p50 µs | hit p99 µs |");
    println!("|---|---|---|---|---|---|");
    let stop = Arc::new(AtomicBool::new(false));
    let proxied = delay_proxy(s.port, Duration::from_micros(500), stop.clone());
    for (path, port) in [
        ("loopback", s.port),
        ("+1 ms per round trip (proxy)", proxied),
    ] {
        let mut pc = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        let runs = if port == s.port { n } else { n / 10 };
        for (name, mut f) in [
            ("okome", okome_flow(&mut pc, runs, &format!("{path} okome"))),
            (
                "seed (client-side)",
                seed_flow(&mut pc, runs, &format!("{path} seed")),
            ),
        ] {
            println!(
                "| {path} | {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
                percentile(&mut f.miss_us, 0.5),
                percentile(&mut f.miss_us, 0.99),
                percentile(&mut f.hit_us, 0.5),
                percentile(&mut f.hit_us, 0.99)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);

    println!("\n## Memory\n");
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    for _ in 0..60 {
        let _: redis::Value = redis::cmd("OKOME.RATE")
            .arg(&["agent-123", "60", "60"])
            .query(&mut c)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let rate = memory_usage(&mut c, "okome:budget:rate:{agent-123}");
    let strlen: i64 = redis::cmd("STRLEN")
        .arg("okome:budget:rate:{agent-123}")
        .query(&mut c)
        .unwrap();
    let (_, key, ..): (
        String,
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    ) = redis::cmd("OKOME.PLAN.GET")
        .arg(&["gpt-4", "p", "v1", "abc123"])
        .query(&mut c)
        .unwrap();
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&[&key, PLAN])
        .query(&mut c)
        .unwrap();
    let plan = memory_usage(&mut c, &key);
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let before = used_memory(&mut c);
    let mut pipe = redis::pipe();
    for i in 0..100_000 {
        pipe.cmd("OKOME.RATE")
            .arg(&[&format!("agent-{i}"), "60", "60"])
            .ignore();
        if i % 5000 == 4999 {
            pipe.query::<()>(&mut c).unwrap();
            pipe = redis::pipe();
        }
    }
    let after = used_memory(&mut c);
    println!("| what | bytes |\n|---|---|");
    println!("| `MEMORY USAGE` of a full `limit 60` rate window (60 admissions ~2 ms apart; value {strlen} bytes) | {rate} |");
    println!(
        "| `MEMORY USAGE` of a plan key ({} bytes of JSON) | {plan} |",
        PLAN.len()
    );
    println!("| server `used_memory` growth for 100 000 agents with one admission each | {} ({:.0} per agent) |", after - before, (after - before) as f64 / 100_000.0);
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();

    println!("\n## Lease hand-over\n");
    let mut h = lease_handover(s.port, 1000);
    println!("`OKOME.LEASE.ACQUIRE ... WAIT` on a pool of one, idle server, loopback: from sending the holder's `RELEASE` to the blocked waiter having read its lease, 1 000 hand-overs (target: p99 under 1 ms).\n");
    println!("| p50 µs | p99 µs | max µs |\n|---|---|---|");
    println!(
        "| {:.0} | {:.0} | {:.0} |",
        percentile(&mut h, 0.5),
        percentile(&mut h, 0.99),
        percentile(&mut h, 1.0)
    );
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();

    println!("\n## Load: 200 clients across 10 000 agents\n");
    let clients = 200;
    let per_client = 500;
    let barrier = Arc::new(Barrier::new(clients));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let mut cc = s.conn();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let mut out = Vec::with_capacity(per_client);
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1);
                for _ in 0..per_client {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let agent = (x % 10_000) as usize;
                    let t0 = Instant::now();
                    let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
                        .arg(&[&format!("agent-{agent}"), "5", "60"])
                        .query(&mut cc)
                        .expect("no errors");
                    out.push((agent, r.0, t0.elapsed().as_secs_f64() * 1e6));
                }
                out
            })
        })
        .collect();
    let results: Vec<(usize, i64, f64)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    let mut calls = vec![0i64; 10_000];
    let mut admitted = vec![0i64; 10_000];
    for (a, ok, _) in &results {
        calls[*a] += 1;
        admitted[*a] += ok;
    }
    // Exactness: within one window each agent admits exactly min(5, calls).
    let wrong = (0..10_000)
        .filter(|&a| admitted[a] != calls[a].min(5))
        .count();
    assert_eq!(
        wrong, 0,
        "agents whose admissions differ from min(5, calls)"
    );
    let mut lat: Vec<f64> = results.iter().map(|r| r.2).collect();
    let total = results.len();
    let adm: i64 = admitted.iter().sum();
    println!(
        "{total} OKOME.RATE calls (limit 5 per agent per 60 s) in {secs:.2} s = {:.0} calls/s; errors 0; admitted {adm}; every agent admitted exactly min(5, its calls); latency p50 {:.0} µs, p99 {:.0} µs.",
        total as f64 / secs,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );
}
