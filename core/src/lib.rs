//! okome's pure core: everything that can be decided without a Redis server.
//!
//! - [`keys`]: the key scheme, escaping and key validation,
//! - [`config`]: TTL standards and limits (the values behind `okome.*` configs),
//! - [`command`]: every command's description and grammar, producing typed requests,
//! - [`declared`]: the keys each call touches, as the tail the filter appends,
//! - [`limiter`]: the rate limits behind `OKOME.RATE` and `OKOME.WBUDGET`,
//!   one module per algorithm behind one seam, and their stored forms,
//! - [`lease`]: the concurrency leases behind `OKOME.LEASE.*`, over a pool
//!   the glue stores,
//! - [`error`]: every error reply, as one enum with the exact text.
//!
//! Nothing here imports `redis_module`, reads a clock or does I/O: time is a
//! parameter, so every rule is unit-testable and fuzzable without a server.

// No panics on input paths: a panic inside a command aborts redis-server.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

pub mod command;
pub mod config;
pub mod declared;
pub mod error;
pub mod int;
pub mod keys;
pub mod lease;
pub mod limiter;
pub mod reservation;

pub use error::Error;

/// A year (365 days), seconds: the longest cache TTL and the longest rate
/// window.
pub const YEAR_S: u64 = 31_536_000;

/// Result type of the core.
pub type Result<T> = std::result::Result<T, Error>;
