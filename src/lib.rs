//! okome: a Redis module that runs the OKOME planner's cache, stampede lock,
//! rate limits and cache-write budget inside the server.
//!
//! The rules live in the pure `okome-core` crate; this crate is the glue:
//! command registration, key access, replies and replication.

mod commands;
mod config;
mod register;
mod rkey;
mod wait;

use redis_module::{redis_module, Context, RedisString, Status};

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    register::register_all(ctx)
}

redis_module! {
    name: "okome",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    init: init,
    commands: [],
}
