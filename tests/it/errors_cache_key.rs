//! Bad input to `OKOME.CACHE.GET`, `OKOME.CACHE.SET` and `OKOME.KEY`: every
//! case gets an error reply that names the problem, writes nothing and leaves
//! the server answering PING (the case table is in `tests/it/support/errors.rs`).
//! And key components that are arbitrary bytes: escaped, never an error.

use crate::support::errors::*;
use crate::support::*;

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
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"tools", b"v1", b"TTL", b"600"],
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 3",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"rag", b"r"],
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"rag", b"r", b"c", b"d"],
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 3",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"model_meta", b"a", b"b"],
            "ERR syntax error: kind 'model_meta' takes 1 part (model), got 2",
        ),
        exact(
            &[b"OKOME.CACHE.GET", b"health", b"a", b"b"],
            "ERR syntax error: kind 'health' takes 1 part (node), got 2",
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
        // The parts and the value are the arguments before the first
        // option: too few or too many parts are named as such.
        exact(
            &[b"OKOME.CACHE.SET", b"rag", b"r", b"{}"],
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1",
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
        exact(
            &[b"OKOME.CACHE.SET", b"tools", b"v1", b"x", b"{}"],
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2",
        ),
        exact(
            &[
                b"OKOME.CACHE.SET",
                b"tools",
                b"v1",
                b"x",
                b"{}",
                b"TTL",
                b"600",
            ],
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2",
        ),
        // An option keyword is never a part (it would make okome:tools:{TTL}).
        exact(
            &[b"OKOME.CACHE.SET", b"rag", b"r", b"agent", b"{}"],
            "ERR syntax error: chunk_hash cannot be 'agent': TTL and AGENT are the options \
             of OKOME.CACHE.SET (OKOME.CACHE.SET rag repo chunk_hash value_json [TTL s] \
             [AGENT id])",
        ),
        // After a JSON value, a stray word is an unknown option.
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
        cases.extend(json_cases(
            "value_json",
            parts,
            &[b"TTL", good_ttl.as_bytes()],
        ));
    }
    cases.extend(json_cases(
        "value_json",
        &[b"OKOME.CACHE.SET", b"tools", b"v1"],
        &[],
    ));
    let mut big = vec![b'"'];
    big.resize(LIMIT, b'a');
    big.push(b'"');
    cases.push(exact(
        &[b"OKOME.CACHE.SET", b"rag", b"r", b"c", &big],
        format!(
            "ERR value_json is {} bytes, larger than the {LIMIT}-byte limit (okome.max-value-bytes)",
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

#[test]
fn key_errors() {
    let (_s, mut c) = seeded();
    let mut cases = vec![
        exact(&[b"OKOME.KEY"], arity("okome.key")),
        exact(&[b"OKOME.KEY", b"tools"], arity("okome.key")),
        exact(&[b"OKOME.KEY", b"planner"], arity("okome.key")),
        exact(
            &[b"OKOME.KEY", b"planner", b"m", b"p", b"t"],
            planner_parts(3),
        ),
        exact(
            &[b"OKOME.KEY", b"planner", b"m", b"p", b"t", b"r", b"x"],
            planner_parts(5),
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
            planner_parts(6),
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
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2",
        ),
        exact(
            &[b"OKOME.KEY", b"rag", b"a"],
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1",
        ),
        exact(
            &[b"OKOME.KEY", b"rate", b"a", b"b"],
            "ERR syntax error: kind 'rate' takes 1 part (agent), got 2",
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
        cases.push(exact(&[b"OKOME.KEY", kind, b"x"], unknown_kind(shown)));
    }
    run(&mut c, &cases);
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
    let r: StoredReply = redis::cmd("OKOME.PLAN.SET")
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
