//! A seeded hostile-input loop: random and almost-well-formed commands; the
//! server answers every one, stays up, and keeps its keyspace to okome keys
//! with TTLs (`OKOME_FUZZ_SEED` / `OKOME_FUZZ_ITERS` replay or lengthen a
//! run).

use crate::support::errors::*;
use crate::support::*;

use redis::Connection;
use std::collections::HashSet;

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
fn random_arg(rng: &mut Xorshift64, words: &[Vec<u8>], tokens: &[Vec<u8>]) -> Vec<u8> {
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
    rng: &mut Xorshift64,
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
    rng: &mut Xorshift64,
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
    let comp = |rng: &mut Xorshift64| rng.pick(&comps).to_vec();
    let num = |rng: &mut Xorshift64| rng.pick(&nums).as_bytes().to_vec();
    let tok = |rng: &mut Xorshift64| rng.pick(tokens).clone();
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
        let at = 1 + rng.below(a.len() as u64) as usize;
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
    let seed: u64 = env_number("OKOME_FUZZ_SEED")
        .filter(|&s| s != 0)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let iters: usize = env_number("OKOME_FUZZ_ITERS").unwrap_or(8000);
    let mut rng = Xorshift64(seed);
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
