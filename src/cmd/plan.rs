//! `OKOME.PLAN.GET`, `OKOME.PLAN.LOOKUP` and `OKOME.PLAN.SET`: the
//! planner's cache with its stampede lock, the agent's rate charged on a
//! lookup and its write budget on a store, and the followers that `WAIT`
//! for a plan (`crate::wait` blocks them; a woken one looks again here,
//! through the same steps as a fresh lookup).

use super::agent::record;
use super::budget::Budget;
use super::lock::{lock_state, release, take_lock, LockState};
use super::news::{self, Told};
use super::secs_to_ms;
use crate::acl;
use crate::call::Call;
use crate::cluster;
use crate::ledger::Ledger;
use crate::reply::{bulk, bulk_str, int_or_nil, ms, Reply};
use crate::rkey::{self, Holds, Key};
use crate::server::{self, Refusal};
use crate::stats::{bump, c};
use crate::wait::{self, Served, Verdict, Woken};
use okome_core::command;
use okome_core::declared::{self, Declared};
use okome_core::keys;
use okome_core::Error;
use redis_module::{Context, RedisValue};
use std::any::Any;
use std::sync::atomic::AtomicU64;

/// OKOME.PLAN.GET model prompt toolset_version repo_hash
///     [AGENT id LIMIT n WINDOW s] [LOCKTTL ms | NOLOCK] [WAIT ms] [REFRESHAHEAD ms]
pub fn plan_get(ctx: &Context, call: &Call) -> Reply {
    let req = call.request_cfg(command::parse_plan_get)?;
    lookup(ctx, req, command::PLAN_GET.name, call.now)
}

/// OKOME.PLAN.LOOKUP key [options of PLAN.GET]: the key-addressed form.
pub fn plan_lookup(ctx: &Context, call: &Call) -> Reply {
    let req = call.request_cfg(command::parse_plan_lookup)?;
    lookup(ctx, req, command::PLAN_LOOKUP.name, call.now)
}

/// What a lookup answers, a variant per status, replied as `[status, key,
/// plan, ms, token, rate_remaining]` with nil for each field a status does
/// not carry.
enum Answer<'a> {
    /// The plan, `pttl` ms from expiring.
    Hit { plan: &'a [u8], pttl: i64 },
    /// The plan in its refresh zone: the caller took the lock (`token`) and
    /// recomputes it.
    Refresh {
        plan: &'a [u8],
        pttl: i64,
        token: Vec<u8>,
    },
    /// No plan: the caller took the lock and computes it (none with
    /// `NOLOCK`).
    Miss { lock: Option<Taken> },
    /// No plan, and another caller holds the lock, `pttl` ms more (`-1`
    /// without a TTL, `-2` gone).
    Locked { pttl: i64 },
    /// The agent's rate refused the lookup: retry in `retry_after_ms`.
    Limited { retry_after_ms: i64 },
    /// No plan, and its leader failed (`OKOME.UNLOCK ... FAILED`): answered
    /// so `pttl` ms more, with its `message` (empty: none, replied nil).
    Failed { message: Vec<u8>, pttl: i64 },
    /// The plan its leader computed but could not store (its write budget
    /// was spent), handed to the callers that waited for it.
    Shared { plan: &'a [u8] },
}

/// The lock a lookup took on a miss.
struct Taken {
    token: Vec<u8>,
    ttl_ms: u64,
}

/// One field of a reply.
#[derive(Clone, Copy)]
enum Field<'a> {
    Bulk(&'a [u8]),
    Int(i64),
    Nil,
}

impl Field<'_> {
    fn value(self) -> RedisValue {
        match self {
            Field::Bulk(b) => bulk(b),
            Field::Int(i) => RedisValue::Integer(i),
            Field::Nil => RedisValue::Null,
        }
    }
}

impl Answer<'_> {
    fn status(&self) -> &'static str {
        match self {
            Answer::Hit { .. } => "HIT",
            Answer::Refresh { .. } => "REFRESH",
            Answer::Miss { .. } => "MISS",
            Answer::Locked { .. } => "LOCKED",
            Answer::Limited { .. } => "LIMITED",
            Answer::Failed { .. } => "FAILED",
            Answer::Shared { .. } => "SHARED",
        }
    }

    /// The `plan`, `ms` and `token` fields.
    fn fields(&self) -> [Field<'_>; 3] {
        use Field::{Bulk, Int, Nil};
        match self {
            Answer::Hit { plan, pttl } => [Bulk(plan), Int(*pttl), Nil],
            Answer::Refresh { plan, pttl, token } => [Bulk(plan), Int(*pttl), Bulk(token)],
            Answer::Miss { lock: None } => [Nil, Nil, Nil],
            Answer::Miss { lock: Some(t) } => [Nil, Int(ms(t.ttl_ms)), Bulk(&t.token)],
            Answer::Locked { pttl } => [Nil, Int(*pttl), Nil],
            Answer::Limited { retry_after_ms } => [Nil, Int(*retry_after_ms), Nil],
            Answer::Failed { message, pttl } if message.is_empty() => [Nil, Int(*pttl), Nil],
            Answer::Failed { message, pttl } => [Bulk(message), Int(*pttl), Nil],
            Answer::Shared { plan } => [Bulk(plan), Nil, Nil],
        }
    }

    /// The counter of this answer in `INFO okome`.
    fn counter(&self) -> &'static AtomicU64 {
        match self {
            Answer::Hit { .. } => &c::planner_hits,
            Answer::Refresh { .. } => &c::planner_refreshes,
            Answer::Miss { .. } => &c::planner_misses,
            Answer::Locked { .. } => &c::planner_locked,
            Answer::Limited { .. } => &c::planner_limited,
            Answer::Failed { .. } => &c::planner_failed,
            Answer::Shared { .. } => &c::plans_shared,
        }
    }

    /// How a woken follower given this answer was served.
    fn served(&self) -> Served {
        match self {
            Answer::Hit { .. } | Answer::Shared { .. } => Served::Hit,
            Answer::Refresh { .. } | Answer::Miss { lock: Some(_) } => Served::Leader,
            _ => Served::Other,
        }
    }

    /// Counts the answer and replies it for `key`, with the agent's
    /// remaining `rate`: sent at once through the raw API, nothing copied
    /// but into the reply buffer (a hit's plan straight from its key).
    /// `NoReply` then, for the caller to hand back.
    fn reply(self, ctx: &Context, key: &[u8], rate: Option<u64>) -> RedisValue {
        bump(self.counter());
        let [plan, ttl, token] = self.fields();
        let rate = rate.map_or(Field::Nil, |r| Field::Int(ms(r)));
        let status = Field::Bulk(self.status().as_bytes());
        send(ctx, &[status, Field::Bulk(key), plan, ttl, token, rate])
    }
}

/// Replies `fields` as an array through the raw API: `NoReply`, or the
/// array as a value to reply if the API is missing.
fn send(ctx: &Context, fields: &[Field]) -> RedisValue {
    use redis_module::raw;
    // SAFETY: a live context that may reply; an array of `fields.len()`
    // followed by as many items; the buffers outlive the calls, which copy
    // them.
    unsafe {
        let (Some(array), Some(buffer), Some(int), Some(null)) = (
            raw::RedisModule_ReplyWithArray,
            raw::RedisModule_ReplyWithStringBuffer,
            raw::RedisModule_ReplyWithLongLong,
            raw::RedisModule_ReplyWithNull,
        ) else {
            return RedisValue::Array(fields.iter().map(|f| f.value()).collect());
        };
        let raw_ctx = ctx.ctx;
        array(raw_ctx, fields.len() as std::os::raw::c_long);
        for f in fields {
            match *f {
                Field::Bulk(b) => buffer(raw_ctx, b.as_ptr().cast(), b.len()),
                Field::Int(i) => int(raw_ctx, i),
                Field::Nil => null(raw_ctx),
            };
        }
    }
    RedisValue::NoReply
}

/// What a lookup asks for once the agent is charged: shared by a fresh
/// `PLAN.GET`/`PLAN.LOOKUP` and a follower woken from `WAIT`.
#[derive(Debug, Clone)]
struct Ask {
    key: Vec<u8>,
    /// TTL of the lock taken on a miss; `None` with `NOLOCK`.
    lock_ttl_ms: Option<u64>,
    refresh_ahead_ms: u64,
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

    /// The plan's failure, looked for when there is no plan (a plan is
    /// served whether or not its refresh failed).
    fn failure(&self, ctx: &Context, hit: bool, now: i64) -> Result<Option<Failure>, Error> {
        if hit {
            return Ok(None);
        }
        Failure::read(ctx, &self.key, now)
    }

    /// Opens the lock of the plan when the lookup may need it: on a miss
    /// (unless its leader failed: `FAILED` takes no lock), or in a refresh
    /// zone (the lock is declared unless `NOLOCK`).
    fn open_lock(
        &self,
        ctx: &Context,
        hit: bool,
        failure: &Option<Failure>,
    ) -> Result<Option<Key>, Error> {
        let needed =
            self.lock_ttl_ms.is_some() && failure.is_none() && (!hit || self.refresh_ahead_ms > 0);
        let lock = needed.then(|| Key::open(ctx, &keys::lock_key(&self.key), true));
        if let Some(l) = &lock {
            l.check_string_or_empty()?;
        }
        Ok(lock)
    }
}

/// The failure record of a plan (`key:failed`), while it lasts.
struct Failure {
    message: Vec<u8>,
    pttl: i64,
}

impl Failure {
    /// The failure of plan `key` at `now`, if its leader failed within
    /// the record's time.
    fn read(ctx: &Context, key: &[u8], now: i64) -> Result<Option<Failure>, Error> {
        let record = Key::open(ctx, &keys::failed_key(key), false);
        Ok(record.string()?.map(|m| Failure {
            message: m.to_vec(),
            pttl: record.pttl(now),
        }))
    }

    /// Whether plan `key`'s leader failed within the record's time.
    fn recorded(ctx: &Context, key: &[u8]) -> bool {
        Key::open(ctx, &keys::failed_key(key), false).holds() != Holds::Nothing
    }

    fn answer(self) -> Answer<'static> {
        Answer::Failed {
            message: self.message,
            pttl: self.pttl,
        }
    }
}

/// A `PLAN.GET`/`PLAN.LOOKUP` (`command`): opens and checks its keys,
/// charges the agent, then answers, or blocks the caller until it can.
fn lookup(ctx: &Context, req: command::PlanGet, command: &'static str, now: i64) -> Reply {
    let mut ask = Ask {
        key: req.key,
        lock_ttl_ms: req.lock_ttl_ms,
        refresh_ahead_ms: req.refresh_ahead_ms,
        rate: None,
        command,
    };
    // Open and check every key first, so a bad key writes nothing.
    let plan = Key::open(ctx, &ask.key, false);
    let budget = match &req.rate {
        Some(charge) => Some(Budget::load(ctx, charge, now)?),
        None => None,
    };
    let hit = plan.string()?.is_some();
    let failure = ask.failure(ctx, hit, now)?;
    let lock = ask.open_lock(ctx, hit, &failure)?;
    let refusal = write_refusal(ctx, budget.is_some(), hit, lock.as_ref())?;
    if let Some(budget) = budget {
        let d = budget.charge(ctx)?;
        if !d.allowed {
            let limited = Answer::Limited {
                retry_after_ms: ms(d.retry_after_ms),
            };
            return Ok(limited.reply(ctx, &ask.key, Some(d.remaining)));
        }
        ask.rate = Some(d.remaining);
    }
    let answer = match Looking::command(ctx, &ask, now, refusal).decide(&plan, lock, failure)? {
        Found::Answer(a) => a,
        Found::Held { pttl } if wait_for_plan(ctx, &ask, req.wait_ms, pttl) => {
            return Ok(RedisValue::NoReply);
        }
        Found::Held { pttl } => Answer::Locked { pttl },
    };
    Ok(answer.reply(ctx, &ask.key, ask.rate))
}

/// Why this node may not write now, for a lookup that opened its agent's
/// window (`charging`) or a lock. The lookup is flagged `write` but not
/// `deny-oom`, so that hits are served when memory is full: a call that
/// must write (a charge, or a lock on a miss) is refused here, before it
/// writes anything. A call that opened neither cannot write: no check.
fn write_refusal(
    ctx: &Context,
    charging: bool,
    hit: bool,
    lock: Option<&Key>,
) -> Result<Option<Refusal>, Error> {
    if !charging && lock.is_none() {
        return Ok(None);
    }
    let Some(r) = server::command_refusal(ctx) else {
        return Ok(None);
    };
    if charging {
        return Err(r.error("the agent's rate window"));
    }
    if !hit && lock.is_some_and(|l| l.holds() == Holds::Nothing) {
        return Err(r.error("the stampede lock of a miss"));
    }
    Ok(Some(r))
}

/// Blocks the caller until the plan is there or the lock is free, if it
/// asked to `WAIT` and may block; whether it blocked.
fn wait_for_plan(ctx: &Context, ask: &Ask, wait_ms: Option<u64>, pttl: i64) -> bool {
    let Some(wait_ms) = wait_ms.filter(|_| wait::can_block(ctx)) else {
        return false;
    };
    let follower = Box::new(Follower { ask: ask.clone() });
    let probe_in = if pttl < 0 {
        RETRY_MS
    } else {
        pttl.saturating_add(1)
    };
    wait::block(ctx, &ask.key, wait_ms, follower, probe, probe_in).is_ok()
}

/// A lookup whose keys are open and checked, at `now`.
struct Looking<'a> {
    ctx: &'a Context,
    ask: &'a Ask,
    now: i64,
    /// Whether (and why) this node may not write now.
    refusal: Option<Refusal>,
    /// Whether a lock without a TTL is healed ([`lock_state`]).
    heal: bool,
}

/// What a lookup found: its answer, or a lock another caller holds
/// (`pttl` ms more; `-1` without a TTL), which a command may wait for.
enum Found<'a> {
    Answer(Answer<'a>),
    Held { pttl: i64 },
}

impl<'a> Looking<'a> {
    /// A command's lookup. It may always heal a lock without a TTL
    /// (`PEXPIREAT` frees memory, never grows it).
    fn command(ctx: &'a Context, ask: &'a Ask, now: i64, refusal: Option<Refusal>) -> Self {
        Looking {
            ctx,
            ask,
            now,
            refusal,
            heal: true,
        }
    }

    /// A woken follower's lookup, outside any command: it writes (a lock
    /// taken or healed) only if this node may write now.
    fn woken(ctx: &'a Context, ask: &'a Ask, now: i64) -> Self {
        let refusal = server::background_refusal(ctx);
        Looking {
            ctx,
            ask,
            now,
            refusal,
            heal: refusal.is_none(),
        }
    }

    /// The planner's answer: the plan (`HIT`, or `REFRESH`); without it
    /// its leader's `failure` (`FAILED`), else `MISS`, or the lock another
    /// caller holds.
    fn decide<'k>(
        &self,
        plan: &'k Key,
        lock: Option<Key>,
        failure: Option<Failure>,
    ) -> Result<Found<'k>, Error> {
        match (plan.string()?, failure) {
            (Some(value), _) => {
                let pttl = plan.pttl(self.now);
                self.serve(value, pttl, lock.as_ref()).map(Found::Answer)
            }
            (None, Some(failure)) => Ok(Found::Answer(failure.answer())),
            (None, None) => self.no_plan(lock),
        }
    }

    /// A plan `pttl` ms from expiring. Stale-while-revalidate: one caller
    /// in the refresh zone takes the lock and recomputes it (`REFRESH`);
    /// not while this node may not write, nor while the last refresh's
    /// failure is recorded (the plan is served as a `HIT`).
    fn serve<'k>(
        &self,
        plan: &'k [u8],
        pttl: i64,
        lock: Option<&Key>,
    ) -> Result<Answer<'k>, Error> {
        if let (Some(ttl_ms), Some(lock), None) = (self.ask.lock_ttl_ms, lock, self.refusal) {
            let in_zone =
                pttl >= 0 && u64::try_from(pttl).is_ok_and(|p| p < self.ask.refresh_ahead_ms);
            if in_zone
                && lock_state(self.ctx, lock, self.now, self.heal)? == LockState::Free
                && !Failure::recorded(self.ctx, &self.ask.key)
            {
                let token = take_lock(self.ctx, lock, self.now, ttl_ms)?;
                return Ok(Answer::Refresh { plan, pttl, token });
            }
        }
        Ok(Answer::Hit { plan, pttl })
    }

    /// No plan: `MISS` with the lock taken (or none, with `NOLOCK`), or the
    /// lock another caller holds.
    fn no_plan(&self, lock: Option<Key>) -> Result<Found<'static>, Error> {
        let (Some(ttl_ms), Some(lock)) = (self.ask.lock_ttl_ms, lock) else {
            return Ok(Found::Answer(Answer::Miss { lock: None }));
        };
        match lock_state(self.ctx, &lock, self.now, self.heal)? {
            LockState::Held(pttl) => {
                bump(&c::lock_contended);
                Ok(Found::Held { pttl })
            }
            // Only a woken follower gets here (a command is refused
            // earlier): no lock now, so it is answered LOCKED, and the next
            // caller after writes resume takes the lock.
            LockState::Free if self.refusal.is_some() => {
                Ok(Found::Answer(Answer::Locked { pttl: -2 }))
            }
            LockState::Free => {
                let token = take_lock(self.ctx, &lock, self.now, ttl_ms)?;
                let lock = Some(Taken { token, ttl_ms });
                Ok(Found::Answer(Answer::Miss { lock }))
            }
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

impl Follower {
    /// Looks again, exactly as a fresh lookup would (without charging the
    /// agent again, and without blocking again), and replies; or, `told`
    /// something by the plan's leader, answers with it.
    fn look_again(&self, ctx: &Context, told: Option<&Told>) -> Result<Woken, Error> {
        let ask = &self.ask;
        // The slot may have moved to another node, or the user's
        // permissions changed, while it waited.
        let keys = ask.declared();
        cluster::check(ctx, &keys)?;
        acl::check(
            ctx,
            ask.command,
            &keys,
            &ask.key,
            "checked it again after waiting",
        )?;
        let now = rkey::now_ms();
        if let Some(told) = told {
            let answer = match told {
                Told::Failed { message, until } => Answer::Failed {
                    message: message.clone(),
                    pttl: until.saturating_sub(now).max(0),
                },
                Told::Shared { plan } => Answer::Shared { plan },
            };
            let served = answer.served();
            let reply = Ok(answer.reply(ctx, &ask.key, ask.rate));
            return Ok(Woken { reply, served });
        }
        let plan = Key::open(ctx, &ask.key, false);
        let hit = plan.string()?.is_some();
        let failure = ask.failure(ctx, hit, now)?;
        let lock = ask.open_lock(ctx, hit, &failure)?;
        let answer = match Looking::woken(ctx, ask, now).decide(&plan, lock, failure)? {
            Found::Answer(a) => a,
            Found::Held { pttl } => Answer::Locked { pttl },
        };
        let served = answer.served();
        let reply = Ok(answer.reply(ctx, &ask.key, ask.rate));
        Ok(Woken { reply, served })
    }
}

impl wait::Waiter for Follower {
    fn woken(&self, ctx: &Context, news: Option<&dyn Any>) -> Woken {
        let told = news.and_then(|n| n.downcast_ref::<Told>());
        self.look_again(ctx, told).unwrap_or_else(Woken::failed)
    }

    /// `LOCKED` with the lock's remaining TTL (`-2` if it is gone).
    fn expired(&self, ctx: &Context) -> Reply {
        let lock = Key::open(ctx, &keys::lock_key(&self.ask.key), false);
        let pttl = match lock.holds() {
            Holds::Nothing => -2,
            _ => lock.pttl(rkey::now_ms()),
        };
        Ok(Answer::Locked { pttl }.reply(ctx, &self.ask.key, self.ask.rate))
    }
}

/// Whom to wake among the followers of planner key `key`: everybody once
/// the plan is there; the first in line once the lock is free and this
/// node may write (its reply takes the lock); else nobody until the lock
/// expires or writes are allowed again.
fn probe(ctx: &Context, key: &[u8], _: u64) -> Verdict {
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
            probe_healed(ctx, &lock_name, now)
        }
        None => Verdict::ProbeIn(RETRY_MS),
    }
}

/// [`probe`] for a lock without a TTL on a node that may write: the lock
/// is healed, and looked at again once it expires.
fn probe_healed(ctx: &Context, lock_name: &[u8], now: i64) -> Verdict {
    let lock = Key::open(ctx, lock_name, true);
    match lock_state(ctx, &lock, now, true) {
        Ok(LockState::Held(pttl)) if pttl >= 0 => Verdict::ProbeIn(pttl.saturating_add(1)),
        Ok(LockState::Held(_)) => Verdict::ProbeIn(RETRY_MS),
        Ok(LockState::Free) => Verdict::WakeFirst,
        Err(e) => {
            server::log_warning(
                ctx.ctx,
                &format!("okome: the waiters' probe could not heal a lock ({e}); looking again in {RETRY_MS} ms"),
            );
            Verdict::ProbeIn(RETRY_MS)
        }
    }
}

/// OKOME.PLAN.SET key plan_json [TTL s] [TOKEN token [FENCED]] [AGENT id WLIMIT n [WWINDOW s]]
pub fn plan_set(ctx: &Context, call: &Call) -> Reply {
    let req = call.request_cfg(command::parse_plan_set)?;
    let (now, cfg) = (call.now, call.cfg());
    // Open and check every key first, so a bad key writes nothing.
    let plan = Key::open(ctx, req.key, true);
    plan.check_string_or_empty()?;
    let lock = match req.token {
        Some(token) => own_lock(ctx, req.key, token, now)?,
        None => None,
    };
    if req.fenced && lock.is_none() {
        return Ok(fenced());
    }
    let budget = match &req.budget {
        Some(charge) => Some(Budget::load(ctx, charge, now)?),
        None => None,
    };
    let ledger = match &req.ledger {
        Some(l) => Some(Ledger::open(ctx, l, true)?),
        None => None,
    };
    // Every check passed: charge, write, record, release.
    let decision = budget.map(|b| b.charge(ctx)).transpose()?;
    let stored = decision.as_ref().is_none_or(|d| d.allowed);
    let ttl_ms = secs_to_ms(req.ttl_s);
    if stored {
        let at = now.saturating_add(ttl_ms);
        plan.set(ctx, req.value, at)?;
        bump(&c::plans_stored);
        if let Some(l) = &ledger {
            record(ctx, l, req.key, at, now, cfg)?;
        }
    } else {
        bump(&c::plans_skipped);
        // Not stored, but the callers waiting for it get it (`SHARED`)
        // rather than computing it again one after another.
        news::shared(ctx, req.key, req.value);
    }
    let released = lock.map(|l| release(ctx, &l)).transpose()?.is_some();
    drop(plan);
    if stored || released {
        wait::wake(ctx, req.key);
    }
    Ok(RedisValue::Array(vec![
        bulk_str(if stored { "STORED" } else { "SKIPPED" }),
        if stored {
            RedisValue::Integer(ttl_ms)
        } else {
            RedisValue::Null
        },
        int_or_nil(decision.map(|d| d.remaining)),
        RedisValue::Integer(i64::from(released)),
    ]))
}

/// `PLAN.SET ... FENCED` whose token no longer holds the lock: a newer
/// leader may have stored a newer plan. Nothing is written, nothing
/// charged: `[FENCED, nil, nil, 0]`.
fn fenced() -> RedisValue {
    bump(&c::plans_fenced);
    RedisValue::Array(vec![
        bulk_str("FENCED"),
        RedisValue::Null,
        RedisValue::Null,
        RedisValue::Integer(0),
    ])
}

/// The lock of plan `key`, opened for writing, if `token` holds it (to
/// release it); else `None`, and a lock without a TTL is healed.
fn own_lock(ctx: &Context, key: &[u8], token: &[u8], now: i64) -> Result<Option<Key>, Error> {
    let lock = Key::open(ctx, &keys::lock_key(key), true);
    if lock.string()? == Some(token) {
        return Ok(Some(lock));
    }
    lock_state(ctx, &lock, now, true)?;
    Ok(None)
}
