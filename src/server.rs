//! What the server allows right now. Commands that Redis lets run may write
//! (Redis refuses write commands on a read-only replica, postpones them
//! during `CLIENT PAUSE WRITE` and a `FAILOVER`, and refuses them while
//! loading), except that okome checks `maxmemory` itself for the commands
//! that serve reads when memory is full. Code that runs outside a command —
//! a timer, the reply callback of a woken client — gets none of Redis's
//! checks and must make them all here before it writes: writing a key that
//! Redis reports expired but may not delete (a paused primary, a replica)
//! aborts the server.

use okome_core::Error;
use redis_module::{raw, Context};

/// Why this node may not write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Used memory is above `maxmemory`.
    Oom,
    /// A replica: its data comes from its primary only.
    Replica,
    /// Writes are paused (`CLIENT PAUSE`, a `FAILOVER` in progress).
    Paused,
    /// The dataset is loading.
    Loading,
}

impl Refusal {
    /// The error a command replies when it would have to write.
    pub fn error(self, what: &str) -> Error {
        match self {
            Refusal::Oom => Error::Raw(format!(
                "OOM command not allowed when used memory > 'maxmemory': this call must write {what} (okome still serves plan hits that write nothing)"
            )),
            Refusal::Replica => Error::Raw(format!(
                "READONLY this node is a replica: this call must write {what}"
            )),
            Refusal::Paused => Error::Raw(format!(
                "ERR writes are paused on this node: this call must write {what}"
            )),
            Refusal::Loading => Error::Raw(format!(
                "LOADING the dataset is loading: this call must write {what}"
            )),
        }
    }
}

fn flags(ctx: &Context) -> u32 {
    // SAFETY: plain query of a live context.
    unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.ctx)) as u32 }
}

/// For a command that Redis let run: only `maxmemory` is okome's to check.
pub fn command_refusal(ctx: &Context) -> Option<Refusal> {
    (flags(ctx) & raw::REDISMODULE_CTX_FLAGS_OOM != 0).then_some(Refusal::Oom)
}

/// For code outside a command (timers, woken clients' replies): whether
/// this node may write now, checked in full.
pub fn background_refusal(ctx: &Context) -> Option<Refusal> {
    let f = flags(ctx);
    if f & raw::REDISMODULE_CTX_FLAGS_MASTER == 0 {
        return Some(Refusal::Replica);
    }
    if f & (raw::REDISMODULE_CTX_FLAGS_LOADING | raw::REDISMODULE_CTX_FLAGS_ASYNC_LOADING) != 0 {
        return Some(Refusal::Loading);
    }
    // True while clients are paused for writes: CLIENT PAUSE (WRITE or ALL)
    // and the pause of a FAILOVER. Redis then reports expired keys as
    // absent without deleting them, so writing one would "create" a key
    // that still exists.
    // SAFETY: no arguments.
    if unsafe { raw::RedisModule_AvoidReplicaTraffic.is_some_and(|f| f() != 0) } {
        return Some(Refusal::Paused);
    }
    if f & raw::REDISMODULE_CTX_FLAGS_OOM != 0 {
        return Some(Refusal::Oom);
    }
    None
}

/// Logs `message` as a warning, with `ctx` (naming the module) or, where
/// there is none (the command filter), without. Redis reads the message
/// as a `printf` format: its `%` are escaped, so a key or an argument
/// quoted in it is printed as it is.
pub fn log_warning(ctx: *mut raw::RedisModuleCtx, message: &str) {
    let message = message.replace('%', "%%");
    if ctx.is_null() {
        redis_module::logging::log_warning(&message);
    } else {
        Context::new(ctx).log_warning(&message);
    }
}

static VALKEY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this server is Valkey, as [`is_valkey`] found at load.
pub fn valkey() -> bool {
    VALKEY.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether a script (or function) is running now.
pub fn in_script() -> bool {
    // SAFETY: without a context only server-wide flags are read.
    let flags =
        unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(std::ptr::null_mut())) } as u32;
    flags & raw::REDISMODULE_CTX_FLAGS_LUA != 0
}

/// Whether this server is Valkey (its `INFO server` names it), read once
/// at load.
pub fn is_valkey(ctx: &Context) -> bool {
    let v = server_name_is_valkey(ctx);
    VALKEY.store(v, std::sync::atomic::Ordering::Relaxed);
    v
}

fn server_name_is_valkey(ctx: &Context) -> bool {
    match ctx.call("INFO", &["server"]) {
        Ok(redis_module::RedisValue::SimpleString(s)) => s.contains("server_name:valkey"),
        Ok(redis_module::RedisValue::BulkString(s)) => s.contains("server_name:valkey"),
        Ok(redis_module::RedisValue::BulkRedisString(s)) => {
            s.to_string_lossy().contains("server_name:valkey")
        }
        _ => false,
    }
}
