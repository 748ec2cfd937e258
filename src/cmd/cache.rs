//! `OKOME.CACHE.GET`, `OKOME.CACHE.SET` and `OKOME.KEY`: cached data other
//! than plans, and the names of okome's keys.

use super::agent::record;
use super::secs_to_ms;
use crate::call::Call;
use crate::ledger::Ledger;
use crate::reply::{bulk, Reply};
use crate::rkey::Key;
use crate::stats::{bump, c};
use okome_core::command;
use redis_module::{Context, RedisValue};

/// OKOME.CACHE.GET kind part...
pub fn cache_get(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_cache_get)?;
    let now = call.now;
    let key = Key::open(ctx, &req.key, false);
    Ok(match key.string()? {
        Some(v) => {
            bump(&c::cache_hits);
            RedisValue::Array(vec![bulk(v), RedisValue::Integer(key.pttl(now))])
        }
        None => {
            bump(&c::cache_misses);
            RedisValue::Null
        }
    })
}

/// OKOME.CACHE.SET kind part... value [TTL s]
pub fn cache_set(ctx: &Context, call: &Call) -> Reply {
    let req = call.request_cfg(command::parse_cache_set)?;
    let (now, cfg) = (call.now, call.cfg());
    let key = Key::open(ctx, &req.key, true);
    key.check_string_or_empty()?;
    let ledger = match &req.ledger {
        Some(l) => Some(Ledger::open(ctx, l, true)?),
        None => None,
    };
    let ttl_ms = secs_to_ms(req.ttl_s);
    let at = now.saturating_add(ttl_ms);
    key.set(ctx, req.value, at)?;
    bump(&c::cache_stored);
    if let Some(l) = &ledger {
        record(ctx, l, &req.key, at, now, cfg)?;
    }
    Ok(RedisValue::Integer(ttl_ms))
}

/// OKOME.KEY kind part...
pub fn key(_ctx: &Context, call: &Call) -> Reply {
    Ok(RedisValue::StringBuffer(command::parse_key(
        call.args,
        call.cfg(),
    )?))
}
