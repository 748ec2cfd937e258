//! Server-side waiting for `OKOME.PLAN.GET ... WAIT ms`.
//!
//! A follower that finds the lock held is blocked with `RM_BlockClient` and
//! queued, per planner key, in FIFO order. Nothing polls: the events that
//! can end a wait call [`settle`] for the key —
//!
//! - `OKOME.PLAN.SET` stored the plan: every waiter is woken and replies
//!   `HIT` with the plan;
//! - the lock was released (`OKOME.UNLOCK`, or `PLAN.SET ... TOKEN` whose
//!   plan was skipped): the lock is taken, in the same atomic step, on
//!   behalf of the first waiter, which replies `MISS` with that token; the
//!   others keep waiting for the new leader;
//! - the lock expired (its leader died): a one-shot timer armed at the
//!   lock's expiry does the same hand-over; a heartbeat that extended the
//!   lock just re-arms it.
//!
//! `RM_BlockClientOnKeys` is not used because Redis 7.0 serves module
//! clients blocked on a key only while that key exists, and the plan key
//! does not exist while followers wait for it.
//!
//! A waiter that times out replies `LOCKED`; one that disconnects is
//! dropped from the queue. Every blocked client is released with
//! `RM_UnblockClient` exactly once, so nothing leaks.

use crate::commands::{plan_reply, take_lock, Reply};
use crate::rkey::{self, Holds, Key};
use crate::stats::{bump, c};
use okome_core::keys;
use okome_core::Error;
use redis_module::{raw, Context, RedisError};
use std::collections::{BTreeMap, VecDeque};
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Mutex, MutexGuard};

type Bc = *mut raw::RedisModuleBlockedClient;

#[derive(Debug, Clone, Copy)]
struct Waiter {
    bc: usize,
    lock_ttl_ms: u64,
    rate_remaining: Option<u64>,
}

#[derive(Debug, Default)]
struct Queue {
    waiters: VecDeque<Waiter>,
    /// The pending one-shot timer for this key, stopped when the queue
    /// empties so that nothing outlives the waiters.
    timer: Option<raw::RedisModuleTimerID>,
}

type Slot = (c_int, Vec<u8>);

struct Registry {
    by_key: BTreeMap<Slot, Queue>,
    by_bc: BTreeMap<usize, Slot>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    by_key: BTreeMap::new(),
    by_bc: BTreeMap::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// Removes a waiter; also returns the timer to stop if its queue is now
    /// empty.
    fn remove_bc(&mut self, bc: usize) -> Option<(Slot, Waiter, Option<raw::RedisModuleTimerID>)> {
        let slot = self.by_bc.remove(&bc)?;
        let q = self.by_key.get_mut(&slot)?;
        let pos = q.waiters.iter().position(|w| w.bc == bc)?;
        let w = q.waiters.remove(pos)?;
        let stop = self.drop_if_empty(&slot);
        Some((slot, w, stop))
    }

    /// Forgets the queue of `slot` if it has no waiters; returns its timer,
    /// which the caller must stop.
    fn drop_if_empty(&mut self, slot: &Slot) -> Option<raw::RedisModuleTimerID> {
        if self.by_key.get(slot).is_some_and(|q| q.waiters.is_empty()) {
            self.by_key.remove(slot).and_then(|q| q.timer)
        } else {
            None
        }
    }

    /// Whether `slot` has waiters but no timer (so one must be armed).
    fn needs_timer(&self, slot: &Slot) -> bool {
        self.by_key
            .get(slot)
            .is_some_and(|q| !q.waiters.is_empty() && q.timer.is_none())
    }
}

/// What a woken waiter replies.
enum Wake {
    /// Look again: normally the plan is there now.
    Recheck,
    /// The lock was taken for this waiter with this token.
    Handoff(Vec<u8>),
}

struct Woken {
    key: Vec<u8>,
    lock_ttl_ms: u64,
    rate_remaining: Option<u64>,
    wake: Wake,
}

impl Woken {
    fn new(key: &[u8], w: &Waiter, wake: Wake) -> Woken {
        Woken {
            key: key.to_vec(),
            lock_ttl_ms: w.lock_ttl_ms,
            rate_remaining: w.rate_remaining,
            wake,
        }
    }
}

/// Number of clients currently waiting.
pub fn waiting() -> usize {
    registry().by_bc.len()
}

/// Whether this context may block (not inside MULTI, a script or a
/// function, nor a client that must not block).
pub fn can_block(ctx: &Context) -> bool {
    // SAFETY: plain query of the context.
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.ctx)) } as u32;
    flags
        & (raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING
            | raw::REDISMODULE_CTX_FLAGS_MULTI
            | raw::REDISMODULE_CTX_FLAGS_LUA)
        == 0
}

fn selected_db(ctx: &Context) -> c_int {
    // SAFETY: plain query of the context.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) }
}

/// Blocks the calling client until the plan at `key` is stored, the lock is
/// handed to it, or `wait_ms` pass. Returns false if Redis refused to block.
pub fn block(
    ctx: &Context,
    key: &[u8],
    lock_ttl_ms: u64,
    rate_remaining: Option<u64>,
    wait_ms: u64,
    lock_pttl: i64,
) -> bool {
    // SAFETY: callbacks have the expected signatures; the timeout is > 0.
    let bc = unsafe {
        match raw::RedisModule_BlockClient {
            Some(f) => f(
                ctx.ctx,
                Some(on_reply),
                Some(on_timeout),
                Some(free_woken),
                i64::try_from(wait_ms).unwrap_or(i64::MAX),
            ),
            None => ptr::null_mut(),
        }
    };
    if bc.is_null() {
        return false;
    }
    // SAFETY: `bc` was just returned by BlockClient.
    unsafe {
        if let Some(f) = raw::RedisModule_SetDisconnectCallback {
            f(bc, Some(on_disconnect));
        }
    }
    let slot = (selected_db(ctx), key.to_vec());
    let arm = {
        let mut reg = registry();
        reg.by_bc.insert(bc as usize, slot.clone());
        let q = reg.by_key.entry(slot.clone()).or_default();
        q.waiters.push_back(Waiter {
            bc: bc as usize,
            lock_ttl_ms,
            rate_remaining,
        });
        q.timer.is_none()
    };
    if arm {
        arm_timer(ctx, slot, lock_pttl);
    }
    true
}

fn unblock(bc: usize, woken: Option<Woken>) {
    let data = woken.map_or(ptr::null_mut(), |w| {
        Box::into_raw(Box::new(w)).cast::<c_void>()
    });
    // SAFETY: `bc` is a blocked client not yet unblocked (it was in the
    // registry, and is removed from it before this call).
    unsafe {
        if let Some(f) = raw::RedisModule_UnblockClient {
            f(bc as Bc, data);
        }
    }
}

/// Arms the one-shot timer that re-examines `slot` after the lock expires,
/// and records it in the slot's queue.
fn arm_timer(ctx: &Context, slot: Slot, after_ms: i64) {
    let period = after_ms.clamp(0, i64::MAX - 1).saturating_add(1);
    let data = Box::into_raw(Box::new(slot.clone())).cast::<c_void>();
    // SAFETY: the callback (or `stop_timer`) takes ownership of `data`.
    let id = unsafe {
        match raw::RedisModule_CreateTimer {
            Some(f) => f(ctx.ctx, period, Some(on_timer), data),
            None => return,
        }
    };
    if let Some(q) = registry().by_key.get_mut(&slot) {
        q.timer = Some(id);
    }
}

/// Stops a pending timer and frees its data.
fn stop_timer(ctx: *mut raw::RedisModuleCtx, id: Option<raw::RedisModuleTimerID>) {
    let Some(id) = id else {
        return;
    };
    let mut data: *mut c_void = ptr::null_mut();
    // SAFETY: `id` was returned by CreateTimer and has not fired (fired
    // timers are forgotten in `on_timer`); on success `data` is ours.
    unsafe {
        if let Some(f) = raw::RedisModule_StopTimer {
            if f(ctx, id, &mut data) == raw::REDISMODULE_OK as c_int && !data.is_null() {
                drop(Box::from_raw(data.cast::<Slot>()));
            }
        }
    }
}

/// Called after anything that may end waits on `key` in the current db:
/// a stored plan, a released lock. Cheap when nobody waits.
pub fn settle(ctx: &Context, key: &[u8]) {
    if registry().by_bc.is_empty() {
        return;
    }
    settle_slot(ctx, (selected_db(ctx), key.to_vec()));
}

fn settle_slot(ctx: &Context, slot: Slot) {
    let key = &slot.1;
    let has_plan = Key::open(ctx, key, false).holds() != Holds::Nothing;
    if has_plan {
        let (waiters, stop) = {
            let mut reg = registry();
            let Some(q) = reg.by_key.get_mut(&slot) else {
                return;
            };
            let waiters = std::mem::take(&mut q.waiters);
            for w in &waiters {
                reg.by_bc.remove(&w.bc);
            }
            (waiters, reg.drop_if_empty(&slot))
        };
        stop_timer(ctx.ctx, stop);
        for w in waiters {
            unblock(w.bc, Some(Woken::new(key, &w, Wake::Recheck)));
        }
        return;
    }
    let lock_name = keys::lock_key(key);
    let lock = Key::open(ctx, &lock_name, true);
    let now = rkey::now_ms();
    if lock.holds() != Holds::Nothing {
        // Still held (or extended by a heartbeat): look again at its expiry.
        let pttl = lock.pttl(now);
        let arm = registry().needs_timer(&slot);
        if arm {
            arm_timer(ctx, slot, if pttl < 0 { 1_000 } else { pttl });
        }
        return;
    }
    // Free: hand it to the first waiter.
    let (first, more, stop) = {
        let mut reg = registry();
        let Some(q) = reg.by_key.get_mut(&slot) else {
            return;
        };
        let first = q.waiters.pop_front();
        if let Some(w) = &first {
            reg.by_bc.remove(&w.bc);
        }
        let stop = reg.drop_if_empty(&slot);
        (first, reg.needs_timer(&slot), stop)
    };
    stop_timer(ctx.ctx, stop);
    let Some(w) = first else {
        return;
    };
    let token = take_lock(ctx, &lock, now, w.lock_ttl_ms);
    drop(lock);
    unblock(w.bc, Some(Woken::new(key, &w, Wake::Handoff(token))));
    if more {
        arm_timer(ctx, slot, i64::try_from(w.lock_ttl_ms).unwrap_or(i64::MAX));
    }
}

/// Runs `f`, turning a panic into an error reply.
fn guarded(ctx: *mut raw::RedisModuleCtx, f: impl FnOnce(&Context) -> Reply) -> c_int {
    let context = Context::new(ctx);
    let reply = match catch_unwind(AssertUnwindSafe(|| f(&context))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RedisError::String(e.to_string())),
        Err(_) => Err(RedisError::Str(crate::register::PANIC_REPLY)),
    };
    context.reply(reply) as c_int
}

extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guarded(ctx, |context| {
        // SAFETY: the private data is the `Woken` given to UnblockClient.
        let woken = unsafe {
            raw::RedisModule_GetBlockedClientPrivateData
                .map_or(ptr::null_mut(), |f| f(context.ctx))
                .cast::<Woken>()
                .as_ref()
        };
        let Some(w) = woken else {
            return Err(Error::BadKey(
                "okome internal error: lost wait state".into(),
            ));
        };
        match &w.wake {
            Wake::Handoff(token) => {
                bump(&c::wait_woken_leader);
                bump(&c::planner_misses);
                Ok(plan_reply(
                    "MISS",
                    &w.key,
                    None,
                    Some(i64::try_from(w.lock_ttl_ms).unwrap_or(i64::MAX)),
                    Some(token),
                    w.rate_remaining,
                ))
            }
            Wake::Recheck => recheck(context, w),
        }
    })
}

/// A woken waiter looks again: normally a `HIT`; if the plan vanished in
/// the meantime, it behaves like a fresh lookup.
fn recheck(ctx: &Context, w: &Woken) -> Reply {
    let now = rkey::now_ms();
    let plan = Key::open(ctx, &w.key, false);
    if let Some(v) = plan.string()? {
        bump(&c::wait_woken_hit);
        bump(&c::planner_hits);
        return Ok(plan_reply(
            "HIT",
            &w.key,
            Some(v),
            Some(plan.pttl(now)),
            None,
            w.rate_remaining,
        ));
    }
    let lock_name = keys::lock_key(&w.key);
    let lock = Key::open(ctx, &lock_name, true);
    if lock.string()?.is_some() {
        bump(&c::planner_locked);
        return Ok(plan_reply(
            "LOCKED",
            &w.key,
            None,
            Some(lock.pttl(now)),
            None,
            w.rate_remaining,
        ));
    }
    let token = take_lock(ctx, &lock, now, w.lock_ttl_ms);
    let ttl = i64::try_from(w.lock_ttl_ms).unwrap_or(i64::MAX);
    bump(&c::planner_misses);
    Ok(plan_reply(
        "MISS",
        &w.key,
        None,
        Some(ttl),
        Some(&token),
        w.rate_remaining,
    ))
}

extern "C" fn on_timeout(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: inside a timeout callback the handle is the blocked client.
    let bc = unsafe { raw::RedisModule_GetBlockedClientHandle.map_or(ptr::null_mut(), |f| f(ctx)) };
    let found = registry().remove_bc(bc as usize);
    if let Some((_, _, stop)) = &found {
        stop_timer(ctx, *stop);
    }
    let rc = guarded(ctx, |context| {
        let Some(((_, key), w, _)) = &found else {
            return Err(Error::BadKey(
                "okome internal error: lost wait state".into(),
            ));
        };
        let now = rkey::now_ms();
        let lock = Key::open(context, &keys::lock_key(key), false);
        bump(&c::wait_timed_out);
        bump(&c::planner_locked);
        Ok(plan_reply(
            "LOCKED",
            key,
            None,
            Some(lock.pttl(now)),
            None,
            w.rate_remaining,
        ))
    });
    if !bc.is_null() {
        unblock(bc as usize, None);
    }
    rc
}

extern "C" fn on_disconnect(ctx: *mut raw::RedisModuleCtx, bc: Bc) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let found = registry().remove_bc(bc as usize);
        if let Some((_, _, stop)) = found {
            stop_timer(ctx, stop);
            bump(&c::wait_disconnected);
            unblock(bc as usize, None);
        }
    }));
}

extern "C" fn free_woken(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: `data` came from Box::into_raw in `unblock`.
        drop(unsafe { Box::from_raw(data.cast::<Woken>()) });
    }
}

extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` came from Box::into_raw in `arm_timer`.
    let slot = *unsafe { Box::from_raw(data.cast::<Slot>()) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let context = Context::new(ctx);
        {
            let mut reg = registry();
            match reg.by_key.get_mut(&slot) {
                Some(q) => {
                    // This timer has fired: it must not be stopped later.
                    q.timer = None;
                    if q.waiters.is_empty() {
                        reg.by_key.remove(&slot);
                        return;
                    }
                }
                None => return,
            }
        }
        // SAFETY: selecting the db the waiters are in.
        unsafe {
            if let Some(f) = raw::RedisModule_SelectDb {
                f(ctx, slot.0);
            }
        }
        settle_slot(&context, slot);
    }));
}
