//! Bad input to `OKOME.PLAN.GET` and `OKOME.PLAN.SET`: every case gets an
//! error reply that names the problem, writes nothing (the keyspace snapshot
//! is unchanged) and leaves the server answering PING (the case table is in
//! `tests/it/support/errors.rs`).

use crate::support::errors::*;
use crate::support::*;

#[test]
fn plan_get_errors() {
    let (_s, mut c) = seeded();
    let opts = ["LOCKTTL", "NOLOCK"];
    let mut cases = vec![
        exact(&[b"OKOME.PLAN.GET"], arity("okome.plan.get")),
        exact(&[b"OKOME.PLAN.GET", b"m"], arity("okome.plan.get")),
        exact(&[b"OKOME.PLAN.GET", b"m", b"p"], arity("okome.plan.get")),
        exact(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t"],
            arity("okome.plan.get"),
        ),
        exact(
            &[b"OKOME.PLAN.GET", b"", b"p", b"t", b"r"],
            "ERR model must not be empty",
        ),
        exact(
            &[b"OKOME.PLAN.GET", b"m", b"", b"t", b"r"],
            "ERR prompt must not be empty",
        ),
        exact(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"", b"r"],
            "ERR toolset_version must not be empty",
        ),
        exact(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"", b"NOLOCK"],
            "ERR repo_hash must not be empty",
        ),
        unknown(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"FOO"],
            "FOO",
            &opts,
        ),
        unknown(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"extra"],
            "extra",
            &opts,
        ),
        unknown(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"TTL", b"9000"],
            "TTL",
            &opts,
        ),
        unknown(&[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b""], "", &opts),
        unknown(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"\xff'\\\n"],
            "\\xff\\x27\\x5c\\x0a",
            &opts,
        ),
        unknown(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"NOLOCK",
                b"junk",
            ],
            "junk",
            &opts,
        ),
        unknown(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"LOCKTTL",
                b"9000",
                b"9000",
            ],
            "9000",
            &opts,
        ),
        exact(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"NOLOCK",
                b"NOLOCK",
            ],
            repeated("NOLOCK"),
        ),
        exact(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"nolock",
                b"NoLock",
            ],
            repeated("NOLOCK"),
        ),
        exact(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"LOCKTTL",
                b"9000",
                b"lockttl",
                b"9000",
            ],
            repeated("LOCKTTL"),
        ),
        exact(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"NOLOCK",
                b"LOCKTTL",
                b"9000",
            ],
            "ERR syntax error: LOCKTTL and NOLOCK cannot be combined",
        ),
        exact(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"LOCKTTL",
                b"9000",
                b"NOLOCK",
            ],
            "ERR syntax error: LOCKTTL and NOLOCK cannot be combined",
        ),
    ];
    // HASHED: the second argument must be the prompt's SHA-256 in
    // lowercase hex; the error names it and shows its start.
    let hash = sha256_hex("p");
    let upper = hash.to_ascii_uppercase();
    let long = "p".repeat(5_000);
    let not_hash = |got: &str, len: usize| {
        format!(
            "ERR prompt_hash must be the SHA-256 of the prompt as 64 lowercase hex digits \
             (HASHED); got '{got}' ({len} bytes)"
        )
    };
    for (bad, want) in [
        (&b"p"[..], not_hash("p", 1)),
        (b"", not_hash("", 0)),
        (upper.as_bytes(), not_hash(&upper, 64)),
        (&hash.as_bytes()[..63], not_hash(&hash[..63], 63)),
        (
            format!("{}g", &hash[..63]).into_bytes().leak(),
            not_hash(&format!("{}g", &hash[..63]), 64),
        ),
        (
            format!("{hash}0").into_bytes().leak(),
            not_hash(&format!("{hash}0"), 65),
        ),
        (
            long.as_bytes(),
            not_hash(&format!("{}...", &long[..72]), 5_000),
        ),
        (b"\x00 \xff", not_hash("\\x00 \\xff", 3)),
    ] {
        cases.push(exact(
            &[b"OKOME.PLAN.GET", b"m", bad, b"t", b"r", b"HASHED"],
            want.clone(),
        ));
        cases.push(exact(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                bad,
                b"t",
                b"r",
                b"hashed",
                b"NOLOCK",
            ],
            want,
        ));
    }
    cases.push(exact(
        &[
            b"OKOME.PLAN.GET",
            b"m",
            hash.as_bytes(),
            b"t",
            b"",
            b"HASHED",
        ],
        "ERR repo_hash must not be empty",
    ));
    let misplaced = "ERR syntax error: HASHED must come right after repo_hash \
                     (OKOME.PLAN.GET model prompt_hash toolset_version repo_hash HASHED [options])";
    cases.push(exact(
        &[
            b"OKOME.PLAN.GET",
            b"m",
            hash.as_bytes(),
            b"t",
            b"r",
            b"NOLOCK",
            b"HASHED",
        ],
        misplaced,
    ));
    cases.push(exact(
        &[
            b"OKOME.PLAN.GET",
            b"m",
            hash.as_bytes(),
            b"t",
            b"r",
            b"HASHED",
            b"HASHED",
        ],
        misplaced,
    ));
    cases.extend(number_cases(
        &[
            b"OKOME.PLAN.GET",
            b"m",
            hash.as_bytes(),
            b"t",
            b"r",
            b"HASHED",
        ],
        "LOCKTTL",
        8000,
        10_000,
        "ms",
    ));
    cases.extend(number_cases(
        &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r"],
        "LOCKTTL",
        8000,
        10_000,
        "ms",
    ));
    // On a key that is a HIT or already LOCKED the bad option still errors.
    cases.extend(number_cases(
        &[b"OKOME.PLAN.GET", b"m", b"other prompt", b"t", b"r"],
        "LOCKTTL",
        8000,
        10_000,
        "ms",
    ));
    run(&mut c, &cases);
}

#[test]
fn oversized_prompt_is_refused_before_hashing() {
    let (_s, mut c) = seeded();
    let big = vec![b'a'; LIMIT + 1];
    let msg = format!(
        "ERR prompt is {} bytes, larger than the {LIMIT}-byte limit (okome.max-prompt-bytes)",
        LIMIT + 1
    );
    run(
        &mut c,
        &[
            exact(&[b"OKOME.PLAN.GET", b"m", &big, b"t", b"r"], msg.clone()),
            exact(
                &[b"OKOME.PLAN.GET", b"m", &big, b"t", b"r", b"NOLOCK"],
                msg.clone(),
            ),
            exact(
                &[b"OKOME.KEY", b"planner", b"m", &big, b"t", b"r"],
                msg.clone(),
            ),
        ],
    );
    // Exactly at the limit is fine, and hashed by the server.
    let at = vec![b'a'; LIMIT];
    let m = plan_get(
        &mut c,
        &["m", std::str::from_utf8(&at).unwrap(), "t", "r", "NOLOCK"],
    );
    assert_eq!(m.status, "MISS");
    assert_eq!(
        m.key,
        format!(
            "okome:planner:m:{{{}}}:t:r",
            sha256_hex(std::str::from_utf8(&at).unwrap())
        )
    );
    ping(&mut c);
}

#[test]
fn plan_set_errors() {
    let (_s, mut c) = seeded();
    let k = pk();
    let kb = k.as_bytes();
    let opts = ["TTL", "TOKEN"];
    let mut cases = vec![
        exact(&[b"OKOME.PLAN.SET"], arity("okome.plan.set")),
        exact(&[b"OKOME.PLAN.SET", kb], arity("okome.plan.set")),
        unknown(&[b"OKOME.PLAN.SET", kb, b"{}", b"FOO"], "FOO", &opts),
        unknown(&[b"OKOME.PLAN.SET", kb, b"{}", b"EX", b"600"], "EX", &opts),
        unknown(
            &[b"OKOME.PLAN.SET", kb, b"{}", b"LOCKTTL", b"9000"],
            "LOCKTTL",
            &opts,
        ),
        unknown(&[b"OKOME.PLAN.SET", kb, b"{}", b"NOLOCK"], "NOLOCK", &opts),
        unknown(&[b"OKOME.PLAN.SET", kb, b"{}", b"{}"], "{}", &opts),
        unknown(
            &[b"OKOME.PLAN.SET", kb, b"{}", b"TTL", b"600", b"600"],
            "600",
            &opts,
        ),
        exact(
            &[b"OKOME.PLAN.SET", kb, b"{}", b"TOKEN"],
            needs_value("TOKEN"),
        ),
        exact(
            &[b"OKOME.PLAN.SET", kb, b"{}", b"TOKEN", b""],
            "ERR token must not be empty",
        ),
        exact(
            &[b"OKOME.PLAN.SET", kb, b"{}", b"TTL", b"600", b"ttl", b"600"],
            repeated("TTL"),
        ),
        exact(
            &[b"OKOME.PLAN.SET", kb, b"{}", b"TOKEN", b"a", b"token", b"a"],
            repeated("TOKEN"),
        ),
        exact(
            &[b"OKOME.PLAN.SET", kb, b"{}", b"TOKEN", b"a", b"TTL"],
            needs_value("TTL"),
        ),
    ];
    cases.extend(number_cases(
        &[b"OKOME.PLAN.SET", kb, b"{}"],
        "TTL",
        300,
        900,
        "seconds",
    ));
    cases.extend(number_cases(
        &[b"OKOME.PLAN.SET", kb, b"{}", b"TOKEN", b"tok"],
        "TTL",
        300,
        900,
        "seconds",
    ));
    cases.extend(json_cases("plan_json", &[b"OKOME.PLAN.SET", kb], &[]));
    cases.extend(json_cases(
        "plan_json",
        &[b"OKOME.PLAN.SET", kb],
        &[b"TTL", b"300", b"TOKEN", b"x"],
    ));
    // Bad, foreign, lock and budget keys.
    for (key, why) in malformed_keys() {
        cases.push(exact(
            &[b"OKOME.PLAN.SET", key.as_bytes(), b"{}"],
            not_okome(&printed(&key), &why),
        ));
    }
    for (key, kind) in [
        ("okome:tools:{v1}", "tools"),
        ("okome:model_meta:{m}", "model_meta"),
        ("okome:rag:{r}:c", "rag"),
        ("okome:health:{n}", "health"),
        ("okome:budget:rate:{a}", "rate"),
        ("okome:budget:write:{a}", "write"),
    ] {
        cases.push(exact(
            &[b"OKOME.PLAN.SET", key.as_bytes(), b"{}"],
            format!("ERR '{key}' is a {kind} key, not a planner key"),
        ));
    }
    cases.push(exact(
        &[b"OKOME.PLAN.SET", b"okome:tools:{v1\xff}", b"{}"],
        not_okome(
            "okome:tools:{v1\\xff}",
            "component tool_version is empty or not canonically escaped",
        ),
    ));
    // Oversized value.
    let mut big = vec![b'"'];
    big.resize(LIMIT, b'a');
    big.push(b'"');
    cases.push(exact(
        &[b"OKOME.PLAN.SET", kb, &big],
        format!(
            "ERR plan_json is {} bytes, larger than the {LIMIT}-byte limit (okome.max-value-bytes)",
            LIMIT + 1
        ),
    ));
    run(&mut c, &cases);
}
