//! Redis Cluster: okome never reads or writes a key in a slot this node
//! does not serve. Keys that are arguments are routed by Redis itself (key
//! specs); keys the module derives (the plan key of `OKOME.PLAN.GET`, rate
//! and budget windows, cache keys) are checked here, in cluster mode only:
//! every key one command touches must share a slot, and that slot must be
//! served here. Otherwise the command is refused, before anything is
//! written, with an error that says what to call instead.

use okome_core::keys::{printable, slot};
use okome_core::Error;
use redis_module::{raw, Context};
use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, Ordering};

static CLUSTER: AtomicBool = AtomicBool::new(false);

/// Records at load whether this server runs in cluster mode (it cannot
/// change without a restart), so commands do not ask for every call.
pub fn init(ctx: &Context) {
    // SAFETY: plain query of the context.
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.ctx)) } as u32;
    CLUSTER.store(
        flags & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0,
        Ordering::Relaxed,
    );
}

/// Whether this server runs in cluster mode.
pub fn enabled() -> bool {
    CLUSTER.load(Ordering::Relaxed)
}

/// Whether `key` is served by this node: asks Redis, which refuses a call
/// on a non-local key in cluster mode (and handles migrating slots).
fn local(ctx: &Context, key: &[u8]) -> bool {
    // SAFETY: "b" = buffer + length; the reply is freed below.
    unsafe {
        let Some(call) = raw::RedisModule_Call else {
            return false;
        };
        let reply = call(
            ctx.ctx,
            c"EXISTS".as_ptr(),
            c"b".as_ptr(),
            key.as_ptr().cast::<c_char>(),
            key.len(),
        );
        if reply.is_null() {
            return false;
        }
        if let Some(free) = raw::RedisModule_FreeCallReply {
            free(reply);
        }
        true
    }
}

/// In cluster mode, checks that `keys` (all the keys a command will touch,
/// the first being its main key) share a slot that this node serves.
/// `instead` completes the error: what the caller should do.
pub fn check(ctx: &Context, keys: &[&[u8]], instead: &str) -> Result<(), Error> {
    if !enabled() {
        return Ok(());
    }
    let Some((first, rest)) = keys.split_first() else {
        return Ok(());
    };
    let s = slot(first);
    if let Some(other) = rest.iter().find(|k| slot(k) != s) {
        return Err(Error::Raw(format!(
            "CROSSSLOT '{}' (slot {s}) and '{}' (slot {}) are in different slots; {instead}",
            printable(first),
            printable(other),
            slot(other)
        )));
    }
    if !local(ctx, first) {
        return Err(Error::Raw(format!(
            "ERR okome: '{}' is in slot {s}, which this node does not serve; {instead}",
            printable(first)
        )));
    }
    Ok(())
}
