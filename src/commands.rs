//! The command handlers: parse with okome-core, open keys, write, replicate,
//! reply. Every handler takes the arguments after the command name.

use crate::acl;
use crate::call::Call;
use crate::cluster;
use crate::config;
use crate::ledger::{Entry, Ledger};
use crate::reply::{bulk, int_or_nil, ms, status, Reply};
use crate::rkey::{self, Holds, Key};
use crate::server::{self, Refusal};
use crate::stats::{bump, c};
use crate::wait::{self, Served, Verdict};
use okome_core::command::{self as args, Charge};
use okome_core::declared::{self, Access, Declared};
use okome_core::keys::{self, printable};
use okome_core::limiter::{self, Charged, Decision, Unusable, Write};
use okome_core::Error;
use redis_module::{Context, RedisValue};

/// Milliseconds in `s` seconds, saturating.
fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Takes the (free) lock with a fresh token until `now + ttl_ms`
/// (replicated as `SET lock token PXAT t`).
pub fn take_lock(ctx: &Context, lock: &Key, now: i64, ttl_ms: u64) -> Vec<u8> {
    let token = rkey::new_token();
    let at = now.saturating_add(ms(ttl_ms));
    lock.set(ctx, &token, at);
    bump(&c::lock_acquired);
    token
}

/// Whether a lock is held, and for how long (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockState {
    Free,
    Held(i64),
}

/// The state of an open lock. A lock without a TTL (written by another
/// client: okome never writes one) would block its key forever: it gets
/// the lock standard's default TTL now (replicated `PEXPIREAT`), if `heal`.
/// Only a string is healed: another type at a lock's name is a user's key,
/// which okome never changes (commands answer `WRONGTYPE` there).
fn lock_state(ctx: &Context, lock: &Key, now: i64, heal: bool) -> LockState {
    let holds = lock.holds();
    if holds == Holds::Nothing {
        return LockState::Free;
    }
    if holds == Holds::String && lock.abs_expire().is_none() && heal {
        let ttl = config::current().lock_ttl_ms.default;
        lock.set_abs_expire(ctx, now.saturating_add(ms(ttl)));
        bump(&c::locks_healed);
    }
    LockState::Held(lock.pttl(now))
}

/// `[status, key, value, ms, token, rate_remaining]`
pub fn plan_reply(
    st: &'static str,
    key: &[u8],
    value: Option<&[u8]>,
    ms: Option<i64>,
    token: Option<&[u8]>,
    rate_remaining: Option<u64>,
) -> RedisValue {
    RedisValue::Array(vec![
        status(st),
        bulk(key),
        value.map_or(RedisValue::Null, bulk),
        ms.map_or(RedisValue::Null, RedisValue::Integer),
        token.map_or(RedisValue::Null, bulk),
        int_or_nil(rate_remaining),
    ])
}

/// [`plan_reply`] sent at once through the raw API, the value straight
/// from the key (no `RedisValue` built, nothing copied but into the reply
/// buffer): the hit path of a lookup. Returns `NoReply` for the dispatcher.
fn send_plan_reply(
    ctx: &Context,
    st: &'static str,
    key: &[u8],
    value: &[u8],
    ms: i64,
    rate_remaining: Option<u64>,
) -> RedisValue {
    use redis_module::raw;
    // SAFETY: a live command context; an array of 6 followed by 6 items;
    // the buffers outlive the calls, which copy them.
    unsafe {
        let (Some(array), Some(buffer), Some(int), Some(null)) = (
            raw::RedisModule_ReplyWithArray,
            raw::RedisModule_ReplyWithStringBuffer,
            raw::RedisModule_ReplyWithLongLong,
            raw::RedisModule_ReplyWithNull,
        ) else {
            return plan_reply(st, key, Some(value), Some(ms), None, rate_remaining);
        };
        let c = ctx.ctx;
        array(c, 6);
        buffer(c, st.as_ptr().cast(), st.len());
        buffer(c, key.as_ptr().cast(), key.len());
        buffer(c, value.as_ptr().cast(), value.len());
        int(c, ms);
        null(c);
        match rate_remaining {
            Some(r) => int(c, crate::reply::ms(r)),
            None => null(c),
        };
    }
    RedisValue::NoReply
}

thread_local! {
    /// The buffer a window's new bytes are written into, reused from
    /// command to command so that charging a warm window allocates nothing.
    /// Commands run on Redis's main thread, one at a time.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// An agent's window, opened for writing and charged: what the charge
/// decides and writes is known before anything is written.
struct Budget {
    key: Key,
    charged: Charged,
    /// The bytes to write (see [`Write`]).
    buf: Vec<u8>,
}

impl Drop for Budget {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        // A large window migrated whole once leaves a large buffer: not
        // kept (tails and compactions need a few dozen bytes).
        if buf.capacity() > SCRATCH_KEPT {
            buf = Vec::new();
        }
        SCRATCH.with(|s| s.set(buf));
    }
}

/// The largest scratch buffer kept between commands, bytes.
const SCRATCH_KEPT: usize = 4096;

impl Budget {
    /// Opens the window at `c.key` and works out the charge at `now` (O(1)
    /// amortised: see `okome_core::limiter`); fails, writing nothing, on
    /// another type or on bytes that are not a window. A window stamped
    /// beyond the clock-skew allowance (hand-made bytes, or a clock far
    /// behind) is refused too: charging it would extend it.
    fn load(ctx: &Context, c: &Charge, now: i64) -> Result<Budget, Error> {
        let key = Key::open(ctx, &c.key, c.cost > 0);
        let mut buf = SCRATCH.with(|s| s.take());
        let stored = key.string()?.unwrap_or_default();
        let charged = limiter::charge_stored(stored, now, c.limit, c.window_ms, c.cost, &mut buf)
            .map_err(|e| match e {
                Unusable::Ahead(a) => a.error(&c.key),
                Unusable::Corrupt(_) => Error::BadKey(format!(
                    "'{}' does not hold an okome budget window (was it written by another client?)",
                    printable(&c.key)
                )),
            });
        match charged {
            Ok(charged) => Ok(Budget { key, charged, buf }),
            Err(e) => {
                SCRATCH.with(|s| s.set(buf));
                Err(e)
            }
        }
    }

    /// Applies the charge: on admission, writes the window (whole, or its
    /// tail) with the absolute time at which it empties, and replicates
    /// that effect. (Everything was decided at `load`, at the same time
    /// `_now`.)
    fn charge(self, ctx: &Context, c: &Charge, _now: i64) -> Decision {
        let d = self.charged.decision;
        let write_budget = c.key.starts_with(b"okome:budget:write:");
        bump(match (write_budget, d.allowed) {
            (false, true) => &c::rate_allowed,
            (false, false) => &c::rate_limited,
            (true, true) => &c::wbudget_allowed,
            (true, false) => &c::wbudget_refused,
        });
        match self.charged.write {
            Write::Nothing => {}
            Write::Whole { expire_at } => self.key.set(ctx, &self.buf, expire_at),
            Write::Tail { offset, expire_at } => {
                self.key.set_range(ctx, offset, &self.buf, expire_at)
            }
            Write::Compact {
                head_len,
                ref keep,
                expire_at,
            } => {
                if let Some((head, tail)) = self.buf.split_at_checked(head_len) {
                    self.key
                        .set_compacted(ctx, head, keep.clone(), tail, expire_at)
                }
            }
        }
        d
    }
}

/// `[allowed, remaining, retry_after_ms, reset_after_ms]`
fn decision_reply(d: &Decision) -> [i64; 4] {
    [
        i64::from(d.allowed),
        ms(d.remaining),
        ms(d.retry_after_ms),
        ms(d.reset_after_ms),
    ]
}

/// OKOME.RATE agent limit window [COST n]
pub fn rate(ctx: &Context, call: &Call) -> Result<[i64; 4], Error> {
    let c = args::parse_rate(call.args)?;
    call.declare(&c.declared())?;
    let now = rkey::now_ms();
    let d = Budget::load(ctx, &c, now)?.charge(ctx, &c, now);
    Ok(decision_reply(&d))
}

/// OKOME.WBUDGET agent write_limit [WINDOW s] [COST n]
pub fn wbudget(ctx: &Context, call: &Call) -> Result<[i64; 4], Error> {
    let cfg = config::current();
    let c = args::parse_wbudget(call.args, &cfg)?;
    call.declare(&c.declared())?;
    let now = rkey::now_ms();
    let d = Budget::load(ctx, &c, now)?.charge(ctx, &c, now);
    Ok(decision_reply(&d))
}

/// OKOME.PLAN.GET model prompt toolset_version repo_hash
///     [AGENT id LIMIT n WINDOW s] [LOCKTTL ms | NOLOCK] [WAIT ms] [REFRESHAHEAD ms]
pub fn plan_get(ctx: &Context, call: &Call) -> Reply {
    let cfg = config::current();
    let req = args::parse_plan_get(call.args, &cfg)?;
    call.declare(&req.declared())?;
    lookup(ctx, req, args::PLAN_GET.name)
}

/// A woken follower whose plan's slot moved away while it waited.
const LOOKUP_INSTEAD: &str =
    "look the plan up again (cluster clients route OKOME.PLAN.LOOKUP by its key)";

/// OKOME.PLAN.LOOKUP key [options of PLAN.GET]: the key-addressed form.
pub fn plan_lookup(ctx: &Context, call: &Call) -> Reply {
    let cfg = config::current();
    let req = args::parse_plan_lookup(call.args, &cfg)?;
    call.declare(&req.declared())?;
    lookup(ctx, req, args::PLAN_LOOKUP.name)
}

/// What a lookup asks for once the agent is charged: shared by a fresh
/// `PLAN.GET`/`PLAN.LOOKUP` and a follower woken from `WAIT`.
#[derive(Debug, Clone)]
struct Ask {
    key: Vec<u8>,
    /// TTL of the lock taken on a miss; `None` with `NOLOCK`.
    lock_ttl_ms: Option<u64>,
    refresh_ahead_ms: u64,
    /// `WAIT ms`; `None` for a woken follower, which may not block again.
    wait_ms: Option<u64>,
    /// The agent's remaining rate, charged by the first call.
    rate: Option<u64>,
    /// The command asked with (`okome.plan.get` or `okome.plan.lookup`),
    /// whose ACL a woken follower is checked against again.
    command: &'static str,
}

impl Ask {
    /// The keys a woken follower touches.
    fn declared(&self) -> Declared {
        declared::lookup(&self.key, self.lock_ttl_ms.is_some())
    }
}

/// Who is asking: a command Redis let run, or a follower woken from a
/// wait, whose reply runs outside any command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Command,
    Woken,
}

/// Opens the lock of `ask.key` when the lookup may need it: on a miss, or
/// in a refresh zone (the lock is declared unless `NOLOCK`).
fn open_lock(ctx: &Context, ask: &Ask, hit: bool) -> Result<Option<Key>, Error> {
    let needed = ask.lock_ttl_ms.is_some() && (!hit || ask.refresh_ahead_ms > 0);
    let lock = needed.then(|| Key::open(ctx, &keys::lock_key(&ask.key), true));
    if let Some(l) = &lock {
        l.check_string_or_empty()?;
    }
    Ok(lock)
}

fn lookup(ctx: &Context, req: args::PlanGet, command: &'static str) -> Reply {
    let now = rkey::now_ms();
    let mut ask = Ask {
        key: req.key,
        lock_ttl_ms: req.lock_ttl_ms,
        refresh_ahead_ms: req.refresh_ahead_ms,
        wait_ms: req.wait_ms,
        rate: None,
        command,
    };
    // Open and check every key first, so a bad key writes nothing.
    let plan = Key::open(ctx, &ask.key, false);
    let budget = match &req.rate {
        Some(c) => Some((Budget::load(ctx, c, now)?, c)),
        None => None,
    };
    let hit = plan.string()?.is_some();
    let lock = open_lock(ctx, &ask, hit)?;
    // The lookup is flagged `write` but not `deny-oom`, so that hits are
    // served when memory is full: refuse here a call that must write (a
    // charge, or a lock on a miss), before it writes anything. A call that
    // opened neither a window nor a lock cannot write: no check on its path.
    let refusal = if budget.is_some() || lock.is_some() {
        server::command_refusal(ctx)
    } else {
        None
    };
    if let Some(r) = refusal {
        if budget.is_some() {
            return Err(r.error("the agent's rate window"));
        }
        if !hit && lock.as_ref().is_some_and(|l| l.holds() == Holds::Nothing) {
            return Err(r.error("the stampede lock of a miss"));
        }
    }
    if let Some((b, c)) = budget {
        let d = b.charge(ctx, c, now);
        if !d.allowed {
            bump(&c::planner_limited);
            return Ok(plan_reply(
                "LIMITED",
                &ask.key,
                None,
                Some(ms(d.retry_after_ms)),
                None,
                Some(d.remaining),
            ));
        }
        ask.rate = Some(d.remaining);
    }
    decide(ctx, &ask, &plan, lock, now, Origin::Command, refusal).0
}

/// The planner's answer to a lookup whose keys are open and checked:
/// `HIT`, `REFRESH`, `MISS`, `LOCKED`, or block until one of them.
/// `refusal` says whether (and why) this node may not write now.
fn decide(
    ctx: &Context,
    ask: &Ask,
    plan: &Key,
    lock: Option<Key>,
    now: i64,
    origin: Origin,
    refusal: Option<Refusal>,
) -> (Reply, Served) {
    let value = match plan.string() {
        Ok(v) => v,
        Err(e) => return (Err(e), Served::Other),
    };
    // A command may always heal a lock without a TTL (PEXPIREAT frees
    // memory, never grows it); a woken follower only if this node may write.
    let heal = origin == Origin::Command || refusal.is_none();
    let key = ask.key.as_slice();
    if let Some(v) = value {
        let pttl = plan.pttl(now);
        // Stale-while-revalidate: one caller in the refresh zone recomputes;
        // not while this node may not write (the plan is served as a HIT).
        if let (Some(ttl), Some(lock), None) = (ask.lock_ttl_ms, &lock, refusal) {
            let in_zone = pttl >= 0 && u64::try_from(pttl).is_ok_and(|p| p < ask.refresh_ahead_ms);
            if in_zone && lock_state(ctx, lock, now, heal) == LockState::Free {
                let token = take_lock(ctx, lock, now, ttl);
                bump(&c::planner_refreshes);
                return (
                    Ok(plan_reply(
                        "REFRESH",
                        key,
                        Some(v),
                        Some(pttl),
                        Some(&token),
                        ask.rate,
                    )),
                    Served::Leader,
                );
            }
        }
        bump(&c::planner_hits);
        let reply = match origin {
            // A command replies now, while the key is open.
            Origin::Command => send_plan_reply(ctx, "HIT", key, v, pttl, ask.rate),
            Origin::Woken => plan_reply("HIT", key, Some(v), Some(pttl), None, ask.rate),
        };
        return (Ok(reply), Served::Hit);
    }
    let (Some(ttl), Some(lock)) = (ask.lock_ttl_ms, lock) else {
        bump(&c::planner_misses);
        return (
            Ok(plan_reply("MISS", key, None, None, None, ask.rate)),
            Served::Other,
        );
    };
    match lock_state(ctx, &lock, now, heal) {
        LockState::Held(pttl) => {
            bump(&c::lock_contended);
            if let Some(wait_ms) = ask.wait_ms {
                if wait::can_block(ctx) {
                    drop(lock);
                    let waiter = Box::new(Follower { ask: ask.clone() });
                    let probe_in = if pttl < 0 {
                        RETRY_MS
                    } else {
                        pttl.saturating_add(1)
                    };
                    if wait::block(ctx, key, wait_ms, waiter, probe, probe_in).is_ok() {
                        return (Ok(RedisValue::NoReply), Served::Other);
                    }
                }
            }
            bump(&c::planner_locked);
            (
                Ok(plan_reply("LOCKED", key, None, Some(pttl), None, ask.rate)),
                Served::Other,
            )
        }
        LockState::Free => {
            if refusal.is_some() {
                // Only a woken follower gets here (a command refused
                // earlier): no lock now, so it is answered LOCKED, and the
                // next caller after writes resume takes the lock.
                bump(&c::planner_locked);
                return (
                    Ok(plan_reply("LOCKED", key, None, Some(-2), None, ask.rate)),
                    Served::Other,
                );
            }
            let token = take_lock(ctx, &lock, now, ttl);
            bump(&c::planner_misses);
            (
                Ok(plan_reply(
                    "MISS",
                    key,
                    None,
                    Some(ms(ttl)),
                    Some(&token),
                    ask.rate,
                )),
                Served::Leader,
            )
        }
    }
}

/// How soon a key's waiters are looked at again while this node may not
/// write (a pause, a replica, loading, memory full), or while a lock has
/// no expiry that can be read.
const RETRY_MS: i64 = 50;

/// A `PLAN.GET ... WAIT` follower.
struct Follower {
    ask: Ask,
}

impl wait::Waiter for Follower {
    /// Looks again, exactly as a fresh lookup would (without charging the
    /// agent again, and without blocking again).
    fn woken(&self, ctx: &Context) -> (Reply, Served) {
        let ask = Ask {
            wait_ms: None,
            ..self.ask.clone()
        };
        // The slot may have moved to another node, or the user's
        // permissions changed, while it waited.
        let keys = ask.declared();
        let checked = cluster::check(ctx, &keys, LOOKUP_INSTEAD).and_then(|()| {
            acl::check(
                ctx,
                ask.command,
                &keys,
                &ask.key,
                "checked it again after waiting",
            )
        });
        if let Err(e) = checked {
            return (Err(e), Served::Other);
        }
        let now = rkey::now_ms();
        let plan = Key::open(ctx, &ask.key, false);
        let hit = match plan.string() {
            Ok(v) => v.is_some(),
            Err(e) => return (Err(e), Served::Other),
        };
        let refusal = server::background_refusal(ctx);
        match open_lock(ctx, &ask, hit) {
            Ok(lock) => decide(ctx, &ask, &plan, lock, now, Origin::Woken, refusal),
            Err(e) => (Err(e), Served::Other),
        }
    }

    /// `LOCKED` with the lock's remaining TTL (`-2` if it is gone).
    fn expired(&self, ctx: &Context) -> Reply {
        let lock = Key::open(ctx, &keys::lock_key(&self.ask.key), false);
        let pttl = match lock.holds() {
            Holds::Nothing => -2,
            _ => lock.pttl(rkey::now_ms()),
        };
        bump(&c::planner_locked);
        Ok(plan_reply(
            "LOCKED",
            &self.ask.key,
            None,
            Some(pttl),
            None,
            self.ask.rate,
        ))
    }
}

/// Whom to wake among the followers of planner key `key`: everybody once
/// the plan is there; the first in line once the lock is free and this
/// node may write (its reply takes the lock); else nobody until the lock
/// expires or writes are allowed again.
fn probe(ctx: &Context, key: &[u8]) -> Verdict {
    if Key::open(ctx, key, false).holds() != Holds::Nothing {
        return Verdict::WakeAll;
    }
    let writable = server::background_refusal(ctx).is_none();
    let lock_name = keys::lock_key(key);
    let now = rkey::now_ms();
    let lock = Key::open(ctx, &lock_name, false);
    if lock.holds() == Holds::Nothing {
        return if writable {
            Verdict::WakeFirst
        } else {
            Verdict::ProbeIn(RETRY_MS)
        };
    }
    match lock.abs_expire() {
        Some(at) => Verdict::ProbeIn(at.saturating_sub(now).max(0).saturating_add(1)),
        None if writable => {
            drop(lock);
            let lock = Key::open(ctx, &lock_name, true);
            match lock_state(ctx, &lock, now, true) {
                LockState::Held(pttl) if pttl >= 0 => Verdict::ProbeIn(pttl.saturating_add(1)),
                LockState::Held(_) => Verdict::ProbeIn(RETRY_MS),
                LockState::Free => Verdict::WakeFirst,
            }
        }
        None => Verdict::ProbeIn(RETRY_MS),
    }
}

/// OKOME.PLAN.SET key plan_json [TTL s] [TOKEN token] [AGENT id WLIMIT n [WWINDOW s]]
pub fn plan_set(ctx: &Context, call: &Call) -> Reply {
    let cfg = config::current();
    let req = args::parse_plan_set(call.args, &cfg)?;
    call.declare(&req.declared())?;
    let lock_name = keys::lock_key(req.key);
    let now = rkey::now_ms();
    // Open and check every key first, so a bad key writes nothing.
    let plan = Key::open(ctx, req.key, true);
    plan.check_string_or_empty()?;
    let mut lock = None;
    if let Some(token) = req.token {
        let l = Key::open(ctx, &lock_name, true);
        if l.string()? == Some(token) {
            lock = Some(l);
        } else {
            lock_state(ctx, &l, now, true);
        }
    }
    let budget = match &req.budget {
        Some(c) => Some((Budget::load(ctx, c, now)?, c)),
        None => None,
    };
    let ledger = match &req.ledger {
        Some(l) => Some(Ledger::open(ctx, l, true)?),
        None => None,
    };
    // Every check passed: charge, write, record, release.
    let decision = budget.map(|(b, c)| b.charge(ctx, c, now));
    let stored = decision.as_ref().is_none_or(|d| d.allowed);
    let ttl_ms = secs_to_ms(req.ttl_s);
    if stored {
        let at = now.saturating_add(ttl_ms);
        plan.set(ctx, req.value, at);
        bump(&c::plans_stored);
        if let Some(l) = &ledger {
            record(ctx, l, req.key, at, now, &cfg);
        }
    } else {
        bump(&c::plans_skipped);
    }
    let released = match lock {
        Some(l) => {
            l.delete(ctx);
            bump(&c::lock_released);
            1
        }
        None => 0,
    };
    drop(plan);
    if stored || released == 1 {
        wait::wake(ctx, req.key);
    }
    Ok(RedisValue::Array(vec![
        status(if stored { "STORED" } else { "SKIPPED" }),
        if stored {
            RedisValue::Integer(ttl_ms)
        } else {
            RedisValue::Null
        },
        int_or_nil(decision.map(|d| d.remaining)),
        RedisValue::Integer(released),
    ]))
}

/// OKOME.LOCK key [TTL ms] [TOKEN token]
pub fn lock(ctx: &Context, call: &Call) -> Reply {
    let cfg = config::current();
    let req = args::parse_lock(call.args, &cfg)?;
    call.declare(&req.declared())?;
    let now = rkey::now_ms();
    let lock = Key::open(ctx, &keys::lock_key(req.key), true);
    let current = lock.string()?;
    if current.is_some_and(|t| req.token != Some(t)) {
        lock_state(ctx, &lock, now, true);
    }
    match req.token {
        None => {
            if current.is_some() {
                bump(&c::lock_contended);
                return Ok(RedisValue::Null);
            }
            let token = take_lock(ctx, &lock, now, req.ttl_ms);
            Ok(RedisValue::StringBuffer(token))
        }
        Some(token) => {
            if current != Some(token) {
                return Ok(RedisValue::Integer(0));
            }
            let at = now.saturating_add(ms(req.ttl_ms));
            lock.set_abs_expire(ctx, at);
            bump(&c::lock_extended);
            Ok(RedisValue::Integer(1))
        }
    }
}

/// OKOME.UNLOCK key token
pub fn unlock(ctx: &Context, call: &Call) -> Reply {
    let req = args::parse_unlock(call.args)?;
    call.declare(&req.declared())?;
    let lock = Key::open(ctx, &keys::lock_key(req.key), true);
    if lock.string()? != Some(req.token) {
        lock_state(ctx, &lock, rkey::now_ms(), true);
        return Ok(RedisValue::Integer(0));
    }
    lock.delete(ctx);
    bump(&c::lock_released);
    drop(lock);
    wait::wake(ctx, req.key);
    Ok(RedisValue::Integer(1))
}

/// OKOME.CACHE.GET kind part...
pub fn cache_get(ctx: &Context, call: &Call) -> Reply {
    let req = args::parse_cache_get(call.args)?;
    call.declare(&req.declared())?;
    let now = rkey::now_ms();
    let key = Key::open(ctx, &req.key, false);
    Ok(match key.string()? {
        Some(v) => {
            bump(&c::cache_hits);
            RedisValue::Array(vec![bulk(v), RedisValue::Integer(key.pttl(now))])
        }
        None => {
            bump(&c::cache_misses);
            RedisValue::Null
        }
    })
}

/// OKOME.CACHE.SET kind part... value [TTL s]
pub fn cache_set(ctx: &Context, call: &Call) -> Reply {
    let cfg = config::current();
    let req = args::parse_cache_set(call.args, &cfg)?;
    call.declare(&req.declared())?;
    let now = rkey::now_ms();
    let key = Key::open(ctx, &req.key, true);
    key.check_string_or_empty()?;
    let ledger = match &req.ledger {
        Some(l) => Some(Ledger::open(ctx, l, true)?),
        None => None,
    };
    let ttl_ms = secs_to_ms(req.ttl_s);
    let at = now.saturating_add(ttl_ms);
    key.set(ctx, req.value, at);
    bump(&c::cache_stored);
    if let Some(l) = &ledger {
        record(ctx, l, &req.key, at, now, &cfg);
    }
    Ok(RedisValue::Integer(ttl_ms))
}

/// OKOME.KEY kind part...
pub fn key(_ctx: &Context, call: &Call) -> Reply {
    let cfg = config::current();
    Ok(RedisValue::StringBuffer(args::parse_key(call.args, &cfg)?))
}

/// Records `key`, expiring at `at`, in an open ledger.
fn record(
    ctx: &Context,
    ledger: &Ledger,
    key: &[u8],
    at: i64,
    now: i64,
    cfg: &okome_core::config::Config,
) -> u64 {
    let r = ledger.record(ctx, key, at, now, cfg.ledger_max_keys);
    bump(&c::ledger_records);
    for _ in 0..r.dropped {
        bump(&c::ledger_dropped);
    }
    r.size
}

/// Whether an agent command (routed to, and checked to run on, the slot
/// of `ledger`) may touch `key`: always outside a cluster; in a cluster
/// only in the ledger's own slot. One command never touches two slots,
/// even two that this node serves: Redis 7.4+ and Valkey 8+ keep one
/// keyspace per slot and look a command's keys up in the slot it was
/// routed by.
fn in_ledger_slot(ledger: &[u8], key: &[u8]) -> bool {
    !cluster::enabled() || keys::slot(key) == keys::slot(ledger)
}

/// OKOME.AGENT.RECORD agent key [PXAT ms]
pub fn agent_record(ctx: &Context, call: &Call) -> Reply {
    let cfg = config::current();
    let req = args::parse_agent_record(call.args)?;
    call.declare(&req.declared(cluster::enabled()))?;
    let now = rkey::now_ms();
    let shown = printable(req.key);
    let at = if in_ledger_slot(&req.ledger, req.key) {
        let key = Key::open(ctx, req.key, false);
        if key.string()?.is_none() {
            return Err(Error::BadKey(format!(
                "key '{shown}' does not exist: only a key that holds a value can be recorded"
            )));
        }
        let Some(at) = key.abs_expire() else {
            return Err(Error::BadKey(format!(
                "key '{shown}' has no TTL: okome writes every cache key with one, so this key was written some other way and cannot be recorded"
            )));
        };
        if let Some(p) = req.pxat.filter(|&p| p != at) {
            return Err(Error::BadKey(format!(
                "pxat {p} is not the expiry of '{shown}', which expires at {at}"
            )));
        }
        at
    } else {
        // Not declared (another slot): the user must still be allowed to
        // write it, as if it were.
        let both = Declared::none()
            .with(Access::ReadWrite, req.ledger.clone())
            .with(Access::ReadWrite, req.key.to_vec());
        acl::check(
            ctx,
            args::AGENT_RECORD.name,
            &both,
            req.key,
            "records it from another slot",
        )?;
        let Some(p) = req.pxat else {
            return Err(Error::Raw(format!(
                "ERR okome: '{shown}' is in slot {}, not in the agent's slot {}; in a cluster, record a key of another slot with OKOME.AGENT.RECORD <agent> <key> PXAT <its PEXPIRETIME, read on its node>",
                keys::slot(req.key),
                keys::slot(&req.ledger)
            )));
        };
        args::check_pxat(req.kind, p, now, &cfg)?;
        p
    };
    let ledger = Ledger::open(ctx, &req.ledger, true)?;
    let size = record(ctx, &ledger, req.key, at, now, &cfg);
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(at.saturating_sub(now).max(0)),
        RedisValue::Integer(ms(size)),
    ]))
}

/// What a ledger entry's key holds now, as `AGENT.KEYS` and `AGENT.PURGE`
/// see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Still holds the agent's write (the expiry recorded): purged.
    Current,
    /// Written again since (another expiry): left alone.
    Rewritten,
    /// No longer exists (expired, deleted).
    Gone,
    /// In another slot than the agent's (a cluster): not looked at.
    Elsewhere,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Rewritten => "rewritten",
            State::Gone => "gone",
            State::Elsewhere => "elsewhere",
        }
    }
}

/// The state of `e`'s key (an entry of `ledger`), checked by
/// [`check_entries`].
fn state(ctx: &Context, ledger: &[u8], e: &Entry, now: i64) -> State {
    if e.expiry_ms < now {
        return State::Gone;
    }
    if !in_ledger_slot(ledger, &e.key) {
        return State::Elsewhere;
    }
    let key = Key::open(ctx, &e.key, false);
    if key.holds() == Holds::Nothing {
        State::Gone
    } else if key.abs_expire() == Some(e.expiry_ms) {
        State::Current
    } else {
        State::Rewritten
    }
}

/// Checks the keys of `entries` that an agent command will look at (live,
/// in the ledger's slot) as if the call had declared them with `access`
/// beside its ledger (`ledger_access`): the user's ACL, and in a cluster
/// that this node may serve them now (`TRYAGAIN` while some have moved
/// away in a slot migration). Nothing has been written yet.
fn check_entries(
    ctx: &Context,
    command: &str,
    ledger: &[u8],
    ledger_access: Access,
    entries: &[Entry],
    access: Access,
    now: i64,
) -> Result<(), Error> {
    let looked_at: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.expiry_ms >= now && in_ledger_slot(ledger, &e.key))
        .collect();
    if looked_at.is_empty() {
        return Ok(());
    }
    let with_ledger = || Declared::none().with(ledger_access, ledger.to_vec());
    let all = looked_at
        .iter()
        .fold(with_ledger(), |d, e| d.with(access, e.key.clone()));
    cluster::check(ctx, &all, ENTRIES_MOVING)?;
    let Some(user) = acl::User::current(ctx) else {
        return Ok(());
    };
    if user.may_call(command, &all) {
        return Ok(());
    }
    // Name the first entry refused on its own (or the ledger with all).
    let shown = looked_at
        .iter()
        .find(|e| !user.may_call(command, &with_ledger().with(access, e.key.clone())))
        .map_or(ledger, |e| e.key.as_slice());
    Err(acl::refusal(
        ctx,
        &user,
        command,
        shown,
        "found it in the agent's ledger",
    ))
}

const ENTRIES_MOVING: &str = "some of the agent's keys are in a slot being migrated; retry";

/// OKOME.AGENT.KEYS agent [COUNT n] [CURSOR c]
pub fn agent_keys(ctx: &Context, call: &Call) -> Reply {
    let req = args::parse_agent_keys(call.args)?;
    call.declare(&req.declared())?;
    let now = rkey::now_ms();
    let ledger = Ledger::open(ctx, &req.ledger, false)?;
    let (entries, next) = ledger.page(ctx, now, req.count, req.cursor.as_ref())?;
    drop(ledger);
    check_entries(
        ctx,
        args::AGENT_KEYS.name,
        &req.ledger,
        Access::Read,
        &entries,
        Access::Read,
        now,
    )?;
    let mut items = Vec::with_capacity(entries.len());
    for e in &entries {
        let st = state(ctx, &req.ledger, e, now);
        items.push(RedisValue::Array(vec![
            bulk(&e.key),
            RedisValue::Integer(e.expiry_ms.saturating_sub(now).max(0)),
            status(st.name()),
        ]));
    }
    let cursor = next.map_or_else(|| b"0".to_vec(), |c| c.encode());
    Ok(RedisValue::Array(vec![
        RedisValue::StringBuffer(cursor),
        RedisValue::Array(items),
    ]))
}

/// OKOME.AGENT.PURGE agent [COUNT n]
pub fn agent_purge(ctx: &Context, call: &Call) -> Reply {
    let req = args::parse_agent_purge(call.args)?;
    call.declare(&req.declared())?;
    let now = rkey::now_ms();
    let ledger = Ledger::open(ctx, &req.ledger, true)?;
    let total = ledger.len();
    let entries = ledger.oldest(ctx, req.count)?;
    // Check every key first (ACL included), so a refusal writes nothing.
    check_entries(
        ctx,
        args::AGENT_PURGE.name,
        &req.ledger,
        Access::ReadWrite,
        &entries,
        Access::Write,
        now,
    )?;
    let states: Vec<State> = entries
        .iter()
        .map(|e| state(ctx, &req.ledger, e, now))
        .collect();
    let (mut deleted, mut left, mut gone) = (0i64, 0i64, 0i64);
    let mut elsewhere = Vec::new();
    for (e, st) in entries.iter().zip(&states) {
        match st {
            State::Current => {
                let key = Key::open(ctx, &e.key, true);
                key.delete(ctx);
                drop(key);
                deleted += 1;
                bump(&c::ledger_purged);
                if e.kind == keys::Kind::Planner {
                    wait::wake(ctx, &e.key);
                }
            }
            State::Rewritten => left += 1,
            State::Gone => gone += 1,
            State::Elsewhere => elsewhere.push(RedisValue::Array(vec![
                bulk(&e.key),
                RedisValue::Integer(e.expiry_ms),
            ])),
        }
    }
    ledger.remove_oldest(ctx, &entries);
    let remaining = total.saturating_sub(entries.len() as u64);
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(deleted),
        RedisValue::Integer(left),
        RedisValue::Integer(gone),
        RedisValue::Integer(ms(remaining)),
        RedisValue::Array(elsewhere),
    ]))
}
