//! ACL: every key an okome call touches is declared (the tail okome's
//! command filter appends), so Redis checks it like the key of a built-in,
//! before okome runs: `NOPERM` in Redis's own words, nothing written.
//! tests/it/acl_matrix.rs checks every command against every user shape.

use crate::support::*;

#[test]
fn a_planner_only_user_cannot_make_okome_write_budgets() {
    let s = Server::start();
    let mut admin = s.conn();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "planner",
            "on",
            ">pw",
            "~okome:planner:*",
            "+@all",
        ])
        .query(&mut admin)
        .unwrap();
    let mut c = as_user(&s, "planner");
    let before = snapshot(&mut admin);
    let e = err(&mut c, &[b"OKOME.RATE", b"a", b"5", b"60"]);
    assert!(e.starts_with("NOPERM"), "{e}");
    let e = err(
        &mut c,
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
    );
    assert!(e.starts_with("NOPERM"), "{e}");
    let e = err(&mut c, &[b"OKOME.WBUDGET", b"a", b"5"]);
    assert!(e.starts_with("NOPERM"), "{e}");
    let e = err(&mut c, &[b"OKOME.CACHE.SET", b"tools", b"v1", b"{}"]);
    assert!(e.starts_with("NOPERM"), "{e}");
    assert_eq!(snapshot(&mut admin), before, "nothing written");
    // What it may touch still works: the planner flow without AGENT.
    let m = plan_get(&mut c, &["m", "p", "t", "r"]);
    assert_eq!(m.status, "MISS");
    let r = plan_store(
        &mut c,
        &[&m.key, "{}", "TOKEN", m.token.as_deref().unwrap()],
    );
    assert_eq!(r.0, "STORED");
    let e = err(
        &mut c,
        &[
            b"OKOME.PLAN.SET",
            m.key.as_bytes(),
            b"{}",
            b"AGENT",
            b"a",
            b"WLIMIT",
            b"5",
        ],
    );
    assert!(e.starts_with("NOPERM"), "{e}");
}

/// A read-only user reads plans with `NOLOCK` (a lookup that may take the
/// lock declares it as written, so without `NOLOCK` it is refused, hit or
/// miss, as a built-in that may write a key is).
#[test]
fn a_read_only_user_reads_with_nolock_and_takes_no_locks() {
    let s = Server::start();
    let mut admin = s.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "on", ">pw", "%R~okome:*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let hot = okome_key(&mut admin, "planner", &["m", "hot", "t", "r"]);
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&[&hot, "{\"p\":1}", "TTL", "300"])
        .query(&mut admin)
        .unwrap();
    cache_set(&mut admin, &["health", "n1", "{}"]);
    let mut c = as_user(&s, "reader");
    let before = snapshot(&mut admin);

    let h = plan_get(&mut c, &["m", "hot", "t", "r", "NOLOCK"]);
    assert_eq!(
        (h.status.as_str(), h.value.as_deref()),
        ("HIT", Some("{\"p\":1}"))
    );
    let lookup: PlanReply = redis::cmd("OKOME.PLAN.LOOKUP")
        .arg(&[hot.as_str(), "NOLOCK"])
        .query(&mut c)
        .unwrap();
    assert_eq!(lookup.0, "HIT");
    let g: (String, i64) = redis::cmd("OKOME.CACHE.GET")
        .arg(&["health", "n1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(g.0, "{}");

    for args in [
        &[&b"OKOME.PLAN.GET"[..], b"m", b"hot", b"t", b"r"][..],
        &[b"OKOME.PLAN.GET", b"m", b"cold", b"t", b"r"],
        &[b"OKOME.PLAN.LOOKUP", hot.as_bytes()],
        &[b"OKOME.LOCK", hot.as_bytes()],
        &[b"OKOME.CACHE.SET", b"health", b"n1", b"{}"],
    ] {
        let e = err(&mut c, args);
        assert!(e.starts_with("NOPERM"), "{e}");
    }
    assert_eq!(
        snapshot(&mut admin),
        before,
        "a read-only user wrote nothing"
    );
}

/// The tail okome's filter appends to `OKOME.PLAN.LOOKUP key`.
fn lookup_tail(key: &str) -> Vec<String> {
    to_strings(&[
        "OKOME.R",
        "1",
        key,
        "OKOME.W",
        "1",
        &lock_of(key),
        "OKOME.RW",
        "0",
    ])
}

/// `ACL DRYRUN` and `COMMAND GETKEYSANDFLAGS` do not run command filters:
/// given the command as a client sends it they see no key (Redis decides
/// that); given it with the tail the filter appends, they report exactly
/// the keys and flags Redis checks when the call runs.
#[test]
fn key_specs_tell_acl_dryrun_and_getkeys_the_truth() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "on", ">pw", "%R~okome:*", "+@all"])
        .query(&mut c)
        .unwrap();
    let key = okome_key(&mut c, "planner", &["m", "p", "t", "r"]);
    let unseen: String = redis::cmd("ACL")
        .arg(&["DRYRUN", "reader", "OKOME.PLAN.LOOKUP", &key])
        .query(&mut c)
        .unwrap();
    assert_eq!(unseen, "OK", "DRYRUN runs no filter: it sees no key");
    let tail = lookup_tail(&key);
    let denied: String = redis::cmd("ACL")
        .arg(&["DRYRUN", "reader", "OKOME.PLAN.LOOKUP", &key])
        .arg(&tail)
        .query(&mut c)
        .unwrap();
    assert!(denied.contains("no permissions to access"), "{denied}");
    let ok: String = redis::cmd("ACL")
        .arg(&["DRYRUN", "reader", "OKOME.PLAN.LOOKUP", &key, "NOLOCK"])
        .arg(&["OKOME.R", "1", &key, "OKOME.W", "0", "OKOME.RW", "0"])
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK", "NOLOCK only reads the plan");
    let flags: Vec<(String, Vec<String>)> = redis::cmd("COMMAND")
        .arg(&["GETKEYSANDFLAGS", "OKOME.PLAN.LOOKUP", &key])
        .arg(&tail)
        .query(&mut c)
        .unwrap();
    let (mut read, mut write) = (flags[0].1.clone(), flags[1].1.clone());
    read.sort();
    write.sort();
    assert_eq!(flags[0].0, key);
    assert_eq!(read, ["RO", "access"]);
    assert_eq!(flags[1].0, format!("{key}:lock"));
    assert_eq!(write, ["RW", "update"]);
}
