//! okome: a Redis module that runs the OKOME planner's cache, stampede lock,
//! rate limits and cache-write budget inside the server.
//!
//! The rules live in the pure `okome-core` crate; this crate is the glue:
//! command registration, key access, replies and replication.

// No panics on command paths: a panic inside a command aborts redis-server.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod acl;
mod call;
mod cluster;
mod cmd;
mod config;
mod docs;
mod filter;
mod ledger;
mod register;
mod reply;
mod rkey;
mod server;
mod stats;
mod wait;
mod zset;

use redis_module::{redis_module, Context, RedisString, Status};

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    if let Err(e) = config::init(ctx, &bytes) {
        server::log_warning(ctx.ctx, &format!("okome: {e}"));
        return Status::Err;
    }
    cluster::init(ctx);
    stats::reset();
    if !stats::register(ctx.ctx) {
        ctx.log_warning("okome: could not register the INFO section");
        return Status::Err;
    }
    if !stats::watch_evictions(ctx.ctx) || !wait::init(ctx) {
        ctx.log_warning("okome: could not subscribe to server events");
        return Status::Err;
    }
    if !filter::init(ctx) {
        ctx.log_warning("okome: could not register the command filter that declares its keys");
        return Status::Err;
    }
    set_options(ctx);
    register::register_all(ctx)
}

/// Valkey's `VALKEYMODULE_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION`: without
/// it Valkey 9 refuses `CLUSTER MIGRATESLOTS` while okome is loaded.
/// okome's data are plain strings and sorted sets, and its writes reach
/// replicas as effects naming their keys, which is what an atomic slot
/// migration streams; its keys are declared, so the slot's owner is the
/// only node that serves them. Set on Valkey only (the bit is not Redis's).
const VALKEY_HANDLE_ATOMIC_SLOT_MIGRATION: i32 = 1 << 5;

fn set_options(ctx: &Context) {
    // okome signals the keys it changes itself, so that a key opened for
    // writing but left as it was fires no WATCH.
    let mut options = redis_module::raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as i32;
    if server::is_valkey(ctx) {
        options |= VALKEY_HANDLE_ATOMIC_SLOT_MIGRATION;
    }
    // SAFETY: called from OnLoad.
    unsafe {
        if let Some(f) = redis_module::raw::RedisModule_SetModuleOptions {
            f(ctx.ctx, options);
        }
    }
}

fn deinit(_ctx: &Context) -> Status {
    rkey::release_shared();
    filter::release_shared();
    Status::Ok
}

redis_module! {
    name: "okome",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    init: init,
    deinit: deinit,
    commands: [],
}
