//! Replication and persistence: the module writes through the low-level key
//! API and propagates deterministic effects itself (`SET key value PXAT t`,
//! `PEXPIREAT key t`, `DEL key`). A replica and an AOF replay must therefore
//! hold byte-identical keys (random lock tokens included) with the same
//! absolute expiry times as the primary, and the replication stream must
//! never carry an `OKOME.*` command.

use crate::support::*;

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------- helpers

/// A random 32-hex-digit string (never a token the server handed out).
fn random_hex() -> String {
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// What the workload leaves behind, to check against.
struct Workload {
    /// Lock keys that must still be held, with the token the client got.
    held_locks: Vec<(String, String)>,
    /// Keys that must not exist (released locks).
    gone: Vec<String>,
    /// Plan keys and the value stored last.
    plans: Vec<(String, String)>,
}

/// A mixed workload of every write path: PLAN.GET misses (new locks with
/// random tokens), LOCKED and HIT lookups, PLAN.SET with and without the
/// holder's token and with explicit TTLs, LOCK acquire and extend, UNLOCK,
/// CACHE.SET for every kind (twice for one key, to overwrite a TTL).
fn workload(con: &mut redis::Connection) -> Workload {
    let mut w = Workload {
        held_locks: Vec::new(),
        gone: Vec::new(),
        plans: Vec::new(),
    };
    let models = ["llama3:8b", "qwen2.5-coder:7b", "mistral"];
    let mut misses = Vec::new();
    for (i, model) in models.iter().enumerate() {
        let prompt = format!("Create a plan for task {i}\nwith a newline and {{braces}}");
        let args = [*model, prompt.as_str(), "v1.2.3", "abc123"];
        let lockttl = (8000 + 500 * i).to_string();
        let mut a = args.to_vec();
        a.extend(["LOCKTTL", lockttl.as_str()]);
        let m = plan_get(con, &a);
        assert_eq!(m.status, "MISS", "{m:?}");
        let token = m.token.clone().expect("a token on MISS");
        let again = plan_get(con, &args);
        assert_eq!(again.status, "LOCKED", "{again:?}");
        misses.push((m.key.clone(), token, args.map(String::from)));
    }

    // Miss 0: stored with the holder's token (lock released), explicit TTL.
    let (k0, t0, a0) = &misses[0];
    let v0 = r#"{"steps":["read","edit","test"],"n":0}"#;
    let r = plan_store(con, &[k0, v0, "TTL", "300", "TOKEN", t0]);
    assert_eq!(r, ("STORED".into(), 300_000, None, 1));
    w.gone.push(format!("{k0}:lock"));
    w.plans.push((k0.clone(), v0.into()));
    let a0: Vec<&str> = a0.iter().map(String::as_str).collect();
    let hit = plan_get(con, &a0);
    assert_eq!(hit.status, "HIT", "{hit:?}");
    assert_eq!(hit.value.as_deref(), Some(v0));

    // Miss 1: stored with a wrong token (lock stays held), default TTL, then
    // overwritten by the holder with TTL 900 (lock released).
    let (k1, t1, _) = &misses[1];
    let wrong = random_hex();
    let r = plan_store(con, &[k1, r#"{"v":1}"#, "TOKEN", &wrong]);
    assert_eq!(r, ("STORED".into(), 600_000, None, 0));
    assert_eq!(get(con, &format!("{k1}:lock")).as_ref(), Some(t1));
    let v1 = r#"{"v":2,"s":"\u00e9t\u00e9"}"#;
    let r = plan_store(con, &[k1, v1, "TTL", "900", "TOKEN", t1]);
    assert_eq!(r, ("STORED".into(), 900_000, None, 1));
    w.gone.push(format!("{k1}:lock"));
    w.plans.push((k1.clone(), v1.into()));

    // Miss 2: stored without any token: the lock stays held.
    let (k2, t2, _) = &misses[2];
    let v2 = "[1,2,3]";
    let r = plan_store(con, &[k2, v2, "TTL", "450"]);
    assert_eq!(r, ("STORED".into(), 450_000, None, 0));
    w.held_locks.push((format!("{k2}:lock"), t2.clone()));
    w.plans.push((k2.clone(), v2.into()));

    // OKOME.LOCK: acquire, contend, extend with the token, fail to extend
    // with a wrong one; a second lock acquired and released; a third held.
    let rag = okome_key(con, "rag", &["repo-x", "chunk-1"]);
    let t = match lock(con, &[&rag]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        v => panic!("LOCK acquire: {v:?}"),
    };
    assert_eq!(lock(con, &[&rag]), redis::Value::Nil, "held");
    assert_eq!(
        lock(con, &[&rag, "TTL", "10000", "TOKEN", &t]),
        redis::Value::Int(1)
    );
    assert_eq!(
        lock(con, &[&rag, "TTL", "10000", "TOKEN", &random_hex()]),
        redis::Value::Int(0)
    );
    w.held_locks.push((format!("{rag}:lock"), t));

    let tools = okome_key(con, "tools", &["v9"]);
    let t = match lock(con, &[&tools, "TTL", "8000"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        v => panic!("LOCK acquire: {v:?}"),
    };
    let un: i64 = redis::cmd("OKOME.UNLOCK")
        .arg(&[tools.as_str(), &random_hex()])
        .query(con)
        .unwrap();
    assert_eq!(un, 0, "a wrong token does not unlock");
    let un = unlock(con, tools.as_str(), &t);
    assert_eq!(un, 1);
    w.gone.push(format!("{tools}:lock"));

    let health = okome_key(con, "health", &["node-7"]);
    let t = match lock(con, &[&health, "TTL", "9500"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        v => panic!("LOCK acquire: {v:?}"),
    };
    w.held_locks.push((format!("{health}:lock"), t));

    // CACHE.SET for every kind; one key written twice with different TTLs.
    assert_eq!(
        cache_set(con, &["model_meta", "llama3:8b", r#"{"ctx":8192}"#]),
        86_400_000
    );
    assert_eq!(
        cache_set(con, &["rag", "repo-x", "chunk-1", r#"{"text":"a"}"#]),
        3_600_000
    );
    assert_eq!(
        cache_set(
            con,
            &["rag", "repo-x", "chunk-1", r#"{"text":"b"}"#, "TTL", "1800"]
        ),
        1_800_000
    );
    assert_eq!(
        cache_set(
            con,
            &["rag", "repo y", "chunk*2", r#"{"text":"c"}"#, "TTL", "2700"]
        ),
        2_700_000
    );
    assert_eq!(
        cache_set(con, &["tools", "v9", r#"["grep","sed"]"#]),
        600_000
    );
    assert_eq!(
        cache_set(con, &["health", "node-7", r#"{"ok":true}"#]),
        30_000
    );
    let got: Option<(String, i64)> = redis::cmd("OKOME.CACHE.GET")
        .arg(&["rag", "repo-x", "chunk-1"])
        .query(con)
        .unwrap();
    assert!(
        matches!(&got, Some((v, ms)) if v == r#"{"text":"b"}"# && (1_790_000..=1_800_000).contains(ms)),
        "{got:?}"
    );

    // Stale-while-revalidate: miss 0's plan (TTL 300 s) is in a 900 s
    // refresh zone; the refresher replaces it with its token.
    let refresh = plan_get(con, &[&a0[..], &["REFRESHAHEAD", "900000"]].concat());
    assert_eq!(refresh.status, "REFRESH", "{refresh:?}");
    let v0b = r#"{"steps":["refreshed"]}"#;
    let r = plan_store(con, &[k0, v0b, "TOKEN", refresh.token.as_deref().unwrap()]);
    assert_eq!(r, ("STORED".into(), 600_000, None, 1));
    w.plans.retain(|(k, _)| k != k0);
    w.plans.push((k0.clone(), v0b.into()));

    // Rate and write-budget charges, alone and inside PLAN.GET / PLAN.SET.
    for i in 0..6 {
        let r: (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
            .arg(&["agent-r", "5", "60"])
            .query(con)
            .unwrap();
        assert_eq!(r.0, i64::from(i < 5));
    }
    let r: (i64, i64, i64, i64) = redis::cmd("OKOME.WBUDGET")
        .arg(&["agent-r", "3", "COST", "2"])
        .query(con)
        .unwrap();
    assert_eq!((r.0, r.1), (1, 1));
    let m = plan_get(
        con,
        &[
            "m", "budgeted", "t", "r", "AGENT", "agent-b", "LIMIT", "10", "WINDOW", "30",
        ],
    );
    assert_eq!((m.status.as_str(), m.rate_remaining), ("MISS", Some(9)));
    let r = plan_store(
        con,
        &[
            &m.key,
            "{}",
            "TOKEN",
            m.token.as_deref().unwrap(),
            "AGENT",
            "agent-b",
            "WLIMIT",
            "3",
            "WWINDOW",
            "20",
        ],
    );
    assert_eq!(r, ("STORED".into(), 600_000, Some(2), 1));
    w.plans.push((m.key.clone(), "{}".into()));
    w
}

/// Every key with its DUMP and PTTL, checking each has a TTL.
fn record(con: &mut redis::Connection, who: &str) -> BTreeMap<String, (Vec<u8>, i64)> {
    let out = dumps_ttl(con);
    for (k, (_, t)) in &out {
        assert!(*t > 0, "{who}: key {k} has no TTL (PTTL {t})");
    }
    out
}

// ------------------------------------------------------------ replication

#[test]
fn replica_holds_identical_keys_and_ttls() {
    let primary = Server::start_with(PRIMARY);
    let replica = replica_of(&primary, &[], &[]);
    let mut p = primary.conn();
    let mut r = replica.conn();

    let w = workload(&mut p);

    replica_acked(&mut p);

    let pk = keys(&mut p);
    let rk = keys(&mut r);
    assert_eq!(pk, rk, "same key set on primary and replica");
    assert!(pk.len() >= 10, "the workload wrote keys: {pk:?}");
    for k in &pk {
        let pd = dump(&mut p, k);
        let rd = dump(&mut r, k);
        assert_eq!(pd, rd, "DUMP of {k} differs on the replica");
        // Read the TTLs close together: primary, replica, primary.
        let p1 = pttl(&mut p, k);
        let rt = pttl(&mut r, k);
        let p2 = pttl(&mut p, k);
        assert!(p1 > 0 && p2 > 0, "{k} has no TTL on the primary: {p1}");
        assert!(rt > 0, "{k} has no TTL on the replica: {rt}");
        assert!(
            rt <= p1 + 50 && rt >= p2 - 50,
            "{k}: replica PTTL {rt} not within 50 ms of primary's {p1}..{p2}"
        );
    }
    // The random tokens were generated on the primary and reached the
    // replica as values, not regenerated there.
    for (lk, token) in &w.held_locks {
        assert_eq!(get(&mut p, lk).as_ref(), Some(token), "primary {lk}");
        assert_eq!(get(&mut r, lk).as_ref(), Some(token), "replica {lk}");
    }
    for k in &w.gone {
        assert!(!pk.contains(k), "{k} was released but exists");
    }
    for (k, v) in &w.plans {
        assert_eq!(get(&mut r, k).as_ref(), Some(v), "replica {k}");
    }
}

/// A minimal RESP reader over a raw replication link.
struct Link {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Every byte received after the RDB payload.
    raw: Vec<u8>,
}

impl Link {
    fn fill(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "replication link: deadline passed");
        self.sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 65536];
        match self.sock.read(&mut chunk) {
            Ok(0) => panic!("replication link closed by the primary"),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("replication link: {e}"),
        }
    }

    /// A CRLF-terminated line (without the CRLF).
    fn line(&mut self, deadline: Instant) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return l;
            }
            self.fill(deadline);
        }
    }

    fn bytes(&mut self, n: usize, deadline: Instant) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill(deadline);
        }
        self.buf.drain(..n).collect()
    }

    /// Sends SYNC and skips the RDB payload (`$<len>\r\n<len bytes>`),
    /// tolerating the `\n` keep-alives sent while the primary saves.
    fn sync(port: u16) -> Link {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        sock.write_all(b"*1\r\n$4\r\nSYNC\r\n").unwrap();
        let mut link = Link {
            sock,
            buf: Vec::new(),
            raw: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while link.buf.first() == Some(&b'\n') {
                link.buf.remove(0);
            }
            if !link.buf.is_empty() {
                break;
            }
            link.fill(deadline);
        }
        let head = link.line(deadline);
        assert!(
            head.first() == Some(&b'$') && !head.starts_with(b"$EOF:"),
            "unexpected SYNC reply {:?}",
            String::from_utf8_lossy(&head)
        );
        let len: usize = std::str::from_utf8(&head[1..]).unwrap().parse().unwrap();
        let rdb = link.bytes(len, deadline);
        // Redis writes "REDIS" + version; Valkey 9 writes "VALKEY" + version.
        assert!(
            rdb.starts_with(b"REDIS") || rdb.starts_with(b"VALKEY"),
            "an RDB payload: {:?}",
            String::from_utf8_lossy(rdb.get(..9).unwrap_or(&rdb))
        );
        link
    }

    /// The next command of the stream, as its arguments.
    fn command(&mut self, deadline: Instant) -> Vec<Vec<u8>> {
        let head = self.line(deadline);
        assert!(
            head.first() == Some(&b'*'),
            "not a multibulk: {:?}",
            String::from_utf8_lossy(&head)
        );
        let n: usize = std::str::from_utf8(&head[1..]).unwrap().parse().unwrap();
        let mut raw = head.clone();
        raw.extend_from_slice(b"\r\n");
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let h = self.line(deadline);
            assert!(h.first() == Some(&b'$'), "not a bulk string");
            let len: usize = std::str::from_utf8(&h[1..]).unwrap().parse().unwrap();
            let mut a = self.bytes(len + 2, deadline);
            raw.extend_from_slice(&h);
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(&a);
            a.truncate(len);
            args.push(a);
        }
        self.raw.extend_from_slice(&raw);
        args
    }
}

const MARKER: &str = "replication-test-marker";

#[test]
fn replication_stream_carries_effects_not_commands() {
    let s = Server::start_with(PRIMARY);
    let mut link = Link::sync(s.port);
    let mut c = s.conn();
    let deadline = Instant::now() + Duration::from_secs(20);

    // Runs one step, then a plain marker write, and returns what the stream
    // carried in between (without SELECT, PING, MULTI and EXEC) plus the
    // wall clock before and after the step, for checking absolute times.
    let mut seq = 0;
    let mut step = |c: &mut redis::Connection,
                    link: &mut Link,
                    f: &mut dyn FnMut(&mut redis::Connection)|
     -> (Vec<Vec<Vec<u8>>>, i64, i64) {
        let t0 = now_ms();
        f(c);
        let t1 = now_ms();
        seq += 1;
        let mark = seq.to_string();
        let _: () = redis::cmd("SET").arg(MARKER).arg(&mark).query(c).unwrap();
        let mut got = Vec::new();
        let mut depth = 0i32;
        loop {
            let cmd = link.command(deadline);
            let name = String::from_utf8_lossy(&cmd[0]).to_ascii_uppercase();
            if name == "SET" && cmd.get(1).map(Vec::as_slice) == Some(MARKER.as_bytes()) {
                assert_eq!(cmd.get(2).map(Vec::as_slice), Some(mark.as_bytes()));
                break;
            }
            match name.as_str() {
                "SELECT" | "PING" => {}
                "MULTI" => depth += 1,
                "EXEC" => depth -= 1,
                _ => got.push(cmd),
            }
        }
        assert_eq!(depth, 0, "MULTI/EXEC balanced: {got:?}");
        (got, t0, t1)
    };

    // Asserts `SET key value PXAT t` with t = now + ttl_ms.
    fn assert_set(cmd: &[Vec<u8>], key: &str, value: &str, ttl_ms: i64, t0: i64, t1: i64) {
        assert_eq!(cmd.len(), 5, "{}", show(cmd));
        assert!(cmd[0].eq_ignore_ascii_case(b"SET"), "{}", show(cmd));
        assert_eq!(cmd[1], key.as_bytes(), "{}", show(cmd));
        assert_eq!(cmd[2], value.as_bytes(), "{}", show(cmd));
        assert!(cmd[3].eq_ignore_ascii_case(b"PXAT"), "{}", show(cmd));
        assert_abs(&cmd[4], ttl_ms, t0, t1, cmd);
    }
    fn assert_abs(at: &[u8], ttl_ms: i64, t0: i64, t1: i64, cmd: &[Vec<u8>]) {
        let at: i64 = std::str::from_utf8(at).unwrap().parse().unwrap();
        assert!(
            at >= t0 + ttl_ms - 50 && at <= t1 + ttl_ms + 50,
            "absolute expiry {at} not now+{ttl_ms} (now {t0}..{t1}): {}",
            show(cmd)
        );
    }
    fn assert_cmd(cmd: &[Vec<u8>], want: &[&str]) {
        let got: Vec<String> = cmd
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(got.len(), want.len(), "{}", show(cmd));
        assert!(got[0].eq_ignore_ascii_case(want[0]), "{}", show(cmd));
        assert_eq!(&got[1..], &want[1..], "{}", show(cmd));
    }

    let pa = ["llama3:8b", "Plan the thing", "v1", "r1"];

    // PLAN.GET miss: the lock with the token the client got.
    let mut m = None;
    let (got, t0, t1) = step(&mut c, &mut link, &mut |c| m = Some(plan_get(c, &pa)));
    let m = m.unwrap();
    assert_eq!(m.status, "MISS");
    let token = m.token.clone().unwrap();
    let plan_lock = format!("{}:lock", m.key);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_set(&got[0], &plan_lock, &token, 9000, t0, t1);

    // LOCKED, and a miss with NOLOCK on another key: nothing written.
    let (got, ..) = step(&mut c, &mut link, &mut |c| {
        assert_eq!(plan_get(c, &pa).status, "LOCKED");
        let n = plan_get(c, &["m", "other", "v1", "r1", "NOLOCK"]);
        assert_eq!(n.status, "MISS");
    });
    assert!(got.is_empty(), "reads propagate nothing: {got:?}");

    // PLAN.SET with a wrong token: the plan only, the lock stays.
    let (got, t0, t1) = step(&mut c, &mut link, &mut |c| {
        let r = plan_store(c, &[&m.key, r#"{"a":1}"#, "TOKEN", &random_hex()]);
        assert_eq!(r.3, 0);
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert_set(&got[0], &m.key, r#"{"a":1}"#, 600_000, t0, t1);

    // PLAN.SET with the holder's token and a TTL: the plan, then DEL lock.
    let (got, t0, t1) = step(&mut c, &mut link, &mut |c| {
        let r = plan_store(c, &[&m.key, r#"{"a":2}"#, "TTL", "300", "TOKEN", &token]);
        assert_eq!(r, ("STORED".into(), 300_000, None, 1));
    });
    assert_eq!(got.len(), 2, "{got:?}");
    assert_set(&got[0], &m.key, r#"{"a":2}"#, 300_000, t0, t1);
    assert_cmd(&got[1], &["DEL", &plan_lock]);

    // HIT and CACHE.GET: nothing.
    let (got, ..) = step(&mut c, &mut link, &mut |c| {
        assert_eq!(plan_get(c, &pa).status, "HIT");
        let _: redis::Value = redis::cmd("OKOME.CACHE.GET")
            .arg(&["tools", "v1"])
            .query(c)
            .unwrap();
    });
    assert!(got.is_empty(), "reads propagate nothing: {got:?}");

    // LOCK acquire; contention; extend; extend with a wrong token.
    let key = okome_key(&mut c, "tools", &["v1"]);
    let lk = format!("{key}:lock");
    let mut lt = String::new();
    let (got, t0, t1) = step(&mut c, &mut link, &mut |c| match lock(c, &[&key]) {
        redis::Value::BulkString(b) => lt = String::from_utf8(b).unwrap(),
        v => panic!("{v:?}"),
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert_set(&got[0], &lk, &lt, 9000, t0, t1);

    let (got, ..) = step(&mut c, &mut link, &mut |c| {
        assert_eq!(lock(c, &[&key]), redis::Value::Nil);
        assert_eq!(
            lock(c, &[&key, "TTL", "10000", "TOKEN", &random_hex()]),
            redis::Value::Int(0)
        );
        let un: i64 = redis::cmd("OKOME.UNLOCK")
            .arg(&[key.as_str(), &random_hex()])
            .query(c)
            .unwrap();
        assert_eq!(un, 0);
    });
    assert!(
        got.is_empty(),
        "refused lock calls propagate nothing: {got:?}"
    );

    let (got, t0, t1) = step(&mut c, &mut link, &mut |c| {
        assert_eq!(
            lock(c, &[&key, "TTL", "10000", "TOKEN", &lt]),
            redis::Value::Int(1)
        );
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].len(), 3, "{}", show(&got[0]));
    assert!(
        got[0][0].eq_ignore_ascii_case(b"PEXPIREAT"),
        "{}",
        show(&got[0])
    );
    assert_eq!(got[0][1], lk.as_bytes());
    assert_abs(&got[0][2], 10_000, t0, t1, &got[0]);

    // UNLOCK with the token: DEL.
    let (got, ..) = step(&mut c, &mut link, &mut |c| {
        let un = unlock(c, key.as_str(), &lt);
        assert_eq!(un, 1);
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert_cmd(&got[0], &["DEL", &lk]);

    // CACHE.SET, every kind.
    let cases: [(&[&str], i64); 5] = [
        (&["model_meta", "llama3:8b", r#"{"ctx":8192}"#], 86_400_000),
        (&["rag", "repo", "c1", r#"{"t":"x"}"#], 3_600_000),
        (
            &["rag", "repo", "c2", r#"{"t":"y"}"#, "TTL", "1800"],
            1_800_000,
        ),
        (&["tools", "v1", "[]"], 600_000),
        (&["health", "node-1", "{}"], 30_000),
    ];
    for (args, ttl) in cases {
        let (got, t0, t1) = step(&mut c, &mut link, &mut |c| {
            assert_eq!(cache_set(c, args), ttl);
        });
        let n = if args[0] == "rag" { 2 } else { 1 };
        let k: String = redis::cmd("OKOME.KEY")
            .arg(&args[..=n])
            .query(&mut c)
            .unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_set(&got[0], &k, args[n + 1], ttl, t0, t1);
    }

    // Errors write and propagate nothing.
    let (got, ..) = step(&mut c, &mut link, &mut |c| {
        let _ = err(
            c,
            &[b"OKOME.PLAN.SET", m.key.as_bytes(), b"{}", b"TTL", b"1"],
        );
        let _ = err(c, &[b"OKOME.PLAN.SET", m.key.as_bytes(), b"not json"]);
        let _ = err(c, &[b"OKOME.CACHE.SET", b"git", b"x", b"{}"]);
        let _ = err(c, &[b"OKOME.LOCK", key.as_bytes(), b"TTL", b"5"]);
    });
    assert!(got.is_empty(), "errors propagate nothing: {got:?}");

    let raw = String::from_utf8_lossy(&link.raw).to_ascii_lowercase();
    assert!(
        !raw.contains("okome."),
        "the stream carried a module command:\n{raw}"
    );
    assert!(raw.contains("pxat") && raw.contains("pexpireat") && raw.contains("del"));
}

// -------------------------------------------------------------------- AOF

#[test]
fn aof_replay_restores_same_keys_and_ttls() {
    let mut s = Server::start_with(AOF);
    let mut c = s.conn();
    let w = workload(&mut c);
    let t_before = Instant::now();
    let before = record(&mut c, "before the crash");
    assert!(before.len() >= 10, "{:?}", before.keys());
    drop(c);
    s.kill();
    assert!(
        s.dir.join("appendonlydir").is_dir(),
        "the AOF directory exists"
    );

    // The same server again, on its directory: it replays its AOF.
    s.crash_and_restart();
    let mut c = s.conn();
    let after = record(&mut c, "after the AOF replay");
    let elapsed = t_before.elapsed().as_millis() as i64;

    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "same key set after the replay"
    );
    for (k, (d0, p0)) in &before {
        let (d1, p1) = &after[k];
        assert_eq!(d0, d1, "DUMP of {k} differs after the replay");
        assert!(
            p1 <= p0,
            "{k}: PTTL grew across the restart ({p0} -> {p1}): the expiry was not absolute"
        );
        assert!(
            p0 - p1 <= elapsed + 50,
            "{k}: PTTL shrank by {} ms but only {elapsed} ms passed",
            p0 - p1
        );
    }
    for (lk, token) in &w.held_locks {
        assert_eq!(get(&mut c, lk).as_ref(), Some(token), "{lk}");
        assert!(pttl(&mut c, lk) > 0, "{lk} lost its TTL");
    }
    for k in &w.gone {
        assert!(!after.contains_key(k), "{k} was released but came back");
    }
    for (k, v) in &w.plans {
        assert_eq!(get(&mut c, k).as_ref(), Some(v), "{k}");
    }
}

// ---------------------------------------------------------------- windows

fn calls_of(info: &str, command: &str) -> i64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Issue 14: windows are written as small effects (the tail of a large
/// window: `SETRANGE` + `PEXPIREAT`; a small or compacted one: `SET ...
/// PXAT`). A long random workload of charges on windows of every size
/// (limits 5 to 100 000, windows of 1 s to 60 s, costs 0 to 3, calls spread
/// over a few seconds so that entries leave their windows and dropped ones
/// are compacted), with a replica attached and the AOF on: every key is
/// byte-identical (`DUMP`) with the same absolute expiry on the replica and
/// after replaying the AOF. `OKOME_WINDOWS_SEED` replays a run.
#[test]
fn windows_stay_byte_identical_under_a_long_random_workload() {
    let seed = env_number("OKOME_WINDOWS_SEED").unwrap_or_else(|| (now_ms() as u64).max(1));
    println!("OKOME_WINDOWS_SEED={seed}");
    let mut rng = Xorshift64Star(seed);
    let mut primary = Server::start_with(&[PRIMARY, AOF].concat());
    let replica = replica_of(&primary, &[], &[]);
    let mut p = primary.conn();
    let mut r = replica.conn();

    // (command, agent, limit, window s): small windows, windows that grow
    // past the small threshold and are written by their tail, windows
    // whose entries leave within a second (compactions).
    let windows: &[(&str, &str, u64, u64)] = &[
        ("OKOME.RATE", "tiny", 5, 1),
        ("OKOME.RATE", "sixty", 60, 1),
        ("OKOME.RATE", "mid", 1_000, 1),
        ("OKOME.RATE", "big-1s", 100_000, 1),
        ("OKOME.RATE", "big-2s", 100_000, 2),
        ("OKOME.RATE", "big-60s", 100_000, 60),
        ("OKOME.RATE", "agent:with:colons", 100_000, 1),
        ("OKOME.WBUDGET", "writer", 100_000, 1),
        ("OKOME.WBUDGET", "writer-small", 30, 1),
        ("PLAN.GET", "planner", 100_000, 1),
    ];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_millis(3_500) {
        let mut pipe = redis::pipe();
        for _ in 0..1 + rng.below(40) {
            let &(cmd, agent, limit, window) = &windows[rng.below(windows.len() as u64) as usize];
            let cost = rng.below(4).min(limit);
            let (limit, window) = (limit.to_string(), window.to_string());
            match cmd {
                "OKOME.RATE" => {
                    pipe.cmd(cmd)
                        .arg(&[agent, &limit, &window, "COST", &cost.to_string()]);
                }
                "OKOME.WBUDGET" => {
                    pipe.cmd(cmd).arg(&[
                        agent,
                        &limit,
                        "WINDOW",
                        &window,
                        "COST",
                        &cost.to_string(),
                    ]);
                }
                _ => {
                    let prompt = format!("prompt-{}", rng.below(8));
                    pipe.cmd("OKOME.PLAN.GET").arg(&[
                        "m", &prompt, "t", "r", "NOLOCK", "AGENT", agent, "LIMIT", &limit,
                        "WINDOW", &window,
                    ]);
                }
            }
            sent += 1;
        }
        let _: Vec<redis::Value> = pipe.query(&mut p).expect("the pipeline");
        std::thread::sleep(Duration::from_micros(rng.below(2_500)));
    }
    // One last admission on each window with a 10-minute window, so that
    // none expires before the AOF is replayed.
    for &(cmd, agent, limit, _) in windows {
        let limit = limit.to_string();
        let _: redis::Value = match cmd {
            "OKOME.RATE" => redis::cmd(cmd).arg(&[agent, &limit, "600"]).query(&mut p),
            "OKOME.WBUDGET" => redis::cmd(cmd)
                .arg(&[agent, &limit, "WINDOW", "600"])
                .query(&mut p),
            _ => redis::cmd("OKOME.RATE")
                .arg(&[agent, &limit, "600"])
                .query(&mut p),
        }
        .expect("the last admission");
    }
    replica_acked(&mut p);

    let on_primary = dumps_at(&mut p);
    let on_replica = dumps_at(&mut r);
    assert!(on_primary.len() >= windows.len(), "{:?}", on_primary.keys());
    assert_eq!(
        on_primary.keys().collect::<Vec<_>>(),
        on_replica.keys().collect::<Vec<_>>()
    );
    for (k, v) in &on_primary {
        assert_eq!(
            &on_replica[k], v,
            "{k} differs on the replica (seed {seed})"
        );
    }
    // The large windows really were large, written by their tail and
    // compacted: the replica ran SETRANGE, and SET for the rewrites.
    let big: usize = redis::cmd("STRLEN")
        .arg("okome:budget:rate:{big-60s}")
        .query(&mut p)
        .unwrap();
    // Past the 320 bytes under which a window is rewritten whole (how far
    // past depends on how many calls a loaded machine gets through).
    assert!(big > 320, "a large window: {big} bytes");
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut r)
        .unwrap();
    let (tails, sets) = (calls_of(&stats, "setrange"), calls_of(&stats, "set"));
    println!("{sent} calls: {tails} SETRANGE and {sets} SET on the replica");
    assert!(tails > 100, "tails written: {tails}\n{stats}");
    assert!(sets > 100, "rewrites: {sets}");
    let windows_on_primary = on_primary
        .keys()
        .filter(|k| k.starts_with("okome:budget:"))
        .count();
    assert_eq!(windows_on_primary, windows.len(), "{:?}", on_primary.keys());

    // The AOF replays into the same bytes and expiries.
    drop(p);
    primary.crash_and_restart();
    let mut c = primary.conn();
    let replayed = dumps_at(&mut c);
    assert_eq!(
        replayed.keys().collect::<Vec<_>>(),
        on_primary.keys().collect::<Vec<_>>()
    );
    for (k, v) in &on_primary {
        assert_eq!(
            &replayed[k], v,
            "{k} differs after the AOF replay (seed {seed})"
        );
    }
}

/// Issue 14: an admission on a large window propagates its tail, not the
/// window: `SETRANGE key offset tail` and `PEXPIREAT key t` (in
/// `MULTI`/`EXEC`), a few dozen bytes whatever the window holds.
#[test]
fn a_large_window_replicates_its_tail() {
    use okome_core::limiter::{Window, TRAILER_LEN};
    let s = Server::start_with(PRIMARY);
    let mut link = Link::sync(s.port);
    let mut c = s.conn();
    let deadline = Instant::now() + Duration::from_secs(20);
    let key = "okome:budget:rate:{wide}";
    // Past the small threshold: a few hundred entries, one per ms or so.
    let mut len = 0usize;
    while len < 700 {
        let _: redis::Value = redis::cmd("OKOME.RATE")
            .arg(&["wide", "100000", "60"])
            .query(&mut c)
            .unwrap();
        std::thread::sleep(Duration::from_micros(1_100));
        len = redis::cmd("STRLEN").arg(key).query(&mut c).unwrap();
    }
    let before: Vec<u8> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    let t0 = now_ms();
    let _: redis::Value = redis::cmd("OKOME.RATE")
        .arg(&["wide", "100000", "60"])
        .query(&mut c)
        .unwrap();
    let t1 = now_ms();
    let after: Vec<u8> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    let _: () = redis::cmd("SET")
        .arg(MARKER)
        .arg("tail")
        .query(&mut c)
        .unwrap();
    // Skip what the filling wrote; then the last call's effects.
    let mut got = Vec::new();
    loop {
        let cmd = link.command(deadline);
        if cmd[0].eq_ignore_ascii_case(b"SET") && cmd[1] == MARKER.as_bytes() {
            break;
        }
        got.push(cmd);
    }
    let n = got.len();
    assert!(
        n >= 4,
        "{:?}",
        got.iter().map(|c| show(c)).collect::<Vec<_>>()
    );
    let last: Vec<&Vec<Vec<u8>>> = got[n - 4..].iter().collect();
    assert!(
        last[0][0].eq_ignore_ascii_case(b"MULTI"),
        "{}",
        show(last[0])
    );
    assert!(
        last[3][0].eq_ignore_ascii_case(b"EXEC"),
        "{}",
        show(last[3])
    );
    let range = last[1];
    assert!(
        range[0].eq_ignore_ascii_case(b"SETRANGE"),
        "{}",
        show(range)
    );
    assert_eq!(range[1], key.as_bytes());
    let offset: usize = std::str::from_utf8(&range[2]).unwrap().parse().unwrap();
    let tail = &range[3];
    assert!(
        tail.len() <= 6 + TRAILER_LEN,
        "a small tail: {} bytes",
        tail.len()
    );
    assert_eq!(offset + tail.len(), after.len());
    assert_eq!(
        &after[..offset],
        &before[..offset],
        "the bytes before it are kept"
    );
    assert_eq!(&after[offset..], &tail[..]);
    let expire = last[2];
    assert!(
        expire[0].eq_ignore_ascii_case(b"PEXPIREAT"),
        "{}",
        show(expire)
    );
    assert_eq!(expire[1], key.as_bytes());
    let at: i64 = std::str::from_utf8(&expire[2]).unwrap().parse().unwrap();
    assert!(at >= t0 + 60_000 - 5 && at <= t1 + 60_000 + 5, "{at}");
    // What it wrote is the window the limiter keeps.
    let w = Window::decode(&after).expect("a window");
    assert_eq!(
        w.entries().count(),
        Window::decode(&before).unwrap().entries().count() + 1
    );
}

/// Issue 14: once the entries dropped from a large window outweigh the live
/// ones, the next admission compacts it in place and propagates it whole,
/// as `SET key value PXAT t` with exactly the bytes the primary holds (the
/// canonical form of the live entries).
#[test]
fn a_large_window_is_compacted_and_replicated_whole() {
    use okome_core::limiter::{Window, TRAILER_LEN};
    let s = Server::start_with(PRIMARY);
    let mut link = Link::sync(s.port);
    let mut c = s.conn();
    let deadline = Instant::now() + Duration::from_secs(20);
    let key = "okome:budget:rate:{compact}";
    let now = server_ms(&mut c);
    // 2 000 live entries one ms apart, and 2 100 dropped ones before them.
    let mut w = Window::new();
    for i in 0..2_000 {
        w.charge(now - 2_000 + i, 100_000, 60_000, 1);
    }
    let canonical = w.encode();
    let dead = 2_100usize;
    let mut value = vec![canonical[0]];
    value.extend(std::iter::repeat_n([1u8, 1u8], dead).flatten());
    value.extend_from_slice(&canonical[1..]);
    let t = value.len() - TRAILER_LEN;
    for field in [t, t + 4] {
        let v = u32::from_le_bytes(value[field..field + 4].try_into().unwrap());
        value[field..field + 4].copy_from_slice(&(v + 2 * dead as u32).to_le_bytes());
    }
    assert_eq!(Window::decode(&value), Ok(w.clone()), "the same window");
    redis::cmd("SET")
        .arg(key)
        .arg(&value)
        .arg("PXAT")
        .arg(now + 60_000)
        .query::<()>(&mut c)
        .unwrap();
    let (allowed, remaining, _, _): (i64, i64, i64, i64) = redis::cmd("OKOME.RATE")
        .arg(&["compact", "100000", "60"])
        .query(&mut c)
        .unwrap();
    assert_eq!((allowed, remaining), (1, 100_000 - 2_001));
    let after: Vec<u8> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    assert!(after.len() < value.len() / 2, "{} bytes", after.len());
    let got = Window::decode(&after).unwrap();
    assert_eq!(after, got.encode(), "compacted to the canonical form");
    assert_eq!(got.entries().count(), 2_001);
    let _: () = redis::cmd("SET")
        .arg(MARKER)
        .arg("c")
        .query(&mut c)
        .unwrap();
    let mut sets = Vec::new();
    loop {
        let cmd = link.command(deadline);
        if cmd[0].eq_ignore_ascii_case(b"SET") && cmd[1] == MARKER.as_bytes() {
            break;
        }
        if cmd[0].eq_ignore_ascii_case(b"SET") {
            sets.push(cmd);
        }
    }
    let last = sets.last().expect("the compaction's SET");
    assert_eq!(last[1], key.as_bytes());
    assert_eq!(last[2], after, "the replica gets the primary's bytes");
    assert!(last[3].eq_ignore_ascii_case(b"PXAT"));
}
