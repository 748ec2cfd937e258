//! Servers beyond `okome-testkit`'s `Server`: primaries and their
//! replicas, ACL users, a start that must fail, process signals.

use super::*;

use redis::Connection;
use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Arguments for a primary: replicas sync at once (diskless sync would
/// otherwise wait 5 s for more replicas).
pub const PRIMARY: &[&str] = &["--repl-diskless-sync-delay", "0"];

/// Arguments for a server that writes every command to its AOF at once.
pub const AOF: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// A replica of `primary` (`--replicaof` then `extra`, with the module
/// loaded with `module_args`), its link to the primary up.
pub fn replica_of(primary: &Server, extra: &[&str], module_args: &[&str]) -> Server {
    let port = primary.port.to_string();
    let mut args = vec!["--replicaof", "127.0.0.1", &port];
    args.extend_from_slice(extra);
    let replica = Server::start_full(&args, module_args);
    wait_link_up(&mut replica.conn(), Duration::from_secs(10));
    replica
}

/// Polls a replica until its link to the primary is up (panics after
/// `within`).
pub fn wait_link_up(replica: &mut Connection, within: Duration) {
    poll(within, Duration::from_millis(20), || {
        let info = info_text(replica, "replication");
        if info.lines().any(|l| l.trim() == "master_link_status:up") {
            Ok(())
        } else {
            Err(format!("replica link not up within {within:?}:\n{info}"))
        }
    })
}

/// `WAIT 1 5000`: the one replica acknowledged every write so far.
pub fn replica_acked(p: &mut Connection) {
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(p).expect("WAIT");
    assert_eq!(acked, 1, "the replica acknowledged the writes");
}

/// Runs `f(i, con)` on `n` threads, each with its own connection (opened
/// beforehand), released together by a barrier; their results in order.
pub fn race<T: Send + 'static>(
    s: &Server,
    n: usize,
    f: impl Fn(usize, Connection) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let con = s.conn();
            let barrier = barrier.clone();
            let f = f.clone();
            std::thread::spawn(move || {
                barrier.wait();
                f(i, con)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// A connection authenticated as `user` (password `pw`).
pub fn as_user(s: &Server, user: &str) -> Connection {
    let mut c = s.conn();
    let _: () = redis::cmd("AUTH")
        .arg(&[user, "pw"])
        .query(&mut c)
        .unwrap_or_else(|e| panic!("AUTH {user}: {e}"));
    c
}

/// What a `redis-server` that refused to start wrote, and how it exited.
pub struct Refused {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `redis-server args... --port <free port> --bind 127.0.0.1 --save ""
/// --daemonize no` in `dir` and expects it to exit on its own within 10 s;
/// with `never_answers` it must not answer a `PING` meanwhile either.
pub fn start_must_fail(dir: &Path, args: &[String], never_answers: bool) -> Refused {
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
        let answered = never_answers
            && redis::Client::open(format!("redis://127.0.0.1:{port}/"))
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
    Refused {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&errs).unwrap_or_default(),
    }
}

/// Sends a signal (`STOP`, `CONT`, ...) to a process with `kill(1)`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid}");
}

/// A process stopped with SIGSTOP for as long as this lives; SIGCONT on
/// drop (also when the test fails).
pub struct Stopped(pub u32);

impl Stopped {
    pub fn new(pid: u32) -> Stopped {
        signal(pid, "STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.0.to_string())
            .status();
    }
}

/// What every quota test asserts last about replication: the replica holds
/// exactly `expected` (the primary's keys, bytes and absolute expiries,
/// from [`dumps_at`]), it ran no okome command (effects only), and the
/// primary, crashed, replays `expected` from its AOF. The replica's
/// `INFO commandstats`, for further checks.
pub fn assert_replicated_and_replayed(
    primary: &mut Server,
    replica: &mut Connection,
    expected: &std::collections::BTreeMap<String, (Vec<u8>, i64)>,
) -> String {
    assert_eq!(
        &dumps_at(replica),
        expected,
        "the replica holds the same bytes and expiries"
    );
    let stats = info_text(replica, "commandstats");
    assert!(
        !stats.contains("okome"),
        "no okome command replicated: {stats}"
    );
    primary.crash_and_restart();
    assert_eq!(
        &dumps_at(&mut primary.conn()),
        expected,
        "the AOF replays the same bytes and expiries"
    );
    stats
}
