//! The command handlers, one file per family of commands: each parses with
//! okome-core, opens its keys, writes, replicates and replies. Every
//! handler takes the call's arguments after the command name.
//!
//! The families share helpers one way only, so no two import each other:
//! `plan` uses the lock's, the budget's and the ledger's (`agent`), and
//! both `plan` and `lock` use `news` (what a plan's waiters are told);
//! `cache` uses the ledger's; `throttle` and `take` use the budget's; nothing uses
//! `plan`'s (nor `lease`'s, which uses none).

pub mod agent;
pub mod budget;
pub mod cache;
pub mod lease;
pub mod lock;
pub mod news;
pub mod plan;
pub mod take;
pub mod throttle;

/// Milliseconds in `s` seconds, saturating.
fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}
