//! `OKOME.TAKE` and `OKOME.SETTLE`: several windows of the exact sliding
//! window charged all or nothing, each opened and decided as a [`Budget`]
//! before any is written; and reservations, whose record
//! (`okome_core::reservation`) says what `OKOME.SETTLE` gives back or
//! charges on each window.
//!
//! Keys: the windows of a TAKE are declared (the command filter appends
//! them). A reservation's record has a random name, and SETTLE's windows
//! are only known from its record: those are checked while the command
//! runs, before anything is written, as `AGENT.KEYS` checks a ledger's
//! entries (`acl::check_found`: the user's ACL, and in a cluster the slot).
//! Every write is replicated as its effect, with absolute times (`SET ...
//! PXAT`, `SETRANGE` + `PEXPIREAT`, `DEL`), never as the command.

use super::budget::{unusable, Budget};
use crate::acl;
use crate::call::Call;
use crate::cluster;
use crate::reply::{bulk, ms, Reply};
use crate::rkey::{self, Key};
use okome_core::command::{
    self, new_record_key, reservation_id, Charge, Request, Settle, Take, SETTLE, TAKE,
};
use okome_core::declared::Access;
use okome_core::keys::printable;
use okome_core::limiter::{settle_stored, Decision, Settlement};
use okome_core::reservation::{Record, Reserved, Settled};
use okome_core::Error;
use redis_module::{Context, RedisValue};

/// `[remaining, retry_after_ms, reset_after_ms]` of one limit.
fn triple(d: &Decision) -> [u64; 3] {
    [d.remaining, d.retry_after_ms, d.reset_after_ms]
}

/// The limits of a reply, one triple each.
fn limits_reply(limits: &[[u64; 3]]) -> RedisValue {
    RedisValue::Array(
        limits
            .iter()
            .map(|l| RedisValue::Array(l.iter().map(|&v| RedisValue::Integer(ms(v))).collect()))
            .collect(),
    )
}

/// `[allowed, retry_after_ms, reservation, limits]`
fn take_reply(allowed: bool, retry: u64, id: Option<Vec<u8>>, limits: &[[u64; 3]]) -> RedisValue {
    RedisValue::Array(vec![
        RedisValue::Integer(i64::from(allowed)),
        RedisValue::Integer(ms(retry)),
        id.map_or(RedisValue::Null, |id| bulk(&id)),
        limits_reply(limits),
    ])
}

/// OKOME.TAKE numlimits subject name limit window_s cost ... [RESERVE ttl_ms]
pub fn take(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_take)?;
    let now = call.now;
    let record = match req.reserve_ms {
        Some(ttl) => {
            let key = new_record_key(&req.subject, &rkey::new_token())?;
            let base = req.declared(cluster::enabled());
            let found = [(Access::Write, key.as_slice())];
            acl::check_found(
                ctx,
                TAKE.name,
                &base,
                &found,
                "creates it for the reservation",
            )?;
            Some((key, ttl))
        }
        None => None,
    };
    let budgets = req
        .limits
        .iter()
        .map(|c| Budget::load(ctx, c, now))
        .collect::<Result<Vec<Budget>, Error>>()?;
    if !budgets.iter().all(|b| b.decision().allowed) {
        let decisions: Vec<Decision> = budgets.iter().map(Budget::decision).collect();
        drop(budgets);
        return refused(ctx, &req, &decisions, now);
    }
    let mut decisions = Vec::with_capacity(budgets.len());
    for b in budgets {
        decisions.push(b.charge(ctx)?);
    }
    let id = match record {
        Some((key, ttl)) => Some(reserve(ctx, &key, &req, &decisions, now, ttl)?),
        None => None,
    };
    let limits: Vec<[u64; 3]> = decisions.iter().map(triple).collect();
    Ok(take_reply(true, 0, id, &limits))
}

/// The reply of a TAKE that one limit or more refused, nothing charged:
/// the wait is the longest of the refusing limits'; a limit that would
/// have admitted its cost reports its window as it is.
fn refused(ctx: &Context, req: &Take, decisions: &[Decision], now: i64) -> Reply {
    let retry = decisions
        .iter()
        .filter(|d| !d.allowed)
        .map(|d| d.retry_after_ms)
        .max()
        .unwrap_or(0);
    let mut limits = Vec::with_capacity(decisions.len());
    for (c, d) in req.limits.iter().zip(decisions) {
        let d = if d.allowed && c.cost > 0 {
            let peek = Charge {
                cost: 0,
                ..c.clone()
            };
            Budget::load(ctx, &peek, now)?.decision()
        } else {
            *d
        };
        limits.push(triple(&d));
    }
    Ok(take_reply(false, retry, None, &limits))
}

/// Writes the record of an admitted reservation at `key`, expiring `ttl`
/// ms from now, and returns its id.
fn reserve(
    ctx: &Context,
    key: &[u8],
    req: &Take,
    decisions: &[Decision],
    now: i64,
    ttl: u64,
) -> Result<Vec<u8>, Error> {
    let limits = req
        .limits
        .iter()
        .zip(decisions)
        .map(|(c, d)| Reserved {
            key: c.key.clone(),
            limit: c.limit,
            window_ms: c.window_ms,
            cost: c.cost,
            // An admission empties its window `window` after the time it
            // recorded its units at: `reset_after_ms` is that from now.
            at: now
                .saturating_add(ms(d.reset_after_ms))
                .saturating_sub(ms(c.window_ms)),
        })
        .collect();
    let record = Record {
        limits,
        settled: None,
    };
    let expire_at = now.saturating_add(ms(ttl));
    Key::open(ctx, key, true).set(ctx, &record.encode(), expire_at)?;
    Ok(reservation_id(key))
}

/// `[settled, limits]`
fn settle_reply(limits: &[[u64; 3]]) -> RedisValue {
    RedisValue::Array(vec![RedisValue::Integer(1), limits_reply(limits)])
}

/// The record at `req.record`: an error if there is none (expired, never
/// issued), or if it is not a record.
fn load_record(key: &Key, req: &Settle) -> Result<Record, Error> {
    match key.string()? {
        None => Err(Error::Raw("ERR unknown or expired reservation".into())),
        Some(bytes) => Record::decode(bytes).map_err(|_| {
            Error::BadKey(format!(
                "'{}' does not hold an okome reservation (was it written by another client?)",
                printable(&req.record)
            ))
        }),
    }
}

/// OKOME.SETTLE reservation cost [cost ...]
pub fn settle(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_settle)?;
    let now = call.now;
    let key = Key::open(ctx, &req.record, true);
    let record = load_record(&key, &req)?;
    if record.limits.len() != req.costs.len() {
        return Err(Error::Syntax(format!(
            "the reservation has {} limits, got {} costs (one per limit, in OKOME.TAKE's order)",
            record.limits.len(),
            req.costs.len()
        )));
    }
    if let Some(s) = &record.settled {
        if s.costs == req.costs {
            return Ok(settle_reply(&s.limits));
        }
        let costs: Vec<String> = s.costs.iter().map(u64::to_string).collect();
        return Err(Error::BadKey(format!(
            "the reservation was already settled with other costs ({}); nothing was done",
            costs.join(" ")
        )));
    }
    let found: Vec<(Access, &[u8])> = record
        .limits
        .iter()
        .map(|r| (Access::ReadWrite, r.key.as_slice()))
        .collect();
    let base = req.declared(cluster::enabled());
    acl::check_found(
        ctx,
        SETTLE.name,
        &base,
        &found,
        "found it in the reservation",
    )?;
    let limits = settle_windows(ctx, &record, &req.costs, now)?;
    let expire_at = key.abs_expire().unwrap_or(now);
    let settled = Record {
        settled: Some(Settled {
            costs: req.costs,
            limits: limits.clone(),
        }),
        ..record
    };
    key.set(ctx, &settled.encode(), expire_at)?;
    Ok(settle_reply(&limits))
}

/// Opens and settles every window of `record` with `costs`, then writes
/// them: nothing is written if one cannot be settled.
fn settle_windows(
    ctx: &Context,
    record: &Record,
    costs: &[u64],
    now: i64,
) -> Result<Vec<[u64; 3]>, Error> {
    let budgets = record
        .limits
        .iter()
        .zip(costs)
        .map(|(r, &actual)| {
            let s = Settlement {
                limit: r.limit,
                window_ms: r.window_ms,
                at: r.at,
                reserved: r.cost,
                actual,
            };
            let settle = |stored: &[u8], out: &mut Vec<u8>| settle_stored(stored, now, s, out);
            Budget::open(ctx, &r.key, true, settle, unusable)
        })
        .collect::<Result<Vec<Budget>, Error>>()?;
    let mut limits = Vec::with_capacity(budgets.len());
    for b in budgets {
        limits.push(triple(&b.write(ctx)?));
    }
    Ok(limits)
}
