//! Bad values across commands: JSON that is not UTF-8 or too deep, integers
//! as Redis parses them, and WRONGTYPE for every command that reads a key
//! (the case table is in `tests/it/support/errors.rs`).

use crate::support::errors::*;
use crate::support::*;

/// JSON texts are UTF-8 (RFC 8259 section 8.1): invalid UTF-8 inside a JSON
/// string is not valid JSON either.
#[test]
fn json_strings_must_be_utf8() {
    let (_s, mut c) = seeded();
    let k = pk();
    let mut cases = Vec::new();
    for (v, at) in [
        (&b"\"\xff\""[..], 2),
        (b"{\"a\":\"\xc3\"}", 7),
        (b"[\"\xed\xa0\x80\"]", 3),
        (b"{\"\xfe\":1}", 3),
    ] {
        let detail = format!("invalid UTF-8 at byte {at}");
        cases.push(exact(
            &[b"OKOME.PLAN.SET", k.as_bytes(), v],
            not_json("plan_json", &detail),
        ));
        cases.push(exact(
            &[b"OKOME.CACHE.SET", b"tools", b"v2", v],
            not_json("value_json", &detail),
        ));
    }
    run(&mut c, &cases);
}

/// Integers parse as Redis's `string2ll` does: leading zeros and `-0` are
/// "not an integer" (`SET k v EX 010` is refused too).
#[test]
fn integers_with_leading_zeros_are_refused_like_redis() {
    let (_s, mut c) = seeded();
    let k = pk();
    let mut cases = Vec::new();
    for v in [&b"09000"[..], b"009000", b"-0", b"00"] {
        cases.push(exact(
            &[b"OKOME.LOCK", b"okome:tools:{v1}", b"TTL", v],
            not_int("ttl"),
        ));
        cases.push(exact(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"LOCKTTL", v],
            not_int("lockttl"),
        ));
    }
    cases.push(exact(
        &[b"OKOME.PLAN.SET", k.as_bytes(), b"{}", b"TTL", b"0600"],
        not_int("ttl"),
    ));
    cases.push(exact(
        &[b"OKOME.CACHE.SET", b"tools", b"v1", b"{}", b"TTL", b"0600"],
        not_int("ttl"),
    ));
    run(&mut c, &cases);
}

#[test]
fn deeply_nested_valid_json_does_not_crash() {
    let (mut s, mut c) = seeded();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let k = pk();
    for cmd in [
        [&b"OKOME.CACHE.SET"[..], b"tools", b"deep", deep.as_bytes()],
        [b"OKOME.PLAN.SET", k.as_bytes(), deep.as_bytes(), b"{}"],
    ] {
        let mut args = owned(&cmd);
        if args[3] == b"{}" {
            args.pop();
        }
        // Either stored, or refused as JSON; never a crash.
        if let Err(e) = query(&mut c, &args) {
            assert!(error_text(&e).contains(" is not valid JSON ("), "{e}");
        }
        ping(&mut c);
    }
    assert!(s.alive());
}

/// `LPUSH` onto a key (or its lock) first: every command that must read it
/// answers WRONGTYPE and leaves everything as it was.
#[test]
fn wrongtype_everywhere() {
    let (_s, mut c) = seeded();
    let fresh = format!("okome:planner:m:{{{}}}:t:r", sha256_hex("fresh"));
    let fb = fresh.as_bytes();
    let lock = format!("{fresh}:lock");
    let pg: &[&[u8]] = &[b"OKOME.PLAN.GET", b"m", b"fresh", b"t", b"r"];
    let pg_ttl: &[&[u8]] = &[
        b"OKOME.PLAN.GET",
        b"m",
        b"fresh",
        b"t",
        b"r",
        b"LOCKTTL",
        b"8000",
    ];
    let pg_nolock: &[&[u8]] = &[b"OKOME.PLAN.GET", b"m", b"fresh", b"t", b"r", b"NOLOCK"];

    // The plan key holds a list.
    let _: i64 = redis::cmd("LPUSH")
        .arg(&fresh)
        .arg("x")
        .query(&mut c)
        .unwrap();
    run(
        &mut c,
        &[
            exact(pg, WRONGTYPE),
            exact(pg_ttl, WRONGTYPE),
            exact(pg_nolock, WRONGTYPE),
            exact(&[b"OKOME.PLAN.SET", fb, b"{}"], WRONGTYPE),
            exact(
                &[b"OKOME.PLAN.SET", fb, b"{}", b"TOKEN", b"t", b"TTL", b"900"],
                WRONGTYPE,
            ),
        ],
    );
    let _: i64 = redis::cmd("DEL").arg(&fresh).query(&mut c).unwrap();

    // Its lock key holds a list (the plan itself is absent).
    let _: i64 = redis::cmd("LPUSH")
        .arg(&lock)
        .arg("x")
        .query(&mut c)
        .unwrap();
    run(
        &mut c,
        &[
            exact(pg, WRONGTYPE),
            exact(pg_ttl, WRONGTYPE),
            // With TOKEN the lock must be read: refused before the plan is written.
            exact(&[b"OKOME.PLAN.SET", fb, b"{}", b"TOKEN", b"t"], WRONGTYPE),
            exact(&[b"OKOME.LOCK", fb], WRONGTYPE),
            exact(&[b"OKOME.LOCK", fb, b"TTL", b"10000"], WRONGTYPE),
            exact(&[b"OKOME.LOCK", fb, b"TOKEN", b"x"], WRONGTYPE),
            exact(&[b"OKOME.UNLOCK", fb, b"x"], WRONGTYPE),
        ],
    );
    let _: i64 = redis::cmd("DEL").arg(&lock).query(&mut c).unwrap();

    // Cache keys of every kind, holding a list, hash, set and sorted set.
    type Setup<'a> = (&'a str, &'a str, &'a [&'a [u8]], &'a [&'a [u8]]);
    let setups: [Setup; 4] = [
        ("LPUSH", "okome:tools:{v9}", &[b"tools", b"v9"], &[b"x"]),
        (
            "HSET",
            "okome:rag:{r}:c9",
            &[b"rag", b"r", b"c9"],
            &[b"f", b"v"],
        ),
        ("SADD", "okome:health:{n9}", &[b"health", b"n9"], &[b"x"]),
        (
            "ZADD",
            "okome:model_meta:{m9}",
            &[b"model_meta", b"m9"],
            &[b"1", b"x"],
        ),
    ];
    for (push, key, parts, vals) in setups {
        let mut cmd = redis::cmd(push);
        cmd.arg(key);
        for v in vals {
            cmd.arg(*v);
        }
        let _: i64 = cmd.query(&mut c).unwrap();
        let get = [&[b"OKOME.CACHE.GET".as_slice()][..], parts].concat();
        let set = [
            &[b"OKOME.CACHE.SET".as_slice()][..],
            parts,
            &[b"{}".as_slice()],
        ]
        .concat();
        run(&mut c, &[exact(&get, WRONGTYPE), exact(&set, WRONGTYPE)]);

        // Same for its lock key.
        let lock = format!("{key}:lock");
        let _: i64 = redis::cmd("LPUSH")
            .arg(&lock)
            .arg("x")
            .query(&mut c)
            .unwrap();
        run(
            &mut c,
            &[
                exact(&[b"OKOME.LOCK", key.as_bytes()], WRONGTYPE),
                exact(&[b"OKOME.LOCK", key.as_bytes(), b"TOKEN", b"t"], WRONGTYPE),
                exact(&[b"OKOME.UNLOCK", key.as_bytes(), b"t"], WRONGTYPE),
            ],
        );
    }
}
