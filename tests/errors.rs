//! Bad input, command by command: every case gets an error reply that names
//! the problem, writes nothing (the keyspace snapshot is unchanged) and leaves
//! the server answering PING. Then a seeded hostile-input loop.

mod common;
use common::*;

use redis::Connection;
use std::collections::HashSet;

/// `okome.max-prompt-bytes` and `okome.max-value-bytes` defaults.
const LIMIT: usize = 4 * 1024 * 1024;

fn arity(cmd: &str) -> String {
    format!("ERR wrong number of arguments for '{cmd}' command")
}

fn not_cacheable(kind: &str) -> String {
    format!(
        "ERR kind '{kind}' is not cacheable: okome caches only read-only, deterministic, \
         recomputable data (planner, model_meta, rag, tools, health); it never caches file \
         writes, git operations, builds, agent memory or tool execution results"
    )
}

const PLANNER_VIA_CACHE: &str =
    "ERR kind 'planner' is read with OKOME.PLAN.GET and written with OKOME.PLAN.SET";
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_JSON: &str = "ERR value is not valid JSON: ";

fn range(what: &str, v: &str, min: u64, max: u64, unit: &str) -> String {
    format!("ERR {what} {v} is out of range: must be between {min} and {max} {unit}")
}

fn not_int(what: &str) -> String {
    format!("ERR {what} is not an integer or out of range")
}

fn needs_value(opt: &str) -> String {
    format!("ERR syntax error: option {opt} needs a value")
}

fn repeated(opt: &str) -> String {
    format!("ERR syntax error: option {opt} given more than once")
}

fn not_okome(key: &str, why: &str) -> String {
    format!("ERR '{key}' is not an okome key: {why}")
}

/// What the error reply must look like.
enum Want {
    Exact(String),
    /// Starts with the first string and mentions every one of the others.
    Prefix(String, Vec<String>),
}

struct Case {
    args: Vec<Vec<u8>>,
    want: Want,
}

fn owned(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

/// A case whose reply must be exactly `want`.
fn exact(args: &[&[u8]], want: impl Into<String>) -> Case {
    Case {
        args: owned(args),
        want: Want::Exact(want.into()),
    }
}

/// A case whose reply must start with `prefix`.
fn prefix(args: &[&[u8]], prefix: impl Into<String>) -> Case {
    Case {
        args: owned(args),
        want: Want::Prefix(prefix.into(), Vec::new()),
    }
}

/// An unknown option: the reply names it (rendered as `shown`) and lists
/// (at least) the options the command takes.
fn unknown(args: &[&[u8]], shown: &str, known: &[&str]) -> Case {
    Case {
        args: owned(args),
        want: Want::Prefix(
            format!("ERR syntax error: unknown option '{shown}' (expected one of: "),
            known.iter().map(|k| k.to_string()).collect(),
        ),
    }
}

/// The command, shortened for assertion messages.
fn show(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| {
            let s = String::from_utf8_lossy(&a[..a.len().min(60)]).into_owned();
            if a.len() > 60 {
                format!("{s:?}...({} bytes)", a.len())
            } else {
                format!("{s:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ping(con: &mut Connection) {
    let pong: String = redis::cmd("PING")
        .query(con)
        .expect("PING after a bad command");
    assert_eq!(pong, "PONG");
}

fn query(con: &mut Connection, args: &[Vec<u8>]) -> redis::RedisResult<redis::Value> {
    let (name, rest) = args.split_first().expect("a command");
    let mut c = redis::cmd(std::str::from_utf8(name).expect("utf8 command name"));
    for a in rest {
        c.arg(a.as_slice());
    }
    c.query(con)
}

/// Runs every case: each must be refused with its error, write nothing and
/// leave the server alive.
fn run(con: &mut Connection, cases: &[Case]) {
    for case in cases {
        let cmd = show(&case.args);
        let before = snapshot(con);
        let got = match query(con, &case.args) {
            Ok(v) => panic!("expected an error from {cmd}, got {v:?}"),
            Err(e) => {
                assert!(
                    e.code().is_some(),
                    "{cmd}: not an error reply (server gone?): {e}"
                );
                error_text(&e)
            }
        };
        match &case.want {
            Want::Exact(w) => assert_eq!(&got, w, "{cmd}"),
            Want::Prefix(p, parts) => {
                assert!(got.starts_with(p.as_str()), "{cmd}: {got:?} !~ {p:?}");
                for part in parts {
                    assert!(got.contains(part.as_str()), "{cmd}: {got:?} lacks {part}");
                }
            }
        }
        ping(con);
        assert_eq!(snapshot(con), before, "{cmd} changed the keyspace");
    }
}

/// The planner key of `(m, p, t, r)`.
fn pk() -> String {
    format!("okome:planner:m:{{{}}}:t:r", sha256_hex("p"))
}

/// A server with some state to protect: a stored plan, a held plan lock,
/// a cache value and a held cache lock. Errors must leave all of it as is.
fn seeded() -> (Server, Connection) {
    let s = Server::start();
    let mut c = s.conn();
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(pk())
        .arg(r#"{"plan":1}"#)
        .query(&mut c)
        .unwrap();
    let m = plan_get(&mut c, &["m", "other prompt", "t", "r"]);
    assert_eq!(m.status, "MISS");
    let _: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg(&["tools", "v1", "[1,2]"])
        .query(&mut c)
        .unwrap();
    let t: Option<String> = redis::cmd("OKOME.LOCK")
        .arg("okome:rag:{r}:c")
        .query(&mut c)
        .unwrap();
    assert!(t.is_some());
    assert_eq!(snapshot(&mut c).len(), 4);
    (s, c)
}

/// Strings that are not integers, as Redis sees them.
const NOT_INTEGERS: &[&[u8]] = &[
    b"",
    b"x",
    b"9000x",
    b"1.5",
    b"9e3",
    b"0x10",
    b"+9000",
    b" 9000",
    b"9000 ",
    b"9 000",
    b"-",
    b"--1",
    b"99999999999999999999",
    b"-99999999999999999999",
    b"18446744073709551615",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"\xff",
    b"90\xff00",
    b"9000\x00",
    "\u{ff19}\u{ff10}\u{ff10}\u{ff10}".as_bytes(),
    b"inf",
    b"NaN",
];

/// Integers outside `min..=max` (zero, negative, just outside, 64-bit ends).
fn out_of_range(min: u64, max: u64) -> Vec<String> {
    let mut v = vec![
        "0".to_string(),
        "-1".to_string(),
        format!("-{min}"),
        (max + 1).to_string(),
        i64::MIN.to_string(),
        i64::MAX.to_string(),
        "4294967296000".to_string(),
    ];
    if min > 1 {
        v.push((min - 1).to_string());
    }
    v
}

/// Number cases for `opt` at the end of `base`.
fn number_cases(base: &[&[u8]], opt: &str, min: u64, max: u64, unit: &str) -> Vec<Case> {
    let mut out = Vec::new();
    let with = |v: &[u8]| {
        let mut a = owned(base);
        a.push(opt.as_bytes().to_vec());
        a.push(v.to_vec());
        a
    };
    for v in NOT_INTEGERS {
        out.push(Case {
            args: with(v),
            want: Want::Exact(not_int(opt)),
        });
    }
    for v in out_of_range(min, max) {
        out.push(Case {
            args: with(v.as_bytes()),
            want: Want::Exact(range(opt, &v, min, max, unit)),
        });
    }
    // Missing value.
    let mut a = owned(base);
    a.push(opt.as_bytes().to_vec());
    out.push(Case {
        args: a,
        want: Want::Exact(needs_value(opt)),
    });
    out
}

/// Values that are not one JSON text.
fn bad_json() -> Vec<(Vec<u8>, Option<&'static str>)> {
    vec![
        (
            b"".to_vec(),
            Some("EOF while parsing a value at line 1 column 0"),
        ),
        (b"   ".to_vec(), None),
        (b"{".to_vec(), None),
        (b"{bad".to_vec(), None),
        (
            b"{} {}".to_vec(),
            Some("trailing characters at line 1 column 4"),
        ),
        (b"{}x".to_vec(), None),
        (b"[1,2]]".to_vec(), None),
        (b"1 2".to_vec(), None),
        (b"[1,]".to_vec(), None),
        (b"{\"a\":1,}".to_vec(), None),
        (b"{'a':1}".to_vec(), None),
        (b"{a:1}".to_vec(), None),
        (b"NaN".to_vec(), None),
        (b"Infinity".to_vec(), None),
        (b"01".to_vec(), None),
        (b"\"unterminated".to_vec(), None),
        (b"\"ctl\x01\"".to_vec(), None),
        (b"\"bad escape \\q\"".to_vec(), None),
        (b"undefined".to_vec(), None),
        (b"\xff".to_vec(), None),
        (b"\xef\xbb\xbf{}".to_vec(), None),
        (b"{}\x00".to_vec(), None),
        ("[".repeat(100_000).into_bytes(), None),
        ("{\"a\":".repeat(50_000).into_bytes(), None),
    ]
}

fn json_cases(before: &[&[u8]], after: &[&[u8]]) -> Vec<Case> {
    bad_json()
        .into_iter()
        .map(|(v, detail)| {
            let mut a = owned(before);
            a.push(v);
            a.extend(owned(after));
            Case {
                args: a,
                want: match detail {
                    Some(d) => Want::Exact(format!("{NOT_JSON}{d}")),
                    None => Want::Prefix(NOT_JSON.into(), Vec::new()),
                },
            }
        })
        .collect()
}

/// Keys that are not okome keys at all, with the reason in the reply.
fn malformed_keys() -> Vec<(String, String)> {
    let h = sha256_hex("p");
    let comps =
        "kind 'planner' has 4 component(s) (model, prompt_hash, toolset_version, repo_hash)";
    let bad_hash = "prompt_hash must be 64 lowercase hex digits (SHA-256)";
    let start = "it must start with 'okome:'";
    let unknown_kind =
        "unknown kind (planner, model_meta, rag, tools, health, budget:rate, budget:write, budget:keys)";
    let mut v: Vec<(String, String)> = vec![
        ("foo".into(), start.into()),
        ("".into(), start.into()),
        ("okome".into(), start.into()),
        ("OKOME:planner:m:x:t:r".into(), start.into()),
        ("okome:".into(), unknown_kind.into()),
        ("okome:planner".into(), unknown_kind.into()),
        ("okome:nope:a".into(), unknown_kind.into()),
        ("okome:budget:a".into(), unknown_kind.into()),
        (format!("{}:lock", pk()), format!("{comps}, found 5")),
        (
            format!("okome:planner:m:{{{h}}}:t"),
            format!("{comps}, found 3"),
        ),
        (
            format!("okome:planner:m:{{{h}}}:t:r:"),
            format!("{comps}, found 5"),
        ),
        (
            format!("okome:planner:m:{{{}}}:t:r", h.to_uppercase()),
            bad_hash.into(),
        ),
        (
            format!("okome:planner:m:{{{}}}:t:r", &h[..63]),
            bad_hash.into(),
        ),
        ("okome:planner:m:{abc}:t:r".into(), bad_hash.into()),
        (
            format!("okome:planner::{{{h}}}:t:r"),
            "component model is empty or not canonically escaped".into(),
        ),
        (
            format!("okome:planner:a b:{{{h}}}:t:r"),
            "component model is empty or not canonically escaped".into(),
        ),
        (
            format!("okome:planner:a%3a:{{{h}}}:t:r"),
            "component model is empty or not canonically escaped".into(),
        ),
        (
            format!("okome:planner:%41:{{{h}}}:t:r"),
            "component model is empty or not canonically escaped".into(),
        ),
        (
            format!("okome:planner:m:{{{h}}}:t:r%2"),
            "component repo_hash is empty or not canonically escaped".into(),
        ),
        // The hash tag is structural: the tagged component must be wrapped
        // in `{...}`, and no other component may be.
        (
            format!("okome:planner:m:{h}:t:r"),
            "component prompt_hash must be a hash tag {...}".into(),
        ),
        (
            format!("okome:planner:m:{{{h}:t:r"),
            "component prompt_hash must be a hash tag {...}".into(),
        ),
        (
            "okome:planner:m:{}:t:r".into(),
            "component prompt_hash is empty or not canonically escaped".into(),
        ),
        (
            format!("okome:planner:{{m}}:{{{h}}}:t:r"),
            "component model is empty or not canonically escaped".into(),
        ),
        (
            "okome:tools:v1".into(),
            "component tool_version must be a hash tag {...}".into(),
        ),
        (
            "okome:rag:r:{c}".into(),
            "component repo must be a hash tag {...}".into(),
        ),
        (
            "okome:model_meta:{{m}}".into(),
            "component model is empty or not canonically escaped".into(),
        ),
        (
            "okome:budget:rate:a".into(),
            "component agent must be a hash tag {...}".into(),
        ),
    ];
    // Long keys are shortened to 100 bytes in the reply.
    let long = "x".repeat(500);
    v.push((long, start.into()));
    v
}

/// The key as the reply prints it.
fn printed(key: &str) -> String {
    if key.len() > 100 {
        format!("{}...", &key[..100])
    } else {
        key.to_string()
    }
}

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
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b""],
            "ERR repo_hash must not be empty",
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
            "ERR TOKEN must not be empty",
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
    cases.extend(json_cases(&[b"OKOME.PLAN.SET", kb], &[]));
    cases.extend(json_cases(
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
            "ERR value is {} bytes, larger than the {LIMIT}-byte limit (okome.max-value-bytes)",
            LIMIT + 1
        ),
    ));
    run(&mut c, &cases);
}

/// JSON texts are UTF-8 (RFC 8259 section 8.1): invalid UTF-8 inside a JSON
/// string is not valid JSON either.
#[test]
fn json_strings_must_be_utf8() {
    let (_s, mut c) = seeded();
    let k = pk();
    let mut cases = Vec::new();
    for v in [
        &b"\"\xff\""[..],
        b"{\"a\":\"\xc3\"}",
        b"[\"\xed\xa0\x80\"]",
        b"{\"\xfe\":1}",
    ] {
        cases.push(prefix(&[b"OKOME.PLAN.SET", k.as_bytes(), v], NOT_JSON));
        cases.push(prefix(&[b"OKOME.CACHE.SET", b"tools", b"v2", v], NOT_JSON));
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
            not_int("TTL"),
        ));
        cases.push(exact(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"LOCKTTL", v],
            not_int("LOCKTTL"),
        ));
    }
    cases.push(exact(
        &[b"OKOME.PLAN.SET", k.as_bytes(), b"{}", b"TTL", b"0600"],
        not_int("TTL"),
    ));
    cases.push(exact(
        &[b"OKOME.CACHE.SET", b"tools", b"v1", b"{}", b"TTL", b"0600"],
        not_int("TTL"),
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
            assert!(error_text(&e).starts_with(NOT_JSON), "{e}");
        }
        ping(&mut c);
    }
    assert!(s.alive());
}

#[test]
fn lock_errors() {
    let (_s, mut c) = seeded();
    let k = pk();
    let kb = k.as_bytes();
    let opts = ["TTL", "TOKEN"];
    let mut cases = vec![
        exact(&[b"OKOME.LOCK"], arity("okome.lock")),
        unknown(&[b"OKOME.LOCK", kb, b"FOO"], "FOO", &opts),
        unknown(&[b"OKOME.LOCK", kb, b"PX", b"9000"], "PX", &opts),
        unknown(&[b"OKOME.LOCK", kb, b"NOLOCK"], "NOLOCK", &opts),
        unknown(&[b"OKOME.LOCK", kb, b"9000"], "9000", &opts),
        unknown(&[b"OKOME.LOCK", kb, b"TTL", b"9000", b"x"], "x", &opts),
        exact(&[b"OKOME.LOCK", kb, b"TOKEN"], needs_value("TOKEN")),
        exact(
            &[b"OKOME.LOCK", kb, b"TOKEN", b""],
            "ERR TOKEN must not be empty",
        ),
        exact(
            &[b"OKOME.LOCK", kb, b"TTL", b"9000", b"TOKEN", b""],
            "ERR TOKEN must not be empty",
        ),
        exact(
            &[b"OKOME.LOCK", kb, b"TTL", b"9000", b"TTL", b"9000"],
            repeated("TTL"),
        ),
        exact(
            &[b"OKOME.LOCK", kb, b"TOKEN", b"a", b"TOKEN", b"b"],
            repeated("TOKEN"),
        ),
    ];
    // Held (rag), held via PLAN.GET (planner) and free (tools) locks alike.
    for key in [
        k.clone(),
        "okome:rag:{r}:c".to_string(),
        "okome:tools:{v1}".to_string(),
    ] {
        let kb = key.as_bytes();
        cases.extend(number_cases(
            &[b"OKOME.LOCK", kb],
            "TTL",
            8000,
            10_000,
            "ms",
        ));
        cases.extend(number_cases(
            &[b"OKOME.LOCK", kb, b"TOKEN", b"tok"],
            "TTL",
            8000,
            10_000,
            "ms",
        ));
    }
    for (key, why) in malformed_keys() {
        cases.push(exact(
            &[b"OKOME.LOCK", key.as_bytes()],
            not_okome(&printed(&key), &why),
        ));
        cases.push(exact(
            &[b"OKOME.LOCK", key.as_bytes(), b"TOKEN", b"t"],
            not_okome(&printed(&key), &why),
        ));
    }
    // A lock key is not lockable: no `...:lock:lock`.
    cases.push(exact(
        &[b"OKOME.LOCK", b"okome:rag:{r}:c:lock"],
        not_okome(
            "okome:rag:{r}:c:lock",
            "kind 'rag' has 2 component(s) (repo, chunk_hash), found 3",
        ),
    ));
    cases.push(exact(
        &[b"OKOME.LOCK", b"okome:tools:{v1}:lock"],
        not_okome(
            "okome:tools:{v1}:lock",
            "kind 'tools' has 1 component(s) (tool_version), found 2",
        ),
    ));
    for (key, kind) in [
        ("okome:budget:rate:{a}", "rate"),
        ("okome:budget:write:{a}", "write"),
        ("okome:budget:rate:{a%3Ab}", "rate"),
    ] {
        let msg = format!(
            "ERR '{key}' is a {kind} budget key; only cache keys (planner, model_meta, rag, \
             tools, health) can be locked"
        );
        cases.push(exact(&[b"OKOME.LOCK", key.as_bytes()], msg.clone()));
        cases.push(exact(
            &[
                b"OKOME.LOCK",
                key.as_bytes(),
                b"TOKEN",
                b"t",
                b"TTL",
                b"9000",
            ],
            msg.clone(),
        ));
        cases.push(exact(&[b"OKOME.UNLOCK", key.as_bytes(), b"t"], msg));
    }
    run(&mut c, &cases);
}

#[test]
fn unlock_errors() {
    let (_s, mut c) = seeded();
    let k = pk();
    let kb = k.as_bytes();
    let mut cases = vec![
        exact(&[b"OKOME.UNLOCK"], arity("okome.unlock")),
        exact(&[b"OKOME.UNLOCK", kb], arity("okome.unlock")),
        exact(&[b"OKOME.UNLOCK", kb, b"t", b"x"], arity("okome.unlock")),
        exact(
            &[b"OKOME.UNLOCK", kb, b"TOKEN", b"t"],
            arity("okome.unlock"),
        ),
        exact(&[b"OKOME.UNLOCK", kb, b""], "ERR token must not be empty"),
        exact(
            &[b"OKOME.UNLOCK", b"okome:rag:{r}:c", b""],
            "ERR token must not be empty",
        ),
        exact(
            &[b"OKOME.UNLOCK", b"okome:rag:{r}:c:lock", b"t"],
            not_okome(
                "okome:rag:{r}:c:lock",
                "kind 'rag' has 2 component(s) (repo, chunk_hash), found 3",
            ),
        ),
    ];
    for (key, why) in malformed_keys() {
        cases.push(exact(
            &[b"OKOME.UNLOCK", key.as_bytes(), b"t"],
            not_okome(&printed(&key), &why),
        ));
    }
    run(&mut c, &cases);
}

const NON_CACHEABLE: &[(&[u8], &str)] = &[
    (b"git", "git"),
    (b"file_writes", "file_writes"),
    (b"builds", "builds"),
    (b"agent_memory", "agent_memory"),
    (b"tool_results", "tool_results"),
    (b"GIT", "GIT"),
    (b"file_write", "file_write"),
    (b"budget", "budget"),
    (b"budget:rate", "budget:rate"),
    (b"lock", "lock"),
    (b"rate", "rate"),
    (b"write", "write"),
    (b"RATE", "RATE"),
    (b"", ""),
    (b"rag ", "rag "),
    (b"\xffrag", "\\xffrag"),
];

#[test]
fn cache_get_errors() {
    let (_s, mut c) = seeded();
    let mut cases = vec![
        exact(&[b"OKOME.CACHE.GET"], arity("okome.cache.get")),
        exact(&[b"OKOME.CACHE.GET", b"tools"], arity("okome.cache.get")),
        exact(&[b"OKOME.CACHE.GET", b"planner", b"m"], PLANNER_VIA_CACHE),
        exact(
            &[b"OKOME.CACHE.GET", b"Planner", b"m", b"p", b"t", b"r"],
            PLANNER_VIA_CACHE,
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"tools", b"v1", b"x"],
            "ERR syntax error: kind 'tools' takes 1 component(s) (tool_version), got 2",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"tools", b"v1", b"TTL", b"600"],
            "ERR syntax error: kind 'tools' takes 1 component(s) (tool_version), got 3",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"rag", b"r"],
            "ERR syntax error: kind 'rag' takes 2 component(s) (repo, chunk_hash), got 1",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"rag", b"r", b"c", b"d"],
            "ERR syntax error: kind 'rag' takes 2 component(s) (repo, chunk_hash), got 3",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"model_meta", b"a", b"b"],
            "ERR syntax error: kind 'model_meta' takes 1 component(s) (model), got 2",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"health", b"a", b"b"],
            "ERR syntax error: kind 'health' takes 1 component(s) (node), got 2",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"tools", b""],
            "ERR tool_version must not be empty",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"model_meta", b""],
            "ERR model must not be empty",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"health", b""],
            "ERR node must not be empty",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"rag", b"", b"c"],
            "ERR repo must not be empty",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"rag", b"r", b""],
            "ERR chunk_hash must not be empty",
        ),
    ];
    for (kind, shown) in NON_CACHEABLE {
        cases.push(exact(
            &[b"OKOME.CACHE.GET", kind, b"x"],
            not_cacheable(shown),
        ));
        cases.push(exact(
            &[b"OKOME.CACHE.GET", kind, b"x", b"y"],
            not_cacheable(shown),
        ));
    }
    run(&mut c, &cases);
}

#[test]
fn cache_set_errors() {
    let (_s, mut c) = seeded();
    let mut cases = vec![
        exact(&[b"OKOME.CACHE.SET"], arity("okome.cache.set")),
        exact(&[b"OKOME.CACHE.SET", b"tools"], arity("okome.cache.set")),
        exact(
            &[b"OKOME.CACHE.SET", b"tools", b"v1"],
            arity("okome.cache.set"),
        ),
        exact(
            &[b"OKOME.CACHE.SET", b"rag", b"r", b"{}"],
            arity("okome.cache.set"),
        ),
        exact(
            &[b"OKOME.CACHE.SET", b"planner", b"m", b"{}"],
            PLANNER_VIA_CACHE,
        ),
        exact(
            &[
                b"OKOME.CACHE.SET",
                b"PLANNER",
                b"m",
                b"p",
                b"t",
                b"r",
                b"{}",
            ],
            PLANNER_VIA_CACHE,
        ),
        // The value sits right after the kind's parts: one part too many
        // leaves a stray word where options go.
        unknown(
            &[b"OKOME.CACHE.SET", b"tools", b"v1", b"x", b"{}"],
            "{}",
            &["TTL"],
        ),
        unknown(
            &[b"OKOME.CACHE.SET", b"tools", b"v1", b"{}", b"EX", b"600"],
            "EX",
            &["TTL"],
        ),
        unknown(
            &[b"OKOME.CACHE.SET", b"tools", b"v1", b"{}", b"TOKEN", b"t"],
            "TOKEN",
            &["TTL"],
        ),
        unknown(
            &[
                b"OKOME.CACHE.SET",
                b"tools",
                b"v1",
                b"{}",
                b"TTL",
                b"600",
                b"600",
            ],
            "600",
            &["TTL"],
        ),
        exact(
            &[
                b"OKOME.CACHE.SET",
                b"tools",
                b"v1",
                b"{}",
                b"TTL",
                b"600",
                b"TTL",
                b"600",
            ],
            repeated("TTL"),
        ),
        exact(
            &[b"OKOME.CACHE.SET", b"tools", b"", b"{}"],
            "ERR tool_version must not be empty",
        ),
        exact(
            &[b"OKOME.CACHE.SET", b"model_meta", b"", b"{}"],
            "ERR model must not be empty",
        ),
        exact(
            &[b"OKOME.CACHE.SET", b"health", b"", b"{}"],
            "ERR node must not be empty",
        ),
        exact(
            &[b"OKOME.CACHE.SET", b"rag", b"", b"c", b"{}"],
            "ERR repo must not be empty",
        ),
        exact(
            &[b"OKOME.CACHE.SET", b"rag", b"r", b"", b"{}"],
            "ERR chunk_hash must not be empty",
        ),
    ];
    for (kind, shown) in NON_CACHEABLE {
        cases.push(exact(
            &[b"OKOME.CACHE.SET", kind, b"x", b"{}"],
            not_cacheable(shown),
        ));
        cases.push(exact(
            &[b"OKOME.CACHE.SET", kind, b"x", b"y", b"{}", b"TTL", b"600"],
            not_cacheable(shown),
        ));
    }
    let kinds: [(&[&[u8]], u64, u64); 4] = [
        (
            &[b"OKOME.CACHE.SET", b"model_meta", b"m", b"{}"],
            86_400,
            86_400,
        ),
        (&[b"OKOME.CACHE.SET", b"rag", b"r", b"c", b"{}"], 1800, 3600),
        (&[b"OKOME.CACHE.SET", b"tools", b"v1", b"{}"], 600, 600),
        (&[b"OKOME.CACHE.SET", b"health", b"n", b"{}"], 30, 30),
    ];
    for (base, min, max) in kinds {
        cases.extend(number_cases(base, "TTL", min, max, "seconds"));
        // Valid JSON checks come after the TTL: a bad value with a good TTL.
        let parts = &base[..base.len() - 1];
        let good_ttl = max.to_string();
        cases.extend(json_cases(parts, &[b"TTL", good_ttl.as_bytes()]));
    }
    cases.extend(json_cases(&[b"OKOME.CACHE.SET", b"tools", b"v1"], &[]));
    let mut big = vec![b'"'];
    big.resize(LIMIT, b'a');
    big.push(b'"');
    cases.push(exact(
        &[b"OKOME.CACHE.SET", b"rag", b"r", b"c", &big],
        format!(
            "ERR value is {} bytes, larger than the {LIMIT}-byte limit (okome.max-value-bytes)",
            LIMIT + 1
        ),
    ));
    run(&mut c, &cases);

    // Exactly at the limit is stored.
    big.pop();
    big.pop();
    big.push(b'"');
    assert_eq!(big.len(), LIMIT);
    let ms: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg("tools")
        .arg("big")
        .arg(&big)
        .query(&mut c)
        .unwrap();
    assert_eq!(ms, 600_000);
    let len: i64 = redis::cmd("STRLEN")
        .arg("okome:tools:{big}")
        .query(&mut c)
        .unwrap();
    assert_eq!(len as usize, LIMIT);
}

const PLANNER_PARTS: &str = "ERR syntax error: kind 'planner' takes 4 parts (model, prompt, \
                             toolset_version, repo_hash), or model, prompt_hash, toolset_version, \
                             repo_hash and HASHED";

#[test]
fn key_errors() {
    let (_s, mut c) = seeded();
    let mut cases = vec![
        exact(&[b"OKOME.KEY"], arity("okome.key")),
        exact(&[b"OKOME.KEY", b"tools"], arity("okome.key")),
        exact(&[b"OKOME.KEY", b"planner"], arity("okome.key")),
        exact(&[b"OKOME.KEY", b"planner", b"m", b"p", b"t"], PLANNER_PARTS),
        exact(
            &[b"OKOME.KEY", b"planner", b"m", b"p", b"t", b"r", b"x"],
            PLANNER_PARTS,
        ),
        exact(
            &[
                b"OKOME.KEY",
                b"planner",
                b"m",
                b"p",
                b"t",
                b"r",
                b"HASHED",
                b"x",
            ],
            PLANNER_PARTS,
        ),
        exact(
            &[b"OKOME.KEY", b"planner", b"m", b"p", b"t", b"r", b"HASHED"],
            "ERR prompt_hash must be the SHA-256 of the prompt as 64 lowercase hex digits \
             (HASHED); got 'p' (1 bytes)",
        ),
        exact(
            &[
                b"OKOME.KEY",
                b"planner",
                b"",
                sha256_hex("p").as_bytes(),
                b"t",
                b"r",
                b"HASHED",
            ],
            "ERR model must not be empty",
        ),
        exact(
            &[b"OKOME.KEY", b"planner", b"", b"p", b"t", b"r"],
            "ERR model must not be empty",
        ),
        exact(
            &[b"OKOME.KEY", b"planner", b"m", b"", b"t", b"r"],
            "ERR prompt must not be empty",
        ),
        exact(
            &[b"OKOME.KEY", b"planner", b"m", b"p", b"", b"r"],
            "ERR toolset_version must not be empty",
        ),
        exact(
            &[b"OKOME.KEY", b"planner", b"m", b"p", b"t", b""],
            "ERR repo_hash must not be empty",
        ),
        exact(
            &[b"OKOME.KEY", b"tools", b"a", b"b"],
            "ERR syntax error: kind 'tools' takes 1 component(s) (tool_version), got 2",
        ),
        exact(
            &[b"OKOME.KEY", b"rag", b"a"],
            "ERR syntax error: kind 'rag' takes 2 component(s) (repo, chunk_hash), got 1",
        ),
        exact(
            &[b"OKOME.KEY", b"rate", b"a", b"b"],
            "ERR syntax error: kind 'rate' takes 1 component(s) (agent), got 2",
        ),
        exact(&[b"OKOME.KEY", b"rate", b""], "ERR agent must not be empty"),
        exact(
            &[b"OKOME.KEY", b"write", b""],
            "ERR agent must not be empty",
        ),
        exact(
            &[b"OKOME.KEY", b"health", b""],
            "ERR node must not be empty",
        ),
    ];
    for (kind, shown) in NON_CACHEABLE {
        if matches!(*kind, b"rate" | b"write" | b"RATE") {
            continue; // budget kinds have keys
        }
        cases.push(exact(&[b"OKOME.KEY", kind, b"x"], not_cacheable(shown)));
    }
    run(&mut c, &cases);
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

/// Components are arbitrary bytes: non-UTF-8, NUL, newline and the key
/// separator are accepted and `%XX`-escaped, never an error.
#[test]
fn binary_components_are_escaped() {
    use sha2::Digest;
    let s = Server::start();
    let mut c = s.conn();
    let prompt: &[u8] = b"\x00\xff\xfe prompt\n";
    type RawPlan = (
        String,
        Vec<u8>,
        Option<Vec<u8>>,
        Option<i64>,
        Option<Vec<u8>>,
        Option<i64>,
    );
    let m: RawPlan = redis::cmd("OKOME.PLAN.GET")
        .arg(&b"\xff\xfellama:3"[..])
        .arg(prompt)
        .arg(&b"\x80\x00"[..])
        .arg(&b"\xc3(\r\n"[..])
        .arg("NOLOCK")
        .query(&mut c)
        .unwrap();
    let hash = hex::encode(sha2::Sha256::digest(prompt));
    let want = format!("okome:planner:%FF%FEllama%3A3:{{{hash}}}:%80%00:%C3%28%0D%0A");
    assert_eq!(m.0, "MISS");
    assert_eq!(String::from_utf8(m.1.clone()).unwrap(), want);

    let key: Vec<u8> = redis::cmd("OKOME.KEY")
        .arg("planner")
        .arg(&b"\xff\xfellama:3"[..])
        .arg(prompt)
        .arg(&b"\x80\x00"[..])
        .arg(&b"\xc3(\r\n"[..])
        .query(&mut c)
        .unwrap();
    assert_eq!(key, m.1);

    // The escaped key is a valid planner key for PLAN.SET and LOCK.
    let r: (String, i64, Option<i64>, i64) = redis::cmd("OKOME.PLAN.SET")
        .arg(&key)
        .arg("{}")
        .query(&mut c)
        .unwrap();
    assert_eq!(r.0, "STORED");
    let t: Option<String> = redis::cmd("OKOME.LOCK").arg(&key).query(&mut c).unwrap();
    assert!(t.is_some());

    let ms: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg("rag")
        .arg(&b"\x00"[..])
        .arg(&b"\xff:*?[{} %"[..])
        .arg("\"v\"")
        .query(&mut c)
        .unwrap();
    assert_eq!(ms, 3_600_000);
    let v: String = redis::cmd("GET")
        .arg("okome:rag:{%00}:%FF%3A%2A%3F%5B%7B%7D%20%25")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "\"v\"");
    let k: String = redis::cmd("OKOME.KEY")
        .arg("write")
        .arg(&b"\n\xff"[..])
        .query(&mut c)
        .unwrap();
    assert_eq!(k, "okome:budget:write:{%0A%FF}");

    // No raw non-UTF-8 byte, NUL or separator reached a key.
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for k in keys {
        assert!(
            k.iter().all(|&b| b.is_ascii_graphic()),
            "{}",
            String::from_utf8_lossy(&k)
        );
    }
}

/// A tiny xorshift64 PRNG: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn is_token(b: &[u8]) -> bool {
    b.len() == 32 && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Every key is an okome key with a TTL; every lock expires within the lock
/// standard.
fn check_keyspace(c: &mut Connection, seed: u64) {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    for k in keys {
        let name = String::from_utf8_lossy(&k).into_owned();
        assert!(
            k.starts_with(b"okome:"),
            "seed {seed}: foreign key {name:?}"
        );
        let pttl: i64 = redis::cmd("PTTL").arg(&k).query(c).unwrap();
        if pttl == -2 {
            continue; // expired between KEYS and PTTL
        }
        // -1 is "no TTL"; 0 is a key in its last millisecond.
        assert!(pttl >= 0, "seed {seed}: {name:?} has no TTL ({pttl})");
        if k.ends_with(b":lock") {
            assert!(pttl <= 10_000, "seed {seed}: lock {name:?} PTTL {pttl}");
            // None: it expired between PTTL and GET.
            let t: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query(c).unwrap();
            if let Some(t) = t {
                assert!(is_token(&t), "seed {seed}: lock {name:?} holds {t:?}");
            }
        }
    }
}

/// One argument: a known word, a token seen so far, binary bytes, printable
/// junk or a big number.
fn random_arg(rng: &mut Rng, words: &[Vec<u8>], tokens: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(10) {
        0..=5 => rng.pick(words).clone(),
        6 => rng.pick(tokens).clone(),
        7 => {
            let len = rng.below(16);
            (0..len).map(|_| rng.next() as u8).collect()
        }
        8 => {
            let len = 1 + rng.below(8);
            (0..len).map(|_| b'!' + (rng.below(94) as u8)).collect()
        }
        _ => rng.next().to_string().into_bytes(),
    }
}

/// A command name and 0 to 8 random arguments.
fn random_command(
    rng: &mut Rng,
    commands: &[&str],
    words: &[Vec<u8>],
    tokens: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let name = *rng.pick(commands);
    let n = rng.below(9);
    let mut args: Vec<Vec<u8>> = vec![name.as_bytes().to_vec()];
    for _ in 0..n {
        args.push(random_arg(rng, words, tokens));
    }
    args
}

/// A well-formed-looking command (right positionals, plausible options),
/// then sometimes one argument replaced, inserted or dropped.
fn structured_command(
    rng: &mut Rng,
    words: &[Vec<u8>],
    tokens: &[Vec<u8>],
    pk: &str,
) -> Vec<Vec<u8>> {
    let v = |s: &str| s.as_bytes().to_vec();
    let comps: [&[u8]; 7] = [b"m", b"p", b"t", b"r", b"llama3:8b", b"a b", b"x\xff"];
    let nums = [
        "0", "-1", "30", "300", "600", "900", "1800", "3000", "3600", "8000", "9000", "10000",
        "10001", "86400",
    ];
    let jsons = [
        "{}",
        "[1,2]",
        "\"s\"",
        "null",
        "{\"a\":[true,1.5]}",
        "{",
        "",
    ];
    let lockable = [
        pk,
        "okome:tools:{v1}",
        "okome:rag:{r}:c",
        "okome:health:{n}",
        "okome:model_meta:{m}",
        "okome:budget:rate:{a}",
        "okome:tools:{v1}:lock",
        "okome:tools:v1",
    ];
    let comp = |rng: &mut Rng| rng.pick(&comps).to_vec();
    let num = |rng: &mut Rng| rng.pick(&nums).as_bytes().to_vec();
    let tok = |rng: &mut Rng| rng.pick(tokens).clone();
    let mut a: Vec<Vec<u8>> = Vec::new();
    match rng.below(7) {
        0 => {
            a.push(v("OKOME.PLAN.GET"));
            for _ in 0..4 {
                a.push(comp(rng));
            }
            // The client-hashed form, with a hash or with anything.
            if rng.below(4) == 0 {
                if rng.below(2) == 0 {
                    a[2] = sha256_hex(&String::from_utf8_lossy(&a[2])).into_bytes();
                }
                a.push(v("HASHED"));
            }
            match rng.below(3) {
                0 => a.extend([v("LOCKTTL"), num(rng)]),
                1 => a.push(v("NOLOCK")),
                _ => {}
            }
        }
        1 => {
            a.push(v("OKOME.PLAN.SET"));
            a.push(if rng.below(4) == 0 {
                rng.pick(&lockable).as_bytes().to_vec()
            } else {
                v(pk)
            });
            a.push(rng.pick(&jsons).as_bytes().to_vec());
            if rng.below(2) == 0 {
                a.extend([v("TTL"), num(rng)]);
            }
            if rng.below(2) == 0 {
                a.extend([v("TOKEN"), tok(rng)]);
            }
        }
        2 => {
            a.push(v("OKOME.LOCK"));
            a.push(rng.pick(&lockable).as_bytes().to_vec());
            if rng.below(2) == 0 {
                a.extend([v("TTL"), num(rng)]);
            }
            if rng.below(2) == 0 {
                a.extend([v("TOKEN"), tok(rng)]);
            }
        }
        3 => {
            a.push(v("OKOME.UNLOCK"));
            a.push(rng.pick(&lockable).as_bytes().to_vec());
            a.push(tok(rng));
        }
        k => {
            let (kind, n) = *rng.pick(&[
                ("model_meta", 1),
                ("rag", 2),
                ("tools", 1),
                ("health", 1),
                ("planner", 4),
                ("rate", 1),
                ("git", 1),
            ]);
            a.push(v(match k {
                4 => "OKOME.CACHE.GET",
                5 => "OKOME.CACHE.SET",
                _ => "OKOME.KEY",
            }));
            a.push(v(kind));
            for _ in 0..n {
                a.push(comp(rng));
            }
            if k == 5 {
                a.push(rng.pick(&jsons).as_bytes().to_vec());
                if rng.below(2) == 0 {
                    a.extend([v("TTL"), num(rng)]);
                }
            }
        }
    }
    if rng.below(3) == 0 {
        let at = 1 + rng.below(a.len());
        match rng.below(3) {
            0 if at < a.len() => a[at] = random_arg(rng, words, tokens),
            1 if at < a.len() => {
                a.remove(at);
            }
            _ => a.insert(at, random_arg(rng, words, tokens)),
        }
    }
    a
}

#[test]
fn hostile_input_loop() {
    let mut s = Server::start();
    let mut c = s.conn();
    let pk = pk();
    let commands: &[&str] = &[
        "OKOME.PLAN.GET",
        "OKOME.PLAN.GET",
        "OKOME.PLAN.SET",
        "OKOME.PLAN.SET",
        "OKOME.LOCK",
        "OKOME.LOCK",
        "OKOME.UNLOCK",
        "OKOME.CACHE.GET",
        "OKOME.CACHE.SET",
        "OKOME.CACHE.SET",
        "OKOME.KEY",
        "OKOME.AGENT.RECORD",
        "OKOME.AGENT.KEYS",
        "OKOME.AGENT.PURGE",
    ];
    let words: Vec<Vec<u8>> = [
        "TTL",
        "ttl",
        "TOKEN",
        "token",
        "LOCKTTL",
        "NOLOCK",
        "nolock",
        "AGENT",
        "LIMIT",
        "WINDOW",
        "WLIMIT",
        "WWINDOW",
        "WAIT",
        "REFRESHAHEAD",
        "COST",
        "EX",
        "planner",
        "model_meta",
        "rag",
        "RAG",
        "tools",
        "health",
        "rate",
        "write",
        "git",
        "file_writes",
        "builds",
        "agent_memory",
        "tool_results",
        "0",
        "-0",
        "007",
        "1",
        "-1",
        "30",
        "300",
        "600",
        "900",
        "1800",
        "3600",
        "8000",
        "9000",
        "10000",
        "86400",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "99999999999999999999",
        "{}",
        "[]",
        "null",
        "1",
        "\"x\"",
        "{",
        "[1,]",
        "{} {}",
        "",
        "m",
        "p",
        "t",
        "r",
        "v1",
        "llama3:8b",
        "a:b",
        "*",
        "okome:tools:{v1}",
        "okome:tools:{v1}:lock",
        "okome:rag:{r}:c",
        "okome:health:{n}",
        "okome:model_meta:{m}",
        "okome:budget:rate:{a}",
        "okome:budget:write:{a}",
        "okome:budget:keys:{a}",
        "ledger",
        "PXAT",
        "CURSOR",
        "COUNT",
        "okome:tools:v1",
        "okome:rag:r:c",
        "okome:",
        "foo",
    ]
    .iter()
    .map(|w| w.as_bytes().to_vec())
    .chain([pk.clone().into_bytes(), format!("{pk}:lock").into_bytes()])
    .collect();

    // OKOME_FUZZ_SEED / OKOME_FUZZ_ITERS replay or lengthen a run.
    let seed: u64 = std::env::var("OKOME_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s != 0)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let iters: usize = std::env::var("OKOME_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8000);
    let mut rng = Rng(seed);
    let mut tokens: Vec<Vec<u8>> = vec![b"0123456789abcdef0123456789abcdef".to_vec()];
    let (mut ok, mut errors) = (0, 0);
    for i in 0..iters {
        let args = if rng.below(3) == 0 {
            random_command(&mut rng, commands, &words, &tokens)
        } else {
            structured_command(&mut rng, &words, &tokens, &pk)
        };
        match query(&mut c, &args) {
            Ok(v) => {
                ok += 1;
                let mut found = Vec::new();
                match v {
                    redis::Value::BulkString(b) => found.push(b),
                    redis::Value::Array(items) => {
                        for it in items {
                            if let redis::Value::BulkString(b) = it {
                                found.push(b);
                            }
                        }
                    }
                    _ => {}
                }
                for b in found {
                    if is_token(&b) {
                        tokens.push(b);
                    }
                }
            }
            Err(e) => {
                errors += 1;
                let text = error_text(&e);
                assert!(
                    e.code().is_some(),
                    "seed {seed} #{i}: {} -> {e} (server alive: {})\n{}",
                    show(&args),
                    s.alive(),
                    s.log()
                );
                assert!(
                    text.starts_with("ERR ") || text.starts_with("WRONGTYPE "),
                    "seed {seed} #{i}: {}: {text}",
                    show(&args)
                );
                assert!(
                    !text.contains("internal error"),
                    "seed {seed} #{i}: a panic was caught: {}: {text}",
                    show(&args)
                );
            }
        }
        if i % 500 == 499 {
            ping(&mut c);
            check_keyspace(&mut c, seed);
        }
    }
    ping(&mut c);
    assert!(s.alive());
    check_keyspace(&mut c, seed);
    eprintln!(
        "hostile loop: {ok} ok, {errors} errors, {} tokens",
        tokens.len()
    );
    // The loop exercised both paths.
    assert!(ok > 100 && errors > 100, "ok {ok}, errors {errors}");
    let distinct: HashSet<&Vec<u8>> = tokens.iter().collect();
    assert_eq!(distinct.len(), tokens.len(), "a token was handed out twice");
}
