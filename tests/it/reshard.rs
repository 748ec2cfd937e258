//! A live reshard under okome load. okome declares every key it touches, so
//! Redis itself redirects okome calls on their real keys while hash slots
//! move: `MOVED` once a slot has moved, `ASK` / `TRYAGAIN` while it moves
//! (`CLUSTER SETSLOT ... MIGRATING/IMPORTING` + `MIGRATE`, what
//! `redis-cli --cluster reshard` does), or nothing at all but a final
//! `MOVED` with Valkey 9's atomic slot migration (`CLUSTER MIGRATESLOTS`).
//!
//! While the slots of a few hot keys go round the three primaries, threads
//! with their own redirect-following clients run:
//!
//! - rate windows (`OKOME.RATE`, a 600 s window, so nothing leaves it):
//!   exactly `min(limit, calls)` admitted over the whole run, and the window
//!   on its final node says the same;
//! - planner leaders (`OKOME.PLAN.LOOKUP key LOCKTTL 10000`): a `MISS` with a
//!   token makes its caller the leader, which holds it a while, stores the
//!   plan with `PLAN.SET ... TOKEN` (that must still release its own lock)
//!   and deletes it again to elect the next one: never two leaders of a key
//!   at once;
//! - cache reads (`OKOME.CACHE.GET tools`) of a value stored before: never
//!   nil.
//!
//! Every migration must complete (no `BUSYKEY`), and afterwards every key
//! lives on exactly one node, the one serving its slot. The migrations:
//! by hand (`SETSLOT`/`MIGRATE`, with pauses so the load meets open slots)
//! and `redis-cli --cluster reshard` on any server; `CLUSTER MIGRATESLOTS`
//! on Valkey 9 (skipped, saying why, on a server without it). A last test
//! holds one slot open and pins the exact reply of each okome call on the
//! source and the target.

use crate::support::cluster::{owner_in, slot_ranges, Cluster};
use crate::support::*;

use redis::{ErrorKind, FromRedisValue};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const SLOTS: usize = 16384;
/// Every hot key lies in the first `HOT_SPAN` slots: the first node serves
/// them after `redis-cli --cluster create`, and `redis-cli --cluster
/// reshard --cluster-slots HOT_SPAN` moves exactly those (it takes a
/// source's slots in ascending order).
const HOT_SPAN: usize = 64;
/// (agent prefix, limit, called every n-th round of a rate worker)
const AGENTS: [(&str, i64, u64); 3] = [("hot", 10, 1), ("mid", 300, 4), ("steady", 100_000, 1)];
const WINDOW_S: &str = "600";
const LOCK_TTL_MS: &str = "10000";
/// How long a leader holds its lock before it stores the plan.
const HOLD: Duration = Duration::from_millis(40);
const PLAN_JSON: &str = r#"{"p":1}"#;
const CACHE_JSON: &str = r#"{"tools":["ls","cat"]}"#;
const PLANNERS: usize = 3;
const MAX_ATTEMPTS: u32 = 50;

// ------------------------------------------------------------------ slots

/// The slot of `key`, hash tag included (okome's own function).
fn key_slot(key: &[u8]) -> usize {
    usize::from(okome_core::keys::slot(key))
}

fn port_of(addr: &str) -> Result<u16, String> {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no port in {addr:?}"))
}

/// Polls until every node says `port` serves each of `slots`.
fn wait_owner(cl: &Cluster, slots: &[usize], port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<Vec<(i64, i64, u16)>> = cl
            .nodes
            .iter()
            .map(|n| slot_ranges(&mut n.conn()))
            .collect();
        let wrong: Vec<(usize, usize, Option<u16>)> = views
            .iter()
            .enumerate()
            .flat_map(|(i, v)| slots.iter().map(move |&s| (i, s, owner_in(v, s as i64))))
            .filter(|&(_, _, o)| o != Some(port))
            .collect();
        if wrong.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nodes still disagree that :{port} serves {slots:?}: (node, slot, owner) {wrong:?}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until the three nodes agree on the whole slot map.
fn wait_agree(cl: &Cluster) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<Vec<(i64, i64, u16)>> = cl
            .nodes
            .iter()
            .map(|n| slot_ranges(&mut n.conn()))
            .collect();
        if views.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("nodes disagree on the slot map: {views:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn node_ids(cl: &Cluster) -> Vec<String> {
    cl.nodes
        .iter()
        .map(|n| {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut n.conn())
                .expect("CLUSTER MYID")
        })
        .collect()
}

// ------------------------------------------------------ a cluster client

/// Redirections a client followed.
#[derive(Debug, Default, Clone, Copy)]
struct Redirects {
    moved: u64,
    ask: u64,
    tryagain: u64,
}

impl std::ops::AddAssign for Redirects {
    fn add_assign(&mut self, o: Redirects) {
        self.moved += o.moved;
        self.ask += o.ask;
        self.tryagain += o.tryagain;
    }
}

/// A minimal cluster client over single-node connections: routes a call by
/// the slot of the key it names, follows `MOVED` (and remembers it), `ASK`
/// (`ASKING`, then the call, on the node named), `TRYAGAIN` (waits, then
/// asks the slot's owner again), up to `MAX_ATTEMPTS` times.
struct Router {
    conns: HashMap<u16, redis::Connection>,
    owner: Vec<u16>,
    seen: Redirects,
    /// When the attempt that produced the last reply was sent.
    sent: Instant,
}

impl Router {
    fn new(seed: u16) -> Router {
        let ranges = slot_ranges(&mut connect(seed));
        let mut owner = vec![0u16; SLOTS];
        for (lo, hi, port) in ranges {
            for s in lo..=hi {
                owner[s as usize] = port;
            }
        }
        Router {
            conns: HashMap::new(),
            owner,
            seen: Redirects::default(),
            sent: Instant::now(),
        }
    }

    /// Runs `args` (`args[0]` the command) routed by `key`'s slot; `Err` for
    /// any error reply but a redirection, or when redirections never end.
    fn call<T: FromRedisValue>(&mut self, key: &str, args: &[&str]) -> Result<T, String> {
        let slot = key_slot(key.as_bytes());
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let mut ask: Option<u16> = None;
        let mut last = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            let asking = ask.take();
            let port = asking.unwrap_or(self.owner[slot]);
            let sent = Instant::now();
            let conn = self.conns.entry(port).or_insert_with(|| connect(port));
            if asking.is_some() {
                redis::cmd("ASKING")
                    .query::<()>(conn)
                    .map_err(|e| format!("ASKING on :{port}: {e}"))?;
            }
            let e = match cmd.query::<T>(conn) {
                Ok(v) => {
                    self.sent = sent;
                    return Ok(v);
                }
                Err(e) => e,
            };
            last = format!("{} (from :{port})", error_text(&e));
            match e.kind() {
                ErrorKind::Moved => {
                    let (addr, s) = e.redirect_node().ok_or(&last)?;
                    if usize::from(s) != slot {
                        return Err(format!(
                            "{args:?}: MOVED names slot {s}, but its key {key} is in slot {slot}: {last}"
                        ));
                    }
                    self.owner[slot] = port_of(addr)?;
                    self.seen.moved += 1;
                }
                ErrorKind::Ask => {
                    let (addr, s) = e.redirect_node().ok_or(&last)?;
                    if usize::from(s) != slot {
                        return Err(format!(
                            "{args:?}: ASK names slot {s}, but its key {key} is in slot {slot}: {last}"
                        ));
                    }
                    ask = Some(port_of(addr)?);
                    self.seen.ask += 1;
                }
                ErrorKind::TryAgain => {
                    self.seen.tryagain += 1;
                    thread::sleep(Duration::from_millis(u64::from(2 + 2 * attempt.min(24))));
                }
                _ => return Err(format!("{args:?}: {last}")),
            }
        }
        Err(format!(
            "{args:?}: still redirected after {MAX_ATTEMPTS} attempts; last: {last}"
        ))
    }
}

// ------------------------------------------------------------- the load

/// The keys the load touches, all in the first `HOT_SPAN` slots, each in a
/// slot of its own.
struct Hot {
    /// (agent, its window's key, limit, every n-th round)
    agents: Vec<(String, String, i64, u64)>,
    /// Planner keys.
    plans: Vec<String>,
    /// The tools version and its key.
    tools: (String, String),
}

impl Hot {
    fn pick(cl: &Cluster) -> Hot {
        let mut taken = BTreeSet::new();
        let mut pick = |prefix: &str, key_of: &dyn Fn(&str) -> String| -> (String, String) {
            (0..)
                .map(|i| format!("{prefix}-{i}"))
                .map(|name| {
                    let key = key_of(&name);
                    (name, key)
                })
                .find(|(_, key)| {
                    let s = key_slot(key.as_bytes());
                    s < HOT_SPAN && taken.insert(s)
                })
                .expect("a name in the hot slots")
        };
        let agents = AGENTS
            .iter()
            .map(|&(prefix, limit, every)| {
                let (a, k) = pick(prefix, &|a| format!("okome:budget:rate:{{{a}}}"));
                (a, k, limit, every)
            })
            .collect();
        let plans = (0..PLANNERS)
            .map(|i| {
                pick(&format!("plan the page {i}"), &|p| {
                    format!("okome:planner:llama3%3A8b:{{{}}}:v1:abc123", sha256_hex(p))
                })
            })
            .collect::<Vec<_>>();
        let tools = pick("v", &|v| format!("okome:tools:{{{v}}}"));

        // The keys are okome's own, and the slots Redis's.
        let mut c = cl.nodes[0].conn();
        let hot = Hot {
            agents,
            plans: plans.iter().map(|(_, k)| k.clone()).collect(),
            tools,
        };
        for (a, k, ..) in &hot.agents {
            assert_eq!(&okome_key(&mut c, "rate", &[a]), k);
        }
        for (prompt, k) in &plans {
            assert_eq!(
                &okome_key(&mut c, "planner", &["llama3:8b", prompt, "v1", "abc123"]),
                k
            );
        }
        assert_eq!(okome_key(&mut c, "tools", &[&hot.tools.0]), hot.tools.1);
        for k in hot.keys() {
            assert_eq!(cl.slot(&k) as usize, key_slot(k.as_bytes()), "{k}");
        }
        hot
    }

    /// Every key that must exist after the run.
    fn keys(&self) -> Vec<String> {
        let mut out: Vec<String> = self.agents.iter().map(|a| a.1.clone()).collect();
        out.extend(self.plans.iter().cloned());
        out.push(self.tools.1.clone());
        out
    }

    fn slots(&self) -> Vec<usize> {
        let s: BTreeSet<usize> = self.keys().iter().map(|k| key_slot(k.as_bytes())).collect();
        s.into_iter().collect()
    }
}

/// One leader's tenure, in time since the load started: when its `MISS`
/// was sent and received, when its `PLAN.SET` was sent and received.
#[derive(Debug, Clone)]
struct Lease {
    plan: usize,
    token: String,
    miss_sent: Duration,
    miss_recv: Duration,
    set_sent: Duration,
    set_recv: Duration,
}

/// What one worker saw.
#[derive(Debug, Default)]
struct Report {
    /// Per agent: (calls, admitted).
    rate: Vec<(i64, i64)>,
    leases: Vec<Lease>,
    /// PLAN.LOOKUP replies by status.
    lookups: BTreeMap<String, i64>,
    cache_reads: i64,
    redirects: Redirects,
}

struct Shared {
    stop: AtomicBool,
    failed: AtomicBool,
    t0: Instant,
}

/// A worker's body.
type Job = Box<dyn FnOnce(&Hot, &Shared) -> Result<Report, String> + Send>;

fn rate_worker(hot: &Hot, seed: u16, sh: &Shared, me: u64) -> Result<Report, String> {
    let mut r = Router::new(seed);
    let mut rep = Report {
        rate: vec![(0, 0); hot.agents.len()],
        ..Report::default()
    };
    let mut round = me;
    while !sh.stop.load(Ordering::Relaxed) {
        for (i, (agent, key, limit, every)) in hot.agents.iter().enumerate() {
            if !round.is_multiple_of(*every) {
                continue;
            }
            let limit = limit.to_string();
            let (allowed, ..): (i64, i64, i64, i64) =
                r.call(key, &["OKOME.RATE", agent, &limit, WINDOW_S])?;
            rep.rate[i].0 += 1;
            rep.rate[i].1 += allowed;
        }
        round += 1;
        thread::sleep(Duration::from_millis(2));
    }
    rep.redirects = r.seen;
    Ok(rep)
}

fn leader_worker(hot: &Hot, seed: u16, sh: &Shared, me: usize) -> Result<Report, String> {
    let mut r = Router::new(seed);
    let mut rep = Report::default();
    let mut n = me;
    while !sh.stop.load(Ordering::Relaxed) {
        let plan = n % hot.plans.len();
        n += 1;
        let key = hot.plans[plan].as_str();
        let (status, k, value, _ms, token, _rate): PlanReply =
            r.call(key, &["OKOME.PLAN.LOOKUP", key, "LOCKTTL", LOCK_TTL_MS])?;
        let miss_recv = sh.t0.elapsed();
        let miss_sent = r.sent.duration_since(sh.t0);
        if k != key {
            return Err(format!("PLAN.LOOKUP {key} replied key {k}"));
        }
        *rep.lookups.entry(status.clone()).or_default() += 1;
        match (status.as_str(), value.as_deref(), token) {
            ("HIT", Some(PLAN_JSON), None) | ("LOCKED", None, None) => {}
            ("MISS", None, Some(token)) => {
                thread::sleep(HOLD);
                let set_sent = sh.t0.elapsed();
                let stored: (String, i64, Option<i64>, i64) =
                    r.call(key, &["OKOME.PLAN.SET", key, PLAN_JSON, "TOKEN", &token])?;
                let set_recv = sh.t0.elapsed();
                if stored != ("STORED".to_string(), 600_000, None, 1) {
                    return Err(format!(
                        "leader {token} of {key} (MISS at {miss_recv:?}) stored at {set_recv:?}: {stored:?}, \
                         not [STORED, 600000, nil, 1]: its lock was no longer its own"
                    ));
                }
                rep.leases.push(Lease {
                    plan,
                    token,
                    miss_sent,
                    miss_recv,
                    set_sent,
                    set_recv,
                });
                if !sh.stop.load(Ordering::Relaxed) {
                    // Elect the next leader.
                    let _: i64 = r.call(key, &["DEL", key])?;
                }
            }
            (s, v, t) => {
                return Err(format!(
                    "PLAN.LOOKUP {key}: unexpected {s} value {v:?} token {t:?}"
                ))
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    rep.redirects = r.seen;
    Ok(rep)
}

fn cache_worker(hot: &Hot, seed: u16, sh: &Shared) -> Result<Report, String> {
    let mut r = Router::new(seed);
    let mut rep = Report::default();
    let (version, key) = (&hot.tools.0, hot.tools.1.as_str());
    while !sh.stop.load(Ordering::Relaxed) {
        let got: Option<(String, i64)> = r.call(key, &["OKOME.CACHE.GET", "tools", version])?;
        match got {
            Some((v, ttl)) if v == CACHE_JSON && ttl > 0 && ttl <= 600_000 => {}
            other => {
                return Err(format!(
                    "OKOME.CACHE.GET tools {version} at {:?}: {other:?}, not [{CACHE_JSON}, ttl]",
                    sh.t0.elapsed()
                ))
            }
        }
        rep.cache_reads += 1;
        thread::sleep(Duration::from_millis(1));
    }
    rep.redirects = r.seen;
    Ok(rep)
}

/// Two leases of one plan that certainly overlapped: one leader's `MISS`
/// was both sent and answered while the other certainly held the lock
/// (after its own `MISS` was answered, before its `PLAN.SET` was sent).
fn overlaps(leases: &[Lease]) -> Vec<(Lease, Lease)> {
    let mut out = Vec::new();
    for a in leases {
        for b in leases {
            if a.plan == b.plan
                && a.token != b.token
                && b.miss_sent > a.miss_recv
                && b.miss_recv < a.set_sent
            {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// Where each of `keys` is, as `KEYS *` on every node shows it, and every
/// key that is on a node not serving its slot.
fn placement(cl: &Cluster, keys: &[String]) -> (BTreeMap<String, Vec<usize>>, Vec<String>) {
    let ranges = slot_ranges(&mut cl.nodes[0].conn());
    let mut at: BTreeMap<String, Vec<usize>> = keys.iter().map(|k| (k.clone(), vec![])).collect();
    let mut misplaced = Vec::new();
    for (i, n) in cl.nodes.iter().enumerate() {
        let all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut n.conn()).unwrap();
        for k in all {
            if owner_in(&ranges, key_slot(k.as_bytes()) as i64) != Some(n.port) {
                misplaced.push(format!("{k} on node {i}"));
            }
            if let Some(v) = at.get_mut(&k) {
                v.push(i);
            }
        }
    }
    (at, misplaced)
}

/// Runs the load on `cl` while `migrate` moves the hot slots; then checks
/// everything the module promises. `migrate` returns what it did, or why
/// a migration failed.
fn reshard_under_load(
    cl: &Cluster,
    what: &str,
    expect_ask: bool,
    migrate: impl FnOnce(&Cluster, &Hot, &Shared) -> Result<Vec<String>, String>,
) {
    let hot = Hot::pick(cl);
    let home = cl.owner(0);
    for s in hot.slots() {
        assert_eq!(cl.owner(s as i64), home, "hot slot {s}");
    }
    let seed = cl.nodes[0].port;
    let mut setup = Router::new(seed);
    let stored: i64 = setup
        .call(
            &hot.tools.1,
            &[
                "OKOME.CACHE.SET",
                "tools",
                &hot.tools.0,
                CACHE_JSON,
                "TTL",
                "600",
            ],
        )
        .expect("CACHE.SET");
    assert_eq!(stored, 600_000);

    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        t0: Instant::now(),
    });
    let hot = Arc::new(hot);
    let mut workers: Vec<(String, thread::JoinHandle<Result<Report, String>>)> = Vec::new();
    let mut spawn = |name: String, f: Job| {
        let (hot, sh) = (Arc::clone(&hot), Arc::clone(&sh));
        let h = thread::spawn(move || {
            let r = f(&hot, &sh);
            if r.is_err() {
                sh.failed.store(true, Ordering::Relaxed);
            }
            r
        });
        workers.push((name, h));
    };
    for i in 0..3u64 {
        spawn(
            format!("rate-{i}"),
            Box::new(move |h, s| rate_worker(h, seed, s, i)),
        );
    }
    for i in 0..4usize {
        spawn(
            format!("leader-{i}"),
            Box::new(move |h, s| leader_worker(h, seed, s, i)),
        );
    }
    for i in 0..2 {
        spawn(
            format!("cache-{i}"),
            Box::new(move |h, s| cache_worker(h, seed, s)),
        );
    }

    thread::sleep(Duration::from_millis(300));
    let migrated = migrate(cl, &hot, &sh);
    // Some load after the last move: clients learn the new owners by MOVED.
    thread::sleep(Duration::from_millis(300));
    sh.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (name, h) in workers {
        match h.join() {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(_) => failures.push(format!("{name} panicked")),
        }
    }
    let log = match migrated {
        Ok(log) => log,
        Err(e) => panic!("{what}: a migration failed: {e}\nworker failures: {failures:#?}"),
    };
    assert!(
        failures.is_empty(),
        "{what}: {failures:#?}\nmigrations: {log:#?}"
    );
    wait_agree(cl).unwrap();

    // Rate windows: exactly min(limit, calls) admitted, whatever node
    // answered, and the window on its final node agrees.
    let mut redirects = Redirects::default();
    for r in &reports {
        redirects += r.redirects;
    }
    let mut check = Router::new(seed);
    for (i, (agent, key, limit, _)) in hot.agents.iter().enumerate() {
        let (calls, admitted) = reports
            .iter()
            .filter(|r| !r.rate.is_empty())
            .fold((0, 0), |(c, a), r| (c + r.rate[i].0, a + r.rate[i].1));
        assert!(calls > 0, "{agent}: no calls");
        assert_eq!(
            admitted,
            calls.min(*limit),
            "{agent}: {admitted} admitted of {calls} calls with limit {limit}"
        );
        let (allowed, remaining, retry, _reset): (i64, i64, i64, i64) = check
            .call(
                key,
                &[
                    "OKOME.RATE",
                    agent,
                    &limit.to_string(),
                    WINDOW_S,
                    "COST",
                    "0",
                ],
            )
            .unwrap();
        assert_eq!(
            (allowed, remaining, retry),
            (1, limit - admitted, 0),
            "{agent}: the window on its node"
        );
    }
    let hot_calls: i64 = reports
        .iter()
        .filter(|r| !r.rate.is_empty())
        .map(|r| r.rate[0].0)
        .sum();
    assert!(
        hot_calls > AGENTS[0].1,
        "{hot_calls} calls of the hot agent"
    );

    // Leaders: never two of one plan at once; every one stored the plan and
    // released its own lock; each plan had several.
    let leases: Vec<Lease> = reports.iter().flat_map(|r| r.leases.clone()).collect();
    let bad = overlaps(&leases);
    assert!(bad.is_empty(), "{what}: two leaders at once: {bad:#?}");
    for p in 0..hot.plans.len() {
        let n = leases.iter().filter(|l| l.plan == p).count();
        assert!(n >= 3, "plan {p}: only {n} leaders");
    }
    let tokens: BTreeSet<&str> = leases.iter().map(|l| l.token.as_str()).collect();
    assert_eq!(tokens.len(), leases.len(), "a token handed out twice");
    let mut lookups: BTreeMap<String, i64> = BTreeMap::new();
    for r in &reports {
        for (s, n) in &r.lookups {
            *lookups.entry(s.clone()).or_default() += n;
        }
    }
    let longest = leases
        .iter()
        .map(|l| l.set_recv.saturating_sub(l.miss_sent))
        .max()
        .unwrap_or_default();
    let cache_reads: i64 = reports.iter().map(|r| r.cache_reads).sum();
    assert!(cache_reads > 0);
    assert!(redirects.moved > 0, "{what}: no MOVED seen: {redirects:?}");
    if expect_ask {
        assert!(
            redirects.ask > 0 && redirects.tryagain > 0,
            "{what}: no ASK or no TRYAGAIN seen while slots were open: {redirects:?}"
        );
    }

    // The last leader of a plan may have deleted it just before the stop:
    // store every plan once more, so that each must exist.
    for key in &hot.plans {
        let (status, _, _, _, token, _): PlanReply = check
            .call(key, &["OKOME.PLAN.LOOKUP", key, "LOCKTTL", LOCK_TTL_MS])
            .unwrap();
        match (status.as_str(), token) {
            ("HIT", None) => {}
            ("MISS", Some(token)) => {
                let stored: (String, i64, Option<i64>, i64) = check
                    .call(key, &["OKOME.PLAN.SET", key, PLAN_JSON, "TOKEN", &token])
                    .unwrap();
                assert_eq!(stored, ("STORED".to_string(), 600_000, None, 1));
            }
            other => panic!("{what}: {key} after the load: {other:?}"),
        }
    }

    // Every key on exactly one node, the one serving its slot; no lock
    // left behind (every leader released its own).
    let mut keys = hot.keys();
    let locks: Vec<String> = hot.plans.iter().map(|k| format!("{k}:lock")).collect();
    keys.extend(locks.iter().cloned());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (at, misplaced) = placement(cl, &keys);
        let wrong: Vec<(&String, &Vec<usize>)> = at
            .iter()
            .filter(|(k, nodes)| nodes.len() != usize::from(!locks.contains(k)))
            .collect();
        if wrong.is_empty() && misplaced.is_empty() {
            break;
        }
        // Valkey trims a migrated slot's keys on its source in the
        // background: give it a moment, then fail.
        assert!(
            Instant::now() < deadline,
            "{what}: keys not on exactly one node (nodes holding them): {wrong:?}; \
             keys on a node not serving their slot: {misplaced:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{what}: {} migrations in {:.1} s of load; redirects {redirects:?}; \
         lookups {lookups:?}; {} leaders (longest tenure {longest:?}); {cache_reads} cache reads; rate calls per agent {:?}",
        log.len(),
        sh.t0.elapsed().as_secs_f64(),
        leases.len(),
        hot.agents
            .iter()
            .enumerate()
            .map(|(i, a)| (
                a.0.clone(),
                reports
                    .iter()
                    .filter(|r| !r.rate.is_empty())
                    .map(|r| r.rate[i].0)
                    .sum::<i64>()
            ))
            .collect::<Vec<_>>()
    );
    for l in &log {
        eprintln!("  {l}");
    }
}

// ------------------------------------------------------------ migrations

/// Moves `slot` from node `from` to node `to` by hand, as `redis-cli
/// --cluster reshard` does, but with pauses, so that the load meets the
/// slot while it is open: `IMPORTING` on the target, `MIGRATING` on the
/// source, every key `MIGRATE`d alone, then `SETSLOT NODE` on the target,
/// the source and the third node. Returns the number of keys moved.
fn migrate_slot(
    cl: &Cluster,
    ids: &[String],
    slot: usize,
    from: usize,
    to: usize,
) -> Result<usize, String> {
    const PAUSE: Duration = Duration::from_millis(60);
    let s = slot.to_string();
    let mut src = cl.nodes[from].conn();
    let mut dst = cl.nodes[to].conn();
    try_ok(
        &mut dst,
        &["CLUSTER", "SETSLOT", &s, "IMPORTING", &ids[from]],
    )?;
    try_ok(&mut src, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &ids[to]])?;
    thread::sleep(PAUSE);
    let port = cl.nodes[to].port.to_string();
    let mut moved = 0;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg(&["GETKEYSINSLOT", &s, "10"])
            .query(&mut src)
            .map_err(|e| format!("GETKEYSINSLOT {s}: {e}"))?;
        if keys.is_empty() {
            break;
        }
        for k in keys {
            let r: String = redis::cmd("MIGRATE")
                .arg(&["127.0.0.1", &port, "", "0", "5000", "KEYS", &k])
                .query(&mut src)
                .map_err(|e| format!("MIGRATE {k} (slot {s}) to :{port}: {}", error_text(&e)))?;
            match r.as_str() {
                "OK" => moved += 1,
                "NOKEY" => {}
                other => return Err(format!("MIGRATE {k}: {other}")),
            }
            thread::sleep(Duration::from_millis(15));
        }
    }
    thread::sleep(PAUSE);
    let third = 3 - from - to;
    for n in [to, from, third] {
        try_ok(
            &mut cl.nodes[n].conn(),
            &["CLUSTER", "SETSLOT", &s, "NODE", &ids[to]],
        )?;
    }
    Ok(moved)
}

/// The hot slots go round the three nodes `rounds` times, one slot after
/// another, by hand.
fn by_setslot(
    cl: &Cluster,
    hot: &Hot,
    sh: &Shared,
    rounds: usize,
    log: &mut Vec<String>,
) -> Result<usize, String> {
    let ids = node_ids(cl);
    let slots = hot.slots();
    let mut from = cl.owner(slots[0] as i64);
    for _ in 0..rounds {
        let to = (from + 1) % 3;
        for &s in &slots {
            if sh.failed.load(Ordering::Relaxed) {
                return Err("stopped: a worker failed".into());
            }
            let t = Instant::now();
            let n = migrate_slot(cl, &ids, s, from, to)?;
            log.push(format!(
                "slot {s}: node {from} -> {to} by SETSLOT/MIGRATE, {n} keys, {} ms",
                t.elapsed().as_millis()
            ));
        }
        wait_owner(cl, &slots, cl.nodes[to].port)?;
        from = to;
    }
    Ok(from)
}

/// `redis-cli --cluster reshard` of the first `HOT_SPAN` slots round the
/// three nodes, starting from node `from`.
fn by_redis_cli(cl: &Cluster, from: usize, log: &mut Vec<String>) -> Result<(), String> {
    let ids = node_ids(cl);
    let span: Vec<usize> = (0..HOT_SPAN).collect();
    let mut from = from;
    for _ in 0..3 {
        let to = (from + 1) % 3;
        wait_agree(cl)?;
        let t = Instant::now();
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", cl.nodes[0].port))
            .args(["--cluster-from", &ids[from], "--cluster-to", &ids[to]])
            .args(["--cluster-slots", &HOT_SPAN.to_string(), "--cluster-yes"])
            .output()
            .map_err(|e| format!("run redis-cli: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || text.contains("BUSYKEY") || text.contains("[ERR]") {
            return Err(format!(
                "redis-cli --cluster reshard node {from} -> {to}: {}\n{text}",
                out.status
            ));
        }
        wait_owner(cl, &span, cl.nodes[to].port)?;
        log.push(format!(
            "slots 0-{}: node {from} -> {to} by redis-cli --cluster reshard, {} ms",
            HOT_SPAN - 1,
            t.elapsed().as_millis()
        ));
        from = to;
    }
    Ok(())
}

/// Legacy resharding (what every Redis since 3.0 and Valkey do): the hot
/// slots go round the nodes three times by hand, then `redis-cli --cluster
/// reshard` moves the first 64 slots round them once more.
#[test]
fn live_reshard_by_setslot_and_redis_cli() {
    let _alone = alone();
    let cl = Cluster::start();
    reshard_under_load(
        &cl,
        "SETSLOT/MIGRATE + redis-cli reshard",
        true,
        |cl, hot, sh| {
            let mut log = Vec::new();
            let at = by_setslot(cl, hot, sh, 3, &mut log)?;
            if sh.failed.load(Ordering::Relaxed) {
                return Err("stopped: a worker failed".into());
            }
            by_redis_cli(cl, at, &mut log)?;
            Ok(log)
        },
    );
}

/// The entries of `CLUSTER GETSLOTMIGRATIONS`, each as a map.
fn slot_migrations(c: &mut redis::Connection) -> Result<Vec<BTreeMap<String, String>>, String> {
    let v: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("GETSLOTMIGRATIONS")
        .query(c)
        .map_err(|e| format!("CLUSTER GETSLOTMIGRATIONS: {e}"))?;
    Ok(v.into_iter()
        .map(|entry| {
            entry
                .chunks(2)
                .filter_map(|kv| {
                    let k = String::from_redis_value(kv.first()?).ok()?;
                    let v = match kv.get(1)? {
                        redis::Value::Int(i) => i.to_string(),
                        other => String::from_redis_value(other).unwrap_or_default(),
                    };
                    Some((k, v))
                })
                .collect()
        })
        .collect())
}

/// Valkey 9's atomic slot migration: `CLUSTER MIGRATESLOTS SLOTSRANGE s s
/// ... NODE <id>` on the source, polled with `CLUSTER GETSLOTMIGRATIONS`
/// until the job succeeded; the hot slots go round the nodes three times. Redis
/// has no such command: skipped there.
#[test]
fn live_reshard_by_atomic_slot_migration() {
    let _alone = alone();
    {
        let probe = Server::start();
        if valkey_version(&mut probe.conn()).is_none() {
            eprintln!(
                "skipped: {} is not Valkey (INFO server has no valkey_version), \
                 so it has no CLUSTER MIGRATESLOTS",
                server_binary()
            );
            return;
        }
    }
    let cl = Cluster::start();
    reshard_under_load(&cl, "CLUSTER MIGRATESLOTS", false, |cl, hot, sh| {
        let ids = node_ids(cl);
        let slots = hot.slots();
        let mut log = Vec::new();
        let mut from = cl.owner(slots[0] as i64);
        for _ in 0..9 {
            if sh.failed.load(Ordering::Relaxed) {
                return Err("stopped: a worker failed".into());
            }
            let to = (from + 1) % 3;
            let mut src = cl.nodes[from].conn();
            let before: BTreeSet<String> = slot_migrations(&mut src)?
                .into_iter()
                .filter_map(|m| m.get("name").cloned())
                .collect();
            let mut args: Vec<String> = vec!["MIGRATESLOTS".into(), "SLOTSRANGE".into()];
            for s in &slots {
                args.push(s.to_string());
                args.push(s.to_string());
            }
            args.push("NODE".into());
            args.push(ids[to].clone());
            let t = Instant::now();
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg(&args);
            match cmd.query::<String>(&mut src) {
                Ok(s) if s == "OK" => {}
                Ok(s) => return Err(format!("CLUSTER {}: {s}", args.join(" "))),
                Err(e) => return Err(format!("CLUSTER {}: {}", args.join(" "), error_text(&e))),
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            let job = loop {
                let jobs = slot_migrations(&mut src)?;
                let new: Vec<&BTreeMap<String, String>> = jobs
                    .iter()
                    .filter(|m| m.get("name").is_some_and(|n| !before.contains(n)))
                    .collect();
                if let [job] = new.as_slice() {
                    match job.get("state").map(String::as_str) {
                        Some("success") => break (*job).clone(),
                        Some("failed" | "cancelled" | "canceled") => {
                            return Err(format!(
                                "slot migration node {from} -> {to} ended: {job:?}"
                            ))
                        }
                        _ => {}
                    }
                } else if new.len() > 1 {
                    return Err(format!("several new slot migrations: {new:?}"));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "slot migration node {from} -> {to} not done: {jobs:?}"
                    ));
                }
                thread::sleep(Duration::from_millis(20));
            };
            wait_owner(cl, &slots, cl.nodes[to].port)?;
            log.push(format!(
                "slots {slots:?}: node {from} -> {to} by CLUSTER MIGRATESLOTS, {} ms ({} {})",
                t.elapsed().as_millis(),
                job.get("operation").map_or("", String::as_str),
                job.get("slot_ranges").map_or("", String::as_str),
            ));
            from = to;
        }
        Ok(log)
    });
}

/// The first name `prefix-<i>` whose key (`key_of`) lies in `slot`.
fn name_in_slot(prefix: &str, slot: usize, key_of: impl Fn(&str) -> String) -> (String, String) {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .map(|n| {
            let k = key_of(&n);
            (n, k)
        })
        .find(|(_, k)| key_slot(k.as_bytes()) == slot)
        .expect("a name in the slot")
}

/// A call's reply, or its error as the server sent it.
fn reply(c: &mut redis::Connection, asking: bool, args: &[&str]) -> Result<redis::Value, String> {
    if asking {
        redis::cmd("ASKING").query::<()>(c).expect("ASKING");
    }
    call(c, args)
}

fn value_of<T: FromRedisValue>(r: Result<redis::Value, String>, what: &str) -> T {
    let v = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    T::from_redis_value(&v).unwrap_or_else(|e| panic!("{what}: {e}: {v:?}"))
}

/// One slot held open by hand (`MIGRATING` on its node, `IMPORTING` on
/// another), with a window, a cache value, a stored plan and a held lock in
/// it: every okome call is answered on the keys it declares, exactly as
/// Redis answers built-ins: served where all its keys are, `ASK` where none
/// are, `TRYAGAIN` where some are; on the target, served after `ASKING`
/// (`TRYAGAIN` for a lookup missing its plan, failure record or lock),
/// `MOVED` without it;
/// `MIGRATE` meets no second copy; after `SETSLOT NODE`, `MOVED` to the new
/// node, which serves every key as it was.
#[test]
fn an_open_slot_redirects_on_the_keys_a_call_touches() {
    let _alone = alone();
    let cl = Cluster::start();
    let plan = |p: &str| format!("okome:planner:llama3%3A8b:{{{}}}:v1:abc123", sha256_hex(p));
    let stored_plan = plan("plan the open slot");
    let slot = key_slot(stored_plan.as_bytes());
    assert_eq!(cl.slot(&stored_plan) as usize, slot);
    let (_, locked_plan) = name_in_slot("locked plan", slot, plan);
    let (agent, window) = name_in_slot("agent", slot, |a| format!("okome:budget:rate:{{{a}}}"));
    let (new_agent, new_window) =
        name_in_slot("new-agent", slot, |a| format!("okome:budget:rate:{{{a}}}"));
    let (version, value) = name_in_slot("v", slot, |v| format!("okome:tools:{{{v}}}"));
    let (new_version, _) = name_in_slot("new-v", slot, |v| format!("okome:tools:{{{v}}}"));
    let from = cl.owner(slot as i64);
    let to = (from + 1) % 3;
    let ids = node_ids(&cl);
    let (src_port, dst_port) = (cl.nodes[from].port, cl.nodes[to].port);
    let mut src = cl.nodes[from].conn();
    let mut dst = cl.nodes[to].conn();

    // The slot's keys: a window with one admission, a value, a stored plan
    // (no lock), a held lock (no plan).
    let r: (i64, i64, i64, i64) = value_of(
        reply(&mut src, false, &["OKOME.RATE", &agent, "5", "600"]),
        "RATE",
    );
    assert_eq!(r, (1, 4, 0, 600_000));
    let r: i64 = value_of(
        reply(
            &mut src,
            false,
            &["OKOME.CACHE.SET", "tools", &version, CACHE_JSON],
        ),
        "CACHE.SET",
    );
    assert_eq!(r, 600_000);
    let r: (String, i64, Option<i64>, i64) = value_of(
        reply(
            &mut src,
            false,
            &["OKOME.PLAN.SET", &stored_plan, PLAN_JSON],
        ),
        "PLAN.SET",
    );
    assert_eq!(r, ("STORED".into(), 600_000, None, 0));
    let lookup: PlanReply = value_of(
        reply(
            &mut src,
            false,
            &["OKOME.PLAN.LOOKUP", &locked_plan, "LOCKTTL", LOCK_TTL_MS],
        ),
        "LOOKUP",
    );
    assert_eq!(lookup.0, "MISS");
    let token = lookup.4.expect("a token");

    try_ok(
        &mut dst,
        &[
            "CLUSTER",
            "SETSLOT",
            &slot.to_string(),
            "IMPORTING",
            &ids[from],
        ],
    )
    .unwrap();
    try_ok(
        &mut src,
        &[
            "CLUSTER",
            "SETSLOT",
            &slot.to_string(),
            "MIGRATING",
            &ids[to],
        ],
    )
    .unwrap();
    let ask = format!("ASK {slot} 127.0.0.1:{dst_port}");
    let tryagain = |r: Result<redis::Value, String>, what: &str| match r {
        Err(e) if e.starts_with("TRYAGAIN ") => {}
        other => panic!("{what}: {other:?}, not TRYAGAIN"),
    };

    // On the source: served where every declared key is there.
    let got: (String, i64) = value_of(
        reply(&mut src, false, &["OKOME.CACHE.GET", "tools", &version]),
        "CACHE.GET",
    );
    assert_eq!(got.0, CACHE_JSON);
    let r: (i64, i64, i64, i64) = value_of(
        reply(&mut src, false, &["OKOME.RATE", &agent, "5", "600"]),
        "RATE",
    );
    assert_eq!(r, (1, 3, 0, 600_000));
    // ASK where none is.
    for args in [
        vec!["OKOME.CACHE.GET", "tools", &new_version],
        vec!["OKOME.RATE", &new_agent, "5", "600"],
        vec!["OKOME.LOCK", &stored_plan],
    ] {
        assert_eq!(reply(&mut src, false, &args), Err(ask.clone()), "{args:?}");
    }
    // TRYAGAIN where some are: a lookup declares the plan, its failure
    // record and (unless NOLOCK) its lock, as MGET would.
    tryagain(
        reply(
            &mut src,
            false,
            &["OKOME.PLAN.LOOKUP", &stored_plan, "NOLOCK"],
        ),
        "LOOKUP NOLOCK of the stored plan",
    );
    tryagain(
        reply(&mut src, false, &["OKOME.PLAN.LOOKUP", &stored_plan]),
        "LOOKUP of the stored plan",
    );
    tryagain(
        reply(&mut src, false, &["OKOME.PLAN.LOOKUP", &locked_plan]),
        "LOOKUP of the locked plan",
    );
    tryagain(
        reply(
            &mut src,
            false,
            &["OKOME.PLAN.SET", &locked_plan, PLAN_JSON, "TOKEN", &token],
        ),
        "PLAN.SET of the locked plan",
    );

    // On the target: MOVED without ASKING, served with it (a call of one
    // key, or of several all there), TRYAGAIN for several keys missing.
    assert_eq!(
        reply(&mut dst, false, &["OKOME.CACHE.GET", "tools", &version]),
        Err(format!("MOVED {slot} 127.0.0.1:{src_port}"))
    );
    let r: (i64, i64, i64, i64) = value_of(
        reply(&mut dst, true, &["OKOME.RATE", &new_agent, "5", "600"]),
        "RATE",
    );
    assert_eq!(r, (1, 4, 0, 600_000));
    assert_eq!(
        reply(&mut dst, true, &["OKOME.CACHE.GET", "tools", &new_version]),
        Ok(redis::Value::Nil)
    );
    tryagain(
        reply(
            &mut dst,
            true,
            &["OKOME.PLAN.LOOKUP", &stored_plan, "NOLOCK"],
        ),
        "ASKING LOOKUP NOLOCK on the target",
    );
    tryagain(
        reply(&mut dst, true, &["OKOME.PLAN.LOOKUP", &stored_plan]),
        "ASKING LOOKUP on the target",
    );

    // The window moves: the source sends its caller to the target, which
    // goes on counting it.
    let moved: String = redis::cmd("MIGRATE")
        .arg(&["127.0.0.1", &dst_port.to_string(), &window, "0", "5000"])
        .query(&mut src)
        .unwrap();
    assert_eq!(moved, "OK");
    assert_eq!(
        reply(&mut src, false, &["OKOME.RATE", &agent, "5", "600"]),
        Err(ask.clone())
    );
    let r: (i64, i64, i64, i64) = value_of(
        reply(&mut dst, true, &["OKOME.RATE", &agent, "5", "600"]),
        "RATE",
    );
    assert_eq!(r, (1, 2, 0, 600_000));

    // The rest moves without meeting a second copy; then the slot is the
    // target's, and the source answers MOVED.
    let mut n = 0;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg(&["GETKEYSINSLOT", &slot.to_string(), "100"])
            .query(&mut src)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        for k in keys {
            let r: String = redis::cmd("MIGRATE")
                .arg(&["127.0.0.1", &dst_port.to_string(), &k, "0", "5000"])
                .query(&mut src)
                .unwrap_or_else(|e| panic!("MIGRATE {k}: {}", error_text(&e)));
            assert_eq!(r, "OK", "{k}");
            n += 1;
        }
    }
    assert_eq!(n, 3, "the value, the plan and the lock");
    for node in [to, from, 3 - from - to] {
        try_ok(
            &mut cl.nodes[node].conn(),
            &["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &ids[to]],
        )
        .unwrap();
    }
    assert_eq!(
        reply(&mut src, false, &["OKOME.RATE", &agent, "5", "600"]),
        Err(format!("MOVED {slot} 127.0.0.1:{dst_port}"))
    );
    let r: (i64, i64, i64, i64) = value_of(
        reply(&mut dst, false, &["OKOME.RATE", &agent, "5", "600"]),
        "RATE",
    );
    assert_eq!(r, (1, 1, 0, 600_000));
    let hit: PlanReply = value_of(
        reply(&mut dst, false, &["OKOME.PLAN.LOOKUP", &stored_plan]),
        "LOOKUP",
    );
    assert_eq!((hit.0.as_str(), hit.2.as_deref()), ("HIT", Some(PLAN_JSON)));
    let locked: PlanReply = value_of(
        reply(&mut dst, false, &["OKOME.PLAN.LOOKUP", &locked_plan]),
        "LOOKUP",
    );
    assert_eq!((locked.0.as_str(), locked.4), ("LOCKED", None));
    let r: (String, i64, Option<i64>, i64) = value_of(
        reply(
            &mut dst,
            false,
            &["OKOME.PLAN.SET", &locked_plan, PLAN_JSON, "TOKEN", &token],
        ),
        "PLAN.SET",
    );
    assert_eq!(
        r,
        ("STORED".into(), 600_000, None, 1),
        "the lock moved with its token"
    );
    let got: (String, i64) = value_of(
        reply(&mut dst, false, &["OKOME.CACHE.GET", "tools", &version]),
        "CACHE.GET",
    );
    assert_eq!(got.0, CACHE_JSON);
    let (at, misplaced) = placement(&cl, &[window, new_window, value, stored_plan, locked_plan]);
    assert!(misplaced.is_empty(), "{misplaced:?}");
    assert!(at.values().all(|n| n == &vec![to]), "{at:?}");
}
