//! The planner's bad day against real servers (SPEC "Planner failures"):
//! `OKOME.UNLOCK key token FAILED ms [message]` answers every waiter
//! `FAILED` at once and later lookups for `ms` more; `PLAN.SET ... TOKEN t
//! FENCED` stores only while `t` holds the lock; a `SKIPPED` store hands its
//! plan to the callers waiting for it (`SHARED`). Each is one reply per
//! waiter, counted in `INFO okome`, and replicated as effects.

use crate::support::*;

use redis::Connection;
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const PLAN: &str = r#"{"steps":["a","b"]}"#;

/// `n` followers of `prompt`, each on its own connection, blocked in
/// `PLAN.GET ... WAIT 20000` once this returns.
fn followers(
    s: &Server,
    prompt: &str,
    n: usize,
) -> (Vec<JoinHandle<()>>, Receiver<Result<Plan, String>>) {
    let (tx, rx) = mpsc::channel();
    let mut admin = s.conn();
    let before = blocked_clients(&mut admin);
    let handles = (0..n)
        .map(|_| {
            let mut c = s.conn();
            c.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let args = tuple(prompt, &["WAIT", "20000"]);
            let tx = tx.clone();
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let r = try_plan_get(&mut c, &refs(&args)).map_err(|e| error_text(&e));
                    let _ = tx.send(r);
                })
                .expect("spawn follower")
        })
        .collect();
    wait_blocked(&mut admin, before + n as i64, Duration::from_secs(10));
    (handles, rx)
}

/// The replies of `n` followers, each within `within` of the call.
fn replies(rx: &Receiver<Result<Plan, String>>, n: usize, within: Duration) -> Vec<Plan> {
    let start = Instant::now();
    (0..n)
        .map(|i| {
            let left = within.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => panic!("follower {i}: error {e}"),
                Err(e) => panic!("follower {i}: no reply within {within:?} ({e})"),
            }
        })
        .collect()
}

fn join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        h.join().expect("follower thread");
    }
}

fn unlock_failed(c: &mut Connection, key: &str, token: &str, rest: &[&str]) -> i64 {
    redis::cmd("OKOME.UNLOCK")
        .arg(key)
        .arg(token)
        .arg("FAILED")
        .arg(rest)
        .query(c)
        .expect("OKOME.UNLOCK ... FAILED")
}

fn failed_of(key: &str) -> String {
    format!("{key}:failed")
}

/// A `FAILED` answer of `key`: the message, at most `ms` left, no token.
fn assert_failed(p: &Plan, key: &str, message: Option<&str>, ms: i64) {
    assert_eq!(p.status, "FAILED", "{p:?}");
    assert_eq!(p.key, key, "{p:?}");
    assert_eq!(p.value.as_deref(), message, "{p:?}");
    assert_eq!(p.token, None, "{p:?}");
    let left = p.ms.expect("FAILED carries its remaining ms");
    assert!((0..=ms).contains(&left), "remaining {left}, want 0..={ms}");
}

#[test]
fn a_failure_answers_every_waiter_at_once_and_lookups_for_its_time() {
    let s = Server::start();
    let mut c = s.conn();
    let miss = get_plan(&mut c, "boom", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    let (handles, rx) = followers(&s, "boom", 20);
    let sent = Instant::now();
    assert_eq!(
        unlock_failed(&mut c, &key, &token, &["2000", "model timeout"]),
        1
    );
    for p in replies(&rx, 20, Duration::from_secs(5)) {
        assert_failed(&p, &key, Some("model timeout"), 2000);
    }
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(1), "20 FAILED took {took:?}");
    join(handles);
    // No lock, and the record lives for the failure's time.
    assert!(!exists(&mut c, &lock_of(&key)));
    assert_eq!(
        get(&mut c, &failed_of(&key)).as_deref(),
        Some("model timeout")
    );
    assert_ttl_near(&failed_of(&key), pttl(&mut c, &failed_of(&key)), 2000);
    // A lookup meanwhile is FAILED at once, even with WAIT or NOLOCK, and
    // takes no lock.
    let started = Instant::now();
    let again = get_plan(&mut c, "boom", &["WAIT", "5000"]);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_failed(&again, &key, Some("model timeout"), 2000);
    assert_failed(
        &get_plan(&mut c, "boom", &["NOLOCK"]),
        &key,
        Some("model timeout"),
        2000,
    );
    assert!(!exists(&mut c, &lock_of(&key)));
    assert_eq!(counter(&mut c, "plans_failed"), 1);
    assert_eq!(counter(&mut c, "planner_failed"), 22);
    assert_eq!(counter(&mut c, "wait_woken_other"), 20);
    // Once it is over, the next caller leads again.
    poll(Duration::from_secs(5), Duration::from_millis(20), || {
        if exists(&mut c, &failed_of(&key)) {
            Err("the failure record outlives its time".to_string())
        } else {
            Ok(())
        }
    });
    assert_miss(&get_plan(&mut c, "boom", &[]), 9000);
}

#[test]
fn a_failure_of_zero_ms_answers_only_the_waiters() {
    let s = Server::start();
    let mut c = s.conn();
    let miss = get_plan(&mut c, "zero", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    let (handles, rx) = followers(&s, "zero", 3);
    assert_eq!(unlock_failed(&mut c, &key, &token, &["0"]), 1);
    for p in replies(&rx, 3, Duration::from_secs(5)) {
        assert_failed(&p, &key, None, 0);
        assert_eq!(p.ms, Some(0));
    }
    join(handles);
    assert!(!exists(&mut c, &failed_of(&key)));
    assert!(!exists(&mut c, &lock_of(&key)));
    assert_miss(&get_plan(&mut c, "zero", &[]), 9000);
}

#[test]
fn a_failure_with_a_token_that_does_not_hold_the_lock_changes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    let miss = get_plan(&mut c, "stale", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    let (handles, rx) = followers(&s, "stale", 2);
    let before = snapshot(&mut c);
    assert_eq!(
        unlock_failed(
            &mut c,
            &key,
            "0123456789abcdef0123456789abcdef",
            &["5000", "x"]
        ),
        0
    );
    assert_eq!(snapshot(&mut c), before);
    assert_eq!(blocked_clients(&mut c), 2);
    assert_eq!(counter(&mut c, "plans_failed"), 0);
    // The holder's plan still reaches them.
    plan_store(&mut c, &[&key, PLAN, "TOKEN", &token]);
    for p in replies(&rx, 2, Duration::from_secs(5)) {
        assert_hit(&p, &key, PLAN);
    }
    join(handles);
}

#[test]
fn failed_is_refused_where_it_cannot_apply() {
    let s = Server::start();
    let mut c = s.conn();
    let rag = okome_key(&mut c, "rag", &["repo", "chunk"]);
    let t = acquire(&mut c, &rag, &[]).expect("lock of a rag key");
    let e = err(
        &mut c,
        &[
            b"OKOME.UNLOCK",
            rag.as_bytes(),
            t.as_bytes(),
            b"FAILED",
            b"10",
        ],
    );
    assert!(
        e.starts_with(&format!("ERR '{rag}' is not a planner key: FAILED")),
        "{e}"
    );
    let miss = get_plan(&mut c, "wrongtype", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    let words = |ms: &str| -> Vec<Vec<u8>> {
        ["OKOME.UNLOCK", key.as_str(), token.as_str(), "FAILED", ms]
            .iter()
            .map(|w| w.as_bytes().to_vec())
            .collect()
    };
    let e = err(&mut c, &refs_b(&words("60001")));
    assert_eq!(e, errors::range("ms", "60001", 0, 60000, "ms"));
    // Another type at the record's name: nothing is written, the lock holds.
    redis::cmd("RPUSH")
        .arg(failed_of(&key))
        .arg("x")
        .query::<i64>(&mut c)
        .unwrap();
    let e = err(&mut c, &refs_b(&words("10")));
    assert!(e.starts_with("WRONGTYPE"), "{e}");
    assert_held(&mut c, &key, &token, 9000);
    // With 0 ms nothing is recorded, so the list is no obstacle.
    assert_eq!(unlock_failed(&mut c, &key, &token, &["0"]), 1);
}

fn refs_b(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

#[test]
fn a_failed_refresh_keeps_serving_the_plan_and_hands_out_no_other_refresh() {
    let s = Server::start();
    let mut c = s.conn();
    let zone = ["REFRESHAHEAD", "900000"];
    let miss = get_plan(&mut c, "refresh", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    plan_store(&mut c, &[&key, PLAN, "TOKEN", &token]);
    let refresh = get_plan(&mut c, "refresh", &zone);
    assert_eq!(refresh.status, "REFRESH", "{refresh:?}");
    let rt = refresh.token.clone().expect("a refresh token");
    assert_eq!(
        unlock_failed(&mut c, &key, &rt, &["300", "upstream 500"]),
        1
    );
    for _ in 0..3 {
        assert_hit(&get_plan(&mut c, "refresh", &zone), &key, PLAN);
    }
    assert!(!exists(&mut c, &lock_of(&key)));
    poll(Duration::from_secs(5), Duration::from_millis(20), || {
        let p = get_plan(&mut c, "refresh", &zone);
        if p.status == "REFRESH" {
            Ok(())
        } else {
            Err(format!("still {p:?}"))
        }
    });
}

#[test]
fn a_fenced_store_by_a_leader_whose_lock_expired_writes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["CONFIG", "SET", "okome.lock-ttl-min", "100"]);
    let a = get_plan(&mut c, "fence", &["LOCKTTL", "100"]);
    let ta = leader_token(&a, 100);
    let key = a.key.clone();
    poll(Duration::from_secs(5), Duration::from_millis(10), || {
        if exists(&mut c, &lock_of(&key)) {
            Err("the lock has not expired".to_string())
        } else {
            Ok(())
        }
    });
    let b = get_plan(&mut c, "fence", &[]);
    let tb = assert_miss(&b, 9000);
    let newer = r#"{"by":"b"}"#;
    plan_store(&mut c, &[&key, newer, "TOKEN", &tb]);
    let before = snapshot(&mut c);
    let fenced = plan_set(
        &mut c,
        &[
            &key, PLAN, "TOKEN", &ta, "FENCED", "AGENT", "ag", "WLIMIT", "5",
        ],
    );
    assert_eq!(fenced, ("FENCED".into(), None, None, 0));
    assert_eq!(snapshot(&mut c), before, "nothing written, nothing charged");
    assert_eq!(get(&mut c, &key).as_deref(), Some(newer));
    assert_eq!(counter(&mut c, "plans_fenced"), 1);
    // While the token holds the lock, FENCED stores as usual.
    let again = get_plan(&mut c, "fence 2", &[]);
    let t = assert_miss(&again, 9000);
    let stored = plan_set(&mut c, &[&again.key, PLAN, "TOKEN", &t, "FENCED"]);
    assert_eq!(stored, ("STORED".into(), Some(600_000), None, 1));
    assert_eq!(
        err(
            &mut c,
            &[b"OKOME.PLAN.SET", key.as_bytes(), b"{}", b"FENCED"]
        ),
        "ERR syntax error: FENCED needs TOKEN (it stores only while that token holds the lock)"
    );
}

#[test]
fn a_skipped_store_shares_its_plan_with_the_callers_waiting_for_it() {
    let s = Server::start();
    let mut c = s.conn();
    let miss = get_plan(&mut c, "shared", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    let (handles, rx) = followers(&s, "shared", 5);
    // Spend the agent's write budget, then store: SKIPPED.
    let w: Vec<i64> = redis::cmd("OKOME.WBUDGET")
        .arg(&["agent-7", "1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(w[0], 1);
    let set = plan_set(
        &mut c,
        &[
            &key, PLAN, "TOKEN", &token, "AGENT", "agent-7", "WLIMIT", "1",
        ],
    );
    assert_eq!(set, ("SKIPPED".into(), None, Some(0), 1));
    for p in replies(&rx, 5, Duration::from_secs(5)) {
        assert_eq!(
            p,
            Plan {
                status: "SHARED".into(),
                key: key.clone(),
                value: Some(PLAN.into()),
                ms: None,
                token: None,
                rate_remaining: None,
            }
        );
    }
    join(handles);
    // Not stored, and nobody took the lock over.
    assert!(!exists(&mut c, &key));
    assert!(!exists(&mut c, &lock_of(&key)));
    assert_eq!(counter(&mut c, "plans_shared"), 5);
    assert_eq!(counter(&mut c, "wait_woken_hit"), 5);
    assert_eq!(counter(&mut c, "plans_skipped"), 1);
    // A later caller computes it (it was never stored).
    assert_miss(&get_plan(&mut c, "shared", &[]), 9000);
}

#[test]
fn failures_and_fenced_stores_replicate_as_effects() {
    let mut p = Server::start_with(&[PRIMARY, AOF].concat());
    let r = replica_of(&p, &[], &[]);
    let mut pc = p.conn();
    let miss = get_plan(&mut pc, "replicated", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    assert_eq!(unlock_failed(&mut pc, &key, &token, &["60000", "boom"]), 1);
    let other = get_plan(&mut pc, "fenced", &[]);
    let t = assert_miss(&other, 9000);
    plan_store(&mut pc, &[&other.key, PLAN, "TOKEN", &t, "FENCED"]);
    let fenced = plan_set(&mut pc, &[&other.key, "{}", "TOKEN", &t, "FENCED"]);
    assert_eq!(fenced.0, "FENCED");
    replica_acked(&mut pc);
    let primary = dumps_at(&mut pc);
    let mut want = vec![other.key.clone(), failed_of(&key)];
    want.sort();
    assert_eq!(primary.keys().cloned().collect::<Vec<_>>(), want);
    drop(pc);
    assert_replicated_and_replayed(&mut p, &mut r.conn(), &primary);
}
