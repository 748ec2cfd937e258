//! Client-side caching of okome's reads (RESP3 `CLIENT TRACKING`). okome
//! declares the keys a call touches, so Redis tracks what a read-only okome
//! command read and invalidates it when anyone writes it:
//!
//! - `OKOME.CACHE.GET` (tools, model_meta, rag, health) is invalidated by
//!   every write of its key: `OKOME.CACHE.SET` (with or without `AGENT`),
//!   `OKOME.AGENT.PURGE` deleting it, plain `SET` and `DEL`;
//! - `OKOME.AGENT.KEYS` is invalidated by every write of the ledger it
//!   read: `CACHE.SET ... AGENT`, `PLAN.SET ... AGENT`, `AGENT.RECORD`,
//!   `AGENT.PURGE`, `DEL`, `SET`;
//! - `OKOME.PLAN.GET` / `OKOME.PLAN.LOOKUP` are write commands (they take
//!   locks), whose reads Redis never tracks (as `GETEX`): no invalidation
//!   for a plan read only through them; a plan cannot be read with
//!   `OKOME.CACHE.GET` (planner is not a cache kind), and a plain `GET` of
//!   the planner key is tracked like any read;
//! - `BCAST` tracking with prefix `okome:` sees every key okome writes, and
//!   nothing for a call that writes nothing.
//!
//! The tracking client speaks raw RESP3 (`HELLO 3`), so pushes (`>`) are
//! seen exactly as the server sends them; writes come from another
//! connection. After each write the tracking client sends `PING`: every
//! invalidation the write caused was queued before the `PONG`, so what
//! arrives before it is exactly what the write caused.

use crate::support::*;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- RESP3

/// One RESP3 frame.
#[derive(Clone, PartialEq)]
enum R3 {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Bool(bool),
    /// A double, big number or verbatim string, as sent.
    Other(String),
    Array(Vec<R3>),
    Map(Vec<(R3, R3)>),
    Set(Vec<R3>),
    Push(Vec<R3>),
}

impl std::fmt::Debug for R3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            R3::Simple(s) => write!(f, "+{s}"),
            R3::Error(e) => write!(f, "-{e}"),
            R3::Int(i) => write!(f, ":{i}"),
            R3::Bulk(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            R3::Null => write!(f, "nil"),
            R3::Bool(b) => write!(f, "#{b}"),
            R3::Other(s) => write!(f, "{s}"),
            R3::Array(v) => f.debug_list().entries(v).finish(),
            R3::Set(v) => write!(f, "~{v:?}"),
            R3::Push(v) => write!(f, ">{v:?}"),
            R3::Map(m) => f
                .debug_map()
                .entries(m.iter().map(|(k, v)| (k, v)))
                .finish(),
        }
    }
}

impl R3 {
    fn text(&self) -> Option<String> {
        match self {
            R3::Simple(s) => Some(s.clone()),
            R3::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    fn items(&self) -> Option<&[R3]> {
        match self {
            R3::Array(v) | R3::Set(v) | R3::Push(v) => Some(v),
            _ => None,
        }
    }
}

fn bulk(s: &str) -> R3 {
    R3::Bulk(s.as_bytes().to_vec())
}

/// Parses one frame at `buf[at..]`: `Ok(None)` if incomplete.
fn parse(buf: &[u8], at: usize) -> Result<Option<(R3, usize)>, String> {
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = find_crlf(buf, at + 1) else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[at + 1..end]).into_owned();
    let next = end + 2;
    let int = |s: &str| s.parse::<i64>().map_err(|e| format!("bad RESP {s:?}: {e}"));
    let items = |n: i64, mut pos: usize| -> Result<Option<(Vec<R3>, usize)>, String> {
        let mut out = Vec::new();
        for _ in 0..n {
            match parse(buf, pos)? {
                Some((r, p)) => {
                    out.push(r);
                    pos = p;
                }
                None => return Ok(None),
            }
        }
        Ok(Some((out, pos)))
    };
    Ok(match tag {
        b'+' => Some((R3::Simple(line), next)),
        b'-' => Some((R3::Error(line), next)),
        b':' => Some((R3::Int(int(&line)?), next)),
        b'_' => Some((R3::Null, next)),
        b'#' => Some((R3::Bool(line == "t"), next)),
        b',' | b'(' => Some((R3::Other(line), next)),
        b'$' | b'=' | b'!' => {
            let n = int(&line)?;
            if n < 0 {
                return Ok(Some((R3::Null, next)));
            }
            let n = n as usize;
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            let body = buf[next..next + n].to_vec();
            let r = match tag {
                b'$' => R3::Bulk(body),
                b'!' => R3::Error(String::from_utf8_lossy(&body).into_owned()),
                _ => R3::Other(String::from_utf8_lossy(&body).into_owned()),
            };
            Some((r, next + n + 2))
        }
        b'*' | b'~' | b'>' => {
            let n = int(&line)?;
            if n < 0 {
                return Ok(Some((R3::Null, next)));
            }
            items(n, next)?.map(|(v, p)| {
                let r = match tag {
                    b'*' => R3::Array(v),
                    b'~' => R3::Set(v),
                    _ => R3::Push(v),
                };
                (r, p)
            })
        }
        b'%' => {
            let n = int(&line)?;
            items(2 * n, next)?.map(|(v, p)| {
                let pairs = v
                    .chunks(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect();
                (R3::Map(pairs), p)
            })
        }
        other => return Err(format!("bad RESP3 type byte {other:?}")),
    })
}

/// A RESP3 connection with `CLIENT TRACKING` on. Replies and pushes are
/// told apart; pushes that arrive while waiting for a reply are kept.
struct Tracker {
    stream: TcpStream,
    buf: Vec<u8>,
    pushes: Vec<R3>,
}

impl Tracker {
    /// Connects, `HELLO 3`, then `CLIENT TRACKING on` with `options`.
    fn connect(port: u16, options: &[&str]) -> Tracker {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut t = Tracker {
            stream,
            buf: Vec::new(),
            pushes: Vec::new(),
        };
        match t.call(&["HELLO", "3"]) {
            R3::Map(m) => assert!(m.contains(&(bulk("proto"), R3::Int(3))), "HELLO 3: {m:?}"),
            other => panic!("HELLO 3: {other:?}"),
        }
        let mut args = vec!["CLIENT", "TRACKING", "on"];
        args.extend_from_slice(options);
        assert_eq!(t.call(&args), R3::Simple("OK".into()), "{args:?}");
        t
    }

    fn frame(&mut self) -> R3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((r, used)) = parse(&self.buf, 0).expect("RESP3") {
                self.buf.drain(..used);
                return r;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no reply within 10 s");
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Sends a command; returns its reply, keeping pushes aside.
    fn call(&mut self, args: &[&str]) -> R3 {
        self.stream.write_all(&resp_command(args)).expect("write");
        loop {
            match self.frame() {
                p @ R3::Push(_) => self.pushes.push(p),
                r => return r,
            }
        }
    }

    /// The invalidations received since the last call, each as the keys it
    /// names (`None` for a flush), in order. Any other push fails the test.
    fn invalidated(&mut self) -> Vec<Option<Vec<String>>> {
        assert_eq!(self.call(&["PING"]), R3::Simple("PONG".into()));
        std::mem::take(&mut self.pushes)
            .into_iter()
            .map(|p| match p.items() {
                Some([kind, keys]) if kind.text().as_deref() == Some("invalidate") => match keys {
                    R3::Null => None,
                    keys => Some(
                        keys.items()
                            .unwrap_or_else(|| panic!("invalidate names {keys:?}"))
                            .iter()
                            .map(|k| k.text().expect("a key name"))
                            .collect(),
                    ),
                },
                _ => panic!("unexpected push {p:?}"),
            })
            .collect()
    }

    /// Asserts the invalidations since the last call are exactly one push
    /// naming exactly `keys` (any order), or none for `&[]`.
    fn expect(&mut self, keys: &[&str], after: &str) {
        let got = self.invalidated();
        if keys.is_empty() {
            assert!(got.is_empty(), "after {after}: {got:?}, want none");
            return;
        }
        let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        want.sort();
        let got_sorted: Vec<Option<Vec<String>>> = got
            .iter()
            .map(|k| {
                k.clone().map(|mut v| {
                    v.sort();
                    v
                })
            })
            .collect();
        assert_eq!(
            got_sorted,
            vec![Some(want)],
            "after {after}: invalidations {got:?}"
        );
    }
}

/// `OKOME.CACHE.GET` through the tracker: `Some((value, ttl_ms))` or nil.
fn cache_get(t: &mut Tracker, kind: &str, parts: &[&str]) -> Option<(String, i64)> {
    let mut args = vec!["OKOME.CACHE.GET", kind];
    args.extend_from_slice(parts);
    match t.call(&args) {
        R3::Null => None,
        R3::Array(v) => match v.as_slice() {
            [value, R3::Int(ttl)] => Some((value.text().expect("a value"), *ttl)),
            other => panic!("{args:?}: {other:?}"),
        },
        other => panic!("{args:?}: {other:?}"),
    }
}

/// `OKOME.AGENT.KEYS` through the tracker: the keys listed with their
/// state (`current`, `rewritten`, `gone`), on its one page.
fn agent_keys(t: &mut Tracker, agent: &str) -> Vec<(String, String)> {
    let r = t.call(&["OKOME.AGENT.KEYS", agent]);
    match r.items() {
        Some([cursor, entries]) => {
            assert_eq!(cursor.text().as_deref(), Some("0"), "{r:?}");
            entries
                .items()
                .unwrap_or_else(|| panic!("{r:?}"))
                .iter()
                .map(|e| match e.items() {
                    Some([key, R3::Int(_), state]) => {
                        (key.text().expect("a key"), state.text().expect("a state"))
                    }
                    _ => panic!("AGENT.KEYS entry {e:?}"),
                })
                .collect()
        }
        _ => panic!("AGENT.KEYS {agent}: {r:?}"),
    }
}

fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ----------------------------------------------------------------- tests

/// Every write of a cache value invalidates a tracked `OKOME.CACHE.GET` of
/// it, once per read, for each of the four kinds; a write of another key or
/// a refused write does not.
#[test]
fn cache_get_is_invalidated_by_every_write_of_its_key() {
    let s = Server::start();
    let mut w = s.conn();
    let cases: [(&str, &[&str], &str, i64); 4] = [
        ("tools", &["v1"], "okome:tools:{v1}", 600_000),
        (
            "model_meta",
            &["llama3:8b"],
            "okome:model_meta:{llama3%3A8b}",
            86_400_000,
        ),
        ("rag", &["myrepo", "c1"], "okome:rag:{myrepo}:c1", 3_600_000),
        ("health", &["node-1"], "okome:health:{node-1}", 30_000),
    ];
    for (kind, parts, key, ttl) in cases {
        let mut t = Tracker::connect(s.port, &[]);
        let set = |w: &mut redis::Connection, json: &str, extra: &[&str]| {
            let mut args = vec!["OKOME.CACHE.SET", kind];
            args.extend_from_slice(parts);
            args.push(json);
            args.extend_from_slice(extra);
            assert_eq!(must(w, &args), redis::Value::Int(ttl), "{args:?}");
        };
        let read = |t: &mut Tracker| cache_get(t, kind, parts);
        let fresh = |got: Option<(String, i64)>, want: &str| match got {
            Some((v, left)) if v == want && left > 0 && left <= ttl => {}
            other => panic!("{kind}: read {other:?}, want [{want}, ~{ttl}]"),
        };

        // A value never stored: read as nil, and tracked all the same.
        assert_eq!(read(&mut t), None);
        set(&mut w, r#"{"v":0}"#, &[]);
        t.expect(&[key], &format!("{kind}: CACHE.SET of a key read as nil"));

        fresh(read(&mut t), r#"{"v":0}"#);
        set(&mut w, r#"{"v":1}"#, &[]);
        t.expect(&[key], &format!("{kind}: CACHE.SET"));
        // One invalidation per read: a second write, unread, sends none.
        set(&mut w, r#"{"v":2}"#, &[]);
        t.expect(&[], &format!("{kind}: a second CACHE.SET, not read again"));

        fresh(read(&mut t), r#"{"v":2}"#);
        // Writes of other keys, a refused write and the write of a lock
        // change nothing the tracker read.
        assert_eq!(
            must(&mut w, &["OKOME.CACHE.SET", "tools", "other", "{}"]),
            redis::Value::Int(600_000)
        );
        let mut bad = vec!["OKOME.CACHE.SET", kind];
        bad.extend_from_slice(parts);
        bad.push("{x");
        assert_eq!(
            call(&mut w, &bad),
            Err("ERR value_json is not valid JSON (at byte 2)".into())
        );
        let lock = must(&mut w, &["OKOME.LOCK", key]);
        assert!(matches!(lock, redis::Value::BulkString(_)), "{lock:?}");
        t.expect(&[], &format!("{kind}: other keys, a refused write, a lock"));

        set(&mut w, r#"{"v":3}"#, &["AGENT", "agent-t"]);
        t.expect(&[key], &format!("{kind}: CACHE.SET ... AGENT"));

        fresh(read(&mut t), r#"{"v":3}"#);
        must(&mut w, &["SET", key, r#"{"v":4}"#]);
        t.expect(&[key], &format!("{kind}: SET"));

        match read(&mut t) {
            Some((v, -1)) if v == r#"{"v":4}"# => {}
            other => panic!("{kind}: after SET: {other:?}"),
        }
        assert_eq!(must(&mut w, &["DEL", key]), redis::Value::Int(1));
        t.expect(&[key], &format!("{kind}: DEL"));

        // AGENT.PURGE deletes the value still holding the agent's write.
        assert_eq!(read(&mut t), None);
        set(&mut w, r#"{"v":5}"#, &["AGENT", "agent-p"]);
        t.expect(&[key], &format!("{kind}: CACHE.SET ... AGENT agent-p"));
        fresh(read(&mut t), r#"{"v":5}"#);
        let purged: (i64, i64, i64, i64, Vec<redis::Value>) = redis::cmd("OKOME.AGENT.PURGE")
            .arg("agent-p")
            .query(&mut w)
            .unwrap();
        assert_eq!(purged, (1, 0, 0, 0, vec![]));
        t.expect(&[key], &format!("{kind}: AGENT.PURGE"));
        assert_eq!(read(&mut t), None);
        must(&mut w, &["FLUSHALL"]);
        assert_eq!(t.invalidated(), vec![None], "{kind}: FLUSHALL");
    }
}

/// A tracked `OKOME.AGENT.KEYS` is invalidated by every write of the ledger
/// it read.
#[test]
fn agent_keys_is_invalidated_by_every_write_of_the_ledger() {
    let s = Server::start();
    let mut w = s.conn();
    let mut t = Tracker::connect(s.port, &[]);
    let ledger = "okome:budget:keys:{agent-t}";
    let tools = "okome:tools:{v1}";
    let meta = "okome:model_meta:{m}";
    let plan = okome_key(
        &mut w,
        "planner",
        &["llama3:8b", "plan the ledger", "v1", "abc123"],
    );

    // An empty ledger, read and tracked.
    assert_eq!(agent_keys(&mut t, "agent-t"), vec![]);
    must(
        &mut w,
        &["OKOME.CACHE.SET", "tools", "v1", "{}", "AGENT", "agent-t"],
    );
    t.expect(&[ledger], "CACHE.SET ... AGENT");

    assert_eq!(agent_keys(&mut t, "agent-t"), owned(&[(tools, "current")]));
    must(&mut w, &["OKOME.CACHE.SET", "model_meta", "m", "{}"]);
    t.expect(&[], "CACHE.SET without AGENT of another key");
    must(&mut w, &["OKOME.AGENT.RECORD", "agent-t", meta]);
    t.expect(&[ledger], "AGENT.RECORD");

    assert_eq!(
        agent_keys(&mut t, "agent-t"),
        owned(&[(meta, "current"), (tools, "current")])
    );
    must(&mut w, &["OKOME.PLAN.SET", &plan, "{}", "AGENT", "agent-t"]);
    t.expect(&[ledger], "PLAN.SET ... AGENT");

    let mut listed = agent_keys(&mut t, "agent-t");
    listed.sort();
    let mut want = owned(&[(meta, "current"), (tools, "current"), (&plan, "current")]);
    want.sort();
    assert_eq!(listed, want);
    // A write to another agent's ledger is not this one.
    must(
        &mut w,
        &["OKOME.CACHE.SET", "tools", "v2", "{}", "AGENT", "agent-u"],
    );
    t.expect(&[], "another agent's ledger");
    let purged: (i64, i64, i64, i64, Vec<redis::Value>) = redis::cmd("OKOME.AGENT.PURGE")
        .arg("agent-t")
        .query(&mut w)
        .unwrap();
    assert_eq!(purged, (3, 0, 0, 0, vec![]));
    t.expect(&[ledger], "AGENT.PURGE");

    assert_eq!(agent_keys(&mut t, "agent-t"), vec![]);
    must(
        &mut w,
        &["OKOME.CACHE.SET", "tools", "v1", "{}", "AGENT", "agent-t"],
    );
    t.expect(&[ledger], "CACHE.SET ... AGENT after the purge");

    assert_eq!(agent_keys(&mut t, "agent-t"), owned(&[(tools, "current")]));
    assert_eq!(must(&mut w, &["DEL", ledger]), redis::Value::Int(1));
    t.expect(&[ledger], "DEL");

    assert_eq!(agent_keys(&mut t, "agent-t"), vec![]);
    must(&mut w, &["SET", ledger, "not a ledger"]);
    t.expect(&[ledger], "SET");
}

/// `PLAN.LOOKUP` and `PLAN.GET` read plans as write commands: Redis tracks
/// nothing they read, so no invalidation reaches a client that read a plan
/// only through them. A plan is not a cache kind; the tracked read of a
/// plan is a plain `GET` of its key, invalidated by `PLAN.SET` and `DEL`.
#[test]
fn plan_reads_are_tracked_only_through_get() {
    let s = Server::start();
    let mut w = s.conn();
    let mut t = Tracker::connect(s.port, &[]);
    let a = ["llama3:8b", "plan the cache", "v1", "abc123"];
    let key = okome_key(&mut w, "planner", &a);
    let lock = format!("{key}:lock");
    let store = |w: &mut redis::Connection, json: &str, extra: &[&str]| {
        let mut args = vec!["OKOME.PLAN.SET", &key, json];
        args.extend_from_slice(extra);
        let r: (String, i64, Option<i64>, i64) = redis::cmd(args[0])
            .arg(&args[1..])
            .query(w)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(
            (r.0.as_str(), r.1, r.2),
            ("STORED", 600_000, None),
            "{args:?}"
        );
        r.3
    };
    let lookup = |t: &mut Tracker, extra: &[&str]| -> Plan {
        let mut args = vec!["OKOME.PLAN.LOOKUP", key.as_str()];
        args.extend_from_slice(extra);
        let r = t.call(&args);
        let items: Vec<String> = r
            .items()
            .unwrap_or_else(|| panic!("{args:?}: {r:?}"))
            .iter()
            .map(|i| match i {
                R3::Int(n) => n.to_string(),
                R3::Null => "nil".into(),
                other => other.text().expect("a string"),
            })
            .collect();
        let opt = |s: &String| (s != "nil").then(|| s.clone());
        Plan {
            status: items[0].clone(),
            key: items[1].clone(),
            value: opt(&items[2]),
            ms: opt(&items[3]).map(|m| m.parse().unwrap()),
            token: opt(&items[4]),
            rate_remaining: opt(&items[5]).map(|m| m.parse().unwrap()),
        }
    };

    // The leader's lookup takes the lock: a write command, nothing tracked.
    let miss = lookup(&mut t, &[]);
    assert_eq!(
        (miss.status.as_str(), miss.key.as_str()),
        ("MISS", key.as_str())
    );
    let token = miss.token.expect("a token");
    assert_eq!(store(&mut w, r#"{"s":1}"#, &["TOKEN", &token]), 1);
    t.expect(&[], "PLAN.SET of a plan looked up (MISS)");

    let hit = lookup(&mut t, &[]);
    assert_eq!(
        (hit.status.as_str(), hit.value.as_deref()),
        ("HIT", Some(r#"{"s":1}"#))
    );
    let hit = lookup(&mut t, &["NOLOCK"]);
    assert_eq!(hit.status, "HIT");
    let mut args = vec!["OKOME.PLAN.GET"];
    args.extend_from_slice(&a);
    let r = t.call(&args);
    assert_eq!(
        r.items().and_then(|i| i[0].text()).as_deref(),
        Some("HIT"),
        "{r:?}"
    );
    assert_eq!(store(&mut w, r#"{"s":2}"#, &[]), 0);
    let lock_token = must(&mut w, &["OKOME.LOCK", &key]);
    assert!(
        matches!(lock_token, redis::Value::BulkString(_)),
        "{lock_token:?}"
    );
    t.expect(
        &[],
        "PLAN.SET and LOCK of a plan read by LOOKUP/PLAN.GET (HIT)",
    );
    assert_eq!(must(&mut w, &["DEL", &key, &lock]), redis::Value::Int(2));
    t.expect(&[], "DEL of a plan read by LOOKUP/PLAN.GET");

    // There is no cache read of a plan.
    let r = t.call(&["OKOME.CACHE.GET", "planner", "llama3:8b"]);
    let e = match &r {
        R3::Error(e) => e.clone(),
        other => panic!("CACHE.GET planner: {other:?}"),
    };
    assert!(
        e.starts_with("ERR ") && e.contains("planner"),
        "CACHE.GET planner: {e}"
    );
    t.expect(&[], "a refused CACHE.GET");

    // GET of the planner key is a tracked read.
    assert_eq!(t.call(&["GET", &key]), R3::Null);
    assert_eq!(store(&mut w, r#"{"s":3}"#, &[]), 0);
    t.expect(&[&key], "PLAN.SET of a plan read by GET (nil)");
    assert_eq!(t.call(&["GET", &key]), bulk(r#"{"s":3}"#));
    assert_eq!(store(&mut w, r#"{"s":4}"#, &["AGENT", "agent-t"]), 0);
    t.expect(&[&key], "PLAN.SET ... AGENT of a plan read by GET");
    assert_eq!(t.call(&["GET", &key]), bulk(r#"{"s":4}"#));
    // A lookup (HIT) and a lock write nothing to the plan.
    let hit = lookup(&mut t, &[]);
    assert_eq!(hit.status, "HIT");
    must(&mut w, &["OKOME.LOCK", &key]);
    t.expect(&[], "LOOKUP and LOCK of a plan read by GET");
    assert_eq!(must(&mut w, &["DEL", &key]), redis::Value::Int(1));
    t.expect(&[&key], "DEL of a plan read by GET");
}

/// `CLIENT TRACKING on BCAST PREFIX okome:`: every key okome writes, and
/// only those: a read, a refused charge, a held lock and a `LOCKED` lookup
/// send nothing.
#[test]
fn bcast_tracking_sees_every_key_okome_writes() {
    let s = Server::start();
    let mut w = s.conn();
    let mut t = Tracker::connect(s.port, &["BCAST", "PREFIX", "okome:"]);
    let plan = okome_key(
        &mut w,
        "planner",
        &["llama3:8b", "plan the broadcast", "v1", "abc123"],
    );
    let plan_lock = format!("{plan}:lock");
    let tools = "okome:tools:{v1}";
    let tools_lock = "okome:tools:{v1}:lock";

    must(&mut w, &["OKOME.RATE", "a-1", "1", "60"]);
    t.expect(&["okome:budget:rate:{a-1}"], "RATE");
    must(&mut w, &["OKOME.RATE", "a-1", "1", "60"]);
    t.expect(&[], "a refused RATE");
    must(&mut w, &["OKOME.RATE", "a-1", "1", "60", "COST", "0"]);
    t.expect(&[], "RATE COST 0");
    must(&mut w, &["OKOME.WBUDGET", "a-1", "5"]);
    t.expect(&["okome:budget:write:{a-1}"], "WBUDGET");

    must(&mut w, &["OKOME.CACHE.SET", "tools", "v1", "{}"]);
    t.expect(&[tools], "CACHE.SET");
    must(&mut w, &["OKOME.CACHE.GET", "tools", "v1"]);
    t.expect(&[], "CACHE.GET");

    let token: String = redis::cmd("OKOME.LOCK").arg(tools).query(&mut w).unwrap();
    t.expect(&[tools_lock], "LOCK");
    assert_eq!(must(&mut w, &["OKOME.LOCK", tools]), redis::Value::Nil);
    t.expect(&[], "LOCK of a held lock");
    assert_eq!(
        must(
            &mut w,
            &["OKOME.LOCK", tools, "TTL", "10000", "TOKEN", &token]
        ),
        redis::Value::Int(1)
    );
    t.expect(&[tools_lock], "LOCK ... TOKEN (extension)");
    assert_eq!(
        must(&mut w, &["OKOME.UNLOCK", tools, "wrong"]),
        redis::Value::Int(0)
    );
    t.expect(&[], "UNLOCK with another token");
    assert_eq!(
        must(&mut w, &["OKOME.UNLOCK", tools, &token]),
        redis::Value::Int(1)
    );
    t.expect(&[tools_lock], "UNLOCK");

    let miss = try_plan_get(&mut w, &["llama3:8b", "plan the broadcast", "v1", "abc123"]).unwrap();
    assert_eq!(miss.status, "MISS");
    t.expect(&[&plan_lock], "PLAN.GET (MISS)");
    let locked = lookup_status(&mut w, &plan);
    assert_eq!(locked, "LOCKED");
    t.expect(&[], "PLAN.LOOKUP (LOCKED)");
    let stored = plan_store(
        &mut w,
        &[&plan, "{}", "TOKEN", miss.token.as_deref().unwrap()],
    );
    assert_eq!(stored, ("STORED".into(), 600_000, None, 1));
    t.expect(&[&plan, &plan_lock], "PLAN.SET ... TOKEN");
    assert_eq!(lookup_status(&mut w, &plan), "HIT");
    t.expect(&[], "PLAN.LOOKUP (HIT)");

    must(
        &mut w,
        &["OKOME.CACHE.SET", "tools", "v1", "{}", "AGENT", "a-1"],
    );
    t.expect(&[tools, "okome:budget:keys:{a-1}"], "CACHE.SET ... AGENT");
    must(&mut w, &["OKOME.AGENT.KEYS", "a-1"]);
    t.expect(&[], "AGENT.KEYS");
    must(&mut w, &["OKOME.AGENT.PURGE", "a-1"]);
    t.expect(&[tools, "okome:budget:keys:{a-1}"], "AGENT.PURGE");

    must(&mut w, &["SET", "other", "1"]);
    t.expect(&[], "SET outside the prefix");
    must(&mut w, &["SET", "okome:x", "1"]);
    t.expect(&["okome:x"], "SET under the prefix");
}

/// The status of `OKOME.PLAN.LOOKUP key` on a plain connection.
fn lookup_status(w: &mut redis::Connection, key: &str) -> String {
    plan_lookup(w, &[key]).status
}
