//! The command filter that declares okome's keys. Redis runs it on every
//! command before looking the command up — from clients, scripts and
//! `RM_Call` alike — so ACL, cluster redirection and client tracking see
//! the keys an okome call touches: it appends the tail of declared keys
//! (`okome_core::declared`) to the arguments of every okome command that
//! touches keys. Everything else passes untouched after one comparison of
//! the command name's first six bytes.
//!
//! On Valkey 9, okome commands called from a script get no tail and refuse
//! themselves (see [`declare`]).
//!
//! Redis 7.0 runs filters again on a command it reprocesses (one held by
//! `CLIENT PAUSE`), so a call whose arguments already end with the tail
//! they derive is left as it is. A call whose arguments derive no keys (an
//! error the command will reply) gets an empty tail, so a tail a client
//! wrote itself is never taken for okome's.

use crate::rkey::new_string;
use crate::{cluster, config, server, stats};
use okome_core::command;
use okome_core::declared::{Access, Declared, Part, Tail};
use redis_module::{raw, Context};
use std::ffi::c_int;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Registers the filter; false if Redis refused.
pub fn init(ctx: &Context) -> bool {
    if !make_shared() {
        return false;
    }
    // SAFETY: called from OnLoad with a live context.
    unsafe {
        raw::RedisModule_RegisterCommandFilter
            .is_some_and(|f| !f(ctx.ctx, Some(filter), 0).is_null())
    }
}

extern "C" fn filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    // A filter has no module context: a panic is logged without one.
    // Nothing appended then: the command finds no tail and refuses itself.
    stats::guard(ptr::null_mut(), "command filter", || declare(fctx));
}

/// Argument `i` of the filtered command, borrowed until it changes.
fn arg<'a>(fctx: *mut raw::RedisModuleCommandFilterCtx, i: c_int) -> &'a [u8] {
    let mut len = 0usize;
    // SAFETY: `i` is below the argument count; the string lives in argv.
    unsafe {
        let Some(get) = raw::RedisModule_CommandFilterArgGet else {
            return &[];
        };
        let s = get(fctx, i);
        if s.is_null() {
            return &[];
        }
        let p = raw::RedisModule_StringPtrLen.map_or(ptr::null(), |f| f(s, &mut len));
        if p.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        }
    }
}

fn declare(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    // SAFETY: a live filter context.
    let argc = unsafe { raw::RedisModule_CommandFilterArgsCount.map_or(0, |f| f(fctx)) };
    let name = arg(fctx, 0);
    if !name
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"okome."))
    {
        return;
    }
    let Some(derive) = command::find(name).and_then(|c| c.keys) else {
        return;
    };
    // Valkey 9 runs scripts in a scripting-engine module whose calls
    // (`VM_CallArgv`) hand filters an argument array that cannot grow:
    // inserting corrupts its heap. No tail there: the command refuses
    // itself (fail closed).
    if server::valkey() && server::in_script() {
        return;
    }
    let args: Vec<&[u8]> = (1..argc).map(|i| arg(fctx, i)).collect();
    let cfg = config::current();
    let cluster = cluster::enabled();
    let derive = |a: &[&[u8]]| derive(a, &cfg, cluster);
    if let Some(t) = Tail::find(&args) {
        if derive(t.user(&args)).is_ok_and(|d| t.matches(&d)) {
            return;
        }
    }
    let keys = derive(&args).unwrap_or_else(|_| Declared::none());
    drop(args);
    let mut at = argc;
    for part in keys.parts() {
        let s = match part {
            Part::Key(k) => new_string(k),
            _ => match shared(part) {
                s if s.is_null() => new_string(&part.bytes()),
                s => s,
            },
        };
        if s.is_null() {
            return;
        }
        // SAFETY: `s` is a string of our own (a new one, or a new
        // reference to a shared one) whose ownership passes to argv.
        unsafe {
            if let Some(insert) = raw::RedisModule_CommandFilterArgInsert {
                insert(fctx, at, s);
            }
        }
        at = at.saturating_add(1);
    }
}

/// Counts up to this are shared strings.
const MAX_SHARED_COUNT: usize = 4;

/// The keywords and small counts of every tail, made at load and shared
/// by every call (a new reference each: no allocation), like `rkey`'s
/// shared `PXAT`; freed at `MODULE UNLOAD` by [`release_shared`].
static SHARED: [AtomicPtr<raw::RedisModuleString>; SHARED_LEN] =
    [const { AtomicPtr::new(ptr::null_mut()) }; SHARED_LEN];
const SHARED_LEN: usize = Access::ALL.len() + MAX_SHARED_COUNT + 1;

/// The index in [`SHARED`] of a keyword or a small count.
fn shared_index(part: Part) -> Option<usize> {
    match part {
        Part::Keyword(a) => Access::ALL.iter().position(|&x| x == a),
        Part::Count(n) if n <= MAX_SHARED_COUNT => Access::ALL.len().checked_add(n),
        _ => None,
    }
}

/// Makes the shared strings; false if one could not be made.
fn make_shared() -> bool {
    let keywords = Access::ALL.into_iter().map(Part::Keyword);
    let counts = (0..=MAX_SHARED_COUNT).map(Part::Count);
    keywords.chain(counts).all(|p| {
        let s = new_string(&p.bytes());
        let slot = shared_index(p).and_then(|i| SHARED.get(i));
        match slot {
            Some(slot) if !s.is_null() => {
                slot.store(s, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    })
}

/// Frees the shared strings (at `MODULE UNLOAD`).
pub fn release_shared() {
    for slot in &SHARED {
        let s = slot.swap(ptr::null_mut(), Ordering::Relaxed);
        if !s.is_null() {
            // SAFETY: made by `new_string` (no context), freed once.
            unsafe {
                if let Some(free) = raw::RedisModule_FreeString {
                    free(ptr::null_mut(), s);
                }
            }
        }
    }
}

/// A new reference to the shared string of `part` (a keyword or a small
/// count), or null for any other part.
fn shared(part: Part) -> *mut raw::RedisModuleString {
    let s = shared_index(part)
        .and_then(|i| SHARED.get(i))
        .map_or(ptr::null_mut(), |slot| slot.load(Ordering::Relaxed));
    if !s.is_null() {
        // SAFETY: a live shared string; one more reference, owned by argv.
        unsafe {
            if let Some(retain) = raw::RedisModule_RetainString {
                retain(ptr::null_mut(), s);
            }
        }
    }
    s
}
