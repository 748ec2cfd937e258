//! okome's integration tests, as one test binary (`cargo test --test it`):
//! each test starts its own `redis-server` with the module loaded (the
//! harness is the workspace's `okome-testkit` crate). One module a subject;
//! the helpers they share, each defined once, are in `support/`, and the
//! expected error texts in `support/errors.rs`.
//!
//! Run one module with `cargo test --test it <module>::` (for instance
//! `cargo test --test it wait::`), one test with its full name
//! (`cargo test --test it wait::waiters_are_per_database -- --exact`).

mod support;

// The module's commands, one family each.
mod cache;
mod failures;
mod lease;
mod locks;
mod plan;
mod quotas;
mod rate;
mod take;
mod throttle;
mod wait;

// The agent ledger, ACL and declared keys.
mod acl;
mod acl_matrix;
mod declared;
mod ledger;

// Every error's text, and bad input writing nothing.
mod error_messages;
mod errors_cache_key;
mod errors_lock;
mod errors_plan;
mod errors_values;
mod hostile_input;

// Configs, INFO, COMMAND DOCS and the documentation agreeing with them.
mod command_docs;
mod configs;
mod info;
mod python_client;
mod ranges;
mod readme;

// The server around the module: replication, persistence, cluster,
// client tracking, life cycle events, memory.
mod cluster;
mod leaks;
mod lifecycle;
mod persistence;
mod replication;
mod reshard;
mod tracking;

// Timing and randomized runs.
mod chaos;
mod deadline_race;
mod lease_chaos;

// The benchmark's ceiling commands (bench/rmw).
mod bench_ceiling;
