//! A seeded random walk of `OKOME.LEASE.ACQUIRE ... WAIT` callers and
//! `OKOME.LEASE.RELEASE` under the server's state changes: `CLIENT PAUSE`
//! WRITE/ALL and `CLIENT UNPAUSE`, `CLIENT UNBLOCK [ERROR]` of a waiter
//! (never while a pause may hold it: Redis 7.0 aborts), `CLIENT KILL` of an
//! idle or blocked caller, and `REPLICAOF` another server and back (the
//! server ends its blocked clients itself, and the pool goes with the
//! dataset), with little sleeps so that waits and leases run out.
//!
//! Checked all along: every caller gets exactly one reply per request, in
//! time (a fence `PING` gets `PONG`, nothing extra arrives), and the pool
//! never holds more than `max` live leases. After every batch, with every
//! request answered: every member of the pool's sorted set is a lease some
//! caller received (no ghost), and none that its caller released is live;
//! with nobody waiting, the wait counters of `INFO okome` add up.
//!
//! `OKOME_LEASE_CHAOS_STEPS` (default 1500) sets the length of the walk
//! and `OKOME_LEASE_CHAOS_SEED` its seed (printed at the start and on
//! failure).

use crate::support::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENTS: usize = 8;
const MAX: usize = 2;
const POOL: &str = "okome:budget:lease:{s}";
const BATCH: usize = 100;
/// A reply may come this long after its request's wait (pauses and a busy
/// machine delay it); later than that it is lost.
const GRACE: Duration = Duration::from_secs(3);
const T: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Op {
    Acquire { wait_ms: u64 },
    Release(String),
}

#[derive(Debug, Clone)]
struct Pending {
    op: Op,
    sent: Instant,
}

struct Caller {
    conn: RawConn,
    pending: Option<Pending>,
    /// Leases this caller received and has not released.
    held: Vec<String>,
}

struct Walk {
    seed: u64,
    rng: Xorshift64Star,
    step: usize,
    server: Server,
    other: Server,
    admin: RawConn,
    look: RawConn,
    callers: Vec<Caller>,
    received: BTreeSet<String>,
    released: BTreeSet<String>,
    paused_until: Option<Instant>,
    replica: bool,
    stats: BTreeMap<String, u64>,
}

fn caller(port: u16) -> Caller {
    Caller {
        conn: RawConn::connect(port),
        pending: None,
        held: Vec::new(),
    }
}

impl Walk {
    fn new(seed: u64) -> Walk {
        let server = Server::start_full(&["--enable-debug-command", "yes"], &[]);
        let other = Server::start();
        let port = server.port;
        Walk {
            seed,
            rng: Xorshift64Star::new(seed),
            step: 0,
            admin: RawConn::connect(port),
            look: RawConn::connect(port),
            callers: (0..CLIENTS).map(|_| caller(port)).collect(),
            server,
            other,
            received: BTreeSet::new(),
            released: BTreeSet::new(),
            paused_until: None,
            replica: false,
            stats: BTreeMap::new(),
        }
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("step {} (seed {}): {msg}", self.step, self.seed);
    }

    fn count(&mut self, what: &str) {
        *self.stats.entry(what.to_string()).or_default() += 1;
    }

    fn admin(&mut self, args: &[&str]) -> Resp {
        let r = self.admin.call(args, T);
        if let Some(e) = r.error() {
            self.fail(&format!("{args:?}: {e}"));
        }
        r
    }

    /// A pause may hold clients (with a margin for a late `UNPAUSE`).
    fn paused(&self) -> bool {
        self.paused_until
            .is_some_and(|t| Instant::now() < t + Duration::from_millis(100))
    }

    // ------------------------------------------------------------ replies

    /// Checks the reply `r` to caller `i`'s pending request.
    fn on_reply(&mut self, i: usize, r: Resp) {
        let Some(p) = self.callers[i].pending.take() else {
            self.fail(&format!("caller {i}: a reply nobody asked for: {r:?}"));
        };
        let wait = match p.op {
            Op::Acquire { wait_ms } => wait_ms,
            Op::Release(_) => 0,
        };
        if p.sent.elapsed() > Duration::from_millis(wait) + GRACE {
            self.fail(&format!(
                "caller {i}: {p:?} answered after {:?}",
                p.sent.elapsed()
            ));
        }
        if let Some(e) = r.error() {
            let kind = e.split_whitespace().next().unwrap_or("").to_string();
            if !matches!(kind.as_str(), "UNBLOCKED" | "READONLY" | "LOADING") {
                self.fail(&format!("caller {i}: {p:?} -> {r:?}"));
            }
            self.count(&format!("error {kind}"));
            if e.contains("instance state changed") {
                self.reconnect_after_close(i);
            }
            return;
        }
        match p.op {
            Op::Acquire { .. } => self.on_acquired(i, &p, &r),
            Op::Release(id) => match r.int() {
                Some(0 | 1) => {
                    self.count(if r.int() == Some(1) {
                        "released"
                    } else {
                        "release gone"
                    });
                    self.released.insert(id);
                }
                _ => self.fail(&format!("caller {i}: RELEASE {id} -> {r:?}")),
            },
        }
    }

    fn on_acquired(&mut self, i: usize, p: &Pending, r: &Resp) {
        let Resp::Array(Some(items)) = r else {
            self.fail(&format!("caller {i}: {p:?} -> {r:?}"));
        };
        let (lease, in_use, retry) = match items.as_slice() {
            [l, Resp::Int(n), Resp::Int(t)] => (l, *n, *t),
            _ => self.fail(&format!("caller {i}: {p:?} -> {r:?}")),
        };
        if !(0..=MAX as i64).contains(&in_use) || retry < 0 {
            self.fail(&format!("caller {i}: {p:?} -> {r:?}"));
        }
        match lease {
            Resp::Bulk(Some(b)) => {
                let id = String::from_utf8_lossy(b).into_owned();
                let ok = id.strip_prefix("{s}:").is_some_and(is_token);
                if !ok || retry != 0 || in_use < 1 || !self.received.insert(id.clone()) {
                    self.fail(&format!("caller {i}: {p:?} -> {r:?} (a new lease?)"));
                }
                let waited = p.sent.elapsed() > Duration::from_millis(5);
                self.count(if waited {
                    "acquired (late)"
                } else {
                    "acquired"
                });
                self.callers[i].held.push(id);
            }
            Resp::Bulk(None) => self.count("no lease"),
            _ => self.fail(&format!("caller {i}: {p:?} -> {r:?}")),
        }
    }

    /// The server closed caller `i`'s connection after its last reply:
    /// nothing else arrives, and it connects again.
    fn reconnect_after_close(&mut self, i: usize) {
        match self.callers[i].conn.read(Duration::from_secs(5)) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
            other => self.fail(&format!(
                "caller {i}: expected the connection closed: {other:?}"
            )),
        }
        let held = std::mem::take(&mut self.callers[i].held);
        self.callers[i] = caller(self.server.port);
        self.callers[i].held = held;
    }

    /// Reads every reply that has arrived.
    fn pump(&mut self) {
        for i in 0..self.callers.len() {
            loop {
                match self.callers[i].conn.try_read() {
                    Ok(Some(r)) => self.on_reply(i, r),
                    Ok(None) => break,
                    Err(e) => self.fail(&format!(
                        "caller {i}: {e} (pending {:?})",
                        self.callers[i].pending
                    )),
                }
            }
        }
    }

    /// Waits for every pending request's reply.
    fn drain(&mut self) {
        for i in 0..self.callers.len() {
            while self.callers[i].pending.is_some() {
                match self.callers[i].conn.read(Duration::from_secs(15)) {
                    Ok(r) => self.on_reply(i, r),
                    Err(e) => self.fail(&format!(
                        "caller {i}: {e}: never answered {:?}",
                        self.callers[i].pending
                    )),
                }
            }
        }
    }

    // ---------------------------------------------------------------- ops

    fn send(&mut self, i: usize, op: Op, args: &[String]) {
        self.callers[i].conn.send(args);
        self.callers[i].pending = Some(Pending {
            op,
            sent: Instant::now(),
        });
    }

    fn caller_op(&mut self) {
        let idle: Vec<usize> = (0..CLIENTS)
            .filter(|&i| self.callers[i].pending.is_none())
            .collect();
        if idle.is_empty() {
            return;
        }
        let i = idle[self.rng.below(idle.len() as u64) as usize];
        if !self.callers[i].held.is_empty() && self.rng.below(100) < 55 {
            let k = self.rng.below(self.callers[i].held.len() as u64) as usize;
            let id = self.callers[i].held.swap_remove(k);
            let args = to_strings(&["OKOME.LEASE.RELEASE", &id]);
            self.send(i, Op::Release(id), &args);
            return;
        }
        let ttl = self.rng.range(150, 2000).to_string();
        let wait_ms = self.rng.range(10, 600);
        let w = wait_ms.to_string();
        let max = MAX.to_string();
        let args = to_strings(&["OKOME.LEASE.ACQUIRE", "s", &max, &ttl, "WAIT", &w]);
        self.send(i, Op::Acquire { wait_ms }, &args);
    }

    fn pause(&mut self) {
        let ms = self.rng.range(20, 300);
        let mode = if self.rng.below(2) == 0 {
            "WRITE"
        } else {
            "ALL"
        };
        self.admin(&["CLIENT", "PAUSE", &ms.to_string(), mode]);
        self.count(&format!("op CLIENT PAUSE {mode}"));
        let until = Instant::now() + Duration::from_millis(ms);
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
    }

    fn unpause(&mut self) {
        self.admin(&["CLIENT", "UNPAUSE"]);
        self.count("op CLIENT UNPAUSE");
        self.paused_until = None;
    }

    /// `CLIENT UNBLOCK [ERROR]` of a caller waiting in `ACQUIRE`.
    fn unblock(&mut self) {
        if self.paused() {
            return;
        }
        let waiting: Vec<usize> = (0..CLIENTS)
            .filter(|&i| {
                matches!(
                    self.callers[i].pending,
                    Some(Pending {
                        op: Op::Acquire { .. },
                        ..
                    })
                )
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        let i = waiting[self.rng.below(waiting.len() as u64) as usize];
        let id = self.callers[i].conn.id.to_string();
        let error = self.rng.below(2) == 0;
        let mut args = vec!["CLIENT", "UNBLOCK", id.as_str()];
        if error {
            args.push("ERROR");
        }
        let r = self.admin(&args);
        if !matches!(r.int(), Some(0 | 1)) {
            self.fail(&format!("{args:?}: {r:?}"));
        }
        self.count(&format!(
            "op CLIENT UNBLOCK{} -> {r:?}",
            if error { " ERROR" } else { "" }
        ));
    }

    /// `CLIENT KILL` of an idle caller or one blocked in the server (a
    /// command that runs in the kill's own event-loop pass may have its
    /// reply dropped unsent, as any command's: not okome's doing).
    fn kill(&mut self) {
        let i = self.rng.below(CLIENTS as u64) as usize;
        self.pump();
        let id = self.callers[i].conn.id.to_string();
        if self.callers[i].pending.is_some() {
            let line = self
                .admin(&["CLIENT", "LIST", "ID", &id])
                .text()
                .unwrap_or_default();
            let blocked = line
                .split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|v| v.contains('b')));
            if !blocked {
                return;
            }
        }
        if self.admin(&["CLIENT", "KILL", "ID", &id]).int() != Some(1) {
            self.fail(&format!("CLIENT KILL ID {id} did not kill"));
        }
        self.count("op CLIENT KILL");
        loop {
            match self.callers[i].conn.read(Duration::from_secs(5)) {
                Ok(r) => self.on_reply(i, r),
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => self.fail(&format!("caller {i} after CLIENT KILL: {e}")),
            }
        }
        let held = std::mem::take(&mut self.callers[i].held);
        self.callers[i] = caller(self.server.port);
        self.callers[i].held = held;
    }

    /// `REPLICAOF` the other server, or `REPLICAOF NO ONE`.
    fn replicaof(&mut self) {
        if self.replica {
            self.admin(&["REPLICAOF", "NO", "ONE"]);
            self.count("op REPLICAOF NO ONE");
        } else {
            let port = self.other.port.to_string();
            self.admin(&["REPLICAOF", "127.0.0.1", &port]);
            self.count("op REPLICAOF");
        }
        self.replica = !self.replica;
    }

    fn step_once(&mut self) {
        // A replica refuses every ACQUIRE: it is promoted back soon.
        if self.replica && self.rng.below(8) == 0 {
            self.replicaof();
        }
        match self.rng.below(100) {
            0..=59 => self.caller_op(),
            60..=67 => self.pause(),
            68..=71 => self.unpause(),
            72..=81 => self.unblock(),
            82..=88 => self.kill(),
            89..=90 if !self.replica => self.replicaof(),
            _ => thread::sleep(Duration::from_millis(self.rng.range(1, 60))),
        }
        self.pump();
        self.check_max();
    }

    // ------------------------------------------------------------- checks

    /// Members of the pool and their expiry, and the server's time (ms).
    fn pool(&mut self) -> (Vec<(String, i64)>, i64) {
        let r = self
            .look
            .call(&["ZRANGE", POOL, "0", "-1", "WITHSCORES"], T);
        let Resp::Array(Some(items)) = &r else {
            self.fail(&format!("ZRANGE: {r:?}"));
        };
        let members = items
            .chunks(2)
            .map(|p| {
                let id = format!("{{s}}:{}", p[0].text().unwrap_or_default());
                (id, p[1].text().and_then(|s| s.parse().ok()).unwrap_or(0))
            })
            .collect();
        let t = self.look.call(&["TIME"], T);
        let now = match &t {
            Resp::Array(Some(v)) if v.len() == 2 => {
                let s: i64 = v[0].text().and_then(|s| s.parse().ok()).unwrap_or(0);
                let us: i64 = v[1].text().and_then(|s| s.parse().ok()).unwrap_or(0);
                s * 1000 + us / 1000
            }
            _ => self.fail(&format!("TIME: {t:?}")),
        };
        (members, now)
    }

    /// The pool never holds more than `MAX` live leases.
    fn check_max(&mut self) {
        let (members, now) = self.pool();
        let live = members.iter().filter(|(_, at)| *at > now).count();
        if live > MAX {
            self.fail(&format!(
                "{live} live leases in a pool of {MAX}: {members:?}"
            ));
        }
    }

    /// With every request answered: no ghost lease, nothing released still
    /// live, one `PONG` per fence, and the wait counters add up.
    fn check(&mut self) {
        self.unpause();
        self.drain();
        let (members, now) = self.pool();
        for (id, at) in &members {
            if !self.received.contains(id) {
                self.fail(&format!(
                    "ghost lease {id} (expiry {at}, now {now}): nobody received it"
                ));
            }
            if *at > now && self.released.contains(id) {
                self.fail(&format!("lease {id} released but still live"));
            }
        }
        for i in 0..CLIENTS {
            let r = self.callers[i].conn.call(&["PING"], T);
            if !r.is_pong() {
                self.fail(&format!("caller {i}: fence PING got {r:?}"));
            }
        }
        let info = self.admin(&["INFO", "okome"]).text().unwrap_or_default();
        let counters = wait_counters(&info).unwrap_or_else(|e| self.fail(&e));
        if let Err(e) = check_wait_invariants(&counters) {
            self.fail(&e);
        }
        self.server.assert_alive("after a batch");
    }
}

#[test]
fn lease_waiters_under_chaos() {
    let seed = env_number("OKOME_LEASE_CHAOS_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let steps: usize = env_number("OKOME_LEASE_CHAOS_STEPS").unwrap_or(1500);
    println!("lease chaos: seed {seed}, {steps} steps");
    let mut w = Walk::new(seed);
    while w.step < steps {
        w.step += 1;
        w.step_once();
        if w.step.is_multiple_of(BATCH) || w.step == steps {
            w.check();
        }
    }
    if w.replica {
        w.replicaof();
    }
    w.check();
    let info = w.admin(&["INFO", "okome"]).text().unwrap_or_default();
    let c = wait_counters(&info).unwrap_or_else(|e| w.fail(&e));
    println!("lease chaos: {:?}\nwait counters: {c:?}", w.stats);
    let got = |k: &str| w.stats.get(k).copied().unwrap_or(0);
    assert!(
        got("acquired") > 0 && got("acquired (late)") > 0,
        "{:?}",
        w.stats
    );
    assert!(
        c.get("wait_woken_leader").copied().unwrap_or(0) > 0,
        "no waiter was handed a lease: {c:?}"
    );
}
