//! The benchmark's ceiling commands (bench/rmw) do what `make bench` says
//! they do: a bare read-modify-write, the same with an absolute expiry
//! replicated as `SET ... PXAT`, and that on a key derived from an id. The
//! ratios in bench/RESULTS.md rest on it.

use crate::support::*;

#[test]
fn ceiling_commands_read_modify_write_expire_and_replicate_effects() {
    let rmw = build_cdylib("okome-bench-rmw", "libokome_bench_rmw.so");
    let rmw = rmw.to_str().expect("utf-8 path");
    let primary = Server::start_with(&["--loadmodule", rmw, "--repl-diskless-sync-delay", "0"]);
    let replica = replica_of(&primary, &[], &[]);
    let mut p = primary.conn();
    let mut r = replica.conn();

    for want in 1..=3i64 {
        let got: i64 = redis::cmd("RMW.INCR")
            .arg("c")
            .query(&mut p)
            .expect("rmw.incr");
        assert_eq!(got, want);
    }
    let value: Vec<u8> = redis::cmd("GET").arg("c").query(&mut p).expect("get");
    assert_eq!(value, 3u64.to_le_bytes());
    let ttl = pttl(&mut p, "c");
    assert_eq!(ttl, -1, "RMW.INCR sets no expiry");

    let got: i64 = redis::cmd("RMW.INCREX")
        .arg("x")
        .arg(60000)
        .query(&mut p)
        .expect("increx");
    assert_eq!(got, 1);
    let got: i64 = redis::cmd("RMW.INCREX")
        .arg("x")
        .arg(60000)
        .query(&mut p)
        .expect("increx");
    assert_eq!(got, 2);
    let ttl = pttl(&mut p, "x");
    assert!((59_000..=60_000).contains(&ttl), "PTTL {ttl}");

    // The replica got the effect: the same bytes and the same absolute expiry.
    replica_acked(&mut p);
    assert_eq!(pexpiretime(&mut p, "x"), pexpiretime(&mut r, "x"));
    let on_replica: Vec<u8> = redis::cmd("GET").arg("x").query(&mut r).expect("get");
    assert_eq!(on_replica, 2u64.to_le_bytes());

    // RMW.INCREXD derives its key from the id, as OKOME.RATE does.
    for want in 1..=2i64 {
        let got: i64 = redis::cmd("RMW.INCREXD")
            .arg("agent:7")
            .arg(60000)
            .query(&mut p)
            .expect("increxd");
        assert_eq!(got, want);
    }
    let derived = "okome:budget:ceil:{agent%3A7}";
    let value: Vec<u8> = redis::cmd("GET").arg(derived).query(&mut p).expect("get");
    assert_eq!(value, 2u64.to_le_bytes());
    let ttl = pttl(&mut p, derived);
    assert!((59_000..=60_000).contains(&ttl), "PTTL {ttl}");

    let _: i64 = redis::cmd("RPUSH")
        .arg("l")
        .arg("a")
        .query(&mut p)
        .expect("rpush");
    let e = redis::cmd("RMW.INCR")
        .arg("l")
        .query::<i64>(&mut p)
        .expect_err("wrong type");
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    let e = redis::cmd("RMW.INCREX")
        .arg("x")
        .arg("soon")
        .query::<i64>(&mut p)
        .expect_err("bad ms");
    assert!(e.to_string().contains("ms is not an integer"), "{e}");
}
