//! `OKOME.LEASE.ACQUIRE`, `OKOME.LEASE.RENEW` and `OKOME.LEASE.RELEASE`:
//! every reply and error exactly, expiry of a crashed holder's lease,
//! replication and AOF byte for byte, ACL on the pool's key, and callers
//! that `WAIT` for a free slot: served first come first served, each
//! answered exactly once, and a lease only ever taken for a client that
//! receives it (a pool never holds more than `max` leases, nor a lease
//! nobody holds).
//!
//! A waiter runs on its own raw connection that pipelines a `PING` behind
//! its `ACQUIRE`, so its replies must be exactly `[lease reply, PONG]`.

use crate::support::*;

use redis::{Connection, Value};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// `[lease, in_use, retry_after_ms]`.
type Acq = (Option<String>, i64, i64);

fn acquire(c: &mut Connection, args: &[&str]) -> Acq {
    redis::cmd("OKOME.LEASE.ACQUIRE")
        .arg(args)
        .query(c)
        .unwrap_or_else(|e| panic!("OKOME.LEASE.ACQUIRE {args:?}: {e}"))
}

fn renew(c: &mut Connection, lease: &str, ttl: &str) -> i64 {
    redis::cmd("OKOME.LEASE.RENEW")
        .arg(&[lease, ttl])
        .query(c)
        .expect("OKOME.LEASE.RENEW")
}

fn release(c: &mut Connection, lease: &str) -> i64 {
    redis::cmd("OKOME.LEASE.RELEASE")
        .arg(lease)
        .query(c)
        .expect("OKOME.LEASE.RELEASE")
}

/// The lease of a reply that must have one, checked to be
/// `<prefix>:<32 hex digits>`.
fn held(a: &Acq, prefix: &str) -> String {
    let id = a.0.clone().unwrap_or_else(|| panic!("no lease: {a:?}"));
    let token = id
        .strip_prefix(prefix)
        .and_then(|t| t.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{id} does not start with {prefix}:"));
    assert!(is_token(token), "{id}: not a 32-hex-digit token");
    id
}

/// `ZCARD` of a pool.
fn zcard(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("ZCARD").arg(key).query(c).expect("ZCARD")
}

const POOL: &str = "okome:budget:lease:{s}";

/// A waiter: `ACQUIRE ... WAIT` + `PING` pipelined on its own connection.
struct Waiter {
    name: String,
    conn: RawConn,
    sent: Instant,
}

impl Waiter {
    fn start(port: u16, name: &str, args: &[&str]) -> Waiter {
        let mut conn = RawConn::connect(port);
        let t = Duration::from_secs(10);
        assert!(conn.call(&["CLIENT", "SETNAME", name], t).text().is_some());
        let mut acq = vec!["OKOME.LEASE.ACQUIRE".to_string()];
        acq.extend(args.iter().map(|s| s.to_string()));
        let sent = Instant::now();
        conn.send_pipeline(&[acq, vec!["PING".into()]]);
        Waiter {
            name: name.into(),
            conn,
            sent,
        }
    }

    /// The single reply (then the `PONG`), and how long after the request
    /// it came.
    fn reply(&mut self, within: Duration) -> (Resp, Duration) {
        let r = self
            .conn
            .read(within)
            .unwrap_or_else(|e| panic!("{}: no reply within {within:?}: {e}", self.name));
        let at = self.sent.elapsed();
        assert!(!r.is_pong(), "{}: PONG before the reply", self.name);
        match self.conn.read(Duration::from_secs(5)) {
            Ok(p) if p.is_pong() => {}
            other => panic!("{}: after {r:?}, expected PONG, got {other:?}", self.name),
        }
        (r, at)
    }

    /// The lease this waiter got (panics on any other reply).
    fn lease(&mut self, within: Duration) -> String {
        match self.reply(within).0 {
            Resp::Array(Some(items)) if items.len() == 3 => match &items[0] {
                Resp::Bulk(Some(id)) => String::from_utf8_lossy(id).into_owned(),
                other => panic!("{}: no lease: {other:?} in {items:?}", self.name),
            },
            other => panic!("{}: not a lease reply: {other:?}", self.name),
        }
    }

    fn assert_waiting(&mut self, what: &str) {
        match self.conn.try_read() {
            Ok(None) => {}
            other => panic!("{what}: {} replied already: {other:?}", self.name),
        }
    }
}

/// Polls `CLIENT LIST` until every waiter is blocked.
fn wait_blocked_all(admin: &mut Connection, ws: &[&Waiter]) {
    let ids: Vec<i64> = ws.iter().map(|w| w.conn.id).collect();
    wait_ids_blocked(admin, &ids, Duration::from_secs(5));
}

/// `[nil, in_use, retry_after_ms]` as a raw reply: `(in_use, retry)`.
fn refused(r: &Resp) -> (i64, i64) {
    match r {
        Resp::Array(Some(items)) if items.len() == 3 => {
            assert!(
                matches!(items[0], Resp::Bulk(None)),
                "a lease was given: {r:?}"
            );
            (items[1].int().unwrap(), items[2].int().unwrap())
        }
        other => panic!("not a lease reply: {other:?}"),
    }
}

// ---------------------------------------------------------------- replies

#[test]
fn replies_exactly() {
    let s = Server::start();
    let mut c = s.conn();
    let a = acquire(&mut c, &["s", "2", "10000"]);
    let first = held(&a, "{s}");
    assert_eq!((a.1, a.2), (1, 0));
    let b = acquire(&mut c, &["s", "2", "10000"]);
    let second = held(&b, "{s}");
    assert_ne!(first, second);
    assert_eq!((b.1, b.2), (2, 0));
    let full = acquire(&mut c, &["s", "2", "10000"]);
    assert_eq!(full.0, None);
    assert_eq!(full.1, 2);
    assert!((9_900..=10_000).contains(&full.2), "{full:?}");
    // The pool: a sorted set of tokens scored by expiry, expiring with its
    // latest lease.
    assert_eq!(zcard(&mut c, POOL), 2);
    let latest: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(&[POOL, "-1", "-1", "WITHSCORES"])
        .query(&mut c)
        .unwrap();
    let tokens = [&first, &second].map(|id| id.strip_prefix("{s}:").unwrap().to_string());
    assert!(tokens.contains(&latest[0].0), "{latest:?}");
    assert_eq!(pexpiretime(&mut c, POOL), latest[0].1);

    // RENEW: 1 while held, 0 once gone; RELEASE: 1 then 0.
    assert_eq!(renew(&mut c, &first, "60000"), 1);
    let now = server_ms(&mut c);
    pexpiretime_near(&mut c, POOL, now + 60_000);
    assert_eq!(release(&mut c, &first), 1);
    assert_eq!(release(&mut c, &first), 0);
    assert_eq!(renew(&mut c, &first, "60000"), 0);
    let fake = format!("{{s}}:{}", "0".repeat(32));
    assert_eq!(renew(&mut c, &fake, "1000"), 0);
    assert_eq!(release(&mut c, &fake), 0);
    assert_eq!(release(&mut c, &second), 1);
    assert!(!exists(&mut c, POOL), "an emptied pool is gone");

    // NAME: another pool of the subject, in the same slot; `default` is the
    // unnamed one.
    let n = acquire(&mut c, &["s", "1", "5000", "NAME", "gpu:0"]);
    let named = held(&n, "{s}:gpu%3A0");
    assert_eq!(zcard(&mut c, "okome:budget:lease:{s}:gpu%3A0"), 1);
    let d = acquire(&mut c, &["s", "1", "5000", "NAME", "default"]);
    held(&d, "{s}");
    assert_eq!(release(&mut c, &named), 1);
}

/// What `server_ms` is compared with: a small tolerance.
fn pexpiretime_near(c: &mut Connection, key: &str, want: i64) {
    let got = pexpiretime(c, key);
    assert!(
        (got - want).abs() <= 50,
        "{key}: PEXPIRETIME {got}, want ~{want}"
    );
}

#[test]
fn a_crashed_holders_lease_expires_and_renew_extends() {
    let s = Server::start();
    let mut c = s.conn();
    // A holder that never comes back: its slot frees itself.
    held(&acquire(&mut c, &["crash", "1", "200"]), "{crash}");
    assert_eq!(acquire(&mut c, &["crash", "1", "200"]).0, None);
    std::thread::sleep(Duration::from_millis(300));
    let again = acquire(&mut c, &["crash", "1", "200"]);
    held(&again, "{crash}");
    assert_eq!(again.1, 1);

    // A holder that renews keeps its slot past its first TTL.
    let a = held(&acquire(&mut c, &["renew", "1", "300"]), "{renew}");
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(renew(&mut c, &a, "2000"), 1);
    let now = server_ms(&mut c);
    pexpiretime_near(&mut c, "okome:budget:lease:{renew}", now + 2000);
    std::thread::sleep(Duration::from_millis(300));
    let full = acquire(&mut c, &["renew", "1", "300"]);
    assert_eq!(full.0, None, "renewed: still held");
    assert!(full.2 > 1000, "{full:?}");
    // Shortened: the pool's expiry follows its latest lease down.
    assert_eq!(renew(&mut c, &a, "500"), 1);
    let now = server_ms(&mut c);
    pexpiretime_near(&mut c, "okome:budget:lease:{renew}", now + 500);
}

#[test]
fn errors_exactly() {
    let s = Server::start();
    let mut c = s.conn();
    let e = |c: &mut Connection, args: &[&str]| {
        let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        err(c, &v)
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["OKOME.LEASE.ACQUIRE", "s", "2"],
            "ERR wrong number of arguments for 'okome.lease.acquire' command",
        ),
        (
            &["OKOME.LEASE.ACQUIRE", "s", "0", "1000"],
            "ERR max 0 is out of range: must be between 1 and 100000 leases",
        ),
        (
            &["OKOME.LEASE.ACQUIRE", "s", "100001", "1000"],
            "ERR max 100001 is out of range: must be between 1 and 100000 leases",
        ),
        (
            &["OKOME.LEASE.ACQUIRE", "s", "x", "1000"],
            "ERR max is not an integer or out of range",
        ),
        (
            &["OKOME.LEASE.ACQUIRE", "s", "1", "99"],
            "ERR ttl_ms 99 is out of range: must be between 100 and 86400000 ms",
        ),
        (
            &["OKOME.LEASE.ACQUIRE", "s", "1", "1000", "WAIT", "600001"],
            "ERR wait 600001 is out of range: must be between 1 and 600000 ms",
        ),
        (
            &["OKOME.LEASE.ACQUIRE", "s", "1", "1000", "NAME", ""],
            "ERR name must not be empty",
        ),
        (
            &[
                "OKOME.LEASE.ACQUIRE",
                "s",
                "1",
                "1000",
                "NAME",
                "a",
                "NAME",
                "b",
            ],
            "ERR syntax error: option NAME given more than once",
        ),
        (
            &["OKOME.LEASE.ACQUIRE", "s", "1", "1000", "TTL", "1"],
            "ERR syntax error: unknown option 'TTL' (expected one of: WAIT, NAME)",
        ),
        (
            &["OKOME.LEASE.ACQUIRE", "", "1", "1000"],
            "ERR subject must not be empty",
        ),
        (
            &["OKOME.LEASE.RENEW", "{s}:abc", "1000"],
            "ERR '{s}:abc' is not an okome lease id ({subject}:<32 hex digits> or \
             {subject}:name:<32 hex digits>, as OKOME.LEASE.ACQUIRE replies it)",
        ),
        (
            &[
                "OKOME.LEASE.RENEW",
                "{s}:0123456789abcdef0123456789abcdef",
                "0",
            ],
            "ERR ttl_ms 0 is out of range: must be between 100 and 86400000 ms",
        ),
        (
            &["OKOME.LEASE.RENEW", "{s}:0123456789abcdef0123456789abcdef"],
            "ERR wrong number of arguments for 'okome.lease.renew' command",
        ),
        (&["OKOME.LEASE.RELEASE", ""], "ERR lease must not be empty"),
        (
            &["OKOME.LEASE.RELEASE", "a", "b"],
            "ERR wrong number of arguments for 'okome.lease.release' command",
        ),
    ];
    for (args, want) in cases {
        assert_eq!(&e(&mut c, args), want, "{args:?}");
    }
    // Another type at the pool's name: WRONGTYPE, nothing written.
    ok(&mut c, &["SET", POOL, "x"]);
    let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    assert_eq!(
        e(&mut c, &["OKOME.LEASE.ACQUIRE", "s", "1", "1000"]),
        wrongtype
    );
    let id = "{s}:0123456789abcdef0123456789abcdef";
    assert_eq!(e(&mut c, &["OKOME.LEASE.RELEASE", id]), wrongtype);
    assert_eq!(get(&mut c, POOL).as_deref(), Some("x"));
    // A lease pool is no cache key: it cannot be locked.
    let locked = e(&mut c, &["OKOME.LOCK", POOL]);
    assert!(locked.contains("is a lease budget key"), "{locked}");
}

// ---------------------------------------------------- replication and ACL

/// A mixed workload: acquisitions, refusals, renewals, releases, leases
/// that expire and are pruned.
fn workload(c: &mut Connection) {
    let mut ids = Vec::new();
    for i in 0..6 {
        let subject = format!("w{}", i % 3);
        let a = acquire(c, &[&subject, "2", "100000", "NAME", "n"]);
        ids.extend(a.0);
        let short = acquire(c, &[&subject, "3", "100"]);
        ids.extend(short.0);
    }
    for id in ids.iter().step_by(2) {
        renew(c, id, "200000");
    }
    for id in ids.iter().skip(1).step_by(3) {
        release(c, id);
    }
    std::thread::sleep(Duration::from_millis(150));
    for i in 0..3 {
        acquire(c, &[&format!("w{i}"), "3", "50000"]);
    }
}

#[test]
fn replica_and_aof_hold_identical_pools() {
    let mut p = Server::start_with(&[PRIMARY, AOF].concat());
    let r = replica_of(&p, &[], &[]);
    let mut pc = p.conn();
    workload(&mut pc);
    replica_acked(&mut pc);
    let primary = dumps_at(&mut pc);
    assert!(primary.len() >= 5, "{:?}", primary.keys());
    assert!(primary.keys().all(|k| k.starts_with("okome:budget:lease:")));
    drop(pc);
    assert_replicated_and_replayed(&mut p, &mut r.conn(), &primary);
}

#[test]
fn acl_on_the_pool_key() {
    let s = Server::start();
    let mut c = s.conn();
    ok(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "leaser",
            "on",
            ">pw",
            "~okome:budget:lease:*",
            "+@all",
        ],
    );
    ok(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "other",
            "on",
            ">pw",
            "~okome:budget:rate:*",
            "+@all",
        ],
    );
    let mut l = as_user(&s, "leaser");
    let id = held(&acquire(&mut l, &["acl", "1", "1000"]), "{acl}");
    assert_eq!(renew(&mut l, &id, "2000"), 1);
    let mut o = as_user(&s, "other");
    for args in [
        vec!["OKOME.LEASE.ACQUIRE", "acl", "1", "1000"],
        vec!["OKOME.LEASE.RENEW", &id, "1000"],
        vec!["OKOME.LEASE.RELEASE", &id],
    ] {
        let e = call(&mut o, &args).unwrap_err();
        assert!(e.starts_with("NOPERM"), "{args:?}: {e}");
    }
    assert_eq!(release(&mut l, &id), 1);
}

// -------------------------------------------------------------- WAIT

#[test]
fn a_waiter_gets_a_released_lease_and_fifo_among_three() {
    let s = Server::start();
    let mut c = s.conn();
    let holder = held(&acquire(&mut c, &["q", "1", "60000"]), "{q}");
    let mut ws: Vec<Waiter> = Vec::new();
    for name in ["w1", "w2", "w3"] {
        ws.push(Waiter::start(
            s.port,
            name,
            &["q", "1", "60000", "WAIT", "10000"],
        ));
        let refs: Vec<&Waiter> = ws.iter().collect();
        wait_blocked_all(&mut c, &refs);
    }
    // A fresh caller without WAIT is refused; with WAIT it queues behind.
    assert_eq!(acquire(&mut c, &["q", "1", "60000"]).0, None);
    let mut prev = holder;
    for i in 0..3 {
        assert_eq!(release(&mut c, &prev), 1);
        let got = ws[i].lease(Duration::from_secs(5));
        assert!(got.starts_with("{q}:"), "{got}");
        for later in &mut ws[i + 1..] {
            later.assert_waiting("FIFO: only the longest waiter is served");
        }
        assert_eq!(zcard(&mut c, "okome:budget:lease:{q}"), 1, "no ghost lease");
        prev = got;
    }
    assert_eq!(release(&mut c, &prev), 1);
    let m = info_map(&mut c, "okome");
    assert_eq!(m["okome_lease_acquired"], "4");
    assert_eq!(m["okome_lease_released"], "4");
    assert_eq!(m["okome_wait_woken_leader"], "3");
}

#[test]
fn a_waiter_is_woken_by_expiry_and_times_out_exactly() {
    let s = Server::start();
    let mut c = s.conn();
    held(&acquire(&mut c, &["t", "1", "300"]), "{t}");
    let mut w = Waiter::start(s.port, "w", &["t", "1", "5000", "WAIT", "3000"]);
    let (r, at) = w.reply(Duration::from_secs(5));
    let Resp::Array(Some(items)) = &r else {
        panic!("{r:?}")
    };
    assert!(items[0].text().is_some(), "woken by the expiry: {r:?}");
    assert!(at < Duration::from_millis(1500), "{at:?}");
    // Held for 5 s: a waiter of 300 ms times out with the no-lease reply.
    let mut late = Waiter::start(s.port, "late", &["t", "1", "5000", "WAIT", "300"]);
    let (r, at) = late.reply(Duration::from_secs(5));
    let (in_use, retry) = refused(&r);
    assert_eq!(in_use, 1);
    assert!((3_000..5_000).contains(&retry), "{r:?}");
    assert!(
        at >= Duration::from_millis(300) && at < Duration::from_millis(1000),
        "{at:?}"
    );
    assert_eq!(counter(&mut c, "wait_timed_out"), 1);
    assert_eq!(counter(&mut c, "lease_refused"), 1);
}

#[test]
fn a_disconnected_waiter_takes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    let holder = held(&acquire(&mut c, &["d", "1", "60000"]), "{d}");
    let gone = Waiter::start(s.port, "gone", &["d", "1", "60000", "WAIT", "10000"]);
    wait_blocked_all(&mut c, &[&gone]);
    let mut next = Waiter::start(s.port, "next", &["d", "1", "60000", "WAIT", "10000"]);
    wait_blocked_all(&mut c, &[&gone, &next]);
    drop(gone);
    poll(
        Duration::from_secs(5),
        Duration::from_millis(5),
        || match counter(&mut c, "wait_disconnected") {
            1 => Ok(()),
            n => Err(format!("wait_disconnected {n}")),
        },
    );
    assert_eq!(release(&mut c, &holder), 1);
    let got = next.lease(Duration::from_secs(5));
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&["okome:budget:lease:{d}", "0", "-1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        members,
        [got.strip_prefix("{d}:").unwrap()],
        "only the lease given"
    );
}

/// Many callers, some waiting, some not, some releasing at once: the pool
/// never holds more than `max`, and holds exactly the leases handed out and
/// not given back.
#[test]
fn no_ghost_lease_under_concurrency() {
    let s = Server::start();
    let results = race(&s, 8, |i, mut c| {
        let mut mine = Vec::new();
        for round in 0..30 {
            let wait = if (i + round) % 2 == 0 { "200" } else { "1" };
            let a = acquire(&mut c, &["g", "3", "60000", "WAIT", wait]);
            assert!(a.1 <= 3, "{a:?}");
            let in_pool = zcard(&mut c, "okome:budget:lease:{g}");
            assert!(in_pool <= 3, "{in_pool} leases");
            if let Some(id) = a.0 {
                if round % 3 == 0 {
                    mine.push(id);
                } else {
                    assert_eq!(release(&mut c, &id), 1);
                }
            }
        }
        mine
    });
    let mut c = s.conn();
    let handed: Vec<String> = results.into_iter().flatten().collect();
    assert!(handed.len() <= 3, "{handed:?}");
    let mut members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&["okome:budget:lease:{g}", "0", "-1"])
        .query(&mut c)
        .unwrap();
    let mut want: Vec<String> = handed
        .iter()
        .map(|id| id.strip_prefix("{g}:").unwrap().to_string())
        .collect();
    members.sort();
    want.sort();
    assert_eq!(
        members, want,
        "the pool holds exactly the leases handed out"
    );
    let m = wait_counters(&info_text(&mut c, "okome")).unwrap();
    check_wait_invariants(&m).unwrap();
}

/// `CLIENT PAUSE WRITE` across the holder's expiry: nobody is handed the
/// slot while paused; the waiter gets it once writes resume.
#[test]
fn client_pause_write_across_the_expiry() {
    let s = Server::start();
    let mut c = s.conn();
    held(&acquire(&mut c, &["p", "1", "300"]), "{p}");
    let mut w = Waiter::start(s.port, "w", &["p", "1", "5000", "WAIT", "10000"]);
    wait_blocked_all(&mut c, &[&w]);
    ok(&mut c, &["CLIENT", "PAUSE", "5000", "WRITE"]);
    std::thread::sleep(Duration::from_millis(800));
    w.assert_waiting("paused: no lease handed over");
    ok(&mut c, &["CLIENT", "UNPAUSE"]);
    let got = w.lease(Duration::from_secs(5));
    assert_eq!(zcard(&mut c, "okome:budget:lease:{p}"), 1);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&["okome:budget:lease:{p}", "0", "-1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(members, [got.strip_prefix("{p}:").unwrap()]);
}

/// A writable replica turned read-only, and then promoted, while a caller
/// waits on a pool of the replica: nothing is handed over while it is a
/// replica; after `REPLICAOF NO ONE` the waiter gets the slot.
#[test]
fn replica_promoted_hands_the_lease_over() {
    let primary = Server::start_with(PRIMARY);
    let pport = primary.port.to_string();
    let replica = Server::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &pport,
        "--replica-read-only",
        "no",
    ]);
    wait_link_up(&mut replica.conn(), Duration::from_secs(10));
    let mut r = replica.conn();
    held(&acquire(&mut r, &["rp", "1", "300"]), "{rp}");
    let mut w = Waiter::start(replica.port, "w", &["rp", "1", "5000", "WAIT", "10000"]);
    wait_blocked_all(&mut r, &[&w]);
    std::thread::sleep(Duration::from_millis(700));
    w.assert_waiting("a replica hands nothing over");
    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    let got = w.lease(Duration::from_secs(5));
    assert!(got.starts_with("{rp}:"), "{got}");
    assert_eq!(zcard(&mut r, "okome:budget:lease:{rp}"), 1);
}

/// `REPLICAOF host port` on a primary with a waiting caller: the server
/// ends the blocked client itself (`-UNBLOCKED`), exactly one reply, and no
/// lease is taken for it.
#[test]
fn replicaof_with_a_waiter_is_answered_as_redis_decides() {
    let mut s = Server::start();
    let other = Server::start();
    let mut c = s.conn();
    held(&acquire(&mut c, &["demoted", "1", "5000"]), "{demoted}");
    let mut w = Waiter::start(s.port, "w", &["demoted", "1", "5000", "WAIT", "3000"]);
    wait_blocked_all(&mut c, &[&w]);
    ok(&mut c, &["REPLICAOF", "127.0.0.1", &other.port.to_string()]);
    let r = w.conn.read(Duration::from_secs(5)).expect("a reply");
    let e = r.error().map(str::to_string).unwrap_or_default();
    assert!(
        e.starts_with("UNBLOCKED") && e.contains("instance state changed"),
        "the server ends the waiter: {r:?}"
    );
    s.assert_alive("after REPLICAOF");
    assert_eq!(counter(&mut c, "lease_acquired"), 1);
}

#[test]
fn wait_inside_multi_does_not_block() {
    let s = Server::start();
    let mut c = s.conn();
    held(&acquire(&mut c, &["m", "1", "5000"]), "{m}");
    let (r,): (Value,) = redis::pipe()
        .atomic()
        .cmd("OKOME.LEASE.ACQUIRE")
        .arg(&["m", "1", "5000", "WAIT", "1000"])
        .query(&mut c)
        .unwrap();
    let Value::Array(items) = r else {
        panic!("{r:?}")
    };
    assert_eq!(items[0], Value::Nil, "refused at once inside MULTI");
}
