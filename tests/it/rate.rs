//! Rate limits and write budgets against a real server: the seed's check,
//! the window edge, concurrency, refused calls, retry-after, the one-round-
//! trip forms in PLAN.GET / PLAN.SET, bad input, memory, replication.

use crate::support::*;
use std::time::{Duration, Instant};

type Rate = (i64, i64, i64, i64);

fn rate(c: &mut redis::Connection, args: &[&str]) -> Rate {
    redis::cmd("OKOME.RATE")
        .arg(args)
        .query(c)
        .expect("OKOME.RATE")
}

#[test]
fn the_seeds_check_sixty_then_429() {
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..60 {
        let (allowed, remaining, retry, reset) = rate(&mut c, &["agent-123", "60", "60"]);
        assert_eq!((allowed, remaining, retry), (1, 59 - i, 0));
        assert!((59_000..=60_000).contains(&reset), "{reset}");
    }
    let (allowed, remaining, retry, reset) = rate(&mut c, &["agent-123", "60", "60"]);
    assert_eq!((allowed, remaining), (0, 0));
    assert!(
        retry > 50_000 && retry <= 60_000,
        "retry-after within the window: {retry}"
    );
    assert!(reset >= retry);
    let pttl = pttl(&mut c, "okome:budget:rate:{agent-123}");
    assert!(
        pttl > 0 && pttl <= 60_000,
        "the window key expires when empty: {pttl}"
    );
    let mem: i64 = redis::cmd("MEMORY")
        .arg(&["USAGE", "okome:budget:rate:{agent-123}"])
        .query(&mut c)
        .unwrap();
    assert!(mem < 600, "MEMORY USAGE for a full limit-60 window: {mem}");
}

#[test]
fn retry_after_is_honoured_to_the_millisecond_and_refusals_cost_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(rate(&mut c, &["a", "2", "1"]).0, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rate(&mut c, &["a", "2", "1"]).0, 1);
    let (allowed, _, retry, _) = rate(&mut c, &["a", "2", "1"]);
    assert_eq!(allowed, 0);
    assert!(
        (600..=700).contains(&retry),
        "first unit leaves ~700 ms from now: {retry}"
    );
    let refused_at = Instant::now();
    // Hammer with refused calls until shortly before the retry-after: every
    // one is refused, and none of them pushes the retry-after further.
    let mut last_retry = retry;
    while refused_at.elapsed() < Duration::from_millis(retry as u64 - 60) {
        let (allowed, remaining, r, _) = rate(&mut c, &["a", "2", "1"]);
        assert_eq!((allowed, remaining), (0, 0));
        assert!(
            r <= last_retry,
            "a refused call consumed something: {r} > {last_retry}"
        );
        last_retry = r;
    }
    std::thread::sleep(
        Duration::from_millis(retry as u64 + 5).saturating_sub(refused_at.elapsed()),
    );
    let (allowed, remaining, _, _) = rate(&mut c, &["a", "2", "1"]);
    assert_eq!(
        (allowed, remaining),
        (1, 0),
        "admitted as soon as the unit left"
    );
}

#[test]
fn the_window_edge_that_a_fixed_window_gets_wrong() {
    let s = Server::start();
    let mut c = s.conn();
    // A 2 s window: 10 at once, then more for the next 1.9 s: none admitted,
    // where INCR+EXPIRE keyed by the current second would let 10 more through
    // at the second boundary.
    let start = Instant::now();
    let first = (0..10)
        .filter(|_| rate(&mut c, &["edge", "10", "2"]).0 == 1)
        .count();
    assert_eq!(first, 10);
    let mut later = 0;
    while start.elapsed() < Duration::from_millis(1_900) {
        later += rate(&mut c, &["edge", "10", "2"]).0;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        later, 0,
        "no unit admitted while the first ten are in the window"
    );
}

#[test]
fn concurrent_clients_never_exceed_the_limit() {
    let s = Server::start();
    let threads = 16;
    let admitted: i64 = race(&s, threads, |_, mut c| {
        (0..100)
            .map(|_| rate(&mut c, &["busy", "250", "30"]).0)
            .sum::<i64>()
    })
    .into_iter()
    .sum();
    assert_eq!(
        admitted, 250,
        "1600 calls within one window admit exactly the limit"
    );
}

#[test]
fn cost_and_peek() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(rate(&mut c, &["p", "10", "60", "COST", "7"]).0..=1, 1..=1);
    let (allowed, remaining, retry, _) = rate(&mut c, &["p", "10", "60", "COST", "4"]);
    assert_eq!((allowed, remaining), (0, 3));
    assert!(retry > 59_000);
    let (allowed, remaining, retry, _) = rate(&mut c, &["p", "10", "60", "cost", "0"]);
    assert_eq!((allowed, remaining, retry), (1, 3, 0));
    let (allowed, remaining, _, _) = rate(&mut c, &["p", "10", "60", "COST", "3"]);
    assert_eq!((allowed, remaining), (1, 0));
    // A peek at an agent with no window writes nothing.
    let (allowed, remaining, retry, reset) = rate(&mut c, &["nobody", "5", "60", "COST", "0"]);
    assert_eq!((allowed, remaining, retry, reset), (1, 5, 0, 0));
    let exists: i64 = redis::cmd("EXISTS")
        .arg("okome:budget:rate:{nobody}")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn wbudget_uses_its_own_counter_and_default_window() {
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..30 {
        let r: Rate = redis::cmd("OKOME.WBUDGET")
            .arg(&["agent-123", "30"])
            .query(&mut c)
            .unwrap();
        assert_eq!((r.0, r.1), (1, 29 - i));
    }
    let r: Rate = redis::cmd("OKOME.WBUDGET")
        .arg(&["agent-123", "30"])
        .query(&mut c)
        .unwrap();
    assert_eq!((r.0, r.1), (0, 0));
    assert!(
        r.2 > 59_000 && r.2 <= 60_000,
        "default window is 60 s: {r:?}"
    );
    assert_eq!(
        rate(&mut c, &["agent-123", "60", "60"]).1,
        59,
        "rate is separate"
    );
    let r: Rate = redis::cmd("OKOME.WBUDGET")
        .arg(&["w", "5", "WINDOW", "1", "COST", "5"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r.0, 1);
    assert!(r.3 <= 1_000);
}

#[test]
fn plan_get_with_agent_charges_first_and_limited_touches_nothing_else() {
    let s = Server::start();
    let mut c = s.conn();
    let a = [
        "m", "p", "t", "r", "AGENT", "ag", "LIMIT", "2", "WINDOW", "60",
    ];
    let m = plan_get(&mut c, &a);
    assert_eq!((m.status.as_str(), m.rate_remaining), ("MISS", Some(1)));
    let l = plan_get(&mut c, &a);
    assert_eq!((l.status.as_str(), l.rate_remaining), ("LOCKED", Some(0)));
    let token = m.token.unwrap();
    redis::cmd("OKOME.UNLOCK")
        .arg(&m.key)
        .arg(&token)
        .query::<i64>(&mut c)
        .unwrap();
    let before = snapshot(&mut c);
    let lim = plan_get(&mut c, &a);
    assert_eq!(lim.status, "LIMITED");
    assert_eq!(lim.key, m.key);
    assert_eq!(
        (lim.value, lim.token, lim.rate_remaining),
        (None, None, Some(0))
    );
    assert!(
        matches!(lim.ms, Some(ms) if ms > 59_000 && ms <= 60_000),
        "{:?}",
        lim.ms
    );
    assert_eq!(
        snapshot(&mut c),
        before,
        "LIMITED takes no lock and writes nothing"
    );
    // HIT also carries the remaining rate.
    redis::cmd("OKOME.PLAN.SET")
        .arg(&m.key)
        .arg("{}")
        .query::<redis::Value>(&mut c)
        .unwrap();
    let h = plan_get(
        &mut c,
        &[
            "m", "p", "t", "r", "AGENT", "other", "LIMIT", "5", "WINDOW", "60",
        ],
    );
    assert_eq!((h.status.as_str(), h.rate_remaining), ("HIT", Some(4)));
}

#[test]
fn plan_set_with_agent_skips_when_spent_but_still_releases_the_lock() {
    let s = Server::start();
    let mut c = s.conn();
    let m1 = plan_get(&mut c, &["m", "p1", "t", "r"]);
    let r = plan_set(
        &mut c,
        &[
            &m1.key,
            "{}",
            "TOKEN",
            m1.token.as_deref().unwrap(),
            "AGENT",
            "w",
            "WLIMIT",
            "1",
        ],
    );
    assert_eq!(r, ("STORED".into(), Some(600_000), Some(0), 1));
    let m2 = plan_get(&mut c, &["m", "p2", "t", "r"]);
    let r = plan_set(
        &mut c,
        &[
            &m2.key,
            "{}",
            "TOKEN",
            m2.token.as_deref().unwrap(),
            "AGENT",
            "w",
            "WLIMIT",
            "1",
        ],
    );
    assert_eq!(r, ("SKIPPED".into(), None, Some(0), 1));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&[&m2.key, &format!("{}:lock", m2.key)])
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0, "plan not stored, lock released");
    let r = plan_set(
        &mut c,
        &[&m2.key, "{}", "AGENT", "w2", "WLIMIT", "3", "WWINDOW", "1"],
    );
    assert_eq!(r, ("STORED".into(), Some(600_000), Some(2), 0));
    let pttl = pttl(&mut c, "okome:budget:write:{w2}");
    assert!(pttl > 0 && pttl <= 1_000);
}

#[test]
fn bad_budget_input_errors_and_writes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    redis::cmd("SET")
        .arg(&["okome:budget:rate:{foreign}", "not a window"])
        .query::<()>(&mut c)
        .unwrap();
    redis::cmd("LPUSH")
        .arg(&["okome:budget:rate:{list}", "x"])
        .query::<()>(&mut c)
        .unwrap();
    let before = snapshot(&mut c);
    let cases: &[(&[&[u8]], &str)] = &[
        (&[b"OKOME.RATE", b"a", b"60"], "ERR wrong number of arguments for 'okome.rate' command"),
        (&[b"OKOME.RATE", b"", b"60", b"60"], "ERR agent must not be empty"),
        (&[b"OKOME.RATE", b"a", b"0", b"60"], "ERR limit 0 is out of range: must be between 1 and 1000000000000000 units"),
        (&[b"OKOME.RATE", b"a", b"-3", b"60"], "ERR limit -3 is out of range: must be between 1 and 1000000000000000 units"),
        (&[b"OKOME.RATE", b"a", b"60", b"0"], "ERR window 0 is out of range: must be between 1 and 31536000 seconds"),
        (&[b"OKOME.RATE", b"a", b"60", b"-1"], "ERR window -1 is out of range: must be between 1 and 31536000 seconds"),
        (&[b"OKOME.RATE", b"a", b"18446744073709551616", b"60"], "ERR limit is not an integer or out of range"),
        (&[b"OKOME.RATE", b"a", b"60", b"1.5"], "ERR window is not an integer or out of range"),
        (&[b"OKOME.RATE", b"a", b"5", b"60", b"COST", b"6"], "ERR cost 6 is out of range: must be between 0 and 5 units (0 to the limit)"),
        (&[b"OKOME.RATE", b"a", b"5", b"60", b"COST", b"-1"], "ERR cost -1 is out of range: must be between 0 and 5 units (0 to the limit)"),
        (&[b"OKOME.RATE", b"a", b"5", b"60", b"COST"], "ERR syntax error: option COST needs a value"),
        (&[b"OKOME.RATE", b"a", b"5", b"60", b"BURST", b"1"], "ERR syntax error: unknown option 'BURST' (expected one of: COST, NAME)"),
        (&[b"OKOME.RATE", b"foreign", b"5", b"60"], "ERR 'okome:budget:rate:{foreign}' does not hold an okome budget window (was it written by another client?)"),
        (&[b"OKOME.RATE", b"list", b"5", b"60"], "WRONGTYPE Operation against a key holding the wrong kind of value"),
        (&[b"OKOME.WBUDGET", b"a", b"0"], "ERR write_limit 0 is out of range: must be between 1 and 1000000000000000 units"),
        (&[b"OKOME.WBUDGET", b"a", b"3", b"WINDOW", b"0"], "ERR window 0 is out of range: must be between 1 and 31536000 seconds"),
        (&[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"AGENT", b"a", b"LIMIT", b"5"], "ERR syntax error: AGENT, LIMIT and WINDOW must be given together"),
        (&[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"AGENT", b"foreign", b"LIMIT", b"5", b"WINDOW", b"5"], "ERR 'okome:budget:rate:{foreign}' does not hold an okome budget window (was it written by another client?)"),
        (&[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"AGENT", b"list", b"LIMIT", b"5", b"WINDOW", b"5"], "WRONGTYPE Operation against a key holding the wrong kind of value"),
    ];
    for (args, want) in cases {
        assert_eq!(
            &err(&mut c, args),
            want,
            "{:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(snapshot(&mut c), before, "bad input wrote something");
}

#[test]
fn a_replica_enforces_the_same_window() {
    let p = Server::start();
    let r = replica_of(&p, &[], &[]);
    let mut pc = p.conn();
    let mut rc = r.conn();
    for _ in 0..5 {
        rate(&mut pc, &["rep", "5", "60"]);
    }
    // A lock held on the primary, which then fails.
    let held = plan_get(&mut pc, &["m", "p", "t", "r", "LOCKTTL", "8000"]);
    let lock_key = format!("{}:lock", held.key);
    let lock_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&lock_key)
        .query(&mut pc)
        .unwrap();
    replica_acked(&mut pc);
    let key = "okome:budget:rate:{rep}";
    let pd: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut pc).unwrap();
    let rd: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut rc).unwrap();
    assert_eq!(pd, rd, "the window is byte-identical on the replica");
    let pt = pttl(&mut pc, key);
    let rt = pttl(&mut rc, key);
    assert!((pt - rt).abs() < 50, "{pt} vs {rt}");
    // Promote the replica: the full window is still enforced there, and the
    // old primary's lock expires at the same instant it would have there.
    redis::cmd("REPLICAOF")
        .arg(&["NO", "ONE"])
        .query::<()>(&mut rc)
        .unwrap();
    let replica_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&lock_key)
        .query(&mut rc)
        .unwrap();
    assert_eq!(replica_at, lock_at, "the lock keeps its absolute expiry");
    let l = plan_get(&mut rc, &["m", "p", "t", "r"]);
    assert_eq!(
        l.status, "LOCKED",
        "the lock still holds on the promoted replica"
    );
    let (allowed, remaining, retry, _) = rate(&mut rc, &["rep", "5", "60"]);
    assert_eq!((allowed, remaining), (0, 0));
    assert!(retry > 50_000);
}

/// Issue 11, item 5: a well-formed window whose newest entry lies beyond the
/// clock-skew allowance in the future (hand-made, written by another client,
/// or under a clock that far ahead) is refused with an error naming the key;
/// it is neither charged nor extended (no `PXAT 9223372036854775807`), and
/// nothing else is written. Within the allowance it is honoured, and the
/// window then expires within window + allowance.
#[test]
fn a_window_from_the_future_is_refused_and_left_as_it_is() {
    use okome_core::limiter::{Window, CLOCK_SKEW_ALLOWANCE_MS, FORMAT_V1};
    let s = Server::start();
    let mut c = s.conn();
    // The stored form by hand: version, the one entry's time (i64 little-
    // endian), its units (LEB128). Well-formed: only its time is wrong.
    let window = |at: i64| {
        let mut b = vec![FORMAT_V1];
        b.extend_from_slice(&at.to_le_bytes());
        b.push(1);
        assert!(Window::decode(&b).is_ok(), "a well-formed window");
        b
    };
    let now = server_ms(&mut c);
    let windows = [
        ("okome:budget:rate:{a}", window(i64::MAX - 1_000)),
        // A server ten minutes ahead wrote it.
        ("okome:budget:rate:{b}", window(now + 600_000)),
        ("okome:budget:write:{w}", window(i64::MAX)),
    ];
    for (key, bytes) in &windows {
        redis::cmd("SET")
            .arg(key)
            .arg(bytes)
            .query::<()>(&mut c)
            .unwrap();
    }
    let dumps = |c: &mut redis::Connection| {
        windows
            .iter()
            .map(|(key, _)| {
                let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(c).unwrap();
                let pttl = pttl(c, key);
                (dump, pttl)
            })
            .collect::<Vec<_>>()
    };
    let before_dumps = dumps(&mut c);
    assert!(before_dumps.iter().all(|(_, pttl)| *pttl == -1));
    let plan_key: Vec<u8> = redis::cmd("OKOME.KEY")
        .arg(&["planner", "m", "p", "t", "r"])
        .query(&mut c)
        .unwrap();
    let before = snapshot(&mut c);
    let cases: &[(&[&[u8]], &str)] = &[
        (&[b"OKOME.RATE", b"a", b"5", b"60"], "okome:budget:rate:{a}"),
        (
            &[b"OKOME.RATE", b"a", b"5", b"60", b"COST", b"0"],
            "okome:budget:rate:{a}",
        ),
        (&[b"OKOME.RATE", b"b", b"5", b"60"], "okome:budget:rate:{b}"),
        (&[b"OKOME.WBUDGET", b"w", b"5"], "okome:budget:write:{w}"),
        // The one-round-trip forms: no lock taken, no plan stored.
        (
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"AGENT",
                b"a",
                b"LIMIT",
                b"5",
                b"WINDOW",
                b"60",
            ],
            "okome:budget:rate:{a}",
        ),
        (
            &[
                b"OKOME.PLAN.SET",
                &plan_key,
                b"{}",
                b"AGENT",
                b"w",
                b"WLIMIT",
                b"5",
            ],
            "okome:budget:write:{w}",
        ),
    ];
    for (args, key) in cases {
        let e = err(&mut c, args);
        let shown = args
            .iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>();
        assert!(e.starts_with("ERR "), "{shown:?}: {e}");
        assert!(
            e.contains(&format!("'{key}'")),
            "names the key: {shown:?}: {e}"
        );
        assert!(
            e.contains("future") && e.contains("clock"),
            "says why: {shown:?}: {e}"
        );
    }
    assert_eq!(
        dumps(&mut c),
        before_dumps,
        "the windows are left as they were"
    );
    assert_eq!(snapshot(&mut c), before, "nothing else was written");

    // Within the allowance (a clock half of it ahead): honoured, counted
    // from the entry's time, and the window expires within window +
    // allowance of now.
    let now = server_ms(&mut c);
    let key = "okome:budget:rate:{c}";
    redis::cmd("SET")
        .arg(key)
        .arg(window(now + CLOCK_SKEW_ALLOWANCE_MS / 2))
        .query::<()>(&mut c)
        .unwrap();
    let (allowed, remaining, _, reset) = rate(&mut c, &["c", "5", "60"]);
    assert_eq!((allowed, remaining), (1, 3));
    assert!(reset <= 60_000 + CLOCK_SKEW_ALLOWANCE_MS, "{reset}");
    let at: i64 = redis::cmd("PEXPIRETIME").arg(key).query(&mut c).unwrap();
    assert!(
        at > now && at <= server_ms(&mut c) + 60_000 + CLOCK_SKEW_ALLOWANCE_MS,
        "expires within window + allowance: {at} (now {now})"
    );
}

/// Issue 14: a window written by the previous release (stored form
/// version 1) is read as it is, and rewritten in the current form by its
/// first admission; refusals and reports leave it as it was.
#[test]
fn a_window_of_the_previous_version_is_read_then_migrated() {
    use okome_core::limiter::{Window, FORMAT_V1, FORMAT_V2};
    let s = Server::start();
    let mut c = s.conn();
    let key = "okome:budget:rate:{old}";
    let now = server_ms(&mut c);
    // 5 units over the last 5 s, as the old release stored them.
    let mut w = Window::new();
    for i in 0..5 {
        w.charge(now - 5_000 + i * 1_000, 6, 60_000, 1);
    }
    let old = w.encode_v1();
    assert_eq!(old[0], FORMAT_V1);
    redis::cmd("SET")
        .arg(key)
        .arg(&old)
        .arg("PXAT")
        .arg(now - 1_000 + 60_000)
        .query::<()>(&mut c)
        .unwrap();
    // A report, then a refusal (COST 2 with 1 left): nothing written.
    let (allowed, remaining, _, reset) = rate(&mut c, &["old", "6", "60", "COST", "0"]);
    assert_eq!((allowed, remaining), (1, 1));
    assert!((58_000..=59_000).contains(&reset), "{reset}");
    let (allowed, remaining, retry, _) = rate(&mut c, &["old", "6", "60", "COST", "2"]);
    assert_eq!((allowed, remaining), (0, 1));
    assert!((54_000..=55_000).contains(&retry), "{retry}");
    let still: Vec<u8> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    assert_eq!(still, old, "a refusal leaves the old form as it was");
    // The first admission migrates it.
    let (allowed, remaining, _, _) = rate(&mut c, &["old", "6", "60"]);
    assert_eq!((allowed, remaining), (1, 0));
    let new: Vec<u8> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    assert_eq!(new[0], FORMAT_V2);
    let migrated = Window::decode(&new).unwrap();
    let entries: Vec<_> = migrated.entries().copied().collect();
    assert_eq!(&entries[..5], &w.entries().copied().collect::<Vec<_>>()[..]);
    assert_eq!(entries.len(), 6);
    assert!(entries[5].at >= now);
    assert_eq!(rate(&mut c, &["old", "6", "60"]).0, 0, "still full");
}

/// Issue 14: a full `limit 60` window of one minute (one admission a
/// second, the widest gaps such a window has) stays within 600 bytes of
/// `MEMORY USAGE`, written by the module as it writes any window.
#[test]
fn a_full_minute_window_stays_under_600_bytes() {
    use okome_core::limiter::Window;
    let s = Server::start();
    let mut c = s.conn();
    let key = "okome:budget:rate:{minute}";
    let now = server_ms(&mut c);
    let mut w = Window::new();
    for i in 0..59 {
        w.charge(now - 59_000 + i * 1_000 + (i % 7) * 13, 60, 60_000, 1);
    }
    redis::cmd("SET")
        .arg(key)
        .arg(w.encode())
        .arg("PXAT")
        .arg(now + 60_000)
        .query::<()>(&mut c)
        .unwrap();
    let (allowed, remaining, _, _) = rate(&mut c, &["minute", "60", "60"]);
    assert_eq!((allowed, remaining), (1, 0));
    let len: i64 = redis::cmd("STRLEN").arg(key).query(&mut c).unwrap();
    let mem: i64 = redis::cmd("MEMORY")
        .arg(&["USAGE", key])
        .query(&mut c)
        .unwrap();
    println!("MEMORY USAGE of a full minute window: {mem} ({len} bytes)");
    assert!(
        mem <= 600,
        "MEMORY USAGE of a full minute window: {mem} ({len} bytes)"
    );
}

/// `NAME name`: each name is its own window, on
/// `okome:budget:rate:{<subject>}:<name>` (escaped like a key part), and
/// `NAME default` is the window without `NAME`.
#[test]
fn named_windows_are_separate_and_default_is_the_unnamed_one() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(rate(&mut c, &["m", "2", "60"]).0, 1);
    assert_eq!(
        rate(&mut c, &["m", "2", "60", "NAME", "default"]),
        (1, 0, 0, 60_000),
        "the same window as without NAME"
    );
    assert_eq!(rate(&mut c, &["m", "2", "60"]).0, 0);
    // Other names start empty, each on its own.
    assert_eq!(
        rate(&mut c, &["m", "2", "60", "NAME", "tpm"]),
        (1, 1, 0, 60_000)
    );
    assert_eq!(
        rate(&mut c, &["m", "2", "60", "COST", "2", "NAME", "a:b"]).1,
        0
    );
    assert_eq!(rate(&mut c, &["m", "2", "60", "NAME", "tpm"]).1, 0);
    assert_eq!(rate(&mut c, &["m", "2", "60", "NAME", "Default"]).1, 1);
    let (allowed, remaining, ..) = rate(&mut c, &["m", "2", "60", "NAME", "a:b"]);
    assert_eq!((allowed, remaining), (0, 0));
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "okome:budget:rate:{m}",
            "okome:budget:rate:{m}:Default",
            "okome:budget:rate:{m}:a%3Ab",
            "okome:budget:rate:{m}:tpm",
        ]
    );
    for k in &keys {
        let t = pttl(&mut c, k);
        assert!(t > 0 && t <= 60_000, "{k} expires with its window: {t}");
        assert_eq!(
            okome_core::keys::parse(k.as_bytes()),
            Ok(okome_core::keys::Kind::Rate)
        );
    }
    // One slot for all of a subject's windows.
    let slots: Vec<u16> = keys
        .iter()
        .map(|k| okome_core::keys::slot(k.as_bytes()))
        .collect();
    assert!(slots.iter().all(|&s| s == slots[0]), "{slots:?}");
    // Bad names write nothing.
    for (name, want) in [
        ("", "ERR name must not be empty"),
        (
            "lock",
            "ERR syntax error: NAME lock is reserved (okome:budget:rate:{<subject>}:lock would \
             read as a stampede lock); pick another name",
        ),
    ] {
        let e = redis::cmd("OKOME.RATE")
            .arg(&["m", "2", "60", "NAME", name])
            .query::<Rate>(&mut c)
            .unwrap_err();
        assert_eq!(error_text(&e), want);
    }
    let e = redis::cmd("OKOME.RATE")
        .arg(&["m", "2", "60", "NAME"])
        .query::<Rate>(&mut c)
        .unwrap_err();
    assert_eq!(
        error_text(&e),
        "ERR syntax error: option NAME needs a value"
    );
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 4, "nothing written by a refused name");
}

/// Limits and costs up to 10^15: `OKOME.RATE agent 2000000 60` is
/// accepted (refused before: the limit was at most 100 000), and one call
/// can charge 10^15 units.
#[test]
fn limits_and_costs_up_to_10_15() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(
        rate(&mut c, &["agent", "2000000", "60"]),
        (1, 1_999_999, 0, 60_000)
    );
    let max = "1000000000000000";
    assert_eq!(
        rate(&mut c, &["big", max, "2592000", "COST", "999999999999999"]),
        (1, 1, 0, 2_592_000_000)
    );
    assert_eq!(rate(&mut c, &["big", max, "2592000", "COST", "1"]).1, 0);
    let (allowed, remaining, retry, _) = rate(&mut c, &["big", max, "2592000", "COST", "1"]);
    assert_eq!((allowed, remaining), (0, 0));
    assert!(retry > 2_591_000_000, "{retry}");
    assert_eq!(
        rate(&mut c, &["whole", max, "60", "COST", max]),
        (1, 0, 0, 60_000)
    );
    let e = redis::cmd("OKOME.RATE")
        .arg(&["a", max, "60", "COST", "1000000000000001"])
        .query::<Rate>(&mut c)
        .unwrap_err();
    assert_eq!(
        error_text(&e),
        "ERR cost 1000000000000001 is out of range: must be between 0 and 1000000000000000 \
         units (0 to the limit)"
    );
    let e = redis::cmd("OKOME.RATE")
        .arg(&["a", "1000000000000001", "60"])
        .query::<Rate>(&mut c)
        .unwrap_err();
    assert_eq!(
        error_text(&e),
        "ERR limit 1000000000000001 is out of range: must be between 1 and 1000000000000000 units"
    );
    // WBUDGET shares the range.
    let w: Rate = redis::cmd("OKOME.WBUDGET")
        .arg(&["agent", "2000000", "COST", "1500000"])
        .query(&mut c)
        .unwrap();
    assert_eq!(w, (1, 500_000, 0, 60_000));
}

/// The stored form of a window charged once a millisecond for two window
/// lengths up to `now`, by the limiter's own rule (what this server would
/// have written, without the wait).
fn history(now: i64, window_ms: u64, calls: i64) -> Vec<u8> {
    use okome_core::limiter::{apply, charge_stored, MAX_LIMIT};
    let (mut bytes, mut out) = (Vec::new(), Vec::new());
    for i in (0..calls).rev() {
        let c = charge_stored(&bytes, now - i, MAX_LIMIT, window_ms, 1, &mut out).unwrap();
        apply(&mut bytes, &c.write, &out);
    }
    bytes
}

/// A window of 132 s (buckets of 3 ms) that has seen 264 000 distinct
/// charge times, then a burst of calls on the server: it never holds more
/// than 65 536 entries, and its value stays within its size bound (one
/// byte a dense entry, dead bytes at most the live ones, the trailer).
#[test]
fn a_long_window_with_many_charge_times_stays_within_65536_entries() {
    use okome_core::limiter::{grain_ms, Window, MAX_ENTRIES, TRAILER_LEN};
    let s = Server::start();
    let mut c = s.conn();
    let key = "okome:budget:rate:{dense}";
    let window_ms = 132_000;
    assert_eq!(grain_ms(window_ms), 3);
    let now = server_ms(&mut c);
    let bytes = history(now, window_ms, 2 * window_ms as i64);
    let at = now + window_ms as i64;
    redis::cmd("SET")
        .arg(key)
        .arg(&bytes)
        .arg("PXAT")
        .arg(at)
        .query::<()>(&mut c)
        .unwrap();
    let mut pipe = redis::pipe();
    for _ in 0..5_000 {
        pipe.cmd("OKOME.RATE")
            .arg(&["dense", "1000000000000000", "132"]);
    }
    let replies: Vec<Rate> = pipe.query(&mut c).unwrap();
    assert!(replies.iter().all(|r| r.0 == 1));
    let value: Vec<u8> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    let entries = Window::decode(&value).unwrap().entries().count() as u64;
    assert!(entries <= MAX_ENTRIES, "{entries} entries");
    assert!(entries > 40_000, "{entries}: the window is full of buckets");
    // Dense entries (3 ms apart, 3 units) take a byte each.
    let bound = 2 * MAX_ENTRIES as usize + 1 + TRAILER_LEN;
    assert!(value.len() <= bound, "{} bytes", value.len());
    let mem: i64 = redis::cmd("MEMORY")
        .arg(&["USAGE", key])
        .query(&mut c)
        .unwrap();
    // SETRANGE grows a string as Redis grows any: doubling its room up to
    // 1 MB, in the allocator's size classes.
    assert!(mem as usize <= 3 * value.len() + 200, "MEMORY USAGE {mem}");
}

/// Named windows replicate as their effects, like the default one: the
/// replica's values are byte-identical, with the same expiry.
#[test]
fn named_windows_replicate_byte_identical() {
    let p = Server::start_with(PRIMARY);
    let r = replica_of(&p, &[], &[]);
    let mut pc = p.conn();
    let mut rc = r.conn();
    for i in 0..300 {
        let cost = (1 + i % 7).to_string();
        rate(
            &mut pc,
            &["rep", "1000", "60", "COST", &cost, "NAME", "tokens"],
        );
        rate(
            &mut pc,
            &[
                "rep",
                "100000000000",
                "3600",
                "COST",
                "123456789",
                "NAME",
                "usd",
            ],
        );
        rate(&mut pc, &["rep", "5", "60"]);
    }
    replica_acked(&mut pc);
    for key in [
        "okome:budget:rate:{rep}:tokens",
        "okome:budget:rate:{rep}:usd",
        "okome:budget:rate:{rep}",
    ] {
        assert_eq!(dump(&mut pc, key), dump(&mut rc, key), "{key}");
        assert_eq!(
            pexpiretime(&mut pc, key),
            pexpiretime(&mut rc, key),
            "{key}"
        );
    }
}
