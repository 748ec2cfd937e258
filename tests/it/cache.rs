//! OKOME.CACHE.GET / OKOME.CACHE.SET for the four non-planner cacheable
//! kinds (key scheme, TTL standards, plain-Redis visibility) and OKOME.KEY
//! for every kind.

use crate::support::*;

use redis::Connection;
use std::time::Duration;

/// `OKOME.CACHE.SET kind parts... value opts...`: the TTL given, in ms.
fn store(c: &mut Connection, kind: &str, parts: &[&str], value: &str, opts: &[&str]) -> i64 {
    cache_set(c, &[&[kind][..], parts, &[value], opts].concat())
}

fn cache_get(c: &mut Connection, kind: &str, parts: &[&str]) -> Option<(String, i64)> {
    redis::cmd("OKOME.CACHE.GET")
        .arg(kind)
        .arg(parts)
        .query(c)
        .unwrap()
}

struct KindCase {
    kind: &'static str,
    parts: &'static [&'static str],
    key: &'static str,
    default_s: i64,
    /// Accepted explicit TTLs.
    ok: &'static [i64],
    /// Refused explicit TTLs.
    bad: &'static [i64],
    min: i64,
    max: i64,
}

const KINDS: &[KindCase] = &[
    KindCase {
        kind: "model_meta",
        parts: &["llama3:8b"],
        key: "okome:model_meta:{llama3%3A8b}",
        default_s: 86_400,
        ok: &[86_400],
        bad: &[86_399, 86_401, 600, 0, -86_400],
        min: 86_400,
        max: 86_400,
    },
    KindCase {
        kind: "rag",
        parts: &["repo", "chunk"],
        key: "okome:rag:{repo}:chunk",
        default_s: 3600,
        ok: &[1800, 1801, 2700, 3599, 3600],
        bad: &[1799, 3601, 0, -1, 600, 86_400],
        min: 1800,
        max: 3600,
    },
    KindCase {
        kind: "tools",
        parts: &["v1.2.3"],
        key: "okome:tools:{v1.2.3}",
        default_s: 600,
        ok: &[600],
        bad: &[599, 601, 30, 0],
        min: 600,
        max: 600,
    },
    KindCase {
        kind: "health",
        parts: &["node-1"],
        key: "okome:health:{node-1}",
        default_s: 30,
        ok: &[30],
        bad: &[29, 31, 1, 0, 600],
        min: 30,
        max: 30,
    },
];

#[test]
fn set_and_get_every_kind_with_its_default_ttl() {
    let s = Server::start();
    let mut c = s.conn();
    for k in KINDS {
        assert_eq!(okome_key(&mut c, k.kind, k.parts), k.key, "{}", k.kind);
        assert_eq!(
            cache_get(&mut c, k.kind, k.parts),
            None,
            "{} absent",
            k.kind
        );

        let value = format!("{{\"kind\":\"{}\",\"n\":[1,2.5,null,true]}}", k.kind);
        let ms = store(&mut c, k.kind, k.parts, &value, &[]);
        assert_eq!(ms, k.default_s * 1000, "{}", k.kind);

        let (v, t) = cache_get(&mut c, k.kind, k.parts).expect("stored");
        assert_eq!(v, value);
        assert_ttl_near(k.kind, t, k.default_s * 1000);

        // Plain Redis sees a plain string under the documented key.
        let plain: String = redis::cmd("GET").arg(k.key).query(&mut c).unwrap();
        assert_eq!(plain, value);
        let ty: String = redis::cmd("TYPE").arg(k.key).query(&mut c).unwrap();
        assert_eq!(ty, "string");
        assert_ttl_near(k.key, pttl(&mut c, k.key), k.default_s * 1000);
        let ttl: i64 = redis::cmd("TTL").arg(k.key).query(&mut c).unwrap();
        assert!(ttl == k.default_s || ttl == k.default_s - 1, "{ttl}");
    }
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.sort();
    let mut want: Vec<&str> = KINDS.iter().map(|k| k.key).collect();
    want.sort();
    assert_eq!(keys, want, "nothing but the four values was written");
    let scanned: Vec<String> = redis::cmd("KEYS").arg("okome:rag:*").query(&mut c).unwrap();
    assert_eq!(scanned, ["okome:rag:{repo}:chunk"]);
}

#[test]
fn explicit_ttls_within_the_standard() {
    let s = Server::start();
    let mut c = s.conn();
    for k in KINDS {
        for &ttl in k.ok {
            let ttl_s = ttl.to_string();
            let value = format!("[{ttl}]");
            let ms = store(&mut c, k.kind, k.parts, &value, &["TTL", &ttl_s]);
            assert_eq!(ms, ttl * 1000, "{} TTL {ttl}", k.kind);
            assert_ttl_near(k.key, pttl(&mut c, k.key), ttl * 1000);
            let (v, t) = cache_get(&mut c, k.kind, k.parts).unwrap();
            assert_eq!(v, value);
            assert_ttl_near(k.kind, t, ttl * 1000);
        }
        // Lowercase option name.
        let top = k.max.to_string();
        let ms = store(&mut c, k.kind, k.parts, "1", &["ttl", &top]);
        assert_eq!(ms, k.max * 1000);
    }
}

#[test]
fn ttls_outside_the_standard_are_refused_and_change_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    for k in KINDS {
        store(&mut c, k.kind, k.parts, "\"old\"", &[]);
    }
    let before = snapshot(&mut c);
    for k in KINDS {
        for &ttl in k.bad {
            let ttl_s = ttl.to_string();
            let mut args: Vec<&[u8]> = vec![b"OKOME.CACHE.SET", k.kind.as_bytes()];
            args.extend(k.parts.iter().map(|p| p.as_bytes()));
            args.extend([&b"\"new\""[..], b"TTL", ttl_s.as_bytes()]);
            let e = err(&mut c, &args);
            assert_eq!(
                e,
                if k.min == k.max {
                    format!("ERR ttl {ttl} is out of range: must be {} seconds", k.min)
                } else {
                    format!(
                        "ERR ttl {ttl} is out of range: must be between {} and {} seconds",
                        k.min, k.max
                    )
                },
                "{}",
                k.kind
            );
        }
        let (v, t) = cache_get(&mut c, k.kind, k.parts).unwrap();
        assert_eq!(v, "\"old\"");
        assert_ttl_near(k.kind, t, k.default_s * 1000);
    }
    assert_eq!(snapshot(&mut c), before);
}

#[test]
fn set_overwrites_value_and_resets_ttl() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(
        store(&mut c, "rag", &["r", "c"], "1", &["TTL", "1800"]),
        1_800_000
    );
    assert_ttl_near("first", pttl(&mut c, "okome:rag:{r}:c"), 1_800_000);
    assert_eq!(store(&mut c, "rag", &["r", "c"], "2", &[]), 3_600_000);
    assert_eq!(
        cache_get(&mut c, "rag", &["r", "c"]).map(|(v, _)| v),
        Some("2".into())
    );
    assert_ttl_near("second", pttl(&mut c, "okome:rag:{r}:c"), 3_600_000);
    assert_eq!(
        store(&mut c, "rag", &["r", "c"], "3", &["TTL", "2000"]),
        2_000_000
    );
    assert_ttl_near("third", pttl(&mut c, "okome:rag:{r}:c"), 2_000_000);

    // A plain string written without a TTL gets one when okome overwrites it.
    let _: () = redis::cmd("SET")
        .arg("okome:tools:{v1}")
        .arg("legacy")
        .query(&mut c)
        .unwrap();
    assert_eq!(pttl(&mut c, "okome:tools:{v1}"), -1);
    assert_eq!(store(&mut c, "tools", &["v1"], "{}", &[]), 600_000);
    assert_ttl_near("tools", pttl(&mut c, "okome:tools:{v1}"), 600_000);
    assert_eq!(
        cache_get(&mut c, "tools", &["v1"]).map(|(v, _)| v),
        Some("{}".into())
    );
}

#[test]
fn values_are_stored_byte_for_byte() {
    let s = Server::start();
    let mut c = s.conn();
    for (i, v) in [
        "null",
        "true",
        "0",
        "-1.5e-3",
        "\"\"",
        "\"caf\u{e9} \u{1f600} \\u00e9 \\n\"",
        "  {\"a\" : [ 1 , { } ] }\n",
        "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
        "{\"a\":1,\"a\":2}",
    ]
    .iter()
    .enumerate()
    {
        let part = format!("v{i}");
        assert_eq!(store(&mut c, "tools", &[&part], v, &[]), 600_000);
        let (got, _) = cache_get(&mut c, "tools", &[&part]).unwrap();
        assert_eq!(&got, v);
        let plain: String = redis::cmd("GET")
            .arg(format!("okome:tools:{{{part}}}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(&plain, v);
    }
}

#[test]
fn components_are_escaped_and_tuples_never_collide() {
    let s = Server::start();
    let mut c = s.conn();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "model_meta",
            &["llama3:8b"],
            "okome:model_meta:{llama3%3A8b}",
        ),
        (
            "model_meta",
            &["hf.co/org/Model-7B_v2+q4@x=1"],
            "okome:model_meta:{hf.co/org/Model-7B_v2+q4@x=1}",
        ),
        ("rag", &["a:b", "c"], "okome:rag:{a%3Ab}:c"),
        ("rag", &["a", "b:c"], "okome:rag:{a}:b%3Ac"),
        (
            "rag",
            &["my repo", "*?[]{}"],
            "okome:rag:{my%20repo}:%2A%3F%5B%5D%7B%7D",
        ),
        ("tools", &["100%"], "okome:tools:{100%25}"),
        ("tools", &["100%25"], "okome:tools:{100%2525}"),
        ("health", &["n\r\n1"], "okome:health:{n%0D%0A1}"),
        ("health", &["caf\u{e9}"], "okome:health:{caf%C3%A9}"),
    ];
    for (i, (kind, parts, key)) in cases.iter().enumerate() {
        assert_eq!(&okome_key(&mut c, kind, parts), key);
        let value = i.to_string();
        store(&mut c, kind, parts, &value, &[]);
        let plain: String = redis::cmd("GET").arg(*key).query(&mut c).unwrap();
        assert_eq!(plain, value, "{key}");
    }
    // Each tuple kept its own value: no two shared a key.
    for (i, (kind, parts, _)) in cases.iter().enumerate() {
        assert_eq!(
            cache_get(&mut c, kind, parts).map(|(v, _)| v),
            Some(i.to_string())
        );
    }
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n as usize, cases.len());
}

#[test]
fn kinds_are_case_insensitive() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(store(&mut c, "RAG", &["r", "c"], "1", &[]), 3_600_000);
    assert_eq!(
        cache_get(&mut c, "rag", &["r", "c"]).map(|(v, _)| v),
        Some("1".into())
    );
    assert_eq!(
        cache_get(&mut c, "Rag", &["r", "c"]).map(|(v, _)| v),
        Some("1".into())
    );
    assert_eq!(
        okome_key(&mut c, "Model_Meta", &["m"]),
        "okome:model_meta:{m}"
    );
    assert_eq!(okome_key(&mut c, "HEALTH", &["n"]), "okome:health:{n}");
    // Components are not case-folded.
    assert_eq!(cache_get(&mut c, "rag", &["R", "c"]), None);
}

#[test]
fn get_of_absent_or_expired_is_nil() {
    let s = Server::start();
    let mut c = s.conn();
    for k in KINDS {
        assert_eq!(cache_get(&mut c, k.kind, k.parts), None);
    }
    store(&mut c, "health", &["n"], "{\"up\":true}", &[]);
    let _: i64 = redis::cmd("PEXPIRE")
        .arg("okome:health:{n}")
        .arg(20)
        .query(&mut c)
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(cache_get(&mut c, "health", &["n"]), None);
    // A plan is not reachable through CACHE.GET of another kind.
    let m = plan_get(&mut c, &["m", "p", "t", "r", "NOLOCK"]);
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&m.key)
        .arg("{}")
        .query(&mut c)
        .unwrap();
    assert_eq!(cache_get(&mut c, "tools", &["t"]), None);
    assert_eq!(cache_get(&mut c, "model_meta", &["m"]), None);
    // CACHE.GET writes nothing.
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn key_command_for_every_kind() {
    let s = Server::start();
    let mut c = s.conn();
    let prompt = "Create a plan for X";
    assert_eq!(
        okome_key(
            &mut c,
            "planner",
            &["llama3:8b", prompt, "v1.2.3", "abc123"]
        ),
        format!(
            "okome:planner:llama3%3A8b:{{{}}}:v1.2.3:abc123",
            sha256_hex(prompt)
        )
    );
    // The prompt is hashed, not escaped: any bytes and length give 64 hex.
    let long = "x:y ".repeat(10_000);
    assert_eq!(
        okome_key(&mut c, "planner", &["m", &long, "t", "r"]),
        format!("okome:planner:m:{{{}}}:t:r", sha256_hex(&long))
    );
    // sha256("abc") as a known answer.
    assert_eq!(
        okome_key(&mut c, "planner", &["m", "abc", "t", "r"]),
        "okome:planner:m:{ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad}:t:r"
    );
    // Same key as PLAN.GET's.
    let m = plan_get(&mut c, &["llama3:8b", prompt, "v1.2.3", "abc123", "NOLOCK"]);
    assert_eq!(
        m.key,
        okome_key(
            &mut c,
            "planner",
            &["llama3:8b", prompt, "v1.2.3", "abc123"]
        )
    );

    for (kind, parts, want) in [
        ("model_meta", &["gpt-4"][..], "okome:model_meta:{gpt-4}"),
        ("rag", &["repo", "chunk"][..], "okome:rag:{repo}:chunk"),
        ("tools", &["7"][..], "okome:tools:{7}"),
        ("health", &["n1"][..], "okome:health:{n1}"),
        ("rate", &["a:b"][..], "okome:budget:rate:{a%3Ab}"),
        ("write", &["a:b"][..], "okome:budget:write:{a%3Ab}"),
        ("rate", &["agent-7"][..], "okome:budget:rate:{agent-7}"),
        ("WRITE", &["agent 7"][..], "okome:budget:write:{agent%207}"),
    ] {
        assert_eq!(okome_key(&mut c, kind, parts), want, "{kind} {parts:?}");
    }

    // OKOME.KEY touches no data (and PLAN.GET NOLOCK wrote nothing either).
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn key_matches_what_cache_set_writes() {
    let s = Server::start();
    let mut c = s.conn();
    for k in KINDS {
        let key = okome_key(&mut c, k.kind, k.parts);
        store(&mut c, k.kind, k.parts, "42", &[]);
        let v: Option<String> = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v.as_deref(), Some("42"), "{key}");
        // And it is lockable with OKOME.LOCK.
        let tok: Option<String> = redis::cmd("OKOME.LOCK").arg(&key).query(&mut c).unwrap();
        assert!(tok.is_some(), "{key}");
    }
}
