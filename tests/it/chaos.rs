//! A seeded random walk through okome's grammar and the server's admin
//! commands, on one primary with one replica: whatever the interleaving,
//! the server never aborts and no blocked client is ever left unanswered.
//!
//! Each step is one of: `PLAN.GET` (with and without `WAIT` 10–300 ms on
//! background connections, `LOCKTTL`, `REFRESHAHEAD`, `AGENT`), `PLAN.SET`
//! (with a live token, a stale one, none; `FENCED`; a write budget that
//! may be spent, so that waiters get the plan `SHARED`), `LOCK` (acquire,
//! extend), `UNLOCK` (plain, or `FAILED ms [message]`: its waiters answered
//! `FAILED`), `RATE`, `WBUDGET`, `CACHE.SET/GET`, hand-written foreign keys
//! (a lock without a TTL, a short lock, a deleted lock, a raw plan, a
//! garbage budget window), and admin commands (`CLIENT PAUSE` WRITE/ALL,
//! `CLIENT UNPAUSE`, `CLIENT KILL` of a waiter that is idle or blocked,
//! `CLIENT UNBLOCK [ERROR]` of a waiter, `FLUSHDB`, `SWAPDB 0 1`,
//! `DEBUG RELOAD`, `CONFIG SET hz`, `CONFIG SET maxmemory` with an eviction
//! policy), and a little sleep so that waits and locks run out.
//!
//! Every request a waiter connection sends is tracked; its replies must
//! come in order, one per request (a pipelined `PING` must get `PONG`),
//! before the request's deadline plus a grace period. After every batch of
//! 100 steps:
//!
//! - the primary and the replica are alive (no crash logged);
//! - every waiter's requests are answered, and a fence `PING` on each gets
//!   `PONG` (nothing extra arrives);
//! - okome meets every lock the walk wrote by hand without a TTL
//!   (`OKOME.LOCK` on its base, in both databases), and then no `*:lock`
//!   key lacks a TTL, and every lock holding a token holds one a client
//!   received (no ghost lock);
//! - with nobody waiting, the wait counters of `INFO okome` add up.
//!
//! `OKOME_CHAOS_STEPS` (default 10000) sets the length of the walk and
//! `OKOME_CHAOS_SEED` its seed (printed at the start and on failure, with
//! the last steps).

use crate::support::*;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BATCH: usize = 100;
const WAITERS: usize = 6;
const PROMPTS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];
const AGENTS: [&str; 4] = ["a0", "a1", "a2", "a3"];
/// A waiter's reply may come this long after its deadline (pauses, reloads
/// and a busy machine delay it); later than that it is lost.
const GRACE: Duration = Duration::from_secs(3);
const T: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unblock {
    Timeout,
    Error,
}

#[derive(Debug, Clone)]
enum Want {
    Plan {
        wait_ms: u64,
        unblocked: Option<Unblock>,
    },
    Pong,
}

#[derive(Debug, Clone)]
struct Expect {
    want: Want,
    /// When the request was sent, and when the server could start it (the
    /// previous request on the connection answered).
    sent: Instant,
    started: Instant,
    step: usize,
}

impl Expect {
    fn deadline(&self) -> Instant {
        let wait = match self.want {
            Want::Plan { wait_ms, .. } => wait_ms,
            Want::Pong => 0,
        };
        self.started + Duration::from_millis(wait) + GRACE
    }
}

struct Waiter {
    conn: RawConn,
    queue: VecDeque<Expect>,
}

struct Chaos {
    seed: u64,
    rng: Xorshift64Star,
    step: usize,
    primary: Server,
    replica: Server,
    admin: RawConn,
    sync: RawConn,
    rconn: RawConn,
    waiters: Vec<Waiter>,
    keys: Vec<String>,
    /// Every token a client received.
    tokens: BTreeSet<String>,
    /// Tokens that may still hold a lock: (prompt index, token).
    held: Vec<(usize, String)>,
    /// Lock keys written by hand without a TTL since the last check.
    foreign: BTreeSet<String>,
    paused_until: Option<Instant>,
    history: VecDeque<String>,
    stats: BTreeMap<String, u64>,
}

impl Chaos {
    fn new(seed: u64) -> Chaos {
        let module_args = [
            "lock-ttl-min",
            "100",
            "lock-ttl-default",
            "300",
            "lock-ttl-max",
            "2000",
        ];
        let primary = Server::start_full(
            &[
                "--enable-debug-command",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ],
            &module_args,
        );
        let replica = replica_of(&primary, &[], &module_args);
        let mut admin = RawConn::connect(primary.port);
        let rconn = RawConn::connect(replica.port);
        let keys = PROMPTS
            .iter()
            .map(|p| {
                admin
                    .call(&["OKOME.KEY", "planner", "m", p, "t", "r"], T)
                    .text()
                    .expect("OKOME.KEY")
            })
            .collect();
        let sync = RawConn::connect(primary.port);
        let waiters = (0..WAITERS)
            .map(|_| Waiter {
                conn: RawConn::connect(primary.port),
                queue: VecDeque::new(),
            })
            .collect();
        Chaos {
            seed,
            rng: Xorshift64Star::new(seed),
            step: 0,
            primary,
            replica,
            admin,
            sync,
            rconn,
            waiters,
            keys,
            tokens: BTreeSet::new(),
            held: Vec::new(),
            foreign: BTreeSet::new(),
            paused_until: None,
            history: VecDeque::new(),
            stats: BTreeMap::new(),
        }
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("step {} (seed {}): {msg}", self.step, self.seed);
    }

    fn note(&mut self, what: String) {
        if self.history.len() == 60 {
            self.history.pop_front();
        }
        self.history.push_back(format!("{:>6}: {what}", self.step));
    }

    fn count(&mut self, what: &str) {
        *self.stats.entry(what.to_string()).or_default() += 1;
    }

    /// Counts an error reply of a synchronous command; an internal error is
    /// a failure.
    fn count_error(&mut self, what: &str, e: &str) {
        if e.contains("internal error") {
            self.fail(&format!("{what}: {e}"));
        }
        let kind = e.split_whitespace().next().unwrap_or("").to_string();
        self.count(&format!("error {kind}"));
    }

    fn call(&mut self, args: &[String]) -> Resp {
        self.note(args.join(" "));
        let r = self.sync.call(args, T);
        if let Some(e) = r.error() {
            let e = e.to_string();
            self.count_error(&args[0], &e);
        }
        r
    }

    fn admin_call(&mut self, args: &[&str]) -> Resp {
        self.note(format!("admin: {}", args.join(" ")));
        let r = self.admin.call(args, T);
        if let Some(e) = r.error() {
            let e = e.to_string();
            self.count_error(args[0], &e);
        }
        r
    }

    fn paused(&self) -> bool {
        self.paused_until
            .is_some_and(|t| Instant::now() < t + Duration::from_millis(5))
    }

    // ------------------------------------------------------------ waiters

    /// Checks one reply of waiter `w` against what it waits for.
    fn check_reply(&mut self, w: usize, r: Resp) {
        let now = Instant::now();
        let Some(e) = self.waiters[w].queue.pop_front() else {
            self.fail(&format!("waiter {w}: a reply nobody asked for: {r:?}"));
        };
        if let Some(next) = self.waiters[w].queue.front_mut() {
            next.started = next.started.max(now);
        }
        if now > e.deadline() {
            self.fail(&format!(
                "waiter {w}: the reply to step {} came {:?} after it was sent (too late): {r:?}",
                e.step,
                now - e.sent
            ));
        }
        match e.want {
            Want::Pong => {
                if !r.is_pong() {
                    self.fail(&format!(
                        "waiter {w}: expected PONG (step {}), got {r:?}: replies out of order or one too many",
                        e.step
                    ));
                }
            }
            Want::Plan { unblocked, .. } => {
                if r.is_pong() {
                    self.fail(&format!(
                        "waiter {w}: PONG before the reply to PLAN.GET of step {}: LOST REPLY",
                        e.step
                    ));
                }
                match (r.plan(), unblocked) {
                    (Err(err), Some(Unblock::Error)) if err.starts_with("UNBLOCKED") => {
                        self.count("waiter UNBLOCKED error");
                    }
                    (Ok(p), Some(Unblock::Timeout)) if p.status == "LOCKED" => {
                        self.count("waiter unblocked LOCKED");
                    }
                    (other, Some(u)) => self.fail(&format!(
                        "waiter {w}: CLIENT UNBLOCK ({u:?}) of step {}'s PLAN.GET gave {other:?}",
                        e.step
                    )),
                    (Err(err), None) => {
                        if r.error().is_none() {
                            self.fail(&format!("waiter {w}: not a PLAN.GET reply: {err}"));
                        }
                        self.count_error("waiter PLAN.GET", &err);
                    }
                    (Ok(p), None) => {
                        self.count(&format!("waiter {}", p.status));
                        match p.status.as_str() {
                            "HIT" | "LOCKED" | "SHARED" | "FAILED" if p.token.is_none() => {}
                            "MISS" => match p.token.clone() {
                                Some(t) if is_token(&t) => {
                                    let i = self.keys.iter().position(|k| *k == p.key);
                                    let Some(i) = i else {
                                        self.fail(&format!("waiter {w}: unknown key {p:?}"));
                                    };
                                    self.tokens.insert(t.clone());
                                    self.held.push((i, t));
                                }
                                _ => self.fail(&format!("waiter {w}: MISS without a token {p:?}")),
                            },
                            _ => self.fail(&format!("waiter {w}: unexpected {p:?}")),
                        }
                    }
                }
            }
        }
    }

    /// Reads every reply that has arrived, on every waiter.
    fn pump(&mut self) {
        for w in 0..self.waiters.len() {
            loop {
                match self.waiters[w].conn.try_read() {
                    Ok(Some(r)) => self.check_reply(w, r),
                    Ok(None) => break,
                    Err(e) => self.fail(&format!("waiter {w}: connection lost: {e}")),
                }
            }
            if let Some(e) = self.waiters[w].queue.front() {
                if Instant::now() > e.deadline() {
                    let e = e.clone();
                    self.fail(&format!(
                        "waiter {w}: no reply to step {} within {:?}: LOST REPLY ({e:?})",
                        e.step,
                        e.sent.elapsed()
                    ));
                }
            }
        }
    }

    /// Pumps until every waiter's queue is empty.
    fn drain(&mut self) {
        while self.waiters.iter().any(|w| !w.queue.is_empty()) {
            self.pump();
            thread::sleep(Duration::from_micros(300));
        }
    }

    fn waiter_plan_get(&mut self) {
        let free: Vec<usize> = (0..self.waiters.len())
            .filter(|&w| self.waiters[w].queue.len() < 2)
            .collect();
        if free.is_empty() {
            return;
        }
        let w = *self.rng.pick(&free);
        let p = self.rng.below(PROMPTS.len() as u64) as usize;
        let wait_ms = self.rng.range(10, 300);
        let mut cmd: Vec<String> = ["OKOME.PLAN.GET", "m", PROMPTS[p], "t", "r", "WAIT"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        cmd.push(wait_ms.to_string());
        if self.rng.chance(30) {
            cmd.push("LOCKTTL".into());
            cmd.push(self.rng.range(100, 1000).to_string());
        }
        let now = Instant::now();
        let started = now;
        let mut expects = vec![Expect {
            want: Want::Plan {
                wait_ms,
                unblocked: None,
            },
            sent: now,
            started,
            step: self.step,
        }];
        let mut cmds = vec![cmd.clone()];
        if self.rng.chance(40) {
            cmds.push(vec!["PING".into()]);
            expects.push(Expect {
                want: Want::Pong,
                sent: now,
                started,
                step: self.step,
            });
        }
        self.note(format!("waiter {w}: {}", cmd.join(" ")));
        self.count("op waiter PLAN.GET");
        self.waiters[w].conn.send_pipeline(&cmds);
        self.waiters[w].queue.extend(expects);
    }

    fn kill_waiter(&mut self) {
        let w = self.rng.below(self.waiters.len() as u64) as usize;
        let id = self.waiters[w].conn.id.to_string();
        // Only an idle waiter or one blocked in the server. A command that
        // Redis runs in the same event-loop pass as the kill has its reply
        // dropped unsent: a MISS taken then is a lock whose token nobody
        // receives, as with any client's SET NX, and not okome's doing.
        // A blocked client's reply is sent in the pass that wakes it,
        // before any command of another client runs.
        self.pump();
        if !self.waiters[w].queue.is_empty() {
            let list = self.admin_call(&["CLIENT", "LIST", "ID", &id]);
            let line = list.text().unwrap_or_default();
            let blocked = line
                .split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|v| v.contains('b')));
            if !blocked {
                self.count("op CLIENT KILL skipped (not blocked)");
                return;
            }
        }
        let r = self.admin_call(&["CLIENT", "KILL", "ID", &id]);
        self.count("op CLIENT KILL");
        if r.int() != Some(1) {
            self.fail(&format!("CLIENT KILL ID {id}: {r:?}"));
        }
        // Whatever was answered before the kill is read and checked; then
        // the connection must close, and nothing else is owed.
        loop {
            match self.waiters[w].conn.read(Duration::from_secs(5)) {
                Ok(r) => self.check_reply(w, r),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => self.fail(&format!("waiter {w} after CLIENT KILL: {e}")),
            }
        }
        self.waiters[w] = Waiter {
            conn: RawConn::connect(self.primary.port),
            queue: VecDeque::new(),
        };
    }

    fn unblock_waiter(&mut self) {
        if self.paused() {
            return;
        }
        // Only a waiter with exactly one request outstanding, a PLAN.GET:
        // if the server says it unblocked it, it is that request.
        let cands: Vec<usize> = (0..self.waiters.len())
            .filter(|&w| {
                let q = &self.waiters[w].queue;
                q.len() == 1 && matches!(q[0].want, Want::Plan { .. })
            })
            .collect();
        if cands.is_empty() {
            return;
        }
        let w = *self.rng.pick(&cands);
        self.pump();
        if self.waiters[w].queue.len() != 1 {
            return;
        }
        let kind = if self.rng.chance(50) {
            Unblock::Error
        } else {
            Unblock::Timeout
        };
        let id = self.waiters[w].conn.id.to_string();
        let mut args = vec!["CLIENT", "UNBLOCK", id.as_str()];
        if kind == Unblock::Error {
            args.push("ERROR");
        }
        let r = self.admin_call(&args);
        self.count("op CLIENT UNBLOCK");
        match r.int() {
            Some(1) => {
                if let Want::Plan { unblocked, .. } = &mut self.waiters[w].queue[0].want {
                    *unblocked = Some(kind);
                }
            }
            Some(0) => {}
            _ => self.fail(&format!("CLIENT UNBLOCK: {r:?}")),
        }
    }

    // -------------------------------------------------------- okome calls

    fn record_plan(&mut self, p: usize, r: &Resp) {
        if let Ok(plan) = r.plan() {
            self.count(&format!("PLAN.GET {}", plan.status));
            if let ("MISS" | "REFRESH", Some(t)) = (plan.status.as_str(), &plan.token) {
                if !is_token(t) {
                    self.fail(&format!("bad token {plan:?}"));
                }
                self.tokens.insert(t.clone());
                self.held.push((p, t.clone()));
            }
        } else if r.error().is_none() {
            self.fail(&format!("not a PLAN.GET reply: {r:?}"));
        }
    }

    fn plan_get(&mut self) {
        let p = self.rng.below(PROMPTS.len() as u64) as usize;
        let mut cmd: Vec<String> = ["OKOME.PLAN.GET", "m", PROMPTS[p], "t", "r"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match self.rng.below(6) {
            0 => cmd.push("NOLOCK".into()),
            1 => cmd.extend(["REFRESHAHEAD".into(), "900000".into()]),
            2 => cmd.extend(["LOCKTTL".into(), self.rng.range(100, 2000).to_string()]),
            _ => {}
        }
        if self.rng.chance(25) {
            let a = self.rng.pick(&AGENTS).to_string();
            cmd.extend(["AGENT".into(), a, "LIMIT".into(), "5".into()]);
            cmd.extend(["WINDOW".into(), "1".into()]);
        }
        self.count("op PLAN.GET");
        let r = self.call(&cmd);
        self.record_plan(p, &r);
    }

    fn plan_set(&mut self) {
        let (p, token) = if !self.held.is_empty() && self.rng.chance(70) {
            let i = self.rng.below(self.held.len() as u64) as usize;
            let (p, t) = self.held.swap_remove(i);
            (p, Some(t))
        } else {
            let p = self.rng.below(PROMPTS.len() as u64) as usize;
            let stale = self.rng.chance(30).then(|| "0".repeat(32));
            (p, stale)
        };
        let mut cmd = vec![
            "OKOME.PLAN.SET".to_string(),
            self.keys[p].clone(),
            format!(r#"{{"step":{}}}"#, self.step),
        ];
        if self.rng.chance(30) {
            cmd.extend(["TTL".into(), self.rng.range(300, 900).to_string()]);
        }
        if let Some(t) = token {
            cmd.extend(["TOKEN".into(), t]);
            if self.rng.chance(30) {
                cmd.push("FENCED".into());
            }
        }
        if self.rng.chance(15) {
            let a = self.rng.pick(&AGENTS).to_string();
            // A limit of 1 is soon spent: SKIPPED, and waiters get SHARED.
            let limit = self.rng.pick(&["1", "3"]).to_string();
            cmd.extend(["AGENT".into(), a, "WLIMIT".into(), limit]);
        }
        self.count("op PLAN.SET");
        self.call(&cmd);
    }

    fn lock(&mut self) {
        let extend = !self.held.is_empty() && self.rng.chance(40);
        let ttl = self.rng.range(100, 2000).to_string();
        if extend {
            let i = self.rng.below(self.held.len() as u64) as usize;
            let (p, t) = self.held[i].clone();
            let cmd = vec![
                "OKOME.LOCK".to_string(),
                self.keys[p].clone(),
                "TTL".into(),
                ttl,
                "TOKEN".into(),
                t,
            ];
            self.count("op LOCK extend");
            self.call(&cmd);
        } else {
            let p = self.rng.below(PROMPTS.len() as u64) as usize;
            let mut cmd = vec!["OKOME.LOCK".to_string(), self.keys[p].clone()];
            if self.rng.chance(50) {
                cmd.extend(["TTL".into(), ttl]);
            }
            self.count("op LOCK");
            if let Some(t) = self.call(&cmd).text() {
                if !is_token(&t) {
                    self.fail(&format!("OKOME.LOCK gave {t:?}"));
                }
                self.tokens.insert(t.clone());
                self.held.push((p, t));
            }
        }
    }

    fn unlock(&mut self) {
        let (p, t) = if !self.held.is_empty() && self.rng.chance(75) {
            let i = self.rng.below(self.held.len() as u64) as usize;
            self.held.swap_remove(i)
        } else {
            let p = self.rng.below(PROMPTS.len() as u64) as usize;
            (p, "f".repeat(32))
        };
        let mut cmd = vec!["OKOME.UNLOCK".to_string(), self.keys[p].clone(), t];
        if self.rng.chance(40) {
            cmd.extend(["FAILED".into(), self.rng.range(0, 3000).to_string()]);
            if self.rng.chance(50) {
                cmd.push(format!("failed at step {}", self.step));
            }
            self.count("op UNLOCK FAILED");
        } else {
            self.count("op UNLOCK");
        }
        self.call(&cmd);
    }

    fn budget(&mut self) {
        let a = self.rng.pick(&AGENTS).to_string();
        let limit = self.rng.range(1, 5).to_string();
        let cmd = if self.rng.chance(65) {
            let mut c = vec![
                "OKOME.RATE".to_string(),
                a,
                limit,
                self.rng.range(1, 3).to_string(),
            ];
            if self.rng.chance(20) {
                c.extend(["COST".into(), self.rng.range(0, 2).to_string()]);
            }
            self.count("op RATE");
            c
        } else {
            self.count("op WBUDGET");
            vec!["OKOME.WBUDGET".to_string(), a, limit]
        };
        self.call(&cmd);
    }

    fn cache(&mut self) {
        let repo = format!("repo{}", self.rng.below(3));
        let chunk = format!("chunk{}", self.rng.below(3));
        let cmd: Vec<String> = if self.rng.chance(50) {
            self.count("op CACHE.SET");
            vec![
                "OKOME.CACHE.SET".into(),
                "rag".into(),
                repo,
                chunk,
                format!(r#"{{"text":"step {}"}}"#, self.step),
            ]
        } else {
            self.count("op CACHE.GET");
            vec!["OKOME.CACHE.GET".into(), "rag".into(), repo, chunk]
        };
        self.call(&cmd);
    }

    fn foreign(&mut self) {
        let p = self.rng.below(PROMPTS.len() as u64) as usize;
        let lock = format!("{}:lock", self.keys[p]);
        let value = format!("foreign-{}", self.step);
        let cmd: Vec<String> = match self.rng.below(5) {
            0 | 1 => {
                self.count("op foreign lock without TTL");
                self.foreign.insert(lock.clone());
                vec!["SET".into(), lock, value]
            }
            2 => {
                self.count("op foreign short lock");
                let px = self.rng.range(20, 300).to_string();
                vec!["SET".into(), lock, value, "PX".into(), px]
            }
            3 => {
                self.count("op DEL lock");
                vec!["DEL".into(), lock]
            }
            _ => {
                if self.rng.chance(50) {
                    self.count("op raw plan");
                    vec![
                        "SET".into(),
                        self.keys[p].clone(),
                        value,
                        "EX".into(),
                        "60".into(),
                    ]
                } else {
                    self.count("op garbage window");
                    let a = self.rng.pick(&AGENTS);
                    vec![
                        "SET".into(),
                        format!("okome:budget:rate:{{{a}}}"),
                        value,
                        "PX".into(),
                        "500".into(),
                    ]
                }
            }
        };
        self.call(&cmd);
    }

    // ------------------------------------------------------------- admin

    fn admin(&mut self) {
        match self.rng.below(12) {
            0 | 1 => {
                let ms = self.rng.range(5, 60);
                let mode = if self.rng.chance(70) { "WRITE" } else { "ALL" };
                self.count(&format!("op CLIENT PAUSE {mode}"));
                self.admin_call(&["CLIENT", "PAUSE", &ms.to_string(), mode]);
                let until = Instant::now() + Duration::from_millis(ms);
                self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
            }
            2 => {
                self.count("op CLIENT UNPAUSE");
                self.admin_call(&["CLIENT", "UNPAUSE"]);
                self.paused_until = None;
            }
            3 => self.kill_waiter(),
            4 | 5 => self.unblock_waiter(),
            6 => {
                self.count("op FLUSHDB");
                self.admin_call(&["FLUSHDB"]);
            }
            7 => {
                self.count("op SWAPDB");
                self.admin_call(&["SWAPDB", "0", "1"]);
            }
            8 => {
                self.count("op DEBUG RELOAD");
                self.admin_call(&["DEBUG", "RELOAD"]);
            }
            9 => {
                let hz = *self.rng.pick(&["1", "10", "100", "500"]);
                self.count("op CONFIG SET hz");
                self.admin_call(&["CONFIG", "SET", "hz", hz]);
            }
            10 => {
                let policy = *self.rng.pick(&[
                    "noeviction",
                    "allkeys-lru",
                    "volatile-ttl",
                    "allkeys-random",
                ]);
                let limit = match self.rng.below(3) {
                    0 => "0".to_string(),
                    1 => "1".to_string(),
                    _ => {
                        let info = self
                            .admin_call(&["INFO", "memory"])
                            .text()
                            .unwrap_or_default();
                        let used: u64 = parse_info(&info)
                            .get("used_memory")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        (used + self.rng.range(0, 64 * 1024)).to_string()
                    }
                };
                self.count(&format!("op maxmemory {policy}"));
                self.admin_call(&["CONFIG", "SET", "maxmemory-policy", policy]);
                self.admin_call(&["CONFIG", "SET", "maxmemory", &limit]);
            }
            _ => {
                // The replica: writes are refused, reads work.
                let p = self.rng.below(PROMPTS.len() as u64) as usize;
                let cmd: Vec<String> = if self.rng.chance(50) {
                    ["OKOME.PLAN.GET", "m", PROMPTS[p], "t", "r"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                } else {
                    vec![
                        "OKOME.CACHE.GET".into(),
                        "rag".into(),
                        "repo0".into(),
                        "chunk0".into(),
                    ]
                };
                self.note(format!("replica: {}", cmd.join(" ")));
                self.count("op replica read");
                let r = self.rconn.call(&cmd, T);
                if let Some(e) = r.error() {
                    let e = e.to_string();
                    self.count_error("replica", &e);
                }
            }
        }
    }

    fn one_step(&mut self) {
        self.pump();
        match self.rng.below(100) {
            0..=17 => self.waiter_plan_get(),
            18..=29 => self.plan_get(),
            30..=38 => self.plan_set(),
            39..=44 => self.lock(),
            45..=50 => self.unlock(),
            51..=58 => self.budget(),
            59..=62 => self.cache(),
            63..=67 => self.foreign(),
            68..=79 => self.admin(),
            _ => {
                let ms = self.rng.range(0, 6);
                thread::sleep(Duration::from_millis(ms));
            }
        }
    }

    // ------------------------------------------------------------ checks

    fn check(&mut self) {
        self.note("check".into());
        self.admin_call(&["CLIENT", "UNPAUSE"]);
        self.paused_until = None;
        self.admin_call(&["CONFIG", "SET", "maxmemory", "0"]);
        self.drain();
        // Fence: nothing more arrives on any waiter.
        for w in 0..self.waiters.len() {
            let now = Instant::now();
            self.waiters[w].conn.send(&["PING"]);
            self.waiters[w].queue.push_back(Expect {
                want: Want::Pong,
                sent: now,
                started: now,
                step: self.step,
            });
        }
        self.drain();

        let what = format!("step {} (seed {})", self.step, self.seed);
        self.primary.assert_alive(&format!("primary at {what}"));
        self.replica.assert_alive(&format!("replica at {what}"));
        let pong = self.rconn.call(&["PING"], T);
        if !pong.is_pong() {
            self.fail(&format!("replica PING: {pong:?}"));
        }

        // okome meets every lock written by hand without a TTL; then no
        // lock lacks a TTL, and no lock holds a token nobody received.
        let foreign: Vec<String> = std::mem::take(&mut self.foreign).into_iter().collect();
        for db in ["1", "0"] {
            self.admin_call(&["SELECT", db]);
            for lock in &foreign {
                let base = lock.strip_suffix(":lock").unwrap().to_string();
                let r = self.admin_call(&["OKOME.LOCK", &base]);
                if let Some(t) = r.text() {
                    self.tokens.insert(t);
                }
            }
            let keys = match self.admin_call(&["KEYS", "*:lock"]) {
                Resp::Array(Some(v)) => v,
                other => self.fail(&format!("KEYS: {other:?}")),
            };
            for k in keys {
                let k = k.text().unwrap();
                let pttl = self.admin_call(&["PTTL", &k]).int().unwrap_or(-3);
                if pttl == -1 {
                    self.fail(&format!("db {db}: {k} has no TTL after okome met it"));
                }
                if let Some(v) = self.admin_call(&["GET", &k]).text() {
                    if is_token(&v) && !self.tokens.contains(&v) {
                        self.fail(&format!(
                            "db {db}: GHOST LOCK {k} holds {v}, a token no client received"
                        ));
                    }
                    if !is_token(&v) && !v.starts_with("foreign-") {
                        self.fail(&format!("db {db}: {k} holds {v:?}"));
                    }
                }
            }
        }

        // Nobody waits: the counters add up.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let text = self
                .admin_call(&["INFO", "okome"])
                .text()
                .unwrap_or_default();
            let c = wait_counters(&text).unwrap_or_else(|e| self.fail(&e));
            if c["waiting_clients"] == 0 {
                if let Err(e) = check_wait_invariants(&c) {
                    self.fail(&e);
                }
                break;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "waiting_clients stays above 0 with no waiter: {c:?}"
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
        let info = self
            .admin_call(&["INFO", "clients"])
            .text()
            .unwrap_or_default();
        let blocked = parse_info(&info).get("blocked_clients").cloned();
        if blocked.as_deref() != Some("0") {
            self.fail(&format!("blocked_clients {blocked:?} with no waiter"));
        }
        // Forget tokens of locks that cannot be held any more (2 s max).
        if self.held.len() > 50 {
            let n = self.held.len() - 50;
            self.held.drain(..n);
        }
    }

    fn run(&mut self, steps: usize) {
        let started = Instant::now();
        while self.step < steps {
            self.step += 1;
            self.one_step();
            if self.step.is_multiple_of(BATCH) || self.step == steps {
                self.check();
            }
        }
        println!(
            "chaos: {steps} steps, seed {}, in {:?}",
            self.seed,
            started.elapsed()
        );
        for (k, v) in &self.stats {
            println!("  {k}: {v}");
        }
    }
}

#[test]
fn chaos() {
    let _alone = alone();
    let steps = env_number::<u64>("OKOME_CHAOS_STEPS").unwrap_or(10_000) as usize;
    let seed = env_number("OKOME_CHAOS_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!("chaos: OKOME_CHAOS_SEED={seed} OKOME_CHAOS_STEPS={steps}");
    let mut chaos = Chaos::new(seed);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| chaos.run(steps)));
    if let Err(e) = outcome {
        eprintln!(
            "chaos failed at step {} with OKOME_CHAOS_SEED={seed} OKOME_CHAOS_STEPS={steps}; last steps:",
            chaos.step
        );
        for h in &chaos.history {
            eprintln!("{h}");
        }
        let (p, r) = (chaos.primary.alive(), chaos.replica.alive());
        eprintln!("primary alive: {p}, replica alive: {r}");
        eprintln!("primary log tail:\n{}", chaos.primary.log_tail(30));
        panic::resume_unwind(e);
    }
}
