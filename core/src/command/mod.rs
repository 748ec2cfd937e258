//! Every command, defined once. A family file holds its commands' request
//! types, their parsers and one `const` [`Command`] each: name, arity,
//! flags, docs, the routing argument, every argument with its type,
//! keyword and range, and how a call's keys are derived. Registration,
//! `COMMAND DOCS`, the command filter, the parsers' range checks and the
//! range table README shows ([`ranges`]) all read that one description.
//!
//! - [`plan`]: `PLAN.GET`, `PLAN.LOOKUP`, `PLAN.SET`,
//! - [`lock`]: `LOCK`, `UNLOCK`,
//! - [`budget`]: `RATE`, `WBUDGET`,
//! - [`throttle`]: `THROTTLE` (burst limits),
//! - [`take`]: `TAKE`, `SETTLE` (several windows at once, reservations),
//! - [`cache`]: `CACHE.GET`, `CACHE.SET`, `KEY`,
//! - [`agent`]: `AGENT.RECORD`, `AGENT.KEYS`, `AGENT.PURGE`,
//! - [`lease`]: `LEASE.ACQUIRE`, `LEASE.RENEW`, `LEASE.RELEASE`,
//! - [`spec`]: what a description is made of, and the grammar's pieces.
//!
//! A new command is a `const Command` in its family's file (a new file for
//! a new family) and one line in [`COMMANDS`]; the glue adds its handler.
//!
//! Options are case-insensitive keywords; an unknown, repeated or
//! incomplete option is a syntax error. Errors name an argument as the
//! command's syntax and `COMMAND DOCS` do, in lowercase (`ttl`, `token`,
//! `window`, `plan_json`); a keyword appears in capitals only when the
//! keyword itself is at fault.

pub mod agent;
pub mod budget;
pub mod cache;
pub mod lease;
pub mod lock;
pub mod plan;
pub mod spec;
pub mod take;
pub mod throttle;

pub use agent::{
    check_pxat, ledger_key, parse_agent_keys, parse_agent_purge, parse_agent_record, AgentKeys,
    AgentPurge, AgentRecord, Cursor, AGENT_KEYS, AGENT_PURGE, AGENT_RECORD,
};
pub use budget::{parse_rate, parse_wbudget, Charge, RATE, WBUDGET};
pub use cache::{
    parse_cache_get, parse_cache_set, parse_key, CacheGet, CacheSet, CACHE_GET, CACHE_SET, KEY,
};
pub use lease::{
    decode_lease, lease_id, parse_lease_acquire, parse_lease_release, parse_lease_renew, Lease,
    LeaseAcquire, LeaseRenew, LEASE_ACQUIRE, LEASE_RELEASE, LEASE_RENEW,
};
pub use lock::{parse_lock, parse_unlock, Failure, Lock, Unlock, LOCK, UNLOCK};
pub use plan::{
    parse_plan_get, parse_plan_lookup, parse_plan_set, PlanGet, PlanSet, HASHED, PLAN_GET,
    PLAN_LOOKUP, PLAN_SET,
};
pub use spec::{check_json, parse_int, Arg, ArgRange, Command, Request, Route, Ty};
pub use take::{
    new_record_key, parse_settle, parse_take, record_key, reservation_id, Settle, Take, SETTLE,
    TAKE,
};
pub use throttle::{parse_throttle, Throttle, THROTTLE};

use crate::config::Config;
use crate::declared::Declared;
use crate::Result;

/// Every command, in the order it is registered.
pub const COMMANDS: &[&Command] = &[
    &PLAN_GET,
    &PLAN_LOOKUP,
    &PLAN_SET,
    &LOCK,
    &UNLOCK,
    &RATE,
    &WBUDGET,
    &THROTTLE,
    &TAKE,
    &SETTLE,
    &CACHE_GET,
    &CACHE_SET,
    &KEY,
    &AGENT_RECORD,
    &AGENT_KEYS,
    &AGENT_PURGE,
    &LEASE_ACQUIRE,
    &LEASE_RENEW,
    &LEASE_RELEASE,
];

/// The command named `name` (any case).
pub fn find(name: &[u8]) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .copied()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// The keys a call of `command` (its full name) with `args` touches; `None`
/// for a command that touches no key, or no okome command.
pub fn derive(
    command: &[u8],
    args: &[&[u8]],
    cfg: &Config,
    cluster: bool,
) -> Option<Result<Declared>> {
    let derive = find(command)?.keys?;
    Some(derive(args, cfg, cluster))
}

/// Every bounded numeric argument of every command, in registration and
/// argument order (`PXAT`, an absolute time checked against the clock,
/// aside): the range table.
pub fn ranges() -> Vec<ArgRange> {
    fn walk(command: &'static str, args: &[Arg], out: &mut Vec<ArgRange>) {
        for a in args {
            if let Some(bounds) = a.bounds {
                out.push(ArgRange {
                    command,
                    arg: a.name,
                    bounds,
                });
            }
            walk(command, a.sub, out);
        }
    }
    let mut out = Vec::new();
    for c in COMMANDS {
        walk(c.name, c.args, &mut out);
    }
    out
}

/// The `COMMAND DOCS` summary of argument `arg` (its `COMMAND DOCS` name)
/// of `command`, if it is a bounded number.
pub fn arg_summary(command: &str, arg: &str) -> Option<String> {
    ranges()
        .into_iter()
        .find(|a| a.command.eq_ignore_ascii_case(command) && a.arg.eq_ignore_ascii_case(arg))
        .map(|a| a.bounds.summary())
}

#[cfg(test)]
mod tests;
