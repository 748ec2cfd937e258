//! The `okome.*` module configs against real servers: defaults, `loadmodule`
//! arguments, redis.conf lines, `CONFIG SET` with its consistency check and
//! rollback, `CONFIG REWRITE` (shared helpers in `tests/it/support/ops.rs`).

use crate::support::ops::*;
use crate::support::*;

use std::path::{Path, PathBuf};

/// A redis.conf that loads the module, followed by `extra` lines.
fn write_conf(dir: &Path, extra: &str) -> PathBuf {
    let conf = dir.join("redis.conf");
    let text = format!(
        "loadmodule {}\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly no\n{extra}",
        module_path().display()
    );
    std::fs::write(&conf, text).expect("write redis.conf");
    conf
}

#[test]
fn config_get_lists_every_tunable_with_its_default() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(config_get(&mut c, "okome.*"), default_configs());
    for (name, v) in DEFAULTS {
        assert_eq!(config_one(&mut c, &format!("okome.{name}")), v, "{name}");
    }
    // Unknown names are Redis's own error.
    assert!(config_get(&mut c, "okome.nope").is_empty());
    let e = config_set(&mut c, &["okome.nope", "1"]).unwrap_err();
    assert!(e.starts_with("ERR Unknown option"), "{e}");
}

#[test]
fn loadmodule_arguments_set_configs_and_behaviour() {
    let s = Server::start_full(
        &[],
        &["planner-ttl-default", "900", "okome.write-window", "30"],
    );
    let mut c = s.conn();
    let mut want = default_configs();
    want.insert("okome.planner-ttl-default".into(), "900".into());
    want.insert("okome.write-window".into(), "30".into());
    assert_eq!(config_get(&mut c, "okome.*"), want);

    let key = okome_key(&mut c, "planner", &["m", "p", "t", "r"]);
    assert_eq!(
        plan_set(&mut c, &[&key, "{}"]),
        ("STORED".into(), Some(900_000), None, 0)
    );
    let pttl = pttl(&mut c, &key);
    assert!((899_000..=900_000).contains(&pttl), "{pttl}");

    let (allowed, remaining, retry, reset): (i64, i64, i64, i64) = redis::cmd("OKOME.WBUDGET")
        .arg(&["a", "5"])
        .query(&mut c)
        .unwrap();
    assert_eq!((allowed, remaining, retry), (1, 4, 0));
    assert!((29_000..=30_000).contains(&reset), "30 s window: {reset}");
}

#[test]
fn inconsistent_or_unknown_loadmodule_arguments_abort_the_start() {
    let module = module_path().display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["planner-ttl-default", "9999"],
            "okome.planner-ttl-min <= okome.planner-ttl-default <= okome.planner-ttl-max must hold, got 300 / 9999 / 900",
        ),
        (&["nope", "1"], "unknown config 'okome.nope'"),
        (
            &["write-window", "0"],
            "okome.write-window 0 is out of range",
        ),
        (
            &["lock-ttl-max"],
            "module argument 'okome.lock-ttl-max' needs a value",
        ),
    ];
    for (module_args, message) in cases {
        let dir = TempDir::new();
        let mut args = vec!["--loadmodule".to_string(), module.clone()];
        args.extend(module_args.iter().map(|s| s.to_string()));
        let r = start_must_fail(dir.path(), &args, true);
        let (status, out) = (r.status, r.stdout + &r.stderr);
        assert!(!status.success(), "{module_args:?}: {status:?}\n{out}");
        assert!(
            out.contains(message),
            "{module_args:?}: the output names the problem ({message}):\n{out}"
        );
    }
}

#[test]
fn redis_conf_lines_set_configs() {
    let dir = TempDir::new();
    let conf = write_conf(dir.path(), "okome.rag-ttl-default 1800\n");
    let s = ConfServer::start(dir.path(), &conf);
    let mut c = s.conn();
    let mut want = default_configs();
    want.insert("okome.rag-ttl-default".into(), "1800".into());
    assert_eq!(config_get(&mut c, "okome.*"), want);
    let ttl = cache_set(&mut c, &["rag", "r", "c", "{}"]);
    assert_eq!(ttl, 1_800_000);
    let pttl = pttl(&mut c, "okome:rag:{r}:c");
    assert!((1_799_000..=1_800_000).contains(&pttl), "{pttl}");
}

#[test]
fn an_inconsistent_redis_conf_aborts_the_start() {
    let dir = TempDir::new();
    let conf = write_conf(dir.path(), "okome.planner-ttl-default 9999\n");
    let args = vec![conf.display().to_string()];
    let r = start_must_fail(dir.path(), &args, true);
    let (status, out) = (r.status, r.stdout + &r.stderr);
    assert!(!status.success(), "{status:?}\n{out}");
    assert!(
        out.contains("okome.planner-ttl-min <= okome.planner-ttl-default"),
        "{out}"
    );
}

#[test]
fn config_set_changes_behaviour_at_runtime() {
    let s = Server::start();
    let mut c = s.conn();

    // Largest prompt (a memory config: accepts units).
    config_set(&mut c, &["okome.max-prompt-bytes", "1kb"]).unwrap();
    assert_eq!(config_one(&mut c, "okome.max-prompt-bytes"), "1024");
    let ok = "x".repeat(1024);
    let m = plan_get(&mut c, &["m", &ok, "t", "r", "NOLOCK"]);
    assert_eq!(m.status, "MISS");
    let big = "x".repeat(1025);
    let want = "ERR prompt is 1025 bytes, larger than the 1024-byte limit (okome.max-prompt-bytes)";
    assert_eq!(
        err(
            &mut c,
            &[b"OKOME.PLAN.GET", b"m", big.as_bytes(), b"t", b"r"]
        ),
        want
    );
    assert_eq!(
        err(
            &mut c,
            &[b"OKOME.KEY", b"planner", b"m", big.as_bytes(), b"t", b"r"]
        ),
        want
    );

    // Largest value.
    config_set(&mut c, &["okome.max-value-bytes", "10"]).unwrap();
    assert_eq!(
        err(
            &mut c,
            &[b"OKOME.CACHE.SET", b"tools", b"v", b"\"123456789\""]
        ),
        "ERR value_json is 11 bytes, larger than the 10-byte limit (okome.max-value-bytes)"
    );
    let ttl = cache_set(&mut c, &["tools", "v", "\"12345678\""]);
    assert_eq!(ttl, 600_000);

    // Default lock TTL.
    config_set(&mut c, &["okome.lock-ttl-default", "8500"]).unwrap();
    let m = plan_get(&mut c, &["m", "lock", "t", "r"]);
    assert_eq!((m.status.as_str(), m.ms), ("MISS", Some(8500)));
    let lock_ttl = pttl(&mut c, &format!("{}:lock", m.key));
    assert!((8400..=8500).contains(&lock_ttl), "{lock_ttl}");
    let t = redis::cmd("OKOME.LOCK")
        .arg("okome:tools:{v9}")
        .query::<String>(&mut c)
        .unwrap();
    assert_eq!(t.len(), 32);
    let lock_ttl = pttl(&mut c, "okome:tools:{v9}:lock");
    assert!(
        (8400..=8500).contains(&lock_ttl),
        "OKOME.LOCK too: {lock_ttl}"
    );

    // Default REFRESHAHEAD, used when the option is absent.
    let key = okome_key(&mut c, "planner", &["m", "refresh", "t", "r"]);
    assert_eq!(plan_set(&mut c, &[&key, "{}", "TTL", "300"]).0, "STORED");
    let h = plan_get(&mut c, &["m", "refresh", "t", "r"]);
    assert_eq!(h.status, "HIT", "refresh-ahead is off by default");
    config_set(&mut c, &["okome.refresh-ahead-ms", "900000"]).unwrap();
    let r = plan_get(&mut c, &["m", "refresh", "t", "r"]);
    assert_eq!(r.status, "REFRESH", "{r:?}");
    assert!(r.token.is_some());
    let h = plan_get(&mut c, &["m", "refresh", "t", "r"]);
    assert_eq!(h.status, "HIT", "one refresher only");
    // An explicit REFRESHAHEAD 0 still turns it off.
    let key2 = okome_key(&mut c, "planner", &["m", "refresh2", "t", "r"]);
    plan_set(&mut c, &[&key2, "{}", "TTL", "300"]);
    let h = plan_get(&mut c, &["m", "refresh2", "t", "r", "REFRESHAHEAD", "0"]);
    assert_eq!(h.status, "HIT");

    // Bounds: a default outside min..max is refused and rolled back.
    let e = config_set(&mut c, &["okome.planner-ttl-default", "1000"]).unwrap_err();
    assert!(e.starts_with("ERR "), "{e}");
    assert!(
        e.contains("okome.planner-ttl-min <= okome.planner-ttl-default <= okome.planner-ttl-max"),
        "{e}"
    );
    assert_eq!(config_one(&mut c, "okome.planner-ttl-default"), "600");
    let k = okome_key(&mut c, "planner", &["m", "bounds", "t", "r"]);
    assert_eq!(plan_set(&mut c, &[&k, "{}"]).1, Some(600_000));
    let e = config_set(&mut c, &["okome.lock-ttl-max", "8000"]).unwrap_err();
    assert!(
        e.contains("okome.lock-ttl-min <= okome.lock-ttl-default <= okome.lock-ttl-max"),
        "{e}"
    );
    assert_eq!(config_one(&mut c, "okome.lock-ttl-max"), "10000");

    // Raising the max and the default together is consistent.
    config_set(
        &mut c,
        &[
            "okome.planner-ttl-max",
            "1200",
            "okome.planner-ttl-default",
            "1000",
        ],
    )
    .unwrap();
    assert_eq!(config_one(&mut c, "okome.planner-ttl-default"), "1000");
    assert_eq!(config_one(&mut c, "okome.planner-ttl-max"), "1200");
    assert_eq!(plan_set(&mut c, &[&k, "{}"]).1, Some(1_000_000));
    assert_eq!(
        plan_set(&mut c, &[&k, "{}", "TTL", "1200"]).1,
        Some(1_200_000)
    );

    // Outside the hard range of the config itself.
    let e = config_set(&mut c, &["okome.lock-ttl-min", "50"]).unwrap_err();
    assert!(e.contains("between 100 and 60000"), "{e}");
    assert_eq!(config_one(&mut c, "okome.lock-ttl-min"), "8000");
    let e = config_set(&mut c, &["okome.write-window", "-1"]).unwrap_err();
    assert!(e.starts_with("ERR "), "{e}");
    assert_eq!(config_one(&mut c, "okome.write-window"), "60");
}

#[test]
fn config_rewrite_keeps_okome_configs_across_a_restart() {
    let dir = TempDir::new();
    let conf = write_conf(dir.path(), "");
    {
        let s = ConfServer::start(dir.path(), &conf);
        let mut c = s.conn();
        config_set(
            &mut c,
            &[
                "okome.tools-ttl-max",
                "900",
                "okome.tools-ttl-default",
                "900",
            ],
        )
        .unwrap();
        let ok: String = redis::cmd("CONFIG")
            .arg("REWRITE")
            .query(&mut c)
            .expect("CONFIG REWRITE");
        assert_eq!(ok, "OK");
    }
    let text = std::fs::read_to_string(&conf).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"okome.tools-ttl-default 900"),
        "rewritten file:\n{text}"
    );
    assert!(
        lines.contains(&"okome.tools-ttl-max 900"),
        "rewritten file:\n{text}"
    );
    let s = ConfServer::start(dir.path(), &conf);
    let mut c = s.conn();
    let mut want = default_configs();
    want.insert("okome.tools-ttl-default".into(), "900".into());
    want.insert("okome.tools-ttl-max".into(), "900".into());
    assert_eq!(config_get(&mut c, "okome.*"), want);
    let ttl = cache_set(&mut c, &["tools", "v1", "{}"]);
    assert_eq!(ttl, 900_000);
}
