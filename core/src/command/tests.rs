//! The grammar of every command, unit-tested without a server.

use super::*;
use crate::declared::Access;
use crate::keys::{self, printable, Kind};
use crate::Error;
use proptest::prelude::*;

fn cfg() -> Config {
    Config::default()
}

fn pk() -> Vec<u8> {
    keys::planner_key(b"m", b"p", b"t", b"r").unwrap()
}

#[test]
fn integers_parse_like_redis() {
    assert_eq!(parse_int("TTL", b"600"), Ok(600));
    assert_eq!(parse_int("TTL", b"-5"), Ok(-5));
    assert_eq!(parse_int("TTL", b"0"), Ok(0));
    assert_eq!(parse_int("TTL", b"9223372036854775807"), Ok(i64::MAX));
    assert_eq!(parse_int("TTL", b"-9223372036854775808"), Ok(i64::MIN));
    for bad in [
        &b"9223372036854775808"[..],
        b"-9223372036854775809",
        b"-0",
        b"007",
        b"--1",
    ] {
        assert_eq!(parse_int("TTL", bad), Err(Error::NotInteger("TTL")));
    }
    for bad in [
        &b""[..],
        b"-",
        b"+5",
        b" 5",
        b"5 ",
        b"1e3",
        b"0x10",
        b"99999999999999999999",
        b"\xff",
    ] {
        assert_eq!(parse_int("TTL", bad), Err(Error::NotInteger("TTL")));
    }
}

#[test]
fn plan_get_defaults_and_options() {
    let a: [&[u8]; 4] = [b"m", b"p", b"t", b"r"];
    let g = parse_plan_get(&a, &cfg()).unwrap();
    assert_eq!(g.key, pk());
    assert_eq!(g.lock_ttl_ms, Some(9000));
    let a: [&[u8]; 6] = [b"m", b"p", b"t", b"r", b"lockttl", b"8000"];
    assert_eq!(parse_plan_get(&a, &cfg()).unwrap().lock_ttl_ms, Some(8000));
    let a: [&[u8]; 5] = [b"m", b"p", b"t", b"r", b"NOLOCK"];
    assert_eq!(parse_plan_get(&a, &cfg()).unwrap().lock_ttl_ms, None);
}

#[test]
fn plan_lookup_is_plan_get_by_key() {
    let c = cfg();
    let k = pk();
    let by_key = parse_plan_lookup(
        &[
            &k, b"WAIT", b"100", b"AGENT", b"a", b"LIMIT", b"5", b"WINDOW", b"5",
        ],
        &c,
    )
    .unwrap();
    let by_args = parse_plan_get(
        &[
            b"m", b"p", b"t", b"r", b"WAIT", b"100", b"AGENT", b"a", b"LIMIT", b"5", b"WINDOW",
            b"5",
        ],
        &c,
    )
    .unwrap();
    assert_eq!(by_key, by_args);
    assert_eq!(
        parse_plan_lookup(&[], &c),
        Err(Error::Arity(PLAN_LOOKUP.name))
    );
    assert!(matches!(
        parse_plan_lookup(&[b"okome:tools:{1}"], &c),
        Err(Error::BadKey(_))
    ));
    assert!(matches!(
        parse_plan_lookup(&[&k, b"NOLOCK", b"WAIT", b"1"], &c),
        Err(Error::Syntax(_))
    ));
}

#[test]
fn wait_and_refresh_ahead() {
    let c = cfg();
    let g = parse_plan_get(
        &[
            b"m",
            b"p",
            b"t",
            b"r",
            b"WAIT",
            b"5000",
            b"REFRESHAHEAD",
            b"60000",
        ],
        &c,
    )
    .unwrap();
    assert_eq!((g.wait_ms, g.refresh_ahead_ms), (Some(5000), 60000));
    let g = parse_plan_get(&[b"m", b"p", b"t", b"r"], &c).unwrap();
    assert_eq!((g.wait_ms, g.refresh_ahead_ms), (None, 0));
    let e = |a: &[&[u8]]| parse_plan_get(a, &c).unwrap_err().to_string();
    assert_eq!(
        e(&[b"m", b"p", b"t", b"r", b"WAIT", b"0"]),
        "ERR wait 0 is out of range: must be between 1 and 600000 ms"
    );
    assert_eq!(
        e(&[b"m", b"p", b"t", b"r", b"WAIT", b"600001"]),
        "ERR wait 600001 is out of range: must be between 1 and 600000 ms"
    );
    assert_eq!(
        e(&[b"m", b"p", b"t", b"r", b"REFRESHAHEAD", b"900001"]),
        "ERR refreshahead 900001 is out of range: must be between 0 and 900000 ms"
    );
    assert!(e(&[b"m", b"p", b"t", b"r", b"WAIT", b"10", b"NOLOCK"])
        .starts_with("ERR syntax error: WAIT and NOLOCK"));
    assert!(
        e(&[b"m", b"p", b"t", b"r", b"REFRESHAHEAD", b"10", b"NOLOCK"])
            .starts_with("ERR syntax error: REFRESHAHEAD and NOLOCK")
    );
    assert!(parse_plan_get(
        &[b"m", b"p", b"t", b"r", b"REFRESHAHEAD", b"0", b"NOLOCK"],
        &c
    )
    .is_ok());
}

#[test]
fn plan_get_errors() {
    let c = cfg();
    let e = |a: &[&[u8]]| parse_plan_get(a, &c).unwrap_err();
    assert_eq!(e(&[b"m", b"p", b"t"]), Error::Arity(PLAN_GET.name));
    assert_eq!(e(&[b"m", b"p", b"t", b""]), Error::Empty("repo_hash"));
    assert_eq!(e(&[b"", b"p", b"t", b"r"]), Error::Empty("model"));
    assert!(matches!(
        e(&[b"m", b"p", b"t", b"r", b"FOO"]),
        Error::Syntax(_)
    ));
    assert!(matches!(
        e(&[b"m", b"p", b"t", b"r", b"LOCKTTL"]),
        Error::Syntax(_)
    ));
    assert!(matches!(
        e(&[b"m", b"p", b"t", b"r", b"LOCKTTL", b"7999"]),
        Error::OutOfRange { .. }
    ));
    assert_eq!(
        e(&[b"m", b"p", b"t", b"r", b"LOCKTTL", b"x"]),
        Error::NotInteger("lockttl")
    );
    assert!(matches!(
        e(&[b"m", b"p", b"t", b"r", b"NOLOCK", b"NOLOCK"]),
        Error::Syntax(_)
    ));
    assert!(matches!(
        e(&[b"m", b"p", b"t", b"r", b"NOLOCK", b"LOCKTTL", b"9000"]),
        Error::Syntax(_)
    ));
    let mut small = cfg();
    small.max_prompt_bytes = 3;
    let err = parse_plan_get(&[b"m", b"pppp", b"t", b"r"], &small).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ERR prompt is 4 bytes, larger than the 3-byte limit (okome.max-prompt-bytes)"
    );
}

#[test]
fn hashed_prompts() {
    let c = cfg();
    let hash = keys::prompt_hash(b"p");
    let h = hash.as_bytes();
    // The same key as the plain form, options and all.
    let plain = parse_plan_get(&[b"m", b"p", b"t", b"r", b"WAIT", b"5"], &c).unwrap();
    let hashed = parse_plan_get(&[b"m", h, b"t", b"r", b"HASHED", b"WAIT", b"5"], &c).unwrap();
    assert_eq!(hashed, plain);
    assert_eq!(
        parse_plan_get(&[b"m", h, b"t", b"r", b"hashed"], &c)
            .unwrap()
            .key,
        pk()
    );
    assert_eq!(
        parse_key(&[b"planner", b"m", h, b"t", b"r", b"HASHED"], &c).unwrap(),
        pk()
    );
    // Never hashed again: the hash of the hash is another key.
    assert_ne!(
        parse_plan_get(&[b"m", h, b"t", b"r"], &c).unwrap().key,
        pk()
    );
    // Not a hash: named, and shown (its start only).
    let e = |a: &[&[u8]]| parse_plan_get(a, &c).unwrap_err().to_string();
    let upper = hash.to_ascii_uppercase();
    let long = "p".repeat(100_000);
    for (bad, shown) in [
        (&b"p"[..], "'p' (1 bytes)".to_string()),
        (upper.as_bytes(), format!("'{upper}' (64 bytes)")),
        (&h[..63], format!("'{}' (63 bytes)", &hash[..63])),
        (b"", "'' (0 bytes)".to_string()),
        (
            long.as_bytes(),
            format!("'{}...' (100000 bytes)", &long[..72]),
        ),
    ] {
        let msg = e(&[b"m", bad, b"t", b"r", b"HASHED"]);
        assert_eq!(
            msg,
            format!(
                "ERR prompt_hash must be the SHA-256 of the prompt as 64 lowercase hex \
                 digits (HASHED); got {shown}"
            )
        );
        assert_eq!(
            parse_key(&[b"planner", b"m", bad, b"t", b"r", b"HASHED"], &c)
                .unwrap_err()
                .to_string(),
            msg
        );
    }
    let mut g = h.to_vec();
    g[10] = b'g';
    assert!(e(&[b"m", &g, b"t", b"r", b"HASHED"]).starts_with("ERR prompt_hash"));
    // The other components are still checked; the prompt size is not
    // (there is no prompt).
    assert_eq!(
        parse_plan_get(&[b"m", h, b"t", b"", b"HASHED"], &c),
        Err(Error::Empty("repo_hash"))
    );
    let mut small = cfg();
    small.max_prompt_bytes = 3;
    assert!(parse_plan_get(&[b"m", h, b"t", b"r", b"HASHED"], &small).is_ok());
    // HASHED comes right after repo_hash, once.
    assert_eq!(
        e(&[b"m", h, b"t", b"r", b"WAIT", b"5", b"HASHED"]),
        "ERR syntax error: HASHED must come right after repo_hash (OKOME.PLAN.GET model \
         prompt_hash toolset_version repo_hash HASHED [options])"
    );
    assert!(e(&[b"m", h, b"t", b"r", b"HASHED", b"HASHED"]).contains("HASHED must come"));
    // An agent named HASHED is an agent.
    assert!(parse_plan_get(
        &[b"m", b"p", b"t", b"r", b"AGENT", b"HASHED", b"LIMIT", b"1", b"WINDOW", b"1"],
        &c
    )
    .is_ok());
    // PLAN.LOOKUP takes a key, never HASHED; KEY planner only as the
    // fifth part.
    assert!(parse_plan_lookup(&[&pk(), b"HASHED"], &c).is_err());
    assert!(parse_key(&[b"planner", b"m", h, b"t", b"r", b"NOTHASHED"], &c).is_err());
    assert!(parse_key(&[b"planner", b"m", h, b"t", b"HASHED"], &c).is_ok());
}

#[test]
fn plan_set_validates_key_json_ttl_token() {
    let c = cfg();
    let k = pk();
    let ok = parse_plan_set(&[&k, b"{\"a\":1}", b"TTL", b"900", b"TOKEN", b"t"], &c).unwrap();
    assert_eq!((ok.ttl_s, ok.token), (900, Some(&b"t"[..])));
    assert_eq!(parse_plan_set(&[&k, b"[]"], &c).unwrap().ttl_s, 600);
    let e = |a: &[&[u8]]| parse_plan_set(a, &c).unwrap_err();
    // Where the value stops being JSON, as a byte offset from 1; never
    // the parser's own words.
    let json = |v: &[u8]| e(&[&k, v]).to_string();
    for (v, want) in [
        (&b"{bad"[..], "at byte 2"),
        (b"tx", "at byte 2"),
        (b"{} {}", "at byte 4"),
        (b"[1,\n2,\nx]", "at byte 8"),
        (b"[\"\xc3\xa9\", x]", "at byte 8"),
        (b"\"\xff\"", "invalid UTF-8 at byte 2"),
        (b"{\"a\":\"\xc3\"}", "invalid UTF-8 at byte 7"),
        (b"\"ctl\x01\"", "at byte 5"),
        (b"{\"a\":\"\x1f\"}", "at byte 7"),
        (b"{", "it ends early, after byte 1"),
        (b"[1, ", "it ends early, after byte 4"),
    ] {
        assert_eq!(
            json(v),
            format!("ERR plan_json is not valid JSON ({want})"),
            "{}",
            printable(v)
        );
    }
    assert_eq!(e(&[&k, b""]), Error::Empty("plan_json"));
    assert!(matches!(e(&[b"okome:tools:{1}", b"{}"]), Error::BadKey(_)));
    assert!(matches!(e(&[b"foo", b"{}"]), Error::BadKey(_)));
    assert!(matches!(
        e(&[&k, b"{}", b"TTL", b"901"]),
        Error::OutOfRange { .. }
    ));
    assert!(matches!(
        e(&[&k, b"{}", b"TTL", b"0"]),
        Error::OutOfRange { .. }
    ));
    assert_eq!(e(&[&k, b"{}", b"TOKEN", b""]), Error::Empty("token"));
    assert_eq!(e(&[&k]), Error::Arity(PLAN_SET.name));
    let deep = "[".repeat(100_000);
    assert_eq!(
        e(&[&k, deep.as_bytes()]).to_string(),
        "ERR plan_json is not valid JSON (it ends early, after byte 100000)"
    );
}

#[test]
fn lock_and_unlock() {
    let c = cfg();
    let k = pk();
    let l = parse_lock(&[&k], &c).unwrap();
    assert_eq!((l.ttl_ms, l.token), (9000, None));
    let l = parse_lock(&[&k, b"TTL", b"10000", b"TOKEN", b"abc"], &c).unwrap();
    assert_eq!((l.ttl_ms, l.token), (10000, Some(&b"abc"[..])));
    assert!(parse_lock(&[&k, b"TTL", b"10001"], &c).is_err());
    assert!(parse_lock(&[b"okome:budget:rate:{a}"], &c).is_err());
    assert!(parse_lock(&[&keys::lock_key(&k)], &c).is_err());
    assert!(parse_unlock(&[&k, b"t"], &c).is_ok());
    assert_eq!(parse_unlock(&[&k, b""], &c), Err(Error::Empty("token")));
    assert_eq!(parse_unlock(&[&k], &c), Err(Error::Arity(UNLOCK.name)));
}

#[test]
fn unlock_failed() {
    let c = cfg();
    let k = pk();
    let u = parse_unlock(&[&k, b"t", b"failed", b"5000", b"boom"], &c).unwrap();
    assert_eq!(
        u.failed,
        Some(Failure {
            ms: 5000,
            message: b"boom"
        })
    );
    let declared = u.declared(false).tail();
    assert!(declared
        .iter()
        .any(|a| a.as_slice() == keys::failed_key(&k).as_slice()));
    let u = parse_unlock(&[&k, b"t", b"FAILED", b"0"], &c).unwrap();
    assert_eq!(
        u.failed,
        Some(Failure {
            ms: 0,
            message: b""
        })
    );
    // Nothing recorded with 0 ms: only the lock is declared.
    assert_eq!(
        u.declared(false),
        parse_unlock(&[&k, b"t"], &c).unwrap().declared(false)
    );
    let err = |a: &[&[u8]]| parse_unlock(a, &c).unwrap_err().to_string();
    assert_eq!(
        err(&[&k, b"t", b"FAILED", b"60001"]),
        "ERR ms 60001 is out of range: must be between 0 and 60000 ms"
    );
    assert_eq!(
        err(&[&k, b"t", b"FAILED"]),
        "ERR syntax error: option FAILED needs a value"
    );
    assert_eq!(
        err(&[&k, b"t", b"FAILED", b"1", b"a", b"b"]),
        "ERR syntax error: FAILED takes ms and at most one message (quote a message with spaces)"
    );
    assert_eq!(
        err(&[&k, b"t", b"BROKEN", b"1"]),
        "ERR syntax error: unknown option 'BROKEN' (expected: FAILED ms [message])"
    );
    let rag = keys::build(Kind::Rag, &[b"repo", b"chunk"]).unwrap();
    assert!(parse_unlock(&[&rag, b"t"], &c).is_ok());
    assert!(err(&[&rag, b"t", b"FAILED", b"1"])
        .starts_with("ERR 'okome:rag:{repo}:chunk' is not a planner key: FAILED"));
    let small = Config {
        max_value_bytes: 3,
        ..cfg()
    };
    assert_eq!(
        parse_unlock(&[&k, b"t", b"FAILED", b"1", b"four"], &small)
            .unwrap_err()
            .to_string(),
        "ERR message is 4 bytes, larger than the 3-byte limit (okome.max-value-bytes)"
    );
}

#[test]
fn plan_set_fenced() {
    let c = cfg();
    let k = pk();
    let s = parse_plan_set(&[&k, b"{}", b"TOKEN", b"t", b"fenced"], &c).unwrap();
    assert!(s.fenced);
    assert!(
        !parse_plan_set(&[&k, b"{}", b"TOKEN", b"t"], &c)
            .unwrap()
            .fenced
    );
    assert_eq!(
        parse_plan_set(&[&k, b"{}", b"FENCED"], &c)
            .unwrap_err()
            .to_string(),
        "ERR syntax error: FENCED needs TOKEN (it stores only while that token holds the lock)"
    );
}

#[test]
fn cache_kinds_and_the_hard_rule() {
    let c = cfg();
    let s = parse_cache_set(&[b"rag", b"repo", b"chunk", b"\"x\"", b"TTL", b"1800"], &c).unwrap();
    assert_eq!(
        (s.kind, s.key.as_slice(), s.ttl_s),
        (Kind::Rag, &b"okome:rag:{repo}:chunk"[..], 1800)
    );
    let s = parse_cache_set(&[b"health", b"n", b"{}"], &c).unwrap();
    assert_eq!(s.ttl_s, 30);
    assert!(parse_cache_set(&[b"health", b"n", b"{}", b"TTL", b"31"], &c).is_err());
    // Parts and value are the arguments before the first option: too
    // many or too few parts are named as such.
    let e = |a: &[&[u8]]| parse_cache_set(a, &c).unwrap_err().to_string();
    assert_eq!(
        e(&[b"rag", b"repo", b"{}"]),
        "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1"
    );
    assert_eq!(
        e(&[b"tools", b"v1", b"extra", b"{}"]),
        "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2"
    );
    assert_eq!(
        e(&[b"tools", b"v1", b"extra", b"{}", b"ttl", b"600"]),
        "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2"
    );
    assert_eq!(
        e(&[b"rag", b"repo", b"chunk", b"TTL", b"1800"]),
        "ERR syntax error: value_json is missing: kind 'rag' takes 2 parts (repo, \
         chunk_hash), then value_json"
    );
    // An option keyword is never a part.
    assert_eq!(
        e(&[b"tools", b"TTL", b"{}"]),
        "ERR syntax error: tool_version cannot be 'TTL': TTL and AGENT are the options \
         of OKOME.CACHE.SET (OKOME.CACHE.SET tools tool_version value_json [TTL s] \
         [AGENT id])"
    );
    assert!(e(&[b"rag", b"r", b"agent", b"{}"])
        .starts_with("ERR syntax error: chunk_hash cannot be 'agent'"));
    // After a JSON value, an unknown word is an unknown option.
    assert_eq!(
        e(&[b"tools", b"v1", b"{}", b"TTTL", b"600"]),
        "ERR syntax error: unknown option 'TTTL' (expected one of: TTL, AGENT)"
    );
    // A value or agent named like a keyword is fine where it is.
    assert!(parse_cache_set(&[b"tools", b"v1", b"\"TTL\"", b"AGENT", b"TTL"], &c).is_ok());
    for k in [
        &b"git"[..],
        b"file_writes",
        b"agent_memory",
        b"builds",
        b"tool_results",
        b"rate",
    ] {
        assert!(matches!(
            parse_cache_set(&[k, b"x", b"{}"], &c),
            Err(Error::NotCacheable(_))
        ));
        assert!(matches!(
            parse_cache_get(&[k, b"x"]),
            Err(Error::NotCacheable(_))
        ));
    }
    assert_eq!(
        parse_cache_get(&[b"planner", b"x"]),
        Err(Error::PlannerViaCache)
    );
    assert_eq!(
        parse_cache_get(&[b"tools", b"v1"]).unwrap().key,
        b"okome:tools:{v1}"
    );
    assert!(matches!(
        parse_cache_get(&[b"tools", b"v1", b"x"]),
        Err(Error::Syntax(_))
    ));
}

#[test]
fn throttle_grammar() {
    use crate::limiter::Throttle as Quota;
    let t = parse_throttle(&[b"ip:1", b"20", b"1", b"60"]).unwrap();
    assert_eq!(
        t,
        Throttle {
            key: b"okome:budget:gcra:{ip%3A1}".to_vec(),
            quota: Quota::new(20, 1000, 60, 1),
        }
    );
    assert_eq!(
        t.declared(false),
        Declared::none().with(Access::ReadWrite, t.key.clone())
    );
    let peek =
        parse_throttle(&[b"ip", b"20", b"1", b"60", b"cost", b"0", b"name", b"login"]).unwrap();
    assert_eq!(peek.key, b"okome:budget:gcra:{ip}:login");
    assert_eq!(peek.quota, Quota::new(20, 1000, 60, 0));
    assert_eq!(
        peek.declared(true),
        Declared::none().with(Access::Read, peek.key.clone())
    );
    let named = |n: &[u8]| parse_throttle(&[b"ip", b"1", b"1", b"0", b"NAME", n]).map(|t| t.key);
    assert_eq!(named(b"default").unwrap(), b"okome:budget:gcra:{ip}");
    assert_eq!(named(b"a b").unwrap(), b"okome:budget:gcra:{ip}:a%20b");
    let cost =
        |v: &[u8]| parse_throttle(&[b"ip", b"1", b"1", b"60", b"COST", v]).map(|t| t.quota.cost);
    assert_eq!(cost(b"61"), Ok(61));
    let e = |a: &[&[u8]]| parse_throttle(a).unwrap_err().to_string();
    let refused: [(&[&[u8]], &str); 13] = [
        (
            &[b"ip", b"20", b"1"],
            "ERR wrong number of arguments for 'okome.throttle' command",
        ),
        (&[b"", b"20", b"1", b"60"], "ERR subject must not be empty"),
        (
            &[b"ip", b"0", b"1", b"60"],
            "ERR rate 0 is out of range: must be between 1 and 1000000000000000 units",
        ),
        (
            &[b"ip", b"x", b"1", b"60"],
            "ERR rate is not an integer or out of range",
        ),
        (
            &[b"ip", b"20", b"0", b"60"],
            "ERR period_s 0 is out of range: must be between 1 and 31536000 seconds",
        ),
        (
            &[b"ip", b"20", b"1", b"-1"],
            "ERR burst -1 is out of range: must be between 0 and 1000000000000000 units",
        ),
        (
            &[b"ip", b"20", b"1", b"60", b"COST", b"62"],
            "ERR cost 62 is out of range: must be between 0 and 61 units (0 to burst + 1)",
        ),
        (
            &[b"ip", b"20", b"1", b"60", b"COST", b"-1"],
            "ERR cost -1 is out of range: must be between 0 and 61 units (0 to burst + 1)",
        ),
        (
            &[b"ip", b"20", b"1", b"60", b"COST"],
            "ERR syntax error: option COST needs a value",
        ),
        (
            &[b"ip", b"20", b"1", b"60", b"NAME", b""],
            "ERR name must not be empty",
        ),
        (
            &[b"ip", b"20", b"1", b"60", b"NAME", b"a", b"name", b"b"],
            "ERR syntax error: option NAME given more than once",
        ),
        (
            &[b"ip", b"20", b"1", b"60", b"BURST", b"1"],
            "ERR syntax error: unknown option 'BURST' (expected one of: COST, NAME)",
        ),
        (
            &[b"ip", b"20", b"1", b"60", b"1"],
            "ERR syntax error: unknown option '1' (expected one of: COST, NAME)",
        ),
    ];
    for (a, want) in refused {
        assert_eq!(
            e(a),
            want,
            "{:?}",
            a.iter().map(|w| printable(w)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn rate_and_wbudget_grammar() {
    let c = cfg();
    let r = parse_rate(&[b"a", b"60", b"60"]).unwrap();
    assert_eq!(
        r,
        Charge {
            key: b"okome:budget:rate:{a}".to_vec(),
            limit: 60,
            window_ms: 60_000,
            cost: 1
        }
    );
    assert_eq!(
        parse_rate(&[b"a", b"60", b"60", b"cost", b"0"])
            .unwrap()
            .cost,
        0
    );
    let e = |a: &[&[u8]]| parse_rate(a).unwrap_err().to_string();
    let refused: [(&[&[u8]], &str); 9] = [
        (
            &[b"a", b"60"],
            "ERR wrong number of arguments for 'okome.rate' command",
        ),
        (&[b"", b"60", b"60"], "ERR agent must not be empty"),
        (
            &[b"a", b"0", b"60"],
            "ERR limit 0 is out of range: must be between 1 and 1000000000000000 units",
        ),
        (
            &[b"a", b"-1", b"60"],
            "ERR limit -1 is out of range: must be between 1 and 1000000000000000 units",
        ),
        (
            &[b"a", b"60", b"0"],
            "ERR window 0 is out of range: must be between 1 and 31536000 seconds",
        ),
        (
            &[b"a", b"60", b"-5"],
            "ERR window -5 is out of range: must be between 1 and 31536000 seconds",
        ),
        (
            &[b"a", b"99999999999999999999", b"60"],
            "ERR limit is not an integer or out of range",
        ),
        (
            &[b"a", b"6", b"60", b"COST", b"7"],
            "ERR cost 7 is out of range: must be between 0 and 6 units (0 to the limit)",
        ),
        (
            &[b"a", b"6", b"60", b"COST", b"-1"],
            "ERR cost -1 is out of range: must be between 0 and 6 units (0 to the limit)",
        ),
    ];
    for (args, want) in refused {
        assert_eq!(e(args), want, "{args:?}");
    }
    let w = parse_wbudget(&[b"a", b"30"], &c).unwrap();
    assert_eq!(
        (w.key.as_slice(), w.window_ms),
        (&b"okome:budget:write:{a}"[..], 60_000)
    );
    let w = parse_wbudget(&[b"a", b"30", b"COST", b"3", b"WINDOW", b"10"], &c).unwrap();
    assert_eq!((w.window_ms, w.cost), (10_000, 3));
    assert!(parse_wbudget(&[b"a", b"3", b"COST", b"4"], &c).is_err());
    // Each command names the form of the window it takes.
    assert_eq!(
        e(&[b"a", b"60", b"window", b"60"]),
        "ERR syntax error: OKOME.RATE takes the window as its third argument (OKOME.RATE \
         agent limit window [COST n]), not as WINDOW s"
    );
    assert_eq!(
        parse_wbudget(&[b"a", b"2", b"120"], &c)
            .unwrap_err()
            .to_string(),
        "ERR syntax error: OKOME.WBUDGET takes the window as WINDOW s (OKOME.WBUDGET agent \
         write_limit [WINDOW s] [COST n]), not as its third argument"
    );
}

#[test]
fn plan_get_and_set_with_agent() {
    let c = cfg();
    let g = parse_plan_get(
        &[
            b"m", b"p", b"t", b"r", b"AGENT", b"x", b"LIMIT", b"60", b"WINDOW", b"60",
        ],
        &c,
    )
    .unwrap();
    assert_eq!(g.rate.unwrap().key, b"okome:budget:rate:{x}");
    assert!(parse_plan_get(
        &[b"m", b"p", b"t", b"r", b"AGENT", b"x", b"LIMIT", b"60"],
        &c
    )
    .is_err());
    assert!(parse_plan_get(
        &[b"m", b"p", b"t", b"r", b"AGENT", b"", b"LIMIT", b"6", b"WINDOW", b"6"],
        &c
    )
    .is_err());
    let k = pk();
    let s = parse_plan_set(&[&k, b"{}", b"AGENT", b"x", b"WLIMIT", b"30"], &c).unwrap();
    assert_eq!(
        s.budget.unwrap(),
        Charge {
            key: b"okome:budget:write:{x}".to_vec(),
            limit: 30,
            window_ms: 60_000,
            cost: 1
        }
    );
    assert!(parse_plan_set(&[&k, b"{}", b"WLIMIT", b"30"], &c).is_err());
    assert!(parse_plan_set(&[&k, b"{}", b"AGENT", b"x", b"WWINDOW", b"5"], &c).is_err());
    assert!(parse_plan_set(&[&k, b"{}", b"AGENT", b"x", b"WLIMIT", b"0"], &c).is_err());
}

#[test]
fn agent_option_records_in_the_ledger() {
    let c = cfg();
    let k = pk();
    let s = parse_plan_set(&[&k, b"{}", b"AGENT", b"a:1"], &c).unwrap();
    assert_eq!(
        (s.budget, s.ledger),
        (None, Some(b"okome:budget:keys:{a%3A1}".to_vec()))
    );
    let s = parse_plan_set(&[&k, b"{}", b"AGENT", b"a", b"WLIMIT", b"3"], &c).unwrap();
    assert!(s.budget.is_some());
    assert_eq!(s.ledger, Some(b"okome:budget:keys:{a}".to_vec()));
    assert_eq!(parse_plan_set(&[&k, b"{}"], &c).unwrap().ledger, None);
    assert_eq!(
        parse_plan_set(&[&k, b"{}", b"AGENT", b""], &c),
        Err(Error::Empty("agent"))
    );
    let e = parse_plan_set(&[&k, b"{}", b"AGENT", b"a", b"WWINDOW", b"5"], &c)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "ERR syntax error: WLIMIT needs AGENT, and WWINDOW needs AGENT and WLIMIT"
    );
    let s = parse_cache_set(
        &[b"tools", b"v1", b"{}", b"agent", b"a", b"TTL", b"600"],
        &c,
    )
    .unwrap();
    assert_eq!(s.ledger, Some(b"okome:budget:keys:{a}".to_vec()));
    assert_eq!(
        parse_cache_set(&[b"tools", b"v1", b"{}", b"AGENT", b""], &c),
        Err(Error::Empty("agent"))
    );
    assert!(matches!(
        parse_cache_set(&[b"ledger", b"a", b"{}"], &c),
        Err(Error::NotCacheable(_))
    ));
}

#[test]
fn agent_commands() {
    let c = cfg();
    let k = pk();
    let r = parse_agent_record(&[b"a", &k]).unwrap();
    assert_eq!(
        (r.ledger.as_slice(), r.kind, r.pxat),
        (&b"okome:budget:keys:{a}"[..], Kind::Planner, None)
    );
    let r = parse_agent_record(&[b"a", b"okome:tools:{v}", b"PXAT", b"1700000000000"]).unwrap();
    assert_eq!((r.kind, r.pxat), (Kind::Tools, Some(1_700_000_000_000)));
    let e = |a: &[&[u8]]| parse_agent_record(a).unwrap_err().to_string();
    assert_eq!(
        e(&[b"a"]),
        "ERR wrong number of arguments for 'okome.agent.record' command"
    );
    assert_eq!(e(&[b"", &k]), "ERR agent must not be empty");
    assert_eq!(
        e(&[b"a", b"okome:budget:rate:{a}"]),
        "ERR 'okome:budget:rate:{a}' is a rate budget key; only cache keys (planner, model_meta, rag, tools, health) can be recorded"
    );
    assert_eq!(
        e(&[b"a", b"okome:budget:keys:{b}"]),
        "ERR 'okome:budget:keys:{b}' is a ledger budget key; only cache keys (planner, model_meta, rag, tools, health) can be recorded"
    );
    assert!(e(&[b"a", b"foo"]).starts_with("ERR 'foo' is not an okome key"));
    assert!(e(&[b"a", &k, b"PXAT", b"0"]).starts_with("ERR pxat 0 is out of range"));
    // PXAT of a key another node serves: after now, within its kind's
    // longest TTL plus the clock-skew allowance.
    let now = 1_700_000_000_000;
    assert!(check_pxat(Kind::Planner, now + 1, now, &c).is_ok());
    assert!(check_pxat(Kind::Planner, now + 960_000, now, &c).is_ok());
    assert!(check_pxat(Kind::Planner, now + 960_001, now, &c).is_err());
    assert!(check_pxat(Kind::Health, now + 90_001, now, &c).is_err());
    assert!(check_pxat(Kind::Planner, now, now, &c).is_err());

    let kq = parse_agent_keys(&[b"a"]).unwrap();
    assert_eq!((kq.count, kq.cursor), (100, None));
    let cur = Cursor {
        expiry_ms: 1_700_000_000_000,
        key: k.clone(),
    };
    let kq = parse_agent_keys(&[b"a", b"CURSOR", &cur.encode(), b"COUNT", b"5"]).unwrap();
    assert_eq!((kq.count, kq.cursor), (5, Some(cur)));
    assert_eq!(Cursor::decode(b"0"), Ok(None));
    for bad in [
        &b""[..],
        b"x",
        b"12",
        b":k",
        b"0:k",
        b"-1:k",
        b"01:k",
        b"12:",
    ] {
        assert!(
            matches!(Cursor::decode(bad), Err(Error::Syntax(_))),
            "{}",
            printable(bad)
        );
    }
    assert!(parse_agent_keys(&[b"a", b"COUNT", b"0"]).is_err());
    assert!(parse_agent_keys(&[b"a", b"COUNT", b"10001"]).is_err());
    assert_eq!(parse_agent_purge(&[b"a"]).unwrap().count, 1000);
    assert_eq!(parse_agent_purge(&[b"a", b"count", b"7"]).unwrap().count, 7);
    assert!(parse_agent_purge(&[b"a", b"COUNT", b"100001"]).is_err());
    assert_eq!(parse_agent_purge(&[]), Err(Error::Arity(AGENT_PURGE.name)));
    assert_eq!(parse_agent_keys(&[b""]), Err(Error::Empty("agent")));
}

#[test]
fn key_command() {
    let c = cfg();
    assert_eq!(
        parse_key(&[b"planner", b"m", b"p", b"t", b"r"], &c).unwrap(),
        pk()
    );
    assert_eq!(
        parse_key(&[b"rate", b"a:b"], &c).unwrap(),
        b"okome:budget:rate:{a%3Ab}"
    );
    let e = |a: &[&[u8]]| parse_key(a, &c).unwrap_err().to_string();
    assert_eq!(
        e(&[b"planner", b"m", b"p", b"t"]),
        "ERR syntax error: kind 'planner' takes 4 parts (model, prompt, toolset_version, \
         repo_hash), or 5 (model, prompt_hash, toolset_version, repo_hash, HASHED), got 3"
    );
    // OKOME.KEY lists the kinds it takes: budgets too.
    assert_eq!(e(&[b"git", b"x"]), Kind::unknown(b"git").to_string());
    assert_eq!(
        e(&[b"lock", b"x"]),
        "ERR kind 'lock' is not a kind of okome key: OKOME.KEY takes planner, model_meta, \
         rag, tools, health, rate, write, ledger or gcra"
    );
    for k in Kind::NAMED {
        assert!(e(&[b"lock", b"x"]).contains(k.name()));
    }
    // A lease pool's key comes with its lease id, never from OKOME.KEY.
    assert_eq!(e(&[b"lease", b"x"]), Kind::unknown(b"lease").to_string());
    assert_eq!(
        e(&[b"rag", b"r"]),
        "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1"
    );
    assert_eq!(
        parse_key(&[b"tools", b"TTL"], &c).unwrap(),
        b"okome:tools:{TTL}"
    );
}

/// Parses `command` with its argument `arg` (its `COMMAND DOCS` name)
/// set to `v`, everything else valid, and returns what the request holds
/// for it.
fn parse_arg(command: &str, arg: &str, v: &str, c: &Config) -> Result<u64> {
    let v = v.as_bytes();
    let k = pk();
    let get = |opt: &[u8], f: fn(&PlanGet) -> u64| -> Result<u64> {
        let mut a: Vec<&[u8]> = match command {
            "okome.plan.get" => vec![b"m", b"p", b"t", b"r"],
            _ => vec![&k],
        };
        let rate: [&[u8]; 6] = [b"AGENT", b"a", b"LIMIT", b"1", b"WINDOW", b"1"];
        match opt {
            b"LIMIT" => a.extend([&b"AGENT"[..], b"a", b"WINDOW", b"1", b"LIMIT", v]),
            b"WINDOW" => a.extend([&b"AGENT"[..], b"a", b"LIMIT", b"1", b"WINDOW", v]),
            _ => {
                a.extend(rate);
                a.extend([opt, v]);
            }
        }
        let g = match command {
            "okome.plan.get" => parse_plan_get(&a, c)?,
            _ => parse_plan_lookup(&a, c)?,
        };
        Ok(f(&g))
    };
    let rate = |f: fn(&Charge) -> u64, a: &[&[u8]]| parse_rate(a).map(|r| f(&r));
    let wbudget = |f: fn(&Charge) -> u64, a: &[&[u8]]| parse_wbudget(a, c).map(|r| f(&r));
    let throttle = |f: fn(&crate::limiter::Throttle) -> u64, a: &[&[u8]]| {
        parse_throttle(a).map(|t| f(&t.quota))
    };
    match (command, arg) {
        ("okome.plan.get" | "okome.plan.lookup", "limit") => {
            get(b"LIMIT", |g| g.rate.as_ref().map_or(0, |r| r.limit))
        }
        ("okome.plan.get" | "okome.plan.lookup", "window") => get(b"WINDOW", |g| {
            g.rate.as_ref().map_or(0, |r| r.window_ms / 1000)
        }),
        ("okome.plan.get" | "okome.plan.lookup", "wait") => {
            get(b"WAIT", |g| g.wait_ms.unwrap_or(u64::MAX))
        }
        ("okome.plan.get" | "okome.plan.lookup", "refreshahead") => {
            get(b"REFRESHAHEAD", |g| g.refresh_ahead_ms)
        }
        ("okome.plan.get" | "okome.plan.lookup", "lockttl") => {
            get(b"LOCKTTL", |g| g.lock_ttl_ms.unwrap_or(u64::MAX))
        }
        ("okome.plan.set", "ttl") => parse_plan_set(&[&k, b"{}", b"TTL", v], c).map(|s| s.ttl_s),
        ("okome.plan.set", "wlimit") => {
            parse_plan_set(&[&k, b"{}", b"AGENT", b"a", b"WLIMIT", v], c)
                .map(|s| s.budget.map_or(0, |b| b.limit))
        }
        ("okome.plan.set", "wwindow") => parse_plan_set(
            &[&k, b"{}", b"AGENT", b"a", b"WLIMIT", b"1", b"WWINDOW", v],
            c,
        )
        .map(|s| s.budget.map_or(0, |b| b.window_ms / 1000)),
        ("okome.lock", "ttl") => parse_lock(&[&k, b"TTL", v], c).map(|l| l.ttl_ms),
        ("okome.unlock", "ms") => {
            parse_unlock(&[&k, b"t", b"FAILED", v], c).map(|u| u.failed.map_or(0, |f| f.ms))
        }
        ("okome.rate", "limit") => rate(|r| r.limit, &[b"a", v, b"1"]),
        ("okome.rate", "window") => rate(|r| r.window_ms / 1000, &[b"a", b"1", v]),
        ("okome.rate", "cost") => rate(|r| r.cost, &[b"a", b"1000000000000000", b"1", b"COST", v]),
        ("okome.wbudget", "write_limit") => wbudget(|r| r.limit, &[b"a", v]),
        ("okome.wbudget", "window") => wbudget(|r| r.window_ms / 1000, &[b"a", b"1", b"WINDOW", v]),
        ("okome.wbudget", "cost") => wbudget(|r| r.cost, &[b"a", b"1000000000000000", b"COST", v]),
        ("okome.throttle", "rate") => throttle(|t| t.rate, &[b"s", v, b"1", b"0"]),
        ("okome.throttle", "period_s") => throttle(|t| t.period_ms / 1000, &[b"s", b"1", v, b"0"]),
        ("okome.throttle", "burst") => throttle(|t| t.burst, &[b"s", b"1", b"1", v]),
        ("okome.throttle", "cost") => throttle(
            |t| t.cost,
            &[b"s", b"1", b"1", b"1000000000000000", b"COST", v],
        ),
        ("okome.cache.set", "ttl") => {
            parse_cache_set(&[b"rag", b"r", b"c", b"{}", b"TTL", v], c).map(|s| s.ttl_s)
        }
        ("okome.agent.keys", "count") => parse_agent_keys(&[b"a", b"COUNT", v]).map(|k| k.count),
        ("okome.agent.purge", "count") => parse_agent_purge(&[b"a", b"COUNT", v]).map(|k| k.count),
        ("okome.lease.acquire", "max") => parse_lease_acquire(&[b"s", v, b"1000"]).map(|r| r.max),
        ("okome.lease.acquire", "ttl_ms") => {
            parse_lease_acquire(&[b"s", b"1", v]).map(|r| r.ttl_ms)
        }
        ("okome.lease.acquire", "wait") => {
            parse_lease_acquire(&[b"s", b"1", b"1000", b"WAIT", v]).map(|r| r.wait_ms.unwrap_or(0))
        }
        ("okome.lease.renew", "ttl_ms") => {
            parse_lease_renew(&[b"{s}:0123456789abcdef0123456789abcdef", v]).map(|r| r.ttl_ms)
        }
        ("okome.take", "numlimits") => parse_take(&[v, b"a", b"n", b"1", b"1", b"1"])
            .map(|t| t.limits.len() as u64)
            .or_else(|e| match e {
                // Enough numlimits, too few limits: the range was taken.
                Error::Syntax(m) if m.starts_with("numlimits") => {
                    parse_int("n", v).map(|n| n as u64)
                }
                e => Err(e),
            }),
        ("okome.take", "limit") => {
            parse_take(&[b"1", b"a", b"n", v, b"1", b"1"]).map(|t| t.limits[0].limit)
        }
        ("okome.take", "window_s") => {
            parse_take(&[b"1", b"a", b"n", b"1", v, b"1"]).map(|t| t.limits[0].window_ms / 1000)
        }
        ("okome.take", "cost") => {
            parse_take(&[b"1", b"a", b"n", b"1000000000000000", b"1", v]).map(|t| t.limits[0].cost)
        }
        ("okome.take", "ttl_ms") => {
            parse_take(&[b"1", b"a", b"n", b"1", b"1", b"1", b"RESERVE", v])
                .map(|t| t.reserve_ms.unwrap_or(0))
        }
        ("okome.settle", "cost") => {
            parse_settle(&[b"{s}:0123456789abcdef0123456789abcdef", v]).map(|s| s.costs[0])
        }
        _ => panic!("no parser case for {command} {arg}: add one"),
    }
}

/// The range table and the parser agree: for every bounded argument
/// of every command, min and max are taken, min-1 and max+1 refused
/// with the range and unit of the table (a standard: the configured
/// one, the defaults here and a narrowed one).
#[test]
fn the_parser_checks_every_argument_against_the_range_table() {
    use crate::config::Bounds;
    let table = ranges();
    let mut narrowed = cfg();
    narrowed.lock_ttl_ms = crate::config::Standard::new(5_000, 6_000, 7_000);
    narrowed.planner_ttl = crate::config::Standard::new(60, 60, 60);
    narrowed.rag_ttl = crate::config::Standard::new(10, 20, 30);
    for c in [cfg(), narrowed] {
        for a in &table {
            let (min, max, unit) = match a.bounds {
                Bounds::Fixed(r) => (r.min, r.max, r.unit),
                Bounds::Standard { prefix, hard, seed } => {
                    let s = match prefix {
                        "lock-ttl" => c.lock_ttl_ms,
                        "planner-ttl" => c.planner_ttl,
                        other => panic!("no standard {other}"),
                    };
                    assert!(hard.contains(seed.min) && hard.contains(seed.max));
                    (s.min, s.max, hard.unit)
                }
                Bounds::KindStandard => (c.rag_ttl.min, c.rag_ttl.max, "seconds"),
            };
            let at = |v: i128| parse_arg(a.command, a.arg, &v.to_string(), &c);
            let name = format!("{} {}", a.command, a.arg);
            assert_eq!(at(min.into()), Ok(min), "{name} min");
            assert_eq!(at(max.into()), Ok(max), "{name} max");
            for out in [i128::from(min) - 1, i128::from(max) + 1] {
                match at(out) {
                    Err(Error::OutOfRange {
                        min: m,
                        max: x,
                        unit: u,
                        ..
                    }) => {
                        assert_eq!((m, x), (min, max), "{name} {out}");
                        assert!(u.starts_with(unit), "{name}: unit {u}, table {unit}");
                    }
                    other => panic!("{name} {out}: {other:?}"),
                }
            }
        }
    }
    // Every fixed range is some argument's, and COST's ceiling is the
    // limit's.
    for &r in crate::config::OPTIONS {
        assert!(
            table.iter().any(|a| a.bounds == Bounds::Fixed(r)),
            "{} bounds no argument",
            r.name
        );
    }
    assert_eq!(crate::config::COST.max, crate::config::LIMIT.max);
}

proptest! {
    #[test]
    fn integers_parse_as_the_standard_library_does(v in any::<i64>(), junk in "[-0-9a ]{0,22}") {
        prop_assert_eq!(parse_int("n", v.to_string().as_bytes()), Ok(v));
        let std = junk.parse::<i64>().ok().filter(|n| n.to_string() == junk);
        prop_assert_eq!(parse_int("n", junk.as_bytes()).ok(), std);
    }

    #[test]
    fn grammar_never_panics(args in proptest::collection::vec(
        prop_oneof![
            Just(b"TTL".to_vec()), Just(b"TOKEN".to_vec()), Just(b"LOCKTTL".to_vec()),
            Just(b"NOLOCK".to_vec()), Just(b"rag".to_vec()), Just(b"planner".to_vec()),
            Just(b"AGENT".to_vec()), Just(b"LIMIT".to_vec()), Just(b"WINDOW".to_vec()),
            Just(b"WLIMIT".to_vec()), Just(b"COST".to_vec()), Just(b"60".to_vec()),
            Just(b"WAIT".to_vec()), Just(b"REFRESHAHEAD".to_vec()),
            Just(b"HASHED".to_vec()), Just(keys::prompt_hash(b"p").into_bytes()),
            Just(b"NAME".to_vec()), Just(b"default".to_vec()),
            Just(b"-9223372036854775808".to_vec()), Just(b"{}".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ], 0..9)) {
        let c = cfg();
        let a: Vec<&[u8]> = args.iter().map(|v| v.as_slice()).collect();
        let _ = parse_plan_get(&a, &c);
        let _ = parse_plan_lookup(&a, &c);
        let _ = parse_plan_set(&a, &c);
        let _ = parse_lock(&a, &c);
        let _ = parse_unlock(&a, &c);
        let _ = parse_cache_get(&a);
        let _ = parse_cache_set(&a, &c);
        let _ = parse_key(&a, &c);
        let _ = parse_rate(&a);
        let _ = parse_wbudget(&a, &c);
        let _ = parse_throttle(&a);
        let _ = parse_agent_record(&a);
        let _ = parse_agent_keys(&a);
        let _ = parse_agent_purge(&a);
        let _ = parse_lease_acquire(&a);
        let _ = parse_lease_renew(&a);
        let _ = parse_lease_release(&a);
        if let Some(first) = a.first() {
            let _ = Cursor::decode(first);
        }
    }
}

#[test]
fn summaries_of_arguments() {
    assert_eq!(
        arg_summary("OKOME.LOCK", "TTL").unwrap(),
        "okome.lock-ttl-min to okome.lock-ttl-max ms (each configurable within 100 to \
         60000; the seed's standard: 8000 to 10000), default okome.lock-ttl-default"
    );
    assert_eq!(arg_summary("okome.lock", "token"), None);
    // Every command argument is listed once.
    for (i, a) in ranges().iter().enumerate() {
        assert!(
            !ranges()[..i]
                .iter()
                .any(|b| (b.command, b.arg) == (a.command, a.arg)),
            "{} {} twice",
            a.command,
            a.arg
        );
    }
}

#[test]
fn each_command_declares_what_it_touches() {
    let cfg = Config::default();
    let d = |cmd: &str, a: &[&str]| {
        let v: Vec<&[u8]> = a.iter().map(|s| s.as_bytes()).collect();
        derive(cmd.as_bytes(), &v, &cfg, false)
            .unwrap()
            .unwrap_or_else(|e| panic!("{cmd} {a:?}: {e}"))
    };
    let rate = d(RATE.name, &["a", "5", "60"]);
    assert_eq!(
        rate.group(Access::ReadWrite),
        [b"okome:budget:rate:{a}".to_vec()]
    );
    let peek = d(RATE.name, &["a", "5", "60", "COST", "0"]);
    assert_eq!(
        peek.group(Access::Read),
        [b"okome:budget:rate:{a}".to_vec()]
    );
    assert!(peek.group(Access::ReadWrite).is_empty());
    let lock = d(LOCK.name, &["okome:tools:{v}"]);
    assert_eq!(
        lock.group(Access::Write),
        [b"okome:tools:{v}:lock".to_vec()]
    );
    let plan = format!("okome:planner:m:{{{}}}:t:r", "a".repeat(64));
    let failed = format!("{plan}:failed").into_bytes();
    let get = d(PLAN_LOOKUP.name, &[&plan, "NOLOCK"]);
    assert_eq!(get.iter().count(), 2);
    let get = d(PLAN_LOOKUP.name, &[&plan]);
    assert_eq!(
        get.group(Access::Read),
        [plan.as_bytes().to_vec(), failed.clone()]
    );
    let unlock = d(UNLOCK.name, &[&plan, "t", "FAILED", "10", "boom"]);
    assert_eq!(
        unlock.group(Access::Write),
        [format!("{plan}:lock").into_bytes(), failed]
    );
    assert_eq!(
        get.group(Access::Write),
        [format!("{plan}:lock").into_bytes()]
    );
    let set = d(CACHE_SET.name, &["tools", "v", "{}", "AGENT", "a"]);
    assert_eq!(set.group(Access::Write), [b"okome:tools:{v}".to_vec()]);
    assert_eq!(
        set.group(Access::ReadWrite),
        [b"okome:budget:keys:{a}".to_vec()]
    );
    let rec = d(AGENT_RECORD.name, &["a", "okome:tools:{v}"]);
    assert_eq!(rec.group(Access::ReadWrite).len(), 2);
    let v: Vec<&[u8]> = vec![b"a", b"okome:tools:{v}"];
    let rec = derive(AGENT_RECORD.name.as_bytes(), &v, &cfg, true)
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.group(Access::ReadWrite).len(),
        1,
        "another slot: not declared"
    );
    assert!(derive(KEY.name.as_bytes(), &v, &cfg, false).is_none());
    assert!(
        derive(RATE.name.as_bytes(), &[b"a".as_slice()], &cfg, false)
            .unwrap()
            .is_err()
    );
}
