//! `INFO okome`: counters of what the commands did. Plain relaxed atomic
//! increments (commands run on Redis's main thread), so they cost the hot
//! path a few nanoseconds.

use crate::server;
use okome_core::keys::Kind;
use redis_module::raw;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Every counter, named as it appears in `INFO okome`.
        #[allow(non_upper_case_globals)]
        pub mod c {
            use std::sync::atomic::AtomicU64;
            $(pub static $name: AtomicU64 = AtomicU64::new(0);)*
        }
        const ALL: &[(&str, &AtomicU64)] = &[$((stringify!($name), &c::$name)),*];
    };
}

counters!(
    planner_hits,
    planner_misses,
    planner_refreshes,
    planner_locked,
    planner_limited,
    planner_failed,
    lock_acquired,
    lock_contended,
    lock_extended,
    lock_released,
    wait_blocked,
    wait_woken,
    wait_woken_hit,
    wait_woken_leader,
    wait_woken_other,
    wait_timed_out,
    wait_disconnected,
    wait_unblocked,
    wait_deadline_early,
    locks_healed,
    windows_evicted,
    rate_allowed,
    rate_limited,
    wbudget_allowed,
    wbudget_refused,
    throttle_allowed,
    throttle_limited,
    plans_stored,
    plans_skipped,
    plans_failed,
    plans_fenced,
    plans_shared,
    cache_hits,
    cache_misses,
    cache_stored,
    ledger_records,
    ledger_dropped,
    ledger_purged,
    lease_acquired,
    lease_refused,
    lease_renewed,
    lease_released,
    errors,
    callback_panics,
);

/// Adds one to a counter. Commands, callbacks and timers all run on
/// Redis's main thread, so a plain load and store is exact and avoids a
/// locked read-modify-write on the hot path. Built with the `no-stats`
/// feature it does nothing (for measuring what the counters cost).
#[inline]
pub fn bump(counter: &AtomicU64) {
    if cfg!(not(feature = "no-stats")) {
        let n = counter.load(Ordering::Relaxed).wrapping_add(1);
        counter.store(n, Ordering::Relaxed);
    }
}

/// Sets every counter to zero (at load: `INFO okome` counts since the
/// module loaded, also after `MODULE UNLOAD` and `MODULE LOAD`).
pub fn reset() {
    for (_, counter) in ALL {
        counter.store(0, Ordering::Relaxed);
    }
}

/// Clients blocked in `WAIT` now (`waiting_clients`), kept by the wait
/// registry as it changes.
static WAITING: AtomicU64 = AtomicU64::new(0);

/// Records how many clients wait now.
pub fn set_waiting(n: usize) {
    WAITING.store(n as u64, Ordering::Relaxed);
}

/// Runs `f`, the body of the callback `callback` (a timer, an event, the
/// command filter): a panic must not unwind into Redis, so it is caught,
/// logged as a warning naming the callback, and counted in
/// `callback_panics`. `None` if `f` panicked.
pub fn guard<R>(ctx: *mut raw::RedisModuleCtx, callback: &str, f: impl FnOnce() -> R) -> Option<R> {
    let result = catch_unwind(AssertUnwindSafe(f));
    if result.is_err() {
        bump(&c::callback_panics);
        let message = format!(
            "okome: internal error: the {callback} callback panicked and was stopped there; please report it"
        );
        let _ = catch_unwind(AssertUnwindSafe(|| server::log_warning(ctx, &message)));
    }
    result.ok()
}

/// Keyspace events okome listens to: evictions of its budget windows (an
/// evicted window forgets what it admitted).
extern "C" fn on_evicted(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    _event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guard(ctx, "eviction event", || {
        let mut len: usize = 0;
        // SAFETY: `key` is a live string for the duration of the callback.
        let p =
            unsafe { raw::RedisModule_StringPtrLen.map_or(std::ptr::null(), |f| f(key, &mut len)) };
        if !p.is_null() {
            // SAFETY: p points to len bytes owned by `key`.
            let name = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
            if Kind::of(name).is_some_and(Kind::is_budget) {
                bump(&c::windows_evicted);
            }
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// Subscribes to evictions (at load).
pub fn watch_evictions(ctx: *mut raw::RedisModuleCtx) -> bool {
    // SAFETY: called from OnLoad with a callback of the expected signature.
    unsafe {
        raw::RedisModule_SubscribeToKeyspaceEvents.is_some_and(|f| {
            f(
                ctx,
                raw::REDISMODULE_NOTIFY_EVICTED as c_int,
                Some(on_evicted),
            ) == raw::REDISMODULE_OK as c_int
        })
    }
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    // SAFETY: called by Redis with a valid info context; field names are
    // NUL-terminated.
    unsafe {
        let (Some(section), Some(add), Some(add_f)) = (
            raw::RedisModule_InfoAddSection,
            raw::RedisModule_InfoAddFieldULongLong,
            raw::RedisModule_InfoAddFieldDouble,
        ) else {
            return;
        };
        section(ctx, c"".as_ptr());
        for (name, counter) in ALL {
            if let Ok(n) = CString::new(*name) {
                add(ctx, n.as_ptr().cast::<c_char>(), get(counter));
            }
        }
        let hits = get(&c::planner_hits) + get(&c::planner_refreshes);
        let lookups = hits + get(&c::planner_misses) + get(&c::planner_locked);
        let ratio = if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        };
        add_f(ctx, c"planner_hit_ratio".as_ptr(), ratio);
        add(ctx, c"waiting_clients".as_ptr(), get(&WAITING));
    }
}

/// Registers the `INFO okome` section.
pub fn register(ctx: *mut raw::RedisModuleCtx) -> bool {
    // SAFETY: called from OnLoad.
    unsafe {
        raw::RedisModule_RegisterInfoFunc
            .is_some_and(|f| f(ctx, Some(info)) == raw::REDISMODULE_OK as c_int)
    }
}
