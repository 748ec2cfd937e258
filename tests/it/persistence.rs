//! A crash (SIGKILL) and restart from the AOF, or from an RDB snapshot,
//! brings back the same keys with the same absolute expiry: a full rate
//! window is still full, a large window written by its tail (`SETRANGE`)
//! comes back byte for byte, no lock lacks a TTL.

use crate::support::*;
use std::time::Instant;

fn workload(c: &mut redis::Connection) {
    let m = plan_get(
        c,
        &[
            "m", "stored", "t", "r", "AGENT", "full", "LIMIT", "5", "WINDOW", "60",
        ],
    );
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&[
            &m.key,
            r#"{"p":1}"#,
            "TOKEN",
            m.token.as_deref().unwrap(),
            "AGENT",
            "full",
            "WLIMIT",
            "30",
        ])
        .query(c)
        .unwrap();
    let held = plan_get(c, &["m", "held", "t", "r"]);
    assert_eq!(held.status, "MISS");
    for _ in 0..4 {
        let _: redis::Value = redis::cmd("OKOME.RATE")
            .arg(&["full", "5", "60"])
            .query(c)
            .unwrap();
    }
    let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
        .arg(&["full", "5", "60"])
        .query(c)
        .unwrap();
    assert_eq!(r.0, 0, "the window is full before the crash");
    // A window large enough to be written by its tail (SETRANGE +
    // PEXPIREAT in the AOF), one admission a millisecond or so.
    let mut len = 0usize;
    while len < 800 {
        let _: redis::Value = redis::cmd("OKOME.RATE")
            .arg(&["wide", "100000", "600"])
            .query(c)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(1_100));
        len = redis::cmd("STRLEN")
            .arg("okome:budget:rate:{wide}")
            .query(c)
            .unwrap();
    }
    cache_set(c, &["rag", "repo", "c1", "{}"]);
    cache_set(c, &["health", "n1", "{}"]);
}

fn crash_and_compare(s: &mut Server) {
    let mut c = s.conn();
    workload(&mut c);
    let before = dumps_ttl(&mut c);
    assert!(before.len() >= 6, "{before:?}");
    let crashed = Instant::now();
    s.crash_and_restart();
    let elapsed = crashed.elapsed().as_millis() as i64;
    let mut c = s.conn();
    let after = dumps_ttl(&mut c);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same keys come back"
    );
    for (k, (dump, pttl)) in &before {
        let (dump2, pttl2) = &after[k];
        assert_eq!(dump2, dump, "{k}: same value");
        assert!(*pttl2 > 0, "{k} has a TTL after the restart");
        assert!(
            *pttl2 <= *pttl && *pttl2 >= pttl - elapsed - 200,
            "{k}: PTTL {pttl} before, {pttl2} after {elapsed} ms: the absolute expiry is kept"
        );
    }
    let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
        .arg(&["full", "5", "60"])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        (r.0, r.1),
        (0, 0),
        "a full window is still full after the restart"
    );
    let h = plan_get(&mut c, &["m", "stored", "t", "r"]);
    assert_eq!(h.status, "HIT");
    let l = plan_get(&mut c, &["m", "held", "t", "r"]);
    assert_eq!(l.status, "LOCKED", "the lock survived with its TTL");
}

#[test]
fn aof_crash_and_restart() {
    let mut s = Server::start_with(AOF);
    crash_and_compare(&mut s);
}

#[test]
fn rdb_snapshot_crash_and_restart() {
    let mut s = Server::start_with(&["--dbfilename", "dump.rdb"]);
    let mut c = s.conn();
    workload(&mut c);
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let before = dumps_ttl(&mut c);
    s.crash_and_restart();
    let mut c = s.conn();
    let after = dumps_ttl(&mut c);
    assert_eq!(after.len(), before.len());
    for (k, (dump, _)) in &before {
        assert_eq!(&after[k].0, dump, "{k}");
        assert!(after[k].1 > 0, "{k} has a TTL");
    }
    let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
        .arg(&["full", "5", "60"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r.0, 0, "a full window is still full after an RDB restart");
}
