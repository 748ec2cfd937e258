//! The server's life around blocked `OKOME.PLAN.GET ... WAIT` clients:
//! okome never aborts `redis-server`, and every follower is answered exactly
//! once, whatever happens to the node while it waits.
//!
//! - Writes only when the node may write: across `CLIENT PAUSE WRITE`,
//!   `CLIENT PAUSE ALL`, a `FAILOVER` stuck on a stopped replica, a replica
//!   (writable, or turned read-only) and `DEBUG RELOAD` loading, the lock
//!   expires but nobody is handed it; the follower stays blocked until the
//!   node may write again (then it gets `MISS` with a token, and the lock
//!   holds that token) or until its own deadline (`LOCKED`). The first test
//!   is the reproduction of the abort (`ASSERTION FAILED ... de != NULL`)
//!   of the build before the wait rewrite.
//! - A failure published into `CLIENT PAUSE ALL` (one `FAILED` each), and
//!   its record across `DEBUG RELOAD`.
//! - `FLUSHALL`, `FLUSHDB`, `SWAPDB`, `DEBUG RELOAD` and `MODULE UNLOAD`
//!   (refused while clients wait, fine after) with waiters.
//! - The wait counters of `INFO okome` add up, CLIENT UNBLOCK / KILL are
//!   counted, and a reload starts them from zero.
//! - A foreign lock without a TTL is healed to the lock default.
//! - Memory: a hit is served when memory is full; a miss that must take a
//!   lock is refused with `OOM`; evicted budget windows are counted.
//! - Keyspace notifications are those of the equivalent Redis commands, and
//!   what writes nothing breaks no `WATCH`.
//!
//! Every follower runs on its own raw connection that pipelines a `PING`
//! behind its `PLAN.GET`, so its replies must be exactly `[plan reply,
//! PONG]`: a lost reply shows up as `PONG` first (or a read timeout), an
//! extra one as something else where `PONG` belongs. Blocking is detected by
//! polling `CLIENT LIST`, never by fixed sleeps; the sleeps that remain wait
//! for a lock's expiry on purpose.

use crate::support::*;

use redis::Connection;
use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

const PLAN: &str = r#"{"steps":["fetch","plan","apply"]}"#;

/// How late a `LOCKED` at the deadline may arrive (the contract says about
/// 20 ms whatever `hz` is; the rest is slack for a loaded 2-core machine).
const LATE: Duration = Duration::from_millis(50);

/// A server for these tests: DEBUG and MODULE allowed, and lock TTLs down
/// to 100 ms so that locks can expire quickly.
fn server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--enable-debug-command",
        "yes",
        "--enable-module-command",
        "yes",
    ];
    args.extend_from_slice(extra);
    Server::start_full(&args, &["lock-ttl-min", "100"])
}

/// A follower was handed the lock: `MISS` with a token, and the lock holds
/// that token now with a PTTL close to `lock_ttl`. Returns the token.
fn assert_handed(c: &mut Connection, p: &Plan, key: &str, lock_ttl: i64) -> String {
    assert_eq!(p.status, "MISS", "{p:?}");
    assert_eq!(p.key, key, "{p:?}");
    assert_eq!(p.value, None, "{p:?}");
    assert_eq!(p.ms, Some(lock_ttl), "{p:?}");
    let t = p.token.clone().expect("a token on a hand-over");
    assert_token(&t);
    // The lock holds the token the follower received.
    assert_held(c, key, &t, lock_ttl);
    t
}

fn assert_locked(p: &Plan, key: &str) {
    assert_eq!(p.status, "LOCKED", "{p:?}");
    assert_eq!(p.key, key, "{p:?}");
    assert_eq!(
        (p.value.as_deref(), p.token.as_deref()),
        (None, None),
        "{p:?}"
    );
}

/// `elapsed` is a deadline of `wait_ms` served in time.
fn assert_at_deadline(elapsed: Duration, wait_ms: u64, what: &str) {
    let w = Duration::from_millis(wait_ms);
    assert!(
        elapsed + Duration::from_millis(2) >= w && elapsed <= w + LATE,
        "{what}: LOCKED after {elapsed:?}, want WAIT {wait_ms} ms (+{LATE:?} at most)"
    );
}

fn sleep_until(t: Instant) {
    thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// A follower: its own connection, named, on which `PLAN.GET ... WAIT` and a
/// `PING` are pipelined.
struct Follower {
    name: String,
    conn: RawConn,
    sent: Instant,
    answered: bool,
}

impl Follower {
    /// Sends `PLAN.GET m <prompt> t r <opts>` + `PING` in database `db`.
    fn start_db(port: u16, db: i64, name: &str, prompt: &str, opts: &[&str]) -> Follower {
        let mut conn = RawConn::connect(port);
        let t = Duration::from_secs(10);
        assert!(conn.call(&["CLIENT", "SETNAME", name], t).text().is_some());
        if db != 0 {
            assert!(conn.call(&["SELECT", &db.to_string()], t).text().is_some());
        }
        let mut get = vec!["OKOME.PLAN.GET".to_string()];
        get.extend(tuple(prompt, opts));
        let sent = Instant::now();
        conn.send_pipeline(&[get, vec!["PING".into()]]);
        Follower {
            name: name.into(),
            conn,
            sent,
            answered: false,
        }
    }

    fn start(port: u16, name: &str, prompt: &str, opts: &[&str]) -> Follower {
        Follower::start_db(port, 0, name, prompt, opts)
    }

    /// Checks the `PONG` that must follow the single reply.
    fn finish(&mut self, r: &Resp) -> Result<Plan, String> {
        assert!(!self.answered, "{}: answered twice", self.name);
        self.answered = true;
        assert!(
            !r.is_pong(),
            "{}: PONG arrived before any PLAN.GET reply: the reply was lost",
            self.name
        );
        let plan = r.plan();
        if let Err(e) = &plan {
            assert!(
                r.error().is_some(),
                "{}: not a PLAN.GET reply: {e}",
                self.name
            );
        }
        match self.conn.read(Duration::from_secs(5)) {
            Ok(p) if p.is_pong() => {}
            other => panic!(
                "{}: after the reply {r:?}, expected PONG, got {other:?} (a second reply?)",
                self.name
            ),
        }
        plan
    }

    /// The single reply (`Err` for an error reply), and when it came.
    fn reply(&mut self, within: Duration) -> (Result<Plan, String>, Duration) {
        let r = self.conn.read(within).unwrap_or_else(|e| {
            panic!(
                "{}: no reply within {within:?} ({e}): a blocked client was never answered",
                self.name
            )
        });
        let at = self.sent.elapsed();
        (self.finish(&r), at)
    }

    /// The single reply if it has arrived.
    fn try_reply(&mut self) -> Option<(Result<Plan, String>, Duration)> {
        if self.answered {
            return None;
        }
        let r = self
            .conn
            .try_read()
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))?;
        let at = self.sent.elapsed();
        Some((self.finish(&r), at))
    }

    /// No reply yet.
    fn assert_waiting(&mut self, what: &str) {
        match self.conn.try_read() {
            Ok(None) => {}
            other => panic!("{what}: {} replied already: {other:?}", self.name),
        }
    }

    /// The connection was closed without any reply.
    fn assert_closed_silently(&mut self) {
        match self.conn.read(Duration::from_secs(5)) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            other => panic!(
                "{}: expected the connection closed, got {other:?}",
                self.name
            ),
        }
    }
}

/// Polls `CLIENT LIST` until every follower is blocked; fails at once with
/// the reply of a follower that was answered instead of blocking.
fn wait_followers_blocked(admin: &mut Connection, fs: &mut [&mut Follower]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let blocked = blocked_client_ids(admin);
        if fs.iter().all(|f| blocked.contains(&f.conn.id)) {
            return;
        }
        for f in fs.iter_mut() {
            if !blocked.contains(&f.conn.id) {
                if let Some(r) = f
                    .conn
                    .try_read()
                    .unwrap_or_else(|e| panic!("{}: {e}", f.name))
                {
                    panic!("{} was answered instead of blocking: {r:?}", f.name);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "followers not blocked within 5 s; blocked: {blocked:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// A primary and a writable replica (`replica-read-only no`) in sync.
fn primary_and_writable_replica() -> (Server, Server) {
    let primary = server(PRIMARY);
    let pport = primary.port.to_string();
    let replica = server(&[
        "--replicaof",
        "127.0.0.1",
        &pport,
        "--replica-read-only",
        "no",
    ]);
    wait_link_up(&mut replica.conn(), Duration::from_secs(10));
    (primary, replica)
}

/// Polls the primary until it sees its replica online (acknowledging).
fn wait_replica_online(primary: &mut Connection, within: Duration) {
    poll(within, Duration::from_millis(20), || {
        let m = info_map(primary, "replication");
        if m.get("slave0").is_some_and(|v| v.contains("state=online")) {
            Ok(())
        } else {
            Err(format!("replica not online: {m:?}"))
        }
    })
}

/// Polls until `waiting_clients` is 0, then returns the wait counters.
fn settled_counters(c: &mut Connection) -> std::collections::BTreeMap<String, i64> {
    poll(Duration::from_secs(5), Duration::from_millis(5), || {
        let text = info_text(c, "okome");
        let m = wait_counters(&text).unwrap_or_else(|e| panic!("{e}"));
        if m["waiting_clients"] == 0 {
            Ok(m)
        } else {
            Err(format!("waiting_clients stays {m:?}"))
        }
    })
}

// ----------------------------------------- 2. writes only when it may write

/// The reproduction: the build before the rewrite aborted here with
/// `ASSERTION FAILED ... de != NULL` when the lock expired during the pause
/// (its hand-over wrote a key that the paused expiry had not deleted).
#[test]
fn client_pause_write_across_the_lock_expiry() {
    let _alone = alone();
    let mut s = server(&[]);
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = get_plan(&mut leader, "paused", &["LOCKTTL", "8000"]);
    let t0 = Instant::now();
    let token = leader_token(&miss, 8000);
    let key = miss.key.clone();
    let mut f = Follower::start(s.port, "follower", "paused", &["WAIT", "20000"]);
    wait_followers_blocked(&mut admin, &mut [&mut f]);
    ok(&mut admin, &["CLIENT", "PAUSE", "15000", "WRITE"]);

    sleep_until(t0 + Duration::from_millis(8500));
    s.assert_alive("0.5 s after the lock expired during CLIENT PAUSE WRITE");
    f.assert_waiting("paused for writes: no hand-over");
    assert!(
        blocked_client_ids(&mut admin).contains(&f.conn.id),
        "the follower is still blocked"
    );

    ok(&mut admin, &["CLIENT", "UNPAUSE"]);
    let unpaused = Instant::now();
    let (p, at) = f.reply(Duration::from_secs(15));
    let p = p.expect("the follower's reply");
    let nt = assert_handed(&mut admin, &p, &key, 9000);
    assert_ne!(nt, token);
    println!(
        "hand-over {:?} after CLIENT UNPAUSE ({at:?} after the follower's request)",
        unpaused.elapsed()
    );
    s.assert_alive("after the hand-over");
}

/// `CLIENT PAUSE ALL` across the expiry: no hand-over while paused; a
/// follower whose deadline passes meanwhile gets `LOCKED` on time; the
/// first one is handed the lock when the pause ends.
#[test]
fn client_pause_all_across_the_lock_expiry() {
    let _alone = alone();
    let mut s = server(&[]);
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = get_plan(&mut leader, "paused all", &["LOCKTTL", "500"]);
    let t0 = Instant::now();
    leader_token(&miss, 500);
    let key = miss.key.clone();
    let mut a = Follower::start(s.port, "a", "paused all", &["WAIT", "6000"]);
    wait_followers_blocked(&mut admin, &mut [&mut a]);
    let mut b = Follower::start(s.port, "b", "paused all", &["WAIT", "1200"]);
    wait_followers_blocked(&mut admin, &mut [&mut a, &mut b]);
    ok(&mut admin, &["CLIENT", "PAUSE", "2000", "ALL"]);
    let paused = Instant::now();

    sleep_until(t0 + Duration::from_millis(1000));
    s.assert_alive("0.5 s after the lock expired during CLIENT PAUSE ALL");
    a.assert_waiting("paused: no hand-over");
    let (p, at) = b.reply(Duration::from_secs(5));
    assert_locked(&p.expect("b"), &key);
    assert_at_deadline(at, 1200, "b, during CLIENT PAUSE ALL");
    // Under load b's reply can be read close to the pause's end; the check
    // holds only while the pause is certainly still in force.
    if paused.elapsed() < Duration::from_millis(1900) {
        a.assert_waiting("still paused");
    }

    let (p, _) = a.reply(Duration::from_secs(8));
    let handed = paused.elapsed();
    assert!(
        handed >= Duration::from_millis(1950),
        "a was handed the lock {handed:?} into a 2 s CLIENT PAUSE ALL"
    );
    assert_handed(&mut admin, &p.expect("a"), &key, 9000);
    println!("hand-over {handed:?} after CLIENT PAUSE 2000 ALL");
    s.assert_alive("after the pause");
}

/// A failure published (`UNLOCK ... FAILED`) and `CLIENT PAUSE ALL` in one
/// pipeline, so that the pause is in force when the followers are told:
/// each gets exactly one `FAILED`. A `DEBUG RELOAD` keeps the failure's
/// record and its absolute expiry, so lookups still answer `FAILED`.
#[test]
fn a_failure_published_into_a_pause_then_a_reload() {
    let _alone = alone();
    let mut s = server(&[]);
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = get_plan(&mut leader, "failing", &[]);
    let token = leader_token(&miss, 9000);
    let key = miss.key.clone();
    let mut fs: Vec<Follower> = (0..3)
        .map(|i| Follower::start(s.port, &format!("f{i}"), "failing", &["WAIT", "20000"]))
        .collect();
    wait_followers_blocked(&mut admin, &mut fs.iter_mut().collect::<Vec<_>>());
    let mut raw = RawConn::connect(s.port);
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    raw.send_pipeline(&[
        words(&["OKOME.UNLOCK", &key, &token, "FAILED", "30000", "boom"]),
        words(&["CLIENT", "PAUSE", "500", "ALL"]),
    ]);
    let t = Duration::from_secs(5);
    assert_eq!(raw.read(t).expect("UNLOCK").int(), Some(1));
    assert_eq!(raw.read(t).expect("PAUSE").text().as_deref(), Some("OK"));
    for f in &mut fs {
        let (p, _) = f.reply(Duration::from_secs(5));
        let p = p.expect("a FAILED reply");
        assert_eq!(
            (p.status.as_str(), p.value.as_deref()),
            ("FAILED", Some("boom")),
            "{p:?}"
        );
        assert!(matches!(p.ms, Some(ms) if ms > 0 && ms <= 30_000), "{p:?}");
    }
    s.assert_alive("after FAILED into CLIENT PAUSE ALL");
    let record = format!("{key}:failed");
    let at = pexpiretime(&mut admin, &record);
    assert!(at > 0, "the failure's record has an absolute expiry: {at}");
    ok(&mut admin, &["DEBUG", "RELOAD"]);
    assert_eq!(pexpiretime(&mut admin, &record), at);
    let p = get_plan(&mut admin, "failing", &[]);
    assert_eq!(
        (p.status.as_str(), p.value.as_deref()),
        ("FAILED", Some("boom")),
        "{p:?}"
    );
    assert!(!exists(&mut admin, &lock_of(&key)));
    s.assert_alive("after DEBUG RELOAD");
}

/// `FAILOVER TO` a replica that is stopped (so it never catches up): writes
/// are paused while the failover waits; the lock expires meanwhile. No
/// hand-over until `FAILOVER ABORT`, then the follower gets the lock.
#[test]
fn failover_to_a_stopped_replica_across_the_lock_expiry() {
    let _alone = alone();
    let mut primary = server(PRIMARY);
    let pport = primary.port.to_string();
    let mut replica = server(&["--replicaof", "127.0.0.1", &pport]);
    wait_link_up(&mut replica.conn(), Duration::from_secs(10));
    let mut admin = primary.conn();
    wait_replica_online(&mut admin, Duration::from_secs(10));
    let mut leader = primary.conn();
    let miss = get_plan(&mut leader, "failover", &["LOCKTTL", "500"]);
    let t0 = Instant::now();
    leader_token(&miss, 500);
    let key = miss.key.clone();
    let mut f = Follower::start(primary.port, "f", "failover", &["WAIT", "8000"]);
    wait_followers_blocked(&mut admin, &mut [&mut f]);

    let stopped = Stopped::new(replica.pid());
    ok(
        &mut admin,
        &["SET", "lag", "the replica never acknowledges this"],
    );
    let rport = replica.port.to_string();
    ok(
        &mut admin,
        &["FAILOVER", "TO", "127.0.0.1", &rport, "TIMEOUT", "30000"],
    );
    sleep_until(t0 + Duration::from_millis(1000));
    primary.assert_alive("0.5 s after the lock expired during FAILOVER");
    let state = info_map(&mut admin, "replication");
    assert_eq!(
        state.get("master_failover_state").map(String::as_str),
        Some("waiting-for-sync"),
        "{state:?}"
    );
    f.assert_waiting("failover in progress: no hand-over");

    ok(&mut admin, &["FAILOVER", "ABORT"]);
    let aborted = Instant::now();
    let (p, _) = f.reply(Duration::from_secs(8));
    assert_handed(&mut admin, &p.expect("f"), &key, 9000);
    println!("hand-over {:?} after FAILOVER ABORT", aborted.elapsed());
    primary.assert_alive("after FAILOVER ABORT");
    drop(stopped);
    replica.assert_alive("the replica, continued");
}

/// A writable replica turned read-only while a follower waits on a lock
/// taken on the replica: the lock expires, nobody is handed it, the
/// follower gets `LOCKED` at its deadline.
#[test]
fn replica_turned_read_only_across_the_lock_expiry() {
    let _alone = alone();
    let (_primary, mut replica) = primary_and_writable_replica();
    let mut r = replica.conn();
    let mut leader = replica.conn();
    let miss = get_plan(&mut leader, "replica", &["LOCKTTL", "500"]);
    let t0 = Instant::now();
    let token = leader_token(&miss, 500);
    let key = miss.key.clone();
    let mut f = Follower::start(replica.port, "f", "replica", &["WAIT", "2500"]);
    wait_followers_blocked(&mut r, &mut [&mut f]);
    ok(&mut r, &["CONFIG", "SET", "replica-read-only", "yes"]);

    sleep_until(t0 + Duration::from_millis(1000));
    replica.assert_alive("0.5 s after the lock expired on a read-only replica");
    f.assert_waiting("a replica hands nothing over");
    let (p, at) = f.reply(Duration::from_secs(5));
    assert_locked(&p.expect("f"), &key);
    assert_at_deadline(at, 2500, "f on the replica");
    replica.assert_alive("after the deadline");
    let held = get(&mut r, &lock_of(&key));
    assert!(
        held.is_none() || held.as_deref() == Some(token.as_str()),
        "the replica's lock holds a token nobody received: {held:?}"
    );
}

/// Followers wait on a writable replica — on a lock taken on the replica
/// and on a lock replicated from the primary; both locks expire, nobody is
/// handed them while the node is a replica; `REPLICAOF NO ONE` promotes it
/// and both followers are handed their lock.
#[test]
fn replica_promoted_hands_the_lock_over() {
    let _alone = alone();
    let (primary, mut replica) = primary_and_writable_replica();
    let mut r = replica.conn();
    let mut p = primary.conn();

    let mut leader = replica.conn();
    let local = get_plan(&mut leader, "local", &["LOCKTTL", "1500"]);
    let t0 = Instant::now();
    leader_token(&local, 1500);
    let upstream = get_plan(&mut p, "upstream", &["LOCKTTL", "1500"]);
    leader_token(&upstream, 1500);
    replica_acked(&mut p);

    let mut f1 = Follower::start(replica.port, "f1", "local", &["WAIT", "8000"]);
    let mut f2 = Follower::start(replica.port, "f2", "upstream", &["WAIT", "8000"]);
    wait_followers_blocked(&mut r, &mut [&mut f1, &mut f2]);

    sleep_until(t0 + Duration::from_millis(2200));
    replica.assert_alive("after the locks expired on the replica");
    f1.assert_waiting("on a replica: no hand-over");
    f2.assert_waiting("on a replica: no hand-over");

    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    let promoted = Instant::now();
    let (p1, _) = f1.reply(Duration::from_secs(8));
    assert_handed(&mut r, &p1.expect("f1"), &local.key, 9000);
    let (p2, _) = f2.reply(Duration::from_secs(8));
    assert_handed(&mut r, &p2.expect("f2"), &upstream.key, 9000);
    println!("hand-overs {:?} after REPLICAOF NO ONE", promoted.elapsed());
    replica.assert_alive("after the promotion");
}

/// `DEBUG RELOAD` (a) with a held lock: the waiter keeps waiting and gets
/// `HIT` when the plan is stored; (b) slow enough (`key-load-delay`) that
/// the lock and a follower's deadline both pass while loading: afterwards
/// the first follower is handed the lock, the other gets `LOCKED`.
#[test]
fn debug_reload_with_waiters() {
    let _alone = alone();
    let mut s = server(&[]);
    let mut admin = s.conn();

    // (a) The lock survives the reload; so does the waiter.
    let mut leader = s.conn();
    let miss = get_plan(&mut leader, "reload a", &[]);
    let token = leader_token(&miss, 9000);
    let mut f = Follower::start(s.port, "a", "reload a", &["WAIT", "5000"]);
    wait_followers_blocked(&mut admin, &mut [&mut f]);
    ok(&mut admin, &["DEBUG", "RELOAD"]);
    s.assert_alive("after DEBUG RELOAD");
    f.assert_waiting("the lock is still held after the reload");
    assert_eq!(get(&mut admin, &lock_of(&miss.key)), Some(token.clone()));
    assert_eq!(
        plan_store(&mut leader, &[&miss.key, PLAN, "TOKEN", &token]).3,
        1
    );
    let (p, _) = f.reply(Duration::from_secs(5));
    assert_hit(&p.expect("a"), &miss.key, PLAN);

    // (b) The lock expires and a deadline passes while loading.
    ok(&mut admin, &["DEBUG", "POPULATE", "10000"]);
    ok(&mut admin, &["CONFIG", "SET", "key-load-delay", "50"]);
    let miss = get_plan(&mut leader, "reload b", &["LOCKTTL", "300"]);
    let t0 = Instant::now();
    leader_token(&miss, 300);
    let mut b = Follower::start(s.port, "b", "reload b", &["WAIT", "8000"]);
    wait_followers_blocked(&mut admin, &mut [&mut b]);
    let mut c = Follower::start(s.port, "c", "reload b", &["WAIT", "400"]);
    wait_followers_blocked(&mut admin, &mut [&mut b, &mut c]);
    let before = Instant::now();
    ok(&mut admin, &["DEBUG", "RELOAD"]);
    let reload = before.elapsed();
    println!("DEBUG RELOAD with key-load-delay took {reload:?}");
    assert!(
        t0.elapsed() > Duration::from_millis(400),
        "the reload was too quick to cover the expiry: {reload:?}"
    );
    s.assert_alive("after a slow DEBUG RELOAD");
    let (pb, _) = b.reply(Duration::from_secs(8));
    assert_handed(&mut admin, &pb.expect("b"), &miss.key, 9000);
    let (pc, _) = c.reply(Duration::from_secs(5));
    assert_locked(&pc.expect("c"), &miss.key);
    ok(&mut admin, &["CONFIG", "SET", "key-load-delay", "0"]);
    s.assert_alive("at the end");
}

// ------------------------------------------------------ 3. flushes, unload

/// Reads every follower's single reply until all are answered (by
/// `deadline`); each one handed the lock (`MISS`) must find the lock holding
/// its token, and stores the plan with it so that the others get `HIT`.
/// Returns (follower, reply, when) in arrival order.
fn drive(
    admin: &mut Connection,
    fs: &mut [Follower],
    key: &str,
    deadline: Instant,
) -> Vec<(String, Plan, Duration)> {
    let mut out = Vec::new();
    while fs.iter().any(|f| !f.answered) {
        assert!(
            Instant::now() < deadline,
            "not every follower was answered: {:?} missing; so far {out:?}",
            fs.iter()
                .filter(|f| !f.answered)
                .map(|f| f.name.clone())
                .collect::<Vec<_>>()
        );
        let mut progressed = false;
        for f in fs.iter_mut() {
            if let Some((r, at)) = f.try_reply() {
                progressed = true;
                let p = r.unwrap_or_else(|e| panic!("{}: error reply {e}", f.name));
                assert_eq!(p.key, key, "{p:?}");
                match p.status.as_str() {
                    "MISS" => {
                        let t = assert_handed(admin, &p, key, 9000);
                        assert_eq!(
                            plan_store(admin, &[key, PLAN, "TOKEN", &t]).3,
                            1,
                            "released"
                        );
                    }
                    "HIT" => assert_hit(&p, key, PLAN),
                    "LOCKED" => assert_locked(&p, key),
                    other => panic!("{}: unexpected {other}: {p:?}", f.name),
                }
                out.push((f.name.clone(), p, at));
            }
        }
        if !progressed {
            thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

/// Followers wait on a 1 s lock; `flush` removes it. Every follower is
/// answered exactly once, the first hand-over comes at the latest when the
/// old lock would have expired, and no lock is left holding a token that
/// nobody received.
fn flush_with_waiters(flush: &[&str]) {
    let mut s = server(&[]);
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = get_plan(&mut leader, "flushed", &["LOCKTTL", "1000"]);
    let t0 = Instant::now();
    let token = leader_token(&miss, 1000);
    let key = miss.key.clone();
    let mut fs: Vec<Follower> = (0..3)
        .map(|i| Follower::start(s.port, &format!("f{i}"), "flushed", &["WAIT", "5000"]))
        .collect();
    wait_followers_blocked(&mut admin, &mut fs.iter_mut().collect::<Vec<_>>());
    ok(&mut admin, flush);
    s.assert_alive(&format!("after {flush:?}"));
    // The lock is gone, or already handed to a follower.
    let after_flush = get(&mut admin, &lock_of(&key));
    assert_ne!(after_flush.as_deref(), Some(token.as_str()), "{flush:?}");

    let replies = drive(&mut admin, &mut fs, &key, t0 + Duration::from_secs(6));
    println!("{flush:?}: {replies:?}");
    let first = replies
        .iter()
        .find(|(_, p, _)| p.status == "MISS")
        .expect("someone is handed the lock");
    assert!(
        first.2 <= Duration::from_millis(1000) + LATE,
        "first hand-over {:?} after the request, the old lock expired at 1 s",
        first.2
    );
    s.assert_alive("at the end");
    // Ghost locks: in both databases, any lock holds a received token.
    let mut tokens: BTreeSet<String> = replies
        .iter()
        .filter_map(|(_, p, _)| p.token.clone())
        .collect();
    if let Some(v) = &after_flush {
        assert!(
            tokens.contains(v),
            "after {flush:?} the lock held {v}, never received"
        );
    }
    tokens.insert(token);
    for db in [0, 1] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut admin).unwrap();
        if let Some(v) = get(&mut admin, &lock_of(&key)) {
            assert!(
                tokens.contains(&v),
                "db {db}: lock holds {v}, never received"
            );
        }
    }
}

#[test]
fn flushall_with_waiters() {
    let _alone = alone();
    flush_with_waiters(&["FLUSHALL"]);
}

#[test]
fn flushdb_with_waiters() {
    let _alone = alone();
    flush_with_waiters(&["FLUSHDB"]);
}

#[test]
fn swapdb_with_waiters() {
    let _alone = alone();
    flush_with_waiters(&["SWAPDB", "0", "1"]);
}

/// `MODULE UNLOAD` is refused while followers wait (blocked clients and a
/// timer), the server lives on and the followers are answered; afterwards
/// the module unloads, loads again, and starts its counters from zero.
#[test]
fn module_unload_while_followers_wait() {
    let _alone = alone();
    let mut s = server(&[]);
    let mut admin = s.conn();
    let mut leader = s.conn();
    let miss = get_plan(&mut leader, "unload", &[]);
    let token = leader_token(&miss, 9000);
    let mut fs: Vec<Follower> = (0..2)
        .map(|i| Follower::start(s.port, &format!("f{i}"), "unload", &["WAIT", "10000"]))
        .collect();
    wait_followers_blocked(&mut admin, &mut fs.iter_mut().collect::<Vec<_>>());

    let e = redis::cmd("MODULE")
        .arg(&["UNLOAD", "okome"])
        .query::<String>(&mut admin)
        .expect_err("MODULE UNLOAD with blocked clients");
    let e = error_text(&e);
    println!("MODULE UNLOAD while waiting: {e}");
    assert!(e.starts_with("ERR"), "{e}");
    s.assert_alive("after the refused MODULE UNLOAD");
    for f in fs.iter_mut() {
        f.assert_waiting("after the refused MODULE UNLOAD");
    }
    assert_eq!(
        plan_store(&mut leader, &[&miss.key, PLAN, "TOKEN", &token]).3,
        1
    );
    for f in fs.iter_mut() {
        let (p, _) = f.reply(Duration::from_secs(5));
        assert_hit(&p.expect("follower"), &miss.key, PLAN);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter(&mut admin, "waiting_clients") != 0 {
        assert!(Instant::now() < deadline, "waiting_clients stays above 0");
        thread::sleep(Duration::from_millis(5));
    }

    ok(&mut admin, &["MODULE", "UNLOAD", "okome"]);
    let path = module_path();
    ok(&mut admin, &["MODULE", "LOAD", path.to_str().unwrap()]);
    let text = info_text(&mut admin, "okome");
    let fields = parse_okome_info(&text);
    assert!(fields.contains_key("wait_blocked"), "{text}");
    for (name, v) in &fields {
        let n: f64 = v
            .parse()
            .unwrap_or_else(|_| panic!("{name}:{v} is not a number"));
        assert!(n == 0.0, "{name} is {v} right after MODULE LOAD:\n{text}");
    }
    let again = get_plan(&mut admin, "unload", &[]);
    assert_eq!(again.status, "HIT", "{again:?}");
    s.assert_alive("after MODULE LOAD");
}

// ------------------------------------------------------------- 4. counters

/// Six followers end six ways: a timeout, CLIENT KILL, CLIENT UNBLOCK,
/// CLIENT UNBLOCK ERROR, a hand-over (UNLOCK) and a HIT. Each is counted
/// where it belongs, and the invariants hold once nobody waits.
#[test]
fn wait_counters_add_up() {
    let _alone = alone();
    let mut s = server(&[]);
    let mut admin = s.conn();
    // Read tolerantly: the replies are checked first, the counters last.
    let before = wait_counters(&info_text(&mut admin, "okome"));
    let mut leader = s.conn();
    let miss = get_plan(&mut leader, "counted", &[]);
    let token = leader_token(&miss, 9000);
    let key = miss.key.clone();

    let specs = [
        ("killed", "10000"),
        ("unblocked", "10000"),
        ("unblocked-error", "10000"),
        ("leader", "10000"),
        ("hit", "10000"),
        ("timeout", "100"),
    ];
    let mut fs: Vec<Follower> = Vec::new();
    for (name, wait) in specs {
        fs.push(Follower::start(s.port, name, "counted", &["WAIT", wait]));
        // One at a time, so the FIFO order is the order above (the last
        // one times out at once: it is read right away).
        if name != "timeout" {
            let ids: Vec<i64> = fs.iter().map(|f| f.conn.id).collect();
            wait_ids_blocked(&mut admin, &ids, Duration::from_secs(5));
        }
    }
    let (p, at) = fs[5].reply(Duration::from_secs(5));
    assert_locked(&p.expect("timeout"), &key);
    assert_at_deadline(at, 100, "WAIT 100");

    let id = fs[0].conn.id.to_string();
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "ID", &id])
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    fs[0].assert_closed_silently();

    let id = fs[1].conn.id.to_string();
    let n: i64 = redis::cmd("CLIENT")
        .arg(&["UNBLOCK", &id])
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    let (p, _) = fs[1].reply(Duration::from_secs(5));
    assert_locked(&p.expect("CLIENT UNBLOCK"), &key);

    let id = fs[2].conn.id.to_string();
    let n: i64 = redis::cmd("CLIENT")
        .arg(&["UNBLOCK", &id, "ERROR"])
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    let (p, _) = fs[2].reply(Duration::from_secs(5));
    let e = p.expect_err("CLIENT UNBLOCK ERROR gives an error reply");
    assert!(e.starts_with("UNBLOCKED"), "{e}");

    let u = unlock(&mut leader, &key, &token);
    assert_eq!(u, 1);
    let (p, _) = fs[3].reply(Duration::from_secs(5));
    let nt = assert_handed(&mut admin, &p.expect("leader"), &key, 9000);
    fs[4].assert_waiting("the new leader holds the lock");
    assert_eq!(plan_store(&mut leader, &[&key, PLAN, "TOKEN", &nt]).3, 1);
    let (p, _) = fs[4].reply(Duration::from_secs(5));
    assert_hit(&p.expect("hit"), &key, PLAN);

    let before = before.unwrap_or_else(|e| panic!("{e}"));
    let after = settled_counters(&mut admin);
    let delta = |n: &str| after[n] - before[n];
    let got: Vec<(&str, i64)> = WAIT_COUNTERS.iter().map(|n| (*n, delta(n))).collect();
    let want = vec![
        ("wait_blocked", 6),
        ("wait_woken", 2),
        ("wait_woken_hit", 1),
        ("wait_woken_leader", 1),
        ("wait_woken_other", 0),
        ("wait_timed_out", 1),
        ("wait_disconnected", 1),
        ("wait_unblocked", 2),
        ("waiting_clients", 0),
    ];
    assert_eq!(
        got,
        want,
        "counter deltas; INFO okome:\n{}",
        info_text(&mut admin, "okome")
    );
    check_wait_invariants(&after).unwrap_or_else(|e| panic!("{e}"));
    s.assert_alive("at the end");
}

// ------------------------------------------------------ 5. foreign locks

/// A lock written by someone else without a TTL gets the default lock TTL
/// when okome meets it (PLAN.GET, PLAN.GET ... WAIT, OKOME.LOCK), so it can
/// never be stuck; each healing is counted.
#[test]
fn foreign_lock_without_ttl_is_healed() {
    let _alone = alone();
    let mut s = Server::start();
    let mut c = s.conn();
    // The counter is read tolerantly here so that the TTLs are checked
    // first, and asserted at the end.
    let healed = |c: &mut Connection| -> Option<i64> {
        parse_okome_info(&info_text(c, "okome"))
            .get("locks_healed")
            .and_then(|v| v.parse().ok())
    };
    let healed0 = healed(&mut c);
    let mut deltas = Vec::new();
    let key_of = |c: &mut Connection, prompt: &str| -> String {
        redis::cmd("OKOME.KEY")
            .arg("planner")
            .arg(refs(&tuple(prompt, &[])))
            .query(c)
            .unwrap()
    };
    let assert_healed = |c: &mut Connection, lk: &str, value: &str| {
        let t = pttl(c, lk);
        assert!(t > 8000 && t <= 9000, "{lk}: PTTL {t}, want (8000, 9000]");
        assert_eq!(get(c, lk).as_deref(), Some(value), "the value is kept");
    };

    let k1 = key_of(&mut c, "foreign 1");
    ok(&mut c, &["SET", &lock_of(&k1), "x"]);
    let p = get_plan(&mut c, "foreign 1", &[]);
    assert_locked(&p, &k1);
    assert_healed(&mut c, &lock_of(&k1), "x");
    deltas.push(healed(&mut c).zip(healed0).map(|(a, b)| a - b));

    let k2 = key_of(&mut c, "foreign 2");
    ok(&mut c, &["SET", &lock_of(&k2), "y"]);
    let r: Option<String> = redis::cmd("OKOME.LOCK").arg(&k2).query(&mut c).unwrap();
    assert_eq!(r, None, "held by someone else");
    assert_healed(&mut c, &lock_of(&k2), "y");
    deltas.push(healed(&mut c).zip(healed0).map(|(a, b)| a - b));

    let k3 = key_of(&mut c, "foreign 3");
    ok(&mut c, &["SET", &lock_of(&k3), "z"]);
    let mut f = Follower::start(s.port, "f", "foreign 3", &["WAIT", "300"]);
    let (p, at) = f.reply(Duration::from_secs(5));
    assert_locked(&p.expect("f"), &k3);
    assert_at_deadline(at, 300, "WAIT on a foreign lock");
    assert_healed(&mut c, &lock_of(&k3), "z");
    deltas.push(healed(&mut c).zip(healed0).map(|(a, b)| a - b));
    s.assert_alive("at the end");
    assert_eq!(
        deltas,
        vec![Some(1), Some(2), Some(3)],
        "locks_healed after each healing; INFO okome:\n{}",
        info_text(&mut c, "okome")
    );
}

/// A user's hash at a lock's name (written while a follower waits) is
/// never given a TTL by the follower's timer: only a string is healed, and
/// the follower is answered `LOCKED` at its deadline.
#[test]
fn a_hash_at_a_lock_name_is_never_healed() {
    let _alone = alone();
    let mut s = server(&[]);
    let mut c = s.conn();
    let p = get_plan(&mut c, "hash lock", &["LOCKTTL", "300"]);
    let key = p.key.clone();
    leader_token(&p, 300);
    let mut f = Follower::start(s.port, "f", "hash lock", &["WAIT", "1200"]);
    wait_followers_blocked(&mut c, &mut [&mut f]);
    let lk = lock_of(&key);
    ok(&mut c, &["MULTI"]);
    let _: redis::Value = redis::cmd("DEL").arg(&lk).query(&mut c).unwrap();
    let _: redis::Value = redis::cmd("HSET")
        .arg(&[&lk, "f", "v"])
        .query(&mut c)
        .unwrap();
    let _: redis::Value = redis::cmd("EXEC").query(&mut c).unwrap();
    let (r, at) = f.reply(Duration::from_secs(5));
    let r = r.expect("f");
    assert_eq!(r.status, "LOCKED", "{r:?}");
    assert_at_deadline(at, 1200, "WAIT on a hash at the lock's name");
    assert_eq!(pttl(&mut c, &lk), -1, "the user's hash keeps no TTL");
    let t: String = redis::cmd("TYPE").arg(&lk).query(&mut c).unwrap();
    assert_eq!(t, "hash");
    s.assert_alive("at the end");
}

/// `REPLICAOF host port` on a primary with waiting followers: Redis 7.0
/// and Valkey 9.1 end every blocked client with `-UNBLOCKED ... instance
/// state changed` and close its connection (the server decides, before any
/// module code runs): exactly one reply, and the server lives.
#[test]
fn replicaof_with_waiters_is_answered_as_redis_decides() {
    let _alone = alone();
    let mut s = server(&[]);
    let other = server(&[]);
    let mut c = s.conn();
    let p = get_plan(&mut c, "demoted", &["LOCKTTL", "5000"]);
    leader_token(&p, 5000);
    let mut f = Follower::start(s.port, "f", "demoted", &["WAIT", "1500"]);
    wait_followers_blocked(&mut c, &mut [&mut f]);
    ok(&mut c, &["REPLICAOF", "127.0.0.1", &other.port.to_string()]);
    let r = f.conn.read(Duration::from_secs(5)).expect("a reply");
    let e = r.error().map(str::to_string).unwrap_or_default();
    assert!(
        e.starts_with("UNBLOCKED") && e.contains("instance state changed"),
        "the server ends the waiter: {r:?}"
    );
    f.assert_closed_silently();
    s.assert_alive("after REPLICAOF");
}

// ---------------------------------------------------------------- 6. memory

/// `maxmemory` reached with `noeviction`: a hit is still served; a miss that
/// must take a lock is refused with `OOM` and writes nothing.
#[test]
fn full_memory_serves_hits_and_refuses_locks() {
    let _alone = alone();
    let mut s = Server::start();
    let mut c = s.conn();
    let m = get_plan(&mut c, "stored", &[]);
    let t = leader_token(&m, 9000);
    assert_eq!(plan_store(&mut c, &[&m.key, PLAN, "TOKEN", &t]).0, "STORED");
    ok(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    ok(&mut c, &["CONFIG", "SET", "maxmemory", "1"]);

    let hit = try_plan_get(&mut c, &refs(&tuple("stored", &[])));
    let hit = hit.unwrap_or_else(|e| panic!("a HIT when memory is full: {}", error_text(&e)));
    assert_hit(&hit, &m.key, PLAN);
    let key: String = redis::cmd("OKOME.KEY")
        .arg("planner")
        .arg(refs(&tuple("not stored", &[])))
        .query(&mut c)
        .unwrap();
    let e = try_plan_get(&mut c, &refs(&tuple("not stored", &[])))
        .expect_err("a miss must take a lock: OOM");
    let e = error_text(&e);
    assert!(e.starts_with("OOM"), "{e}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(lock_of(&key))
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0, "nothing written");

    ok(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    let p = get_plan(&mut c, "not stored", &[]);
    leader_token(&p, 9000);
    s.assert_alive("at the end");
}

/// Under `allkeys-lru` and `volatile-ttl`, evicted budget windows are
/// counted in `windows_evicted`.
#[test]
fn evicted_windows_are_counted() {
    let _alone = alone();
    let mut s = Server::start();
    let mut c = s.conn();
    for policy in ["allkeys-lru", "volatile-ttl"] {
        ok(&mut c, &["FLUSHALL"]);
        let mut pipe = redis::pipe();
        for i in 0..3000 {
            pipe.cmd("OKOME.RATE")
                .arg(format!("agent-{i}"))
                .arg(10)
                .arg(600)
                .ignore();
        }
        let () = pipe.query(&mut c).unwrap();
        let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert_eq!(n, 3000);
        let w0 = counter(&mut c, "windows_evicted");
        let e0 = info_i64(&mut c, "stats", "evicted_keys");
        let used = info_i64(&mut c, "memory", "used_memory");
        ok(&mut c, &["CONFIG", "SET", "maxmemory-policy", policy]);
        let limit = (used - 150 * 1024).to_string();
        ok(&mut c, &["CONFIG", "SET", "maxmemory", &limit]);
        // Evictions run before commands; poll until they stop.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = -1;
        let mut stable = 0;
        while stable < 5 {
            let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
            if n == last {
                stable += 1;
            } else {
                stable = 0;
                last = n;
            }
            assert!(Instant::now() < deadline, "evictions never settled");
            thread::sleep(Duration::from_millis(20));
        }
        ok(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
        let left: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        let evicted = info_i64(&mut c, "stats", "evicted_keys") - e0;
        let counted = counter(&mut c, "windows_evicted") - w0;
        println!("{policy}: {evicted} windows evicted, {counted} counted");
        assert!(evicted > 0, "{policy}: nothing was evicted");
        assert_eq!(3000 - left, evicted, "{policy}: only windows were evicted");
        assert_eq!(counted, evicted, "{policy}: windows_evicted");
    }
    s.assert_alive("at the end");
}

// ------------------------------------------------- 7. keyspace notifications

/// A `PSUBSCRIBE __keyevent@0__:*` connection that reads events up to a
/// fence key written by the test.
struct Events {
    sub: RawConn,
    fences: usize,
}

impl Events {
    fn new(port: u16) -> Events {
        let mut sub = RawConn::connect(port);
        let r = sub.call(&["PSUBSCRIBE", "__keyevent@0__:*"], Duration::from_secs(5));
        assert!(matches!(&r, Resp::Array(Some(v)) if v.len() == 3), "{r:?}");
        Events { sub, fences: 0 }
    }

    /// The `(event, key)` pairs emitted since the last call, up to a fence
    /// (`SET fence:<n>` written through `c`).
    fn since_last(&mut self, c: &mut Connection) -> Vec<(String, String)> {
        self.fences += 1;
        let fence = format!("fence:{}", self.fences);
        ok(c, &["SET", &fence, "1"]);
        let mut out = Vec::new();
        loop {
            let r = self
                .sub
                .read(Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("no keyspace event for {fence}: {e}; got {out:?}"));
            let Resp::Array(Some(v)) = &r else {
                panic!("not a pmessage: {r:?}");
            };
            let channel = v[2].text().unwrap_or_default();
            let event = channel
                .strip_prefix("__keyevent@0__:")
                .unwrap_or(&channel)
                .to_string();
            let key = v[3].text().unwrap_or_default();
            if key == fence {
                assert_eq!(event, "set");
                return out;
            }
            if key.starts_with("fence:") {
                continue;
            }
            out.push((event, key));
        }
    }
}

fn ev(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(e, k)| (e.to_string(), k.to_string()))
        .collect()
}

/// Runs `WATCH key`, then `between` on another connection, then
/// `MULTI; SET x 1; EXEC`; returns whether the transaction ran.
fn watch_survives(port: u16, key: &str, between: impl FnOnce()) -> bool {
    let t = Duration::from_secs(5);
    let mut w = RawConn::connect(port);
    assert_eq!(w.call(&["WATCH", key], t).text().as_deref(), Some("OK"));
    between();
    assert_eq!(w.call(&["MULTI"], t).text().as_deref(), Some("OK"));
    assert_eq!(
        w.call(&["SET", "x", "1"], t).text().as_deref(),
        Some("QUEUED")
    );
    match w.call(&["EXEC"], t) {
        Resp::Array(Some(v)) => {
            assert_eq!(v, vec![Resp::Simple("OK".into())]);
            true
        }
        Resp::Array(None) => false,
        other => panic!("EXEC: {other:?}"),
    }
}

#[test]
fn keyspace_notifications_and_watch() {
    let _alone = alone();
    let mut s = Server::start();
    let mut c = s.conn();
    ok(&mut c, &["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
    let mut events = Events::new(s.port);
    let mut failures: Vec<String> = Vec::new();
    let mut expect = |what: &str, got: Vec<(String, String)>, want: Vec<(String, String)>| {
        println!("{what}: {got:?}");
        if got != want {
            failures.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    };

    // A stored plan: set, then expire.
    let key: String = redis::cmd("OKOME.KEY")
        .arg("planner")
        .arg(refs(&tuple("notified", &[])))
        .query(&mut c)
        .unwrap();
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&key)
        .arg(PLAN)
        .query(&mut c)
        .unwrap();
    let got = events.since_last(&mut c);
    expect("PLAN.SET", got, ev(&[("set", &key), ("expire", &key)]));

    // A released lock: del.
    let m = get_plan(&mut c, "locked", &[]);
    let token = leader_token(&m, 9000);
    let lk = lock_of(&m.key);
    let got = events.since_last(&mut c);
    println!("a lock taken by PLAN.GET: {got:?}");
    let u = unlock(&mut c, &m.key, &token);
    assert_eq!(u, 1);
    let got = events.since_last(&mut c);
    expect("UNLOCK", got, ev(&[("del", &lk)]));

    // A failure published: del of the lock, set + expire of its record
    // (as `DEL` and `SET ... PXAT`); a FAILED lookup and a FENCED store
    // write nothing.
    let m = get_plan(&mut c, "failing", &[]);
    let token = leader_token(&m, 9000);
    let _ = events.since_last(&mut c);
    let u: i64 = redis::cmd("OKOME.UNLOCK")
        .arg(&[m.key.as_str(), &token, "FAILED", "5000", "boom"])
        .query(&mut c)
        .unwrap();
    assert_eq!(u, 1);
    let got = events.since_last(&mut c);
    let record = format!("{}:failed", m.key);
    expect(
        "UNLOCK FAILED",
        got,
        ev(&[
            ("del", &lock_of(&m.key)),
            ("set", &record),
            ("expire", &record),
        ]),
    );
    assert_eq!(get_plan(&mut c, "failing", &[]).status, "FAILED");
    let fenced = plan_set(&mut c, &[&m.key, PLAN, "TOKEN", &token, "FENCED"]);
    assert_eq!(fenced.0, "FENCED");
    let got = events.since_last(&mut c);
    expect("a FAILED lookup, a FENCED store", got, vec![]);

    // An admitted RATE: set + expire on its window.
    let rk = "okome:budget:rate:{agent-n}";
    let d: Vec<i64> = redis::cmd("OKOME.RATE")
        .arg(&["agent-n", "1", "60"])
        .query(&mut c)
        .unwrap();
    assert_eq!(d[0], 1);
    let got = events.since_last(&mut c);
    expect("admitted RATE", got, ev(&[("set", rk), ("expire", rk)]));

    // A refused RATE: nothing.
    let d: Vec<i64> = redis::cmd("OKOME.RATE")
        .arg(&["agent-n", "1", "60"])
        .query(&mut c)
        .unwrap();
    assert_eq!(d[0], 0);
    let got = events.since_last(&mut c);
    expect("refused RATE", got, vec![]);

    // A refused RATE does not break a WATCH on the window.
    let port = s.port;
    let survived = watch_survives(port, rk, || {
        let mut o = s.conn();
        let d: Vec<i64> = redis::cmd("OKOME.RATE")
            .arg(&["agent-n", "1", "60"])
            .query(&mut o)
            .unwrap();
        assert_eq!(d[0], 0, "over the limit");
    });
    if !survived {
        failures.push("a refused OKOME.RATE broke a WATCH on its window".into());
    }

    // A LOCKED PLAN.GET does not break a WATCH on the lock.
    let m = get_plan(&mut c, "watched", &[]);
    leader_token(&m, 9000);
    let survived = watch_survives(port, &lock_of(&m.key), || {
        let mut o = s.conn();
        let p = get_plan(&mut o, "watched", &[]);
        assert_eq!(p.status, "LOCKED");
    });
    if !survived {
        failures.push("a LOCKED OKOME.PLAN.GET broke a WATCH on the lock".into());
    }
    let _ = events.since_last(&mut c);

    s.assert_alive("at the end");
    assert!(failures.is_empty(), "{failures:#?}");
}
