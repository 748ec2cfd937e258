//! The command handlers: parse with okome-core, open keys, write, replicate,
//! reply. Every handler takes the arguments after the command name.

use crate::config;
use crate::rkey::{self, Key};
use okome_core::args;
use okome_core::keys;
use okome_core::Error;
use redis_module::{Context, RedisValue};

pub type Reply = Result<RedisValue, Error>;

fn bulk(bytes: &[u8]) -> RedisValue {
    RedisValue::StringBuffer(bytes.to_vec())
}

fn status(s: &'static str) -> RedisValue {
    RedisValue::StringBuffer(s.as_bytes().to_vec())
}

/// Milliseconds in `s` seconds, saturating.
fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `[status, key, value, ms, token, rate_remaining]`
fn plan_reply(
    st: &'static str,
    key: &[u8],
    value: Option<&[u8]>,
    ms: Option<i64>,
    token: Option<&[u8]>,
) -> RedisValue {
    RedisValue::Array(vec![
        status(st),
        bulk(key),
        value.map_or(RedisValue::Null, bulk),
        ms.map_or(RedisValue::Null, RedisValue::Integer),
        token.map_or(RedisValue::Null, bulk),
        RedisValue::Null,
    ])
}

/// OKOME.PLAN.GET model prompt toolset_version repo_hash [LOCKTTL ms] [NOLOCK]
pub fn plan_get(ctx: &Context, argv: &[&[u8]]) -> Reply {
    let cfg = config::current();
    let req = args::parse_plan_get(argv, &cfg)?;
    let now = rkey::now_ms();
    {
        let plan = Key::open(ctx, &req.key, false);
        if let Some(v) = plan.string()? {
            return Ok(plan_reply(
                "HIT",
                &req.key,
                Some(v),
                Some(plan.pttl(now)),
                None,
            ));
        }
    }
    let Some(ttl) = req.lock_ttl_ms else {
        return Ok(plan_reply("MISS", &req.key, None, None, None));
    };
    let lock_name = keys::lock_key(&req.key);
    let lock = Key::open(ctx, &lock_name, true);
    if lock.string()?.is_some() {
        return Ok(plan_reply(
            "LOCKED",
            &req.key,
            None,
            Some(lock.pttl(now)),
            None,
        ));
    }
    let token = rkey::new_token();
    let at = now.saturating_add(ms(ttl));
    lock.set(ctx, &token, at);
    rkey::replicate_set(ctx, &lock_name, &token, at);
    Ok(plan_reply(
        "MISS",
        &req.key,
        None,
        Some(ms(ttl)),
        Some(&token),
    ))
}

/// OKOME.PLAN.SET key plan_json [TTL s] [TOKEN token]
pub fn plan_set(ctx: &Context, argv: &[&[u8]]) -> Reply {
    let cfg = config::current();
    let req = args::parse_plan_set(argv, &cfg)?;
    let now = rkey::now_ms();
    let plan = Key::open(ctx, req.key, true);
    plan.check_string_or_empty()?;
    let lock_name = keys::lock_key(req.key);
    let mut lock = None;
    if let Some(token) = req.token {
        let l = Key::open(ctx, &lock_name, true);
        let held = l.string()? == Some(token);
        lock = held.then_some(l);
    }
    // Every check passed: write.
    let ttl_ms = secs_to_ms(req.ttl_s);
    let at = now.saturating_add(ttl_ms);
    plan.set(ctx, req.value, at);
    rkey::replicate_set(ctx, req.key, req.value, at);
    let released = match lock {
        Some(l) => {
            l.delete();
            rkey::replicate_del(ctx, &lock_name);
            1
        }
        None => 0,
    };
    Ok(RedisValue::Array(vec![
        status("STORED"),
        RedisValue::Integer(ttl_ms),
        RedisValue::Null,
        RedisValue::Integer(released),
    ]))
}

/// OKOME.LOCK key [TTL ms] [TOKEN token]
pub fn lock(ctx: &Context, argv: &[&[u8]]) -> Reply {
    let cfg = config::current();
    let req = args::parse_lock(argv, &cfg)?;
    let now = rkey::now_ms();
    let lock_name = keys::lock_key(req.key);
    let lock = Key::open(ctx, &lock_name, true);
    let current = lock.string()?;
    let at = now.saturating_add(ms(req.ttl_ms));
    match req.token {
        None => {
            if current.is_some() {
                return Ok(RedisValue::Null);
            }
            let token = rkey::new_token();
            lock.set(ctx, &token, at);
            rkey::replicate_set(ctx, &lock_name, &token, at);
            Ok(RedisValue::StringBuffer(token))
        }
        Some(token) => {
            if current != Some(token) {
                return Ok(RedisValue::Integer(0));
            }
            lock.set_abs_expire(at);
            rkey::replicate_pexpireat(ctx, &lock_name, at);
            Ok(RedisValue::Integer(1))
        }
    }
}

/// OKOME.UNLOCK key token
pub fn unlock(ctx: &Context, argv: &[&[u8]]) -> Reply {
    let req = args::parse_unlock(argv)?;
    let lock_name = keys::lock_key(req.key);
    let lock = Key::open(ctx, &lock_name, true);
    if lock.string()? != Some(req.token) {
        return Ok(RedisValue::Integer(0));
    }
    lock.delete();
    rkey::replicate_del(ctx, &lock_name);
    Ok(RedisValue::Integer(1))
}

/// OKOME.CACHE.GET kind part...
pub fn cache_get(ctx: &Context, argv: &[&[u8]]) -> Reply {
    let req = args::parse_cache_get(argv)?;
    let now = rkey::now_ms();
    let key = Key::open(ctx, &req.key, false);
    Ok(match key.string()? {
        Some(v) => RedisValue::Array(vec![bulk(v), RedisValue::Integer(key.pttl(now))]),
        None => RedisValue::Null,
    })
}

/// OKOME.CACHE.SET kind part... value [TTL s]
pub fn cache_set(ctx: &Context, argv: &[&[u8]]) -> Reply {
    let cfg = config::current();
    let req = args::parse_cache_set(argv, &cfg)?;
    let now = rkey::now_ms();
    let key = Key::open(ctx, &req.key, true);
    key.check_string_or_empty()?;
    let ttl_ms = secs_to_ms(req.ttl_s);
    let at = now.saturating_add(ttl_ms);
    key.set(ctx, req.value, at);
    rkey::replicate_set(ctx, &req.key, req.value, at);
    Ok(RedisValue::Integer(ttl_ms))
}

/// OKOME.KEY kind part...
pub fn key(_ctx: &Context, argv: &[&[u8]]) -> Reply {
    let cfg = config::current();
    Ok(RedisValue::StringBuffer(args::parse_key(argv, &cfg)?))
}
