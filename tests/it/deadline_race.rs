//! The deadline race of `OKOME.PLAN.GET ... WAIT`, driven on purpose: a
//! follower's deadline and the event that ends its wait (the plan stored,
//! the lock released, the lock expired) land within a few milliseconds of
//! each other, for `hz` 10 and 100 and for offsets swept from -10 to 60 ms
//! in steps of 5 ms.
//!
//! What it proves, for every follower of every case:
//!
//! - it gets exactly one reply, within its read timeout: `HIT` with the
//!   plan, `MISS` with a token, or `LOCKED` — never nothing, never two;
//! - the replies of a pipelining client stay in order (`PLAN.GET ... WAIT`
//!   is pipelined with a `PING`: the replies must be `[plan reply, PONG]`,
//!   and a later `PING` must get the very next reply);
//! - `LOCKED` is never early and never later than the deadline plus
//!   [`LATE`], whatever `hz` is (the module serves deadlines with its own
//!   timer); no reply at all comes later than that;
//! - at most one follower is handed the lock, and then the lock holds that
//!   follower's token (no ghost lock: a lock is only ever taken for a
//!   client that receives its token); otherwise the lock is gone.
//!
//! A leader takes the lock; `N` followers (each on its own connection)
//! block with `WAIT`; then, at the deadline plus the offset (measured from
//! when the last one was sent), the leader stores the plan with its token
//! (`Set`) or releases it (`Unlock`); in the `Expire` variant the leader
//! does nothing and its 100 ms lock (module argument `lock-ttl-min 100`)
//! expires from 40 ms before to 30 ms after the followers' deadline (their
//! `WAIT` is 130 ms minus the offset).
//!
//! All cases run to the end; the failing ones are listed before the test
//! fails. `OKOME_RACE_ROUNDS` (default 3) repeats every case.

use crate::support::*;

use redis::Connection;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

const PLAN: &str = r#"{"steps":["race"]}"#;

/// Followers per case.
const N: usize = 16;

/// The followers' `WAIT` in the `Set` and `Unlock` variants.
const WAIT_MS: u64 = 50;

/// How late a reply may come after the follower's deadline: about 20 ms
/// by the contract, plus slack for a loaded 2-core machine.
const LATE: Duration = Duration::from_millis(30);

/// Reading a reply gives up after the deadline plus this: a lost reply.
const LOST: Duration = Duration::from_millis(2000);

/// The run stops after this many failed cases (each one restarts the
/// server, and a lost reply costs [`LOST`]).
const MAX_FAILED: usize = 25;

/// The leader's lock in the `Expire` variant (the configured minimum).
const EXPIRE_LOCK_MS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    /// `PLAN.SET key plan TOKEN t` at the deadline + offset.
    Set,
    /// `OKOME.UNLOCK key t` at the deadline + offset.
    Unlock,
    /// The lock expires at about the deadline + offset - 30 ms.
    Expire,
}

fn rounds() -> usize {
    env_number("OKOME_RACE_ROUNDS").unwrap_or(3)
}

/// `deadline` moved by `offset` ms (negative: earlier).
fn deadline_at(deadline: Instant, offset: i64) -> Instant {
    if offset >= 0 {
        deadline + Duration::from_millis(offset as u64)
    } else {
        deadline - Duration::from_millis(offset.unsigned_abs())
    }
}

/// What one case saw, for the summary.
#[derive(Debug, Default, Clone)]
struct Seen {
    hit: usize,
    miss: usize,
    locked: usize,
    /// The latest reply, relative to its follower's deadline.
    worst_late: Duration,
    all_blocked: bool,
}

struct Race {
    hz: u32,
    s: Server,
    admin: Connection,
    leader: Connection,
    followers: Vec<RawConn>,
}

impl Race {
    fn new(hz: u32) -> Race {
        let hz_arg = hz.to_string();
        let s = Server::start_full(&["--hz", &hz_arg], &["lock-ttl-min", "100"]);
        let admin = s.conn();
        let leader = s.conn();
        let followers = (0..N).map(|_| RawConn::connect(s.port)).collect();
        Race {
            hz,
            s,
            admin,
            leader,
            followers,
        }
    }

    /// Runs one case; `Err` describes every violation seen.
    fn case(&mut self, variant: Variant, offset: i64, round: usize) -> Result<Seen, String> {
        let prompt = format!("race hz{} {variant:?} +{offset} #{round}", self.hz);
        let (lock_ttl, wait) = match variant {
            Variant::Expire => (EXPIRE_LOCK_MS, (EXPIRE_LOCK_MS as i64 + 30 - offset) as u64),
            _ => (9000, WAIT_MS),
        };
        let lt = lock_ttl.to_string();
        let miss = try_plan_get(&mut self.leader, &refs(&tuple(&prompt, &["LOCKTTL", &lt])))
            .map_err(|e| format!("leader: {}", error_text(&e)))?;
        let t_lock = Instant::now();
        let key = miss.key.clone();
        let lock_key = format!("{key}:lock");
        let leader_token = match (&miss.status[..], &miss.token) {
            ("MISS", Some(t)) if is_token(t) => t.clone(),
            _ => return Err(format!("leader did not get the lock: {miss:?}")),
        };

        let mut get = vec!["OKOME.PLAN.GET".to_string()];
        get.extend(tuple(&prompt, &["WAIT", &wait.to_string()]));
        let cmds = [get, vec!["PING".to_string()]];
        let mut sent = Vec::with_capacity(N);
        // Each follower's clock starts before its request is written: a
        // thread descheduled between the write and the reading of the
        // clock would make a deadline served on time look early.
        for f in self.followers.iter_mut() {
            sent.push(Instant::now());
            f.send_pipeline(&cmds);
        }
        let t_ref = sent[N - 1];
        let deadline = t_ref + Duration::from_millis(wait);

        // Every reply is timestamped as it arrives: the followers are
        // polled without blocking while the case waits for its moment.
        let mut firsts: Vec<Option<(Resp, Instant)>> = vec![None; N];
        let mut problems: Vec<String> = Vec::new();
        let poll = |fs: &mut [RawConn], firsts: &mut [Option<(Resp, Instant)>]| -> Vec<String> {
            let mut errs = Vec::new();
            for (i, f) in fs.iter_mut().enumerate() {
                if firsts[i].is_none() {
                    match f.try_read() {
                        Ok(Some(r)) => firsts[i] = Some((r, Instant::now())),
                        Ok(None) => {}
                        Err(e) => errs.push(format!("follower {i}: {e}")),
                    }
                }
            }
            errs
        };

        // Blocked? (polled, never assumed; not all may make it before the
        // deadline on a slow machine, which only shifts the race.)
        let mut seen = Seen::default();
        while Instant::now() + Duration::from_millis(5) < deadline {
            problems.extend(poll(&mut self.followers, &mut firsts));
            if info_i64(&mut self.admin, "clients", "blocked_clients") == N as i64 {
                seen.all_blocked = true;
                break;
            }
        }

        let act_at = match variant {
            Variant::Expire => t_lock + Duration::from_millis(lock_ttl),
            _ => deadline_at(deadline, offset),
        };
        while Instant::now() < act_at {
            problems.extend(poll(&mut self.followers, &mut firsts));
            thread::sleep(Duration::from_micros(200));
        }
        let t_act = Instant::now();
        match variant {
            Variant::Set => {
                let r: redis::RedisResult<(String, i64, Option<i64>, i64)> =
                    redis::cmd("OKOME.PLAN.SET")
                        .arg(&key)
                        .arg(PLAN)
                        .arg("TOKEN")
                        .arg(&leader_token)
                        .query(&mut self.leader);
                match r {
                    Ok((st, _, _, 1)) if st == "STORED" => {}
                    other => problems.push(format!("leader's PLAN.SET: {other:?}")),
                }
            }
            Variant::Unlock => {
                let r: redis::RedisResult<i64> = redis::cmd("OKOME.UNLOCK")
                    .arg(&key)
                    .arg(&leader_token)
                    .query(&mut self.leader);
                if !matches!(r, Ok(1)) {
                    problems.push(format!("leader's UNLOCK: {r:?}"));
                }
            }
            Variant::Expire => {}
        }
        let give_up = sent[N - 1] + Duration::from_millis(wait) + LOST;
        while firsts.iter().any(Option::is_none) && Instant::now() < give_up {
            problems.extend(poll(&mut self.followers, &mut firsts));
            thread::sleep(Duration::from_micros(200));
        }

        // Every follower: exactly [plan reply, PONG].
        let mut handed: Vec<(usize, String)> = Vec::new();
        let pong_by = Instant::now() + Duration::from_secs(1);
        for (i, f) in self.followers.iter_mut().enumerate() {
            let my_deadline = sent[i] + Duration::from_millis(wait);
            let Some((first, at)) = firsts[i].take() else {
                problems.push(format!(
                    "follower {i}: no reply {LOST:?} past its deadline: LOST REPLY"
                ));
                continue;
            };
            if first.is_pong() {
                problems.push(format!("follower {i}: PONG before any reply: LOST REPLY"));
                continue;
            }
            match f.read(pong_by.saturating_duration_since(Instant::now())) {
                Ok(p) if p.is_pong() => {}
                other => problems.push(format!(
                    "follower {i}: after {first:?} expected PONG, got {other:?}"
                )),
            }
            let since_sent = at.saturating_duration_since(sent[i]);
            let late = at.saturating_duration_since(my_deadline);
            seen.worst_late = seen.worst_late.max(late);
            if late > LATE {
                problems.push(format!(
                    "follower {i}: replied {since_sent:?} after its request, WAIT {wait}: {late:?} late: {first:?}"
                ));
            }
            let p = match first.plan() {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("follower {i}: {e}"));
                    continue;
                }
            };
            if p.key != key {
                problems.push(format!("follower {i}: wrong key {p:?}"));
            }
            match (&p.status[..], variant) {
                ("HIT", Variant::Set) => {
                    seen.hit += 1;
                    if p.value.as_deref() != Some(PLAN) || p.token.is_some() {
                        problems.push(format!("follower {i}: bad HIT {p:?}"));
                    }
                    if at < t_act {
                        problems.push(format!("follower {i}: HIT before the plan was stored"));
                    }
                }
                ("MISS", Variant::Unlock | Variant::Expire) => {
                    seen.miss += 1;
                    match &p.token {
                        Some(t) if is_token(t) && p.ms == Some(9000) => handed.push((i, t.clone())),
                        _ => problems.push(format!("follower {i}: bad MISS {p:?}")),
                    }
                    if at + Duration::from_millis(2) < t_act {
                        problems.push(format!(
                            "follower {i}: handed the lock {:?} before it was free",
                            t_act.saturating_duration_since(at)
                        ));
                    }
                }
                ("LOCKED", _) => {
                    seen.locked += 1;
                    if since_sent + Duration::from_millis(2) < Duration::from_millis(wait) {
                        problems.push(format!(
                            "follower {i}: LOCKED after {since_sent:?}, before its WAIT {wait}"
                        ));
                    }
                    if p.value.is_some() || p.token.is_some() {
                        problems.push(format!("follower {i}: bad LOCKED {p:?}"));
                    }
                }
                _ => problems.push(format!("follower {i}: unexpected reply {p:?}")),
            }
        }

        // At most one hand-over, and the lock holds exactly what was handed
        // (in `Expire`, looked at once the leader's lock has expired).
        if variant == Variant::Expire {
            let expired = t_lock + Duration::from_millis(lock_ttl + 3);
            thread::sleep(expired.saturating_duration_since(Instant::now()));
        }
        if handed.len() > 1 {
            problems.push(format!(
                "the lock was handed to several followers: {handed:?}"
            ));
        }
        let held: Option<String> = redis::cmd("GET")
            .arg(&lock_key)
            .query(&mut self.admin)
            .map_err(|e| format!("GET lock: {e}"))?;
        match (handed.last(), &held) {
            (Some((_, t)), Some(v)) if t == v => {
                let pttl: i64 = redis::cmd("PTTL")
                    .arg(&lock_key)
                    .query(&mut self.admin)
                    .map_err(|e| format!("PTTL: {e}"))?;
                if !(8000..=9000).contains(&pttl) {
                    problems.push(format!("handed lock has PTTL {pttl}, want about 9000"));
                }
            }
            (None, None) => {}
            (h, v) => problems.push(format!(
                "GHOST LOCK: {lock_key} holds {v:?}, followers received {h:?}"
            )),
        }

        // Nothing more arrives: the next reply on every connection is PONG.
        let pong_by = Instant::now() + Duration::from_secs(1);
        for (i, f) in self.followers.iter_mut().enumerate() {
            f.send(&["PING"]);
            match f.read(pong_by.saturating_duration_since(Instant::now())) {
                Ok(p) if p.is_pong() => {}
                other => problems.push(format!("follower {i}: extra reply {other:?}")),
            }
        }
        let settle = Instant::now() + Duration::from_secs(1);
        loop {
            let b = info_i64(&mut self.admin, "clients", "blocked_clients");
            if b == 0 {
                break;
            }
            if Instant::now() > settle {
                problems.push(format!("{b} clients still blocked after every reply"));
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }

        if problems.is_empty() {
            Ok(seen)
        } else {
            Err(format!("{seen:?}\n    {}", problems.join("\n    ")))
        }
    }
}

fn run(hz: u32) {
    let mut race = Race::new(hz);
    let started = Instant::now();
    let mut failed: BTreeMap<(Variant, i64, usize), String> = BTreeMap::new();
    let mut totals: BTreeMap<Variant, Seen> = BTreeMap::new();
    let mut cases = 0;
    'all: for round in 0..rounds() {
        for offset in (-10..=60).step_by(5) {
            for variant in [Variant::Set, Variant::Unlock, Variant::Expire] {
                cases += 1;
                match race.case(variant, offset, round) {
                    Ok(seen) => {
                        let t = totals.entry(variant).or_default();
                        t.hit += seen.hit;
                        t.miss += seen.miss;
                        t.locked += seen.locked;
                        t.worst_late = t.worst_late.max(seen.worst_late);
                    }
                    Err(e) => {
                        let e = if race.s.alive() {
                            e
                        } else {
                            format!("{e}\n    redis-server died:\n{}", race.s.log_tail(40))
                        };
                        failed.insert((variant, offset, round), e);
                        if failed.len() >= MAX_FAILED {
                            break 'all;
                        }
                        // A fresh server, so that one failure does not
                        // spill into the next cases.
                        race = Race::new(hz);
                    }
                }
            }
        }
    }
    let stopped = if failed.len() >= MAX_FAILED {
        " (stopped early)"
    } else {
        ""
    };
    println!(
        "hz {hz}: {cases} cases of {N} followers in {:?}; {} failed{stopped}",
        started.elapsed(),
        failed.len()
    );
    for (v, t) in &totals {
        println!(
            "hz {hz}: {v:?} (passing cases): {} HIT, {} MISS, {} LOCKED; latest reply {:?} past its deadline",
            t.hit, t.miss, t.locked, t.worst_late
        );
    }
    let mut report = String::new();
    for ((v, off, round), e) in &failed {
        let _ = writeln!(report, "hz {hz} {v:?} offset {off} ms round {round}: {e}");
    }
    race.s.assert_alive(&format!("hz {hz} at the end"));
    if failed.is_empty() {
        // Nobody waits now: the counters add up.
        let text = info_text(&mut race.admin, "okome");
        let c = wait_counters(&text).unwrap_or_else(|e| panic!("{e}"));
        check_wait_invariants(&c).unwrap_or_else(|e| panic!("hz {hz}: {e}"));
        println!("hz {hz}: counters {c:?}");
    }
    assert!(
        failed.is_empty(),
        "hz {hz}: {} of {cases} cases failed:\n{report}",
        failed.len()
    );
}

#[test]
fn deadline_race_hz_10() {
    let _alone = alone();
    run(10);
}

#[test]
fn deadline_race_hz_100() {
    let _alone = alone();
    run(100);
}
