//! The expected error texts, every one the tests share, and the case table
//! of the `errors_*` tests: a case is a command and the error it must get;
//! `run` sends each one and checks that the reply is that error, that
//! nothing was written (the keyspace snapshot is unchanged) and that the
//! server still answers PING. Also the hostile-input loop's plumbing
//! (`query`, `ping`, `pk`).

use super::*;

use redis::Connection;

/// `okome.max-prompt-bytes` and `okome.max-value-bytes` defaults.
pub const LIMIT: usize = 4 * 1024 * 1024;

pub fn arity(cmd: &str) -> String {
    format!("ERR wrong number of arguments for '{cmd}' command")
}

pub fn not_cacheable(kind: &str) -> String {
    format!(
        "ERR kind '{kind}' is not cacheable: okome caches only read-only, deterministic, \
         recomputable data (planner, model_meta, rag, tools, health); it never caches file \
         writes, git operations, builds, agent memory or tool execution results"
    )
}

pub const PLANNER_VIA_CACHE: &str =
    "ERR kind 'planner' is read with OKOME.PLAN.GET and written with OKOME.PLAN.SET";
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
/// `what` (`plan_json`, `value_json`) is not JSON; `detail` says where.
pub fn not_json(what: &str, detail: &str) -> String {
    format!("ERR {what} is not valid JSON ({detail})")
}

/// An integer outside `min..=max`; a range of one value reads as that value.
pub fn range(what: &str, v: &str, min: u64, max: u64, unit: &str) -> String {
    if min == max {
        format!("ERR {what} {v} is out of range: must be {min} {unit}")
    } else {
        format!("ERR {what} {v} is out of range: must be between {min} and {max} {unit}")
    }
}

pub fn not_int(what: &str) -> String {
    format!("ERR {what} is not an integer or out of range")
}

pub fn needs_value(opt: &str) -> String {
    format!("ERR syntax error: option {opt} needs a value")
}

pub fn repeated(opt: &str) -> String {
    format!("ERR syntax error: option {opt} given more than once")
}

pub fn not_okome(key: &str, why: &str) -> String {
    format!("ERR '{key}' is not an okome key: {why}")
}

/// Redis's refusal of keys in more than one slot.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// `OKOME.KEY planner` (or `CACHE.*`) with `got` parts.
pub fn planner_parts(got: usize) -> String {
    format!(
        "ERR syntax error: kind 'planner' takes 4 parts (model, prompt, toolset_version, \
         repo_hash), or 5 (model, prompt_hash, toolset_version, repo_hash, HASHED), got {got}"
    )
}

/// `OKOME.KEY` takes every kind, budgets and ledgers too, and says so.
pub fn unknown_kind(shown: &str) -> String {
    format!(
        "ERR kind '{shown}' is not a kind of okome key: OKOME.KEY takes planner, model_meta, \
         rag, tools, health, rate, write, ledger or gcra"
    )
}

/// What the error reply must look like.
#[derive(Debug)]
pub enum Want {
    Exact(String),
    /// Starts with the first string and mentions every one of the others.
    Prefix(String, Vec<String>),
    /// The text with each `<n>` standing for one or more digits, and a
    /// trailing `<...>` for any text (see [`matches`]).
    Pattern(String),
}

impl Want {
    /// The text wanted (the prefix of a `Prefix`).
    pub fn text(&self) -> &str {
        match self {
            Want::Exact(w) | Want::Prefix(w, _) | Want::Pattern(w) => w,
        }
    }

    /// Whether `got` is the error wanted.
    pub fn matches(&self, got: &str) -> bool {
        match self {
            Want::Exact(w) => got == w,
            Want::Prefix(p, parts) => {
                got.starts_with(p.as_str()) && parts.iter().all(|part| got.contains(part.as_str()))
            }
            Want::Pattern(w) => matches(got, w),
        }
    }
}

/// Whether `got` is `want` with each `<n>` standing for one or more digits
/// and a trailing `<...>` for any text.
pub fn matches(got: &str, want: &str) -> bool {
    if let Some(prefix) = want.strip_suffix("<...>") {
        return got.starts_with(prefix);
    }
    let mut pieces = want.split("<n>");
    let Some(first) = pieces.next() else {
        return got.is_empty();
    };
    let Some(mut rest) = got.strip_prefix(first) else {
        return false;
    };
    for piece in pieces {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        match rest[digits..].strip_prefix(piece) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

#[derive(Debug)]
pub struct Case {
    pub args: Vec<Vec<u8>>,
    pub want: Want,
}

pub fn owned(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

/// A case whose reply must be exactly `want`.
pub fn exact(args: &[&[u8]], want: impl Into<String>) -> Case {
    Case {
        args: owned(args),
        want: Want::Exact(want.into()),
    }
}

/// A case whose reply must be `want`, read as a [`Want::Pattern`].
pub fn pattern(args: &[&[u8]], want: impl Into<String>) -> Case {
    Case {
        args: owned(args),
        want: Want::Pattern(want.into()),
    }
}

/// A case whose reply must start with `prefix`.
pub fn prefix(args: &[&[u8]], prefix: impl Into<String>) -> Case {
    Case {
        args: owned(args),
        want: Want::Prefix(prefix.into(), Vec::new()),
    }
}

/// An unknown option: the reply names it (rendered as `shown`) and lists
/// (at least) the options the command takes.
pub fn unknown(args: &[&[u8]], shown: &str, known: &[&str]) -> Case {
    Case {
        args: owned(args),
        want: Want::Prefix(
            format!("ERR syntax error: unknown option '{shown}' (expected one of: "),
            known.iter().map(|k| k.to_string()).collect(),
        ),
    }
}

pub fn ping(con: &mut Connection) {
    let pong: String = redis::cmd("PING")
        .query(con)
        .expect("PING after a bad command");
    assert_eq!(pong, "PONG");
}

pub fn query(con: &mut Connection, args: &[Vec<u8>]) -> redis::RedisResult<redis::Value> {
    command(args).query(con)
}

/// Runs every case: each must be refused with its error, write nothing and
/// leave the server alive.
pub fn run(con: &mut Connection, cases: &[Case]) {
    run_with(con, cases, true)
}

/// [`run`], then a `PING` after each case or not.
pub fn run_with(con: &mut Connection, cases: &[Case], ping_after: bool) {
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
            Want::Pattern(w) => assert!(matches(&got, w), "{cmd}\n  got:  {got}\n  want: {w}"),
        }
        if ping_after {
            ping(con);
        }
        assert_eq!(snapshot(con), before, "{cmd} changed the keyspace");
    }
}

/// The planner key of `(m, p, t, r)`.
pub fn pk() -> String {
    format!("okome:planner:m:{{{}}}:t:r", sha256_hex("p"))
}

/// A server with some state to protect: a stored plan, a held plan lock,
/// a cache value and a held cache lock. Errors must leave all of it as is.
pub fn seeded() -> (Server, Connection) {
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
pub const NOT_INTEGERS: &[&[u8]] = &[
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
pub fn out_of_range(min: u64, max: u64) -> Vec<String> {
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

/// Number cases for option `opt` at the end of `base`: the errors name its
/// argument as COMMAND DOCS does (the keyword in lowercase), and the keyword
/// itself when its value is missing.
pub fn number_cases(base: &[&[u8]], opt: &str, min: u64, max: u64, unit: &str) -> Vec<Case> {
    let name = opt.to_ascii_lowercase();
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
            want: Want::Exact(not_int(&name)),
        });
    }
    for v in out_of_range(min, max) {
        out.push(Case {
            args: with(v.as_bytes()),
            want: Want::Exact(range(&name, &v, min, max, unit)),
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

/// Values that are not one JSON text, with where the reply says they stop
/// being JSON (byte offsets count from 1); `None`: the empty value, refused
/// as empty.
pub fn bad_json() -> Vec<(Vec<u8>, Option<&'static str>)> {
    vec![
        (b"".to_vec(), None),
        (b"   ".to_vec(), Some("it ends early, after byte 3")),
        (b"{".to_vec(), Some("it ends early, after byte 1")),
        (b"{bad".to_vec(), Some("at byte 2")),
        (b"{} {}".to_vec(), Some("at byte 4")),
        (b"{}x".to_vec(), Some("at byte 3")),
        (b"[1,2]]".to_vec(), Some("at byte 6")),
        (b"1 2".to_vec(), Some("at byte 3")),
        (b"[1,]".to_vec(), Some("at byte 4")),
        (b"{\"a\":1,}".to_vec(), Some("at byte 8")),
        (b"{'a':1}".to_vec(), Some("at byte 2")),
        (b"{a:1}".to_vec(), Some("at byte 2")),
        (b"NaN".to_vec(), Some("at byte 1")),
        (b"Infinity".to_vec(), Some("at byte 1")),
        (b"01".to_vec(), Some("at byte 2")),
        (
            b"\"unterminated".to_vec(),
            Some("it ends early, after byte 13"),
        ),
        (b"\"ctl\x01\"".to_vec(), Some("at byte 5")),
        (b"\"bad escape \\q\"".to_vec(), Some("at byte 14")),
        (b"undefined".to_vec(), Some("at byte 1")),
        (b"\xff".to_vec(), Some("invalid UTF-8 at byte 1")),
        (b"\xef\xbb\xbf{}".to_vec(), Some("at byte 1")),
        (b"{}\x00".to_vec(), Some("at byte 3")),
        (
            "[".repeat(100_000).into_bytes(),
            Some("it ends early, after byte 100000"),
        ),
        (
            "{\"a\":".repeat(50_000).into_bytes(),
            Some("it ends early, after byte 250000"),
        ),
    ]
}

/// Every [`bad_json`] value as the argument `what` (`plan_json`,
/// `value_json`) between `before` and `after`.
pub fn json_cases(what: &str, before: &[&[u8]], after: &[&[u8]]) -> Vec<Case> {
    bad_json()
        .into_iter()
        .map(|(v, detail)| {
            let mut a = owned(before);
            a.push(v);
            a.extend(owned(after));
            Case {
                args: a,
                want: Want::Exact(match detail {
                    Some(d) => not_json(what, d),
                    None => format!("ERR {what} must not be empty"),
                }),
            }
        })
        .collect()
}

/// Keys that are not okome keys at all, with the reason in the reply.
pub fn malformed_keys() -> Vec<(String, String)> {
    let h = sha256_hex("p");
    let comps = "kind 'planner' has 4 components (model, prompt_hash, toolset_version, repo_hash)";
    let bad_hash = "prompt_hash must be 64 lowercase hex digits (SHA-256)";
    let start = "it must start with 'okome:'";
    let unknown_kind =
        "unknown kind (planner, model_meta, rag, tools, health, budget:rate, budget:write, budget:keys, budget:gcra)";
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
pub fn printed(key: &str) -> String {
    if key.len() > 100 {
        format!("{}...", &key[..100])
    } else {
        key.to_string()
    }
}
