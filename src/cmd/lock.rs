//! `OKOME.LOCK` and `OKOME.UNLOCK`, and the stampede lock as the planner
//! uses it: taken with a fresh token, healed when found without a TTL.

use super::news;
use crate::call::Call;
use crate::config;
use crate::reply::{ms, Reply};
use crate::rkey::{self, Holds, Key};
use crate::stats::{bump, c};
use crate::wait;
use okome_core::command;
use okome_core::keys;
use okome_core::Error;
use redis_module::{Context, RedisValue};

/// Takes the (free) lock with a fresh token until `now + ttl_ms`
/// (replicated as `SET lock token PXAT t`); the token.
pub fn take_lock(ctx: &Context, lock: &Key, now: i64, ttl_ms: u64) -> Result<Vec<u8>, Error> {
    let token = rkey::new_token();
    lock.set(ctx, &token, now.saturating_add(ms(ttl_ms)))?;
    bump(&c::lock_acquired);
    Ok(token)
}

/// Whether a lock is held, and for how long (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Free,
    Held(i64),
}

/// The state of an open lock. A lock without a TTL (written by another
/// client: okome never writes one) would block its key forever: it gets
/// the lock standard's default TTL (replicated `PEXPIREAT`), if `heal`.
/// Only a string is healed: another type at a lock's name is a user's key,
/// which okome never changes (commands answer `WRONGTYPE` there).
pub fn lock_state(ctx: &Context, lock: &Key, now: i64, heal: bool) -> Result<LockState, Error> {
    let holds = lock.holds();
    if holds == Holds::Nothing {
        return Ok(LockState::Free);
    }
    if holds == Holds::String && lock.abs_expire().is_none() && heal {
        let ttl = config::current().lock_ttl_ms.default;
        lock.set_abs_expire(ctx, now.saturating_add(ms(ttl)))?;
        bump(&c::locks_healed);
    }
    Ok(LockState::Held(lock.pttl(now)))
}

/// OKOME.LOCK key [TTL ms] [TOKEN token]
pub fn lock(ctx: &Context, call: &Call) -> Reply {
    let req = call.request_cfg(command::parse_lock)?;
    let now = call.now;
    let lock = Key::open(ctx, &keys::lock_key(req.key), true);
    let current = lock.string()?;
    if current.is_some_and(|t| req.token != Some(t)) {
        lock_state(ctx, &lock, now, true)?;
    }
    match req.token {
        None => {
            if current.is_some() {
                bump(&c::lock_contended);
                return Ok(RedisValue::Null);
            }
            let token = take_lock(ctx, &lock, now, req.ttl_ms)?;
            Ok(RedisValue::StringBuffer(token))
        }
        Some(token) => {
            if current != Some(token) {
                return Ok(RedisValue::Integer(0));
            }
            lock.set_abs_expire(ctx, now.saturating_add(ms(req.ttl_ms)))?;
            bump(&c::lock_extended);
            Ok(RedisValue::Integer(1))
        }
    }
}

/// OKOME.UNLOCK key token [FAILED ms [message]]
pub fn unlock(ctx: &Context, call: &Call) -> Reply {
    let req = call.request_cfg(command::parse_unlock)?;
    let lock = Key::open(ctx, &keys::lock_key(req.key), true);
    if lock.string()? != Some(req.token) {
        lock_state(ctx, &lock, call.now, true)?;
        return Ok(RedisValue::Integer(0));
    }
    // Open and check the failure record first, so a bad key writes nothing.
    let record = match &req.failed {
        Some(f) if f.ms > 0 => {
            let record = Key::open(ctx, &keys::failed_key(req.key), true);
            record.check_string_or_empty()?;
            Some(record)
        }
        _ => None,
    };
    release(ctx, &lock)?;
    drop(lock);
    if let Some(f) = &req.failed {
        let until = call.now.saturating_add(ms(f.ms));
        if let Some(record) = record {
            record.set(ctx, f.message, until)?;
        }
        bump(&c::plans_failed);
        news::failed(ctx, req.key, f.message, until);
    }
    wait::wake(ctx, req.key);
    Ok(RedisValue::Integer(1))
}

/// Deletes a lock its holder gave back (replicated `DEL`).
pub fn release(ctx: &Context, lock: &Key) -> Result<(), Error> {
    lock.delete(ctx)?;
    bump(&c::lock_released);
    Ok(())
}
