//! okome's test helpers. The server harness (`Server`, `ConfServer`,
//! `Cluster`, `TempDir`, `free_port`, `module_path`, and the conventions:
//! `OKOME_MODULE`, `REDIS_SERVER`, ports below 55535, kill by pid) is the
//! workspace's `okome-testkit` crate, re-exported here; what is here knows
//! okome's commands and replies.
#![allow(dead_code)]

pub mod demo;
pub mod errors;
pub mod ops;

pub use okome_testkit::*;

use std::process::Command;
use std::time::{Duration, Instant};

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

// ------------------------------------------------------------------------
// Added for tests/it/lifecycle.rs, tests/it/deadline_race.rs and tests/it/chaos.rs:
// a raw RESP connection (to pipeline, to read each reply with its own
// deadline, and to see exactly how many replies a request produced), INFO
// and CLIENT LIST parsing, and process signals.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

/// One RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// Bulk strings shown as text, so that failures read well.
impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(e) => write!(f, "-{e}"),
            Resp::Int(i) => write!(f, ":{i}"),
            Resp::Bulk(None) | Resp::Array(None) => write!(f, "nil"),
            Resp::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Resp::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

impl Resp {
    /// The error text, if this is an error reply.
    pub fn error(&self) -> Option<&str> {
        match self {
            Resp::Error(e) => Some(e),
            _ => None,
        }
    }

    /// A simple string, or a bulk string as UTF-8.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Whether this is `+PONG`.
    pub fn is_pong(&self) -> bool {
        matches!(self, Resp::Simple(s) if s == "PONG")
    }

    /// The 6-element `OKOME.PLAN.GET` reply; `Err` with the error text for
    /// an error reply, or a description of anything else.
    pub fn plan(&self) -> Result<Plan, String> {
        let items = match self {
            Resp::Error(e) => return Err(e.clone()),
            Resp::Array(Some(items)) if items.len() == 6 => items,
            other => return Err(format!("not a PLAN.GET reply: {other:?}")),
        };
        let opt_text = |r: &Resp| -> Result<Option<String>, String> {
            match r {
                Resp::Bulk(None) | Resp::Array(None) => Ok(None),
                Resp::Bulk(Some(b)) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
                Resp::Simple(s) => Ok(Some(s.clone())),
                other => Err(format!("not a string: {other:?}")),
            }
        };
        let opt_int = |r: &Resp| -> Result<Option<i64>, String> {
            match r {
                Resp::Bulk(None) | Resp::Array(None) => Ok(None),
                Resp::Int(i) => Ok(Some(*i)),
                other => Err(format!("not an integer: {other:?}")),
            }
        };
        Ok(Plan {
            status: opt_text(&items[0])?.ok_or("nil status")?,
            key: opt_text(&items[1])?.ok_or("nil key")?,
            value: opt_text(&items[2])?,
            ms: opt_int(&items[3])?,
            token: opt_text(&items[4])?,
            rate_remaining: opt_int(&items[5])?,
        })
    }
}

/// The RESP encoding of a command.
pub fn resp_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

/// Parses one reply at `buf[at..]`: `Ok(None)` if it is not complete yet,
/// else the reply and the offset after it.
pub fn parse_resp(buf: &[u8], at: usize) -> Result<Option<(Resp, usize)>, String> {
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = find_crlf(buf, at + 1) else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[at + 1..end]).into_owned();
    let next = end + 2;
    let int = |s: &str| s.parse::<i64>().map_err(|e| format!("bad RESP {s:?}: {e}"));
    match tag {
        b'+' => Ok(Some((Resp::Simple(line), next))),
        b'-' => Ok(Some((Resp::Error(line), next))),
        b':' => Ok(Some((Resp::Int(int(&line)?), next))),
        b'$' => {
            let n = int(&line)?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), next)));
            }
            let n = n as usize;
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            Ok(Some((
                Resp::Bulk(Some(buf[next..next + n].to_vec())),
                next + n + 2,
            )))
        }
        b'*' => {
            let n = int(&line)?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), next)));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut pos = next;
            for _ in 0..n {
                match parse_resp(buf, pos)? {
                    Some((r, p)) => {
                        items.push(r);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), pos)))
        }
        other => Err(format!("bad RESP type byte {other:?} in {:?}", &buf[at..])),
    }
}

/// A plain TCP connection speaking RESP2: commands can be pipelined, and
/// every read has its own deadline, so a lost reply fails a test (as a
/// timeout) instead of hanging it, and an extra reply shows up as the
/// answer to the next command.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// `CLIENT ID` of this connection.
    pub id: i64,
    /// The peer closed the connection (EOF seen).
    pub closed: bool,
}

impl RawConn {
    pub fn connect(port: u16) -> RawConn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = RawConn {
            stream,
            buf: Vec::new(),
            id: 0,
            closed: false,
        };
        c.id = c
            .call(&["CLIENT", "ID"], Duration::from_secs(10))
            .int()
            .expect("CLIENT ID");
        c
    }

    /// Sends one command (does not wait).
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send_raw(&resp_command(args));
    }

    /// Sends several commands in one write (a pipeline).
    pub fn send_pipeline(&mut self, cmds: &[Vec<String>]) {
        let mut out = Vec::new();
        for c in cmds {
            out.extend(resp_command(c));
        }
        self.send_raw(&out);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            // A killed connection: the next read reports it.
            if !matches!(
                e.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) {
                panic!("write: {e}");
            }
        }
    }

    fn take_parsed(&mut self) -> std::io::Result<Option<Resp>> {
        match parse_resp(&self.buf, 0) {
            Ok(Some((r, used))) => {
                self.buf.drain(..used);
                Ok(Some(r))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::new(ErrorKind::InvalidData, e)),
        }
    }

    /// Reads the next reply, waiting at most `within`. A timeout is an
    /// error of kind `TimedOut`; a closed connection `UnexpectedEof`.
    pub fn read(&mut self, within: Duration) -> std::io::Result<Resp> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self.take_parsed()? {
                return Ok(r);
            }
            if self.closed {
                return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no reply within {within:?}"),
                ));
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_micros(100))))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.closed = true
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A reply if one is already complete (reads what has arrived, never
    /// waits).
    pub fn try_read(&mut self) -> std::io::Result<Option<Resp>> {
        if let Some(r) = self.take_parsed()? {
            return Ok(Some(r));
        }
        if self.closed {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        self.stream.set_nonblocking(true)?;
        let mut chunk = [0u8; 16 * 1024];
        let r = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break Ok(());
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.closed = true;
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        self.stream.set_nonblocking(false)?;
        r?;
        if let Some(r) = self.take_parsed()? {
            return Ok(Some(r));
        }
        if self.closed {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        Ok(None)
    }

    /// Sends a command and reads its reply (panics on a timeout or EOF).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A], within: Duration) -> Resp {
        self.send(args);
        match self.read(within) {
            Ok(r) => r,
            Err(e) => panic!(
                "{:?}: {e}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Bytes received but not yet parsed into a reply.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// Every `name:value` field of `INFO <section>`.
pub fn info_map(c: &mut redis::Connection, section: &str) -> BTreeMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    parse_info(&text)
}

pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fields of `INFO okome`, without the `okome_` prefix Redis puts on a
/// module's INFO fields.
pub fn parse_okome_info(text: &str) -> BTreeMap<String, String> {
    parse_info(text)
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("okome_").unwrap_or(&k).to_string(), v))
        .collect()
}

/// The counters of `INFO okome` the waiting invariants are about.
pub const WAIT_COUNTERS: &[&str] = &[
    "wait_blocked",
    "wait_woken",
    "wait_woken_hit",
    "wait_woken_leader",
    "wait_woken_other",
    "wait_timed_out",
    "wait_disconnected",
    "wait_unblocked",
    "waiting_clients",
];

/// The wait counters of `INFO okome` (text of the section given), or the
/// names that are missing.
pub fn wait_counters(info_okome: &str) -> Result<BTreeMap<String, i64>, String> {
    let m = parse_okome_info(info_okome);
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for name in WAIT_COUNTERS {
        match m.get(*name).and_then(|v| v.parse::<i64>().ok()) {
            Some(v) => {
                out.insert(name.to_string(), v);
            }
            None => missing.push(*name),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!("INFO okome lacks {missing:?}:\n{info_okome}"))
    }
}

/// Checks, once nobody waits (`waiting_clients:0`):
/// `wait_blocked == wait_woken + wait_timed_out + wait_disconnected +
/// wait_unblocked` and `wait_woken == wait_woken_hit + wait_woken_leader +
/// wait_woken_other`.
pub fn check_wait_invariants(c: &BTreeMap<String, i64>) -> Result<(), String> {
    let g = |n: &str| c.get(n).copied().unwrap_or(i64::MIN);
    if g("waiting_clients") != 0 {
        return Err(format!("waiting_clients is not 0: {c:?}"));
    }
    let ends = g("wait_woken") + g("wait_timed_out") + g("wait_disconnected") + g("wait_unblocked");
    if g("wait_blocked") != ends {
        return Err(format!(
            "wait_blocked {} != wait_woken + wait_timed_out + wait_disconnected + wait_unblocked = {ends}: {c:?}",
            g("wait_blocked")
        ));
    }
    let woken = g("wait_woken_hit") + g("wait_woken_leader") + g("wait_woken_other");
    if g("wait_woken") != woken {
        return Err(format!(
            "wait_woken {} != wait_woken_hit + wait_woken_leader + wait_woken_other = {woken}: {c:?}",
            g("wait_woken")
        ));
    }
    Ok(())
}

/// `CLIENT LIST` as one map of fields per client.
pub fn client_list(c: &mut redis::Connection) -> Vec<BTreeMap<String, String>> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(c)
        .expect("CLIENT LIST");
    list.lines()
        .map(|line| {
            line.split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Ids of the clients blocked now (flag `b`).
pub fn blocked_client_ids(c: &mut redis::Connection) -> std::collections::BTreeSet<i64> {
    client_list(c)
        .into_iter()
        .filter(|m| m.get("flags").is_some_and(|f| f.contains('b')))
        .filter_map(|m| m.get("id").and_then(|v| v.parse().ok()))
        .collect()
}

/// Polls until every id in `ids` is blocked (panics after `within`).
pub fn wait_ids_blocked(c: &mut redis::Connection, ids: &[i64], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let b = blocked_client_ids(c);
        if ids.iter().all(|i| b.contains(i)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all of {ids:?} blocked within {within:?}; blocked: {b:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
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

/// Polls a replica until its link to the primary is up (panics after
/// `within`).
pub fn wait_link_up(replica: &mut redis::Connection, within: Duration) {
    let deadline = Instant::now() + within;
    let mut info = String::new();
    while Instant::now() < deadline {
        info = redis::cmd("INFO")
            .arg("replication")
            .query(replica)
            .expect("INFO replication");
        if info.lines().any(|l| l.trim() == "master_link_status:up") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("replica link not up within {within:?}:\n{info}");
}
