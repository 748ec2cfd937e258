//! okome's test helpers, each defined once and used by every module of the
//! test binary (and by `bench/flow.rs`). The server harness (`Server`,
//! `ConfServer`, `Cluster`, `TempDir`, `free_port`, `module_path`, and the
//! conventions: `OKOME_MODULE`, `REDIS_SERVER`, ports below 55535, kill by
//! pid) is the workspace's `okome-testkit` crate, re-exported here; what is
//! here knows okome's commands and replies:
//!
//! - `commands`: a command from its words, its reply or error text, and
//!   okome's commands with their typed replies;
//! - `plans`: `PLAN.GET`/`PLAN.LOOKUP` replies, the planner tuples, the
//!   checks on plans, locks and tokens;
//! - `keyspace`: plain reads of keys, TTLs and whole-keyspace snapshots;
//! - `introspect`: `INFO`, okome's counters, `CLIENT LIST`, polling;
//! - `servers`: replicas, ACL users, a start that must fail, signals;
//! - `resp`: RESP2 by hand and a raw pipelining connection;
//! - `rng`: seedable generators;
//! - `errors`: the expected error texts and the error case runner;
//! - `ops`: config defaults and `CONFIG GET`/`SET`, `INFO okome` as a map;
//! - `demo`: the Python demo and the interpreter that runs it.
#![allow(dead_code)]

pub mod demo;
pub mod errors;
pub mod ops;

mod commands;
mod introspect;
mod keyspace;
mod plans;
mod resp;
mod rng;
mod servers;

pub use commands::*;
pub use introspect::*;
pub use keyspace::*;
pub use okome_testkit::*;
pub use plans::*;
pub use resp::*;
pub use rng::*;
pub use servers::*;

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A file of the repository (`README.md`, `redis.conf.example`, ...).
pub fn repo_file(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A number from the environment (`OKOME_..._SEED`, `..._STEPS`): `None`
/// when unset or not a number.
pub fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Held by the tests that time deadlines to the millisecond and by the
/// heaviest ones (chaos, resharding), so that none of them runs beside
/// another: as when each test file was a binary of its own, run one after
/// another, and a loaded machine cannot make a deadline look early or late.
pub fn alone() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
