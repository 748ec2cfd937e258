//! The quota commands together: one mixed workload of every one of them
//! (named and very large rate windows, GCRA states, several limits at once
//! with a reservation settled below and above what it reserved, concurrency
//! leases taken, renewed and released) reaches a replica and the AOF as
//! effects only, and both hold byte-identical keys with the same absolute
//! expiries.

use crate::support::*;
use redis::{Connection, Value};

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => panic!("not an array: {other:?}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("UTF-8"),
        Value::SimpleString(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// Runs every quota command; what it wrote is left for the comparison.
fn workload(c: &mut Connection) {
    // Named windows, one with a limit and costs of tokens.
    for _ in 0..3 {
        let r = array(must(c, &["OKOME.RATE", "m", "30000", "60", "NAME", "rpm"]));
        assert_eq!(int(&r[0]), 1, "{r:?}");
        let r = array(must(
            c,
            &[
                "OKOME.RATE",
                "m",
                "150000000",
                "60",
                "COST",
                "4000",
                "NAME",
                "tpm",
            ],
        ));
        assert_eq!(int(&r[0]), 1, "{r:?}");
    }
    // A long window kept in buckets.
    let r = array(must(
        c,
        &[
            "OKOME.RATE",
            "t",
            "1000000000000000",
            "2592000",
            "COST",
            "7",
        ],
    ));
    assert_eq!(int(&r[0]), 1, "{r:?}");
    // Bursts: from a full bucket, burst + 1 at once, then a refusal.
    for i in 0..4 {
        let r = array(must(c, &["OKOME.THROTTLE", "ip", "20", "1", "2"]));
        assert_eq!(int(&r[0]), i64::from(i < 3), "call {i}: {r:?}");
    }
    let r = array(must(
        c,
        &["OKOME.THROTTLE", "ip", "5", "60", "10", "NAME", "login"],
    ));
    assert_eq!(int(&r[0]), 1, "{r:?}");
    // Several limits at once, reserved, then settled below (a refund) and
    // above (an excess) what was reserved.
    let r = array(must(
        c,
        &[
            "OKOME.TAKE",
            "3",
            "m",
            "rpm",
            "30000",
            "60",
            "1",
            "m",
            "tpm",
            "150000000",
            "60",
            "9000",
            "m",
            "usd",
            "1000000",
            "86400",
            "250",
            "RESERVE",
            "120000",
        ],
    ));
    assert_eq!(int(&r[0]), 1, "{r:?}");
    let id = text(&r[2]);
    let s = array(must(c, &["OKOME.SETTLE", &id, "1", "6500", "300"]));
    assert_eq!(int(&s[0]), 1, "{s:?}");
    // Settled again with the same costs: the same reply, nothing written.
    let again = array(must(c, &["OKOME.SETTLE", &id, "1", "6500", "300"]));
    assert_eq!(int(&again[0]), 1, "{again:?}");
    // A reservation left unsettled keeps its costs until its TTL.
    let r = array(must(
        c,
        &[
            "OKOME.TAKE",
            "1",
            "m",
            "tpm",
            "150000000",
            "60",
            "500",
            "RESERVE",
            "60000",
        ],
    ));
    assert_eq!(int(&r[0]), 1, "{r:?}");
    // Leases: two of three slots taken, one renewed, one released.
    let a = array(must(c, &["OKOME.LEASE.ACQUIRE", "gpu", "3", "30000"]));
    let b = array(must(
        c,
        &["OKOME.LEASE.ACQUIRE", "gpu", "3", "30000", "NAME", "big"],
    ));
    let (a, b) = (text(&a[0]), text(&b[0]));
    assert_eq!(int(&must(c, &["OKOME.LEASE.RENEW", &a, "45000"])), 1);
    assert_eq!(int(&must(c, &["OKOME.LEASE.RELEASE", &b])), 1);
    let c3 = array(must(c, &["OKOME.LEASE.ACQUIRE", "gpu", "3", "20000"]));
    assert_eq!(int(&c3[1]), 2, "{c3:?}");
}

#[test]
fn every_quota_command_replicates_as_effects_byte_identical() {
    let mut p = Server::start_with(&[PRIMARY, AOF].concat());
    let r = replica_of(&p, &[], &[]);
    let mut pc = p.conn();
    workload(&mut pc);
    replica_acked(&mut pc);
    let primary = dumps_at(&mut pc);
    for prefix in [
        "okome:budget:rate:{m}:rpm",
        "okome:budget:rate:{m}:tpm",
        "okome:budget:rate:{m}:usd",
        "okome:budget:rate:{t}",
        "okome:budget:gcra:{ip}",
        "okome:budget:gcra:{ip}:login",
        "okome:budget:lease:{gpu}",
        "okome:budget:resv:{m}:",
    ] {
        assert!(
            primary.keys().any(|k| k.starts_with(prefix)),
            "no {prefix}* among {:?}",
            primary.keys()
        );
    }
    assert!(
        !primary.contains_key("okome:budget:lease:{gpu}:big"),
        "a pool goes with its last lease"
    );
    drop(pc);
    assert_replicated_and_replayed(&mut p, &mut r.conn(), &primary);
}
