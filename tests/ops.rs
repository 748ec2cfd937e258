//! Operations against real servers: the `okome.*` module configs (defaults,
//! `loadmodule` arguments, redis.conf lines, `CONFIG SET` with its
//! consistency check and rollback, `CONFIG REWRITE`), the `INFO okome`
//! counters under a known workload, `COMMAND DOCS` / `COMMAND INFO` /
//! `COMMAND GETKEYSANDFLAGS`, and the README and redis.conf.example agreeing
//! with the server.

mod common;
use common::*;

use redis::{Connection, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// Every tunable of `okome_core::config::params()` with its default.
const DEFAULTS: [(&str, &str); 23] = [
    ("planner-ttl-min", "300"),
    ("planner-ttl-default", "600"),
    ("planner-ttl-max", "900"),
    ("model-meta-ttl-min", "86400"),
    ("model-meta-ttl-default", "86400"),
    ("model-meta-ttl-max", "86400"),
    ("rag-ttl-min", "1800"),
    ("rag-ttl-default", "3600"),
    ("rag-ttl-max", "3600"),
    ("tools-ttl-min", "600"),
    ("tools-ttl-default", "600"),
    ("tools-ttl-max", "600"),
    ("health-ttl-min", "30"),
    ("health-ttl-default", "30"),
    ("health-ttl-max", "30"),
    ("lock-ttl-min", "8000"),
    ("lock-ttl-default", "9000"),
    ("lock-ttl-max", "10000"),
    ("write-window", "60"),
    ("max-prompt-bytes", "4194304"),
    ("max-value-bytes", "4194304"),
    ("refresh-ahead-ms", "0"),
    ("ledger-max-keys", "1000"),
];

/// The defaults as `CONFIG GET okome.*` shows them.
fn default_configs() -> BTreeMap<String, String> {
    DEFAULTS
        .iter()
        .map(|(n, v)| (format!("okome.{n}"), v.to_string()))
        .collect()
}

fn config_get(c: &mut Connection, pattern: &str) -> BTreeMap<String, String> {
    redis::cmd("CONFIG")
        .arg("GET")
        .arg(pattern)
        .query(c)
        .expect("CONFIG GET")
}

fn config_one(c: &mut Connection, name: &str) -> String {
    let m = config_get(c, name);
    assert_eq!(m.len(), 1, "CONFIG GET {name}: {m:?}");
    m.get(name).cloned().expect("the config asked for")
}

/// `CONFIG SET name value [name value ...]`: Ok or the error text.
fn config_set(c: &mut Connection, pairs: &[&str]) -> Result<(), String> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(pairs)
        .query::<()>(c)
        .map_err(|e| error_text(&e))
}

type SetReply = (String, Option<i64>, Option<i64>, i64);

fn plan_set(c: &mut Connection, args: &[&str]) -> SetReply {
    redis::cmd("OKOME.PLAN.SET")
        .arg(args)
        .query(c)
        .expect("OKOME.PLAN.SET")
}

fn okome_key(c: &mut Connection, parts: &[&str]) -> String {
    redis::cmd("OKOME.KEY")
        .arg(parts)
        .query(c)
        .expect("OKOME.KEY")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory, removed on drop unless the test failed.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("okome-ops-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

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

/// A `redis-server` started from a config file (its first argument), in
/// `dir`, on a free port given on the command line. Killed on drop.
struct ConfServer {
    child: Child,
    port: u16,
}

impl ConfServer {
    fn start(dir: &Path, conf: &Path) -> ConfServer {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(server_binary())
                .arg(conf)
                .arg("--port")
                .arg(port.to_string())
                .args(["--daemonize", "no", "--logfile", "server.log"])
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut s = ConfServer { child, port };
            if s.wait_ready() {
                return s;
            }
            s.kill();
            last = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        }
        panic!(
            "redis-server did not start from {}:\n{last}",
            conf.display()
        );
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut c) = self.client().get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("client")
    }

    fn conn(&self) -> Connection {
        let c = self.client().get_connection().expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ConfServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-server args...` in `dir` and expects it to exit on its own
/// (within 10 s) without ever answering; returns its status and everything
/// it wrote (stdout, stderr).
fn start_must_fail(dir: &Path, args: &[String]) -> (ExitStatus, String) {
    let port = free_port();
    let out = dir.join("stdout.log");
    let errs = dir.join("stderr.log");
    let mut child = Command::new(server_binary())
        .args(args)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&errs).expect("stderr file"))
        .spawn()
        .expect("spawn redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        let answered = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .ok()
            .and_then(|cl| cl.get_connection().ok())
            .is_some_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok());
        if answered || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server {args:?} started (or hung) instead of refusing the configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default()
        + &std::fs::read_to_string(&errs).unwrap_or_default();
    (status, text)
}

/// The text of a bulk or status reply.
fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        other => panic!("expected a string, got {other:?}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A RESP2 flat key/value array (or a RESP3 map) as an ordered list.
fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(a) => {
            assert_eq!(a.len() % 2, 0, "a flat map has pairs: {a:?}");
            a.chunks(2).map(|p| (text(&p[0]), p[1].clone())).collect()
        }
        other => panic!("expected a map, got {other:?}"),
    }
}

fn field<'a>(m: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn strings(v: &Value) -> Vec<String> {
    array(v).iter().map(text).collect()
}

/// The `okome_*` fields of `INFO okome`, without the prefix.
fn info(c: &mut Connection) -> BTreeMap<String, String> {
    let s: String = redis::cmd("INFO").arg("okome").query(c).expect("INFO");
    let mut m = BTreeMap::new();
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(':').expect("name:value");
        let k = k
            .strip_prefix("okome_")
            .unwrap_or_else(|| panic!("INFO okome field without the okome_ prefix: {line}"));
        m.insert(k.to_string(), v.to_string());
    }
    m
}

/// Every counter of src/stats.rs, in its order.
const COUNTERS: [&str; 32] = [
    "planner_hits",
    "planner_misses",
    "planner_refreshes",
    "planner_locked",
    "planner_limited",
    "lock_acquired",
    "lock_contended",
    "lock_extended",
    "lock_released",
    "wait_blocked",
    "wait_woken",
    "wait_woken_hit",
    "wait_woken_leader",
    "wait_woken_other",
    "wait_timed_out",
    "wait_disconnected",
    "wait_unblocked",
    "locks_healed",
    "windows_evicted",
    "rate_allowed",
    "rate_limited",
    "wbudget_allowed",
    "wbudget_refused",
    "plans_stored",
    "plans_skipped",
    "cache_hits",
    "cache_misses",
    "cache_stored",
    "ledger_records",
    "ledger_dropped",
    "ledger_purged",
    "errors",
];

/// The counters of `INFO okome` as numbers (every one must be present).
fn counters(c: &mut Connection) -> BTreeMap<&'static str, u64> {
    let m = info(c);
    COUNTERS
        .iter()
        .map(|&name| {
            let v = m
                .get(name)
                .unwrap_or_else(|| panic!("INFO okome lacks okome_{name}: {m:?}"));
            (
                name,
                v.parse()
                    .unwrap_or_else(|_| panic!("okome_{name}:{v} is not a count")),
            )
        })
        .collect()
}

fn waiting_clients(c: &mut Connection) -> u64 {
    info(c)["waiting_clients"].parse().expect("a count")
}

/// Polls `INFO okome` until `okome_waiting_clients` is `n` (5 s at most).
fn wait_for_waiting(c: &mut Connection, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let w = waiting_clients(c);
        if w == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "okome_waiting_clients stayed {w}, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------- configs

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

    let key = okome_key(&mut c, &["planner", "m", "p", "t", "r"]);
    assert_eq!(
        plan_set(&mut c, &[&key, "{}"]),
        ("STORED".into(), Some(900_000), None, 0)
    );
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).unwrap();
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
        (&["nope", "1"], "unknown okome config 'nope'"),
        (
            &["write-window", "0"],
            "okome.write-window 0 is out of range",
        ),
        (&["lock-ttl-max"], "module argument 'lock-ttl-max' needs a value"),
    ];
    for (module_args, message) in cases {
        let dir = TempDir::new();
        let mut args = vec!["--loadmodule".to_string(), module.clone()];
        args.extend(module_args.iter().map(|s| s.to_string()));
        let (status, out) = start_must_fail(dir.path(), &args);
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
    let ttl: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg(&["rag", "r", "c", "{}"])
        .query(&mut c)
        .unwrap();
    assert_eq!(ttl, 1_800_000);
    let pttl: i64 = redis::cmd("PTTL")
        .arg("okome:rag:{r}:c")
        .query(&mut c)
        .unwrap();
    assert!((1_799_000..=1_800_000).contains(&pttl), "{pttl}");
}

#[test]
fn an_inconsistent_redis_conf_aborts_the_start() {
    let dir = TempDir::new();
    let conf = write_conf(dir.path(), "okome.planner-ttl-default 9999\n");
    let args = vec![conf.display().to_string()];
    let (status, out) = start_must_fail(dir.path(), &args);
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
        "ERR value is 11 bytes, larger than the 10-byte limit (okome.max-value-bytes)"
    );
    let ttl: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg(&["tools", "v", "\"12345678\""])
        .query(&mut c)
        .unwrap();
    assert_eq!(ttl, 600_000);

    // Default lock TTL.
    config_set(&mut c, &["okome.lock-ttl-default", "8500"]).unwrap();
    let m = plan_get(&mut c, &["m", "lock", "t", "r"]);
    assert_eq!((m.status.as_str(), m.ms), ("MISS", Some(8500)));
    let lock_ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:lock", m.key))
        .query(&mut c)
        .unwrap();
    assert!((8400..=8500).contains(&lock_ttl), "{lock_ttl}");
    let t = redis::cmd("OKOME.LOCK")
        .arg("okome:tools:{v9}")
        .query::<String>(&mut c)
        .unwrap();
    assert_eq!(t.len(), 32);
    let lock_ttl: i64 = redis::cmd("PTTL")
        .arg("okome:tools:{v9}:lock")
        .query(&mut c)
        .unwrap();
    assert!(
        (8400..=8500).contains(&lock_ttl),
        "OKOME.LOCK too: {lock_ttl}"
    );

    // Default REFRESHAHEAD, used when the option is absent.
    let key = okome_key(&mut c, &["planner", "m", "refresh", "t", "r"]);
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
    let key2 = okome_key(&mut c, &["planner", "m", "refresh2", "t", "r"]);
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
    let k = okome_key(&mut c, &["planner", "m", "bounds", "t", "r"]);
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
    assert!(e.contains("between 100 and 3600000"), "{e}");
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
    let ttl: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg(&["tools", "v1", "{}"])
        .query(&mut c)
        .unwrap();
    assert_eq!(ttl, 900_000);
}

// ---------------------------------------------------------------- INFO okome

/// Adds `n` to each named counter of `exp`, then asserts that `INFO okome`
/// shows exactly `exp`.
fn step(
    c: &mut Connection,
    exp: &mut BTreeMap<&'static str, u64>,
    what: &str,
    add: &[(&str, u64)],
) {
    for (name, n) in add {
        *exp.get_mut(*name)
            .unwrap_or_else(|| panic!("no counter {name}")) += n;
    }
    assert_eq!(&counters(c), exp, "after {what}");
}

#[test]
fn info_okome_counts_a_known_workload_exactly() {
    let s = Server::start();
    let mut c = s.conn();
    let mut b = s.conn();

    let fields = info(&mut c);
    let mut names: BTreeSet<String> = COUNTERS.iter().map(|s| s.to_string()).collect();
    names.insert("planner_hit_ratio".into());
    names.insert("waiting_clients".into());
    assert_eq!(
        fields.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "INFO okome: {fields:?}"
    );
    let mut exp: BTreeMap<&'static str, u64> = COUNTERS.iter().map(|&n| (n, 0)).collect();
    assert_eq!(counters(&mut c), exp);
    assert_eq!(fields["planner_hit_ratio"].parse::<f64>().unwrap(), 0.0);
    assert_eq!(fields["waiting_clients"], "0");

    // The server rejects a wrong arity before the handler runs: no error
    // is counted.
    let e = err(&mut c, &[b"OKOME.UNLOCK", b"k"]);
    assert!(e.contains("wrong number of arguments"), "{e}");
    step(&mut c, &mut exp, "an arity error", &[]);

    let p = |n: &str| ["m".to_string(), n.to_string(), "t".into(), "r".into()];
    let get = |c: &mut Connection, prompt: &str, opts: &[&str]| {
        let mut a: Vec<String> = p(prompt).to_vec();
        a.extend(opts.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        plan_get(c, &refs)
    };

    // 3 misses, each taking the lock.
    let m1 = get(&mut c, "p1", &[]);
    let m2 = get(&mut c, "p2", &[]);
    let m3 = get(&mut c, "p3", &[]);
    for m in [&m1, &m2, &m3] {
        assert_eq!(m.status, "MISS");
    }
    step(
        &mut c,
        &mut exp,
        "3 misses",
        &[("planner_misses", 3), ("lock_acquired", 3)],
    );

    // 2 LOCKED.
    for _ in 0..2 {
        assert_eq!(get(&mut c, "p1", &[]).status, "LOCKED");
    }
    step(
        &mut c,
        &mut exp,
        "2 LOCKED",
        &[("planner_locked", 2), ("lock_contended", 2)],
    );

    // Store p1 with its token, then 4 hits.
    let t1 = m1.token.clone().unwrap();
    assert_eq!(
        plan_set(&mut c, &[&m1.key, "{}", "TOKEN", &t1]),
        ("STORED".into(), Some(600_000), None, 1)
    );
    step(
        &mut c,
        &mut exp,
        "PLAN.SET with the token",
        &[("plans_stored", 1), ("lock_released", 1)],
    );
    for _ in 0..4 {
        assert_eq!(get(&mut c, "p1", &[]).status, "HIT");
    }
    step(&mut c, &mut exp, "4 hits", &[("planner_hits", 4)]);

    // 1 REFRESH (and a HIT for the next reader in the zone).
    let t2 = m2.token.clone().unwrap();
    assert_eq!(
        plan_set(&mut c, &[&m2.key, "{}", "TTL", "300", "TOKEN", &t2]).3,
        1
    );
    assert_eq!(
        get(&mut c, "p2", &["REFRESHAHEAD", "900000"]).status,
        "REFRESH"
    );
    assert_eq!(get(&mut c, "p2", &["REFRESHAHEAD", "900000"]).status, "HIT");
    step(
        &mut c,
        &mut exp,
        "REFRESH then HIT",
        &[
            ("plans_stored", 1),
            ("lock_released", 1),
            ("lock_acquired", 1),
            ("planner_refreshes", 1),
            ("planner_hits", 1),
        ],
    );

    // PLAN.GET with AGENT: allowed (a hit), then LIMITED.
    let opts = ["AGENT", "ag", "LIMIT", "1", "WINDOW", "60"];
    assert_eq!(get(&mut c, "p1", &opts).status, "HIT");
    assert_eq!(get(&mut c, "p1", &opts).status, "LIMITED");
    step(
        &mut c,
        &mut exp,
        "PLAN.GET AGENT allowed, limited",
        &[
            ("planner_hits", 1),
            ("rate_allowed", 1),
            ("rate_limited", 1),
            ("planner_limited", 1),
        ],
    );

    // OKOME.RATE: 2 allowed, 1 limited.
    for want in [1, 1, 0] {
        let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
            .arg(&["r", "2", "60"])
            .query(&mut c)
            .unwrap();
        assert_eq!(r.0, want);
    }
    step(
        &mut c,
        &mut exp,
        "OKOME.RATE",
        &[("rate_allowed", 2), ("rate_limited", 1)],
    );

    // OKOME.WBUDGET: 1 allowed, 1 refused.
    for want in [1, 0] {
        let r: (i64, i64, i64, i64) = redis::cmd("OKOME.WBUDGET")
            .arg(&["w", "1"])
            .query(&mut c)
            .unwrap();
        assert_eq!(r.0, want);
    }
    step(
        &mut c,
        &mut exp,
        "OKOME.WBUDGET",
        &[("wbudget_allowed", 1), ("wbudget_refused", 1)],
    );

    // PLAN.SET with a write budget: stored, then skipped.
    let k5 = okome_key(&mut c, &["planner", "m", "p5", "t", "r"]);
    assert_eq!(
        plan_set(&mut c, &[&k5, "{}", "AGENT", "pw", "WLIMIT", "1"]),
        ("STORED".into(), Some(600_000), Some(0), 0)
    );
    assert_eq!(
        plan_set(&mut c, &[&k5, "{}", "AGENT", "pw", "WLIMIT", "1"]),
        ("SKIPPED".into(), None, Some(0), 0)
    );
    step(
        &mut c,
        &mut exp,
        "PLAN.SET stored, skipped",
        &[
            ("plans_stored", 1),
            ("wbudget_allowed", 1),
            ("ledger_records", 1),
            ("plans_skipped", 1),
            ("wbudget_refused", 1),
        ],
    );

    // OKOME.LOCK / UNLOCK.
    let tok: String = redis::cmd("OKOME.LOCK")
        .arg("okome:tools:{v1}")
        .query(&mut c)
        .unwrap();
    let none: Option<String> = redis::cmd("OKOME.LOCK")
        .arg("okome:tools:{v1}")
        .query(&mut c)
        .unwrap();
    assert_eq!(none, None);
    let ext: i64 = redis::cmd("OKOME.LOCK")
        .arg(&["okome:tools:{v1}", "TTL", "10000", "TOKEN", &tok])
        .query(&mut c)
        .unwrap();
    assert_eq!(ext, 1);
    let stale: i64 = redis::cmd("OKOME.LOCK")
        .arg(&["okome:tools:{v1}", "TTL", "10000", "TOKEN", "other"])
        .query(&mut c)
        .unwrap();
    assert_eq!(stale, 0);
    let wrong: i64 = redis::cmd("OKOME.UNLOCK")
        .arg(&["okome:tools:{v1}", "other"])
        .query(&mut c)
        .unwrap();
    assert_eq!(wrong, 0);
    let released: i64 = redis::cmd("OKOME.UNLOCK")
        .arg(&["okome:tools:{v1}", &tok])
        .query(&mut c)
        .unwrap();
    assert_eq!(released, 1);
    step(
        &mut c,
        &mut exp,
        "LOCK acquire, contended, extend; UNLOCK",
        &[
            ("lock_acquired", 1),
            ("lock_contended", 1),
            ("lock_extended", 1),
            ("lock_released", 1),
        ],
    );

    // CACHE.GET miss, CACHE.SET, CACHE.GET hit.
    let miss: Option<(String, i64)> = redis::cmd("OKOME.CACHE.GET")
        .arg(&["tools", "v1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(miss, None);
    let ttl: i64 = redis::cmd("OKOME.CACHE.SET")
        .arg(&["tools", "v1", "{}"])
        .query(&mut c)
        .unwrap();
    assert_eq!(ttl, 600_000);
    let hit: Option<(String, i64)> = redis::cmd("OKOME.CACHE.GET")
        .arg(&["tools", "v1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(hit.map(|h| h.0), Some("{}".to_string()));
    step(
        &mut c,
        &mut exp,
        "CACHE miss, set, hit",
        &[("cache_misses", 1), ("cache_stored", 1), ("cache_hits", 1)],
    );

    // The agent ledger: three CACHE.SET ... AGENT into a ledger of at most
    // two (one dropped), an AGENT.RECORD of a recorded key, a PURGE.
    config_set(&mut c, &["okome.ledger-max-keys", "2"]).unwrap();
    for v in ["l1", "l2", "l3"] {
        let ttl: i64 = redis::cmd("OKOME.CACHE.SET")
            .arg(&["tools", v, "{}", "AGENT", "lg"])
            .query(&mut c)
            .unwrap();
        assert_eq!(ttl, 600_000);
    }
    let (_, size): (i64, i64) = redis::cmd("OKOME.AGENT.RECORD")
        .arg(&["lg", "okome:tools:{l3}"])
        .query(&mut c)
        .unwrap();
    assert_eq!(size, 2);
    let purged: (i64, i64, i64, i64, Vec<(String, i64)>) = redis::cmd("OKOME.AGENT.PURGE")
        .arg("lg")
        .query(&mut c)
        .unwrap();
    assert_eq!(purged, (2, 0, 0, 0, vec![]));
    config_set(&mut c, &["okome.ledger-max-keys", "1000"]).unwrap();
    step(
        &mut c,
        &mut exp,
        "the agent ledger",
        &[
            ("cache_stored", 3),
            ("ledger_records", 4),
            ("ledger_dropped", 1),
            ("ledger_purged", 2),
        ],
    );

    // Error replies from handlers: counted, and nothing else is.
    let e = err(
        &mut c,
        &[b"OKOME.PLAN.SET", k5.as_bytes(), b"{}", b"TTL", b"5"],
    );
    assert!(e.starts_with("ERR TTL 5"), "{e}");
    let e = err(&mut c, &[b"OKOME.RATE", b"r", b"0", b"60"]);
    assert!(e.starts_with("ERR"), "{e}");
    step(&mut c, &mut exp, "2 error replies", &[("errors", 2)]);

    // A WAIT that times out (p3's lock is held).
    let started = Instant::now();
    let l = get(&mut b, "p3", &["WAIT", "200"]);
    assert_eq!(l.status, "LOCKED");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    step(
        &mut c,
        &mut exp,
        "a WAIT that timed out",
        &[
            ("lock_contended", 1),
            ("wait_blocked", 1),
            ("wait_timed_out", 1),
            ("planner_locked", 1),
        ],
    );

    // A WAIT woken by PLAN.SET: HIT.
    let waiter = {
        let mut b = s.conn();
        std::thread::spawn(move || plan_get(&mut b, &["m", "p3", "t", "r", "WAIT", "5000"]))
    };
    wait_for_waiting(&mut c, 1);
    let t3 = m3.token.clone().unwrap();
    assert_eq!(plan_set(&mut c, &[&m3.key, "{}", "TOKEN", &t3]).3, 1);
    assert_eq!(waiter.join().unwrap().status, "HIT");
    assert_eq!(waiting_clients(&mut c), 0);
    step(
        &mut c,
        &mut exp,
        "a WAIT woken by PLAN.SET",
        &[
            ("lock_contended", 1),
            ("wait_blocked", 1),
            ("plans_stored", 1),
            ("lock_released", 1),
            ("wait_woken", 1),
            ("wait_woken_hit", 1),
            ("planner_hits", 1),
        ],
    );

    // A WAIT handed the lock by UNLOCK: MISS with a new token.
    let m4 = get(&mut c, "p4", &[]);
    assert_eq!(m4.status, "MISS");
    let waiter = {
        let mut b = s.conn();
        std::thread::spawn(move || plan_get(&mut b, &["m", "p4", "t", "r", "WAIT", "5000"]))
    };
    wait_for_waiting(&mut c, 1);
    let t4 = m4.token.clone().unwrap();
    let released: i64 = redis::cmd("OKOME.UNLOCK")
        .arg(&[&m4.key, &t4])
        .query(&mut c)
        .unwrap();
    assert_eq!(released, 1);
    let led = waiter.join().unwrap();
    assert_eq!((led.status.as_str(), led.ms), ("MISS", Some(9000)));
    assert!(led.token.is_some() && led.token != m4.token);
    step(
        &mut c,
        &mut exp,
        "a WAIT handed the lock",
        &[
            ("planner_misses", 2),
            ("lock_acquired", 2),
            ("lock_contended", 1),
            ("wait_blocked", 1),
            ("lock_released", 1),
            ("wait_woken", 1),
            ("wait_woken_leader", 1),
        ],
    );

    // A waiter that disconnects (p4 is held by the new leader).
    {
        let mut d = s.conn();
        let packed = redis::cmd("OKOME.PLAN.GET")
            .arg(&["m", "p4", "t", "r", "WAIT", "10000"])
            .get_packed_command();
        d.send_packed_command(&packed).unwrap();
        wait_for_waiting(&mut c, 1);
    }
    wait_for_waiting(&mut c, 0);
    step(
        &mut c,
        &mut exp,
        "a waiter that disconnected",
        &[
            ("lock_contended", 1),
            ("wait_blocked", 1),
            ("wait_disconnected", 1),
        ],
    );

    // The whole workload, as a table.
    let table: BTreeMap<&str, u64> = [
        ("planner_hits", 7),
        ("planner_misses", 5),
        ("planner_refreshes", 1),
        ("planner_locked", 3),
        ("planner_limited", 1),
        ("lock_acquired", 7),
        ("lock_contended", 7),
        ("lock_extended", 1),
        ("lock_released", 5),
        ("wait_blocked", 4),
        ("wait_woken", 2),
        ("wait_woken_hit", 1),
        ("wait_woken_leader", 1),
        ("wait_woken_other", 0),
        ("wait_timed_out", 1),
        ("wait_disconnected", 1),
        ("wait_unblocked", 0),
        ("locks_healed", 0),
        ("windows_evicted", 0),
        ("rate_allowed", 3),
        ("rate_limited", 2),
        ("wbudget_allowed", 2),
        ("wbudget_refused", 2),
        ("plans_stored", 4),
        ("plans_skipped", 1),
        ("cache_hits", 1),
        ("cache_misses", 1),
        ("cache_stored", 4),
        ("ledger_records", 5),
        ("ledger_dropped", 1),
        ("ledger_purged", 2),
        ("errors", 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(exp, table);
    let fields = info(&mut c);
    let ratio: f64 = fields["planner_hit_ratio"].parse().unwrap();
    // (hits + refreshes) / (hits + refreshes + misses + locked)
    let want = (7.0 + 1.0) / (7.0 + 1.0 + 5.0 + 3.0);
    assert_eq!(want, 0.5);
    assert!(
        (ratio - want).abs() < 1e-9,
        "okome_planner_hit_ratio:{ratio}, want {want}"
    );
    assert_eq!(fields["waiting_clients"], "0");
}

#[test]
fn rate_counters_are_exact_under_concurrency() {
    let s = Server::start();
    let threads = 8;
    let calls = 500;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut c = s.conn();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut allowed = 0;
                for _ in 0..calls {
                    let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
                        .arg(&["conc", "1000", "3600"])
                        .query(&mut c)
                        .unwrap();
                    allowed += r.0;
                }
                allowed
            })
        })
        .collect();
    let allowed: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(allowed, 1000, "the window admits exactly its limit");
    let mut c = s.conn();
    let n = counters(&mut c);
    assert_eq!(n["rate_allowed"] + n["rate_limited"], 4000);
    assert_eq!((n["rate_allowed"], n["rate_limited"]), (1000, 3000));
    assert_eq!(n["errors"], 0);
}

// ---------------------------------------------------------------- COMMAND

/// One argument of `COMMAND DOCS`, rendered compactly:
/// `name:type`, `=TOKEN`, `#key_spec_index`, `?` optional, `...` multiple,
/// `(sub, ...)` sub-arguments.
fn render_arg(v: &Value) -> String {
    let m = pairs(v);
    let mut s = format!(
        "{}:{}",
        text(field(&m, "name").expect("name")),
        text(field(&m, "type").expect("type"))
    );
    if let Some(t) = field(&m, "token") {
        s += &format!("={}", text(t));
    }
    if let Some(i) = field(&m, "key_spec_index") {
        s += &format!("#{}", int(i));
    }
    if let Some(f) = field(&m, "flags") {
        for flag in strings(f) {
            s += match flag.as_str() {
                "optional" => "?",
                "multiple" => "...",
                other => panic!("unexpected argument flag {other}"),
            };
        }
    }
    if let Some(sub) = field(&m, "arguments") {
        let subs: Vec<String> = array(sub).iter().map(render_arg).collect();
        s += &format!("({})", subs.join(", "));
    }
    s
}

const ARGS: [(&str, &[&str]); 13] = [
    (
        "okome.plan.get",
        &[
            "model:string",
            "prompt:string",
            "toolset_version:string",
            "repo_hash:string",
            "hashed:pure-token=HASHED?",
            "rate:block?(agent:string=AGENT, limit:integer=LIMIT, window:integer=WINDOW)",
            "lock:oneof?(lockttl:integer=LOCKTTL, nolock:pure-token=NOLOCK)",
            "wait:integer=WAIT?",
            "refreshahead:integer=REFRESHAHEAD?",
        ],
    ),
    (
        "okome.plan.lookup",
        &[
            "key:key#0",
            "rate:block?(agent:string=AGENT, limit:integer=LIMIT, window:integer=WINDOW)",
            "lock:oneof?(lockttl:integer=LOCKTTL, nolock:pure-token=NOLOCK)",
            "wait:integer=WAIT?",
            "refreshahead:integer=REFRESHAHEAD?",
        ],
    ),
    (
        "okome.plan.set",
        &[
            "key:key#0",
            "plan_json:string",
            "ttl:integer=TTL?",
            "token:string=TOKEN?",
            "agent:block?(agent:string=AGENT, wbudget:block?(wlimit:integer=WLIMIT, wwindow:integer=WWINDOW?))",
        ],
    ),
    (
        "okome.lock",
        &["key:key#0", "ttl:integer=TTL?", "token:string=TOKEN?"],
    ),
    ("okome.unlock", &["key:key#0", "token:string"]),
    (
        "okome.rate",
        &[
            "agent:string",
            "limit:integer",
            "window:integer",
            "cost:integer=COST?",
        ],
    ),
    (
        "okome.wbudget",
        &[
            "agent:string",
            "write_limit:integer",
            "window:integer=WINDOW?",
            "cost:integer=COST?",
        ],
    ),
    ("okome.cache.get", &["kind:string", "part:string..."]),
    (
        "okome.cache.set",
        &[
            "kind:string",
            "part:string...",
            "value_json:string",
            "ttl:integer=TTL?",
            "agent:string=AGENT?",
        ],
    ),
    ("okome.key", &["kind:string", "part:string..."]),
    (
        "okome.agent.record",
        &["agent:string", "key:string", "pxat:integer=PXAT?"],
    ),
    (
        "okome.agent.keys",
        &["agent:string", "count:integer=COUNT?", "cursor:string=CURSOR?"],
    ),
    ("okome.agent.purge", &["agent:string", "count:integer=COUNT?"]),
];

#[test]
fn command_docs_for_every_command() {
    let s = Server::start();
    let mut c = s.conn();
    for (name, want_args) in ARGS {
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let top = pairs(&reply);
        assert_eq!(top.len(), 1, "{name}: {reply:?}");
        assert_eq!(top[0].0, name);
        let docs = pairs(&top[0].1);
        let get = |k: &str| {
            field(&docs, k)
                .map(text)
                .unwrap_or_else(|| panic!("{name}: no {k} in COMMAND DOCS: {docs:?}"))
        };
        assert!(!get("summary").trim().is_empty(), "{name}");
        assert_eq!(get("since"), "0.1.0", "{name}");
        assert_eq!(get("group"), "module", "{name}");
        assert_eq!(get("module"), "okome", "{name}");
        let complexity = get("complexity");
        assert!(complexity.starts_with("O("), "{name}: {complexity}");
        let args: Vec<String> = array(field(&docs, "arguments").expect("arguments"))
            .iter()
            .map(render_arg)
            .collect();
        assert_eq!(args, want_args, "{name}");
    }
    for name in ["okome.lock", "okome.unlock", "okome.cache.get"] {
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let docs = pairs(&pairs(&reply)[0].1);
        assert_eq!(text(field(&docs, "complexity").unwrap()), "O(1)", "{name}");
    }
}

/// name, arity, flags, key spec (argument position, flags): a key, or for
/// derived-key commands the routing argument (flagged `not_key`).
type InfoRow = (
    &'static str,
    i64,
    &'static [&'static str],
    Option<(i64, &'static [&'static str])>,
);

const INFO: [InfoRow; 13] = [
    ("okome.plan.get", -5, &["write", "module"], None),
    (
        "okome.plan.lookup",
        -2,
        &["write", "module"],
        Some((1, &["RO", "access"])),
    ),
    (
        "okome.plan.set",
        -3,
        &["write", "denyoom", "module"],
        Some((1, &["OW", "update"])),
    ),
    (
        "okome.lock",
        -2,
        &["write", "denyoom", "fast", "module"],
        Some((1, &["RW", "update"])),
    ),
    (
        "okome.unlock",
        3,
        &["write", "fast", "module"],
        Some((1, &["RW", "delete"])),
    ),
    (
        "okome.rate",
        -4,
        &["write", "denyoom", "fast", "module"],
        Some((1, &["RO", "not_key"])),
    ),
    (
        "okome.wbudget",
        -3,
        &["write", "denyoom", "fast", "module"],
        Some((1, &["RO", "not_key"])),
    ),
    (
        "okome.cache.get",
        -3,
        &["readonly", "fast", "module"],
        Some((2, &["RO", "not_key"])),
    ),
    (
        "okome.cache.set",
        -4,
        &["write", "denyoom", "module"],
        Some((2, &["RO", "not_key"])),
    ),
    ("okome.key", -3, &["stale", "module"], None),
    (
        "okome.agent.record",
        -3,
        &["write", "denyoom", "module"],
        Some((1, &["RO", "not_key"])),
    ),
    (
        "okome.agent.keys",
        -2,
        &["readonly", "module"],
        Some((1, &["RO", "not_key"])),
    ),
    (
        "okome.agent.purge",
        -2,
        &["write", "module"],
        Some((1, &["RO", "not_key"])),
    ),
];

#[test]
fn command_info_arity_flags_and_key_specs() {
    let s = Server::start();
    let mut c = s.conn();
    for (name, arity, flags, key_flags) in INFO {
        let reply: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let all = array(&reply);
        assert_eq!(all.len(), 1, "{name}");
        let info = array(&all[0]);
        assert_eq!(text(&info[0]), name);
        assert_eq!(int(&info[1]), arity, "{name} arity");
        let got: BTreeSet<String> = strings(&info[2]).into_iter().collect();
        let want: BTreeSet<String> = flags.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{name} flags");
        let positions = (int(&info[3]), int(&info[4]), int(&info[5]));
        let specs = array(&info[8]);
        match key_flags {
            None => {
                assert_eq!(positions, (0, 0, 0), "{name}");
                assert!(specs.is_empty(), "{name}: {specs:?}");
            }
            Some((pos, kf)) => {
                assert_eq!(positions, (pos, pos, 1), "{name}");
                assert_eq!(specs.len(), 1, "{name}: {specs:?}");
                let spec = pairs(&specs[0]);
                assert_eq!(
                    strings(field(&spec, "flags").unwrap()),
                    kf.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "{name}"
                );
                assert!(!text(field(&spec, "notes").unwrap()).is_empty());
                let bs = pairs(field(&spec, "begin_search").unwrap());
                assert_eq!(text(field(&bs, "type").unwrap()), "index");
                let bs_spec = pairs(field(&bs, "spec").unwrap());
                assert_eq!(int(field(&bs_spec, "index").unwrap()), pos);
                let fk = pairs(field(&spec, "find_keys").unwrap());
                assert_eq!(text(field(&fk, "type").unwrap()), "range");
                let fk_spec = pairs(field(&fk, "spec").unwrap());
                let range: Vec<i64> = ["lastkey", "keystep", "limit"]
                    .iter()
                    .map(|k| int(field(&fk_spec, k).unwrap()))
                    .collect();
                assert_eq!(range, [0, 1, 0], "{name}");
            }
        }
    }
}

#[test]
fn command_getkeysandflags() {
    let s = Server::start();
    let mut c = s.conn();
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["okome.plan.set", "okome:planner:k", "{}"],
            &["OW", "update"],
        ),
        (&["okome.lock", "okome:tools:{v1}"], &["RW", "update"]),
        (
            &[
                "okome.lock",
                "okome:tools:{v1}",
                "TTL",
                "9000",
                "TOKEN",
                "t",
            ],
            &["RW", "update"],
        ),
        (
            &["okome.unlock", "okome:tools:{v1}", "t"],
            &["RW", "delete"],
        ),
    ];
    for (args, flags) in cases {
        let reply: Value = redis::cmd("COMMAND")
            .arg("GETKEYSANDFLAGS")
            .arg(args)
            .query(&mut c)
            .unwrap();
        let keys = array(&reply);
        assert_eq!(keys.len(), 1, "{args:?}: {reply:?}");
        let k = array(&keys[0]);
        assert_eq!(text(&k[0]), args[1], "{args:?}");
        assert_eq!(
            strings(&k[1]),
            flags.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{args:?}"
        );
    }
    // Commands whose keys are derived declare none.
    let e = err(
        &mut c,
        &[
            b"COMMAND",
            b"GETKEYSANDFLAGS",
            b"okome.rate",
            b"a",
            b"1",
            b"1",
        ],
    );
    assert!(e.contains("no key arguments"), "{e}");
}

// ---------------------------------------------------------------- docs agree

fn repo_file(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn readme_documents_exactly_the_registered_commands() {
    let readme = repo_file("README.md");
    let mut documented = BTreeSet::new();
    for line in readme.lines() {
        let Some(rest) = line.strip_prefix("### ") else {
            continue;
        };
        if !rest.starts_with("OKOME.") {
            continue;
        }
        for part in rest.split(" / ") {
            let name = part.split_whitespace().next().expect("a command name");
            assert!(name.starts_with("OKOME."), "heading {line:?}");
            assert!(
                documented.insert(name.to_lowercase()),
                "{name} documented twice"
            );
        }
    }
    let s = Server::start();
    let mut c = s.conn();
    let registered: BTreeSet<String> = redis::cmd("COMMAND")
        .arg(&["LIST", "FILTERBY", "MODULE", "okome"])
        .query(&mut c)
        .unwrap();
    assert_eq!(registered.len(), 13, "{registered:?}");
    assert_eq!(documented, registered);
}

#[test]
fn redis_conf_example_lists_every_config() {
    let example = repo_file("redis.conf.example");
    let tokens: BTreeSet<&str> = example
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '-'))
        .collect();
    let missing: Vec<String> = DEFAULTS
        .iter()
        .map(|(n, _)| format!("okome.{n}"))
        .filter(|n| !tokens.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "redis.conf.example does not mention {missing:?}"
    );
}

#[test]
fn redis_conf_example_loads_and_shows_the_defaults() {
    let dir = TempDir::new();
    let example = repo_file("redis.conf.example")
        .replace("/path/to/libokome.so", &module_path().display().to_string());
    let conf = dir.path().join("redis.conf");
    std::fs::write(&conf, example).unwrap();
    let s = ConfServer::start(dir.path(), &conf);
    let mut c = s.conn();
    assert_eq!(config_get(&mut c, "okome.*"), default_configs());
}

#[test]
fn readme_names_every_config_and_info_field() {
    let readme = repo_file("README.md");
    for (name, _) in DEFAULTS {
        // The table may abbreviate a standard's siblings: `okome.x-min` /
        // `-default` / `-max`.
        let family = name
            .strip_suffix("-default")
            .or_else(|| name.strip_suffix("-max"))
            .map(|base| format!("`okome.{base}-min`"));
        let full = format!("`okome.{name}`");
        assert!(
            readme.contains(&full) || family.is_some_and(|f| readme.contains(&f)),
            "README does not document okome.{name}"
        );
    }
    let s = Server::start();
    let mut c = s.conn();
    for field in info(&mut c).keys() {
        assert!(
            readme.contains(&format!("`{field}`")),
            "README does not document the INFO okome field {field}"
        );
    }
}
