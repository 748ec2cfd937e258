//! Bad input to `OKOME.LOCK` and `OKOME.UNLOCK`: every case gets an error
//! reply that names the problem, writes nothing and leaves the server
//! answering PING (the case table is in `tests/it/support/errors.rs`).

use crate::support::errors::*;

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
            "ERR token must not be empty",
        ),
        exact(
            &[b"OKOME.LOCK", kb, b"TTL", b"9000", b"TOKEN", b""],
            "ERR token must not be empty",
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
            "kind 'rag' has 2 components (repo, chunk_hash), found 3",
        ),
    ));
    cases.push(exact(
        &[b"OKOME.LOCK", b"okome:tools:{v1}:lock"],
        not_okome(
            "okome:tools:{v1}:lock",
            "kind 'tools' has 1 component (tool_version), found 2",
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
        exact(
            &[b"OKOME.UNLOCK", kb, b"t", b"x"],
            "ERR syntax error: unknown option 'x' (expected: FAILED ms [message])",
        ),
        exact(
            &[b"OKOME.UNLOCK", kb, b"TOKEN", b"t"],
            "ERR syntax error: unknown option 't' (expected: FAILED ms [message])",
        ),
        exact(
            &[b"OKOME.UNLOCK", kb, b"t", b"FAILED"],
            "ERR syntax error: option FAILED needs a value",
        ),
        exact(
            &[b"OKOME.UNLOCK", kb, b"t", b"FAILED", b"x"],
            "ERR ms is not an integer or out of range",
        ),
        exact(
            &[b"OKOME.UNLOCK", kb, b"t", b"FAILED", b"-1"],
            range("ms", "-1", 0, 60_000, "ms"),
        ),
        exact(
            &[b"OKOME.UNLOCK", kb, b"t", b"FAILED", b"1", b"m", b"extra"],
            "ERR syntax error: FAILED takes ms and at most one message (quote a message with spaces)",
        ),
        exact(
            &[b"OKOME.UNLOCK", b"okome:rag:{r}:c", b"t", b"FAILED", b"1"],
            "ERR 'okome:rag:{r}:c' is not a planner key: FAILED answers the waiters and \
             lookups of a plan (OKOME.PLAN.GET); other keys are released with OKOME.UNLOCK key token",
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
                "kind 'rag' has 2 components (repo, chunk_hash), found 3",
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
