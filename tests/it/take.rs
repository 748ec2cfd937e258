//! `OKOME.TAKE` and `OKOME.SETTLE` against a real server: all or nothing
//! (a refusal leaves every window byte for byte as it was), the wait of the
//! slowest refusing limit, reservations given back and exceeded, a retried
//! settlement, every error exactly, replication and the AOF (effects,
//! byte-identical), ACL on the windows a reservation names, and CROSSSLOT
//! in a cluster. The window's refund is checked against the brute-force
//! model in okome-core (`limiter::window::settle`).

use crate::support::cluster::Cluster;
use crate::support::errors::CROSSSLOT;
use crate::support::*;
use redis::{Connection, Value};
use std::time::Duration;

/// `[allowed, retry_after_ms, reservation, [[remaining, retry, reset]...]]`
type Take = (i64, i64, Option<String>, Vec<(i64, i64, i64)>);

fn take(c: &mut Connection, args: &[&str]) -> Take {
    redis::cmd("OKOME.TAKE")
        .arg(args)
        .query(c)
        .unwrap_or_else(|e| panic!("OKOME.TAKE {args:?}: {e}"))
}

fn settle(c: &mut Connection, id: &str, costs: &[&str]) -> (i64, Vec<(i64, i64, i64)>) {
    redis::cmd("OKOME.SETTLE")
        .arg(id)
        .arg(costs)
        .query(c)
        .unwrap_or_else(|e| panic!("OKOME.SETTLE {id} {costs:?}: {e}"))
}

fn bytes(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn fails(c: &mut Connection, args: &[&str]) -> String {
    let b = bytes(args);
    let refs: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
    err(c, &refs)
}

/// Within a few ms below `ms` (time passes between calls).
fn near(v: i64, ms: i64) -> bool {
    (ms - 50..=ms).contains(&v)
}

#[test]
fn all_or_nothing_one_refusal_charges_no_window() {
    let s = Server::start();
    let mut c = s.conn();
    let first = take(
        &mut c,
        &[
            "2", "gpt", "default", "5", "60", "1", "gpt", "tpm", "100", "60", "90",
        ],
    );
    assert_eq!(first, (1, 0, None, vec![(4, 0, 60_000), (10, 0, 60_000)]));
    // OKOME.RATE's window is the name `default`.
    let rate: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
        .arg(&["gpt", "5", "60", "COST", "0"])
        .query(&mut c)
        .unwrap();
    assert_eq!((rate.0, rate.1), (1, 4));
    let before = dumps_at(&mut c);
    assert_eq!(before.len(), 2);
    let (allowed, retry, id, limits) = take(
        &mut c,
        &[
            "2", "gpt", "default", "5", "60", "1", "gpt", "tpm", "100", "60", "20",
        ],
    );
    assert_eq!((allowed, id), (0, None));
    assert!(near(retry, 60_000), "{retry}");
    assert_eq!(
        (limits[0].0, limits[0].1),
        (4, 0),
        "would admit: not charged"
    );
    assert!(near(limits[0].2, 60_000));
    assert_eq!((limits[1].0, limits[1].1), (10, retry));
    assert_eq!(dumps_at(&mut c), before, "byte for byte unchanged");
    // A peek (cost 0) of both: read only, admitted.
    let peek = take(
        &mut c,
        &[
            "2", "gpt", "default", "5", "60", "0", "gpt", "tpm", "100", "60", "0",
        ],
    );
    assert_eq!((peek.0, peek.1, peek.3[0].0, peek.3[1].0), (1, 0, 4, 10));
    assert_eq!(dumps_at(&mut c), before, "a peek writes nothing");
}

#[test]
fn the_wait_is_the_slowest_refusing_limits() {
    let s = Server::start();
    let mut c = s.conn();
    let args = [
        "3", "a", "min", "1", "60", "1", "a", "sec", "1", "10", "1", "b", "x", "9", "1", "1",
    ];
    assert_eq!(take(&mut c, &args).0, 1);
    let (allowed, retry, _, limits) = take(&mut c, &args);
    assert_eq!(allowed, 0);
    assert!(near(retry, 60_000), "{retry}");
    assert_eq!(limits[0].1, retry);
    assert!(near(limits[1].1, 10_000), "{limits:?}");
    assert_eq!(
        limits[2],
        (8, 0, limits[2].2),
        "the admissible one unchanged"
    );
}

#[test]
fn every_error_exactly_and_nothing_written() {
    let s = Server::start();
    let mut c = s.conn();
    let cases: &[(&[&str], &str)] = &[
        (&["OKOME.TAKE", "0", "a", "n", "1", "1", "1"], "ERR numlimits 0 is out of range: must be between 1 and 16 limits"),
        (&["OKOME.TAKE", "2", "a", "n", "1", "1", "1"], "ERR syntax error: numlimits 2 needs 10 arguments (subject name limit window_s cost for each), got 5"),
        (&["OKOME.TAKE", "2", "a", "n", "5", "1", "1", "a", "n", "5", "9", "1"], "ERR syntax error: limits 1 and 2 are the same window 'okome:budget:rate:{a}:n': give it once, with the sum of their costs"),
        (&["OKOME.TAKE", "1", "a", "n", "5", "1", "6"], "ERR cost 6 is out of range: must be between 0 and 5 units (0 to the limit)"),
        (&["OKOME.TAKE", "1", "a", "n", "5", "1", "1", "RESERVE", "999"], "ERR ttl_ms 999 is out of range: must be between 1000 and 3600000 ms"),
        (&["OKOME.TAKE", "1", "a", "lock", "5", "1", "1"], "ERR syntax error: NAME lock is reserved (okome:budget:rate:{<subject>}:lock would read as a stampede lock); pick another name"),
        (&["OKOME.SETTLE", "{a}:0123456789abcdef0123456789abcdef", "1"], "ERR unknown or expired reservation"),
        (&["OKOME.SETTLE", "nope", "1"], "ERR 'nope' is not an okome reservation id ({subject}:<32 hex digits>, as OKOME.TAKE ... RESERVE replies it)"),
    ];
    for (args, want) in cases {
        assert_eq!(&fails(&mut c, args), want, "{args:?}");
    }
    assert_eq!(dbsize(&mut c), 0, "nothing written");
}

#[test]
fn a_reservation_gives_back_and_charges_the_excess() {
    let s = Server::start();
    let mut c = s.conn();
    let r = [
        "2", "m", "rpm", "10", "60", "1", "m", "tpm", "1000", "60", "800", "RESERVE", "60000",
    ];
    let (allowed, _, id, limits) = take(&mut c, &r);
    assert_eq!(
        (allowed, limits),
        (1, vec![(9, 0, 60_000), (200, 0, 60_000)])
    );
    let id = id.expect("a reservation id");
    assert!(id.starts_with("{m}:") && id.len() == 4 + 32, "{id}");
    let record = format!("okome:budget:resv:{id}");
    assert!(near(pttl(&mut c, &record), 60_000));
    // 800 reserved: a call needing 500 is refused until the refund.
    let next = ["1", "m", "tpm", "1000", "60", "500"];
    assert_eq!(take(&mut c, &next).0, 0);
    let (settled, limits) = settle(&mut c, &id, &["1", "300"]);
    assert_eq!(settled, 1);
    assert_eq!((limits[0].0, limits[1].0), (9, 700));
    // Retried with the same costs: the same reply; other costs: an error.
    assert_eq!(settle(&mut c, &id, &["1", "300"]), (1, limits.clone()));
    assert_eq!(
        fails(&mut c, &["OKOME.SETTLE", &id, "1", "400"]),
        "ERR the reservation was already settled with other costs (1 300); nothing was done"
    );
    assert_eq!(
        fails(&mut c, &["OKOME.SETTLE", &id, "1"]),
        "ERR syntax error: the reservation has 2 limits, got 1 costs (one per limit, in OKOME.TAKE's order)"
    );
    assert!(
        near(pttl(&mut c, &record), 60_000),
        "the record keeps its TTL"
    );
    assert_eq!(
        take(&mut c, &next).3,
        vec![(200, 0, 60_000)],
        "the refunded room"
    );

    // More than reserved: charged beyond the limit, later calls wait.
    let (_, _, id, _) = take(
        &mut c,
        &["1", "m", "tpm", "1000", "60", "100", "RESERVE", "1000"],
    );
    let (_, limits) = settle(&mut c, &id.unwrap(), &["900"]);
    assert_eq!(limits[0].0, 0, "{limits:?}");
    let (allowed, retry, ..) = take(&mut c, &["1", "m", "tpm", "1000", "60", "1"]);
    assert_eq!(allowed, 0);
    assert!(retry > 59_000, "{retry}");
}

#[test]
fn cancel_and_expiry() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, id, _) = take(
        &mut c,
        &["1", "x", "default", "3", "60", "3", "RESERVE", "1000"],
    );
    let id = id.unwrap();
    let (_, limits) = settle(&mut c, &id, &["0"]);
    assert_eq!(limits, vec![(3, 0, 0)], "cancelled: the window is empty");
    assert!(!exists(&mut c, "okome:budget:rate:{x}"), "deleted");
    let (_, _, id, _) = take(
        &mut c,
        &["1", "x", "default", "3", "60", "2", "RESERVE", "1000"],
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        fails(&mut c, &["OKOME.SETTLE", &id.unwrap(), "0"]),
        "ERR unknown or expired reservation"
    );
    let rate: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
        .arg(&["x", "3", "60", "COST", "0"])
        .query(&mut c)
        .unwrap();
    assert_eq!(rate.1, 1, "an unsettled reservation keeps its costs");
}

#[test]
fn replica_and_aof_see_the_effects() {
    let mut primary = Server::start_with(&[PRIMARY, AOF].concat());
    let replica = replica_of(&primary, &[], &[]);
    let mut p = primary.conn();
    let mut r = replica.conn();
    take(
        &mut p,
        &[
            "2", "a", "default", "5", "60", "2", "a", "t", "50", "600", "20",
        ],
    );
    let (_, _, id, _) = take(
        &mut p,
        &[
            "2", "a", "default", "5", "60", "1", "a", "t", "50", "600", "20", "RESERVE", "600000",
        ],
    );
    settle(&mut p, &id.unwrap(), &["0", "30"]);
    let (_, _, id, _) = take(
        &mut p,
        &["1", "a", "u", "5", "60", "1", "RESERVE", "600000"],
    );
    settle(&mut p, &id.unwrap(), &["0"]);
    replica_acked(&mut p);
    let on_primary = dumps_at(&mut p);
    assert_eq!(on_primary.len(), 4, "{:?}", on_primary.keys());
    drop(p);
    assert_replicated_and_replayed(&mut primary, &mut r, &on_primary);
}

#[test]
fn acl_checks_the_windows_and_the_record() {
    let s = Server::start();
    let mut admin = s.conn();
    for rules in [
        &["SETUSER", "taker", "on", ">pw", "~okome:budget:*", "+@all"][..],
        &[
            "SETUSER",
            "resvonly",
            "on",
            ">pw",
            "~okome:budget:resv:*",
            "+@all",
        ],
        &[
            "SETUSER",
            "rateonly",
            "on",
            ">pw",
            "~okome:budget:rate:*",
            "+@all",
        ],
    ] {
        let _: () = redis::cmd("ACL").arg(rules).query(&mut admin).unwrap();
    }
    let mut t = as_user(&s, "taker");
    let (_, _, id, _) = take(
        &mut t,
        &["1", "a", "default", "5", "60", "2", "RESERVE", "60000"],
    );
    let id = id.unwrap();
    let before = dumps_at(&mut admin);
    let mut r = as_user(&s, "resvonly");
    assert_eq!(
        fails(&mut r, &["OKOME.SETTLE", &id, "1"]),
        "NOPERM this user has no permissions to access the 'okome:budget:rate:{a}' key (okome.settle found it in the reservation)"
    );
    let mut w = as_user(&s, "rateonly");
    let e = fails(&mut w, &["OKOME.SETTLE", &id, "1"]);
    assert!(e.starts_with("NOPERM"), "{e}");
    let e = fails(
        &mut w,
        &[
            "OKOME.TAKE",
            "1",
            "a",
            "default",
            "5",
            "60",
            "1",
            "RESERVE",
            "60000",
        ],
    );
    assert!(
        e.starts_with("NOPERM") && e.contains("okome:budget:resv:{a}:"),
        "{e}"
    );
    assert_eq!(
        take(&mut w, &["1", "a", "default", "5", "60", "1"]).0,
        1,
        "no record, no need"
    );
    assert_eq!(dumps_at(&mut admin).len(), before.len());
    let _: Value = redis::cmd("DEL")
        .arg("okome:budget:rate:{a}")
        .query(&mut admin)
        .unwrap();
}

#[test]
fn two_subjects_in_a_cluster_are_crossslot() {
    let cl = Cluster::start();
    let mut c = cl.nodes[cl.node_of("okome:budget:rate:{a}")].conn();
    let e = fails(
        &mut c,
        &[
            "OKOME.TAKE",
            "2",
            "a",
            "default",
            "5",
            "60",
            "1",
            "b",
            "default",
            "5",
            "60",
            "1",
        ],
    );
    assert_eq!(e, CROSSSLOT);
    let (_, _, id, _) = take(
        &mut c,
        &[
            "2", "a", "default", "5", "60", "1", "a", "t", "5", "60", "1", "RESERVE", "60000",
        ],
    );
    let id = id.unwrap();
    assert_eq!(settle(&mut c, &id, &["0", "0"]).0, 1);
    assert_eq!(
        cl.assert_keys_local(),
        1,
        "the record on its node (the cancelled windows are deleted)"
    );
}
