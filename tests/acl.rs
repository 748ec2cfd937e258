//! ACL: keys okome derives are checked against the calling user's key
//! permissions, like the keys Redis sees in the arguments.

mod common;
use common::*;

fn as_user(s: &Server, user: &str) -> redis::Connection {
    let mut c = s.conn();
    let _: () = redis::cmd("AUTH").arg(&[user, "pw"]).query(&mut c).unwrap();
    c
}

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
    let nope = "NOPERM this user has no permissions to write the 'okome:budget:rate:{a}' key (okome derives it from the arguments)";
    assert_eq!(err(&mut c, &[b"OKOME.RATE", b"a", b"5", b"60"]), nope);
    assert_eq!(
        err(
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
                b"60"
            ]
        ),
        nope
    );
    let e = err(&mut c, &[b"OKOME.WBUDGET", b"a", b"5"]);
    assert!(
        e.starts_with("NOPERM") && e.contains("okome:budget:write:{a}"),
        "{e}"
    );
    let e = err(&mut c, &[b"OKOME.CACHE.SET", b"tools", b"v1", b"{}"]);
    assert!(
        e.starts_with("NOPERM") && e.contains("okome:tools:{v1}"),
        "{e}"
    );
    assert_eq!(snapshot(&mut admin), before, "nothing written");
    // What it may touch still works: the planner flow without AGENT.
    let m = plan_get(&mut c, &["m", "p", "t", "r"]);
    assert_eq!(m.status, "MISS");
    let r: (String, i64, Option<i64>, i64) = redis::cmd("OKOME.PLAN.SET")
        .arg(&[&m.key, "{}", "TOKEN", m.token.as_deref().unwrap()])
        .query(&mut c)
        .unwrap();
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
    assert!(
        e.starts_with("NOPERM") && e.contains("okome:budget:write:{a}"),
        "{e}"
    );
}

#[test]
fn a_read_only_user_gets_hits_but_takes_no_locks() {
    let s = Server::start();
    let mut admin = s.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "on", ">pw", "%R~okome:*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let hot: String = redis::cmd("OKOME.KEY")
        .arg(&["planner", "m", "hot", "t", "r"])
        .query(&mut admin)
        .unwrap();
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&[&hot, "{\"p\":1}", "TTL", "300"])
        .query(&mut admin)
        .unwrap();
    let _: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg(&["health", "n1", "{}"])
        .query(&mut admin)
        .unwrap();
    let mut c = as_user(&s, "reader");
    let before = snapshot(&mut admin);

    let h = plan_get(&mut c, &["m", "hot", "t", "r"]);
    assert_eq!(
        (h.status.as_str(), h.value.as_deref()),
        ("HIT", Some("{\"p\":1}"))
    );
    // In the refresh zone it still only reads: no REFRESH, no lock.
    let h = plan_get(&mut c, &["m", "hot", "t", "r", "REFRESHAHEAD", "900000"]);
    assert_eq!(h.status, "HIT");
    let lookup: (
        String,
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    ) = redis::cmd("OKOME.PLAN.LOOKUP")
        .arg(&hot)
        .query(&mut c)
        .unwrap();
    assert_eq!(lookup.0, "HIT");
    let g: (String, i64) = redis::cmd("OKOME.CACHE.GET")
        .arg(&["health", "n1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(g.0, "{}");

    let e = err(&mut c, &[b"OKOME.PLAN.GET", b"m", b"cold", b"t", b"r"]);
    assert!(
        e.starts_with("NOPERM")
            && e.ends_with(":t:r:lock' key (okome derives it from the arguments)"),
        "{e}"
    );
    let e = err(&mut c, &[b"OKOME.LOCK", hot.as_bytes()]);
    assert!(e.starts_with("NOPERM"), "{e}");
    let e = err(&mut c, &[b"OKOME.CACHE.SET", b"health", b"n1", b"{}"]);
    assert!(e.starts_with("NOPERM"), "{e}");
    assert_eq!(
        snapshot(&mut admin),
        before,
        "a read-only user wrote nothing"
    );
}

#[test]
fn key_specs_tell_acl_dryrun_and_getkeys_the_truth() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "on", ">pw", "%R~okome:*", "+@all"])
        .query(&mut c)
        .unwrap();
    let key: String = redis::cmd("OKOME.KEY")
        .arg(&["planner", "m", "p", "t", "r"])
        .query(&mut c)
        .unwrap();
    let ok: String = redis::cmd("ACL")
        .arg(&["DRYRUN", "reader", "OKOME.PLAN.LOOKUP", &key])
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK", "looking up reads the declared key");
    for cmd in [
        &["OKOME.PLAN.SET", key.as_str(), "{}"][..],
        &["OKOME.LOCK", key.as_str()],
        &["OKOME.UNLOCK", key.as_str(), "t"],
    ] {
        let denied: String = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg("reader")
            .arg(cmd)
            .query(&mut c)
            .unwrap();
        assert!(
            denied.contains("no permissions to access"),
            "{cmd:?}: {denied}"
        );
    }
    let flags: Vec<(String, Vec<String>)> = redis::cmd("COMMAND")
        .arg(&["GETKEYSANDFLAGS", "OKOME.PLAN.LOOKUP", &key])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        flags,
        vec![(key.clone(), vec!["RO".to_string(), "access".to_string()])]
    );
}
