//! Redis Cluster: okome never reads or writes a key in a slot this node
//! does not serve. The keys of a call are declared (see
//! `okome_core::declared`), so Redis itself routes it — `MOVED`, `ASK`,
//! `TRYAGAIN`, `CROSSSLOT` — before okome runs. What is checked here are
//! the keys Redis could not see at that time: those of a follower woken
//! from `WAIT` (the slot may have moved while it waited) and the entries of
//! an agent's ledger. Redis is asked the same question it asks for a call
//! (a probe `EXISTS` through `RM_Call`, which applies the slot's migration
//! state and the caller's `ASKING`).

use crate::rkey::Strings;
use okome_core::declared::Declared;
use okome_core::keys::{printable, slot};
use okome_core::Error;
use redis_module::{raw, Context};
use std::sync::atomic::{AtomicBool, Ordering};

/// What to do on `TRYAGAIN`. The keys checked here (a woken follower's, a
/// ledger's entries) share a slot: one that moved, or is moving, away.
const RETRY: &str = "retry: a cluster client is sent where the slot is now";

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

/// Whether this node may serve a call on `keys` now: asks Redis, which
/// refuses a call on keys it would redirect (another node's slot, or a
/// migrating slot missing some of them).
fn servable(ctx: &Context, keys: &[&[u8]]) -> bool {
    let Some(mut argv) = Strings::new(keys.iter().copied()) else {
        return false;
    };
    // SAFETY: live strings ("v": a vector of them); the reply is freed below.
    unsafe {
        let Some(call) = raw::RedisModule_Call else {
            return false;
        };
        let reply = call(
            ctx.ctx,
            c"EXISTS".as_ptr(),
            c"v".as_ptr(),
            argv.as_mut_ptr(),
            argv.len(),
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

/// In cluster mode, checks that `keys` share a slot this node may serve
/// now; otherwise `CROSSSLOT`, or `TRYAGAIN` (a client retries, and is
/// sent where the slot is now).
pub fn check(ctx: &Context, keys: &Declared) -> Result<(), Error> {
    if !enabled() {
        return Ok(());
    }
    let all: Vec<&[u8]> = keys.iter().map(|(_, k)| k).collect();
    let Some((first, rest)) = all.split_first() else {
        return Ok(());
    };
    let s = slot(first);
    if let Some(other) = rest.iter().find(|k| slot(k) != s) {
        return Err(Error::Raw(format!(
            "CROSSSLOT '{}' (slot {s}) and '{}' (slot {}) are in different slots",
            printable(first),
            printable(other),
            slot(other)
        )));
    }
    if !servable(ctx, &all) {
        return Err(Error::Raw(format!(
            "TRYAGAIN okome: '{}' is in slot {s}, which this node cannot serve now (it is moving or has moved); {RETRY}",
            printable(first)
        )));
    }
    Ok(())
}
