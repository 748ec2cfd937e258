//! `OKOME.PLAN.GET ... WAIT ms` and `REFRESHAHEAD ms` against real servers:
//! followers blocked on a held lock are woken by `PLAN.SET` (all of them,
//! `HIT`), by a release or an expiry (exactly one, `MISS` with the lock), or
//! time out (`LOCKED`); a heartbeat keeps them waiting; nothing leaks when a
//! blocked client disconnects; MULTI and Lua never block; hand-overs reach
//! replicas; and exactly one reader in the refresh zone gets `REFRESH`.
//!
//! Blocking is detected with deadlines (`INFO clients` or `CLIENT LIST`),
//! never with fixed sleeps.

use crate::support::*;

use redis::Connection;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

const PLAN: &str = r#"{"steps":["fetch","plan","apply"]}"#;

/// The tuple of these tests: `llama3:8b <prompt> v1.2.3 repo1`.
const TUPLE: Tuple = Tuple {
    model: "llama3:8b",
    toolset: "v1.2.3",
    repo: "repo1",
};

/// What a waiter thread reports: its index, its reply, when it arrived.
type Got = (usize, Result<Plan, String>, Instant);

/// Starts a thread that sends PLAN.GET `args` on its own connection (made
/// and optionally named before the thread starts) and reports the reply.
fn spawn_waiter(
    s: &Server,
    idx: usize,
    name: Option<&str>,
    args: Vec<String>,
    read_timeout: Duration,
    tx: Sender<Got>,
) -> JoinHandle<()> {
    let mut c = s.conn();
    c.set_read_timeout(Some(read_timeout)).expect("timeout");
    if let Some(n) = name {
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(n)
            .query::<()>(&mut c)
            .expect("CLIENT SETNAME");
    }
    thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let r = try_plan_get(&mut c, &refs(&args)).map_err(|e| error_text(&e));
            let at = Instant::now();
            let _ = tx.send((idx, r, at));
        })
        .expect("spawn waiter")
}

fn recv(rx: &Receiver<Got>, within: Duration, what: &str) -> (usize, Plan, Instant) {
    match rx.recv_timeout(within) {
        Ok((i, Ok(p), at)) => (i, p, at),
        Ok((i, Err(e), _)) => panic!("{what}: waiter {i} got an error: {e}"),
        Err(e) => panic!("{what}: no reply within {within:?} ({e})"),
    }
}

/// No waiter has replied by the end of `settle`.
fn assert_no_reply(rx: &Receiver<Got>, settle: Duration, what: &str) {
    thread::sleep(settle);
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        Ok((i, r, _)) => panic!("{what}: waiter {i} replied unexpectedly: {r:?}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        h.join().expect("waiter thread");
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn follower_gets_hit_within_milliseconds_of_plan_set() {
    let s = Server::start();
    let mut admin = s.conn();
    let mut leader = s.conn();
    let mut gaps = Vec::new();
    for round in 0..5 {
        let prompt = format!("hot prompt {round}");
        let miss = TUPLE.get(&mut leader, &prompt, &[]);
        let token = assert_miss(&miss, 9000);
        let key = miss.key.clone();

        let (tx, rx) = mpsc::channel();
        let h = spawn_waiter(
            &s,
            0,
            None,
            TUPLE.args(&prompt, &["WAIT", "5000"]),
            Duration::from_secs(10),
            tx,
        );
        wait_blocked(&mut admin, 1, Duration::from_secs(5));

        let json = format!(r#"{{"round":{round},"steps":["a","b"]}}"#);
        let before_set = Instant::now();
        let set = plan_store(&mut leader, &[&key, &json, "TOKEN", &token]);
        let (_, hit, at) = recv(&rx, Duration::from_secs(5), "follower");
        let gap = at.saturating_duration_since(before_set);
        assert_eq!(set, ("STORED".into(), 600_000, None, 1));
        assert_hit_ttl(&hit, &key, &json, 600_000);
        assert!(
            gap < Duration::from_millis(50),
            "round {round}: follower's HIT arrived {gap:?} after PLAN.SET was sent"
        );
        gaps.push(gap);
        h.join().unwrap();
        assert_eq!(blocked_clients(&mut admin), 0);
        assert!(!exists(&mut admin, &lock_of(&key)));
    }
    let max = gaps.iter().max().unwrap();
    println!("PLAN.SET -> follower HIT gaps: {gaps:?}; max {max:?}");
}

#[test]
fn two_hundred_waiters_all_answered_by_one_set() {
    const N: usize = 200;
    let s = Server::start();
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = TUPLE.get(&mut leader, "stampede", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();

    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            spawn_waiter(
                &s,
                i,
                None,
                TUPLE.args("stampede", &["WAIT", "10000"]),
                Duration::from_secs(15),
                tx.clone(),
            )
        })
        .collect();
    drop(tx);
    wait_blocked(&mut admin, N as i64, Duration::from_secs(8));
    assert_held(&mut admin, &key, &token, 9000);

    let before_set = Instant::now();
    let set = plan_store(&mut leader, &[&key, PLAN, "TOKEN", &token]);
    assert_eq!(set, ("STORED".into(), 600_000, None, 1));
    let mut seen = BTreeSet::new();
    let mut last = before_set;
    for _ in 0..N {
        let (i, p, at) = recv(&rx, Duration::from_secs(5), "200 waiters");
        assert_hit_ttl(&p, &key, PLAN, 600_000);
        assert!(seen.insert(i), "waiter {i} replied twice");
        last = last.max(at);
    }
    println!(
        "{N} waiters all answered {:?} after PLAN.SET was sent",
        last.saturating_duration_since(before_set)
    );
    join_all(handles);
    assert_eq!(blocked_clients(&mut admin), 0);
    assert!(!exists(&mut admin, &lock_of(&key)));
}

#[test]
fn wait_timeout_gives_locked_after_about_the_requested_time() {
    let s = Server::start();
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = TUPLE.get(&mut leader, "slow planner", &[]);
    let token = assert_miss(&miss, 9000);

    let mut c = s.conn();
    let t = Instant::now();
    let p = TUPLE.get(&mut c, "slow planner", &["WAIT", "300"]);
    let elapsed = t.elapsed();
    println!("WAIT 300 answered LOCKED after {elapsed:?}");
    assert_eq!(p.status, "LOCKED", "{p:?}");
    assert_eq!(p.key, miss.key);
    assert_eq!(p.value, None);
    assert_eq!(p.token, None);
    assert_eq!(p.rate_remaining, None);
    assert!(
        matches!(p.ms, Some(m) if m > 7000 && m < 9000),
        "ms is the lock's remaining TTL: {p:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(280) && elapsed < Duration::from_millis(1000),
        "WAIT 300 took {elapsed:?}"
    );
    // The timed-out follower left the lock alone and is no longer blocked.
    assert_held(&mut admin, &miss.key, &token, 9000);
    assert_eq!(blocked_clients(&mut admin), 0);
    // The connection is usable, and the leader finishes normally.
    let set = plan_store(&mut leader, &[&miss.key, PLAN, "TOKEN", &token]);
    assert_eq!(set, ("STORED".into(), 600_000, None, 1));
    assert_hit_ttl(
        &TUPLE.get(&mut c, "slow planner", &["WAIT", "300"]),
        &miss.key,
        PLAN,
        600_000,
    );
}

#[test]
fn wait_without_a_held_lock_changes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    let t = Instant::now();
    let miss = TUPLE.get(&mut c, "free", &["WAIT", "5000"]);
    let token = assert_miss(&miss, 9000);
    assert_held(&mut c, &miss.key, &token, 9000);
    assert_eq!(
        plan_store(&mut c, &[&miss.key, PLAN, "TOKEN", &token]),
        ("STORED".into(), 600_000, None, 1)
    );
    assert_hit_ttl(
        &TUPLE.get(&mut c, "free", &["WAIT", "5000"]),
        &miss.key,
        PLAN,
        600_000,
    );
    // The upper bound is accepted and does not block on a free lock either.
    let m2 = TUPLE.get(&mut c, "free 2", &["WAIT", "600000", "LOCKTTL", "8000"]);
    assert_miss(&m2, 8000);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn unlock_hands_the_lock_to_exactly_one_waiter() {
    let s = Server::start();
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = TUPLE.get(&mut leader, "handoff", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();

    // Five waiters, queued one after another so the FIFO order is known.
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..5 {
        handles.push(spawn_waiter(
            &s,
            i,
            None,
            TUPLE.args("handoff", &["WAIT", "10000"]),
            Duration::from_secs(15),
            tx.clone(),
        ));
        wait_blocked(&mut admin, i as i64 + 1, Duration::from_secs(5));
    }
    drop(tx);

    let unlocked = unlock(&mut leader, &key, &token);
    assert_eq!(unlocked, 1);
    let (first, p, _) = recv(&rx, Duration::from_secs(3), "handoff");
    assert_eq!(first, 0, "FIFO: the first waiter gets the lock: {p:?}");
    assert_eq!(p.key, key);
    let new_token = assert_miss(&p, 9000);
    assert_ne!(new_token, token);
    assert_held(&mut admin, &key, &new_token, 9000);
    // Exactly one: the other four keep waiting for the new leader.
    assert_eq!(blocked_clients(&mut admin), 4);
    assert_no_reply(&rx, Duration::from_millis(150), "after UNLOCK");
    assert_eq!(blocked_clients(&mut admin), 4);
    assert_held(&mut admin, &key, &new_token, 9000);
    // The old leader's token is dead, and a failed UNLOCK wakes nobody.
    let dead = unlock(&mut leader, &key, &token);
    assert_eq!(dead, 0);
    assert_no_reply(&rx, Duration::from_millis(50), "after a stale UNLOCK");
    assert_held(&mut admin, &key, &new_token, 9000);

    let mut nl = s.conn();
    let set = plan_store(&mut nl, &[&key, PLAN, "TOKEN", &new_token]);
    assert_eq!(set, ("STORED".into(), 600_000, None, 1));
    let mut seen = BTreeSet::new();
    while seen.len() < 4 {
        let (i, p, _) = recv(&rx, Duration::from_secs(3), "after the new PLAN.SET");
        assert_hit_ttl(&p, &key, PLAN, 600_000);
        assert!(i != 0 && seen.insert(i), "waiter {i} replied twice");
    }
    join_all(handles);
    assert_eq!(blocked_clients(&mut admin), 0);
    assert!(!exists(&mut admin, &lock_of(&key)));
}

#[test]
fn waiters_are_per_database() {
    let s = Server::start();
    let mut admin = s.conn();
    let mut l0 = s.conn();
    let mut l1 = s.conn();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut l1).unwrap();
    let m0 = TUPLE.get(&mut l0, "per db", &[]);
    let t0 = assert_miss(&m0, 9000);
    let m1 = TUPLE.get(&mut l1, "per db", &[]);
    let t1 = assert_miss(&m1, 9000);
    assert_eq!(m0.key, m1.key);
    let key = m0.key.clone();

    let (tx, rx) = mpsc::channel();
    let h = spawn_waiter(
        &s,
        0,
        None,
        TUPLE.args("per db", &["WAIT", "10000"]),
        Duration::from_secs(15),
        tx,
    );
    wait_blocked(&mut admin, 1, Duration::from_secs(5));
    // Releasing and storing in db 1 does not touch the db-0 waiter.
    let u = unlock(&mut l1, &key, &t1);
    assert_eq!(u, 1);
    assert!(!exists(&mut l1, &lock_of(&key)), "no hand-over in db 1");
    assert_eq!(
        plan_store(&mut l1, &[&key, r#"{"db":1}"#]),
        ("STORED".into(), 600_000, None, 0)
    );
    assert_no_reply(&rx, Duration::from_millis(100), "db 1 events");
    assert_eq!(blocked_clients(&mut admin), 1);
    // Releasing in db 0 hands the db-0 lock over.
    let u = unlock(&mut l0, &key, &t0);
    assert_eq!(u, 1);
    let (_, p, _) = recv(&rx, Duration::from_secs(3), "db 0 hand-over");
    let nt = assert_miss(&p, 9000);
    assert_held(&mut l0, &key, &nt, 9000);
    h.join().unwrap();
    assert_eq!(get(&mut l1, &key).as_deref(), Some(r#"{"db":1}"#));
}

#[test]
fn skipped_plan_set_that_releases_shares_the_plan_and_leaves_the_lock_free() {
    let s = Server::start();
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = TUPLE.get(&mut leader, "skipped", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    let (tx, rx) = mpsc::channel();
    let h = spawn_waiter(
        &s,
        0,
        None,
        TUPLE.args("skipped", &["WAIT", "10000", "LOCKTTL", "8000"]),
        Duration::from_secs(15),
        tx,
    );
    wait_blocked(&mut admin, 1, Duration::from_secs(5));
    // Spend the agent's write budget, then a PLAN.SET that is SKIPPED but
    // releases the lock.
    let w: Vec<i64> = redis::cmd("OKOME.WBUDGET")
        .arg(&["agent-7", "1"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(w[0], 1);
    let set = plan_set(
        &mut leader,
        &[
            &key, PLAN, "TOKEN", &token, "AGENT", "agent-7", "WLIMIT", "1",
        ],
    );
    assert_eq!(set, ("SKIPPED".into(), None, Some(0), 1));
    // The waiter gets the plan that was not stored (SHARED), and does not
    // take the lock over to compute it again.
    let (_, p, _) = recv(&rx, Duration::from_secs(3), "skipped set");
    assert_eq!(
        (p.status.as_str(), p.value.as_deref()),
        ("SHARED", Some(PLAN))
    );
    assert_eq!((p.ms, p.token), (None, None));
    assert!(!exists(&mut admin, &lock_of(&key)));
    assert!(!exists(&mut admin, &key));
    h.join().unwrap();
}

#[test]
fn blocked_client_that_disconnects_leaks_nothing() {
    let s = Server::start();
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = TUPLE.get(&mut leader, "ghosts", &["LOCKTTL", "10000"]);
    let token = assert_miss(&miss, 10_000);
    let key = miss.key.clone();
    let mut words = vec!["OKOME.PLAN.GET".to_string()];
    words.extend(TUPLE.args("ghosts", &["WAIT", "10000"]));
    let cmd = resp_command(&refs(&words));

    let block_and_drop = |admin: &mut Connection, base_clients: i64| {
        let mut sock = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        sock.write_all(&cmd).expect("send PLAN.GET");
        wait_blocked(admin, 1, Duration::from_secs(5));
        drop(sock);
        wait_blocked(admin, 0, Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = info_i64(admin, "clients", "connected_clients");
            if n == base_clients {
                break;
            }
            assert!(Instant::now() < deadline, "connected_clients {n}");
            thread::sleep(Duration::from_millis(1));
        }
    };
    let base_clients = info_i64(&mut admin, "clients", "connected_clients");
    // Warm-up: a few commands and a few blocked-then-dropped clients.
    for _ in 0..3 {
        block_and_drop(&mut admin, base_clients);
        let _ = blocked_clients(&mut admin);
        let _ = info_text(&mut admin, "memory");
    }
    let base_mem = info_i64(&mut admin, "memory", "used_memory");
    let t = Instant::now();
    for _ in 0..50 {
        block_and_drop(&mut admin, base_clients);
    }
    println!("50 block+disconnect cycles in {:?}", t.elapsed());
    assert_eq!(blocked_clients(&mut admin), 0);
    let mem = info_i64(&mut admin, "memory", "used_memory");
    println!("used_memory: baseline {base_mem}, after 50 ghosts {mem}");
    assert!(
        (mem - base_mem).abs() < 200 * 1024,
        "used_memory {base_mem} -> {mem}"
    );
    assert_held(&mut admin, &key, &token, 10_000);

    // No ghost is handed the lock: after the UNLOCK the lock is simply gone.
    let u = unlock(&mut leader, &key, &token);
    assert_eq!(u, 1);
    assert!(
        !exists(&mut admin, &lock_of(&key)),
        "a disconnected waiter was handed the lock: {:?}",
        get(&mut admin, &lock_of(&key))
    );
    // Everything still works normally.
    let again = TUPLE.get(&mut leader, "ghosts", &["WAIT", "10000"]);
    let t2 = assert_miss(&again, 9000);
    assert_eq!(
        plan_store(&mut leader, &[&key, PLAN, "TOKEN", &t2]),
        ("STORED".into(), 600_000, None, 1)
    );
    assert_hit_ttl(
        &TUPLE.get(&mut admin, "ghosts", &["WAIT", "10000"]),
        &key,
        PLAN,
        600_000,
    );
    assert!(!exists(&mut admin, &lock_of(&key)));
    assert!(!s.log().contains("okome internal error"), "{}", s.log());
}

#[test]
fn wait_inside_multi_and_lua_does_not_block() {
    let s = Server::start();
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = TUPLE.get(&mut leader, "in multi", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    let mut c = s.conn();

    let t = Instant::now();
    let ok: String = redis::cmd("MULTI").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let queued: String = redis::cmd("OKOME.PLAN.GET")
        .arg(refs(&TUPLE.args("in multi", &["WAIT", "3000"])))
        .query(&mut c)
        .unwrap();
    assert_eq!(queued, "QUEUED");
    let exec: Vec<PlanReply> = redis::cmd("EXEC").query(&mut c).unwrap();
    let elapsed = t.elapsed();
    println!("MULTI/PLAN.GET WAIT 3000/EXEC took {elapsed:?}");
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let (st, k, v, ms, tok, rate) = exec[0].clone();
    assert_eq!(
        (st.as_str(), k.as_str(), v, tok, rate),
        ("LOCKED", key.as_str(), None, None, None)
    );
    assert!(matches!(ms, Some(m) if m > 7000 && m <= 9000), "{ms:?}");
    assert_eq!(blocked_clients(&mut admin), 0);

    let script =
        "return redis.call('OKOME.PLAN.GET', ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'WAIT', '3000')";
    let t = Instant::now();
    let r: redis::RedisResult<PlanReply> = redis::cmd("EVAL")
        .arg(script)
        .arg(0)
        .arg(refs(&TUPLE.args("in multi", &[])))
        .query(&mut c);
    let elapsed = t.elapsed();
    println!("EVAL redis.call(PLAN.GET WAIT 3000) took {elapsed:?}: {r:?}");
    if valkey_version(&mut c).is_some() {
        // Valkey 9: okome commands refuse themselves inside scripts (no
        // room to declare their keys there), without blocking.
        let e = error_text(&r.unwrap_err());
        assert!(e.contains("on Valkey 9 it cannot from a script"), "{e}");
        assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
        assert_eq!(blocked_clients(&mut admin), 0);
        return;
    }
    let (st, k, v, ms, tok, rate) = r.expect("OKOME.PLAN.GET is callable from Lua");
    assert_eq!(
        (st.as_str(), k.as_str(), v, tok, rate),
        ("LOCKED", key.as_str(), None, None, None)
    );
    assert!(matches!(ms, Some(m) if m > 7000 && m <= 9000), "{ms:?}");
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    assert_eq!(blocked_clients(&mut admin), 0);

    // The lock is untouched; on a free lock MULTI and Lua behave normally.
    assert_held(&mut admin, &key, &token, 9000);
    assert_eq!(
        plan_store(&mut leader, &[&key, PLAN, "TOKEN", &token]),
        ("STORED".into(), 600_000, None, 1)
    );
    let r: PlanReply = redis::cmd("EVAL")
        .arg(script)
        .arg(0)
        .arg(refs(&TUPLE.args("in multi", &[])))
        .query(&mut c)
        .unwrap();
    assert_eq!((r.0.as_str(), r.2.as_deref()), ("HIT", Some(PLAN)));
}

#[test]
fn twenty_readers_in_the_refresh_zone_give_exactly_one_refresh() {
    const N: usize = 20;
    let s = Server::start();
    let mut admin = s.conn();
    let key: String = redis::cmd("OKOME.KEY")
        .arg("planner")
        .arg(refs(&TUPLE.args("aging plan", &[])))
        .query(&mut admin)
        .unwrap();
    assert_eq!(
        plan_store(&mut admin, &[&key, PLAN, "TTL", "300"]),
        ("STORED".into(), 300_000, None, 0)
    );

    let readers = |opts: &'static [&'static str]| -> Vec<(Plan, Connection)> {
        race(&s, N, move |_, mut c| {
            (TUPLE.get(&mut c, "aging plan", opts), c)
        })
    };

    let mut replies = readers(&["REFRESHAHEAD", "900000"]);
    let lock_value = get(&mut admin, &lock_of(&key));
    let pos: Vec<usize> = (0..N)
        .filter(|&i| replies[i].0.status == "REFRESH")
        .collect();
    assert_eq!(
        pos.len(),
        1,
        "{:?}",
        replies.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    let (refresh, mut rc) = replies.swap_remove(pos[0]);
    assert_eq!(refresh.key, key);
    assert_eq!(refresh.value.as_deref(), Some(PLAN));
    assert!(
        matches!(refresh.ms, Some(m) if m > 298_000 && m <= 300_000),
        "ms is the plan's PTTL: {refresh:?}"
    );
    let token = refresh.token.clone().expect("REFRESH carries a token");
    assert_token(&token);
    assert_eq!(lock_value.as_deref(), Some(token.as_str()));
    assert_held(&mut admin, &key, &token, 9000);
    for (p, _) in &replies {
        assert_hit_ttl(p, &key, PLAN, 300_000);
    }
    // While the refresher holds the lock, everyone keeps getting HIT.
    for (p, _) in readers(&["REFRESHAHEAD", "900000"]) {
        assert_hit_ttl(&p, &key, PLAN, 300_000);
    }
    assert_held(&mut admin, &key, &token, 9000);

    // The refresher stores the new plan with its token: released.
    let new_plan = r#"{"steps":["fetch","plan","apply","verify"]}"#;
    assert_eq!(
        plan_store(&mut rc, &[&key, new_plan, "TOKEN", &token]),
        ("STORED".into(), 600_000, None, 1)
    );
    assert!(!exists(&mut admin, &lock_of(&key)));
    assert_hit_ttl(
        &TUPLE.get(&mut admin, "aging plan", &[]),
        &key,
        new_plan,
        600_000,
    );

    // The new plan (600 s left) is still inside a 900 s zone, but without
    // REFRESHAHEAD, or with REFRESHAHEAD 0, nobody ever gets REFRESH.
    for opts in [&[][..], &["REFRESHAHEAD", "0"][..]] {
        for (p, _) in readers(opts) {
            assert_hit_ttl(&p, &key, new_plan, 600_000);
        }
        assert!(!exists(&mut admin, &lock_of(&key)), "{opts:?}");
    }
    // Outside the zone (about 600 s left, not below 500 s): HIT, no lock.
    assert_hit_ttl(
        &TUPLE.get(&mut admin, "aging plan", &["REFRESHAHEAD", "500000"]),
        &key,
        new_plan,
        600_000,
    );
    assert!(!exists(&mut admin, &lock_of(&key)));
}

#[test]
fn wait_and_refresh_errors() {
    let s = Server::start();
    let mut c = s.conn();
    // Some state: a held lock on the tuple the errors use, and a plan.
    let miss = TUPLE.get(&mut c, "errors", &[]);
    assert_miss(&miss, 9000);
    let other: String = redis::cmd("OKOME.KEY")
        .arg("planner")
        .arg(refs(&TUPLE.args("other", &[])))
        .query(&mut c)
        .unwrap();
    plan_store(&mut c, &[&other, PLAN]);
    let before = snapshot(&mut c);

    let cases: &[(&[&str], &str)] = &[
        (
            &["WAIT", "0"],
            "ERR wait 0 is out of range: must be between 1 and 600000 ms",
        ),
        (
            &["WAIT", "-1"],
            "ERR wait -1 is out of range: must be between 1 and 600000 ms",
        ),
        (
            &["WAIT", "600001"],
            "ERR wait 600001 is out of range: must be between 1 and 600000 ms",
        ),
        (&["WAIT", "x"], "ERR wait is not an integer or out of range"),
        (
            &["WAIT", "99999999999999999999"],
            "ERR wait is not an integer or out of range",
        ),
        (&["WAIT"], "ERR syntax error: option WAIT needs a value"),
        (
            &["WAIT", "10", "NOLOCK"],
            "ERR syntax error: WAIT and NOLOCK cannot be combined (a waiter may be handed the lock)",
        ),
        (
            &["NOLOCK", "WAIT", "10"],
            "ERR syntax error: WAIT and NOLOCK cannot be combined (a waiter may be handed the lock)",
        ),
        (
            &["REFRESHAHEAD", "900001"],
            "ERR refreshahead 900001 is out of range: must be between 0 and 900000 ms",
        ),
        (
            &["REFRESHAHEAD", "-1"],
            "ERR refreshahead -1 is out of range: must be between 0 and 900000 ms",
        ),
        (
            &["REFRESHAHEAD", "x"],
            "ERR refreshahead is not an integer or out of range",
        ),
        (
            &["REFRESHAHEAD", "10", "NOLOCK"],
            "ERR syntax error: REFRESHAHEAD and NOLOCK cannot be combined (a refresh takes the lock)",
        ),
    ];
    for (opts, want) in cases {
        let a = TUPLE.args("errors", opts);
        let mut full: Vec<&[u8]> = vec![b"OKOME.PLAN.GET"];
        full.extend(a.iter().map(|x| x.as_bytes()));
        let t = Instant::now();
        let e = err(&mut c, &full);
        assert_eq!(&e, want, "{opts:?}");
        assert!(t.elapsed() < Duration::from_millis(500), "{opts:?} blocked");
        assert_eq!(blocked_clients(&mut c), 0);
    }
    assert_eq!(snapshot(&mut c), before, "an error wrote something");
    // REFRESHAHEAD 0 with NOLOCK is fine (no refresh, no lock).
    let p = TUPLE.get(&mut c, "other", &["REFRESHAHEAD", "0", "NOLOCK"]);
    assert_hit_ttl(&p, &other, PLAN, 600_000);
    assert_eq!(snapshot(&mut c), before);
}

// ----------------------------------------------------- slow: ~8.5 s in all
//
// Lock expiry, heartbeat and replication each need a lock to (almost)
// expire, which takes 8 s at the shortest lock TTL; the three scenarios run
// concurrently on their own keys so the test stays well under 20 s.

/// The replica holds `key:lock` = `token` with a PTTL within 50 ms of the
/// primary's.
fn assert_lock_replicated(p: &mut Connection, r: &mut Connection, key: &str, token: &str) {
    let lk = lock_of(key);
    assert_eq!(get(p, &lk).as_deref(), Some(token), "primary {lk}");
    assert_eq!(get(r, &lk).as_deref(), Some(token), "replica {lk}");
    let p1 = pttl(p, &lk);
    let rt = pttl(r, &lk);
    let p2 = pttl(p, &lk);
    assert!(p1 > 0 && rt > 0, "{lk}: primary {p1}, replica {rt}");
    assert!(
        rt <= p1 + 50 && rt >= p2 - 50,
        "{lk}: replica PTTL {rt} not within 50 ms of the primary's {p1}..{p2}"
    );
}

/// Test 5 (and 11, expiry part): the leader dies; at the lock's expiry
/// exactly one waiter — the first — is handed the lock, on the replica too.
fn lock_expiry_hands_the_lock_to_exactly_one_waiter(primary: &Server, replica: &Server) {
    let mut admin = primary.conn();
    let mut r = replica.conn();
    let mut leader = primary.conn();
    let miss = TUPLE.get(&mut leader, "dead leader", &["LOCKTTL", "8000"]);
    let t0 = Instant::now();
    let token = assert_miss(&miss, 8000);
    let key = miss.key.clone();
    drop(leader); // it "dies": never stores, never releases

    let names: Vec<String> = (0..3).map(|i| format!("expiry-{i}")).collect();
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (i, n) in names.iter().enumerate() {
        handles.push(spawn_waiter(
            primary,
            i,
            Some(n),
            TUPLE.args("dead leader", &["WAIT", "15000"]),
            Duration::from_secs(20),
            tx.clone(),
        ));
        wait_names_blocked(&mut admin, &names[..=i], Duration::from_secs(5));
    }
    drop(tx);
    assert_held(&mut admin, &key, &token, 8000);

    let (first, p, at) = recv(&rx, Duration::from_secs(12), "lock expiry");
    let elapsed = at.saturating_duration_since(t0);
    println!("lock expiry hand-over {elapsed:?} after the leader's MISS (LOCKTTL 8000)");
    assert_eq!(first, 0, "FIFO: {p:?}");
    assert_eq!(p.key, key);
    let nt = assert_miss(&p, 9000);
    assert_ne!(nt, token);
    assert!(
        elapsed >= Duration::from_millis(7900) && elapsed < Duration::from_millis(9000),
        "hand-over {elapsed:?} after the leader's MISS"
    );
    assert_held(&mut admin, &key, &nt, 9000);
    // Exactly one: the others are still blocked.
    assert_no_reply(&rx, Duration::from_millis(150), "after the expiry");
    let b = blocked_names(&mut admin);
    assert!(
        b.contains(&names[1]) && b.contains(&names[2]) && !b.contains(&names[0]),
        "{b:?}"
    );

    // Replicated: the replica holds the waiter's token with the same expiry.
    replica_acked(&mut admin);
    assert_lock_replicated(&mut admin, &mut r, &key, &nt);

    // Clean up: the new leader stores; the two others get HIT.
    let mut nl = primary.conn();
    assert_eq!(
        plan_store(&mut nl, &[&key, PLAN, "TOKEN", &nt]),
        ("STORED".into(), 600_000, None, 1)
    );
    for _ in 0..2 {
        let (i, p, _) = recv(&rx, Duration::from_secs(3), "after PLAN.SET");
        assert!(i == 1 || i == 2, "{i}");
        assert_hit_ttl(&p, &key, PLAN, 600_000);
    }
    join_all(handles);
    replica_acked(&mut admin);
    assert_eq!(get(&mut r, &key).as_deref(), Some(PLAN));
    assert!(!exists(&mut r, &lock_of(&key)));
}

/// Test 11, UNLOCK part: the hand-over on release is replicated.
fn unlock_handoff_is_replicated(primary: &Server, replica: &Server) {
    let mut admin = primary.conn();
    let mut r = replica.conn();
    let mut leader = primary.conn();
    let miss = TUPLE.get(&mut leader, "released", &[]);
    let token = assert_miss(&miss, 9000);
    let key = miss.key.clone();
    let name = "unlock-0".to_string();
    let (tx, rx) = mpsc::channel();
    let h = spawn_waiter(
        primary,
        0,
        Some(&name),
        TUPLE.args("released", &["WAIT", "10000", "LOCKTTL", "10000"]),
        Duration::from_secs(15),
        tx,
    );
    wait_names_blocked(&mut admin, &[name], Duration::from_secs(5));
    let u = unlock(&mut leader, &key, &token);
    assert_eq!(u, 1);
    let (_, p, _) = recv(&rx, Duration::from_secs(3), "UNLOCK hand-over");
    let nt = assert_miss(&p, 10_000);
    h.join().unwrap();
    replica_acked(&mut admin);
    assert_lock_replicated(&mut admin, &mut r, &key, &nt);
    assert_eq!(
        plan_store(&mut leader, &[&key, PLAN, "TOKEN", &nt]),
        ("STORED".into(), 600_000, None, 1)
    );
    replica_acked(&mut admin);
    assert_eq!(get(&mut r, &key).as_deref(), Some(PLAN));
    assert!(!exists(&mut r, &lock_of(&key)));
}

/// Test 6: a leader that extends its lock keeps its waiters waiting past the
/// original expiry.
fn a_heartbeat_keeps_waiters_waiting(s: &Server) {
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = TUPLE.get(&mut leader, "heartbeat", &["LOCKTTL", "8000"]);
    let t0 = Instant::now();
    let token = assert_miss(&miss, 8000);
    let key = miss.key.clone();
    let name = "heartbeat-0".to_string();
    let (tx, rx) = mpsc::channel();
    let h = spawn_waiter(
        s,
        0,
        Some(&name),
        TUPLE.args("heartbeat", &["WAIT", "12000"]),
        Duration::from_secs(20),
        tx,
    );
    wait_names_blocked(
        &mut admin,
        std::slice::from_ref(&name),
        Duration::from_secs(5),
    );

    thread::sleep(Duration::from_millis(5000).saturating_sub(t0.elapsed()));
    assert_no_reply(&rx, Duration::ZERO, "before the heartbeat");
    let ext: i64 = redis::cmd("OKOME.LOCK")
        .arg(&key)
        .arg(&["TTL", "8000", "TOKEN", &token])
        .query(&mut leader)
        .unwrap();
    assert_eq!(ext, 1);

    // Past the original expiry (8 s): still waiting, lock still the leader's.
    thread::sleep(Duration::from_millis(8500).saturating_sub(t0.elapsed()));
    assert_no_reply(&rx, Duration::ZERO, "at 8.5 s");
    assert!(
        blocked_names(&mut admin).contains(&name),
        "not blocked at 8.5 s"
    );
    assert_held(&mut admin, &key, &token, 8000 - 3000);

    let before_set = Instant::now();
    assert_eq!(
        plan_store(&mut leader, &[&key, PLAN, "TOKEN", &token]),
        ("STORED".into(), 600_000, None, 1)
    );
    let (_, p, at) = recv(&rx, Duration::from_secs(3), "after the heartbeat");
    assert_hit_ttl(&p, &key, PLAN, 600_000);
    println!(
        "heartbeat: waiter HIT {:?} after PLAN.SET, {:?} after start",
        at.saturating_duration_since(before_set),
        at.saturating_duration_since(t0)
    );
    h.join().unwrap();
}

#[test]
fn lock_expiry_heartbeat_and_replicated_handoffs() {
    let primary = Server::start_with(PRIMARY);
    let replica = replica_of(&primary, &[], &[]);
    let solo = Server::start();
    let t = Instant::now();
    thread::scope(|sc| {
        let a = sc.spawn(|| lock_expiry_hands_the_lock_to_exactly_one_waiter(&primary, &replica));
        let b = sc.spawn(|| a_heartbeat_keeps_waiters_waiting(&solo));
        let c = sc.spawn(|| unlock_handoff_is_replicated(&primary, &replica));
        let results = [
            ("lock_expiry_hands_the_lock_to_exactly_one_waiter", a.join()),
            ("a_heartbeat_keeps_waiters_waiting", b.join()),
            ("handoff_is_replicated (UNLOCK)", c.join()),
        ];
        let failed: Vec<&str> = results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| *n)
            .collect();
        if !failed.is_empty() {
            eprintln!("primary log:\n{}", primary.log());
            eprintln!("replica log:\n{}", replica.log());
            panic!("failed scenarios: {failed:?}");
        }
    });
    println!("slow scenarios took {:?}", t.elapsed());
}

/// A waiter that timed out or disconnected leaves no timer behind: the
/// module can be unloaded at once (Redis refuses while a timer is pending).
#[test]
fn waiters_leave_no_timer_behind() {
    let s = Server::start_with(&["--enable-module-command", "yes"]);
    let mut c = s.conn();
    let m = plan_get(&mut c, &["m", "p", "t", "r"]);
    assert_eq!(m.status, "MISS");
    let timed_out = plan_get(&mut c, &["m", "p", "t", "r", "WAIT", "50"]);
    assert_eq!(timed_out.status, "LOCKED");
    let mut gone = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let args = ["OKOME.PLAN.GET", "m", "p", "t", "r", "WAIT", "10000"];
    let mut resp = format!("*{}\r\n", args.len());
    for a in args {
        resp += &format!("${}\r\n{a}\r\n", a.len());
    }
    gone.write_all(resp.as_bytes()).unwrap();
    wait_blocked(&mut c, 1, Duration::from_secs(5));
    drop(gone);
    wait_blocked(&mut c, 0, Duration::from_secs(5));
    let ok: String = redis::cmd("MODULE")
        .arg(&["UNLOAD", "okome"])
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK", "no timer, no blocked client left behind");
    // Loaded again, it makes its shared strings afresh: writes and their
    // replication work as before.
    let path = module_path();
    let ok: String = redis::cmd("MODULE")
        .arg("LOAD")
        .arg(path.to_str().unwrap())
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    let d: Vec<i64> = redis::cmd("OKOME.RATE")
        .arg(&["a", "2", "60"])
        .query(&mut c)
        .unwrap();
    assert_eq!(d, vec![1, 1, 0, 60000]);
    let pttl = pttl(&mut c, "okome:budget:rate:{a}");
    assert!((59_000..=60_000).contains(&pttl), "PTTL {pttl}");
}
