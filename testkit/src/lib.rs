//! The test harness of the okome workspace: every test starts its own
//! `redis-server` with the module loaded and a `Drop` guard kills it, so
//! nothing leaks when a test fails. Used by okome's integration tests
//! (`tests/it`, through `tests/it/support`), `bench/flow.rs` and
//! `examples/planner/tests/`.
//!
//! The conventions, shared with the Python tests (`python/tests/conftest.py`
//! follows the same ones):
//!
//! - **Module**: `$OKOME_MODULE`, else the workspace's debug build
//!   (`target/debug/libokome.so`, or under `$CARGO_TARGET_DIR`). The Rust
//!   harness builds it on demand (`cargo build -p okome --lib`, once per
//!   test binary, since `cargo test` does not build a cdylib); the Python
//!   tests expect it built (`make python-test` builds it).
//! - **Server binary**: `$REDIS_SERVER`, else `redis-server` on the `PATH`.
//! - **Ports**: loopback only (`--bind 127.0.0.1`), a random free port in
//!   20000..55535 whose cluster bus port (+10000) is free as well, never an
//!   ephemeral port (port 0), never the same one twice in a process. A
//!   server that does not come up (its port taken in the meantime) is
//!   started again on another port, up to 5 times.
//! - **Directories**: each server runs in a fresh directory of its own
//!   (`--dir`, its log in `server.log` there), removed when the test passes
//!   and kept, with its path printed, when it fails (Python: pytest's
//!   `tmp_path`).
//! - **Processes**: killed by pid with SIGKILL and reaped when the guard is
//!   dropped, also when the test panics; no `SHUTDOWN`, no name-based kill.

pub mod cluster;

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<root>/testkit`), whichever
/// workspace member's tests use it.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

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
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--lib"])
        .current_dir(&root)
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

/// Ports are drawn from `PORTS_FROM..PORTS_BELOW`: below 55535, so that a
/// cluster node's bus port (+10000) is a valid port too, and above the
/// well-known and registered services most machines run.
pub const PORTS_FROM: u16 = 20000;
/// See [`PORTS_FROM`].
pub const PORTS_BELOW: u16 = 55535;
/// A cluster node's bus port is its port plus this.
pub const BUS_OFFSET: u16 = 10000;

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free loopback port in `PORTS_FROM..PORTS_BELOW` whose cluster bus port
/// (+10000) is free too, not handed out before in this process.
pub fn free_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    static DRAWS: AtomicUsize = AtomicUsize::new(0);
    let span = u64::from(PORTS_BELOW - PORTS_FROM);
    for _ in 0..1000 {
        // A random draw without a crate: a randomly keyed hash of the pid,
        // the time and a counter.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_usize(DRAWS.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let port = PORTS_FROM + (h.finish() % span) as u16;
        let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
        let used = used.get_or_insert_with(HashSet::new);
        if used.contains(&port) || !bindable(port) || !bindable(port + BUS_OFFSET) {
            continue;
        }
        used.insert(port);
        return port;
    }
    panic!("no free port in {PORTS_FROM}..{PORTS_BELOW} (with +{BUS_OFFSET} free) in 1000 draws");
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty directory `okome-<what>-<pid>-<n>` under the system temp
/// dir (not removed: see [`TempDir`] for one that is).
pub fn fresh_dir(what: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let p = std::env::temp_dir().join(format!("okome-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("create temp dir");
    p
}

/// A fresh directory, removed on drop unless the test failed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        TempDir(fresh_dir("ops"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
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

/// Polls `PING` on `port` until it answers (true) or `child` exits or
/// `within` passes (false).
fn wait_ready(child: &mut Child, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let url = format!("redis://127.0.0.1:{port}/");
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
            if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Kills `child` by pid (SIGKILL) and reaps it.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A connection to `127.0.0.1:port`, with a 10 s read deadline so that a
/// hung server fails the test instead of hanging it.
pub fn connect(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c
}

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
        let dir = fresh_dir("test");
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
            // Another process took the port, say: try another one.
            last_log = server.log();
            kill_and_reap(&mut server.child);
            std::mem::forget(server);
        }
        panic!("redis-server did not start; last log:\n{last_log}");
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        wait_ready(&mut self.child, self.port, within)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    /// A new connection, with a 10 s read deadline (see [`connect`]).
    pub fn conn(&self) -> redis::Connection {
        connect(self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics with the log tail if the server is no longer running or
    /// logged an assertion or a crash.
    pub fn assert_alive(&mut self, what: &str) {
        let alive = self.alive();
        let log = self.log();
        let crashed = log.contains("ASSERTION FAILED")
            || log.contains("REDIS BUG REPORT")
            || log.contains("crashed by signal");
        assert!(
            alive && !crashed,
            "{what}: redis-server {} (pid {}):\n{}",
            if alive {
                "logged a crash"
            } else {
                "is no longer running"
            },
            self.pid(),
            self.log_tail(60)
        );
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL and waits for it, keeping its directory.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
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
        kill_and_reap(&mut self.child);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("server log kept in {}", self.dir.display());
        }
    }
}

/// A `redis-server` started from a config file (its first argument), in
/// `dir`, on a free port given on the command line. Killed on drop.
pub struct ConfServer {
    child: Child,
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
            if wait_ready(&mut s.child, port, Duration::from_secs(10)) {
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

    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("client")
    }

    pub fn conn(&self) -> redis::Connection {
        connect(self.port)
    }

    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

impl Drop for ConfServer {
    fn drop(&mut self) {
        self.kill();
    }
}
