//! Test servers: every test starts its own `redis-server` on a free loopback
//! port, in its own directory, with the module loaded; a `Drop` guard kills
//! and reaps it, so nothing leaks when a test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The module under test: `$OKOME_MODULE`, or this workspace's debug build,
/// built once per test binary (`cargo test` does not build the cdylib).
pub fn module_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("OKOME_MODULE") {
            let p = PathBuf::from(p);
            assert!(p.exists(), "OKOME_MODULE={} does not exist", p.display());
            return p;
        }
        build_cdylib("okome", "libokome.so")
    })
    .clone()
}

/// Builds the workspace's cdylib `package` (debug) and returns the path of
/// its `lib_file`.
pub fn build_cdylib(package: &str, lib_file: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--lib"])
        .current_dir(root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of {package} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let p = target.join("debug").join(lib_file);
    assert!(p.exists(), "{} missing after build", p.display());
    p
}

/// The server binary: `$REDIS_SERVER` or `redis-server` on the PATH.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running `redis-server` with okome loaded.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// Every argument after `--port <port>`, to restart the same server.
    args: Vec<String>,
}

fn spawn(port: u16, args: &[String]) -> Child {
    Command::new(server_binary())
        .arg("--port")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-server (is it installed?)")
}

impl Server {
    /// A server with default settings.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with extra `--name value` arguments (after the defaults).
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_full(extra, &[])
    }

    /// A server with extra server arguments and module load-time arguments.
    pub fn start_full(extra: &[&str], module_args: &[&str]) -> Server {
        let module = module_path();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("okome-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut args: Vec<String> = [
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--logfile",
                "server.log",
                "--dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(dir.display().to_string());
            args.push("--loadmodule".into());
            args.push(module.display().to_string());
            args.extend(module_args.iter().map(|s| s.to_string()));
            args.extend(extra.iter().map(|s| s.to_string()));
            let child = spawn(port, &args);
            let mut server = Server {
                child,
                port,
                dir: dir.clone(),
                args,
            };
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            last_log = server.log();
            let _ = server.child.kill();
            let _ = server.child.wait();
            std::mem::forget(server);
        }
        panic!("redis-server did not start; last log:\n{last_log}");
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    /// A new connection, with a 10 s read deadline so a hung server fails
    /// the test instead of hanging it.
    pub fn conn(&self) -> redis::Connection {
        let c = self.client().get_connection().expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL and waits for it, keeping its directory.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server with SIGKILL (mid-workload, as a crash would) and
    /// starts it again on the same port and directory with the same
    /// arguments, so it reloads its AOF or RDB file.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.child = spawn(self.port, &self.args);
        assert!(
            self.wait_ready(Duration::from_secs(30)),
            "restart failed:\n{}",
            self.log()
        );
    }

    /// Stderr lines, for diagnosing a crash.
    pub fn stderr_lines(&mut self) -> Vec<String> {
        self.child
            .stderr
            .take()
            .map(|e| BufReader::new(e).lines().map_while(Result::ok).collect())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("server log kept in {}", self.dir.display());
        }
    }
}

/// The 6-element reply of `OKOME.PLAN.GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub status: String,
    pub key: String,
    pub value: Option<String>,
    pub ms: Option<i64>,
    pub token: Option<String>,
    pub rate_remaining: Option<i64>,
}

pub fn plan_get(con: &mut redis::Connection, args: &[&str]) -> Plan {
    try_plan_get(con, args).expect("OKOME.PLAN.GET")
}

pub fn try_plan_get(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Plan> {
    let (status, key, value, ms, token, rate_remaining): (
        String,
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    ) = redis::cmd("OKOME.PLAN.GET").arg(args).query(con)?;
    Ok(Plan {
        status,
        key,
        value,
        ms,
        token,
        rate_remaining,
    })
}

/// Runs a command and returns its error text (panics if it succeeded).
pub fn err(con: &mut redis::Connection, args: &[&[u8]]) -> String {
    let (name, rest) = args.split_first().expect("a command");
    let mut c = redis::cmd(std::str::from_utf8(name).expect("utf8 name"));
    for a in rest {
        c.arg(*a);
    }
    match c.query::<redis::Value>(con) {
        Ok(v) => panic!(
            "expected an error from {:?}, got {v:?}",
            String::from_utf8_lossy(name)
        ),
        Err(e) => error_text(&e),
    }
}

/// The full error text as the server sent it (`ERR ...`, `WRONGTYPE ...`).
pub fn error_text(e: &redis::RedisError) -> String {
    let code = e.code().unwrap_or("");
    let detail = e.detail().unwrap_or("");
    if code.is_empty() {
        e.to_string()
    } else {
        format!("{code} {detail}")
    }
}

/// Every key in the server with its type, sorted: to assert "nothing written".
pub fn snapshot(con: &mut redis::Connection) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS");
    let mut out = Vec::new();
    for k in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&k).query(con).expect("DUMP");
        let ttl_bucket: i64 = redis::cmd("PTTL").arg(&k).query(con).expect("PTTL");
        // TTLs tick; keep only whether there is one.
        out.push((k, dump.unwrap_or_default(), ttl_bucket.signum()));
    }
    out.sort();
    out
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// An integer field of `INFO <section>`.
pub fn info_i64(c: &mut redis::Connection, section: &str, field: &str) -> i64 {
    let text: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{field}: {e}"))
}

/// Polls until `blocked_clients` is `n` (panics after `within`).
pub fn wait_blocked(c: &mut redis::Connection, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let b = info_i64(c, "clients", "blocked_clients");
        if b == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "blocked_clients is {b}, want {n} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
