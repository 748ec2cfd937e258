//! A sorted set through the low-level API, as okome's sorted sets (agent
//! ledgers, lease pools) use it: read by score, and changed with each
//! change replicated as its effect, with absolute scores and bounds only —
//! `ZADD key score member`, `ZREM key member`, `ZREMRANGEBYSCORE key -inf
//! <t>` — which a replica or an AOF replay applies to the same set with the
//! same result. Each change signals the key and fires the keyspace event of
//! the built-in command it replicates (and `del` when it empties the set,
//! which Redis then deletes).

use crate::rkey::{EffectArg, Key, Name};
use okome_core::Error;
use redis_module::{raw, Context};
use std::ffi::{c_int, CStr};
use std::ptr;

const ZSET: i32 = raw::REDISMODULE_NOTIFY_ZSET;
const GENERIC: i32 = raw::REDISMODULE_NOTIFY_GENERIC;

/// The bytes of a string Redis handed out, then the string freed.
fn take_string(ctx: &Context, s: *mut raw::RedisModuleString) -> Option<Vec<u8>> {
    if s.is_null() {
        return None;
    }
    let mut len: usize = 0;
    // SAFETY: `s` is a live string we own; freed right after the copy.
    unsafe {
        let p = raw::RedisModule_StringPtrLen.map_or(ptr::null(), |f| f(s, &mut len));
        let out = if p.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
        };
        if let Some(free) = raw::RedisModule_FreeString {
            free(ctx.ctx, s);
        }
        Some(out)
    }
}

/// Whether `key` holds a sorted set.
pub fn is_zset(key: &Key) -> bool {
    key.key_type() == raw::REDISMODULE_KEYTYPE_ZSET
}

/// Number of members.
pub fn len(key: &Key) -> u64 {
    if key.raw().is_null() {
        return 0;
    }
    // SAFETY: an open key.
    unsafe { raw::RedisModule_ValueLength.map_or(0, |f| f(key.raw())) as u64 }
}

/// Calls `f` with the members whose score is in `[min, max]`, ascending
/// or descending, until it returns false. The set must not change
/// meanwhile.
pub fn scan(
    ctx: &Context,
    key: &Key,
    (min, max): (f64, f64),
    ascending: bool,
    mut f: impl FnMut(f64, &[u8]) -> bool,
) {
    let k = key.raw();
    if k.is_null() || !is_zset(key) {
        return;
    }
    // SAFETY: an open sorted set; the range is stopped before return,
    // and every element string is freed by `take_string`.
    unsafe {
        let (Some(first), Some(last), Some(cur), Some(next), Some(prev), Some(end), Some(stop)) = (
            raw::RedisModule_ZsetFirstInScoreRange,
            raw::RedisModule_ZsetLastInScoreRange,
            raw::RedisModule_ZsetRangeCurrentElement,
            raw::RedisModule_ZsetRangeNext,
            raw::RedisModule_ZsetRangePrev,
            raw::RedisModule_ZsetRangeEndReached,
            raw::RedisModule_ZsetRangeStop,
        ) else {
            return;
        };
        let start = if ascending { first } else { last };
        if start(k, min, max, 0, 0) != raw::REDISMODULE_OK as c_int {
            return;
        }
        while end(k) == 0 {
            let mut score = 0.0;
            let Some(member) = take_string(ctx, cur(k, &mut score)) else {
                break;
            };
            if !f(score, &member) {
                break;
            }
            let more = if ascending { next(k) } else { prev(k) };
            if more == 0 {
                break;
            }
        }
        stop(k);
    }
}

/// The lowest member (`lowest`) or the highest, with its score, if any.
pub fn end(ctx: &Context, key: &Key, lowest: bool) -> Option<(f64, Vec<u8>)> {
    let mut out = None;
    scan(
        ctx,
        key,
        (f64::NEG_INFINITY, f64::INFINITY),
        lowest,
        |s, m| {
            out = Some((s, m.to_vec()));
            false
        },
    );
    out
}

/// Members with a score in `[min, max]`, ascending, at most `n`.
pub fn members(ctx: &Context, key: &Key, min: f64, max: f64, n: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    scan(ctx, key, (min, max), true, |_, m| {
        out.push(m.to_vec());
        (out.len() as u64) < n
    });
    out
}

/// The score of `member`, if the set holds it.
pub fn score(key: &Key, member: &Name) -> Option<f64> {
    let mut score = 0.0;
    // SAFETY: an open key and a live string.
    let ok = unsafe {
        raw::RedisModule_ZsetScore
            .is_some_and(|f| f(key.raw(), member.ptr(), &mut score) == raw::REDISMODULE_OK as c_int)
    };
    ok.then_some(score)
}

/// Adds `member` (made as `m`) with score `at`, or updates its score, and
/// replicates `ZADD key at member` if it changed.
pub fn add(ctx: &Context, key: &Key, m: &Name, member: &[u8], at: i64) -> Result<(), Error> {
    let mut flags: c_int = 0;
    // SAFETY: the key is open for writing and empty or a sorted set.
    let added = unsafe {
        raw::RedisModule_ZsetAdd.is_some_and(|f| {
            f(key.raw(), at as f64, m.ptr(), &mut flags) == raw::REDISMODULE_OK as c_int
        })
    };
    if !added {
        return Err(key.refused("add an entry to"));
    }
    let zadd_flags = (raw::REDISMODULE_ZADD_ADDED | raw::REDISMODULE_ZADD_UPDATED) as c_int;
    if flags & zadd_flags == 0 {
        return Ok(());
    }
    let args = [EffectArg::Int(at), EffectArg::Bytes(member)];
    let replicated = key.replicate(ctx, c"ZADD", &args);
    key.changed(ctx, &[(ZSET, c"zadd")]);
    replicated
}

/// Removes `members` (members of the set), replicating nothing; stops at
/// the first Redis refuses. Whether each was there.
pub fn remove(key: &Key, members: &[Vec<u8>]) -> Result<u64, Error> {
    let mut removed = 0u64;
    for m in members {
        let name = Name::new(m);
        let mut deleted: c_int = 0;
        // SAFETY: an open key and a live string; a set emptied by the
        // last removal is deleted by Redis.
        let ok = unsafe {
            raw::RedisModule_ZsetRem.is_some_and(|f| {
                f(key.raw(), name.ptr(), &mut deleted) == raw::REDISMODULE_OK as c_int
            })
        };
        if !ok {
            return Err(key.refused("remove an entry from"));
        }
        if deleted != 0 {
            removed = removed.saturating_add(1);
        }
    }
    Ok(removed)
}

/// Removes `member` and replicates `ZREM key member`, if it was there;
/// whether it was.
pub fn remove_one(ctx: &Context, key: &Key, member: &[u8]) -> Result<bool, Error> {
    if !is_zset(key) || remove(key, &[member.to_vec()])? == 0 {
        return Ok(false);
    }
    let replicated = key.replicate(ctx, c"ZREM", &[EffectArg::Bytes(member)]);
    emptied_or(ctx, key, c"zrem");
    replicated.map(|()| true)
}

/// Removes the members scored at most `cutoff` and replicates
/// `ZREMRANGEBYSCORE key -inf <cutoff>`; how many.
pub fn remove_upto(ctx: &Context, key: &Key, cutoff: i64) -> Result<u64, Error> {
    let gone = members(ctx, key, f64::NEG_INFINITY, cutoff as f64, u64::MAX);
    if gone.is_empty() {
        return Ok(0);
    }
    remove(key, &gone)?;
    let bounds = [EffectArg::Word(c"-inf"), EffectArg::Int(cutoff)];
    let replicated = key.replicate(ctx, c"ZREMRANGEBYSCORE", &bounds);
    emptied_or(ctx, key, c"zremrangebyscore");
    replicated.map(|()| gone.len() as u64)
}

/// Signals a removal as the built-in `event` does, plus `del` if it
/// emptied (and so deleted) the set.
pub fn emptied_or(ctx: &Context, key: &Key, event: &'static CStr) {
    if len(key) == 0 {
        key.changed(ctx, &[(ZSET, event), (GENERIC, c"del")]);
    } else {
        key.changed(ctx, &[(ZSET, event)]);
    }
}
