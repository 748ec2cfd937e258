//! Leak check through Redis's own allocator accounting: okome allocates
//! through `RedisModule_Alloc`, so every byte it holds is in `used_memory`.
//! A workload of every command — including blocked clients that time out,
//! disconnect or are woken — is run round after round with a FLUSHALL in
//! between; memory must not grow from round to round.
//!
//! (valgrind cannot see these allocations: Debian's redis-server uses
//! jemalloc, which valgrind does not intercept.)

use crate::support::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn round(s: &Server, c: &mut redis::Connection, r: usize) {
    let p = format!("prompt {r}");
    // Planner flow with rate and budget, refresh, locks, cache kinds.
    let m = plan_get(
        c,
        &[
            "m", &p, "t", "repo", "AGENT", "a", "LIMIT", "1000", "WINDOW", "60",
        ],
    );
    assert_eq!(m.status, "MISS");
    // Waiters: one disconnects, one times out, two are woken by the SET.
    let mut gone = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    gone.write_all(&resp_command(&[
        "OKOME.PLAN.GET",
        "m",
        &p,
        "t",
        "repo",
        "WAIT",
        "10000",
    ]))
    .unwrap();
    wait_blocked(c, 1, Duration::from_secs(10));
    drop(gone);
    wait_blocked(c, 0, Duration::from_secs(10));
    let timed_out = plan_get(c, &["m", &p, "t", "repo", "WAIT", "20"]);
    assert_eq!(timed_out.status, "LOCKED");
    let woken: Vec<_> = (0..2)
        .map(|_| {
            let mut wc = s.conn();
            let p = p.clone();
            std::thread::spawn(move || {
                plan_get(&mut wc, &["m", &p, "t", "repo", "WAIT", "10000"]).status
            })
        })
        .collect();
    wait_blocked(c, 2, Duration::from_secs(10));
    let plan = format!("{{\"round\":{r},\"pad\":\"{}\"}}", "x".repeat(2000));
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&[
            &m.key,
            &plan,
            "TTL",
            "300",
            "TOKEN",
            m.token.as_deref().unwrap(),
            "AGENT",
            "a",
            "WLIMIT",
            "1000",
        ])
        .query(c)
        .unwrap();
    for w in woken {
        assert_eq!(w.join().unwrap(), "HIT");
    }
    assert_eq!(
        plan_get(c, &["m", &p, "t", "repo", "REFRESHAHEAD", "900000"]).status,
        "REFRESH"
    );
    // Lock hand-over through UNLOCK.
    let m2 = plan_get(c, &["m", &format!("other {r}"), "t", "repo"]);
    let mut wc = s.conn();
    let p2 = format!("other {r}");
    let h =
        std::thread::spawn(move || plan_get(&mut wc, &["m", &p2, "t", "repo", "WAIT", "10000"]));
    wait_blocked(c, 1, Duration::from_secs(10));
    unlock(c, &m2.key, m2.token.as_deref().unwrap());
    assert_eq!(h.join().unwrap().status, "MISS");
    for i in 0..50 {
        let _: redis::Value = redis::cmd("OKOME.RATE")
            .arg(&[&format!("agent{i}"), "10", "60"])
            .query(c)
            .unwrap();
        let _: redis::Value = redis::cmd("OKOME.WBUDGET")
            .arg(&[&format!("agent{i}"), "10"])
            .query(c)
            .unwrap();
    }
    let t: Option<String> = redis::cmd("OKOME.LOCK")
        .arg("okome:tools:{v1}")
        .query(c)
        .unwrap();
    let _: i64 = redis::cmd("OKOME.LOCK")
        .arg(&[
            "okome:tools:{v1}",
            "TTL",
            "10000",
            "TOKEN",
            t.as_deref().unwrap(),
        ])
        .query(c)
        .unwrap();
    unlock(c, "okome:tools:{v1}", t.as_deref().unwrap());
    cache_set(c, &["rag", "r", "c", "{\"t\":1}"]);
    let _: redis::Value = redis::cmd("OKOME.CACHE.GET")
        .arg(&["rag", "r", "c"])
        .query(c)
        .unwrap();
    okome_key(c, "planner", &["m", &p, "t", "r"]);
    // Errors allocate messages too.
    for bad in [
        &["OKOME.RATE", "a", "0", "60"][..],
        &["OKOME.PLAN.SET", &m.key, "{bad"],
        &["OKOME.CACHE.SET", "git", "x", "{}"],
    ] {
        assert!(redis::cmd(bad[0])
            .arg(&bad[1..])
            .query::<redis::Value>(c)
            .is_err());
    }
    let _: () = redis::cmd("FLUSHALL").query(c).unwrap();
}

#[test]
fn memory_returns_to_the_same_level_round_after_round() {
    let s = Server::start();
    let mut c = s.conn();
    let mut samples = Vec::new();
    for r in 0..12 {
        round(&s, &mut c, r);
        wait_blocked(&mut c, 0, Duration::from_secs(10));
        samples.push(info_i64(&mut c, "memory", "used_memory"));
    }
    // Rounds 0-3 warm up allocator caches and client buffers; after that a
    // leak of even a few bytes per blocked client or command would add up.
    let settled = samples[4];
    let last = *samples.last().unwrap();
    assert!(
        last - settled < 16 * 1024,
        "used_memory grew by {} bytes over 8 rounds: {samples:?}",
        last - settled
    );
    assert_eq!(blocked_clients(&mut c), 0);
    let waiting = counter(&mut c, "waiting_clients");
    assert_eq!(waiting, 0, "the wait registry is empty");
}
