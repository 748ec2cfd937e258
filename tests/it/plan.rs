//! The planner flow against a real server: MISS + lock, LOCKED, PLAN.SET with
//! the token, HIT; the key scheme; TTL standards.

use crate::support::*;

#[test]
fn miss_then_set_with_token_then_hit() {
    let s = Server::start();
    let mut c = s.conn();
    let a = ["llama3:8b", "Create a plan for X", "v1.2.3", "abc123"];
    let miss = plan_get(&mut c, &a);
    let key = format!(
        "okome:planner:llama3%3A8b:{{{}}}:v1.2.3:abc123",
        sha256_hex("Create a plan for X")
    );
    assert_eq!(miss.status, "MISS");
    assert_eq!(miss.key, key);
    assert_eq!(miss.value, None);
    assert_eq!(miss.ms, Some(9000));
    let token = miss.token.clone().expect("a token on MISS");
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(miss.rate_remaining, None);

    let lock_ttl = pttl(&mut c, &format!("{key}:lock"));
    assert!((8000..=9000).contains(&lock_ttl), "{lock_ttl}");

    let locked = plan_get(&mut c, &a);
    assert_eq!(locked.status, "LOCKED");
    assert_eq!(locked.token, None);
    assert!(
        matches!(locked.ms, Some(m) if (8000..=9000).contains(&m)),
        "{locked:?}"
    );

    let set: (String, i64, Option<i64>, i64) = redis::cmd("OKOME.PLAN.SET")
        .arg(&key)
        .arg(r#"{"steps":["a","b"]}"#)
        .arg("TOKEN")
        .arg(&token)
        .query(&mut c)
        .unwrap();
    assert_eq!(set, ("STORED".into(), 600_000, None, 1));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{key}:lock"))
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0, "the lock is released");

    let hit = plan_get(&mut c, &a);
    assert_eq!(hit.status, "HIT");
    assert_eq!(hit.value.as_deref(), Some(r#"{"steps":["a","b"]}"#));
    assert!(
        matches!(hit.ms, Some(m) if (599_000..=600_000).contains(&m)),
        "{hit:?}"
    );
    assert_eq!(hit.token, None);

    // Plain Redis sees a plain string with its TTL.
    let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    assert_eq!(v, r#"{"steps":["a","b"]}"#);
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut c).unwrap();
    assert!((599..=600).contains(&ttl));
}

#[test]
fn nolock_and_lockttl() {
    let s = Server::start();
    let mut c = s.conn();
    let m = plan_get(&mut c, &["m", "p", "t", "r", "NOLOCK"]);
    assert_eq!((m.status.as_str(), m.ms, m.token), ("MISS", None, None));
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(keys.is_empty(), "NOLOCK takes no lock: {keys:?}");
    let m = plan_get(&mut c, &["m", "p", "t", "r", "locKTTL", "8000"]);
    assert_eq!((m.status.as_str(), m.ms), ("MISS", Some(8000)));
    let pttl = pttl(&mut c, &format!("{}:lock", m.key));
    assert!((7900..=8000).contains(&pttl), "{pttl}");
}

#[test]
fn plan_set_ttl_standard_and_stale_token() {
    let s = Server::start();
    let mut c = s.conn();
    let key = okome_key(&mut c, "planner", &["m", "p", "t", "r"]);
    let r = plan_store(
        &mut c,
        &[key.as_str(), "{}", "TTL", "300", "TOKEN", "not-the-holder"],
    );
    assert_eq!(r, ("STORED".into(), 300_000, None, 0));
    let pttl = pttl(&mut c, &key);
    assert!((299_000..=300_000).contains(&pttl));
    for bad in ["299", "901", "0", "-1", "x", "99999999999999999999"] {
        let e = err(
            &mut c,
            &[
                b"OKOME.PLAN.SET",
                key.as_bytes(),
                b"{}",
                b"TTL",
                bad.as_bytes(),
            ],
        );
        assert!(e.starts_with("ERR ttl"), "{bad}: {e}");
    }
}

#[test]
fn a_held_lock_is_not_released_by_another_token() {
    let s = Server::start();
    let mut c = s.conn();
    let m = plan_get(&mut c, &["m", "p", "t", "r"]);
    let r = plan_store(
        &mut c,
        &[
            m.key.as_str(),
            "1",
            "TOKEN",
            "0123456789abcdef0123456789abcdef",
        ],
    );
    assert_eq!(r.3, 0);
    let holder: String = redis::cmd("GET")
        .arg(format!("{}:lock", m.key))
        .query(&mut c)
        .unwrap();
    assert_eq!(Some(holder), m.token);
}

#[test]
fn prompt_is_hashed_by_the_server_and_components_escaped() {
    let s = Server::start();
    let mut c = s.conn();
    let m = plan_get(&mut c, &["a b*c", "x", "{t}", "r?[", "NOLOCK"]);
    assert_eq!(
        m.key,
        format!(
            "okome:planner:a%20b%2Ac:{{{}}}:%7Bt%7D:r%3F%5B",
            sha256_hex("x")
        )
    );
    // Different tuples never share a key.
    let k1 = okome_key(&mut c, "planner", &["a:b", "p", "c", "d"]);
    let k2 = okome_key(&mut c, "planner", &["a", "p", "b:c", "d"]);
    assert_ne!(k1, k2);
}

#[test]
fn plan_lookup_is_plan_get_by_key() {
    let s = Server::start();
    let mut c = s.conn();
    let key = okome_key(
        &mut c,
        "planner",
        &["llama3:8b", "a prompt", "v1", "abc123"],
    );
    let lookup = |c: &mut redis::Connection, extra: &[&str]| -> Plan {
        plan_lookup(c, &[&[key.as_str()][..], extra].concat())
    };
    let m = lookup(&mut c, &["AGENT", "a", "LIMIT", "5", "WINDOW", "60"]);
    assert_eq!(
        (m.status.as_str(), m.key.as_str(), m.ms, m.rate_remaining),
        ("MISS", key.as_str(), Some(9000), Some(4))
    );
    // The argument form and the key form are the same plan and lock.
    let l = plan_get(&mut c, &["llama3:8b", "a prompt", "v1", "abc123"]);
    assert_eq!(
        (l.status.as_str(), l.key.as_str()),
        ("LOCKED", key.as_str())
    );
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&[&key, "[1]", "TOKEN", m.token.as_deref().unwrap()])
        .query(&mut c)
        .unwrap();
    let h = lookup(&mut c, &[]);
    assert_eq!(
        (h.status.as_str(), h.value.as_deref()),
        ("HIT", Some("[1]"))
    );
    for (bad, want) in [
        (
            &b"okome:tools:{v1}"[..],
            "ERR 'okome:tools:{v1}' is a tools key, not a planner key",
        ),
        (
            b"nope",
            "ERR 'nope' is not an okome key: it must start with 'okome:'",
        ),
    ] {
        assert_eq!(err(&mut c, &[b"OKOME.PLAN.LOOKUP", bad]), want);
    }
    assert_eq!(
        err(&mut c, &[b"OKOME.PLAN.LOOKUP"]),
        "ERR wrong number of arguments for 'okome.plan.lookup' command"
    );
}

/// Issue 14: `HASHED` — the client sends the prompt's SHA-256 instead of the
/// prompt; the server checks it, builds the same key, takes the same lock
/// and serves the same plan, and hashes nothing.
#[test]
fn a_client_hashed_prompt_is_the_same_plan() {
    let s = Server::start();
    let mut c = s.conn();
    let prompt = "Plan the thing, with 16 KB of retrieved context: ".repeat(300);
    let hash = sha256_hex(&prompt);
    let plain = ["llama3:8b", prompt.as_str(), "v1", "repo"];
    let hashed = ["llama3:8b", hash.as_str(), "v1", "repo", "HASHED"];
    let key = okome_key(&mut c, "planner", &plain);
    let key_hashed = okome_key(&mut c, "planner", &hashed);
    assert_eq!(key_hashed, key);
    assert_eq!(key, format!("okome:planner:llama3%3A8b:{{{hash}}}:v1:repo"));
    // A miss takes the lock; the plain form then sees it held.
    let miss = plan_get(&mut c, &hashed);
    assert_eq!(
        (miss.status.as_str(), miss.key.as_str()),
        ("MISS", key.as_str())
    );
    assert_eq!(plan_get(&mut c, &plain).status, "LOCKED");
    let _: redis::Value = redis::cmd("OKOME.PLAN.SET")
        .arg(&[&key, "{\"p\":1}", "TOKEN", miss.token.as_deref().unwrap()])
        .query(&mut c)
        .unwrap();
    for args in [&plain[..], &hashed[..]] {
        let hit = plan_get(&mut c, args);
        assert_eq!(hit.status, "HIT");
        assert_eq!(hit.value.as_deref(), Some("{\"p\":1}"));
    }
    // With options after the flag, lowercase too.
    let mut opts = hashed.to_vec();
    opts[4] = "hashed";
    opts.extend(["AGENT", "a", "LIMIT", "5", "WINDOW", "60", "NOLOCK"]);
    let hit = plan_get(&mut c, &opts);
    assert_eq!((hit.status.as_str(), hit.rate_remaining), ("HIT", Some(4)));
}
