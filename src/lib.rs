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
mod cluster;
mod commands;
mod config;
mod docs;
mod register;
mod rkey;
mod stats;
mod wait;

use redis_module::{redis_module, Context, RedisString, Status};

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    if let Err(e) = config::init(ctx, &bytes) {
        ctx.log_warning(&format!("okome: {e}"));
        return Status::Err;
    }
    cluster::init(ctx);
    if !stats::register(ctx.ctx) {
        ctx.log_warning("okome: could not register the INFO section");
        return Status::Err;
    }
    register::register_all(ctx)
}

fn deinit(_ctx: &Context) -> Status {
    rkey::release_shared();
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
