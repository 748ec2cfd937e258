//! Helpers shared by `configs.rs`, `info.rs` and `command_docs.rs`: the
//! config defaults, `CONFIG GET`/`SET`, a server started from a redis.conf,
//! temp dirs, and the fields of `INFO okome`.

use super::*;

use redis::Connection;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Every tunable of `okome_core::config::params()` with its default.
pub const DEFAULTS: [(&str, &str); 23] = [
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
pub fn default_configs() -> BTreeMap<String, String> {
    DEFAULTS
        .iter()
        .map(|(n, v)| (format!("okome.{n}"), v.to_string()))
        .collect()
}

pub fn config_get(c: &mut Connection, pattern: &str) -> BTreeMap<String, String> {
    redis::cmd("CONFIG")
        .arg("GET")
        .arg(pattern)
        .query(c)
        .expect("CONFIG GET")
}

/// `CONFIG SET name value [name value ...]`: Ok or the error text.
pub fn config_set(c: &mut Connection, pairs: &[&str]) -> Result<(), String> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(pairs)
        .query::<()>(c)
        .map_err(|e| error_text(&e))
}

pub type SetReply = (String, Option<i64>, Option<i64>, i64);

pub fn plan_set(c: &mut Connection, args: &[&str]) -> SetReply {
    redis::cmd("OKOME.PLAN.SET")
        .arg(args)
        .query(c)
        .expect("OKOME.PLAN.SET")
}

pub fn okome_key(c: &mut Connection, parts: &[&str]) -> String {
    redis::cmd("OKOME.KEY")
        .arg(parts)
        .query(c)
        .expect("OKOME.KEY")
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory, removed on drop unless the test failed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("okome-ops-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
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

/// A `redis-server` started from a config file (its first argument), in
/// `dir`, on a free port given on the command line. Killed on drop.
pub struct ConfServer {
    pub child: Child,
    pub port: u16,
}

impl ConfServer {
    pub fn start(dir: &Path, conf: &Path) -> ConfServer {
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

    pub fn wait_ready(&mut self) -> bool {
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

    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("client")
    }

    pub fn conn(&self) -> Connection {
        let c = self.client().get_connection().expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ConfServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `okome_*` fields of `INFO okome`, without the prefix.
pub fn info(c: &mut Connection) -> BTreeMap<String, String> {
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
