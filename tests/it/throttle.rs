//! `OKOME.THROTTLE` against a real server: the nginx burst (61 at once,
//! then one every 50 ms, to the millisecond), peeks and refusals writing
//! nothing, NAME keys, every error exactly, replication and the AOF
//! (`SET ... PXAT` effects, byte-identical), ACL on the declared key.
//! The rule itself is checked with injected time in okome-core
//! (`limiter::gcra`).

use crate::support::errors::*;
use crate::support::*;
use redis::Connection;
use std::time::Duration;

type Reply = (i64, i64, i64, i64);

fn throttle(c: &mut Connection, args: &[&str]) -> Reply {
    redis::cmd("OKOME.THROTTLE")
        .arg(args)
        .query(c)
        .unwrap_or_else(|e| panic!("OKOME.THROTTLE {args:?}: {e}"))
}

const KEY: &str = "okome:budget:gcra:{203.0.113.7}";

/// nginx's `rate=20r/s burst=60 nodelay`: from a full bucket 61 pass at
/// once, the 62nd waits exactly 50 ms, and the next unit is admitted 50
/// ms after the burst's last (its state, `PEXPIRETIME`, moves by exactly
/// 50 ms per unit).
#[test]
fn nginx_burst_61_at_once_then_one_every_50_ms() {
    let s = Server::start();
    let mut c = s.conn();
    let args = ["203.0.113.7", "20", "1", "60"];
    // One MULTI: the 62 calls run back to back, within a millisecond or two.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..62 {
        pipe.cmd("OKOME.THROTTLE").arg(&args);
    }
    let replies: Vec<Reply> = pipe.query(&mut c).unwrap();
    // From a full bucket the first unit leaves the bucket full in 50 ms.
    assert_eq!(replies[0], (1, 60, 0, 50));
    let t0 = pexpiretime(&mut c, KEY) - 61 * 50;
    for (i, &(allowed, remaining, retry, reset)) in replies[..61].iter().enumerate() {
        let i = i as i64;
        assert_eq!((allowed, remaining, retry), (1, 60 - i, 0), "unit {i}");
        // reset = TAT - now, with TAT = t0 + 50 (i + 1) exactly.
        let late = (i + 1) * 50 - reset;
        assert!((0..50).contains(&late), "unit {i}: reset {reset}");
    }
    // The 62nd: refused, retry exactly when the first unit has drained:
    // reset - retry is the bucket's 61 units less one, 3000 ms.
    let (allowed, remaining, retry, reset) = replies[61];
    assert_eq!((allowed, remaining), (0, 0));
    assert!((1..=50).contains(&retry), "{retry}");
    assert_eq!(reset - retry, 3000);
    assert_eq!(
        pexpiretime(&mut c, KEY),
        t0 + 3050,
        "a refusal wrote nothing"
    );

    std::thread::sleep(Duration::from_millis(retry as u64 + 1));
    let (allowed, remaining, retry, reset) = throttle(&mut c, &args);
    assert_eq!((allowed, remaining, retry), (1, 0, 0));
    assert!(reset <= 3050, "{reset}");
    assert_eq!(pexpiretime(&mut c, KEY), t0 + 3100, "exactly 50 ms later");
    let (allowed, remaining, retry, reset) = throttle(&mut c, &args);
    assert_eq!((allowed, remaining), (0, 0));
    assert_eq!(reset - retry, 3000);
    let left = pttl(&mut c, KEY);
    assert!(
        left <= reset && left > reset - 50,
        "the key expires when the bucket is full: PTTL {left}, reset {reset}"
    );
}

/// A fractional interval (3 per second) is kept exactly: the state moves
/// by 333.33... ms a unit, so three units move it by exactly one second.
#[test]
fn three_units_a_second_move_the_state_by_exactly_a_second() {
    let s = Server::start();
    let mut c = s.conn();
    let args = ["tenant-3", "3", "1", "1000"];
    let key = "okome:budget:gcra:{tenant-3}";
    assert_eq!(throttle(&mut c, &args).0, 1);
    let first = pexpiretime(&mut c, key);
    for _ in 0..3 {
        assert_eq!(throttle(&mut c, &args).0, 1);
    }
    // ⌈t + 4/3 s⌉ - ⌈t + 1/3 s⌉ = 1000 whatever t's fraction.
    assert_eq!(pexpiretime(&mut c, key) - first, 1000);
    let peek = throttle(&mut c, &["tenant-3", "3", "1", "1000", "COST", "0"]);
    assert_eq!((peek.0, peek.2), (1, 0));
    assert!((997..=1001).contains(&peek.1), "{peek:?}");
}

/// `COST 0` only reads: no key is made, and an existing one keeps its bytes
/// and its expiry. A refused call writes nothing either.
#[test]
fn a_peek_or_a_refusal_writes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    let key = "okome:budget:gcra:{p}";
    assert_eq!(
        throttle(&mut c, &["p", "1", "60", "1", "COST", "0"]),
        (1, 2, 0, 0)
    );
    assert!(!exists(&mut c, key), "a peek made no key");
    assert_eq!(
        throttle(&mut c, &["p", "1", "60", "1", "COST", "2"]),
        (1, 0, 0, 120_000)
    );
    let before = dumps_at(&mut c);
    let (allowed, remaining, retry, reset) = throttle(&mut c, &["p", "1", "60", "1"]);
    assert_eq!((allowed, remaining), (0, 0));
    assert!((59_900..=60_000).contains(&retry), "{retry}");
    assert_eq!(reset - retry, 60_000);
    let peek = throttle(&mut c, &["p", "1", "60", "1", "COST", "0"]);
    assert_eq!((peek.0, peek.1, peek.2), (1, 0, 0));
    assert_eq!(dumps_at(&mut c), before, "refusal and peek wrote nothing");
    assert_eq!(counter(&mut c, "throttle_allowed"), 3);
    assert_eq!(counter(&mut c, "throttle_limited"), 1);
}

/// `NAME` keeps a bucket per name; `default` is the unnamed one.
#[test]
fn names_are_separate_buckets() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(throttle(&mut c, &["u:1", "1", "60", "0"]).0, 1);
    assert_eq!(
        throttle(&mut c, &["u:1", "1", "60", "0", "NAME", "default"]).0,
        0
    );
    assert_eq!(
        throttle(&mut c, &["u:1", "1", "60", "0", "NAME", "login"]).0,
        1
    );
    assert_eq!(
        throttle(&mut c, &["u:1", "1", "60", "0", "NAME", "log in"]).0,
        1
    );
    assert_eq!(
        throttle(&mut c, &["u:1", "1", "60", "0", "NAME", "login"]).0,
        0
    );
    let mut k = keys(&mut c);
    k.sort();
    assert_eq!(
        k,
        [
            "okome:budget:gcra:{u%3A1}",
            "okome:budget:gcra:{u%3A1}:log%20in",
            "okome:budget:gcra:{u%3A1}:login",
        ]
    );
    assert_eq!(
        okome_key(&mut c, "gcra", &["u:1"]),
        "okome:budget:gcra:{u%3A1}"
    );
}

#[test]
fn every_error_exactly_and_nothing_written() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = redis::cmd("LPUSH")
        .arg(&["okome:budget:gcra:{list}", "x"])
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&["okome:budget:gcra:{text}", "hello"])
        .query(&mut c)
        .unwrap();
    // A rate window's bytes at a GCRA key, and a GCRA state at a rate key.
    let _: Reply = redis::cmd("OKOME.RATE")
        .arg(&["w", "5", "60"])
        .query(&mut c)
        .unwrap();
    let window: Vec<u8> = redis::cmd("GET")
        .arg("okome:budget:rate:{w}")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("okome:budget:gcra:{w}")
        .arg(window)
        .query(&mut c)
        .unwrap();
    throttle(&mut c, &["g", "1", "60", "0"]);
    let state: Vec<u8> = redis::cmd("GET")
        .arg("okome:budget:gcra:{g}")
        .query(&mut c)
        .unwrap();
    assert_eq!((state.len(), state[0]), (25, 3), "format byte 3, 25 bytes");
    let _: () = redis::cmd("SET")
        .arg("okome:budget:rate:{g}")
        .arg(&state)
        .query(&mut c)
        .unwrap();
    // A state an hour ahead of what rate 1 per 60 s, burst 0 could write.
    let ahead = now_ms() as i128 + 3_600_000;
    let mut forged = vec![3u8];
    forged.extend_from_slice(&ahead.to_be_bytes());
    forged.extend_from_slice(&1u64.to_be_bytes());
    let _: () = redis::cmd("SET")
        .arg("okome:budget:gcra:{ahead}")
        .arg(forged)
        .query(&mut c)
        .unwrap();

    let before = dumps_at(&mut c);
    let not_gcra = |k: &str| {
        format!("ERR '{k}' does not hold an okome GCRA state (was it written by another client?)")
    };
    let cases = [
        exact(
            &[b"OKOME.THROTTLE", b"a", b"1", b"1"],
            arity("okome.throttle"),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"", b"1", b"1", b"0"],
            "ERR subject must not be empty",
        ),
        exact(
            &[b"OKOME.THROTTLE", b"a", b"x", b"1", b"0"],
            not_int("rate"),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"a", b"0", b"1", b"0"],
            range("rate", "0", 1, 1_000_000_000_000_000, "units"),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"a", b"1", b"31536001", b"0"],
            range("period_s", "31536001", 1, 31_536_000, "seconds"),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"a", b"1", b"1", b"1000000000000001"],
            range(
                "burst",
                "1000000000000001",
                0,
                1_000_000_000_000_000,
                "units",
            ),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"a", b"20", b"1", b"60", b"COST", b"62"],
            "ERR cost 62 is out of range: must be between 0 and 61 units (0 to burst + 1)",
        ),
        exact(
            &[b"OKOME.THROTTLE", b"a", b"1", b"1", b"0", b"COST"],
            needs_value("COST"),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"a", b"1", b"1", b"0", b"NAME", b""],
            "ERR name must not be empty",
        ),
        exact(
            &[
                b"OKOME.THROTTLE",
                b"a",
                b"1",
                b"1",
                b"0",
                b"NAME",
                b"x",
                b"NAME",
                b"y",
            ],
            repeated("NAME"),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"a", b"1", b"1", b"0", b"WINDOW", b"1"],
            "ERR syntax error: unknown option 'WINDOW' (expected one of: COST, NAME)",
        ),
        exact(&[b"OKOME.THROTTLE", b"list", b"1", b"1", b"0"], WRONGTYPE),
        exact(
            &[b"OKOME.THROTTLE", b"list", b"1", b"1", b"0", b"COST", b"0"],
            WRONGTYPE,
        ),
        exact(
            &[b"OKOME.THROTTLE", b"text", b"1", b"1", b"0"],
            not_gcra("okome:budget:gcra:{text}"),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"text", b"1", b"1", b"0", b"COST", b"0"],
            not_gcra("okome:budget:gcra:{text}"),
        ),
        exact(
            &[b"OKOME.THROTTLE", b"w", b"1", b"1", b"0"],
            not_gcra("okome:budget:gcra:{w}"),
        ),
        exact(
            &[b"OKOME.RATE", b"g", b"5", b"60"],
            "ERR 'okome:budget:rate:{g}' does not hold an okome budget window (was it written by \
             another client?)",
        ),
        pattern(
            &[b"OKOME.THROTTLE", b"ahead", b"1", b"60", b"0"],
            "ERR 'okome:budget:gcra:{ahead}' holds an okome GCRA state that this rate and burst \
             could only have written under a clock <n> ms ahead, beyond the 60000 ms clock-skew \
             allowance (written by another client, with a larger burst or a slower rate, or \
             under a clock that far ahead?); nothing was charged or written",
        ),
    ];
    run(&mut c, &cases);
    assert_eq!(dumps_at(&mut c), before, "no error wrote anything");
    // The same state is fine for a rate and burst that could have written
    // it: burst 59 at 1 per 60 s holds an hour.
    let r = throttle(&mut c, &["ahead", "1", "60", "59", "COST", "0"]);
    assert_eq!((r.0, r.1, r.2), (1, 0, 0));
}

/// Every admission reaches a replica and the AOF as `SET key <state> PXAT
/// <full again>`, never as the command: both end byte-identical, with the
/// same absolute expiries.
#[test]
fn replica_and_aof_see_set_pxat_effects() {
    let mut primary = Server::start_with(&[PRIMARY, AOF].concat());
    let replica = replica_of(&primary, &[], &[]);
    let mut p = primary.conn();
    let mut r = replica.conn();
    // Every state outlives the AOF replay by a minute or more.
    let calls: &[&[&str]] = &[
        &["ip-1", "20", "60", "60"],
        &["ip-1", "20", "60", "60", "COST", "30"],
        &["ip-1", "20", "60", "60", "COST", "40"],
        &["ip-1", "20", "60", "60", "COST", "0"],
        &["ip-2", "3", "1000", "5", "NAME", "api"],
        &["ip-2", "3", "1000", "5", "NAME", "api"],
        &[
            "ip-3",
            "1000000000000000",
            "60",
            "1000000000000000",
            "COST",
            "999999999999999",
        ],
        &["ip-4", "7", "600", "2"],
    ];
    let mut admitted = 0;
    for args in calls {
        let (allowed, ..) = throttle(&mut p, args);
        let peek = args.ends_with(&["COST", "0"]);
        admitted += i64::from(allowed == 1 && !peek);
    }
    assert_eq!(admitted, 6, "one refusal, one peek");
    replica_acked(&mut p);
    let on_primary = dumps_at(&mut p);
    assert_eq!(on_primary.len(), 4, "{:?}", on_primary.keys());
    drop(p);
    let stats = assert_replicated_and_replayed(&mut primary, &mut r, &on_primary);
    assert!(
        stats.contains(&format!("cmdstat_set:calls={admitted},")),
        "{stats}"
    );
}

/// The declared key is what ACL checks: a user with the GCRA keys only
/// may throttle and nothing else; a read-only one may only peek; a user
/// with the rate windows only gets `NOPERM`, and nothing is written.
#[test]
fn acl_checks_the_gcra_key() {
    let s = Server::start();
    let mut admin = s.conn();
    for rules in [
        &[
            "SETUSER",
            "bursty",
            "on",
            ">pw",
            "~okome:budget:gcra:*",
            "+@all",
        ][..],
        &[
            "SETUSER",
            "peeker",
            "on",
            ">pw",
            "%R~okome:budget:gcra:*",
            "+@all",
        ],
        &[
            "SETUSER",
            "rater",
            "on",
            ">pw",
            "~okome:budget:rate:*",
            "+@all",
        ],
    ] {
        let _: () = redis::cmd("ACL").arg(rules).query(&mut admin).unwrap();
    }
    let mut b = as_user(&s, "bursty");
    assert_eq!(throttle(&mut b, &["a", "1", "60", "1"]), (1, 1, 0, 60_000));
    assert_eq!(throttle(&mut b, &["a", "1", "60", "1", "NAME", "n"]).0, 1);
    let e = err(&mut b, &[b"OKOME.RATE", b"a", b"5", b"60"]);
    assert!(e.starts_with("NOPERM"), "{e}");

    let before = dumps_at(&mut admin);
    let mut p = as_user(&s, "peeker");
    let peek = throttle(&mut p, &["a", "1", "60", "1", "COST", "0"]);
    assert_eq!((peek.0, peek.1, peek.2), (1, 1, 0));
    let e = err(&mut p, &[b"OKOME.THROTTLE", b"a", b"1", b"60", b"1"]);
    assert!(e.starts_with("NOPERM"), "{e}");
    let mut r = as_user(&s, "rater");
    for args in [
        &[&b"OKOME.THROTTLE"[..], b"a", b"1", b"60", b"1"][..],
        &[b"OKOME.THROTTLE", b"a", b"1", b"60", b"1", b"COST", b"0"],
        &[b"OKOME.THROTTLE", b"b", b"1", b"60", b"1"],
    ] {
        let e = err(&mut r, args);
        assert!(e.starts_with("NOPERM"), "{e}");
    }
    assert_eq!(dumps_at(&mut admin), before, "nothing written");
}

/// Keyspace notifications as `SET key value PXAT t` sends them.
#[test]
fn an_admission_notifies_set_and_expire() {
    let s = Server::start_with(&["--notify-keyspace-events", "KEA"]);
    let mut c = s.conn();
    let mut sub = s.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub
        .psubscribe("__keyspace@0__:okome:budget:gcra:*")
        .unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    throttle(&mut c, &["n", "1", "60", "0", "COST", "0"]);
    throttle(&mut c, &["n", "1", "60", "0"]);
    throttle(&mut c, &["n", "1", "60", "0"]);
    let events: Vec<String> = (0..2)
        .map(|_| pubsub.get_message().unwrap().get_payload().unwrap())
        .collect();
    assert_eq!(events, ["set", "expire"]);
    pubsub
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        pubsub.get_message().is_err(),
        "a peek and a refusal notify nothing"
    );
}
