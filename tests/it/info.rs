//! The `INFO okome` counters under a known workload, exactly, and under
//! concurrency (shared helpers in `tests/it/support/ops.rs`).

use crate::support::ops::*;
use crate::support::*;

use redis::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Every counter of src/stats.rs, in its order.
const COUNTERS: [&str; 44] = [
    "planner_hits",
    "planner_misses",
    "planner_refreshes",
    "planner_locked",
    "planner_limited",
    "planner_failed",
    "lock_acquired",
    "lock_contended",
    "lock_extended",
    "lock_released",
    "wait_blocked",
    "wait_woken",
    "wait_woken_hit",
    "wait_woken_leader",
    "wait_woken_other",
    "wait_timed_out",
    "wait_disconnected",
    "wait_unblocked",
    "wait_deadline_early",
    "locks_healed",
    "windows_evicted",
    "rate_allowed",
    "rate_limited",
    "wbudget_allowed",
    "wbudget_refused",
    "throttle_allowed",
    "throttle_limited",
    "plans_stored",
    "plans_skipped",
    "plans_failed",
    "plans_fenced",
    "plans_shared",
    "cache_hits",
    "cache_misses",
    "cache_stored",
    "ledger_records",
    "ledger_dropped",
    "ledger_purged",
    "lease_acquired",
    "lease_refused",
    "lease_renewed",
    "lease_released",
    "errors",
    "callback_panics",
];

/// The counters of `INFO okome` as numbers (every one must be present).
fn counters(c: &mut Connection) -> BTreeMap<&'static str, u64> {
    let m = info(c);
    COUNTERS
        .iter()
        .map(|&name| {
            let v = m
                .get(name)
                .unwrap_or_else(|| panic!("INFO okome lacks okome_{name}: {m:?}"));
            (
                name,
                v.parse()
                    .unwrap_or_else(|_| panic!("okome_{name}:{v} is not a count")),
            )
        })
        .collect()
}

fn waiting_clients(c: &mut Connection) -> u64 {
    info(c)["waiting_clients"].parse().expect("a count")
}

/// Polls `INFO okome` until `okome_waiting_clients` is `n` (5 s at most).
fn wait_for_waiting(c: &mut Connection, n: u64) {
    poll(Duration::from_secs(5), Duration::from_millis(5), || {
        let w = waiting_clients(c);
        if w == n {
            Ok(())
        } else {
            Err(format!("okome_waiting_clients stayed {w}, expected {n}"))
        }
    })
}

/// Adds `n` to each named counter of `exp`, then asserts that `INFO okome`
/// shows exactly `exp`.
fn step(
    c: &mut Connection,
    exp: &mut BTreeMap<&'static str, u64>,
    what: &str,
    add: &[(&str, u64)],
) {
    for (name, n) in add {
        *exp.get_mut(*name)
            .unwrap_or_else(|| panic!("no counter {name}")) += n;
    }
    assert_eq!(&counters(c), exp, "after {what}");
}

#[test]
fn info_okome_counts_a_known_workload_exactly() {
    let s = Server::start();
    let mut c = s.conn();
    let mut b = s.conn();

    let fields = info(&mut c);
    let mut names: BTreeSet<String> = COUNTERS.iter().map(|s| s.to_string()).collect();
    names.insert("planner_hit_ratio".into());
    names.insert("waiting_clients".into());
    assert_eq!(
        fields.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "INFO okome: {fields:?}"
    );
    let mut exp: BTreeMap<&'static str, u64> = COUNTERS.iter().map(|&n| (n, 0)).collect();
    assert_eq!(counters(&mut c), exp);
    assert_eq!(fields["planner_hit_ratio"].parse::<f64>().unwrap(), 0.0);
    assert_eq!(fields["waiting_clients"], "0");

    // The server rejects a wrong arity before the handler runs: no error
    // is counted.
    let e = err(&mut c, &[b"OKOME.UNLOCK", b"k"]);
    assert!(e.contains("wrong number of arguments"), "{e}");
    step(&mut c, &mut exp, "an arity error", &[]);

    let p = |n: &str| ["m".to_string(), n.to_string(), "t".into(), "r".into()];
    let get = |c: &mut Connection, prompt: &str, opts: &[&str]| {
        let mut a: Vec<String> = p(prompt).to_vec();
        a.extend(opts.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        plan_get(c, &refs)
    };

    // 3 misses, each taking the lock.
    let m1 = get(&mut c, "p1", &[]);
    let m2 = get(&mut c, "p2", &[]);
    let m3 = get(&mut c, "p3", &[]);
    for m in [&m1, &m2, &m3] {
        assert_eq!(m.status, "MISS");
    }
    step(
        &mut c,
        &mut exp,
        "3 misses",
        &[("planner_misses", 3), ("lock_acquired", 3)],
    );

    // 2 LOCKED.
    for _ in 0..2 {
        assert_eq!(get(&mut c, "p1", &[]).status, "LOCKED");
    }
    step(
        &mut c,
        &mut exp,
        "2 LOCKED",
        &[("planner_locked", 2), ("lock_contended", 2)],
    );

    // Store p1 with its token, then 4 hits.
    let t1 = m1.token.clone().unwrap();
    assert_eq!(
        plan_set(&mut c, &[&m1.key, "{}", "TOKEN", &t1]),
        ("STORED".into(), Some(600_000), None, 1)
    );
    step(
        &mut c,
        &mut exp,
        "PLAN.SET with the token",
        &[("plans_stored", 1), ("lock_released", 1)],
    );
    for _ in 0..4 {
        assert_eq!(get(&mut c, "p1", &[]).status, "HIT");
    }
    step(&mut c, &mut exp, "4 hits", &[("planner_hits", 4)]);

    // 1 REFRESH (and a HIT for the next reader in the zone).
    let t2 = m2.token.clone().unwrap();
    assert_eq!(
        plan_set(&mut c, &[&m2.key, "{}", "TTL", "300", "TOKEN", &t2]).3,
        1
    );
    assert_eq!(
        get(&mut c, "p2", &["REFRESHAHEAD", "900000"]).status,
        "REFRESH"
    );
    assert_eq!(get(&mut c, "p2", &["REFRESHAHEAD", "900000"]).status, "HIT");
    step(
        &mut c,
        &mut exp,
        "REFRESH then HIT",
        &[
            ("plans_stored", 1),
            ("lock_released", 1),
            ("lock_acquired", 1),
            ("planner_refreshes", 1),
            ("planner_hits", 1),
        ],
    );

    // PLAN.GET with AGENT: allowed (a hit), then LIMITED.
    let opts = ["AGENT", "ag", "LIMIT", "1", "WINDOW", "60"];
    assert_eq!(get(&mut c, "p1", &opts).status, "HIT");
    assert_eq!(get(&mut c, "p1", &opts).status, "LIMITED");
    step(
        &mut c,
        &mut exp,
        "PLAN.GET AGENT allowed, limited",
        &[
            ("planner_hits", 1),
            ("rate_allowed", 1),
            ("rate_limited", 1),
            ("planner_limited", 1),
        ],
    );

    // OKOME.RATE: 2 allowed, 1 limited.
    for want in [1, 1, 0] {
        let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
            .arg(&["r", "2", "60"])
            .query(&mut c)
            .unwrap();
        assert_eq!(r.0, want);
    }
    step(
        &mut c,
        &mut exp,
        "OKOME.RATE",
        &[("rate_allowed", 2), ("rate_limited", 1)],
    );

    // OKOME.WBUDGET: 1 allowed, 1 refused.
    for want in [1, 0] {
        let r: (i64, i64, i64, i64) = redis::cmd("OKOME.WBUDGET")
            .arg(&["w", "1"])
            .query(&mut c)
            .unwrap();
        assert_eq!(r.0, want);
    }
    step(
        &mut c,
        &mut exp,
        "OKOME.WBUDGET",
        &[("wbudget_allowed", 1), ("wbudget_refused", 1)],
    );

    // OKOME.THROTTLE: burst 1, so 2 allowed at once, then 1 limited.
    for want in [1, 1, 0] {
        let r: (i64, i64, i64, i64) = redis::cmd("OKOME.THROTTLE")
            .arg(&["t", "1", "60", "1"])
            .query(&mut c)
            .unwrap();
        assert_eq!(r.0, want);
    }
    step(
        &mut c,
        &mut exp,
        "OKOME.THROTTLE",
        &[("throttle_allowed", 2), ("throttle_limited", 1)],
    );

    // PLAN.SET with a write budget: stored, then skipped.
    let k5 = okome_key(&mut c, "planner", &["m", "p5", "t", "r"]);
    assert_eq!(
        plan_set(&mut c, &[&k5, "{}", "AGENT", "pw", "WLIMIT", "1"]),
        ("STORED".into(), Some(600_000), Some(0), 0)
    );
    assert_eq!(
        plan_set(&mut c, &[&k5, "{}", "AGENT", "pw", "WLIMIT", "1"]),
        ("SKIPPED".into(), None, Some(0), 0)
    );
    step(
        &mut c,
        &mut exp,
        "PLAN.SET stored, skipped",
        &[
            ("plans_stored", 1),
            ("wbudget_allowed", 1),
            ("ledger_records", 1),
            ("plans_skipped", 1),
            ("wbudget_refused", 1),
        ],
    );

    // p6's leader fails: FAILED for the next lookup; a store fenced out
    // (p6's token no longer holds its lock).
    let k6 = okome_key(&mut c, "planner", &["m", "p6", "t", "r"]);
    let t6: String = redis::cmd("OKOME.LOCK").arg(&k6).query(&mut c).unwrap();
    let failed: i64 = redis::cmd("OKOME.UNLOCK")
        .arg(&[k6.as_str(), &t6, "FAILED", "60000", "boom"])
        .query(&mut c)
        .unwrap();
    assert_eq!(failed, 1);
    assert_eq!(get(&mut c, "p6", &[]).status, "FAILED");
    assert_eq!(
        plan_set(&mut c, &[&k6, "{}", "TOKEN", &t6, "FENCED"]),
        ("FENCED".into(), None, None, 0)
    );
    step(
        &mut c,
        &mut exp,
        "LOCK, UNLOCK FAILED, a FAILED lookup, a FENCED store",
        &[
            ("lock_acquired", 1),
            ("lock_released", 1),
            ("plans_failed", 1),
            ("planner_failed", 1),
            ("plans_fenced", 1),
        ],
    );

    // OKOME.LOCK / UNLOCK.
    let tok: String = redis::cmd("OKOME.LOCK")
        .arg("okome:tools:{v1}")
        .query(&mut c)
        .unwrap();
    let none: Option<String> = redis::cmd("OKOME.LOCK")
        .arg("okome:tools:{v1}")
        .query(&mut c)
        .unwrap();
    assert_eq!(none, None);
    let ext: i64 = redis::cmd("OKOME.LOCK")
        .arg(&["okome:tools:{v1}", "TTL", "10000", "TOKEN", &tok])
        .query(&mut c)
        .unwrap();
    assert_eq!(ext, 1);
    let stale: i64 = redis::cmd("OKOME.LOCK")
        .arg(&["okome:tools:{v1}", "TTL", "10000", "TOKEN", "other"])
        .query(&mut c)
        .unwrap();
    assert_eq!(stale, 0);
    let wrong = unlock(&mut c, "okome:tools:{v1}", "other");
    assert_eq!(wrong, 0);
    let released = unlock(&mut c, "okome:tools:{v1}", &tok);
    assert_eq!(released, 1);
    step(
        &mut c,
        &mut exp,
        "LOCK acquire, contended, extend; UNLOCK",
        &[
            ("lock_acquired", 1),
            ("lock_contended", 1),
            ("lock_extended", 1),
            ("lock_released", 1),
        ],
    );

    // CACHE.GET miss, CACHE.SET, CACHE.GET hit.
    let miss: Option<(String, i64)> = redis::cmd("OKOME.CACHE.GET")
        .arg(&["tools", "v1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(miss, None);
    let ttl = cache_set(&mut c, &["tools", "v1", "{}"]);
    assert_eq!(ttl, 600_000);
    let hit: Option<(String, i64)> = redis::cmd("OKOME.CACHE.GET")
        .arg(&["tools", "v1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(hit.map(|h| h.0), Some("{}".to_string()));
    step(
        &mut c,
        &mut exp,
        "CACHE miss, set, hit",
        &[("cache_misses", 1), ("cache_stored", 1), ("cache_hits", 1)],
    );

    // The agent ledger: three CACHE.SET ... AGENT into a ledger of at most
    // two (one dropped), an AGENT.RECORD of a recorded key, a PURGE.
    config_set(&mut c, &["okome.ledger-max-keys", "2"]).unwrap();
    for v in ["l1", "l2", "l3"] {
        let ttl = cache_set(&mut c, &["tools", v, "{}", "AGENT", "lg"]);
        assert_eq!(ttl, 600_000);
    }
    let (_, size): (i64, i64) = redis::cmd("OKOME.AGENT.RECORD")
        .arg(&["lg", "okome:tools:{l3}"])
        .query(&mut c)
        .unwrap();
    assert_eq!(size, 2);
    let purged: (i64, i64, i64, i64, Vec<(String, i64)>) = redis::cmd("OKOME.AGENT.PURGE")
        .arg("lg")
        .query(&mut c)
        .unwrap();
    assert_eq!(purged, (2, 0, 0, 0, vec![]));
    config_set(&mut c, &["okome.ledger-max-keys", "1000"]).unwrap();
    step(
        &mut c,
        &mut exp,
        "the agent ledger",
        &[
            ("cache_stored", 3),
            ("ledger_records", 4),
            ("ledger_dropped", 1),
            ("ledger_purged", 2),
        ],
    );

    // Error replies from handlers: counted, and nothing else is.
    let e = err(
        &mut c,
        &[b"OKOME.PLAN.SET", k5.as_bytes(), b"{}", b"TTL", b"5"],
    );
    assert!(e.starts_with("ERR ttl 5"), "{e}");
    let e = err(&mut c, &[b"OKOME.RATE", b"r", b"0", b"60"]);
    assert!(e.starts_with("ERR"), "{e}");
    step(&mut c, &mut exp, "2 error replies", &[("errors", 2)]);

    // A WAIT that times out (p3's lock is held).
    let started = Instant::now();
    let l = get(&mut b, "p3", &["WAIT", "200"]);
    assert_eq!(l.status, "LOCKED");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    step(
        &mut c,
        &mut exp,
        "a WAIT that timed out",
        &[
            ("lock_contended", 1),
            ("wait_blocked", 1),
            ("wait_timed_out", 1),
            ("planner_locked", 1),
        ],
    );

    // A WAIT woken by PLAN.SET: HIT.
    let waiter = {
        let mut b = s.conn();
        std::thread::spawn(move || plan_get(&mut b, &["m", "p3", "t", "r", "WAIT", "5000"]))
    };
    wait_for_waiting(&mut c, 1);
    let t3 = m3.token.clone().unwrap();
    assert_eq!(plan_set(&mut c, &[&m3.key, "{}", "TOKEN", &t3]).3, 1);
    assert_eq!(waiter.join().unwrap().status, "HIT");
    assert_eq!(waiting_clients(&mut c), 0);
    step(
        &mut c,
        &mut exp,
        "a WAIT woken by PLAN.SET",
        &[
            ("lock_contended", 1),
            ("wait_blocked", 1),
            ("plans_stored", 1),
            ("lock_released", 1),
            ("wait_woken", 1),
            ("wait_woken_hit", 1),
            ("planner_hits", 1),
        ],
    );

    // A WAIT handed the lock by UNLOCK: MISS with a new token.
    let m4 = get(&mut c, "p4", &[]);
    assert_eq!(m4.status, "MISS");
    let waiter = {
        let mut b = s.conn();
        std::thread::spawn(move || plan_get(&mut b, &["m", "p4", "t", "r", "WAIT", "5000"]))
    };
    wait_for_waiting(&mut c, 1);
    let t4 = m4.token.clone().unwrap();
    let released = unlock(&mut c, &m4.key, &t4);
    assert_eq!(released, 1);
    let led = waiter.join().unwrap();
    assert_eq!((led.status.as_str(), led.ms), ("MISS", Some(9000)));
    assert!(led.token.is_some() && led.token != m4.token);
    step(
        &mut c,
        &mut exp,
        "a WAIT handed the lock",
        &[
            ("planner_misses", 2),
            ("lock_acquired", 2),
            ("lock_contended", 1),
            ("wait_blocked", 1),
            ("lock_released", 1),
            ("wait_woken", 1),
            ("wait_woken_leader", 1),
        ],
    );

    // A waiter that disconnects (p4 is held by the new leader).
    {
        let mut d = s.conn();
        let packed = redis::cmd("OKOME.PLAN.GET")
            .arg(&["m", "p4", "t", "r", "WAIT", "10000"])
            .get_packed_command();
        d.send_packed_command(&packed).unwrap();
        wait_for_waiting(&mut c, 1);
    }
    wait_for_waiting(&mut c, 0);
    step(
        &mut c,
        &mut exp,
        "a waiter that disconnected",
        &[
            ("lock_contended", 1),
            ("wait_blocked", 1),
            ("wait_disconnected", 1),
        ],
    );

    // Leases: taken, refused, renewed, released (twice: counted once).
    let lease = |c: &mut Connection, args: &[&str]| -> redis::Value {
        redis::cmd(args[0]).arg(&args[1..]).query(c).unwrap()
    };
    let taken = lease(&mut c, &["OKOME.LEASE.ACQUIRE", "info", "1", "60000"]);
    let redis::Value::Array(items) = taken else {
        panic!("{taken:?}")
    };
    let id = text(&items[0]);
    lease(&mut c, &["OKOME.LEASE.ACQUIRE", "info", "1", "60000"]);
    lease(&mut c, &["OKOME.LEASE.RENEW", &id, "60000"]);
    lease(&mut c, &["OKOME.LEASE.RELEASE", &id]);
    lease(&mut c, &["OKOME.LEASE.RELEASE", &id]);
    step(
        &mut c,
        &mut exp,
        "leases",
        &[
            ("lease_acquired", 1),
            ("lease_refused", 1),
            ("lease_renewed", 1),
            ("lease_released", 1),
        ],
    );

    // The whole workload, as a table.
    let table: BTreeMap<&str, u64> = [
        ("planner_hits", 7),
        ("planner_misses", 5),
        ("planner_refreshes", 1),
        ("planner_locked", 3),
        ("planner_limited", 1),
        ("planner_failed", 1),
        ("lock_acquired", 8),
        ("lock_contended", 7),
        ("lock_extended", 1),
        ("lock_released", 6),
        ("wait_blocked", 4),
        ("wait_woken", 2),
        ("wait_woken_hit", 1),
        ("wait_woken_leader", 1),
        ("wait_woken_other", 0),
        ("wait_timed_out", 1),
        ("wait_disconnected", 1),
        ("wait_unblocked", 0),
        ("wait_deadline_early", 0),
        ("locks_healed", 0),
        ("windows_evicted", 0),
        ("rate_allowed", 3),
        ("rate_limited", 2),
        ("wbudget_allowed", 2),
        ("wbudget_refused", 2),
        ("throttle_allowed", 2),
        ("throttle_limited", 1),
        ("plans_stored", 4),
        ("plans_skipped", 1),
        ("plans_failed", 1),
        ("plans_fenced", 1),
        ("plans_shared", 0),
        ("cache_hits", 1),
        ("cache_misses", 1),
        ("cache_stored", 4),
        ("ledger_records", 5),
        ("ledger_dropped", 1),
        ("ledger_purged", 2),
        ("lease_acquired", 1),
        ("lease_refused", 1),
        ("lease_renewed", 1),
        ("lease_released", 1),
        ("errors", 2),
        ("callback_panics", 0),
    ]
    .into_iter()
    .collect();
    assert_eq!(exp, table);
    let fields = info(&mut c);
    let ratio: f64 = fields["planner_hit_ratio"].parse().unwrap();
    // (hits + refreshes) / (hits + refreshes + misses + locked)
    let want = (7.0 + 1.0) / (7.0 + 1.0 + 5.0 + 3.0);
    assert_eq!(want, 0.5);
    assert!(
        (ratio - want).abs() < 1e-9,
        "okome_planner_hit_ratio:{ratio}, want {want}"
    );
    assert_eq!(fields["waiting_clients"], "0");
}

#[test]
fn rate_counters_are_exact_under_concurrency() {
    let s = Server::start();
    let threads = 8;
    let calls = 500;
    let allowed: i64 = race(&s, threads, move |_, mut c| {
        let mut allowed = 0;
        for _ in 0..calls {
            let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
                .arg(&["conc", "1000", "3600"])
                .query(&mut c)
                .unwrap();
            allowed += r.0;
        }
        allowed
    })
    .into_iter()
    .sum();
    assert_eq!(allowed, 1000, "the window admits exactly its limit");
    let mut c = s.conn();
    let n = counters(&mut c);
    assert_eq!(n["rate_allowed"] + n["rate_limited"], 4000);
    assert_eq!((n["rate_allowed"], n["rate_limited"]), (1000, 3000));
    assert_eq!(n["errors"], 0);
}
